"""Densification schedules that fit the run, and the opacity-reset trap.

3DGS densifies until 15k of 30k iterations and resets every opacity every 3000 steps. A short run
(``--iterations 3000``) with those defaults ends exactly on a reset and saves a nearly black model.
When ``--iterations`` shortens the run and no schedule flag was given on the command line, the
schedule is scaled to the run (``scale_schedule``); a save that would still land within a few
hundred steps after a reset gets a one-line warning (``saves_after_reset``).
"""
from __future__ import annotations

import argparse
import copy
from typing import Dict, List, Optional, Sequence, Set, Tuple

DEFAULT_ITERATIONS = 30_000
# The flags of the densification schedule; scaled together or not at all.
SCHEDULE_FLAGS = ("densify_until_iter", "densify_from_iter", "opacity_reset_interval",
                  "densification_interval", "position_lr_max_steps")
RESET_RECOVERY = 300  # steps opacities need to recover after a reset before a save is useful


def explicit_flags(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Set[str]:
    """Destinations given on the command line (abbreviations included), by parsing again with every
    default suppressed: what is left in the namespace was typed by the user."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    ns, _ = quiet.parse_known_args(argv)
    return set(vars(ns))


def scaled_schedule(iterations: int) -> Dict[str, int]:
    """The 3DGS schedule shrunk to ``iterations``: densify over the first half, four opacity resets
    (every tenth of the run, rounded up so all four come before densification stops, so the last one is half a run before
    the end), the position lr decays over the whole run."""
    n = max(1, int(iterations))
    until = max(1, n // 2)
    return {"densify_until_iter": until,
            "densify_from_iter": max(1, min(500, n * 500 // DEFAULT_ITERATIONS)),
            "opacity_reset_interval": -(-until // 5),  # ceil: four resets, the last a fifth of until before it
            "densification_interval": max(10, min(100, n // 100)),
            "position_lr_max_steps": n}


def reset_steps(opacity_reset_interval: int, densify_until_iter: int) -> List[int]:
    """Steps at which opacities are reset (as training/densify.py fires them: 0 < s < until)."""
    if opacity_reset_interval <= 0:
        return []
    return list(range(opacity_reset_interval, densify_until_iter, opacity_reset_interval))


def saves_after_reset(args: argparse.Namespace) -> List[Tuple[int, int]]:
    """(save step, reset step) pairs where a model is saved fewer than ``recovery`` steps after an
    opacity reset (``recovery`` = RESET_RECOVERY, or the reset interval when a short run's schedule
    resets more often than that)."""
    recovery = min(RESET_RECOVERY, max(1, args.opacity_reset_interval))
    resets = reset_steps(args.opacity_reset_interval, args.densify_until_iter)
    bad = []
    for s in sorted(args.save_iterations):
        if not 0 < s <= args.iterations:
            continue
        before = [r for r in resets if r <= s]
        if before and s - before[-1] < recovery:
            bad.append((s, before[-1]))
    return bad


def fit_schedule(args: argparse.Namespace, given: Set[str]) -> Optional[str]:
    """Scales the schedule in ``args`` to a short run when none of SCHEDULE_FLAGS was given.
    Returns the one line to print, or None when nothing changed."""
    if args.iterations >= DEFAULT_ITERATIONS or given & set(SCHEDULE_FLAGS):
        return None
    new = scaled_schedule(args.iterations)
    if all(getattr(args, k) == v for k, v in new.items()):
        return None
    for k, v in new.items():
        setattr(args, k, v)
    return (f"--iterations {args.iterations}: schedule scaled to the run (densify {new['densify_from_iter']}.."
            f"{new['densify_until_iter']} every {new['densification_interval']}, opacity reset every "
            f"{new['opacity_reset_interval']}, position lr over {new['position_lr_max_steps']}); "
            f"give any of --{' --'.join(SCHEDULE_FLAGS)} to set it yourself")


def reset_warning(args: argparse.Namespace) -> Optional[str]:
    bad = saves_after_reset(args)
    if not bad:
        return None
    s, r = bad[-1] if any(b[0] == args.iterations for b in bad) else bad[0]
    return (f"warning: the model saved at iteration {s} comes {s - r} steps after the opacity reset at {r} and "
            f"will render too dark; end densification earlier (--densify_until_iter) or change "
            f"--opacity_reset_interval / --iterations so the last reset is a few hundred steps before a save")
