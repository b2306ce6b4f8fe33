"""benchmarks/things_ab.py's rescue rule: a stuff Gaussian becomes a thing of the id its own code names only
when the thing Gaussians around it (within the radius) mostly carry that id."""
from __future__ import annotations

import torch

from benchmarks.things_ab import rescue_stuff


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
