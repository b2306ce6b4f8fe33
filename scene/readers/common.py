"""Helpers shared by the scene readers: names, label folders, size checks, poses, extent,
depth back-projection. Every problem is a one-line :class:`SceneError` naming the file.

Convention (poses): ``world_view`` is world-to-camera in OpenCV axes (x right, y down,
z forward); quaternions are (w, x, y, z). Convention (intrinsics): ``K`` is gsplat's
pixel-centre convention, the centre of pixel (u, v) at (u + 0.5, v + 0.5).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from scene.cameras import Camera, FrameInfo, SceneError, SceneInfo
from utils.image_io import ImageReadError, image_size, load_depth, load_rgb

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
LABEL_EXTS = (".png", ".npy")
CONF_EXTS = (".npz", ".npy")

# Initial point cloud from depth maps: total budget and how many train views to decode.
DEPTH_POINTS_CAP = 100_000
DEPTH_MAX_VIEWS = 64
DEPTH_SEED = 0
MIN_VIEWS = 2  # a scene needs at least this many posed views (train + test)
EXTENT_FALLBACK = 1.0  # used when all train cameras coincide (e.g. a single camera)


# ----------------------------------------------------------------------------- names

def name_sort_key(name: str) -> tuple:
    """Sort key: integer value when ``int(stem)`` parses (``12``, ``0_0042``), else the text.

    Numeric names sort before non-numeric ones, so mixed folders still have a total order.
    """
    try:
        return (0, int(name), name)
    except ValueError:
        return (1, 0, name)


def sort_names(names: Iterable[str]) -> list[str]:
    return sorted(names, key=name_sort_key)


def stem_to_name(rel_stem: str) -> str:
    """Camera name of a view from its path (relative to its folder, without extension).

    Flat folders give the file stem; nested paths join their parts with ``_`` so that names
    stay unique and usable as output file stems.
    """
    rel_stem = rel_stem.replace("\\", "/")
    while rel_stem.startswith("./"):
        rel_stem = rel_stem[2:]
    return rel_stem.strip("/").replace("/", "_")


class FileIndex:
    """Files of a folder by relative stem, listing each subfolder at most once.

    ``find("a/b")`` returns ``<root>/a/b<ext>`` for the first extension in ``exts`` that
    exists, else None. One ``os.scandir`` per subfolder instead of one ``stat`` per candidate
    keeps a 900-view scene fast.
    """

    def __init__(self, root: str, exts: Sequence[str]):
        self.root = root
        self.exts = tuple(e.lower() for e in exts)
        self._dirs: dict[str, dict[str, dict[str, str]]] = {}

    def _listing(self, sub: str) -> dict[str, dict[str, str]]:
        if sub not in self._dirs:
            folder = os.path.join(self.root, sub) if sub else self.root
            entries: dict[str, dict[str, str]] = {}
            if os.path.isdir(folder):
                with os.scandir(folder) as it:
                    for e in it:
                        if e.name.startswith(".") or not e.is_file():
                            continue
                        stem, ext = os.path.splitext(e.name)
                        if ext.lower() in self.exts:
                            entries.setdefault(stem, {})[ext.lower()] = e.path
            self._dirs[sub] = entries
        return self._dirs[sub]

    def find(self, rel_stem: str) -> Optional[str]:
        rel_stem = rel_stem.replace("\\", "/")
        while rel_stem.startswith("./"):
            rel_stem = rel_stem[2:]
        sub, stem = os.path.split(rel_stem)
        by_ext = self._listing(sub).get(stem)
        if not by_ext:
            return None
        for ext in self.exts:
            if ext in by_ext:
                return by_ext[ext]
        return None

    def stems(self) -> list[str]:
        """Stems of the files directly in the root (no subfolders)."""
        return list(self._listing(""))


# ----------------------------------------------------------------------------- checks

def require_dir(path: str, what: str, fix: str) -> None:
    if not os.path.isdir(path):
        raise SceneError(f"{path}: {what} not found; {fix}")


def checked_size(path: str, what: str = "image") -> tuple[int, int]:
    """``(W, H)`` from the header only; a missing or unreadable file is a SceneError."""
    if not os.path.isfile(path):
        raise SceneError(f"{path}: {what} not found; add the file or remove the view from the scene")
    try:
        return image_size(path)
    except ImageReadError as e:
        raise SceneError(f"{e}; replace or remove the {what}") from None


def same_aspect(wh: tuple[int, int], WH: tuple[int, int]) -> bool:
    """True if ``wh`` is ``WH`` scaled uniformly, up to one pixel of rounding."""
    w, h = wh
    W, H = WH
    if w <= 0 or h <= 0:
        return False
    return abs(w * H - h * W) <= max(W, H)


def check_label_size(path: str, WH: tuple[int, int], what: str) -> bool:
    """Validate a per-view label file against its image size ``WH``; True if it needs resizing.

    Same size: fine. Same aspect ratio: accepted, to be loaded with ``size=(W, H)`` (nearest).
    One side equal and the other not (a crop or pad) or other sizes: SceneError naming the file.
    """
    wh = checked_size(path, what)
    if wh == tuple(WH):
        return False
    if (wh[0] == WH[0]) != (wh[1] == WH[1]):  # one side equal, the other not: a crop or a pad, not a rescale
        raise SceneError(
            f"{path}: {what} is {wh[0]}x{wh[1]} but its image is {WH[0]}x{WH[1]} (cropped or padded, not "
            f"rescaled); regenerate it at the image resolution")
    if same_aspect(wh, WH):
        return True
    raise SceneError(
        f"{path}: {what} is {wh[0]}x{wh[1]} but its image is {WH[0]}x{WH[1]} (different aspect "
        f"ratio); regenerate it at the image resolution")


def rescale_K(K: np.ndarray, from_wh: tuple[int, int], to_wh: tuple[int, int]) -> np.ndarray:
    """``K  # [3, 3]`` for an image resized from ``from_wh`` to ``to_wh`` (per axis).

    Convention: valid for the pixel-centre convention (the image edges map to the edges).
    """
    K = np.array(K, dtype=np.float64)
    K[0] *= to_wh[0] / from_wh[0]
    K[1] *= to_wh[1] / from_wh[1]
    K[2] = (0.0, 0.0, 1.0)
    return K


def parse_matrix(path: str, rows: int, cols: int, what: str,
                 fix: str = "drop this view from the split") -> np.ndarray:
    """A whitespace-separated ``[rows, cols]`` float matrix; extra trailing numbers are an error.
    ``fix``: what the user should do about a bad file (ends each message)."""
    try:
        with open(path, "r") as f:
            vals = np.array(f.read().split(), dtype=np.float64)
    except FileNotFoundError:
        raise SceneError(f"{path}: {what} not found; add it or remove the view") from None
    except ValueError:
        raise SceneError(f"{path}: {what} holds non-numeric text, expected {rows}x{cols} numbers; {fix}") from None
    if vals.size != rows * cols:
        raise SceneError(f"{path}: {what} has {vals.size} numbers, expected {rows}x{cols}; {fix}")
    m = vals.reshape(rows, cols)
    if not np.all(np.isfinite(m)):
        hint = " (invalid tracking?)" if what == "pose" else ""
        raise SceneError(f"{path}: {what} holds inf/nan{hint}; {fix}")
    return m


# ----------------------------------------------------------------------------- poses

def check_finite(values, path: str, what: str, fix: str) -> np.ndarray:
    """``values`` as float64; any NaN / inf is a one-line SceneError naming ``path`` and ``what``."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise SceneError(f"{path}: {what} holds NaN or inf; {fix}")
    return arr


