"""Tests of segmentation/losses.py and segmentation/neighbors.py on hand-made tensors (CPU, fast)."""

import math

import pytest
import torch
import torch.nn.functional as F

from segmentation.decode import decode_codes
from segmentation.losses import (
    TripletHead,
    boundary_mask,
    cluster_loss,
    neighbor_loss,
    relabel,
    sample_triplets,
    segment_means,
    semantic_loss,
    triplet_loss,
)
from segmentation.neighbors import neighbor_graph


def corner(code: int, D: int) -> torch.Tensor:
    """The corner of [0,1]^D whose bit k is bit k of `code`."""
    return ((code >> torch.arange(D)) & 1).float()  # [D]


def seg_image(H=24, W=32, seed=0, n=6):
    """A Voronoi-like mask with n segments (ids 3, 6, 9...) and an ignored (id 0) top-left block."""
    g = torch.Generator().manual_seed(seed)
    sy, sx = torch.randint(0, H, (n,), generator=g), torch.randint(0, W, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    seg = ((yy[..., None] - sy) ** 2 + (xx[..., None] - sx) ** 2).argmin(-1) * 3 + 3  # [H, W]
    seg[:5, :7] = 0
    return seg


# ----------------------------------------------------------------------------- relabel, means


def test_relabel_contiguous_and_order_preserving_both_paths():
    for seg in (torch.tensor([[7, 3], [7, 1000]]), torch.tensor([[7, -3], [7, 1 << 40]])):
        lab, K = relabel(seg)
        assert K == 3
        assert lab.dtype == torch.int64 and lab.shape == seg.shape
        assert lab.tolist() == [[1, 0], [1, 2]]
    assert relabel(torch.zeros(0, dtype=torch.int64))[1] == 0
    with pytest.raises(ValueError):
        relabel(torch.zeros(3))


def test_segment_means_values():
    emb = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    means, counts = segment_means(emb, torch.tensor([0, 0, 2]), 3)
    assert counts.tolist() == [2, 0, 1]
    assert torch.allclose(means, torch.tensor([[2.0, 1.0], [0.0, 0.0], [5.0, 5.0]]))


# ----------------------------------------------------------------------------- cluster loss


def _config(points_per_seg):
    """[P, D] embeddings and [P] ids (ids 1..K) from a list of per-segment lists of points."""
    emb = torch.stack([p for pts in points_per_seg for p in pts])
    seg = torch.tensor([k + 1 for k, pts in enumerate(points_per_seg) for _ in pts])
    return emb, seg


def test_cluster_loss_lowest_for_distinct_corners():
    D, s = 3, 0.25
    corners = [corner(c, D) for c in range(4)]  # 000, 100, 010, 110
    e_c, seg = _config([[c] * 5 for c in corners])
    # Mixed: each segment half on its corner, half on the next one's.
    e_m, _ = _config([[corners[k]] * 3 + [corners[(k + 1) % 4]] * 2 for k in range(4)])
    e_0 = torch.full_like(e_c, 0.5)  # collapsed
    L = {name: cluster_loss(e, seg, push_scale=s) for name, e in (("corners", e_c), ("mixed", e_m), ("collapsed", e_0))}
    # Corners: pull 0; pair Hamming distances 1,1,2,2,1,1.
    expected = (4 * math.exp(-1 / s) + 2 * math.exp(-2 / s)) / 6
    assert L["corners"]["pull"].item() == pytest.approx(0.0, abs=1e-7)
    assert L["corners"]["push"].item() == pytest.approx(expected, rel=1e-5)
    assert L["collapsed"]["push"].item() == pytest.approx(1.0)
    # Mixed: per differing bit, 3 pixels off the mean by 0.4 and 2 by 0.6 -> 0.24; corner pairs
    # (0,1), (2,3) differ in 1 bit, (1,2), (3,0) in 2 bits.
    assert L["mixed"]["pull"].item() == pytest.approx(0.24 * 1.5, rel=1e-5)
    assert L["corners"]["total"] < L["mixed"]["total"] - 0.2
    assert L["corners"]["total"] < L["collapsed"]["total"] - 0.9


def test_cluster_loss_gradient_pulls_misplaced_pixel():
    emb = torch.tensor([[0.9, 0.9], [0.9, 0.8], [0.8, 0.9], [0.2, 0.3], [0.1, 0.1], [0.1, 0.2]])
    seg = torch.tensor([5, 5, 5, 5, 9, 9])  # pixel 3 belongs to segment 5 but sits near segment 9
    emb = emb.clone().requires_grad_()
    mean5 = emb[:4].mean(0).detach()
    before = (emb[3] - mean5).norm().item()
    cluster_loss(emb, seg)["total"].backward()
    with torch.no_grad():
        stepped = emb - 1.0 * emb.grad
    after = (stepped[3] - stepped[:4].mean(0)).norm().item()
    assert after < 0.9 * before
    assert (stepped[3] - mean5).norm().item() < 0.9 * before  # also closer to the old mean


def test_sqdist_prefers_two_opposite_corners_gauss_prefers_distinct():
    D = 3
    distinct, seg = _config([[corner(c, D)] * 4 for c in range(4)])  # codes 0..3: bit 2 unused
    half, _ = _config([[corner(0, D)] * 4] * 2 + [[corner(7, D)] * 4] * 2)  # 000,000,111,111
    sq_d = cluster_loss(distinct, seg, push="sqdist")["total"].item()
    sq_h = cluster_loss(half, seg, push="sqdist")["total"].item()
    assert sq_d == pytest.approx(-8 / 6) and sq_h == pytest.approx(-2.0)
    assert sq_h < sq_d  # the documented failure: collapsing to two codes scores better
    g_d = cluster_loss(distinct, seg, push="gauss")["total"].item()
    g_h = cluster_loss(half, seg, push="gauss")["total"].item()
    assert g_d < g_h - 0.3


@pytest.mark.parametrize("push,expected_codes", [("sqdist", 2), ("gauss", 8)])
def test_push_dynamics_from_two_group_start(push, expected_codes):
    """8 segment means start in two tight groups; sqdist drives them to 2 codes, gauss to 8."""
    K, D = 8, 4
    g = torch.Generator().manual_seed(0)
    group = (torch.arange(K) % 2 * 2 - 1).float()[:, None]  # [K, 1] in {-1, 1}
    logit = (0.4 * group + 0.05 * torch.randn(K, D, generator=g)).requires_grad_()
    opt = torch.optim.Adam([logit], lr=0.05)
    for _ in range(300):
        loss = cluster_loss(torch.sigmoid(logit), torch.arange(K), push=push, ignore_id=None)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert decode_codes(torch.sigmoid(logit)).unique().numel() == expected_codes


def test_cluster_loss_ignore_id_and_num_segments():
    g = torch.Generator().manual_seed(1)
    emb = torch.rand(10, 12, 4, generator=g)
    seg = seg_image(10, 12, seed=1, n=3)
    base = cluster_loss(emb, seg)
    emb2 = emb.clone()
    emb2[seg == 0] = torch.rand(int((seg == 0).sum()), 4, generator=g)
    assert cluster_loss(emb2, seg)["total"].item() == pytest.approx(base["total"].item(), abs=1e-7)
    assert abs(cluster_loss(emb2, seg, ignore_id=None)["total"].item() - cluster_loss(emb, seg, ignore_id=None)["total"].item()) > 1e-4
    # Pre-relabelled ids (ignored pixels set to an id that is then ignored) give the same numbers.
    lab, K = relabel(seg)  # id 0 -> 0
    fast = cluster_loss(emb, lab, num_segments=K)  # ignore_id=0 drops label 0, pairs with it are absent
    assert fast["pull"].item() == pytest.approx(base["pull"].item(), rel=1e-6)
    assert fast["push"].item() == pytest.approx(base["push"].item(), rel=1e-6)


def test_cluster_loss_max_pixels_and_empty():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    emb, seg = torch.rand(40, 3, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 4 + 1
    a = cluster_loss(emb, seg, max_pixels=10, generator=g1)["total"]
    b = cluster_loss(emb, seg, max_pixels=10, generator=g2)["total"]
    assert a.item() == b.item()
    assert a.item() != cluster_loss(emb, seg)["total"].item()
    x = torch.rand(5, 3, requires_grad=True)
    out = cluster_loss(x, torch.zeros(5, dtype=torch.int64))
    assert out["total"].item() == 0.0
    out["total"].backward()
    assert torch.equal(x.grad, torch.zeros(5, 3))
    with pytest.raises(ValueError):
        cluster_loss(x, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError):
        cluster_loss(x, torch.ones(5, dtype=torch.int64), push="nope")


# ----------------------------------------------------------------------------- boundaries and triplets


def test_boundary_mask_exact():
    seg = torch.zeros(4, 6, dtype=torch.int64)
    seg[:, 3:] = 5
    b1 = boundary_mask(seg, 1)
    assert b1.sum(0).tolist() == [0, 0, 4, 4, 0, 0]
    b2 = boundary_mask(seg, 2)
    assert b2.sum(0).tolist() == [0, 4, 4, 4, 4, 0]
    # With id 0 ignored: no pixel of 0 is a boundary pixel, and 0 does not make 5 a boundary.
    seg[3, 0] = 7  # touches only ignored pixels: not a boundary
    seg[0, 2] = 8  # touches 5 at (0,3) and (1,3)
    bi = boundary_mask(seg, 1, ignore_id=0)
    assert sorted(map(tuple, bi.nonzero().tolist())) == [(0, 2), (0, 3), (1, 3)]


def test_sample_triplets_properties():
    seg = seg_image()
    H, W = seg.shape
    flat = seg.reshape(-1)
    bnd = boundary_mask(seg, 1, ignore_id=0).reshape(-1)
    tr = sample_triplets(seg, 150, generator=torch.Generator().manual_seed(0))
    assert tr.shape == (150, 3) and tr.dtype == torch.int64
    a, p, n = tr.unbind(1)
    assert bnd[a].all() and bnd[p].all() and bnd[n].all()
    assert (flat[a] == flat[p]).all() and (a != p).all()
    assert (flat[a] != flat[n]).all()
    assert (flat[tr] != 0).all()
    assert a.unique().numel() == 150  # anchors without replacement
    cheb = torch.maximum((a // W - n // W).abs(), (a % W - n % W).abs())
    assert (cheb <= 1).all()  # adjacent negatives
    # Uncapped: every eligible boundary pixel is an anchor once.
    all_tr = sample_triplets(seg, 10**6, generator=torch.Generator().manual_seed(0))
    assert all_tr.shape[0] == int(bnd.sum())
    # Determinism.
    again = sample_triplets(seg, 150, generator=torch.Generator().manual_seed(0))
    other = sample_triplets(seg, 150, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tr, again) and not torch.equal(tr, other)


def test_sample_triplets_any_negative_radius_and_degenerate():
    seg = seg_image(seed=2)
    flat = seg.reshape(-1)
    tr = sample_triplets(seg, 200, radius=2, negative="any", generator=torch.Generator().manual_seed(0))
    bnd = boundary_mask(seg, 2, ignore_id=0).reshape(-1)
    assert tr.shape[0] == 200 and bnd[tr].all()
    assert (flat[tr[:, 0]] != flat[tr[:, 2]]).all() and (flat[tr[:, 2]] != 0).all()
    # ignore_id=None: id 0 is a segment like the others and can be sampled.
    tr0 = sample_triplets(seg, 10**6, ignore_id=None, generator=torch.Generator().manual_seed(0))
    assert (flat[tr0] == 0).any()
    # Fewer than 2 (non-ignored) segments -> empty.
    one = torch.zeros(8, 8, dtype=torch.int64)
    one[2:6, 2:6] = 4
    assert sample_triplets(one).shape == (0, 3)
    assert sample_triplets(one, ignore_id=None).shape[0] > 0
    assert sample_triplets(torch.full((5, 5), 3)).shape == (0, 3)


# ----------------------------------------------------------------------------- triplet head and loss


def test_triplet_loss_value_and_empty():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]], requires_grad=True)
    tr = torch.tensor([[0, 1, 2], [0, 1, 3]])
    # d_ap = 1; d_an = 4 -> max(0, 1-4+1) = 0; d_an = 0.25 -> 1 - 0.25 + 1 = 1.75.
    assert triplet_loss(z, tr).item() == pytest.approx(1.75 / 2)
    e = triplet_loss(z, torch.zeros(0, 3, dtype=torch.int64))
    assert e.item() == 0.0
    e.backward()
    assert z.grad is not None


def _optimise_head(mode, steps=200):
    D = 4
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, D, generator=g)
    tr = torch.stack([torch.arange(0, 64, 4), torch.arange(1, 64, 4), torch.arange(2, 64, 4)], 1)
    x[tr[:, 1]] = x[tr[:, 0]] + 0.01  # positives on the anchors, negatives 0.1 away: the hinge
    x[tr[:, 2]] = x[tr[:, 0]] + 0.1 * (2 * torch.rand(16, D, generator=g) - 1)
    # d_ap - d_an + 1 > 0 falls as W scales up, so an unguarded W grows (until the margin holds).
    head = TripletHead(D, mode)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        loss = triplet_loss(head(x), tr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.weight_matrix().detach().norm().item()


def test_triplet_head_normalized_bounded_free_grows():
    free = _optimise_head("free")
    norm = _optimise_head("normalized")
    assert norm == pytest.approx(2.0, rel=1e-5)  # sqrt(D), the identity's Frobenius norm
    assert free > 5 * norm  # measured: 28.3 vs 2.0 after 200 Adam steps


def test_triplet_head_modes():
    x = torch.rand(5, 6)
    assert torch.equal(TripletHead(6, "identity")(x), x)
    fixed = TripletHead(6, "fixed")
    assert list(fixed.parameters()) == []
    W = fixed.weight_matrix()
    assert torch.allclose(W @ W.T, torch.eye(6), atol=1e-5)
    assert torch.allclose(TripletHead(6)(x), x, atol=1e-6)  # normalized starts at identity
    with pytest.raises(ValueError):
        TripletHead(6, "bogus")
    with pytest.raises(ValueError):
        TripletHead(6)(torch.rand(2, 5))


# ----------------------------------------------------------------------------- neighbour and semantic losses


def test_neighbor_loss():
    v = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 3.0]], requires_grad=True)
    edges = torch.tensor([[0, 1], [0, 2]])
    assert neighbor_loss(v, edges).item() == pytest.approx((2 + 9) / 2)
    sub = neighbor_loss(v, edges, max_edges=1, generator=torch.Generator().manual_seed(0)).item()
    assert sub in (2.0, 9.0)
    z = neighbor_loss(v, torch.zeros(0, 2, dtype=torch.int64))
    z.backward()
    assert z.item() == 0.0 and torch.equal(v.grad, torch.zeros(3, 2))


