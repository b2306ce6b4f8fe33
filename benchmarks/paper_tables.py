"""The paper's tables on the generator's scenes: one command per table, scenes to table and figure.

    python benchmarks/paper_tables.py tab1 --gpus 0 --jobs_per_gpu 4            # Tab. 1 analogue (scaling)
    python benchmarks/paper_tables.py tab4 --seeds 0 1 --engine ray --address auto
    python benchmarks/paper_tables.py all --dry_run                               # runs and GPU minutes
    python benchmarks/paper_tables.py tab5 --collect                              # table + figure from disk
    python benchmarks/paper_tables.py tab4 --variants unic all_noW                # some rows only
    python benchmarks/paper_tables.py fig8 --size 64x48 --views 8 --iterations 30 -- --init_points 2000  # CPU smoke

For a table it (1) generates the scenes it needs with tools/make_scene.py into ``--scenes_dir``
(deterministic: layout, object count and seed name a scene; existing ones are kept), (2) runs
``benchmarks/run_suite.py``'s jobs for every (scene, variant, seed) under ``--runs`` (shared by the
tables, so a run that two tables need is trained once; interrupted sweeps resume), (3) writes
``OUT/results.json`` + ``OUT/results.md`` (every run), ``OUT/table.md`` + ``OUT/table.json``
(mean ± std over seeds per scene and variant) and the figure ``docs/<table>.png`` (``OUT/<table>.png`` with
``--out`` or train.py flags after ``--``: ``default_figure``).

Tables whose columns are times (``timing``: tab1, tab5) run one job per GPU whatever
``--jobs_per_gpu`` says, into their own run folder (``runs_alone``), so their times are those of
a run alone on the GPU. ``--iterations N`` below 30k scales the variants' absolute iteration
flags (Tab. 6's L_3D start) by N / 30k, as train.py scales the densification schedule.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import run_suite as rs  # noqa: E402
from tools.synthetic.segmenter import PRESETS  # noqa: E402

DEFAULT_ITERATIONS = 30_000


@dataclass(frozen=True)
class SceneSpec:
    """One generated scene: tools/make_scene.py options; the name says all of them."""
    layout: str
    objects: int
    seed: int
    size: str  # WIDTHxHEIGHT
    views: int
    format: str  # messy | panopli
    noise: str = "realistic"  # the simulated segmenter's preset (tools/synthetic/segmenter.py)

    @property
    def name(self) -> str:
        tail = "" if self.noise == "realistic" else f"_{self.noise}"  # names of realistic scenes are unchanged
        return f"{self.layout}_{self.objects}_s{self.seed}_{self.size}_{self.views}v_{self.format}{tail}"

    @property
    def pixels(self) -> int:
        w, h = (int(v) for v in self.size.split("x"))
        return w * h

    def command(self, out: str, workers: int) -> List[str]:
        return [sys.executable, os.path.join(rs.REPO, "tools", "make_scene.py"), "--out", out, "--layout", self.layout,
                "--objects", str(self.objects), "--seed", str(self.seed), "--size", self.size, "--views",
                str(self.views), "--format", self.format, "--noise", self.noise, "--workers", str(workers), "--quiet"]


def messy(layout: str, objects: int, seed: int) -> SceneSpec:
    return SceneSpec(layout, objects, seed, "512x512", 200, "messy")  # Messy-Rooms: 512x512, fg/bg classes


def replica(seed: int) -> SceneSpec:
    return SceneSpec("replica_like", 40, seed, "640x480", 300, "panopli")  # Replica-like PanopLi, many classes


# Two Messy-Rooms rooms (each room drawn from its seed, the same across object counts), three
# Replica-like scenes; the ablations use the first Replica-like scene.
MESSY_SCENES = [messy(room, n, seed) for seed, room in enumerate(("old_room", "large_corridor"))
                for n in (25, 50, 100, 500)]
REPLICA_SCENES = [replica(s) for s in (2, 3, 4)]
ABLATION_SCENES = REPLICA_SCENES[:1]

MASK_PERCENT = {"masks_5pct": 5, "masks_10pct": 10, "masks_20pct": 20, "unic": 100,
                **{f"masks_{p}pct_share": p for p in (5, 10, 20)}}
MASK_SCALE = {"masks_0.25x": 0.25, "masks_0.5x": 0.5, "unic": 1.0}
L3D_START = {f"l3d_{k}k": k for k in (7, 12, 15, 20)}

# Columns: key in a run row -> (header, kind); kinds format the mean ± std.
COLUMNS = {"PQ_scene": ("PQ^scene", "score"), "mIoU": ("mIoU", "score"), "PSNR": ("PSNR", "score"),
           "train_seconds": ("3DGS optimisation", "time"), "cluster_seconds": ("Clustering", "time"),
           "cluster_tune_seconds": ("min_cluster_size tuning", "time"), "total_seconds": ("Total", "time"),
           "peak_gpu_mem_mb": ("Peak GPU mem", "memory")}

# One spec per table. figure: line (x numeric), bars (x = a category) or stacked_time.
TABLES: Dict[str, dict] = {
    "tab1": dict(
        title="Tab. 1 analogue: scaling with the number of objects (Messy-Rooms format)",
        scenes=MESSY_SCENES, variants=["unic", "contrastive_lift"], seeds=[0], timing=True, object_counts=True,
        columns=["PQ_scene", "mIoU", "train_seconds", "cluster_seconds", "cluster_tune_seconds", "peak_gpu_mem_mb"],
        figure=dict(kind="line", x=lambda sc, v: sc.objects, xlabel="objects in the room", xlog=True,
                    series=lambda sc, v: f"{v}, {sc.layout}", y="PQ_scene")),
    "tab2": dict(
        title="Tab. 2 analogue: Replica-like PanopLi scenes (many classes, 640x480)",
        scenes=REPLICA_SCENES, variants=["unic", "contrastive_lift"], seeds=[0],
        columns=["PQ_scene", "mIoU", "PSNR"],
        figure=dict(kind="bars", x=lambda sc, v: f"scene seed {sc.seed}", xlabel="scene", series=lambda sc, v: v,
                    y="PQ_scene")),
    "tab4": dict(
        title="Tab. 4: which losses, with and without the linear layer W",
        scenes=ABLATION_SCENES, variants=list(rs.PAPER_TABLES["tab4"]), seeds=[0, 1],
        columns=["PQ_scene", "mIoU"],
        figure=dict(kind="bars", x=lambda sc, v: v, xlabel="variant", series=lambda sc, v: "PQ^scene",
                    y="PQ_scene")),
    "tab5": dict(
        title="Tab. 5: training and clustering time (runs alone on the GPU)",
        scenes=REPLICA_SCENES, variants=["unic", "contrastive_lift"], seeds=[0], timing=True,
        columns=["train_seconds", "cluster_seconds", "cluster_tune_seconds", "total_seconds", "PQ_scene", "mIoU"],
        figure=dict(kind="stacked_time", x=lambda sc, v: v, xlabel="method",
                    parts=["train_seconds", "cluster_seconds", "cluster_tune_seconds"])),
    "tab6": dict(
        title="Tab. 6: when L_3D starts",
        scenes=ABLATION_SCENES, variants=list(rs.PAPER_TABLES["tab6"]), seeds=[0, 1],
        columns=["PQ_scene", "mIoU"],
        figure=dict(kind="line", x=lambda sc, v: L3D_START[v], xlabel="L_3D from iteration (k, of 30k)",
                    series=lambda sc, v: "UniC-Lift", y="PQ_scene")),
    "fig9": dict(
        title="Fig. 9: masks on a fraction of the training views (RGB on all)",
        scenes=ABLATION_SCENES, variants=list(rs.PAPER_TABLES["sparse_masks"]), seeds=[0, 1],
        columns=["PQ_scene", "mIoU"],
        figure=dict(kind="line", x=lambda sc, v: MASK_PERCENT[v], xlabel="training views with masks (%)",
                    xlog=True, series=lambda sc, v: "views with masks on half the steps" if v.endswith("_share")
                    else "UniC-Lift (every view equally often)", y="PQ_scene")),
    "fig8": dict(
        title="Fig. 8: masks and images at lower resolution (labels rendered at full size)",
        scenes=ABLATION_SCENES, variants=list(rs.PAPER_TABLES["low_res_masks"]), seeds=[0, 1],
        columns=["PQ_scene", "mIoU"],
        figure=dict(kind="line", x=lambda sc, v: MASK_SCALE[v], xlabel="mask / image scale", xlog=True,
                    series=lambda sc, v: "UniC-Lift", y="PQ_scene")),
}

# GPU time model of the estimate (H200, benchmarks/RESULTS.md 16a and 17c): a 30k-iteration 480x360 run
# alone ~5.5 min, a 10k one ~1.4 min; side by side the GPU does only ~10 % more work (8 runs of 10k took
# ~530 s each, 4 took ~265 s), so each extra job slows every job by ~0.8 of its time alone; render +
# metrics ~0.5 min; the baseline's sampling, HDBSCAN tuning (6 candidates, fitted side by side in worker
# processes) and fit: 25-41 s of CPU work on the 16-core H200 machine at 50-100 objects (RESULTS.md 26a;
# 112-133 s when the candidates were fitted one after another).
MIN_PER_10K_ALONE = 1.5
SIDE_BY_SIDE_SLOWDOWN = 0.8  # per extra job on the GPU: 4 side by side -> 3.4x the time alone each
EVAL_MIN = 0.5
CLUSTER_MIN = 1.0
REF_PIXELS = 480 * 360


# --------------------------------------------------------------------------- planning

def variant_flags(name: str, iterations: Optional[int]) -> List[str]:
    """train.py flags of a variant; absolute iteration flags scaled to a run shorter than 30k."""
    flags = list(rs.VARIANTS[name])
    if iterations is None or iterations >= DEFAULT_ITERATIONS:
        return flags
    for i, f in enumerate(flags[:-1]):
        if f in ("--l3d_from_iter", "--triplet_from_iter") and int(flags[i + 1]) >= 0:
            flags[i + 1] = str(max(1, round(int(flags[i + 1]) * iterations / DEFAULT_ITERATIONS)))
    return flags


def runs_root(args: argparse.Namespace, spec: dict) -> str:
    """Model folders: shared by the tables, apart for timing tables, one folder per iteration count."""
    its = args.iterations or DEFAULT_ITERATIONS
    return os.path.join(args.runs, "runs_alone" if spec.get("timing") else "runs", f"it{its}")


def scenes_of(args: argparse.Namespace, spec: dict) -> List[SceneSpec]:
    """The table's scenes, with --views / --size / --noise applied (all part of the scene's name). --objects
    sets the count of a table of one count, and picks some counts of a table that sweeps them (tab1);
    --scene_seeds keeps the scenes of those generator seeds."""
    objects = getattr(args, "objects", None) or []
    seeds = getattr(args, "scene_seeds", None)
    scenes = [replace(sc, views=args.views or sc.views, size=args.size or sc.size,
                      noise=getattr(args, "noise", None) or sc.noise) for sc in spec["scenes"]
              if not seeds or sc.seed in seeds]
    if not objects:
        return scenes
    if spec.get("object_counts"):
        return [sc for sc in scenes if sc.objects in objects]
    return [replace(sc, objects=objects[0]) for sc in scenes]


def table_spec(args: argparse.Namespace, name: str) -> dict:
    """The table's spec with --views / --size applied to its scenes and --variants to its rows."""
    spec = dict(TABLES[name], scenes=scenes_of(args, TABLES[name]))
    only = getattr(args, "variants", None)
    if only:
        spec["variants"] = [v for v in spec["variants"] if v in only]
    return spec


