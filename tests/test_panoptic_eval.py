"""Hand-computed cases for every rule of docs/EVALUATION.md, plus a brute-force cross-check."""
import math
import os
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from scene.cameras import Camera, FrameInfo, SceneInfo
from utils.panoptic_eval import (MESSY, PANOPLI, MissingGroundTruth, Variant, evaluate_views, mean_iou,
                                 panoptic_quality, resize_nearest, variant_for)

WALL, FLOOR, CABINET, CHAIR, SOFA, TABLE = 1, 2, 3, 5, 6, 7  # PanopLi ids; chair, sofa are things


def lab(*runs):
    """Concatenate (value, count) runs into a 1-D int64 array."""
    return np.concatenate([np.full(n, v, dtype=np.int64) for v, n in runs])


def pq_of(ps, pi, gs, gi, variant=PANOPLI):
    return panoptic_quality(ps, pi, gs, gi, variant)


# --------------------------------------------------------------------------- reference

def reference_pq(ps, pi, gs, gi, variant):
    """Literal, slow transcription of the rules (dicts and loops), for cross-checking."""
    ps, pi, gs, gi = (list(map(int, a)) for a in (ps, pi, gs, gi))
    if variant.has_void:
        keep = [k for k in range(len(gs)) if gs[k] != 0]
        ps, pi, gs, gi = ([a[k] for k in keep] for a in (ps, pi, gs, gi))
    n = len(ps)
    things, stuff = set(variant.thing_classes), set(variant.stuff_classes)
    present = set(ps) | set(gs)
    fp_, fg_ = Counter(ps), Counter(gs)
    rare = {c for c, k in fp_.items() if k / n < 0.005} | {c for c, k in fg_.items() if k / n < 0.005}
    things = {c for c in things if c in present and c not in rare}
    stuff = {c for c in stuff if c in present and c not in rare}
    VOID = ("void",)

    def seg(c, i):
        if c in things:
            return (c, i)
        if c in stuff:
            return (c, 0)
        return VOID
    P = [seg(c, i) for c, i in zip(ps, pi)]
    G = [seg(c, i) for c, i in zip(gs, gi)]
    area_p, area_g, inter = Counter(P), Counter(G), Counter(zip(P, G))
    stats = {c: dict(tp=0, fp=0, fn=0, iou=0.0) for c in things | stuff}
    mp, mg = set(), set()
    for (p, g), k in inter.items():
        if g == VOID or p == VOID or p[0] != g[0]:
            continue
        union = area_p[p] - inter.get((p, VOID), 0) + area_g[g] - inter.get((VOID, g), 0) - k
        if k / union > 0.5:
            mp.add(p), mg.add(g)
            stats[g[0]]["tp"] += 1
            stats[g[0]]["iou"] += k / union
    for g in area_g:
        if g != VOID and g not in mg and not inter.get((VOID, g), 0) / area_g[g] > 0.5:
            stats[g[0]]["fn"] += 1
    for p in area_p:
        if p != VOID and p not in mp and not inter.get((p, VOID), 0) / area_p[p] > 0.5:
            stats[p[0]]["fp"] += 1
    pqs = []
    for s in stats.values():
        den = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
        pqs.append(s["iou"] / den if den else 0.0)
    return 100 * float(np.mean(pqs)) if pqs else float("nan"), stats


# --------------------------------------------------------------------------- PQ rules

def test_perfect_prediction_scores_100_and_ids_may_differ():
    gs = lab((WALL, 600), (CHAIR, 200), (CHAIR, 200))
    gi = lab((0, 600), (1, 200), (2, 200))
    pi = lab((0, 600), (17, 200), (4, 200))  # a consistent relabelling of the instances
    r = pq_of(gs, pi, gs, gi)
    assert r["pq"] == pytest.approx(100.0) and r["sq"] == pytest.approx(100.0) and r["rq"] == pytest.approx(100.0)
    assert r["classes"] == [WALL, CHAIR]
    assert r["per_class"][CHAIR]["tp"] == 2 and r["per_class"][CHAIR]["is_thing"]
    assert mean_iou(gs, gs, PANOPLI)["miou"] == pytest.approx(100.0)