def checked_rotation(q, path: str, what: str, fix: str) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` of quaternion ``q`` (w, x, y, z), which must be finite and non-zero."""
    q = check_finite(q, path, f"{what} quaternion", fix)
    norm = float(np.linalg.norm(q))
    if norm < 1e-8:
        raise SceneError(f"{path}: {what} quaternion is zero (norm {norm:.3g}), not a rotation; {fix}")
    return quat_wxyz_to_rotmat(q)


def quat_wxyz_to_rotmat(q) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` of a quaternion (w, x, y, z); normalised first."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform ``[R t; 0 1]`` (R orthonormalised via SVD first)."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def c2w_to_world_view(c2w: np.ndarray, path: str) -> np.ndarray:
    """World-to-camera from a camera-to-world matrix; a degenerate rotation is an error."""
    R = c2w[:3, :3]
    det = np.linalg.det(R)
    if not np.isfinite(det) or abs(det) < 1e-6:
        raise SceneError(f"{path}: camera-to-world rotation is singular (det {det:.3g}); fix the pose")
    if det < 0:
        raise SceneError(f"{path}: camera-to-world rotation is a reflection (det {det:.3g}); check the axis "
                         f"convention (flip two axes, not one)")
    scale = det ** (1.0 / 3.0)
    if abs(scale - 1.0) > 1e-2:
        raise SceneError(f"{path}: camera-to-world rotation is scaled (det {det:.3g}); poses must be rigid")
    return invert_rigid(c2w)


