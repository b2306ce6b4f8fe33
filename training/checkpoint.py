"""Training checkpoints: one named state dict with a format version (never a positional tuple).

Everything random draws from generators stored here, so a resumed run matches an uninterrupted
one (exactly, on the CPU).
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from scene.cameras import SceneError
from training.optim import optimizer_states
from utils.general_utils import atomic_torch_save

CHECKPOINT_VERSION = 2  # 2: loadable with weights_only=True (numpy RNG as a tensor), scene fingerprint
PERIODIC_PREFIX = "chkpnt_periodic"  # --checkpoint_every files: <prefix><N>.pth, the latest KEEP_PERIODIC kept
KEEP_PERIODIC = 2
LOCK_NAME = ".train.lock"


def _state(opt: Optional[torch.optim.Optimizer]):
    return opt.state_dict() if opt is not None else None


def _numpy_state() -> dict:
    """numpy's global RNG state as plain types and a tensor (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.uint32).astype(np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(s: dict) -> None:
    np.random.set_state((s["kind"], s["keys"].cpu().numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                         s["cached_gaussian"]))


def rng_state(generators: Dict[str, torch.Generator]) -> dict:
    state = {name: g.get_state() for name, g in generators.items()}
    state.update({"torch": torch.get_rng_state(), "numpy": _numpy_state(),
                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
    return state


def restore_rng(state: dict, generators: Dict[str, torch.Generator]) -> None:
    """Inverse of ``rng_state``. RNG states are CPU byte tensors whatever ``map_location`` the
    checkpoint was loaded with (a CUDA generator's state too), so each is moved back first."""
    for name, g in generators.items():
        g.set_state(state[name].cpu())
    torch.set_rng_state(state["torch"].cpu())
    _set_numpy_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def checkpoint_state(*, step: int, model, optimizers: Dict[str, torch.optim.Optimizer],
                     head_optimizer=None, decoder_optimizer=None, strategy_state: dict, objective=None,
                     generators: Dict[str, torch.Generator], stack, train_seconds: float,
                     scene: Optional[dict] = None) -> dict:
    """``scene``: what the checkpoint must match to be resumed (see ``check_scene``)."""
    return {
        "format_version": CHECKPOINT_VERSION, "iteration": step, "scene": scene or {},
        "model": model.state_dict(),
        "optimizers": optimizer_states(optimizers, getattr(model, "packing", None)),  # by feature name, any layout
        "head_optimizer": _state(head_optimizer), "decoder_optimizer": _state(decoder_optimizer),
        "strategy_state": strategy_state,
        "objective": objective.state_dict() if objective is not None else None,
        "rng": rng_state(generators),
        "stack": list(stack), "train_seconds": train_seconds,
    }


def save_checkpoint(path: str, state: dict) -> str:
    atomic_torch_save(state, path)
    return path


def _checkpoint_files(folder: str, pattern: str) -> List[Tuple[int, str]]:
    """(iteration, path) of the files in ``folder`` whose name fully matches ``pattern`` (one group:
    the iteration), oldest first."""
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        m = re.fullmatch(pattern, name)
        if m:
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def periodic_checkpoints(folder: str) -> List[Tuple[int, str]]:
    """(iteration, path) of the --checkpoint_every files in ``folder``, oldest first."""
    return _checkpoint_files(folder, re.escape(PERIODIC_PREFIX) + r"(\d+)\.pth")


def save_periodic_checkpoint(folder: str, step: int, state: dict, keep: int = KEEP_PERIODIC) -> str:
    """Writes ``<prefix><step>.pth``, then deletes all but the newest ``keep`` periodic checkpoints
    (the new one is complete on disk before an older one goes)."""
    path = save_checkpoint(os.path.join(folder, f"{PERIODIC_PREFIX}{step}.pth"), state)
    for _, old in periodic_checkpoints(folder)[:-keep]:
        os.remove(old)
    return path


def load_checkpoint(path: str, device) -> dict:
    """Reads and checks a checkpoint written by ``checkpoint_state`` (with ``weights_only=True``:
    tensors and plain containers only); one-line errors."""
    if not os.path.isfile(path):
        raise SceneError(f"{path}: no such checkpoint; list the chkpnt<N>.pth files in the model folder")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise SceneError(f"{path}: holds objects other than tensors and plain containers (not a checkpoint "
                             "this train.py wrote, or one from an older version); retrain or resume from "
                             "another checkpoint") from None
        raise SceneError(f"{path}: checkpoint is truncated or corrupt ({type(e).__name__}); "
                         "resume from an earlier checkpoint") from None
    except Exception as e:  # torch raises many types on a short or damaged file
        raise SceneError(f"{path}: checkpoint is truncated or corrupt ({type(e).__name__}); "
                         "resume from an earlier checkpoint") from None
    if not isinstance(state, dict) or state.get("format_version") != CHECKPOINT_VERSION:
        got = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise SceneError(f"{path}: checkpoint format {got!r} is not {CHECKPOINT_VERSION}; "
                         "it was written by another version of train.py")
    return state


def check_scene(path: str, saved: dict, current: dict) -> None:
    """One-line error when the checkpoint was trained on another scene or with other feature sizes."""
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if a != b:
            raise SceneError(f"{path}: checkpoint has {key} = {a}, this run has {b}; it was trained on another "
                             "scene or with other flags: resume with the same -s and segmentation flags, "
                             "or start without --start_checkpoint")


# ----- one train.py per model folder ------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(folder: str) -> str:
    """Creates ``<folder>/.train.lock`` holding our pid (atomically, O_EXCL). A lock whose pid is alive
    -> SceneError (the folder is in use); a lock of a dead pid (or unreadable) is taken over."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid != os.getpid() and _pid_alive(pid):
                raise SceneError(f"{folder}: model folder is in use by another train.py (pid {pid}, lock "
                                 f"{path}); wait for it, pass another -m, or delete the lock if that "
                                 "process is gone") from None
            try:  # stale: its process is dead
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        return path
    raise SceneError(f"{path}: could not take the model folder's lock; delete it if no train.py is running")


def release_lock(path: Optional[str]) -> None:
    if not path:
        return
    try:
        with open(path) as f:
            mine = f.read().strip() == str(os.getpid())
    except OSError:
        return
    if mine:
        os.remove(path)


def checkpoints_in(folder: str) -> List[Tuple[int, str]]:
    """(iteration, path) of every chkpnt<N>.pth and periodic checkpoint in ``folder``, newest first."""
    return _checkpoint_files(folder, r"chkpnt(?:_periodic)?(\d+)\.pth")[::-1]


def load_latest_checkpoint(folder: str, device, warn=print) -> Tuple[str, dict]:
    """The newest checkpoint in ``folder`` that loads; a truncated or corrupt newer one (a write killed
    before the atomic rename cannot leave one, but a copy or a full disk can) is skipped with a warning."""
    errors = []
    for _, path in checkpoints_in(folder):
        try:
            return path, load_checkpoint(path, device)
        except SceneError as e:
            errors.append(str(e))
            warn(f"warning: skipping {e}")
    raise SceneError(f"{folder}: no loadable checkpoint (chkpnt<N>.pth) to resume from"
                     + (f" ({len(errors)} unreadable)" if errors else "") + "; start without --start_checkpoint")
