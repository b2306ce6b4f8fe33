"""Per-view segmentation targets, prepared once when the views are loaded, and the losses on them.

A view's instance mask never changes during training, so everything the cluster and triplet
losses derive from it (contiguous segment ids, segment sizes, boundary pixels grouped by
segment, triplet anchor candidates) is computed here once, on the training device. The step
functions ``prepared_cluster_loss`` and ``prepared_sample_triplets`` then use fixed-size ops
only (index_add / index_select / gather, masks multiplied in, random numbers drawn for sizes
known on the host): no ``int()``, ``.item()``, ``nonzero``, ``unique`` or boolean indexing, so
a CUDA step never waits for the GPU.

They compute the same numbers as ``losses.cluster_loss`` and ``losses.sample_triplets`` on the
same mask with ignored pixels set to the ignore id (for the triplets: the same triplets from the
same generator state); tests/test_seg_losses.py checks both.

Convention: pixel indices are flat row-major ``y * W + x`` (P = H * W). A pixel is *ignored*
when it is outside the valid region (``View.valid`` False) or, with ``ignore_id`` set (``--stuff_id
ignore``), when its raw id equals ``ignore_id``. Ignored pixels carry label K (one past the last
segment), never belong to a segment and never make a neighbour a boundary pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from gaussian_renderer.step_ops import cluster_term_cuda
from segmentation.losses import PUSH_MODES, _zero_like_graph, boundary_mask, gather_rows, relabel

__all__ = ["SegmentTargets", "prepare_targets", "prepare_semantic_target", "prepared_cluster_loss",
           "prepared_cluster_total", "prepared_sample_triplets", "static_cluster_total", "static_sample_triplets"]


@dataclass
class SegmentTargets:
    """What the 2D instance losses need from one view's mask, on the training device."""

    height: int
    width: int
    num_segments: int  # K: segments with at least one kept pixel
    num_kept: int  # kept (non-ignored) pixels
    labels: Tensor  # [P] int32 in [0, K]; K = ignored
    counts: Tensor  # [K + 1] float32 pixels per segment (all >= 1); row K: ignored pixels (at least 1)
    radius: int  # boundary window radius
    boundary: Tensor  # [B] int64 boundary pixels grouped by segment (ascending pixel within a group)
    anchor_table: Tensor  # [M, 4 + Q] int32, one row per anchor candidate (a boundary pixel of a
    #   segment with >= 2 of them, ascending pixel index): pixel, where its segment's block starts in
    #   ``boundary``, the block's size, the anchor's rank inside it, then its Q = (2r+1)^2 window
    #   pixels (row-major offsets), each the flat pixel if it holds another segment, else -1

    @property
    def num_anchors(self) -> int:
        return int(self.anchor_table.shape[0])

    @property
    def anchors(self) -> Tensor:  # [M] int64
        return self.anchor_table[:, 0].long()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.labels, self.counts, self.boundary, self.anchor_table))

    def to(self, device) -> "SegmentTargets":
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in vars(self).items()}
        return SegmentTargets(**moved)