# ----------------------------------------------------------------------------- scene

def camera_extent(centers: np.ndarray, path: str = "scene") -> float:
    """3DGS ``cameras_extent``: 1.1 x max distance of a camera centre to their mean.

    ``centers  # [C, 3]``. When all centres coincide (one camera) the result would be 0,
    which breaks densification thresholds; return ``EXTENT_FALLBACK`` then. A non-finite
    centre (a NaN / inf pose) is a SceneError naming ``path``, never a silent fallback.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    if centers.shape[0] == 0:
        return EXTENT_FALLBACK
    if not np.all(np.isfinite(centers)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(centers), axis=1))[0])
        raise SceneError(f"{path}: camera centre {bad} is NaN or inf, so the scene extent is undefined; "
                         f"fix or drop that view's pose")
    radius = float(np.linalg.norm(centers - centers.mean(0), axis=1).max())
    return 1.1 * radius if radius > 1e-9 else EXTENT_FALLBACK


def camera_bbox(centers: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box of ``centers  # [C, 3]`` grown by ``pad`` on every side."""
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    return (centers.min(0) - pad).astype(np.float32), (centers.max(0) + pad).astype(np.float32)


@dataclass
class View:
    """A posed view before its label files are attached."""
    name: str  # unique camera name (file stem for flat folders)
    rel_stem: str  # path relative to the label folders, no extension (usually == name)
    image_path: str
    K: np.ndarray  # [3, 3] pixel-centre convention, at (width, height)
    world_view: np.ndarray  # [4, 4] world-to-camera, OpenCV axes
    width: int
    height: int


@dataclass
class LabelSource:
    """Where one kind of per-view file lives and how strict a missing file is."""
    field: str  # FrameInfo field, e.g. "instance_path"
    folder: Optional[str]  # absolute folder, None = not available in this scene
    exts: Sequence[str]
    what: str  # for messages, e.g. "instance mask"
    required: bool  # missing per-view file is an error (unless allow_missing_masks)


def resolve_folder(scene: str, name: Optional[str], default: Optional[str], what: str, flag: str) -> Optional[str]:
    """Folder of a label kind: explicit ``name`` must exist; the format default may be absent.

    ``name=None`` -> the format's default (``None`` = no such folder); ``name=""`` -> none.
    """
    explicit = name is not None
    name = default if name is None else name
    if not name:
        return None
    folder = name if os.path.isabs(name) else os.path.join(scene, name)
    if os.path.isdir(folder):
        return os.path.abspath(folder)
    if explicit:
        raise SceneError(f"{folder}: {what} folder given by {flag} is missing; create it or fix {flag}")
    return None


