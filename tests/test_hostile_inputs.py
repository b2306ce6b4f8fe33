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


# ============================================================================= masks and images

from scene import load_view  # noqa: E402
from utils.image_io import ImageReadError, load_label, load_rgb, save_label_png  # noqa: E402


def _masked_scene(root, n=3):
    write_colmap(root, n=n, seg_dir="masks")
    return os.path.join(str(root), "masks")


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_grey_mask_saved_as_rgb_is_accepted(tmp_path, mode):
    masks = _masked_scene(tmp_path)
    ids = np.arange(48).reshape(6, 8) % 7
    chans = [ids, ids, ids] + ([np.full_like(ids, 255)] if mode == "RGBA" else [])
    Image.fromarray(np.stack(chans, axis=2).astype(np.uint8), mode).save(os.path.join(masks, "img_001.png"))
    s = read_scene(str(tmp_path), seg_dir="masks")
    fr = next(f for f in s.train if f.camera.name == "img_001")
    view = load_view(fr, 1.0)
    assert np.array_equal(view.instance.numpy(), ids)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_coded_mask_is_one_line(tmp_path, mode):
    masks = _masked_scene(tmp_path)
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, len(mode)), dtype=np.uint8)
    path = os.path.join(masks, "img_002.png")
    Image.fromarray(rgb, mode).save(path)
    with pytest.raises(ImageReadError) as e:
        load_label(path)
    one_line(e, path, "colour-coded", "single-channel")
    s = read_scene(str(tmp_path), seg_dir="masks")
    fr = next(f for f in s.train if f.camera.name == "img_002")
    with pytest.raises(SceneError) as e:  # what train.py and render.py see
        load_view(fr, 1.0)
    msg = one_line(e, path, "colour-coded", "single-channel")
    assert msg.startswith(path), msg


@pytest.mark.parametrize("shape", [(5, 8), (6, 7), (7, 8)])
def test_cropped_or_padded_mask_is_refused(tmp_path, shape):
    masks = _masked_scene(tmp_path)
    path = os.path.join(masks, "img_000.png")
    save_label_png(path, np.ones(shape, int))
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path), seg_dir="masks")
    one_line(e, path, f"{shape[1]}x{shape[0]}", "8x6", "cropped or padded", "regenerate")


def test_mask_replaced_after_reading_is_checked_when_loaded(tmp_path):
    masks = _masked_scene(tmp_path)
    s = read_scene(str(tmp_path), seg_dir="masks")
    path = os.path.join(masks, "img_000.png")
    save_label_png(path, np.ones((6, 6), int))  # another aspect ratio, written after the scene was read
    fr = next(f for f in s.train if f.camera.name == "img_000")
    with pytest.raises(SceneError) as e:
        load_view(fr, 1.0)
    one_line(e, path, "6x6", "8x6", "aspect")