@torch.no_grad()
def prepare_targets(instance: Tensor, valid: Optional[Tensor] = None, *, ignore_id: Optional[int] = 0,
                    radius: int = 1, device=None) -> SegmentTargets:
    """Relabels one raw instance mask and derives its boundaries and triplet candidates (host syncs
    are fine here: it runs once per view).

    Args:
        instance: [H, W] integer raw ids (per-view inconsistent).
        valid: [H, W] bool, False outside the valid region (those pixels are ignored), or None.
        ignore_id: raw id of "no segment" pixels (``--stuff_id ignore``: 0), or None.
        radius: boundary window radius (as ``losses.boundary_mask``).
        device: where the targets live (default: the mask's device).
    """
    if instance.dim() != 2 or instance.dtype.is_floating_point or instance.dtype == torch.bool:
        raise ValueError(f"prepare_targets: instance must be an integer [H,W] tensor, got {instance.dtype} "
                         f"{tuple(instance.shape)}")
    device = torch.device(device) if device is not None else instance.device
    seg = instance.to(device=device, dtype=torch.int64)  # [H, W]
    H, W = seg.shape
    if H * W >= 2**31:
        raise ValueError(f"prepare_targets: {H}x{W} views are too large for int32 pixel indices")
    ignored = torch.zeros_like(seg, dtype=torch.bool)
    if ignore_id is not None:
        ignored |= seg == ignore_id
    if valid is not None:
        if valid.shape != seg.shape:
            raise ValueError(f"prepare_targets: valid {tuple(valid.shape)} and instance {tuple(seg.shape)} disagree")
        ignored |= ~valid.to(device=device, dtype=torch.bool)
    flat = seg.reshape(-1)  # [P]
    keep = ~ignored.reshape(-1)  # [P]
    lab_kept, K = relabel(flat[keep])  # [P_kept] in [0, K)
    labels = torch.full_like(flat, K)  # [P]; K = ignored
    labels[keep] = lab_kept
    counts = torch.bincount(lab_kept, minlength=K).to(torch.float32)  # [K]
    n_ignored = float(flat.numel() - lab_kept.numel())
    counts = torch.cat([counts, counts.new_full((1,), max(1.0, n_ignored))])  # [K + 1]

    # Boundary pixels on the relabelled map (ignored pixels carry K and are "no segment").
    bnd = boundary_mask(labels.reshape(H, W), radius, ignore_id=K).reshape(-1)  # [P]
    b_idx = torch.nonzero(bnd).squeeze(1)  # [B] ascending
    b_lab = labels[b_idx]  # [B]
    order = torch.argsort(b_lab, stable=True)  # [B]
    cnt = torch.bincount(b_lab, minlength=K)  # [K]
    start = torch.cumsum(cnt, 0) - cnt  # [K]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    cand = torch.nonzero(cnt[b_lab] >= 2).squeeze(1)  # [M] into b_*, ascending pixel order
    a_lab = b_lab[cand]
    anchor = b_idx[cand]  # [M]
    # The anchor's (2r+1)^2 window: pixels of another (kept) segment are its negative candidates.
    d = torch.arange(-radius, radius + 1, device=device)
    dy, dx = (g.reshape(-1) for g in torch.meshgrid(d, d, indexing="ij"))  # [Q]
    ay, ax = anchor // W, anchor % W
    ny, nx = ay[:, None] + dy, ax[:, None] + dx  # [M, Q]
    inside = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
    n_px = ny.clamp(0, H - 1) * W + nx.clamp(0, W - 1)  # [M, Q]
    n_lab = labels[n_px]
    ok = inside & (n_lab != labels[anchor][:, None]) & (n_lab != K)
    table = torch.cat([torch.stack([anchor, start[a_lab], cnt[a_lab], rank[cand] - start[a_lab]], 1),
                       torch.where(ok, n_px, -1)], 1)  # [M, 4 + Q]
    return SegmentTargets(
        height=H, width=W, num_segments=K, num_kept=int(keep.sum()),
        labels=labels.to(torch.int32), counts=counts, radius=radius,
        boundary=b_idx[order], anchor_table=table.to(torch.int32))


@torch.no_grad()
def prepare_semantic_target(semantic: Tensor, valid: Optional[Tensor] = None, *, device=None) -> Tensor:
    """[H, W] class ids -> [P] int16 (int64 when ids exceed int16) with -1 outside the valid region."""
    device = torch.device(device) if device is not None else semantic.device
    target = semantic.to(device=device, dtype=torch.int64).reshape(-1)  # [P]
    if valid is not None:
        target = torch.where(valid.to(device).reshape(-1), target, torch.full_like(target, -1))
    small = target.numel() == 0 or int(target.max()) < 2**15
    return target.to(torch.int16) if small else target


def _cluster_terms(e: Tensor, t: SegmentTargets, push: str, push_scale: float):
    """The cluster loss's pieces on flat pixels e [P, D] (``t.num_kept`` > 0), in few, large ops (the
    host issues each one; benchmarks/RESULTS.md, section 8). Row K of the sums and means belongs to
    the ignored pixels, whose distances are masked out of the pull; the push is the mean over the pairs
    i < j of a [K, K] matrix (no index lists, no scatter in a backward).

    Returns (pull, push, r [P, D] = e - its segment mean, kept [P] bool, means [K+1, D], slope): slope
    is f'(|m_i - m_j|^2) [K, K] for the Gaussian push, None for sqdist (f' = -1) or when K < 2."""
    K = t.num_segments
    sums = e.new_zeros(K + 1, e.shape[1]).index_add_(0, t.labels, e)  # [K+1, D]
    means_all = sums / t.counts[:, None]  # [K+1, D]
    r = e - gather_rows(means_all, t.labels)  # [P, D]
    kept = t.labels < K  # [P]
    pull = (r.square().sum(-1) * kept).sum() / t.num_kept
    if K < 2:
        return pull, _zero_like_graph(e), r, kept, means_all, None
    f, slope = _push_kernel(means_all[:K], push, push_scale)
    return pull, torch.triu(f, diagonal=1).sum() / (K * (K - 1) / 2), r, kept, means_all, slope


