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
parallel (``CUDA_VISIBLE_DEVICES`` set per job); ``--jobs_per_gpu K`` runs K side by side on each
(accuracy sweeps only: times of runs that share a GPU are not comparable). ``--seeds 0 1`` trains
every pair once per seed (``train.py --seed``) into ``MODEL-seedN``.

``--engine ray`` runs one Ray task per (scene, variant, seed) with ``num_gpus=1/K`` instead, on a
local Ray instance or, with ``--address HOST:PORT``, on a cluster started with ``ray start`` on
each machine. Every machine must see the repository, the scenes and OUT at the same paths (a
shared file system) and run the same Python environment; the resume logic is the same because
each task looks at its model folder before running a stage. Before fanning out, gsplat's CUDA
extension is built once per machine (``warm_up_gsplat``): its first build deletes its build
folder, so parallel first builds would wipe each other.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
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
    # the same, with the views that have masks drawn on half of the steps (--mask_view_share, RESULTS.md 20d, 21b)
    **{f"masks_{p}pct_share": ["--method", "unic", "--mask_fraction", str(p / 100), "--mask_view_share", "0.5"]
       for p in (5, 10, 20)},
    "masks_0.25x": ["--method", "unic", "--mask_downscale", "0.25"],
    "masks_0.5x": ["--method", "unic", "--mask_downscale", "0.5"],
}
METHODS = tuple(VARIANTS)
PAPER_TABLES = {
    "tab4": ["cl_only", "cl_3d", "cl_triplet", "cl_triplet_noW", "all_noW", "unic"],
    "tab5": ["unic", "contrastive_lift"],
    "tab6": ["l3d_7k", "l3d_12k", "l3d_15k", "l3d_20k"],
    "sparse_masks": ["masks_5pct", "masks_10pct", "masks_20pct", "unic", "masks_5pct_share", "masks_10pct_share",
                     "masks_20pct_share"],
    "low_res_masks": ["masks_0.25x", "masks_0.5x", "unic"],
}
# Files whose presence tells what a scene folder is (docs/DATA.md).
_SCENE_MARKERS = ("splits.json", "metadata.json", "transforms_train.json", os.path.join("sparse", "0"))


@dataclass(frozen=True)
class Job:
    scene: str  # absolute path of the scene folder
    name: str  # scene name used in the table and the output folder
    method: str
    model_path: str  # OUT/<name>/<method>, or OUT/<name>/<method>-seed<N> with a seed
    seed: Optional[int] = None  # train.py --seed; None: train.py's default, no suffix

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.method}" + ("" if self.seed is None else f"/seed{self.seed}")


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


def plan_jobs(scenes: Sequence[str], methods: Sequence[str], out: str,
              seeds: Optional[Sequence[int]] = None, must_exist: bool = True) -> List[Job]:
    """One job per (scene, method[, seed]); scene names are folder names, made unique with their
    parent. With ``seeds`` each pair runs once per seed into ``OUT/<scene>/<method>-seed<N>``.
    ``must_exist=False`` plans for scenes not written yet (or gone: collecting results only)."""
    paths = [os.path.abspath(s.rstrip("/")) for s in scenes]
    for p in paths:
        if must_exist and not os.path.isdir(p):
            raise SystemExit(f"error: scene folder {p} does not exist")
    names = [os.path.basename(p) for p in paths]
    names = [f"{os.path.basename(os.path.dirname(p))}_{n}" if names.count(n) > 1 else n
             for p, n in zip(paths, names)]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: scenes given twice: {sorted(n for n in names if names.count(n) > 1)}")
    out = os.path.abspath(out)
    if not seeds:
        return [Job(p, n, m, os.path.join(out, n, m)) for p, n in zip(paths, names) for m in methods]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: seeds given twice: {list(seeds)}")
    return [Job(p, n, m, os.path.join(out, n, f"{m}-seed{sd}"), int(sd))
            for p, n in zip(paths, names) for m in methods for sd in seeds]


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


