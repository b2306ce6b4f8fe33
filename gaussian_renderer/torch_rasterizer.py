"""Pure-PyTorch 3D Gaussian rasterizer: the maths of gsplat 1.5.3's CUDA path, differentiable.

Written from gsplat's kernels (``ProjectionEWA3DGSFused.cu``, ``IntersectTile.cu``,
``RasterizeToPixels3DGSFwd.cu``), for one pinhole camera, ``packed=False``, classic mode:

* projection: EWA with the perspective Jacobian evaluated at the mean, whose x/z and y/z are
  clamped to the frustum widened by 30 % of the half field of view; 2D covariance + eps2d on
  the diagonal (no opacity compensation);
* culling: z < near or z > far, det <= 0, opacity < 1/255, box entirely off screen;
* radius per axis: ``ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(cov2d_axis))`` (the opacity-aware
  box: outside it alpha < 1/255);
* per tile (gsplat: 16x16 pixels; here ``TILE_SIZE``, see there), Gaussians front to back by
  camera z (stable on ties);
* per pixel (centre at u + 0.5, v + 0.5): ``alpha = min(0.999, o exp(-sigma))``, skipped when
  ``sigma < 0`` or ``alpha < 1/255``; compositing stops before the Gaussian that would bring the
  transmittance to <= 1e-4; ``render = sum w c + T_final * background``, ``alpha = 1 - T_final``.

Convention: ``viewmat`` is world-to-camera in OpenCV axes (x right, y down, z forward);
``K`` maps camera coordinates to pixels whose centres sit at (u + 0.5, v + 0.5); quaternions are
wxyz and normalised here, so callers may pass raw ones.

Vectorised over tiles, pixels and Gaussians: each step of the front-to-back loop evaluates the
next ``block`` Gaussians of every tile of a chunk for all P pixels of those tiles at once
([tiles, P, block]), carrying the transmittance, and drops tiles whose pixels are all done, as
gsplat's thread blocks do. The projection is differentiated by autograd; the compositing has a
hand-written backward (``_CompositeTiles``, gsplat's back-to-front formula). When the image
could keep more than ``checkpoint_elements`` (pixel, Gaussian) pairs alive for backward, each
step is recomputed in backward instead, so memory stays bounded by one chunk. Per-Gaussian
gradients are summed with ``index_add_`` (sequential on the CPU): runs are bit-reproducible.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: dimmer contributions are skipped
MAX_ALPHA = 0.999  # per-Gaussian alpha clamp
MIN_TRANSMITTANCE = 1e-4  # a pixel is done before T would reach this
MAX_EXTEND = 3.33  # radius in standard deviations, before the opacity-aware bound
FRUSTUM_MARGIN = 0.3  # Jacobian clamp: frustum widened by this fraction of tan(fov / 2)
GSPLAT_TILE_SIZE = 16  # gsplat's tiles
# Our tiles are smaller: every Gaussian in a tile's list is evaluated on all its pixels, and a
# Gaussian a few pixels wide fills a small part of a 16x16 tile (work ~ (2 r + tile)^2 per
# Gaussian). The pixels come out the same for any tile size (outside its box a Gaussian's
# alpha is < 1/255 and skipped), up to the rounding of T's product over different blocks.
# Measured on a 128x96 room (30k Gaussians, 1 thread): 16 -> 4 halves forward+backward.
TILE_SIZE = 4
BLOCK = 64  # Gaussians per tile evaluated per step of the front-to-back loop
# (pixel, Gaussian) pairs per step. CPU: 2 MB per float32 tensor, which stays in cache (about
# 5x faster per element than 32 MB steps on one core). CUDA: large steps, few kernel launches.
CHUNK_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 24}
CHECKPOINT_ELEMENTS = 1 << 26  # above this many (pixel, Gaussian) pairs, recompute chunks in backward


class Projection(NamedTuple):
    """Per-Gaussian screen-space quantities of one camera; culled entries are zero."""

    means2d: Tensor  # [N, 2] pixel coordinates (in the autograd graph)
    conics: Tensor  # [N, 3] inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    depths: Tensor  # [N] camera-space z
    radii: Tensor  # [N, 2] int32 box half-sizes in pixels (x, y); 0 = culled


class TileIntersections(NamedTuple):
    """Gaussian lists per tile, concatenated tile by tile, each list front to back."""

    flatten_ids: Tensor  # [I] int64 Gaussian index of each intersection
    tile_starts: Tensor  # [n_tiles] int64 first position of each tile's list in flatten_ids
    tile_counts: Tensor  # [n_tiles] int64 length of each tile's list
    tiles_per_gauss: Tensor  # [N] int64 number of tiles each Gaussian touches
    tile_width: int  # tiles per image row
    tile_height: int  # tiles per image column


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariance ``R S S R^T`` from wxyz quaternions (normalised here) and scales.

    quats: [N, 4] wxyz, any norm > 0. scales: [N, 3] > 0. Returns [N, 3, 3].
    """
    q = quats / quats.norm(dim=-1, keepdim=True)  # [N, 4]
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # [N, 3, 3] row-major rotation
    m = rot * scales[:, None, :]  # [N, 3, 3] = R S
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    viewmat: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """EWA projection and culling of gsplat 1.5.3 (``projection_ewa_3dgs_fused_fwd_kernel``)."""
    rot_c, trans_c = viewmat[:3, :3], viewmat[:3, 3]  # [3, 3], [3]
    means_c = means @ rot_c.T + trans_c  # [N, 3] camera space
    covar_c = rot_c @ quat_scale_to_covar(quats, scales) @ rot_c.T  # [N, 3, 3]
    x, y, z = means_c.unbind(-1)  # each [N]

    # Culled Gaussians still flow through the arithmetic below: give them harmless
    # denominators so that no inf/nan reaches the backward pass (0 * inf = nan).
    in_depth = (z >= near_plane) & (z <= far_plane)  # [N]
    z = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FRUSTUM_MARGIN * tan_fovx
    lim_x_neg = cx / fx + FRUSTUM_MARGIN * tan_fovx
    lim_y_pos = (height - cy) / fy + FRUSTUM_MARGIN * tan_fovy
    lim_y_neg = cy / fy + FRUSTUM_MARGIN * tan_fovy
    rz = 1.0 / z
    tx = z * torch.clamp(x * rz, -lim_x_neg, lim_x_pos)  # [N] clamped for the Jacobian only
    ty = z * torch.clamp(y * rz, -lim_y_neg, lim_y_pos)
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(-1, 2, 3)  # [N, 2, 3]
    cov2d = jac @ covar_c @ jac.transpose(-1, -2)  # [N, 2, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [N, 2]

    cov_a = cov2d[:, 0, 0] + eps2d  # [N] blurred 2D covariance [[a, b], [b, c]]
    cov_b = cov2d[:, 0, 1]
    cov_c = cov2d[:, 1, 1] + eps2d
    det = cov_a * cov_c - cov_b * cov_b  # [N]
    det_ok = det > 0
    det = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([cov_c / det, -cov_b / det, cov_a / det], dim=-1)  # [N, 3]

    with torch.no_grad():
        opac = opacities.detach()
        visible_opac = opac >= ALPHA_THRESHOLD
        # Opacity-aware box (gsplat 1.5: arXiv 2402.00525 B.2): alpha >= 1/255 inside it.
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTEND)  # [N]
        radius = torch.ceil(
            extend[:, None] * torch.sqrt(torch.stack([cov_a, cov_c], -1).detach().clamp_min(0))
        )  # [N, 2]
        m2d = means2d.detach()
        on_screen = (
            (m2d[:, 0] + radius[:, 0] > 0)
            & (m2d[:, 0] - radius[:, 0] < width)
            & (m2d[:, 1] + radius[:, 1] > 0)
            & (m2d[:, 1] - radius[:, 1] < height)
        )
        valid = in_depth & det_ok & visible_opac & (radius > 0).any(-1) & on_screen  # [N]
        radii = torch.where(valid[:, None], radius, torch.zeros_like(radius)).to(torch.int32)

    vmask = valid[:, None]
    return Projection(
        means2d=torch.where(vmask, means2d, torch.zeros_like(means2d)),
        conics=torch.where(vmask, conics, torch.zeros_like(conics)),
        depths=torch.where(valid, means_c[:, 2], torch.zeros_like(z)),
        radii=radii,
    )