def _push_kernel(means: Tensor, push: str, push_scale: float):
    """f(|m_i - m_j|^2) [K, K] of the push term and its slope f' (None for sqdist, where f' = -1)."""
    dd = (means[:, None, :] - means[None, :, :]).square().sum(-1)  # [K, K]
    if push == "sqdist":
        return -dd, None
    f = torch.exp(dd * (-1.0 / push_scale))
    return f, f * (-1.0 / push_scale)


def _check_cluster_args(emb: Tensor, t: SegmentTargets, push: str) -> Tensor:
    if push not in PUSH_MODES:
        raise ValueError(f"cluster_loss: push must be one of {PUSH_MODES}, got {push!r}")
    e = emb.reshape(-1, emb.shape[-1])  # [P, D]
    if e.shape[0] != t.labels.shape[0]:
        raise ValueError(f"cluster_loss: {e.shape[0]} pixels rendered, targets have {t.labels.shape[0]}")
    return e


def prepared_cluster_loss(emb: Tensor, t: SegmentTargets, *, push: str = "gauss", push_scale: float = 0.25,
                          pull_weight: float = 1.0, push_weight: float = 1.0) -> dict:
    """``losses.cluster_loss`` on prepared targets, with fixed-size ops only, differentiated by
    autograd (the training step uses ``prepared_cluster_total``, its one-node twin).

    Args:
        emb: [H, W, D] or [P, D] float in [0, 1].
        t: the view's targets.
    Returns:
        {"pull": [], "push": [], "total": []}.
    """
    e = _check_cluster_args(emb, t, push)
    if t.num_kept == 0:
        zero = _zero_like_graph(emb)
        return {"pull": zero, "push": zero, "total": zero}
    pull, push_term = _cluster_terms(e, t, push, push_scale)[:2]
    return {"pull": pull, "push": push_term, "total": pull_weight * pull + push_weight * push_term}


class _ClusterLoss(torch.autograd.Function):
    """``prepared_cluster_loss(...)["total"]`` as ONE autograd node with its gradient written out
    (about 25 fewer nodes per step; each costs the host tens of microseconds on a GPU). With r_p = e_p -
    m_k(p) and n the kept pixels: d pull / d e_p = 2 r_p / n for kept pixels (the terms through the
    segment means cancel, since sum_{p in k} r_p = 0); the push term's gradient reaches each segment
    mean, d push / d m_i = 2 / #pairs * sum_j S_ij (m_i - m_j) with S_ij = f'(|m_i - m_j|^2) (i != j), and
    each pixel of segment k then gets 1 / count_k of it."""

    @staticmethod
    def forward(ctx, e, t, push, push_scale):
        pull, push_term, r, kept, means_all, slope = _cluster_terms(e, t, push, push_scale)
        ctx.save_for_backward(r, kept, means_all, slope)
        ctx.t = t
        return pull + push_term

    @staticmethod
    def backward(ctx, grad):
        r, kept, means_all, slope = ctx.saved_tensors
        t = ctx.t
        K = t.num_segments
        g = r * (kept[:, None].to(r.dtype) * (2.0 / t.num_kept * grad))  # [P, D] the pull
        if K >= 2:
            means = means_all[:K]
            S = (torch.full((K, K), -1.0, dtype=means.dtype, device=means.device) if slope is None else slope)
            S = S * (1.0 - torch.eye(K, dtype=means.dtype, device=means.device))  # f'(dd_ij), i != j
            g_m = (S.sum(1, keepdim=True) * means - S @ means) * (2.0 / (K * (K - 1) / 2))  # [K, D]
            g_m = torch.cat([g_m / t.counts[:K, None], g_m.new_zeros(1, g_m.shape[1])]) * grad  # [K+1, D]
            g = g + gather_rows(g_m, t.labels)
        return g, None, None, None


def prepared_cluster_total(emb: Tensor, t: SegmentTargets, *, push: str = "gauss", push_scale: float = 0.25) -> Tensor:
    """``prepared_cluster_loss(emb, t, ...)["total"]`` (pull + push, unit weights) as one autograd
    node (``_ClusterLoss``); the training step's form. emb: [H, W, D] or [P, D]."""
    e = _check_cluster_args(emb, t, push)
    if t.num_kept == 0:
        return _zero_like_graph(emb)
    return _ClusterLoss.apply(e, t, push, float(push_scale))


