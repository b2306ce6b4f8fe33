"""Rendering of a Gaussian model into one camera: RGB, any feature channels and depth.

``render()`` evaluates SH colour itself (gsplat's fused SH kernel on the gsplat backend,
``utils.sh_utils.eval_sh`` otherwise) and rasterizes every requested channel (RGB, each
feature, camera z for depth) in ONE ``rasterize()`` call, so all of them share exactly the same
blending weights, then splits the result. With ``feature_geometry_grad=False`` the features are
still blended in that one pass, but their gradients stop at the feature values (see
``rasterize(detached_channels=...)``). Features that are the column blocks of one packed parameter, after a
3-column slot (``GaussianModel.pack_features``), are not concatenated: the colour is written into the slot and
the parameter is the rasterizer's input (``_ColourIntoSlot``). The backend is gsplat's CUDA rasterizer for CUDA models
and the pure-PyTorch twin otherwise (``UNICLIFT_BACKEND=torch`` forces the twin).

Convention: ``Camera.world_view`` is world-to-camera in OpenCV axes and ``Camera.K`` puts pixel
centres at (u + 0.5, v + 0.5) (see ``scene.cameras``); images come out [H, W, D], channels last.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from utils.sh_utils import sh_colors

from .rasterizer import BACKEND_ENV, BACKENDS, column_block, rasterize, resolve_backend

__all__ = ["RenderOutput", "GeometryDetached", "render", "rasterize", "resolve_backend", "BACKENDS", "BACKEND_ENV"]


@dataclass
class RenderOutput:
    rgb: Optional[Tensor]  # [H, W, 3] SH colour, background composited; None if not asked
    features: dict = field(default_factory=dict)  # name -> [H, W, D] blended features, background 0
    depth: Optional[Tensor] = None  # [H, W, 1] expected z (sum w z / alpha; 0 where alpha = 0)
    alpha: Optional[Tensor] = None  # [H, W, 1] accumulated opacity
    info: dict = field(default_factory=dict)  # rasterizer info: means2d, radii, ... (densification)
    image: Optional[Tensor] = None  # [H, W, D_total] the rasterizer's output, of which the fields above are views
    layout: dict = field(default_factory=dict)  # "rgb" / feature name / "depth" -> (first channel, width) in image


class GeometryDetached:
    """A read-only view of a model whose geometry carries no gradient: ``render(GeometryDetached(m), ...)``
    blends features whose gradients never move means, scales, rotations or opacities (the two-call
    reference of ``render(..., feature_geometry_grad=False)``)."""

    def __init__(self, model):
        self.model = model
        self.active_sh_degree = model.active_sh_degree
        self.max_sh_degree = getattr(model, "max_sh_degree", model.active_sh_degree)
        self.device = getattr(model, "device", None)

    def get_means(self): return self.model.get_means().detach()
    def get_scales(self): return self.model.get_scales().detach()
    def get_quats(self): return self.model.get_quats().detach()
    def get_raw_quats(self): return _raw_quats(self.model).detach()
    def get_opacities(self): return self.model.get_opacities().detach()
    def get_sh(self): return self.model.get_sh().detach()


def _raw_quats(model) -> Tensor:
    """The model's quaternions as stored (``get_raw_quats``, any nonzero norm) where it has them, else
    ``get_quats()``: both rasterizers normalise, so the model's own normalisation (four autograd nodes
    per step) is skipped."""
    raw = getattr(model, "get_raw_quats", None)
    return raw() if raw is not None else model.get_quats()


def _packed_parameter(blocks: list, slot: int) -> Optional[Tensor]:
    """The 2D contiguous tensor whose columns ``slot`` on are exactly ``blocks`` (column views of it, in order,
    covering the rest of its columns), or None. ``GaussianModel.pack_features`` lays its features out so."""
    base, column = None, slot
    for b in blocks:
        found = column_block(b)
        if found is None or found[1] != column or (base is not None and found[0] is not base):
            return None
        base, column = found[0], column + b.shape[1]
    return base if base is not None and base.shape[1] == column else None


class _ColourIntoSlot(torch.autograd.Function):
    """The rasterizer's colour input [N, D] from a packed feature parameter ``packed`` [N, D] whose first
    ``rgb.shape[1]`` columns are a free slot: the colour is written into the slot IN PLACE and ``packed`` itself
    is returned (no [N, D] concatenation). Backward: the colour gets the slot's columns of the gradient, and
    ``packed`` the whole gradient as it is (contiguous, so no copy; the slot's part moves only the slot, which
    the next render overwrites). Nothing in the step may write ``packed`` between this render and its backward:
    the optimiser steps after it."""

    @staticmethod
    def forward(ctx, rgb, packed):
        out = packed.detach()  # the same storage (and version counter)
        out[:, :rgb.shape[1]] = rgb
        ctx.slot = rgb.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad[:, :ctx.slot], grad


def _padded_background(given, bg: Tensor, width: int) -> Tensor:
    """[width]: the RGB background ``bg`` [3] (``given`` as the caller passed it), then zeros for the feature
    channels. Kept on ``given`` while it is the same tensor, unchanged (its version), on the same device and dtype:
    the trainer's background is one tensor for the whole run, so its steps make no two kernels for it (a random
    background per step is padded anew, as is one that needs a gradient)."""
    if width == 3:
        return bg
    cacheable = isinstance(given, Tensor) and not bg.requires_grad
    kept = getattr(given, "_unic_padded", None) if cacheable else None
    if (kept is not None and kept[0] == given._version and kept[1].shape[0] == width
            and kept[1].device == bg.device and kept[1].dtype == bg.dtype):
        return kept[1]
    padded = torch.cat([bg, bg.new_zeros(width - 3)])
    if cacheable:
        given._unic_padded = (given._version, padded)
    return padded


def camera_tensors(camera, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """``(viewmat [4, 4], K [3, 3], centre [3])`` of a ``scene.cameras.Camera`` as tensors."""
    viewmat = torch.as_tensor(camera.world_view, dtype=dtype, device=device)
    K = torch.as_tensor(camera.K, dtype=dtype, device=device)
    centre = torch.as_tensor(camera.center, dtype=dtype, device=device)
    return viewmat, K, centre


def render(
    camera,
    model,
    *,
    bg: Optional[Tensor] = None,
    features: Optional[dict] = None,
    with_rgb: bool = True,
    with_depth: bool = False,
    backend: str = "auto",
    near_plane: float = 0.01,
    feature_geometry_grad: bool = True,
) -> RenderOutput:
    """Renders ``model`` (see the contract below) from ``camera`` (a ``scene.cameras.Camera``).

    model: ``get_means()`` [N, 3], ``get_scales()`` [N, 3] (activated), ``get_quats()`` [N, 4]
    wxyz (or ``get_raw_quats()``, unnormalised, where the model has it), ``get_opacities()`` [N]
    (activated), ``get_sh()`` [N, (deg+1)^2, 3] DC first,
    ``active_sh_degree`` int.
    bg: [3] background colour for the RGB channels (None = black).
    features: name -> [N, D] per-Gaussian values, already activated by the caller; rendered
    with background 0.
    feature_geometry_grad: True: every channel is one differentiable function of the geometry
    (the features' gradients move means, quats, scales, opacities and reach
    ``info["means2d"].grad``). False: still ONE rasterisation, but the features are blended with
    the weights as constants, so their gradients reach only the feature values: rgb, depth,
    alpha and all geometry gradients (means2d.grad included) are those of a render without
    features, and the features those of a render of a geometry-detached model.
    """
    features = dict(features or {})
    means = model.get_means()  # [N, 3]
    n, device, dtype = means.shape[0], means.device, means.dtype
    viewmat, K, centre = camera_tensors(camera, device, dtype)
    chosen = resolve_backend(backend, device)

    names, widths, channels = [], [], []  # one block of channels per output
    if with_rgb:
        # [N, 3] camera -> Gaussian, world space; gsplat's SH kernel on the gsplat backend
        fused = chosen == "gsplat" and means.is_cuda  # else rasterize() below says what is wrong
        rgb = sh_colors(model.active_sh_degree, model.get_sh(), means - centre, fused=fused)
        names.append("rgb"), widths.append(3), channels.append(rgb)
    if with_depth and not feature_geometry_grad:  # geometry channels first, detached features last
        z = means @ viewmat[2, :3] + viewmat[2, 3]  # [N] camera-space z
        names.append("depth"), widths.append(1), channels.append(z[:, None])
    n_features = 0
    for name, value in features.items():
        if not isinstance(value, Tensor) or value.dim() != 2 or value.shape[0] != n:
            got = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"feature {name!r} must be a [N={n}, D] tensor, got {got}")
        names.append(("feature", name)), widths.append(value.shape[1]), channels.append(value.to(dtype))
        n_features += value.shape[1]
    if with_depth and feature_geometry_grad:
        z = means @ viewmat[2, :3] + viewmat[2, 3]  # [N] camera-space z
        names.append("depth"), widths.append(1), channels.append(z[:, None])
    if not channels:  # alpha only: blend one dummy channel
        names.append(None), widths.append(1), channels.append(means.new_zeros(n, 1))
    packed = _packed_parameter(channels[1:], 3) if with_rgb and n_features and names[-1] != "depth" else None
    if packed is not None:  # the features are the packed parameter's columns: the colour goes into its slot
        colors = _ColourIntoSlot.apply(channels[0], packed)
    else:  # [N, D_total]; one block is passed as it is (a packing kernel lost to torch.cat: RESULTS.md 23a)
        colors = channels[0] if len(channels) == 1 else torch.cat(channels, dim=-1)

    background = None
    if bg is not None:
        given = bg
        bg = torch.as_tensor(bg, dtype=dtype, device=device).reshape(-1)
        if bg.shape[0] != 3:
            raise ValueError(f"bg must hold 3 values (RGB), got {bg.shape[0]}")
        if with_rgb:
            background = _padded_background(given, bg, colors.shape[1])  # [D_total]

    image, alpha, info = rasterize(
        means, _raw_quats(model), model.get_scales(), model.get_opacities(), colors,
        viewmat, K, camera.width, camera.height,
        near_plane=near_plane, background=background, backend=chosen,
        detached_channels=0 if feature_geometry_grad else n_features,
    )  # [H, W, D_total], [H, W, 1]

    out = RenderOutput(rgb=None, features={}, depth=None, alpha=alpha, info=info, image=image)
    first = 0
    for name, width in zip(names, widths):
        if name is not None:
            out.layout[name[1] if isinstance(name, tuple) else name] = (first, width)
        first += width
    for name, part in zip(names, torch.split(image, widths, dim=-1)):
        if name == "rgb":
            out.rgb = part
        elif name == "depth":
            # Expected depth; where nothing was blended the quotient is undefined: 0.
            hit = alpha > 0
            out.depth = torch.where(hit, part / torch.where(hit, alpha, torch.ones_like(alpha)), 0.0)
        elif name is not None:
            out.features[name[1]] = part
    return out
