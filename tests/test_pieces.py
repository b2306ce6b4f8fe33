"""``segmentation.pieces.separate_pieces``: a second object that shares a code gets an id of its own."""
from __future__ import annotations

import os
import types

import pytest
import torch

from segmentation.pieces import separate_pieces, stray_filter
from segmentation.visibility import object_radius

FIRST = 4097  # 2^12 + 1: above every code's id of a 12-bit embedding


def _blob(centre, n, g, spread=0.05):
    return torch.tensor(centre, dtype=torch.float64) + torch.rand(n, 3, generator=g, dtype=torch.float64) * spread


def _scene():
    """Id 3: its object (400 Gaussians at the origin); 3 m away a second object with the same code (150,
    seen, on the masks' object pixels); a floater cloud of the id (100, seen but on the masks' background);
    a small bit (20) and a barely seen group (120, 0.4 px of weight). Id 7: one object, no pieces.
    Per group: (centre, count, seen px, mask share)."""
    g = torch.Generator().manual_seed(0)
    groups = [((0.0, 0.0, 0.0), 400, 30.0, 0.9), ((3.0, 0.0, 0.0), 150, 12.0, 0.8),
              ((-3.0, 0.0, 0.0), 100, 10.0, 0.1), ((0.0, 3.0, 0.0), 20, 20.0, 0.9),
              ((0.0, -3.0, 0.0), 120, 0.4, 0.9), ((0.0, 0.0, 3.0), 300, 25.0, 0.9)]
    means = torch.cat([_blob(c, n, g) for c, n, _, _ in groups])
    ids = torch.cat([torch.full((n,), 7 if i == 5 else 3, dtype=torch.int64) for i, (_, n, _, _) in enumerate(groups)])
    seen = torch.cat([torch.full((n,), s, dtype=torch.float64) for _, n, s, _ in groups])
    share = torch.cat([torch.full((n,), m, dtype=torch.float64) for _, n, _, m in groups])
    opac = torch.rand(len(ids), generator=g, dtype=torch.float64) * 0.5 + 0.5
    starts = torch.cumsum(torch.tensor([0] + [n for _, n, _, _ in groups]), 0).tolist()
    parts = [slice(starts[i], starts[i + 1]) for i in range(len(groups))]
    return ids, means, opac, seen, share, parts


def test_a_mask_backed_far_piece_gets_its_own_id_and_strays_stay():
    ids, means, opac, seen, share, parts = _scene()
    r = object_radius(means, ids)
    out = separate_pieces(ids, means, opac, seen, share, radius=r, first_id=FIRST)
    assert (out[parts[1]] == FIRST).all()  # the second object: its own id
    for p in (0, 2, 3, 4, 5):  # the object, the floaters (masks: background), the small bit, the unseen group, id 7
        assert torch.equal(out[parts[p]], ids[parts[p]])
    # what the stray filter keeps of id 3 is unchanged; the new id is kept whole: it is now extractable
    before, after = stray_filter(ids, means, opac, radius=r), stray_filter(out, means, opac, radius=r)
    assert before[parts[0]].all() and not before[parts[1]].any()
    assert torch.equal(after[out == 3], before[out == 3]) and after[parts[1]].all()
    # the thresholds decide: a looser mask share takes the floaters too, more Gaussians leaves the second object
    loose = separate_pieces(ids, means, opac, seen, share, radius=r, first_id=FIRST, min_mask_share=0.05)
    assert (loose[parts[1]] == FIRST).all() and (loose[parts[2]] == FIRST + 1).all()  # numbered by first Gaussian
    strict = separate_pieces(ids, means, opac, seen, share, radius=r, first_id=FIRST, min_gaussians=200)
    assert torch.equal(strict, ids)


def test_pieces_follow_the_gaussians_not_their_order():
    ids, means, opac, seen, share, _ = _scene()
    r = object_radius(means, ids)
    base = separate_pieces(ids, means, opac, seen, share, radius=r, first_id=FIRST)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(3))
    got = separate_pieces(ids[perm], means[perm], opac[perm], seen[perm], share[perm], radius=r, first_id=FIRST)
    assert torch.equal(got, base[perm])  # one new piece: the same id wherever its Gaussians sit
    assert int((base == FIRST).sum()) == 150


