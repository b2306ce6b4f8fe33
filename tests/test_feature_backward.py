"""The tile kernel for the detached feature channels' gradient (gaussian_renderer/feature_backward.py).

On any machine with nvcc: the CUDA source builds for Hopper without register spills. On a GPU: its
gradient equals gsplat's backward of the same channels (the default path), every other gradient is
untouched, and a training step runs with it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import torch

from gaussian_renderer import GeometryDetached, render
from gaussian_renderer.feature_backward import SOURCE, FeatureBackwardError, feature_backward

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_kernel_source_builds_for_hopper_without_spills(tmp_path):
    out = tmp_path / "k.so"
    r = subprocess.run(["nvcc", "-O3", "-std=c++17", "-gencode=arch=compute_90,code=sm_90", "-shared", "-Xcompiler",
                        "-fPIC", "-Xptxas", "-v", SOURCE, "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 0
    spills = [int(m) for m in re.findall(r"(\d+) bytes spill stores", r.stderr)]
    # the tile kernel at both widths (32, 64 channels), dense and sparse, and the fused backward
    assert len(spills) == 5 and max(spills) == 0, r.stderr
    regs = [int(m) for m in re.findall(r"Used (\d+) registers", r.stderr)]
    assert regs and max(regs) <= 64, regs  # 256 threads a block: several blocks fit on a multiprocessor


def test_bad_arguments_are_one_line_errors():
    x = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="channels"):
        feature_backward(x, x, x, x, x, torch.zeros(1, 8, 8, 3), 3, 0, 8, 8)
    with pytest.raises(ValueError, match="does not hold"):
        feature_backward(x, x, x, x, x, torch.zeros(1, 8, 8, 3), 3, 4, 8, 8)
    from gaussian_renderer.feature_backward import fused_backward, fused_supported

    assert fused_supported(3, 29, 16) and not fused_supported(4, 29, 16) and not fused_supported(3, 33, 16)
    assert not fused_supported(3, 0, 16) and not fused_supported(3, 12, 8)
    n, i32 = 4, torch.zeros(1, dtype=torch.int32)
    geo = (torch.zeros(1, n, 2), torch.zeros(1, n, 3), torch.zeros(1, n))
    for colors, v, what in ((torch.zeros(1, n, 40), torch.zeros(1, 8, 8, 40), "3 geometry \\+ 1..32 feature"),
                            (torch.zeros(1, n, 32), torch.zeros(1, 8, 8, 31), "is not a 8x8 image of 32"),
                            (torch.zeros(1, n, 32).double(), torch.zeros(1, 8, 8, 32), "float32")):
        with pytest.raises(ValueError, match=what):
            fused_backward(*geo, colors, None, i32, i32, torch.zeros(1, 8, 8, 1), i32, v, torch.zeros(1, 8, 8, 1), 8, 8)
    outs = (torch.zeros(1, 4, 6)[..., :5], torch.zeros(1, 4, 4), torch.zeros(1, 3, 5), torch.zeros(1, 4, 5).double())
    for out in outs:
        with pytest.raises(ValueError, match="contiguous float32"):  # strided, too narrow, wrong N, float64
            feature_backward(x, x, x, x, x, torch.zeros(1, 8, 8, 5), 3, 2, 8, 8, out=out)
    if not torch.cuda.is_available():
        from gaussian_renderer.feature_backward import load_library

        with pytest.raises(FeatureBackwardError, match="needs a CUDA GPU"):
            load_library()


def _setup(n, width, height, feat_dim, seed):
    from tests.test_gpu_parity import CudaModel, random_scene
    from scene.cameras import Camera

    scene = random_scene(n, width, height, seed=seed, device="cuda", opacity_range=(0.05, 0.99), spread=1.2)
    model = CudaModel(scene, seed)
    cam = Camera(0, "c", scene["K"].double().cpu().numpy(), scene["viewmat"].double().cpu().numpy(), width, height)
    g = torch.Generator("cuda").manual_seed(seed + 7)
    feat = torch.randn(n, feat_dim, device="cuda", generator=g).requires_grad_(True)
    w_rgb = torch.randn(height, width, 3, device="cuda", generator=g)
    w_feat = torch.randn(height, width, feat_dim, device="cuda", generator=g)
    return model, cam, feat, w_rgb, w_feat


def _grads(model, cam, feat, w_rgb, w_feat, kind):
    from gaussian_renderer.rasterizer import set_feature_backward

    set_feature_backward(kind)
    try:
        for t in (*model.leaves().values(), feat):
            t.grad = None
        out = render(cam, model, bg=torch.tensor([0.2, 0.5, 0.8], device="cuda"), features={"f": feat},
                     backend="gsplat", feature_geometry_grad=False)
        ((out.rgb * w_rgb).sum() + (out.features["f"] * w_feat).sum()).backward()
        torch.cuda.synchronize()
    finally:
        set_feature_backward("gsplat")
    return {"feat": feat.grad.clone(), **{k: v.grad.clone() for k, v in model.leaves().items()}}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("n,width,height,feat_dim", [(3000, 160, 120, 29), (5000, 250, 170, 14),
                                                     (800, 33, 47, 12), (4000, 128, 96, 40)])
@pytest.mark.parametrize("seed", [0, 1])
def test_tile_kernel_equals_gsplats_feature_gradient(n, width, height, feat_dim, seed):
    """Image sizes with partial tiles, 12 / 14 / 29 / 40 channels (both kernel widths), opacities up to 0.99
    (pixels stop early): the feature gradient agrees with gsplat's to float32 rounding; the geometry and
    colour gradients come from the same gsplat call and differ by no more than two gsplat runs do."""
    model, cam, feat, w_rgb, w_feat = _setup(n, width, height, feat_dim, seed)
    ref = _grads(model, cam, feat, w_rgb, w_feat, "gsplat")
    ref2 = _grads(model, cam, feat, w_rgb, w_feat, "gsplat")  # gsplat's atomic adds: its own run-to-run noise
    got = _grads(model, cam, feat, w_rgb, w_feat, "tile")
    assert ref["feat"].abs().sum() > 0 and (ref["feat"] != 0).any(dim=1).sum() > n // 10
    # gsplat's backward rebuilds the weights back to front by dividing by (1 - alpha), alpha up to 0.99; the tile
    # kernel goes front to back as the forward does. Seen on an H200 (9245fb2): relative error 1.4e-5 to 6.6e-5.
    scale = float(ref["feat"].abs().max())
    torch.testing.assert_close(got["feat"], ref["feat"], rtol=1e-3, atol=1e-4 * scale)
    assert float((got["feat"] - ref["feat"]).norm() / ref["feat"].norm()) < 3e-4
    for k in ("means", "quats", "scales", "opacities", "sh"):
        noise = float((ref2[k] - ref[k]).abs().max())
        assert float((got[k] - ref[k]).abs().max()) <= 4 * noise + 1e-6 * float(ref[k].abs().max()), k


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("n,width,height,feat_dim,seed", [(3000, 96, 64, 29, 0), (2000, 70, 50, 40, 1)])
def test_tile_kernel_equals_its_algorithm_in_float64(n, width, height, feat_dim, seed):
    """The kernel against ``feature_backward_reference`` (its algorithm, step for step) in float64 on
    gsplat's own projection and tile lists: the only difference left is float32 rounding, far below
    the distance to gsplat's division-based weights."""
    from gaussian_renderer.feature_backward import feature_backward_reference
    from gaussian_renderer.rasterizer import rasterize
    from tests.test_gpu_parity import random_scene

    sc = random_scene(n, width, height, seed=seed, device="cuda", opacity_range=(0.05, 0.99), spread=1.2)
    g = torch.Generator("cuda").manual_seed(seed + 7)
    w_feat = torch.randn(height, width, feat_dim, device="cuda", generator=g)
    with torch.no_grad():
        _, _, meta = rasterize(sc["means"], torch.nn.functional.normalize(sc["quats"], dim=-1), sc["scales"],
                               sc["opacities"], torch.rand(n, 3 + feat_dim, device="cuda", generator=g),
                               sc["viewmat"], sc["K"], width, height, backend="gsplat", detached_channels=feat_dim)
    v = torch.cat([torch.randn(1, height, width, 3, device="cuda"), w_feat[None]], dim=-1)  # 3 geo channels first
    got = feature_backward(meta["means2d"].contiguous(), meta["conics"].contiguous(), meta["opacities"].contiguous(),
                           meta["isect_offsets"].contiguous(), meta["flatten_ids"].contiguous(), v.contiguous(),
                           3, feat_dim, width, height)
    ref = feature_backward_reference(meta["means2d"][0].double(), meta["conics"][0].double(),
                                     meta["opacities"][0].double(), meta["isect_offsets"][0],
                                     meta["flatten_ids"], w_feat.double(), width, height)
    assert float(ref.abs().sum()) > 0 and int((ref != 0).any(dim=1).sum()) > n // 10
    assert float((got.double() - ref).norm() / ref.norm()) < 1e-5


