"""Photometric losses: L1 and SSIM computed as 3DGS does (11x11 Gaussian window, sigma 1.5,
zero "same" padding, C1 = 0.01^2, C2 = 0.03^2).

``ssim_map`` filters the five local moments (a, b, a^2, b^2, ab) stacked as channels of ONE
tensor with the window split into two 1-D 11-tap passes (the Gaussian window is separable, and
zero padding commutes with the split): 2 grouped convolutions of 22 taps instead of 5 of 121.
``ssim_reference`` is the direct 2-D form, kept as its twin for the tests.

Convention: images are [H, W, 3] or [B, 3, H, W] floats in [0, 1].
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def l1_loss(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


@functools.lru_cache(maxsize=8)
def _window(size: int, sigma: float, channels: int, device: str, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    w2 = (g[:, None] @ g[None, :]).to(dtype)  # [size, size], sums to 1
    return w2.expand(channels, 1, size, size).contiguous().to(device)


@functools.lru_cache(maxsize=8)
def _window_1d(size: int, sigma: float, channels: int, device: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(dtype=dtype, device=device)  # [size], sums to 1
    return (g.reshape(1, 1, size, 1).expand(channels, 1, size, 1).contiguous(),  # along H
            g.reshape(1, 1, 1, size).expand(channels, 1, 1, size).contiguous())  # along W


def _as_bchw(img: Tensor) -> Tensor:
    if img.dim() == 3:  # [H, W, C]
        return img.permute(2, 0, 1)[None]
    return img


def _ssim_from_moments(mu_a, mu_b, e_aa, e_bb, e_ab) -> Tensor:
    var_a = e_aa - mu_a**2
    var_b = e_bb - mu_b**2
    cov = e_ab - mu_a * mu_b
    C1, C2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))


def _gaussian_filter(x: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Every channel of x [B, C, H, W] filtered by the zero-padded separable Gaussian window."""
    c = x.shape[1]
    w_h, w_w = _window_1d(window_size, sigma, c, str(x.device), x.dtype)
    pad = window_size // 2
    return F.conv2d(F.conv2d(x, w_h, padding=(pad, 0), groups=c), w_w, padding=(0, pad), groups=c)


def _local_moments(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5) -> tuple:
    """(mu_a, mu_b, E[a^2], E[b^2], E[ab]), each [B, C, H, W], of two [B, C, H, W] images."""
    moments = _gaussian_filter(torch.cat([a, b, a * a, b * b, a * b], dim=1), window_size, sigma)
    return moments.split(a.shape[1], dim=1)


