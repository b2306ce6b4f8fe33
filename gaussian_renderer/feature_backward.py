"""The feature-only backward of gsplat's rasterisation as one small matrix product per tile
(``csrc/feature_bwd.cu``), for the channels whose blending weights are constants
(``render(..., feature_geometry_grad=False)``: the segmentation features).

gsplat's backward kernel computes every geometry gradient and reduces each channel across a warp
for every (pixel, Gaussian) pair; for 29 feature channels whose geometry gradients are discarded
that is most of a UniC-Lift step on the GPU (benchmarks/RESULTS.md, 10a). The kernel here
recomputes each tile's blending weights front to back exactly as gsplat's forward does and
multiplies them with the tile's output gradient in shared memory.

It is built with ``nvcc`` (``$CUDA_HOME/bin/nvcc`` or the one on PATH, as gsplat's own build) on
first use, for the current GPU, into ``$UNIC_LIFT_CACHE`` (default ``~/.cache/unic_lift``), and
called through ctypes: no PyTorch extension headers are needed. On the bench scene the tile kernel made
the UniC-Lift step 1.31x faster (benchmarks/RESULTS.md, 11a). ``fused_backward`` also does gsplat's
geometry backward for the colour channels in the same walk, so each weight is computed once: 5-9 % more
it/s over whole 30k runs after the first 2000 iterations (28a). ``--feature_backward auto`` (the default,
``set_feature_backward``) takes it where its block fits the GPU's shared memory, else the sparse tile kernel.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Optional

import torch
from torch import Tensor

__all__ = ["FEATURE_BACKWARDS", "FeatureBackwardError", "feature_backward", "feature_backward_reference",
           "fused_backward", "fused_fits", "fused_supported", "load_library", "max_channels"]

FEATURE_BACKWARDS = ("gsplat", "tile", "tile_sparse", "fused")  # --feature_backward ("auto" picks)
FUSED_GEO, FUSED_MAX_FEATURES = 3, 32  # the fused kernel: 3 geometry colour channels, then at most 32 features
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "feature_bwd.cu")
MAX_CHANNELS = 64
_lock = threading.Lock()
_libs: dict = {}
_caps: dict = {}  # device index -> max_channels


class FeatureBackwardError(RuntimeError):
    """The tile kernel cannot be built or run here; the message is one line and says what to do."""


def _nvcc() -> Optional[str]:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _cache_dir() -> str:
    return os.environ.get("UNIC_LIFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "unic_lift")


def build_library(source: str, arch: str, what: str, flag: str, fallback: str) -> str:
    """The shared library of ``source`` for sm_``arch``: built with nvcc into the cache folder once (the file name
    holds a hash of the source), then reused. ``what`` / ``flag`` / ``fallback`` word the one-line errors."""
    with open(source, "rb") as fh:
        key = hashlib.sha1(fh.read() + arch.encode()).hexdigest()[:12]
    folder = _cache_dir()
    stem = os.path.splitext(os.path.basename(source))[0]
    so = os.path.join(folder, f"{stem}_{key}_sm{arch}.so")
    if os.path.isfile(so):
        return so
    nvcc = _nvcc()
    if nvcc is None:
        raise FeatureBackwardError(f"{flag}: nvcc not found (set CUDA_HOME or put nvcc on PATH, as for gsplat's "
                                   f"build), or use {fallback}")
    os.makedirs(folder, exist_ok=True)
    print(f"[unic-lift] building {what} for sm_{arch} into {folder} (once)", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)  # parallel first builds never clash
    os.close(fd)
    cmd = [nvcc, "-O3", "-std=c++17", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-shared",
           "-Xcompiler", "-fPIC", source, "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        os.unlink(tmp)
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise FeatureBackwardError(f"{source}: nvcc failed ({last}); use {fallback}")
    os.replace(tmp, so)
    return so


def load_library(device: Optional[torch.device] = None) -> ctypes.CDLL:
    """The compiled kernel for ``device``'s compute capability (built once, then cached on disk)."""
    if not torch.cuda.is_available():
        raise FeatureBackwardError("--feature_backward tile needs a CUDA GPU; use --feature_backward gsplat")
    major, minor = torch.cuda.get_device_capability(device)
    arch = f"{major}{minor}"
    with _lock:
        if arch in _libs:
            return _libs[arch]
        so = build_library(SOURCE, arch, "the tile kernel", "--feature_backward tile", "--feature_backward gsplat")
        lib = ctypes.CDLL(so)
        fn = lib.unic_feature_bwd
        fn.restype = ctypes.c_int
        p, i = ctypes.c_void_p, ctypes.c_int
        fn.argtypes = [p, p, p, p, p, i, p, i, i, p, i, i, i, i, i, i, p, i]
        fused = lib.unic_fused_bwd
        fused.restype = ctypes.c_int
        fused.argtypes = [p, p, p, p, i, i, p, p, p, i, p, p, p, p, p, p, p, p, i, i, i, i, i, p]
        lib.unic_feature_bwd_error.restype = ctypes.c_char_p
        lib.unic_feature_bwd_error.argtypes = [i]
        lib.unic_feature_bwd_max_channels.restype = ctypes.c_int
        lib.unic_feature_bwd_max_channels.argtypes = [i]
        lib.unic_fused_bwd_fits.restype = ctypes.c_int
        lib.unic_fused_bwd_fits.argtypes = [i]
        idx = _device_index(device)
        cap = _caps[idx] = int(lib.unic_feature_bwd_max_channels(idx))
        if cap <= 0:
            raise FeatureBackwardError("the tile kernel needs about 66 KB of shared memory per block, more than "
                                       f"{torch.cuda.get_device_name(device)} gives; use --feature_backward gsplat")
        _libs[arch] = lib
        return lib


