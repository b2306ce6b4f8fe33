"""Segmentation losses of UniC-Lift: cluster (Eq. 4), triplet (Eq. 5), 3D neighbour (Eq. 6), semantic.

Every function works on raw tensors and is vectorised (bincount / index_add / gather); none loops
over pixels, segments or Gaussians. Axis letters: P pixels, D embedding channels, K segments,
T triplets, N Gaussians, E edges, C classes.

Convention: embeddings given to ``cluster_loss`` and ``TripletHead`` live in [0, 1]^D (sigmoid
already applied), mask ids are arbitrary integers that are NOT consistent across views, and flat
pixel indices are row-major ``y * W + x``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gaussian_renderer.step_ops import neighbor_loss_cuda

__all__ = [
    "relabel",
    "segment_means",
    "cluster_loss",
    "boundary_mask",
    "sample_triplets",
    "TripletHead",
    "triplet_loss",
    "neighbor_loss",
    "semantic_loss",
]

PUSH_MODES = ("gauss", "sqdist")

# Ids in [0, _LUT_MAX) are relabelled with a bincount lookup table (O(P)); others fall back to
# torch.unique (a sort, O(P log P)).
_LUT_MAX = 1 << 20


def _zero_like_graph(x: Tensor) -> Tensor:
    """A scalar 0 that stays attached to ``x``'s graph (so ``.backward()`` works on empty cases)."""
    return x.sum() * 0.0


# --------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------


