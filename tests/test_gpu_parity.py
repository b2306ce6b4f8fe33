"""gsplat's CUDA rasterizer vs our torch twin, both on the GPU: images, gradients, radii.

Run on the device with ``python -m pytest -q -s tests/test_gpu_parity.py`` (``-s`` prints the
measured differences). Skipped without CUDA. The first gsplat call compiles its kernels.

Why the tolerances are what they are (float32 on both sides):
* Smooth part: both evaluate the same formulas in a different order (gsplat uses fast-math
  ``__expf`` and a sequential product for T; we use ``exp`` and ``cumprod``), a few ulp per term
  over tens of blended terms: ~1e-6 per pixel. Bound on the 99.9th percentile: 2e-5.
* Discrete part: a (pixel, Gaussian) pair whose alpha lies within rounding of the 1/255 cut,
  or a pixel whose T lies within rounding of the 1e-4 stop, may be decided differently. One
  such flip moves a pixel by at most 1/255 (colours in [0, 1], T <= 1) or, for the stop with
  opacities <= 0.9, by at most 0.9 * 1e-4 / (1 - 0.9) ~ 1e-3. Bound on the max: 5e-3, and such
  pixels must be rare (<= 0.1 %).
* Gradients: gsplat's backward recovers T by dividing by (1 - alpha) front to back and sums
  with atomics, so it carries float32 noise that grows with depth complexity; a flipped pair
  also changes its Gaussian's gradient. Compared per input relative to that input's largest
  gradient: 99th percentile <= 1e-3, and the gradient vectors' cosine >= 0.999.
* radii: ``ceil`` of values computed with ``__logf``/``sqrtf`` vs torch: off by one at most,
  for at most 0.1 % of the Gaussians.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gaussian_renderer import rasterize, render
from gaussian_renderer.testing import random_scene
from scene.cameras import Camera

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

INPUTS = ("means", "quats", "scales", "opacities", "colors")


def run_backend(scene: dict, backend: str, background: torch.Tensor, weights: torch.Tensor):
    leaves = {k: scene[k].clone().requires_grad_(True) for k in INPUTS}
    img, alpha, info = rasterize(**{**scene, **leaves}, background=background, backend=backend)
    assert info["backend"] == backend
    info["means2d"].retain_grad()
    loss = (img * weights[..., :-1]).sum() + (alpha * weights[..., -1:]).sum()
    loss.backward()
    torch.cuda.synchronize()
    grads = {k: t.grad.detach() for k, t in leaves.items()}
    grads["means2d"] = info["means2d"].grad.detach()[0]
    return img.detach(), alpha.detach(), info["radii"][0], grads


@pytest.mark.parametrize("n,width,height", [(3000, 160, 120), (8000, 640, 480)])
def test_backends_agree(n, width, height):
    torch.manual_seed(0)
    scene = random_scene(n, width, height, channels=3 + 12, seed=n, device="cuda",
                         opacity_range=(0.05, 0.9), spread=1.3)
    channels = scene["colors"].shape[1]
    background = torch.linspace(0.1, 0.9, channels, device="cuda")
    weights = torch.rand(height, width, channels + 1, device="cuda")  # random cotangent

    img_g, alpha_g, radii_g, grads_g = run_backend(scene, "gsplat", background, weights)
    img_t, alpha_t, radii_t, grads_t = run_backend(scene, "torch", background, weights)

    print(f"\n[{n} Gaussians, {width}x{height}, {channels} channels + alpha]")
    diff = torch.cat([(img_t - img_g).abs(), (alpha_t - alpha_g).abs()], dim=-1)  # [H, W, D + 1]
    q999 = torch.quantile(diff.flatten().float()[: 1 << 24], 0.999).item()
    frac_big = (diff.amax(-1) > 1e-4).float().mean().item()
    print(f"image+alpha: max |diff| {diff.max().item():.3e}, mean {diff.mean().item():.3e}, "
          f"99.9th pct {q999:.3e}, pixels > 1e-4: {100 * frac_big:.4f} %")
    assert alpha_g.mean() > 0.3  # a real scene
    assert q999 <= 2e-5
    assert diff.max() <= 5e-3
    assert frac_big <= 1e-3

    vis_g, vis_t = (radii_g > 0).all(-1), (radii_t > 0).all(-1)
    radii_off = (radii_t - radii_g).abs().amax(-1)
    print(f"radii: visible {int(vis_g.sum())} (gsplat) vs {int(vis_t.sum())} (torch), "
          f"Gaussians with different radii {int((radii_off > 0).sum())}, max diff {int(radii_off.max())}")
    assert (vis_g != vis_t).float().mean() <= 1e-3
    assert (radii_off > 0).float().mean() <= 1e-3 and radii_off.max() <= 1

    both = vis_g & vis_t
    for name in (*INPUTS, "means2d"):
        g, t = grads_g[name][both].flatten(), grads_t[name][both].flatten()
        scale = g.abs().max().clamp_min(1e-30)
        rel = (t - g).abs() / scale
        cos = torch.nn.functional.cosine_similarity(t.double(), g.double(), dim=0).item()
        q99 = torch.quantile(rel.float()[: 1 << 24], 0.99).item()
        print(f"grad {name:9s}: max |diff| {(t - g).abs().max().item():.3e} (largest grad {scale.item():.3e}), "
              f"max rel {rel.max().item():.3e}, 99th pct rel {q99:.3e}, cosine {cos:.7f}")
        assert q99 <= 1e-3, name
        assert cos >= 0.999, name
    # Culled Gaussians get no gradient on either side.
    assert grads_t["means"][~vis_t].abs().sum() == 0 and grads_g["means"][~vis_g].abs().sum() == 0


def test_render_backends_agree_with_features_and_depth():
    scene = random_scene(2000, 160, 120, seed=5, device="cuda", opacity_range=(0.05, 0.9))

    class Model:
        active_sh_degree, max_sh_degree = 3, 3
        sh = 0.3 * torch.randn(2000, 16, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(0))

        def get_means(self): return scene["means"]
        def get_quats(self): return torch.nn.functional.normalize(scene["quats"], dim=-1)
        def get_scales(self): return scene["scales"]
        def get_opacities(self): return scene["opacities"]
        def get_sh(self): return self.sh

    cam = Camera(0, "c", scene["K"].double().cpu().numpy(), scene["viewmat"].double().cpu().numpy(), 160, 120)
    emb = torch.sigmoid(torch.randn(2000, 12, device="cuda", generator=torch.Generator("cuda").manual_seed(1)))
    bg = torch.tensor([1.0, 1.0, 1.0], device="cuda")
    outs = {b: render(cam, Model(), bg=bg, features={"emb": emb}, with_depth=True, backend=b)
            for b in ("gsplat", "torch")}
    g, t = outs["gsplat"], outs["torch"]
    d_rgb = (g.rgb - t.rgb).abs().max().item()
    d_emb = (g.features["emb"] - t.features["emb"]).abs().max().item()
    solid = (g.alpha > 0.5) & (t.alpha > 0.5)  # expected depth is ill-conditioned where alpha ~ 0
    d_depth = (g.depth - t.depth).abs()[solid].max().item()
    print(f"\nrender(): max |diff| rgb {d_rgb:.3e}, emb {d_emb:.3e}, depth (alpha > 0.5) {d_depth:.3e}")
    assert d_rgb <= 5e-3 and d_emb <= 5e-3
    assert d_depth <= 1e-2 * float(scene["means"].norm(dim=-1).max())  # relative to the scene depth
    assert g.info["backend"] == "gsplat" and t.info["backend"] == "torch"
