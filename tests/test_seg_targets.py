"""Prepared per-view targets (segmentation/targets.py) against the per-step losses they replace."""
import pytest
import torch

from segmentation.losses import boundary_mask, cluster_loss, sample_triplets
from segmentation.objective import SegmentationObjective
from segmentation.targets import (prepare_semantic_target, prepare_targets, prepared_cluster_loss,
                                  prepared_cluster_total, prepared_sample_triplets)
from tests.test_seg_losses import seg_image

INVALID = -7  # an id no mask uses, for the reference runs of the old functions


def _scene(seed=0):
    seg = seg_image(seed=seed)  # ids 3, 6, ...; 0 in the top-left block
    valid = torch.ones_like(seg, dtype=torch.bool)
    valid[10:14, 20:] = False  # a band outside the valid region, across segments
    emb = torch.rand(*seg.shape, 4, generator=torch.Generator().manual_seed(seed))
    return seg, valid, emb


def _reference(seg, valid, ignore_id):
    """The mask the old functions must see: invalid pixels ignored (with ignore_id 0 they join id 0)."""
    if ignore_id is None:
        return torch.where(valid, seg, torch.full_like(seg, INVALID)), INVALID
    return torch.where(valid, seg, torch.full_like(seg, ignore_id)), ignore_id


@pytest.mark.parametrize("ignore_id", [0, None])
@pytest.mark.parametrize("push", ["sqdist", "gauss"])
def test_prepared_cluster_loss_equals_per_step_loss(ignore_id, push):
    seg, valid, emb = _scene()
    t = prepare_targets(seg, valid, ignore_id=ignore_id)
    ref_seg, ref_ignore = _reference(seg, valid, ignore_id)
    old = cluster_loss(emb, ref_seg, push=push, ignore_id=ref_ignore)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    new = prepared_cluster_loss(e1, t, push=push)
    for k in ("pull", "push", "total"):
        torch.testing.assert_close(new[k], old[k], rtol=1e-5, atol=1e-7)
    new["total"].backward()
    cluster_loss(e2, ref_seg, push=push, ignore_id=ref_ignore)["total"].backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("ignore_id", [0, None])
@pytest.mark.parametrize("push", ["sqdist", "gauss"])
@pytest.mark.parametrize("seed", [0, 3])
def test_one_node_cluster_loss_equals_autograd_float64(ignore_id, push, seed):
    """prepared_cluster_total (hand-written gradient) == autograd through prepared_cluster_loss."""
    seg, valid, emb = _scene(seed)
    t = prepare_targets(seg, valid, ignore_id=ignore_id)
    assert t.num_segments >= 3 and t.num_kept < seg.numel()
    e1 = emb.double().requires_grad_()
    e2 = emb.double().requires_grad_()
    fused = prepared_cluster_total(e1, t, push=push, push_scale=0.3)
    ref = prepared_cluster_loss(e2, t, push=push, push_scale=0.3)["total"]
    assert type(fused.grad_fn).__name__ == "_ClusterLossBackward"
    torch.testing.assert_close(fused, ref, atol=1e-13, rtol=0)
    (2.5 * fused).backward()
    (2.5 * ref).backward()
    assert e2.grad.abs().max() > 0
    torch.testing.assert_close(e1.grad, e2.grad, atol=1e-13, rtol=1e-9)


