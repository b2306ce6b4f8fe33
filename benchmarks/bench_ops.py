"""Times the small tensor operations of a UniC-Lift step at the bench scene's sizes; prints Markdown.

    python benchmarks/bench_ops.py [--n 528000] [--pixels 172800] [--edges 200000] [--out ops.md]

Two families, each against the alternatives the training step could use (issue 10, RESULTS.md 21a):

* **row gathers** of 12-float rows: every pixel's segment mean (``--pixels`` rows of a small table) and
  L_3D's neighbour pairs (2 x ``--edges`` rows of an [N, 12] table): ``index_select``, advanced indexing,
  and ``segmentation.losses.gather_rows`` (element by element through the flat view);
* **packing the channels** blended in one rasterisation, rgb [N, 3] + sigmoid(embedding) [N, 12] +
  semantic logits [N, 17] -> [N, 32], forward and backward: ``torch.cat`` (today), slice assignment into
  one buffer, and the packing done in one autograd function;
* **the feature layouts** (``--feature_layout``): the colour input built by ``torch.cat`` or written into the packed
  parameter's slot, with the backward into the parameters' ``.grad`` (and L_3D's gradient accumulated there);
* **the step kernels** (``gaussian_renderer/step_ops.py``, CUDA only): L_3D, the triplet term and the cluster
  term, forward and backward, with ``UNIC_LIFT_STEP_OPS`` on and off (after checking that both
  give the same values), on a Voronoi mask of ``--segments`` regions at ``--pixels``.

Each row is the median of ``--repeats`` timings with CUDA events after ``--warmup`` calls. On the CPU
the numbers only check that every variant runs and agrees (the test suite does so).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segmentation.losses import _gather_rows_flat  # noqa: E402


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median milliseconds of ``fn()`` (CUDA events on a GPU, perf_counter on the CPU)."""
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class _Pack(torch.autograd.Function):
    """[rgb | sigmoid(emb) | sem] into one [N, 3 + De + Ds] buffer, written by slices; the backward
    returns contiguous gradients (the sigmoid's derivative applied), with no concatenation."""

    @staticmethod
    def forward(ctx, rgb, emb, sem):
        n, a, b = rgb.shape[0], rgb.shape[1], emb.shape[1]
        out = rgb.new_empty(n, a + b + sem.shape[1])
        out[:, :a] = rgb
        out[:, a:a + b] = torch.sigmoid(emb)
        out[:, a + b:] = sem
        ctx.save_for_backward(out)
        ctx.widths = (a, b)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        a, b = ctx.widths
        s = out[:, a:a + b]
        return grad[:, :a].contiguous(), grad[:, a:a + b] * s * (1.0 - s), grad[:, a + b:].contiguous()


def pack_variants() -> Dict[str, Callable]:
    def cat(rgb, emb, sem):
        return torch.cat([rgb, torch.sigmoid(emb), sem], dim=-1)

    def slices(rgb, emb, sem):
        out = rgb.new_empty(rgb.shape[0], rgb.shape[1] + emb.shape[1] + sem.shape[1])
        a, b = rgb.shape[1], emb.shape[1]
        out[:, :a] = rgb
        out[:, a:a + b] = torch.sigmoid(emb)
        out[:, a + b:] = sem
        return out

    return {"torch.cat (today)": cat, "slice assignment": slices, "one autograd function": _Pack.apply}