def max_channels(device: Optional[torch.device] = None) -> int:
    """The most feature channels the tile kernel takes on ``device`` (64, or 32 where a block's shared
    memory holds only the narrow width); the rasterizer uses gsplat's kernel for wider renders."""
    idx = _device_index(device)
    if idx not in _caps:
        _caps[idx] = int(load_library(device).unic_feature_bwd_max_channels(idx))
    return _caps[idx]


def _device_index(device: Optional[torch.device]) -> int:
    index = None if device is None else torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def feature_backward(means2d: Tensor, conics: Tensor, opacities: Tensor, isect_offsets: Tensor,
                     flatten_ids: Tensor, v_render: Tensor, n_geo: int, n_feat: int, width: int, height: int,
                     tile_size: int = 16, sparse: bool = False, out: Optional[Tensor] = None) -> Tensor:
    """[N, n_feat] gradient of channels ``n_geo .. n_geo + n_feat`` of one camera's render with the
    blending weights held constant: sum over pixels of w_gp * v_render[p, channel].

    Args (gsplat's one-camera layout, float32 / int32, on one CUDA device):
        means2d [1, N, 2], conics [1, N, 3], opacities [1, N]; isect_offsets [1, th, tw];
        flatten_ids [n_isects]; v_render [1, H, W, D] (D >= n_geo + n_feat) the output gradient.
    ``sparse``: each batch's product over its active pixels only (``tile_sparse``; bit-identical result).
    ``out``: a zeroed, contiguous float32 [..., N, D] (D >= n_geo + n_feat) to add the gradient into, at
    columns ``n_geo ..`` (the whole colour gradient of the render, written in place: no concatenation
    after); returned as given. None: a new [N, n_feat].
    """
    if not 1 <= n_feat <= MAX_CHANNELS:
        raise ValueError(f"feature_backward: 1..{MAX_CHANNELS} channels, got {n_feat}")
    n = means2d.shape[-2]
    D = v_render.shape[-1]
    if v_render.shape[-3:-1] != (height, width) or D < n_geo + n_feat:
        raise ValueError(f"feature_backward: v_render {tuple(v_render.shape)} does not hold {n_geo} + {n_feat} "
                         f"channels of a {width}x{height} image")
    if out is not None and (out.dtype != torch.float32 or not out.is_contiguous() or out.device != v_render.device
                            or out.shape[-1] < n_geo + n_feat or out.numel() != n * out.shape[-1]):
        raise ValueError(f"feature_backward: out {tuple(out.shape)} {out.dtype} must be a contiguous float32 "
                         f"[N={n}, D >= {n_geo + n_feat}] on {v_render.device}")
    tensors = [t.contiguous() for t in (means2d, conics, opacities, isect_offsets, flatten_ids, v_render)]
    means2d, conics, opacities, isect_offsets, flatten_ids, v_render = tensors
    if any(t.dtype != torch.float32 for t in (means2d, conics, opacities, v_render)) or \
            any(t.dtype != torch.int32 for t in (isect_offsets, flatten_ids)):
        raise ValueError("feature_backward: float32 geometry and gradient, int32 tile offsets and ids")
    lib = load_library(v_render.device)
    if out is None:
        out, offset = torch.zeros(n, n_feat, device=v_render.device, dtype=torch.float32), 0
    else:
        offset = n_geo
    th, tw = isect_offsets.shape[-2], isect_offsets.shape[-1]
    with torch.cuda.device(v_render.device):  # the kernel launches on the thread's current device
        stream = torch.cuda.current_stream(v_render.device).cuda_stream
        code = lib.unic_feature_bwd(
            means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(), isect_offsets.data_ptr(),
            flatten_ids.data_ptr(), int(flatten_ids.numel()), v_render.data_ptr() + 4 * n_geo, D, n_feat,
            out.data_ptr() + 4 * offset, int(out.shape[-1]), int(width), int(height), int(tile_size), int(tw), int(th),
            stream, int(bool(sparse)))
    if code != 0:
        raise FeatureBackwardError(f"feature_backward: {lib.unic_feature_bwd_error(code).decode()}")
    return out


