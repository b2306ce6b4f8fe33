"""Phase timing for the training step, without host-device syncs.

On CUDA each phase records a pair of CUDA events on the current stream; their elapsed times are
read back only in ``collect()``, called where the loop synchronises anyway (every bar update).
On the CPU, where every op is synchronous, a phase is timed with ``time.perf_counter``.
Disabled (the default), ``phase()`` returns one shared null context: no events, no cost.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Dict, List, Tuple

import torch

_NULL = nullcontext()


class _CudaPhase:
    __slots__ = ("timer", "name", "start")

    def __init__(self, timer: "PhaseTimer", name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.start = torch.cuda.Event(enable_timing=True)
        self.start.record()
        return self

    def __exit__(self, *exc):
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self.timer._pending.append((self.name, self.start, end))
        return False


class _CpuPhase:
    __slots__ = ("timer", "name", "start")

    def __init__(self, timer: "PhaseTimer", name: str):
        self.timer, self.name = timer, name

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timer._add(self.name, (time.perf_counter() - self.start) * 1e3)
        return False


class PhaseTimer:
    """``with timer.phase("render"): ...``; phases may nest (a loss inside "losses")."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self.cuda = enabled and device.type == "cuda"
        self._pending: List[Tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self.total_ms: Dict[str, float] = defaultdict(float)
        self.count: Dict[str, int] = defaultdict(int)
        self.order: List[str] = []

    def phase(self, name: str):
        if not self.enabled:
            return _NULL
        if name not in self.count:
            self.order.append(name)
            self.count[name] = 0
        return _CudaPhase(self, name) if self.cuda else _CpuPhase(self, name)

    def _add(self, name: str, ms: float) -> None:
        self.total_ms[name] += ms
        self.count[name] += 1

    def collect(self) -> None:
        """Reads back finished CUDA events (waits for the last one: call it where the loop syncs)."""
        if not self._pending:
            return
        self._pending[-1][2].synchronize()
        for name, start, end in self._pending:
            self._add(name, start.elapsed_time(end))
        self._pending.clear()

    def summary(self) -> Dict[str, dict]:
        """{phase: {"total_s", "mean_ms", "count"}} in first-seen order."""
        self.collect()
        return {name: {"total_s": self.total_ms[name] / 1e3, "count": self.count[name],
                       "mean_ms": self.total_ms[name] / max(1, self.count[name])}
                for name in self.order if self.count[name]}

    @staticmethod
    def markdown(summary: Dict[str, dict], iterations: int) -> str:
        lines = ["| Phase | ms / iteration | calls | total s |", "|---|---:|---:|---:|"]
        for name, s in summary.items():
            lines.append(f"| {name} | {1e3 * s['total_s'] / max(1, iterations):.3f} | {s['count']} | "
                         f"{s['total_s']:.2f} |")
        return "\n".join(lines)


TORCH_PROFILE_STEPS = 20  # iterations recorded by ``train.py --torch_profile ITER``


def start_torch_profiler(device: torch.device):
    """Starts torch.profiler (CPU, and CUDA kernels on a CUDA device) for ``--torch_profile``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=activities, record_shapes=False)
    prof.__enter__()
    return prof


def stop_torch_profiler(prof, path: str) -> None:
    """Stops the profiler and writes its operator / kernel table, heaviest device time first."""
    from utils.general_utils import atomic_write_text

    prof.__exit__(None, None, None)
    averages = prof.key_averages()
    key = "self_device_time_total" if any(getattr(e, "self_device_time_total", 0) for e in averages) \
        else "self_cpu_time_total"
    table = averages.table(sort_by=key, row_limit=60, max_name_column_width=90)
    atomic_write_text(path, f"torch.profiler over {TORCH_PROFILE_STEPS} iterations, sorted by {key}\n\n{table}\n")
    return None
