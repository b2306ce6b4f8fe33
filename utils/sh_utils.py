"""Real spherical harmonics up to degree 3, in the 3DGS / gsplat basis and sign convention.

Convention: coefficients are ordered band by band, DC first: index ``l * l + l + m`` for
``m = -l..l`` (16 coefficients for degree 3). ``dirs`` are unit vectors in world space, pointing
from the camera centre to the Gaussian. The basis signs are those of 3DGS (and gsplat's
``spherical_harmonics``), so PLY files trained here load in the usual viewers.
A colour is ``clamp_min(eval_sh(...) + 0.5, 0)``: the DC term alone stores ``(rgb - 0.5) / C0``.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Normalisation constants of the real SH basis, Y_l^m(d) = const * polynomial(x, y, z).
SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
SH_C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
SH_C2 = (
    1.0925484305920792,  # sqrt(15 / (4 pi))
    -1.0925484305920792,
    0.31539156525252005,  # sqrt(5 / (16 pi))
    -1.0925484305920792,
    0.5462742152960396,  # sqrt(15 / (16 pi))
)
SH_C3 = (
    -0.5900435899266435,  # sqrt(35 / (32 pi))
    2.890611442640554,  # sqrt(105 / (4 pi))
    -0.4570457994644658,  # sqrt(21 / (32 pi))
    0.3731763325901154,  # sqrt(7 / (16 pi))
    -0.4570457994644658,
    1.445305721320277,  # sqrt(105 / (16 pi))
    -0.5900435899266435,
)
MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of coefficients of a degree-``degree`` expansion: ``(degree + 1) ** 2``."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """The real SH basis evaluated at unit directions.

    dirs: [..., 3] unit vectors. Returns [..., (degree + 1) ** 2].
    """
    n_bases = num_sh_bases(degree)
    if dirs.shape[-1] != 3:
        raise ValueError(f"dirs must be [..., 3], got {tuple(dirs.shape)}")
    x, y, z = dirs.unbind(-1)  # each [...]
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    basis = torch.stack(out, dim=-1)  # [..., n_bases]
    assert basis.shape[-1] == n_bases
    return basis


def eval_sh(degree: int, sh: Tensor, dirs: Tensor) -> Tensor:
    """Evaluates SH colour: ``sum_k Y_k(dirs) * sh[..., k, :]`` over the first (degree+1)^2 bases.

    sh: [..., K, C] coefficients with K >= (degree + 1) ** 2 (extra bands are ignored).
    dirs: [..., 3] unit view directions. Returns [..., C] (no +0.5 offset, no clamp).
    """
    n_bases = num_sh_bases(degree)
    if sh.dim() < 2 or sh.shape[-2] < n_bases:
        raise ValueError(f"sh must be [..., K>={n_bases}, C] for degree {degree}, got {tuple(sh.shape)}")
    if dirs.shape[:-1] != sh.shape[:-2]:
        raise ValueError(f"dirs {tuple(dirs.shape)} and sh {tuple(sh.shape)} batch shapes differ")
    basis = sh_basis(degree, dirs)  # [..., n_bases]
    return (basis.unsqueeze(-1) * sh[..., :n_bases, :]).sum(dim=-2)  # [..., C]


def sh_to_rgb(sh_dc: Tensor) -> Tensor:
    """Colour in [0, 1] stored by a DC coefficient (view-independent part)."""
    return sh_dc * SH_C0 + 0.5


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient that renders ``rgb`` (in [0, 1]) when every higher band is zero."""
    return (rgb - 0.5) / SH_C0


def sh_colors(degree: int, sh: Tensor, dirs: Tensor, fused: bool = False) -> Tensor:
    """View-dependent colour ``clamp_min(eval_sh + 0.5, 0)`` of each Gaussian.

    sh: [N, K, 3] coefficients, K >= (degree + 1) ** 2. dirs: [N, 3] camera -> Gaussian, ANY
    nonzero length (normalised here; gradients flow through the normalisation). Returns [N, 3].
    fused=True evaluates with gsplat's CUDA kernel (float32 CUDA tensors only), one kernel
    forward and one backward instead of ~200 small ops; fused=False is the pure-PyTorch twin.
    """
    num_sh_bases(degree)  # validates the degree
    if fused:
        if not (sh.is_cuda and dirs.is_cuda and sh.dtype == torch.float32 and dirs.dtype == torch.float32):
            raise ValueError(f"sh_colors(fused=True) needs float32 CUDA tensors, got {sh.dtype} on {sh.device}")
        from gsplat.cuda._wrapper import spherical_harmonics

        return torch.clamp_min(spherical_harmonics(degree, dirs, sh) + 0.5, 0.0)
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.clamp_min(eval_sh(degree, sh, unit) + 0.5, 0.0)
