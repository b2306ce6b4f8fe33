"""COLMAP scenes: ``images/`` + ``sparse/0/{cameras,images,points3D}.{bin,txt}``.

Convention: COLMAP stores world-to-camera poses (qvec (w, x, y, z), tvec) in OpenCV axes and
intrinsics with the centre of pixel (u, v) at (u + 0.5, v + 0.5), which is already gsplat's
convention: K is used as stored (rescaled per axis if the image on disk has another size).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

from scene.cameras import SceneError, SceneInfo
from scene.readers.common import (
    IMAGE_EXTS, LABEL_EXTS, LabelSource, View, assemble, build_frames, check_unique_names,
    check_finite, checked_rotation, checked_size, folder_label, label_classes, rescale_K, resolve_folder, same_aspect, stem_to_name,
)

# model id -> (name, number of parameters), as in COLMAP's camera_models.h
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}
MODEL_IDS = {name: mid for mid, (name, _) in CAMERA_MODELS.items()}
LLFF_HOLD = 8  # --eval: every 8th image (sorted by name) is a test view, as 3DGS


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # [n] float64


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] (w, x, y, z), world-to-camera rotation
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str  # path relative to images/


# ----------------------------------------------------------------------------- binary

class _Bin:
    """Little-endian cursor over a whole COLMAP binary file."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0

    def read(self, fmt: str) -> tuple:
        try:
            vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        except struct.error:
            raise SceneError(f"{self.path}: truncated or corrupt COLMAP binary file; re-export the model") from None
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def cstring(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise SceneError(f"{self.path}: truncated or corrupt COLMAP binary file; re-export the model")
        s = self.buf[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > len(self.buf):
            raise SceneError(f"{self.path}: truncated or corrupt COLMAP binary file; re-export the model")


def read_cameras_bin(path: str) -> dict[int, ColmapCamera]:
    b = _Bin(path)
    (n,) = b.read("Q")
    cams = {}
    for _ in range(n):
        cam_id, model_id, w, h = b.read("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise SceneError(f"{path}: camera {cam_id} has unknown model id {model_id}; undistort the "
                             f"images (colmap image_undistorter) to get a PINHOLE model")
        name, n_params = CAMERA_MODELS[model_id]
        cams[cam_id] = ColmapCamera(cam_id, name, int(w), int(h), np.array(b.read("d" * n_params)))
    return cams


def read_images_bin(path: str) -> list[ColmapImage]:
    b = _Bin(path)
    (n,) = b.read("Q")
    out = []
    for _ in range(n):
        vals = b.read("i4d3di")
        name = b.cstring()
        (n_pts,) = b.read("Q")
        b.skip(24 * n_pts)  # (x, y: double, point3D_id: int64) per 2D point
        out.append(ColmapImage(vals[0], np.array(vals[1:5]), np.array(vals[5:8]), vals[8], name))
    return out


def read_points3d_bin(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``xyz  # [P, 3] float64``, ``rgb  # [P, 3] uint8``; one record per point (variable-length tracks)."""
    b = _Bin(path)
    (n,) = b.read("Q")
    xyz = np.empty((n, 3), np.float64)
    rgb = np.empty((n, 3), np.uint8)
    rec = struct.Struct("<Q3d3BdQ")
    buf, pos = b.buf, b.pos
    try:
        for i in range(n):
            _, x, y, z, r, g, bl, _, track_len = rec.unpack_from(buf, pos)
            xyz[i] = (x, y, z)
            rgb[i] = (r, g, bl)
            pos += rec.size + 8 * track_len  # (image_id, point2D_idx: int32) per track element
    except struct.error:
        raise SceneError(f"{path}: truncated or corrupt COLMAP binary file; re-export the model") from None
    return xyz, rgb


# ----------------------------------------------------------------------------- text

def _data_lines(path: str, keep_empty: bool = False) -> list[str]:
    with open(path, "r", encoding="utf-8") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    return [ln for ln in lines if not ln.startswith("#") and (keep_empty or ln.strip())]


def read_cameras_txt(path: str) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _data_lines(path):
        parts = ln.split()
        try:
            cam_id, model, w, h = int(parts[0]), parts[1], int(parts[2]), int(parts[3])
            params = np.array([float(p) for p in parts[4:]])
        except (IndexError, ValueError):
            raise SceneError(f"{path}: malformed camera line '{ln.strip()}'; expected "
                             f"CAMERA_ID MODEL WIDTH HEIGHT PARAMS...") from None
        cams[cam_id] = ColmapCamera(cam_id, model, w, h, params)
    return cams


def read_images_txt(path: str) -> list[ColmapImage]:
    # Two lines per image; the second (2D points) may be empty, so empty lines are kept.
    lines = _data_lines(path, keep_empty=True)
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip():  # stray blank line between records
            i += 1
            continue
        parts = ln.split(maxsplit=9)
        try:
            vals = [float(p) for p in parts[1:8]]
            out.append(ColmapImage(int(parts[0]), np.array(vals[:4]), np.array(vals[4:7]),
                                   int(parts[8]), parts[9].strip()))
        except (IndexError, ValueError):
            raise SceneError(f"{path}: malformed image line '{ln.strip()}'; expected "
                             f"IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME") from None
        i += 2
    return out


def read_points3d_txt(path: str) -> tuple[np.ndarray, np.ndarray]:
    rows = _data_lines(path)
    xyz = np.empty((len(rows), 3), np.float64)
    rgb = np.empty((len(rows), 3), np.uint8)
    for i, ln in enumerate(rows):
        parts = ln.split(maxsplit=8)
        try:
            xyz[i] = [float(p) for p in parts[1:4]]
            rgb[i] = [int(p) for p in parts[4:7]]
        except (IndexError, ValueError):
            raise SceneError(f"{path}: malformed point line '{ln.strip()[:80]}'; expected "
                             f"POINT3D_ID X Y Z R G B ERROR TRACK...") from None
    return xyz, rgb


# ----------------------------------------------------------------------------- scene

def find_sparse_dir(path: str) -> str:
    for cand in (os.path.join(path, "sparse", "0"), os.path.join(path, "sparse")):
        if any(os.path.isfile(os.path.join(cand, f"cameras.{e}")) for e in ("bin", "txt")):
            return cand
    raise SceneError(f"{os.path.join(path, 'sparse', '0')}: COLMAP model (cameras/images/points3D .bin or "
                     f".txt) not found; run COLMAP (or convert.py) so SCENE/sparse/0 exists")


def _model_file(sparse: str, stem: str, required: bool) -> tuple[Optional[str], str]:
    for ext in ("bin", "txt"):
        p = os.path.join(sparse, f"{stem}.{ext}")
        if os.path.isfile(p):
            return p, ext
    if required:
        raise SceneError(f"{os.path.join(sparse, stem + '.bin')}: COLMAP {stem} file (.bin or .txt) not found; "
                         f"re-export the model")
    return None, ""


def pinhole_K(cam: ColmapCamera, where: str) -> np.ndarray:
    """K  # [3, 3] of a PINHOLE / SIMPLE_PINHOLE camera, as COLMAP stores it (pixel-centre convention)."""
    p = cam.params
    if cam.model == "PINHOLE" and p.size == 4:
        fx, fy, cx, cy = p
    elif cam.model == "SIMPLE_PINHOLE" and p.size == 3:
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    elif cam.model in ("PINHOLE", "SIMPLE_PINHOLE"):
        raise SceneError(f"{where}: camera {cam.id} ({cam.model}) has {p.size} parameters; re-export the model")
    else:
        raise SceneError(f"{where}: camera {cam.id} uses model {cam.model}; only PINHOLE and SIMPLE_PINHOLE "
                         f"are supported: undistort first (colmap image_undistorter)")
    check_finite(p, where, f"camera {cam.id} intrinsics", "re-run COLMAP or fix the camera")
    if not (fx > 0 and fy > 0):
        raise SceneError(f"{where}: camera {cam.id} has focal length fx {fx:g}, fy {fy:g}; focal lengths must "
                         f"be positive: re-run COLMAP or fix the camera")
    if cam.width <= 0 or cam.height <= 0:
        raise SceneError(f"{where}: camera {cam.id} is {cam.width}x{cam.height}; re-export the model")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _image_files(images_dir: str) -> set[str]:
    """Image paths relative to ``images_dir`` (posix separators), recursively."""
    out = set()
    for root, dirs, files in os.walk(images_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                out.add(os.path.relpath(os.path.join(root, f), images_dir).replace(os.sep, "/"))
    return out


def read_colmap(path: str, *, seg_dir: Optional[str] = None, sem_dir: Optional[str] = None,
                eval: bool = False, allow_missing_masks: bool = False) -> SceneInfo:
    """Read a COLMAP scene. No default ``seg_dir``: without one the scene trains plain 3DGS.

    Classes (``common.label_classes``): with ``sem_dir``, from ``<sem_dir>/classes.json`` or the masks
    (C = largest id + 1, every class but 0 a thing); with instance masks only, a fg/bg target
    derived from them (0 background, 1 object).
    Test split (``eval``): every 8th image in name (string) order, starting with the first,
    as 3DGS. Initial points: points3D xyz with rgb / 255 (None if the file is absent or empty).
    """
    sparse = find_sparse_dir(path)
    cam_file, cam_ext = _model_file(sparse, "cameras", True)
    img_file, img_ext = _model_file(sparse, "images", True)
    pts_file, pts_ext = _model_file(sparse, "points3D", False)
    cams = read_cameras_bin(cam_file) if cam_ext == "bin" else read_cameras_txt(cam_file)
    images = read_images_bin(img_file) if img_ext == "bin" else read_images_txt(img_file)
    if not images:
        raise SceneError(f"{img_file}: COLMAP model registers no images; re-run the mapper")

    images_dir = os.path.join(path, "images")
    if not os.path.isdir(images_dir):
        raise SceneError(f"{images_dir}: images folder not found; put the registered images in SCENE/images")
    on_disk = _image_files(images_dir)
    listed = {im.name.replace("\\", "/") for im in images}
    unposed = sorted(on_disk - listed)
    if unposed:
        raise SceneError(f"{os.path.join(images_dir, unposed[0])}: image has no pose in {img_file} "
                         f"({len(unposed)} such); remove unregistered images from images/ or re-run COLMAP")

    K_cache: dict[int, np.ndarray] = {}
    views: list[View] = []
    for im in sorted(images, key=lambda m: m.name):
        img_path = os.path.join(images_dir, im.name)
        if not os.path.isfile(img_path):
            raise SceneError(f"{img_path}: image listed in {img_file} not found; restore it or re-run COLMAP")
        if im.camera_id not in cams:
            raise SceneError(f"{img_file}: image {im.name} uses camera {im.camera_id} missing from {cam_file}; "
                             f"re-export the COLMAP model (both files from one reconstruction)")
        cam = cams[im.camera_id]
        if cam.id not in K_cache:
            K_cache[cam.id] = pinhole_K(cam, cam_file)
        W, H = checked_size(img_path)
        K = K_cache[cam.id]
        if (W, H) != (cam.width, cam.height):
            if (W == cam.width) != (H == cam.height) or not same_aspect((W, H), (cam.width, cam.height)):
                raise SceneError(f"{img_path}: image is {W}x{H} but COLMAP camera {cam.id} is "
                                 f"{cam.width}x{cam.height} (cropped, padded or another aspect ratio); use the "
                                 f"images COLMAP saw")
            K = rescale_K(K, (cam.width, cam.height), (W, H))
        fix = f"re-run COLMAP or remove image {im.name} from the model"
        w2c = np.eye(4)
        w2c[:3, :3] = checked_rotation(im.qvec, img_file, f"image {im.name}", fix)
        w2c[:3, 3] = check_finite(im.tvec, img_file, f"image {im.name} translation", fix)
        rel_stem = os.path.splitext(im.name.replace("\\", "/"))[0]
        views.append(View(stem_to_name(rel_stem), rel_stem, img_path, K, w2c, W, H))
    check_unique_names(views, images_dir)

    sources = [
        LabelSource("instance_path", resolve_folder(path, seg_dir, None, "instance mask", "--seg_dir"),
                    LABEL_EXTS, "instance mask", True),
        LabelSource("semantic_path", resolve_folder(path, sem_dir, None, "semantic mask", "--sem_dir"),
                    LABEL_EXTS, "semantic mask", True),
    ]
    # Exact labels beside the capture (the synthetic generator's, for evaluation only): GT instance ids,
    # and GT classes, or object/background (gt_objects/) when training sees instance masks only.
    gt_sem = "gt_semantics" if sources[1].folder is not None else "gt_objects"
    sources += [LabelSource("gt_semantic_path", resolve_folder(path, None, gt_sem, "", ""), LABEL_EXTS,
                            "GT semantic map", False),
                LabelSource("gt_instance_path", resolve_folder(path, None, "gt_instance", "", ""), LABEL_EXTS,
                            "GT instance map", False)]
    frames, n_resize = build_frames(views, sources, allow_missing_masks)
    test_ids = set(range(0, len(frames), LLFF_HOLD)) if eval else set()
    train = [f for i, f in enumerate(frames) if i not in test_ids]
    test = [f for i, f in enumerate(frames) if i in test_ids]

    points = colors = None
    if pts_file is not None:
        xyz, rgb = read_points3d_bin(pts_file) if pts_ext == "bin" else read_points3d_txt(pts_file)
        bad = ~np.all(np.isfinite(xyz), axis=1)  # [P]
        if bad.any():
            raise SceneError(f"{pts_file}: {int(bad.sum())} of {len(xyz)} points hold NaN or inf (first: point "
                             f"{int(np.flatnonzero(bad)[0])}); re-run COLMAP, or delete the file to start from "
                             f"random points")
        if len(xyz):
            points, colors = xyz.astype(np.float32), rgb.astype(np.float32) / 255.0
    return assemble(
        "colmap", path, train, test, points=points, colors=colors, bbox=None, eval=eval,
        **label_classes(sources[0].folder, sources[1].folder, frames),
        seg_dir=folder_label(path, sources[0].folder), sem_dir=folder_label(path, sources[1].folder),
        extras={"sparse_dir": sparse, "labels_to_resize": n_resize,
                "points_source": "points3D" if points is not None else None})
