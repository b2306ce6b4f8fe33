"""``rasterize()``: one camera, one signature, two backends (gsplat CUDA or pure PyTorch).

Convention: ``viewmat`` is world-to-camera in OpenCV axes (x right, y down, z forward);
``K`` puts the centre of pixel (u, v) at (u + 0.5, v + 0.5); quaternions are wxyz and are
normalised inside both backends; scales and opacities are activated (scales > 0, opacities in
(0, 1)); ``colors`` are any per-Gaussian channels, blended as they are.
"""
from __future__ import annotations

import math
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


def _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background,
                  detached_channels=0) -> None:
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
    if int(detached_channels) != detached_channels or not 0 <= detached_channels <= colors.shape[1]:
        raise ValueError(f"detached_channels must be an integer in 0..D={colors.shape[1]}, got {detached_channels}")


def _require_gsplat(means: Tensor) -> None:
    if not (torch.cuda.is_available() and means.is_cuda):
        # Importing is harmless, but the first CUDA call on a machine with nvcc starts a
        # long JIT build: refuse before reaching it.
        raise RuntimeError("backend='gsplat' needs CUDA tensors on a machine with a CUDA GPU")
    if means.dtype != torch.float32:
        raise TypeError(f"backend='gsplat' rasterizes float32 only, got {means.dtype}")


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmat, K, width, height,
    near_plane, far_plane, eps2d, background,
) -> tuple[Tensor, Tensor, dict]:
    _require_gsplat(means)
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


GSPLAT_CHANNELS = (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512, 513)

# Which kernel computes the detached channels' colour gradient in _RasterizeSplitGrad's backward:
# "gsplat" (its full backward kernel, geometry gradients discarded), "tile" or "tile_sparse"
# (feature_backward.py), or "fused" (one kernel for the geometry's backward and the features' product).
# The tile kernel on a second CUDA stream beside gsplat's geometry backward was measured on a machine
# whose host held the step back, and dropped: the overlap hid nothing there (RESULTS.md 20a, 21a).
_FEATURE_BACKWARD = "gsplat"


def set_feature_backward(kind: str) -> Optional[str]:
    """Selects the detached channels' backward kernel (``--feature_backward``): "gsplat" | "tile" |
    "tile_sparse" | "fused" | "auto". The tile kernels are built here and now (one-line ``FeatureBackwardError``
    when they cannot be); "auto" takes "fused" where its block fits the GPU's shared memory, else
    "tile_sparse", and "gsplat" where neither builds, returning why.

    "tile_sparse" rather than "tile" (H200, 4000 iterations, RESULTS.md 12a): backward 3.77 -> 3.09 ms
    per iteration, 119.5 -> 140.9 it/s, same PSNR and PQ^scene. "fused" rather than "tile_sparse" (H200,
    whole 30k runs, RESULTS.md 28a): 262.7 s against 279.1 s, 5-9 % more it/s after the first 2000
    iterations; the same gradients to float rounding (tests/test_feature_backward.py); PQ^scene within the
    seed noise. A render it does not take (not 3 colour + 1..32 feature channels) falls back to
    "tile_sparse" in the backward."""
    global _FEATURE_BACKWARD
    from gaussian_renderer.feature_backward import FEATURE_BACKWARDS, FeatureBackwardError, fused_fits, load_library

    if kind == "auto":
        try:
            set_feature_backward("tile_sparse")
        except FeatureBackwardError as e:
            _FEATURE_BACKWARD = "gsplat"
            return str(e)
        if fused_fits():
            _FEATURE_BACKWARD = "fused"
        return None
    if kind not in FEATURE_BACKWARDS:
        raise ValueError(f"--feature_backward {kind}: use one of auto, {', '.join(FEATURE_BACKWARDS)}")
    if kind != "gsplat":
        load_library()
    _FEATURE_BACKWARD = kind
    return None


def feature_backward_kind() -> str:
    return _FEATURE_BACKWARD
GSPLAT_TILE_SIZE = 16


