"""Per-Gaussian visibility over views and the relabelling of Gaussians no view sees."""
from __future__ import annotations

import numpy as np
import torch

from gaussian_renderer import render
from segmentation.visibility import fill_unseen, gaussian_visibility
from tests.test_rasterizer import TinyModel, as_camera, tiny_scene


def test_visibility_is_the_sum_of_blending_weights():
    sc = tiny_scene(5, n=30, opacity_range=(0.2, 0.9))
    model, cam = TinyModel(sc), as_camera(sc)
    weight = gaussian_visibility(model, [cam, cam], backend="torch")
    # the same view twice: twice one view's weights; their sum over Gaussians is the alpha image's
    with torch.no_grad():
        alpha = render(cam, model, with_rgb=False, features={"x": torch.ones(30, 1, dtype=torch.float64)},
                       backend="torch").alpha
    assert weight.shape == (30,)
    torch.testing.assert_close(weight.sum(), 2 * alpha.sum(), rtol=1e-9, atol=1e-9)
    assert (weight >= 0).all() and (weight > 0).sum() >= 10


def test_a_gaussian_behind_an_opaque_one_is_unseen():
    sc = tiny_scene(6, n=3, opacity_range=(0.99, 0.99))
    # one wide opaque Gaussian in front of the camera, a small one straight behind it, one in front, off-centre
    sc["means"] = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 5.0], [0.8, 0.3, 2.0]], dtype=torch.float64)
    sc["scales"] = torch.tensor([[1.5, 1.5, 0.05], [0.05, 0.05, 0.05], [0.1, 0.1, 0.1]], dtype=torch.float64)
    sc["quats"] = torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=torch.float64)
    sc["viewmat"] = torch.eye(4, dtype=torch.float64)
    model = TinyModel(sc)
    w = gaussian_visibility(model, [as_camera(sc)], backend="torch")
    assert w[0] > 50 and w[2] > 1  # the front one covers many pixels; the side one a few
    assert w[1] < 0.1  # hidden: only what leaks through alpha 0.99, far below one pixel


def test_fill_unseen_takes_the_neighbours_majority():
    rng = np.random.default_rng(0)
    a = rng.normal([0, 0, 0], 0.1, (200, 3))
    b = rng.normal([3, 0, 0], 0.1, (200, 3))
    means = torch.from_numpy(np.concatenate([a, b]))
    ids = torch.cat([torch.full((200,), 7), torch.full((200,), 2)])
    weight = torch.full((400,), 5.0)
    # 30 hidden Gaussians in each blob carry stray codes; a few seen strays stay as they are
    hidden = torch.cat([torch.arange(0, 30), torch.arange(200, 230)])
    ids[hidden] = torch.arange(100, 160)
    weight[hidden] = 0.0
    ids[50] = 99  # seen, wrong: not touched (it shaped some pixel)
    out = fill_unseen(ids, means, weight, min_weight=1.0, k=8)
    assert (out[:30] == 7).all() and (out[200:230] == 2).all()
    assert out[50] == 99
    keep = torch.ones(400, dtype=torch.bool)
    keep[hidden] = False
    assert torch.equal(out[keep], ids[keep])


def test_fill_unseen_ties_and_edge_cases():
    means = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]], dtype=torch.float64)
    ids = torch.tensor([0, 5, 3])
    # tie between ids 3 and 5 at equal distance: the smaller id wins
    out = fill_unseen(ids, means, torch.tensor([0.0, 2.0, 2.0]), k=2)
    assert out.tolist() == [3, 5, 3]
    # nothing seen / everything seen: unchanged
    assert torch.equal(fill_unseen(ids, means, torch.zeros(3)), ids)
    assert torch.equal(fill_unseen(ids, means, torch.full((3,), 9.0)), ids)