def table_jobs(args: argparse.Namespace, spec: dict) -> List[rs.Job]:
    scenes = [os.path.join(args.scenes_dir, sc.name) for sc in spec["scenes"]]
    return rs.plan_jobs(scenes, spec["variants"], runs_root(args, spec), args.seeds or spec["seeds"],
                        must_exist=False)


def scene_of(spec: dict, name: str) -> SceneSpec:
    return next(sc for sc in spec["scenes"] if sc.name == name)


def jobs_per_gpu(args: argparse.Namespace, spec: dict) -> int:
    return 1 if spec.get("timing") else args.jobs_per_gpu


def job_minutes(args: argparse.Namespace, spec: dict) -> Dict[str, float]:
    """Estimated GPU minutes of each job of a table (model path -> minutes) at the chosen
    iterations and jobs per GPU."""
    its = args.iterations or DEFAULT_ITERATIONS
    k = jobs_per_gpu(args, spec)
    pixels = {sc.name: sc.pixels for sc in spec["scenes"]}
    out = {}
    for job in table_jobs(args, spec):
        alone = MIN_PER_10K_ALONE * its / 10_000 * pixels[job.name] / REF_PIXELS + EVAL_MIN
        out[job.model_path] = (alone * (1 + SIDE_BY_SIDE_SLOWDOWN * (k - 1)) / k
                               + (CLUSTER_MIN / k if job.method == "contrastive_lift" else 0.0))
    return out


