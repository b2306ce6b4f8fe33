"""tools/objects.py: list / extract / remove / move objects of a trained model folder.

The model is synthetic: blobs of Gaussians whose embeddings sit on distinct corner codes, plus
stuff Gaussians (a stuff class, so ``gaussian_label_columns`` writes instance 0 for them), saved
as ``MODEL/point_cloud/iteration_1/point_cloud.ply`` with a cfg_args whose scene is gone.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from arguments import save_cfg_args
from scene.gaussian_model import GaussianModel
from segmentation.decode import colorize_ids
from segmentation.labels import gaussian_label_columns
from tools import objects
from utils.ply import read_ply

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = 4  # embedding bits
THINGS = (4, 5)  # thing classes of the synthetic semantic head (6 classes)
# (code, class, count, centre): ids are code + 1 -> 2, 3, 6
OBJECTS = ((1, 4, 300, (0.0, 0.0, 0.0)), (2, 5, 200, (3.0, 0.0, 0.0)), (5, 4, 100, (0.0, 3.0, 1.0)))
STUFF = 150


def _corner(code: int, mag: float = 5.0) -> torch.Tensor:
    """[D] raw embedding whose bits are ``code``."""
    bits = torch.tensor([(code >> k) & 1 for k in range(D)], dtype=torch.float32)
    return (2 * bits - 1) * mag


def _model(groups, seed: int = 0) -> GaussianModel:
    """Blobs: ``groups`` = [(code, class, count, centre)] -> a GaussianModel with embedding [N, D]
    on those corner codes, semantic logits [N, 6] peaked on the class, random opacities and SH."""
    g = torch.Generator().manual_seed(seed)
    pts, codes, classes = [], [], []
    for code, cls, n, centre in groups:
        pts.append(torch.tensor(centre) + 0.03 * torch.randn(n, 3, generator=g))
        codes += [code] * n
        classes += [cls] * n
    pts = torch.cat(pts).numpy()  # [N, 3]
    model = GaussianModel.from_points(pts, np.random.default_rng(seed).random(pts.shape), sh_degree=1)
    N = model.num_gaussians
    emb = torch.stack([_corner(c) for c in codes]) + 0.1 * torch.randn(N, D, generator=g)  # [N, D]
    sem = torch.full((N, 6), -3.0)
    sem[torch.arange(N), torch.tensor(classes)] = 3.0
    model.params["embedding"] = torch.nn.Parameter(emb)
    model.params["semantic"] = torch.nn.Parameter(sem)
    model.params["opacities"] = torch.nn.Parameter(torch.randn(N, generator=g) * 2)
    model.params["shN"] = torch.nn.Parameter(torch.randn(N, 3, 3, generator=g))
    return model


def _save(model: GaussianModel, folder, *, label_columns: bool = True, source_path="/no/such/scene") -> str:
    path = os.path.join(folder, "point_cloud", "iteration_1", "point_cloud.ply")
    os.makedirs(os.path.dirname(path))
    model.save_ply(path, gaussian_label_columns(model, THINGS) if label_columns else None)
    save_cfg_args(str(folder), argparse.Namespace(source_path=str(source_path), l3d_radius2=1e-2, eval=False))
    return str(folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    groups = list(OBJECTS) + [(0, 1, STUFF, (1.0, 1.0, -2.0))]  # stuff: class 1, any code
    folder = tmp_path_factory.mktemp("objects") / "model"
    return _save(_model(groups), folder)


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "objects.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_list_ids_counts_centroids_and_colours(model_dir, tmp_path):
    labels = objects.load_labels(model_dir)
    assert labels.source == "column"
    table = objects.object_table(labels, min_gaussians=50,
                                 class_names=objects.class_names_for(argparse.Namespace(source_path="/no/such/scene")))
    assert [r.id for r in table.rows] == [2, 3, 6]  # by count, descending
    assert [r.gaussians for r in table.rows] == [300, 200, 100]
    assert [r.semantic for r in table.rows] == [4, 5, 4]
    assert all(r.class_name is None for r in table.rows)  # the scene is gone: no names
    assert table.stuff_gaussians == STUFF and table.small_ids == []
    # expected centroids and boxes from the PLY as loaded back, in float64
    model = GaussianModel.load_ply(labels.ply_path)
    means = model.get_means().detach().double().numpy()
    w = model.get_opacities().detach().double().numpy()
    ids = model.labels["instance_label"].numpy()
    for r in table.rows:
        sel = ids == r.id
        expect = (means[sel] * w[sel, None]).sum(0) / w[sel].sum()
        np.testing.assert_allclose(r.centroid, expect, atol=1e-4)
        np.testing.assert_allclose(r.extent, means[sel].max(0) - means[sel].min(0), atol=1e-6)
        rgb = colorize_ids(torch.tensor([r.id]))[0].tolist()
        assert r.color == "#%02x%02x%02x" % tuple(rgb)
    # small ids are summarised
    small = objects.object_table(labels, min_gaussians=250)
    assert [r.id for r in small.rows] == [2] and small.small_ids == [3, 6] and small.small_gaussians == 300
    assert "2 small ids (300 Gaussians)" in objects.format_table(small)


def test_cli_list_json_and_extract(model_dir, tmp_path):
    js = tmp_path / "objects.json"
    r = _cli("list", "-m", model_dir, "--json", js)
    assert r.returncode == 0, r.stderr
    assert "stuff (id 0): 150 Gaussians" in r.stdout
    data = json.loads(js.read_text())
    assert [(o["id"], o["gaussians"]) for o in data["objects"]] == [(2, 300), (3, 200), (6, 100)]
    out = tmp_path / "two.ply"
    r = _cli("extract", "-m", model_dir, "--id", 6, "--id", 2, "-o", out)
    assert r.returncode == 0, r.stderr
    cols = read_ply(str(out))
    assert sorted(np.unique(cols["instance_label"]).tolist()) == [2, 6] and len(cols["x"]) == 400


def test_extract_loads_back_bit_exact(model_dir, tmp_path):
    labels = objects.load_labels(model_dir)
    out = str(tmp_path / "obj3.ply")
    assert objects.extract(labels, [3], out) == 200
    src, got = read_ply(labels.ply_path), read_ply(out)
    assert list(got) == list(src)  # every column, same order
    sel = src["instance_label"] == 3
    for k in src:
        assert got[k].dtype == src[k].dtype
        assert np.array_equal(got[k].view(np.uint8), src[k][sel].view(np.uint8)), k
    back = GaussianModel.load_ply(out)
    full = GaussianModel.load_ply(labels.ply_path)
    keep = torch.from_numpy(sel)
    for k, v in full.params.items():
        assert torch.equal(back.params[k], v[keep]), k
    assert torch.equal(back.labels["instance_label"], full.labels["instance_label"][keep])


def test_remove_and_extract_partition_the_model(model_dir, tmp_path):
    labels = objects.load_labels(model_dir)
    a, b = str(tmp_path / "a.ply"), str(tmp_path / "b.ply")
    assert objects.extract(labels, [2, 6], a) == 400
    assert objects.remove(labels, [2, 6], b) == 200 + STUFF
    src, ca, cb = read_ply(labels.ply_path), read_ply(a), read_ply(b)
    sel = np.isin(src["instance_label"], [2, 6])
    for k in src:
        assert np.array_equal(ca[k], src[k][sel]) and np.array_equal(cb[k], src[k][~sel]), k
    assert sorted(np.unique(cb["instance_label"]).tolist()) == [0, 3]


def test_move_shifts_only_those_means(model_dir, tmp_path):
    labels = objects.load_labels(model_dir)
    out = str(tmp_path / "moved.ply")
    d = (0.5, -1.25, 2.0)
    assert objects.move(labels, [3], d, out) == 200
    src, got = read_ply(labels.ply_path), read_ply(out)
    sel = src["instance_label"] == 3
    for k in src:
        if k in "xyz":
            shift = np.float32(d["xyz".index(k)])
            assert np.array_equal(got[k][sel], src[k][sel] + shift)
            assert np.array_equal(got[k][~sel], src[k][~sel])
        else:
            assert np.array_equal(got[k], src[k]), k


def test_unknown_id_exits_2_with_one_line(model_dir, tmp_path):
    out = tmp_path / "x.ply"
    r = _cli("extract", "-m", model_dir, "--id", 99, "-o", out)
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "99" in lines[0] and "2 (300 Gaussians)" in lines[0]


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert objects.main(["list", "-m", str(tmp_path / "missing")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    folder = _save(_model([(1, 4, 60, (0, 0, 0))]), tmp_path / "m")
    assert objects.main(["list", "-m", folder, "--iteration", "7"]) == 2
    assert "iteration_7" in capsys.readouterr().err
    plain = _model([(1, 4, 60, (0, 0, 0))])
    del plain.params["embedding"], plain.params["semantic"]
    folder = _save(plain, tmp_path / "plain", label_columns=False)
    assert objects.main(["list", "-m", folder]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained without masks" in err[0]
    assert objects.main(["move", "-m", folder.replace("plain", "m"), "--id", "2", "--translate", "1", "0", "0",
                         "-o", os.path.join(tmp_path, "m", "point_cloud", "iteration_1", "point_cloud.ply")]) == 2
    assert "own PLY" in capsys.readouterr().err
    # relabel needs the training settings and views: a cfg_args without them is one line, nothing written
    assert objects.main(["relabel", "-m", folder.replace("plain", "m"), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cfg_args lacks" in err[0] and "resolution" in err[0]
    assert not os.path.exists(tmp_path / "r")
    assert objects.main(["relabel", "-m", str(tmp_path / "missing"), "-o", str(tmp_path / "r")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_split_disconnected_gives_far_blobs_their_own_ids(tmp_path):
    # code 3 (id 4) on two blobs 5 units apart, code 1 (id 2) on one; no label columns: decoded here
    groups = [(3, 4, 120, (0.0, 0.0, 0.0)), (3, 4, 90, (5.0, 0.0, 0.0)), (1, 5, 80, (0.0, 5.0, 0.0))]
    folder = _save(_model(groups, seed=1), tmp_path / "m", label_columns=False)
    plain = objects.load_labels(folder)
    assert plain.source == "embedding"
    assert [(r.id, r.gaussians) for r in objects.object_table(plain).rows] == [(4, 210), (2, 80)]
    split = objects.load_labels(folder, split_disconnected=True)
    rows = objects.object_table(split).rows
    assert [(r.id, r.gaussians) for r in rows] == [(4, 120), (5, 90), (2, 80)]
    np.testing.assert_allclose(rows[1].centroid, [5.0, 0.0, 0.0], atol=0.05)
    out = str(tmp_path / "far.ply")
    assert objects.extract(split, [5], out) == 90
    assert np.all(read_ply(out)["x"] > 4.0)


def test_class_names_from_scene_folder(tmp_path):
    (tmp_path / "generator.json").write_text(json.dumps({"class_names": ["void", "wall", "chair"]}))
    assert objects.class_names_for(argparse.Namespace(source_path=str(tmp_path))) == ["void", "wall", "chair"]
    assert objects.class_names_for(argparse.Namespace(source_path=str(tmp_path / "gone"))) is None
    assert objects.class_names_for(None) is None


# ----- the stray filter ----------------------------------------------------------------------
def _blob(g, n, centre, std=0.03):
    return torch.tensor(centre, dtype=torch.float32) + std * torch.randn(n, 3, generator=g)


def _stray_scene(seed=0):
    """id 3: a 400-point blob, a 12-point stray group 2 m away and a 150-point second part next to
    it (share ~27 %); id 5: a 300-point blob touching id 3's blob; 200 stuff points (id 0)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([_blob(g, 400, (0, 0, 0)), _blob(g, 12, (2, 0, 0), 0.01), _blob(g, 150, (0, 0.6, 0)),
                       _blob(g, 300, (0.12, 0, 0)), _blob(g, 200, (0, 0, -0.15), 0.05)])
    ids = torch.tensor([3] * 412 + [3] * 150 + [5] * 300 + [0] * 200)
    opac = torch.rand(len(ids), generator=g) * 0.8 + 0.2
    return ids, means, opac