def column_block(v: Tensor) -> Optional[tuple]:
    """``(table, first)`` with ``v`` = ``table[:, first:first + v.shape[1]]`` for a contiguous 2D ``table`` (``v``
    itself and 0 when ``v`` is contiguous), or None: how the render and L_3D's kernel find a packed feature
    parameter (``GaussianModel.pack_features``) behind its column views."""
    if v.dim() != 2:
        return None
    base = v._base
    if v.is_contiguous():  # itself, or the whole of the tensor it views (table[:, 0:W] of a [N, W] table)
        whole = (base is not None and base.shape == v.shape and base.is_contiguous()
                 and base.data_ptr() == v.data_ptr() and base.requires_grad == v.requires_grad)
        return (base if whole else v), 0
    if (base is None or base.dim() != 2 or not base.is_contiguous() or base.shape[0] != v.shape[0]
            or v.stride(1) != 1 or v.stride(0) != base.shape[1]):
        return None
    first = v.storage_offset() - base.storage_offset()
    return (base, first) if 0 <= first <= base.shape[1] - v.shape[1] else None


def _pad_channels(x: Optional[Tensor]) -> Optional[Tensor]:
    """Zero-pads the last axis to the next channel count gsplat's kernels are compiled for."""
    if x is None:
        return None
    d = x.shape[-1]
    target = next((c for c in GSPLAT_CHANNELS if c >= d), None)
    if target is None:
        raise ValueError(f"gsplat rasterizes at most {GSPLAT_CHANNELS[-1]} channels, got {d}")
    if target == d:
        return x.contiguous()
    return torch.cat([x, x.new_zeros(*x.shape[:-1], target - d)], dim=-1).contiguous()