def estimate(args: argparse.Namespace, spec: dict) -> dict:
    """Runs and GPU minutes of one table (every run counted, shared or not)."""
    seeds = args.seeds or spec["seeds"]
    return {"runs": len(spec["scenes"]) * len(spec["variants"]) * len(seeds), "scenes": len(spec["scenes"]),
            "variants": len(spec["variants"]), "seeds": len(seeds), "iterations": args.iterations or DEFAULT_ITERATIONS,
            "jobs_per_gpu": jobs_per_gpu(args, spec), "gpu_minutes": sum(job_minutes(args, spec).values())}


# --------------------------------------------------------------------------- scenes

def make_scenes(specs: Sequence[SceneSpec], scenes_dir: str, workers: int = 2,
                log: Callable[[str], None] = print, run=None, jobs: int = 1) -> List[str]:
    """Generates every missing scene (a folder with generator.json is complete) into
    ``scenes_dir/<name>``, each written to ``<name>.partial`` and renamed when done; ``jobs`` scenes at a time
    (each with ``workers`` processes). ``run``: subprocess.run unless given."""
    run = run or subprocess.run
    os.makedirs(scenes_dir, exist_ok=True)
    todo = {}  # final folder -> spec (tables share scenes)
    for sc in specs:
        final = os.path.join(scenes_dir, sc.name)
        if not os.path.isfile(os.path.join(final, "generator.json")):
            todo.setdefault(final, sc)

    def make(item) -> str:
        final, sc = item
        partial = final + ".partial"
        for stale in (partial, final):  # a folder without generator.json is an interrupted write of ours
            if os.path.isdir(stale):
                shutil.rmtree(stale)
        log(f"generating {sc.name} ...")
        proc = run(sc.command(partial, workers), cwd=rs.REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise SystemExit(f"error: tools/make_scene.py failed for {sc.name}: {tail[-1] if tail else proc.returncode}")
        os.replace(partial, final)
        return final

    if jobs <= 1 or len(todo) <= 1:
        return [make(item) for item in todo.items()]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # subprocesses: the threads only wait
        return list(pool.map(make, todo.items()))


# --------------------------------------------------------------------------- table

def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mean_std(values: Sequence) -> Optional[dict]:
    vals = [float(v) for v in values if _finite(v)]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"mean": m, "std": sd, "n": len(vals)}


