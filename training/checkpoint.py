"""Training checkpoints: one named state dict with a format version (never a positional tuple).

Everything random draws from generators stored here, so a resumed run matches an uninterrupted
one (exactly, on the CPU).
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np
import torch

from scene.cameras import SceneError
from utils.general_utils import atomic_torch_save

CHECKPOINT_VERSION = 1


def _state(opt: Optional[torch.optim.Optimizer]):
    return opt.state_dict() if opt is not None else None


def rng_state(generators: Dict[str, torch.Generator]) -> dict:
    state = {name: g.get_state() for name, g in generators.items()}
    state.update({"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
    return state


def restore_rng(state: dict, generators: Dict[str, torch.Generator]) -> None:
    for name, g in generators.items():
        g.set_state(state[name])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_state(*, step: int, model, optimizers: Dict[str, torch.optim.Optimizer],
                     head_optimizer=None, decoder_optimizer=None, strategy_state: dict, objective=None,
                     generators: Dict[str, torch.Generator], stack, train_seconds: float) -> dict:
    return {
        "format_version": CHECKPOINT_VERSION, "iteration": step,
        "model": model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "head_optimizer": _state(head_optimizer), "decoder_optimizer": _state(decoder_optimizer),
        "strategy_state": strategy_state,
        "objective": objective.state_dict() if objective is not None else None,
        "rng": rng_state(generators),
        "stack": list(stack), "train_seconds": train_seconds,
    }


def save_checkpoint(path: str, state: dict) -> str:
    atomic_torch_save(state, path)
    return path


def load_checkpoint(path: str, device) -> dict:
    """Reads and checks a checkpoint written by ``checkpoint_state``; one-line errors."""
    if not os.path.isfile(path):
        raise SceneError(f"{path}: no such checkpoint; list the chkpnt<N>.pth files in the model folder")
    state = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(state, dict) or state.get("format_version") != CHECKPOINT_VERSION:
        got = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise SceneError(f"{path}: checkpoint format {got!r} is not {CHECKPOINT_VERSION}; "
                         "it was written by another version of train.py")
    return state
