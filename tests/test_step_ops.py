"""The step kernels (gaussian_renderer/step_ops.py, csrc/step_ops.cu): L_3D, the triplet and the cluster terms.

On any machine with nvcc: the source builds for Hopper without spills. On the CPU: the callers keep PyTorch's
operators. On a GPU: each kernel equals the PyTorch operators it replaces, values and gradients, and L_3D and the
loss stage take them."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch

from gaussian_renderer import step_ops
from gaussian_renderer.step_ops import (SOURCE, neighbor_grad_applies, neighbor_loss_cuda, neighbor_loss_into_grad,
                                       step_ops_available, step_ops_status, triplet_term_cuda)
from segmentation.losses import TripletHead, _NeighborLoss, gather_rows, neighbor_loss, triplet_hinge
from segmentation.targets import _StaticClusterLoss, prepare_targets, static_cluster_total, static_sample_triplets

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _kernels_on(monkeypatch):
    """The kernels are asked for in every test here, whatever the environment says."""
    monkeypatch.setenv("UNIC_LIFT_STEP_OPS", "1")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_source_builds_for_hopper_without_spills(tmp_path):
    out = tmp_path / "s.so"
    r = subprocess.run(["nvcc", "-O3", "-std=c++17", "-gencode=arch=compute_90,code=sm_90", "-shared", "-Xcompiler",
                        "-fPIC", "-Xptxas", "-v", SOURCE, "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    spills = [int(m) for m in re.findall(r"(\d+) bytes spill stores", r.stderr)]
    frames = [int(m) for m in re.findall(r"(\d+) bytes stack frame", r.stderr)]
    # L_3D, the triplet term's forward and backward, the cluster term's four and two
    assert len(spills) == 9 and max(spills) == 0, r.stderr
    assert max(frames) == 0, r.stderr


def test_the_cpu_keeps_pytorchs_operators():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(40, 6, generator=g)
    idx = torch.randint(0, 40, (20,), generator=g, dtype=torch.int32)
    assert neighbor_loss_cuda(v, idx, True) is None
    table, boundary = torch.zeros(3, 6, dtype=torch.int32), torch.zeros(4, dtype=torch.int64)
    assert triplet_term_cuda(v, None, table, boundary, torch.zeros(4), torch.rand(5, 4), 1.0) is None
    assert not step_ops_available(torch.device("cpu"))
    assert "CUDA only" in step_ops_status(torch.device("cpu"))


def test_l3d_into_grad_applies_to_trained_cuda_parameters_only():
    """The training step decides before its backward whether L_3D's kernel adds the gradient afterwards: never for
    CPU tensors or for tensors that are not a trained parameter (or its column view)."""
    p = torch.nn.Parameter(torch.randn(40, 32))
    assert not neighbor_grad_applies(p) and not neighbor_grad_applies(p[:, 3:15])
    if torch.cuda.is_available() and step_ops_available(torch.device("cuda")):
        q = torch.nn.Parameter(torch.randn(40, 32, device="cuda"))
        idx = torch.arange(8, device="cuda", dtype=torch.int32)
        assert neighbor_grad_applies(q) and neighbor_grad_applies(q[:, 3:15], idx)
        assert not neighbor_grad_applies(q.detach() * 2) and not neighbor_grad_applies(q[:, 3:15], idx.long())


def test_the_kernels_are_on_by_default_and_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("UNIC_LIFT_STEP_OPS")
    assert step_ops._wanted()
    monkeypatch.setenv("UNIC_LIFT_STEP_OPS", "0")
    assert not step_ops._wanted()
    if torch.cuda.is_available():
        assert not step_ops_available(torch.device("cuda"))
        assert "off" in step_ops_status(torch.device("cuda"))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("sigmoid", [True, False])
@pytest.mark.parametrize("n,d,e,seed", [(5000, 12, 40000, 0), (300, 16, 1, 1), (64, 3, 5000, 2)])
def test_the_neighbour_kernel_equals_pytorchs_operators(sigmoid, n, d, e, seed):
    """Random pairs with repeats (many pairs share a Gaussian: the kernel's atomic adds), one pair, few Gaussians."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    v = (2 * torch.randn(n, d, generator=g, device="cuda")).requires_grad_(True)
    idx = torch.randint(0, n, (2 * e,), generator=g, device="cuda", dtype=torch.int32)
    ref = v.detach().clone().requires_grad_(True)
    got = neighbor_loss_cuda(v, idx, sigmoid)
    want = _NeighborLoss.apply(ref, idx, sigmoid)
    assert got.grad_fn.name() == "_NeighborLossCUDABackward"
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-7)
    (3.0 * got).backward()
    (3.0 * want).backward()
    torch.testing.assert_close(v.grad, ref.grad, rtol=1e-4, atol=1e-9)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("column,width,total", [(3, 12, 32), (0, 5, 9), (7, 1, 8)])
