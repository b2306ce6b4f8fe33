"""Per-Gaussian visibility over views and the relabelling of Gaussians no view sees."""
from __future__ import annotations

import numpy as np
import torch

from gaussian_renderer import render
from segmentation.visibility import fill_unseen, gaussian_visibility, id_extents, object_radius, rescue_stuff
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


# ----- rescue_stuff: object surface the thing/stuff decision missed, given back by its code and place -----


def _cluster(centre, n, spread, g):
    return torch.tensor(centre, dtype=torch.float64) + spread * torch.randn(n, 3, generator=g, dtype=torch.float64)


def test_rescue_promotes_only_stuff_whose_code_its_thing_neighbours_carry():
    g = torch.Generator().manual_seed(0)
    a, b = _cluster((0.0, 0.0, 0.0), 200, 0.02, g), _cluster((1.0, 0.0, 0.0), 200, 0.02, g)
    probes = torch.tensor([[0.0, 0.0, 0.0],    # inside A, code A: rescued
                           [0.0, 0.01, 0.0],   # inside A, code B: stays stuff (its code is not A's)
                           [1.0, 0.0, 0.0],    # inside B, code B: rescued
                           [0.5, 0.0, 0.0],    # between them, code A: no thing within the radius
                           [0.0, 0.0, 0.01]],  # inside A, code A, but it is a thing already (id A)
                          dtype=torch.float64)
    means = torch.cat([a, b, probes])
    ids = torch.cat([torch.full((200,), 3), torch.full((200,), 7), torch.tensor([0, 0, 0, 0, 3])])
    codes = torch.cat([torch.full((200,), 3), torch.full((200,), 7), torch.tensor([3, 7, 7, 3, 3])])
    out = rescue_stuff(ids, codes, means, radius=0.1)
    assert out[:400].equal(ids[:400])
    assert out[400:].tolist() == [3, 0, 7, 0, 3]
    # fewer than 5 of the 8 nearest things agree: a probe at A's edge whose neighbours are half B
    mixed = torch.cat([_cluster((0.0, 0.0, 0.0), 4, 0.005, g), _cluster((0.02, 0.0, 0.0), 4, 0.005, g),
                       torch.tensor([[0.01, 0.0, 0.0]], dtype=torch.float64)])
    ids_m = torch.tensor([3] * 4 + [7] * 4 + [0])
    codes_m = torch.tensor([3] * 4 + [7] * 4 + [3])
    assert int(rescue_stuff(ids_m, codes_m, mixed, radius=0.1)[-1]) == 0


def test_id_extents_are_the_nearest_rank_quantiles_of_each_id():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(300, 3, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 5, (300,), generator=g)
    ids[ids == 3] = 0  # an absent id
    lo, hi = id_extents(ids, means, 0.1)
    for i in (1, 2, 4):
        pts = means[ids == i].numpy()
        assert np.allclose(lo[i], np.quantile(pts, 0.1, axis=0, method="lower"))
        assert np.allclose(hi[i], np.quantile(pts, 0.9, axis=0, method="higher"))
    assert np.isinf(lo[3]).all() and np.isinf(hi[3]).all() and np.isinf(lo[0]).all()
    lo0, hi0 = id_extents(ids, means, 0.0)
    assert np.allclose(lo0[2], means[ids == 2].min(0).values.numpy())


def test_rescue_keeps_to_the_objects_extent():
    """A 0.2 m cube of object Gaussians (id 3) on a floor grid: a floor ring around its footprint carries
    the cube's code (as L_3D leaves it) and a patch of the cube's side is stuff. With the extent check or
    the mask gate (``allowed``) only the patch joins the cube; without either the ring joins too."""
    s = torch.linspace(-0.1, 0.1, 11, dtype=torch.float64)
    a, b = torch.meshgrid(s, s, indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    faces = [torch.stack([a, b, torch.full_like(a, z)], 1) for z in (0.0, 0.2)]
    faces += [torch.stack([torch.full_like(a, x), a, b + 0.1], 1) for x in (-0.1, 0.1)]
    faces += [torch.stack([a, torch.full_like(a, y), b + 0.1], 1) for y in (-0.1, 0.1)]
    cube = torch.unique(torch.cat(faces).round(decimals=6), dim=0)  # [M, 3] the cube's surface
    f = torch.linspace(-0.5, 0.5, 51, dtype=torch.float64)
    fx, fy = torch.meshgrid(f, f, indexing="ij")
    floor = torch.stack([fx.reshape(-1), fy.reshape(-1), torch.full((51 * 51,), -0.02, dtype=torch.float64)], 1)
    floor = floor[(floor[:, 0].abs() > 0.11) | (floor[:, 1].abs() > 0.11)]  # around the footprint
    ring = (floor[:, 0].abs() < 0.16) & (floor[:, 1].abs() < 0.16)  # within 6 cm of the cube: its code
    patch = (cube[:, 0] == 0.1) & (cube[:, 1].abs() < 0.05) & (cube[:, 2] > 0.05) & (cube[:, 2] < 0.15)
    means = torch.cat([cube, floor])
    ids = torch.cat([torch.where(patch, 0, 3), torch.zeros(len(floor), dtype=torch.int64)])
    codes = torch.cat([torch.full((len(cube),), 3), torch.where(ring, 3, 9)])
    masked = torch.cat([torch.ones(len(cube), dtype=torch.bool), torch.zeros(len(floor), dtype=torch.bool)])
    for gate in ({"extent_quantile": 0.01}, {"allowed": masked}):
        out = rescue_stuff(ids, codes, means, radius=0.08, **gate)
        assert patch.sum() >= 5 and (out[:len(cube)] == 3).all()  # the patch joined the cube
        assert (out[len(cube):] == 0).all()  # no floor Gaussian did
    wide = rescue_stuff(ids, codes, means, radius=0.08)
    assert (wide[len(cube):][ring] == 3).sum() >= 10  # without a gate the ring joins