def build_frames(views: Sequence[View], sources: Sequence[LabelSource], allow_missing_masks: bool,
                 uid_offset: int = 0) -> tuple[list[FrameInfo], int]:
    """FrameInfos of ``views`` with their label files found and size-checked.

    Returns the frames and how many label files need a nearest resize to their image size.
    """
    indices = [(src, FileIndex(src.folder, src.exts)) for src in sources if src.folder is not None]
    frames: list[FrameInfo] = []
    n_resize = 0
    for i, v in enumerate(views):
        paths: dict[str, Optional[str]] = {}
        for src, index in indices:
            p = index.find(v.rel_stem)
            if p is None and v.rel_stem != v.name:
                p = index.find(v.name)
            if p is None:
                if src.required and not allow_missing_masks:
                    raise SceneError(
                        f"{os.path.join(src.folder, v.rel_stem)}{src.exts[0]}: {src.what} for view "
                        f"'{v.name}' is missing; add it, or train with --mask_fraction F to use masks on only some views")
            else:
                n_resize += check_label_size(p, (v.width, v.height), src.what)
            paths[src.field] = p
        cam = Camera(uid=uid_offset + i, name=v.name, K=np.array(v.K, dtype=np.float64),
                     world_view=np.array(v.world_view, dtype=np.float64),
                     width=v.width, height=v.height)
        frames.append(FrameInfo(camera=cam, image_path=v.image_path, **paths))
    return frames, n_resize


def check_unique_names(views: Sequence[View], where: str) -> None:
    seen: dict[str, str] = {}
    for v in views:
        if v.name in seen:
            raise SceneError(
                f"{v.image_path}: view name '{v.name}' also used by {seen[v.name]} in {where}; "
                f"names must be unique (rename one file)")
        seen[v.name] = v.image_path


def train_centers(frames: Sequence[FrameInfo]) -> np.ndarray:
    return np.stack([f.camera.center for f in frames]) if frames else np.zeros((0, 3))


def assemble(fmt: str, path: str, train: list[FrameInfo], test: list[FrameInfo], *,
             points: Optional[np.ndarray], colors: Optional[np.ndarray], bbox, eval: bool,
             extras: dict, **kw) -> SceneInfo:
    """SceneInfo with the 3DGS convention for ``eval``: without it, test views train too."""
    if not train:
        raise SceneError(f"{path}: scene has no training views; check the split files")
    if len(train) + len(test) < MIN_VIEWS:
        raise SceneError(f"{path}: scene has {len(train) + len(test)} view(s); at least {MIN_VIEWS} posed views "
                         f"are needed to train: add views")
    if not eval:
        train, test = sorted(train + test, key=lambda f: f.camera.uid), []
    extent = camera_extent(train_centers(train), path)
    if bbox is None:
        if points is not None and len(points):
            bbox = (points.min(0).astype(np.float32), points.max(0).astype(np.float32))
        else:
            bbox = camera_bbox(train_centers(train), extent)
    return SceneInfo(format=fmt, path=os.path.abspath(path), train=train, test=test, points=points,
                     colors=colors, bbox=bbox, extent=extent, extras=extras, **kw)


# ----------------------------------------------------------------------------- classes

FGBG_CLASS_NAMES = ("background", "object")
CLASSES_FILE = "classes.json"  # optional, in a --sem_dir folder: class names and thing classes
MAX_CLASSES = 256  # predicted classes are written as uint8 PNGs


def label_classes(seg_folder: Optional[str], sem_folder: Optional[str], frames: Sequence[FrameInfo]) -> dict:
    """The class fields of a SceneInfo (``num_classes``, ``thing_classes``, ``class_names``,
    ``semantic_from_instances``) for formats whose classes are not fixed (COLMAP, Blender).

    * Semantic masks (``sem_folder``): ``sem_folder/classes.json`` when present,
      ``{"class_names": [...], "thing_classes": [...]}`` (C = number of names; ``thing_classes``
      optional, default every class but 0); without it the masks are scanned once: class ids are
      taken as they are, C = largest id + 1, and every class but 0 is a thing (0 = unlabelled /
      background stuff). A mask id outside [0, C) is an error naming the file.
    * Instance masks only: a fg/bg target derived from the masks (``semantic_from_instances``).
    * Neither: no classes.
    """
    if sem_folder is not None:
        return semantic_classes(sem_folder, frames)
    if seg_folder is not None:
        return fgbg_from_instances()
    return {}