def fused_fits(device: Optional[torch.device] = None) -> bool:
    """Whether the fused kernel's block fits ``device``'s shared memory (the kernel library asks the device;
    about 68 KB per block, so every GPU that takes the tile kernel at 64 channels, and Volta's 96 KB)."""
    return load_library(device).unic_fused_bwd_fits(_device_index(device)) == 1


def fused_supported(n_geo: int, n_feat: int, tile_size: int) -> bool:
    """Whether ``fused_backward`` takes this render (else the rasterizer uses the tile kernel)."""
    return n_geo == FUSED_GEO and 1 <= n_feat <= FUSED_MAX_FEATURES and tile_size == 16


def fused_backward(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, background: Optional[Tensor],
                   isect_offsets: Tensor, flatten_ids: Tensor, render_alphas: Tensor, last_ids: Tensor,
                   v_render: Tensor, v_render_alphas: Tensor, width: int, height: int,
                   tile_size: int = 16) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """gsplat's rasterize-to-pixels backward for the first 3 colour channels (and alpha) and the tile
    kernel's product for the other ``D - 3`` (their blending weights held constant), in ONE kernel that
    computes each (pixel, Gaussian) weight once (``csrc/feature_bwd.cu``, ``fused_bwd_kernel``).

    Args (gsplat's one-camera layout): means2d [1, N, 2], conics [1, N, 3], opacities [1, N], colors
    [1, N, D] (geometry colour first), background [1, 3] or None; isect_offsets [1, th, tw], flatten_ids
    [n_isects] int32; render_alphas [1, H, W, 1] and last_ids [1, H, W] int32 from gsplat's forward;
    v_render [1, H, W, D], v_render_alphas [1, H, W, 1].
    Returns (v_means2d [1, N, 2], v_conics [1, N, 3], v_opacities [1, N], v_colors [1, N, D])."""
    n, D = colors.shape[-2], colors.shape[-1]
    n_feat = D - FUSED_GEO
    if not fused_supported(FUSED_GEO, n_feat, tile_size):
        raise ValueError(f"fused_backward: 3 geometry + 1..{FUSED_MAX_FEATURES} feature channels and 16 px tiles, "
                         f"got {D} channels and {tile_size} px tiles")
    if v_render.shape[-1] != D or v_render.shape[-3:-1] != (height, width):
        raise ValueError(f"fused_backward: v_render {tuple(v_render.shape)} is not a {width}x{height} image of {D} "
                         "channels")
    floats = [t.contiguous() for t in (means2d, conics, opacities, colors, render_alphas, v_render, v_render_alphas)]
    ints = [t.contiguous() for t in (isect_offsets, flatten_ids, last_ids)]
    if any(t.dtype != torch.float32 for t in floats) or any(t.dtype != torch.int32 for t in ints):
        raise ValueError("fused_backward: float32 geometry, colours and gradients; int32 tile offsets, ids, last ids")
    means2d, conics, opacities, colors, render_alphas, v_render, v_render_alphas = floats
    isect_offsets, flatten_ids, last_ids = ints
    bg = None
    if background is not None:
        bg = background.reshape(-1).contiguous()
        if bg.numel() != FUSED_GEO or bg.dtype != torch.float32:
            raise ValueError(f"fused_backward: background must hold {FUSED_GEO} float32 values, "
                             f"got {tuple(background.shape)}")
    lib = load_library(v_render.device)
    dev = v_render.device
    # the four gradients as contiguous blocks of ONE zeroed buffer: one allocation and one fill, not four
    flat = torch.zeros(n * (6 + D), device=dev)
    v_means2d = flat[:2 * n].view(1, n, 2)
    v_conics = flat[2 * n:5 * n].view(1, n, 3)
    v_opacities = flat[5 * n:6 * n].view(1, n)
    v_colors = flat[6 * n:].view(1, n, D)
    th, tw = isect_offsets.shape[-2], isect_offsets.shape[-1]
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        code = lib.unic_fused_bwd(
            means2d.data_ptr(), conics.data_ptr(), opacities.data_ptr(), colors.data_ptr(), D, n_feat,
            None if bg is None else bg.data_ptr(), isect_offsets.data_ptr(), flatten_ids.data_ptr(),
            int(flatten_ids.numel()), render_alphas.data_ptr(), last_ids.data_ptr(), v_render.data_ptr(),
            v_render_alphas.data_ptr(), v_means2d.data_ptr(), v_conics.data_ptr(), v_opacities.data_ptr(),
            v_colors.data_ptr(), int(width), int(height), int(tile_size), int(tw), int(th), stream)
    if code != 0:
        raise FeatureBackwardError(f"fused_backward: {lib.unic_feature_bwd_error(code).decode()}")
    return v_means2d, v_conics, v_opacities, v_colors


