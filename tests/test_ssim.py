"""The separable SSIM against its direct 2-D twin (3DGS's form): values and gradients."""
from __future__ import annotations

import time

import pytest
import torch

from utils.loss_utils import (photometric_loss, photometric_loss_reference, ssim, ssim_map, ssim_reference,
                              ssim_reference_map)


def _pair(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(*shape, generator=g, dtype=dtype)
    # b: a noisy copy shifted along H, so that SSIM sits well inside (0, 1) and varies.
    shifted = a.roll(2, dims=0 if len(shape) == 3 else 2)
    b = (0.7 * shifted + 0.3 * torch.rand(*shape, generator=g, dtype=dtype)).clamp(0, 1)
    return a, b


@pytest.mark.parametrize("shape", [(37, 53, 3), (12, 9, 3), (2, 4, 31, 20)])
def test_separable_equals_direct_float64(shape):
    a, b = _pair(shape, torch.float64)
    a.requires_grad_(True)
    w = torch.rand(_as_map_shape(shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m_sep = ssim_map(a, b)
    (g_sep,) = torch.autograd.grad((m_sep * w).sum(), a)
    m_ref = ssim_reference_map(a, b)
    (g_ref,) = torch.autograd.grad((m_ref * w).sum(), a)
    assert m_ref.shape == m_sep.shape
    assert 0.05 < m_ref.mean() < 0.95 and m_ref.std() > 0.05
    torch.testing.assert_close(m_sep, m_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_sep, g_ref, atol=1e-12, rtol=1e-10)


def _as_map_shape(shape):
    return (1, shape[2], shape[0], shape[1]) if len(shape) == 3 else shape


def _value_and_grad(loss, a, b):
    """loss(a, b) as a float and its gradient with respect to a."""
    x = a.clone().requires_grad_(True)
    value = loss(x, b)
    value.backward()
    return value.item(), x.grad


def test_separable_equals_direct_float32():
    a, b = _pair((96, 128, 3), torch.float32, seed=3)
    (s1, g1), (s2, g2) = _value_and_grad(ssim, a, b), _value_and_grad(ssim_reference, a, b)
    assert abs(s1 - s2) <= 1e-5
    torch.testing.assert_close(ssim_map(a, b), ssim_reference_map(a, b), atol=5e-5, rtol=0)
    assert (g1 - g2).abs().max() <= 1e-5 * g2.abs().max() * 10
    # The loss used in training goes through the separable form.
    l1 = photometric_loss(a, b)
    assert torch.isclose(l1, 0.8 * (a - b).abs().mean() + 0.2 * (1 - ssim_reference(a, b)), atol=1e-6)


@pytest.mark.parametrize("shape", [(37, 53, 3), (12, 9, 3), (1, 3, 31, 20)])
@pytest.mark.parametrize("lam", [0.0, 0.2, 1.0])
def test_fused_photometric_loss_equals_autograd_float64(shape, lam):
    """The one-node photometric loss (hand-written gradient) against autograd through the reference."""
    a, b = _pair(shape, torch.float64, seed=7)
    a.requires_grad_(True)
    fused = photometric_loss(a, b, lam)
    ref = photometric_loss_reference(a, b, lam)
    assert fused.grad_fn is not None and type(fused.grad_fn).__name__ == "_PhotometricLossBackward"
    torch.testing.assert_close(fused, ref, atol=1e-14, rtol=0)
    (g_fused,) = torch.autograd.grad(fused * 3.7, a)  # a scaled upstream gradient
    (g_ref,) = torch.autograd.grad(ref * 3.7, a)
    assert g_ref.abs().max() > 0
    torch.testing.assert_close(g_fused, g_ref, atol=1e-15, rtol=1e-9)


def test_fused_photometric_loss_float32_and_fallbacks():
    a, b = _pair((96, 128, 3), torch.float32, seed=3)
    (l1, g1), (l2, g2) = _value_and_grad(photometric_loss, a, b), _value_and_grad(photometric_loss_reference, a, b)
    assert abs(l1 - l2) <= 1e-6
    assert (g1 - g2).abs().max() <= 1e-4 * g2.abs().max()
    # no gradient wanted, or a target that needs one: the autograd form, same value
    assert abs(photometric_loss(a, b).item() - l2) <= 1e-6
    b2 = b.clone().requires_grad_(True)
    both = photometric_loss(a.clone().requires_grad_(True), b2)
    assert type(both.grad_fn).__name__ != "_PhotometricLossBackward"
    both.backward()
    assert b2.grad is not None and b2.grad.abs().max() > 0


def test_identical_images_give_one():
    a, _ = _pair((20, 30, 3), torch.float64)
    torch.testing.assert_close(ssim(a, a), torch.tensor(1.0, dtype=torch.float64))


def test_timing_print():
    # Printed, not asserted (CPU timings on a shared machine swing): separable vs direct.
    a, b = _pair((96, 128, 3), torch.float32, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, fn in (("separable", ssim), ("direct 2-D", ssim_reference)):
            times = []
            for _ in range(7):
                x = a.clone().requires_grad_(True)
                t0 = time.perf_counter()
                fn(x, b).backward()
                times.append(time.perf_counter() - t0)
            print(f"\nSSIM {name} 128x96x3, 1 thread: forward+backward median {1000 * sorted(times)[3]:.2f} ms")
    finally:
        torch.set_num_threads(threads)