def relabel(seg: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary integer ids to contiguous 0..K-1, keeping their sorted order.

    Args:
        seg: [...] integer ids.
    Returns:
        (labels [...] int64 in [0, K), K).
    """
    if seg.dtype.is_floating_point or seg.dtype == torch.bool:
        raise ValueError(f"relabel: seg must be an integer tensor, got {seg.dtype}")
    if seg.numel() == 0:
        return seg.to(torch.int64), 0
    flat = seg.reshape(-1).to(torch.int64)  # [P]
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < _LUT_MAX:
        present = torch.bincount(flat, minlength=hi + 1) > 0  # [hi+1]
        lut = torch.cumsum(present.to(torch.int64), 0) - 1  # [hi+1] new id of each present old id
        return lut[flat].reshape(seg.shape), int(present.sum())
    uniq, inverse = torch.unique(flat, return_inverse=True)
    return inverse.reshape(seg.shape), int(uniq.numel())


def segment_means(emb: Tensor, seg: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """Mean embedding of each segment.

    Args:
        emb: [P, D] float.
        seg: [P] int64 in [0, K).
        K: number of segments.
    Returns:
        (means [K, D] (zeros for empty segments), counts [K] int64).
    """
    if emb.dim() != 2 or seg.shape != emb.shape[:1]:
        raise ValueError(f"segment_means: expected emb [P,D] and seg [P], got {tuple(emb.shape)} and {tuple(seg.shape)}")
    counts = torch.bincount(seg, minlength=K)  # [K]
    sums = emb.new_zeros(K, emb.shape[1]).index_add_(0, seg, emb)  # [K, D]
    means = sums / counts.clamp_min(1).to(emb.dtype)[:, None]  # [K, D]
    return means, counts


def _flatten_pixels(emb: Tensor, seg: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if emb.dim() < 2 or seg.shape != emb.shape[:-1]:
        raise ValueError(f"{name}: expected emb [...,D] and seg [...] with the same leading shape, got {tuple(emb.shape)} and {tuple(seg.shape)}")
    return emb.reshape(-1, emb.shape[-1]), seg.reshape(-1)


# --------------------------------------------------------------------------------------------
# Cluster loss (Eq. 4)
# --------------------------------------------------------------------------------------------


def cluster_loss(
    emb: Tensor,
    seg: Tensor,
    *,
    push: str = "gauss",
    push_scale: float = 0.25,
    ignore_id: int | None = 0,
    pull_weight: float = 1.0,
    push_weight: float = 1.0,
    max_pixels: int | None = None,
    generator: torch.Generator | None = None,
    num_segments: int | None = None,
) -> dict[str, Tensor]:
    """Pull pixels to their segment mean, push segment means apart.

    Pull: mean over pixels of ``||e_p - m_seg(p)||^2``.
    Push, over the K(K-1)/2 pairs of segment means present in this view:
      * ``"sqdist"``: ``-mean_{i<j} ||m_i - m_j||^2`` (the paper's Eq. 4 normalised). Its optimum is
        any configuration whose every channel is split as evenly as possible, e.g. half the
        segments on one corner and half on the opposite one: it does not ask for distinct codes.
      * ``"gauss"``: ``mean_{i<j} exp(-||m_i - m_j||^2 / push_scale)``, a bounded repulsion that is
        lowest when every segment sits on its own corner. Two corners one bit apart are at squared
        distance 1. Default s = 0.25 (toy study, free segment means under Adam, 4 seeds: s = 1
        leaves near-collapsed starts on colliding codes (8 segments in D=4: 5-7 codes), s <= 0.25
        gives every segment its own code; smaller s pushes less once codes differ, so bits stay
        nearer 0.5). Tune it on real scenes.

    Args:
        emb: [H, W, D] or [P, D] float in [0, 1] (sigmoid already applied).
        seg: [H, W] or [P] raw integer mask ids.
        push: "gauss" or "sqdist".
        push_scale: s of the "gauss" kernel (squared-distance units).
        ignore_id: pixels with this id are left out; None keeps them as an ordinary segment.
        pull_weight, push_weight: weights inside ``total``.
        max_pixels: if set and exceeded, a uniform random subset of that many (kept) pixels is used.
        generator: torch.Generator on emb's device, used by ``max_pixels``.
        num_segments: if given, seg already holds contiguous ids in [0, num_segments) (e.g. relabelled
            once when the view is loaded) and ``relabel`` (three host syncs) is skipped; segments
            with no pixel are left out of the push mean.
    Returns:
        {"pull": [], "push": [], "total": pull_weight * pull + push_weight * push}, all scalars.
    """
    if push not in PUSH_MODES:
        raise ValueError(f"cluster_loss: push must be one of {PUSH_MODES}, got {push!r}")
    if push == "gauss" and not push_scale > 0:
        raise ValueError(f"cluster_loss: push_scale must be > 0, got {push_scale}")
    e, s = _flatten_pixels(emb, seg, "cluster_loss")  # [P, D], [P]
    if ignore_id is not None:
        keep = s != ignore_id  # [P]
        e, s = e[keep], s[keep]
    if max_pixels is not None and s.numel() > max_pixels:
        pick = torch.randperm(s.numel(), generator=generator, device=s.device)[:max_pixels]  # [max_pixels]
        e, s = e[pick], s[pick]

    zero = _zero_like_graph(emb)
    if s.numel() == 0:
        return {"pull": zero, "push": zero, "total": zero}

    if num_segments is None:
        lab, K = relabel(s)  # [P] in [0, K), every segment present
    else:
        lab, K = s.to(torch.int64), int(num_segments)
    means, counts = segment_means(e, lab, K)  # [K, D], [K]
    pull = (e - means[lab]).square().sum(-1).mean()

    if K < 2:
        push_term = zero
    else:
        i, j = torch.triu_indices(K, K, offset=1, device=e.device)  # [K(K-1)/2] each
        d2 = (means[i] - means[j]).square().sum(-1)  # [K(K-1)/2]
        term = -d2 if push == "sqdist" else torch.exp(-d2 / push_scale)  # [K(K-1)/2]
        if num_segments is None:
            push_term = term.mean()
        else:  # mean over pairs of present segments (0 if fewer than 2 are present)
            w = ((counts[i] > 0) & (counts[j] > 0)).to(term.dtype)
            push_term = (term * w).sum() / w.sum().clamp_min(1.0)

    total = pull_weight * pull + push_weight * push_term
    return {"pull": pull, "push": push_term, "total": total}


# --------------------------------------------------------------------------------------------
# Triplets (Eq. 5)
# --------------------------------------------------------------------------------------------


def _window_minmax(seg: Tensor, radius: int, ignore_id: int | None) -> tuple[Tensor, Tensor]:
    """Smallest and largest (non-ignored) id in each pixel's (2r+1)^2 window, image border excluded."""
    x = seg.to(torch.float64)[None, None]  # [1, 1, H, W]; float64 keeps ids exact up to 2^53
    if ignore_id is not None:
        ign = (seg == ignore_id)[None, None]
        x_hi = x.masked_fill(ign, -math.inf)
        x_lo = x.masked_fill(ign, math.inf)
    else:
        x_hi = x_lo = x
    k = 2 * radius + 1
    hi = F.max_pool2d(x_hi, k, stride=1, padding=radius)[0, 0]  # [H, W]
    lo = -F.max_pool2d(-x_lo, k, stride=1, padding=radius)[0, 0]  # [H, W]
    return lo, hi


def boundary_mask(seg: Tensor, radius: int = 1, *, ignore_id: int | None = None) -> Tensor:
    """Pixels whose (2r+1) x (2r+1) window holds another mask id.

    Args:
        seg: [H, W] integer ids.
        radius: r >= 1 (window 2r+1, Chebyshev distance <= r). Pixels outside the image do not count.
        ignore_id: if set, pixels with that id are never boundary pixels and do not make their
            neighbours boundary pixels (they are "no segment", not "another segment").
    Returns:
        [H, W] bool.
    """
    if seg.dim() != 2 or seg.dtype.is_floating_point:
        raise ValueError(f"boundary_mask: seg must be an integer [H,W] tensor, got {seg.dtype} {tuple(seg.shape)}")
    if radius < 1:
        raise ValueError(f"boundary_mask: radius must be >= 1, got {radius}")
    lo, hi = _window_minmax(seg, radius, ignore_id)
    own = seg.to(torch.float64)
    out = (lo < own) | (hi > own)  # [H, W]
    if ignore_id is not None:
        out &= seg != ignore_id
    return out


def sample_triplets(
    seg: Tensor,
    max_triplets: int = 3000,
    *,
    ignore_id: int | None = 0,
    radius: int = 1,
    negative: str = "adjacent",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample (anchor, positive, negative) pixel triplets on segment boundaries.

    Definition (all three are boundary pixels as defined by ``boundary_mask(seg, radius,
    ignore_id=ignore_id)``; ignored pixels are never used):
      * anchor: a boundary pixel, drawn uniformly without replacement among boundary pixels whose
        segment has at least 2 boundary pixels;
      * positive: another boundary pixel of the anchor's segment, uniform, never the anchor;
      * negative: ``"adjacent"`` (default, the hardest case): a pixel of another segment inside the
        anchor's (2r+1)^2 window, uniform among those (it is a boundary pixel by symmetry);
        ``"any"``: a boundary pixel of any other segment, uniform.

    Args:
        seg: [H, W] integer ids.
        max_triplets: cap on T.
        ignore_id: id of "no segment" pixels (None: every id is a segment).
        radius: boundary window radius.
        negative: "adjacent" or "any".
        generator: torch.Generator on seg's device; same generator state -> same triplets.
    Returns:
        [T, 3] int64 flat pixel indices (y * W + x), T <= max_triplets; [0, 3] if the view has
        fewer than 2 segments or no usable boundary pixels.
    """
    if negative not in ("adjacent", "any"):
        raise ValueError(f"sample_triplets: negative must be 'adjacent' or 'any', got {negative!r}")
    if max_triplets < 0:
        raise ValueError(f"sample_triplets: max_triplets must be >= 0, got {max_triplets}")
    H, W = seg.shape if seg.dim() == 2 else (0, 0)
    bnd = boundary_mask(seg, radius, ignore_id=ignore_id)  # [H, W] (validates seg)
    dev = seg.device
    empty = torch.zeros(0, 3, dtype=torch.int64, device=dev)

    flat_seg = seg.reshape(-1).to(torch.int64)  # [H*W]
    b_idx = torch.nonzero(bnd.reshape(-1)).squeeze(1)  # [B] flat indices of boundary pixels
    if b_idx.numel() < 2 or max_triplets == 0:
        return empty
    b_lab, K = relabel(flat_seg[b_idx])  # [B] in [0, K)
    if K < 2:
        return empty

    # Boundary pixels grouped by segment: block of segment k is order[start[k] : start[k] + cnt[k]].
    order = torch.argsort(b_lab, stable=True)  # [B]
    cnt = torch.bincount(b_lab, minlength=K)  # [K]
    start = torch.cumsum(cnt, 0) - cnt  # [K]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=dev)  # [B] position of each pixel in `order`
    rank_in_block = rank - start[b_lab]  # [B]

    # Anchors: boundary pixels of segments with >= 2 boundary pixels, uniform without replacement.
    cand = torch.nonzero(cnt[b_lab] >= 2).squeeze(1)  # [B'] indices into b_*
    if cand.numel() == 0:
        return empty
    if cand.numel() > max_triplets:
        cand = cand[torch.randperm(cand.numel(), generator=generator, device=dev)[:max_triplets]]
    a = cand  # [T] indices into b_*
    a_lab = b_lab[a]  # [T]
    T = a.numel()

    # Positive: uniform over the other cnt-1 members of the anchor's block (skip the anchor's slot).
    u = torch.rand(T, generator=generator, device=dev)
    r = (u * (cnt[a_lab] - 1)).long().clamp_max(cnt[a_lab] - 2)  # [T] in [0, cnt-1)
    r = r + (r >= rank_in_block[a]).long()
    p = order[start[a_lab] + r]  # [T] indices into b_*

    anchor_px = b_idx[a]  # [T] flat pixel indices
    pos_px = b_idx[p]
    if negative == "any":
        # Uniform over boundary pixels outside the anchor's block: skip that block in `order`.
        B = order.numel()
        u = torch.rand(T, generator=generator, device=dev)
        r = (u * (B - cnt[a_lab])).long().clamp_max(B - cnt[a_lab] - 1)  # [T]
        r = r + (r >= start[a_lab]).long() * cnt[a_lab]
        neg_px = b_idx[order[r]]
    else:
        # Window offsets around the anchor; pick uniformly among in-image, non-ignored, other-id pixels.
        d = torch.arange(-radius, radius + 1, device=dev)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        dy, dx = dy.reshape(-1), dx.reshape(-1)  # [Q] with Q = (2r+1)^2
        ay, ax = anchor_px // W, anchor_px % W  # [T]
        ny, nx = ay[:, None] + dy, ax[:, None] + dx  # [T, Q]
        inside = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
        n_px = ny.clamp(0, H - 1) * W + nx.clamp(0, W - 1)  # [T, Q]
        n_id = flat_seg[n_px]  # [T, Q]
        ok = inside & (n_id != flat_seg[anchor_px][:, None])
        if ignore_id is not None:
            ok &= n_id != ignore_id
        score = torch.rand(ok.shape, generator=generator, device=dev).masked_fill(~ok, -1.0)
        neg_px = n_px.gather(1, score.argmax(1, keepdim=True)).squeeze(1)  # [T]
        # Every anchor is a boundary pixel, so it has at least one valid neighbour.
    return torch.stack([anchor_px, pos_px, neg_px], dim=1)


TRIPLET_HEAD_MODES = ("free", "normalized", "fixed", "identity")


class TripletHead(torch.nn.Module):
    """The linear layer of Eq. 5: ``z = W x`` with W [D, D], x in [0, 1]^D.

    The hinge ``|a-p|^2 - |a-n|^2 + margin`` can be lowered forever by inflating W, so each mode
    says how W is kept from growing without bound:
      * ``"free"``: plain learnable W (init identity); bounded only by the optimiser's weight decay.
      * ``"normalized"`` (default): learnable V, used as ``W = sqrt(D) V / ||V||_F``, so
        ``||W||_F = sqrt(D)`` (the identity's) at all times and ``||W||_2 <= sqrt(D)``; W can rotate
        and re-weight channels but not scale up. Scale-invariant, hence smooth (unlike a spectral
        norm at the identity, where all singular values tie).
      * ``"fixed"``: a random orthogonal W (a buffer, no gradient; distances are preserved).
      * ``"identity"``: no layer, ``z = x``.
    """

    def __init__(self, dim: int, mode: str = "normalized", *, seed: int = 0):
        super().__init__()
        if mode not in TRIPLET_HEAD_MODES:
            raise ValueError(f"TripletHead: mode must be one of {TRIPLET_HEAD_MODES}, got {mode!r}")
        if dim < 1:
            raise ValueError(f"TripletHead: dim must be >= 1, got {dim}")
        self.dim, self.mode = dim, mode
        if mode in ("free", "normalized"):
            self.weight = torch.nn.Parameter(torch.eye(dim))  # [D, D]
        elif mode == "fixed":
            g = torch.Generator().manual_seed(seed)
            q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g))
            q = q * torch.sign(torch.diagonal(r))[None, :]  # Haar-uniform orthogonal
            self.register_buffer("weight", q)  # [D, D]
        else:
            self.weight = None

    def weight_matrix(self) -> Tensor | None:
        """The W actually applied ([D, D]), None for "identity"."""
        if self.mode == "normalized":
            return self.weight * (math.sqrt(self.dim) / self.weight.norm().clamp_min(1e-12))
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., D] -> z: [..., D]."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"TripletHead: expected last dim {self.dim}, got {tuple(x.shape)}")
        W = self.weight_matrix()
        return x if W is None else x @ W.T

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode!r}"


def triplet_loss(z: Tensor, triplets: Tensor, margin: float = 1.0) -> Tensor:
    """Mean hinge ``max(0, ||z_a - z_p||^2 - ||z_a - z_n||^2 + margin)`` over triplets.

    Args:
        z: [P, D] (or [H, W, D], flattened row-major) projected embeddings.
        triplets: [T, 3] int64 flat indices (anchor, positive, negative) from ``sample_triplets``.
        margin: delta (1 in the paper).
    Returns:
        scalar; 0 attached to z's graph when T = 0.
    """
    zf = z.reshape(-1, z.shape[-1])  # [P, D]
    if triplets.dim() != 2 or triplets.shape[1] != 3:
        raise ValueError(f"triplet_loss: triplets must be [T,3], got {tuple(triplets.shape)}")
    if triplets.shape[0] == 0:
        return _zero_like_graph(z)
    # one gather (its backward is one index_add_, not three accumulating index_put_s)
    return triplet_hinge(gather_rows(zf, triplets.reshape(-1)).reshape(-1, 3, zf.shape[-1]), margin)


def triplet_hinge(z3: Tensor, margin: float = 1.0) -> Tensor:
    """Mean hinge over triplets given as rows ``z3`` [T, 3, D] (anchor, positive, negative); see
    ``triplet_loss``. 0 attached to the graph when T = 0."""
    if z3.shape[0] == 0:
        return _zero_like_graph(z3)
    d = (z3[:, :1] - z3[:, 1:]).square().sum(-1)  # [T, 2]: |a - p|^2, |a - n|^2
    return torch.relu(d[:, 0] - d[:, 1] + margin).mean()


# --------------------------------------------------------------------------------------------
# 3D neighbour loss (Eq. 6) and semantic loss
# --------------------------------------------------------------------------------------------


FLAT_GATHER_MAX_ROW_BYTES = 128  # narrower rows are gathered element by element on CUDA (gather_rows)


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table.index_select(0, index)`` for a 2D ``table`` [N, D]: [len(index), D], differentiable.

    On CUDA, rows narrower than ``FLAT_GATHER_MAX_ROW_BYTES`` are gathered element by element from the
    flat view. PyTorch gathers 16-byte-aligned rows with one thread block per row, which for 12 floats
    leaves 3 of 32 threads busy: the H200 profile of a step shows three such gathers of 0.1-0.24 ms each,
    about 0.45 ms in all, which by their sizes are each pixel's segment mean (forward and backward of the
    cluster term) and L_3D's neighbour pairs (benchmarks/RESULTS.md 21a, 21d). The values are the same
    bits; elsewhere (CPU, wide rows) this is ``index_select`` itself."""
    if not (table.is_cuda and table.dim() == 2 and table.shape[1] * table.element_size() < FLAT_GATHER_MAX_ROW_BYTES):
        return table.index_select(0, index)
    return _gather_rows_flat(table, index)


def _gather_rows_flat(table: Tensor, index: Tensor) -> Tensor:
    """``gather_rows`` through the flat view, on any device (the CPU tests compare it bit for bit)."""
    D = table.shape[1]
    dtype = torch.int32 if table.numel() < 2 ** 31 else torch.int64
    flat = index.to(dtype)[:, None] * D + torch.arange(D, device=index.device, dtype=dtype)  # [M, D]
    return table.contiguous().view(-1).index_select(0, flat.view(-1)).view(-1, D)


def neighbor_loss(
    v: Tensor,
    edges: Tensor,
    *,
    max_edges: int | None = None,
    generator: torch.Generator | None = None,
    activation=None,
) -> Tensor:
    """Mean ``||f(v_i) - f(v_j)||^2`` over neighbour pairs (Eq. 6, normalised), f = ``activation``
    (elementwise, e.g. ``torch.sigmoid``; None: identity).

    Args:
        v: [N, D] per-Gaussian embeddings (raw v or sigmoid(v): the caller chooses).
        edges: [E, 2] int64 pairs from ``segmentation.neighbors.neighbor_graph``.
        max_edges: if set and exceeded, a uniform random subset of that many edges is used.
        generator: torch.Generator on v's device, for ``max_edges``.
    Returns:
        scalar; 0 attached to v's graph when E = 0.
    """
    if edges.dim() != 2 or edges.shape[1] != 2:
        raise ValueError(f"neighbor_loss: edges must be [E,2], got {tuple(edges.shape)}")
    if edges.shape[0] == 0:
        return _zero_like_graph(v)
    if max_edges is not None and edges.shape[0] > max_edges:
        pick = torch.randint(edges.shape[0], (max_edges,), generator=generator, device=edges.device)
        edges = edges.index_select(0, pick)
    # One index_select for both ends (its backward, one index_add_, is deterministic on the CPU,
    # unlike advanced indexing, whose index_put_ made resumed runs drift in the last bits); the
    # activation runs on the gathered rows only, not on every Gaussian.
    if activation is None or activation is torch.sigmoid:
        idx = edges.reshape(-1)
        fast = neighbor_loss_cuda(v, idx, activation is torch.sigmoid)  # one kernel on CUDA (step_ops.py)
        return fast if fast is not None else _NeighborLoss.apply(v, idx, activation is torch.sigmoid)
    x = activation(gather_rows(v, edges.reshape(-1)))  # [2E, D]
    x = x.reshape(-1, 2, x.shape[-1])
    return (x[:, 0] - x[:, 1]).square().sum(-1).mean()


class _NeighborLoss(torch.autograd.Function):
    """``mean_e ||f(v_i) - f(v_j)||^2`` over the pairs ``idx`` = [i0, j0, i1, j1, ...] as ONE autograd
    node (about ten fewer per step; each costs the host tens of microseconds on a GPU), f = sigmoid
    or the identity. With d_e = f(v_i) - f(v_j): dL/dv_i = 2 d_e f'(v_i) / E, dL/dv_j = -2 d_e f'(v_j) / E,
    summed over the pairs by one ``index_add_`` (deterministic on the CPU)."""

    @staticmethod
    def forward(ctx, v, idx, sigmoid):
        x = gather_rows(v, idx)  # [2E, D]
        if sigmoid:
            x = torch.sigmoid(x)
        pairs = x.reshape(-1, 2, x.shape[-1])
        diff = pairs[:, 0] - pairs[:, 1]  # [E, D]
        ctx.save_for_backward(idx, x if sigmoid else None, diff)
        ctx.n, ctx.sigmoid = v.shape[0], sigmoid
        return diff.square().sum(-1).mean()

    @staticmethod
    def backward(ctx, grad):
        idx, x, diff = ctx.saved_tensors
        g = diff * (2.0 / diff.shape[0] * grad)  # [E, D]
        g = torch.stack([g, -g], dim=1).reshape(-1, diff.shape[-1])  # [2E, D], the rows of idx
        if ctx.sigmoid:
            g = g * x * (1.0 - x)
        return g.new_zeros(ctx.n, g.shape[-1]).index_add_(0, idx, g), None, None


def semantic_loss(
    logits: Tensor,
    target: Tensor,
    confidence: Tensor | None = None,
    ignore_index: int = -1,
    n_valid: int | Tensor | None = None,
) -> Tensor:
    """Confidence-weighted cross-entropy: ``sum_p c_p CE_p / #valid`` over pixels with a label.
    ``n_valid``: #valid when the caller knows it (prepared targets), saving its count per step.

    Dividing by the number of valid pixels (not by ``sum c``) lets low-confidence views weigh less.

    Args:
        logits: [P, C] (or [..., C]) class scores.
        target: [P] (or [...]) class ids; ``ignore_index`` marks unlabelled pixels.
        confidence: [P] (or [...]) weights in [0, 1], or None (all 1).
    Returns:
        scalar; 0 attached to logits' graph when no pixel is labelled.
    """
    C = logits.shape[-1]
    lg = logits.reshape(-1, C)  # [P, C]
    tg = target.reshape(-1).to(torch.int64)  # [P]
    if tg.numel() != lg.shape[0]:
        raise ValueError(f"semantic_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} disagree")
    if n_valid is None:
        n_valid = (tg != ignore_index).sum().clamp_min(1)  # no host sync; ce is all 0 when none is valid
    elif isinstance(n_valid, Tensor):  # a 0-d tensor (the graphed loss stage): no host read
        n_valid = n_valid.clamp_min(1)
    else:
        n_valid = max(1, int(n_valid))
    ce = F.cross_entropy(lg, tg, ignore_index=ignore_index, reduction="none")  # [P], 0 where ignored
    if confidence is not None:
        conf = confidence.reshape(-1).to(ce.dtype)
        if conf.numel() != tg.numel():
            raise ValueError(f"semantic_loss: confidence {tuple(confidence.shape)} and target {tuple(target.shape)} disagree")
        ce = ce * conf
    return ce.sum() / n_valid
