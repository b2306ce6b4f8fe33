"""Snapping stray boundary codes to the codes the trained Gaussians carry (valid_codes, snap_to_valid)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from segmentation.decode import decode_codes, gaussian_labels
from segmentation.labels import decode_pixels
from segmentation.postprocess import snap_to_valid, valid_codes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _corner(code: int, d: int, mag: float = 5.0) -> torch.Tensor:
    """[d] raw embedding whose bits are `code`."""
    bits = torch.tensor([(code >> k) & 1 for k in range(d)], dtype=torch.float32)
    return (2 * bits - 1) * mag


def test_valid_codes_counts_opaque_gaussians_only():
    d = 4
    # code 3: 5 opaque Gaussians; code 9: 4 opaque + 10 transparent; code 12: 6 opaque; code 1: 1 opaque
    rows = [(3, 0.9)] * 5 + [(9, 0.5)] * 4 + [(9, 0.05)] * 10 + [(12, 0.1)] * 6 + [(1, 1.0)]
    emb = torch.stack([_corner(c, d) for c, _ in rows])  # [N, d]
    opa = torch.tensor([o for _, o in rows])  # [N]
    assert valid_codes(emb, opa, 5).tolist() == [3, 12]  # 9 has only 4 opaque Gaussians
    assert valid_codes(emb, opa, 4).tolist() == [3, 9, 12]
    assert valid_codes(emb, opa, 1).tolist() == [1, 3, 9, 12]
    assert valid_codes(emb, opa, 5, min_opacity=0.01).tolist() == [3, 9, 12]  # now 14 Gaussians carry 9
    assert valid_codes(emb, opa, 100).numel() == 0
    assert valid_codes(emb, opa, 1).dtype == torch.int64


def test_snap_to_valid_rules():
    valid = torch.tensor([3, 12])
    codes = torch.tensor([[3, 12, 7], [2, 13, 0]])
    # 7 = 0111: 1 bit from 3; 2 = 0010: 1 from 3; 13 = 1101: 1 from 12; 0: 2 from both -> tie -> 3
    assert snap_to_valid(codes, valid).tolist() == [[3, 12, 3], [3, 12, 3]]
    # valid codes unchanged, whatever the order of `valid`
    assert snap_to_valid(codes, torch.tensor([12, 3])).tolist() == [[3, 12, 3], [3, 12, 3]]
    # 10 = 1010 is 2 bits from both 3 and 12: the smaller wins
    assert snap_to_valid(torch.tensor([10]), valid).tolist() == [3]
    # empty valid: unchanged
    empty = torch.zeros(0, dtype=torch.int64)
    assert torch.equal(snap_to_valid(codes, empty), codes)
    assert snap_to_valid(torch.zeros(0, 5, dtype=torch.int64), valid).shape == (0, 5)


def test_snap_to_valid_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for d, K, shape in ((4, 3, (17, 9)), (12, 25, (40, 30)), (16, 200, (64, 48))):
        valid = torch.unique(torch.randint(0, 2 ** d, (K,), generator=g))
        codes = torch.randint(0, 2 ** d, shape, generator=g)
        some = torch.rand(shape, generator=g) < 0.2  # make some pixels already valid
        codes[some] = valid[torch.randint(0, len(valid), (int(some.sum()),), generator=g)]
        vl = valid.tolist()
        ref = [min(vl, key=lambda v: (bin(c ^ v).count("1"), v)) for c in codes.view(-1).tolist()]
        out = snap_to_valid(codes, valid, chunk_elems=1000)  # forces several chunks
        assert out.shape == codes.shape
        assert out.view(-1).tolist() == ref, d


def test_decode_pixels_snaps_blended_boundary():
    d = 4
    a = torch.tensor([4.0, 6.0, -6.0, -4.0])  # code 0011 = 3
    b = torch.tensor([-6.0, -4.0, 4.0, 6.0])  # code 1100 = 12
    mix = 0.5 * a + 0.5 * b  # [-1, 1, -1, 1] -> 1010 = 10, a code no object has
    assert gaussian_labels(torch.stack([a, b])).tolist() == [3, 12]
    assert int(decode_codes(torch.sigmoid(mix))) == 10

    emb = torch.stack([a, a, mix, b, b]).reshape(1, 5, d)  # [H=1, W=5, d] rendered embedding
    alpha = torch.ones(1, 5, 1)
    gauss = torch.stack([a] * 6 + [b] * 6)  # the Gaussians behind it
    valid = valid_codes(gauss, torch.ones(12), min_gaussians=5)
    assert valid.tolist() == [3, 12]

    _, raw = decode_pixels({"embedding": emb}, alpha, sigmoid_where="rendered", thing_classes=())
    assert raw.tolist() == [[4, 4, 11, 13, 13]]  # the stray third id without snapping
    sem, ids = decode_pixels({"embedding": emb}, alpha, sigmoid_where="rendered", thing_classes=(), valid=valid)
    assert sem is None
    assert set(ids.view(-1).tolist()) == {4, 13}
    assert ids.tolist() == [[4, 4, 4, 13, 13]]  # tie (2 bits from each) -> the smaller code
    # uncovered pixels still decode to 0
    _, ids0 = decode_pixels({"embedding": emb}, torch.zeros(1, 5, 1), sigmoid_where="rendered",
                            thing_classes=(), valid=valid)
    assert ids0.eq(0).all()


def test_render_cli_snaps_to_valid_codes(tiny_scene, tmp_path):
    import train
    from scene.gaussian_model import GaussianModel
    from utils.image_io import load_label

    out = str(tmp_path / "m")
    train.training(train.prepare_args([
        "-s", tiny_scene, "-m", out, "--iterations", "120", "--densify_from_iter", "1000",
        "--test_iterations", "-1", "--quiet", "--no-use_semantic", "--init_points", "1500",
        "--embedding_lr", "0.02", "--emb_dim", "8"]))  # 256 codes: several carried by >= 5 Gaussians
    r = subprocess.run([sys.executable, os.path.join(ROOT, "render.py"), "-m", out, "--labels", "--skip_train",
                        "--snap_min_gaussians", "5"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "valid codes kept" in r.stdout

    model = GaussianModel.load_ply(os.path.join(out, "point_cloud", "iteration_120", "point_cloud.ply"))
    valid = valid_codes(model.params["embedding"], model.get_opacities(), 5)
    assert valid.numel() >= 2
    allowed = set((valid + 1).tolist()) | {0}
    folder = os.path.join(out, "test", "ours_120", "pred_surrogateid")
    names = sorted(os.listdir(folder))
    assert names
    seen = set()
    for n in names:
        seen |= set(np.unique(load_label(os.path.join(folder, n))).tolist())
    assert seen <= allowed, seen - allowed
    assert len(seen - {0}) >= 2  # several objects' ids survive


def test_snap_threshold_rule():
    from segmentation.postprocess import snap_threshold

    assert snap_threshold(500_000, 0, 0.002) == 1000  # the default: a fraction of the Gaussians
    assert snap_threshold(1001, 0, 0.002) == 3  # ceil
    assert snap_threshold(10, 0, 0.002) == 1  # at least one Gaussian
    assert snap_threshold(500_000, 7, 0.002) == 7  # an explicit K wins
    assert snap_threshold(500_000, 0, 0.0) == 0  # switched off


def test_gaussian_label_columns_snap_like_pixels():
    """The PLY's per-Gaussian ids use the same snapping as the rendered label maps."""
    from types import SimpleNamespace

    from segmentation.labels import gaussian_label_columns

    gen = torch.Generator().manual_seed(0)
    v = torch.randn(300, 6, generator=gen) * 4  # [N, d] raw embeddings, many distinct codes
    model = SimpleNamespace(params={"embedding": v})
    codes = gaussian_labels(v)
    valid = valid_codes(v, torch.ones(300), min_gaussians=6)
    assert 0 < valid.numel() < torch.unique(codes).numel()
    cols = gaussian_label_columns(model, thing_classes=(), valid=valid)
    assert torch.equal(cols["instance_label"], snap_to_valid(codes, valid) + 1)
    assert torch.isin(cols["instance_label"] - 1, valid).all()
    plain = gaussian_label_columns(model, thing_classes=())
    assert torch.equal(plain["instance_label"], codes + 1)


