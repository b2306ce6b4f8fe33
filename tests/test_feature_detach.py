"""One rasterisation for colour and features with the features' gradients kept off the geometry
(``render(feature_geometry_grad=False)``, ``rasterize(detached_channels=...)``), torch backend.

The reference is what training did before: rgb (+ depth) from one render of the model, features
from a second render of a geometry-detached model. Every value and every gradient (geometry,
SH, features, and the ``means2d.grad`` densification reads) must agree up to float64 rounding.
"""
from __future__ import annotations

import pytest
import torch

from gaussian_renderer import GeometryDetached, rasterize, render
from tests.test_rasterizer import TinyModel, as_camera, tiny_scene
from utils.sh_utils import sh_colors

GEOMETRY = ("means", "quats", "scales", "opacities")


def _leaves(scene, names):
    return {k: scene[k].clone().requires_grad_(True) for k in names}


@pytest.mark.parametrize("kw", [{}, dict(block=3, chunk_elements=256 * 3, checkpoint_elements=0)])
def test_rasterize_detached_channels_equal_two_calls(kw):
    from gaussian_renderer.torch_rasterizer import rasterize_torch

    sc = tiny_scene(12, n=40, channels=3 + 5, opacity_range=(0.2, 0.99))
    g = torch.Generator().manual_seed(0)
    w_img = torch.randn(28, 40, 8, generator=g, dtype=torch.float64)
    w_alpha = torch.randn(28, 40, 1, generator=g, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.4, 0.6, 0, 0, 0, 0, 0], dtype=torch.float64)

    def run(split: bool):
        p = _leaves(sc, (*GEOMETRY, "colors"))
        if split:
            img, alpha, info = rasterize_torch(**{**sc, **p}, background=bg, detached_channels=5, **kw)
        else:
            geo = {k: p[k] for k in GEOMETRY}
            img3, alpha, info = rasterize_torch(**{**sc, **geo, "colors": p["colors"][:, :3]},
                                                background=bg[:3], **kw)
            detached = {k: v.detach() for k, v in geo.items()}
            img5, alpha5, _ = rasterize_torch(**{**sc, **detached, "colors": p["colors"][:, 3:]}, **kw)
            torch.testing.assert_close(alpha5, alpha.detach(), atol=0, rtol=0)
            img = torch.cat([img3, img5], dim=-1)
        info["means2d"].retain_grad()
        ((img * w_img).sum() + (alpha * w_alpha).sum()).backward()
        grads = {k: t.grad for k, t in p.items()}
        grads["means2d"] = info["means2d"].grad
        return img.detach(), alpha.detach(), grads

    img_s, alpha_s, grads_s = run(True)
    img_r, alpha_r, grads_r = run(False)
    assert 0.2 < alpha_r.mean() < 0.95
    torch.testing.assert_close(img_s, img_r, atol=1e-13, rtol=0)
    torch.testing.assert_close(alpha_s, alpha_r, atol=1e-13, rtol=0)
    for name, ref in grads_r.items():
        assert ref.abs().sum() > 0, name
        torch.testing.assert_close(grads_s[name], ref, atol=1e-11, rtol=1e-9, msg=name)

    # The joint render (no detach) is a different function: the features do move the geometry.
    p = _leaves(sc, (*GEOMETRY, "colors"))
    img, alpha, info = rasterize(**{**sc, **p}, background=bg, backend="torch")
    ((img * w_img).sum() + (alpha * w_alpha).sum()).backward()
    torch.testing.assert_close(img.detach(), img_s, atol=1e-13, rtol=0)
    assert (p["means"].grad - grads_s["means"]).abs().max() > 1e-3 * grads_s["means"].abs().max()


def _model_and_features(seed=13, n=30):
    sc = tiny_scene(seed, n=n, opacity_range=(0.2, 0.99))
    model = TinyModel(sc, seed=seed)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        setattr(model, name, getattr(model, name).clone().requires_grad_(True))
    g = torch.Generator().manual_seed(seed + 1)
    feats = {"emb": torch.randn(n, 12, generator=g, dtype=torch.float64).requires_grad_(True),
             "sem": torch.rand(n, 2, generator=g, dtype=torch.float64).requires_grad_(True)}
    return sc, model, feats


def _loss(out, weights):
    parts = [(out.alpha * weights["alpha"]).sum()]
    if out.rgb is not None:
        parts.append((out.rgb * weights["rgb"]).sum())
    if out.depth is not None:
        parts.append((out.depth * weights["depth"]).sum())
    parts += [(out.features[k] * weights[k]).sum() for k in out.features]
    return sum(parts)


