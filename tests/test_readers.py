"""Scene readers (COLMAP bin/txt, Blender, PanopLi, Messy-Rooms), format detection, image IO."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from scene.cameras import SceneError
from scene.dataset_readers import detect_format, read_scene
from scene.readers.common import FileIndex, View, camera_extent, points_from_depth
from tests.fixtures_scenes import (
    CV_TO_GL, write_blender, write_colmap, write_messy, write_panopli,
)
from utils.image_io import (
    ImageReadError, image_size, load_confidence, load_depth, load_label, load_rgb, resize_nearest,
    save_label_png, save_rgb,
)


def project(cam, X: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates of world point ``X  # [3]`` (gsplat pixel-centre convention)."""
    p = cam.K @ (cam.world_view[:3, :3] @ X + cam.world_view[:3, 3])
    return p[:2] / p[2]


def frame(scene, name):
    return next(f for f in scene.train + scene.test if f.camera.name == name)


def raises_naming(path_part: str, *words: str):
    """Context: SceneError whose single-line message names ``path_part`` and every word."""
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(SceneError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            ok = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert "\n" not in msg, msg
            assert path_part in msg, msg
            for w in words:
                assert w in msg, msg
            return ok
    return _Ctx()


# ============================================================================= image IO

def test_label_png_roundtrip_8_and_16_bit(tmp_path):
    a8 = np.array([[0, 1, 255], [7, 200, 3]])
    a16 = np.array([[0, 256, 65535], [7, 300, 1]])
    save_label_png(tmp_path / "a8.png", a8)
    save_label_png(tmp_path / "a16.png", a16)
    assert Image.open(tmp_path / "a8.png").mode == "L"
    assert Image.open(tmp_path / "a16.png").mode.startswith("I;16")
    for name, ref in (("a8.png", a8), ("a16.png", a16)):
        out = load_label(tmp_path / name)
        assert out.dtype == np.int64 and out.shape == (2, 3)
        np.testing.assert_array_equal(out, ref)


def test_label_32bit_palette_npy_and_bad_inputs(tmp_path):
    big = np.array([[0, 70000], [3, 123456]], dtype=np.int32)
    Image.fromarray(big).save(tmp_path / "i32.tif")  # 32-bit 'I' mode
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    np.testing.assert_array_equal(load_label(tmp_path / "i32.tif"), big)
    pal = Image.fromarray(np.array([[0, 1], [2, 9]], np.uint8), mode="L").convert("P")
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(load_label(tmp_path / "p.png"), [[0, 1], [2, 9]])  # indices, not colours
    np.save(tmp_path / "l.npy", np.array([[4, 5]], np.int16))
    np.save(tmp_path / "f.npy", np.array([[4.0, 5.0]], np.float32))
    np.testing.assert_array_equal(load_label(tmp_path / "l.npy"), [[4, 5]])
    np.testing.assert_array_equal(load_label(tmp_path / "f.npy"), [[4, 5]])
    np.save(tmp_path / "frac.npy", np.array([[4.5]], np.float32))
    save_rgb(tmp_path / "rgb.png", np.array([[[0, 0, 0], [1, 2, 3]]], np.uint8))  # colour-coded: refused
    save_rgb(tmp_path / "grey_rgb.png", np.array([[[0, 0, 0], [7, 7, 7]]], np.uint8))  # equal channels: grey
    np.testing.assert_array_equal(load_label(tmp_path / "grey_rgb.png"), [[0, 7]])
    for bad in ("frac.npy", "rgb.png"):
        with pytest.raises(ImageReadError, match=bad):
            load_label(tmp_path / bad)


def test_save_label_png_dtype_choice_and_errors(tmp_path):
    save_label_png(tmp_path / "b.png", np.array([[True, False]]))
    np.testing.assert_array_equal(load_label(tmp_path / "b.png"), [[1, 0]])
    for arr, word in ((np.array([[-1, 2]]), "negative"), (np.array([[65536]]), "16-bit"),
                      (np.array([[1.5]]), "integers"), (np.zeros((2, 2, 2), int), "[H, W]")):
        with pytest.raises(ValueError, match=word):
            save_label_png(tmp_path / "x.png", arr)


def test_load_rgb_alpha_grey_and_background(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 255]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), rgba[..., :3])
    comp = load_rgb(tmp_path / "a.png", background=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(comp, [[[255, 255, 255], [200, 100, 50]]])
    Image.fromarray(np.array([[0, 77]], np.uint8)).save(tmp_path / "g.png")
    g = load_rgb(tmp_path / "g.png")
    assert g.shape == (1, 2, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g[0, 1], [77, 77, 77])


def test_save_rgb_float_uint8_and_format(tmp_path):
    img = np.array([[[0.0, 0.5, 1.0], [0.25, 2.0, -1.0]]], np.float32)
    save_rgb(tmp_path / "f.png", img)
    np.testing.assert_array_equal(load_rgb(tmp_path / "f.png"), [[[0, 128, 255], [64, 255, 0]]])
    save_rgb(tmp_path / "sub" / "u.jpg", np.full((4, 4, 3), 90, np.uint8))
    assert Image.open(tmp_path / "sub" / "u.jpg").format == "JPEG"
    assert np.abs(load_rgb(tmp_path / "sub" / "u.jpg").astype(int) - 90).max() <= 2
    with pytest.raises(ValueError, match="extension"):
        save_rgb(tmp_path / "x.bmp", np.zeros((2, 2, 3), np.uint8))


def test_load_confidence_variants(tmp_path):
    c = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    np.savez_compressed(tmp_path / "c.npz", confidence=c, probability=np.zeros((2, 2, 3)))
    np.testing.assert_array_equal(load_confidence(tmp_path / "c.npz"), c)
    p = np.stack([c, 1 - c], axis=2).astype(np.float16)  # only probabilities: max over classes
    np.savez_compressed(tmp_path / "p.npz", probability=p)
    np.testing.assert_allclose(load_confidence(tmp_path / "p.npz"), [[1.0, 0.75], [0.5, 1.0]])
    np.save(tmp_path / "u8.npy", np.array([[0, 51, 255]], np.uint8))
    np.testing.assert_allclose(load_confidence(tmp_path / "u8.npy"), [[0.0, 0.2, 1.0]], atol=1e-6)
    np.save(tmp_path / "bad.npy", np.array([[0.5, 3.0]], np.float32))
    with pytest.raises(ImageReadError, match="outside"):
        load_confidence(tmp_path / "bad.npy")
    np.savez(tmp_path / "nokey.npz", other=c)
    with pytest.raises(ImageReadError, match="other"):
        load_confidence(tmp_path / "nokey.npz")
    np.testing.assert_array_equal(load_confidence(tmp_path / "c.npz", size=(4, 4))[::2, ::2], c)


def test_image_size_reads_headers_only(tmp_path):
    save_rgb(tmp_path / "a.png", np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8))
    save_rgb(tmp_path / "a.jpg", np.zeros((6, 8, 3), np.uint8))
    np.save(tmp_path / "a.npy", np.zeros((6, 8), np.int32))
    np.savez_compressed(tmp_path / "a.npz", confidence=np.zeros((6, 8), np.float32))
    for name in ("a.png", "a.jpg", "a.npy", "a.npz"):
        assert image_size(tmp_path / name) == (8, 6), name
    # a PNG cut inside its pixel data: size is known, pixels could not be decoded
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert image_size(tmp_path / "cut.png") == (8, 6)
    with pytest.raises(ImageReadError, match="cut.png"):
        load_rgb(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.png"):
        image_size(tmp_path / "junk.png")


def test_resize_nearest_and_load_label_size(tmp_path):
    a = np.arange(24).reshape(4, 6)
    np.testing.assert_array_equal(resize_nearest(a, (3, 2)), a[::2, ::2] + np.array([[7]]))  # centre pick
    save_label_png(tmp_path / "m.png", np.array([[1, 2], [3, 4]]))
    np.testing.assert_array_equal(load_label(tmp_path / "m.png", size=(4, 4)),
                                  np.kron([[1, 2], [3, 4]], np.ones((2, 2), int)))


def test_load_depth_png_mm_and_npy_metres(tmp_path):
    save_label_png(tmp_path / "d.png", np.array([[0, 1500, 65535]]))
    np.testing.assert_allclose(load_depth(tmp_path / "d.png"), [[0.0, 1.5, 65.535]], rtol=1e-6)
    np.save(tmp_path / "d.npy", np.array([[2.25]], np.float64))
    assert load_depth(tmp_path / "d.npy").dtype == np.float32
    assert load_depth(tmp_path / "d.npy")[0, 0] == 2.25


# ============================================================================= COLMAP

@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_colmap_cameras_split_points_masks(tmp_path, fmt):
    gt = write_colmap(tmp_path, n=9, fmt=fmt, seg_dir="masks")
    s = read_scene(str(tmp_path), seg_dir="masks", eval=True)
    assert s.format == "colmap" and s.seg_dir == "masks" and s.sem_dir is None
    assert [f.camera.name for f in s.test] == ["img_000", "img_008"]  # every 8th by name
    assert [f.camera.name for f in s.train] == [f"img_{i:03d}" for i in range(1, 8)]
    f = frame(s, "img_003")
    np.testing.assert_allclose(f.camera.K, gt["K"])
    assert (f.camera.width, f.camera.height) == (8, 6)
    # a world point on the ray through the centre of pixel (5, 2) projects to (5.5, 2.5)
    X_cam = np.linalg.inv(gt["K"]) @ np.array([5.5, 2.5, 1.0]) * 3.0
    X = (gt["c2w"]["img_003"] @ np.append(X_cam, 1.0))[:3]
    np.testing.assert_allclose(project(f.camera, X), [5.5, 2.5], atol=1e-9)
    np.testing.assert_allclose(f.camera.center, gt["c2w"]["img_003"][:3, 3], atol=1e-9)
    assert f.instance_path == os.path.join(str(tmp_path), "masks", "img_003.png")
    assert f.image_path == os.path.join(str(tmp_path), "images", "img_003.png")
    np.testing.assert_allclose(s.points, gt["xyz"].astype(np.float32))
    np.testing.assert_allclose(s.colors, gt["rgb"] / 255.0, atol=1e-7)
    assert s.points.dtype == np.float32 and s.colors.dtype == np.float32
    centers = np.stack([gt["c2w"][f"img_{i:03d}"][:3, 3] for i in range(1, 8)])
    expect = 1.1 * np.linalg.norm(centers - centers.mean(0), axis=1).max()
    assert s.extent == pytest.approx(expect)
    full = read_scene(str(tmp_path), eval=False)
    assert len(full.train) == 9 and full.test == [] and full.train[0].instance_path is None


def test_colmap_simple_pinhole_downscaled_images_and_sparse_root(tmp_path):
    gt = write_colmap(tmp_path, n=3, model="SIMPLE_PINHOLE", cam_scale=2, sparse_sub="")
    s = read_scene(str(tmp_path))
    K = s.train[0].camera.K
    np.testing.assert_allclose(K, [[7.0, 0, 4.1], [0, 7.0, 2.9], [0, 0, 1]])  # halved to the 8x6 images
    np.testing.assert_allclose(K, gt["K"])


def test_colmap_errors(tmp_path):
    write_colmap(tmp_path / "opencv", n=2, model="OPENCV")
    with raises_naming("cameras.bin", "OPENCV", "undistort"):
        read_scene(str(tmp_path / "opencv"))

    (tmp_path / "nosparse" / "images").mkdir(parents=True)
    with raises_naming(os.path.join("sparse", "0"), "COLMAP"):
        read_scene(str(tmp_path / "nosparse"))

    write_colmap(tmp_path / "a", n=4, fmt="txt")
    os.remove(tmp_path / "a" / "images" / "img_002.png")
    with raises_naming("img_002.png", "not found"):
        read_scene(str(tmp_path / "a"))

    write_colmap(tmp_path / "b", n=4)
    save_rgb(tmp_path / "b" / "images" / "extra.png", np.zeros((6, 8, 3), np.uint8))
    with raises_naming("extra.png", "no pose"):
        read_scene(str(tmp_path / "b"))

    write_colmap(tmp_path / "c", n=4)
    (tmp_path / "c" / "images" / "img_001.png").write_bytes(b"\x89PNG garbage")
    with raises_naming("img_001.png", "not a readable image"):
        read_scene(str(tmp_path / "c"))

    write_colmap(tmp_path / "d", n=4)
    images_bin = tmp_path / "d" / "sparse" / "0" / "images.bin"
    images_bin.write_bytes(images_bin.read_bytes()[:60])
    with raises_naming("images.bin", "truncated"):
        read_scene(str(tmp_path / "d"))


def test_colmap_masks_missing_and_no_points(tmp_path):
    write_colmap(tmp_path, n=4, seg_dir="masks", n_points=None)
    with raises_naming("nope", "--seg_dir"):
        read_scene(str(tmp_path), seg_dir="nope")
    os.remove(tmp_path / "masks" / "img_002.png")
    with raises_naming(os.path.join("masks", "img_002"), "missing", "--mask_fraction"):
        read_scene(str(tmp_path), seg_dir="masks")
    s = read_scene(str(tmp_path), seg_dir="masks", allow_missing_masks=True)
    assert frame(s, "img_002").instance_path is None and frame(s, "img_001").instance_path is not None
    assert s.points is None and s.colors is None
    lo, hi = s.bbox
    centers = np.stack([f.camera.center for f in s.train])
    np.testing.assert_allclose(lo, centers.min(0) - s.extent, rtol=1e-5)
    np.testing.assert_allclose(hi, centers.max(0) + s.extent, rtol=1e-5)


# ============================================================================= Blender

def test_blender_intrinsics_pose_split(tmp_path):
    gt = write_blender(tmp_path, n_train=4, n_test=2, angle=0.9)
    s = read_scene(str(tmp_path), eval=True)
    assert s.format == "blender"
    assert [f.camera.name for f in s.train] == [f"train_r_{k}" for k in range(4)]
    assert [f.camera.name for f in s.test] == ["test_r_0", "test_r_1"]
    fcal = 4.0 / math.tan(0.45)
    cam = frame(s, "test_r_1").camera
    np.testing.assert_allclose(cam.K, [[fcal, 0, 4.0], [0, fcal, 3.0], [0, 0, 1]])
    # a point (a, b, -1) * d in the OpenGL camera frame lands at (W/2 + f a, H/2 - f b)
    c2w_gl = gt["c2w"]["test_r_1"] @ CV_TO_GL
    a, b, d = 0.2, -0.1, 2.5
    X = (c2w_gl @ np.array([a * d, b * d, -d, 1.0]))[:3]
    np.testing.assert_allclose(project(cam, X), [4.0 + fcal * a, 3.0 - fcal * b], atol=1e-9)
    assert s.points is None and s.extras["has_alpha"]
    np.testing.assert_allclose(s.bbox[0], [-1.3] * 3, rtol=1e-6)
    np.testing.assert_allclose(s.bbox[1], [1.3] * 3, rtol=1e-6)
    merged = read_scene(str(tmp_path), eval=False)
    assert len(merged.train) == 6 and merged.test == []
    assert len({f.camera.uid for f in merged.train}) == 6


def test_blender_masks_mirror_image_tree(tmp_path):
    write_blender(tmp_path, n_train=2, n_test=1)
    for rel in ("train/r_0", "train/r_1", "test/r_0"):
        save_label_png(tmp_path / "sam" / f"{rel}.png", np.ones((6, 8), int))
    s = read_scene(str(tmp_path), seg_dir="sam", eval=True)
    assert frame(s, "test_r_0").instance_path == os.path.join(str(tmp_path), "sam", "test", "r_0.png")
    os.remove(tmp_path / "train" / "r_1.png")
    with raises_naming(os.path.join("train", "r_1"), "transforms_train.json"):
        read_scene(str(tmp_path))


# ============================================================================= PanopLi

def test_panopli_intrinsics_pose_split_paths(tmp_path):
    names = [str(i) for i in range(12)]  # int order differs from string order (10 < 2 as text)
    gt = write_panopli(tmp_path, names=names)
    s = read_scene(str(tmp_path), eval=True)
    assert s.format == "panopli" and s.num_classes == 22
    assert s.thing_classes == (4, 5, 6, 14, 15, 16, 17, 18, 20)
    assert [f.camera.name for f in s.test] == ["0", "4", "8"]
    assert [f.camera.name for f in s.train] == ["1", "2", "3", "5", "6", "7", "9", "10", "11"]
    assert [f.camera.uid for f in s.train][-3:] == [9, 10, 11]
    f = frame(s, "10")
    K = gt["K"].copy()
    K[0, 2] += 0.5
    K[1, 2] += 0.5
    np.testing.assert_allclose(f.camera.K, K)
    # data convention: the ray through pixel (u, v) is ((u - cx)/fx, (v - cy)/fy, 1)
    u, v, z = 6, 1, 2.0
    X_cam = np.array([(u - gt["K"][0, 2]) / gt["K"][0, 0] * z, (v - gt["K"][1, 2]) / gt["K"][1, 1] * z, z])
    X = (gt["c2w"]["10"] @ np.append(X_cam, 1.0))[:3]
    np.testing.assert_allclose(project(f.camera, X), [u + 0.5, v + 0.5], atol=1e-9)
    root = str(tmp_path)
    assert f.instance_path == os.path.join(root, "m2f_instance", "10.png")
    assert f.semantic_path == os.path.join(root, "m2f_semantics", "10.png")
    assert f.confidence_path == os.path.join(root, "m2f_probabilities", "10.npz")
    assert f.gt_semantic_path == os.path.join(root, "rs_semantics", "10.png")
    assert f.gt_instance_path == os.path.join(root, "rs_instance", "10.png")
    assert f.invalid_path is None
    assert s.seg_dir == "m2f_instance" and s.sem_dir == "m2f_semantics"
    assert s.points is None and s.extras["split_source"] == "splits.json"
    lo, hi = s.bbox  # box around the train cameras (ring of radius 4), padded by the extent
    centers = np.stack([f.camera.center for f in s.train])
    np.testing.assert_allclose(lo, centers.min(0) - s.extent, rtol=1e-5)
    np.testing.assert_allclose(hi, centers.max(0) + s.extent, rtol=1e-5)
    assert np.all(lo[:2] < -4.0) and np.all(hi[:2] > 4.0)


def test_panopli_replica_names_and_half_res_view_rescale(tmp_path):
    names = ["0_0010", "0_0002", "0_0001", "0_0020", "0_0003"]
    gt = write_panopli(tmp_path, names=names, half_res_views={"0_0003"})
    s = read_scene(str(tmp_path), eval=True)
    assert [f.camera.name for f in s.train + s.test] == ["0_0002", "0_0003", "0_0010", "0_0001", "0_0020"]
    cam = frame(s, "0_0003").camera
    assert (cam.width, cam.height) == (4, 3)
    K = gt["K"].copy()
    K[:2, 2] += 0.5
    np.testing.assert_allclose(cam.K, np.diag([0.5, 0.5, 1.0]) @ K)
    # same ray field at half resolution: pixel-centre coordinates halve
    X = (gt["c2w"]["0_0003"] @ np.array([0.3, -0.2, 2.0, 1.0]))[:3]
    full = K @ np.array([0.3, -0.2, 2.0])
    np.testing.assert_allclose(project(cam, X), 0.5 * full[:2] / full[2], atol=1e-9)


def test_panopli_points_from_depth(tmp_path):
    gt = write_panopli(tmp_path, n=8, depth_views={"1"}, depth_mm=2000)
    s = read_scene(str(tmp_path), eval=True)
    assert s.points.shape == (48, 3) and s.colors.shape == (48, 3)  # every valid pixel of 8x6
    cam = frame(s, "1").camera
    cam_pts = s.points.astype(np.float64) @ cam.world_view[:3, :3].T + cam.world_view[:3, 3]
    np.testing.assert_allclose(cam_pts[:, 2], 2.0, atol=1e-5)
    uv = np.stack([project(cam, p) for p in s.points.astype(np.float64)])
    np.testing.assert_allclose(uv % 1.0, 0.5, atol=1e-4)  # pixel centres
    px = np.floor(uv).astype(int)
    rgb = load_rgb(frame(s, "1").image_path)
    np.testing.assert_allclose(s.colors, rgb[px[:, 1], px[:, 0]] / 255.0, atol=1e-6)
    assert len({tuple(p) for p in px}) == 48
    again = read_scene(str(tmp_path), eval=True)
    np.testing.assert_array_equal(again.points, s.points)  # deterministic
    views = [View(f.camera.name, f.camera.name, f.image_path, f.camera.K, f.camera.world_view, 8, 6)
             for f in s.train]
    pts, cols = points_from_depth(views, FileIndex(str(tmp_path / "depth"), (".png",)), cap=10)
    assert pts.shape == (10, 3) and cols.shape == (10, 3)


def test_panopli_depth_at_lower_resolution(tmp_path):
    write_panopli(tmp_path, n=4, depth_views={"2"}, depth_size=(4, 3))
    s = read_scene(str(tmp_path), eval=True)
    cam = frame(s, "2").camera
    uv = np.stack([project(cam, p) for p in s.points.astype(np.float64)])
    assert s.points.shape == (12, 3)
    np.testing.assert_allclose(uv % 2.0, 1.0, atol=1e-4)  # depth pixel (u, v) centre = colour (2u+1, 2v+1)


def test_panopli_label_sizes_and_missing(tmp_path):
    write_panopli(tmp_path, n=5)
    save_label_png(tmp_path / "m2f_instance" / "3.png", np.ones((3, 4), int))  # same aspect: accepted
    s = read_scene(str(tmp_path))
    assert s.extras["labels_to_resize"] == 1
    assert load_label(frame(s, "3").instance_path, size=(8, 6)).shape == (6, 8)
    save_label_png(tmp_path / "m2f_instance" / "3.png", np.ones((6, 6), int))  # other aspect
    with raises_naming(os.path.join("m2f_instance", "3.png"), "6x6", "8x6"):
        read_scene(str(tmp_path))
    os.remove(tmp_path / "m2f_instance" / "3.png")
    with raises_naming(os.path.join("m2f_instance", "3"), "missing"):
        read_scene(str(tmp_path))
    os.remove(tmp_path / "m2f_probabilities" / "2.npz")
    s = read_scene(str(tmp_path), allow_missing_masks=True)
    assert frame(s, "3").instance_path is None and frame(s, "2").confidence_path is None
    assert frame(s, "2").instance_path is not None
    os.remove(tmp_path / "rs_instance" / "1.png")  # GT is optional per view
    assert frame(read_scene(str(tmp_path), allow_missing_masks=True), "1").gt_instance_path is None
    with raises_naming("sam_masks", "--seg_dir"):
        read_scene(str(tmp_path), seg_dir="sam_masks")
    s = read_scene(str(tmp_path), seg_dir="", sem_dir="")
    assert s.seg_dir is None and all(f.instance_path is None and f.confidence_path is None for f in s.train)


def test_panopli_errors(tmp_path):
    write_panopli(tmp_path, n=5)
    root = str(tmp_path)
    splits = json.loads((tmp_path / "splits.json").read_text())
    (tmp_path / "splits.json").write_text(json.dumps({"train": splits["train"] + [99], "test": splits["test"]}))
    with raises_naming("splits.json", "'99'", "colour image"):
        read_scene(root)
    (tmp_path / "splits.json").write_text("{not json")
    with raises_naming("splits.json", "invalid JSON"):
        read_scene(root)
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    os.remove(tmp_path / "pose" / "2.txt")
    with raises_naming(os.path.join("pose", "2.txt"), "not found"):
        read_scene(root)
    np.savetxt(tmp_path / "pose" / "2.txt", np.full((4, 4), -np.inf))
    with raises_naming(os.path.join("pose", "2.txt"), "inf"):
        read_scene(root)
    np.savetxt(tmp_path / "pose" / "2.txt", np.diag([1.0, 1.0, -1.0, 1.0]))  # one axis flipped
    with raises_naming(os.path.join("pose", "2.txt"), "reflection"):
        read_scene(root)
    np.savetxt(tmp_path / "pose" / "2.txt", np.eye(4))
    (tmp_path / "color" / "1.jpg").write_bytes(b"garbage")
    with raises_naming(os.path.join("color", "1.jpg"), "not a readable image"):
        read_scene(root)
    save_rgb(tmp_path / "color" / "1.jpg", np.zeros((6, 8, 3), np.uint8))
    K4 = np.eye(4)
    K4[:3, :3] = [[600, 0, 640], [0, 600, 480], [0, 0, 1]]  # K of a 1280x960 image
    np.savetxt(tmp_path / "intrinsic" / "intrinsic_color.txt", K4)
    with raises_naming("intrinsic_color.txt", "principal point"):
        read_scene(root)
    shutil.rmtree(tmp_path / "intrinsic")
    with raises_naming("intrinsic_color.txt", "not found"):
        read_scene(root)


# ============================================================================= Messy-Rooms

def test_messy_intrinsics_pose_split_paths(tmp_path):
    gt = write_messy(tmp_path, n=10, W=8, H=6)
    s = read_scene(str(tmp_path), eval=True)
    assert s.format == "messy" and s.num_classes == 2 and s.thing_classes == (1,)
    assert [f.camera.name for f in s.train] == gt["names"][:8]
    assert [f.camera.name for f in s.test] == gt["names"][8:]
    f = frame(s, "00009")
    K = gt["K"].copy()
    K[:2, 2] += 0.5
    np.testing.assert_allclose(f.camera.K, K)  # |K_norm| * (W, H) + 0.5
    u, v, z = 1, 4, 3.0
    X_cam = np.array([(u - gt["K"][0, 2]) / gt["K"][0, 0] * z, (v - gt["K"][1, 2]) / gt["K"][1, 1] * z, z])
    X = (gt["c2w"]["00009"] @ np.append(X_cam, 1.0))[:3]
    np.testing.assert_allclose(project(f.camera, X), [u + 0.5, v + 0.5], atol=1e-9)
    root = str(tmp_path)
    assert f.instance_path == os.path.join(root, "detic_instance", "00009.npy")
    assert f.semantic_path == os.path.join(root, "detic_semantic", "00009.npy")
    assert f.confidence_path == os.path.join(root, "detic_probabilities", "00009.npy")
    assert f.gt_semantic_path == os.path.join(root, "semantic", "00009.npy")
    assert f.gt_instance_path == os.path.join(root, "instance", "00009.npy")
    assert load_rgb(f.image_path).shape == (6, 8, 3)  # RGBA -> RGB
    assert load_label(f.instance_path).dtype == np.int64
    assert load_confidence(f.confidence_path).shape == (6, 8)
    assert s.points is None and s.seg_dir == "detic_instance"


def test_messy_bad_metadata(tmp_path):
    write_messy(tmp_path, n=4)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    (tmp_path / "metadata.json").write_text("{oops")
    with raises_naming("metadata.json", "invalid JSON"):
        read_scene(str(tmp_path))
    (tmp_path / "metadata.json").write_text(json.dumps({"camera": {"K": meta["camera"]["K"]}}))
    with raises_naming("metadata.json", "camera.positions"):
        read_scene(str(tmp_path))
    meta["camera"]["positions"] = meta["camera"]["positions"][:3]
    meta["camera"]["quaternions"] = meta["camera"]["quaternions"][:3]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with raises_naming("metadata.json", "3 camera poses for 4 images"):
        read_scene(str(tmp_path))


# ============================================================================= detection, extent

def test_detect_format_and_scene_path_errors(tmp_path):
    write_colmap(tmp_path / "c", n=2)
    write_blender(tmp_path / "b", n_train=1, n_test=1)
    write_panopli(tmp_path / "p", n=2)
    write_messy(tmp_path / "m", n=2)
    assert [detect_format(tmp_path / k) for k in "cbpm"] == ["colmap", "blender", "panopli", "messy"]
    with raises_naming("missing_scene", "does not exist"):
        detect_format(tmp_path / "missing_scene")
    (tmp_path / "empty").mkdir()
    with raises_naming("empty", "empty"):
        read_scene(str(tmp_path / "empty"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with raises_naming("other", "no known scene format"):
        detect_format(tmp_path / "other")


def test_camera_extent_matches_3dgs_and_guards_one_camera():
    assert camera_extent(np.array([[1.0, 0, 0], [-1.0, 0, 0]])) == pytest.approx(1.1)
    assert camera_extent(np.array([[0.0, 0, 0], [3.0, 4.0, 0], [0, 0, 0]])) == pytest.approx(
        1.1 * np.linalg.norm(np.array([3.0, 4.0, 0]) - [1.0, 4.0 / 3.0, 0]))
    assert camera_extent(np.array([[5.0, 5.0, 5.0]])) == 1.0


# ============================================================================= classes (issue 9)

def test_instance_only_scenes_get_a_fgbg_target(tmp_path):
    write_colmap(tmp_path / "c", n=4, seg_dir="masks")
    s = read_scene(str(tmp_path / "c"), seg_dir="masks")
    assert s.semantic_from_instances and s.num_classes == 2 and s.thing_classes == (1,)
    assert s.class_names == ("background", "object")
    plain = read_scene(str(tmp_path / "c"))  # no masks at all: no classes
    assert not plain.semantic_from_instances and plain.num_classes is None

    write_messy(tmp_path / "m", n=6)
    with_sem = read_scene(str(tmp_path / "m"))
    assert not with_sem.semantic_from_instances and with_sem.num_classes == 2
    no_sem = read_scene(str(tmp_path / "m"), sem_dir="")
    assert no_sem.semantic_from_instances and no_sem.num_classes == 2 and no_sem.thing_classes == (1,)
    assert no_sem.train[0].semantic_path is None and no_sem.train[0].instance_path is not None


def test_colmap_sem_dir_sets_the_classes(tmp_path):
    write_colmap(tmp_path, n=4, seg_dir="masks")
    rng = np.random.default_rng(3)
    for i in range(4):
        sem = rng.integers(0, 5, size=(6, 8))
        sem[0, 0] = 6 if i == 2 else sem[0, 0]  # the largest class id appears in one view only
        save_label_png(tmp_path / "sem" / f"img_{i:03d}.png", sem.astype(np.uint8))
    s = read_scene(str(tmp_path), seg_dir="masks", sem_dir="sem")
    assert not s.semantic_from_instances
    assert s.num_classes == 7 and s.thing_classes == (1, 2, 3, 4, 5, 6)  # C = max id + 1; all but 0 things
    assert s.train[0].semantic_path.endswith(os.path.join("sem", "img_000.png"))

    names = ["wall", "floor", "chair", "table", "cup", "lamp", "book", "plant"]
    (tmp_path / "sem" / "classes.json").write_text(json.dumps({"class_names": names, "thing_classes": [2, 4, 6]}))
    s = read_scene(str(tmp_path), seg_dir="masks", sem_dir="sem")
    assert s.num_classes == 8 and s.thing_classes == (2, 4, 6) and s.class_names == tuple(names)

    (tmp_path / "sem" / "classes.json").write_text(json.dumps({"class_names": names[:5]}))
    with raises_naming("img_002.png", "class id 6", "classes.json"):
        read_scene(str(tmp_path), seg_dir="masks", sem_dir="sem")
    (tmp_path / "sem" / "classes.json").write_text(json.dumps({"class_names": names, "thing_classes": [9]}))
    with raises_naming("classes.json", "thing class 9"):
        read_scene(str(tmp_path), seg_dir="masks", sem_dir="sem")
    (tmp_path / "sem" / "classes.json").write_text("{not json")
    with raises_naming("classes.json", "unreadable"):
        read_scene(str(tmp_path), seg_dir="masks", sem_dir="sem")