def with_total(row: dict) -> dict:
    """Adds total_seconds = optimisation + clustering (tuning listed apart)."""
    parts = [row.get("train_seconds"), row.get("cluster_seconds")]
    row = dict(row)
    row["total_seconds"] = sum(p for p in parts if _finite(p)) if _finite(parts[0]) else None
    return row


def aggregate(spec: dict, runs: Sequence[dict]) -> List[dict]:
    """One entry per (scene, variant) in the spec's order: mean ± std over the seeds that succeeded."""
    out = []
    rows = [with_total(r) for r in runs]
    for sc in spec["scenes"]:
        for v in spec["variants"]:
            mine = [r for r in rows if r["scene"] == sc.name and r["method"] == v]
            ok = [r for r in mine if r.get("status") == "ok"]
            entry = {"scene": sc.name, "variant": v, "layout": sc.layout, "objects": sc.objects, "scene_seed": sc.seed,
                     "seeds": [r.get("seed") for r in ok], "runs": len(mine), "failed": len(mine) - len(ok),
                     "errors": [r.get("error") for r in mine if r.get("status") != "ok"]}
            for key in set(COLUMNS) | {"PQ_scene"}:
                entry[key] = mean_std([r.get(key) for r in ok])
            out.append(entry)
    return out


def _fmt(stat: Optional[dict], kind: str) -> str:
    if stat is None:
        return "-"

    def one(v: float) -> str:
        if kind == "time":  # seconds: a 10k-iteration run takes one to two minutes, too few for tenths of minutes
            return f"{v:.0f}"
        if kind == "memory":
            return f"{v / 1024:.2f}"
        return f"{v:.1f}"

    return one(stat["mean"]) + (f" ± {one(stat['std'])}" if stat.get("std") is not None else "")


def header_line(results: dict) -> str:
    cfg = results.get("config", {})
    devices = sorted({r["device"] for r in results.get("runs", []) if r.get("device")})
    k = cfg.get("jobs_per_gpu") or 1
    sizes = sorted({m.group(1) for sc in cfg.get("scenes", []) if (m := re.search(r"_(\d+x\d+)_", sc))})
    return (f"{cfg.get('finished', '?')[:10]}; device: {', '.join(devices) or 'unknown'}; commit {cfg.get('commit', '?')}; "
            f"{cfg.get('iterations') or DEFAULT_ITERATIONS} iterations; "
            + (f"images {', '.join(sizes)}; " if sizes else "") + f"seeds {cfg.get('seeds')}; "
            + (f"{k} runs side by side per GPU (times not comparable)" if k > 1 else "one run per GPU (times alone)")
            + (f"; extra train args `{' '.join(cfg['extra_train_args'])}`" if cfg.get("extra_train_args") else ""))