def test_robustness_filter_is_or_for_pq_and_and_for_miou():
    # 1000 px: GT wall 990 + cabinet 10 (1 %); prediction puts cabinet on 4 of those (0.4 %).
    gs = lab((WALL, 990), (CABINET, 10))
    ps = lab((WALL, 990), (WALL, 6), (CABINET, 4))
    zeros = np.zeros(1000, dtype=np.int64)
    r = pq_of(ps, zeros, gs, zeros)
    # PQ: cabinet is rare on the prediction side -> removed (OR); its pixels become void on
    # both sides, so the wall segment (996 predicted px, 6 of them on GT void) has IoU 1.
    assert r["classes"] == [WALL]
    assert r["removed"]["non_robust"] == [CABINET]
    assert r["pq"] == pytest.approx(100.0)
    # mIoU: cabinet is rare only in the prediction, not in GT -> kept (AND).
    m = mean_iou(ps, gs, PANOPLI)
    iou_cabinet, iou_wall = 4 / 10, 990 / 996
    assert m["per_class_iou"][CABINET] == pytest.approx(100 * iou_cabinet)
    assert m["miou"] == pytest.approx(100 * (iou_cabinet + iou_wall) / 2)
    # Rare on both sides (0.4 % GT, 0.3 % predicted) -> ignored by mIoU too.
    gs2 = lab((WALL, 996), (CABINET, 4))
    ps2 = lab((WALL, 997), (CABINET, 3))
    m2 = mean_iou(ps2, gs2, PANOPLI)
    assert CABINET in m2["ignored"] and m2["per_class_iou"][CABINET] is None
    assert m2["miou"] == pytest.approx(100 * 996 / 997)


def test_class_absent_from_prediction_stays_and_counts_fn():
    # Table is 30 % of GT but never predicted: not filtered, its segment is a FN.
    gs = lab((WALL, 700), (TABLE, 300))
    ps = lab((WALL, 1000))
    zeros = np.zeros(1000, dtype=np.int64)
    r = pq_of(ps, zeros, gs, zeros)
    assert r["classes"] == [WALL, TABLE]
    assert r["per_class"][TABLE] == pytest.approx(dict(pq=0.0, sq=0.0, rq=0.0, tp=0, fp=0, fn=1, iou_sum=0.0,
                                                       is_thing=False))
    assert r["per_class"][WALL]["pq"] == pytest.approx(70.0)  # IoU 0.7, matched
    assert r["pq"] == pytest.approx(35.0)


def test_void_aware_union_removes_both_void_overlaps():
    # GT: wall 0..999, floor 1000..1999. Prediction: wall 0..399, an unknown class (void)
    # on 400..999, floor 1000..1999. Plain IoU(wall) = 0.4; void-aware union = 400 -> IoU 1.
    gs = lab((WALL, 1000), (FLOOR, 1000))
    ps = lab((WALL, 400), (99, 600), (FLOOR, 1000))
    zeros = np.zeros(2000, dtype=np.int64)
    r = pq_of(ps, zeros, gs, zeros)
    assert r["per_class"][WALL]["tp"] == 1 and r["per_class"][WALL]["sq"] == pytest.approx(100.0)
    assert r["pq"] == pytest.approx(100.0)
    # GT-void side: GT with an unknown class under part of the predicted floor.
    gs2 = lab((WALL, 1000), (99, 700), (FLOOR, 300))
    ps2 = lab((WALL, 1000), (FLOOR, 1000))
    r2 = pq_of(ps2, zeros, gs2, zeros)
    assert r2["per_class"][FLOOR]["sq"] == pytest.approx(100.0)  # 300 / (1000 - 700 + 300 - 300)


def test_match_needs_iou_strictly_above_half():
    zeros = np.zeros(1000, dtype=np.int64)
    gs = lab((CHAIR, 100), (WALL, 900))
    gi = lab((1, 100), (0, 900))
    ps = lab((CHAIR, 50), (WALL, 950))  # IoU(chair) = 50 / 100 = 0.5 exactly
    pi = lab((7, 50), (0, 950))
    r = pq_of(ps, pi, gs, gi)
    assert r["per_class"][CHAIR]["tp"] == 0
    assert (r["per_class"][CHAIR]["fp"], r["per_class"][CHAIR]["fn"]) == (1, 1)
    wall_iou = 900 / 950
    assert r["per_class"][WALL]["pq"] == pytest.approx(100 * wall_iou)
    assert r["pq"] == pytest.approx(100 * wall_iou / 2)
    # One more pixel: IoU 51 / 100 > 0.5 -> matched.
    ps1 = lab((CHAIR, 51), (WALL, 949))
    pi1 = lab((7, 51), (0, 949))
    r1 = pq_of(ps1, pi1, gs, gi)
    assert r1["per_class"][CHAIR]["tp"] == 1 and r1["per_class"][CHAIR]["sq"] == pytest.approx(51.0)
    assert r1["pq"] == pytest.approx((51.0 + 100 * 900 / 949) / 2)
    assert r1["rq"] == pytest.approx(100.0)