@torch.no_grad()
def intersect_tiles(
    means2d: Tensor,  # [N, 2]
    radii: Tensor,  # [N, 2] int
    depths: Tensor,  # [N]
    width: int,
    height: int,
    tile_size: int = TILE_SIZE,
) -> TileIntersections:
    """Lists, per tile, the Gaussians whose box touches it, front to back (gsplat's rule)."""
    device = means2d.device
    tile_width = math.ceil(width / tile_size)
    tile_height = math.ceil(height / tile_size)
    n_tiles = tile_width * tile_height
    n = means2d.shape[0]

    ids = torch.nonzero((radii > 0).all(-1)).squeeze(1)  # [M] visible Gaussians
    m2d = means2d.detach()[ids] / tile_size  # [M, 2] in tile units
    rad = radii[ids].to(m2d.dtype) / tile_size  # [M, 2]
    lo = torch.floor(m2d - rad).clamp_min(0).long()  # [M, 2] inclusive
    hi = torch.ceil(m2d + rad).clamp_min(0).long()  # [M, 2] exclusive
    lo[:, 0].clamp_(max=tile_width)
    hi[:, 0].clamp_(max=tile_width)
    lo[:, 1].clamp_(max=tile_height)
    hi[:, 1].clamp_(max=tile_height)
    span = hi - lo  # [M, 2]
    counts = span[:, 0] * span[:, 1]  # [M]

    # Expand every Gaussian into its rectangle of tiles.
    owner = torch.repeat_interleave(torch.arange(ids.numel(), device=device), counts)  # [I]
    first = torch.cumsum(counts, 0) - counts  # [M]
    local = torch.arange(owner.numel(), device=device) - first[owner]  # [I]
    span_x = span[owner, 0]
    tile_x = lo[owner, 0] + local % span_x
    tile_y = lo[owner, 1] + torch.div(local, span_x, rounding_mode="floor")
    tile_id = tile_y * tile_width + tile_x  # [I]

    # Sort by (tile, depth); ties in depth keep Gaussian order, as gsplat's stable radix sort.
    depth_order = torch.sort(depths.detach()[ids], stable=True).indices  # [M]
    depth_rank = torch.empty_like(depth_order)
    depth_rank[depth_order] = torch.arange(ids.numel(), device=device)
    key = tile_id * max(ids.numel(), 1) + depth_rank[owner]  # [I] unique
    order = torch.sort(key).indices
    flatten_ids = ids[owner[order]]  # [I]

    tile_counts = torch.bincount(tile_id, minlength=n_tiles)  # [n_tiles]
    tile_starts = torch.cumsum(tile_counts, 0) - tile_counts
    tiles_per_gauss = torch.zeros(n, dtype=torch.long, device=device)
    tiles_per_gauss[ids] = counts
    return TileIntersections(flatten_ids, tile_starts, tile_counts, tiles_per_gauss, tile_width, tile_height)


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """``x[idx]`` through ``index_select``, whose backward (``index_add_``) is deterministic on the
    CPU; advanced indexing backpropagates through ``index_put_`` with accumulation, which is not,
    and made resumed training runs drift in the last bits."""
    return x.index_select(0, idx.reshape(-1)).reshape(*idx.shape, *x.shape[1:])