def _grads(model, feats, info):
    out = {k: torch.zeros_like(getattr(model, k)) if getattr(model, k).grad is None else getattr(model, k).grad.clone()
           for k in ("means", "quats", "scales", "opacities", "sh")}
    out.update({k: v.grad.clone() for k, v in feats.items()})
    out["means2d"] = info["means2d"].grad.clone()
    return out


@pytest.mark.parametrize("with_rgb,with_depth", [(True, True), (True, False), (False, True)])
def test_render_without_feature_geometry_grad_equals_two_renders(with_rgb, with_depth):
    sc, model, feats = _model_and_features()
    cam = as_camera(sc)
    bg = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    weights = {k: torch.randn(28, 40, d, generator=g, dtype=torch.float64)
               for k, d in (("rgb", 3), ("depth", 1), ("alpha", 1), ("emb", 12), ("sem", 2))}

    out = render(cam, model, bg=bg, features=feats, with_rgb=with_rgb, with_depth=with_depth,
                 feature_geometry_grad=False)
    out.info["means2d"].retain_grad()
    _loss(out, weights).backward()
    fused = _grads(model, feats, out.info)

    for t in (*vars(model).values(), *feats.values()):
        if isinstance(t, torch.Tensor):
            t.grad = None
    ref = render(cam, model, bg=bg, with_rgb=with_rgb, with_depth=with_depth)
    ref_feat = render(cam, GeometryDetached(model), features=feats, with_rgb=False)
    ref.info["means2d"].retain_grad()
    ref.features = ref_feat.features
    _loss(ref, weights).backward()
    expected = _grads(model, feats, ref.info)

    assert set(out.features) == {"emb", "sem"} and (out.rgb is None) == (not with_rgb)
    assert 0.2 < ref.alpha.mean() < 0.95
    for name in ("emb", "sem"):
        torch.testing.assert_close(out.features[name], ref_feat.features[name], atol=1e-13, rtol=0)
    torch.testing.assert_close(out.alpha, ref.alpha, atol=1e-13, rtol=0)
    if with_rgb:
        torch.testing.assert_close(out.rgb, ref.rgb, atol=1e-13, rtol=0)
    if with_depth:
        torch.testing.assert_close(out.depth, ref.depth, atol=1e-12, rtol=1e-12)
    for name, value in expected.items():
        if name == "sh" and not with_rgb:
            assert (fused[name] == 0).all()
            continue
        assert value.abs().sum() > 0, name
        torch.testing.assert_close(fused[name], value, atol=1e-11, rtol=1e-9, msg=name)


def test_render_with_feature_geometry_grad_keeps_the_joint_behaviour():
    # True (the default): the features are one more differentiable output of the geometry, so
    # their loss moves means and reaches means2d.grad, exactly as one joint rasterize call.
    sc, model, feats = _model_and_features(seed=21)
    cam = as_camera(sc)
    g = torch.Generator().manual_seed(8)
    weights = {k: torch.randn(28, 40, d, generator=g, dtype=torch.float64)
               for k, d in (("rgb", 3), ("depth", 1), ("alpha", 1), ("emb", 12), ("sem", 2))}
    runs = {}
    for flag in (True, False):
        for t in (model.means, model.quats, model.scales, model.opacities, model.sh, *feats.values()):
            t.grad = None
        out = render(cam, model, features=feats, with_depth=True, feature_geometry_grad=flag)
        out.info["means2d"].retain_grad()
        _loss(out, weights).backward()
        runs[flag] = (out, _grads(model, feats, out.info))

    # The joint reference: one rasterize() of [rgb | emb | sem | z] with nothing detached.
    for t in (model.means, model.quats, model.scales, model.opacities, model.sh, *feats.values()):
        t.grad = None
    centre = torch.from_numpy(cam.center)
    rgb = sh_colors(3, model.get_sh(), model.get_means() - centre)
    viewmat = sc["viewmat"]
    z = (model.get_means() @ viewmat[2, :3] + viewmat[2, 3])[:, None]
    colors = torch.cat([rgb, feats["emb"], feats["sem"], z], dim=-1)
    img, alpha, info = rasterize(model.get_means(), model.get_quats(), model.get_scales(), model.get_opacities(),
                                 colors, viewmat, sc["K"], 40, 28, backend="torch")
    info["means2d"].retain_grad()
    depth = torch.where(alpha > 0, img[..., -1:] / torch.where(alpha > 0, alpha, 1.0), 0.0)
    joint = ((img[..., :3] * weights["rgb"]).sum() + (img[..., 3:15] * weights["emb"]).sum()
             + (img[..., 15:17] * weights["sem"]).sum() + (depth * weights["depth"]).sum()
             + (alpha * weights["alpha"]).sum())
    joint.backward()
    expected = _grads(model, feats, info)
    out_t, grads_t = runs[True]
    for name, value in expected.items():
        torch.testing.assert_close(grads_t[name], value, atol=1e-11, rtol=1e-9, msg=name)

    # Both modes give the same values and feature gradients; only True lets the feature loss
    # reach the geometry and the densification statistic.
    out_f, grads_f = runs[False]
    torch.testing.assert_close(out_f.rgb, out_t.rgb, atol=1e-13, rtol=0)
    torch.testing.assert_close(out_f.features["emb"], out_t.features["emb"], atol=1e-13, rtol=0)
    torch.testing.assert_close(grads_f["emb"], grads_t["emb"], atol=1e-11, rtol=1e-9)
    for name in ("means", "scales", "opacities", "means2d"):
        diff = (grads_f[name] - grads_t[name]).abs().max()
        assert diff > 1e-3 * grads_t[name].abs().max(), name


