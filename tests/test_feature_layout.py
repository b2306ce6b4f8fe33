"""--feature_layout packed (issue 10): the embedding and semantic logits as ONE parameter [N, 3 + d + C] whose first
3 columns take the view's colour in place, so the render neither concatenates the channels nor copies their
gradients apart. Model, render, L_3D and optimiser state on the CPU; the whole training run bit for bit against
the separate layout is in tests/test_train.py."""
import copy

import numpy as np
import pytest
import torch

import gaussian_renderer
from gaussian_renderer import render
from scene.gaussian_model import PACKED_KEY, GaussianModel
from segmentation.losses import neighbor_loss
from tests.test_rasterizer import as_camera, tiny_scene
from training.optim import make_gaussian_optimizers, optimizer_states, packed_optimizer_state, step_all


def _model(n=80, seed=0, feats=None):
    rng = np.random.default_rng(seed)
    pts = rng.normal(0.0, 0.4, (n, 3)).astype(np.float32) + np.array([0, 0, 3], np.float32)
    m = GaussianModel.from_points(pts, rng.random((n, 3), dtype=np.float32),
                                  features=feats or {"embedding": 5, "semantic": 4},
                                  generator=torch.Generator().manual_seed(seed))
    m.params["opacities"].data.fill_(0.5)
    m.params["scales"].data.add_(1.0)
    m.active_sh_degree = 1
    g = torch.Generator().manual_seed(seed + 1)
    m.params["shN"].data.add_(0.1 * torch.randn(m.params["shN"].shape, generator=g))
    return m


def _copy(m: GaussianModel) -> GaussianModel:
    c = GaussianModel.from_state_dict(m.state_dict())
    c.active_sh_degree = m.active_sh_degree
    return c


def test_pack_moves_features_into_one_parameter_and_back_bit_for_bit(tmp_path):
    m = _model()
    ref = {k: v.detach().clone() for k, v in m.params.items()}
    packing = m.pack_features(["embedding", "semantic"])
    assert set(m.params) == {"means", "scales", "quats", "opacities", "sh0", "shN", PACKED_KEY}
    p = m.params[PACKED_KEY]
    assert p.shape == (80, 3 + 5 + 4) and p.is_contiguous() and packing.columns("semantic") == (8, 12)
    assert m.feature_names == ["embedding", "semantic"] and m.has_feature("semantic") and not m.has_feature("x")
    emb = m.feature("embedding")
    assert emb._base is p and emb.stride() == (12, 1) and torch.equal(emb, ref["embedding"])
    assert torch.equal(m.feature("semantic"), ref["semantic"])
    # states and PLYs hold features by name, whatever the layout
    assert set(m.state_dict()["params"]) == set(ref)
    assert all(torch.equal(m.state_dict()["params"][k], v) for k, v in ref.items())
    m.save_ply(str(tmp_path / "a.ply"))
    back = GaussianModel.load_ply(str(tmp_path / "a.ply"))
    assert set(back.params) == set(ref) and all(torch.equal(back.params[k].detach(), v) for k, v in ref.items())
    with pytest.raises(ValueError, match="packed already"):
        m.pack_features(["embedding"])
    with pytest.raises(ValueError, match="unpack_features"):
        m.add_feature("more", 2)
    with pytest.raises(KeyError, match="no feature 'means'"):
        m.feature("means")
    m.unpack_features()
    assert set(m.params) == set(ref) and m.packing is None
    assert all(torch.equal(m.params[k].detach(), v) and m.params[k].is_contiguous() for k, v in ref.items())
    with pytest.raises(ValueError, match="distinct features"):
        m.pack_features(["embedding", "means"])


def test_packed_render_writes_the_colour_into_the_slot_and_passes_the_parameter_itself(monkeypatch):
    """Same image, alpha and every gradient as the separate layout's render, and the rasterizer's colour input IS the
    packed parameter's storage (no [N, D] concatenation)."""
    scene = tiny_scene(seed=3)
    cam = as_camera(scene)
    sep = _model(seed=4)
    packed = _copy(sep)
    packed.pack_features(["embedding", "semantic"])
    seen = []
    real = gaussian_renderer.rasterize

    def spy(means, quats, scales, opacities, colors, *a, **k):
        seen.append(colors)
        return real(means, quats, scales, opacities, colors, *a, **k)

    monkeypatch.setattr(gaussian_renderer, "rasterize", spy)
    outs = {}
    for name, m in (("separate", sep), ("packed", packed)):
        feats = {"embedding": m.feature("embedding"), "semantic": m.feature("semantic")}
        out = render(cam, m, bg=torch.tensor([0.2, 0.3, 0.4]), features=feats, feature_geometry_grad=False)
        w = torch.linspace(0.5, 1.5, 12)
        loss = (out.rgb * w[:3]).sum() + (out.features["embedding"] * w[3:8]).sum() \
            + (out.features["semantic"] ** 2 * w[8:]).sum() + out.alpha.sum()
        loss.backward()
        outs[name] = out
    sep_colors, packed_colors = seen
    assert packed_colors.data_ptr() == packed.params[PACKED_KEY].data_ptr()  # the parameter itself
    assert sep_colors.data_ptr() not in (sep.params["embedding"].data_ptr(), sep.params["semantic"].data_ptr())
    assert torch.equal(packed.params[PACKED_KEY][:, :3], sep_colors[:, :3].detach())  # the slot holds the colour
    a, b = outs["separate"], outs["packed"]
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha)
    assert all(torch.equal(a.features[k], b.features[k]) for k in a.features)
    for k in ("means", "scales", "quats", "opacities", "sh0", "shN"):
        assert torch.equal(sep.params[k].grad, packed.params[k].grad), k
    g = packed.params[PACKED_KEY].grad
    assert torch.equal(g[:, 3:8], sep.params["embedding"].grad) and torch.equal(g[:, 8:], sep.params["semantic"].grad)
    assert g[:, 3:].abs().sum() > 0