def test_semantic_loss():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 1, -1, 0])
    conf = torch.tensor([1.0, 0.5, 0.0, 1.0, 1.0, 0.25])
    ce = F.cross_entropy(logits[:4], target[:4], reduction="none").tolist() + [0.0] + [F.cross_entropy(logits[5:], target[5:]).item()]
    expected = sum(c * l for c, l in zip(conf.tolist(), ce)) / 5
    assert semantic_loss(logits, target, conf).item() == pytest.approx(expected, rel=1e-5)
    assert semantic_loss(logits[:4], target[:4]).item() == pytest.approx(F.cross_entropy(logits[:4], target[:4]).item(), rel=1e-5)
    assert semantic_loss(logits, torch.full((6,), -1)).item() == 0.0


# ----------------------------------------------------------------------------- neighbour graph


def _brute_graph(x, radius2, k):
    d2 = torch.cdist(x.double(), x.double()).square()  # [N, N]
    d2.fill_diagonal_(math.inf)
    order = d2.argsort(1)[:, :k]  # [N, k] k nearest others
    within = d2.gather(1, order) < radius2
    i = torch.arange(x.shape[0])[:, None].expand_as(order)[within]
    j = order[within]
    return {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist())}


@pytest.mark.parametrize("k", [1, 4, 30])
def test_neighbor_graph_matches_brute_force(k):
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(k))
    edges = neighbor_graph(x, radius2=0.02, k=k)
    assert edges.dtype == torch.int64 and edges.shape[1] == 2
    assert (edges[:, 0] < edges[:, 1]).all()
    keys = edges[:, 0] * 500 + edges[:, 1]
    assert torch.equal(keys, keys.unique())  # sorted, no duplicates
    got = set(map(tuple, edges.tolist()))
    assert got == _brute_graph(x, 0.02, k)
    # The cap really binds for small k: some point has more than k points in its radius.
    if k == 4:
        assert len(got) < len(_brute_graph(x, 0.02, 500))


