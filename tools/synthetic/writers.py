"""Scene writers: the PanopLi folder format, the Messy-Rooms format and a COLMAP scene (docs DATA.md).

Convention: poses are 4x4 camera-to-world in OpenCV axes (PanopLi ``pose/*.txt``); Messy-Rooms
stores Blender-axes camera-to-world as position + quaternion (w, x, y, z) with
``c2w_blender = c2w_opencv @ diag(1, -1, -1, 1)`` and K normalised (row 0 divided by W, row 1
by H). Pixel convention of both: the ray through pixel (u, v) is ((u - cx)/fx, (v - cy)/fy, 1).
Depth PNGs are uint16 millimetres (0 = none). Label PNGs: semantics 8 bit, instances 16 bit.
COLMAP stores world-to-camera poses (qvec (w, x, y, z), tvec) and puts the centre of pixel (u, v)
at (u + 0.5, v + 0.5), so its cx, cy are the generator's plus 0.5.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image

from .segmenter import SegmenterOutput, probabilities


def _png(path: str, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, optimize=False, compress_level=6)


def _depth_mm(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)


def rotation_to_quaternion_wxyz(R: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> unit quaternion [4] (w, x, y, z) with w >= 0."""
    m = np.asarray(R, np.float64)
    t = np.trace(m)
    if t > 0:
        s = np.sqrt(t + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def write_points(path: str, points: Dict[str, np.ndarray]) -> None:
    """points3d.ply (binary little endian) in the 3DGS layout: x y z nx ny nz (float32) red green
    blue (uchar). Written here rather than with utils.ply to keep torch out of the generator."""
    P, N = points["points"], points["normals"]
    rgb = np.clip(np.round(points["colors"] * 255), 0, 255).astype(np.uint8)
    names = ("x", "y", "z", "nx", "ny", "nz", "red", "green", "blue")
    data = np.empty(len(P), dtype=[(n, "<f4") for n in names[:6]] + [(n, "u1") for n in names[6:]])
    for k, n in enumerate(names[:3]):
        data[n], data["n" + n] = P[:, k], N[:, k]
    for k, n in enumerate(names[6:]):
        data[n] = rgb[:, k]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(P)}"]
    header += [f"property float {n}" for n in names[:6]] + [f"property uchar {n}" for n in names[6:]]
    with open(path, "wb") as f:
        f.write(("\n".join(header + ["end_header"]) + "\n").encode("ascii"))
        f.write(data.tobytes())


class PanopliWriter:
    """SCENE/{color, depth, pose, intrinsic, rs_semantics, rs_instance, m2f_semantics,
    m2f_instance, m2f_probabilities}/ + splits.json + points3d.ply + generator.json."""

    format = "panopli"

    def __init__(self, root: str, jpeg_quality: int = 95, depth: bool = True, probabilities: bool = False):
        self.root, self.jpeg_quality, self.depth, self.probabilities = root, jpeg_quality, depth, probabilities
        dirs = ["color", "pose", "intrinsic", "rs_semantics", "rs_instance", "m2f_semantics", "m2f_instance",
                "m2f_probabilities"] + (["depth"] if depth else [])
        for d in dirs:
            os.makedirs(os.path.join(root, d), exist_ok=True)

    def write_view(self, name: str, rgb: np.ndarray, depth: np.ndarray, gt_instance: np.ndarray,
                   gt_semantic: np.ndarray, seg: SegmenterOutput, c2w: np.ndarray) -> None:
        j = lambda *p: os.path.join(self.root, *p)  # noqa: E731
        Image.fromarray(rgb).save(j("color", f"{name}.jpg"), quality=self.jpeg_quality)
        if self.depth:
            _png(j("depth", f"{name}.png"), _depth_mm(depth))
        np.savetxt(j("pose", f"{name}.txt"), c2w, fmt="%.8f")
        _png(j("rs_semantics", f"{name}.png"), gt_semantic.astype(np.uint8))
        _png(j("rs_instance", f"{name}.png"), gt_instance.astype(np.uint16))
        _png(j("m2f_semantics", f"{name}.png"), seg.semantic)
        _png(j("m2f_instance", f"{name}.png"), seg.instance)
        arrays = {"confidence": seg.confidence.astype(np.float16)}
        if self.probabilities:
            arrays["probability"] = probabilities(seg.semantic, seg.confidence)
        np.savez_compressed(j("m2f_probabilities", f"{name}.npz"), **arrays)

    def finish(self, K: np.ndarray, names: Sequence[str], c2w: np.ndarray, test_every: int,
               points: Optional[Dict[str, np.ndarray]], meta: dict) -> None:
        K4 = np.eye(4)
        K4[:3, :3] = K
        for f in ("intrinsic_color.txt", "intrinsic_depth.txt"):
            np.savetxt(os.path.join(self.root, "intrinsic", f), K4, fmt="%.8f")
        split = {"train": [n for i, n in enumerate(names) if i % test_every != test_every - 1],
                 "test": [n for i, n in enumerate(names) if i % test_every == test_every - 1]}
        with open(os.path.join(self.root, "splits.json"), "w") as f:
            json.dump(split, f, indent=1)
        if points is not None:
            write_points(os.path.join(self.root, "points3d.ply"), points)
        with open(os.path.join(self.root, "generator.json"), "w") as f:
            json.dump({**meta, "format": self.format}, f, indent=1)


