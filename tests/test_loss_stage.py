"""The static-shape loss stage (segmentation/stage.py) against the per-view losses it replaces."""
from types import SimpleNamespace

import pytest
import torch

from arguments import SegmentationParams
from segmentation.losses import semantic_loss, triplet_hinge
from segmentation.objective import SegmentationObjective
from segmentation.stage import LossStages, StageBuffers
from segmentation.targets import (prepare_targets, prepared_cluster_total, static_cluster_total,
                                  static_sample_triplets)
from tests.test_seg_losses import seg_image
from utils.loss_utils import photometric_loss


def _targets(seed, ignore_id=0):
    seg = seg_image(seed=seed)
    valid = torch.ones_like(seg, dtype=torch.bool)
    valid[10:14, 20:] = False
    return seg, valid, prepare_targets(seg, valid, ignore_id=ignore_id)


def _padded(t, kmax):
    labels = torch.where(t.labels < t.num_segments, t.labels, kmax)
    counts = torch.ones(kmax + 1, dtype=torch.float64)
    counts[:t.num_segments] = t.counts[:t.num_segments]
    return labels, counts, torch.tensor(float(t.num_segments)), torch.tensor(float(t.num_kept))


@pytest.mark.parametrize("push", ["sqdist", "gauss"])
@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("ignore_id", [0, None])
def test_static_cluster_loss_equals_prepared_loss_float64(push, pad, ignore_id):
    """Padded to K_max = K + pad with the view's sizes as tensors: the same value and gradient."""
    seg, valid, t = _targets(2, ignore_id)
    emb = torch.rand(*seg.shape, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    labels, counts, k, kept = _padded(t, t.num_segments + pad)
    new = static_cluster_total(e1, labels, counts, k.double(), kept.double(), push=push, push_scale=0.3)
    ref = prepared_cluster_total(e2, t, push=push, push_scale=0.3)
    torch.testing.assert_close(new, ref, rtol=1e-12, atol=1e-14)
    (1.7 * new).backward()
    (1.7 * ref).backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-10, atol=1e-14)
    assert e1.grad.abs().sum() > 0


def test_static_cluster_loss_degenerate_views():
    """One segment: the push is 0, the pull remains; no kept pixel: 0 with a zero gradient."""
    one = prepare_targets(torch.ones(6, 8, dtype=torch.int64), ignore_id=0)
    x = torch.rand(6, 8, 3, dtype=torch.float64, requires_grad=True)
    labels, counts, k, kept = _padded(one, 4)
    v = static_cluster_total(x, labels, counts, k.double(), kept.double(), push="gauss")
    torch.testing.assert_close(v, prepared_cluster_total(x, one, push="gauss"))
    none = prepare_targets(torch.zeros(6, 8, dtype=torch.int64), ignore_id=0)
    labels, counts, k, kept = _padded(none, 4)
    z = torch.rand(6, 8, 3, requires_grad=True)
    out = static_cluster_total(z, labels, counts.float(), k, kept)
    out.backward()
    assert out.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