def _fold_scene():
    """A 20x24 view: wall (stuff class 1); object A (class 5) whose rim column the semantic head calls
    class 6; object B (class 6) and object C (class 4) that share one code (id 9). GT ids 1, 2, 3."""
    from utils.panoptic_eval import Variant

    gt_sem = torch.ones(20, 24, dtype=torch.long)
    gt_ids = torch.zeros(20, 24, dtype=torch.long)
    gt_sem[2:10, 2:10], gt_ids[2:10, 2:10] = 5, 1  # A, 64 px
    gt_sem[11:19, 2:10], gt_ids[11:19, 2:10] = 6, 2  # B, 64 px
    gt_sem[11:16, 12:20], gt_ids[11:16, 12:20] = 4, 3  # C, 40 px
    sem, ids = gt_sem.clone(), torch.zeros_like(gt_ids)
    ids[2:10, 2:10] = 7
    sem[2:10, 9] = 6  # A's rim: 8 of its 64 pixels in B's class
    ids[11:19, 2:10] = 9
    ids[11:16, 12:20] = 9  # C shares B's code: 40 of id 9's 104 pixels
    variant = Variant(name="toy", num_classes=7, thing_classes=(4, 5, 6), has_void=False)
    return sem, ids, gt_sem, gt_ids, variant