def prepared_sample_triplets(t: SegmentTargets, max_triplets: int = 3000, *, negative: str = "adjacent",
                             generator: Optional[torch.Generator] = None) -> Tensor:
    """``losses.sample_triplets`` on prepared targets: the same triplets from the same generator
    state, with fixed-size ops only (T = min(M, max_triplets) is known on the host).

    Returns:
        [T, 3] int64 flat pixel indices (anchor, positive, negative).
    """
    if negative not in ("adjacent", "any"):
        raise ValueError(f"sample_triplets: negative must be 'adjacent' or 'any', got {negative!r}")
    dev = t.labels.device
    M = t.num_anchors
    if M == 0 or max_triplets <= 0:
        return torch.zeros(0, 3, dtype=torch.int64, device=dev)
    rows = t.anchor_table
    if M > max_triplets:
        rows = rows.index_select(0, torch.randperm(M, generator=generator, device=dev)[:max_triplets])  # [T, 4+Q]
    rows = rows.long()
    anchor, start, cnt, rank = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    T = rows.shape[0]

    # Positive: uniform over the other cnt-1 boundary pixels of the anchor's segment.
    u = torch.rand(T, generator=generator, device=dev)
    r = (u * (cnt - 1)).long().clamp_max(cnt - 2)
    r = r + (r >= rank).long()
    pos = t.boundary.index_select(0, start + r)  # [T]

    if negative == "any":
        B = t.boundary.shape[0]
        u = torch.rand(T, generator=generator, device=dev)
        r = (u * (B - cnt)).long().clamp_max(B - cnt - 1)
        r = r + (r >= start).long() * cnt
        neg = t.boundary.index_select(0, r)
    else:  # uniform among the window pixels of another segment (prepared: -1 where none)
        nbrs = rows[:, 4:]  # [T, Q]
        score = torch.rand(nbrs.shape, generator=generator, device=dev).masked_fill(nbrs < 0, -1.0)
        neg = nbrs.gather(1, score.argmax(1, keepdim=True)).squeeze(1)
    return torch.stack([anchor, pos, neg], dim=1)


# --------------------------------------------------------------------------------------------
# Static shapes: the same losses on targets padded to the scene's largest view, so that one
# CUDA graph serves every view (segmentation.stage). Sizes that vary per view (K, the kept
# pixel count, M) are tensors, not Python ints; padded segment rows are masked out.
# --------------------------------------------------------------------------------------------


SUM_CHUNK = 2048  # pixels per private row block of the segment sums (static_cluster_total)


