"""How cleanly ``tools/objects.py extract`` cuts objects out of a trained model, measured against
the synthetic generator's exact object geometry (``generator.json``).

    python tools/extraction_eval.py -m output/room25 [--scene data/room25] [--json extraction.json]
    python tools/objects.py evaluate -m output/room25            # the same

Per ground-truth thing object o (``generator.json`` ``objects`` with ``instance`` > 0; the id is
the ground-truth instance id written to every view):

- its box: the object's oriented bounding box. Convention (``tools/synthetic/layout.py`` and
  ``objects.py``): ``position`` is the footprint centre on its support (world, metres, z up),
  ``size`` = (2 hx, 2 hy, height) in the object's local frame, ``yaw`` the counter-clockwise
  rotation of that frame about +z; the box spans local x in [-hx, hx], y in [-hy, hy], z in
  [0, height] above ``position``.
- matched id: the predicted object id (PLY ``instance_label`` > 0) holding the most opacity among
  the Gaussians whose centre lies inside the box. None when no thing Gaussian lies inside.
- precision: of the Gaussians ``extract`` returns for the matched id, the opacity-weighted share
  whose centre lies inside the box grown by ``grow`` (5 cm) on every side.
- recall: of the reference Gaussians, the opacity-weighted share ``extract`` returns. Reference:
  every Gaussian (thing or stuff label) whose centre lies inside the box shrunk by ``inner``
  (1 cm) on every side, so the floor, table top or wall the object touches (whose Gaussians
  lie on the box's faces) is not counted as part of the object; boxes never overlap by more
  than 1 mm, so the shrunk box holds no other object's surface.

- recall, exact geometry (``--reference surface``, the default of ``tools/objects.py evaluate``):
  the reference Gaussians of o are those whose nearest scene surface (any triangle of the scene,
  stuff included, rebuilt from ``generator.json``'s config and sampled every 5 mm) belongs to o and
  lies within ``SURFACE_TOL`` (2 cm). Unlike the box, it leaves out the floor under a chair's
  seat, the air in a ring's hole and the corners of a ball's box; Gaussians deep inside an object
  (more than 2 cm under its surface, which no view sees) are left out too.

Objects with no reference Gaussian (never seen, or too thin for the shrunk box) are reported as
unobserved and left out of the medians; an observed object that no id matches scores 0 / 0.
The summary is the median precision and recall over the observed objects.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["ObjectBoxes", "load_boxes", "box_pairs", "ObjectScore", "ExtractionReport",
           "measure_extraction", "format_report", "GROW", "INNER", "SURFACE_TOL", "scene_mesh",
           "surface_samples", "surface_owner"]

GROW = 0.05  # m: precision counts Gaussians inside the box grown by this
INNER = 0.01  # m: recall's reference set is the box shrunk by this (--reference box)
SURFACE_TOL = 0.02  # m: recall's reference set (--reference surface): Gaussians this close to the object's own surface


class ExtractionEvalError(Exception):
    """Bad input for the extraction measurement (one line)."""


@dataclass
class ObjectBoxes:
    """The generator's thing objects as oriented boxes.

    ``ids``: [K] int64 ground-truth instance ids; ``centre``: [K, 3] box centres (world);
    ``half``: [K, 3] half extents in the local frame; ``yaw``: [K] radians about +z."""
    ids: np.ndarray  # [K] int64
    kinds: List[str]
    classes: np.ndarray  # [K] int64
    centre: np.ndarray  # [K, 3] float64
    half: np.ndarray  # [K, 3] float64
    yaw: np.ndarray  # [K] float64

    def __len__(self) -> int:
        return len(self.ids)


def load_boxes(generator) -> ObjectBoxes:
    """Thing boxes from ``generator.json`` (a path, a scene folder holding it, or the parsed dict)."""
    if isinstance(generator, (str, os.PathLike)):
        path = os.fspath(generator)
        if os.path.isdir(path):
            path = os.path.join(path, "generator.json")
        if not os.path.isfile(path):
            raise ExtractionEvalError(f"{path}: no generator.json (the measurement needs a scene written by "
                                      f"tools/make_scene.py); pass --scene SCENE")
        try:
            with open(path) as f:
                generator = json.load(f)
        except ValueError as e:
            raise ExtractionEvalError(f"{path}: not valid JSON ({e}); regenerate the scene") from None
    things = [o for o in generator.get("objects", []) if int(o.get("instance", 0)) > 0]
    K = len(things)
    size = np.array([o["size"] for o in things], np.float64).reshape(K, 3)
    pos = np.array([o["position"] for o in things], np.float64).reshape(K, 3)
    half = size / 2
    centre = pos + np.stack([np.zeros(K), np.zeros(K), half[:, 2]], 1)
    return ObjectBoxes(ids=np.array([int(o["instance"]) for o in things], np.int64),
                       kinds=[str(o.get("kind", "?")) for o in things],
                       classes=np.array([int(o.get("class", -1)) for o in things], np.int64),
                       centre=centre, half=half, yaw=np.array([float(o["yaw"]) for o in things], np.float64))


def box_pairs(points: np.ndarray, boxes: ObjectBoxes, grow: float = 0.0):
    """Which points lie inside which boxes grown by ``grow`` (negative: shrunk) on every side.

    Args:
        points: [N, 3] world positions.
    Returns:
        (g [P], o [P]) int64: point g lies inside box o; sorted by (o, g). Candidates come from a
        k-d tree ball query around each box centre (radius: half diagonal + grow), then the exact
        test in each box's frame, vectorised over all candidate pairs.
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, np.float64).reshape(-1, 3)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(pts) == 0 or len(boxes) == 0:
        return empty
    half = boxes.half + grow  # [K, 3]
    ok_box = (half > 0).all(1)  # a box shrunk to nothing holds no point
    radius = np.where(ok_box, np.linalg.norm(np.maximum(half, 0), axis=1), 0.0)  # [K]
    lists = cKDTree(pts).query_ball_point(boxes.centre, radius * (1 + 1e-9) + 1e-12)
    counts = np.array([len(c) for c in lists], np.int64)  # per box, not per point
    if counts.sum() == 0:
        return empty
    g = np.concatenate([np.asarray(c, np.int64) for c in lists])  # [P']
    o = np.repeat(np.arange(len(boxes)), counts)  # [P']
    d = pts[g] - boxes.centre[o]  # [P', 3]
    c, s = np.cos(boxes.yaw[o]), np.sin(boxes.yaw[o])
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)  # R^T d
    inside = (np.abs(local) <= half[o]).all(1) & ok_box[o]
    g, o = g[inside], o[inside]
    order = np.lexsort((g, o))
    return g[order], o[order]


