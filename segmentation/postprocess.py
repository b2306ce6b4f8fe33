"""Optional clean-ups after training (METHOD.md, "Known weakness worth beating").

Both are pure functions of the trained model (or of a label image rendered from it), so decoding
stays deterministic. Each must be measured before it is switched on by default.

* ``split_disconnected_codes``: two objects never seen in one view may share a code. Among the
  Gaussians of one code, the connected components of the neighbour graph (restricted to edges whose
  two ends carry that code) are found in O(N + E); every component but the largest one that holds
  at least ``min_gaussians`` Gaussians gets a fresh label. Per-Gaussian only (object extraction,
  editing); rendered label maps are unchanged.
* ``drop_small_segments``: ids covering fewer than ``min_pixels`` pixels of an image are noise
  (typically a few boundary pixels); they are set to 0 (stuff / void).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from segmentation.losses import relabel

__all__ = ["split_disconnected_codes", "drop_small_segments"]


def split_disconnected_codes(codes: Tensor, edges: Tensor, *, min_gaussians: int = 50) -> Tensor:
    """Give spatially separate groups of one code their own labels.

    Args:
        codes: [N] int64 per-Gaussian codes (``gaussian_labels``), all < 2^62.
        edges: [E, 2] int64 neighbour pairs (``neighbor_graph``).
        min_gaussians: components smaller than this keep their code (too small to be an object).
    Returns:
        [N] int64 labels: the original code for the largest component of each code (and for small
        components); ``max(codes) + 1, + 2, ...`` for the others, numbered in order of
        (code, first Gaussian index) so the result is deterministic.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if codes.dim() != 1 or edges.dim() != 2 or edges.shape[1] != 2:
        raise ValueError(f"split_disconnected_codes: expected codes [N] and edges [E,2], got {tuple(codes.shape)}, {tuple(edges.shape)}")
    N = codes.shape[0]
    if N == 0:
        return codes.clone()
    c = codes.detach().cpu().to(torch.int64)  # [N]
    e = edges.detach().cpu().to(torch.int64)  # [E, 2]
    same = c[e[:, 0]] == c[e[:, 1]]
    e = e[same].numpy()
    graph = coo_matrix((np.ones(e.shape[0], dtype=np.int8), (e[:, 0], e[:, 1])), shape=(N, N))
    _, comp = connected_components(graph, directed=False)  # [N] component id (each within one code)
    comp = torch.from_numpy(comp).to(torch.int64)

    size = torch.bincount(comp)  # [Cc]
    n_comp = size.numel()
    comp_code = torch.zeros(n_comp, dtype=torch.int64).scatter_(0, comp, c)  # [Cc] code of each component
    first = torch.full((n_comp,), N, dtype=torch.int64).scatter_reduce_(0, comp, torch.arange(N), "amin")  # [Cc]
    # Largest component per code (ties: the one whose first Gaussian comes first) keeps the code.
    order = np.lexsort((first.numpy(), -size.numpy(), comp_code.numpy()))  # by code, size desc, first asc
    order = torch.from_numpy(order)
    sorted_code = comp_code[order]
    is_head = torch.ones(n_comp, dtype=torch.bool)
    is_head[1:] = sorted_code[1:] != sorted_code[:-1]
    keep = torch.zeros(n_comp, dtype=torch.bool)
    keep[order[is_head]] = True
    keep |= size < min_gaussians
    # Fresh labels for the rest, ordered by (code, first index).
    new = torch.nonzero(~keep).squeeze(1)
    new = new[torch.from_numpy(np.lexsort((first[new].numpy(), comp_code[new].numpy())))]
    label = comp_code.clone()
    label[new] = int(c.max()) + 1 + torch.arange(new.numel())
    return label[comp].to(codes.device)


def drop_small_segments(ids: Tensor, min_pixels: int) -> Tensor:
    """Set ids covering fewer than ``min_pixels`` pixels of this image to 0.

    Args:
        ids: [H, W] (or any shape) integer instance ids, 0 = stuff / void.
        min_pixels: minimum pixel count of a kept id.
    Returns:
        same shape and dtype as ids.
    """
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"drop_small_segments: ids must be integers, got {ids.dtype}")
    if ids.numel() == 0 or min_pixels <= 1:
        return ids.clone()
    lab, K = relabel(ids)  # [...] in [0, K)
    small = torch.bincount(lab.reshape(-1), minlength=K) < min_pixels  # [K]
    return ids.masked_fill(small[lab], 0)