def build_table(name: str, spec: dict, results: dict) -> str:
    entries = aggregate(spec, results.get("runs", []))
    cols = spec["columns"]
    units = {"time": " (s)", "memory": " (GB)", "score": ""}
    head = "| Scene | Variant | " + " | ".join(COLUMNS[c][0] + units[COLUMNS[c][1]] for c in cols) + " | Runs |"
    lines = [f"## {spec['title']}", "", header_line(results) + ".",
             "PQ^scene and mIoU x100 on the test views (docs/EVALUATION.md); mean ± std over seeds.", "",
             head, "|---|---|" + "---:|" * len(cols) + "---|"]
    for e in entries:
        runs = f"{e['runs'] - e['failed']}/{e['runs']}" + (f" ({e['errors'][0]})" if e["errors"] else "")
        lines.append(f"| {e['scene']} | {e['variant']} | " + " | ".join(_fmt(e[c], COLUMNS[c][1]) for c in cols)
                     + f" | {runs.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figure

def _points(spec: dict, entries: Sequence[dict], key: str) -> Dict[str, Dict[object, List[dict]]]:
    """series -> x -> the (scene, variant) statistics of ``key`` that fall there."""
    fig = spec["figure"]
    out: Dict[str, Dict[object, List[dict]]] = {}
    for e in entries:
        stat = e.get(key)
        if stat is None:
            continue
        sc = scene_of(spec, e["scene"])
        out.setdefault(fig["series"](sc, e["variant"]) if "series" in fig else e["variant"], {}) \
            .setdefault(fig["x"](sc, e["variant"]), []).append(stat)
    return out


def series_seeds(spec: dict, entries: Sequence[dict]) -> Dict[str, str]:
    """series -> " (seed 1)" / " (seeds 0, 1)" when the figure's series were run on different seeds, so a
    two-seed mean is never drawn beside a one-seed point unmarked; "" for each series when they agree."""
    fig, seeds = spec["figure"], {}
    for e in entries:
        if e.get("seeds"):
            sc = scene_of(spec, e["scene"])
            series = fig["series"](sc, e["variant"]) if "series" in fig else e["variant"]
            seeds.setdefault(series, set()).update(e["seeds"])
    if len({frozenset(v) for v in seeds.values()}) <= 1:
        return {k: "" for k in seeds}
    return {k: f" (seed{'s' if len(v) > 1 else ''} {', '.join(str(x) for x in sorted(v))})" for k, v in seeds.items()}


def _ms(stats: Sequence[dict]):
    """Mean and error bar of a figure point: one scene -> its mean ± std over seeds; several
    scenes -> the mean over scenes ± the std of the scene means."""
    if len(stats) == 1:
        return stats[0]["mean"], stats[0]["std"] or 0.0
    s = mean_std([st["mean"] for st in stats])
    return s["mean"], s["std"] or 0.0


MIN_SCORE_SPAN = 2.0  # score points: rows within the seed-to-seed noise (about 1, RESULTS 17b) must not look like a trend


def score_limits(values: Sequence[float], min_span: float = MIN_SCORE_SPAN, pad: float = 0.15) -> Tuple[float, float]:
    """y-limits of a line figure of scores (0..100): the values' range padded, at least ``min_span`` wide,
    so that a 0.2-point spread is drawn as the flat line it is and not as a climb across the plot."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    lo, hi = mid - span * (0.5 + pad), mid + span * (0.5 + pad)
    if hi > 100.0:
        lo, hi = lo - (hi - 100.0), 100.0
    return max(lo, 0.0), hi


LABEL_ABOVE, LABEL_BELOW, LABEL_HEIGHT, MARKER_HALF = 6.0, -12.0, 7.0, 3.5  # points (1/72 inch)
LABEL_SIDE_DX, LABEL_GAP = 6.0, 1.0  # a crowded column: labels this far beside the markers, this far apart


def above_below(points: Sequence[Tuple[float, float]]) -> List[Tuple[bool, float]]:
    """For each (x, y) point of a line figure, y in points on the page: whether its value label goes below it
    rather than above, and the overlap (points) its label box is left with. At each x, from the highest point
    down, the first side whose label box overlaps no label placed before and no other marker (else the side
    that overlaps less), so that close values of different series (25 objects: 87.4, 86.4 and 83.8) stay
    readable."""
    out: List[Tuple[bool, float]] = [(False, 0.0)] * len(points)
    placed: Dict[float, List[Tuple[float, float]]] = {}
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i)):
        x, y = points[i]
        boxes = placed.setdefault(x, [])
        markers = [(y2 - MARKER_HALF, y2 + MARKER_HALF) for j, (x2, y2) in enumerate(points) if x2 == x and j != i]

        def overlap(lo: float) -> float:
            hi = lo + LABEL_HEIGHT
            return sum(max(0.0, min(hi, b) - max(lo, a)) for a, b in boxes + markers)

        up, down = overlap(y + LABEL_ABOVE), overlap(y + LABEL_BELOW)
        below = down < up
        out[i] = (below, min(up, down))
        lo = y + (LABEL_BELOW if below else LABEL_ABOVE)
        boxes.append((lo, lo + LABEL_HEIGHT))
    return out


def dodge(ys: Sequence[float], gap: float) -> List[float]:
    """Positions as close as they can be to ``ys`` (least squares) with neighbours at least ``gap`` apart, in
    the order of ``ys``: runs of labels that would collide are merged into blocks centred on their points.
    This is isotonic regression of ``sorted(ys)[k] - k * gap`` (pool adjacent violators); scipy has it as
    ``scipy.optimize.isotonic_regression`` only from 1.12, and the project accepts scipy 1.9."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    blocks: List[List[float]] = []  # each a run of sorted ys placed gap apart from one start

    def start(block: List[float]) -> float:
        return sum(y - j * gap for j, y in enumerate(block)) / len(block)

    for i in order:
        blocks.append([ys[i]])
        while len(blocks) > 1 and start(blocks[-2]) + len(blocks[-2]) * gap > start(blocks[-1]):
            last = blocks.pop()
            blocks[-1].extend(last)
    out = [0.0] * len(ys)
    k = 0
    for block in blocks:
        s0 = start(block)
        for j in range(len(block)):
            out[order[k]] = s0 + j * gap
            k += 1
    return out


def label_places(points: Sequence[Tuple[float, float]]) -> List[Tuple[float, float, str, str]]:
    """Where each value label of a line figure goes: (dx, dy) in points from its marker, and its horizontal and
    vertical alignment. At an x whose labels fit above or below their markers (``above_below``) they go there;
    where they cannot without overlap (25 objects in Tab. 1: four series within 5 PQ points) the whole column
    goes beside the markers, on the right (on the left at the last x, inside the axes), each label at its
    point's height, pushed apart just enough not to overlap (``dodge``)."""
    choice = above_below(points)
    columns: Dict[float, List[int]] = {}
    for i, (x, _) in enumerate(points):
        columns.setdefault(x, []).append(i)
    last_x = max(columns, default=0.0)
    places: List[Tuple[float, float, str, str]] = [
        (0.0, LABEL_BELOW if below else LABEL_ABOVE, "center", "baseline") for below, _ in choice]
    for x, idx in columns.items():
        if all(choice[i][1] <= 0.0 for i in idx):
            continue
        ys = dodge([points[i][1] for i in idx], LABEL_HEIGHT + LABEL_GAP)
        left = x == last_x and len(columns) > 1
        for i, y in zip(idx, ys):
            places[i] = (-LABEL_SIDE_DX if left else LABEL_SIDE_DX, y - points[i][1], "right" if left else "left",
                         "center")
    return places


def write_figure(name: str, spec: dict, results: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_spec = spec["figure"]
    entries = aggregate(spec, results.get("runs", []))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    if fig_spec["kind"] == "line":
        spans, labels, marks = [], [], series_seeds(spec, entries)
        for series, by_x in _points(spec, entries, fig_spec["y"]).items():
            xs = sorted(by_x)
            ms = [_ms(by_x[x]) for x in xs]
            ax.errorbar(xs, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3,
                        label=series + marks.get(series, ""))
            labels += [(x, m) for x, (m, _) in zip(xs, ms)]
            spans += [v for m, s in ms for v in (m - s, m + s)]
        if spans and COLUMNS[fig_spec["y"]][1] == "score":
            ax.set_ylim(*score_limits(spans))
        fig.canvas.draw()  # the layout that turns data into points on the page
        to_pt = 72.0 / fig.dpi
        on_page = [(x, float(ax.transData.transform((x, m))[1]) * to_pt) for x, m in labels]
        for (x, m), (dx, dy, ha, va) in zip(labels, label_places(on_page)):
            ax.annotate(f"{m:.1f}", (x, m), textcoords="offset points", ha=ha, va=va, fontsize=7, xytext=(dx, dy),
                        bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.75))  # legible over lines
        if fig_spec.get("xlog"):
            ax.set_xscale("log")
            ticks = sorted({fig_spec["x"](scene_of(spec, e["scene"]), e["variant"]) for e in entries})
            ax.minorticks_off()
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_ylabel(COLUMNS[fig_spec["y"]][0])
    elif fig_spec["kind"] == "bars":
        pts = _points(spec, entries, fig_spec["y"])
        cats = list(dict.fromkeys(x for by_x in pts.values() for x in by_x))
        width = 0.8 / max(1, len(pts))
        marks = series_seeds(spec, entries)
        for i, (series, by_x) in enumerate(pts.items()):
            ms = [_ms(by_x[c]) if c in by_x else (float("nan"), 0.0) for c in cats]
            bars = ax.bar([j + i * width for j in range(len(cats))], [m for m, _ in ms], width,
                          yerr=[s for _, s in ms], capsize=3, label=series + marks.get(series, ""))
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)  # rows often differ by less than a bar shows
        ax.set_xticks([j + width * (len(pts) - 1) / 2 for j in range(len(cats))], [str(c) for c in cats],
                      rotation=20 if len(cats) > 3 else 0)
        ax.set_ylabel(COLUMNS[fig_spec["y"]][0])
    elif fig_spec["kind"] == "stacked_time":
        cats = list(dict.fromkeys(fig_spec["x"](scene_of(spec, e["scene"]), e["variant"]) for e in entries))
        bottom = [0.0] * len(cats)
        for part, hatch in zip(fig_spec["parts"], ("", "", "//")):
            by_x = _points(dict(spec, figure=dict(fig_spec, series=lambda sc, v: part)), entries, part).get(part, {})
            vals = [(_ms(by_x[c])[0] / 60 if c in by_x else 0.0) for c in cats]
            ax.bar(range(len(cats)), vals, 0.6, bottom=bottom, hatch=hatch, label=COLUMNS[part][0])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(cats)), cats)
        ax.set_ylabel("minutes per scene (mean)")
    else:
        raise ValueError(f"figure kind {fig_spec['kind']!r}")
    ax.set_xlabel(fig_spec["xlabel"])
    head = [part.strip() for part in header_line(results).split(";")]
    shown = [p for p in head[1:] if "iterations" in p or "device" in p or p.startswith("images")]
    ax.set_title(spec["title"].split(":")[0] + f" ({', '.join(shown)})", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_outputs(name: str, spec: dict, results: dict, out: str, figure: str) -> dict:
    os.makedirs(out, exist_ok=True)
    md = build_table(name, spec, results)
    rs._atomic_write(os.path.join(out, "table.md"), md)
    table = {"table": name, "title": spec["title"], "config": results.get("config", {}),
             "rows": aggregate(spec, results.get("runs", []))}
    rs._atomic_write(os.path.join(out, "table.json"), json.dumps(table, indent=2) + "\n")
    write_figure(name, spec, results, figure)
    return {"markdown": md, "table": table}


# --------------------------------------------------------------------------- CLI

def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=rs.REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=sorted(TABLES) + ["all"])
    p.add_argument("--out", default=None, help="table folder (default output/paper/<table>)")
    p.add_argument("--runs", default=os.path.join("output", "paper"), help="root of the model folders")
    p.add_argument("--scenes_dir", default=os.path.join("data", "paper_scenes"), help="generated scenes")
    p.add_argument("--figure", default=None, help="figure path (default docs/<table>.png; OUT/<table>.png with "
                                                  "--out or train.py flags after --)")
    p.add_argument("--iterations", type=int, default=None, help=f"train.py --iterations (default {DEFAULT_ITERATIONS})")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default per table)")
    p.add_argument("--gpus", default="", help="local engine: comma-separated GPU ids")
    p.add_argument("--jobs_per_gpu", type=int, default=1, help="runs side by side per GPU (not for timing tables)")
    p.add_argument("--engine", default="local", choices=("local", "ray"))
    p.add_argument("--address", default=None, help="Ray cluster address (--engine ray)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per stage before it counts as failed")
    p.add_argument("--workers", type=int, default=2, help="processes per scene generation")
    p.add_argument("--views", type=int, default=None, help="views per generated scene (default per table: 200 / 300)")
    p.add_argument("--size", default=None, metavar="WxH", help="image size of the generated scenes (default per "
                                                                 "table: 512x512 Messy, 640x480 Replica-like)")
    p.add_argument("--noise", default=None, choices=sorted(PRESETS),
                   help="the simulated segmenter's noise (default realistic); hard: more merges, splits, misses and "
                        "wrong classes, for ablations that a realistic room cannot tell apart (RESULTS 18a, 19b)")
    p.add_argument("--objects", type=int, nargs="+", default=None,
                   help="objects per room of the tables of one count (default 40); tab1: only these of its counts "
                        "(25 50 100 500), e.g. to split it over several sessions")
    p.add_argument("--scene_seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="only the table's scenes of these generator seeds (e.g. tab5 --scene_seeds 3 4: the scenes "
                        "a lease did not reach)")
    p.add_argument("--variants", nargs="+", default=None, metavar="ROW",
                   help="run (and tabulate) only these rows of the table, e.g. the rows an interrupted sweep "
                        "did not finish; --collect without it tabulates every row on disk")
    p.add_argument("--collect", action="store_true", help="rebuild table and figure from the runs on disk")
    p.add_argument("--dry_run", action="store_true", help="print the jobs and the GPU time estimate; run nothing")
    p.add_argument("--scenes_only", action="store_true",
                   help="generate the table's missing scenes and stop (on the CPU, e.g. while a GPU machine builds "
                        "and tests; timed runs then start on ready scenes)")
    p.add_argument("--scene_jobs", type=int, default=1, help="scenes generated at a time, --workers processes each")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:  # the rest goes to every train.py call
        extra, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    args = p.parse_args(argv)
    args.extra = extra
    args.gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    rs.check_engine_args(args, "paper_tables.py")
    if args.iterations is not None and args.iterations < 1:
        print(f"paper_tables.py: error: --iterations {args.iterations}: give 1 or more", file=sys.stderr)
        raise SystemExit(2)
    if args.size is not None and not re.fullmatch(r"[1-9]\d*x[1-9]\d*", args.size):
        print(f"paper_tables.py: error: --size {args.size}: give WIDTHxHEIGHT, e.g. 480x360", file=sys.stderr)
        raise SystemExit(2)
    if args.objects is not None:
        problem = None
        if args.table == "all":
            problem = "give a table, not all"
        elif min(args.objects) < 1:
            problem = "give 1 or more"
        elif TABLES[args.table].get("object_counts"):
            counts = sorted({sc.objects for sc in TABLES[args.table]["scenes"]})
            if set(args.objects) - set(counts):
                problem = f"{args.table} sweeps {' / '.join(map(str, counts))}; give some of those"
        elif len(args.objects) > 1:
            problem = f"{args.table} has rooms of one count; give one number"
        if problem:
            print(f"paper_tables.py: error: --objects {' '.join(map(str, args.objects))}: {problem}", file=sys.stderr)
            raise SystemExit(2)
    if args.scene_seeds is not None and args.table != "all":
        known = sorted({sc.seed for sc in TABLES[args.table]["scenes"]})
        if set(args.scene_seeds) - set(known):
            print(f"paper_tables.py: error: --scene_seeds {' '.join(map(str, args.scene_seeds))}: {args.table}'s "
                  f"scenes have seeds {' / '.join(map(str, known))}; give some of those", file=sys.stderr)
            raise SystemExit(2)
    if args.views is not None and args.views < 2:
        print(f"paper_tables.py: error: --views {args.views}: give 2 or more", file=sys.stderr)
        raise SystemExit(2)
    if args.variants:
        rows = [] if args.table == "all" else TABLES[args.table]["variants"]
        unknown = [v for v in args.variants if v not in rows]
        if args.table == "all" or unknown:
            print(f"paper_tables.py: error: --variants {' '.join(unknown or args.variants)}: not a row of "
                  f"{args.table}" + (f" (its rows: {' '.join(rows)})" if rows else "; give a table, not all"),
                  file=sys.stderr)
            raise SystemExit(2)
    if args.table == "all" and (args.out or args.figure):
        print("paper_tables.py: error: --out / --figure name one table's files; give a table, not all",
              file=sys.stderr)
        raise SystemExit(2)
    return args