class _Step(NamedTuple):
    """One step of the front-to-back loop for ``a`` active tiles and ``kb`` list slots."""

    dx: Tensor  # [a, ts(col), kb] Gaussian x minus pixel-centre x
    dy: Tensor  # [a, ts(row), kb]
    conic: Tensor  # [a, kb, 3]
    vis: Tensor  # [a, P, kb] exp(-sigma), 0 where sigma < 0 (skipped)
    raw: Tensor  # [a, P, kb] opacity * vis (before the clamp)
    alpha: Tensor  # [a, P, kb] clamped, 0 where skipped
    t_excl: Tensor  # [a, P, kb] T before each Gaussian
    t_incl: Tensor  # [a, P, kb] T after each
    blend: Tensor  # [a, P, kb] 1.0 where blended (a prefix of the slots), else 0.0
    weights: Tensor  # [a, P, kb] alpha * T_excl where blended, else 0


# Masks are built with threshold/clamp arithmetic, not comparisons and torch.where: on the CPU
# bool tensors and where() cost 10-50x a multiply per element, and they dominated the loop.
# F.threshold(x, t, v) keeps x where x > t, so ">= t" is "> the float just below t".
@functools.lru_cache(maxsize=16)
def _below(value: float, dtype: torch.dtype) -> float:
    return torch.nextafter(torch.tensor(value, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)).item()


