"""Benchmark driver: train, render and evaluate every (scene, method), then tabulate.

    python benchmarks/run_suite.py                                   # the synthetic suite in data/suite
    python benchmarks/run_suite.py --scenes data/replica/room_0 data/scannet/scene0050_02 \\
        --methods unic contrastive_lift --out output/bench --gpus 0,1 -- --densify_until_iter 10000
    python benchmarks/run_suite.py --scenes data/replica/room_0 --table tab4    # the paper's Tab. 4 ablation

For each pair it runs, as subprocesses with their output in ``MODEL/logs/<stage>.log``::

    train.py -s SCENE -m MODEL --eval --quiet VARIANT_FLAGS [--iterations N] [extra args]
    render.py -m MODEL --labels --skip_train --quiet
    metrics.py -m MODEL --quiet
    tools/objects.py evaluate -m MODEL --json MODEL/extraction.json --quiet    # scenes with generator.json

with ``MODEL = OUT/<scene>/<method>``, then writes ``OUT/results.md`` (one row per scene and
method, a mean row per method; on synthetic scenes also the median precision / recall of object
extraction against the generator's geometry) and ``OUT/results.json`` (every number). A finished pair
(``MODEL/results.json`` exists) is skipped, a trained one (``MODEL/train_stats.json``) is only
rendered and evaluated, so an interrupted sweep resumes where it stopped. A failing stage
marks its row FAILED and the sweep goes on. With ``--gpus 0,1,...`` one job runs per GPU in
parallel (``CUDA_VISIBLE_DEVICES`` set per job).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SUITE = os.path.join("data", "suite")
STAGES = ("train", "render", "metrics")
EXTRACTION = "extraction"  # the optional fourth stage: tools/objects.py evaluate (scenes with generator.json)
# Named variants: the two methods and the paper's ablations (METHOD.md, "Paper's ablations"), each
# as train.py flags on top of a base method. ``--methods`` takes any of these names.
VARIANTS: Dict[str, List[str]] = {
    "unic": ["--method", "unic"],
    "contrastive_lift": ["--method", "contrastive_lift"],
    # Tab. 4: which losses, with and without the linear layer W
    "cl_only": ["--method", "unic", "--no-use_triplet", "--no-use_3d"],
    "cl_3d": ["--method", "unic", "--no-use_triplet"],
    "cl_triplet": ["--method", "unic", "--no-use_3d"],
    "cl_triplet_noW": ["--method", "unic", "--no-use_3d", "--linear_layer", "identity"],
    "all_noW": ["--method", "unic", "--linear_layer", "identity"],
    # Tab. 6: when L_3D starts
    **{f"l3d_{k}k": ["--method", "unic", "--l3d_from_iter", str(k * 1000)] for k in (7, 12, 15, 20)},
    # Sec. 4.1: masks on a fraction of the training views (RGB on all); masks and images downscaled
    **{f"masks_{p}pct": ["--method", "unic", "--mask_fraction", str(p / 100)] for p in (5, 10, 20)},
    "masks_0.25x": ["--method", "unic", "--mask_downscale", "0.25"],
    "masks_0.5x": ["--method", "unic", "--mask_downscale", "0.5"],
}
METHODS = tuple(VARIANTS)
PAPER_TABLES = {
    "tab4": ["cl_only", "cl_3d", "cl_triplet", "cl_triplet_noW", "all_noW", "unic"],
    "tab5": ["unic", "contrastive_lift"],
    "tab6": ["l3d_7k", "l3d_12k", "l3d_15k", "l3d_20k"],
    "sparse_masks": ["masks_5pct", "masks_10pct", "masks_20pct", "unic"],
    "low_res_masks": ["masks_0.25x", "masks_0.5x", "unic"],
}
# Files whose presence tells what a scene folder is (docs/DATA.md).
_SCENE_MARKERS = ("splits.json", "metadata.json", "transforms_train.json", os.path.join("sparse", "0"))


@dataclass(frozen=True)
class Job:
    scene: str  # absolute path of the scene folder
    name: str  # scene name used in the table and the output folder
    method: str
    model_path: str  # OUT/<name>/<method>


# --------------------------------------------------------------------------- planning

def is_scene(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _SCENE_MARKERS)


def suite_scenes(suite_dir: str) -> List[str]:
    """Every scene folder inside ``suite_dir`` (or one level further down), sorted by path."""
    if not os.path.isdir(suite_dir):
        raise SystemExit(f"error: suite folder {suite_dir} does not exist; generate it with "
                         "python tools/make_suite.py --out data/suite, or pass --scenes DIR ...")
    found = []
    for d in sorted(os.listdir(suite_dir)):
        path = os.path.join(suite_dir, d)
        if is_scene(path):
            found.append(path)
        elif os.path.isdir(path):  # e.g. suite/messy/<scene>
            found += [os.path.join(path, e) for e in sorted(os.listdir(path)) if is_scene(os.path.join(path, e))]
    if not found:
        raise SystemExit(f"error: no scene folders in {suite_dir}")
    return found


def plan_jobs(scenes: Sequence[str], methods: Sequence[str], out: str) -> List[Job]:
    """One job per (scene, method); scene names are folder names, made unique with their parent."""
    paths = [os.path.abspath(s.rstrip("/")) for s in scenes]
    for p in paths:
        if not os.path.isdir(p):
            raise SystemExit(f"error: scene folder {p} does not exist")
    names = [os.path.basename(p) for p in paths]
    names = [f"{os.path.basename(os.path.dirname(p))}_{n}" if names.count(n) > 1 else n
             for p, n in zip(paths, names)]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: scenes given twice: {sorted(n for n in names if names.count(n) > 1)}")
    out = os.path.abspath(out)
    return [Job(p, n, m, os.path.join(out, n, m)) for p, n in zip(paths, names) for m in methods]


def has_generator(scene: str) -> bool:
    """Whether a scene was written by tools/make_scene.py (its object geometry is known)."""
    return os.path.isfile(os.path.join(scene, "generator.json"))


def stages_to_run(model_path: str, force: bool = False, extraction: bool = False) -> List[str]:
    """Resume logic: evaluated -> nothing; trained -> render and metrics; else all three. With
    ``extraction``, the extraction stage follows unless ``MODEL/extraction.json`` exists."""
    extra = [EXTRACTION] if extraction and (force or not os.path.isfile(os.path.join(model_path, "extraction.json"))) \
        else []
    if force:
        return list(STAGES) + extra
    if os.path.isfile(os.path.join(model_path, "results.json")):
        return extra
    if os.path.isfile(os.path.join(model_path, "train_stats.json")):
        return ["render", "metrics"] + extra
    return list(STAGES) + extra


def default_commands(job: Job, iterations: Optional[int] = None, extra: Sequence[str] = ()) -> Dict[str, List[str]]:
    """argv of each stage, run with the repository root as working directory."""
    py = sys.executable
    train = [py, os.path.join(REPO, "train.py"), "-s", job.scene, "-m", job.model_path, "--eval", "--quiet",
             *VARIANTS[job.method]]
    if iterations is not None:
        train += ["--iterations", str(iterations)]
    return {
        "train": train + list(extra),
        "render": [py, os.path.join(REPO, "render.py"), "-m", job.model_path, "--labels", "--skip_train", "--quiet"],
        "metrics": [py, os.path.join(REPO, "metrics.py"), "-m", job.model_path, "--quiet"],
        EXTRACTION: [py, os.path.join(REPO, "tools", "objects.py"), "evaluate", "-m", job.model_path,
                     "--scene", job.scene, "--json", os.path.join(job.model_path, "extraction.json"), "--quiet"],
    }


# --------------------------------------------------------------------------- running

CommandFn = Callable[[Job], Dict[str, List[str]]]


def run_job(job: Job, commands: CommandFn, gpu: Optional[str] = None, force: bool = False,
            timeout: Optional[float] = None, log: Callable[[str], None] = print) -> dict:
    """Runs the stages a job still needs; returns ``{"status", "stages_run", "error", "seconds"}``.
    The extraction stage runs when ``commands`` has one and the scene has generator.json."""
    argv = commands(job)
    todo = stages_to_run(job.model_path, force, extraction=EXTRACTION in argv and has_generator(job.scene))
    tag = f"{job.name}/{job.method}" + (f" [gpu {gpu}]" if gpu is not None else "")
    if not todo:
        log(f"{tag}: done already, skipped")
        return {"status": "ok", "stages_run": [], "error": None, "seconds": 0.0}
    os.makedirs(os.path.join(job.model_path, "logs"), exist_ok=True)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    t_job = time.perf_counter()
    for stage in todo:
        log_path = os.path.join(job.model_path, "logs", f"{stage}.log")
        log(f"{tag}: {stage} ...")
        t0 = time.perf_counter()
        with open(log_path, "w") as fh:
            fh.write("$ " + " ".join(argv[stage]) + "\n")
            fh.flush()
            try:
                rc = subprocess.run(argv[stage], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
                reason = f"exit {rc}"
            except subprocess.TimeoutExpired:
                rc, reason = -1, f"timed out after {timeout:.0f} s"
        dt = time.perf_counter() - t0
        if rc != 0:
            err = f"{stage} failed ({reason}); log: {log_path}"
            tail = _last_line(log_path)
            log(f"{tag}: FAILED {err}" + (f" | {tail}" if tail else ""))
            return {"status": "failed", "stages_run": todo[:todo.index(stage) + 1], "error": err,
                    "error_line": tail, "seconds": time.perf_counter() - t_job}
        log(f"{tag}: {stage} done in {dt:.1f} s")
    return {"status": "ok", "stages_run": todo, "error": None, "seconds": time.perf_counter() - t_job}


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            lines = [ln.strip() for ln in fh.read().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if len(lines) > 1 else ""


def run_jobs(jobs: Sequence[Job], commands: CommandFn, gpus: Sequence[str] = (), force: bool = False,
             timeout: Optional[float] = None, log: Callable[[str], None] = print) -> Dict[Job, dict]:
    """Runs every job; one at a time without GPUs, else one per GPU in parallel."""
    lock = threading.Lock()

    def say(msg: str) -> None:
        with lock:
            log(msg)

    def guarded(job: Job, gpu: Optional[str]) -> dict:
        try:
            return run_job(job, commands, gpu, force, timeout, say)
        except Exception as e:  # noqa: BLE001 - one broken job must not stop the sweep
            say(f"{job.name}/{job.method}: FAILED (driver error {type(e).__name__}: {e})")
            return {"status": "failed", "stages_run": [], "error": f"driver error: {type(e).__name__}: {e}",
                    "seconds": 0.0}

    if len(gpus) <= 1:
        gpu = gpus[0] if gpus else None
        return {job: guarded(job, gpu) for job in jobs}
    free: "queue.Queue[str]" = queue.Queue()
    for g in gpus:
        free.put(g)

    def on_a_gpu(job: Job) -> dict:
        gpu = free.get()
        try:
            return guarded(job, gpu)
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        futures = {job: pool.submit(on_a_gpu, job) for job in jobs}
        return {job: fut.result() for job, fut in futures.items()}


# --------------------------------------------------------------------------- collecting

def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def latest_method_key(results: dict) -> Optional[str]:
    """The ``ours_N`` entry with the largest N (the final iteration)."""
    keys = [(int(m.group(1)), k) for k in results if (m := re.fullmatch(r"ours_(\d+)", k))]
    return max(keys)[1] if keys else (next(iter(results)) if results else None)


def collect_run(job: Job, outcome: Optional[dict] = None) -> dict:
    """One row of numbers for a job, from the files its stages wrote."""
    results = _read_json(os.path.join(job.model_path, "results.json")) or {}
    stats = _read_json(os.path.join(job.model_path, "train_stats.json")) or {}
    extraction = _read_json(os.path.join(job.model_path, "extraction.json")) or {}
    key = latest_method_key(results)
    metrics = dict(results.get(key, {})) if key else {}
    row = {
        "scene": job.name, "scene_path": job.scene, "method": job.method, "model_path": job.model_path,
        "status": "ok", "error": None, "result_key": key,
        "PQ_scene": metrics.get("PQ_scene"), "SQ": metrics.get("SQ"), "RQ": metrics.get("RQ"),
        "mIoU": metrics.get("mIoU"), "PSNR": metrics.get("PSNR"), "SSIM": metrics.get("SSIM"),
        "LPIPS": metrics.get("LPIPS"),
        "train_seconds": stats.get("train_seconds"), "cluster_seconds": stats.get("cluster_seconds"),
        "peak_gpu_mem_mb": stats.get("peak_gpu_mem_mb"), "num_gaussians": stats.get("num_gaussians"),
        "iterations": stats.get("iterations"), "device": stats.get("device"),
        # median over objects of extract's precision / recall (stray filter on), and of every
        # Gaussian of the id (no filter); None without generator.json
        "extract_P": (extraction.get("extract") or {}).get("median_precision"),
        "extract_R": (extraction.get("extract") or {}).get("median_recall"),
        "extract_P_all": (extraction.get("all") or {}).get("median_precision"),
        "extract_R_all": (extraction.get("all") or {}).get("median_recall"),
    }
    if outcome is not None and outcome["status"] != "ok":
        row["status"], row["error"] = "failed", outcome["error"]
    elif not results:
        row["status"], row["error"] = "failed", f"no results.json in {job.model_path}"
    return row


NUMERIC = ("PQ_scene", "SQ", "RQ", "mIoU", "PSNR", "SSIM", "LPIPS", "train_seconds", "cluster_seconds",
           "peak_gpu_mem_mb", "num_gaussians", "extract_P", "extract_R", "extract_P_all", "extract_R_all")


def method_means(rows: Sequence[dict]) -> Dict[str, dict]:
    """Per method: the mean of every numeric column over its successful rows (None if none)."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        ok = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        mean = {"scenes": len(ok), "of": sum(r["method"] == method for r in rows)}
        for k in NUMERIC:
            vals = [float(r[k]) for r in ok if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            mean[k] = sum(vals) / len(vals) if vals else None
        out[method] = mean
    return out


# --------------------------------------------------------------------------- table

def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _cluster(seconds) -> str:
    return "-" if not seconds else _duration(seconds)  # absent or 0 (UniC-Lift has no clustering step)


def _memory(mb) -> str:
    return "-" if mb is None else (f"{mb:.0f} MB" if mb < 1024 else f"{mb / 1024:.2f} GB")


def build_table(results: dict) -> str:
    """Markdown table from a results dict ``{"runs": [row, ...], ...}`` as ``results.json`` holds.

    Rows grouped by method (in first-seen order), scenes in order, then a mean row per
    method over its successful scenes. Failed runs show FAILED and the reason.
    """
    rows = results.get("runs", [])
    # extraction columns only when some run measured it (scenes with generator.json)
    ext = any(r.get("extract_P") is not None for r in rows)
    header = ("| Scene | Method | PQ^scene | mIoU | PSNR | Train time | Clustering | Peak GPU mem | "
              + ("Extract P | Extract R | " if ext else "") + "Status |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ext else "") + "---|")
    lines = [header]
    means = method_means(rows)

    def extraction(r) -> str:
        return f"{_num(r.get('extract_P'), '.3f')} | {_num(r.get('extract_R'), '.3f')} | " if ext else ""

    for method in means:
        for r in (r for r in rows if r["method"] == method):
            status = "ok" if r["status"] == "ok" else f"FAILED: {r.get('error') or 'unknown error'}"
            lines.append(f"| {r['scene']} | {method} | {_num(r.get('PQ_scene'), '.2f')} | "
                         f"{_num(r.get('mIoU'), '.2f')} | "
                         f"{_num(r.get('PSNR'), '.2f')} | {_duration(r.get('train_seconds'))} | "
                         f"{_cluster(r.get('cluster_seconds'))} | {_memory(r.get('peak_gpu_mem_mb'))} | "
                         f"{extraction(r)}{status.replace('|', '/')} |")
        m = means[method]
        label = "**mean**" if m["scenes"] == m["of"] else f"**mean** ({m['scenes']} of {m['of']})"
        lines.append(f"| {label} | {method} | {_num(m['PQ_scene'], '.2f')} | {_num(m['mIoU'], '.2f')} | "
                     f"{_num(m['PSNR'], '.2f')} | {_duration(m['train_seconds'])} | {_cluster(m['cluster_seconds'])} | "
                     f"{_memory(m['peak_gpu_mem_mb'])} | {extraction(m)}|")
    return "\n".join(lines) + "\n"


def render_markdown(results: dict) -> str:
    cfg = results.get("config", {})
    devices = sorted({r["device"] for r in results.get("runs", []) if r.get("device")})
    head = [
        "# Benchmark results",
        "",
        f"Written {cfg.get('finished', '?')}; device: {', '.join(devices) or 'unknown'}; "
        f"iterations: {cfg.get('iterations') or 'default'}"
        + (f"; extra train args: `{' '.join(cfg['extra_train_args'])}`" if cfg.get("extra_train_args") else "") + ".",
        "PQ^scene and mIoU x100 over the test views, labels resized to 512x512 (docs/EVALUATION.md); "
        "PSNR in dB on the test views; train time is wall time of train.py's optimisation loop; "
        "clustering is the baseline's post-hoc HDBSCAN step (UniC-Lift has none)."
        + (" Extract P / R: median over objects of the opacity-weighted precision / recall of "
           "`tools/objects.py extract` against the generator's object boxes (tools/extraction_eval.py)."
           if any(r.get("extract_P") is not None for r in results.get("runs", [])) else ""),
        "",
    ]
    return "\n".join(head) + "\n" + build_table(results)


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_reports(out: str, jobs: Sequence[Job], outcomes: Dict[Job, dict], config: dict) -> dict:
    rows = [collect_run(job, outcomes.get(job)) for job in jobs]
    results = {"config": config, "runs": rows, "means": method_means(rows)}
    os.makedirs(out, exist_ok=True)
    _atomic_write(os.path.join(out, "results.json"), json.dumps(results, indent=2, allow_nan=True) + "\n")
    _atomic_write(os.path.join(out, "results.md"), render_markdown(results))
    return results


# --------------------------------------------------------------------------- CLI

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description="Train, render and evaluate scenes x methods; write a results table.",
                                epilog="Arguments after -- go to every train.py call.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenes", nargs="+", metavar="DIR", help="scene folders (any format train.py reads)")
    src.add_argument("--suite", metavar="DIR", help=f"every scene folder inside DIR (default {DEFAULT_SUITE})")
    p.add_argument("--methods", nargs="+", default=None, choices=METHODS, metavar="NAME",
                   help="methods / ablation variants: " + ", ".join(METHODS) + " (default: unic)")
    p.add_argument("--table", choices=sorted(PAPER_TABLES),
                   help="the variants of one of the paper's tables: "
                        + "; ".join(f"{k} = {' '.join(v)}" for k, v in PAPER_TABLES.items()))
    p.add_argument("--out", default=os.path.join("output", "bench"))
    p.add_argument("--iterations", type=int, default=None, help="passed to train.py (default: its own)")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids, one parallel job per GPU (e.g. 0,1)")
    p.add_argument("--force", action="store_true", help="redo finished pairs too")
    p.add_argument("--timeout", type=float, default=None, help="seconds per stage before it counts as failed")
    p.add_argument("--table_only", action="store_true", help="rebuild results.md/json from what is on disk")
    args = p.parse_args(argv)
    args.extra = extra
    methods = (args.methods or []) + (PAPER_TABLES[args.table] if args.table else [])
    args.methods = list(dict.fromkeys(methods or ["unic"]))
    args.gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    scenes = args.scenes or suite_scenes(args.suite or os.path.join(REPO, DEFAULT_SUITE))
    jobs = plan_jobs(scenes, args.methods, args.out)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    outcomes: Dict[Job, dict] = {}
    if not args.table_only:
        print(f"{len(jobs)} job(s): {len(scenes)} scene(s) x {len(args.methods)} method(s) -> {args.out}")
        outcomes = run_jobs(jobs, lambda j: default_commands(j, args.iterations, args.extra), args.gpus,
                            args.force, args.timeout)
    config = {"scenes": [j.scene for j in jobs[::len(args.methods)]], "methods": args.methods,
              "iterations": args.iterations, "extra_train_args": args.extra, "gpus": args.gpus,
              "started": started, "finished": _dt.datetime.now().isoformat(timespec="seconds")}
    results = write_reports(args.out, jobs, outcomes, config)
    print(build_table(results), end="")
    print(f"wrote {os.path.join(args.out, 'results.md')} and results.json")
    return 1 if any(r["status"] != "ok" for r in results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