class MessyWriter:
    """SCENE/{color, depth, semantic, instance, detic_semantic, detic_instance,
    detic_probabilities}/ + metadata.json (+ points3d.ply, generator.json). Two classes:
    0 background (all stuff), 1 object (every thing)."""

    format = "messy"

    def __init__(self, root: str, depth: bool = True):
        self.root, self.depth = root, depth
        for d in ["color", "semantic", "instance", "detic_semantic", "detic_instance", "detic_probabilities"] \
                + (["depth"] if depth else []):
            os.makedirs(os.path.join(root, d), exist_ok=True)

    def write_view(self, name: str, rgb: np.ndarray, depth: np.ndarray, gt_instance: np.ndarray,
                   gt_semantic: np.ndarray, seg: SegmenterOutput, c2w: np.ndarray) -> None:
        j = lambda *p: os.path.join(self.root, *p)  # noqa: E731
        _png(j("color", f"{name}.png"), rgb)
        if self.depth:
            _png(j("depth", f"{name}.png"), _depth_mm(depth))
        np.save(j("semantic", f"{name}.npy"), (gt_instance > 0).astype(np.uint8))
        np.save(j("instance", f"{name}.npy"), gt_instance.astype(np.uint16))
        fg = seg.instance > 0  # the segmenter's thing pixels
        np.save(j("detic_semantic", f"{name}.npy"), fg.astype(np.uint8))
        np.save(j("detic_instance", f"{name}.npy"), seg.instance)
        np.save(j("detic_probabilities", f"{name}.npy"), np.where(fg, seg.confidence, 1.0).astype(np.float16))

    def finish(self, K: np.ndarray, names: Sequence[str], c2w: np.ndarray, test_every: int,
               points: Optional[Dict[str, np.ndarray]], meta: dict) -> None:
        """Writes metadata.json (train = first 80 % by name, as the Messy-Rooms reader splits)."""
        W, H = meta["width"], meta["height"]
        Kn = np.array(K, np.float64)
        Kn[0] /= W
        Kn[1] /= H
        flip = np.diag([1.0, -1.0, -1.0, 1.0])
        blender = [c @ flip for c in np.asarray(c2w, np.float64)]
        metadata = {
            "camera": {
                "K": Kn.round(10).tolist(),
                "positions": [b[:3, 3].round(8).tolist() for b in blender],
                "quaternions": [rotation_to_quaternion_wxyz(b[:3, :3]).round(10).tolist() for b in blender],
                "field_of_view": float(2 * np.arctan(W / 2 / K[0, 0])),
                "width": W, "height": H,
            },
            "metadata": {"num_frames": len(names), "resolution": [W, H], "frame_names": list(names),
                         "num_instances": meta["num_objects"]},
            "instances": [{"id": o["instance"], "kind": o["kind"]} for o in meta["objects"] if o["instance"] > 0],
        }
        with open(os.path.join(self.root, "metadata.json"), "w") as f:
            json.dump(metadata, f)
        if points is not None:
            write_points(os.path.join(self.root, "points3d.ply"), points)
        with open(os.path.join(self.root, "generator.json"), "w") as f:
            json.dump({**meta, "format": self.format}, f, indent=1)


