"""Tiny on-the-fly scene fixtures in the four formats, with the ground truth they encode.

Every writer returns a dict holding what a reader should recover (K in the file's own
convention, camera-to-world in OpenCV axes, names). Images are a few pixels wide so a whole
suite of scenes is written in milliseconds.
"""
from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from utils.image_io import save_label_png, save_rgb

CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])  # self-inverse: OpenCV <-> OpenGL/Blender camera axes


# ----------------------------------------------------------------------------- geometry

def look_at_c2w(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV camera-to-world ``[4, 4]`` at ``eye`` looking at ``target`` (y down ~ -up)."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(-up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def ring_c2ws(n: int, radius: float = 4.0, height: float = 1.0) -> list[np.ndarray]:
    return [look_at_c2w((radius * math.cos(a), radius * math.sin(a), height + 0.1 * i))
            for i, a in enumerate(np.linspace(0, 2 * math.pi, n, endpoint=False))]


def rotmat_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (Shepperd's method, branch on the largest diagonal)."""
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    return np.array(q)


def random_rgb(rng, W: int, H: int) -> np.ndarray:
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def labels(rng, W: int, H: int, hi: int = 5) -> np.ndarray:
    return rng.integers(0, hi, size=(H, W))


# ----------------------------------------------------------------------------- COLMAP

def _write_cameras(path, cams, fmt):
    from scene.readers.colmap import MODEL_IDS
    if fmt == "bin":
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(cams)))
            for cid, (model, w, h, params) in cams.items():
                f.write(struct.pack("<iiQQ", cid, MODEL_IDS[model], w, h))
                f.write(struct.pack("<" + "d" * len(params), *params))
    else:
        with open(path, "w") as f:
            f.write("# Camera list with one line of data per camera:\n")
            for cid, (model, w, h, params) in cams.items():
                f.write(f"{cid} {model} {w} {h} " + " ".join(repr(float(p)) for p in params) + "\n")


def _write_images(path, images, fmt):
    """images: list of (image_id, qvec wxyz, tvec, camera_id, name)."""
    if fmt == "bin":
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(images)))
            for k, (iid, q, t, cid, name) in enumerate(images):
                f.write(struct.pack("<i4d3di", iid, *q, *t, cid))
                f.write(name.encode() + b"\x00")
                n_pts = k % 3  # variable-length 2D point lists exercise the skipping
                f.write(struct.pack("<Q", n_pts))
                for j in range(n_pts):
                    f.write(struct.pack("<ddq", 1.0 + j, 2.0, -1))
    else:
        with open(path, "w") as f:
            f.write("# Image list with two lines of data per image:\n")
            for k, (iid, q, t, cid, name) in enumerate(images):
                f.write(f"{iid} " + " ".join(repr(float(v)) for v in (*q, *t)) + f" {cid} {name}\n")
                f.write("" if k % 2 == 0 else "1.0 2.0 -1 3.5 4.5 7")  # empty 2D-point lines too
                f.write("\n")


def _write_points(path, xyz, rgb, fmt):
    if fmt == "bin":
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(xyz)))
            for i, (p, c) in enumerate(zip(xyz, rgb)):
                track = i % 4
                f.write(struct.pack("<Q3d3BdQ", i + 1, *p, *c, 0.5, track))
                for j in range(track):
                    f.write(struct.pack("<ii", j + 1, j))
    else:
        with open(path, "w") as f:
            f.write("# 3D point list\n")
            for i, (p, c) in enumerate(zip(xyz, rgb)):
                f.write(f"{i + 1} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {int(c[0])} {int(c[1])} {int(c[2])} 0.5 1 0 2 1\n")