def _static_cluster_terms(e: Tensor, labels: Tensor, counts: Tensor, k: Tensor, num_kept: Tensor,
                          push: str, push_scale: float):
    """``_cluster_terms`` with K_max + 1 rows: labels [P] int in [0, K_max], K_max = ignored (its row is
    masked out of the pull); rows k..K_max-1 are padding (count 1, no pixel) and never enter a pair.
    k, num_kept: 0-d float tensors. Returns (pull, push, r, kept, means_all, slope, pair)."""
    kmax = counts.shape[0] - 1
    # Segment sums with the atomic adds spread over one row block per SUM_CHUNK pixels: a view's
    # P pixels fall on a few segments, and P adds into K_max + 1 rows queue behind each other on a GPU.
    P, D = e.shape
    chunks = -(-P // SUM_CHUNK)
    rows = labels + (kmax + 1) * (torch.arange(P, device=e.device) // SUM_CHUNK)  # [P]
    sums = e.new_zeros(chunks * (kmax + 1), D).index_add_(0, rows, e).view(chunks, kmax + 1, D).sum(0)
    means_all = sums / counts[:, None]
    r = e - gather_rows(means_all, labels)  # [P, D]
    kept = labels < kmax  # [P]
    pull = (r.square().sum(-1) * kept).sum() / num_kept.clamp_min(1.0)
    real = torch.arange(kmax, device=e.device) < k  # [K_max] the view's segments
    pair = torch.triu((real[:, None] & real[None, :]).to(e.dtype), diagonal=1)  # [K_max, K_max], i < j
    n_pairs = (k * (k - 1.0) / 2.0).clamp_min(1.0)
    f, slope = _push_kernel(means_all[:kmax], push, push_scale)  # [K_max, K_max]
    return pull, (f * pair).sum() / n_pairs, r, kept, means_all, slope, pair, n_pairs


class _StaticClusterLoss(torch.autograd.Function):
    """``_ClusterLoss`` on padded targets (see ``static_cluster_total``): the same gradient, with the
    pair mask in place of the i != j mask and the counts read from tensors."""

    @staticmethod
    def forward(ctx, e, labels, counts, k, num_kept, push, push_scale):
        pull, push_term, r, kept, means_all, slope, pair, n_pairs = _static_cluster_terms(
            e, labels, counts, k, num_kept, push, push_scale)
        ctx.save_for_backward(r, kept, means_all, slope if slope is not None else r.new_full((), -1.0), pair,
                              n_pairs, num_kept, labels, counts)
        return pull + push_term

    @staticmethod
    def backward(ctx, grad):
        r, kept, means_all, slope, pair, n_pairs, num_kept, labels, counts = ctx.saved_tensors
        kmax = counts.shape[0] - 1
        g = r * (kept[:, None].to(r.dtype) * (2.0 * grad / num_kept.clamp_min(1.0)))  # [P, D] the pull
        means = means_all[:kmax]
        S = slope * (pair + pair.T)  # f'(dd_ij) on the view's pairs, both orders
        g_m = (S.sum(1, keepdim=True) * means - S @ means) * (2.0 * grad / n_pairs)  # [K_max, D]
        g_m = torch.cat([g_m / counts[:kmax, None], g_m.new_zeros(1, g_m.shape[1])])  # [K_max + 1, D]
        return g + gather_rows(g_m, labels), None, None, None, None, None, None


def static_cluster_total(emb: Tensor, labels: Tensor, counts: Tensor, k: Tensor, num_kept: Tensor, *,
                         push: str = "gauss", push_scale: float = 0.25) -> Tensor:
    """``prepared_cluster_total`` on targets padded to K_max segments, with no Python int of the view:
    labels [P] int32/int64 with the ignored pixels at K_max (= counts.shape[0] - 1), counts [K_max + 1]
    float (>= 1; rows past the view's K are padding), k and num_kept 0-d float tensors (the view's K
    and kept pixels). Equal to ``prepared_cluster_total`` on the unpadded targets (tested); 0 when
    no pixel is kept. emb: [H, W, D] or [P, D]."""
    if push not in PUSH_MODES:
        raise ValueError(f"cluster_loss: push must be one of {PUSH_MODES}, got {push!r}")
    e = emb.reshape(-1, emb.shape[-1])
    if e.shape[0] != labels.shape[0]:
        raise ValueError(f"cluster_loss: {e.shape[0]} pixels rendered, targets have {labels.shape[0]}")
    if e.is_cuda:  # a few kernels instead of about forty operators where the step kernels are on (step_ops.py)
        fast = cluster_term_cuda(e, labels, counts, k, num_kept, push, push_scale)
        if fast is not None:
            return fast
    return _StaticClusterLoss.apply(e, labels, counts, k, num_kept, push, float(push_scale))


def static_sample_triplets(table: Tensor, boundary: Tensor, m: Tensor, rand: Tensor) -> Tensor:
    """Triplets (anchor, positive, negative) from anchor candidates padded to M_max rows, with no
    Python int of the view: T = rand.shape[0] anchors drawn uniformly WITH replacement among the
    view's m (0-d float tensor) candidates, then as ``prepared_sample_triplets`` a positive uniform
    among the other boundary pixels of the anchor's segment and a negative uniform among its window
    pixels of another segment. rand: [T, 2 + Q] uniform numbers in [0, 1) (drawn by the caller).
    When m = 0 the rows are meaningless but in range; the caller weighs the loss by (m > 0).
    Returns [T, 3] int64 flat pixel indices."""
    mmax, bmax = table.shape[0], boundary.shape[0]
    idx = (rand[:, 0] * m).long().clamp(0, mmax - 1)  # [T]
    rows = table.index_select(0, idx).long()  # [T, 4 + Q]
    anchor, start, cnt, rank = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    r = (rand[:, 1] * (cnt - 1)).long().clamp_max(cnt - 2).clamp_min(0)
    r = r + (r >= rank).long()
    pos = boundary.index_select(0, (start + r).clamp(0, bmax - 1))  # [T]
    nbrs = rows[:, 4:]  # [T, Q], -1 where the window pixel is not another segment's
    score = rand[:, 2:].masked_fill(nbrs < 0, -1.0)
    neg = nbrs.gather(1, score.argmax(1, keepdim=True)).squeeze(1).clamp_min(0)
    return torch.stack([anchor.clamp_min(0), pos, neg], dim=1)