def test_the_neighbour_kernel_reads_and_writes_a_column_block_of_a_wider_table(column, width, total):
    """--feature_layout packed: L_3D on the embedding's columns of the packed parameter. The kernel reads them in
    place and its gradient lands in the table's layout, zero elsewhere: equal to the kernel on a contiguous copy."""
    g = torch.Generator(device="cuda").manual_seed(column)
    table = torch.randn(3000, total, generator=g, device="cuda").requires_grad_(True)
    idx = torch.randint(0, 3000, (2 * 20000,), generator=g, device="cuda", dtype=torch.int32)
    block = table[:, column:column + width]
    ref = block.detach().clone().requires_grad_(True)
    got, want = neighbor_loss_cuda(block, idx, True), neighbor_loss_cuda(ref, idx, True)
    assert got.grad_fn.name() == "_NeighborLossCUDABackward"
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-7)
    (2.0 * got).backward()
    (2.0 * want).backward()
    torch.testing.assert_close(table.grad[:, column:column + width], ref.grad, rtol=1e-4, atol=1e-9)
    outside = torch.ones(total, dtype=torch.bool, device="cuda")
    outside[column:column + width] = False
    assert not table.grad[:, outside].any()


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("column,width,total,with_grad", [(3, 12, 32, True), (0, 12, 12, True), (3, 12, 32, False)])
def test_l3d_into_grad_adds_the_weighted_gradient_to_the_parameters_grad(column, width, total, with_grad):
    """The training step's L_3D on CUDA (``Trainer.l3d_after_backward``): after the backward, the kernel adds
    scale x dL_3D/dv to the .grad the backward left (packed columns or a whole [N, 12] parameter), nothing outside
    the feature's columns, and makes a zeroed .grad where there is none; the loss is the autograd kernel's."""
    g = torch.Generator(device="cuda").manual_seed(column + total)
    table = torch.nn.Parameter(torch.randn(4000, total, generator=g, device="cuda"))
    idx = torch.randint(0, 4000, (2 * 30000,), generator=g, device="cuda", dtype=torch.int32)
    before = torch.zeros(4000, total, device="cuda")  # the render's gradient, of the size of L_3D's
    if with_grad:
        before = 1e-5 * torch.randn(4000, total, generator=g, device="cuda")
    if with_grad:
        table.grad = before.clone()
    ref = table.detach()[:, column:column + width].clone().requires_grad_(True)
    want = neighbor_loss_cuda(ref, idx, True)
    (0.3 * want).backward()
    block = table[:, column:column + width]
    assert neighbor_grad_applies(block, idx)
    got = neighbor_loss_into_grad(block, idx, True, 0.3)
    assert got.grad_fn is None and table.grad is not None
    torch.testing.assert_close(got, want.detach(), rtol=2e-5, atol=1e-7)
    assert ref.grad.abs().max() > 1e-6  # a gradient of its own size, so the comparison below can fail
    torch.testing.assert_close(table.grad[:, column:column + width], before[:, column:column + width] + ref.grad,
                               rtol=1e-4, atol=1e-10)
    outside = torch.ones(total, dtype=torch.bool, device="cuda")
    outside[column:column + width] = False
    assert torch.equal(table.grad[:, outside], before[:, outside])


