"""Checkpoint files: atomic fsynced writes, weights_only loading with one-line errors, the scene check,
periodic checkpoints and the model-folder lock."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from scene.cameras import SceneError
from training import checkpoint as ck
from utils import general_utils as gu


def test_atomic_save_fsyncs_file_and_folder_and_leaves_no_tmp(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None)
        return real_fsync(fd)

    monkeypatch.setattr(gu.os, "fsync", spy)
    path = str(tmp_path / "a.pth")
    gu.atomic_torch_save({"x": torch.arange(3)}, path)
    gu.atomic_write_text(str(tmp_path / "b.txt"), "hello")
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    assert open(tmp_path / "b.txt").read() == "hello"
    if synced[0] is not None:  # each write: the file, then its folder
        assert synced == [False, True, False, True]
    assert sorted(os.listdir(tmp_path)) == ["a.pth", "b.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "a.pth")
    gu.atomic_torch_save({"x": torch.ones(2)}, path)
    with pytest.raises(Exception):
        gu.atomic_torch_save({"bad": lambda: 0}, path)  # a lambda cannot be pickled
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert os.listdir(tmp_path) == ["a.pth"]


def test_stale_tmp_files_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    for p in (tmp_path / ".tmp-abc.pth", tmp_path / "sub" / ".tmp-x.tmp"):
        p.write_bytes(b"half")
    (tmp_path / "keep.pth").write_bytes(b"x")
    removed = gu.remove_stale_tmp(str(tmp_path))
    assert len(removed) == 2
    assert sorted(os.listdir(tmp_path)) == ["keep.pth", "sub"] and os.listdir(tmp_path / "sub") == []


def _state(step=5, scene=None):
    g = torch.Generator().manual_seed(1)
    model = type("M", (), {"state_dict": lambda self: {"params": {"means": torch.zeros(4, 3)}}})()
    return ck.checkpoint_state(step=step, model=model, optimizers={}, strategy_state={"count": torch.zeros(4)},
                               generators={"gen": g}, stack=[3, 1], train_seconds=1.5,
                               scene=scene or {"train_views": 16, "embedding_dim": 8})


def test_checkpoint_round_trip_with_weights_only_restores_every_rng(tmp_path):
    np.random.seed(7)
    torch.manual_seed(7)
    g = torch.Generator().manual_seed(3)
    state = ck.checkpoint_state(step=9, model=type("M", (), {"state_dict": lambda s: {}})(), optimizers={},
                                strategy_state={}, generators={"gen": g}, stack=[], train_seconds=0.0)
    expect = (np.random.rand(3), torch.rand(3), torch.rand(3, generator=g))
    path = ck.save_checkpoint(str(tmp_path / "chkpnt9.pth"), state)
    loaded = ck.load_checkpoint(path, "cpu")  # weights_only=True inside
    np.random.seed(0)
    torch.manual_seed(0)
    g2 = torch.Generator()
    ck.restore_rng(loaded["rng"], {"gen": g2})
    got = (np.random.rand(3), torch.rand(3), torch.rand(3, generator=g2))
    assert np.array_equal(got[0], expect[0]) and torch.equal(got[1], expect[1]) and torch.equal(got[2], expect[2])
    assert loaded["iteration"] == 9


def _one_line_error(path, match):
    with pytest.raises(SceneError) as e:
        ck.load_checkpoint(path, "cpu")
    msg = str(e.value)
    assert "\n" not in msg and path in msg and match in msg, msg


def test_truncated_corrupt_foreign_and_old_checkpoints_fail_in_one_line(tmp_path):
    good = ck.save_checkpoint(str(tmp_path / "good.pth"), _state())
    data = open(good, "rb").read()
    trunc = str(tmp_path / "trunc.pth")
    open(trunc, "wb").write(data[: len(data) // 2])
    _one_line_error(trunc, "truncated or corrupt")
    junk = str(tmp_path / "junk.pth")
    open(junk, "wb").write(b"not a checkpoint at all")
    _one_line_error(junk, "truncated or corrupt")
    foreign = str(tmp_path / "foreign.pth")
    torch.save({"format_version": ck.CHECKPOINT_VERSION, "obj": np.random.RandomState(0)}, foreign)
    _one_line_error(foreign, "other than tensors")
    old = str(tmp_path / "old.pth")
    torch.save({"format_version": 1}, old)
    _one_line_error(old, "format 1")
    _one_line_error(str(tmp_path / "missing.pth"), "no such checkpoint")


def test_scene_check_names_the_mismatch():
    ck.check_scene("c.pth", {"train_views": 16, "embedding_dim": 8}, {"train_views": 16, "embedding_dim": 8})
    with pytest.raises(SceneError, match=r"c\.pth: checkpoint has embedding_dim = 8, this run has 4"):
        ck.check_scene("c.pth", {"train_views": 16, "embedding_dim": 8}, {"train_views": 16, "embedding_dim": 4})
    with pytest.raises(SceneError, match="train_views = 16, this run has 12"):
        ck.check_scene("c.pth", {"train_views": 16}, {"train_views": 12})


def test_periodic_checkpoints_keep_the_latest_two(tmp_path):
    for step in (10, 20, 30, 40):
        ck.save_periodic_checkpoint(str(tmp_path), step, _state(step))
    assert [s for s, _ in ck.periodic_checkpoints(str(tmp_path))] == [30, 40]
    ck.save_checkpoint(str(tmp_path / "chkpnt35.pth"), _state(35))
    open(tmp_path / "chkpnt50.pth", "wb").write(b"truncated")  # newest, but unreadable: skipped
    warnings = []
    path, state = ck.load_latest_checkpoint(str(tmp_path), "cpu", warn=warnings.append)
    assert path.endswith("chkpnt_periodic40.pth") and state["iteration"] == 40
    assert len(warnings) == 1 and "chkpnt50.pth" in warnings[0]


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    folder = str(tmp_path / "m")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.makedirs(folder)
        open(os.path.join(folder, ck.LOCK_NAME), "w").write(f"{sleeper.pid}\n")
        with pytest.raises(SceneError, match=f"in use by another train.py \\(pid {sleeper.pid}"):
            ck.acquire_lock(folder)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = ck.acquire_lock(folder)  # its owner is dead now: taken over
    assert open(lock).read().strip() == str(os.getpid())
    ck.release_lock(lock)
    assert not os.path.exists(lock)