def scene_mesh(generator):
    """The exact triangles of a generated scene (``tools.synthetic`` ``SceneMesh`` with per-triangle
    instance ids), rebuilt from ``generator.json``'s config: the layout is a pure function of
    (layout, objects, seed). Raises ExtractionEvalError when the rebuilt objects do not match the
    file (a scene written by another generator version)."""
    from tools.synthetic.generate import _LAYOUT
    from tools.synthetic.layout import build_layout

    meta = generator
    if isinstance(generator, (str, os.PathLike)):
        path = os.fspath(generator)
        path = os.path.join(path, "generator.json") if os.path.isdir(path) else path
        with open(path) as f:
            meta = json.load(f)
    cfg = meta.get("config") or {}
    try:
        layout = build_layout(cfg["layout"], int(cfg["num_objects"]), np.random.default_rng([int(cfg["seed"]), _LAYOUT]))
    except (KeyError, TypeError, ValueError) as e:
        raise ExtractionEvalError(f"generator.json: cannot rebuild the layout ({e}); regenerate the scene") from None
    want = {o["instance"]: o["position"] for o in meta.get("objects", []) if o.get("instance", 0) > 0}
    got = {it.instance: [round(float(v), 4) for v in it.position] for it in layout.items if it.instance > 0}
    if set(want) != set(got) or any(np.abs(np.subtract(want[k], got[k])).max() > 1e-3 for k in want):
        raise ExtractionEvalError("generator.json: the rebuilt layout differs from the one the scene was made with "
                                  "(another generator version); regenerate the scene or use --reference box")
    return layout.assemble()


def surface_samples(mesh, spacing: float = 0.005, seed: int = 0):
    """Points on every triangle about ``spacing`` apart: (points [S, 3], instance [S] int64).
    Vectorised over triangles (each gets ceil(area / spacing^2) uniform samples, at least one)."""
    tri = mesh.vertices[mesh.faces]  # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)  # [F]
    n = np.maximum(1, np.ceil(area / spacing ** 2)).astype(np.int64)  # [F]
    f = np.repeat(np.arange(len(tri)), n)  # [S]
    rng = np.random.default_rng(seed)
    u, v = rng.random(len(f)), rng.random(len(f))
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tri[f]
    pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    return pts, mesh.tri_instance[f].astype(np.int64)


