"""The gsplat split-gradient path (``rasterize(..., backend="gsplat", detached_channels=F)``) on
the CPU, with gsplat's CUDA entry points replaced by emulations built on our torch twin.

The emulations take exactly the arguments of gsplat 1.5.3's kernels (``Rasterization.cpp``:
``rasterize_to_pixels_3dgs_fwd/bwd``; ``_wrapper.py``: ``fully_fused_projection``,
``isect_tiles``, ``isect_offset_encode``) and check shapes, contiguity and channel counts as the
C++ does, so this test pins the plumbing (argument order, padding, which backward pass feeds
which gradient) that the GPU test in test_gpu_parity.py checks against the real kernels.
"""
from __future__ import annotations

import pytest
import torch

import gaussian_renderer.rasterizer as rasterizer_mod
from gaussian_renderer import rasterize
from gaussian_renderer.torch_rasterizer import (TileIntersections, intersect_tiles, project_gaussians,
                                                rasterize_to_pixels)
from tests.test_rasterizer import tiny_scene

SUPPORTED = rasterizer_mod.GSPLAT_CHANNELS
CALLS = []


def _isect_from_offsets(tile_offsets, flatten_ids):
    th, tw = tile_offsets.shape[-2:]
    starts = tile_offsets.reshape(-1).long()
    counts = torch.diff(torch.cat([starts, starts.new_tensor([flatten_ids.numel()])]))
    return TileIntersections(flatten_ids.long(), starts, counts, None, tw, th)


def _check(*tensors):
    for t in tensors:
        assert t is None or t.is_contiguous()


def fake_fwd(means2d, conics, colors, opacities, backgrounds, masks, width, height, tile_size,
             tile_offsets, flatten_ids):
    _check(means2d, conics, colors, opacities, backgrounds, tile_offsets, flatten_ids)
    assert colors.shape[-1] in SUPPORTED and masks is None and tile_size == 16
    assert backgrounds is None or backgrounds.shape == (1, colors.shape[-1])
    CALLS.append(("fwd", colors.shape[-1]))
    isect = _isect_from_offsets(tile_offsets, flatten_ids)
    render, alpha = rasterize_to_pixels(means2d[0], conics[0], opacities[0], colors[0], isect, width, height,
                                        background=None if backgrounds is None else backgrounds[0], tile_size=16)
    # Fresh contiguous buffers, as the C++ allocates them.
    return render[None].contiguous(), alpha[None].contiguous(), torch.zeros(1, height, width, dtype=torch.int32)


def fake_bwd(means2d, conics, colors, opacities, backgrounds, masks, width, height, tile_size,
             tile_offsets, flatten_ids, render_alphas, last_ids, v_render_colors, v_render_alphas, absgrad):
    _check(means2d, conics, colors, opacities, backgrounds, tile_offsets, flatten_ids, render_alphas,
           v_render_colors, v_render_alphas)
    assert colors.shape[-1] in SUPPORTED and colors.shape[-1] == v_render_colors.shape[-1]
    assert backgrounds is None or backgrounds.shape == (1, colors.shape[-1])
    assert render_alphas.shape == v_render_alphas.shape == (1, height, width, 1) and absgrad is False
    CALLS.append(("bwd", colors.shape[-1]))
    isect = _isect_from_offsets(tile_offsets, flatten_ids)
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (means2d, conics, opacities, colors)]
        render, alpha = rasterize_to_pixels(leaves[0][0], leaves[1][0], leaves[2][0], leaves[3][0], isect,
                                            width, height, tile_size=16,
                                            background=None if backgrounds is None else backgrounds[0])
        torch.testing.assert_close(alpha[None], render_alphas)
        loss = (render[None] * v_render_colors).sum() + (alpha[None] * v_render_alphas).sum()
        g_m, g_c, g_o, g_col = torch.autograd.grad(loss, leaves, allow_unused=True)
    return None, g_m, g_c, g_col, g_o


def fake_projection(means, covars, quats, scales, viewmats, Ks, width, height, eps2d=0.3, near_plane=0.01,
                    far_plane=1e10, radius_clip=0.0, packed=False, sparse_grad=False, calc_compensations=False,
                    camera_model="pinhole", opacities=None):
    assert covars is None and not packed and not calc_compensations and radius_clip == 0.0
    assert viewmats.shape == (1, 4, 4) and Ks.shape == (1, 3, 3) and opacities is not None
    p = project_gaussians(means, quats, scales, opacities, viewmats[0], Ks[0], width, height,
                          near_plane=near_plane, far_plane=far_plane, eps2d=eps2d)
    return p.radii[None], p.means2d[None], p.depths[None], p.conics[None], None


def fake_isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort=True, segmented=False,
                     packed=False, n_images=None, image_ids=None, gaussian_ids=None):
    assert means2d.dim() == 3 and not packed and n_images == 1
    isect = intersect_tiles(means2d[0], radii[0], depths[0], tile_width * tile_size, tile_height * tile_size,
                            tile_size)
    tile_ids = torch.repeat_interleave(torch.arange(tile_width * tile_height), isect.tile_counts)
    return isect.tiles_per_gauss[None].int(), tile_ids, isect.flatten_ids.int()