@torch.no_grad()
def feature_backward_reference(means2d: Tensor, conics: Tensor, opacities: Tensor, isect_offsets: Tensor,
                               flatten_ids: Tensor, v_render: Tensor, width: int, height: int,
                               tile_size: int = 16) -> Tensor:
    """The tile kernel's algorithm in PyTorch, step for step (any device and dtype): per tile, the
    Gaussians of its list front to back, each pixel's weight alpha * T with gsplat's forward rules
    (alpha = min(0.999, o exp(-sigma)); skipped when sigma < 0 or alpha < 1/255; a pixel stops,
    exclusively, at the Gaussian that would bring T to <= 1e-4), times the tile's output gradient.
    Loops over tiles and intersections: for tests on tiny scenes, never for training.

    Args: means2d [N, 2], conics [N, 3], opacities [N]; isect_offsets [th, tw] (start of each tile's list
    in ``flatten_ids``); v_render [H, W, C]. Returns [N, C]."""
    n, C = means2d.shape[0], v_render.shape[-1]
    offsets = isect_offsets.reshape(-1).tolist()
    tw = isect_offsets.shape[-1]
    out = v_render.new_zeros(n, C)
    ar = torch.arange(tile_size, device=v_render.device)
    for tile, start in enumerate(offsets):
        end = offsets[tile + 1] if tile + 1 < len(offsets) else flatten_ids.numel()
        if end <= start:
            continue
        ty, tx = divmod(tile, tw)
        i = (ty * tile_size + ar)[:, None].expand(tile_size, tile_size).reshape(-1)  # [P] rows
        j = (tx * tile_size + ar)[None, :].expand(tile_size, tile_size).reshape(-1)  # [P] columns
        inside = (i < height) & (j < width)
        V = v_render[i.clamp(max=height - 1), j.clamp(max=width - 1)] * inside[:, None]  # [P, C]
        px, py = j.to(v_render.dtype) + 0.5, i.to(v_render.dtype) + 0.5
        T = torch.ones_like(px)
        done = ~inside
        for g in flatten_ids[start:end].tolist():
            if bool(done.all()):
                break
            dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
            sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
            alpha = torch.clamp_max(opacities[g] * torch.exp(-sigma), 0.999)
            blends = ~done & ~(sigma < 0) & ~(alpha < 1.0 / 255.0)
            next_T = T * (1 - alpha)
            stop = blends & (next_T <= 1e-4)
            done = done | stop
            take = blends & ~stop
            w = torch.where(take, alpha * T, torch.zeros_like(T))  # [P]
            T = torch.where(take, next_T, T)
            out[g] += w @ V
    return out