def default_commands(job: Job, iterations: Optional[int] = None, extra: Sequence[str] = (),
                     variants: Optional[Dict[str, List[str]]] = None) -> Dict[str, List[str]]:
    """argv of each stage, run with the repository root as working directory. ``variants``:
    variant name -> train.py flags (default ``VARIANTS``)."""
    py = sys.executable
    train = [py, os.path.join(REPO, "train.py"), "-s", job.scene, "-m", job.model_path, "--eval", "--quiet",
             *(variants or VARIANTS)[job.method]]
    if iterations is not None:
        train += ["--iterations", str(iterations)]
    if job.seed is not None:
        train += ["--seed", str(job.seed)]
    return {
        "train": train + list(extra),
        "render": [py, os.path.join(REPO, "render.py"), "-m", job.model_path, "--labels", "--skip_train", "--quiet"],
        "metrics": [py, os.path.join(REPO, "metrics.py"), "-m", job.model_path, "--quiet"],
        EXTRACTION: [py, os.path.join(REPO, "tools", "objects.py"), "evaluate", "-m", job.model_path,
                     "--scene", job.scene, "--json", os.path.join(job.model_path, "extraction.json"), "--quiet"],
    }


# --------------------------------------------------------------------------- running

CommandFn = Callable[[Job], Dict[str, List[str]]]