def test_fn_exempt_when_mostly_void_in_prediction():
    zeros = np.zeros(1000, dtype=np.int64)
    gs = lab((WALL, 800), (TABLE, 200))
    # Over the table the prediction says unknown class 99 (void) on 120 px, cabinet on 80.
    ps = lab((WALL, 800), (99, 120), (CABINET, 80))
    r = pq_of(ps, zeros, gs, zeros)
    assert r["per_class"][TABLE]["fn"] == 0  # 120/200 = 0.6 > 0.5 void
    assert r["per_class"][CABINET]["fp"] == 1  # cabinet lies on GT table, not on GT void
    # Exactly half void is not "more than half": the table is a FN again.
    ps2 = lab((WALL, 800), (99, 100), (CABINET, 100))
    r2 = pq_of(ps2, zeros, gs, zeros)
    assert r2["per_class"][TABLE]["fn"] == 1


def test_fp_exempt_when_mostly_void_in_gt():
    # 2000 px. GT door (8) and window (9) are rare (9 px each, 0.45 %) -> removed -> GT void.
    # A predicted cabinet of 12 px (0.6 %, kept) lies 10 px on that void and 2 px on wall.
    zeros = np.zeros(2000, dtype=np.int64)
    gs = lab((WALL, 2), (8, 9), (9, 9), (WALL, 1980))
    ps = lab((CABINET, 12), (WALL, 1988))
    r = pq_of(ps, zeros, gs, zeros)
    assert sorted(r["removed"]["non_robust"]) == [8, 9]
    assert r["classes"] == [WALL, CABINET]
    assert r["per_class"][CABINET]["fp"] == 0  # 10/12 on GT void
    assert r["per_class"][CABINET]["pq"] == 0.0  # surviving class with nothing counted scores 0
    # wall: predicted 1988 px (8 on GT void), GT 1982 px (none on predicted void), inter 1980.
    wall_iou = 1980 / (1988 - 8 + 1982 - 0 - 1980)
    assert r["per_class"][WALL]["sq"] == pytest.approx(100 * wall_iou)
    assert r["pq"] == pytest.approx(100 * wall_iou / 2)
    # 6 of 12 on void is exactly half -> a FP.
    gs2 = lab((8, 3), (9, 3), (WALL, 1994))
    ps2 = lab((CABINET, 12), (WALL, 1988))
    r2 = pq_of(ps2, zeros, gs2, zeros)
    assert r2["per_class"][CABINET]["fp"] == 1


def test_stuff_instance_ids_are_zeroed():
    # GT and prediction carry arbitrary instance ids on stuff pixels: one segment per class.
    gs = lab((WALL, 500), (FLOOR, 500))
    gi = lab((3, 250), (4, 250), (9, 500))
    pi = lab((1, 100), (2, 400), (0, 500))
    r = pq_of(gs, pi, gs, gi)
    assert r["pq"] == pytest.approx(100.0)
    assert r["per_class"][WALL]["tp"] == 1 and r["per_class"][WALL]["fp"] == 0


def test_predicted_class_zero_survives_and_scores_zero():
    # 1500 px of which 500 are GT void (dropped). Of the 1000 left, the prediction says
    # class 0 on 100 px (10 %): class 0 survives and costs a FP; wall IoU 0.9.
    gs = lab((0, 500), (WALL, 1000))
    ps = lab((WALL, 500), (0, 100), (WALL, 900))
    zeros = np.zeros(1500, dtype=np.int64)
    r = pq_of(ps, zeros, gs, zeros)
    assert r["classes"] == [0, WALL]
    assert r["per_class"][0]["fp"] == 1 and r["per_class"][0]["pq"] == 0.0
    assert r["pq"] == pytest.approx(45.0)
    m = mean_iou(ps, gs, PANOPLI)
    assert m["per_class_iou"][0] == pytest.approx(0.0)
    assert m["miou"] == pytest.approx(45.0)