def _tile_kernel_args(n, width, height, feat_dim, scene_seed, seed):
    """``feature_backward``'s positional arguments on gsplat's own projection and tile lists of a random
    scene, with a random [1, H, W, 3 + feat_dim] output gradient (3 geometry channels first)."""
    from gaussian_renderer.rasterizer import rasterize
    from tests.test_gpu_parity import random_scene

    sc = random_scene(n, width, height, seed=scene_seed, device="cuda", opacity_range=(0.05, 0.99), spread=1.2)
    g = torch.Generator("cuda").manual_seed(seed)
    with torch.no_grad():
        _, _, meta = rasterize(sc["means"], torch.nn.functional.normalize(sc["quats"], dim=-1), sc["scales"],
                               sc["opacities"], torch.rand(n, 3 + feat_dim, device="cuda", generator=g),
                               sc["viewmat"], sc["K"], width, height, backend="gsplat", detached_channels=feat_dim)
    v = torch.randn(1, height, width, 3 + feat_dim, device="cuda", generator=g)
    return (meta["means2d"].contiguous(), meta["conics"].contiguous(), meta["opacities"].contiguous(),
            meta["isect_offsets"].contiguous(), meta["flatten_ids"].contiguous(), v, 3, feat_dim, width, height)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("n,width,height,feat_dim,seed", [(3000, 160, 120, 29, 0), (5000, 250, 170, 14, 1),
                                                          (800, 33, 47, 12, 2), (4000, 128, 96, 40, 3)])
