"""Which Gaussian a click ray meets first: the splat under the cursor, picked on the server.

Convention: rays are in world coordinates (``origin`` [3], ``direction`` [3], any norm > 0);
``quats`` are unit (w, x, y, z) and ``scales`` are linear (not log) standard deviations, as
``GaussianModel.get_quats`` / ``get_scales`` return them; opacities in [0, 1].

Along a ray ``o + t d`` a Gaussian (mean mu, covariance R S S R^T) responds with
``exp(-m^2 / 2)`` at most, where ``m`` is the Mahalanobis distance of the ray's closest approach;
that happens at depth ``t*``. Each Gaussian thus contributes ``alpha = opacity * exp(-m^2 / 2)``
at depth ``t*`` (the 3D analogue of the rasterizer's splat weight). Sorted front to back, the
alphas composite like colour: the picked Gaussian is the one at which the accumulated alpha
``1 - prod(1 - alpha)`` first reaches ``threshold`` (0.5: the surface the eye sees), or, when the
ray never gets that opaque, the one contributing most (``alpha x transmittance``).
Vectorised over Gaussians: a few elementwise passes over [N] vectors and one sort of the few hit ones.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["rotation_matrices", "unit_frames", "unit_means", "ray_alphas", "pick_gaussian", "Picker"]

ALPHA_MIN = 1.0 / 255.0  # Gaussians contributing less than this along the ray are ignored (as the rasterizer does)
ALPHA_MAX = 0.99  # the rasterizer's cap of one splat's alpha


def rotation_matrices(quats: Tensor) -> Tensor:
    """[N, 3, 3] rotations of unit wxyz quaternions [N, 4] (normalised here)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def unit_frames(quats: Tensor, scales: Tensor) -> Tensor:
    """[3, 3, N] maps from world offsets to each Gaussian's unit frame: ``U[i, j, n] = R_n[i, j] / s_n[j]``,
    so ``(R^T v / s)_j = sum_i U[i, j] v_i``. Gaussian-last layout: the per-ray maths is then a few
    elementwise passes over contiguous [N] vectors (reductions over a trailing axis of 3 are slow).

    quats: [N, 4] wxyz; scales: [N, 3] linear standard deviations (> 0)."""
    rot = rotation_matrices(quats)  # [N, 3, 3]
    return (rot / scales.clamp_min(1e-12)[:, None, :]).permute(1, 2, 0).contiguous()


def unit_means(means_t: Tensor, unit: Tensor) -> Tensor:
    """[3, N] each mean in its own unit frame (``R^T mu / s``), from means_t [3, N] and unit [3, 3, N]."""
    return unit[0] * means_t[0] + unit[1] * means_t[1] + unit[2] * means_t[2]


def ray_alphas(origin: Tensor, direction: Tensor, means_u: Tensor, unit: Tensor, opacities: Tensor) -> tuple:
    """Depth of closest approach and peak alpha of every Gaussian along one ray.

    Args:
        origin, direction: [3] the ray (direction need not be unit; depths are along the unit direction).
        means_u: [3, N] means in their unit frames (``unit_means``); unit: [3, 3, N] (``unit_frames``);
        opacities: [N] in [0, 1].
    Returns:
        (t, alpha): [N] depth along the ray of the closest approach and [N] opacity x exp(-m^2 / 2).
    """
    d = direction / direction.norm().clamp_min(1e-12)  # [3]
    o, dd = origin.tolist(), d.tolist()  # scalars: each line below is one pass over [3, N]
    a = unit[0] * o[0] + unit[1] * o[1] + unit[2] * o[2] - means_u  # [3, N] R^T (o - mu) / s: the origin
    b = unit[0] * dd[0] + unit[1] * dd[1] + unit[2] * dd[2]  # [3, N] R^T d / s: the direction
    bb = (b * b).sum(0).clamp_min(1e-30)  # [N]
    t = -(a * b).sum(0) / bb  # [N] depth of the closest approach (the same t in both frames)
    perp = a + t * b  # [3, N] the closest point, in the unit frame
    m2 = (perp * perp).sum(0)  # [N] squared Mahalanobis distance of the ray to the mean
    alpha = (opacities * torch.exp(-0.5 * m2)).clamp_max(ALPHA_MAX)
    return t, alpha


def pick_gaussian(origin: Tensor, direction: Tensor, means_u: Tensor, unit: Tensor, opacities: Tensor, *,
                  candidates: Optional[Tensor] = None, threshold: float = 0.5, near: float = 0.0) -> int:
    """Index of the Gaussian a ray meets first (see the module doc), or -1 when it meets none.

    Args:
        origin, direction, means_u, unit, opacities: as for ``ray_alphas``.
        candidates: [N] bool, the Gaussians that may be hit (shown ones); None = all.
        threshold: accumulated alpha at which the ray counts as stopped.
        near: Gaussians whose closest approach lies at depth <= near (behind the eye) are ignored.
    """
    t, alpha = ray_alphas(origin, direction, means_u, unit, opacities)
    hit = (alpha >= ALPHA_MIN) & (t > near)  # [N]
    if candidates is not None:
        hit &= candidates
    idx = torch.nonzero(hit).squeeze(1)  # [H]
    if idx.numel() == 0:
        return -1
    order = torch.argsort(t[idx], stable=True)  # front to back
    idx, a = idx[order], alpha[idx[order]].to(torch.float64)  # [H]
    trans = torch.cumprod(1.0 - a, 0)  # [H] transmittance after each Gaussian
    reached = torch.nonzero(1.0 - trans >= threshold).squeeze(1)
    if reached.numel():
        return int(idx[reached[0]])
    before = torch.cat([trans.new_ones(1), trans[:-1]])  # [H] transmittance in front of each
    return int(idx[torch.argmax(a * before)])


class Picker:
    """``pick_gaussian`` over one model, with the rotations and inverse scales computed once.

    means [N, 3], quats [N, 4] wxyz, scales [N, 3] (linear), opacities [N]; any float dtype (kept
    as float32 on the CPU).
    """

    def __init__(self, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor):
        N = means.shape[0]
        assert quats.shape == (N, 4) and scales.shape == (N, 3) and opacities.reshape(-1).shape == (N,)
        self.unit = unit_frames(quats.detach().float().cpu(), scales.detach().float().cpu())  # [3, 3, N]
        self.means_u = unit_means(means.detach().float().cpu().T, self.unit)  # [3, N]
        self.opacities = opacities.detach().float().cpu().reshape(-1)  # [N]

    def __len__(self) -> int:
        return self.opacities.shape[0]

    @torch.no_grad()
    def pick(self, origin, direction, candidates: Optional[Tensor] = None, threshold: float = 0.5) -> int:
        o = torch.as_tensor(origin, dtype=torch.float32).reshape(3)
        d = torch.as_tensor(direction, dtype=torch.float32).reshape(3)
        return pick_gaussian(o, d, self.means_u, self.unit, self.opacities, candidates=candidates,
                             threshold=threshold)
