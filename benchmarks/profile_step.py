"""Where one training step spends its time: wall clock, host (Python) time per stage, GPU kernel time.

    python benchmarks/profile_step.py -s SCENE --out output/profile_step [--variants plain unic]
        [--warmup 3100] [--steps 300] [--densify_until 3000] [-- extra train.py flags]

For each variant the trainer is built in this process and stepped ``--warmup`` iterations (past
the end of densification, so every loss is on and the Gaussian count is fixed), then:

* **wall**: ``--steps`` iterations between two synchronisations, ms per iteration;
* **loop**: the same as ``train.py --profile --quiet`` runs them (``bench_train.py``'s runs): every phase between
  two CUDA events, and every 100th step its statistics and non-finite flags read back (the loop's one sync). What
  it adds to **wall** is the cost of measuring a run, which a host-bound step pays in full (RESULTS.md 30c);
* **host**: the same iterations again with every stage timed by ``time.perf_counter`` and no
  synchronisation, i.e. the time Python needs to issue the work (where it exceeds the GPU's
  kernel time, the loop is bound by the host);
* **GPU**: torch.profiler over 20 iterations: kernel time and kernel launches per iteration, and the
  operators with the most host time;
* **host waits**: 10 iterations under ``torch.cuda.set_sync_debug_mode("warn")``: each operation that
  makes the host wait for the GPU, with the project / gsplat lines that issued it, and the caching
  allocator's device allocations and frees per iteration.

Writes ``OUT/profile.md`` and ``OUT/profile.json``; the Markdown is printed too. Variants are
``plain`` (``--seg_dir none``) and ``unic`` (every default), optionally ``NAME:FLAGS``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

BUILTIN = {"plain": ["--seg_dir", "none"], "unic": []}


def build_trainer(scene: str, model_dir: str, flags: list):
    import train
    from scene.dataset_readers import read_scene_for

    args = train.prepare_args(["-s", scene, "-m", model_dir, "--quiet", *flags])
    info = read_scene_for(args, allow_missing_masks=False)
    train.resolve_semantic_head(args, info)
    return train.Trainer(args, info)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _syncs_and_allocations(t, step: int, out: dict, n: int = 10) -> int:
    """Counts, over ``n`` iterations, the operations CUDA's sync debug mode flags (where the host
    waits for the GPU), grouped by the innermost project / gsplat frame that issued them, and the
    caching allocator's device allocations and frees (a ``cudaFree`` waits for the GPU too)."""
    import traceback
    import warnings
    from collections import Counter

    found: Counter = Counter()

    def hook(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1]
                  if (REPO in f.filename or "gsplat" in f.filename) and "profile_step" not in f.filename]
        where = " <- ".join(f"{os.path.relpath(f.filename, REPO) if REPO in f.filename else 'gsplat/' + os.path.basename(f.filename)}:{f.lineno}"
                            for f in reversed(frames[-3:]))
        found[f"{str(message).splitlines()[0][:60]} at {where or filename}"] += 1

    stats0 = torch.cuda.memory_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = hook
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(n):
                step += 1
                t.train_step(step, with_stats=False)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    stats1 = torch.cuda.memory_stats()
    out["syncs_per_it"] = {k: v / n for k, v in found.most_common()}
    out["allocator_per_it"] = {k: (stats1.get(k, 0) - stats0.get(k, 0)) / n
                               for k in ("num_device_alloc", "num_device_free", "num_alloc_retries")}
    return step


def _train_py_loop(t, step: int, steps: int, log_every: int = 100) -> tuple:
    """``steps`` iterations as ``train.py --profile --quiet`` runs them (its loop without the bar, the log file and
    checkpoints): CUDA events around each phase, and every ``log_every``-th step (``--log_interval``) the statistics
    and the parameters' non-finite flags read back in one ``tolist()``, then the events. -> (last step, ms/it)."""
    from training.numerics import nonfinite_flags
    from training.profiling import PhaseTimer

    dev = t.device
    saved, t.timer = t.timer, PhaseTimer(True, dev)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step += 1
        want = step % log_every == 0
        stats = t.train_step(step, with_stats=want)
        if want:
            torch.stack([*(v.float() for v in stats.values()), *nonfinite_flags(t.watched_params())]).tolist()
            t.timer.collect()
    sync(dev)
    loop_ms = (time.perf_counter() - t0) * 1e3 / steps
    t.timer = saved
    return step, loop_ms


