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
* Snapping: on a boundary the rendered embedding blends two objects' corner codes and a few pixels
  threshold to a third code that no object carries. Every pixel code outside a set of valid codes
  is snapped to the valid code at the smallest Hamming distance (ties: the smaller code;
  ``snap_to_valid``). Which codes are valid:
  - ``segment_winners`` + ``CodeVotes`` (the default, "segments"): after training every training
    view's embedding is rendered and decoded; each input 2D mask segment votes for the code most
    of its pixels decode to; a code is valid when it wins at least ``min_segments`` segments.
    A stray boundary code covers a thin band, so it never wins a segment; a small object that the
    segmenter saw wins its own segments however many objects the scene holds. No size knob.
  - ``valid_codes`` ("gaussians", the former default): codes held by at least K opaque Gaussians,
    K = 0.2 % of all Gaussians by default. Drops small objects once a scene holds hundreds of
    objects (issue 9); kept for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import Tensor

from scene.gaussian_model import feature_of
from segmentation.decode import gaussian_labels
from segmentation.losses import relabel

__all__ = ["split_disconnected_codes", "drop_small_segments", "valid_codes", "snap_to_valid",
           "DEFAULT_SNAP_FRACTION", "snap_threshold", "model_valid_codes", "segment_winners", "CodeVotes",
           "count_code_votes", "DEFAULT_MIN_SEGMENTS", "DEFAULT_VOTE_MIN_PIXELS"]

# Segment votes (the default decoding rule): a code is valid when it is the dominant decoded code of
# at least DEFAULT_MIN_SEGMENTS input mask segments (of at least DEFAULT_VOTE_MIN_PIXELS pixels) of
# the training views. A code won once or twice is mostly a model split seen in one or two views, not
# an object. 5 (benchmarks/decode_sweep.py --compare, RESULTS.md 12b): on five unseen full-schedule
# models (H200; Messy-Rooms 25 / 100 / 100 / 500 objects, COLMAP instance-only 100) N = 5 is within
# 0.3 PQ^scene of the oracle best N on every one, N = 2 up to 1.3 below it; on two CPU-trained models
# (room10 quick start, a 40-object Messy scene) N = 5 is the best N too. The price: an object must be
# masked in at least 5 training views (`--snap_min_segments 2` for very sparse captures).
DEFAULT_MIN_SEGMENTS = 5
DEFAULT_VOTE_MIN_PIXELS = 4

# Snapping by default (benchmarks/RESULTS.md, section 5): on the 50-object realistic-noise scene a code
# must be carried by at least 0.2 % of the model's Gaussians (about 1000 of 500k); PQ^scene rose from
# 56.6 to 75.0 (K = 800) and 77.1 (K = 1500). 0 switches snapping off.
DEFAULT_SNAP_FRACTION = 0.002


def snap_threshold(num_gaussians: int, min_gaussians: int = 0, fraction: float = DEFAULT_SNAP_FRACTION) -> int:
    """K for ``valid_codes``: ``min_gaussians`` when > 0, else ``ceil(fraction * num_gaussians)``
    (0 when ``fraction`` is 0: no snapping)."""
    if min_gaussians > 0:
        return int(min_gaussians)
    if fraction <= 0:
        return 0
    return max(1, math.ceil(fraction * num_gaussians))


def model_valid_codes(model, min_gaussians: Optional[int] = None,
                      fraction: float = DEFAULT_SNAP_FRACTION) -> Optional[Tensor]:
    """The valid codes of a trained model for snapping, or None when snapping is off.

    ``min_gaussians``: K > 0 sets K; 0 switches snapping off; None takes ``ceil(fraction * N)``
    (``snap_threshold``). Used by render.py (pixels) and train.py (the PLY's per-Gaussian ids),
    so both snap alike.
    """
    if min_gaussians == 0:
        return None
    k = snap_threshold(model.num_gaussians, min_gaussians or 0, fraction)
    return valid_codes(feature_of(model, "embedding"), model.get_opacities(), k) if k > 0 else None


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