def ssim_map(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM [B, C, H, W] of two images ([H, W, C] or [B, C, H, W])."""
    return _ssim_from_moments(*_local_moments(_as_bchw(a), _as_bchw(b), window_size, sigma))


def ssim_reference_map(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """``ssim_map`` computed directly: five 2-D 11x11 grouped convolutions (3DGS's form)."""
    a, b = _as_bchw(a), _as_bchw(b)
    C = a.shape[1]
    w = _window(window_size, sigma, C, str(a.device), a.dtype)
    pad = window_size // 2
    conv = functools.partial(F.conv2d, weight=w, padding=pad, groups=C)
    return _ssim_from_moments(conv(a), conv(b), conv(a * a), conv(b * b), conv(a * b))


def ssim(a: Tensor, b: Tensor) -> Tensor:
    return ssim_map(a, b).mean()


def ssim_reference(a: Tensor, b: Tensor) -> Tensor:
    return ssim_reference_map(a, b).mean()


def psnr(a: Tensor, b: Tensor) -> Tensor:
    mse = ((a - b) ** 2).mean()
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def photometric_loss_reference(rendered: Tensor, gt: Tensor, lambda_dssim: float = 0.2) -> Tensor:
    """``photometric_loss`` differentiated by autograd (its twin in the tests)."""
    return (1.0 - lambda_dssim) * l1_loss(rendered, gt) + lambda_dssim * (1.0 - ssim(rendered, gt))


def _ssim_partials(mu_a, mu_b, e_aa, e_bb, e_ab):
    """SSIM map S of the five local moments and its partial derivatives with respect to mu_a, E[a^2]
    and E[ab] (the moments that depend on the rendered image a):

        S = N1 N2 / (D1 D2),  N1 = 2 mu_a mu_b + C1,  N2 = 2 (E[ab] - mu_a mu_b) + C2,
        D1 = mu_a^2 + mu_b^2 + C1,  D2 = E[a^2] - mu_a^2 + E[b^2] - mu_b^2 + C2;
        dS/dmu_a = 2 mu_b (N2 - N1) / (D1 D2) - 2 mu_a S (1/D1 - 1/D2),
        dS/dE[a^2] = -S / D2,  dS/dE[ab] = 2 N1 / (D1 D2).
    """
    C1, C2 = 0.01**2, 0.03**2
    ab = mu_a * mu_b
    n1, n2 = 2 * ab + C1, 2 * (e_ab - ab) + C2
    sq_a, sq_b = mu_a * mu_a, mu_b * mu_b
    d1, d2 = sq_a + sq_b + C1, (e_aa - sq_a) + (e_bb - sq_b) + C2
    inv = 1.0 / (d1 * d2)
    s = n1 * n2 * inv
    d_mu = 2 * mu_b * (n2 - n1) * inv - 2 * mu_a * s * (1.0 / d1 - 1.0 / d2)
    return s, d_mu, -s / d2, 2 * n1 * inv


class _PhotometricLoss(torch.autograd.Function):
    """(1 - lambda) L1 + lambda (1 - SSIM) with its gradient written out: ONE autograd node instead of
    about 40 (each costs the host tens of microseconds per iteration on a GPU; benchmarks/RESULTS.md,
    section 8). The gradient of the SSIM term follows from the moments: with g = dL/dS per pixel,
    dL/da = G * (g dS/dmu_a) + 2 a G * (g dS/dE[a^2]) + b G * (g dS/dE[ab]), where G * is the same
    zero-padded separable Gaussian filter (it is symmetric, so it is its own adjoint)."""

    @staticmethod
    def forward(ctx, a, b, lambda_dssim):
        # a, b: [1, C, H, W]
        s, d_mu, d_aa, d_ab = _ssim_partials(*_local_moments(a, b))
        diff = a - b
        ctx.save_for_backward(a, b, diff, d_mu, d_aa, d_ab)
        ctx.lambda_dssim = lambda_dssim
        return (1.0 - lambda_dssim) * diff.abs().mean() + lambda_dssim * (1.0 - s.mean())

    @staticmethod
    def backward(ctx, grad):
        a, b, diff, d_mu, d_aa, d_ab = ctx.saved_tensors
        lam, n = ctx.lambda_dssim, a.numel()
        g = torch.cat([d_mu, d_aa, d_ab], dim=1) * (-lam / n * grad)  # [1, 3C, H, W]: dL/d(moment)
        g_mu, g_aa, g_ab = _gaussian_filter(g).split(a.shape[1], dim=1)  # the filter is its own adjoint
        grad_a = g_mu + 2 * a * g_aa + b * g_ab + torch.sign(diff) * ((1.0 - lam) / n * grad)
        return grad_a, None, None


def photometric_loss(rendered: Tensor, gt: Tensor, lambda_dssim: float = 0.2) -> Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM), the 3DGS rendering loss, of a render [H, W, 3] or
    [1, 3, H, W] against a target without gradient: one autograd node (``_PhotometricLoss``), same
    value and gradient as ``photometric_loss_reference`` up to rounding."""
    if gt.requires_grad or not rendered.requires_grad or rendered.shape != gt.shape or \
            (rendered.dim() == 4 and rendered.shape[0] != 1):
        return photometric_loss_reference(rendered, gt, lambda_dssim)
    return _PhotometricLoss.apply(_as_bchw(rendered), _as_bchw(gt).to(rendered.dtype), float(lambda_dssim))