def _blend_step(means2d, conics, opacities, gid, present, px, py, t_prev) -> _Step:
    """Evaluates the Gaussians ``gid`` [a, kb] on the pixels of their tiles (centres ``px``
    [a, ts] by column, ``py`` [a, ts] by row), entering with transmittance ``t_prev`` [a, P]."""
    n_pix, kb, dtype = t_prev.shape[-1], gid.shape[-1], t_prev.dtype
    mean, conic = _take(means2d, gid), _take(conics, gid)  # [a, kb, 2|3]
    opac = torch.where(present, _take(opacities, gid), 0.0)  # [a, kb]
    dx = mean[:, None, :, 0] - px[:, :, None]  # [a, ts(col), kb]
    dy = mean[:, None, :, 1] - py[:, :, None]  # [a, ts(row), kb]
    ca, cb, cc = conic[:, None, :, 0], conic[:, None, :, 1], conic[:, None, :, 2]  # [a, 1, kb]
    # sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, laid out [a, row, col, kb]; the products with
    # one pixel axis are formed on the small [a, ts, kb] tensors first.
    sigma = (
        (0.5 * ca * dx * dx)[:, None, :, :]
        + (0.5 * cc * dy * dy)[:, :, None, :]
        + (cb * dx)[:, None, :, :] * dy[:, :, None, :]
    ).reshape(-1, n_pix, kb)  # [a, P, kb]
    # sigma < 0 (rounding) is skipped, as gsplat does: sigma -> inf, vis -> 0.
    vis = torch.exp(-F.threshold(sigma, _below(0.0, dtype), math.inf))
    raw = opac[:, None, :] * vis
    # alpha = min(0.999, raw), and 0 where below 1/255 (skipped)
    alpha = F.threshold(torch.clamp_max(raw, MAX_ALPHA), _below(ALPHA_THRESHOLD, dtype), 0.0)
    t_incl = t_prev[..., None] * torch.cumprod(1.0 - alpha, dim=-1)  # [a, P, kb] T after each
    t_excl = torch.cat([t_prev[..., None], t_incl[..., :-1]], dim=-1)  # [a, P, kb] T before each
    # Exclusive stop: the Gaussian that would bring T to <= 1e-4 and all behind it are dropped.
    # T only decreases, so the blended Gaussians are a prefix of the block.
    # blend = (t_incl > 1e-4) as 0.0 / 1.0: kept values are > 1e-4, times 1e5 > 1, clamped to 1.
    blend = torch.clamp_max(F.threshold(t_incl, MIN_TRANSMITTANCE, 0.0) * 1e5, 1.0)
    weights = alpha * t_excl * blend
    return _Step(dx, dy, conic, vis, raw, alpha, t_excl, t_incl, blend, weights)