def test_scene_level_concatenation_punishes_view_dependent_ids():
    # Two views of 500 px; the same chair (GT id 1) covers 200 px in each.
    view_gs = lab((CHAIR, 200), (WALL, 300))
    gs = np.concatenate([view_gs, view_gs])
    gi = np.concatenate([lab((1, 200), (0, 300))] * 2)
    consistent = np.concatenate([lab((42, 200), (0, 300))] * 2)
    r = pq_of(gs, consistent, gs, gi)
    assert r["pq"] == pytest.approx(100.0)
    # Per-view ids (perfect in each view alone): two predicted halves with IoU 0.5 each.
    changing = np.concatenate([lab((3, 200), (0, 300)), lab((4, 200), (0, 300))])
    r = pq_of(gs, changing, gs, gi)
    chair = r["per_class"][CHAIR]
    assert (chair["tp"], chair["fp"], chair["fn"]) == (0, 2, 1)
    assert r["pq"] == pytest.approx(50.0)  # wall 100, chair 0
    # Each view on its own would score 100.
    assert pq_of(view_gs, lab((3, 200), (0, 300)), view_gs, gi[:500])["pq"] == pytest.approx(100.0)


def test_messy_variant_has_no_void_and_counts_background():
    # Class 0 is background (stuff), never dropped. 1000 px: bg 600, objects 1 (250) and 2 (150).
    gs = lab((0, 600), (1, 250), (1, 150))
    gi = lab((0, 600), (1, 250), (2, 150))
    # Prediction: bg 650 (swallows 50 px of object 2), object 1 exact, object 2 100 px.
    ps = lab((0, 600), (1, 250), (0, 50), (1, 100))
    pi = lab((0, 600), (5, 250), (0, 50), (6, 100))
    r = panoptic_quality(ps, pi, gs, gi, MESSY)
    assert r["classes"] == [0, 1]
    bg_iou, obj2_iou = 600 / 650, 100 / 150
    assert r["per_class"][0]["sq"] == pytest.approx(100 * bg_iou)
    assert r["per_class"][1]["tp"] == 2
    assert r["per_class"][1]["sq"] == pytest.approx(100 * (1 + obj2_iou) / 2)
    assert r["pq"] == pytest.approx(100 * (bg_iou + (1 + obj2_iou) / 2) / 2)
    m = mean_iou(ps, gs, MESSY)
    assert m["miou"] == pytest.approx(100 * (600 / 650 + 350 / 400) / 2)


def test_matches_brute_force_reference_on_random_scenes():
    rng = np.random.default_rng(0)
    for trial in range(12):
        n = 3000
        gs = rng.choice([0, WALL, FLOOR, CHAIR, SOFA, 20, 21], size=n, p=[.1, .3, .2, .15, .1, .1, .05])
        gi = np.where(np.isin(gs, PANOPLI.thing_classes), rng.integers(1, 4, n), rng.integers(0, 3, n))
        noise = rng.random(n) < 0.3
        ps = np.where(noise, rng.integers(0, 25, n), gs)  # 22..24: unknown classes
        pi = np.where(noise, rng.integers(0, 5, n), gi)
        ref_pq, ref_stats = reference_pq(ps, pi, gs, gi, PANOPLI)
        r = pq_of(ps, pi, gs, gi)
        assert r["pq"] == pytest.approx(ref_pq, abs=1e-9), trial
        assert sorted(r["classes"]) == sorted(ref_stats)
        for c, s in ref_stats.items():
            assert (r["per_class"][c]["tp"], r["per_class"][c]["fp"], r["per_class"][c]["fn"]) == \
                   (s["tp"], s["fp"], s["fn"])


def test_torch_and_numpy_inputs_and_huge_ids_agree():
    rng = np.random.default_rng(1)
    n = 4000
    gs = rng.choice([WALL, CHAIR, SOFA], size=n)
    gi = rng.integers(0, 3, n)
    ps = np.where(rng.random(n) < 0.2, rng.integers(0, 22, n), gs)
    pi = np.where(rng.random(n) < 0.2, rng.integers(0, 3, n), gi)
    base = pq_of(ps, pi, gs, gi)
    as_torch = panoptic_quality(*(torch.from_numpy(a) for a in (ps, pi, gs, gi)), PANOPLI)
    assert as_torch["pq"] == pytest.approx(base["pq"], abs=1e-12)
    # Ids spread over 2**40 take the sort path instead of the dense bincount; same result.
    big = pq_of(ps.astype(np.uint8), pi * (1 << 40), gs.astype(np.int32), gi * (1 << 40) + 7)
    assert big["pq"] == pytest.approx(base["pq"], abs=1e-12)
    for c, stats in base["per_class"].items():
        assert big["per_class"][c]["pq"] == pytest.approx(stats["pq"], abs=1e-12)
        assert (big["per_class"][c]["tp"], big["per_class"][c]["fp"]) == (stats["tp"], stats["fp"])


