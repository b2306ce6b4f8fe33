"""The per-view losses of one training step (photometric, cluster, triplet, semantic) as ONE module
with static shapes, replayed as ONE CUDA graph on the GPU.

Why: after the one-node losses, a UniC-Lift step was still bound by the host: Python and the
autograd engine took about 14.7 ms to issue what the GPU ran in 8 ms (benchmarks/RESULTS.md,
section 9). The losses of a view read only its render and its prepared masks, so they can be
captured once and replayed for every view, if every view has the same shapes. So the view's targets
are copied into buffers padded to the largest view of the scene (segments K_max, boundary pixels
B_max, anchor candidates M_max), the sizes that vary per view travel as tensors, and the triplets
are drawn with replacement from random numbers drawn before the replay
(``targets.static_sample_triplets``). On the CPU the same module runs eagerly: one code path, one
set of numbers.

A training step only ever needs the weighted sum of the terms and its gradient, so the graph
(``TotalGraph``) computes both in one replay: the terms, sum_k w_k L_k, and that sum's gradient with
respect to the render and the stage's parameters (torch's ``make_graphed_callables``, used until
RESULTS.md 32, replays a forward and a backward graph: two launches and their Python per step on a
step bound by the host). The backward of the returned total hands those gradients out (with
--loss_graph direct the trainer hands them to its backward itself).

The 3D neighbour loss reads the Gaussians, whose number changes while densifying: by default it stays
outside (``SegmentationObjective.neighbor_term``); with --l3d_grad graph it becomes a term of the
stage once densification has stopped, the embedding and the step's pairs two more inputs.
"""
from __future__ import annotations

import math
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from gaussian_renderer.step_ops import step_ops_available, triplet_term_cuda
from segmentation.losses import gather_rows, neighbor_loss, semantic_loss, triplet_hinge
from segmentation.targets import static_cluster_total, static_sample_triplets
from utils.loss_utils import photometric_loss

MAX_GRAPHS = 8  # distinct (size, terms) keys graphed; more (mixed image sizes) run eagerly
GRAPH_WARMUP = 3