def bench(args) -> List[str]:
    device = torch.device(args.device)
    g = torch.Generator(device).manual_seed(0)
    rows: List[str] = ["| operation | variant | ms |", "|---|---|---:|"]

    def add(op: str, variant: str, fn):
        rows.append(f"| {op} | {variant} | {time_ms(fn, device, args.repeats, args.warmup):.3f} |")

    # row gathers
    n, d = args.n, 12
    table = torch.randn(n, d, device=device, generator=g)
    pairs = torch.randint(0, n, (2 * args.edges,), device=device, generator=g, dtype=torch.int32)
    means = torch.randn(args.segments + 1, d, device=device, generator=g)
    labels = torch.randint(0, args.segments + 1, (args.pixels,), device=device, generator=g, dtype=torch.int32)
    for op, src, idx in ((f"L_3D pairs: {2 * args.edges} rows of [{n}, 12]", table, pairs),
                         (f"segment means: {args.pixels} rows of [{args.segments + 1}, 12]", means, labels)):
        ref = src.index_select(0, idx)
        assert torch.equal(_gather_rows_flat(src, idx), ref) and torch.equal(src[idx.long()], ref)
        add(op, "index_select", lambda: src.index_select(0, idx))
        add(op, "advanced indexing", lambda: src[idx.long()])
        add(op, "flat view (gather_rows)", lambda: _gather_rows_flat(src, idx))

    # channel packing, forward and backward
    rgb = torch.rand(n, 3, device=device, generator=g).requires_grad_(True)
    emb = torch.randn(n, 12, device=device, generator=g).requires_grad_(True)
    sem = torch.randn(n, 17, device=device, generator=g).requires_grad_(True)
    w = torch.randn(n, 32, device=device, generator=g)
    variants = pack_variants()
    ref = variants["torch.cat (today)"](rgb, emb, sem)
    ref_grads = torch.autograd.grad(ref, (rgb, emb, sem), w)
    for name, fn in variants.items():
        out = fn(rgb, emb, sem)
        grads = torch.autograd.grad(out, (rgb, emb, sem), w)
        assert torch.equal(out, ref) and all(torch.allclose(a, b) for a, b in zip(grads, ref_grads)), name
        add(f"pack [N, 3 + 12 + 17], N = {n}: forward", name, lambda: fn(rgb, emb, sem))
        add(f"pack [N, 3 + 12 + 17], N = {n}: forward + backward", name,
            lambda: torch.autograd.grad(fn(rgb, emb, sem), (rgb, emb, sem), w))
    for size in args.layout_n:
        layout_rows(size, args.edges, device, g, add)
    if device.type == "cuda":
        rows += step_kernel_rows(args, device, table, pairs, add)
    return rows


def layout_rows(n: int, edges: int, device: torch.device, g: torch.Generator, add) -> None:
    """--feature_layout separate against packed as the step runs them: the colour input [N, 3 + 12 + 17] built from
    the SH colour and the feature parameters, a backward of a given output gradient into the parameters' ``.grad``
    (where the separate layout's strided gradient slices are copied), then, as in the step after densification, L_3D
    on the embedding accumulated into the same ``.grad``. Checks that both layouts give the same gradients first."""
    from gaussian_renderer import _ColourIntoSlot
    from segmentation.losses import neighbor_loss

    sh = torch.rand(n, 3, device=device, generator=g).requires_grad_(True)  # stands in for the SH coefficients
    emb = torch.randn(n, 12, device=device, generator=g).requires_grad_(True)
    sem = torch.randn(n, 17, device=device, generator=g).requires_grad_(True)
    packed = torch.cat([torch.zeros(n, 3, device=device), emb.detach(), sem.detach()], 1).requires_grad_(True)
    w = torch.randn(n, 32, device=device, generator=g)
    pairs = torch.randint(0, n, (edges, 2), device=device, generator=g,
                          dtype=torch.int32 if device.type == "cuda" else torch.int64)

    def separate(l3d: bool):
        colors = torch.cat([sh * 1.0, emb, sem], dim=-1)
        loss = (colors * w).sum()
        if l3d:
            loss = loss + neighbor_loss(emb, pairs, activation=torch.sigmoid)
        loss.backward()

    def packed_step(l3d: bool):
        colors = _ColourIntoSlot.apply(sh * 1.0, packed)
        loss = (colors * w).sum()
        if l3d:
            loss = loss + neighbor_loss(packed[:, 3:15], pairs, activation=torch.sigmoid)
        loss.backward()

    def clear():
        for t in (sh, emb, sem, packed):
            t.grad = None

    for l3d in (False, True):
        clear()
        separate(l3d)
        want = (sh.grad.clone(), emb.grad.clone(), sem.grad.clone())
        clear()
        packed_step(l3d)
        got = (sh.grad, packed.grad[:, 3:15], packed.grad[:, 15:])
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want)), "layouts disagree"
        op = f"colour input + backward into .grad{' + L_3D' if l3d else ''}, N = {n}"
        add(op, "separate (cat, strided gradient copies)", lambda: (clear(), separate(l3d)))
        add(op, "packed (colour into the slot)", lambda: (clear(), packed_step(l3d)))


