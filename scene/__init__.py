"""Scene: reads a scene folder and loads its views into memory at the working resolution.

Convention: images are uint8 [H, W, 3] tensors (converted to float on use); instance masks are
int32 [H, W] with the segmenter's raw (per-view inconsistent) ids, 0 = stuff / unlabelled;
semantic masks int64 [H, W]; confidence float32 [H, W] in [0, 1].

For training, ``View.to_device`` moves the image and the camera to the training device once
(``View.cam``: a ``CameraTensors`` whose ``world_view``/``K``/``center`` are already tensors there,
so ``gaussian_renderer.render`` copies nothing per step); the per-view segmentation targets are
prepared once by ``segmentation.objective.SegmentationObjective.prepare`` (``View.targets``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scene.cameras import Camera, FrameInfo, SceneError, SceneInfo

MAX_AUTO_WIDTH = 1600


@dataclass(frozen=True)
class CameraTensors:
    """A ``Camera`` with its matrices already as tensors on one device (same names as ``Camera``,
    so ``render()`` takes it in place of the camera; ``torch.as_tensor`` on them is a no-op).

    Convention: as ``scene.cameras.Camera`` (world-to-camera, OpenCV axes; pixel centres at +0.5).
    """
    uid: int
    name: str
    K: Tensor  # [3, 3]
    world_view: Tensor  # [4, 4] world-to-camera
    center: Tensor  # [3] camera centre in world coordinates
    width: int
    height: int

    @classmethod
    def from_camera(cls, camera: Camera, device, dtype=torch.float32) -> "CameraTensors":
        # Converted from the float64 numpy values exactly as a per-step torch.as_tensor would.
        def t(a):
            return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
        return cls(camera.uid, camera.name, t(camera.K), t(camera.world_view), t(camera.center),
                   camera.width, camera.height)


@dataclass
class View:
    camera: Camera
    image: Tensor  # [H, W, 3] uint8
    instance: Optional[Tensor] = None  # [H, W] int32, raw per-view ids
    semantic: Optional[Tensor] = None  # [H, W] int64
    confidence: Optional[Tensor] = None  # [H, W] float32
    valid: Optional[Tensor] = None  # [H, W] bool, False outside the valid region
    cam: Optional[CameraTensors] = None  # camera tensors on the training device (to_device)
    targets: Optional[object] = None  # segmentation.objective.ViewTargets, prepared once
    seg_cam: Optional[CameraTensors] = None  # the camera the features render with at --seg_scale below 1

    def image_float(self, device) -> Tensor:  # [H, W, 3] float in [0, 1]
        return self.image.to(device, non_blocking=True).float() / 255.0

    @property
    def has_masks(self) -> bool:
        """The view carries instance or semantic masks (the segmentation's 2D losses can train on it)."""
        return self.instance is not None or self.semantic is not None

    @property
    def render_camera(self):
        """What to hand to ``render()``: the device camera when prepared, else the numpy camera."""
        return self.cam if self.cam is not None else self.camera

    def to_device(self, device, camera_device=None) -> "View":
        """Moves the image to ``device`` and caches the camera tensors on ``camera_device`` (default:
        ``device``; the training device in practice, they are tiny), in place."""
        self.image = self.image.to(device)
        self.cam = CameraTensors.from_camera(self.camera, camera_device if camera_device is not None else device)
        return self

    def nbytes(self) -> int:
        """Bytes of the image and masks held by this view."""
        return sum(t.numel() * t.element_size() for t in (self.image, self.instance, self.semantic,
                                                           self.confidence, self.valid) if t is not None)


def nearest_resize(mask: Tensor, width: int, height: int) -> Tensor:
    """[H, W] per-pixel labels (ids, classes, confidences, valid flags) at ``width`` x ``height``: each
    pixel takes the source pixel under its centre, as ``load_view`` resizes masks (no blending of ids)."""
    h, w = mask.shape[:2]
    if (w, h) == (width, height):
        return mask
    ys, xs = (torch.from_numpy(_nearest_index(n, m)).to(mask.device) for n, m in ((h, height), (w, width)))
    return mask[ys[:, None], xs[None, :]]


def _nearest_index(n: int, m: int) -> np.ndarray:
    """[m] the source index (of n) under each of m resized pixels' centres."""
    return np.minimum(((np.arange(m) + 0.5) * n / m).astype(np.int64), n - 1)


def resolution_scale(width: int, resolution: int) -> float:
    """3DGS's ``-r``: 1/2/4/8 divide; any other positive value is a target width; -1 caps at 1600."""
    if resolution in (1, 2, 4, 8):
        return 1.0 / resolution
    if resolution > 0:
        return resolution / width
    return min(1.0, MAX_AUTO_WIDTH / width)


def _resize(arr: np.ndarray, size: tuple, nearest: bool) -> np.ndarray:
    """Resizes [H, W(, C)] to ``size`` = (width, height); area-like for images, nearest for labels."""
    if (arr.shape[1], arr.shape[0]) == size:
        return arr
    if nearest:
        h, w = arr.shape[:2]
        return arr[_nearest_index(h, size[1])[:, None], _nearest_index(w, size[0])[None, :]]
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BOX if size[0] < arr.shape[1]
                                                  else Image.Resampling.BICUBIC))