def test_the_sparse_product_equals_the_dense_one_bit_for_bit(n, width, height, feat_dim, seed):
    """``tile_sparse`` skips only exact zeros and keeps the order of the other terms: each tile's partial
    sums are the same bits; only the order of the atomic adds across tiles differs between any two runs."""
    args = _tile_kernel_args(n, width, height, feat_dim, seed, seed + 11)
    dense, dense2 = feature_backward(*args), feature_backward(*args)
    sparse = feature_backward(*args, sparse=True)
    assert float(dense.abs().sum()) > 0 and int((dense != 0).any(dim=1).sum()) > n // 10
    noise = float((dense2 - dense).abs().max())  # the atomic adds' order, run to run
    assert float((sparse - dense).abs().max()) <= 4 * noise + 1e-6 * float(dense.abs().max())


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("sparse", [False, True])
def test_out_writes_the_feature_columns_of_the_whole_colour_gradient_in_place(sparse):
    """``out=``: the gradient lands in columns n_geo.. of the [1, N, D] buffer (the same values as the
    [N, F] result, up to the atomic adds' order), the geometry columns stay as they were, and no copy
    is made (the buffer itself is returned)."""
    n, feat_dim = 3000, 29
    args = _tile_kernel_args(n, 130, 90, feat_dim, 5, 13)
    alone, alone2 = feature_backward(*args, sparse=sparse), feature_backward(*args, sparse=sparse)
    buf = torch.zeros(1, n, 3 + feat_dim, device="cuda")
    buf[..., :3] = 7.0
    got = feature_backward(*args, sparse=sparse, out=buf)
    assert got is buf
    assert bool((buf[..., :3] == 7.0).all())
    noise = float((alone2 - alone).abs().max())
    assert float(alone.abs().sum()) > 0
    assert float((buf[0, :, 3:] - alone).abs().max()) <= 4 * noise + 1e-6 * float(alone.abs().max())
    with pytest.raises(ValueError, match="contiguous float32"):
        feature_backward(*args, out=torch.zeros(n, 3 + feat_dim, device="cuda")[:, :20])


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("n,width,height,feat_dim", [(3000, 160, 120, 29), (5000, 250, 170, 14), (800, 33, 47, 12)])
@pytest.mark.parametrize("seed,with_bg", [(0, True), (1, False)])
def test_the_fused_backward_equals_gsplat_for_every_gradient(n, width, height, feat_dim, seed, with_bg):
    """``--feature_backward fused``: one kernel for the geometry's backward (gsplat's algorithm, back to front)
    and the features' product. Against gsplat's two-call path, with and without a background, partial tiles
    and opacities up to 0.99: the feature gradient to float32 rounding (as the tile kernel), and every
    geometry gradient within float32 rounding of gsplat's (the same formulas, in another order)."""
    from gaussian_renderer.rasterizer import set_feature_backward

    model, cam, feat, w_rgb, w_feat = _setup(n, width, height, feat_dim, seed)
    bg = torch.tensor([0.2, 0.5, 0.8], device="cuda") if with_bg else None

    def grads(kind):
        set_feature_backward(kind)
        try:
            for t in (*model.leaves().values(), feat):
                t.grad = None
            out = render(cam, model, bg=bg, features={"f": feat}, backend="gsplat", feature_geometry_grad=False)
            out.info["means2d"].retain_grad()
            ((out.rgb * w_rgb).sum() + (out.features["f"] * w_feat).sum() + out.alpha.sum()).backward()
            torch.cuda.synchronize()
        finally:
            set_feature_backward("gsplat")
        return {"feat": feat.grad.clone(), "means2d": out.info["means2d"].grad.clone(),
                **{k: v.grad.clone() for k, v in model.leaves().items()}}

    ref, ref2, got = grads("gsplat"), grads("gsplat"), grads("fused")
    assert ref["feat"].abs().sum() > 0 and (ref["feat"] != 0).any(dim=1).sum() > n // 10
    for k in ("feat", "means2d", "means", "quats", "scales", "opacities", "sh"):
        scale = float(ref[k].abs().max())
        assert scale > 0, k
        noise = float((ref2[k] - ref[k]).abs().max())  # gsplat's own atomic-add order, run to run
        torch.testing.assert_close(got[k], ref[k], rtol=1e-3, atol=4 * noise + 1e-4 * scale, msg=k)
        assert float((got[k] - ref[k]).norm() / ref[k].norm()) < 1e-3, k


