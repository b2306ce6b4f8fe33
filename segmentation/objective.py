"""The UniC-Lift training objective: which features to render and the named segmentation losses.

``SegmentationObjective`` owns the pieces that are not per-Gaussian parameters (the triplet
layer W, the 3D neighbour graph) and turns one rendered view plus its 2D masks into a dict of
named loss terms. The trainer weights and sums them in one line.

Convention: the per-Gaussian embedding is the model feature ``"embedding"`` [N, d] (raw, real);
codes live in [0, 1]^d after a sigmoid, applied to the rendered V (paper, default) or to each
Gaussian's v before blending (``--sigmoid_where gaussian``). The semantic head is the feature
``"semantic"``: C class logits [N, C] (``--semantic_head logits``), or a small embedding
[N, semantic_dim] (``--semantic_head embed``) that ``decoder`` (a Linear owned here, trained
by the trainer) maps to C logits after rendering.

Targets: ``prepare(view, device)`` derives everything the 2D losses need from a view's masks once
(``ViewTargets``, kept on the training device); ``losses`` then does no host-device sync. A view
given without prepared targets is prepared on the fly (tests, tools).
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from gaussian_renderer.step_ops import neighbor_grad_applies, neighbor_loss_into_grad
from scene import nearest_resize
from scene.gaussian_model import feature_of, has_feature
from segmentation.losses import TripletHead, gather_rows, neighbor_loss, semantic_loss, triplet_hinge
from segmentation.neighbors import neighbor_graph, neighbor_pairs
from segmentation.targets import (SegmentTargets, prepare_semantic_target, prepare_targets,
                                  prepared_cluster_total, prepared_sample_triplets)

EMBEDDING, SEMANTIC = "embedding", "semantic"
_EXECUTOR: Optional[ThreadPoolExecutor] = None


def _background() -> ThreadPoolExecutor:
    """One worker thread for neighbour-graph rebuilds (cKDTree and numpy release the GIL for the work)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neighbour-graph")
    return _EXECUTOR


@dataclass
class ViewTargets:
    """One view's prepared 2D targets (flat pixels P = H * W), on the training device."""
    instance: Optional[SegmentTargets] = None  # relabelled ids, boundaries, triplet candidates
    semantic: Optional[Tensor] = None  # [P] int16/int64 class ids, -1 outside the valid region
    confidence: Optional[Tensor] = None  # [P] float32 in [0, 1]
    semantic_valid: Optional[int] = None  # pixels with a class (semantic != -1)
    ignore_id: Optional[int] = 0  # the raw ignore id the instance targets were built with

    def nbytes(self) -> int:
        n = self.instance.nbytes() if self.instance is not None else 0
        return n + sum(t.numel() * t.element_size() for t in (self.semantic, self.confidence) if t is not None)


def _null_phase(name: str):
    return nullcontext()