def test_stray_filter_drops_far_groups_and_keeps_the_object():
    ids, means, opac = _stray_scene()
    r = objects.default_radius(means, ids)
    keep = objects.stray_filter(ids, means, opac, radius=r)
    stray = torch.zeros(len(ids), dtype=torch.bool)
    stray[400:412] = True
    assert torch.equal(keep, (ids > 0) & ~stray)  # the far group goes; the 27 % part and id 5 stay
    # a second part below min_share goes too; the heaviest part always stays
    keep = objects.stray_filter(ids, means, opac, radius=r, min_share=0.5)
    assert keep[:400].all() and not keep[400:562].any() and keep[562:862].all()
    # min_opacity: faint Gaussians are strays and do not bridge groups
    keep = objects.stray_filter(ids, means, opac, radius=r, min_opacity=0.5)
    assert not (keep & (opac < 0.5)).any() and keep[(opac >= 0.5) & (ids == 5)].all()


def test_default_radius_is_at_least_twice_the_typical_gaussian():
    """Sparse models: centres come in near-duplicate clones (tiny spacing) while each Gaussian spans
    centimetres; the radius follows the Gaussians' size then, in any scene unit."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(200, 3, generator=g, dtype=torch.float64)
    means = torch.cat([centres, centres + 1e-4])  # clones 0.1 mm apart
    ids = torch.full((400,), 2)
    scales = torch.full((400, 3), 0.01, dtype=torch.float64)
    scales[:, 1] = 0.05  # the largest axis counts
    spacing_only = objects.default_radius(means, ids)
    assert spacing_only == pytest.approx(8 * 3 ** 0.5 * 1e-4, rel=0.01)  # 8 x the clone distance
    assert objects.default_radius(means, ids, scales=scales) == pytest.approx(0.1)
    assert objects.default_radius(means * 250, ids, scales=scales * 250) == pytest.approx(25.0)
    assert objects.default_radius(means, ids, scales=scales, scale_factor=0) == spacing_only
    dense = scales * 1e-3  # tiny Gaussians: the spacing rule decides
    assert objects.default_radius(means, ids, scales=dense) == spacing_only


def test_stray_filter_near_keeps_cut_off_parts_of_the_object_only():
    """--stray_near F: a small part cut off by a gap but inside the main part's box grown by F x its
    size stays; the far group still goes."""
    g = torch.Generator().manual_seed(4)
    body = torch.rand(600, 3, generator=g) * torch.tensor([0.4, 0.4, 0.3])  # a 40 x 40 x 30 cm object
    handle = torch.rand(20, 3, generator=g) * 0.03 + torch.tensor([0.48, 0.18, 0.12])  # 8 cm off its side
    far = torch.rand(20, 3, generator=g) * 0.03 + torch.tensor([2.0, 2.0, 0.1])
    means = torch.cat([body, handle, far]).double()
    ids = torch.full((640,), 3)
    opac = torch.full((640,), 0.9)
    r = 0.04  # the gap (8 cm) is wider than the radius, so the handle is its own component
    keep = objects.stray_filter(ids, means, opac, radius=r)
    assert keep[:600].all() and not keep[600:].any()  # without near the handle goes with the far group
    keep = objects.stray_filter(ids, means, opac, radius=r, near=0.25)  # box grown by 10 cm
    assert keep[:620].all() and not keep[620:].any()


def test_stray_filter_is_scale_free_permutation_equivariant_and_opacity_weighted():
    ids, means, opac = _stray_scene(1)
    base = objects.stray_filter(ids, means, opac, radius=objects.default_radius(means, ids))
    big = means * 250.0 + 7.0  # another scene unit and origin
    assert torch.equal(objects.stray_filter(ids, big, opac, radius=objects.default_radius(big, ids)), base)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(2))
    got = objects.stray_filter(ids[perm], means[perm], opac[perm], radius=objects.default_radius(means, ids))
    assert torch.equal(got, base[perm])
    # the heaviest group by opacity wins, not the most numerous: fade the 400-point blob
    faint = opac.clone()
    faint[:400] = 0.01
    faint[400:412] = 1.0
    keep = objects.stray_filter(ids, means, faint, radius=objects.default_radius(means, ids), min_share=0.9)
    assert keep[562:862].all()  # id 5 untouched
    assert not keep[:400].any() and keep[400:562].sum() > 0  # 150-point part (~150 x 0.6) outweighs 400 x 0.01


def test_extract_and_remove_partition_with_the_filter(tmp_path):
    model = _model([(1, 4, 300, (0.0, 0.0, 0.0)), (1, 4, 10, (4.0, 0.0, 0.0)), (2, 5, 200, (0.0, 3.0, 0.0))], seed=3)
    folder = _save(model, tmp_path / "m")
    labels = objects.load_labels(folder)
    assert labels.strays == 10 and int((labels.ids == 2).sum()) == 300
    a, b = str(tmp_path / "a.ply"), str(tmp_path / "b.ply")
    assert objects.extract(labels, [2], a) == 300
    assert objects.remove(labels, [2], b) == 210  # the strays stay in the scene
    src, ca, cb = read_ply(labels.ply_path), read_ply(a), read_ply(b)
    assert len(ca["x"]) + len(cb["x"]) == len(src["x"]) and ca["x"].max() < 1.0
    assert np.isin(np.concatenate([ca["x"], cb["x"]]), src["x"]).all()
    every = objects.load_labels(folder, strays=objects.StrayFilter(keep=True))
    assert every.strays == 0 and objects.extract(every, [2], a) == 310
    r = _cli("list", "-m", folder, "--keep_strays")
    assert r.returncode == 0 and "310" in r.stdout
    r = _cli("list", "-m", folder)
    assert r.returncode == 0 and "stray groups left out of their objects: 10 Gaussians" in r.stdout


def test_instance_only_models_list_objects(tmp_path):
    plain = _model([(1, 4, 60, (0, 0, 0)), (2, 4, 60, (1, 0, 0))])
    del plain.params["semantic"]
    folder = _save(plain, tmp_path / "plain", label_columns=False)
    table = objects.object_table(objects.load_labels(folder))
    assert [r.class_name for r in table.rows] == ["object", "object"]
    assert objects.class_names_for(None, num_classes=2) == ["background", "object"]
    (tmp_path / "sparse").mkdir()  # a COLMAP scene trained without --sem_dir
    ns = argparse.Namespace(source_path=str(tmp_path), sem_dir=None)
    assert objects.class_names_for(ns) == ["background", "object"]
    (tmp_path / "generator.json").write_text(json.dumps({"class_names": ["void", "wall", "chair"]}))
    assert objects.class_names_for(argparse.Namespace(source_path=str(tmp_path), sem_dir="semantics"))[2] == "chair"


# ----- extraction measurement against the generator's boxes ---------------------------------
def test_boxes_follow_the_generator_geometry():
    from tools.extraction_eval import box_pairs, load_boxes
    from tools.synthetic.layout import build_layout

    lay = build_layout("old_room", 40, np.random.default_rng(5))
    boxes = load_boxes({"objects": [it.to_json() for it in lay.items]})
    assert sorted(boxes.ids.tolist()) == list(range(1, 41))  # things only, GT instance ids
    verts = [(m.vertices, inst) for m, inst, _, _ in lay.parts]
    pts = np.concatenate([v for v, _ in verts])
    inst = np.concatenate([np.full(len(v), i) for v, i in verts])
    g, o = box_pairs(pts, boxes, 1e-3)  # generator.json rounds to 0.1 mm
    thing = inst > 0
    inside = np.zeros(len(pts), bool)
    inside[g[boxes.ids[o] == inst[g]]] = True
    assert inside[thing].all()  # every vertex of a thing lies in its own box
    g, o = box_pairs(pts, boxes, -0.01)  # the shrunk box holds no other object's or stuff's vertex
    assert (boxes.ids[o] == inst[g]).all()


def test_measure_extraction_precision_recall_by_hand():
    from tools.extraction_eval import ObjectBoxes, measure_extraction

    boxes = ObjectBoxes(ids=np.array([1, 2]), kinds=["parcel", "can"], classes=np.array([20, 20]),
                        centre=np.array([[0.0, 0.0, 0.1], [2.0, 0.0, 0.1]]), half=np.array([[0.3, 0.1, 0.1]] * 2),
                        yaw=np.array([np.pi / 2, 0.0]))  # box 1 is long along y (rotated)
    pts = torch.tensor([[0.0, 0.25, 0.1],  # inside box 1 only because of its yaw
                        [0.0, -0.2, 0.1], [0.0, 0.0, 0.15],  # inside box 1
                        [0.0, 0.0, 0.0],  # floor under box 1: on its face, not in the shrunk box
                        [0.25, 0.0, 0.1],  # outside box 1 (its x half is 0.1), 15 cm off: not in the grown box
                        [0.13, 0.0, 0.1],  # outside box 1, 3 cm off: inside the grown box
                        [2.0, 0.0, 0.1], [2.1, 0.05, 0.1],  # box 2
                        [5.0, 5.0, 5.0]])  # far away
    w = torch.tensor([1.0, 1.0, 2.0, 1.0, 0.5, 0.5, 1.5, 1.0, 1.0])
    ids = torch.tensor([7, 7, 7, 0, 7, 7, 9, 4, 7])
    rep = measure_extraction(ids, ids > 0, pts, w, boxes)
    a, b = rep.objects
    assert (a.gt_id, a.matched_id, b.matched_id) == (1, 7, 9)
    assert a.precision == pytest.approx((1 + 1 + 2 + 0.5) / (1 + 1 + 2 + 0.5 + 0.5 + 1))  # 15 cm and far: out
    assert a.recall == pytest.approx(1.0)  # the floor Gaussian is not part of the object
    assert b.precision == pytest.approx(1.0) and b.recall == pytest.approx(0.6)  # id 4 holds the rest
    assert (b.missed_other, b.missed_stuff, b.missed_filtered) == (pytest.approx(0.4), 0.0, 0.0)
    assert rep.missed["other"] == pytest.approx(1.0 / (4.0 + 2.5))  # of all reference opacity
    kept = ids > 0
    kept[8] = False  # a stray filter that drops the far Gaussian
    assert measure_extraction(ids, kept, pts, w, boxes).objects[0].precision == pytest.approx(4.5 / 5.0)
    kept[2] = False  # ... and one inside box 1 (2 of its 4 reference opacity)
    a2 = measure_extraction(ids, kept, pts, w, boxes).objects[0]
    assert a2.recall == pytest.approx(0.5) and a2.missed_filtered == pytest.approx(0.5)
    stuffed = ids.clone()
    stuffed[1] = 0  # labelled stuff: 1 of box 1's 4
    assert measure_extraction(stuffed, stuffed > 0, pts, w, boxes).objects[0].missed_stuff == pytest.approx(0.25)
    assert rep.median_precision == pytest.approx(np.median([a.precision, 1.0]))
    # an observed object no id claims scores 0 / 0; an unobserved one is left out
    none = measure_extraction(torch.zeros(9, dtype=torch.int64), torch.zeros(9, dtype=torch.bool), pts, w, boxes)
    assert none.unmatched == 2 and none.median_precision == 0.0 and none.median_recall == 0.0
    far = measure_extraction(ids, ids > 0, pts + 100.0, w, boxes)
    assert far.observed == 0 and far.median_precision is None


def test_surface_reference_is_the_exact_object_geometry(tmp_path):
    """Recall's exact-geometry reference: a perfect model (Gaussians sampled on the true surfaces,
    each with its true id) scores recall near 1 on every object with both references; stuff-labelled
    floaters inside an object's box but on no surface count as misses for the box reference only.
    A generator.json whose objects moved is refused (one line)."""
    from tests.conftest import make_scene
    from tools import extraction_eval as ev

    scene = make_scene(str(tmp_path / "s"), objects=12, views=2, size="32x24", noise="clean", seed=3,
                       extra=["--format", "messy", "--points", "none", "--no-depth"])
    mesh = ev.scene_mesh(scene)
    boxes = ev.load_boxes(scene)
    assert set(np.unique(mesh.tri_instance[mesh.tri_instance > 0])) == set(boxes.ids.tolist())
    pts, inst = ev.surface_samples(mesh, spacing=0.02, seed=1)  # the "model"
    ref_pts, ref_inst = ev.surface_samples(mesh, spacing=0.005, seed=2)  # the reference sampling
    owner = ev.surface_owner(pts, ref_pts, ref_inst, ev.SURFACE_TOL)
    assert (owner == inst).mean() > 0.97  # nearly every sample's nearest surface is its own
    ids, w = torch.from_numpy(inst), torch.ones(len(inst))
    exact = ev.measure_extraction(ids, ids > 0, torch.from_numpy(pts), w, boxes, inner=ev.SURFACE_TOL, owner=owner)
    box = ev.measure_extraction(ids, ids > 0, torch.from_numpy(pts), w, boxes)
    assert exact.reference == "surface" and exact.observed == len(boxes)
    # contact faces (an object's bottom on the floor) are coplanar with stuff samples: about half of
    # those go either way, which no real model sees (neither face is visible)
    assert exact.median_recall > 0.97 and min(o.recall for o in exact.objects) > 0.85
    assert exact.median_precision == pytest.approx(1.0)
    assert box.median_recall > 0.97
    # floaters labelled stuff in each object's box, away from every surface (the air in a bucket or
    # a ring, a ball's core): the box reference counts them as missed parts, the surface reference
    # does not (they are no part of the object)
    centre = boxes.centre.copy()
    far = ev.surface_owner(centre, ref_pts, ref_inst, ev.SURFACE_TOL) == -1
    assert far.sum() >= 3
    fl = np.repeat(centre[far], 20, axis=0)
    all_pts = torch.from_numpy(np.concatenate([pts, fl]))
    all_ids = torch.cat([ids, torch.zeros(len(fl), dtype=torch.int64)])
    all_w = torch.ones(len(all_ids))
    owner2 = ev.surface_owner(all_pts.numpy(), ref_pts, ref_inst, ev.SURFACE_TOL)
    exact2 = ev.measure_extraction(all_ids, all_ids > 0, all_pts, all_w, boxes, inner=ev.SURFACE_TOL, owner=owner2)
    box2 = ev.measure_extraction(all_ids, all_ids > 0, all_pts, all_w, boxes)
    hit = [k for k in range(len(boxes)) if far[k]]
    assert all(exact2.objects[k].recall == pytest.approx(exact.objects[k].recall) for k in hit)
    assert all(box2.objects[k].recall < box.objects[k].recall - 0.01 for k in hit)
    meta = json.loads((tmp_path / "s" / "generator.json").read_text())
    meta["objects"][[o["instance"] > 0 for o in meta["objects"]].index(True)]["position"][0] += 0.5
    with pytest.raises(ev.ExtractionEvalError, match="regenerate"):
        ev.scene_mesh(meta)


@pytest.mark.slow
def test_extraction_on_a_tiny_trained_scene(tmp_path):
    """End to end on the CPU: generate, train briefly (15k of the 55k depth-initialised Gaussians: 2.5x faster than
    all of them; 3k merge objects), measure ``extract`` against the generator's boxes. Bar (stated in issue 9's
    terms, loose for a 300-iteration 64x48 model): median precision
    >= 0.9 and median recall >= 0.5 over the observed objects, the stray filter never lowers the
    median precision and costs at most 0.05 of median recall."""
    import train
    from tests.conftest import make_scene

    scene = make_scene(str(tmp_path / "scene"), objects=4, views=24, size="64x48", noise="clean", seed=1,
                       extra=["--num-points", "3000"])
    out = str(tmp_path / "m")
    train.training(train.prepare_args([
        "-s", scene, "-m", out, "--iterations", "300", "--densify_until_iter", "0", "--test_iterations", "-1",
        "--quiet", "--init_points", "15000", "--embedding_lr", "0.02", "--semantic_lr", "0.02"]))
    res = objects.evaluate(objects.load_labels(out))
    every, clean = res["all"], res["extract"]
    assert clean.observed >= 3, objects_report(res)
    assert clean.median_precision >= 0.9, objects_report(res)
    assert clean.median_recall >= 0.5, objects_report(res)
    assert clean.median_precision >= every.median_precision - 1e-9, objects_report(res)
    assert clean.median_recall >= every.median_recall - 0.05, objects_report(res)
    # the CLI prints the same numbers and writes them as JSON
    js = tmp_path / "extraction.json"
    r = _cli("evaluate", "-m", out, "--json", js, "--quiet")
    assert r.returncode == 0, r.stderr
    data = json.loads(js.read_text())
    assert data["extract"]["median_precision"] == pytest.approx(clean.median_precision)
    assert f"median precision {clean.median_precision:5.3f}" in r.stdout

    # relabel: the default rule rewrites exactly the columns train.py saved; "own" (the rule before the
    # vote) makes a subset of "union"'s things, and with the default every object keeps at least its recall.
    # (The default may drop an own thing: a disputed Gaussian that the masks do not back.)
    from utils.ply import read_ply

    def columns(model):
        it = max(int(d.split("_")[1]) for d in os.listdir(os.path.join(model, "point_cloud")))
        return read_ply(os.path.join(model, "point_cloud", f"iteration_{it}", "point_cloud.ply"))

    same, own, union = str(tmp_path / "same"), str(tmp_path / "own"), str(tmp_path / "union")
    assert _cli("relabel", "-m", out, "-o", same, "--quiet").returncode == 0
    assert _cli("relabel", "-m", out, "-o", union, "--things", "union", "--quiet").returncode == 0
    r = _cli("relabel", "-m", out, "-o", own, "--things", "own", "--quiet")
    assert r.returncode == 0 and "--things own" in r.stdout, r.stderr
    trained, again, before, unioned = columns(out), columns(same), columns(own), columns(union)
    for k in ("instance_label", "semantic_label", "x", "f_dc_0"):
        np.testing.assert_array_equal(np.asarray(again[k]), np.asarray(trained[k]))
    np.testing.assert_array_equal(np.asarray(before["x"]), np.asarray(trained["x"]))
    union_things, own_things = np.asarray(unioned["instance_label"]) > 0, np.asarray(before["instance_label"]) > 0
    assert (union_things | ~own_things).all() and own_things.any()  # every own thing stays a thing
    keep = objects.StrayFilter(keep=True)
    r_now = objects.evaluate(objects.load_labels(out, strays=keep))["all"]
    r_own = objects.evaluate(objects.load_labels(own, strays=keep))["all"]
    assert r_now.median_recall >= r_own.median_recall - 1e-9, (objects_report({"all": r_own, "extract": r_now}))
    bad = _cli("relabel", "-m", out, "-o", out)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "another -o" in bad.stderr


def objects_report(res) -> str:
    from tools.extraction_eval import format_report

    return "\n" + format_report(res["all"], "all:") + "\n" + format_report(res["extract"], "extract:")


# ----- contact sheet -------------------------------------------------------------------------
def _cameras_json(folder, eyes, target=(0.0, 0.0, 0.0), W=64, H=48, f=60.0):
    """3DGS cameras.json with cameras at ``eyes`` looking at ``target`` (camera-to-world rotation)."""
    from tests.fixtures_scenes import look_at_c2w

    cams = []
    for k, eye in enumerate(eyes):
        c2w = look_at_c2w(eye, target)
        cams.append({"id": k, "img_name": f"{k:04d}", "width": W, "height": H, "position": list(eye),
                     "rotation": c2w[:3, :3].tolist(), "fx": f, "fy": f})
    (folder / "cameras.json").write_text(json.dumps(cams))


def test_best_view_is_close_and_whole():
    from scene.cameras import Camera
    from tests.fixtures_scenes import look_at_c2w

    def cam(eye, target=(0.0, 0.0, 0.0)):
        K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
        return Camera(0, "v", K, np.linalg.inv(look_at_c2w(eye, target)), 64, 48)

    g = torch.Generator().manual_seed(0)
    means = torch.cat([_blob(g, 200, (0, 0, 0), 0.1), _blob(g, 200, (3, 0, 0), 0.1)])
    ids = torch.tensor([1] * 200 + [2] * 200)
    opac, scales = torch.full((400,), 0.9), torch.full((400, 3), 0.02)
    cams = [cam((0, -6, 1)), cam((0, -1.2, 0.3)), cam((0, -0.6, 0.0), (0.5, 0, 0)), cam((3, -1.5, 0.5), (3, 0, 0))]
    # object 1: the close whole view (1), not the far one (0) nor the closer one cutting it off (2)
    assert objects.best_views(cams, means, opac, scales, ids, [1, 2]) == {1: 1, 2: 3}


def test_sheet_renders_every_object_with_its_overlay_colour(tmp_path):
    from PIL import Image

    folder = _save(_model(list(OBJECTS) + [(0, 1, STUFF, (1.0, 1.0, -2.0))]), tmp_path / "m")  # scene gone
    _cameras_json(tmp_path / "m", [(1.5, -4.0, 2.0), (-3.0, 1.0, 1.5), (2.0, 5.0, 1.0)], target=(1.0, 1.0, 0.3))
    out = tmp_path / "sheet.png"
    r = _cli("sheet", "-m", folder, "-o", out, "--tile", "96", "--columns", "2")
    assert r.returncode == 0, r.stderr
    img = np.asarray(Image.open(out).convert("RGB"))
    tile, cap, pad = 96, 34, 6
    assert img.shape == (pad + 2 * (tile + cap + pad), pad + 2 * (tile + pad), 3)  # 3 objects in 2 columns
    for k, i in enumerate((2, 3, 6)):  # rows by size
        x, y = pad + (k % 2) * (tile + pad), pad + (k // 2) * (tile + cap + pad)
        body = img[y:y + tile, x:x + tile].astype(int)
        assert (np.abs(body - 255).sum(-1) > 60).mean() > 0.05  # the object is drawn, not a blank tile
        bar = img[y + tile + cap - 3, x + tile - 4]  # a caption pixel away from the text
        assert bar.tolist() == colorize_ids(torch.tensor([i]))[0].tolist()
    # a model with nothing to show is a one-line error
    r = _cli("sheet", "-m", folder, "-o", out, "--min_gaussians", "1000")
    assert r.returncode == 2 and "no object" in r.stderr


def test_a_second_object_with_the_same_code_is_listed_and_extracted_under_its_own_id(tmp_path):
    """Code 1 on two blobs 3 m apart, both on the masks' object pixels: train.py's default rule gives the
    lighter one the id 2^D + 1. ``list`` shows it with the colour the renders give it (its code's id, 2),
    and ``extract`` returns exactly it; with one id for both, the stray filter drops it (60 of 460)."""
    from segmentation.labels import ThingVotes

    groups = [(1, 4, 400, (0.0, 0.0, 0.0)), (1, 4, 60, (3.0, 0.0, 0.0)), (0, 1, STUFF, (1.0, 1.0, -2.0))]
    model = _model(groups, seed=4)
    N = model.num_gaussians
    seen = torch.full((N,), 20.0)
    thing = torch.cat([torch.full((460,), 18.0), torch.zeros(STUFF)])  # the blobs render as things, stuff does not
    votes = ThingVotes(seen, thing, seen * torch.cat([torch.full((460,), 0.9), torch.zeros(STUFF)]))
    cols = gaussian_label_columns(model, THINGS, thing_votes=votes, thing_rule="union_fill_masks",
                                  semantic_masks=False)
    piece = 2 ** D + 1
    assert (cols["instance_label"][400:460] == piece).all() and (cols["instance_label"][:400] == 2).all()
    path = os.path.join(tmp_path, "m", "point_cloud", "iteration_1", "point_cloud.ply")
    os.makedirs(os.path.dirname(path))
    model.save_ply(path, cols)
    save_cfg_args(str(tmp_path / "m"), argparse.Namespace(source_path="/no/such/scene", l3d_radius2=1e-2, eval=False))
    labels = objects.load_labels(str(tmp_path / "m"))
    rows = {r.id: r for r in objects.object_table(labels).rows}
    assert sorted(rows) == [2, piece] and rows[piece].gaussians == 60 and rows[piece].render_id == 2
    assert rows[piece].color == rows[2].color == "#" + "".join(f"{int(c):02x}" for c in colorize_ids(torch.tensor(2)))
    assert "renders as id 2" in objects.format_table(objects.object_table(labels))
    out = str(tmp_path / "second.ply")
    assert objects.extract(labels, [piece], out) == 60
    # the viewer's instance colours are the overlays' too: the second object shows its code's colour
    from viewer.data import load_viewer_data

    data = load_viewer_data(str(tmp_path / "m"))
    colours = data.colours("Instance")  # [N, 3]
    want = colorize_ids(torch.tensor(2)).numpy().astype(np.float32) / 255.0
    np.testing.assert_allclose(colours[400:460], np.broadcast_to(want, (60, 3)), atol=1e-6)
    assert data.rows[piece].render_id == 2 and int(data.column_ids[450]) == piece
    assert np.all(read_ply(out)["x"] > 2.5)
    # the same model labelled without the pieces step: the second blob stays id 2 and the filter drops it
    plain = gaussian_label_columns(model, THINGS, thing_votes=votes, thing_rule="union_fill")["instance_label"]
    assert (plain[:460] == 2).all()
    means = model.get_means().detach()
    keep = objects.stray_filter(plain, means, model.get_opacities().detach(),
                                radius=objects.default_radius(means, plain, scales=model.get_scales()))
    assert keep[:400].all() and not keep[400:460].any()