def _voronoi_targets(args, device):
    """A view's prepared targets: ``--segments`` Voronoi regions on a 4:3 image of ``--pixels`` pixels."""
    from segmentation.targets import prepare_targets

    H = int(round((args.pixels * 3 / 4) ** 0.5))
    W = args.pixels // H
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(args.segments, 2, generator=g) * torch.tensor([H, W])
    yx = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), -1).float()
    seg = torch.cdist(yx.reshape(-1, 2), centres).argmin(1).reshape(H, W) + 1
    return prepare_targets(seg, torch.ones(H, W, dtype=torch.bool), ignore_id=0, device=device)


def step_kernel_rows(args, device, table, pairs, add) -> List[str]:
    """The step kernels against PyTorch's operators, forward + backward (``add`` appends the timed rows)."""
    from gaussian_renderer import step_ops
    from segmentation.losses import TripletHead, gather_rows, neighbor_loss, triplet_hinge
    from segmentation.targets import static_cluster_total, static_sample_triplets

    before = os.environ.get("UNIC_LIFT_STEP_OPS")
    os.environ["UNIC_LIFT_STEP_OPS"] = "1"
    if not step_ops.step_ops_available(device):
        return [f"| step kernels | - | {step_ops.step_ops_status(device)} |"]
    t = _voronoi_targets(args, device)
    P, D, T = t.labels.shape[0], 12, 3000
    g = torch.Generator(device).manual_seed(2)
    e = torch.sigmoid(torch.randn(P, D, device=device, generator=g)).requires_grad_(True)
    head = TripletHead(D).to(device)
    scalars = torch.tensor([float(t.num_segments), float(t.num_kept), float(t.num_anchors), 0.0], device=device)
    rand = torch.rand(T, t.anchor_table.shape[1] - 2, device=device, generator=g)
    kmax = t.num_segments
    labels = torch.where(t.labels < kmax, t.labels, kmax).to(torch.int32)
    counts = torch.ones(kmax + 1, device=device)
    counts[:kmax] = t.counts[:kmax].float()
    v = table.clone().requires_grad_(True)

    def triplet():
        W = head.weight_matrix()
        fast = step_ops.triplet_term_cuda(e, W, t.anchor_table, t.boundary, scalars, rand, 1.0)
        if fast is not None:
            return fast
        trip = static_sample_triplets(t.anchor_table, t.boundary, scalars[2], rand)
        return triplet_hinge(head(gather_rows(e, trip.reshape(-1))).reshape(-1, 3, D)) * (scalars[2] > 0).float()

    cases = {
        f"L_3D, {pairs.numel() // 2} pairs of [{table.shape[0]}, 12]": (
            lambda: neighbor_loss(v, pairs.view(-1, 2), activation=torch.sigmoid), (v,), None),
        f"triplet term, {T} triplets, {t.num_anchors} anchors": (triplet, (e, head.weight), None),
        f"cluster term, {P} pixels, K = {kmax}": (
            lambda: static_cluster_total(e, labels, counts, scalars[0], scalars[1]), (e,), None),
    }
    try:
        for op, (fn, inputs, grad_out) in cases.items():
            results = {}
            for flag, name in (("0", "operators"), ("1", "step kernel")):
                os.environ["UNIC_LIFT_STEP_OPS"] = flag
                out = fn()
                results[name] = (out.detach(), torch.autograd.grad(out, inputs, grad_out))
            (a, ga), (b, gb) = results["operators"], results["step kernel"]
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), op
            assert all(torch.allclose(x, y, rtol=1e-3, atol=1e-6) for x, y in zip(ga, gb)), op
            for flag, name in (("0", "operators"), ("1", "step kernel")):
                os.environ["UNIC_LIFT_STEP_OPS"] = flag
                add(f"{op}: forward + backward", name, lambda: torch.autograd.grad(fn(), inputs, grad_out))
    finally:
        if before is None:
            os.environ.pop("UNIC_LIFT_STEP_OPS", None)
        else:
            os.environ["UNIC_LIFT_STEP_OPS"] = before
    return []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=528_000, help="Gaussians (the bench scene after densification)")
    p.add_argument("--pixels", type=int, default=480 * 360)
    p.add_argument("--segments", type=int, default=40)
    p.add_argument("--edges", type=int, default=200_000, help="L_3D pairs per step (--l3d_max_edges)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layout_n", type=int, nargs="*", default=[528_000, 1_240_000],
                   help="Gaussians for the feature layouts' rows (28a's whole runs end at 1.24 M)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the table here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = "\n".join([f"device: {name}; torch {torch.__version__}; median of {args.repeats}", "", *bench(args)])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