class SegmentationObjective:
    def __init__(self, cfg, num_classes: Optional[int], device: torch.device,
                 generator: Optional[torch.Generator] = None):
        self.cfg = cfg
        self.num_classes = num_classes if cfg.use_semantic else None
        self.device = device
        self.generator = generator
        self.head = (TripletHead(cfg.emb_dim, mode=cfg.linear_layer).to(device)
                     if cfg.use_triplet and cfg.method == "unic" else None)
        # --semantic_head embed: rendered semantic embedding [..., semantic_dim] -> C logits
        self.decoder: Optional[torch.nn.Linear] = (
            torch.nn.Linear(cfg.semantic_dim, self.num_classes).to(device)
            if self.num_classes and getattr(cfg, "semantic_head", "logits") == "embed" else None)
        self.edges: Optional[Tensor] = None  # [E, 2] neighbour pairs of the 3D loss
        self.edges_step = -1
        self.edges_n = -1
        self.edges_offset = 0  # where the next step's slice of the shuffled pairs starts
        self.pending = None  # (iteration due, iteration of the snapshot, N, future) of a background rebuild

    @property
    def ignore_id(self) -> Optional[int]:
        return 0 if self.cfg.stuff_id == "ignore" else None

    # ----- what to render ------------------------------------------------------------------
    def features(self, model) -> Dict[str, Tensor]:
        feats = {}
        v = feature_of(model, EMBEDDING)  # [N, d]
        feats[EMBEDDING] = torch.sigmoid(v) if self.cfg.sigmoid_where == "gaussian" else v
        if self.num_classes and has_feature(model, SEMANTIC):
            feats[SEMANTIC] = feature_of(model, SEMANTIC)  # [N, C]
        return feats

    def semantic_logits(self, semantic: Tensor) -> Tensor:
        """Rendered semantic feature [..., C] (logits head) or [..., semantic_dim] (embed head)
        -> class logits [..., C]; the logits head passes its input through untouched."""
        return self.decoder(semantic) if self.decoder is not None else semantic

    def code_space(self, rendered_embedding: Tensor) -> Tensor:
        """Rendered V [..., d] -> values in [0, 1]^d where codes are read by thresholding at 0.5."""
        if self.cfg.sigmoid_where == "gaussian":
            return rendered_embedding.clamp(0.0, 1.0)
        return torch.sigmoid(rendered_embedding)

    # ----- targets -------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, view, device=None) -> ViewTargets:
        """Builds ``view.targets`` from its raw masks on ``device`` (default: this objective's), once; at
        ``view.seg_cam``'s size where the trainer set one (--seg_scale)."""
        device = torch.device(device) if device is not None else self.device
        t = ViewTargets(ignore_id=self.ignore_id)
        instance, semantic, confidence, valid = view.instance, view.semantic, view.confidence, view.valid
        cam = getattr(view, "seg_cam", None)
        if cam is not None:  # the masks at the size the features render at (--seg_scale), nearest pixel
            instance, semantic, confidence, valid = (
                None if m is None else nearest_resize(m, cam.width, cam.height)
                for m in (instance, semantic, confidence, valid))
        if instance is not None:
            t.instance = prepare_targets(instance, valid, ignore_id=self.ignore_id, device=device)
        if semantic is not None:
            t.semantic = prepare_semantic_target(semantic, valid, device=device)
            t.semantic_valid = int((t.semantic != -1).sum())
            if confidence is not None:
                t.confidence = confidence.to(device=device, dtype=torch.float32).reshape(-1)
        view.targets = t
        return t

    def targets_of(self, view, device: torch.device) -> ViewTargets:
        """The view's prepared targets on ``device`` (prepared now if missing; copied per step only
        when they live elsewhere, i.e. with --data_device cpu)."""
        t = getattr(view, "targets", None)
        if t is None or t.ignore_id != self.ignore_id:
            t = self.prepare(view, device)
        here = t.instance.labels.device if t.instance is not None else (
            t.semantic.device if t.semantic is not None else device)
        if here.type != device.type or (here.index or 0) != (device.index or 0):  # "cuda" is "cuda:0"
            t = ViewTargets(instance=t.instance.to(device) if t.instance is not None else None,
                            semantic=t.semantic.to(device, non_blocking=True) if t.semantic is not None else None,
                            confidence=t.confidence.to(device, non_blocking=True) if t.confidence is not None else None,
                            semantic_valid=t.semantic_valid, ignore_id=t.ignore_id)
        return t

    # ----- losses --------------------------------------------------------------------------
    def losses(self, step: int, features: Dict[str, Tensor], view, model, phase=_null_phase) -> Dict[str, Tensor]:
        """Named segmentation terms for one rendered view, on the view's unpadded targets: the
        reference of ``segmentation.stage`` (which the training step runs), with its triplets drawn
        without replacement. ``phase(name)``: a context manager per term; no host-device sync."""
        cfg = self.cfg
        out: Dict[str, Tensor] = {}
        device = features[EMBEDDING].device
        targets = self.targets_of(view, device)
        t = targets.instance
        if t is not None:
            emb = self.code_space(features[EMBEDDING])  # [H, W, d] in [0, 1]
            if cfg.use_cluster:
                with phase("loss/cluster"):
                    out["cluster"] = prepared_cluster_total(emb, t, push=cfg.push, push_scale=cfg.push_scale)
            if self.head is not None and step >= cfg.triplet_from_iter:
                with phase("loss/triplet"):
                    trip = prepared_sample_triplets(t, cfg.triplet_max, generator=self.generator)  # [T, 3]
                    # W acts per pixel: project only the 3T sampled pixels, not all P
                    x = gather_rows(emb.reshape(-1, emb.shape[-1]), trip.reshape(-1))  # [3T, d]
                    out["triplet"] = triplet_hinge(self.head(x).reshape(-1, 3, x.shape[-1]), cfg.triplet_margin)
        if self.num_classes and SEMANTIC in features and targets.semantic is not None:
            with phase("loss/semantic"):
                logits = self.semantic_logits(features[SEMANTIC]).reshape(-1, self.num_classes)  # [P, C]
                out["semantic"] = semantic_loss(logits, targets.semantic, targets.confidence, ignore_index=-1,
                                                n_valid=targets.semantic_valid)
        with phase("loss/3d"):
            l3d = self.neighbor_term(step, model) if model is not None else None
        if l3d is not None:
            out["3d"] = l3d
        return out

    def neighbor_due(self, step: int) -> bool:
        cfg = self.cfg
        return bool(cfg.use_3d and cfg.method == "unic" and step >= cfg.l3d_from_iter)

    def neighbor_term(self, step: int, model, grad_scale: Optional[float] = None) -> Optional[Tensor]:
        """L_3D of this step (the neighbour graph refreshed when due), or None when it is off or not yet
        on. The training step's 2D terms come from ``segmentation.stage``; this one reads the Gaussians.
        ``grad_scale`` (after the step's backward): ``grad_scale`` times L_3D's gradient is added to the
        embedding's ``.grad`` here, by L_3D's kernel where it applies (``neighbor_loss_into_grad``), else by a
        backward of its own; the loss comes back detached."""
        inputs = self.neighbor_inputs(step, model)
        if inputs is None:
            return None
        v, edges = inputs
        if grad_scale is None:
            return neighbor_loss(v, edges, activation=torch.sigmoid)  # code space
        idx = edges.reshape(-1)
        if neighbor_grad_applies(v, idx):
            return neighbor_loss_into_grad(v, idx, True, grad_scale)
        loss = neighbor_loss(v, edges, activation=torch.sigmoid)
        (loss * grad_scale).backward()
        return loss.detach()

    def neighbor_inputs(self, step: int, model) -> Optional[Tuple[Tensor, Tensor]]:
        """L_3D's inputs at ``step``: the Gaussians' embedding [N, W] and this step's neighbour pairs [m, 2] (the
        graph refreshed when due; the window advances), or None when L_3D is off, not yet on, or has no pairs.
        ``neighbor_term`` takes them, or the loss stage (--l3d_grad graph)."""
        if not self.neighbor_due(step):
            return None
        self._refresh_graph(step, model)
        if self.edges is None or not len(self.edges):
            return None
        return feature_of(model, EMBEDDING), self._edge_window()

    def _edge_window(self) -> Tensor:
        """This step's neighbour pairs: the next ``l3d_max_edges`` of the graph's pairs, which were shuffled
        when it was built (a slice: no per-step gather of random rows), wrapping around at the end."""
        m, E = self.cfg.l3d_max_edges, int(self.edges.shape[0])
        if not m or E <= m:
            return self.edges
        if self.edges_offset + m > E:
            self.edges_offset = 0
        window = self.edges[self.edges_offset:self.edges_offset + m]
        self.edges_offset += m
        return window

    def weights(self) -> Dict[str, float]:
        c = self.cfg
        return {"cluster": c.lambda_cluster, "triplet": c.lambda_triplet, "3d": c.lambda_3d, "semantic": c.lambda_sem}

    @torch.no_grad()
    def _refresh_graph(self, step: int, model) -> None:
        """Keeps ``self.edges`` current. A rebuild of an existing graph (same Gaussian count) runs in a
        background thread on the means of the iteration it was due and is swapped in
        ``l3d_rebuild_lag`` iterations later, at a fixed iteration whatever the thread's speed, so runs
        and resumed runs stay reproducible. The first graph, and one after the count changed, is built
        here and now."""
        cfg, n = self.cfg, model.num_gaussians
        if self.pending is not None:
            due, snap_step, snap_n, job = self.pending
            if snap_n != n:  # densification changed the Gaussians: the pending graph is void
                self.pending = None
            elif step >= due:
                self.pending = None
                self._install(torch.from_numpy(job.result().astype(np.int32)), snap_step, n)
                return
            else:
                return  # the current graph serves until the new one is due
        stale = self.edges is None or n != self.edges_n or step - self.edges_step >= cfg.l3d_refresh
        if not stale:
            return
        means = model.get_means().detach()
        lag = getattr(cfg, "l3d_rebuild_lag", 0)
        if lag > 0 and self.edges is not None and n == self.edges_n:
            pts = means.to("cpu", torch.float64).numpy()  # the snapshot the new graph is built from
            workers = max(1, (os.cpu_count() or 2) - 1)  # a core stays with the training loop
            job = _background().submit(neighbor_pairs, pts, cfg.l3d_radius2, cfg.l3d_k, workers=workers)
            self.pending = (step + lag, step, n, job)
            return
        self._install(neighbor_graph(means, radius2=cfg.l3d_radius2, k=cfg.l3d_k), step, n)

    def _install(self, edges: Tensor, step: int, n: int) -> None:
        # int32 halves the graph's memory (about 14 M pairs on a 1.2 M-Gaussian scene); N < 2^31 always here
        edges = edges.to(self.device, torch.int32)
        if len(edges) > (self.cfg.l3d_max_edges or len(edges)):  # shuffled once; each step takes a slice
            edges = edges.index_select(0, torch.randperm(len(edges), generator=self.generator, device=edges.device))
        self.edges, self.edges_offset = edges, 0
        self.edges_step, self.edges_n = step, n

    # ----- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        pending = None
        if self.pending is not None:  # a background rebuild is waited for and saved with its due iteration
            due, snap_step, snap_n, job = self.pending
            pending = {"due": due, "step": snap_step, "n": snap_n, "pairs": torch.from_numpy(job.result())}
        return {"head": self.head.state_dict() if self.head is not None else None,
                "decoder": self.decoder.state_dict() if self.decoder is not None else None,
                "edges": self.edges, "edges_step": self.edges_step, "edges_n": self.edges_n,
                "edges_offset": self.edges_offset, "pending": pending}

    def load_state_dict(self, state: dict) -> None:
        if self.head is not None and state.get("head") is not None:
            self.head.load_state_dict(state["head"])
        if self.decoder is not None and state.get("decoder") is not None:
            self.decoder.load_state_dict(state["decoder"])
        self.edges = state.get("edges")
        if self.edges is not None:  # checkpoints before int32 graphs hold int64: same pairs
            self.edges = self.edges.to(self.device, torch.int32)
        self.edges_step, self.edges_n = state.get("edges_step", -1), state.get("edges_n", -1)
        self.edges_offset = state.get("edges_offset", 0)
        p = state.get("pending")
        self.pending = None
        if p is not None:
            done = Future()
            done.set_result(p["pairs"].numpy())
            self.pending = (p["due"], p["step"], p["n"], done)
