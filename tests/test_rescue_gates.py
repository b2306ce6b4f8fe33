"""benchmarks/rescue_gates.py: a model's rescue dump scores exactly as the whole model does."""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.rescue_gates import load_dump, study, write_dump
from segmentation.labels import ThingVotes
from segmentation.pieces import separate_pieces
from segmentation.visibility import object_radius, rescue_stuff
from tools import extraction_eval as ev
from tools.objects import default_radius, stray_filter


def _scene(seed=0, second=False):
    """Three 0.3 m boxes on a floor; object Gaussians (a few of them stuff, as a fg/bg head's misses), a floor
    grid whose Gaussians near each box carry its code, and floaters carrying object codes. ``second``: a
    fourth, smaller object (60 Gaussians, on the masks) far from the first that carries the first's code."""
    g = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.15], [1.0, 0.2, 0.15], [-0.8, 0.9, 0.15]])
    boxes = ev.ObjectBoxes(ids=np.array([5, 6, 7]), kinds=["a", "b", "c"], classes=np.array([1, 1, 1]),
                           centre=centres, half=np.full((3, 3), 0.15), yaw=np.array([0.0, 0.4, 1.0]))
    objs = [c + g.uniform(-0.14, 0.14, (400, 3)) for c in centres]
    f = np.linspace(-1.5, 1.5, 61)
    fx, fy = np.meshgrid(f, f)
    floor = np.stack([fx.ravel(), fy.ravel(), np.full(fx.size, -0.01)], 1)
    floaters = g.uniform(-1.5, 1.5, (30, 3))
    if second:
        centres = np.concatenate([centres, [[0.9, -1.1, 0.1]]])
        boxes = ev.ObjectBoxes(ids=np.array([5, 6, 7, 8]), kinds=["a", "b", "c", "d"], classes=np.array([1, 1, 1, 1]),
                               centre=centres, half=np.concatenate([np.full((3, 3), 0.15), np.full((1, 3), 0.1)]),
                               yaw=np.array([0.0, 0.4, 1.0, 0.0]))
        objs.append(centres[3] + g.uniform(-0.09, 0.09, (60, 3)))
        centres = centres[:3]
    P = np.concatenate(objs + [floor, floaters]).astype(np.float32).astype(np.float64)  # a model's float32 values
    n_obj, n_floor = 1200 + 60 * second, len(floor)
    code = np.concatenate([np.repeat([4, 5, 6], 400), np.full(60 * second, 4), np.zeros(n_floor, int),
                           g.integers(4, 7, 30)])
    d = np.linalg.norm(floor[:, None, :2] - centres[None, :, :2], axis=2)  # [F, 3]
    code[n_obj:n_obj + n_floor] = np.where(d.min(1) < 0.35, 4 + d.argmin(1), 9)
    ids = code + 1
    ids[n_obj:n_obj + n_floor] = 0  # floor: stuff
    ids[:n_obj][g.random(n_obj) < 0.1] = 0  # misses on the objects
    seen = g.uniform(5, 50, len(P)).astype(np.float32).astype(np.float64)
    votes = ThingVotes(torch.from_numpy(seen), torch.from_numpy(seen * 0.2),
                       torch.from_numpy(seen * np.where(np.arange(len(P)) < n_obj, 0.8, 0.05)))
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    return dict(ids=t(ids).long(), codes=t(code + 1).long(), own=t(ids > 0), means=t(P),
                opac=t(g.uniform(0.2, 1.0, len(P)).astype(np.float32).astype(np.float64)), scales=t(np.full((len(P), 3), 0.01)), votes=votes, boxes=boxes)


def _full_score(ids, s):
    keep = stray_filter(ids, s["means"], s["opac"], radius=default_radius(s["means"], ids, scales=s["scales"]))
    r = ev.measure_extraction(ids, keep, s["means"], s["opac"], s["boxes"], grow=ev.GROW, inner=ev.INNER)
    return r.median_precision, r.median_recall