def profile_variant(scene: str, flags: list, warmup: int, steps: int, trace: str = "", stacks: bool = False,
                    log_every: int = 100) -> dict:
    from training.profiling import PhaseTimer

    with tempfile.TemporaryDirectory() as tmp:
        t = build_trainer(scene, tmp, flags)
        dev = t.device
        t0 = time.perf_counter()
        for step in range(1, warmup + 1):
            t.train_step(step, with_stats=False)
        sync(dev)
        warm_s = time.perf_counter() - t0
        step = warmup

        # wall clock; and how many of the iterations ran beside a neighbour-graph rebuild in the background
        # thread (it takes all cores but one, so the host may issue slower then: RESULTS.md 22a)
        def rebuilding() -> int:
            return int(getattr(t.objective, "pending", None) is not None)

        sync(dev)
        busy_wall = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            step += 1
            t.train_step(step, with_stats=False)
            busy_wall += rebuilding()
        sync(dev)
        wall_ms = (time.perf_counter() - t0) * 1e3 / steps

        # the loop as train.py --profile --quiet runs it: phase events, a read-back every log_every steps
        step, loop_ms = _train_py_loop(t, step, steps, log_every)

        # host time per stage: perf_counter phases, no synchronisation
        t.timer = PhaseTimer(True, torch.device("cpu"))
        host_total, busy_host = 0.0, 0
        for _ in range(steps):
            step += 1
            h0 = time.perf_counter()
            t.train_step(step, with_stats=False)
            host_total += time.perf_counter() - h0
            busy_host += rebuilding()
        sync(dev)
        host = {k: v["mean_ms"] * v["count"] / steps for k, v in t.timer.summary().items()}
        t.timer = PhaseTimer(False, dev)

        # GPU kernels and host operators
        gpu = {}
        if dev.type == "cuda":
            step = _syncs_and_allocations(t, step, gpu)
            from torch.profiler import ProfilerActivity, profile

            n_prof = 20
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(n_prof):
                    step += 1
                    t.train_step(step, with_stats=False)
                sync(dev)
            kernel_us, launches = 0.0, 0
            for e in prof.events():
                if e.device_type == torch.autograd.DeviceType.CUDA:
                    kernel_us += e.device_time
                    launches += 1
            averages = prof.key_averages()
            gpu.update({"kernel_ms": kernel_us / 1e3 / n_prof, "kernels": launches / n_prof,
                   "top_host": averages.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60),
                   "top_device": averages.table(sort_by="self_device_time_total", row_limit=20,
                                                max_name_column_width=60)})
            if stacks:  # which Python lines issue the GPU time: operators grouped by their call stack
                try:  # Python stacks are recorded only in the verbose mode (torch 2.x); ops the autograd engine
                    # runs in the backward have none, but their names say which backward they are
                    from torch._C._profiler import _ExperimentalConfig

                    verbose = {"experimental_config": _ExperimentalConfig(verbose=True)}
                except ImportError:
                    verbose = {}
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True,
                             **verbose) as prof:
                    for _ in range(10):
                        step += 1
                        t.train_step(step, with_stats=False)
                    sync(dev)
                gpu["by_stack"] = prof.key_averages(group_by_stack_n=6).table(
                    sort_by="self_device_time_total", row_limit=40, max_name_column_width=40, max_src_column_width=90)
            if trace:  # a few iterations as a Chrome trace, to read the host/GPU timeline
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=False) as prof:
                    for _ in range(5):
                        step += 1
                        t.train_step(step, with_stats=False)
                    sync(dev)
                prof.export_chrome_trace(trace)
        return {"flags": flags, "gaussians": t.model.num_gaussians, "warmup_s": warm_s, "wall_ms": wall_ms,
                "loop_ms": loop_ms,
                "host_ms": host_total * 1e3 / steps, "host_phases_ms": host,
                "rebuild_share": {"wall": busy_wall / steps, "host": busy_host / steps}, **gpu}