def load_view(frame: FrameInfo, scale: float, *, with_masks: bool = True, device="cpu") -> View:
    from utils.image_io import load_confidence, load_label, load_rgb

    cam = frame.camera.scaled(scale) if scale != 1.0 else frame.camera
    size = (cam.width, cam.height)
    try:
        rgb = load_rgb(frame.image_path)
    except SceneError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes one clear line
        raise SceneError(f"{frame.image_path}: cannot read image ({e}); replace or remove the file") from None
    view = View(cam, torch.from_numpy(np.array(_resize(rgb, size, nearest=False))).to(device))
    if with_masks and frame.instance_path:
        inst = _checked(load_label, frame.instance_path, frame.camera, "instance mask")
        if inst.max(initial=0) >= 2**31:
            raise SceneError(f"{frame.instance_path}: instance ids beyond 31 bits; relabel the masks")
        view.instance = torch.from_numpy(_resize(inst, size, True).astype(np.int32)).to(device)
    if with_masks and frame.semantic_path:
        sem = _checked(load_label, frame.semantic_path, frame.camera, "semantic mask")
        view.semantic = torch.from_numpy(_resize(sem, size, True).astype(np.int64)).to(device)
    if with_masks and frame.confidence_path:
        conf = _checked(load_confidence, frame.confidence_path, frame.camera, "confidence map")
        conf = _resize(conf.astype(np.float32), size, True)
        view.confidence = torch.from_numpy(np.ascontiguousarray(conf)).to(device)
    if frame.invalid_path:
        inv = _checked(lambda p: np.asarray(Image.open(p).convert("L")), frame.invalid_path, frame.camera,
                       "invalid-region mask")
        view.valid = torch.from_numpy(_resize(inv, size, True) == 0).to(device)
    return view


def _checked(load, path: str, camera: Camera, what: str) -> np.ndarray:
    """``load(path)`` as an ``[h, w, ...]`` array of the camera's aspect ratio (the readers check the
    header; this checks the decoded pixels). Any failure is a one-line SceneError naming the file."""
    from scene.readers.common import same_aspect

    try:
        arr = load(path)
    except SceneError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure becomes one clear line
        msg = " ".join(str(e).split())  # one line
        if not msg.startswith(str(path)):
            msg = f"{path}: cannot read {what} ({msg})"
        raise SceneError(msg if ";" in msg else f"{msg}; replace or remove the file") from None
    h, w = arr.shape[:2]
    if not same_aspect((w, h), (camera.width, camera.height)):
        raise SceneError(f"{path}: {what} is {w}x{h} but its view is {camera.width}x{camera.height} (different "
                         f"aspect ratio); regenerate it at the image resolution")
    return arr


def load_views(frames: Sequence[FrameInfo], scale: float, *, with_masks: bool = True, device="cpu",
               desc: str = "Loading views", quiet: bool = False) -> List[View]:
    from tqdm import tqdm

    return [load_view(f, scale, with_masks=with_masks, device=device)
            for f in tqdm(frames, desc=desc, disable=quiet or len(frames) < 2, leave=False)]


def select_mask_views(n_views: int, fraction: float, seed: int) -> np.ndarray:
    """Which training views keep their masks under ``--mask_fraction`` (at least one; deterministic)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"--mask_fraction {fraction}: must be in (0, 1]")
    keep = max(1, int(round(n_views * fraction)))
    order = np.random.default_rng(seed).permutation(n_views)
    mask = np.zeros(n_views, bool)
    mask[order[:keep]] = True
    return mask


def view_draws(views: Sequence, share: float) -> List[int]:
    """The view indices of one training epoch (``--mask_view_share``): every view once, and where only some
    views have masks (``instance`` or ``semantic``), each of those ``r`` times in all, the least ``r`` with
    which they make up at least ``share`` of the draws (0: every view once)."""
    n = len(views)
    masked = [i for i, v in enumerate(views) if v.has_masks]
    if share <= 0.0 or not masked or len(masked) == n or len(masked) >= share * n:
        return list(range(n))
    r = math.ceil(share * (n - len(masked)) / ((1.0 - share) * len(masked)) - 1e-9)
    return list(range(n)) + [i for i in masked for _ in range(r - 1)]


DATA_DEVICE_FRACTION = 0.25  # --data_device auto: the training device if the data takes < 25 % of its free memory


def resolve_data_device(requested: str, device: torch.device, nbytes: int) -> torch.device:
    """Where training images and prepared targets live: ``auto`` -> ``device`` when it is a GPU and
    ``nbytes`` is under a quarter of its free memory, else the host; ``cpu``/``cuda[:i]`` as given."""
    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise SceneError(f"--data_device {requested}: no CUDA GPU is visible; use --data_device cpu or auto")
        return torch.device(requested)
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes < DATA_DEVICE_FRACTION * free else torch.device("cpu")


def training_bytes(views: Sequence[View]) -> int:
    """Estimate of the device bytes the views take for training: uint8 images plus ~16 bytes per
    pixel of prepared segmentation targets on views with masks."""
    total = 0
    for v in views:
        total += v.image.numel() * v.image.element_size()
        if v.has_masks:
            total += 16 * v.image.shape[0] * v.image.shape[1]
    return total
