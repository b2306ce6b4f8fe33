"""Synthetic scene generator: geometry, cameras, ray casting, simulated segmenter, writers."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tools.synthetic.cameras import camera_rays, free_space, handheld_path, project
from tools.synthetic.classes import STUFF_CLASSES, THING_CLASSES
from tools.synthetic.generate import SceneConfig, generate_scene
from tools.synthetic.layout import build_layout, obb_overlap
from tools.synthetic.meshes import box, frustum, signed_volume, sphere, torus
from tools.synthetic.raycast import TorchCaster, embree_available, make_caster
from tools.synthetic.segmenter import NoiseConfig, PRESETS, simulate_segmenter
from tools.synthetic.writers import rotation_to_quaternion_wxyz

TINY = dict(layout="old_room", num_objects=5, num_views=8, width=64, height=48, num_points=2000)


def _gen(root, name, messy=False, workers=1, **kw):
    cfg = SceneConfig(**{**TINY, **kw})
    out = str(root / name)
    meta = generate_scene(cfg, out, out + "_messy" if messy else None, progress=False, workers=workers)
    return out, meta


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return {
        "clean": _gen(root, "clean", messy=True, noise="clean", probabilities=True),
        "real": _gen(root, "real", noise="realistic"),
    }


def _label(path):
    return np.array(Image.open(path)).astype(np.int64)


# ------------------------------------------------------------------------------------------ geometry
def test_primitives_are_closed_and_outward():
    assert signed_volume(box(1, 2, 3)) == pytest.approx(6.0)
    assert signed_volume(frustum(1, 1, 1, 96)) == pytest.approx(np.pi, rel=2e-3)
    assert signed_volume(frustum(1, 0, 1, 96)) == pytest.approx(np.pi / 3, rel=2e-3)
    assert signed_volume(sphere(1, level=3)) == pytest.approx(4 / 3 * np.pi, rel=1e-2)
    assert signed_volume(torus(1, .25, 96, 48)) == pytest.approx(2 * np.pi ** 2 * .25 ** 2, rel=5e-3)


def test_layout_objects_do_not_interpenetrate_and_touch_and_stack():
    lay = build_layout("old_room", 120, np.random.default_rng(3))
    things = [it for it in lay.items if it.instance > 0]
    assert sorted(it.instance for it in things) == list(range(1, 121))
    L, W, H = lay.size
    c = np.array([it.position[:2] for it in things])
    h = np.array([it.half for it in things])
    y = np.array([it.yaw for it in things])
    z0 = np.array([it.position[2] for it in things])
    z1 = z0 + np.array([it.height for it in things])
    assert (c > 0).all() and (c[:, 0] < L).all() and (c[:, 1] < W).all() and (z1 < H).all()
    overlapping = touching = 0
    for i in range(len(things)):
        zo = (z0 < z1[i] - 1e-3) & (z0[i] < z1 - 1e-3)
        zo[i] = False
        overlapping += int((obb_overlap(c[i], h[i], y[i], c, h, y, eps=1e-3) & zo).sum())
        touching += int((obb_overlap(c[i], h[i], y[i], c, h, y, eps=-2e-3) & zo).sum())
    assert overlapping == 0
    assert touching >= 10  # pairs counted twice; the layout places ~25 % of objects against another
    supports = [it.support for it in things]
    assert supports.count("stack") >= 3 and supports.count("furniture") >= 5
    assert len({it.cls for it in lay.items}) >= 10  # stuff and thing classes


def test_camera_path_is_inside_free_space_and_smooth():
    lay = build_layout("large_corridor", 25, np.random.default_rng(1))
    c2w = handheld_path(lay, 60, np.random.default_rng(2))
    assert c2w.shape == (60, 4, 4)
    R, t = c2w[:, :3, :3], c2w[:, :3, 3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    assert free_space(lay, t, 0.4, 0.35).all()
    assert t[:, 2].min() > 1.15 and t[:, 2].max() < 1.85
    step = np.linalg.norm(np.diff(t, axis=0), axis=1)
    assert step.max() < 4 * np.median(step)  # even spacing along the loop
    fwd = R[:, :, 2]
    assert np.degrees(np.arccos(np.clip((fwd[1:] * fwd[:-1]).sum(1), -1, 1))).max() < 45
    assert fwd[:, 2].mean() < -0.1  # looking down at the room contents on average


@pytest.mark.skipif(not embree_available(), reason="embreex not installed")
def test_embree_matches_torch_twin():
    lay = build_layout("old_room", 3, np.random.default_rng(0))
    m = lay.assemble()
    rng = np.random.default_rng(0)
    o = np.tile(np.array([[lay.size[0] / 2, lay.size[1] / 2, 1.5]]), (400, 1))
    d = rng.normal(size=(400, 3))
    fast, ref = make_caster(m.vertices, m.faces, "embree"), TorchCaster(m.vertices, m.faces)
    a, b = fast.intersect(o, d), ref.intersect(o, d)
    assert (b.tri >= 0).all()  # a closed room: every ray hits
    same = a.tri == b.tri
    assert same.mean() > 0.98
    np.testing.assert_allclose(a.t, b.t, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.u[same], b.u[same], atol=1e-3)
    tmax = np.full(400, 0.5)
    np.testing.assert_array_equal(fast.occluded(o, d, tmax), ref.occluded(o, d, tmax))


# ------------------------------------------------------------------------------------------ scenes
def test_deterministic_for_a_seed_and_worker_count(tmp_path, scenes):
    a, _ = scenes["real"]
    b, _ = _gen(tmp_path, "again", noise="realistic", workers=2)
    c, _ = _gen(tmp_path, "other", noise="realistic", seed=1)
    for sub in ("color", "depth", "pose", "rs_instance", "m2f_instance", "m2f_semantics", "m2f_probabilities"):
        for f in sorted(os.listdir(os.path.join(a, sub))):
            with open(os.path.join(a, sub, f), "rb") as fa, open(os.path.join(b, sub, f), "rb") as fb:
                assert fa.read() == fb.read(), f"{sub}/{f} differs between two runs"
    with open(os.path.join(a, "points3d.ply"), "rb") as fa, open(os.path.join(b, "points3d.ply"), "rb") as fb:
        assert fa.read() == fb.read()
    ja, jc = (json.load(open(os.path.join(x, "generator.json"))) for x in (a, c))
    assert ja["objects"] != jc["objects"]


def _world_points(scene, name, K):
    depth = np.array(Image.open(os.path.join(scene, "depth", f"{name}.png"))).astype(np.float64) / 1000.0
    c2w = np.loadtxt(os.path.join(scene, "pose", f"{name}.txt"))
    o, d = camera_rays(K, c2w, depth.shape[1], depth.shape[0])
    return o + d * depth.reshape(-1, 1), depth


def test_gt_is_consistent_across_views(scenes):
    """A 3D point seen in two views carries the same GT instance id and class in both."""
    scene, meta = scenes["real"]
    K = np.loadtxt(os.path.join(scene, "intrinsic", "intrinsic_color.txt"))[:3, :3]
    checked = agree = 0
    for i, j in ((0, 1), (1, 2), (2, 3), (4, 5), (6, 7), (0, 2)):
        ni, nj = f"{i:04d}", f"{j:04d}"
        X, depth_i = _world_points(scene, ni, K)
        uv, z = project(X, K, np.loadtxt(os.path.join(scene, "pose", f"{nj}.txt")))
        u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        H, W = depth_i.shape
        depth_j = np.array(Image.open(os.path.join(scene, "depth", f"{nj}.png"))).astype(np.float64) / 1000.0
        ok = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0) & (depth_i.ravel() > 0)
        ok[ok] &= np.abs(depth_j[v[ok], u[ok]] - z[ok]) < 0.01  # visible in view j (not occluded)
        for sub in ("rs_instance", "rs_semantics"):
            gi = _label(os.path.join(scene, sub, f"{ni}.png")).ravel()
            gj = _label(os.path.join(scene, sub, f"{nj}.png"))
            checked += ok.sum()
            agree += (gi[ok] == gj[v[ok], u[ok]]).sum()
    assert checked > 2000
    assert agree / checked > 0.97  # the rest: pixels on object silhouettes


def test_clean_masks_equal_gt_up_to_a_per_view_permutation(scenes):
    scene, _ = scenes["clean"]
    maps = []
    for n in sorted(os.listdir(os.path.join(scene, "rs_instance"))):
        gt = _label(os.path.join(scene, "rs_instance", n))
        pred = _label(os.path.join(scene, "m2f_instance", n))
        np.testing.assert_array_equal(gt > 0, pred > 0)
        np.testing.assert_array_equal(_label(os.path.join(scene, "rs_semantics", n)),
                                      _label(os.path.join(scene, "m2f_semantics", n)))
        prob = np.load(os.path.join(scene, "m2f_probabilities", n.replace(".png", ".npz")))["probability"]
        assert prob.shape == gt.shape + (22,) and prob.dtype == np.float16
        np.testing.assert_array_equal(prob.argmax(-1), _label(os.path.join(scene, "m2f_semantics", n)))
        np.testing.assert_allclose(prob.astype(np.float32).sum(-1), 1.0, atol=2e-2)
        pairs = np.unique(np.stack([gt[gt > 0], pred[gt > 0]], 1), axis=0)  # (gt id, pred id)
        assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))  # a bijection
        assert sorted(pairs[:, 1]) == list(range(1, len(pairs) + 1))
        maps.append(dict(map(tuple, pairs)))
    # inconsistent across views: some object has different predicted ids in two views
    seen = {}
    for m in maps:
        for g, p in m.items():
            seen.setdefault(g, set()).add(p)
    assert any(len(ids) > 1 for ids in seen.values())


def test_realistic_masks_are_noisy(scenes):
    scene, meta = scenes["real"]
    stats = meta["noise_stats"]
    assert stats["pred_things"] != stats["gt_things"] or stats["missed"] + stats["merged_pairs"] > 0
    differ = 0
    for n in sorted(os.listdir(os.path.join(scene, "rs_instance"))):
        gt, pred = _label(os.path.join(scene, "rs_instance", n)), _label(os.path.join(scene, "m2f_instance", n))
        differ += int(((gt > 0) != (pred > 0)).sum())
    assert differ > 0
    js = json.load(open(os.path.join(scene, "generator.json")))
    assert js["noise"]["merge_rate"] == PRESETS["realistic"].merge_rate and js["config"]["seed"] == 0
    assert len([o for o in js["objects"] if o["instance"] > 0]) == 5


def test_reader_loads_both_formats(scenes):
    from scene.dataset_readers import read_scene
    from utils.image_io import load_confidence, load_label
    from utils.ply import read_ply

    scene, _ = scenes["clean"]
    p, m = read_scene(scene), read_scene(scene + "_messy")
    assert (p.format, m.format) == ("panopli", "messy")
    assert [f.camera.name for f in p.test] == ["0003", "0007"]  # every 4th view held out
    assert len(p.train) == 6 and len(m.train) == 6 and len(m.test) == 2  # Messy: first 80 %
    assert p.num_classes == 22 and m.num_classes == 2 and tuple(p.thing_classes) == THING_CLASSES
    fp = {f.camera.name: f for f in p.train + p.test}
    for f in m.train + m.test:
        g = fp[f.camera.name]
        np.testing.assert_allclose(f.camera.world_view, g.camera.world_view, atol=1e-6)
        np.testing.assert_allclose(f.camera.K, g.camera.K, atol=1e-6)
        np.testing.assert_array_equal(load_label(f.instance_path), load_label(g.instance_path))
        np.testing.assert_array_equal(load_label(f.gt_instance_path), load_label(g.gt_instance_path))
        np.testing.assert_array_equal(load_label(f.semantic_path), np.isin(load_label(g.semantic_path), THING_CLASSES))
        assert load_confidence(g.confidence_path).shape == (48, 64)
    K = np.loadtxt(os.path.join(scene, "intrinsic", "intrinsic_color.txt"))[:3, :3]
    np.testing.assert_allclose(p.train[0].camera.K[:2, 2], K[:2, 2] + 0.5)  # reader's pixel-centre shift
    ply = read_ply(os.path.join(scene, "points3d.ply"))
    assert len(ply["x"]) == 2000 and ply["red"].dtype == np.uint8


def test_quaternion_matches_reader_convention():
    from scene.readers.common import quat_wxyz_to_rotmat
    rng = np.random.default_rng(0)
    for _ in range(20):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        R = q * np.sign(np.linalg.det(q))
        qw = rotation_to_quaternion_wxyz(R)
        assert qw[0] >= 0
        np.testing.assert_allclose(quat_wxyz_to_rotmat(qw), R, atol=1e-9)


# ------------------------------------------------------------------------------------------ segmenter
def _grid(n_side=8, cell=24, size=14, gap_depth=False, pairs=False):
    """Objects on a stuff floor (class 2): squares of ``size`` px in a grid; with ``pairs``, each
    cell holds two touching rectangles (ids 2k+1, 2k+2) whose depth differs by 0.5 m if
    ``gap_depth``."""
    H = W = n_side * cell
    inst = np.zeros((H, W), np.int64)
    depth = np.full((H, W), 3.0)
    k = 0
    for gy in range(n_side):
        for gx in range(n_side):
            y0, x0 = gy * cell + 2, gx * cell + 2
            if pairs:
                inst[y0:y0 + size, x0:x0 + size // 2] = k + 1
                inst[y0:y0 + size, x0 + size // 2:x0 + size] = k + 2
                depth[y0:y0 + size, x0:x0 + size] = 2.0
                if gap_depth:
                    depth[y0:y0 + size, x0 + size // 2:x0 + size] = 2.5
                k += 2
            else:
                inst[y0:y0 + size, x0:x0 + size] = k + 1
                depth[y0:y0 + size, x0:x0 + size] = 2.0
                k += 1
    sem = np.where(inst > 0, 20, 2)
    return inst, sem, depth


def _run(inst, sem, depth, cfg, seeds=range(6)):
    return [simulate_segmenter(inst, sem, depth, cfg, np.random.default_rng(s)) for s in seeds]


def _gt_to_pred(inst, pred):
    """For each GT id: the set of predicted ids covering its pixels."""
    out = {}
    for g, p in np.unique(np.stack([inst.ravel(), pred.ravel()], 1), axis=0):
        if g > 0:
            out.setdefault(int(g), set()).add(int(p))
    return out


def test_ids_are_permuted_and_exact_without_noise():
    inst, sem, depth = _grid()
    outs = _run(inst, sem, depth, NoiseConfig(), seeds=range(3))
    for o in outs:
        m = _gt_to_pred(inst, o.instance)
        assert all(len(v) == 1 for v in m.values()) and len(m) == 64
        assert sorted(next(iter(v)) for v in m.values()) == list(range(1, 65))
        np.testing.assert_array_equal(o.semantic, sem)
    assert not np.array_equal(outs[0].instance, outs[1].instance)


def test_small_objects_missed_at_their_rate():
    inst, sem, depth = _grid(size=6)  # 36 px each: 36 / 192^2 = 1e-3 of the image
    cfg = NoiseConfig(miss_area_frac=2e-3, miss_small_rate=0.4)
    missed = []
    for o in _run(inst, sem, depth, cfg):
        for g, ps in _gt_to_pred(inst, o.instance).items():
            missed.append(ps == {0})
            if ps == {0}:
                assert (o.semantic[inst == g] == 2).all()  # taken over by the surrounding stuff
    assert abs(np.mean(missed) - 0.4) < 0.08
    big = _run(*_grid(size=14), cfg)  # 196 px > threshold: never missed
    assert all(0 not in ps for o in big for ps in _gt_to_pred(_grid(size=14)[0], o.instance).values())


def test_touching_objects_merged_at_their_rate_but_not_across_depth_gaps():
    inst, sem, depth = _grid(pairs=True)
    cfg = NoiseConfig(merge_rate=0.3)
    merged = []
    for o in _run(inst, sem, depth, cfg):
        m = _gt_to_pred(inst, o.instance)
        merged += [m[2 * k + 1] == m[2 * k + 2] for k in range(64)]
    assert abs(np.mean(merged) - 0.3) < 0.08
    inst, sem, depth = _grid(pairs=True, gap_depth=True)  # adjacent in the image, 0.5 m apart in depth
    for o in _run(inst, sem, depth, NoiseConfig(merge_rate=1.0), seeds=range(2)):
        m = _gt_to_pred(inst, o.instance)
        assert all(m[2 * k + 1] != m[2 * k + 2] for k in range(64))


def test_large_objects_split_at_their_rate():
    inst, sem, depth = _grid(n_side=6, cell=40, size=36)  # 1296 px = 0.0225 of the 240x240 image each
    cfg = NoiseConfig(split_rate=0.35, split_area_frac=0.015)
    split = []
    for o in _run(inst, sem, depth, cfg, seeds=range(8)):
        for g, ps in _gt_to_pred(inst, o.instance).items():
            split.append(len(ps) == 2)
            assert 0 not in ps
    assert abs(np.mean(split) - 0.35) < 0.1
    small = _grid(n_side=6, cell=40, size=10)  # below split_area_frac: never split
    for o in _run(*small, cfg, seeds=range(2)):
        assert all(len(ps) == 1 for ps in _gt_to_pred(small[0], o.instance).values())


def test_boundaries_eroded_or_dilated_at_their_rate():
    inst, sem, depth = _grid(n_side=10, cell=64, size=40)  # 640 px wide: radii in reference pixels
    cfg = NoiseConfig(boundary_rate=0.5, boundary_max_px=3)
    changed, grown, shrunk = [], 0, 0
    for o in _run(inst, sem, depth, cfg, seeds=range(3)):
        area = np.bincount(o.instance.ravel(), minlength=o.instance.max() + 1)
        for g, ps in _gt_to_pred(inst, o.instance).items():
            p = max(ps)
            delta = area[p] - 1600
            changed.append(delta != 0)
            assert abs(delta) <= 4 * 40 * 3 + 36  # at most 3 px all round
            grown += delta > 0
            shrunk += delta < 0
    assert abs(np.mean(changed) - 0.5) < 0.1
    assert grown > 30 and shrunk > 30


def test_class_flips_at_their_rate():
    inst, sem, depth = _grid()
    cfg = NoiseConfig(thing_flip_rate=0.3)
    flipped = []
    for o in _run(inst, sem, depth, cfg):
        for g in range(1, 65):
            c = np.unique(o.semantic[inst == g])
            assert len(c) == 1 and c[0] in THING_CLASSES
            flipped.append(c[0] != 20)
        assert (o.semantic[inst == 0] == 2).all()
    assert abs(np.mean(flipped) - 0.3) < 0.08
    stuff = [simulate_segmenter(inst, sem, depth, NoiseConfig(stuff_flip_rate=0.5), np.random.default_rng(s))
             .semantic[0, 0] for s in range(60)]
    assert all(c in STUFF_CLASSES for c in stuff) and abs(np.mean(np.array(stuff) != 2) - 0.5) < 0.17


def test_confidence_is_lower_near_boundaries():
    inst, sem, depth = _grid(n_side=4, cell=160, size=120)
    o = simulate_segmenter(inst, sem, depth, PRESETS["realistic"], np.random.default_rng(0))
    edge = np.zeros(inst.shape, bool)
    edge[:, 1:] |= o.instance[:, 1:] != o.instance[:, :-1]
    edge[1:, :] |= o.instance[1:, :] != o.instance[:-1, :]
    assert o.confidence.dtype == np.float32 and 0 < o.confidence.min() and o.confidence.max() <= 1
    assert o.confidence[edge].mean() < 0.8 * o.confidence[~edge].mean()


# ------------------------------------------------------------------------------------------ tools
def test_cli_and_suite_and_contact_sheet(tmp_path, scenes):
    from tools import make_scene, make_suite
    from tools.contact_sheet import sheet

    out = str(tmp_path / "cli")
    meta = make_scene.main(["--out", out, "--objects", "3", "--views", "4", "--size", "48x32", "--format", "messy",
                            "--points", "depth", "--set", "merge_rate=1", "--quiet", "--workers", "1"])
    assert meta["noise"]["merge_rate"] == 1.0 and os.path.isfile(os.path.join(out, "metadata.json"))
    assert len(os.listdir(os.path.join(out, "detic_instance"))) == 4
    with pytest.raises(SystemExit):
        make_scene.main(["--out", out, "--set", "no_such_rate=1", "--quiet"])
    names = make_suite.main(["--list"])
    assert {"old_room_25", "old_room_500", "large_corridor_100", "replica_like"} <= set(names)
    cfg, messy = make_suite.suite()["old_room_500"]
    assert cfg.num_objects == 500 and messy and make_suite.suite()["old_room_25"][0].seed == cfg.seed
    img = sheet(scenes["real"][0], rows=3)
    assert img.size == (6 * (64 + 4), 18 + 3 * (48 + 4))


def test_colmap_writer_reads_back_with_the_panopli_cameras_and_masks(tmp_path):
    from scene.dataset_readers import read_scene
    from utils.image_io import load_label
    from utils.ply import read_ply

    cfg = SceneConfig(**TINY, noise="realistic")
    pan, col = str(tmp_path / "panopli"), str(tmp_path / "colmap")
    meta = generate_scene(cfg, pan, None, progress=False, workers=1, colmap_dir=col)  # one render, two writers
    p = read_scene(pan)
    c = read_scene(col, seg_dir="masks", sem_dir="semantics", eval=True)
    assert c.format == "colmap" and [f.camera.name for f in c.test] == ["0000"]  # every 8th image by name
    assert len(c.train) == 7
    fp = {f.camera.name: f for f in p.train + p.test}
    assert sorted(fp) == sorted(f.camera.name for f in c.train + c.test)
    for f in c.train + c.test:
        g = fp[f.camera.name]
        assert (f.camera.width, f.camera.height) == (g.camera.width, g.camera.height) == (64, 48)
        np.testing.assert_allclose(f.camera.world_view, g.camera.world_view, atol=1e-7)  # pose/*.txt: 8 decimals
        np.testing.assert_allclose(f.camera.K, g.camera.K, atol=1e-9)  # both in the pixel-centre convention
        mask = np.array(Image.open(f.instance_path))
        assert mask.dtype == np.uint16  # 16-bit PNG: ids above 255 survive
        np.testing.assert_array_equal(mask, load_label(g.instance_path))  # per-view permuted thing ids
        np.testing.assert_array_equal(load_label(f.semantic_path), load_label(g.semantic_path))
        np.testing.assert_array_equal(load_label(os.path.join(col, "gt_instance", f.camera.name + ".png")),
                                      load_label(g.gt_instance_path))
    ply = read_ply(os.path.join(pan, "points3d.ply"))
    np.testing.assert_allclose(c.points, np.stack([ply["x"], ply["y"], ply["z"]], 1), atol=1e-6)
    np.testing.assert_allclose(c.colors * 255, np.stack([ply["red"], ply["green"], ply["blue"]], 1), atol=1e-3)
    with open(os.path.join(col, "generator.json")) as fh:
        gen = json.load(fh)
    assert gen["format"] == "colmap" and gen["seg_dir"] == "masks" and gen["objects"] == meta["objects"]
    # the masks are instance-only: no reader default picks them up, --seg_dir masks does
    assert read_scene(col).train[0].instance_path is None