def surface_owner(points: np.ndarray, samples: np.ndarray, sample_instance: np.ndarray, tol: float) -> np.ndarray:
    """[N] int64: the instance id (0 = stuff) of the surface nearest to each point, -1 when no surface
    lies within ``tol`` (a floater)."""
    from scipy.spatial import cKDTree

    d, j = cKDTree(samples).query(np.asarray(points, np.float64).reshape(-1, 3), k=1, workers=-1)
    return np.where(d <= tol, sample_instance[j], -1)


@dataclass
class ObjectScore:
    gt_id: int
    kind: str
    matched_id: Optional[int]  # predicted id, None when no thing Gaussian lies in the box
    precision: Optional[float]  # None when unobserved
    recall: Optional[float]
    reference_mass: float  # opacity inside the shrunk box
    extracted_mass: float  # opacity of what extract returns for matched_id
    # where the reference opacity that extract misses went, as shares of reference_mass:
    missed_stuff: float = 0.0  # labelled stuff (id 0)
    missed_other: float = 0.0  # labelled another object's id
    missed_filtered: float = 0.0  # the object's id, dropped by the stray filter


@dataclass
class ExtractionReport:
    grow: float
    inner: float
    reference: str = "box"  # recall's reference: "box" (shrunk box) or "surface" (exact geometry)
    objects: List[ObjectScore] = field(default_factory=list)
    median_precision: Optional[float] = None
    median_recall: Optional[float] = None
    observed: int = 0
    unmatched: int = 0  # observed objects no id matches
    # shares of ALL observed objects' reference opacity that extract misses, by cause
    missed: Dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "objects"},
                "objects": [asdict(o) for o in self.objects]}