def test_render_concatenates_what_is_not_a_whole_packed_parameter():
    """Column views that do not cover the packed parameter after its slot (a feature left out, or a slot of another
    width) go through the concatenation as before: same image as plain tensors."""
    cam = as_camera(tiny_scene(seed=5))
    m = _model(seed=6)
    m.pack_features(["embedding", "semantic"])
    ref = {k: m.feature(k).detach().clone() for k in ("embedding", "semantic")}
    for feats in ({"embedding": m.feature("embedding")}, {"semantic": m.feature("semantic")},
                  {"semantic": m.feature("semantic"), "embedding": m.feature("embedding")}):
        before = m.params[PACKED_KEY].detach().clone()
        got = render(cam, m, features=feats)
        want = render(cam, m, features={k: ref[k] for k in feats})
        assert torch.equal(got.rgb, want.rgb) and all(torch.equal(got.features[k], want.features[k]) for k in feats)
        assert torch.equal(m.params[PACKED_KEY].detach(), before)  # the slot was not written


def test_l3d_on_a_packed_column_block_equals_the_contiguous_feature():
    torch.manual_seed(0)
    sep = _model(seed=7)
    packed = _copy(sep)
    packed.pack_features(["embedding", "semantic"])
    edges = torch.randint(0, 80, (300, 2))
    la = neighbor_loss(sep.params["embedding"], edges, activation=torch.sigmoid)
    lb = neighbor_loss(packed.feature("embedding"), edges, activation=torch.sigmoid)
    assert torch.equal(la, lb)
    la.backward(), lb.backward()
    g = packed.params[PACKED_KEY].grad
    assert torch.equal(g[:, 3:8], sep.params["embedding"].grad) and not g[:, :3].any() and not g[:, 8:].any()