class StageBuffers:
    """The static inputs of one image size: a view's targets are copied in before each step.
    Scalars: [K, kept pixels, anchor candidates M, pixels with a class]. ``pixels``: the per-pixel
    targets' length, the feature render's pixel count (below H x W with --seg_scale).

    The targets are blocks of ONE byte buffer (``blob``), and each view on the stage's device gets a blob of the same
    layout holding its image and targets (``pack``; the view's own tensors then become blocks of it, so the padding
    is all the memory it adds): loading a view is one copy, not eight (a step bound by the host pays each op)."""

    def __init__(self, height: int, width: int, pixels: int, kmax: int, bmax: int, mmax: int, window: int,
                 triplets: int, device: torch.device, semantic_dtype: torch.dtype = torch.int64,
                 blob_fields: Optional[Sequence[str]] = None):
        P = pixels
        self.kmax = kmax
        specs = (("image", torch.uint8, (height, width, 3), 0), ("labels", torch.int32, (P,), kmax),
                 ("counts", torch.float32, (kmax + 1,), 1), ("boundary", torch.int64, (max(bmax, 1),), 0),
                 ("table", torch.int32, (max(mmax, 1), 4 + window), 0), ("scalars", torch.float32, (4,), 0),
                 ("semantic", semantic_dtype, (P,), -1), ("confidence", torch.float32, (P,), 1))
        # the blob holds the image, the scalars and ``blob_fields`` (default: all; a field no view of the scene has
        # stays a tensor of its own, so that no view's blob carries it)
        wanted = {"image", "scalars", *(blob_fields if blob_fields is not None else (n for n, *_ in specs))}
        self.fields: Dict[str, tuple] = {}  # name -> (first byte, bytes, dtype, shape, fill)
        at = 0
        for name, dtype, shape, fill in specs:
            if name not in wanted:
                setattr(self, name, torch.full(shape, fill, dtype=dtype, device=device))
                continue
            at = -(-at // 16) * 16  # aligned for any dtype's view of the bytes
            size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
            self.fields[name] = (at, size, dtype, shape, fill)
            at += size
        self.blob = torch.empty(at, dtype=torch.uint8, device=device)
        for name, block in self.blocks(self.blob).items():
            block.fill_(self.fields[name][4])
            setattr(self, name, block)
        self.rand = torch.zeros(triplets, 2 + window, device=device)

    def blocks(self, blob: Tensor) -> Dict[str, Tensor]:
        """name -> the typed block of ``blob`` (a buffer of this layout)."""
        return {name: blob[first:first + size].view(dtype).view(shape)
                for name, (first, size, dtype, shape, _) in self.fields.items()}

    def pack(self, view, targets) -> Tensor:
        """A blob of this layout holding ``view``'s image and ``targets`` (which live on the stage's device); the
        view's image and the targets' tensors of the same type become its blocks (their old storage is freed)."""
        blob = self.blob.clone()  # the fills: padding, and what the view lacks
        parts = self.blocks(blob)
        parts["image"].copy_(view.image)
        if view.image.dtype == torch.uint8:
            view.image = parts["image"]
        t = targets.instance if targets is not None else None
        if targets is not None:
            parts["scalars"].copy_(_view_scalars(targets, blob.device))
        if t is not None and "labels" in parts:
            parts["labels"].copy_(t.labels)
            parts["counts"].copy_(_padded_counts(t, self.kmax, blob.device))
            parts["boundary"][:t.boundary.shape[0]].copy_(t.boundary)
            parts["table"][:t.num_anchors].copy_(t.anchor_table)
            if t.labels.dtype == torch.int32:
                t.labels = parts["labels"]
            if t.boundary.dtype == torch.int64:
                t.boundary = parts["boundary"][:t.boundary.shape[0]]
            if t.anchor_table.dtype == torch.int32:
                t.anchor_table = parts["table"][:t.num_anchors]
        if targets is not None and targets.semantic is not None and "semantic" in parts:
            parts["semantic"].copy_(targets.semantic)
            if targets.semantic.dtype == parts["semantic"].dtype:
                targets.semantic = parts["semantic"]
        if targets is not None and targets.confidence is not None and "confidence" in parts:
            parts["confidence"].copy_(targets.confidence)
            targets.confidence = parts["confidence"]
        return blob

    def load(self, view, targets, *, instance: bool, triplets: bool, semantic: bool, confidence: bool,
             generator: Optional[torch.Generator], blob: Optional[Tensor] = None) -> None:
        """Copies ``view``'s image and the parts of its prepared ``targets`` the step uses (a few copies,
        no host sync), or with ``blob`` (the view's ``pack``), the whole of it in one copy."""
        if triplets:
            self.rand.uniform_(generator=generator)
        if blob is not None:
            self.blob.copy_(blob, non_blocking=True)
            return
        self.image.copy_(view.image, non_blocking=True)
        t = targets.instance if targets is not None else None
        if instance or semantic:
            self.scalars.copy_(_view_scalars(targets, self.scalars.device), non_blocking=True)
        if instance:
            self.labels.copy_(t.labels, non_blocking=True)  # the view's ignored label K becomes K_max inside
            self.counts.copy_(_padded_counts(t, self.kmax, self.counts.device), non_blocking=True)
        if triplets:
            self.boundary[:t.boundary.shape[0]].copy_(t.boundary, non_blocking=True)
            if t.num_anchors:
                self.table[:t.num_anchors].copy_(t.anchor_table, non_blocking=True)
        if semantic:
            self.semantic.copy_(targets.semantic, non_blocking=True)
            if confidence:
                self.confidence.copy_(targets.confidence, non_blocking=True)


def _target_pixels(targets, default: int) -> int:
    """The per-pixel length of a view's prepared targets (``default`` when it has none)."""
    if targets is None:
        return default
    if getattr(targets, "instance", None) is not None:
        return int(targets.instance.labels.shape[0])
    if getattr(targets, "semantic", None) is not None:
        return int(targets.semantic.shape[0])
    return default


def _view_scalars(targets, device) -> Tensor:
    """[K, kept pixels, M, pixels with a class] of a view, as floats, made once per view."""
    cached = getattr(targets, "_stage_scalars", None)
    if cached is None or cached.device != device:
        t = targets.instance
        vals = [t.num_segments, t.num_kept, t.num_anchors] if t is not None else [0, 0, 0]
        cached = torch.tensor(vals + [targets.semantic_valid or 0], dtype=torch.float32, device=device)
        targets._stage_scalars = cached
    return cached


def _padded_counts(t, kmax: int, device) -> Tensor:
    """[K_max + 1] segment sizes of a view: its K, then ones (padding and the ignored row), made once."""
    cached = getattr(t, "_stage_counts", None)
    if cached is None or cached.shape[0] != kmax + 1 or cached.device != device:
        cached = torch.ones(kmax + 1, device=device)
        cached[:t.num_segments] = t.counts[:t.num_segments].to(device)
        t._stage_counts = cached
    return cached


class LossStage(torch.nn.Module):
    """One view's 2D loss terms from its render and the static buffers. ``terms``: which of
    render | cluster | triplet | semantic; ``inputs`` names the tensors ``forward`` takes, in order: the rendered
    ones only (rgb, embedding, semantic_feature), or ONE when ``packed`` says where each lies in the channels of the
    render's image ([(name, start, width)]: a fused render). The targets are read from ``buffers`` (a
    ``StageBuffers``, loaded in place before each call), so a CUDA graph of the stage takes one or three inputs,
    not twelve, and the render's image needs no split before it (and no concatenation of gradients after)."""

    def __init__(self, terms: Sequence[str], *, lambda_dssim: float, cfg=None, head=None, decoder=None,
                 num_classes: Optional[int] = None, code_space=None, confidence: bool = False,
                 buffers: Optional[StageBuffers] = None, packed: Optional[tuple] = None):
        super().__init__()
        self.terms = tuple(terms)
        self.lambda_dssim = float(lambda_dssim)
        self.cfg = cfg
        self.head = head if "triplet" in self.terms else None
        self.decoder = decoder if "semantic" in self.terms else None
        self.num_classes = num_classes
        self.code_space = code_space
        self.stage_buffers = buffers  # not self.buffers: that is nn.Module.buffers(), which torch's CUDA graphs call
        self.confidence = confidence
        self.rendered = rendered_inputs(self.terms)
        self.packed = packed
        # L_3D (--l3d_grad graph): the Gaussians' embedding and this step's pairs follow the rendered inputs
        self.inputs = (("render",) if packed is not None else self.rendered) + \
            (("gaussian_embedding", "pairs") if "3d" in self.terms else ())

    def forward(self, *tensors: Tensor) -> Tuple[Tensor, ...]:
        x = dict(zip(self.inputs, tensors))
        if self.packed is not None:  # the render's channels: one split (its backward, one concatenation)
            # (``_channel_layout`` made the blocks tile the image's channels in order)
            parts = torch.split(x.pop("render"), [width for _, _, width in self.packed], dim=-1)
            x.update({name: part for (name, _, _), part in zip(self.packed, parts)})
        b = self.stage_buffers
        x.update(image=b.image, labels=b.labels, scalars=b.scalars, counts=b.counts, boundary=b.boundary,
                 table=b.table, rand=b.rand, semantic=b.semantic)
        if self.confidence:
            x["confidence"] = b.confidence
        gt = x["image"].to(x["rgb"].dtype) / 255.0
        out = {"render": photometric_loss(x["rgb"], gt, self.lambda_dssim)}
        cfg = self.cfg
        if "embedding" in self.rendered:
            emb = self.code_space(x["embedding"])
            e = emb.reshape(-1, emb.shape[-1])  # [P, d]
            k = x["scalars"][0]
            if "cluster" in self.terms:
                kmax = x["counts"].shape[0] - 1
                labels = torch.where(x["labels"] < k, x["labels"], kmax)  # the view's ignored label -> K_max
                out["cluster"] = static_cluster_total(e, labels, x["counts"], k, x["scalars"][1],
                                                      push=cfg.push, push_scale=cfg.push_scale)
            if "triplet" in self.terms and e.is_cuda and step_ops_available(e.device):
                fast = triplet_term_cuda(e, self.head.weight_matrix(), x["table"], x["boundary"], x["scalars"],
                                         x["rand"], cfg.triplet_margin)  # one kernel each way (step_ops.py)
                if fast is not None:
                    out["triplet"] = fast
            if "triplet" in self.terms and "triplet" not in out:
                m = x["scalars"][2]
                trip = static_sample_triplets(x["table"], x["boundary"], m, x["rand"])  # [T, 3]
                z = gather_rows(e, trip.reshape(-1))  # W acts per pixel: the 3T sampled ones only
                z = self.head(z).reshape(-1, 3, e.shape[-1])
                out["triplet"] = triplet_hinge(z, cfg.triplet_margin) * (m > 0).to(e.dtype)
        if "3d" in self.terms:  # Eq. 6 on the Gaussians, as SegmentationObjective.neighbor_term computes it
            out["3d"] = neighbor_loss(x["gaussian_embedding"], x["pairs"], activation=torch.sigmoid)
        if "semantic" in self.terms:
            s = x["semantic_feature"]
            logits = (self.decoder(s) if self.decoder is not None else s).reshape(-1, self.num_classes)
            out["semantic"] = semantic_loss(logits, x["semantic"], x.get("confidence"), ignore_index=-1,
                                            n_valid=x["scalars"][3])
        return tuple(out[t] for t in self.terms)


def rendered_inputs(terms: Sequence[str]) -> Tuple[str, ...]:
    """The rendered tensors the stage of ``terms`` reads: rgb, then the embedding (cluster, triplet) and the
    semantic feature (semantic)."""
    names = ["rgb"]
    if "cluster" in terms or "triplet" in terms:
        names.append("embedding")
    if "semantic" in terms:
        names.append("semantic_feature")
    return tuple(names)


def _channel_layout(names: Sequence[str], image: Optional[Tensor], layout: Optional[dict]) -> Optional[tuple]:
    """``((input, first, width), ...)`` covering ALL of ``image``'s channels in order, where the stage's rendered
    inputs ``names`` (rgb, embedding, semantic_feature: the layout's rgb, embedding, semantic) are among them; else
    None (the inputs are then passed one by one). Channels the stage does not read get names of their own."""
    if image is None or not layout:
        return None
    source = {"rgb": "rgb", "embedding": "embedding", "semantic_feature": "semantic"}
    if any(source[n] not in layout for n in names):
        return None
    wanted = {source[n]: n for n in names}
    blocks = sorted((first, width, wanted.get(name, f"unused:{name}")) for name, (first, width) in layout.items())
    out, at = [], 0
    for first, width, name in blocks:
        if first != at:
            return None
        out.append((name, first, width))
        at = first + width
    return tuple(out) if at == image.shape[-1] else None


class StepTerms(dict):
    """The named terms of one step's stage. ``total``: sum_k weights[k] * term_k with its gradient, where one CUDA
    graph replay computed the terms (they are then detached: the gradient flows through ``total`` alone); None where
    the stage ran eagerly (the terms carry their own autograd graph; the caller weights them). ``covered``: the
    terms ``total`` holds (a caller may add more, e.g. L_3D outside the stage). ``grads`` (``direct`` calls):
    ``total`` is then detached, and these (tensor, gradient) pairs are what its backward would have handed out (the
    caller's ``torch.autograd.backward(tensors, gradients)``)."""

    def __init__(self, terms: Dict[str, Tensor], total: Optional[Tensor] = None,
                 grads: Optional[List[Tuple[Tensor, Tensor]]] = None):
        super().__init__(terms)
        self.total = total
        self.covered = frozenset(terms) if total is not None else frozenset()  # the terms ``total`` holds
        self.grads: Optional[List[Tuple[Tensor, Tensor]]] = grads


class _ReplayedTotal(torch.autograd.Function):
    """The weighted total of a ``TotalGraph`` replay as an autograd node: its backward hands out the gradients the
    same replay computed, times the incoming gradient (1 in a training step: one multiplication per input)."""

    @staticmethod
    def forward(ctx, graph: "TotalGraph", *inputs: Tensor) -> Tensor:
        ctx.graph = graph
        return graph.total.detach()  # an alias of the static output, as make_graphed_callables returns its outputs

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (None, *(None if g is None else g * grad for g in ctx.graph.grads))


class TotalGraph:
    """ONE CUDA graph of ``stage``: its terms, their weighted sum (``weights``, one per term) and that sum's
    gradient with respect to the rendered inputs that require one and the stage's trainable parameters. Captured
    at construction from ``args`` (the inputs get static copies, into which each call copies); a call replays it
    and returns (terms, total). Off CUDA nothing is captured and each call runs the same steps eagerly (the CPU
    tests' twin of the replay)."""

    def __init__(self, stage: torch.nn.Module, args: Tuple[Tensor, ...], weights: Sequence[float]):
        self.stage = stage
        self.inputs = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
        self.params = tuple(p for p in stage.parameters() if p.requires_grad)
        self.wrt = tuple(x for x in self.inputs if x.requires_grad) + self.params
        self.grad_mask = tuple(a.requires_grad for a in args)
        device = self.inputs[0].device
        self.weights = torch.tensor([float(w) for w in weights], device=device, dtype=self.inputs[0].dtype)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        if device.type != "cuda":
            return
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # the warm-up, as torch's make_graphed_callables does it
            for _ in range(GRAPH_WARMUP):
                self._run()
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            terms, total, grads = self._run()
        self._keep(terms, total, grads)

    def _keep(self, terms, total, grads) -> None:
        self.terms = tuple(t.detach() for t in terms)
        self.total = total.detach()
        self.grads = tuple(None if g is None else g.detach() for g in grads)

    def _run(self):
        terms = self.stage(*self.inputs)
        total = torch.dot(torch.stack(terms), self.weights) if len(terms) > 1 else self.weights[0] * terms[0]
        grads = torch.autograd.grad(total, self.wrt, allow_unused=True) if self.wrt else ()
        return terms, total, grads

    def __call__(self, *args: Tensor, direct: bool = False):
        """-> (terms, total, None), or with ``direct`` (terms, total detached, [(input or parameter, gradient)])."""
        with torch.no_grad():
            for static, a in zip(self.inputs, args):
                static.copy_(a)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._keep(*self._run())
        needing = [a for a, m in zip(args, self.grad_mask) if m]
        if direct:
            return self.terms, self.total, [(x, g) for x, g in zip((*needing, *self.params), self.grads)
                                            if g is not None]
        total = _ReplayedTotal.apply(self, *needing, *self.params) if self.wrt else self.total.detach()
        return self.terms, total, None


class LossStages:
    """Builds and runs the ``LossStage`` of each step: buffers per image size, one module per set of
    terms, graphed on CUDA (``graphs``) after its first use. ``__call__`` returns the named terms."""

    def __init__(self, views: List, *, lambda_dssim: float, objective=None, device: torch.device,
                 graphs: bool = True, triplets: int = 3000):
        # "cuda" -> "cuda:0": the device of the tensors made here, so that the targets' device compares equal
        self.objective, self.lambda_dssim = objective, lambda_dssim
        self.device = torch.empty(0, device=device).device
        self.graphs = bool(graphs) and self.device.type == "cuda"
        self.failed: Optional[str] = None  # a capture that failed: every stage runs eagerly from then on
        self.triplets = triplets
        self.sizes: Dict[Tuple[int, int, int], Tuple[int, int, int, int]] = {}
        for view in views:  # the scene's largest targets per image size (and feature pixel count)
            h, w = view.image.shape[:2]
            targets = getattr(view, "targets", None)
            t = getattr(targets, "instance", None)
            k, b, m, q = (t.num_segments, t.boundary.shape[0], t.num_anchors, t.anchor_table.shape[1] - 4) \
                if t is not None else (0, 0, 0, 0)
            key = (h, w, _target_pixels(targets, h * w))
            old = self.sizes.get(key, (0, 0, 0, 0))
            self.sizes[key] = (max(old[0], k), max(old[1], b), max(old[2], m), max(old[3], q))
        # the class ids' type: int16 where every view's targets are prepared and hold int16 ids (the usual case:
        # targets.prepare_semantic_target), else int64
        prepared = [getattr(v, "targets", None) for v in views]
        semantic = [x.semantic.dtype for x in prepared if x is not None and x.semantic is not None]
        self.semantic_dtype = torch.int16 if (semantic and all(x is not None for x in prepared)
                                              and all(d == torch.int16 for d in semantic)) else torch.int64
        # the targets the views' blobs hold: those some view has (each view's blob is as large as the layout)
        present = set()
        if any(getattr(x, "instance", None) is not None for x in prepared):
            present |= {"labels", "counts", "boundary", "table"}
        if semantic:
            present.add("semantic")
        if any(getattr(x, "confidence", None) is not None for x in prepared):
            present.add("confidence")
        self.blob_fields = tuple(sorted(present))
        self.buffers: Dict[Tuple[int, int, int], StageBuffers] = {}
        self.stages: Dict[tuple, torch.nn.Module] = {}
        self.graphed: Dict[tuple, object] = {}

    def _buffers(self, h: int, w: int, p: int) -> StageBuffers:
        if (h, w, p) not in self.buffers:
            k, b, m, q = self.sizes.get((h, w, p), (0, 0, 0, 0))
            self.buffers[(h, w, p)] = StageBuffers(h, w, p, k, b, m, q, self.triplets, self.device,
                                                   semantic_dtype=self.semantic_dtype,
                                                   blob_fields=self.blob_fields)
        return self.buffers[(h, w, p)]

    def _blob(self, view, buf: StageBuffers) -> Optional[Tensor]:
        """``view``'s image and prepared targets packed in ``buf``'s layout (``StageBuffers.pack``), made at its
        first step and kept on the view; None (the targets are copied one by one) where the view has no targets,
        where the image or the targets live elsewhere (--data_device cpu), or where the image is not 8-bit."""
        targets = getattr(view, "targets", None)
        if targets is None:  # the image alone: one copy either way, and no blob of padding per view
            return None
        kept = getattr(view, "_stage_blob", None)
        if kept is not None and kept[0] is buf and kept[1] is targets:
            return kept[2]
        t = getattr(targets, "instance", None)
        tensors = [view.image] + ([t.labels, t.boundary, t.anchor_table] if t is not None else []) + \
            [x for x in (getattr(targets, "semantic", None), getattr(targets, "confidence", None)) if x is not None]
        if view.image.dtype != torch.uint8 or any(x.device != self.device for x in tensors):
            return None
        blob = buf.pack(view, targets)
        view._stage_blob = (buf, targets, blob)
        return blob

    def terms_for(self, step: int, view, features: Optional[dict]) -> Tuple[str, ...]:
        obj = self.objective
        targets = getattr(view, "targets", None) if features else None
        terms = ["render"]
        if obj is None or targets is None:
            return tuple(terms)
        cfg = obj.cfg
        if targets.instance is not None:
            if cfg.use_cluster:
                terms.append("cluster")
            if obj.head is not None and step >= cfg.triplet_from_iter:
                terms.append("triplet")
        if obj.num_classes and "semantic" in features and targets.semantic is not None:
            terms.append("semantic")
        return tuple(terms)

    def __call__(self, step: int, view, rgb: Tensor, features: Optional[dict], image: Optional[Tensor] = None,
                 layout: Optional[dict] = None, weights: Optional[Dict[str, float]] = None,
                 neighbor: Optional[Tuple[Tensor, Tensor]] = None, direct: bool = False) -> StepTerms:
        """The named terms of ``view``'s render. ``image`` and ``layout`` (``RenderOutput.image`` / ``.layout``,
        name -> (first channel, width)), when ``rgb`` and ``features`` are channels of that one image (a fused
        render): the stage then takes the image as it is (one input, no split and concatenation outside).
        ``weights`` (name -> weight, every term's): on CUDA with graphs, ONE replay of the stage's ``TotalGraph``
        gives the terms (detached) and their weighted sum with its gradient (``StepTerms.total``); without
        ``weights``, or eagerly, the terms carry their own autograd graph and ``total`` is None. ``neighbor``: L_3D's
        inputs (``SegmentationObjective.neighbor_inputs``), which make "3d" a term of the stage (--l3d_grad graph).
        ``direct`` (--loss_graph direct): a graphed call returns the total detached and the gradients as pairs
        (``StepTerms.grads``) for the caller's backward, instead of the total's autograd node."""
        obj = self.objective
        terms = self.terms_for(step, view, features) + (("3d",) if neighbor is not None else ())
        h, w = rgb.shape[:2]
        feature = next((v for v in (features or {}).values() if v is not None), None)  # [h', w', D]
        p = feature.shape[0] * feature.shape[1] if feature is not None else h * w
        buf = self._buffers(h, w, p)
        targets = obj.targets_of(view, self.device) if len(terms) > 1 else None
        conf = "semantic" in terms and targets.confidence is not None
        buf.load(view, targets, instance="cluster" in terms or "triplet" in terms, triplets="triplet" in terms,
                 semantic="semantic" in terms, confidence=conf, generator=obj.generator if obj else None,
                 blob=self._blob(view, buf))
        packed = _channel_layout(rendered_inputs(terms), image, layout)
        key = (h, w, p, terms, conf, packed)
        stage = self.stages.get(key)
        if stage is None:
            stage = LossStage(terms, lambda_dssim=self.lambda_dssim, cfg=obj.cfg if obj else None,
                              head=obj.head if obj else None, decoder=obj.decoder if obj else None,
                              num_classes=obj.num_classes if obj else None,
                              code_space=obj.code_space if obj else None, confidence=conf, buffers=buf,
                              packed=packed)
            self.stages[key] = stage
        feats = features or {}
        given = {"render": image, "rgb": rgb, "embedding": feats.get("embedding"),
                 "semantic_feature": feats.get("semantic")}
        if neighbor is not None:
            given["gaussian_embedding"], given["pairs"] = neighbor
        args = tuple(given[n] for n in stage.inputs)
        graph = None
        if self.graphs and weights is not None:
            graph = self._graph(key + (tuple(float(weights[t]) for t in terms), tuple(a.requires_grad for a in args),
                                       tuple(tuple(a.shape) for a in args[-2:]) if neighbor is not None else ()),
                                stage, args)
        if graph is None:
            return StepTerms(dict(zip(terms, stage(*args))))
        values, total, pairs = graph(*args, direct=direct)
        return StepTerms(dict(zip(terms, values)), total, pairs)

    def _graph(self, key: tuple, stage: LossStage, args: Tuple[Tensor, ...]) -> Optional[TotalGraph]:
        """The ``TotalGraph`` of ``key`` (the stage's key, its weights, which inputs need a gradient), captured at
        its first use; None (run eagerly) past MAX_GRAPHS keys and after a capture failed."""
        if key in self.graphed:
            return self.graphed[key]
        if len(self.graphed) >= MAX_GRAPHS:
            return None
        h, w, p, terms, conf, packed = key[:6]
        if "triplet" in terms or "3d" in terms:  # neither turns off again: the graphs of fewer terms are freed
            for stale in [k for k in self.graphed if k[:3] == (h, w, p) and k[4] == conf and set(k[3]) < set(terms)]:
                self.graphed.pop(stale, None)
                self.stages.pop(stale[:6], None)
        try:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            graph = TotalGraph(stage, args, key[6])
        except Exception as e:  # noqa: BLE001 -- the eager stage computes the same terms; a fault of its own
            # shows there, loudly. Graphing is a speed-up, so a capture that fails (31a: every one did, for a
            # reason the eager stage never met) costs speed, said once, not the run.
            first = str(e).splitlines()[0] if str(e) else ""
            self.failed = f"{type(e).__name__}: {first}" if first else type(e).__name__
            self.graphs = False
            print(f"[unic-lift] capturing the loss stage as a CUDA graph failed ({self.failed}); the losses run "
                  "eagerly (the same numbers, slower; train_stats.json: loss_graph)", file=sys.stderr, flush=True)
            return None
        self.graphed[key] = graph
        return graph