def share_cpu(env: Dict[str, str], jobs: int) -> Dict[str, str]:
    """``env`` with the machine's cores split among ``jobs`` CPU jobs side by side (OMP_NUM_THREADS and
    MKL_NUM_THREADS), unless the user set OMP_NUM_THREADS. Without it, two CPU trainings on 2 cores ran
    about 100x slower than one (their thread pools spin against each other: RESULTS 19c)."""
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        n = str(max(1, (os.cpu_count() or 1) // jobs))
        env = dict(env, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    return env


def run_job(job: Job, commands: CommandFn, gpu: Optional[str] = None, force: bool = False,
            timeout: Optional[float] = None, log: Callable[[str], None] = print, cpu_jobs: int = 1) -> dict:
    """Runs the stages a job still needs; returns ``{"status", "stages_run", "error", "seconds"}``.
    The extraction stage runs when ``commands`` has one and the scene has generator.json."""
    argv = commands(job)
    todo = stages_to_run(job.model_path, force, extraction=EXTRACTION in argv and has_generator(job.scene))
    tag = job.tag + (f" [gpu {gpu}]" if gpu is not None else "")
    if not todo:
        log(f"{tag}: done already, skipped")
        return {"status": "ok", "stages_run": [], "error": None, "seconds": 0.0}
    os.makedirs(os.path.join(job.model_path, "logs"), exist_ok=True)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    else:
        env = share_cpu(env, cpu_jobs)
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


def _guarded(job: Job, commands: CommandFn, gpu: Optional[str], force: bool, timeout: Optional[float],
             log: Callable[[str], None], cpu_jobs: int = 1) -> dict:
    try:
        return run_job(job, commands, gpu, force, timeout, log, cpu_jobs)
    except Exception as e:  # noqa: BLE001 - one broken job must not stop the sweep
        log(f"{job.tag}: FAILED (driver error {type(e).__name__}: {e})")
        return {"status": "failed", "stages_run": [], "error": f"driver error: {type(e).__name__}: {e}",
                "seconds": 0.0}


def gpu_slots(gpus: Sequence[str], jobs_per_gpu: int = 1) -> List[Optional[str]]:
    """The local pool's slots: each GPU ``jobs_per_gpu`` times, interleaved so that the first jobs
    spread over the GPUs; without GPUs, ``jobs_per_gpu`` slots that set no CUDA_VISIBLE_DEVICES."""
    k = max(1, int(jobs_per_gpu))
    return [g for _ in range(k) for g in gpus] if gpus else [None] * k


def run_jobs(jobs: Sequence[Job], commands: CommandFn, gpus: Sequence[str] = (), force: bool = False,
             timeout: Optional[float] = None, log: Callable[[str], None] = print, *, jobs_per_gpu: int = 1,
             engine: str = "local", address: Optional[str] = None,
             warm_up: Optional[Callable[..., None]] = None, ray_init: Optional[dict] = None) -> Dict[Job, dict]:
    """Runs every job and returns its outcome.

    ``engine="local"``: one at a time without GPUs, else ``jobs_per_gpu`` jobs per GPU in
    parallel (threads of this process, each job's stages as subprocesses). ``engine="ray"``: one
    Ray task per job (``run_jobs_ray``). ``warm_up(gpu)`` runs once before the jobs fan out (local:
    on the first slot's GPU; Ray: once per machine)."""
    if engine == "ray":
        return run_jobs_ray(jobs, commands, force=force, timeout=timeout, log=log, jobs_per_gpu=jobs_per_gpu,
                            address=address, warm_up=warm_up, ray_init=ray_init)
    if engine != "local":
        raise ValueError(f"engine {engine!r}: use local or ray")
    lock = threading.Lock()

    def say(msg: str) -> None:
        with lock:
            log(msg)

    slots = gpu_slots(gpus, jobs_per_gpu)
    if warm_up is not None and jobs:
        warm_up(slots[0])
    if len(slots) <= 1:
        return {job: _guarded(job, commands, slots[0], force, timeout, say) for job in jobs}
    free: "queue.Queue[Optional[str]]" = queue.Queue()
    for g in slots:
        free.put(g)

    def on_a_slot(job: Job) -> dict:
        gpu = free.get()
        try:
            return _guarded(job, commands, gpu, force, timeout, say, 1 if gpus else len(slots))
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        futures = {job: pool.submit(on_a_slot, job) for job in jobs}
        return {job: fut.result() for job, fut in futures.items()}


# --------------------------------------------------------------------------- Ray

def _import_ray():
    try:
        import ray
    except ImportError:
        raise SystemExit("error: --engine ray needs Ray: pip install 'ray>=2.9' (or the project's [bench] extra)") \
            from None
    return ray


def _ray_task(job: Job, commands: CommandFn, force: bool, timeout: Optional[float]) -> dict:
    """Body of one Ray task: the job's stages on the GPU(s) Ray gave this task (Ray has set
    CUDA_VISIBLE_DEVICES already; naming them again only labels the log lines)."""
    import ray

    ids = ray.get_gpu_ids()
    gpu = ",".join(str(i) for i in ids) if ids else None
    return _guarded(job, commands, gpu, force, timeout, lambda m: print(m, flush=True))


def _ray_warm_up(warm_up: Callable[..., None]) -> str:
    import ray

    ids = ray.get_gpu_ids()
    warm_up(",".join(str(i) for i in ids) if ids else None)
    return ray.get_runtime_context().get_node_id()


def run_jobs_ray(jobs: Sequence[Job], commands: CommandFn, *, force: bool = False, timeout: Optional[float] = None,
                 log: Callable[[str], None] = print, jobs_per_gpu: int = 1, address: Optional[str] = None,
                 warm_up: Optional[Callable[..., None]] = None, ray_init: Optional[dict] = None) -> Dict[Job, dict]:
    """One Ray task per job with ``num_gpus = 1 / jobs_per_gpu`` (no GPU request on a cluster
    without GPUs: then the jobs run on its CPUs, one CPU each). Connects to ``address`` (a
    cluster started with ``ray start``) or starts a local instance, and shuts down only what it
    started. Outcomes are the local pool's: a task that dies counts as a failed job."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        # the workers import this module by name: put the repository first on their path
        path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
        kwargs = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}, "include_dashboard": False,
                  "log_to_driver": True, **(ray_init or {})}
        if address:
            kwargs["address"] = address
        ray.init(**kwargs)
    try:
        total_gpus = float(ray.cluster_resources().get("GPU", 0))
        num_gpus = 1.0 / max(1, int(jobs_per_gpu)) if total_gpus > 0 else 0
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log(f"ray: {len(nodes)} machine(s), {total_gpus:g} GPU(s); {len(jobs)} job(s) at num_gpus={num_gpus:g} each"
            + ("" if total_gpus else " (no GPUs in the cluster: jobs run on CPUs)"))
        if warm_up is not None and jobs:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            refs = [ray.remote(_ray_warm_up).options(
                num_gpus=1 if n.get("Resources", {}).get("GPU", 0) > 0 else 0, max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(warm_up)
                for n in nodes]
            for n, ref in zip(nodes, refs):
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the jobs themselves will say what is wrong
                    log(f"ray: warm-up on {n.get('NodeManagerAddress', '?')} failed ({type(e).__name__}: {e})")
        task = ray.remote(_ray_task).options(num_gpus=num_gpus, num_cpus=1, max_retries=0)
        pending = {task.remote(job, commands, force, timeout): job for job in jobs}
        outcomes: Dict[Job, dict] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcomes[job] = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a worker that died (OOM, lost machine) fails its job only
                log(f"{job.tag}: FAILED (ray task {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                outcomes[job] = {"status": "failed", "stages_run": [], "seconds": 0.0,
                                 "error": f"ray task failed: {type(e).__name__}"}
            log(f"ray: {len(outcomes)}/{len(jobs)} job(s) finished")
        return {job: outcomes[job] for job in jobs}
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- gsplat warm-up

def warm_up_gsplat() -> Optional[float]:
    """Builds (first time) or loads gsplat's CUDA extension by rasterising one Gaussian into a 16x16
    image. Returns the seconds it took, or None without CUDA (nothing to build; never touch gsplat's
    CUDA code then, docs/GPU.md)."""
    import torch

    if not torch.cuda.is_available():
        return None
    t0 = time.perf_counter()
    from gsplat import rasterization

    dev = torch.device("cuda")
    means = torch.tensor([[0.0, 0.0, 2.0]], device=dev)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], device=dev)
    scales = torch.full((1, 3), 0.2, device=dev)
    opacities = torch.tensor([0.9], device=dev)
    colors = torch.ones(1, 3, device=dev)
    viewmat = torch.eye(4, device=dev)[None]
    K = torch.tensor([[[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]]], device=dev)
    image, _, _ = rasterization(means, quats, scales, opacities, colors, viewmat, K, 16, 16)
    torch.cuda.synchronize()
    if not bool(image.sum() > 0):
        raise RuntimeError("gsplat warm-up rendered an empty image")
    return time.perf_counter() - t0


WARM_UP_CODE = ("from benchmarks.run_suite import warm_up_gsplat; s = warm_up_gsplat(); "
                "print('gsplat: no CUDA, nothing to build' if s is None else f'gsplat: ready in {s:.1f} s')")


def warm_up_subprocess(gpu: Optional[str] = None, log: Callable[[str], None] = print,
                       timeout: float = 1800.0) -> bool:
    """``warm_up_gsplat`` in a child process on ``gpu`` (so this process never holds a CUDA context).
    A failure is logged, not raised: the jobs then report their own errors."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    try:
        proc = subprocess.run([sys.executable, "-c", WARM_UP_CODE], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"gsplat warm-up timed out after {timeout:.0f} s; the jobs build it themselves")
        return False
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if proc.returncode != 0:
        log(f"gsplat warm-up failed (exit {proc.returncode}): {lines[-1] if lines else ''}")
        return False
    log(lines[-1] if lines else "gsplat: warm-up done")
    return True


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
        "scene": job.name, "scene_path": job.scene, "method": job.method, "seed": job.seed,
        "model_path": job.model_path,
        "status": "ok", "error": None, "result_key": key,
        "PQ_scene": metrics.get("PQ_scene"), "SQ": metrics.get("SQ"), "RQ": metrics.get("RQ"),
        "mIoU": metrics.get("mIoU"), "PSNR": metrics.get("PSNR"), "SSIM": metrics.get("SSIM"),
        "LPIPS": metrics.get("LPIPS"),
        "train_seconds": stats.get("train_seconds"), "cluster_seconds": stats.get("cluster_seconds"),
        # contrastive_lift: the other min_cluster_size candidates and their scoring; the size kept
        "cluster_tune_seconds": stats.get("cluster_tune_seconds"), "min_cluster_size": stats.get("min_cluster_size"),
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
           "cluster_tune_seconds",
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
            scene = r["scene"] + (f" (seed {r['seed']})" if r.get("seed") is not None else "")
            lines.append(f"| {scene} | {method} | {_num(r.get('PQ_scene'), '.2f')} | "
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
        + (f"; extra train args: `{' '.join(cfg['extra_train_args'])}`" if cfg.get("extra_train_args") else "")
        + (f"; {cfg['jobs_per_gpu']} jobs side by side per GPU (times are not those of a run alone)"
           if (cfg.get("jobs_per_gpu") or 1) > 1 else "") + ".",
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
    p.add_argument("--jobs_per_gpu", type=int, default=1, metavar="K",
                   help="run K jobs side by side on each GPU (local: K slots per GPU id; ray: num_gpus=1/K). "
                        "Fine for accuracy, not for timing columns")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                   help="train every pair once per seed (train.py --seed) into MODEL-seedN")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: this machine's GPUs (--gpus); ray: one Ray task per job, on a local Ray "
                        "instance or the cluster at --address")
    p.add_argument("--address", default=None, help="Ray cluster address (HOST:PORT of `ray start --head`, or auto)")
    p.add_argument("--force", action="store_true", help="redo finished pairs too")
    p.add_argument("--timeout", type=float, default=None, help="seconds per stage before it counts as failed")
    p.add_argument("--table_only", action="store_true", help="rebuild results.md/json from what is on disk")
    args = p.parse_args(argv)
    args.extra = extra
    methods = (args.methods or []) + (PAPER_TABLES[args.table] if args.table else [])
    args.methods = list(dict.fromkeys(methods or ["unic"]))
    args.gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    check_engine_args(args, p.prog)
    return args


def check_engine_args(args: argparse.Namespace, prog: str = "run_suite.py") -> None:
    """One-line exit-2 errors for engine options that do not fit together."""
    def bad(msg: str) -> None:
        print(f"{prog}: error: {msg}", file=sys.stderr)
        raise SystemExit(2)

    if args.jobs_per_gpu < 1:
        bad(f"--jobs_per_gpu {args.jobs_per_gpu}: give 1 or more")
    if args.engine == "ray" and args.gpus:
        bad("--gpus is for --engine local; Ray hands out GPUs itself (limit them with ray start --num-gpus)")
    if args.address and args.engine != "ray":
        bad("--address needs --engine ray")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    scenes = args.scenes or suite_scenes(args.suite or os.path.join(REPO, DEFAULT_SUITE))
    jobs = plan_jobs(scenes, args.methods, args.out, args.seeds)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    outcomes: Dict[Job, dict] = {}
    if not args.table_only:
        print(f"{len(jobs)} job(s): {len(scenes)} scene(s) x {len(args.methods)} method(s)"
              + (f" x {len(args.seeds)} seed(s)" if args.seeds else "") + f" -> {args.out}")
        outcomes = run_jobs(jobs, functools.partial(default_commands, iterations=args.iterations, extra=args.extra),
                            args.gpus, args.force, args.timeout, jobs_per_gpu=args.jobs_per_gpu,
                            engine=args.engine, address=args.address, warm_up=warm_up_subprocess)
    config = {"scenes": list(dict.fromkeys(j.scene for j in jobs)), "methods": args.methods,
              "seeds": args.seeds, "engine": args.engine, "jobs_per_gpu": args.jobs_per_gpu,
              "iterations": args.iterations, "extra_train_args": args.extra, "gpus": args.gpus,
              "started": started, "finished": _dt.datetime.now().isoformat(timespec="seconds")}
    results = write_reports(args.out, jobs, outcomes, config)
    print(build_table(results), end="")
    print(f"wrote {os.path.join(args.out, 'results.md')} and results.json")
    return 1 if any(r["status"] != "ok" for r in results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