def write_colmap(root, n: int = 9, fmt: str = "bin", W: int = 8, H: int = 6, model: str = "PINHOLE",
                 cam_scale: int = 1, seg_dir: str | None = None, n_points: int | None = 20, sparse_sub: str = "0",
                 seed: int = 0) -> dict:
    """COLMAP scene; the camera is ``cam_scale`` x the image size (images as after downscaling)."""
    rng = np.random.default_rng(seed)
    root = str(root)
    sparse = os.path.join(root, "sparse", sparse_sub) if sparse_sub else os.path.join(root, "sparse")
    os.makedirs(sparse, exist_ok=True)
    Wc, Hc = W * cam_scale, H * cam_scale
    K = np.array([[7.0 * cam_scale, 0, 4.1 * cam_scale], [0, 6.5 * cam_scale, 2.9 * cam_scale], [0, 0, 1]])
    if model == "PINHOLE":
        params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    elif model == "SIMPLE_PINHOLE":
        K[1, 1] = K[0, 0]
        params = [K[0, 0], K[0, 2], K[1, 2]]
    else:  # a distortion model the reader must reject
        params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], 0.01, 0.0, 0.0, 0.0]
    _write_cameras(os.path.join(sparse, f"cameras.{fmt}"), {1: (model, Wc, Hc, params)}, fmt)
    c2ws = ring_c2ws(n)
    names = [f"img_{i:03d}.png" for i in range(n)]
    images = []
    for i, (name, c2w) in enumerate(zip(names, c2ws)):
        w2c = np.linalg.inv(c2w)
        images.append((i + 1, rotmat_to_quat_wxyz(w2c[:3, :3]), w2c[:3, 3], 1, name))
        save_rgb(os.path.join(root, "images", name), random_rgb(rng, W, H))
        if seg_dir:
            save_label_png(os.path.join(root, seg_dir, name[:-4] + ".png"), labels(rng, W, H))
    # write in shuffled order: the reader must sort by name
    order = rng.permutation(n)
    _write_images(os.path.join(sparse, f"images.{fmt}"), [images[i] for i in order], fmt)
    xyz = rng.normal(size=(n_points or 0, 3))
    rgb = rng.integers(0, 256, size=(n_points or 0, 3))
    if n_points is not None:
        _write_points(os.path.join(sparse, f"points3D.{fmt}"), xyz, rgb, fmt)
    K_img = K.copy()
    K_img[:2] /= cam_scale  # K at the image resolution
    return {"K": K_img, "c2w": dict(zip([s[:-4] for s in names], c2ws)),
            "names": [s[:-4] for s in names], "xyz": xyz, "rgb": rgb, "sparse": sparse}


# ----------------------------------------------------------------------------- Blender