def test_static_triplets_are_valid_and_cover_the_anchors():
    """With replacement from the padded table: anchor and positive are two boundary pixels of one
    segment, the negative another segment's pixel in the anchor's window; padding is never drawn."""
    seg, valid, t = _targets(0)
    M, W = t.num_anchors, seg.shape[1]
    table = torch.cat([t.anchor_table, torch.full((50, t.anchor_table.shape[1]), 10**6, dtype=torch.int32)])
    boundary = torch.cat([t.boundary, torch.full((9,), -5, dtype=torch.int64)])
    rand = torch.rand(20000, table.shape[1] - 2, generator=torch.Generator().manual_seed(0))
    tr = static_sample_triplets(table, boundary, torch.tensor(float(M)), rand)
    assert tr.shape == (20000, 3)
    lab = t.labels.long()
    a, p, n = tr.unbind(1)
    assert torch.isin(a, t.anchors).all() and torch.isin(p, t.boundary).all()
    assert (a != p).all() and (lab[a] == lab[p]).all() and (lab[n] != lab[a]).all() and (lab[n] < t.num_segments).all()
    assert ((a // W - n // W).abs() <= t.radius).all() and ((a % W - n % W).abs() <= t.radius).all()
    assert torch.unique(a).numel() > 0.95 * M  # 20000 draws reach nearly every candidate
    empty = static_sample_triplets(torch.zeros(1, table.shape[1], dtype=torch.int32), torch.zeros(1, dtype=torch.int64),
                                   torch.tensor(0.0), rand[:10])
    assert empty.shape == (10, 3) and (empty == 0).all()  # in range; the stage weighs it by (m > 0)


def _objective(num_classes=4, **kw):
    kw = {"use_3d": False, **kw}
    cfg = SegmentationParams(emb_dim=4, linear_layer="normalized", push="gauss", triplet_from_iter=0,
                             triplet_max=64, **kw)
    return SegmentationObjective(cfg, num_classes, torch.device("cpu"), generator=torch.Generator().manual_seed(0))


def _view(seed, n=6):
    seg = seg_image(seed=seed, n=n)
    valid = torch.ones_like(seg, dtype=torch.bool)
    valid[2:4, 5:9] = False
    H, W = seg.shape
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(instance=seg.to(torch.int32), semantic=(seg // 3) % 4, confidence=torch.rand(H, W, generator=g),
                           valid=valid, image=torch.randint(0, 256, (H, W, 3), dtype=torch.uint8, generator=g))


def test_loss_stage_equals_the_per_term_losses():
    """LossStages (eager, CPU) gives the photometric, cluster and semantic terms of the unpadded
    references exactly, and the triplet term is the hinge on the triplets its random numbers draw."""
    obj = _objective()
    views = [_view(s, n) for s, n in ((0, 6), (1, 3), (3, 9))]
    for v in views:
        obj.prepare(v)
    assert len({v.targets.instance.num_segments for v in views}) > 1  # padding is exercised
    stages = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cpu"), triplets=64)
    for i, v in enumerate(views):
        H, W = v.instance.shape
        g = torch.Generator().manual_seed(10 + i)
        rgb = torch.rand(H, W, 3, generator=g, requires_grad=True)
        feats = {"embedding": torch.randn(H, W, 4, generator=g), "semantic": torch.randn(H, W, 4, generator=g)}
        out = stages(5, v, rgb, feats)
        assert set(out) == {"render", "cluster", "triplet", "semantic"}
        t = v.targets
        torch.testing.assert_close(out["render"], photometric_loss(rgb, v.image.float() / 255.0))
        emb = torch.sigmoid(feats["embedding"])
        torch.testing.assert_close(out["cluster"], prepared_cluster_total(emb, t.instance), rtol=1e-5, atol=1e-7)
        ref_sem = semantic_loss(feats["semantic"].reshape(-1, 4), t.semantic, t.confidence, n_valid=t.semantic_valid)
        torch.testing.assert_close(out["semantic"], ref_sem)
        buf = stages.buffers[(H, W, H * W)]
        trip = static_sample_triplets(buf.table, buf.boundary, buf.scalars[2], buf.rand)
        z = obj.head(emb.reshape(-1, 4)[trip.reshape(-1)]).reshape(-1, 3, 4)
        torch.testing.assert_close(out["triplet"], triplet_hinge(z))
        sum(out.values()).backward()
        assert rgb.grad is not None and obj.head.weight.grad is not None
    # before triplet_from_iter and for a view without masks, the stage holds fewer terms
    obj.cfg.triplet_from_iter = 100
    assert set(stages(5, views[0], rgb, feats)) == {"render", "cluster", "semantic"}
    assert set(stages(5, views[0], rgb, None)) == {"render"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("whole", [False, True])
def test_gpu_graphed_stage_equals_eager_stage_and_never_syncs(whole):
    """The CUDA-graphed stage (ONE graph: the terms, their weighted total and its gradients) replays the eager
    stage's values, weighted total and gradients (render inputs, W, decoder) over views of different K, and a call
    (replay, and the total's backward) never makes the host wait; also when it takes a fused render's image whole
    (``whole``: one input, split inside the graph)."""
    dev = torch.device("cuda")

    def build(graphs):
        obj = _objective(semantic_head="embed", semantic_dim=3)
        obj.device = dev
        obj.generator = torch.Generator(device=dev).manual_seed(0)
        obj.head = obj.head.to(dev)
        obj.decoder = torch.nn.Linear(3, 4).to(dev)
        with torch.no_grad():
            obj.decoder.weight.copy_(torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10)
            obj.decoder.bias.zero_()
        views = [_view(s, n) for s, n in ((0, 6), (1, 3), (3, 9))]
        for v in views:
            v.image = v.image.to(dev)
            obj.prepare(v, dev)
        return obj, views, LossStages(views, lambda_dssim=0.2, objective=obj, device=dev, graphs=graphs, triplets=64)

    weights = {"render": 1.0, "cluster": 0.5, "triplet": 0.25, "semantic": 2.0}
    runs = []
    for graphs in (False, True):
        obj, views, stages = build(graphs)
        got = []
        for rep in range(2):
            for i, v in enumerate(views):
                H, W = v.instance.shape
                g = torch.Generator(device=dev).manual_seed(100 * rep + i)
                kw = {}
                if whole:
                    image = torch.rand(H, W, 10, device=dev, generator=g, requires_grad=True)
                    rgb, emb, sem = torch.split(image, [3, 4, 3], dim=-1)
                    kw = {"image": image, "layout": {"rgb": (0, 3), "embedding": (3, 4), "semantic": (7, 3)}}
                else:
                    rgb = torch.rand(H, W, 3, device=dev, generator=g, requires_grad=True)
                    emb = torch.randn(H, W, 4, device=dev, generator=g, requires_grad=True)
                    sem = torch.randn(H, W, 3, device=dev, generator=g, requires_grad=True)
                if graphs and rep == 1:
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    out = stages(5, v, rgb, {"embedding": emb, "semantic": sem}, weights=weights, **kw)
                    assert (out.total is not None) == graphs
                    total = out.total if graphs else torch.dot(torch.stack([out[k] for k in weights]),
                                                               torch.tensor(list(weights.values()), device=dev))
                    total.backward()
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                inputs = (image.grad,) if whole else (rgb.grad, emb.grad, sem.grad)
                got.append([x.detach().clone() for x in (*out.values(), total, *inputs,
                                                         obj.head.weight.grad, obj.decoder.weight.grad)])
                obj.head.weight.grad = obj.decoder.weight.grad = obj.decoder.bias.grad = None
        runs.append(got)
        if graphs:
            assert len(stages.graphed) == 1
    for eager, graphed in zip(*runs):
        for a, b in zip(eager, graphed):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_neighbour_pairs_are_shuffled_once_and_sliced_per_step():
    """L_3D takes consecutive slices of the pairs shuffled when the graph is built: a full pass sees
    every pair once; the slice position is checkpointed."""
    g = torch.Generator().manual_seed(0)
    means = torch.rand(300, 3, generator=g)
    v = torch.randn(300, 4, generator=g, requires_grad=True)
    model = SimpleNamespace(num_gaussians=300, get_means=lambda: means, params={"embedding": v})
    obj = _objective(use_3d=True, l3d_from_iter=0, l3d_max_edges=30, l3d_refresh=10**6)
    seen = []
    for step in range(40):
        loss = obj.neighbor_term(step, model)
        assert loss is not None and loss.requires_grad
        seen.append(obj.edges[obj.edges_offset - 30:obj.edges_offset].clone())
    E = obj.edges.shape[0]
    assert E > 120
    full = torch.cat(seen[:E // 30])  # the passes before the first wrap
    assert torch.unique(full[:, 0] * 1000 + full[:, 1]).numel() == full.shape[0]  # no pair twice
    from segmentation.neighbors import neighbor_graph

    ref = neighbor_graph(means, radius2=obj.cfg.l3d_radius2, k=obj.cfg.l3d_k)
    key = lambda e: torch.sort(e[:, 0] * 1000 + e[:, 1]).values  # noqa: E731
    assert torch.equal(key(obj.edges), key(ref))  # the same pairs, in another order
    assert obj.edges.dtype == torch.int32 and ref.dtype == torch.int64  # stored at half the memory
    assert not torch.equal(obj.edges, ref)
    state = obj.state_dict()
    other = _objective(use_3d=True, l3d_from_iter=0, l3d_max_edges=30, l3d_refresh=10**6)
    other.load_state_dict(state)
    a, b = obj.neighbor_term(41, model), other.neighbor_term(41, model)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sigmoid", [True, False])
def test_one_node_neighbour_loss_equals_autograd_float64(sigmoid):
    from segmentation.losses import neighbor_loss

    g = torch.Generator().manual_seed(4)
    v = torch.randn(50, 6, dtype=torch.float64, generator=g)
    edges = torch.randint(0, 50, (120, 2), generator=g)
    v1, v2 = v.clone().requires_grad_(), v.clone().requires_grad_()
    act = torch.sigmoid if sigmoid else None
    fused = neighbor_loss(v1, edges, activation=act)
    x = torch.sigmoid(v2) if sigmoid else v2
    ref = (x[edges[:, 0]] - x[edges[:, 1]]).square().sum(-1).mean()
    assert type(fused.grad_fn).__name__ == "_NeighborLossBackward"
    torch.testing.assert_close(fused, ref, rtol=1e-13, atol=0)
    (3.0 * fused).backward()
    (3.0 * ref).backward()
    torch.testing.assert_close(v1.grad, v2.grad, rtol=1e-12, atol=1e-15)


def test_render_skips_the_model_quaternion_normalisation():
    """render() hands the stored quaternions to the rasterizer, which normalises them: the image and
    the quaternions' gradient equal those of a render through the normalised ones (float64)."""
    from gaussian_renderer import render
    from tests.test_feature_detach import _model_and_features
    from tests.test_rasterizer import as_camera

    sc, model, feats = _model_and_features(seed=5)
    q_raw = (model.quats.detach() * torch.linspace(0.3, 3.0, model.quats.shape[0],
                                                   dtype=torch.float64)[:, None]).requires_grad_(True)

    class NoRaw:  # the model contract without get_raw_quats: render uses get_quats()
        active_sh_degree = model.active_sh_degree
        get_means, get_scales = model.get_means, model.get_scales
        get_opacities, get_sh = model.get_opacities, model.get_sh

        def get_quats(self):
            return torch.nn.functional.normalize(q_raw, dim=-1)

    class Raw(NoRaw):
        def get_raw_quats(self):
            return q_raw

    grads, images = [], []
    for m in (Raw(), NoRaw()):
        out = render(as_camera(sc), m, features=feats, backend="torch")
        (out.rgb.square().sum() + out.features["emb"].sum()).backward()
        grads.append(q_raw.grad.clone())
        images.append(out.rgb.detach())
        q_raw.grad = None
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=1e-12)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def _key_set(e):
    return set(map(tuple, e.tolist()))


def test_neighbour_graph_rebuilds_in_the_background_and_swaps_at_a_fixed_iteration():
    """With l3d_refresh 5 and lag 3: the graph due at iteration 5 is built from the means of iteration 5
    and used from iteration 8 on (the old one until then); a checkpoint taken while it is pending
    resumes to the same terms; a changed Gaussian count voids it and rebuilds in place."""
    from segmentation.neighbors import neighbor_graph

    g = torch.Generator().manual_seed(1)
    state = {"means": torch.rand(200, 3, generator=g)}
    v = torch.randn(200, 4, generator=g, requires_grad=True)
    model = SimpleNamespace(num_gaussians=200, get_means=lambda: state["means"], params={"embedding": v})
    kw = dict(use_3d=True, l3d_from_iter=0, l3d_refresh=5, l3d_rebuild_lag=3, l3d_max_edges=0)
    obj = _objective(**kw)
    graphs = {}
    for step in range(0, 12):
        if step == 4:
            state["means"] = state["means"] + 0.02 * torch.randn(200, 3, generator=g)
            graphs["moved"] = neighbor_graph(state["means"], radius2=obj.cfg.l3d_radius2, k=obj.cfg.l3d_k)
        obj.neighbor_term(step, model)
        if step == 0:
            graphs["first"] = obj.edges.clone()
        if step == 6:
            saved = obj.state_dict()
            assert saved["pending"] is not None and saved["pending"]["due"] == 8
        if step in (5, 6, 7):
            assert obj.pending is not None and torch.equal(obj.edges, graphs["first"])
        if step >= 8:
            assert _key_set(obj.edges) == _key_set(graphs["moved"])
            assert (obj.pending is None) == (step < 10)
    assert _key_set(graphs["first"]) != _key_set(graphs["moved"])
    assert obj.edges_step == 5 and obj.pending[:2] == (13, 10)  # the next one: iteration 10's means, due at 13
    # resume from the checkpoint of iteration 6: the same terms from then on
    other = _objective(**kw)
    other.load_state_dict(saved)
    ref = _objective(**kw)
    ref.load_state_dict(saved)
    for step in range(7, 16):
        torch.testing.assert_close(other.neighbor_term(step, model), ref.neighbor_term(step, model), rtol=0, atol=0)
    # a changed count voids the pending graph and rebuilds in place
    assert other.pending is not None  # snapshot at 15, due at 18
    small = SimpleNamespace(num_gaussians=150, get_means=lambda: state["means"][:150], params={"embedding": v[:150]})
    other.neighbor_term(16, small)
    assert other.pending is None and other.edges_n == 150 and int(other.edges.max()) < 150


def test_static_cluster_loss_over_several_row_blocks():
    """A view larger than SUM_CHUNK pixels: the block-wise segment sums equal the plain ones."""
    from segmentation.targets import SUM_CHUNK

    seg = seg_image(H=96, W=80, seed=7, n=12)
    assert seg.numel() > 3 * SUM_CHUNK
    t = prepare_targets(seg, None, ignore_id=0)
    emb = torch.rand(96, 80, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    labels, counts, k, kept = _padded(t, t.num_segments + 3)
    new = static_cluster_total(e1, labels, counts, k.double(), kept.double())
    ref = prepared_cluster_total(e2, t)
    torch.testing.assert_close(new, ref, rtol=1e-12, atol=1e-14)
    new.backward()
    ref.backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-10, atol=1e-14)


def test_the_stage_takes_a_fused_renders_image_whole_with_the_same_terms_and_gradients():
    """A fused render's rgb and features are channels of one image: the stage takes that image as its one input (its
    layout in the key), splitting it inside, and gives the very terms and image gradient of the stage fed the three
    views (eager, CPU: bit for bit). A layout that does not cover the stage's inputs falls back to them."""
    obj = _objective()
    views = [_view(s, n) for s, n in ((0, 6), (1, 3))]
    for v in views:
        obj.prepare(v)
    stages = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cpu"), triplets=64)
    layout = {"rgb": (0, 3), "embedding": (3, 4), "semantic": (7, 4)}
    for i, v in enumerate(views):
        H, W = v.instance.shape
        grads, terms = [], []
        for whole in (False, True):
            image = torch.rand(H, W, 11, generator=torch.Generator().manual_seed(i)).requires_grad_(True)
            rgb, emb, sem = torch.split(image, [3, 4, 4], dim=-1)
            obj.generator = torch.Generator().manual_seed(5)  # the same triplets both times
            out = stages(5, v, rgb, {"embedding": emb, "semantic": sem},
                         image=image if whole else None, layout=layout if whole else None)
            (out["render"] + 0.3 * out["cluster"] + 0.2 * out["triplet"] + 0.5 * out["semantic"]).backward()
            grads.append(image.grad)
            terms.append(out)
        assert set(terms[0]) == set(terms[1]) == {"render", "cluster", "triplet", "semantic"}
        for k in terms[0]:
            assert torch.equal(terms[0][k], terms[1][k]), k
        assert torch.equal(grads[0], grads[1]) and grads[1].abs().sum() > 0
    whole = [s for k, s in stages.stages.items() if k[-1] is not None]
    assert whole and all(s.inputs == ("render",) for s in whole)
    assert all(s.inputs == ("rgb", "embedding", "semantic_feature") for k, s in stages.stages.items() if k[-1] is None)
    # each stage is still a whole nn.Module: torch's make_graphed_callables (CUDA) asks every module for its
    # buffers() and parameters() (an attribute once shadowed buffers(), and only the GPU tests saw it)
    for s in stages.stages.values():
        assert all(not b.requires_grad for b in s.buffers()) and all(p.requires_grad for p in s.parameters())
    # the semantic channels missing from the layout: the three inputs again
    rgb, emb, sem = (torch.rand(H, W, c) for c in (3, 4, 4))
    before = len(stages.stages)
    stages(5, views[-1], rgb, {"embedding": emb, "semantic": sem}, image=torch.cat([rgb, emb], -1),
           layout={"rgb": (0, 3), "embedding": (3, 4)})
    assert len(stages.stages) == before


def test_a_failed_graph_capture_runs_the_stage_eagerly_and_says_so_once(monkeypatch, capsys):
    """Graphing the stage is a speed-up: where the capture raises (RESULTS.md 31a: every capture did, for a fault
    the eager stage never met), the step gets the eager stage's terms, one line on stderr says why, and every later
    step runs eagerly without trying again. (The capture is CUDA-only; here it is made to fail on the CPU.)"""
    import segmentation.stage as stage_mod

    obj = _objective()
    views = [_view(s, n) for s, n in ((0, 6), (1, 3))]
    for v in views:
        obj.prepare(v)
    eager = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cpu"), triplets=64)
    stages = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cpu"), triplets=64)
    stages.graphs = True  # as on CUDA
    calls = []

    def failing_capture(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(stage_mod, "TotalGraph", failing_capture)
    weights = {"render": 1.0, "cluster": 0.5, "triplet": 0.25, "semantic": 2.0}
    for step, v in enumerate(views * 2):
        H, W = v.instance.shape
        g = torch.Generator().manual_seed(step)
        rgb = torch.rand(H, W, 3, generator=g)
        feats = {"embedding": torch.randn(H, W, 4, generator=g), "semantic": torch.randn(H, W, 4, generator=g)}
        terms = []
        for s in (eager, stages):
            obj.generator = torch.Generator().manual_seed(7)  # the same triplets both times
            terms.append(s(5, v, rgb, feats, weights=weights))
        assert set(terms[1]) == {"render", "cluster", "triplet", "semantic"} and terms[1].total is None
        for k in terms[0]:
            assert torch.equal(terms[0][k], terms[1][k]), (k, step)
    assert len(calls) == 1 and not stages.graphs and not stages.graphed
    assert stages.failed == "RuntimeError: CUDA error: operation not permitted when stream is capturing"
    err = capsys.readouterr().err
    assert err.count("capturing the loss stage as a CUDA graph failed") == 1 and "more detail" not in err


@pytest.mark.parametrize("whole", [False, True])
def test_the_total_graph_gives_the_weighted_sum_and_the_gradients_of_the_terms(whole):
    """With weights, the graphed stage (here ``TotalGraph``'s eager twin: the CPU captures nothing, and runs what the
    CUDA graph replays) returns the terms detached and ONE total whose backward hands out the gradients the same
    call computed: the total, the render's gradient and the triplet head's equal those of the eager terms weighted
    by the trainer's dot product, bit for bit, over views of different K and a set of terms that changes
    (triplets from iteration 3). A key is captured once; the graphs without triplets are freed when they start."""
    obj = _objective()
    obj.cfg.triplet_from_iter = 3
    views = [_view(s, n) for s, n in ((0, 6), (1, 3), (3, 9))]
    for v in views:
        obj.prepare(v)
    weights = {"render": 1.0, "cluster": 0.5, "triplet": 0.25, "semantic": 2.0}
    runs = []
    for graphs in (False, True):
        stages = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cpu"), triplets=64)
        stages.graphs = graphs
        obj.generator = torch.Generator().manual_seed(3)
        got = []
        for step in range(6):
            v = views[step % 3]
            H, W = v.instance.shape
            image = torch.rand(H, W, 11, generator=torch.Generator().manual_seed(step)).requires_grad_(True)
            if whole:  # a fused render's image, taken whole
                rgb, emb, sem = torch.split(image, [3, 4, 4], dim=-1)
                kw = {"image": image, "layout": {"rgb": (0, 3), "embedding": (3, 4), "semantic": (7, 4)}}
            else:  # three renders (the graph's inputs are contiguous copies: so are these, for equal roundings)
                rgb, emb, sem = (x.detach().contiguous().requires_grad_(True) for x in torch.split(image, [3, 4, 4], -1))
                kw = {}
            out = stages(step, v, rgb, {"embedding": emb, "semantic": sem}, weights=weights, **kw)
            if graphs:
                assert out.total is not None and all(not t.requires_grad for t in out.values())
                total = out.total
            else:
                assert out.total is None
                total = torch.dot(torch.stack(list(out.values())), torch.tensor([weights[k] for k in out]))
            obj.head.weight.grad = None
            total.backward()
            head = obj.head.weight.grad if "triplet" in out else torch.zeros(0)
            grad = image.grad if whole else torch.cat([rgb.grad, emb.grad, sem.grad], -1)
            got.append((dict(out), total.detach().clone(), grad.clone(), head.clone()))
        runs.append(got)
        if graphs:
            assert set(k[3] for k in stages.graphed) == {("render", "cluster", "triplet", "semantic")}
            assert len(stages.graphed) == 1  # the views' one size: the graph without triplets was freed
    for step, (eager, graphed) in enumerate(zip(*runs)):
        assert set(eager[0]) == set(graphed[0]) == ({"render", "cluster", "semantic"} |
                                                    ({"triplet"} if step >= 3 else set()))
        for k in eager[0]:
            assert torch.equal(eager[0][k], graphed[0][k]), (step, k)
        assert torch.equal(eager[1], graphed[1]), step  # the total
        for a, b in zip(eager[2:], graphed[2:]):  # the render's gradient, the head's
            assert torch.equal(a, b), (step, (a - b).abs().max())
        assert graphed[2].abs().sum() > 0 and (step < 3 or graphed[3].abs().sum() > 0)


def test_a_views_targets_load_as_one_copy_of_its_packed_blob_with_the_same_terms(monkeypatch):
    """Each view's image and targets are packed once into a blob of the stage buffers' layout, the view's own
    tensors becoming its blocks (no second copy in memory): a step then loads the view with ONE copy (and the
    triplets' random numbers), and the terms and gradients are those of the per-tensor loads, bit for bit, over
    views of different K, B and M in an order that leaves stale data behind in the per-tensor buffers."""
    obj = _objective()
    views = [_view(s, n) for s, n in ((0, 6), (1, 3), (3, 9))]
    for v in views:
        obj.prepare(v)
    copies = [v.image.clone() for v in views] + [v.targets.instance.anchor_table.clone() for v in views]
    weights = {"render": 1.0, "cluster": 0.5, "triplet": 0.25, "semantic": 2.0}
    runs = []
    for packed in (False, True):
        stages = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cpu"), triplets=64)
        if not packed:
            monkeypatch.setattr(LossStages, "_blob", lambda self, view, buf: None)
        else:
            monkeypatch.undo()
        obj.generator = torch.Generator().manual_seed(1)
        got = []
        for step, i in enumerate((2, 0, 1, 2, 1, 0)):
            v = views[i]
            H, W = v.instance.shape
            g = torch.Generator().manual_seed(step)
            rgb = torch.rand(H, W, 3, generator=g, requires_grad=True)
            emb = torch.randn(H, W, 4, generator=g, requires_grad=True)
            out = stages(5, v, rgb, {"embedding": emb, "semantic": torch.randn(H, W, 4, generator=g)}, weights=weights)
            sum(weights[k] * x for k, x in out.items()).backward()
            got.append([*(x.detach() for x in out.values()), rgb.grad, emb.grad])
        runs.append(got)
    for step, (a, b) in enumerate(zip(*runs)):
        for x, y in zip(a, b):
            assert torch.equal(x, y), step
    assert sum(float(t[2]) > 0 for t in runs[1]) == 6  # every step had triplets
    buf = stages.buffers[(24, 32, 24 * 32)]
    for i, v in enumerate(views):
        kept_buf, kept_targets, blob = v._stage_blob
        assert kept_buf is buf and kept_targets is v.targets and blob.shape == buf.blob.shape
        t = v.targets
        for x in (v.image, t.instance.labels, t.instance.boundary, t.instance.anchor_table, t.semantic, t.confidence):
            assert x.untyped_storage().data_ptr() == blob.untyped_storage().data_ptr()  # blocks of the blob
        assert torch.equal(v.image, copies[i]) and torch.equal(t.instance.anchor_table, copies[3 + i])
    with torch.profiler.profile() as prof:
        buf.load(views[0], views[0].targets, instance=True, triplets=True, semantic=True, confidence=True,
                 generator=obj.generator, blob=stages._blob(views[0], buf))
    ops = [e.name for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None]
    assert ops == ["aten::uniform_", "aten::copy_"], ops


def test_the_blob_holds_only_the_targets_the_scene_has():
    """A view's blob is as large as the layout, so the layout leaves out what no view of the scene has (here no
    confidence: its buffer stays a tensor of its own); a view without targets (plain 3DGS) gets no blob (its image
    is one copy either way), and no memory per view."""
    obj = _objective()
    views = [_view(s, n) for s, n in ((0, 6), (1, 3))]
    for v in views:
        v.confidence = None
        obj.prepare(v)
    stages = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cpu"), triplets=64)
    assert stages.blob_fields == ("boundary", "counts", "labels", "semantic", "table")
    buf = stages._buffers(24, 32, 24 * 32)
    assert "confidence" not in buf.fields and buf.confidence.shape == (24 * 32,) and bool((buf.confidence == 1).all())
    P, (k, b, m, q) = 24 * 32, stages.sizes[(24, 32, 24 * 32)]
    full = StageBuffers(24, 32, P, k, b, m, q, 64, torch.device("cpu"), semantic_dtype=torch.int16)
    assert full.blob.numel() - buf.blob.numel() >= 4 * P  # no [P] floats of confidence in every view's blob
    blob = stages._blob(views[0], buf)
    assert blob is not None and blob.shape == buf.blob.shape
    plain = [_view(s, n) for s, n in ((0, 6), (1, 3))]
    bare = LossStages(plain, lambda_dssim=0.2, objective=None, device=torch.device("cpu"), triplets=64)
    assert bare.blob_fields == ()
    out = bare(0, plain[0], torch.rand(24, 32, 3), None)
    assert set(out) == {"render"} and not hasattr(plain[0], "_stage_blob")