class ColmapWriter:
    """A COLMAP capture with instance-only masks: SCENE/images/*.jpg, sparse/0/{cameras, images,
    points3D}.txt (COLMAP's text format, one PINHOLE camera), masks/*.png (the simulated
    segmenter's thing instances, uint16, ids permuted per view, 0 = unlabelled), plus what no COLMAP
    reader looks at: semantics/*.png (the segmenter's classes, for ``--sem_dir semantics``),
    gt_instance/ and gt_semantics/ (exact labels) and generator.json (object geometry).

    Train with ``train.py -s SCENE --seg_dir masks``; every view is registered and the reader's
    ``--eval`` holds out every 8th image by name."""

    format = "colmap"
    MASKS, SEMANTICS = "masks", "semantics"

    def __init__(self, root: str, jpeg_quality: int = 95):
        self.root, self.jpeg_quality = root, jpeg_quality
        for d in ("images", os.path.join("sparse", "0"), self.MASKS, self.SEMANTICS, "gt_instance", "gt_semantics",
                  "gt_objects"):
            os.makedirs(os.path.join(root, d), exist_ok=True)

    def write_view(self, name: str, rgb: np.ndarray, depth: np.ndarray, gt_instance: np.ndarray,
                   gt_semantic: np.ndarray, seg: SegmenterOutput, c2w: np.ndarray) -> None:
        j = lambda *p: os.path.join(self.root, *p)  # noqa: E731
        Image.fromarray(rgb).save(j("images", f"{name}.jpg"), quality=self.jpeg_quality)
        _png(j(self.MASKS, f"{name}.png"), seg.instance.astype(np.uint16))
        _png(j(self.SEMANTICS, f"{name}.png"), seg.semantic.astype(np.uint8))
        _png(j("gt_instance", f"{name}.png"), gt_instance.astype(np.uint16))
        _png(j("gt_semantics", f"{name}.png"), gt_semantic.astype(np.uint8))
        _png(j("gt_objects", f"{name}.png"), (gt_instance > 0).astype(np.uint8))  # fg/bg GT (instance-only runs)

    def finish(self, K: np.ndarray, names: Sequence[str], c2w: np.ndarray, test_every: int,
               points: Optional[Dict[str, np.ndarray]], meta: dict) -> None:
        """sparse/0/*.txt and generator.json. points3D carries no tracks (no 2D points)."""
        sparse = os.path.join(self.root, "sparse", "0")
        W, H = meta["width"], meta["height"]
        fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5))  # pixel centres
        with open(os.path.join(sparse, "cameras.txt"), "w") as f:
            f.write("# Camera list with one line of data per camera:\n"
                    "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n# Number of cameras: 1\n")
            f.write(f"1 PINHOLE {W} {H} {fx!r} {fy!r} {cx!r} {cy!r}\n")
        lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
                 "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(names)}"]
        for i, (name, pose) in enumerate(zip(names, np.asarray(c2w, np.float64))):
            R = pose[:3, :3].T  # world-to-camera
            t = -R @ pose[:3, 3]
            q = rotation_to_quaternion_wxyz(R)
            lines.append(f"{i + 1} " + " ".join(repr(float(v)) for v in (*q, *t)) + f" 1 {name}.jpg")
            lines.append("")  # no 2D points
        with open(os.path.join(sparse, "images.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(sparse, "points3D.txt"), "w") as f:
            f.write("# 3D point list with one line of data per point:\n"
                    "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
            if points is not None and len(points["points"]):
                P = np.asarray(points["points"], np.float64)
                rgb = np.clip(np.round(np.asarray(points["colors"]) * 255), 0, 255).astype(np.int64)
                # ID X Y Z R G B ERROR, no track
                table = np.concatenate([np.arange(1, len(P) + 1)[:, None], P, rgb, np.zeros((len(P), 1))], 1)
                np.savetxt(f, table, fmt=["%d", "%.6f", "%.6f", "%.6f", "%d", "%d", "%d", "%d"], delimiter=" ")
        with open(os.path.join(self.root, "generator.json"), "w") as f:
            json.dump({**meta, "format": self.format, "seg_dir": self.MASKS, "sem_dir": self.SEMANTICS}, f,
                      indent=1)
        if meta.get("class_names"):  # --sem_dir semantics: the reader takes names and thing classes from here
            with open(os.path.join(self.root, self.SEMANTICS, "classes.json"), "w") as f:
                json.dump({"class_names": list(meta["class_names"]),
                           "thing_classes": [int(c) for c in meta.get("thing_classes", ())]}, f, indent=1)