def test_detached_channels_bad_value_is_a_one_line_error():
    sc = tiny_scene(3, n=5, width=16, height=12)
    with pytest.raises(ValueError, match="detached_channels must be"):
        rasterize(**sc, detached_channels=4, backend="torch")


def test_cpu_backward_is_bit_reproducible():
    # Resumed training must match an uninterrupted run exactly on the CPU: two identical
    # forward+backward passes give identical bits (with steps kept and with steps recomputed).
    from gaussian_renderer.torch_rasterizer import rasterize_torch

    sc = tiny_scene(31, n=60, channels=3 + 4, dtype=torch.float32, opacity_range=(0.2, 0.99))
    for kw in ({}, dict(checkpoint_elements=0, block=5)):
        runs = []
        for _ in range(2):
            p = _leaves(sc, (*GEOMETRY, "colors"))
            img, alpha, info = rasterize_torch(**{**sc, **p}, detached_channels=4, **kw)
            info["means2d"].retain_grad()
            (img.square().sum() + alpha.sum()).backward()
            runs.append([img.detach(), info["means2d"].grad] + [t.grad for t in p.values()])
        for a, b in zip(*runs):
            assert torch.equal(a, b)
        assert runs[0][1].abs().sum() > 0


def test_room_timing_print():
    # The CPU case of issue 10 (128x96, camera inside a room, 30k Gaussians, rgb + 14 feature
    # channels), one thread, CPU time: the one-pass render against the two-call form it
    # replaces. Printed (shared machines make timings swing); asserts only that both agree.
    import time

    from gaussian_renderer.testing import room_scene
    from gaussian_renderer.torch_rasterizer import rasterize_torch

    sc = room_scene(30_000, channels=17)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {}
        for mode in ("separate", "fused", "separate", "fused"):  # second round timed
            p = _leaves(sc, (*GEOMETRY, "colors"))
            t0 = time.process_time()
            if mode == "fused":
                img, alpha, _ = rasterize_torch(**{**sc, **p}, detached_channels=14)
            else:
                img3, alpha, _ = rasterize_torch(**{**sc, **p, "colors": p["colors"][:, :3]})
                detached = {k: p[k].detach() for k in GEOMETRY}
                img14, _, _ = rasterize_torch(**{**sc, **detached, "colors": p["colors"][:, 3:]})
                img = torch.cat([img3, img14], dim=-1)
            (img.sum() + alpha.sum()).backward()
            results[mode] = (time.process_time() - t0, img.detach(), p["means"].grad)
    finally:
        torch.set_num_threads(threads)
    print(f"\n128x96 room, 30k Gaussians, 3+14 channels, 1 thread, forward+backward CPU time: "
          f"two calls {1000 * results['separate'][0]:.0f} ms, one pass {1000 * results['fused'][0]:.0f} ms")
    torch.testing.assert_close(results["fused"][1], results["separate"][1], atol=1e-6, rtol=0)
    torch.testing.assert_close(results["fused"][2], results["separate"][2], atol=1e-6, rtol=1e-4)