def write_blender(root, n_train: int = 4, n_test: int = 2, W: int = 8, H: int = 6, angle: float = 0.9,
                  seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root = str(root)
    c2ws = ring_c2ws(n_train + n_test)
    out = {"c2w": {}, "angle": angle}
    for split, idx in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        frames = []
        for k, i in enumerate(idx):
            rgba = np.concatenate([random_rgb(rng, W, H), np.full((H, W, 1), 255, np.uint8)], axis=2)
            from PIL import Image
            os.makedirs(os.path.join(root, split), exist_ok=True)
            Image.fromarray(rgba).save(os.path.join(root, split, f"r_{k}.png"))
            frames.append({"file_path": f"./{split}/r_{k}", "rotation": 0.1,
                           "transform_matrix": (c2ws[i] @ CV_TO_GL).tolist()})
            out["c2w"][f"{split}_r_{k}"] = c2ws[i]
        with open(os.path.join(root, f"transforms_{split}.json"), "w") as f:
            json.dump({"camera_angle_x": angle, "frames": frames}, f)
    with open(os.path.join(root, "transforms_val.json"), "w") as f:
        json.dump({"camera_angle_x": angle, "frames": [{"file_path": "./val/missing", "transform_matrix": []}]}, f)
    return out


# ----------------------------------------------------------------------------- PanopLi

def write_panopli(root, n: int = 8, W: int = 8, H: int = 6, names=None, depth_views=None,
                  depth_mm: int = 2000, depth_size=None, confidence: bool = True, seed: int = 0,
                  half_res_views=()) -> dict:
    """PanopLi scene; K (data convention) at W x H; every 4th view (sorted) is a test view.

    ``half_res_views``: names whose colour image (and labels) are stored at W/2 x H/2.
    ``depth_views``: names that get a constant-depth map (default: none).
    """
    rng = np.random.default_rng(seed)
    root = str(root)
    names = names or [str(i) for i in range(n)]
    K = np.array([[6.0, 0.0, 3.7], [0.0, 5.5, 2.6], [0.0, 0.0, 1.0]])
    K4 = np.eye(4)
    K4[:3, :3] = K
    os.makedirs(os.path.join(root, "intrinsic"), exist_ok=True)
    np.savetxt(os.path.join(root, "intrinsic", "intrinsic_color.txt"), K4)
    c2ws = ring_c2ws(len(names))
    os.makedirs(os.path.join(root, "pose"), exist_ok=True)
    from scene.readers.common import sort_names
    srt = sort_names(names)
    for name, c2w in zip(srt, c2ws):
        w, h = (W // 2, H // 2) if name in half_res_views else (W, H)
        save_rgb(os.path.join(root, "color", f"{name}.jpg"), random_rgb(rng, w, h))
        np.savetxt(os.path.join(root, "pose", f"{name}.txt"), c2w)
        for d in ("m2f_instance", "m2f_semantics", "rs_semantics", "rs_instance"):
            save_label_png(os.path.join(root, d, f"{name}.png"), labels(rng, w, h, 22))
        if confidence:
            os.makedirs(os.path.join(root, "m2f_probabilities"), exist_ok=True)
            np.savez_compressed(os.path.join(root, "m2f_probabilities", f"{name}.npz"),
                                confidence=rng.random((h, w), dtype=np.float32))
        if depth_views and name in depth_views:
            dw, dh = depth_size or (W, H)
            save_label_png(os.path.join(root, "depth", f"{name}.png"),
                           np.full((dh, dw), depth_mm, np.uint16))
    test = srt[::4]
    train = [x for x in srt if x not in test]
    with open(os.path.join(root, "splits.json"), "w") as f:
        json.dump({"train": train, "test": test}, f)
    return {"K": K, "c2w": dict(zip(srt, c2ws)), "names": srt, "train": train, "test": test}


# ----------------------------------------------------------------------------- Messy-Rooms

def write_messy(root, n: int = 10, W: int = 8, H: int = 6, seed: int = 0, rgba: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    root = str(root)
    names = [f"{i:05d}" for i in range(n)]
    c2ws = ring_c2ws(n)
    # Kubric-style signed normalised K: rows 0/1 divided by W/H, negative y and z entries
    fx, fy, cx, cy = 6.0, 6.0, 0.5 * W, 0.5 * H
    K_norm = [[fx / W, 0.0, -cx / W], [0.0, -fy / H, -cy / H], [0.0, 0.0, -1.0]]
    positions, quats = [], []
    from PIL import Image
    for name, c2w in zip(names, c2ws):
        c2w_b = c2w @ CV_TO_GL
        positions.append(c2w_b[:3, 3].tolist())
        quats.append(rotmat_to_quat_wxyz(c2w_b[:3, :3]).tolist())
        img = random_rgb(rng, W, H)
        if rgba:
            img = np.concatenate([img, np.full((H, W, 1), 128, np.uint8)], axis=2)
        os.makedirs(os.path.join(root, "color"), exist_ok=True)
        Image.fromarray(img).save(os.path.join(root, "color", f"{name}.png"))
        for d, hi in (("semantic", 2), ("instance", 9), ("detic_semantic", 2), ("detic_instance", 9)):
            os.makedirs(os.path.join(root, d), exist_ok=True)
            np.save(os.path.join(root, d, f"{name}.npy"), rng.integers(0, hi, size=(H, W)).astype(np.int32))
        os.makedirs(os.path.join(root, "detic_probabilities"), exist_ok=True)
        np.save(os.path.join(root, "detic_probabilities", f"{name}.npy"), rng.random((H, W)).astype(np.float32))
    meta = {"camera": {"K": K_norm, "positions": positions, "quaternions": quats,
                       "field_of_view": 0.9}, "metadata": {"num_frames": n, "resolution": [W, H]}}
    with open(os.path.join(root, "metadata.json"), "w") as f:
        json.dump(meta, f)
    return {"K": np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), "c2w": dict(zip(names, c2ws)), "names": names}
