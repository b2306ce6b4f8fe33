"""Reading and writing images, label maps and confidence maps.

Convention: arrays are row-major ``[H, W]`` / ``[H, W, 3]``; sizes are reported as
``(width, height)`` like PIL. RGB is uint8 0..255 on disk; float images are in [0, 1].
Label maps are non-negative integer ids (0 = unlabelled / void / stuff, per format).

Every failure raises :class:`ImageReadError` (a ``ValueError``) with one line naming the
file; scene readers turn it into a ``SceneError``.
"""
from __future__ import annotations

import os
import zipfile
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "load_rgb",
    "load_label",
    "load_confidence",
    "load_depth",
    "image_size",
    "save_label_png",
    "save_rgb",
    "resize_nearest",
]

# PIL modes that hold one integer channel, i.e. a valid label map.
_LABEL_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}


class ImageReadError(ValueError):
    """A file could not be read as the image / label / confidence map it should be."""


def _ext(path) -> str:
    return os.path.splitext(str(path))[1].lower()


def _open_pil(path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _decode(path) -> Image.Image:
    """Open and fully decode; truncated or corrupt pixel data is reported here."""
    img = _open_pil(path)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({e})") from None
    return img


def _load_npy(path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as e:
        raise ImageReadError(f"{path}: not a readable .npy array ({e})") from None


def _npy_header_shape(fp, path) -> tuple:
    """Shape from an open ``.npy`` stream's header, reading only the header."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, _ = np.lib.format.read_array_header_2_0(fp)
        else:  # (3, 0): utf8 field names; no public reader, fall back to a mmap load below
            return ()
    except (ValueError, EOFError, OSError) as e:
        raise ImageReadError(f"{path}: not a readable .npy array ({e})") from None
    return tuple(shape)


def _hw_of_shape(shape: tuple, path) -> tuple[int, int]:
    if len(shape) < 2:
        raise ImageReadError(f"{path}: array of shape {shape} is not an image (need [H, W, ...])")
    return int(shape[1]), int(shape[0])


def image_size(path) -> tuple[int, int]:
    """``(width, height)`` of an image, ``.npy`` or ``.npz`` file without decoding pixels.

    PIL parses only the header (which also rejects files that are not images at all);
    ``.npy`` reads the array header; ``.npz`` reads the header of its ``confidence`` member
    (else its first member).
    """
    ext = _ext(path)
    if ext == ".npy":
        try:
            with open(path, "rb") as f:
                shape = _npy_header_shape(f, path)
        except FileNotFoundError:
            raise ImageReadError(f"{path}: file not found") from None
        if not shape:
            shape = np.load(path, mmap_mode="r").shape
        return _hw_of_shape(shape, path)
    if ext == ".npz":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if not names:
                    raise ImageReadError(f"{path}: empty .npz archive")
                member = "confidence.npy" if "confidence.npy" in names else names[0]
                with z.open(member) as f:
                    shape = _npy_header_shape(f, path)
        except FileNotFoundError:
            raise ImageReadError(f"{path}: file not found") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise ImageReadError(f"{path}: not a readable .npz archive ({e})") from None
        if not shape:
            shape = np.load(path)[member[:-4]].shape
        return _hw_of_shape(shape, path)
    with _open_pil(path) as img:
        return int(img.size[0]), int(img.size[1])


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``arr  # [h, w, ...]`` to ``size = (W, H)``.

    Convention: output pixel centre (x + 0.5) maps to input (x + 0.5) * w / W (pixel-centre
    alignment, as PIL's NEAREST), so integer down-scales pick one pixel of each block.
    """
    W, H = int(size[0]), int(size[1])
    h, w = arr.shape[:2]
    if (w, h) == (W, H):
        return arr
    rows = np.minimum(((np.arange(H) + 0.5) * (h / H)).astype(np.int64), h - 1)  # [H]
    cols = np.minimum(((np.arange(W) + 0.5) * (w / W)).astype(np.int64), w - 1)  # [W]
    return arr[rows[:, None], cols[None, :]]


def load_rgb(path, *, background: Optional[tuple] = None) -> np.ndarray:
    """RGB image as ``uint8 [H, W, 3]``.

    Alpha is dropped; with ``background=(r, g, b)`` in [0, 1] it is composited over that
    colour instead (NeRF-synthetic style). Grey and palette images become 3 channels; 16-bit
    grey becomes 8 bit (``round(v / 257)``); 16-bit RGB(A) PNGs are reduced to 8 bit by PIL.
    """
    img = _decode(path)
    if img.mode == "RGBA" and background is not None:
        rgba = np.asarray(img).astype(np.float32) / 255.0  # [H, W, 4]
        a = rgba[..., 3:4]
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
        out = rgba[..., :3] * a + bg * (1.0 - a)
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    if img.mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        arr = np.asarray(img)[..., :3]
    elif img.mode in ("L", "LA"):
        arr = np.repeat(np.asarray(img.convert("L"))[..., None], 3, axis=2)
    elif img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (PIL decodes 16-bit PNGs as I;16 or I): 0..65535 -> 0..255, rounded.
        grey = np.asarray(img).astype(np.float64)  # [H, W]
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise ImageReadError(f"{path}: {img.mode} image holds values outside 0..65535; save it as 8 or "
                                 f"16-bit RGB or grey")
        arr = np.repeat(np.rint(grey / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    elif img.mode == "F":
        raise ImageReadError(f"{path}: floating-point (mode F) image is not an RGB image; save it as 8 or "
                             f"16-bit RGB or grey")
    else:  # P, CMYK, YCbCr, 1, ...
        arr = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _as_label(arr: np.ndarray, path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: label map has shape {arr.shape}; expected one channel [H, W]")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ImageReadError(f"{path}: label map holds non-integer values; store integer ids")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ImageReadError(f"{path}: label map has dtype {arr.dtype}; store integer ids")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise ImageReadError(f"{path}: label map holds negative ids (min {out.min()})")
    return out


def _grey_of_colour(arr: np.ndarray, mode: str, path) -> np.ndarray:
    """The one channel of a colour-typed label image whose channels are equal (a grey mask saved
    as RGB / RGBA / LA); alpha is ignored. A colour-coded mask is an ImageReadError."""
    n = 1 if mode == "LA" else 3
    grey = arr[..., 0]  # [H, W]
    if n == 3 and not (np.array_equal(grey, arr[..., 1]) and np.array_equal(grey, arr[..., 2])):
        raise ImageReadError(
            f"{path}: label image is {mode} with different colour channels (a colour-coded mask?), so its "
            f"ids are ambiguous; store ids as a single-channel 8/16-bit PNG (map each colour to an integer id)")
    return grey


def load_label(path, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Label map as ``int64 [H, W]`` from a PNG (8 / 16 / 32 bit, palette indices) or ``.npy``.

    An RGB(A) / LA PNG whose colour channels are all equal is read as grey (alpha ignored); one
    with different channels (colour-coded ids) is an ImageReadError.

    No bit-depth assumption: the stored integers are returned as they are. ``size=(W, H)``
    resizes by nearest neighbour (the readers only accept masks of the image's aspect ratio).
    """
    if _ext(path) == ".npy":
        out = _as_label(_load_npy(path), path)
    else:
        img = _decode(path)
        if img.mode in _LABEL_MODES:
            out = _as_label(np.asarray(img), path)  # P mode: palette indices are the ids
        elif img.mode in ("RGB", "RGBA", "RGBX", "LA"):
            out = _as_label(_grey_of_colour(np.asarray(img), img.mode, path), path)
        else:
            raise ImageReadError(
                f"{path}: label image has mode {img.mode}; store ids as a single-channel 8/16-bit PNG")
    return resize_nearest(out, size) if size is not None else out


def load_confidence(path, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Per-pixel confidence as ``float32 [H, W]`` in [0, 1].

    ``.npz``: key ``confidence``; without it, the max over the last axis of ``probability``.
    ``.npy``: ``[H, W]`` (or ``[H, W, C]`` class probabilities -> max over C). uint8 maps
    are read as 0..255. ``size=(W, H)`` resizes by nearest neighbour.
    """
    if _ext(path) == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "confidence" in z.files:
                    arr = z["confidence"]
                elif "probability" in z.files:
                    arr = z["probability"]
                else:
                    raise ImageReadError(
                        f"{path}: no 'confidence' or 'probability' array (keys: {', '.join(z.files)})")
        except FileNotFoundError:
            raise ImageReadError(f"{path}: file not found") from None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            if isinstance(e, ImageReadError):
                raise
            raise ImageReadError(f"{path}: not a readable .npz archive ({e})") from None
    else:
        arr = _load_npy(path)
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[2] == 1 else arr.max(axis=2)  # class probabilities -> max
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: confidence has shape {arr.shape}; expected [H, W]")
    if arr.dtype == np.uint8:
        conf = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_:
        conf = arr.astype(np.float32)
    else:
        raise ImageReadError(f"{path}: confidence has dtype {arr.dtype}; expected float in [0, 1] or uint8")
    if not np.all(np.isfinite(conf)) or conf.min(initial=0.0) < -1e-3 or conf.max(initial=0.0) > 1 + 1e-3:
        raise ImageReadError(f"{path}: confidence outside [0, 1] (min {conf.min():.3g}, max {conf.max():.3g})")
    conf = np.clip(conf, 0.0, 1.0)
    return resize_nearest(conf, size) if size is not None else conf


def load_depth(path, *, png_scale: float = 1e-3) -> np.ndarray:
    """Depth map as ``float32 [H, W]``; 0 (or non-finite) = no measurement.

    Convention: PNG depth holds integers in units of ``png_scale`` metres (uint16 millimetres
    by default); ``.npy`` depth is already in metres.
    """
    if _ext(path) == ".npy":
        arr = _load_npy(path)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ImageReadError(f"{path}: depth has shape {arr.shape} dtype {arr.dtype}; expected numeric [H, W]")
        return arr.astype(np.float32)
    return (load_label(path).astype(np.float64) * png_scale).astype(np.float32)


def _ensure_parent(path) -> None:
    parent = os.path.dirname(os.path.abspath(str(path)))
    os.makedirs(parent, exist_ok=True)


def save_label_png(path, arr) -> None:
    """Write ``arr  # [H, W]`` integer ids as a PNG: 8 bit if max < 256, else 16 bit.

    Raises ``ValueError`` for negative ids, ids above 65535, non-integer or non-2D input.
    """
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{path}: label map must be [H, W], got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: label map must hold integers, got dtype {arr.dtype}")
    lo = int(arr.min()) if arr.size else 0
    hi = int(arr.max()) if arr.size else 0
    if lo < 0:
        raise ValueError(f"{path}: label map holds negative ids (min {lo}); PNG labels are unsigned")
    if hi > 65535:
        raise ValueError(f"{path}: label id {hi} does not fit a 16-bit PNG; save it as .npy")
    _ensure_parent(path)
    if hi < 256:
        Image.fromarray(arr.astype(np.uint8)).save(path, format="PNG")
    else:
        Image.fromarray(arr.astype(np.uint16)).save(path, format="PNG")  # mode I;16


def save_rgb(path, img) -> None:
    """Write ``img  # [H, W, 3]`` (uint8, or float in [0, 1], clipped) as PNG or JPEG by extension."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{path}: RGB image must be [H, W, 3], got shape {img.shape}")
    if np.issubdtype(img.dtype, np.floating):
        img = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"{path}: RGB image must be uint8 or float in [0, 1], got dtype {img.dtype}")
    ext = _ext(path)
    _ensure_parent(path)
    if ext in (".jpg", ".jpeg"):
        Image.fromarray(img).save(path, format="JPEG", quality=95)
    elif ext == ".png":
        Image.fromarray(img).save(path, format="PNG")
    else:
        raise ValueError(f"{path}: unsupported extension {ext!r}; use .png, .jpg or .jpeg")
