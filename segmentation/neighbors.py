"""Neighbour graph of Gaussian centres for the 3D regulariser L_3D (Eq. 6).

Definition: point i proposes its (at most) ``k`` nearest OTHER points j with
``||x_i - x_j||^2 < radius2``; the graph is the union of these proposals as undirected pairs,
stored once as ``(min(i, j), max(i, j))``, sorted, without duplicates. So each point proposes at
most k edges, but may end up in more than k (when it is among other points' k nearest).
Coincident points are neighbours of each other (distance 0 < radius2).

Built on the CPU with scipy's cKDTree (all cores); the result is moved back to ``means.device``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

__all__ = ["neighbor_graph", "neighbor_pairs"]


def neighbor_graph(means: Tensor, radius2: float = 1e-2, k: int = 16, *, workers: int = -1) -> Tensor:
    """Radius-limited k-nearest-neighbour graph of 3D points.

    Args:
        means: [N, 3] float Gaussian centres (scene units).
        radius2: squared radius tau (strict: pairs at exactly sqrt(radius2) are left out).
        k: neighbours proposed per point at most.
        workers: cKDTree query threads (-1: all cores).
    Returns:
        [E, 2] int64 on means.device, i < j in every row, rows sorted lexicographically and unique.
    """
    if means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"neighbor_graph: means must be [N,3], got {tuple(means.shape)}")
    pairs = neighbor_pairs(means.detach().to("cpu", torch.float64).numpy(), radius2, k, workers=workers)
    return torch.from_numpy(pairs).to(means.device)


def neighbor_pairs(pts: np.ndarray, radius2: float = 1e-2, k: int = 16, *, workers: int = -1) -> np.ndarray:
    """``neighbor_graph`` on a float64 numpy array [N, 3]: [E, 2] int64 pairs (numpy only, so it can
    run in a background thread while training goes on; see ``SegmentationObjective``)."""
    if k < 1 or not radius2 > 0:
        raise ValueError(f"neighbor_graph: need k >= 1 and radius2 > 0, got k={k}, radius2={radius2}")
    N = pts.shape[0]
    empty = np.zeros((0, 2), dtype=np.int64)
    if N < 2:
        return empty
    if not np.isfinite(pts).all():
        raise ValueError("neighbor_graph: means contain NaN or inf")
    kq = min(k + 1, N)  # +1: the point itself usually comes back first
    tree = cKDTree(pts)  # the default balanced tree: an unbalanced one queries 2x slower
    # Query in the tree's own point order (spatially coherent: ~1.6x faster on 1M points); row r
    # of the answer belongs to point perm[r]. Slightly larger bound, then the exact strict test
    # below on squared distances.
    perm = tree.indices  # [N]
    dist, idx = tree.query(pts[perm], k=kq, distance_upper_bound=float(np.sqrt(radius2)) * (1 + 1e-9), workers=workers)
    dist, idx = dist.reshape(N, kq), idx.reshape(N, kq)  # [N, kq]; missing: dist inf, idx N
    rows = perm[:, None].astype(np.int64)  # [N, 1] point of each row
    ok = (idx < N) & (idx != rows) & (dist * dist < radius2)  # [N, kq]
    # Keep the first k valid per row (rows come sorted by distance; with duplicates the point
    # itself may be missing from the row, leaving k+1 valid ones).
    ok &= np.cumsum(ok, axis=1) <= k
    i = np.broadcast_to(rows, idx.shape)[ok]  # [E']
    j = idx[ok]  # [E']
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key = np.sort(lo.astype(np.int64) * N + hi)  # one int64 per undirected pair
    if key.size == 0:  # no two points within the radius (e.g. a sparse initial cloud)
        return empty
    # Deduplicate by hand: sort + neighbour compare is ~50x faster than np.unique on numpy 2.4.
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    return np.stack([key // N, key % N], axis=1)  # [E, 2]