def test_nothing_to_separate_and_bad_shapes():
    ids, means, opac, seen, share, parts = _scene()
    stuff = torch.zeros_like(ids)
    assert torch.equal(separate_pieces(stuff, means, opac, seen, share, radius=0.2, first_id=FIRST), stuff)
    one = ids.clone()
    one[parts[1]] = 0  # no second object: nothing the masks back is dropped
    one[parts[2]] = 0
    r = object_radius(means, one)
    assert torch.equal(separate_pieces(one, means, opac, seen, share, radius=r, first_id=FIRST), one)
    with pytest.raises(ValueError, match="seen and mask_share"):
        separate_pieces(ids, means, opac, seen[:-1], share, radius=r, first_id=FIRST)


def test_train_py_default_rule_separates_pieces_in_the_ply_column():
    """gaussian_label_columns with union_fill_masks (train.py's default) writes the second object's new id
    into instance_label, numbered above every code (2^emb_dim + 1); union_fill leaves one id for both."""
    from segmentation.labels import ThingVotes, gaussian_label_columns

    ids, means, opac, seen, share, parts = _scene()
    n = len(ids)
    bits = torch.tensor([[2.0 if (c >> b) & 1 else -2.0 for b in range(4)] for c in (ids - 1).tolist()],
                        dtype=torch.float64)  # code = id - 1 in a 4-bit embedding
    sem = torch.full((n, 2), -5.0, dtype=torch.float64)
    sem[:, 1] = 5.0  # every Gaussian a thing (class 1) by its own feature
    model = types.SimpleNamespace(params={"embedding": bits, "semantic": sem}, get_means=lambda: means,
                                  get_scales=lambda: torch.full((n, 3), 0.01, dtype=torch.float64),
                                  get_opacities=lambda: opac)
    tv = ThingVotes(seen, seen * 0.9, seen * share)  # every seen Gaussian renders as a thing
    cols = gaussian_label_columns(model, (1,), thing_votes=tv, thing_rule="union_fill_masks", semantic_masks=False)
    fill = gaussian_label_columns(model, (1,), thing_votes=tv, thing_rule="union_fill")["instance_label"]
    assert torch.equal(fill, ids)
    inst = cols["instance_label"]
    assert (inst[parts[1]] == 2 ** 4 + 1).all()
    assert torch.equal(inst[inst != 2 ** 4 + 1], ids[inst != 2 ** 4 + 1])
    assert torch.equal(cols["semantic_label"], torch.ones(n, dtype=torch.int64))  # still things


def test_a_cut_off_part_inside_the_object_stays_with_the_filter():
    """A mask-backed group that the filter drops but whose centre lies inside the box of what it keeps of
    the id (here between the two kept slabs of one object) is a part of that object, not a second one."""
    g = torch.Generator().manual_seed(5)
    slab_a, slab_b = _blob((0.0, 0.0, 0.0), 300, g), _blob((1.0, 0.0, 0.0), 300, g)  # both kept: 1/2 share each
    middle, far = _blob((0.5, 0.02, 0.02), 60, g, spread=0.01), _blob((4.0, 0.0, 0.0), 60, g, spread=0.01)
    means = torch.cat([slab_a, slab_b, middle, far])
    ids = torch.full((720,), 3, dtype=torch.int64)
    opac, seen, share = torch.full((720,), 0.8), torch.full((720,), 20.0), torch.full((720,), 0.9)
    r = object_radius(means, ids)
    keep = stray_filter(ids, means, opac, radius=r)
    assert keep[:600].all() and not keep[600:].any()
    out = separate_pieces(ids, means, opac, seen, share, radius=r, first_id=FIRST)
    assert (out[:660] == 3).all() and (out[660:] == FIRST).all()