def measure_extraction(ids: Tensor, kept: Tensor, means: Tensor, opacities: Tensor, boxes: ObjectBoxes, *,
                       grow: float = GROW, inner: float = INNER,
                       owner: Optional[np.ndarray] = None) -> ExtractionReport:
    """Per-object precision / recall of an extraction (module docstring), vectorised over Gaussians.

    Args:
        ids: [N] int64 predicted object ids (0 = stuff), as the PLY holds them.
        kept: [N] bool, the Gaussians ``extract`` returns for their id (all True: every Gaussian of
            the id, the behaviour without a stray filter).
        means: [N, 3] centres (world, metres); opacities: [N] in [0, 1].
        owner: [N] int64 ``surface_owner`` (the exact-geometry reference): when given, recall's
            reference Gaussians of an object are those whose nearest scene surface is that object's
            (within the tolerance) instead of those inside its shrunk box.
    """
    ids = ids.reshape(-1).to(torch.int64).cpu().numpy()
    kept = kept.reshape(-1).cpu().numpy().astype(bool)
    pts = means.detach().reshape(-1, 3).to(torch.float64).cpu().numpy()
    w = opacities.detach().reshape(-1).to(torch.float64).cpu().numpy()
    N, K = len(ids), len(boxes)
    if not (len(kept) == N and len(pts) == N and len(w) == N):
        raise ValueError(f"measure_extraction: ids, kept, means, opacities disagree on N "
                         f"({N}, {len(kept)}, {len(pts)}, {len(w)})")
    report = ExtractionReport(grow, inner, "box" if owner is None else "surface")
    if K == 0:
        return report
    L = int(ids.max()) + 1 if N else 1
    # matched id: most opacity of thing Gaussians inside the (tight) box
    g, o = box_pairs(pts, boxes, 0.0)
    thing = ids[g] > 0
    mass_oid = np.bincount(o[thing] * L + ids[g[thing]], weights=w[g[thing]], minlength=K * L).reshape(K, L)
    matched = np.where(mass_oid.max(1) > 0, mass_oid.argmax(1), -1)  # [K], -1 = none
    # precision: extracted Gaussians of the matched id inside the grown box
    ext = np.where(kept, ids, 0)  # [N] what extract returns for each id (0: nothing)
    ext_mass = np.bincount(ext, weights=w, minlength=L)  # [L]
    g, o = box_pairs(pts, boxes, grow)
    hit = (ext[g] == matched[o]) & (matched[o] > 0)
    in_mass = np.bincount(o[hit], weights=w[g[hit]], minlength=K)  # [K]
    # recall: reference Gaussians (shrunk box) the extraction returns
    if owner is not None:  # exact geometry: Gaussians on (within tol of) the object's own surface
        row = {int(gid): k for k, gid in enumerate(boxes.ids)}
        lut = np.full(int(max(owner.max(initial=0), boxes.ids.max(initial=0))) + 2, -1, np.int64)
        for gid, k in row.items():  # one entry per object, not per Gaussian
            lut[gid] = k
        o_all = lut[np.where(owner >= 0, owner, len(lut) - 1)]
        g = np.nonzero(o_all >= 0)[0]
        o = o_all[g]
    else:
        g, o = box_pairs(pts, boxes, -inner)
    ref_mass = np.bincount(o, weights=w[g], minlength=K)  # [K]
    hit = (ext[g] == matched[o]) & (matched[o] > 0)
    got_mass = np.bincount(o[hit], weights=w[g[hit]], minlength=K)  # [K]
    # the misses, by cause: stuff label, another object's id, the object's id but filtered out
    ids_g = ids[g]
    same = (ids_g == matched[o]) & (matched[o] > 0)
    causes = {"stuff": ~hit & (ids_g == 0), "other": ~hit & (ids_g > 0) & ~same, "filtered": ~hit & same}
    miss_mass = {c: np.bincount(o[m], weights=w[g[m]], minlength=K) for c, m in causes.items()}  # [K] each

    prec, rec = [], []
    for k in range(K):  # one row per object
        m = int(matched[k])
        observed = ref_mass[k] > 0
        em = float(ext_mass[m]) if m > 0 else 0.0
        p = (float(in_mass[k] / em) if em > 0 else 0.0) if observed else None
        r = float(got_mass[k] / ref_mass[k]) if observed else None
        share = {c: float(miss_mass[c][k] / ref_mass[k]) if observed else 0.0 for c in causes}
        report.objects.append(ObjectScore(int(boxes.ids[k]), boxes.kinds[k], m if m > 0 else None, p, r,
                                          float(ref_mass[k]), em, share["stuff"], share["other"], share["filtered"]))
        if observed:
            prec.append(p)
            rec.append(r)
            report.unmatched += int(m <= 0)
    report.observed = len(prec)
    total = float(ref_mass.sum())
    if total > 0:
        report.missed = {c: float(miss_mass[c].sum() / total) for c in causes}
    if prec:
        report.median_precision = float(np.median(prec))
        report.median_recall = float(np.median(rec))
    return report


def _f(v: Optional[float]) -> str:
    return "   -" if v is None else f"{v:5.3f}"


def format_report(report: ExtractionReport, title: str = "") -> str:
    """One line per object and the medians."""
    lines = [title] if title else []
    lines.append(f"{'gt id':>5}  {'kind':<12} {'pred id':>7}  {'precision':>9}  {'recall':>6}  {'ref opacity':>11}"
                 f"  {'missed: stuff':>13} {'other id':>8} {'filtered':>8}")
    for s in report.objects:
        lines.append(f"{s.gt_id:>5}  {s.kind:<12} {('-' if s.matched_id is None else s.matched_id):>7}  "
                     f"{_f(s.precision):>9}  {_f(s.recall):>6}  {s.reference_mass:11.2f}  "
                     f"{_f(s.missed_stuff):>13} {_f(s.missed_other):>8} {_f(s.missed_filtered):>8}")
    lines.append(f"median precision {_f(report.median_precision)}, median recall {_f(report.median_recall)} over "
                 f"{report.observed} observed objects of {len(report.objects)} ({report.unmatched} unmatched); "
                 f"box grown by {report.grow:g} m for precision; recall reference: "
                 + (f"box shrunk by {report.inner:g} m" if report.reference == "box" else
                    f"Gaussians within {report.inner:g} m of the object's own surface"))
    if report.missed:
        m = report.missed
        lines.append(f"reference opacity missed: {m['stuff']:.1%} labelled stuff, {m['other']:.1%} another "
                     f"object's id, {m['filtered']:.1%} dropped by the stray filter")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tools.objects import main as objects_main

    return objects_main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