def test_rgb_images_of_every_kind_become_rgb_uint8(tmp_path):
    rng = np.random.default_rng(1)
    grey16 = rng.integers(0, 65536, (6, 8)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")  # 16-bit grey PNG
    out = load_rgb(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert np.array_equal(out[..., 0], np.rint(grey16 / 257.0).astype(np.uint8))
    assert np.array_equal(out[..., 0], out[..., 2])
    grey = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g8.png")
    assert np.array_equal(load_rgb(tmp_path / "g8.png"), np.repeat(grey[..., None], 3, 2))
    rgba = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(load_rgb(tmp_path / "a.png"), rgba[..., :3])
    Image.fromarray(rng.random((6, 8)).astype(np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(ImageReadError) as e:
        load_rgb(tmp_path / "f.tiff")
    one_line(e, "f.tiff", "floating-point")


def test_colmap_scene_with_16bit_and_rgba_images_loads(tmp_path):
    write_colmap(tmp_path, n=3)
    Image.fromarray(np.full((6, 8), 65535, np.uint16)).save(tmp_path / "images" / "img_000.png")
    Image.fromarray(np.full((6, 8, 4), 9, np.uint8), "RGBA").save(tmp_path / "images" / "img_001.png")
    s = read_scene(str(tmp_path))
    v0, v1 = (load_view(f, 1.0, with_masks=False) for f in s.train[:2])
    assert v0.image.dtype == v1.image.dtype and v0.image.shape == (6, 8, 3)
    assert int(v0.image.min()) == 255 and int(v1.image.max()) == 9


# ============================================================================= outputs: render / metrics / objects

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plain_model(folder, source_path, iteration=7):
    """A model folder without a segmentation embedding: cfg_args + point_cloud/iteration_N/point_cloud.ply."""
    from arguments import save_cfg_args
    from scene.gaussian_model import GaussianModel

    rng = np.random.default_rng(0)
    model = GaussianModel.from_points(rng.normal(size=(30, 3)).astype(np.float32), rng.random((30, 3)), sh_degree=1)
    path = os.path.join(str(folder), "point_cloud", f"iteration_{iteration}", "point_cloud.ply")
    os.makedirs(os.path.dirname(path))
    model.save_ply(path)
    save_cfg_args(str(folder), argparse.Namespace(source_path=str(source_path), seg_dir=None, sem_dir=None,
                                                  resolution=-1, eval=True, white_background=False, device="cpu"))
    return str(folder)


def _main(tool):
    if tool == "render":
        import render
        return lambda m, *a: render.main(["-m", m, "--quiet", *a])
    if tool == "metrics":
        import metrics
        return lambda m, *a: metrics.main(["-m", m, "--quiet", *a])
    from tools import objects
    return lambda m, *a: objects.main(["list", "-m", m, *a])


def _err_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("tool", ["render", "metrics", "objects"])
def test_not_a_model_folder_is_one_line(tmp_path, capsys, tool):
    run = _main(tool)
    missing = str(tmp_path / "nope")
    assert run(missing) == 2
    assert missing in _err_line(capsys)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert run(str(a_file)) == 2
    assert "not a model folder" in _err_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(str(empty)) == 2
    err = _err_line(capsys)
    assert str(empty) in err and ("not a trained model folder" in err or "no saved iterations" in err), err


@pytest.mark.parametrize("tool", ["render", "objects"])
def test_missing_iteration_is_one_line(tmp_path, capsys, tool):
    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene", iteration=7)
    assert _main(tool)(model, "--iteration", "5") == 2
    err = _err_line(capsys)
    assert "iteration_5" in err and "not saved" in err and "7" in err and "--iteration" in err, err
    assert not os.path.exists(os.path.join(model, "train"))  # nothing written


@pytest.mark.parametrize("tool", ["render", "objects"])
def test_model_without_labels_is_refused(tmp_path, capsys, tool):
    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    assert _main(tool)(model, "--labels") == 2 if tool == "render" else _main(tool)(model) == 2
    err = _err_line(capsys)
    assert "point_cloud.ply" in err and "trained without masks" in err, err
    assert not os.path.exists(os.path.join(model, "train"))  # refused before rendering anything


@pytest.mark.parametrize("text", ["Namespace(source_path=", "rm -rf /", "Namespace(source_path='/x', eval=True)", "Namespace(source_path=open('x'))", "\x00\xff"])
@pytest.mark.parametrize("tool", ["render", "metrics"])
def test_corrupt_cfg_args_is_one_line(tmp_path, capsys, tool, text):
    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    with open(os.path.join(model, "cfg_args"), "w", encoding="latin-1") as f:
        f.write(text)
    assert _main(tool)(model) == 2
    err = _err_line(capsys)
    assert os.path.join(model, "cfg_args") in err and "cfg_args" in err and ";" in err, err


def test_cli_processes_exit_2_without_traceback(tmp_path):
    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    (tmp_path / "m" / "cfg_args").write_text("Namespace(source_path=")
    for cmd in (["render.py", "-m", model], ["metrics.py", "-m", str(tmp_path / "nope")],
                [os.path.join("tools", "objects.py"), "list", "-m", str(tmp_path / "nope")]):
        r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2, (cmd, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, (cmd, r.stderr)


def test_metrics_corrupt_or_mismatched_render_is_one_line(tmp_path, capsys):
    import metrics
    from utils.image_io import save_rgb

    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    base = os.path.join(model, "test", "ours_7")
    save_rgb(os.path.join(base, "renders", "00000.png"), np.zeros((6, 8, 3), np.uint8))
    save_rgb(os.path.join(base, "gt", "00000.png"), np.zeros((6, 8, 3), np.uint8))
    bad = os.path.join(base, "renders", "00000.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")
    assert metrics.main(["-m", model, "--quiet"]) == 2
    err = _err_line(capsys)
    assert bad in err and "re-run render.py" in err, err
    save_rgb(bad, np.zeros((3, 4, 3), np.uint8))
    assert metrics.main(["-m", model, "--quiet"]) == 2
    err = _err_line(capsys)
    assert "4x3" in err and "8x6" in err, err
    assert not os.path.exists(os.path.join(model, "results.json"))  # nothing written half


def test_truncated_ply_is_one_line_with_a_fix(tmp_path, capsys):
    from tools import objects

    write_colmap(tmp_path / "scene", n=3)
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    ply = os.path.join(model, "point_cloud", "iteration_7", "point_cloud.ply")
    with open(ply, "rb") as f:
        data = f.read()
    with open(ply, "wb") as f:
        f.write(data[: len(data) // 2])
    for run in (_main("render"), lambda m: objects.main(["list", "-m", m])):
        assert run(model) == 2
        err = _err_line(capsys)
        assert ply in err and "truncated" in err and "restore" in err, err


def test_render_failure_leaves_no_half_written_folder(tmp_path, capsys):
    import render

    write_colmap(tmp_path / "scene", n=9)  # --eval: test views img_000 and img_008
    model = _plain_model(tmp_path / "m", tmp_path / "scene")
    assert render.main(["-m", model, "--quiet", "--skip_train"]) == 0
    out = os.path.join(model, "test", "ours_7")
    assert sorted(os.listdir(os.path.join(out, "renders"))) == ["00000.png", "00001.png"]
    before = os.path.getmtime(os.path.join(out, "renders", "00000.png"))
    with open(tmp_path / "scene" / "images" / "img_008.png", "r+b") as f:  # second view: corrupt pixel data
        f.truncate(60)
    assert render.main(["-m", model, "--quiet", "--skip_train"]) == 2
    err = _err_line(capsys)
    assert "img_008.png" in err, err
    assert sorted(os.listdir(os.path.join(model, "test"))) == ["ours_7"]  # no .partial-* left
    assert os.path.getmtime(os.path.join(out, "renders", "00000.png")) == before  # the old output is intact


def test_colmap_image_cropped_by_one_row_is_refused(tmp_path):
    from utils.image_io import save_rgb

    write_colmap(tmp_path, n=3)
    path = os.path.join(str(tmp_path), "images", "img_001.png")
    save_rgb(path, np.zeros((5, 8, 3), np.uint8))  # camera is 8x6
    with pytest.raises(SceneError) as e:
        read_scene(str(tmp_path))
    one_line(e, path, "8x5", "8x6", "cropped")