def test_fold_fragments_gives_an_objects_rim_its_class():
    from segmentation.labels import fold_fragments, id_class_table
    from utils.panoptic_eval import panoptic_quality

    sem, ids, gt_sem, gt_ids, variant = _fold_scene()
    # the Gaussians: id 7 all class 5 but a few of class 6 (10 % of its opacity); id 9 holds B (class 6,
    # 0.6 of its opacity) and C (class 4, 0.4); a stuff Gaussian (class 1) and an id-0 one never count
    g_ids = torch.tensor([7, 7, 7, 9, 9, 9, 7, 0])
    g_cls = torch.tensor([5, 5, 6, 6, 6, 4, 1, 5])
    g_w = torch.tensor([0.5, 0.4, 0.1, 0.3, 0.3, 0.4, 0.9, 0.9])
    table = id_class_table(g_ids, g_cls, g_w, thing_classes=(4, 5, 6), num_classes=7)
    assert table.share.shape == (10, 7) and table.main[7] == 5 and table.main[9] == 6
    assert torch.allclose(table.share[7, [5, 6]], torch.tensor([0.9, 0.1])) and table.share[7, 1] == 0
    assert torch.allclose(table.share[9, [4, 6]], torch.tensor([0.4, 0.6])) and table.share[0].sum() == 0

    def pq(s):
        return panoptic_quality(s.flatten(), ids.flatten(), gt_sem.flatten(), gt_ids.flatten(), variant)

    before = pq(sem)
    assert before["per_class"][6]["fp"] == 1  # the rim: segment (6, 7) matches nothing
    folded = fold_fragments(sem, ids, table, max_share=0.25)
    assert (folded[2:10, 9] == 5).all()  # the rim took A's class
    assert torch.equal(folded[11:16, 12:20], sem[11:16, 12:20])  # C (0.4 of id 9) keeps its class
    assert int((folded != sem).sum()) == 8
    after = pq(folded)
    totals = {k: sum(c[k] for c in after["per_class"].values()) for k in ("tp", "fp", "fn")}
    assert totals == {"tp": 4, "fp": 0, "fn": 0}  # wall, A, B, C
    assert after["pq"] > before["pq"] and after["per_class"][5]["sq"] == 100.0
    # a share above C's folds C into B's class too: C is then lost (FN) and B's segment grows
    over = fold_fragments(sem, ids, table, max_share=0.5)
    assert (over[11:16, 12:20] == 6).all() and pq(over)["per_class"][4]["fn"] == 1
    # stuff pixels never move; ids the table does not know (or without thing Gaussians) keep their classes
    assert torch.equal(folded[ids == 0], sem[ids == 0])
    unknown = fold_fragments(sem, torch.where(ids == 7, torch.full_like(ids, 12), ids), table, 0.25)
    assert torch.equal(unknown[2:10, 2:10], sem[2:10, 2:10])
    assert fold_fragments(sem, ids, table, max_share=0.0) is sem and fold_fragments(sem, ids, None, 0.5) is sem