@pytest.mark.gpu
@needs_gpu
def test_l3d_takes_the_kernel_and_can_be_turned_off(monkeypatch):
    g = torch.Generator(device="cuda").manual_seed(3)
    v = torch.randn(1000, 12, generator=g, device="cuda", requires_grad=True)
    edges = torch.randint(0, 1000, (4000, 2), generator=g, device="cuda", dtype=torch.int32)
    on = neighbor_loss(v, edges, activation=torch.sigmoid)
    assert on.grad_fn.name() == "_NeighborLossCUDABackward"
    monkeypatch.setenv("UNIC_LIFT_STEP_OPS", "0")
    off = neighbor_loss(v, edges, activation=torch.sigmoid)
    assert off.grad_fn.name() == "_NeighborLossBackward"
    assert "off" in step_ops_status(torch.device("cuda"))
    torch.testing.assert_close(on, off, rtol=2e-5, atol=1e-7)


def _triplet_inputs(D, seed, pad=True, device="cuda"):
    from tests.test_seg_losses import seg_image

    seg = seg_image(seed=seed)
    t = prepare_targets(seg, torch.ones_like(seg, dtype=torch.bool), ignore_id=0)
    table, boundary = t.anchor_table, t.boundary
    if pad:  # the stage's buffers hold the scene's largest view: rows past the view's are never drawn
        table = torch.cat([table, torch.full((40, table.shape[1]), 10 ** 6, dtype=torch.int32)])
        boundary = torch.cat([boundary, torch.full((9,), -5, dtype=torch.int64)])
    g = torch.Generator().manual_seed(seed)
    P = seg.numel()
    e = torch.sigmoid(2 * torch.randn(P, D, generator=g))
    scalars = torch.tensor([float(t.num_segments), float(t.num_kept), float(t.num_anchors), 0.0])
    rand = torch.rand(3000, table.shape[1] - 2, generator=g)
    return [x.to(device) for x in (e, table, boundary, scalars, rand)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("mode", ["normalized", "identity", "fixed", "free"])
@pytest.mark.parametrize("D,margin,seed", [(12, 1.0, 0), (4, 0.3, 1), (15, 1.0, 2)])
def test_the_triplet_kernel_equals_the_stages_operators(mode, D, margin, seed):
    """The same triplets from the same random numbers, the same hinge; dL/de and dL/dW as PyTorch's graph gives."""
    e, table, boundary, scalars, rand = _triplet_inputs(D, seed)
    head = TripletHead(D, mode=mode, seed=seed).cuda()
    if head.weight is not None and mode != "fixed":
        with torch.no_grad():
            head.weight.add_(0.3 * torch.randn(D, D, generator=torch.Generator().manual_seed(seed)).cuda())
    e1, e2 = e.clone().requires_grad_(True), e.clone().requires_grad_(True)
    got = triplet_term_cuda(e1, head.weight_matrix(), table, boundary, scalars, rand, margin)
    assert got is not None and got.grad_fn.name() == "_TripletTermCUDABackward"
    got.backward()
    grad_w_got = None if mode in ("identity", "fixed") else head.weight.grad.clone()
    if grad_w_got is not None:
        head.weight.grad = None
    trip = static_sample_triplets(table, boundary, scalars[2], rand)
    z = head(gather_rows(e2, trip.reshape(-1))).reshape(-1, 3, D)
    want = triplet_hinge(z, margin) * (scalars[2] > 0).float()
    want.backward()
    assert 0.05 < float(want) and 0 < (e2.grad != 0).sum()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-4, atol=1e-7)
    if grad_w_got is not None:
        torch.testing.assert_close(grad_w_got, head.weight.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@needs_gpu
def test_the_triplet_kernel_gives_zero_for_a_view_without_anchors_and_runs_in_the_graphed_stage():
    e, table, boundary, scalars, rand = _triplet_inputs(12, 3)
    scalars[2] = 0.0
    x = e.clone().requires_grad_(True)
    head = TripletHead(12).cuda()
    out = triplet_term_cuda(x, head.weight_matrix(), table, boundary, scalars, rand, 1.0)
    out.backward()
    assert float(out) == 0.0 and not x.grad.any() and not head.weight.grad.any()
    from tests.test_loss_stage import _objective, _view
    from segmentation.stage import LossStages

    obj = _objective()
    obj.device = torch.device("cuda")
    obj.head = obj.head.cuda()
    obj.generator = torch.Generator(device="cuda").manual_seed(0)
    views = [_view(s, n) for s, n in ((0, 6), (1, 3))]
    for v in views:
        obj.prepare(v, device="cuda")
        v.image = v.image.cuda()
    stages = LossStages(views, lambda_dssim=0.2, objective=obj, device=torch.device("cuda"), triplets=64)
    for step in range(6):  # past the graph's warm-up and capture
        v = views[step % 2]
        H, W = v.instance.shape
        rgb = torch.rand(H, W, 3, device="cuda", requires_grad=True)
        feats = {"embedding": torch.randn(H, W, 4, device="cuda", requires_grad=True),
                 "semantic": torch.randn(H, W, 4, device="cuda")}
        out = stages(5, v, rgb, feats, weights={"render": 1.0, "cluster": 1.0, "triplet": 1.0, "semantic": 1.0})
        out.total.backward()
        assert torch.isfinite(out["triplet"]) and feats["embedding"].grad.abs().sum() > 0
    assert stages.graphed  # the stage was captured with the kernel inside


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("push,scale", [("gauss", 0.25), ("sqdist", 1.0)])
@pytest.mark.parametrize("D,pad,seed", [(12, 0, 0), (5, 7, 1), (16, 30, 2)])
def test_the_cluster_kernels_equal_the_stages_operators(push, scale, D, pad, seed):
    """Padded to K_max = K + pad, a view with ignored pixels and more than one sum chunk: the same value and dL/de as
    _StaticClusterLoss, the operators it replaces."""
    from tests.test_loss_stage import _padded, _targets

    seg, valid, t = _targets(seed)
    P = seg.numel()
    g = torch.Generator().manual_seed(seed)
    reps = -(-5000 // P)  # more pixels than one SUM_CHUNK: several private row blocks
    labels, counts, k, kept = _padded(t, t.num_segments + pad)
    labels = labels.repeat(reps).to(torch.int32).cuda()
    counts = (counts * reps).float().cuda()
    counts[-1] = 1.0
    k, kept = k.float().cuda(), (kept * reps).float().cuda()
    e = torch.sigmoid(2 * torch.randn(P * reps, D, generator=g)).cuda()
    e1, e2 = e.clone().requires_grad_(True), e.clone().requires_grad_(True)
    got = static_cluster_total(e1, labels, counts, k, kept, push=push, push_scale=scale)
    assert got.grad_fn.name() == "_ClusterTermCUDABackward"
    want = _StaticClusterLoss.apply(e2, labels, counts, k, kept, push, scale)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (2.5 * got).backward()
    (2.5 * want).backward()
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-4, atol=1e-8)
    assert e2.grad.abs().sum() > 0


@pytest.mark.gpu
@needs_gpu
def test_the_cluster_kernels_on_degenerate_views():
    """One segment: the pull only; no kept pixel: 0 with a zero gradient (as the operators give)."""
    e = torch.rand(6000, 4, device="cuda", requires_grad=True)
    one = torch.zeros(6000, dtype=torch.int32, device="cuda")
    counts = torch.tensor([6000.0, 1.0, 1.0, 1.0, 1.0], device="cuda")
    k, kept = torch.tensor(1.0, device="cuda"), torch.tensor(6000.0, device="cuda")
    v = static_cluster_total(e, one, counts, k, kept)
    ref = _StaticClusterLoss.apply(e, one.long(), counts, k, kept, "gauss", 0.25)
    torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-7)
    none = torch.full((6000,), 4, dtype=torch.int32, device="cuda")
    z = static_cluster_total(e, none, torch.ones(5, device="cuda"), torch.tensor(0.0, device="cuda"),
                             torch.tensor(0.0, device="cuda"))
    z.backward()
    assert float(z) == 0.0 and e.grad is not None and not e.grad.any()