def test_optimizer_state_splits_by_feature_and_merges_back_exactly():
    """A packed parameter's Adam state is stored per feature (the checkpoint's names are the separate layout's);
    merged back, the next Adam step is the same bits, and a separate-layout state loads into the packed one."""
    sep = _model(seed=8)
    packed = _copy(sep)
    packed.pack_features(["embedding", "semantic"])
    lrs = {"means": 1e-3, "scales": 1e-3, "quats": 1e-3, "opacities": 1e-2, "sh0": 1e-3, "shN": 1e-4,
           "embedding": 5e-3, "semantic": 5e-3, PACKED_KEY: 5e-3}
    opt_s, opt_p = make_gaussian_optimizers(sep.params, lrs, "adam"), make_gaussian_optimizers(packed.params, lrs, "adam")
    g = torch.Generator().manual_seed(9)
    for _ in range(3):
        grads = {"embedding": torch.randn(80, 5, generator=g), "semantic": torch.randn(80, 4, generator=g)}
        sep.params["embedding"].grad, sep.params["semantic"].grad = grads["embedding"], grads["semantic"]
        packed.params[PACKED_KEY].grad = torch.cat([torch.randn(80, 3, generator=g), grads["embedding"],
                                                    grads["semantic"]], 1)
        step_all(opt_s), step_all(opt_p)
    assert torch.equal(packed.feature("embedding"), sep.params["embedding"])
    assert torch.equal(packed.feature("semantic"), sep.params["semantic"])
    # deep copies, as a checkpoint on disk holds them (state_dict() returns the live moment tensors)
    states = copy.deepcopy(optimizer_states(opt_p, packed.packing))
    assert set(states) == set(lrs) - {PACKED_KEY}
    want = copy.deepcopy(optimizer_states(opt_s))
    for name in ("embedding", "semantic"):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(states[name]["state"][0][k], want[name]["state"][0][k]), (name, k)
        assert states[name]["param_groups"][0]["name"] == name
    # merged back (from either layout's checkpoint): the next step is identical
    for source in (states, want):
        fresh = _copy(sep)
        fresh.pack_features(["embedding", "semantic"])
        opts = make_gaussian_optimizers(fresh.params, lrs, "adam")
        opts[PACKED_KEY].load_state_dict(packed_optimizer_state(copy.deepcopy(source), fresh.packing))
        grad = torch.randn(80, 12, generator=torch.Generator().manual_seed(10))
        fresh.params[PACKED_KEY].grad = grad.clone()
        step_all([opts[PACKED_KEY]])
        ref = _copy(sep)
        ref_opts = make_gaussian_optimizers(ref.params, lrs, "adam")
        for name in ("embedding", "semantic"):
            ref_opts[name].load_state_dict(copy.deepcopy(want[name]))
        ref.params["embedding"].grad, ref.params["semantic"].grad = grad[:, 3:8].clone(), grad[:, 8:].clone()
        step_all([ref_opts["embedding"], ref_opts["semantic"]])
        assert torch.equal(fresh.feature("embedding"), ref.params["embedding"])
        assert torch.equal(fresh.feature("semantic"), ref.params["semantic"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["fused", "tile_sparse", "gsplat"])
def test_gpu_packed_render_equals_the_separate_layouts(kind):
    """On gsplat with each feature backward: the packed parameter is the rasterizer's colour input, and image and
    gradients equal the separate layout's (to the atomic adds' order)."""
    from gaussian_renderer.rasterizer import feature_backward_kind, set_feature_backward
    from scene.cameras import Camera

    before = feature_backward_kind()
    set_feature_backward(kind)
    try:
        sep = _model(n=4000, seed=11, feats={"embedding": 12, "semantic": 17}).to("cuda")
        packed = _copy(sep).to("cuda")
        packed.pack_features(["embedding", "semantic"])
        f = 120.0
        cam = Camera(0, "c", np.array([[f, 0, 80], [0, f, 60], [0, 0, 1]]), np.eye(4), 160, 120)
        outs = {}
        for name, m in (("separate", sep), ("packed", packed)):
            feats = {"embedding": m.feature("embedding"), "semantic": m.feature("semantic")}
            out = render(cam, m, bg=torch.tensor([0.2, 0.3, 0.4], device="cuda"), features=feats,
                         feature_geometry_grad=False)
            w = torch.linspace(0.5, 1.5, 32, device="cuda")
            loss = (out.rgb * w[:3]).sum() + (out.features["embedding"] * w[3:15]).sum() \
                + (out.features["semantic"] ** 2 * w[15:]).sum() + out.alpha.sum()
            loss.backward()
            outs[name] = out
        a, b = outs["separate"], outs["packed"]
        assert torch.equal(a.rgb, b.rgb) and torch.equal(a.alpha, b.alpha)
        assert a.features["embedding"].abs().sum() > 0
        for k in ("means", "scales", "quats", "opacities", "sh0"):
            torch.testing.assert_close(packed.params[k].grad, sep.params[k].grad, rtol=1e-4, atol=1e-6)
        g = packed.params[PACKED_KEY].grad
        torch.testing.assert_close(g[:, 3:15], sep.params["embedding"].grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g[:, 15:], sep.params["semantic"].grad, rtol=1e-4, atol=1e-6)
    finally:
        set_feature_backward(before)


def test_the_padded_background_is_made_once_per_background_and_follows_its_changes(monkeypatch):
    """The background of a render with features is the RGB background then zeros [3 + D]: made once for the trainer's
    one background tensor (no torch.cat per step), and made again when that tensor changes in place."""
    scene = tiny_scene(seed=3)
    cam = as_camera(scene)
    m = _model(seed=4)
    feats = {"embedding": m.feature("embedding").detach(), "semantic": m.feature("semantic").detach()}
    bg = torch.tensor([0.2, 0.3, 0.4])
    seen = []
    real = gaussian_renderer.rasterize

    def spy(*a, **k):
        seen.append(k["background"])
        return real(*a, **k)

    monkeypatch.setattr(gaussian_renderer, "rasterize", spy)
    with torch.no_grad():
        first = render(cam, m, bg=bg, features=feats)
        again = render(cam, m, bg=bg, features=feats)
        assert seen[1] is seen[0] and torch.equal(seen[0], torch.tensor([0.2, 0.3, 0.4] + [0.0] * 9))
        assert torch.equal(first.rgb, again.rgb)
        bg.fill_(1.0)  # e.g. a white background set in place
        white = render(cam, m, bg=bg, features=feats)
        assert seen[2] is not seen[0] and torch.equal(seen[2][:3], torch.ones(3)) and not seen[2][3:].any()
        fresh = render(cam, m, bg=torch.ones(3), features=feats)  # a new tensor of the same values: same image
    assert torch.equal(white.rgb, fresh.rgb) and not torch.equal(white.rgb, first.rgb)