@pytest.mark.gpu
@needs_gpu
def test_the_kernel_knows_how_many_channels_this_gpu_takes():
    from gaussian_renderer.feature_backward import max_channels

    props = torch.cuda.get_device_properties(0)
    got = max_channels(torch.device("cuda", 0))
    assert got in (32, 64)
    if (props.major, props.minor) in ((8, 0), (9, 0)):  # A100: 163 KB a block, H100 / H200: 227 KB
        assert got == 64


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind", ["tile", "tile_sparse", "fused"])
def test_training_steps_with_the_tile_kernel(tiny_scene, tmp_path, kind):
    import train

    args = train.prepare_args(["-s", tiny_scene, "-m", str(tmp_path / "t"), "--quiet", "--init_points", "2000",
                               "--seed", "5", "--feature_backward", kind, "--device", "cuda"])
    t = train.Trainer(args, train.read_scene_for(args))
    from gaussian_renderer.rasterizer import feature_backward_kind, set_feature_backward

    try:
        assert feature_backward_kind() == kind
        emb0 = t.model.feature("embedding").detach().clone()
        for step in range(1, 4):
            stats = t.train_step(step)
        assert torch.isfinite(stats["loss"]) and "cluster" in stats
        assert not torch.equal(t.model.feature("embedding"), emb0)
    finally:
        set_feature_backward("gsplat")


