"""Training speed: plain 3DGS and UniC-Lift on the same scene, back to back, one run at a time.

    python benchmarks/bench_train.py --out output/bench_train                 # generate the default scene
    python benchmarks/bench_train.py --scene data/room_0 --iterations 30000 --seeds 0 1 \\
        --variants plain unic "unic:--seg_raster separate" "unic:--optimizer adam"

Default scene (tools/make_scene.py): 480x360, 186 views of which 140 train and 46 test (the
generator holds out every 4th), 25 objects, realistic mask noise, PanopLi format, ``--scene_seed``.
For each seed and variant, as subprocesses with their output in ``OUT/logs/<run>_<stage>.log``::

    train.py -s SCENE -m OUT/runs/<run> --eval --quiet --profile --seed S --iterations N   (--no_phases: no --profile)
             --test_iterations -1 --save_iterations N VARIANT_FLAGS [extra args after --]
    render.py -m MODEL --skip_train --quiet [--labels]     (labels for variants with masks)
    metrics.py -m MODEL --quiet

A variant is ``NAME`` or ``NAME:FLAGS``: ``plain`` (``--seg_dir none``) and ``unic`` (every
default) are built in; ``unic:--seg_raster separate`` is unic plus those flags. Writes
``OUT/bench.md`` (tables: speed, quality, overhead of each variant over plain of the same seed,
per-phase milliseconds per iteration from ``--profile``) and ``OUT/bench.json`` (every number),
rewritten after every run, and prints the Markdown. Timing is only meaningful with the GPU to
itself: runs are sequential by design. Nothing is interactive; a failing stage marks its row
FAILED (see its log) and the benchmark goes on. A finished run is reused when the command is
run again (``--force`` reruns it), so a benchmark cut short resumes where it stopped.

``--repeats K`` runs each seed's variant list K times in turn (``unic plain unic plain``: alternated, so a drift
of the machine falls on both); each run's ``x plain`` is over the plain run of its own seed and repeat, and a
summary table gives each variant's mean and range. The report names the host's CPU: a host-bound step's time
moves with it, and so does the ratio (RESULTS.md 33).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from training.log import read_log  # noqa: E402  (light: no torch in this parent process)
BUILTIN = {"plain": ["--seg_dir", "none"], "unic": []}
_SCENE_MARKERS = ("splits.json", "metadata.json", "transforms_train.json", os.path.join("sparse", "0"))


def log(msg: str) -> None:
    print(f"[bench_train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_variant(spec: str) -> tuple:
    """``NAME[:FLAGS]`` -> (label, train.py flags). The base is the built-in before any ``:``."""
    name, _, extra = spec.partition(":")
    name = name.strip()
    if name not in BUILTIN:
        raise SystemExit(f"error: variant {spec!r}: the part before ':' must be one of {', '.join(BUILTIN)}")
    return spec.strip(), BUILTIN[name] + shlex.split(extra)


def run_name(label: str, seed: int, repeat: int = 1) -> str:
    """``<label>_s<seed>``, and ``_r<k>`` for the k-th run (k > 1) of the same variant and seed."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") + f"_s{seed}" + (f"_r{repeat}" if repeat > 1 else "")


def late_ms_per_it(model: str) -> Optional[float]:
    """Milliseconds per iteration over the second half of the run, from the loop's own clock in ``train_log.jsonl``
    (past densification at the usual schedules: a steadier number than the whole run's mean)."""
    try:
        rows = [(int(r["iteration"]), float(r["seconds"])) for r in read_log(model) if "seconds" in r]
    except (OSError, ValueError):  # no log, or a line cut short by an interrupted write
        return None
    if len(rows) < 3:
        return None
    last_it, last_s = rows[-1]
    mid_it, mid_s = min(rows, key=lambda r: abs(r[0] - last_it / 2))
    return 1e3 * (last_s - mid_s) / (last_it - mid_it) if last_it > mid_it else None


def host_info() -> dict:
    """The machine beside the device name: CPU model and count, torch and gsplat versions (a host-bound step's time
    moves with the CPU: RESULTS.md 33)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count()}
    for pkg in ("torch", "gsplat"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_stage(cmd: List[str], log_path: str, timeout: Optional[float] = None) -> tuple:
    """Runs one stage with stdout+stderr in ``log_path``; -> (ok, seconds)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        f.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        try:
            r = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            ok = r.returncode == 0
        except subprocess.TimeoutExpired:
            f.write(f"\nTIMEOUT after {timeout} s\n")
            ok = False
    return ok, time.perf_counter() - t0


