"""Shared fixtures: tiny synthetic scenes written once per test session by the project's generator."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_scene(out: str, *, objects=5, views=12, size="64x48", noise="realistic", seed=0, extra=()):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "make_scene.py"), "--out", out, "--objects", str(objects),
           "--views", str(views), "--size", size, "--noise", noise, "--seed", str(seed), *extra]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return out


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    """A 16-view 64x48 PanopLi scene with 5 objects and realistic mask noise."""
    return make_scene(str(tmp_path_factory.mktemp("scenes") / "tiny"), views=16)