class _RasterizeSplitGrad(torch.autograd.Function):
    """gsplat's rasterize-to-pixels: ONE forward kernel over ``[geo | feat]`` channels, and two
    backward kernels: one with the ``geo`` channels' output gradient (and alpha's), whose means2d,
    conics, opacities and colour gradients are returned; one with the ``feat`` channels' output
    gradient and a zero alpha gradient, of which only the colour gradient is kept. So the
    ``feat`` channels see the blending weights as constants.

    The forward outputs (alpha, last ids) do not depend on the colours, and the backward kernel
    only reads the channels it is given (its alpha gradient sums ``(c T - S / (1 - a)) dL/dc``
    over them), so each backward pass is exactly gsplat's backward of a render of those channels.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, n_geo, background, width, height, tile_size,
                isect_offsets, flatten_ids):
        # means2d [1, N, 2], conics [1, N, 3], opacities [1, N], colors [1, N, G + F] (geo first),
        # background [1, G + F] or None; isect_offsets [1, th, tw], flatten_ids [I] int32
        from gsplat.cuda._wrapper import _make_lazy_cuda_func

        n_feat = colors.shape[-1] - n_geo
        bg = _pad_channels(background)
        render, alphas, last_ids = _make_lazy_cuda_func("rasterize_to_pixels_3dgs_fwd")(
            means2d, conics, _pad_channels(colors), opacities, bg, None, width, height, tile_size,
            isect_offsets, flatten_ids,
        )  # [1, H, W, D_pad], [1, H, W, 1], [1, H, W]
        bg_geo = None if background is None else background[..., :n_geo]
        ctx.save_for_backward(means2d, conics, opacities, colors, bg_geo, isect_offsets, flatten_ids,
                              alphas, last_ids)
        ctx.dims = (width, height, tile_size, n_geo, n_feat)
        # One output of G + F channels (the caller splits views of it): no copy unless padded.
        return render[..., :n_geo + n_feat].contiguous(), alphas

    @staticmethod
    def backward(ctx, v_render, v_alphas):
        from gsplat.cuda._wrapper import _make_lazy_cuda_func

        means2d, conics, opacities, colors, bg_geo, isect_offsets, flatten_ids, alphas, last_ids = ctx.saved_tensors
        width, height, tile_size, n_geo, n_feat = ctx.dims
        bwd = _make_lazy_cuda_func("rasterize_to_pixels_3dgs_bwd")
        common = (width, height, tile_size, isect_offsets, flatten_ids, alphas, last_ids)

        v_means2d = v_conics = v_opacities = v_colors = v_background = None
        v_geo_colors = None  # [1, N, >= G] the geo channels' colour gradient (G = 0: none)
        need_colors = ctx.needs_input_grad[3]
        fused = need_colors and _FEATURE_BACKWARD == "fused" and any(ctx.needs_input_grad[:3])
        if fused:  # 3 colour + at most 32 feature channels; other renders take the tile kernel
            from gaussian_renderer.feature_backward import fused_supported

            fused = fused_supported(n_geo, n_feat, tile_size)
        tile_kernel = (not fused and need_colors and _FEATURE_BACKWARD != "gsplat" and n_feat > 0
                       and tile_size == 16)
        if tile_kernel:  # wider than this GPU's shared memory holds: gsplat's kernel for this render
            from gaussian_renderer.feature_backward import max_channels

            tile_kernel = n_feat <= max_channels(colors.device)
        geo_backward = not fused and (any(ctx.needs_input_grad[:3]) or (need_colors and n_geo))
        if fused:
            # geometry, the geo channels and the detached features from one walk over the tiles
            from gaussian_renderer.feature_backward import fused_backward

            v_means2d, v_conics, v_opacities, v_colors = fused_backward(
                means2d, conics, opacities, colors, bg_geo, isect_offsets, flatten_ids, alphas, last_ids,
                v_render, v_alphas, width, height, tile_size)
        if tile_kernel:
            # the detached channels: the tile kernel's weights-times-gradient product, no geometry work,
            # written straight into their columns of the colour gradient (no concatenation after)
            from gaussian_renderer.feature_backward import feature_backward

            v_colors = torch.zeros_like(colors)  # [1, N, G + F]
            feature_backward(means2d, conics, opacities, isect_offsets, flatten_ids, v_render,
                             n_geo, n_feat, width, height, tile_size, sparse=_FEATURE_BACKWARD != "tile",
                             out=v_colors)
        if geo_backward:
            # geometry and the geo channels: gsplat's backward of a render of those channels alone
            # (skipped for a features-only render of a geometry-detached model: --seg_scale)
            _, v_means2d, v_conics, v_geo_colors, v_opacities = bwd(
                means2d, conics, _pad_channels(colors[..., :n_geo]), opacities, _pad_channels(bg_geo), None,
                *common, _pad_channels(v_render[..., :n_geo]), v_alphas.contiguous(), False,
            )
        if fused:
            pass  # v_colors holds every channel already
        elif tile_kernel:
            if n_geo:
                v_colors[..., :n_geo] = v_geo_colors[..., :n_geo]
        elif need_colors and colors.shape[-1] in GSPLAT_CHANNELS:
            # the detached channels: their colour gradient only (the weights are constants for them).
            # The block is a width gsplat is compiled for: pass it whole with the geo channels' output
            # gradient zeroed (each channel's colour gradient reads its own output gradient only), so
            # neither the colours nor the gradients are copied into padded blocks and concatenated.
            v_feat = v_render.clone()
            v_feat[..., :n_geo] = 0.0
            v_colors = bwd(means2d, conics, colors, opacities, None, None, *common, v_feat,
                           torch.zeros_like(v_alphas), False)[3]
            if n_geo:
                v_colors[..., :n_geo] = v_geo_colors[..., :n_geo]
        elif need_colors:
            v_feat_colors = bwd(
                means2d, conics, _pad_channels(colors[..., n_geo:]), opacities, None, None, *common,
                _pad_channels(v_render[..., n_geo:]), torch.zeros_like(v_alphas), False,
            )[3]
            v_colors = _with_geo(v_geo_colors, v_feat_colors[..., :n_feat], n_geo)
        if ctx.needs_input_grad[5]:
            v_background = (v_render * (1.0 - alphas)).sum(dim=(-3, -2))  # [1, G + F]
        return (v_means2d, v_conics, v_opacities, v_colors, None, v_background,
                None, None, None, None, None)


def _with_geo(v_geo_colors: Optional[Tensor], v_feat: Tensor, n_geo: int) -> Tensor:
    """[1, N, G + F]: the geo channels' colour gradient (none when G = 0) then the features'."""
    return torch.cat([v_geo_colors[..., :n_geo], v_feat], dim=-1) if n_geo else v_feat.contiguous()


def _rasterize_gsplat_split(
    means, quats, scales, opacities, colors, viewmat, K, width, height,
    near_plane, far_plane, eps2d, background, detached_channels,
) -> tuple[Tensor, Tensor, dict]:
    """What ``gsplat.rasterization(..., packed=False, rasterize_mode="classic")`` does for one
    camera, with the pixel stage replaced by ``_RasterizeSplitGrad``: the last
    ``detached_channels`` channels get colour gradients only."""
    from gsplat.cuda._wrapper import fully_fused_projection, isect_offset_encode, isect_tiles

    n = means.shape[0]
    radii, means2d, depths, conics, _ = fully_fused_projection(
        means, None, quats, scales, viewmat[None], K[None], width, height,
        eps2d=eps2d, near_plane=near_plane, far_plane=far_plane, radius_clip=0.0,
        packed=False, sparse_grad=False, calc_compensations=False, camera_model="pinhole",
        opacities=opacities,
    )  # radii [1, N, 2] int32, means2d [1, N, 2], depths [1, N], conics [1, N, 3]
    tile_size = GSPLAT_TILE_SIZE
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    tiles_per_gauss, isect_ids, flatten_ids = isect_tiles(
        means2d, radii, depths, tile_size, tile_width, tile_height, segmented=False, packed=False,
        n_images=1, image_ids=None, gaussian_ids=None,
    )
    isect_offsets = isect_offset_encode(isect_ids, 1, tile_width, tile_height)
    isect_offsets = isect_offsets.reshape(1, tile_height, tile_width)

    opacities_c = opacities[None]  # [1, N]
    n_geo = colors.shape[1] - detached_channels
    bg = None if background is None else background[None].contiguous()  # [1, G + F]
    render, alpha = _RasterizeSplitGrad.apply(
        means2d.contiguous(), conics.contiguous(), opacities_c.contiguous(), colors[None].contiguous(), n_geo, bg,
        width, height, tile_size, isect_offsets.contiguous(), flatten_ids.contiguous(),
    )  # [1, H, W, D], [1, H, W, 1]
    render = render[0]
    meta = {
        "batch_ids": None, "camera_ids": None, "gaussian_ids": None,
        "radii": radii, "means2d": means2d, "depths": depths, "conics": conics,
        "opacities": opacities_c,
        "tile_width": tile_width, "tile_height": tile_height, "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": isect_ids, "flatten_ids": flatten_ids, "isect_offsets": isect_offsets,
        "width": width, "height": height, "tile_size": tile_size, "n_batches": 1, "n_cameras": 1,
    }
    assert means2d.shape == (1, n, 2)
    return render, alpha[0], meta


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
    detached_channels: int = 0,
) -> tuple[Tensor, Tensor, dict]:
    """Rasterizes N Gaussians into one camera.

    Returns ``render`` [H, W, D], ``alpha`` [H, W, 1] and ``info`` with the keys gsplat's
    ``DefaultStrategy`` reads: ``means2d`` [1, N, 2] (in the autograd graph; call
    ``retain_grad()`` on it before backward), ``radii`` [1, N, 2] int32 (0 = culled),
    ``depths`` [1, N], ``width``, ``height``, ``n_cameras`` (= 1), ``gaussian_ids`` (None), plus
    ``backend``. Both backends compute the same function (see ``torch_rasterizer``).

    ``detached_channels``: the last that many channels of ``colors`` are blended in the same
    pass, but their gradient reaches only their colours (the blending weights are constants for
    them): values and every gradient equal those of a call without them plus a second call
    for them alone from detached means, quats, scales and opacities, and ``means2d.grad``
    holds the first call's gradient only. ``alpha`` keeps its geometry gradient.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmat, K, width, height, background,
                  detached_channels)
    chosen = resolve_backend(backend, means.device)
    args = (means, quats, scales, opacities, colors, viewmat, K, int(width), int(height))
    if chosen == "gsplat" and detached_channels:
        _require_gsplat(means)
        render, alpha, info = _rasterize_gsplat_split(*args, near_plane, far_plane, eps2d, background,
                                                      int(detached_channels))
    elif chosen == "gsplat":
        render, alpha, info = _rasterize_gsplat(*args, near_plane, far_plane, eps2d, background)
    else:
        render, alpha, info = rasterize_torch(
            *args, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, background=background,
            detached_channels=int(detached_channels),
        )
    info["backend"] = chosen
    return render, alpha, info