def fgbg_from_instances() -> dict:
    """Class fields of a scene with instance masks and no semantic masks: 0 background, 1 object."""
    return {"num_classes": 2, "thing_classes": (1,), "class_names": FGBG_CLASS_NAMES,
            "semantic_from_instances": True}


def semantic_classes(sem_folder: str, frames: Sequence[FrameInfo]) -> dict:
    """Classes of a --sem_dir folder (see ``label_classes``)."""
    import json

    from utils.image_io import load_label

    cfile = os.path.join(sem_folder, CLASSES_FILE)
    names: tuple = ()
    things: Optional[tuple] = None
    if os.path.isfile(cfile):
        try:
            with open(cfile, "r", encoding="utf-8") as f:
                meta = json.load(f)
            names = tuple(str(n) for n in meta["class_names"])
            if "thing_classes" in meta:
                things = tuple(int(c) for c in meta["thing_classes"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SceneError(f"{cfile}: unreadable ({type(e).__name__}: {e}); expected "
                             f'{{"class_names": [...], "thing_classes": [...]}}') from None
        if not 2 <= len(names) <= MAX_CLASSES:
            raise SceneError(f"{cfile}: class_names lists {len(names)} classes; list 2..{MAX_CLASSES} "
                             f"(0 = background)")
    top, top_path = -1, None  # largest class id in the masks, and where
    for fr in frames:
        if fr.semantic_path is None:
            continue
        try:
            m = int(load_label(fr.semantic_path).max(initial=0))
        except ImageReadError as e:
            raise SceneError(str(e) if ";" in str(e) else f"{e}; replace the file") from None
        except Exception as e:  # noqa: BLE001 - any decoder failure becomes one clear line
            raise SceneError(f"{fr.semantic_path}: cannot read semantic mask ({e}); replace the file") from None
        if m > top:
            top, top_path = m, fr.semantic_path
    if names:
        num_classes = len(names)
        if top >= num_classes:
            raise SceneError(f"{top_path}: class id {top} but {cfile} names {num_classes} classes; "
                             f"add the missing class names or fix the mask")
    else:
        if top >= MAX_CLASSES:
            raise SceneError(f"{top_path}: class id {top} is too large; class ids must be < {MAX_CLASSES} "
                             f"(pred_semantics is uint8): relabel the masks")
        num_classes = max(top + 1, 2)
    if things is None:
        things = tuple(range(1, num_classes))
    bad = [c for c in things if not 0 <= c < num_classes]
    if bad:
        raise SceneError(f"{cfile}: thing class {bad[0]} outside [0, {num_classes}); fix thing_classes")
    return {"num_classes": num_classes, "thing_classes": things, "class_names": names}


# ----------------------------------------------------------------------------- depth init

def points_from_depth(views: Sequence[View], depth_index: FileIndex, *, png_scale: float = 1e-3,
                      cap: int = DEPTH_POINTS_CAP, max_views: int = DEPTH_MAX_VIEWS,
                      seed: int = DEPTH_SEED) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Coloured points back-projected from the depth maps of ``views`` (train views).

    Deterministic: up to ``max_views`` views evenly spaced in name order, then an equal share
    of ``cap`` valid (depth > 0) pixels per view drawn with a fixed-seed generator.
    Convention: depth is z along the optical axis; PNG depth is integer units times
    ``png_scale`` (uint16 millimetres -> 1e-3), ``.npy`` depth is metres. A depth map of
    another size than its image uses ``K`` rescaled to the depth resolution; colours are
    taken at the same pixel centre in the colour image.
    Returns ``points  # [P, 3] float32`` and ``colors  # [P, 3] float32 in [0, 1]``, or Nones.
    """
    with_depth = [(v, p) for v in views if (p := depth_index.find(v.rel_stem)) is not None]
    if not with_depth:
        return None, None
    pick = np.unique(np.linspace(0, len(with_depth) - 1, min(len(with_depth), max_views)).round().astype(int))
    per_view = max(1, cap // len(pick))
    rng = np.random.default_rng(seed)
    pts, cols = [], []
    for j in pick:
        v, dpath = with_depth[j]
        try:
            depth = load_depth(dpath, png_scale=png_scale)  # [h, w] float32 metres
            rgb = load_rgb(v.image_path)  # [H, W, 3] uint8
        except ImageReadError as e:
            raise SceneError(f"{e}; replace or remove the file") from None
        hd, wd = depth.shape
        valid = np.flatnonzero(np.isfinite(depth.ravel()) & (depth.ravel() > 0))  # [M]
        if valid.size == 0:
            continue
        idx = valid[rng.choice(valid.size, size=min(per_view, valid.size), replace=False)]  # [S]
        vv, uu = np.divmod(idx, wd)
        z = depth.ravel()[idx].astype(np.float64)  # [S]
        Kd = rescale_K(v.K, (v.width, v.height), (wd, hd))
        x = (uu + 0.5 - Kd[0, 2]) / Kd[0, 0] * z
        y = (vv + 0.5 - Kd[1, 2]) / Kd[1, 1] * z
        cam = np.stack([x, y, z], axis=1)  # [S, 3] camera frame
        R, t = v.world_view[:3, :3], v.world_view[:3, 3]
        pts.append((cam - t) @ R)  # R^T (x_cam - t), row form
        H, W = rgb.shape[:2]
        uc = np.minimum(((uu + 0.5) * (W / wd)).astype(np.int64), W - 1)
        vc = np.minimum(((vv + 0.5) * (H / hd)).astype(np.int64), H - 1)
        cols.append(rgb[vc, uc].astype(np.float32) / 255.0)
    if not pts:
        return None, None
    return np.concatenate(pts).astype(np.float32), np.concatenate(cols).astype(np.float32)


def folder_label(scene: str, folder: Optional[str]) -> Optional[str]:
    """How SceneInfo names a label folder: relative to the scene when inside it, else absolute."""
    if folder is None:
        return None
    rel = os.path.relpath(folder, os.path.abspath(scene))
    return folder if rel.startswith("..") else rel


def probabilities_folder(scene: str, label_dir: Optional[str]) -> Optional[str]:
    """Confidence folder paired with a prediction folder: ``m2f_semantics`` -> ``m2f_probabilities``.

    Follows the PanopLi / Messy-Rooms naming (prefix before the first ``_``); None if absent.
    """
    if not label_dir:
        return None
    prefix = os.path.basename(os.path.normpath(label_dir)).split("_")[0]
    folder = os.path.join(os.path.abspath(scene), f"{prefix}_probabilities")
    return folder if os.path.isdir(folder) else None


def prediction_and_gt_sources(scene: str, seg_dir: Optional[str], sem_dir: Optional[str], *,
                              default_seg: str, default_sem: str, gt_sem: str, gt_inst: str) -> list:
    """The label sources of the formats that ship segmenter predictions beside GT (PanopLi,
    Messy-Rooms): instance / semantic / confidence predictions (required per view when their folder
    exists), GT semantic / instance maps and the invalid-region mask (optional per view)."""
    seg_folder = resolve_folder(scene, seg_dir, default_seg, "instance mask", "--seg_dir")
    sem_folder = resolve_folder(scene, sem_dir, default_sem, "semantic mask", "--sem_dir")
    conf_folder = probabilities_folder(scene, sem_folder or seg_folder)
    return [
        LabelSource("instance_path", seg_folder, LABEL_EXTS, "instance mask", True),
        LabelSource("semantic_path", sem_folder, LABEL_EXTS, "semantic mask", True),
        LabelSource("confidence_path", conf_folder, CONF_EXTS, "confidence map", True),
        LabelSource("gt_semantic_path", resolve_folder(scene, None, gt_sem, "", ""), LABEL_EXTS,
                    "GT semantic map", False),
        LabelSource("gt_instance_path", resolve_folder(scene, None, gt_inst, "", ""), LABEL_EXTS,
                    "GT instance map", False),
        LabelSource("invalid_path", resolve_folder(scene, None, "invalid", "", ""), (".jpg", ".png"),
                    "invalid-region mask", False),
    ]