def markdown(results: dict) -> str:
    lines = ["| variant | Gaussians | wall ms/it | it/s | train.py loop ms/it | host ms/it | GPU kernel ms/it | "
             "kernels/it | graph rebuild in flight (wall / host loops) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        share = r.get("rebuild_share", {})
        lines.append(f"| {name} | {r['gaussians']} | {r['wall_ms']:.2f} | {1e3 / r['wall_ms']:.1f} | "
                     f"{r.get('loop_ms', float('nan')):.2f} | {r['host_ms']:.2f} | "
                     f"{r.get('kernel_ms', float('nan')):.2f} | {r.get('kernels', float('nan')):.0f} | "
                     f"{100 * share.get('wall', 0.0):.0f} % / {100 * share.get('host', 0.0):.0f} % |")
    phases = []
    for r in results.values():
        phases += [p for p in r["host_phases_ms"] if p not in phases]
    lines += ["", "Host time per stage (ms per iteration, no synchronisation):", "",
              "| stage | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for p in phases:
        lines.append(f"| {p} | " + " | ".join(f"{r['host_phases_ms'].get(p, 0.0):.3f}" for r in results.values()) + " |")
    for name, r in results.items():
        if "syncs_per_it" in r:
            lines += ["", f"### {name}: host waits per iteration (CUDA sync debug mode) and allocator calls", ""]
            lines += [f"- {v:g} x {k}" for k, v in r["syncs_per_it"].items()] or ["- none flagged"]
            lines += ["- allocator: " + ", ".join(f"{k} {v:g}" for k, v in r["allocator_per_it"].items())]
    for name, r in results.items():
        if "top_host" in r:
            lines += ["", f"### {name}: operators by host time (20 iterations)", "```", r["top_host"], "```",
                      f"### {name}: operators by GPU time", "```", r["top_device"], "```"]
    for name, r in results.items():
        if "by_stack" in r:
            lines += ["", f"### {name}: operators by GPU time, with the lines that issued them (10 iterations)", "```",
                      r["by_stack"], "```"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-s", "--scene", required=True)
    p.add_argument("--out", default="output/profile_step")
    p.add_argument("--variants", nargs="+", default=["plain", "unic"])
    p.add_argument("--warmup", type=int, default=3100)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--log_every", type=int, default=100,
                   help="the train.py loop's read-back interval (train.py --log_interval's default)")
    p.add_argument("--densify_until", type=int, default=3000)
    p.add_argument("--trace", action="store_true", help="also write OUT/trace_VARIANT.json (5 iterations)")
    p.add_argument("--stacks", action="store_true",
                   help="also list the operators by GPU time with the Python lines that issued them (10 iterations)")
    p.add_argument("extra", nargs="*", help="train.py flags for every variant (after --)")
    a = p.parse_args(argv)
    results = {}
    base = ["--iterations", str(a.warmup + 3 * a.steps + 100), "--densify_until_iter", str(a.densify_until),
            "--position_lr_max_steps", str(a.warmup + 3 * a.steps + 100), *a.extra]
    for spec in a.variants:
        name, _, extra = spec.partition(":")
        flags = BUILTIN[name.strip()] + base + shlex.split(extra)
        print(f"[profile_step] {spec}", flush=True)
        trace = os.path.join(a.out, f"trace_{name.strip()}.json") if a.trace else ""
        os.makedirs(a.out, exist_ok=True)
        key, n = spec, 1
        while key in results:  # a variant named twice (alternating repeats: the noise): "spec (2)"
            n += 1
            key = f"{spec} ({n})"
        results[key] = profile_variant(a.scene, flags, a.warmup, a.steps, trace, stacks=a.stacks,
                                        log_every=a.log_every)
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "profile.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(a.out, "profile.md"), "w") as f:
            f.write(markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