@pytest.mark.parametrize("seed,width,height,opacity,n", [(0, 40, 28, (0.05, 0.9), 60), (1, 37, 21, (0.3, 1.0), 60),
                                                         (2, 48, 32, (0.9, 1.0), 200)])
def test_the_kernels_algorithm_equals_the_torch_rasterizers_feature_gradient(seed, width, height, opacity, n):
    """The kernel's algorithm (``feature_backward_reference``, the same steps in PyTorch) against the
    PyTorch rasterizer's autograd through a render whose geometry is held fixed, in float64: partial
    tiles, and opacities up to 1 so that pixels stop early (the exclusive 1e-4 stop) and alpha clamps."""
    from gaussian_renderer.feature_backward import feature_backward_reference
    from gaussian_renderer.torch_rasterizer import intersect_tiles, project_gaussians
    from tests.test_rasterizer import TinyModel, as_camera, tiny_scene

    sc = tiny_scene(seed, n=n, width=width, height=height, opacity_range=opacity, scale_range=(0.2, 0.8))
    model, cam = TinyModel(sc), as_camera(sc)
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, 5, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(height, width, 5, generator=g, dtype=torch.float64)
    out = render(cam, GeometryDetached(model), features={"f": feat}, with_rgb=False, backend="torch")
    (out.features["f"] * v).sum().backward()
    quats = model.get_quats()
    proj = project_gaussians(sc["means"], quats, sc["scales"], sc["opacities"], sc["viewmat"], sc["K"], width, height)
    isect = intersect_tiles(proj.means2d, proj.radii, proj.depths, width, height, 16)
    starts = isect.tile_starts.reshape(isect.tile_height, isect.tile_width)
    ends = torch.cat([isect.tile_starts[1:], torch.tensor([isect.flatten_ids.numel()])])
    assert torch.equal(ends - isect.tile_starts, isect.tile_counts)  # gsplat's offsets layout
    got = feature_backward_reference(proj.means2d, proj.conics, sc["opacities"], starts, isect.flatten_ids, v,
                                     width, height)
    assert feat.grad.abs().sum() > 0
    if opacity[0] >= 0.9:  # opaque layers: most pixels stop early (T would fall to <= 1e-4)
        assert float((out.alpha > 0.998).float().mean()) > 0.5
    torch.testing.assert_close(got, feat.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
@needs_gpu
def test_auto_falls_back_to_gsplat_in_one_line_without_nvcc(tiny_scene, tmp_path, monkeypatch, capsys):
    import train
    from gaussian_renderer import feature_backward as fb
    from gaussian_renderer.rasterizer import feature_backward_kind, set_feature_backward

    monkeypatch.setenv("UNIC_LIFT_CACHE", str(tmp_path / "cache"))  # nothing built there
    monkeypatch.setattr(fb, "_libs", {})
    monkeypatch.setattr(fb, "_nvcc", lambda: None)
    args = train.prepare_args(["-s", tiny_scene, "-m", str(tmp_path / "t"), "--quiet", "--init_points", "500",
                               "--device", "cuda"])
    assert args.feature_backward == "auto"
    try:
        train.Trainer(args, train.read_scene_for(args))
        assert feature_backward_kind() == "gsplat"
        err = capsys.readouterr().err
        assert "nvcc not found" in err and "using gsplat's backward" in err and len(err.strip().splitlines()) == 1
        args.feature_backward = "tile"
        with pytest.raises(train.SceneError, match="nvcc not found"):
            train.Trainer(args, train.read_scene_for(args))
    finally:
        set_feature_backward("gsplat")


def test_auto_takes_fused_only_where_the_library_says_its_block_fits(monkeypatch):
    """"auto": the fused kernel where the kernel library says its block fits the device's shared memory, else the
    sparse tile kernel (no GPU needed: the library is replaced by one that answers as told)."""
    import types

    from gaussian_renderer import feature_backward as fb
    from gaussian_renderer.rasterizer import feature_backward_kind, set_feature_backward

    answer = {"fits": 1}
    lib = types.SimpleNamespace(unic_fused_bwd_fits=lambda idx: answer["fits"])
    monkeypatch.setattr(fb, "load_library", lambda device=None: lib)
    monkeypatch.setattr(fb, "_device_index", lambda device: 0)
    try:
        for fits, kind in ((1, "fused"), (0, "tile_sparse"), (-1, "tile_sparse")):
            answer["fits"] = fits
            assert set_feature_backward("auto") is None
            assert feature_backward_kind() == kind, fits
    finally:
        set_feature_backward("gsplat")


@pytest.mark.gpu
@needs_gpu
def test_auto_takes_the_fused_kernel_where_it_builds():
    from gaussian_renderer.feature_backward import fused_fits
    from gaussian_renderer.rasterizer import feature_backward_kind, set_feature_backward

    try:
        assert set_feature_backward("auto") is None
        assert feature_backward_kind() == ("fused" if fused_fits() else "tile_sparse")
    finally:
        set_feature_backward("gsplat")


def test_the_cpu_always_uses_gsplats_path(tiny_scene, tmp_path):
    """--feature_backward is a CUDA choice: on the CPU every setting trains through the reference path."""
    import train
    from gaussian_renderer.rasterizer import feature_backward_kind

    for kind in ("auto", "tile"):
        args = train.prepare_args(["-s", tiny_scene, "-m", str(tmp_path / kind), "--quiet", "--init_points", "300",
                                   "--device", "cpu", "--feature_backward", kind])
        train.Trainer(args, train.read_scene_for(args))
        assert feature_backward_kind() == "gsplat"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's answer")
def test_auto_says_why_it_takes_gsplats_kernel():
    from gaussian_renderer.rasterizer import feature_backward_kind, set_feature_backward

    assert "needs a CUDA GPU" in set_feature_backward("auto")
    assert feature_backward_kind() == "gsplat"
    with pytest.raises(FeatureBackwardError, match="needs a CUDA GPU"):
        set_feature_backward("tile")
    with pytest.raises(ValueError, match="use one of auto, gsplat"):
        set_feature_backward("fast")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind", ["gsplat", "tile", "tile_sparse", "fused"])
@pytest.mark.parametrize("n,width,height,feat_dim,seed", [(3000, 160, 120, 29, 0), (2000, 80, 60, 16, 1)])
def test_features_of_the_detached_geometry_on_every_kernel(kind, n, width, height, feat_dim, seed):
    """--seg_scale's feature pass: a features-only render of the geometry-detached model. Its backward has no
    geometry channels (the split path skips gsplat's geometry kernel); each kernel's feature gradient equals
    the fused render's feature gradient (gsplat's kernel) to float32 rounding, and no geometry moves."""
    from gaussian_renderer.rasterizer import set_feature_backward

    model, cam, feat, w_rgb, w_feat = _setup(n, width, height, feat_dim, seed)
    ref = _grads(model, cam, feat, w_rgb, w_feat, "gsplat")["feat"]
    fused = render(cam, model, features={"f": feat}, backend="gsplat", feature_geometry_grad=False)
    set_feature_backward(kind)
    try:
        for t in (*model.leaves().values(), feat):
            t.grad = None
        out = render(cam, GeometryDetached(model), features={"f": feat}, with_rgb=False, backend="gsplat",
                     feature_geometry_grad=False)
        (out.features["f"] * w_feat).sum().backward()
        torch.cuda.synchronize()
    finally:
        set_feature_backward("gsplat")
    assert out.rgb is None and all(t.grad is None for t in model.leaves().values())
    torch.testing.assert_close(out.features["f"], fused.features["f"].detach(), rtol=1e-5, atol=1e-6)
    assert ref.abs().sum() > 0
    scale = float(ref.abs().max())
    torch.testing.assert_close(feat.grad, ref, rtol=1e-3, atol=1e-4 * scale)