class _CompositeTiles(torch.autograd.Function):
    """Front-to-back compositing of a chunk of tiles, ``block`` Gaussians per tile at a time,
    with a hand-written backward (autograd's graph of the loop cost ~3x the forward).

    forward returns the blended channels [n, P, D] and the final transmittance [n, P],
    P = tile_size^2. A tile leaves the loop once its list is exhausted or all its pixels are
    done, as gsplat's thread blocks do, so opaque scenes cost about their visible depth.

    backward, per pixel with blended Gaussians i = 1..K (weights w_i = alpha_i T_i), output
    gradient v (first D - detached_channels channels; the detached ones only get colour
    gradients) and g_i = c_i . v: dL/dc_i = w_i v; dL/dalpha_i = T_i g_i - R_i / (1 - alpha_i)
    with R_i = sum_{j > i} w_j g_j + T_final dL/dT_final (gsplat's backward kernel, run back to
    front over the loop's steps); then through alpha = min(0.999, o exp(-sigma)) to the opacity,
    the conic and the 2D mean. Each step's tensors are kept from the forward (``save``) or
    recomputed (bounded memory for large images).
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, flatten_ids, tiles, starts, counts,
                width, height, tile_width, tile_size, block, detached_channels, save):
        n, n_pix, dim = tiles.shape[0], tile_size * tile_size, colors.shape[-1]
        dtype, device = means2d.dtype, means2d.device
        offs = torch.arange(tile_size, device=device)  # [ts]
        col = (tiles % tile_width)[:, None] * tile_size + offs  # [n, ts] pixel u
        row = torch.div(tiles, tile_width, rounding_mode="floor")[:, None] * tile_size + offs  # [n, ts] pixel v
        inside = (row[:, :, None] < height) & (col[:, None, :] < width)  # [n, ts(row), ts(col)]
        px, py = col.to(dtype) + 0.5, row.to(dtype) + 0.5  # [n, ts] pixel centres

        trans = means2d.new_ones(n, n_pix)  # [n, P] transmittance after the Gaussians blended so far
        done = ~inside.reshape(n, n_pix)  # [n, P]; pixels off the image never blend
        render = colors.new_zeros(n, n_pix, dim)  # [n, P, D]
        active = torch.arange(n, device=device)  # tiles still blending
        steps = []  # (active, gid, present, t_prev, _Step or None) per step, for backward
        k_max = int(counts.max())
        for k0 in range(0, k_max, block):  # a handful of iterations: opaque pixels finish early
            active = active[(counts[active] > k0) & ~done[active].all(-1)]
            if active.numel() == 0:
                break
            kb = min(block, k_max - k0)
            slot = k0 + torch.arange(kb, device=device)  # [kb]
            present = slot[None, :] < counts[active, None]  # [a, kb] false on padding
            pos = torch.where(present, starts[active, None] + slot[None, :], torch.zeros_like(slot)[None, :])
            gid = flatten_ids[pos]  # [a, kb]
            # Done pixels enter with T = 0, so the stop test blends nothing more for them.
            t_prev = torch.where(done[active], 0.0, trans[active])  # [a, P]
            st = _blend_step(means2d, conics, opacities, gid, present, px[active], py[active], t_prev)
            render.index_add_(0, active, st.weights @ _take(colors, gid))  # [a, P, kb] @ [a, kb, D]
            n_blend = st.blend.sum(-1, keepdim=True).long()  # [a, P, 1]
            t_last = st.t_incl.gather(-1, (n_blend - 1).clamp_min(0))[..., 0]  # [a, P] T after the prefix
            trans.index_copy_(0, active, torch.where(n_blend[..., 0] > 0, t_last, trans[active]))
            done.index_copy_(0, active, st.t_incl[..., -1] <= MIN_TRANSMITTANCE)
            # Kept for backward (which does not read t_incl), or recomputed there.
            steps.append((active, gid, present, t_prev, st._replace(t_incl=None) if save else None))

        ctx.save_for_backward(means2d, conics, opacities, colors, trans)
        ctx.steps, ctx.px, ctx.py = steps, px, py
        ctx.n_geo = dim - detached_channels
        return render, trans

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v_render, v_trans):
        means2d, conics, opacities, colors, trans = ctx.saved_tensors
        n_geo = ctx.n_geo
        v_means2d, v_conics = torch.zeros_like(means2d), torch.zeros_like(conics)
        v_opacities, v_colors = torch.zeros_like(opacities), torch.zeros_like(colors)
        carry = trans * v_trans  # [n, P] R behind the last step: T_final dL/dT_final
        geometry = any(ctx.needs_input_grad[:3])  # False: a features-only render of a detached model
        for active, gid, present, t_prev, st in reversed(ctx.steps):
            if st is None:
                st = _blend_step(means2d, conics, opacities, gid, present, ctx.px[active], ctx.py[active], t_prev)
            a, n_pix, kb = st.weights.shape
            ids = gid.reshape(-1)
            v_out = v_render[active]  # [a, P, D]
            color = _take(colors, gid)  # [a, kb, D]
            v_colors.index_add_(0, ids, (st.weights.transpose(1, 2) @ v_out).reshape(a * kb, -1))
            if not geometry:
                continue
            # [a, P, kb] g_i = c_i . v over the geometry channels (none: alpha alone)
            g = v_out[..., :n_geo] @ color[..., :n_geo].transpose(1, 2) if n_geo else torch.zeros_like(st.weights)
            wg = st.weights * g
            wg_sum = wg.sum(-1)  # [a, P]
            behind = carry[active][..., None] + (wg_sum[..., None] - wg.cumsum(-1))  # [a, P, kb] R_i
            v_alpha = st.t_excl * g - behind / (1.0 - st.alpha)
            # Through alpha = min(0.999, raw) where kept, else 0: only blended, kept, unclamped
            # pairs. As 0.0 / 1.0 factors: kept alphas are >= 1/255, so 256 alpha >= 1; for
            # raw <= 0.999 threshold() gives -1, negated 1, else -raw, clamped to 0.
            kept = torch.clamp_max(st.alpha * 256.0, 1.0)
            unclamped = torch.clamp(-F.threshold(st.raw, MAX_ALPHA, -1.0), 0.0, 1.0)
            v_raw = v_alpha * (st.blend * kept * unclamped)  # [a, P, kb]
            v_opacities.index_add_(0, ids, (v_raw * st.vis).sum(1).reshape(-1))
            v_sigma = (-(v_raw * st.raw)).reshape(a, -1, st.dx.shape[1], kb)  # [a, row, col, kb]
            by_col = v_sigma.sum(1)  # [a, col, kb]
            by_row = v_sigma.sum(2)  # [a, row, kb]
            dx, dy = st.dx, st.dy
            s_x = (dx * by_col).sum(1)  # [a, kb] sum_P v_sigma dx
            s_y = (dy * by_row).sum(1)
            s_xx = (dx * dx * by_col).sum(1)
            s_yy = (dy * dy * by_row).sum(1)
            s_xy = (dx * (v_sigma * dy[:, :, None, :]).sum(1)).sum(1)
            ca, cb, cc = st.conic.unbind(-1)  # [a, kb]
            v_conics.index_add_(0, ids, torch.stack([0.5 * s_xx, s_xy, 0.5 * s_yy], -1).reshape(-1, 3))
            v_means2d.index_add_(0, ids, torch.stack([ca * s_x + cb * s_y, cb * s_x + cc * s_y], -1).reshape(-1, 2))
            carry.index_add_(0, active, wg_sum)
        return (v_means2d, v_conics, v_opacities, v_colors) + (None,) * 11


def rasterize_to_pixels(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D]
    isect: TileIntersections,
    width: int,
    height: int,
    background: Optional[Tensor] = None,  # [D]
    tile_size: int = TILE_SIZE,
    block: int = BLOCK,
    chunk_elements: Optional[int] = None,
    checkpoint_elements: int = CHECKPOINT_ELEMENTS,
    detached_channels: int = 0,
) -> tuple[Tensor, Tensor]:
    """Alpha compositing of projected Gaussians. Returns render [H, W, D] and alpha [H, W, 1].

    The last ``detached_channels`` channels of ``colors`` are blended in the same pass with the
    same weights w = alpha T, but w is a constant for them: their gradient reaches their colours
    and nothing else (not means2d, conics or opacities), exactly as if they had been rendered
    by a second call from detached geometry. ``alpha`` and the other channels are unaffected.
    """
    n_pix = tile_size * tile_size
    n_tiles = isect.tile_width * isect.tile_height
    dim = colors.shape[-1]

    busy = torch.nonzero(isect.tile_counts > 0).squeeze(1)  # [B] tiles with Gaussians
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities, colors)
    )
    # Upper bound of the (pixel, Gaussian) pairs kept for backward (early stops only lower it).
    use_checkpoint = needs_grad and int(isect.tile_counts.sum()) * n_pix > checkpoint_elements
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS["cuda" if colors.is_cuda else "cpu"]
    tiles_per_chunk = max(1, chunk_elements // (n_pix * block))

    renders, transs = [], []
    for c0 in range(0, busy.numel(), tiles_per_chunk):  # one iteration per chunk of tiles
        tiles = busy[c0:c0 + tiles_per_chunk]
        out = _CompositeTiles.apply(
            means2d, conics, opacities, colors, isect.flatten_ids, tiles,
            isect.tile_starts[tiles], isect.tile_counts[tiles],
            width, height, isect.tile_width, tile_size, block, detached_channels, needs_grad and not use_checkpoint,
        )
        renders.append(out[0])
        transs.append(out[1])

    img = colors.new_zeros(n_tiles, n_pix, dim + 1)  # [n_tiles, P, D + 1], last = alpha
    if renders:
        alpha = 1.0 - torch.cat(transs)  # [B, P]
        img = img.index_copy(0, busy, torch.cat([torch.cat(renders), alpha[..., None]], dim=-1))
    else:
        # Nothing visible: keep the output attached to the inputs so backward still runs.
        img = img + 0.0 * (colors.sum() + opacities.sum() + means2d.sum() + conics.sum())
    ts, tw, th = tile_size, isect.tile_width, isect.tile_height
    img = img.reshape(th, tw, ts, ts, dim + 1).permute(0, 2, 1, 3, 4).reshape(th * ts, tw * ts, dim + 1)
    img = img[:height, :width]
    render, alpha = img[..., :dim], img[..., dim:]  # [H, W, D], [H, W, 1]
    if background is not None:
        render = render + (1.0 - alpha) * background
    return render, alpha


def rasterize_torch(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz, normalised here
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D]
    viewmat: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    background: Optional[Tensor] = None,  # [D]
    tile_size: int = TILE_SIZE,
    block: int = BLOCK,
    chunk_elements: Optional[int] = None,
    checkpoint_elements: int = CHECKPOINT_ELEMENTS,
    detached_channels: int = 0,
) -> tuple[Tensor, Tensor, dict]:
    """Pure-PyTorch twin of ``gsplat.rasterization`` for one camera (inputs checked by the caller).
    ``detached_channels``: see ``rasterize_to_pixels``.

    Returns render [H, W, D], alpha [H, W, 1] and ``info`` with gsplat's densification keys
    (``means2d`` [1, N, 2], ``radii`` [1, N, 2] int32, ``depths`` [1, N], ``conics`` [1, N, 3],
    ``width``, ``height``, ``n_cameras`` = 1, ``gaussian_ids`` = None, ...).
    """
    proj = project_gaussians(
        means, quats, scales, opacities, viewmat, K, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
    )
    # The [1, N, 2] tensor the strategy calls retain_grad() on must be the one the pixels use.
    means2d = proj.means2d[None]  # [1, N, 2]
    isect = intersect_tiles(proj.means2d, proj.radii, proj.depths, width, height, tile_size)
    render, alpha = rasterize_to_pixels(
        means2d[0], proj.conics, opacities, colors, isect, width, height,
        background=background, tile_size=tile_size, block=block,
        chunk_elements=chunk_elements, checkpoint_elements=checkpoint_elements,
        detached_channels=detached_channels,
    )
    info = {
        "means2d": means2d,
        "radii": proj.radii[None],
        "depths": proj.depths[None],
        "conics": proj.conics[None],
        "opacities": opacities[None],
        "tiles_per_gauss": isect.tiles_per_gauss[None],
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "tile_width": isect.tile_width,
        "tile_height": isect.tile_height,
        "n_batches": 1,
        "n_cameras": 1,
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
    }
    return render, alpha, info