def ensure_scene(args) -> str:
    if args.scene:
        path = os.path.abspath(args.scene)
        if not os.path.isdir(path):
            raise SystemExit(f"error: --scene {path} does not exist")
        return path
    path = os.path.join(os.path.abspath(args.out), "scene")
    if any(os.path.exists(os.path.join(path, m)) for m in _SCENE_MARKERS):
        log(f"scene exists: {path}")
        return path
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_scene.py"), "--out", path, "--size", args.size,
           "--views", str(args.views), "--objects", str(args.objects), "--seed", str(args.scene_seed),
           "--format", args.format, "--workers", str(args.gen_workers), "--quiet"]
    log(f"generating the scene: {' '.join(cmd[1:])}")
    ok, sec = run_stage(cmd, os.path.join(os.path.abspath(args.out), "logs", "make_scene.log"))
    if not ok:
        raise SystemExit(f"error: scene generation failed; see {os.path.join(args.out, 'logs', 'make_scene.log')}")
    log(f"scene generated in {sec:.0f} s")
    return path


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def collect(model: str) -> dict:
    """Numbers a finished run left in its model folder."""
    stats = _read_json(os.path.join(model, "train_stats.json"))
    results = _read_json(os.path.join(model, "results.json"))
    keys = sorted((int(m.group(1)), k) for k in results if (m := re.fullmatch(r"ours_(\d+)", k)))
    metrics = results[keys[-1][1]] if keys else {}
    return {
        "train_seconds": stats.get("train_seconds"), "iterations": stats.get("iterations"),
        "it_per_s": stats.get("iterations_per_second"), "peak_gpu_mem_mb": stats.get("peak_gpu_mem_mb"),
        "num_gaussians": stats.get("num_gaussians"), "device": stats.get("device"),
        "optimizer": stats.get("optimizer"), "seg_raster": stats.get("seg_raster"),
        "step_kernels": stats.get("step_kernels"), "data_device": stats.get("data_device"),
        "feature_layout": stats.get("feature_layout"), "l3d_grad": stats.get("l3d_grad"),
        "optimizer_graph": stats.get("optimizer_graph"),
        "PSNR": metrics.get("PSNR"), "PQ_scene": metrics.get("PQ_scene"), "mIoU": metrics.get("mIoU"),
        "profile": stats.get("profile"), "late_ms_per_it": late_ms_per_it(model),
    }


def finished(model: str, iterations: int, no_eval: bool, phases: bool = True) -> bool:
    """A run of this length, timed the same way (with or without ``--profile``'s phase events), evaluated unless
    ``no_eval``."""
    stats = _read_json(os.path.join(model, "train_stats.json"))
    return (stats.get("iterations") == iterations and (stats.get("profile") is not None) == phases
            and (no_eval or bool(_read_json(os.path.join(model, "results.json")))))


