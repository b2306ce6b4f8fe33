"""``rasterize()``: one camera, one signature, two backends (gsplat CUDA or pure PyTorch).

Convention: ``viewmat`` is world-to-camera in OpenCV axes (x right, y down, z forward);
``K`` puts the centre of pixel (u, v) at (u + 0.5, v + 0.5); quaternions are wxyz and are
normalised inside both backends; scales and opacities are activated (scales > 0, opacities in
(0, 1)); ``colors`` are any per-Gaussian channels, blended as they are.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from .torch_rasterizer import rasterize_torch

BACKENDS = ("auto", "gsplat", "torch")
BACKEND_ENV = "UNICLIFT_BACKEND"  # "torch" forces the torch backend wherever "auto" is asked


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"`` -> ``"gsplat"`` for CUDA tensors (unless $UNICLIFT_BACKEND=torch), else ``"torch"``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced not in ("", "auto", "torch"):
        raise ValueError(f"${BACKEND_ENV} must be 'torch' or 'auto' (or unset), got {forced!r}")
    if forced == "torch":
        return "torch"
    return "gsplat" if device.type == "cuda" and torch.cuda.is_available() else "torch"


def _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background) -> None:
    if not isinstance(means, Tensor) or means.dim() != 2 or means.shape[1] != 3:
        got = list(means.shape) if isinstance(means, Tensor) else type(means).__name__
        raise ValueError(f"means must have shape [N, 3], got {got}")
    n = means.shape[0]
    expected = {
        "quats": (quats, (n, 4)),
        "scales": (scales, (n, 3)),
        "opacities": (opacities, (n,)),
        "viewmat": (viewmat, (4, 4)),
        "K": (K, (3, 3)),
    }
    for name, (t, shape) in expected.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)} (N from means), got {list(t.shape)}")
    if not isinstance(colors, Tensor) or colors.dim() != 2 or colors.shape[0] != n or colors.shape[1] < 1:
        got = list(colors.shape) if isinstance(colors, Tensor) else type(colors).__name__
        raise ValueError(f"colors must have shape [N={n}, D>=1], got {got}")
    tensors = [means, quats, scales, opacities, colors, viewmat, K]
    if background is not None:
        if not isinstance(background, Tensor) or tuple(background.shape) != (colors.shape[1],):
            got = list(background.shape) if isinstance(background, Tensor) else type(background).__name__
            raise ValueError(f"background must have shape [D={colors.shape[1]}], got {got}")
        tensors.append(background)
    if any(not t.is_floating_point() for t in tensors):
        raise TypeError("all rasterizer inputs must be floating-point tensors")
    if len({t.dtype for t in tensors}) != 1:
        raise TypeError(f"rasterizer inputs mix dtypes: {sorted({str(t.dtype) for t in tensors})}")
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"rasterizer inputs are on several devices: {sorted({str(t.device) for t in tensors})}")
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"width and height must be positive integers, got {width}x{height}")


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmat, K, width, height,
    near_plane, far_plane, eps2d, background,
) -> tuple[Tensor, Tensor, dict]:
    if not (torch.cuda.is_available() and means.is_cuda):
        # Importing is harmless, but the first CUDA call on a machine with nvcc starts a
        # long JIT build: refuse before reaching it.
        raise RuntimeError("backend='gsplat' needs CUDA tensors on a machine with a CUDA GPU")
    if means.dtype != torch.float32:
        raise TypeError(f"backend='gsplat' rasterizes float32 only, got {means.dtype}")
    from gsplat import rasterization

    render, alpha, meta = rasterization(
        means, quats, scales, opacities, colors,
        viewmat[None], K[None], int(width), int(height),  # one camera: C = 1
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
        sh_degree=None, packed=False, render_mode="RGB", rasterize_mode="classic",
        backgrounds=None if background is None else background[None],
    )
    # render [1, H, W, D], alpha [1, H, W, 1]; meta holds means2d [1, N, 2], radii [1, N, 2], ...
    return render[0], alpha[0], meta


def rasterize(
    means: Tensor,  # [N, 3] world space
    quats: Tensor,  # [N, 4] wxyz, any nonzero norm (normalised inside)
    scales: Tensor,  # [N, 3] activated, > 0
    opacities: Tensor,  # [N] activated, in (0, 1)
    colors: Tensor,  # [N, D] any D >= 1
    viewmat: Tensor,  # [4, 4] world-to-camera
    K: Tensor,  # [3, 3] pinhole intrinsics in pixels
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    background: Optional[Tensor] = None,  # [D] added as T_final * background
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Rasterizes N Gaussians into one camera.

    Returns ``render`` [H, W, D], ``alpha`` [H, W, 1] and ``info`` with the keys gsplat's
    ``DefaultStrategy`` reads: ``means2d`` [1, N, 2] (in the autograd graph; call
    ``retain_grad()`` on it before backward), ``radii`` [1, N, 2] int32 (0 = culled),
    ``depths`` [1, N], ``width``, ``height``, ``n_cameras`` (= 1), ``gaussian_ids`` (None), plus
    ``backend``. Both backends compute the same function (see ``torch_rasterizer``).
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background)
    chosen = resolve_backend(backend, means.device)
    args = (means, quats, scales, opacities, colors, viewmat, K, int(width), int(height))
    if chosen == "gsplat":
        render, alpha, info = _rasterize_gsplat(*args, near_plane, far_plane, eps2d, background)
    else:
        render, alpha, info = rasterize_torch(
            *args, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, background=background
        )
    info["backend"] = chosen
    return render, alpha, info