def test_render_folds_each_objects_classes_into_one(tmp_path):
    """render.py --fold_share: with 1, every object id whose Gaussians hold a thing class carries one class in
    every view, the one its Gaussians mostly hold; ids, and the classes of stuff pixels, are those of the
    unfolded render."""
    import render
    import train
    from scene.dataset_readers import read_scene_for
    from scene.model_folder import load_model, require_model
    from segmentation.labels import gaussian_id_classes, load_semantic_decoder
    from tests.conftest import make_scene
    from utils.image_io import load_label

    # a Replica-like room: the tiny scene's small objects are never predicted as things this early
    scene = make_scene(str(tmp_path / "room"), objects=8, views=12, size="64x48", extra=("--layout", "replica_like"))
    out = str(tmp_path / "m")
    train.training(train.prepare_args([
        "-s", scene, "-m", out, "--iterations", "200", "--densify_from_iter", "100",
        "--densification_interval", "100", "--densify_until_iter", "150", "--init_points", "2000",
        "--test_iterations", "-1", "--quiet", "--no-use_3d", "--no-use_triplet", "--eval"]))
    for share in ("0", "1"):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "render.py"), "-m", out, "--labels", "--skip_test",
                            "--quiet", "--fold_share", share, "--out_suffix", f"_f{share}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
    # the ids the fold knows: those with thing Gaussians, decoded as render.py decodes them
    cfg, model = require_model(out), load_model(out, 200, "cpu")
    info = read_scene_for(cfg, allow_missing_masks=True)
    valid = render._valid_codes(out, 200, model, cfg, info, "cpu", quiet=True, decode="segments",
                                snap_min_segments=5, snap_min_gaussians=None, snap_fraction=None)
    decoder = load_semantic_decoder(os.path.join(out, "point_cloud", "iteration_200"))  # the embed head's (auto)
    table = gaussian_id_classes(model, info.thing_classes, valid=valid, decoder=decoder)
    known = set(torch.nonzero(table.share.sum(dim=1) > 0).flatten().tolist())

    base = {f: os.path.join(out, "train", f"ours_200_f{s}") for f, s in (("raw", "0"), ("fold", "1"))}
    names = sorted(os.listdir(os.path.join(base["raw"], "pred_semantics")))
    assert names
    raw_pairs, fold_pairs, moved = set(), set(), 0
    for n in names:
        ids = load_label(os.path.join(base["raw"], "pred_surrogateid", n))
        assert np.array_equal(ids, load_label(os.path.join(base["fold"], "pred_surrogateid", n)))
        s0 = load_label(os.path.join(base["raw"], "pred_semantics", n))
        s1 = load_label(os.path.join(base["fold"], "pred_semantics", n))
        assert np.array_equal(s0[ids == 0], s1[ids == 0])  # stuff never moves
        moved += int((s0 != s1).sum())
        on = np.isin(ids, sorted(known))
        assert np.array_equal(s0[~on], s1[~on])  # ids without thing Gaussians keep their pixels' classes
        raw_pairs |= set(zip(ids[on].tolist(), s0[on].tolist()))
        fold_pairs |= set(zip(ids[on].tolist(), s1[on].tolist()))
    objects = {i for i, _ in fold_pairs}
    assert len(objects) >= 2 and len(fold_pairs) == len(objects)  # one class per object, over all views
    assert all(c == int(table.main[i]) for i, c in fold_pairs)  # the class its Gaussians mostly hold
    assert len(raw_pairs) > len(objects) and moved > 0  # unfolded, some object showed a second class



def test_decode_sweep_scores_with_the_fold():
    """benchmarks/decode_sweep.score folds each object's classes as render.py does when given the table."""
    from benchmarks.decode_sweep import score
    from segmentation.labels import id_class_table

    sem, ids, gt_sem, gt_ids, variant = _fold_scene()
    # id 9: B and C hold half its Gaussians each, so neither folds at the default share (0.5)
    table = id_class_table(torch.tensor([7, 7, 9, 9]), torch.tensor([5, 5, 6, 4]), torch.tensor([1.0, 1.0, 0.5, 0.5]),
                           thing_classes=(4, 5, 6), num_classes=7)
    flat = {"codes": (ids - 1).clamp(min=0).flatten(), "sem": sem.flatten(), "covered": torch.ones(ids.numel()),
            "gt_sem": gt_sem.flatten(), "gt_inst": gt_ids.flatten()}
    raw, folded = score(flat, variant, (4, 5, 6), None), score(flat, variant, (4, 5, 6), None, table)
    assert raw["RQ"] < 100.0 and folded["RQ"] == 100.0  # the rim's false positive is gone
    assert folded["PQ_scene"] > raw["PQ_scene"]