def print_estimate(names: Sequence[str], args: argparse.Namespace) -> float:
    """Prints runs and GPU minutes per table and, over the tables given, without the runs that
    several tables share (same model folder). Returns the total of distinct runs."""
    print("| table | scenes x variants x seeds | runs | iterations | jobs/GPU | GPU min (est.) |")
    print("|---|---|---:|---:|---:|---:|")
    distinct: Dict[str, float] = {}
    for n in names:
        spec = table_spec(args, n)
        e = estimate(args, spec)
        distinct.update(job_minutes(args, spec))
        print(f"| {n} | {e['scenes']} x {e['variants']} x {e['seeds']} | {e['runs']} | {e['iterations']} | "
              f"{e['jobs_per_gpu']} | {e['gpu_minutes']:.0f} |")
    total = sum(distinct.values())
    print(f"{len(distinct)} distinct runs, about {total:.0f} GPU minutes ({total / 60:.1f} h) on one H200 "
          f"(tables share runs with the same scene, variant, seed and iterations). Rough, +-40 %: "
          f"{MIN_PER_10K_ALONE} min per 10k iterations at 480x360 alone, scaled by pixels, "
          f"{1 + SIDE_BY_SIDE_SLOWDOWN * 3:.2f}x as long each with 4 side by side, {EVAL_MIN} min render + metrics, "
          f"{CLUSTER_MIN} min baseline clustering; scene generation runs on the CPU and is not counted.")
    return total


