"""Hostile inputs (issue 14, Must-haves 1 and 5): every bad file ends in one line naming the file,
what is wrong and what to do; CLIs exit 2 without a traceback."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from scene.cameras import SceneError
from scene.dataset_readers import read_scene
from scene.readers.colmap import read_cameras_txt, read_images_txt
from scene.readers.common import camera_extent
from tests.fixtures_scenes import _write_cameras, _write_images, _write_points, write_colmap


def one_line(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, msg
    return msg


# ============================================================================= COLMAP numbers

def _colmap_txt(root, n=4):
    info = write_colmap(root, n=n, fmt="txt")
    sparse = info["sparse"]
    images = sorted(read_images_txt(os.path.join(sparse, "images.txt")), key=lambda m: m.name)
    return sparse, [[im.id, im.qvec.copy(), im.tvec.copy(), im.camera_id, im.name] for im in images]


@pytest.mark.parametrize("field,value,words", [
    ("q", [np.nan, 0, 0, 1], ("img_001", "quaternion", "NaN or inf", "re-run COLMAP")),
    ("q", [np.inf, 0, 0, 1], ("img_001", "quaternion", "NaN or inf")),
    ("q", [0, 0, 0, 0], ("img_001", "quaternion is zero", "re-run COLMAP")),
    ("t", [0, np.nan, 1], ("img_001", "translation", "NaN or inf")),
    ("t", [0, -np.inf, 1], ("img_001", "translation", "NaN or inf")),
])
@pytest.mark.parametrize("fmt", ["txt", "bin"])
def test_colmap_bad_pose_is_one_line(tmp_path, field, value, words, fmt):
    sparse, images = _colmap_txt(tmp_path)
    images[1][1 if field == "q" else 2] = np.array(value, dtype=np.float64)
    os.remove(os.path.join(sparse, "images.txt"))
    _write_images(os.path.join(sparse, f"images.{fmt}"), images, fmt)
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    one_line(e, f"images.{fmt}", *words)


@pytest.mark.parametrize("params,words", [
    ([np.nan, 6.5, 4.1, 2.9], ("intrinsics", "NaN or inf")),
    ([7.0, np.inf, 4.1, 2.9], ("intrinsics", "NaN or inf")),
    ([7.0, 6.5, np.nan, 2.9], ("intrinsics", "NaN or inf")),
    ([0.0, 6.5, 4.1, 2.9], ("focal length", "positive")),
])
def test_colmap_bad_intrinsics_is_one_line(tmp_path, params, words):
    sparse, _ = _colmap_txt(tmp_path)
    cam = read_cameras_txt(os.path.join(sparse, "cameras.txt"))[1]
    _write_cameras(os.path.join(sparse, "cameras.txt"), {1: ("PINHOLE", cam.width, cam.height, params)}, "txt")
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    one_line(e, "cameras.txt", "camera 1", *words)


@pytest.mark.parametrize("fmt", ["txt", "bin"])
def test_colmap_nan_points3d_is_one_line(tmp_path, fmt):
    info = write_colmap(tmp_path, n=4, fmt=fmt)
    xyz = info["xyz"].copy()
    xyz[3, 1] = np.nan
    _write_points(os.path.join(info["sparse"], f"points3D.{fmt}"), xyz, info["rgb"], fmt)
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    one_line(e, f"points3D.{fmt}", "1 of 20 points", "NaN or inf", "point 3", "delete the file")


def test_colmap_single_view_is_refused(tmp_path):
    sparse, images = _colmap_txt(tmp_path, n=1)
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    one_line(e, str(tmp_path), "1 view(s)", "at least 2")


def test_nan_extent_is_an_error_not_one():
    assert camera_extent(np.zeros((1, 3))) == 1.0  # one camera: the documented fallback
    assert camera_extent(np.array([[1.0, 0, 0], [-1.0, 0, 0]])) == pytest.approx(1.1)
    with pytest.raises(SceneError) as e:
        camera_extent(np.array([[0.0, 0, 0], [np.nan, 0, 0], [1.0, 0, 0]]), "/x/scene")
    one_line(e, "/x/scene", "camera centre 1", "NaN or inf", "extent")