def test_bad_inputs_raise_one_line_errors():
    a = np.zeros(10, dtype=np.int64)
    with pytest.raises(ValueError, match="differ in length"):
        pq_of(a, a, a[:5], a[:5])
    with pytest.raises(TypeError, match="integers"):
        pq_of(a.astype(np.float32), a, a, a)
    with pytest.raises(ValueError, match="instance ids must be >= 0"):
        pq_of(a + 1, a - 1, a + 1, a)
    with pytest.raises(ValueError, match="GT classes must lie"):
        mean_iou(a, a + 40, PANOPLI)
    with pytest.raises(ValueError, match="no pixels"):
        pq_of(a, a, a, a)  # every GT pixel is void


def test_miou_drops_out_of_range_predictions():
    gs = lab((WALL, 500), (FLOOR, 500))
    ps = lab((WALL, 400), (255, 100), (FLOOR, 500))  # 255: outside [0, 22) -> dropped
    m = mean_iou(ps, gs, PANOPLI)
    assert m["per_class_iou"][WALL] == pytest.approx(100.0)  # the 100 px vanished from both sides
    assert m["miou"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- resizing

@pytest.mark.parametrize("h,w", [(48, 64), (480, 640), (968, 1296), (512, 512), (700, 333)])
def test_resize_nearest_is_bit_exact_with_pil(h, w):
    rng = np.random.default_rng(h * w)
    lab8 = rng.integers(0, 256, (h, w), dtype=np.uint8)
    lab16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    for arr in (lab8, lab16):
        expected = np.array(Image.fromarray(arr).resize((512, 512), Image.NEAREST))
        out = resize_nearest(arr)
        assert out.dtype == arr.dtype and out.shape == (512, 512)
        np.testing.assert_array_equal(out, expected)
    t = resize_nearest(torch.from_numpy(lab8.astype(np.int64)))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64
    np.testing.assert_array_equal(t.numpy(), np.array(Image.fromarray(lab8).resize((512, 512), Image.NEAREST)))


def test_resize_nearest_samples_pixel_centres():
    # 4 columns -> 2: PIL (and the papers) take source columns 1 and 3, torch 'nearest' 0 and 2.
    src = np.array([[10, 11, 12, 13]], dtype=np.int64)
    np.testing.assert_array_equal(resize_nearest(src, (2, 1)), [[11, 13]])
    np.testing.assert_array_equal(resize_nearest(src, (8, 2)), [[10, 10, 11, 11, 12, 12, 13, 13]] * 2)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        resize_nearest(np.zeros((2, 2, 3), dtype=np.uint8))


# --------------------------------------------------------------------------- variants

def _scene(fmt, num_classes=None, things=(), gt=True):
    cam = Camera(0, "0", np.eye(3), np.eye(4), 4, 4)
    frame = FrameInfo(cam, "/x/0.png", gt_semantic_path="/x/s.png" if gt else None,
                      gt_instance_path="/x/i.png" if gt else None)
    return SceneInfo(format=fmt, path="/x", train=[frame], test=[frame], points=None, colors=None,
                     bbox=(np.zeros(3), np.ones(3)), extent=1.0, num_classes=num_classes, thing_classes=things)


def test_variant_for_picks_by_format():
    assert variant_for(_scene("panopli", 22, PANOPLI.thing_classes)) is PANOPLI
    assert variant_for(_scene("panopli")) is PANOPLI
    assert variant_for(_scene("messy", 2, (1,))) is MESSY
    custom = variant_for(_scene("panopli", 6, (4, 5)))
    assert (custom.num_classes, custom.thing_classes, custom.has_void) == (6, (4, 5), True)
    assert custom.stuff_classes == (0, 1, 2, 3)
    with pytest.raises(MissingGroundTruth, match="only PSNR/SSIM"):
        variant_for(_scene("colmap", gt=False))
    with pytest.raises(ValueError, match="outside"):
        Variant("bad", 3, (3,), True)


# --------------------------------------------------------------------------- files

def _write_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def _frame(tmp_path, name, gt_sem, gt_inst, ext="png"):
    gdir = tmp_path / "scene"
    gdir.mkdir(exist_ok=True)
    paths = []
    for kind, arr in (("sem", gt_sem), ("inst", gt_inst)):
        p = str(gdir / f"{kind}_{name}.{ext}")
        np.save(p, arr) if ext == "npy" else _write_png(p, arr)
        paths.append(p)
    cam = Camera(0, name, np.eye(3), np.eye(4), gt_sem.shape[1], gt_sem.shape[0])
    return FrameInfo(cam, "/unused.png", gt_semantic_path=paths[0], gt_instance_path=paths[1])


def test_evaluate_views_reads_resizes_and_concatenates(tmp_path):
    # GT at 96x128 with a void band; predictions rendered at 48x64 (half size), two views.
    gt_sem = np.full((96, 128), WALL, dtype=np.uint8)
    gt_sem[:, 64:] = CHAIR
    gt_sem[:16] = 0  # void rows
    gt_inst = np.where(gt_sem == CHAIR, 1, 0).astype(np.uint16)
    frames, pred = [], tmp_path / "pred"
    for name, pid in (("3", 300), ("12", 300)):
        frames.append(_frame(tmp_path, name, gt_sem, gt_inst))
        p_sem = np.full((48, 64), WALL, dtype=np.uint8)
        p_sem[:, 32:] = CHAIR
        _write_png(str(pred / "pred_semantics" / f"{name}.png"), p_sem)
        _write_png(str(pred / "pred_surrogateid" / f"{name}.png"), np.where(p_sem == CHAIR, pid, 0).astype(np.uint16))
    r = evaluate_views(str(pred), frames, PANOPLI)
    assert r["PQ_scene"] == pytest.approx(100.0) and r["mIoU"] == pytest.approx(100.0)
    assert r["details"]["num_views"] == 2
    assert r["details"]["num_pixels"] == 2 * 512 * (512 - 512 * 16 // 96)
    assert r["details"]["totals"] == {"tp": 2, "fp": 0, "fn": 0}
    # The second view's chair gets another id: scene-level segments split -> chair FP 2, FN 1.
    _write_png(str(pred / "pred_surrogateid" / "12.png"), np.where(
        np.array(Image.open(pred / "pred_semantics" / "12.png")) == CHAIR, 301, 0).astype(np.uint16))
    r = evaluate_views(str(pred), frames, PANOPLI)
    assert r["PQ_scene"] == pytest.approx(50.0)
    assert r["details"]["per_class_pq"][CHAIR]["fp"] == 2 and r["mIoU"] == pytest.approx(100.0)


def test_evaluate_views_messy_npy_gt(tmp_path):
    gt_sem = np.zeros((20, 20), dtype=np.int64)
    gt_sem[5:15, 5:15] = 1
    gt_inst = gt_sem * 9
    frame = _frame(tmp_path, "0007", gt_sem, gt_inst, ext="npy")
    pred = tmp_path / "pred"
    _write_png(str(pred / "pred_semantics" / "0007.png"), gt_sem.astype(np.uint8))
    _write_png(str(pred / "pred_surrogateid" / "0007.png"), (gt_sem * 2).astype(np.uint16))
    r = evaluate_views(str(pred), [frame], MESSY)
    assert r["PQ_scene"] == pytest.approx(100.0)
    assert r["details"]["num_pixels"] == 512 * 512  # no void in Messy-Rooms
    assert r["details"]["classes"] == [0, 1]


def test_evaluate_views_errors_name_the_problem(tmp_path):
    gt = np.ones((8, 8), dtype=np.uint8)
    frame = _frame(tmp_path, "5", gt, gt)
    with pytest.raises(FileNotFoundError, match=r"pred_semantics/5\.png"):
        evaluate_views(str(tmp_path / "pred"), [frame], PANOPLI)
    no_gt = FrameInfo(frame.camera, "/unused.png")
    with pytest.raises(MissingGroundTruth, match="view 5 has no ground-truth"):
        evaluate_views(str(tmp_path / "pred"), [no_gt], PANOPLI)