def test_piece_features_and_pixels():
    from segmentation.pieces import piece_features, piece_pixels

    inst = torch.tensor([2, 2, 4097, 4097, 4099, 0])
    assert piece_features(torch.tensor([2, 3, 0]), 4097) is None
    feat, ids = piece_features(inst, 4097)
    assert ids.tolist() == [4097, 4099]
    assert feat.tolist() == [[0, 0], [0, 0], [1, 1], [1, 1], [1, 2], [0, 0]]
    # four pixels of code id 3: one mostly piece 1 (4097), one mostly piece 2, one mostly not a piece, one stuff
    ids_px = torch.tensor([[3, 3], [3, 0]])
    alpha = torch.tensor([[0.9, 0.8], [1.0, 1.0]])[..., None]
    rendered = torch.tensor([[[0.8, 0.8], [0.7, 1.4]], [[0.3, 0.3], [0.9, 0.9]]])  # weight, rank x weight
    got = piece_pixels(ids_px, rendered, alpha, ids)
    assert got.tolist() == [[4097, 4099], [3, 0]]


def test_render_gives_a_separated_piece_its_own_id(tiny_scene, tmp_path):
    """render.py --labels --pieces: pixels drawn by the Gaussians that the PLY gives a piece id (above every
    code) carry that id; every other pixel keeps the id it had. Without --pieces nothing moves."""
    import numpy as np

    import render
    import train
    from scene.gaussian_model import GaussianModel
    from utils.image_io import load_label

    out = str(tmp_path / "m")
    train.training(train.prepare_args(["-s", tiny_scene, "-m", out, "--iterations", "150", "--test_iterations", "-1",
                                       "--quiet", "--densify_from_iter", "1000", "--init_points", "1500",
                                       "--no-use_semantic"]))  # every Gaussian's id is its code + 1
    ply = os.path.join(out, "point_cloud", "iteration_150", "point_cloud.ply")
    folder = render.render_model(out, skip_train=True, labels=True, quiet=True)["test"]
    before = {n: load_label(os.path.join(folder, "pred_surrogateid", n))
              for n in sorted(os.listdir(os.path.join(folder, "pred_surrogateid")))}
    model = GaussianModel.load_ply(ply)
    inst = model.labels["instance_label"]
    x = model.get_means().detach()[:, 0]
    mine = x > x.quantile(0.7)  # a region of the scene: the piece (after 150 iterations codes are still mixed)
    piece = 2 ** model.params["embedding"].shape[1] + 1
    model.labels["instance_label"] = torch.where(mine, torch.full_like(inst, piece), inst)
    model.save_ply(ply, labels=model.labels)
    folder = render.render_model(out, skip_train=True, labels=True, quiet=True)["test"]  # the default
    assert all((load_label(os.path.join(folder, "pred_surrogateid", n)) == old).all() for n, old in before.items())
    folder = render.render_model(out, skip_train=True, labels=True, quiet=True, pieces=True)["test"]
    got = 0
    for n, old in before.items():
        new = load_label(os.path.join(folder, "pred_surrogateid", n))
        changed = new != old
        assert (new[changed] == piece).all() and (old[changed] > 0).all()  # object pixels become the piece
        got += int(changed.sum())
    assert got > 20
    # the paper's plain thresholding does not read the PLY's ids: nothing moves there
    folder = render.render_model(out, skip_train=True, labels=True, quiet=True, decode="plain", pieces=True)["test"]
    assert not any((load_label(os.path.join(folder, "pred_surrogateid", n)) == piece).any() for n in before)


def test_the_save_message_counts_objects_and_pieces():
    from train import _label_summary

    model = types.SimpleNamespace(params={"embedding": torch.zeros(5, 12)})
    inst = torch.tensor([0, 3, 3, 5, FIRST])
    assert _label_summary({"instance_label": inst}, model) == (
        ": 3 object ids on 4 of 5 Gaussians (1 of them second objects that share a code: tools/objects.py list)")
    assert _label_summary({"instance_label": inst[:4]}, model) == ": 2 object ids on 3 of 4 Gaussians"
    assert _label_summary(None, model) == ""