def test_one_node_cluster_loss_degenerate_views():
    one = prepare_targets(torch.full((6, 6), 4, dtype=torch.int64), ignore_id=0)  # a single segment: pull only
    x = torch.rand(6, 6, 3, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    prepared_cluster_total(x, one).backward()
    prepared_cluster_loss(y, one)["total"].backward()
    torch.testing.assert_close(x.grad, y.grad, atol=1e-14, rtol=1e-10)
    empty = prepare_targets(torch.zeros(6, 6, dtype=torch.int64), ignore_id=0)  # all ignored: 0, no gradient
    z = torch.rand(6, 6, 3, requires_grad=True)
    out = prepared_cluster_total(z, empty)
    out.backward()
    assert out.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    with pytest.raises(ValueError, match="pixels rendered"):
        prepared_cluster_total(torch.rand(5, 3), one)


def test_invalid_pixels_are_ignored_not_a_segment():
    seg, valid, emb = _scene()
    t = prepare_targets(seg, valid, ignore_id=None)
    kept_ids = seg[valid].unique()
    assert t.num_segments == kept_ids.numel()  # the invalid band adds no segment of its own
    assert t.num_kept == int(valid.sum())
    lab = t.labels.reshape(seg.shape)
    assert (lab[~valid] == t.num_segments).all() and (lab[valid] < t.num_segments).all()
    assert torch.equal(t.counts[:-1], torch.bincount(lab[valid].long(), minlength=t.num_segments).float())
    assert t.counts[-1].item() == float((~valid).sum())  # the ignored pixels' row
    # The embedding there has no effect on the loss; elsewhere it has.
    emb2 = emb.clone()
    emb2[~valid] = 1.0 - emb2[~valid]
    assert prepared_cluster_loss(emb2, t)["total"].item() == pytest.approx(prepared_cluster_loss(emb, t)["total"].item(), abs=1e-7)
    emb3 = emb.clone()
    emb3[0, -1] = 1.0 - emb3[0, -1]
    assert abs(prepared_cluster_loss(emb3, t)["total"].item() - prepared_cluster_loss(emb, t)["total"].item()) > 1e-6
    # No boundary pixel, anchor or negative lies outside the valid region.
    flat_valid = valid.reshape(-1)
    assert flat_valid[t.boundary].all()
    tr = prepared_sample_triplets(t, 10**6, generator=torch.Generator().manual_seed(0))
    assert tr.shape[0] > 0 and flat_valid[tr].all()


@pytest.mark.parametrize("ignore_id", [0, None])
@pytest.mark.parametrize("negative", ["adjacent", "any"])
@pytest.mark.parametrize("cap", [40, 10**6])
def test_prepared_triplets_are_the_per_step_triplets(ignore_id, negative, cap):
    """Same generator state -> the very same triplets as sample_triplets on the reference mask."""
    seg, valid, _ = _scene(seed=3)
    t = prepare_targets(seg, valid, ignore_id=ignore_id)
    ref_seg, ref_ignore = _reference(seg, valid, ignore_id)
    old = sample_triplets(ref_seg, cap, ignore_id=ref_ignore, negative=negative,
                          generator=torch.Generator().manual_seed(5))
    new = prepared_sample_triplets(t, cap, negative=negative, generator=torch.Generator().manual_seed(5))
    assert new.shape[0] == min(cap, t.num_anchors) and new.shape[0] > 0
    assert torch.equal(new, old)


def test_prepared_triplet_properties():
    seg, valid, _ = _scene(seed=1)
    t = prepare_targets(seg, valid, ignore_id=0)
    ref_seg, _ = _reference(seg, valid, 0)
    flat, W = ref_seg.reshape(-1), seg.shape[1]
    bnd = boundary_mask(ref_seg, 1, ignore_id=0).reshape(-1)
    assert torch.equal(torch.sort(t.boundary).values, bnd.nonzero().squeeze(1))
    tr = prepared_sample_triplets(t, 100, generator=torch.Generator().manual_seed(0))
    a, p, n = tr.unbind(1)
    assert bnd[tr].all() and (flat[tr] != 0).all()
    assert (flat[a] == flat[p]).all() and (a != p).all() and (flat[a] != flat[n]).all()
    assert a.unique().numel() == 100
    assert (torch.maximum((a // W - n // W).abs(), (a % W - n % W).abs()) <= 1).all()
    # Positives cover the anchor's segment uniformly: over many draws, every other boundary pixel
    # of a segment shows up as a positive of one fixed anchor.
    k = 0
    a0, start, cnt = t.anchors[k], int(t.anchor_table[k, 1]), int(t.anchor_table[k, 2])
    g = torch.Generator().manual_seed(1)
    seen = torch.zeros(flat.numel(), dtype=torch.int64)
    for _ in range(60):
        trs = prepared_sample_triplets(t, 10**6, generator=g)
        seen.index_add_(0, trs[trs[:, 0] == a0, 1], torch.ones(1, dtype=torch.int64).expand(1))
    members = set(t.boundary[start:start + cnt].tolist()) - {int(a0)}
    assert set(seen.nonzero().squeeze(1).tolist()) == members
    # Degenerate masks: one segment only, or everything ignored.
    one = torch.zeros(8, 8, dtype=torch.int64)
    one[2:6, 2:6] = 4
    for m, ig in ((one, 0), (torch.zeros(6, 6, dtype=torch.int64), 0)):
        tt = prepare_targets(m, ignore_id=ig)
        assert prepared_sample_triplets(tt, 50).shape == (0, 3)
    x = torch.rand(6, 6, 3, requires_grad=True)
    out = prepared_cluster_loss(x, prepare_targets(torch.zeros(6, 6, dtype=torch.int64), ignore_id=0))
    out["total"].backward()
    assert out["total"].item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_semantic_target_and_objective_use_prepared_targets():
    seg, valid, emb = _scene()
    sem = (seg // 3) % 4
    target = prepare_semantic_target(sem, valid)
    assert target.dtype == torch.int16 and target.shape == (seg.numel(),)
    assert (target[~valid.reshape(-1)] == -1).all()
    assert torch.equal(target[valid.reshape(-1)].long(), sem[valid])

    from types import SimpleNamespace

    from arguments import SegmentationParams

    cfg = SegmentationParams(emb_dim=4, linear_layer="identity", push="sqdist", triplet_from_iter=0, triplet_max=50,
                             use_3d=False)
    obj = SegmentationObjective(cfg, 4, torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    view = SimpleNamespace(instance=seg.to(torch.int32), semantic=sem, confidence=None, valid=valid)
    feats = {"embedding": torch.logit(emb.clamp(0.01, 0.99)), "semantic": torch.randn(*seg.shape, 4)}
    out = obj.losses(10, feats, view, model=None)
    assert set(out) == {"cluster", "triplet", "semantic"}
    ref_seg, _ = _reference(seg, valid, 0)
    ref = cluster_loss(torch.sigmoid(feats["embedding"]), ref_seg, push="sqdist")["total"]
    torch.testing.assert_close(out["cluster"], ref)
    assert view.targets is not None and view.targets.instance.num_segments == ref_seg[ref_seg != 0].unique().numel()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prepared_losses_do_not_sync_on_cuda():
    """The step's segmentation work (cluster, triplets, triplet loss, semantic, backward) never waits for the GPU."""
    from segmentation.losses import semantic_loss, triplet_loss

    dev = torch.device("cuda")
    seg, valid, emb = _scene()
    t = prepare_targets(seg, valid, ignore_id=0, device=dev)
    sem = prepare_semantic_target((seg // 3) % 4, valid, device=dev)
    e = emb.to(dev).requires_grad_()
    logits = torch.randn(seg.numel(), 4, device=dev, requires_grad=True)
    g = torch.Generator(device=dev).manual_seed(0)
    opt = torch.optim.Adam([e, logits], fused=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            c = prepared_cluster_loss(e, t, push="sqdist")["total"] + prepared_cluster_total(e, t)
            tr = prepared_sample_triplets(t, 50, generator=g)
            loss = c + triplet_loss(e.reshape(-1, 4), tr) + semantic_loss(logits, sem.long())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    # And they match the CPU numbers.
    cpu = prepared_cluster_loss(emb, prepare_targets(seg, valid, ignore_id=0), push="sqdist")["total"]
    torch.testing.assert_close(prepared_cluster_loss(emb.to(dev), t, push="sqdist")["total"].cpu(), cpu,
                               rtol=1e-5, atol=1e-6)