def test_neighbor_graph_duplicates_and_degenerate():
    x = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [0.0, 0, 0], [0.05, 0, 0], [5.0, 5, 5]])
    full = {(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)}
    assert set(map(tuple, neighbor_graph(x, radius2=1e-2, k=16).tolist())) == full
    # k=1: points 0..2 coincide (ties broken arbitrarily) and each proposes one of the others
    # (>= 2 distinct pairs); point 3 proposes one of them (one more pair); point 4 is isolated.
    one = set(map(tuple, neighbor_graph(x, radius2=1e-2, k=1).tolist()))
    assert one <= full and 3 <= len(one) <= 4
    assert sum(3 in e for e in one) == 1
    assert neighbor_graph(x[:1]).shape == (0, 2)
    far = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 2, 0]])  # no pair within the radius (sparse cloud)
    assert neighbor_graph(far, radius2=1e-2).shape == (0, 2)
    with pytest.raises(ValueError):
        neighbor_graph(torch.rand(4, 2))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_the_flat_row_gather_is_index_select_bit_for_bit_with_the_same_gradient(dtype):
    """``gather_rows``'s CUDA path (``_gather_rows_flat``), run here on the CPU: the same rows, the same
    bits, repeated and unsorted indices included, and the same gradient (an index_add over the flat view)."""
    from segmentation.losses import _gather_rows_flat, gather_rows

    g = torch.Generator().manual_seed(0)
    table = torch.randn(500, 12, generator=g, dtype=torch.float32).requires_grad_(True)
    idx = torch.randint(0, 500, (3000,), generator=g).to(dtype)  # many repeats
    ref = table.index_select(0, idx)
    got = _gather_rows_flat(table, idx)
    assert got.shape == (3000, 12) and torch.equal(got, ref)
    w = torch.randn(3000, 12, generator=g)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), table)
    (g_got,) = torch.autograd.grad((got * w).sum(), table)
    assert torch.allclose(g_got, g_ref, rtol=1e-6, atol=1e-6) and float(g_ref.abs().sum()) > 0
    assert torch.equal(gather_rows(table, idx), ref)  # on the CPU: index_select itself
    wide = torch.randn(40, 64, generator=g)  # 256-byte rows; an empty index gives [0, D]
    assert torch.equal(_gather_rows_flat(wide, idx[:50] % 40), wide.index_select(0, idx[:50] % 40))
    assert _gather_rows_flat(table, idx[:0]).shape == (0, 12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gather_rows_on_the_gpu_equals_index_select():
    from segmentation.losses import gather_rows

    g = torch.Generator("cuda").manual_seed(1)
    table = torch.randn(300_000, 12, device="cuda", generator=g).requires_grad_(True)
    idx = torch.randint(0, 300_000, (400_000,), device="cuda", generator=g, dtype=torch.int32)
    got, ref = gather_rows(table, idx), table.index_select(0, idx)
    assert torch.equal(got, ref)
    w = torch.randn(400_000, 12, device="cuda", generator=g)
    (g_got,) = torch.autograd.grad((got * w).sum(), table)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), table)
    assert torch.allclose(g_got, g_ref, rtol=1e-5, atol=1e-5)
    wide = torch.randn(1000, 64, device="cuda", generator=g)  # 256-byte rows: index_select's own path
    assert torch.equal(gather_rows(wide, idx[:10] % 1000), wide.index_select(0, idx[:10] % 1000))