@torch.no_grad()
def valid_codes(embedding: Tensor, opacities: Tensor, min_gaussians: int, min_opacity: float = 0.1) -> Tensor:
    """Codes carried by enough opaque Gaussians to be an object.

    Args:
        embedding: [N, D] raw per-Gaussian embeddings v (decoded with ``gaussian_labels``).
        opacities: [N] opacities in [0, 1] (``model.get_opacities()``).
        min_gaussians: a code is valid when at least this many Gaussians with
            opacity >= ``min_opacity`` carry it.
        min_opacity: Gaussians below this opacity are not counted.
    Returns:
        [K] int64 valid codes, sorted ascending, on ``embedding``'s device.
    """
    if embedding.dim() != 2 or opacities.shape != embedding.shape[:1]:
        raise ValueError(f"valid_codes: expected embedding [N,D] and opacities [N], got "
                         f"{tuple(embedding.shape)}, {tuple(opacities.shape)}")
    opaque = opacities.detach().reshape(-1) >= min_opacity  # [N]
    codes = gaussian_labels(embedding.detach()[opaque])  # [M]
    uniq, counts = torch.unique(codes, return_counts=True)  # sorted
    return uniq[counts >= min_gaussians]


def _popcount(x: Tensor) -> Tensor:
    """Number of set bits of non-negative int64 values (SWAR, no multiply so no overflow)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F  # per-byte counts
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return x & 0x7F


@torch.no_grad()
def snap_to_valid(codes: Tensor, valid: Tensor, *, chunk_elems: int = 1 << 22) -> Tensor:
    """Replace every code that is not valid by the nearest valid code in Hamming distance.

    Args:
        codes: [...] int64 codes (``decode_codes``), all in [0, 2^62).
        valid: [K] int64 valid codes (``valid_codes``); K = 0 leaves ``codes`` unchanged.
        chunk_elems: at most this many entries of the [U, K] distance matrix are held at once.
    Returns:
        [...] int64, same shape and device as ``codes``: valid codes unchanged (distance 0), the
        others mapped to the valid code at the smallest popcount(code ^ valid), ties to the
        smaller valid code.
    """
    valid = valid.to(device=codes.device, dtype=torch.int64).reshape(-1)
    if valid.numel() == 0 or codes.numel() == 0:
        return codes.clone()
    valid = torch.unique(valid)  # sorted, so the smallest key below is also the smallest code
    K = valid.numel()
    uniq, inverse = torch.unique(codes.to(torch.int64), return_inverse=True)  # [U], [...]
    snapped = torch.empty_like(uniq)  # [U]
    step = max(1, chunk_elems // K)
    idx = torch.arange(K, device=codes.device)  # [K]
    for start in range(0, uniq.numel(), step):  # chunks of unique codes, not pixels
        u = uniq[start:start + step]  # [u]
        dist = _popcount(u[:, None] ^ valid[None, :])  # [u, K]
        # key = (distance, index into sorted valid): the min picks the nearest, then the smaller code
        best = (dist * K + idx[None, :]).amin(dim=1) % K  # [u]
        snapped[start:start + step] = valid[best]
    return snapped[inverse]


@torch.no_grad()
def segment_winners(codes: Tensor, segments: Tensor, *, min_pixels: int = DEFAULT_VOTE_MIN_PIXELS,
                    min_share: float = 0.0) -> Tensor:
    """The code each mask segment of one view votes for: the one most of its pixels decode to.

    Args:
        codes: [H, W] (or any shape) int64 decoded pixel codes of one rendered view.
        segments: same shape, integer 2D mask ids; ids <= 0 (unlabelled, outside the valid region)
            belong to no segment.
        min_pixels: segments with fewer pixels do not vote.
        min_share: the winning code must cover at least this fraction of its segment (0: plurality).
    Returns:
        [S] int64: one winning code per voting segment (ties: the smaller code), in segment id order.
    """
    if codes.shape != segments.shape:
        raise ValueError(f"segment_winners: codes {tuple(codes.shape)} and segments {tuple(segments.shape)} differ")
    segments = segments.to(codes.device)
    inside = segments.reshape(-1) > 0  # [P]
    seg = segments.reshape(-1)[inside].to(torch.int64)  # [M]
    code = codes.reshape(-1)[inside].to(torch.int64)  # [M]
    if seg.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=codes.device)
    seg_u, seg_i = torch.unique(seg, return_inverse=True)  # [S], [M]
    code_u, code_i = torch.unique(code, return_inverse=True)  # [U] sorted, [M]
    S, U = seg_u.numel(), code_u.numel()
    pair, count = torch.unique(seg_i * U + code_i, return_counts=True)  # [Q] sorted packed (segment, code)
    pair_seg, pair_code = pair // U, pair % U  # [Q]
    size = torch.zeros(S, dtype=torch.int64, device=codes.device).index_add_(0, pair_seg, count)  # [S]
    best = torch.zeros(S, dtype=torch.int64, device=codes.device).scatter_reduce_(
        0, pair_seg, count, "amax", include_self=False)  # [S] pixels of the dominant code
    is_best = count == best[pair_seg]  # [Q]
    # Ties: the smallest code (packed keys sort by code inside a segment, so the first best pair).
    win = torch.full((S,), U, dtype=torch.int64, device=codes.device).scatter_reduce_(
        0, pair_seg[is_best], pair_code[is_best], "amin")  # [S] index into code_u
    vote = (size >= max(1, min_pixels)) & (best.to(torch.float64) >= min_share * size.to(torch.float64))
    return code_u[win[vote]]


@dataclass
class CodeVotes:
    """How many input mask segments of the training views each code won (``segment_winners``).

    ``codes`` [U] int64 sorted, ``wins`` [U] int64 (>= 1); ``segments``: voting segments in all;
    ``views``: views that voted; ``min_pixels`` / ``min_share``: the vote settings used.
    """
    codes: Tensor
    wins: Tensor
    segments: int
    views: int
    min_pixels: int = DEFAULT_VOTE_MIN_PIXELS
    min_share: float = 0.0

    FORMAT_VERSION = 1

    def valid(self, min_segments: int = DEFAULT_MIN_SEGMENTS) -> Optional[Tensor]:
        """[K] int64 valid codes (won at least ``min_segments`` segments); None when no view voted
        (then nothing is snapped)."""
        if self.views == 0 or self.codes.numel() == 0:
            return None
        return self.codes[self.wins >= max(1, int(min_segments))]

    def state_dict(self) -> dict:
        return {"format_version": self.FORMAT_VERSION, "codes": self.codes.cpu(), "wins": self.wins.cpu(),
                "segments": self.segments, "views": self.views, "min_pixels": self.min_pixels,
                "min_share": self.min_share}

    @classmethod
    def from_winners(cls, winners, views: int, *, min_pixels: int = DEFAULT_VOTE_MIN_PIXELS,
                     min_share: float = 0.0) -> "CodeVotes":
        """Votes from ``segment_winners`` of ``views`` views (a list of [S_v] int64 tensors)."""
        allw = torch.cat([w.cpu() for w in winners]) if winners else torch.zeros(0, dtype=torch.int64)
        codes, wins = torch.unique(allw, return_counts=True)
        return cls(codes, wins, int(allw.numel()), int(views), int(min_pixels), float(min_share))

    @classmethod
    def from_state_dict(cls, state: dict) -> "CodeVotes":
        if state.get("format_version") != cls.FORMAT_VERSION:
            raise ValueError(f"code votes format {state.get('format_version')!r} is not {cls.FORMAT_VERSION}")
        return cls(state["codes"], state["wins"], int(state["segments"]), int(state["views"]),
                   int(state["min_pixels"]), float(state["min_share"]))


@torch.no_grad()
def count_code_votes(views: Iterable, render_codes: Callable[[object], Tensor], *,
                     min_pixels: int = DEFAULT_VOTE_MIN_PIXELS, min_share: float = 0.0) -> CodeVotes:
    """Segment votes over views: ``render_codes(view)`` -> [H, W] int64 decoded codes of the view as
    rendered by the trained model; ``view.instance`` [H, W] its input mask (views without one are
    skipped), ``view.valid`` [H, W] bool or None (pixels outside the valid region do not vote).
    One render per view, then a few sorts: no loop over segments or pixels."""
    winners, n_views = [], 0
    for view in views:
        if view.instance is None:
            continue
        codes = render_codes(view)  # [H, W]
        seg = view.instance.to(codes.device)
        if getattr(view, "valid", None) is not None:
            seg = seg.masked_fill(~view.valid.to(codes.device), 0)
        winners.append(segment_winners(codes, seg, min_pixels=min_pixels, min_share=min_share).cpu())
        n_views += 1
    return CodeVotes.from_winners(winners, n_views, min_pixels=min_pixels, min_share=min_share)