def test_dump_scores_as_the_whole_model(tmp_path):
    s = _scene()
    path = str(tmp_path / "d.npz")
    info = write_dump(path, ids_fill=s["ids"], codes=s["codes"], means=s["means"], opac=s["opac"],
                      scales=s["scales"], votes=s["votes"], boxes=s["boxes"], own=s["own"])
    assert 0 < info["kept"] < info["of"]  # far floor left out
    d = load_dump(path)
    assert d["own"].sum() > 0 and len(d["seen"]) == info["kept"]
    rows = {name: (p, r, n) for name, p, r, n in study(d)}
    full = _full_score(s["ids"], s)
    np.testing.assert_allclose(rows["union_fill"][:2], full, rtol=1e-6)
    for factor in (4.0, 8.0):
        r = object_radius(s["means"], s["ids"], factor, scales=s["scales"])
        resc = rescue_stuff(s["ids"], s["codes"], s["means"], r, extent_quantile=None)
        np.testing.assert_allclose(rows[f"rescue x{factor:g}, no gate"][:2], _full_score(resc, s), rtol=1e-6)
        gated = rescue_stuff(s["ids"], s["codes"], s["means"], r, extent_quantile=0.01)
        np.testing.assert_allclose(rows[f"rescue x{factor:g}, extent 0.01"][:2], _full_score(gated, s), rtol=1e-6)
    # the floor ring that carries the objects' codes costs the ungated rescue precision; the gates win it back
    assert rows["rescue x8, no gate"][0] < rows["union_fill"][0] - 0.02
    assert rows["rescue x8, mask 0.25"][0] >= rows["union_fill"][0] - 1e-9
    assert rows["rescue x8, extent 0.01"][0] > rows["rescue x8, no gate"][0]


def test_dump_scores_train_py_default_rule_as_the_whole_model(tmp_path):
    """union_fill_masks from the dump equals the same steps on every Gaussian: own-only things (here every
    thing, since the scene's pixels vote stuff) kept where the masks back them, then the masked rescue.
    The floaters carry object codes and lie off the masks: the rule drops them; the objects' misses lie on
    the masks: the rescue gives them back."""
    from segmentation.labels import DEFAULT_DISPUTE_MASK_SHARE
    from segmentation.visibility import DEFAULT_RESCUE_MASK_SHARE, DEFAULT_RESCUE_RADIUS_FACTOR

    s = _scene(1, second=True)
    path = str(tmp_path / "d.npz")
    write_dump(path, ids_fill=s["ids"], codes=s["codes"], means=s["means"], opac=s["opac"], scales=s["scales"],
               votes=s["votes"], boxes=s["boxes"], own=s["own"])
    rows = {name: (p, r, n) for name, p, r, n in study(load_dump(path))}
    share = s["votes"].mask_share()
    disputed = s["votes"].disputed(s["own"])
    assert int(disputed.sum()) == int((s["ids"] > 0).sum())
    ids = torch.where(disputed & (share < DEFAULT_DISPUTE_MASK_SHARE), 0, s["ids"])
    r = object_radius(s["means"], ids, DEFAULT_RESCUE_RADIUS_FACTOR, scales=s["scales"])
    ids = rescue_stuff(ids, s["codes"], s["means"], r, allowed=share >= DEFAULT_RESCUE_MASK_SHARE)
    name = (f"union_fill_masks (the default with semantic masks), own-only things kept at mask share >= "
            f"{DEFAULT_DISPUTE_MASK_SHARE:g}")
    np.testing.assert_allclose(rows["union_fill_masks (the default with semantic masks) without the pieces"][:2],
                               _full_score(ids, s), rtol=1e-6)
    pieces = separate_pieces(ids, s["means"], s["opac"], s["votes"].seen, share, first_id=100,
                             radius=object_radius(s["means"], ids, scales=s["scales"]))
    np.testing.assert_allclose(rows[name][:2], _full_score(pieces, s), rtol=1e-6)
    assert (pieces[1200:1260] == 100).all() and int((pieces >= 100).sum()) == 60  # the fourth object, its own id
    assert not (ids[-30:] > 0).any() and (s["ids"][-30:] > 0).all()  # the floaters are gone
    assert rows[name][1] > rows["union_fill"][1] + 0.05 and rows[name][0] >= rows["union_fill"][0]