def _n(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(report: dict) -> str:
    runs = report["runs"]
    m = report["meta"]
    lines = [f"# Training speed ({m['date']}, {m['device']}, commit {m['commit']})", "",
             f"Scene `{m['scene']}`, {m['iterations']} iterations, seeds {m['seeds']}"
             + (f", {m['repeats']} runs of each" if m.get("repeats", 1) > 1 else "") + ". "
             "it/s and time: the training loop only (no evaluation or saving); x plain: over the plain run of the "
             "same seed and repeat; ms/it, 2nd half: the loop's own clock over the second half of the iterations; "
             "PSNR and PQ^scene: test views (render.py + metrics.py)."
             + (f" Host: {_host_line(m['host'])}." if m.get("host") else ""), "",
             "| Run | Status | it/s | Train s | x plain | ms/it, 2nd half | Peak GPU MB | Gaussians | PSNR | PQ^scene "
             "| Setup |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        lines.append(f"| {r['run']} | {r['status']} | {_n(r.get('it_per_s'), '.1f')} | "
                     f"{_n(r.get('train_seconds'), '.1f')} | {_n(r.get('vs_plain'), '.2f')} | "
                     f"{_n(r.get('late_ms_per_it'), '.2f')} | {_n(r.get('peak_gpu_mem_mb'), '.0f')} | "
                     f"{_n(r.get('num_gaussians'), 'd')} | "
                     f"{_n(r.get('PSNR'), '.2f')} | {_n(r.get('PQ_scene'), '.2f')} | "
                     f"{r.get('optimizer') or '-'}, {r.get('seg_raster') or 'no seg'}, data {r.get('data_device') or '-'}"
                     f"{', step kernels' if r.get('step_kernels') else ''} |")
    lines += summary_lines(runs)
    phases: List[str] = []
    for r in runs:
        for p in (r.get("profile") or {}):
            if p not in phases:
                phases.append(p)
    if phases:
        lines += ["", "Per-phase time (ms per iteration; CUDA events on the GPU, wall clock on the CPU; "
                  "`losses`: the per-view terms' forward (one graph replay on CUDA), `loss/3d`: L_3D and its "
                  "neighbour graph (on CUDA after the backward, its kernel adding the gradient, and inside `backward`'s "
                  "time), `backward`: all terms together):", "",
                  "| Phase | " + " | ".join(r["run"] for r in runs) + " |",
                  "|---|" + "---:|" * len(runs)]
        for p in phases:
            cells = []
            for r in runs:
                s = (r.get("profile") or {}).get(p)
                it = r.get("iterations") or 0
                cells.append(_n(1e3 * s["total_s"] / it if s and it else None, ".3f"))
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _host_line(h: dict) -> str:
    return ", ".join(x for x in (f"{h.get('cpu')} ({h.get('cpu_count')} CPUs)",
                                 h.get("torch") and f"torch {h['torch']}", h.get("gsplat") and f"gsplat {h['gsplat']}")
                     if x)


def summary_lines(runs: List[dict]) -> List[str]:
    """Per variant with more than one finished run (seeds or repeats): the mean and the range of the time, the
    ratio to plain and the second half's ms/it, i.e. the noise a single run's number carries."""
    by: Dict[str, List[dict]] = {}
    for r in runs:
        if r.get("status") == "ok" and r.get("train_seconds"):
            by.setdefault(r["variant"], []).append(r)
    if not any(len(v) > 1 for v in by.values()):
        return []

    def cell(rows: List[dict], key: str, fmt: str) -> str:
        v = [r[key] for r in rows if r.get(key) is not None]
        if not v:
            return "-"
        mean = sum(v) / len(v)
        return format(mean, fmt) + (f" ({format(min(v), fmt)}-{format(max(v), fmt)})" if len(v) > 1 else "")

    out = ["", "Over the runs of each variant: mean (min-max):", "",
           "| Variant | Runs | Train s | x plain | ms/it, 2nd half |", "|---|---:|---:|---:|---:|"]
    for label, rows in by.items():
        out.append(f"| {label} | {len(rows)} | {cell(rows, 'train_seconds', '.1f')} | {cell(rows, 'vs_plain', '.2f')} "
                   f"| {cell(rows, 'late_ms_per_it', '.2f')} |")
    return out


def write_report(out: str, report: dict) -> str:
    md = markdown(report)
    for name, text in (("bench.json", json.dumps(report, indent=2)), ("bench.md", md)):
        tmp = os.path.join(out, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out, name))
    return md


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    except ImportError:
        pass
    return f"cpu ({platform.processor() or platform.machine()})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description="Plain 3DGS vs UniC-Lift training speed, back to back.")
    p.add_argument("--out", default="output/bench_train", help="output folder (runs, logs, bench.md, bench.json)")
    p.add_argument("--scene", default=None, help="an existing scene folder (default: generate OUT/scene)")
    p.add_argument("--size", default="480x360")
    p.add_argument("--views", type=int, default=186, help="generated views (every 4th is a test view: 140 train)")
    p.add_argument("--objects", type=int, default=25)
    p.add_argument("--format", default="panopli", choices=["panopli", "messy"])
    p.add_argument("--scene_seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=30_000)
    p.add_argument("--variants", nargs="+", default=["plain", "unic"],
                   help="NAME or NAME:FLAGS, NAME in plain|unic (also one comma-separated string)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--repeats", type=int, default=1,
                   help="run each seed's variant list this many times in turn (runs <variant>_s<seed>_r<k>): the "
                        "noise between runs of one machine; a variant named twice in --variants also runs twice")
    p.add_argument("--no_eval", action="store_true", help="skip render.py / metrics.py (speed only)")
    p.add_argument("--no_phases", action="store_true",
                   help="train without --profile: no per-phase table, and none of its CUDA events or their read-backs "
                        "in the timed loop (the time a user's run takes; RESULTS.md 30c)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per stage (default: none)")
    p.add_argument("--gen_workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)),
                   help="processes for the scene generator")
    p.add_argument("--force", action="store_true",
                   help="rerun finished runs (default: a run whose train_stats.json and, unless --no_eval, "
                        "results.json exist for these iterations is reused, so an interrupted benchmark resumes)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: must be at least 1")
    specs = [v for item in args.variants for v in (item.split(",") if ":" not in item else [item]) if v.strip()]
    variants = [parse_variant(v) for v in specs]

    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    scene = ensure_scene(args)
    report = {"meta": {"date": _dt.date.today().isoformat(), "device": device_name(), "commit": git_commit(),
                       "scene": scene, "iterations": args.iterations, "seeds": args.seeds,
                       "variants": [v[0] for v in variants], "extra_train_args": extra,
                       "python": sys.version.split()[0], "host": host_info(), "repeats": args.repeats},
              "runs": []}
    py = sys.executable
    for seed in args.seeds:
        count: Dict[str, int] = {}
        for label, flags in variants * args.repeats:
            count[label] = repeat = count.get(label, 0) + 1
            name = run_name(label, seed, repeat)
            model = os.path.join(out, "runs", name)
            row = {"run": name, "variant": label, "seed": seed, "repeat": repeat, "model_path": model,
                   "status": "ok"}
            train_cmd = [py, os.path.join(REPO, "train.py"), "-s", scene, "-m", model, "--eval", "--quiet",
                         *([] if args.no_phases else ["--profile"]), "--seed", str(seed),
                         "--iterations", str(args.iterations), "--test_iterations", "-1",
                         "--save_iterations", str(args.iterations), *flags, *extra]
            if not args.force and finished(model, args.iterations, args.no_eval, not args.no_phases):
                log(f"{name}: finished earlier, reusing its numbers (--force reruns it)")
                row.update(collect(model))
                report["runs"].append(row)
                _ratios(report["runs"])
                write_report(out, report)
                continue
            for stale in ("train_stats.json", "results.json"):  # never report numbers of an older run
                if os.path.exists(os.path.join(model, stale)):
                    os.remove(os.path.join(model, stale))
            log(f"{name}: training ({' '.join(flags) or 'defaults'})")
            ok, sec = run_stage(train_cmd, os.path.join(out, "logs", f"{name}_train.log"), args.timeout)
            row["train_wall_s"] = sec
            if ok and not args.no_eval:
                labels = "--seg_dir" not in flags or flags[flags.index("--seg_dir") + 1].lower() not in ("none", "")
                for stage, cmd in (("render", [py, os.path.join(REPO, "render.py"), "-m", model, "--skip_train",
                                               "--quiet"] + (["--labels"] if labels else [])),
                                   ("metrics", [py, os.path.join(REPO, "metrics.py"), "-m", model, "--quiet"])):
                    log(f"{name}: {stage}")
                    ok, _ = run_stage(cmd, os.path.join(out, "logs", f"{name}_{stage}.log"), args.timeout)
                    if not ok:
                        row["status"] = f"FAILED ({stage})"
                        break
            elif not ok:
                row["status"] = "FAILED (train)"
            row.update(collect(model))
            report["runs"].append(row)
            log(f"{name}: {row['status']}, {_n(row.get('it_per_s'), '.1f')} it/s, "
                f"{_n(row.get('train_seconds'), '.1f')} s, PSNR {_n(row.get('PSNR'), '.2f')}, "
                f"PQ {_n(row.get('PQ_scene'), '.2f')}")
            _ratios(report["runs"])
            write_report(out, report)
    md = write_report(out, report)
    print(md, flush=True)
    log(f"wrote {os.path.join(out, 'bench.md')} and bench.json")
    return 0 if all(r["status"] == "ok" for r in report["runs"]) else 1


def _ratios(runs: List[dict]) -> None:
    """``vs_plain``: train time over that of the plain run of the same seed and repeat (the seed's first plain run
    where that repeat has none)."""
    plain: Dict[tuple, float] = {(r["seed"], r.get("repeat", 1)): r["train_seconds"] for r in runs
                                 if r["variant"] == "plain" and r.get("train_seconds")}
    for r in runs:
        base = plain.get((r["seed"], r.get("repeat", 1))) or plain.get((r["seed"], 1))
        r["vs_plain"] = r["train_seconds"] / base if base and r.get("train_seconds") else None


if __name__ == "__main__":
    sys.exit(main())
