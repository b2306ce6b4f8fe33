"""The pure-PyTorch rasterizer against an independent reference, its gradients, and render()."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gaussian_renderer import RenderOutput, rasterize, render, resolve_backend
from gaussian_renderer.testing import random_scene
from gaussian_renderer.torch_rasterizer import (
    intersect_tiles,
    project_gaussians,
    rasterize_to_pixels,
    rasterize_torch,
)
from scene.cameras import Camera
from utils.sh_utils import eval_sh, rgb_to_sh, sh_to_rgb

# ---------------------------------------------------------------------------------------------
# Reference: gsplat 1.5.3's rules written out plainly in float64 numpy, one Gaussian at a time
# for the projection and a sequential front-to-back loop over Gaussians for the pixels. It
# uses no tiles and no bounding boxes: every Gaussian in front of the near plane is tried on
# every pixel, so a box or tile list that is too small in the rasterizer shows up as a diff.
# ---------------------------------------------------------------------------------------------


def reference_render(scene: dict, background=None, near=0.01, far=1e10, eps2d=0.3):
    d = {k: (v.detach().double().numpy() if torch.is_tensor(v) else v) for k, v in scene.items()}
    W, H = d["width"], d["height"]
    fx, fy, cx, cy = d["K"][0, 0], d["K"][1, 1], d["K"][0, 2], d["K"][1, 2]
    Rv, tv = d["viewmat"][:3, :3], d["viewmat"][:3, 3]
    lx_pos, lx_neg = (W - cx) / fx + 0.15 * W / fx, cx / fx + 0.15 * W / fx
    ly_pos, ly_neg = (H - cy) / fy + 0.15 * H / fy, cy / fy + 0.15 * H / fy
    gauss = []  # (z, index, mean2d, conic, opacity)
    for i in range(len(d["means"])):
        x, y, z = Rv @ d["means"][i] + tv
        if z < near or z > far or d["opacities"][i] < 1 / 255:
            continue
        w, qx, qy, qz = d["quats"][i]
        rot = Rotation.from_quat([qx, qy, qz, w]).as_matrix()  # scipy is xyzw
        cov = Rv @ rot @ np.diag(d["scales"][i] ** 2) @ rot.T @ Rv.T
        tx, ty = z * np.clip(x / z, -lx_neg, lx_pos), z * np.clip(y / z, -ly_neg, ly_pos)
        J = np.array([[fx / z, 0, -fx * tx / z**2], [0, fy / z, -fy * ty / z**2]])
        cov2d = J @ cov @ J.T + eps2d * np.eye(2)
        if np.linalg.det(cov2d) <= 0:
            continue
        conic = np.linalg.inv(cov2d)
        gauss.append((z, i, np.array([fx * x / z + cx, fy * y / z + cy]), conic, d["opacities"][i]))
    gauss.sort(key=lambda g: (g[0], g[1]))

    D = d["colors"].shape[1]
    py, px = np.mgrid[0:H, 0:W] + 0.5  # pixel centres
    T = np.ones((H, W))
    out = np.zeros((H, W, D))
    done = np.zeros((H, W), bool)
    for z, i, m, conic, o in gauss:  # front to back
        dx, dy = m[0] - px, m[1] - py
        sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
        alpha = np.minimum(0.999, o * np.exp(-sigma))
        use = ~done & (sigma >= 0) & (alpha >= 1 / 255)
        next_T = T * (1 - alpha)
        stop = use & (next_T <= 1e-4)
        done |= stop
        use &= ~stop
        out += np.where(use, alpha * T, 0)[..., None] * d["colors"][i]
        T = np.where(use, next_T, T)
    if background is not None:
        out = out + T[..., None] * np.asarray(background)
    return out, 1 - T[..., None], done


def tiny_scene(seed, n=30, width=40, height=28, channels=3, dtype=torch.float64, **kw):
    kw.setdefault("scale_range", (0.05, 0.6))
    kw.setdefault("spread", 1.6)  # some Gaussians sit off screen, their tails reach in
    scene = random_scene(n, width, height, channels=channels, seed=seed, dtype=dtype, **kw)
    f = 0.5 * width / np.tan(np.radians(30))
    scene["K"] = torch.tensor([[f, 0, width / 2 + 1.3], [0, f * 1.1, height / 2 - 0.7], [0, 0, 1]], dtype=dtype)
    return scene


def as_camera(scene) -> Camera:
    return Camera(0, "cam", scene["K"].double().numpy(), scene["viewmat"].double().numpy(),
                  scene["width"], scene["height"])


# --------------------------------------------------------------------------- values vs reference


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference(seed):
    # 40x28 pixels = 3x2 tiles with a partial last row and column; some opacities of 1 so that
    # the 0.999 clamp happens (the T <= 1e-4 stop has its own test below).
    scene = tiny_scene(seed, n=40, opacity_range=(0.05, 1.0), scale_range=(0.1, 0.8), channels=4)
    scene["opacities"][:4] = 1.0  # alpha hits the 0.999 clamp near their centres
    bg = torch.tensor([0.2, 0.5, 0.9, -1.0], dtype=torch.float64)
    with torch.no_grad():
        img, alpha, info = rasterize(**scene, background=bg, backend="torch")
    ref_img, ref_alpha, ref_done = reference_render(scene, background=bg.numpy())
    assert info["backend"] == "torch"
    assert img.shape == (28, 40, 4) and alpha.shape == (28, 40, 1)
    assert 0.3 < alpha.mean() < 0.9  # partly covered
    np.testing.assert_allclose(img.numpy(), ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=1e-5, rtol=0)


def test_opaque_pixels_stop_early_like_gsplat():
    scene = tiny_scene(7, n=100, opacity_range=(0.9, 1.0), scale_range=(0.4, 1.0))
    with torch.no_grad():
        img, alpha, _ = rasterize(**scene, backend="torch")
    ref_img, ref_alpha, ref_done = reference_render(scene)
    assert ref_done.mean() > 0.5  # most pixels reach the stop (one 3x2-tile image)
    np.testing.assert_allclose(img.numpy(), ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=1e-5, rtol=0)
    # The same with 8 Gaussians per step: stops carried across steps, tiles leaving early.
    with torch.no_grad():
        img8, alpha8, _ = rasterize_torch(**scene, block=8)
    np.testing.assert_allclose(img8.numpy(), ref_img, atol=1e-5, rtol=0)
    np.testing.assert_allclose(alpha8.numpy(), ref_alpha, atol=1e-5, rtol=0)


def test_float32_matches_reference():
    scene = tiny_scene(11, dtype=torch.float32)
    with torch.no_grad():
        img, alpha, _ = rasterize(**scene, backend="torch")
    ref_img, ref_alpha, _ = reference_render(scene)
    assert img.dtype == torch.float32
    np.testing.assert_allclose(img.numpy(), ref_img, atol=2e-5, rtol=0)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=2e-5, rtol=0)


def test_blocks_chunks_and_checkpointing_change_nothing():
    # Tiny blocks and chunks force many loop steps; checkpoint_elements=0 recomputes every
    # chunk in backward. Values and gradients must be identical to the one-shot path.
    scene = tiny_scene(5, n=40, opacity_range=(0.3, 0.99))
    leaves = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    weights = torch.rand(28, 40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(**kw):
        for t in leaves.values():
            t.grad = None
        img, alpha, _ = rasterize_torch(**{**scene, **leaves}, **kw)
        ((img * weights).sum() + alpha.sum()).backward()
        return img.detach(), [t.grad.clone() for t in leaves.values()]

    img0, grads0 = run()
    img1, grads1 = run(block=3, chunk_elements=256 * 3, checkpoint_elements=0)
    torch.testing.assert_close(img1, img0, atol=1e-12, rtol=0)
    for g0, g1 in zip(grads0, grads1):
        torch.testing.assert_close(g1, g0, atol=1e-10, rtol=1e-9)


# --------------------------------------------------------------------------- gradients


def smooth_scene():
    # Kept away from every clamp, so that the function is smooth around the inputs: means well
    # inside the frustum (Jacobian clamp inactive), opacities 0.3..0.7 (alpha < 0.999 and, with
    # 5 Gaussians, T >= 0.3^5 > 1e-4). The 1/255 cut is a jump, but it sits between pixel
    # centres for these seeds; a finite-difference step of 1e-6 does not cross it.
    return tiny_scene(3, n=5, width=16, height=12, spread=0.6, opacity_range=(0.3, 0.7),
                      scale_range=(0.2, 0.6), depth_range=(2.0, 4.0))


def test_gradcheck_full_pipeline():
    scene = smooth_scene()
    names = ("means", "scales", "quats", "opacities", "colors")
    g = torch.Generator().manual_seed(1)
    w_img = torch.rand(4, 12, 16, 3, generator=g, dtype=torch.float64)  # 4 random cotangents
    w_alpha = torch.rand(4, 12, 16, 1, generator=g, dtype=torch.float64)
    bg = torch.tensor([0.3, 0.1, 0.7], dtype=torch.float64)

    def f(*inputs):
        img, alpha, _ = rasterize(**{**scene, **dict(zip(names, inputs))}, background=bg, backend="torch")
        return (w_img * img).sum((1, 2, 3)) + (w_alpha * alpha).sum((1, 2, 3))

    inputs = tuple(scene[k].clone().requires_grad_(True) for k in names)
    assert f(*inputs).abs().min() > 0.1  # the Gaussians are on screen
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_pixels_and_means2d_grad():
    # rasterize_to_pixels on its own, from screen-space leaves; and the means2d.grad that
    # densification reads equals the gradient w.r.t. those 2D means.
    scene = smooth_scene()
    with torch.no_grad():
        proj = project_gaussians(scene["means"], scene["quats"], scene["scales"], scene["opacities"],
                                 scene["viewmat"], scene["K"], 16, 12)
    isect = intersect_tiles(proj.means2d, proj.radii, proj.depths, 16, 12)
    w = torch.rand(12, 16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def f(means2d, conics, opacities, colors):
        img, alpha = rasterize_to_pixels(means2d, conics, opacities, colors, isect, 16, 12)
        return (w * img).sum() + alpha.sum()

    leaves = (proj.means2d.clone().requires_grad_(True), proj.conics.clone().requires_grad_(True),
              scene["opacities"].clone().requires_grad_(True), scene["colors"].clone().requires_grad_(True))
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-5)

    f(*leaves).backward()
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    img, alpha, info = rasterize(**{**scene, **params}, backend="torch")
    info["means2d"].retain_grad()
    ((w * img).sum() + alpha.sum()).backward()
    assert info["means2d"].shape == (1, 5, 2)
    assert info["means2d"].grad.abs().sum() > 0
    torch.testing.assert_close(info["means2d"].grad[0], leaves[0].grad, atol=1e-12, rtol=1e-10)


# --------------------------------------------------------------------------- behaviour


def single(means, scales, opac, colors, width=16, height=12, f=12.0):
    """Gaussians in a camera at the origin looking down +z (identity world-to-camera)."""
    n = len(means)
    return dict(
        means=torch.tensor(means, dtype=torch.float64).reshape(n, 3),
        quats=torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64),
        scales=torch.tensor(scales, dtype=torch.float64).reshape(n, 3),
        opacities=torch.tensor(opac, dtype=torch.float64).reshape(n),
        colors=torch.tensor(colors, dtype=torch.float64).reshape(n, -1),
        viewmat=torch.eye(4, dtype=torch.float64),
        K=torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float64),
        width=width, height=height,
    )


def test_radii_and_means2d_follow_gsplat_rule():
    # Isotropic sigma = 0.5 at z = 4, f = 12: 2D variance (12 * 0.5 / 4)^2 + 0.3 = 2.55;
    # extend = min(3.33, sqrt(2 ln(255 * 0.5))) = 3.113; radius = ceil(3.113 * 1.597) = 5.
    sc = single([[0.4, -0.2, 4.0]], [[0.5, 0.5, 0.5]], [0.5], [[1.0, 0, 0]])
    _, _, info = rasterize(**sc, backend="torch")
    extend = min(3.33, np.sqrt(2 * np.log(255 * 0.5)))
    r = int(np.ceil(extend * np.sqrt((12 * 0.5 / 4) ** 2 + 0.3)))
    assert r == 5
    assert info["radii"].tolist() == [[[r, r]]] and info["radii"].dtype == torch.int32
    torch.testing.assert_close(info["means2d"][0, 0], torch.tensor([8 + 12 * 0.1, 6 - 12 * 0.05], dtype=torch.float64))
    torch.testing.assert_close(info["depths"], torch.tensor([[4.0]], dtype=torch.float64))
    assert info["n_cameras"] == 1 and info["width"] == 16 and info["height"] == 12
    assert info["gaussian_ids"] is None


def test_culled_behind_near_plane_and_off_screen():
    sc = single([[0, 0, 0.005], [0, 0, -2.0], [50.0, 0, 2.0], [0, 0, 3.0]],
                [[0.5] * 3] * 4, [0.9] * 4, [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    img, alpha, info = rasterize(**sc, backend="torch")
    assert info["radii"][0, :3].abs().sum() == 0  # near, behind, off screen
    assert (info["radii"][0, 3] > 0).all()
    assert (info["means2d"][0, :3] == 0).all() and (info["depths"][0, :3] == 0).all()
    # Only the white Gaussian is seen: the three channels are equal everywhere.
    torch.testing.assert_close(img[..., 0], img[..., 1])
    torch.testing.assert_close(img[..., 0], img[..., 2])
    assert img.max() > 0.5
    # Nothing in front of the near plane at all -> empty image, still differentiable.
    sc = single([[0, 0, 0.005]], [[0.5] * 3], [0.9], [[1.0, 0, 0]])
    sc["colors"].requires_grad_(True)
    img, alpha, info = rasterize(**sc, backend="torch")
    assert img.abs().sum() == 0 and alpha.abs().sum() == 0
    img.sum().backward()
    assert sc["colors"].grad.abs().sum() == 0


def test_no_gaussians_at_all():
    sc = single([[0, 0, 3.0]], [[0.5] * 3], [0.9], [[1.0, 0, 0]])
    sc = {k: (v[:0] if k in ("means", "quats", "scales", "opacities", "colors") else v) for k, v in sc.items()}
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    img, alpha, info = rasterize(**sc, background=bg, backend="torch")
    assert img.shape == (12, 16, 3) and (alpha == 0).all() and info["radii"].shape == (1, 0, 2)
    torch.testing.assert_close(img, bg.expand(12, 16, 3))


def test_opaque_front_hides_back():
    # Two opaque green layers (alpha 0.999 each) in front of a red one: the second layer would
    # take T to 1e-6 <= 1e-4, so compositing stops there and red never reaches the centre.
    sc = single([[0, 0, 2.0], [0, 0, 2.5], [0, 0, 5.0]], [[2.0, 2.0, 0.01]] * 3, [1.0, 1.0, 1.0],
                [[0, 1.0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    img, alpha, _ = rasterize(**sc, backend="torch")
    c = img[6, 8]
    assert c[0] == 0.0  # red hidden exactly
    assert alpha[6, 8, 0] > 0.99
    torch.testing.assert_close(c[1], alpha[6, 8, 0])  # the first green layer alone
    # Swapping depth order (red in front) gives red.
    sc["means"][2, 2] = 1.0
    img, _, _ = rasterize(**sc, backend="torch")
    assert img[6, 8, 0] > 0.99 and img[6, 8, 1] < 0.01


def test_background_is_T_times_bg():
    sc = tiny_scene(4, n=10, width=16, height=12)
    bg = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    img0, alpha0, _ = rasterize(**sc, backend="torch")
    img1, alpha1, _ = rasterize(**sc, background=bg, backend="torch")
    assert 0.05 < alpha0.mean() < 0.95
    torch.testing.assert_close(alpha1, alpha0)
    torch.testing.assert_close(img1, img0 + (1 - alpha0) * bg)
    empty = single([[0, 0, -1.0]], [[0.5] * 3], [0.9], [[1.0, 0, 0]])
    img, alpha, _ = rasterize(**{**empty, "colors": torch.ones(1, 3, dtype=torch.float64)}, background=bg, backend="torch")
    assert (alpha == 0).all()
    torch.testing.assert_close(img, bg.expand(12, 16, 3))


def test_bad_inputs_raise_one_line_errors():
    sc = single([[0, 0, 3.0]], [[0.5] * 3], [0.9], [[1.0, 0, 0]])
    with pytest.raises(ValueError, match="means must have shape"):
        rasterize(**{**sc, "means": sc["means"][0]})
    with pytest.raises(ValueError, match="quats must have shape"):
        rasterize(**{**sc, "quats": sc["quats"][:, :3]})
    with pytest.raises(ValueError, match="colors must have shape"):
        rasterize(**{**sc, "colors": sc["colors"][0]})
    with pytest.raises(TypeError, match="mix dtypes"):
        rasterize(**{**sc, "colors": sc["colors"].float()})
    with pytest.raises(ValueError, match="background must have shape"):
        rasterize(**sc, background=torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend must be one of"):
        rasterize(**sc, backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs CUDA"):
            rasterize(**sc, backend="gsplat")


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("UNICLIFT_BACKEND", raising=False)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("gsplat", torch.device("cpu")) == "gsplat"  # explicit wins
    expected_cuda = "gsplat" if torch.cuda.is_available() else "torch"
    assert resolve_backend("auto", torch.device("cuda")) == expected_cuda
    monkeypatch.setenv("UNICLIFT_BACKEND", "torch")
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("gsplat", torch.device("cuda")) == "gsplat"
    monkeypatch.setenv("UNICLIFT_BACKEND", "cuda")
    with pytest.raises(ValueError, match="UNICLIFT_BACKEND"):
        resolve_backend("auto", torch.device("cpu"))


def test_densification_strategy_runs_on_torch_info():
    # gsplat's DefaultStrategy reads means2d.grad and radii from info: its statistics must
    # count exactly the visible Gaussians and hold the screen-space gradient norms.
    from gsplat.strategy import DefaultStrategy

    sc = tiny_scene(6, n=20, width=16, height=12, dtype=torch.float32)
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(sc[k].clone())
                                     for k in ("means", "quats", "scales", "opacities", "colors")})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = DefaultStrategy(verbose=False)
    state = strategy.initialize_state()
    img, alpha, info = rasterize(params["means"], params["quats"], params["scales"], params["opacities"],
                                 params["colors"], sc["viewmat"], sc["K"], 16, 12, backend="torch")
    strategy.step_pre_backward(params, optimizers, state, 1, info)
    img.sum().backward()
    strategy.step_post_backward(params, optimizers, state, 1, info, packed=False)
    visible = (info["radii"][0] > 0).all(-1)
    assert 0 < visible.sum() < 20
    torch.testing.assert_close(state["count"], visible.float())
    grad = info["means2d"].grad[0].clone()
    grad[:, 0] *= 16 / 2
    grad[:, 1] *= 12 / 2
    torch.testing.assert_close(state["grad2d"], torch.where(visible, grad.norm(dim=-1), 0.0))


def test_speed_128x96_20k():
    # Timed on one thread: with two OpenMP threads on a 2-core machine shared with other jobs,
    # every op waits for a descheduled thread and timings swing by 10x or more.
    sc = random_scene(20_000, 128, 96, seed=0)
    leaves = {k: sc[k].requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rasterize(**sc, backend="torch")  # warm-up
        t0 = time.perf_counter()
        with torch.no_grad():
            img, alpha, _ = rasterize(**sc, backend="torch")
        t1 = time.perf_counter()
        img, alpha, _ = rasterize(**sc, backend="torch")
        (img.sum() + alpha.sum()).backward()
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    print(f"\n128x96, 20k Gaussians, torch backend, 1 thread: forward {t1 - t0:.3f} s, "
          f"forward+backward {t2 - t1:.3f} s")
    assert alpha.mean() > 0.9
    assert leaves["means"].grad.abs().sum() > 0
    assert t1 - t0 < 5.0 and t2 - t1 < 10.0


# --------------------------------------------------------------------------- render()


class TinyModel:
    """Stand-in for scene.gaussian_model.GaussianModel: the accessors render() relies on."""

    def __init__(self, scene, sh_degree=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        n = scene["means"].shape[0]
        self.means, self.quats, self.scales = scene["means"], scene["quats"], scene["scales"]
        self.opacities = scene["opacities"]
        self.sh = 0.3 * torch.randn(n, 16, 3, generator=g, dtype=scene["means"].dtype)
        self.active_sh_degree, self.max_sh_degree = sh_degree, 3

    def get_means(self): return self.means
    def get_quats(self): return self.quats / self.quats.norm(dim=-1, keepdim=True)
    def get_scales(self): return self.scales
    def get_opacities(self): return self.opacities
    def get_sh(self): return self.sh


def test_render_splits_channels_like_separate_calls():
    sc = tiny_scene(8, n=25)
    model, cam = TinyModel(sc), as_camera(sc)
    emb = torch.randn(25, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sem = torch.rand(25, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    bg = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    out = render(cam, model, bg=bg, features={"emb": emb, "sem": sem}, with_depth=True)
    assert isinstance(out, RenderOutput)
    assert out.rgb.shape == (28, 40, 3) and out.depth.shape == (28, 40, 1) and out.alpha.shape == (28, 40, 1)
    assert set(out.features) == {"emb", "sem"} and out.features["emb"].shape == (28, 40, 12)

    centre = torch.from_numpy(cam.center)
    dirs = torch.nn.functional.normalize(sc["means"] - centre, dim=-1)
    rgb = (eval_sh(3, model.sh, dirs) + 0.5).clamp_min(0)
    geo = {k: sc[k] for k in ("means", "quats", "scales", "opacities", "viewmat", "K", "width", "height")}
    ref_rgb, ref_alpha, _ = rasterize(**geo, colors=rgb, background=bg, backend="torch")
    ref_emb, _, _ = rasterize(**geo, colors=emb, backend="torch")
    ref_sem, _, _ = rasterize(**geo, colors=sem, backend="torch")
    z = (sc["means"] @ sc["viewmat"][:3, :3].T + sc["viewmat"][:3, 3])[:, 2:]
    ref_d, _, _ = rasterize(**geo, colors=z, backend="torch")
    torch.testing.assert_close(out.rgb, ref_rgb)
    torch.testing.assert_close(out.alpha, ref_alpha)
    torch.testing.assert_close(out.features["emb"], ref_emb)
    torch.testing.assert_close(out.features["sem"], ref_sem)
    hit = ref_alpha > 0
    torch.testing.assert_close(out.depth, torch.where(hit, ref_d / ref_alpha.clamp_min(1e-30), 0.0))
    assert (out.depth[~hit] == 0).all() and (~hit).any()

    only = render(cam, model, with_rgb=False, features={"emb": emb})
    assert only.rgb is None and only.depth is None
    torch.testing.assert_close(only.features["emb"], ref_emb)


def test_render_expected_depth_of_planar_gaussian():
    # A flat Gaussian facing the camera at z = 3: every blended sample has z = 3.
    world_view = np.eye(4)
    world_view[:3, 3] = [0.1, -0.2, 1.0]  # camera 1 unit behind the world origin
    K = np.array([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]])
    cam = Camera(0, "cam", K, world_view, 32, 24)
    sc = dict(means=torch.tensor([[-0.1, 0.2, 2.0]], dtype=torch.float64),
              quats=torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
              scales=torch.tensor([[0.4, 0.3, 1e-4]], dtype=torch.float64),
              opacities=torch.tensor([0.98], dtype=torch.float64))
    out = render(cam, TinyModel(sc, sh_degree=0), with_depth=True)
    hit = out.alpha[..., 0] > 0
    assert hit.sum() > 50 and (~hit).sum() > 50
    torch.testing.assert_close(out.depth[hit], torch.full_like(out.depth[hit], 3.0), atol=1e-9, rtol=1e-9)
    assert (out.depth[~hit] == 0).all()
    assert torch.isfinite(out.depth).all()


def test_render_rejects_bad_features():
    sc = tiny_scene(9, n=5, width=16, height=12)
    with pytest.raises(ValueError, match="feature 'emb' must be"):
        render(as_camera(sc), TinyModel(sc), features={"emb": torch.zeros(4, 2, dtype=torch.float64)})


# --------------------------------------------------------------------------- SH


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat_torch_reference(degree):
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(degree)
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, generator=g, dtype=torch.float64), dim=-1)
    sh = torch.randn(50, 16, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(eval_sh(degree, sh, dirs), _spherical_harmonics(degree, dirs, sh))


def test_sh_dc_and_conversions():
    rgb = torch.tensor([[0.0, 0.5, 1.0]])
    sh = torch.zeros(1, 4, 3)
    sh[:, 0] = rgb_to_sh(rgb)
    dirs = torch.tensor([[0.6, 0.0, 0.8]])
    torch.testing.assert_close(eval_sh(1, sh, dirs) + 0.5, rgb)
    torch.testing.assert_close(sh_to_rgb(rgb_to_sh(rgb)), rgb)
    with pytest.raises(ValueError, match="sh must be"):
        eval_sh(2, sh, dirs)