def default_figure(name: str, args: argparse.Namespace, out: str) -> str:
    """Where the figure goes without --figure: the committed ``docs/<table>.png`` for a run of the table as
    documented, but ``<out>/<table>.png`` for a run into its own --out folder or with train.py flags after
    ``--`` (a smoke run such as ``--iterations 50 -- --resolution 4`` must not replace the published figure)."""
    if args.out or getattr(args, "extra", None):
        return os.path.join(out, f"{name}.png")
    return os.path.join(rs.REPO, "docs", f"{name}.png")


def run_table(name: str, args: argparse.Namespace, log: Callable[[str], None] = print,
              commands: Optional[rs.CommandFn] = None, make=make_scenes) -> dict:
    """Scenes, sweep (unless --collect), then results.json/md, table.md/json and the figure."""
    spec = table_spec(args, name)
    out = args.out or os.path.join("output", "paper", name)
    figure = args.figure or default_figure(name, args, out)
    jobs = table_jobs(args, spec)
    k = jobs_per_gpu(args, spec)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    outcomes: Dict[rs.Job, dict] = {}
    if not args.collect:
        make(spec["scenes"], args.scenes_dir, args.workers, log)
        if k != args.jobs_per_gpu:
            log(f"{name}: timing table, one run per GPU (--jobs_per_gpu {args.jobs_per_gpu} ignored)")
        variants = {v: variant_flags(v, args.iterations) for v in spec["variants"]}
        cmds = commands or functools.partial(rs.default_commands, iterations=args.iterations, extra=args.extra,
                                             variants=variants)
        log(f"{name}: {len(jobs)} job(s) -> {runs_root(args, spec)}")
        outcomes = rs.run_jobs(jobs, cmds, args.gpus, False, args.timeout, log, jobs_per_gpu=k, engine=args.engine,
                               address=args.address, warm_up=None if commands else rs.warm_up_subprocess)
    config = {"table": name, "scenes": [sc.name for sc in spec["scenes"]], "methods": spec["variants"],
              "seeds": args.seeds or spec["seeds"], "iterations": args.iterations or DEFAULT_ITERATIONS,
              "extra_train_args": args.extra, "jobs_per_gpu": k, "engine": args.engine, "gpus": args.gpus, "commit": git_commit(),
              "started": started, "finished": _dt.datetime.now().isoformat(timespec="seconds"),
              "collected_only": bool(args.collect)}
    results = rs.write_reports(out, jobs, outcomes, config)
    written = write_outputs(name, spec, results, out, figure)
    log(written["markdown"].rstrip())
    log(f"wrote {os.path.join(out, 'table.md')}, table.json, results.json and {figure}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    names = sorted(TABLES) if args.table == "all" else [args.table]
    if args.dry_run:
        for n in names:
            for j in table_jobs(args, table_spec(args, n)):
                print(f"{n}: {j.tag} -> {j.model_path}")
        print_estimate(names, args)
        return 0
    if args.scenes_only:
        specs = [sc for n in names for sc in table_spec(args, n)["scenes"]]
        made = make_scenes(specs, args.scenes_dir, args.workers, jobs=max(1, args.scene_jobs))
        print(f"{len(made)} scene(s) generated, {len(specs) - len(made)} already there, in {args.scenes_dir}")
        return 0
    failed = 0
    for n in names:
        results = run_table(n, args)
        failed += sum(r["status"] != "ok" for r in results["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