def fake_offset_encode(isect_ids, n_images, tile_width, tile_height):
    offsets = torch.searchsorted(isect_ids, torch.arange(tile_width * tile_height))
    return offsets.int().reshape(n_images, tile_height, tile_width)


@pytest.fixture
def fake_gsplat(monkeypatch):
    import gsplat.cuda._wrapper as wrapper

    fakes = {"rasterize_to_pixels_3dgs_fwd": fake_fwd, "rasterize_to_pixels_3dgs_bwd": fake_bwd}
    monkeypatch.setattr(wrapper, "_make_lazy_cuda_func", lambda name: fakes[name])
    monkeypatch.setattr(wrapper, "fully_fused_projection", fake_projection)
    monkeypatch.setattr(wrapper, "isect_tiles", fake_isect_tiles)
    monkeypatch.setattr(wrapper, "isect_offset_encode", fake_offset_encode)
    monkeypatch.setattr(rasterizer_mod, "_require_gsplat", lambda means: None)
    CALLS.clear()
    yield CALLS


@pytest.mark.parametrize("n_geo,n_feat", [(3, 14), (4, 14), (0, 5), (3, 1), (3, 29)])
def test_split_path_matches_torch_twin(fake_gsplat, n_geo, n_feat):
    sc = tiny_scene(17, n=40, channels=n_geo + n_feat, opacity_range=(0.2, 0.99))
    g = torch.Generator().manual_seed(1)
    w_img = torch.randn(28, 40, n_geo + n_feat, generator=g, dtype=torch.float64)
    w_alpha = torch.randn(28, 40, 1, generator=g, dtype=torch.float64)
    bg = torch.cat([torch.rand(n_geo, generator=g, dtype=torch.float64), torch.zeros(n_feat, dtype=torch.float64)])

    def run(backend):
        p = {k: sc[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
        img, alpha, info = rasterize(**{**sc, **p}, background=bg, backend=backend, detached_channels=n_feat)
        info["means2d"].retain_grad()
        ((img * w_img).sum() + (alpha * w_alpha).sum()).backward()
        grads = {k: t.grad for k, t in p.items()}
        grads["means2d"] = info["means2d"].grad
        return img.detach(), alpha.detach(), grads, info

    img_g, alpha_g, grads_g, info = run("gsplat")
    padded = lambda d: next(c for c in SUPPORTED if c >= d)  # noqa: E731
    # a block of a compiled width goes to the feature pass whole (geo output gradients zeroed), else padded
    whole = n_geo + n_feat in SUPPORTED
    assert fake_gsplat == [("fwd", padded(n_geo + n_feat)), ("bwd", padded(n_geo)),
                           ("bwd", n_geo + n_feat if whole else padded(n_feat))]
    for key in ("means2d", "radii", "depths", "conics", "opacities", "flatten_ids", "isect_offsets"):
        assert key in info
    assert info["means2d"].shape == (1, 40, 2) and info["n_cameras"] == 1 and info["gaussian_ids"] is None
    assert info["width"] == 40 and info["height"] == 28

    img_t, alpha_t, grads_t, _ = run("torch")
    torch.testing.assert_close(img_g, img_t, atol=1e-12, rtol=0)
    torch.testing.assert_close(alpha_g, alpha_t, atol=1e-12, rtol=0)
    for name, ref in grads_t.items():
        torch.testing.assert_close(grads_g[name], ref, atol=1e-10, rtol=1e-8, msg=name)


@pytest.mark.parametrize("n_feat", [29, 16])
def test_split_path_features_of_a_detached_geometry(fake_gsplat, n_feat):
    """--seg_scale's feature render: every channel detached and the geometry without gradients. The
    split path then skips the geometry's backward kernel altogether and returns the features' colour
    gradient, equal to the torch twin's (which skips its geometry work too) and to the twin's gradient
    of the same render with geometry gradients on."""
    sc = tiny_scene(19, n=40, channels=n_feat, opacity_range=(0.2, 0.99))
    w_img = torch.randn(28, 40, n_feat, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def run(backend, geometry_grad=False):
        colors = sc["colors"].clone().requires_grad_(True)
        geo = {k: sc[k].clone().requires_grad_(geometry_grad) for k in ("means", "quats", "scales", "opacities")}
        img, alpha, _ = rasterize(**{**sc, **geo, "colors": colors}, backend=backend, detached_channels=n_feat)
        (img * w_img).sum().backward()
        return img.detach(), colors.grad

    img_g, grad_g = run("gsplat")
    padded = next(c for c in SUPPORTED if c >= n_feat)
    assert fake_gsplat == [("fwd", padded), ("bwd", padded)]  # no backward of the (absent) geo channels
    img_t, grad_t = run("torch")
    img_tg, grad_tg = run("torch", geometry_grad=True)
    assert grad_t.abs().sum() > 0
    torch.testing.assert_close(img_g, img_t, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_g, grad_t, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(grad_t, grad_tg, atol=0, rtol=0)
