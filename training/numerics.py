"""Stop on a non-finite loss or parameter, without a host-device sync in the step.

The check rides on the statistics the loop already reads back (every STATS_EVERY / --log_interval
iterations): ``nonfinite_flags`` adds one flag per parameter group to the stacked tensor, and
``check`` looks at the host values. ``--detect_anomaly`` reads back every iteration and turns on
torch's anomaly mode, which names the backward op that made the first NaN.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor

from scene.cameras import SceneError


class NonFiniteError(SceneError):
    """Training diverged; the message names the term, the iteration and what was saved."""


def nonfinite_flags(params: Dict[str, Tensor]) -> List[Tensor]:
    """One 0-d float tensor per parameter group: 1.0 when it holds a NaN or inf (device-side)."""
    return [(~torch.isfinite(p.detach())).any().float() for p in params.values()]


def bad_terms(values: Dict[str, float]) -> List[str]:
    """Named terms that are NaN or inf (an infinite PSNR only means a perfect render)."""
    return [f"{k} = {v}" for k, v in values.items() if k != "psnr" and not math.isfinite(v)]


def message(step: int, last_good: Optional[int], terms: List[str], bad_params: List[str],
            checkpoint: Optional[str]) -> str:
    since = f" (finite at iteration {last_good})" if last_good is not None else ""
    what = "; ".join(terms) if terms else "all loss terms finite"
    text = f"non-finite training state at iteration {step}{since}: {what}"
    if bad_params:
        text += f"; non-finite parameters: {', '.join(bad_params)}; no checkpoint written (the state is lost)"
    if checkpoint:
        text += f"; parameters still finite, checkpoint written to {checkpoint}"
    return text + ("; lower the learning rates or the loss weights, or rerun with --detect_anomaly "
                   "to find the operation")
