"""gsplat's CUDA rasterizer vs our torch twin, both on the GPU: images, gradients, radii.

Run on the device with ``python -m pytest -q -s tests/test_gpu_parity.py`` (``-s`` prints the
measured differences and the timing of the one-pass colour + feature render). Skipped without
CUDA. The first gsplat call compiles its kernels.

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

from gaussian_renderer import GeometryDetached, rasterize, render
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


# ------------------------------------------------------------------ one pass for colour + features


class CudaModel:
    """Leaf tensors on the GPU behind the accessors render() reads (float32)."""

    def __init__(self, scene: dict, seed: int = 0):
        g = torch.Generator("cuda").manual_seed(seed)
        n = scene["means"].shape[0]
        self.means = scene["means"].clone().requires_grad_(True)
        self.quats = scene["quats"].clone().requires_grad_(True)
        self.scales = scene["scales"].clone().requires_grad_(True)
        self.opacities = scene["opacities"].clone().requires_grad_(True)
        self.sh = (0.3 * torch.randn(n, 16, 3, device="cuda", generator=g)).requires_grad_(True)
        self.active_sh_degree, self.max_sh_degree = 3, 3

    def leaves(self):
        return {"means": self.means, "quats": self.quats, "scales": self.scales,
                "opacities": self.opacities, "sh": self.sh}

    def get_means(self): return self.means
    def get_quats(self): return torch.nn.functional.normalize(self.quats, dim=-1)
    def get_scales(self): return self.scales
    def get_opacities(self): return self.opacities
    def get_sh(self): return self.sh


def fused_setup(n, width, height, seed=0):
    scene = random_scene(n, width, height, seed=seed, device="cuda", opacity_range=(0.05, 0.9), spread=1.2)
    model = CudaModel(scene, seed)
    cam = Camera(0, "c", scene["K"].double().cpu().numpy(), scene["viewmat"].double().cpu().numpy(), width, height)
    g = torch.Generator("cuda").manual_seed(seed + 1)
    feats = {"emb": torch.randn(n, 12, device="cuda", generator=g).requires_grad_(True),
             "sem": torch.rand(n, 2, device="cuda", generator=g).requires_grad_(True)}
    weights = {k: torch.randn(height, width, d, device="cuda", generator=g)
               for k, d in (("rgb", 3), ("depth", 1), ("alpha", 1), ("emb", 12), ("sem", 2))}
    return model, cam, feats, weights


def weighted_loss(rgb, depth, alpha, features, weights):
    loss = (rgb * weights["rgb"]).sum() + (alpha * weights["alpha"]).sum()
    if depth is not None:
        loss = loss + (depth * weights["depth"]).sum() * 1e-2
    return loss + sum((features[k] * weights[k]).sum() for k in features)


def run_fused(model, cam, feats, weights, backend, fused: bool):
    """fused=True: render(feature_geometry_grad=False); False: the two-render reference."""
    for t in (*model.leaves().values(), *feats.values()):
        t.grad = None
    bg = torch.tensor([0.3, 0.6, 0.9], device="cuda")
    if fused:
        out = render(cam, model, bg=bg, features=feats, with_depth=True, backend=backend,
                     feature_geometry_grad=False)
        features = out.features
    else:
        out = render(cam, model, bg=bg, with_depth=True, backend=backend)
        features = render(cam, GeometryDetached(model), features=feats, with_rgb=False, backend=backend).features
    out.info["means2d"].retain_grad()
    weighted_loss(out.rgb, out.depth, out.alpha, features, weights).backward()
    torch.cuda.synchronize()
    values = {"rgb": out.rgb.detach(), "depth": out.depth.detach(), "alpha": out.alpha.detach(),
              **{k: v.detach() for k, v in features.items()}}
    grads = {k: t.grad.detach().clone() for k, t in {**model.leaves(), **feats}.items()}
    grads["means2d"] = out.info["means2d"].grad.detach()[0].clone()
    return values, grads, out.info


def compare_grads(grads_a, grads_b, mask, q99_max, cos_min, label):
    for name in grads_b:
        a, b = grads_a[name][mask], grads_b[name][mask]  # every gradient is per Gaussian: [N, ...]
        a, b = a.flatten().double(), b.flatten().double()
        scale = b.abs().max().clamp_min(1e-30)
        rel = (a - b).abs() / scale
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        q99 = torch.quantile(rel.float()[: 1 << 24], 0.99).item()
        print(f"{label} grad {name:9s}: max rel {rel.max().item():.3e}, 99th pct rel {q99:.3e}, cosine {cos:.8f}")
        assert b.abs().sum() > 0, name
        assert q99 <= q99_max, name
        assert cos >= cos_min, name


def test_fused_features_match_two_gsplat_renders():
    # Same kernels, same arithmetic per channel: the values agree to the last bit or nearly;
    # gradients differ only by the order of gsplat's atomic adds.
    model, cam, feats, weights = fused_setup(20_000, 320, 240, seed=3)
    vals_f, grads_f, info = run_fused(model, cam, feats, weights, "gsplat", fused=True)
    vals_r, grads_r, info_r = run_fused(model, cam, feats, weights, "gsplat", fused=False)
    print()
    for name, ref in vals_r.items():
        d = (vals_f[name] - ref).abs().max().item()
        print(f"fused vs two renders: {name:6s} max |diff| {d:.3e}")
        assert d <= 1e-5 * max(1.0, ref.abs().max().item()), name
    assert vals_r["alpha"].mean() > 0.3
    assert torch.equal(info["radii"], info_r["radii"])
    visible = (info["radii"][0] > 0).all(-1)
    compare_grads(grads_f, grads_r, visible, q99_max=1e-5, cos_min=0.99999, label="fused vs two renders")


def test_fused_gsplat_matches_torch_twin():
    model, cam, feats, weights = fused_setup(3000, 160, 120, seed=4)
    vals_g, grads_g, info_g = run_fused(model, cam, feats, weights, "gsplat", fused=True)
    vals_t, grads_t, info_t = run_fused(model, cam, feats, weights, "torch", fused=True)
    print()
    # As in test_render_backends_agree_with_features_and_depth: a (pixel, Gaussian) pair on the
    # 1/255 cut may flip, moving a pixel by |value| / 255 at most; depth only where solid.
    solid = (vals_g["alpha"] > 0.5) & (vals_t["alpha"] > 0.5)
    max_depth = float(model.means.detach().norm(dim=-1).max())
    for name, ref in vals_t.items():
        diff = (vals_g[name] - ref).abs()
        d = (diff[solid] if name == "depth" else diff).max().item()
        bound = 1e-2 * max_depth if name == "depth" else 5e-3 * max(1.0, ref.abs().max().item())
        print(f"gsplat vs torch (fused): {name:6s} max |diff| {d:.3e} (bound {bound:.1e})")
        assert d <= bound, name
    visible = (info_g["radii"][0] > 0).all(-1) & (info_t["radii"][0] > 0).all(-1)
    compare_grads(grads_g, grads_t, visible, q99_max=1e-3, cos_min=0.999, label="gsplat vs torch (fused)")


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_fused_sh_matches_eval_sh(degree):
    from utils.sh_utils import sh_colors

    g = torch.Generator("cuda").manual_seed(degree)
    dirs = torch.randn(5000, 3, device="cuda", generator=g) * 3.0  # any length: both normalise
    sh = 0.5 * torch.randn(5000, 16, 3, device="cuda", generator=g)
    w = torch.randn(5000, 3, device="cuda", generator=g)
    out = {}
    for fused in (True, False):
        d, s = dirs.clone().requires_grad_(True), sh.clone().requires_grad_(True)
        rgb = sh_colors(degree, s, d, fused=fused)
        (rgb * w).sum().backward()
        out[fused] = (rgb.detach(), s.grad, torch.zeros_like(d) if d.grad is None else d.grad)
    (rgb_f, gs_f, gd_f), (rgb_t, gs_t, gd_t) = out[True], out[False]
    print(f"\nSH degree {degree}: max |diff| colour {(rgb_f - rgb_t).abs().max().item():.3e}, "
          f"sh grad {(gs_f - gs_t).abs().max().item():.3e}, dir grad {(gd_f - gd_t).abs().max().item():.3e}")
    assert (rgb_t > 0).float().mean() > 0.5
    torch.testing.assert_close(rgb_f, rgb_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gs_f, gs_t, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gd_f, gd_t, atol=1e-4, rtol=1e-4)


def test_fused_timing_print():
    # Not a speed assertion: prints the median of 20 forward+backward passes (CUDA events) of
    # the three ways to get rgb + 12-D embedding + 2-D semantics from 200k Gaussians at 480x360.
    model, cam, feats, weights = fused_setup(200_000, 480, 360, seed=5)
    bg = torch.tensor([0.3, 0.6, 0.9], device="cuda")

    def fused():
        out = render(cam, model, bg=bg, features=feats, feature_geometry_grad=False)
        return out.rgb, out.features

    def separate():
        out = render(cam, model, bg=bg)
        return out.rgb, render(cam, GeometryDetached(model), features=feats, with_rgb=False).features

    def joint():
        out = render(cam, model, bg=bg, features=feats, feature_geometry_grad=True)
        return out.rgb, out.features

    def rgb_only():
        return render(cam, model, bg=bg).rgb, {}

    print()
    for name, fn in (("rgb only", rgb_only), ("fused", fused), ("separate", separate), ("naive joint", joint)):
        times = []
        for i in range(25):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            rgb, features = fn()
            loss = (rgb * weights["rgb"]).sum() + sum((features[k] * weights[k]).sum() for k in features)
            loss.backward()
            end.record()
            torch.cuda.synchronize()
            if i >= 5:
                times.append(start.elapsed_time(end))
        print(f"200k Gaussians 480x360, 3+12+2 channels, {name:11s}: forward+backward median {np.median(times):.3f} ms")
        for t in (*model.leaves().values(), *feats.values()):
            t.grad = None


def test_semantic_votes_agree_across_backends():
    """--semantic_head vote on the GPU: the class shares that gsplat's backward gives (22 channels, padded by
    gsplat) match the torch twin's on Gaussians with a pixel or more of weight."""
    import types

    from segmentation.labels import semantic_votes

    n, w, h, c = 3000, 160, 120, 22
    scene = random_scene(n, w, h, seed=6, device="cuda", opacity_range=(0.05, 0.9))

    class Model:
        active_sh_degree, max_sh_degree = 0, 0

        def get_means(self): return scene["means"]
        def get_quats(self): return torch.nn.functional.normalize(scene["quats"], dim=-1)
        def get_scales(self): return scene["scales"]
        def get_opacities(self): return scene["opacities"]
        def get_sh(self): return torch.zeros(n, 1, 3, device="cuda")

    cam = Camera(0, "c", scene["K"].double().cpu().numpy(), scene["viewmat"].double().cpu().numpy(), w, h)
    g = torch.Generator("cuda").manual_seed(2)
    sem = torch.randint(-1, c, (h, w), device="cuda", generator=g)  # -1: unlabelled
    sem[:, : w // 3] = 5  # a region of one class, so shares are far from uniform
    view = types.SimpleNamespace(camera=cam, semantic=sem, valid=None,
                                 confidence=torch.rand(h, w, device="cuda", generator=g))
    out = {b: semantic_votes(Model(), [view, view], c, backend=b) for b in ("gsplat", "torch")}
    from segmentation.visibility import gaussian_visibility

    seen = gaussian_visibility(Model(), [cam], backend="torch") >= 1.0
    d = (out["gsplat"] - out["torch"]).abs()[seen].max().item()
    agree = (out["gsplat"].argmax(1) == out["torch"].argmax(1))[seen].float().mean().item()
    print(f"\nsemantic_votes gsplat vs torch: {int(seen.sum())} seen Gaussians, max |diff| {d:.2e}, argmax agree {agree:.4f}")
    assert int(seen.sum()) > 100 and d < 2e-2 and agree > 0.99
