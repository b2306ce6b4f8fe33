"""Train a 3D Gaussian Splatting scene, and with instance masks, its UniC-Lift embedding.

    python train.py -s data/room_0 -m output/room_0 --eval
    python train.py -s data/room_0 --seg_dir m2f_instance          # colour + segmentation
    python train.py -s SCENE -m MODEL --start_checkpoint MODEL/chkpnt7000.pth   # resume
    python train.py -s SCENE -m MODEL --checkpoint_every 1000 ...; then --start_checkpoint latest

Checkpoints are written atomically (fsynced) and loaded with weights_only=True, checked against the
scene (views, feature sizes). Ctrl-C finishes the current iteration, saves chkpnt<N>.pth of it, and
exits 130; a second Ctrl-C aborts at once. One train.py per model folder (<model>/.train.lock).

One iteration (``Trainer.train_step``), as in the paper's algorithm box: pick a view, render it,
compute the named losses, weight them in one line, backpropagate, step the optimisers, let the
densification strategy grow and prune. The named terms go to the progress bar and to
``<model>/train_log.jsonl``; ``--profile`` times each stage with CUDA events (train_stats.json).
Nothing in a step waits for the GPU: statistics are read back every 10 iterations only.
Everything random draws from generators saved in the checkpoints, so a resumed run matches an
uninterrupted one (exactly, on the CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from arguments import (ModelParams, OptimizationParams, PipelineParams, SegmentationParams,
                       save_cfg_args)
from gaussian_renderer import GeometryDetached, render
from gaussian_renderer.step_ops import neighbor_grad_applies, step_ops_available
from scene import (CameraTensors, View, load_views, resolution_scale, resolve_data_device, select_mask_views,
                   training_bytes, view_draws)
from scene.cameras import SceneError, SceneInfo
from scene.dataset_readers import read_scene_for  # noqa: F401  (re-exported for old imports)
from scene.gaussian_model import PACKED_KEY, GaussianModel, has_feature
from training.checkpoint import (CHECKPOINT_VERSION, acquire_lock, check_scene, checkpoint_state,  # noqa: F401
                                 load_checkpoint, load_latest_checkpoint, release_lock, restore_rng,
                                 save_checkpoint, save_periodic_checkpoint)
from training.densify import make_strategy
from training.evaluation import evaluate_views
from training.log import TrainLog
from training.numerics import NonFiniteError, bad_terms, message as nonfinite_message, nonfinite_flags
from training.optim import (AdamGraph, adam, make_gaussian_optimizers, packed_optimizer_state, resolve_optimizer,
                            step_all, visibility_from_info)
from training.schedule import explicit_flags, fit_schedule, reset_warning
from training.profiling import TORCH_PROFILE_STEPS, PhaseTimer, start_torch_profiler, stop_torch_profiler
from utils.general_utils import atomic_write_text, exponential_lr, pick_device, remove_stale_tmp, seed_everything
from utils.loss_utils import psnr

STATS_EVERY = 10  # iterations between read-backs of the step statistics (the only regular sync)
MIN_TRAIN_SIDE = 4  # training views smaller than this (a side, in pixels) are refused (e.g. -r 64 on 64 px)



def _label_summary(labels: Optional[Dict[str, torch.Tensor]], model) -> str:
    """': N object ids on M Gaussians (K of them second objects that share a code, tools/objects.py list)'
    for the save message, or '' without labels. Read back once per save, not per step."""
    if not labels or "instance_label" not in labels:
        return ""
    inst = labels["instance_label"].reshape(-1)
    ids = torch.unique(inst[inst > 0])
    from segmentation.pieces import first_piece_id

    pieces = int((ids >= first_piece_id(model)).sum()) if has_feature(model, "embedding") else 0
    more = f" ({pieces} of them second objects that share a code: tools/objects.py list)" if pieces else ""
    return f": {ids.numel()} object ids on {int((inst > 0).sum())} of {inst.numel()} Gaussians{more}"


class Trainer:
    def __init__(self, args: argparse.Namespace, scene_info: SceneInfo):
        self.args = args
        resolve_semantic_head(args, scene_info)  # no-op when training() resolved it already
        self.dataset, self.opt = ModelParams.extract(args), OptimizationParams.extract(args)
        self.pipe, self.seg = PipelineParams.extract(args), SegmentationParams.extract(args)
        for name in ("triplet_from_iter", "l3d_from_iter"):  # -1: when densification stops
            if getattr(self.seg, name) < 0:
                setattr(self.seg, name, self.opt.densify_until_iter)
        self.info = scene_info
        self.device = pick_device(self.dataset.device)
        self._select_feature_backward()
        try:
            self.optimizer_kind = resolve_optimizer(self.opt.optimizer, self.device)
        except ValueError as e:
            raise SceneError(str(e)) from None
        self.gen = torch.Generator().manual_seed(args.seed)  # camera order, backgrounds
        self.seg_gen = torch.Generator(device=self.device).manual_seed(args.seed + 1)  # loss sampling
        self.quiet = args.quiet
        self.views = self._load_train_views()
        self.data_device = resolve_data_device(self.dataset.data_device, self.device, training_bytes(self.views))
        self.test_views: Optional[List[View]] = None
        self.has_masks = any(v.instance is not None for v in self.views)
        self.model = self._init_model()
        self.objective = self._init_objective()
        self._step_kernels()  # built before the first step, and only where segmentation trains
        self._prepare_views(self.views)
        self.draws = view_draws(self.views, self.seg.mask_view_share if self.objective is not None else 0.0)
        self.stages = self._init_stages()
        self.optimizers = self._init_optimizers()
        self.strategy = make_strategy(self.opt)
        self.strategy.check_sanity(self.model.params, self.optimizers)
        self.strategy_state = self.strategy.initialize_state(scene_scale=scene_info.extent)
        self.weights = {"render": 1.0, **(self.objective.weights() if self.objective is not None else {})}
        self._weight_vectors: Dict[tuple, Tensor] = {}  # weighted_total: the terms' weights, per set of terms
        self.l3d_after_backward = self._l3d_after_backward()
        self.l3d_in_stage = self.objective is not None and self._l3d_in_stage()
        # --loss_graph direct (auto's choice on CUDA): a graphed stage's gradients go straight into the backward
        self.loss_direct = self.pipe.loss_graph == "direct" or (self.pipe.loss_graph == "auto"
                                                                and self.stages is not None and self.stages.graphs)
        self.adam_graph = (AdamGraph() if getattr(self.opt, "optimizer_graph", "auto") == "on"
                           and self.optimizer_kind == "fused" and self.device.type == "cuda" else None)
        self.timer = PhaseTimer(getattr(args, "profile", False), self.device)
        self.stack: List[int] = []
        self.first_iter = 1
        self.train_seconds = 0.0
        self.eval_history: Dict[int, dict] = {}

    # ----- setup ---------------------------------------------------------------------------
    def _load_train_views(self) -> List[View]:
        frames = self.info.train
        if not frames:
            raise SceneError(f"{self.info.path}: no training views; check the split files")
        scale = resolution_scale(frames[0].camera.width, self.dataset.resolution) * self.seg.mask_downscale
        cam = frames[0].camera
        small = cam.scaled(scale)
        if min(small.width, small.height) < MIN_TRAIN_SIDE:
            raise SceneError(f"{frames[0].image_path}: -r {self.dataset.resolution} and --mask_downscale "
                             f"{self.seg.mask_downscale} would train on {small.width}x{small.height} views (from "
                             f"{cam.width}x{cam.height}); keep at least {MIN_TRAIN_SIDE} pixels a side: pass a "
                             f"smaller -r or a larger --mask_downscale")
        feat = small.scaled(self.seg.seg_scale)
        if self.seg.seg_scale != 1.0 and min(feat.width, feat.height) < MIN_TRAIN_SIDE:
            raise SceneError(f"{frames[0].image_path}: --seg_scale {self.seg.seg_scale} would render the features at "
                             f"{feat.width}x{feat.height} (views {small.width}x{small.height}); keep at least "
                             f"{MIN_TRAIN_SIDE} pixels a side: pass a larger --seg_scale, or 1")
        views = load_views(frames, scale, device="cpu", quiet=self.quiet, desc="Loading training views")
        if self.info.semantic_from_instances:  # instance masks only: fg/bg target, object where id > 0
            for view in views:
                view.semantic = (view.instance > 0).to(torch.int8) if view.instance is not None else None
        elif self.info.num_classes:
            for frame, view in zip(frames, views):  # a class the head has no logit for: refuse, naming the file
                top = int(view.semantic.max()) if view.semantic is not None and view.semantic.numel() else 0
                if top >= self.info.num_classes:
                    raise SceneError(f"{frame.semantic_path}: semantic mask holds class {top}, but this "
                                     f"{self.info.format} scene has classes 0..{self.info.num_classes - 1}; "
                                     f"relabel the mask, or pass --sem_dir '' to train without semantics")
        if self.seg.mask_fraction < 1.0:
            keep = select_mask_views(len(views), self.seg.mask_fraction, self.args.seed)
            for view, k in zip(views, keep):
                if not k:
                    view.instance = view.semantic = view.confidence = None
        return views

    def _prepare_views(self, views: List[View]) -> None:
        """Once per view: image on the data device, camera tensors on the training device, and the
        segmentation targets (relabelled ids, boundaries, triplet candidates) on the data device."""
        for view in views:
            view.to_device(self.data_device, camera_device=self.device)
            if self.objective is not None and self.seg.seg_scale != 1.0:
                view.seg_cam = CameraTensors.from_camera(view.camera.scaled(self.seg.seg_scale), self.device)
            if self.objective is not None and view.has_masks:
                self.objective.prepare(view, self.data_device)

    def _select_feature_backward(self) -> None:
        """--feature_backward: the segmentation features' gradient kernel (CUDA only; gsplat on the CPU).
        ``auto`` takes this project's fused kernel (geometry and features in one walk; RESULTS.md 28a) or its
        tile kernel (11a) where nvcc builds them, and says in one line when it falls back to gsplat's."""
        from gaussian_renderer.feature_backward import FeatureBackwardError
        from gaussian_renderer.rasterizer import set_feature_backward

        kind = self.pipe.feature_backward if self.device.type == "cuda" else "gsplat"
        try:
            why = set_feature_backward(kind)
        except FeatureBackwardError as e:
            raise SceneError(str(e)) from None
        if why:
            print(f"[unic-lift] the tile kernel is not available here ({why}); using gsplat's backward for the "
                  "features (slower)", file=sys.stderr)

    def _step_kernels(self) -> Optional[bool]:
        """Whether L_3D and the loss stage run as this project's kernels (gaussian_renderer/step_ops.py; None: no
        segmentation). The first call builds them, or prints the one-line reason they are not used."""
        return None if self.objective is None else step_ops_available(self.device)

    def _l3d_in_stage(self) -> bool:
        """--l3d_grad graph, or auto's choice where the loss stage is a CUDA graph: L_3D becomes a term of the stage
        once densification has stopped (with --loss_graph direct 3-10 % faster than the autograd term over whole
        runs on one H200, RESULTS.md 35). On the CPU auto keeps the autograd term (the same numbers either way)."""
        choice = getattr(self.pipe, "l3d_grad", "auto")
        if choice == "auto":
            return self.device.type == "cuda" and self.stages is not None and self.stages.graphs
        return choice == "graph"

    def _init_stages(self):
        """The per-view losses of a step as one static-shape module (segmentation.stage): a CUDA graph
        on the GPU, except with --loss_graph off and when segmentation moves the geometry (its
        backward then runs twice while densifying)."""
        from segmentation.stage import LossStages

        graphs = self.pipe.loss_graph in ("auto", "on", "direct") and not self.seg.seg_geometry_grad
        return LossStages(self.views, lambda_dssim=self.opt.lambda_dssim, objective=self.objective,
                          device=self.device, graphs=graphs, triplets=self.seg.triplet_max)

    def _init_model(self) -> GaussianModel:
        features: Dict[str, int] = {}
        self.vote_classes = 0  # --semantic_head vote: C, the classes lifted from the masks when saving
        if self.has_masks:
            bad = emb_dim_problem(self.seg.emb_dim)  # also checked by check_args; Trainer can be built directly
            if bad:
                raise SceneError(bad)
            features["embedding"] = self.seg.emb_dim
            if self.seg.method == "contrastive_lift":
                sizes = self.seg.cluster_tune_sizes if self.seg.cluster_tune == "pseudo_pq" else [self.seg.min_cluster_size]
                if min(sizes) < 2:
                    raise SceneError(f"min_cluster_size {min(sizes)}: HDBSCAN needs 2 or more; fix --cluster_tune_sizes "
                                     f"/ --min_cluster_size")
            if self.seg.use_semantic and self.info.num_classes and any(v.semantic is not None for v in self.views):
                embed = self.seg.semantic_head == "embed"  # embed: semantic_dim channels, decoded by a Linear
                if embed and self.seg.semantic_dim < 1:
                    raise SceneError(f"--semantic_dim {self.seg.semantic_dim}: must be at least 1; pass e.g. --semantic_dim 8")
                if self.seg.semantic_head == "vote":  # nothing rendered or trained: lifted at each save (save())
                    self.vote_classes = self.info.num_classes
                else:
                    features["semantic"] = self.seg.semantic_dim if embed else self.info.num_classes
        points, colors = self.info.points, self.info.colors
        if points is None or len(points) == 0:
            rng = np.random.default_rng(self.args.seed)
            lo, hi = (np.asarray(b, np.float32) for b in self.info.bbox)
            points = (lo + rng.random((100_000, 3), dtype=np.float32) * (hi - lo)).astype(np.float32)
            colors = rng.random((100_000, 3), dtype=np.float32)
        cap = self.dataset.init_points
        if cap and len(points) > cap:
            keep = np.sort(np.random.default_rng(self.args.seed).choice(len(points), cap, replace=False))
            points, colors = points[keep], (colors[keep] if colors is not None else None)
        torch.manual_seed(self.args.seed)
        model = GaussianModel.from_points(points, colors, self.dataset.sh_degree, features=features,
                                          device=self.device, generator=torch.Generator().manual_seed(self.args.seed))
        if model.has_feature("semantic"):
            model.feature("semantic").data.mul_(0.1)  # near-uniform class logits at the start
        return self._lay_out(model)

    def _feature_layout(self) -> str:
        """--feature_layout resolved: "packed" or "separate" (see ``GaussianModel.pack_features``). auto is packed
        where the run allows it (RESULTS 30a: the same model, 4 % faster at 1.24 M Gaussians on an H200), else
        separate; packed asked for where the run does not allow it is refused in one line."""
        kind = self.pipe.feature_layout
        if kind == "separate":
            return "separate"
        problem = self._packing_problem()
        if problem is None:
            return "packed"
        if kind == "auto":
            return "separate"
        raise SceneError(problem)

    def _packing_problem(self) -> str | None:
        """Why this run's features cannot be one packed parameter (a one-line message), or None."""
        s = self.seg
        if s.sigmoid_where != "rendered":
            return ("--feature_layout packed renders the embedding as stored, not its sigmoid; pass "
                    "--sigmoid_where rendered or --feature_layout separate")
        if self.has_masks and s.use_semantic and s.semantic_head != "vote" and s.embedding_lr != s.semantic_lr:
            return (f"--feature_layout packed trains embedding and semantic logits as one parameter with one "
                    f"learning rate: --embedding_lr {s.embedding_lr} and --semantic_lr {s.semantic_lr} differ; "
                    f"make them equal or use --feature_layout separate")
        return None

    def _lay_out(self, model: GaussianModel) -> GaussianModel:
        """The model with its trained features in the layout --feature_layout asks for (before the optimisers)."""
        names = [n for n in ("embedding", "semantic") if n in model.params]
        if self._feature_layout() == "packed" and names:
            model.pack_features(names)
        return model

    def _l3d_after_backward(self) -> bool:
        """--l3d_grad kernel: L_3D after the backward, its weighted gradient added straight into the embedding's
        ``.grad`` by its kernel (CUDA, step kernels built): no autograd node, no zeroed [N, W] gradient to scale and
        accumulate (``step_ops.neighbor_loss_into_grad``). Otherwise it is one more term of the step's loss, as in
        the paper (auto: so until the kernel's way is timed on a GPU)."""
        if getattr(self.pipe, "l3d_grad", "auto") != "kernel":
            return False
        if self.objective is None or self.device.type != "cuda" or not self.model.has_feature("embedding"):
            return False
        return neighbor_grad_applies(self.model.feature("embedding"))

    def _init_objective(self):
        if not self.has_masks:
            return None
        from segmentation.objective import SegmentationObjective

        num_classes = self.info.num_classes if self.model.has_feature("semantic") else None
        return SegmentationObjective(self.seg, num_classes, self.device, generator=self.seg_gen)

    def _init_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        o, s, kind = self.opt, self.seg, self.optimizer_kind
        lrs = {"means": o.position_lr_init * self.info.extent, "scales": o.scaling_lr, "quats": o.rotation_lr,
               "opacities": o.opacity_lr, "sh0": o.feature_lr, "shN": o.feature_lr / 20.0,
               "embedding": s.embedding_lr, "semantic": s.semantic_lr, PACKED_KEY: s.embedding_lr}
        opts = make_gaussian_optimizers(self.model.params, lrs, kind)
        head = self.objective.head if self.objective is not None else None
        trainable = head is not None and any(p.requires_grad for p in head.parameters())
        self.head_optimizer = adam(head.parameters(), kind, lr=1e-3) if trainable else None
        decoder = self.objective.decoder if self.objective is not None else None  # --semantic_head embed
        self.decoder_optimizer = adam(decoder.parameters(), kind, lr=1e-3) if decoder is not None else None
        return opts

    # ----- the stages of one iteration -----------------------------------------------------
    def schedule(self, step: int) -> None:
        """Learning rate of the means (3DGS's exponential decay) and the active SH degree."""
        o = self.opt
        lr = exponential_lr(step, o.position_lr_init * self.info.extent, o.position_lr_final * self.info.extent,
                            o.position_lr_max_steps, delay_mult=o.position_lr_delay_mult)
        for group in self.optimizers["means"].param_groups:
            group["lr"] = lr
        if step % self.opt.sh_increase_interval == 0:
            self.model.oneup_sh_degree()

    update_learning_rate = schedule  # old name

    def next_view(self) -> View:
        if not self.stack:  # a shuffled epoch of self.draws (every view once, unless some lack masks)
            self.stack = [self.draws[i] for i in torch.randperm(len(self.draws), generator=self.gen).tolist()]
        return self.views[self.stack.pop()]

    def background(self) -> Tensor:
        if self.pipe.random_background:
            return torch.rand(3, generator=self.gen).to(self.device, non_blocking=True)
        if not hasattr(self, "_bg"):
            self._bg = torch.full((3,), 1.0 if self.dataset.white_background else 0.0, device=self.device)
        return self._bg

    def seg_active(self, view: View, step: int) -> bool:
        """Segmentation runs this step: a model with masks, a view with masks (or L_3D on), and a step
        that ``--seg_interval`` selects."""
        return (self.objective is not None and step % self.seg.seg_interval == 0
                and (view.has_masks or step >= self.seg.l3d_from_iter))

    def raster_mode(self, step: int) -> str:
        """How colour and features are rasterised this step: fused | separate | joint (see --seg_raster), or
        scaled (--seg_scale below 1: two rasterisations, the features' smaller)."""
        if self.seg.seg_scale != 1.0:
            return "scaled"
        densifying = step < self.opt.densify_until_iter
        if self.seg.seg_geometry_grad:  # segmentation moves geometry: joint once densification is over
            return "joint" if self.seg.seg_raster == "joint" or not densifying else "separate"
        return self.seg.seg_raster  # fused: render(..., feature_geometry_grad=False), one rasterisation

    def render_view(self, view: View, bg: Tensor, step: int):
        """-> (colour render, render holding the features or None, raster mode)."""
        cam, backend = view.render_camera, self.pipe.backend
        if not self.seg_active(view, step):
            return render(cam, self.model, bg=bg, backend=backend), None, "none"
        feats = self.objective.features(self.model)
        mode = self.raster_mode(step)
        if mode == "scaled":  # colour alone at full size; the features of the detached model at --seg_scale
            out = render(cam, self.model, bg=bg, backend=backend)
            seg_out = render(view.seg_cam, GeometryDetached(self.model), features=feats, with_rgb=False,
                             backend=backend, feature_geometry_grad=False)
            return out, seg_out, mode
        if mode == "fused":
            out = render(cam, self.model, bg=bg, features=feats, backend=backend, feature_geometry_grad=False)
            return out, out, mode
        if mode == "joint":
            out = render(cam, self.model, bg=bg, features=feats, backend=backend)
            return out, out, mode
        seg_model = self.model if self.seg.seg_geometry_grad else GeometryDetached(self.model)
        out = render(cam, self.model, bg=bg, backend=backend)
        return out, render(cam, seg_model, features=feats, with_rgb=False, backend=backend), mode

    def compute_losses(self, step: int, view: View, out, seg_out) -> Dict[str, Tensor]:
        """The named loss terms of this step (weighted by ``self.weights``): the view's 2D terms in one
        static-shape stage (a CUDA graph on the GPU), then L_3D."""
        # --l3d_grad graph: once the Gaussians stay put, L_3D is a term of the stage (its graph reads the embedding)
        in_stage = (seg_out is not None and self.l3d_in_stage and step >= self.opt.densify_until_iter
                    and self.objective.neighbor_due(step))
        with self.timer.phase("losses"):
            one = seg_out is out  # a fused render: the stage takes its image whole (no split, no concatenation)
            losses = self.stages(step, view, out.rgb, seg_out.features if seg_out is not None else None,
                                 image=out.image if one else None, layout=out.layout if one else None,
                                 weights=self.weights,  # graphed: the terms and their weighted sum in one replay
                                 neighbor=self.objective.neighbor_inputs(step, self.model) if in_stage else None,
                                 direct=self.loss_direct)
        if (seg_out is not None and self.objective.neighbor_due(step) and not self.l3d_after_backward
                and not in_stage):
            with self.timer.phase("loss/3d"):
                l3d = self.objective.neighbor_term(step, self.model)
            if l3d is not None:
                losses["3d"] = l3d
        return losses

    def weighted_total(self, losses: Dict[str, Tensor]) -> Tensor:
        """sum_k weights[k] * losses[k] as ONE dot product of the stacked terms with a weight vector made once per
        set of terms: two autograd nodes and kernels instead of a multiplication and an addition per term (the
        step is bound by the host on an H200, RESULTS.md 22a). A single term is weighted as it is. Where the loss
        stage's CUDA graph already weighted its terms (``losses.total``: the terms are then detached), L_3D's term
        is added to that sum."""
        graphed = getattr(losses, "total", None)
        if graphed is not None:
            for k in losses:
                if k not in losses.covered:  # L_3D outside the stage
                    graphed = torch.add(graphed, losses[k], alpha=float(self.weights[k]))
            return graphed
        keys = tuple(losses)
        if len(keys) == 1:
            return self.weights[keys[0]] * losses[keys[0]]
        w = self._weight_vectors.get(keys)
        first = losses[keys[0]]
        if w is None or w.device != first.device or w.dtype != first.dtype:
            w = torch.tensor([float(self.weights[k]) for k in keys], device=first.device, dtype=first.dtype)
            self._weight_vectors[keys] = w
        return torch.dot(torch.stack([losses[k] for k in keys]), w)

    def backward(self, total: Tensor, losses: Dict[str, Tensor], out, mode: str, step: int) -> Optional[Tensor]:
        """Gradients of ``total``; then, with ``l3d_after_backward``, L_3D's (added to ``losses`` as "3d"): returns
        the weighted terms added after ``total`` (None if none), which the logged loss includes."""
        means2d = out.info.get("means2d")
        pairs = getattr(losses, "grads", None)
        if pairs is not None:  # --loss_graph direct: the stage's graph computed its gradients; they go straight in
            tensors, grads = [t for t, _ in pairs], [g for _, g in pairs]
            if total.requires_grad:  # terms from outside the stage (L_3D)
                tensors.append(total)
                grads.append(None)
            if tensors:
                torch.autograd.backward(tensors, grads)
        elif (mode == "joint" and step < self.opt.densify_until_iter and len(losses) > 1
                and means2d is not None and means2d.requires_grad):
            # Densification must see the rendering loss's screen-space gradient only.
            (render_grad,) = torch.autograd.grad(losses["render"], means2d, retain_graph=True)
            total.backward()
            means2d.grad = render_grad
        else:
            total.backward()
        if self.l3d_after_backward and mode != "none" and self.objective.neighbor_due(step):
            # L_3D's kernel computes its gradient in its forward pass: weighted, straight into the embedding's .grad
            with self.timer.phase("loss/3d"):
                l3d = self.objective.neighbor_term(step, self.model, grad_scale=self.weights["3d"])
            if l3d is not None:
                losses["3d"] = l3d
                return self.weights["3d"] * l3d
        return None

    def optimizer_step(self, out, step: Optional[int] = None) -> None:
        visibility = visibility_from_info(out.info) if self.optimizer_kind == "selective" else None
        # --optimizer_graph: once densification is over the parameters stay put, and the step can be a graph
        graph = self.adam_graph if step is not None and step >= self.opt.densify_until_iter else None
        step_all([*self.optimizers.values(), self.head_optimizer, self.decoder_optimizer], visibility, graph=graph)

    def densify(self, step: int, out) -> None:
        self.strategy.step_post_backward(self.model.params, self.optimizers, self.strategy_state, step, out.info)

    def train_step(self, step: int, with_stats: bool = True) -> Dict[str, Tensor]:
        """One iteration. Returns the named terms, ``loss`` and ``psnr`` as device tensors (nothing is
        read back here), or {} when ``with_stats`` is False."""
        phase = self.timer.phase
        self.schedule(step)
        with phase("data"):
            view = self.next_view()
            bg = self.background()
        with phase("render"):
            out, seg_out, mode = self.render_view(view, bg, step)
            if step < self.opt.densify_until_iter:  # the screen-space gradient is read while densifying only
                self.strategy.step_pre_backward(self.model.params, self.optimizers, self.strategy_state, step, out.info)
        losses = self.compute_losses(step, view, out, seg_out)
        total = self.weighted_total(losses)
        with phase("backward"):
            late = self.backward(total, losses, out, mode, step)
        with phase("optimizer"):
            self.optimizer_step(out, step)
        with phase("densify"):
            self.densify(step, out)
        if not with_stats:
            return {}
        with torch.no_grad():
            stats = {k: v.detach() for k, v in losses.items()}
            stats["loss"] = total.detach() if late is None else total.detach() + late
            stats["psnr"] = psnr(out.rgb.detach().clamp(0, 1), view.image_float(self.device))
        return stats

    # ----- evaluation, saving --------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, step: int) -> Dict[str, dict]:
        if self.test_views is None:
            scale = resolution_scale(self.info.train[0].camera.width, self.dataset.resolution)
            self.test_views = [v.to_device(self.data_device, camera_device=self.device) for v in
                               load_views(self.info.test, scale, with_masks=False, device="cpu", quiet=True)]
        bg = torch.full((3,), 1.0 if self.dataset.white_background else 0.0, device=self.device)
        result = {}
        for split, views in (("test", self.test_views), ("train", self.views[:: max(1, len(self.views) // 5)][:5])):
            r = evaluate_views(self.model, views, bg, backend=self.pipe.backend)
            if not r:
                continue
            result[split] = r
            if not self.quiet:
                print(f"\n[ITER {step}] Evaluating {split}: L1 {r['l1']:.5f} PSNR {r['psnr']:.3f}", flush=True)
        return result

    def point_cloud_dir(self, step: int) -> str:
        return os.path.join(self.dataset.model_path, "point_cloud", f"iteration_{step}")

    def save(self, step: int) -> None:
        folder = self.point_cloud_dir(step)
        if self.model.num_gaussians == 0:  # saved all the same (an empty PLY), but the user must hear of it
            print(f"[unic-lift] warning: no Gaussians left at iteration {step}: densification pruned them all. "
                  "The initial points may miss the views or be too few: check the scene's points, pass more "
                  "--init_points (0: all), or train longer before pruning (--densify_from_iter)", file=sys.stderr)
        if self.vote_classes:  # --semantic_head vote: the classes the views' masks give each Gaussian, for this save
            from segmentation.labels import semantic_votes

            self.model.params["semantic"] = torch.nn.Parameter(
                semantic_votes(self.model, self.views, self.vote_classes, backend=self.pipe.backend),
                requires_grad=False)
        try:
            self._save_labelled(folder, step)
        finally:
            if self.vote_classes:  # the training model has no semantic parameter (optimisers, checkpoints)
                del self.model.params["semantic"]

    def _save_labelled(self, folder: str, step: int) -> None:
        from segmentation.labels import gaussian_label_columns
        from utils.general_utils import atomic_torch_save

        labels = None
        if self.objective is not None:  # snapped as render.py snaps by default, so the ids agree
            from segmentation.labels import label_votes, save_code_votes

            votes, things = label_votes(self.model, self.views, sigmoid_where=self.seg.sigmoid_where,
                                        thing_classes=self.info.thing_classes, decoder=self.objective.decoder,
                                        backend=self.pipe.backend)
            os.makedirs(folder, exist_ok=True)
            save_code_votes(votes, folder)
            labels = gaussian_label_columns(self.model, self.info.thing_classes, decoder=self.objective.decoder,
                                            valid=votes.valid(), thing_votes=things,
                                            semantic_masks=not self.info.semantic_from_instances)
        if self.objective is not None:
            atomic_torch_save(self.objective.state_dict(), os.path.join(folder, "segmentation.pt"))
        self.model.save_ply(os.path.join(folder, "point_cloud.ply"), labels=labels)  # last: a PLY means complete
        if not self.quiet:
            print(f"\n[ITER {step}] Saved Gaussians to {folder}{_label_summary(labels, self.model)}", flush=True)

    def generators(self) -> Dict[str, torch.Generator]:
        return {"gen": self.gen, "seg_gen": self.seg_gen}

    def scene_fingerprint(self) -> dict:
        """What a checkpoint must match to resume this run: the training views and the feature sizes."""
        dims = {k: int(self.model.feature(k).shape[-1]) if self.model.has_feature(k) else 0
                for k in ("embedding", "semantic")}
        return {"train_views": len(self.views), "embedding_dim": dims["embedding"], "semantic_dim": dims["semantic"],
                "sh_degree": self.model.max_sh_degree}

    def checkpoint_state(self, step: int) -> dict:
        return checkpoint_state(step=step, model=self.model, optimizers=self.optimizers,
                                head_optimizer=self.head_optimizer, decoder_optimizer=self.decoder_optimizer,
                                strategy_state=self.strategy_state, objective=self.objective,
                                generators=self.generators(), stack=self.stack, train_seconds=self.train_seconds,
                                scene=self.scene_fingerprint())

    def save_checkpoint(self, step: int) -> str:
        return save_checkpoint(os.path.join(self.dataset.model_path, f"chkpnt{step}.pth"), self.checkpoint_state(step))

    def save_periodic_checkpoint(self, step: int) -> str:
        return save_periodic_checkpoint(self.dataset.model_path, step, self.checkpoint_state(step))

    def restore(self, path: str) -> str:
        """Loads ``path``, or with ``latest`` the newest loadable checkpoint in the model folder."""
        if path == "latest":
            path, state = load_latest_checkpoint(self.dataset.model_path, self.device,
                                                 warn=lambda m: print(m, file=sys.stderr))
        else:
            state = load_checkpoint(path, self.device)
        check_scene(path, state.get("scene") or {}, self.scene_fingerprint())
        self.model = self._lay_out(GaussianModel.from_state_dict(state["model"], device=self.device))
        if self.objective is not None and state.get("objective") is not None:
            self.objective.load_state_dict(state["objective"])
        self.optimizers = self._init_optimizers()
        for k, o in self.optimizers.items():  # the checkpoint holds them by feature name, whatever the layout
            o.load_state_dict(packed_optimizer_state(state["optimizers"], self.model.packing) if k == PACKED_KEY
                              else state["optimizers"][k])
        if self.head_optimizer is not None and state["head_optimizer"] is not None:
            self.head_optimizer.load_state_dict(state["head_optimizer"])
        if self.decoder_optimizer is not None and state.get("decoder_optimizer") is not None:
            self.decoder_optimizer.load_state_dict(state["decoder_optimizer"])
        self.strategy_state = state["strategy_state"]
        restore_rng(state["rng"], self.generators())
        self.stack = list(state["stack"])
        self.first_iter = state["iteration"] + 1
        self.train_seconds = state.get("train_seconds", 0.0)
        if not self.quiet:
            print(f"Resuming from {path} (iteration {state['iteration']})")
        return path

    # ----- the loop ------------------------------------------------------------------------
    def watched_params(self) -> Dict[str, Tensor]:
        """Every trained tensor, by name, for the non-finite check (packed features by their own names)."""
        named = self.model.named_tensors()
        for owner in ("head", "decoder"):
            module = getattr(self.objective, owner, None) if self.objective is not None else None
            if isinstance(module, torch.nn.Module):
                named.update({f"{owner}.{k}": p for k, p in module.named_parameters()})
        return named

    def stop_nonfinite(self, step: int, last_good: Optional[int], values: Dict[str, float],
                       flags: List[float], names: List[str], cause: str = "") -> None:
        """Training diverged: checkpoint the state if every parameter is still finite, then stop."""
        bad = [n for n, f in zip(names, flags) if f > 0]
        path = None if bad else self.save_checkpoint(step)
        terms = bad_terms(values) + ([f"stopped by: {cause}"] if cause else [])
        raise NonFiniteError(nonfinite_message(step, last_good, terms, bad, path))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self) -> dict:
        from tqdm import tqdm

        a = self.args
        last = self.opt.iterations
        log_every = max(1, getattr(a, "log_interval", 100))
        bar = tqdm(range(self.first_iter, last + 1), desc="Training", disable=self.quiet,
                   initial=self.first_iter - 1, total=last, dynamic_ncols=True)
        log = TrainLog(self.dataset.model_path, resume=self.first_iter > 1)
        ema: Dict[str, float] = {}
        step = self.first_iter - 1
        profile_at, prof = getattr(a, "torch_profile", -1), None
        every_step = getattr(a, "detect_anomaly", False)  # read back every iteration: names the first bad one
        last_good: Optional[int] = None
        seconds0 = self.train_seconds  # training time before this run (resumed), for the CPU estimate
        estimate_at = self.first_iter + 20 if self.device.type == "cpu" and last - self.first_iter > 2000 else -1
        self._sync()
        t0 = time.perf_counter()
        every = getattr(a, "checkpoint_every", 0) or 0
        self.stop_requested = False
        previous_handler = self._install_sigint()
        try:
            for step in bar:
                if step == profile_at:
                    prof = start_torch_profiler(self.device)
                elif prof is not None and step == profile_at + TORCH_PROFILE_STEPS:
                    prof = stop_torch_profiler(prof, os.path.join(self.dataset.model_path, "torch_profile.txt"))
                # The one regular host-device sync: statistics for the bar (every STATS_EVERY
                # iterations, not with --quiet) and the log file (every --log_interval).
                want = every_step or step % log_every == 0 or (not self.quiet and step % STATS_EVERY == 0)
                try:
                    stats = self.train_step(step, with_stats=want)
                except (RuntimeError, ValueError) as e:  # often a NaN met by a later check: say so first
                    watched = self.watched_params()
                    flags = torch.stack(nonfinite_flags(watched)).tolist()
                    if not any(flags):
                        raise
                    bar.close()
                    log.close()
                    self.stop_nonfinite(step, last_good, {}, flags, list(watched), cause=str(e).splitlines()[0])
                if want:  # the non-finite check rides on this read-back: one flag per parameter group
                    watched = self.watched_params()
                    read = torch.stack([*(v.float() for v in stats.values()), *nonfinite_flags(watched)]).tolist()
                    values, flags = dict(zip(stats, read[:len(stats)])), read[len(stats):]
                    if bad_terms(values) or any(flags):
                        bar.close()
                        log.close()
                        self.stop_nonfinite(step, last_good, values, flags, list(watched))
                    last_good = step
                    self.timer.collect()
                    for k, v in values.items():
                        ema[k] = v if k not in ema else 0.6 * ema[k] + 0.4 * v
                    bar.set_postfix({k: f"{v:.4f}" if k != "psnr" else f"{v:.2f}" for k, v in ema.items()}
                                    | {"n": self.model.num_gaussians})
                    if step % log_every == 0:
                        log.write({"iteration": step, **values, "num_gaussians": self.model.num_gaussians,
                                   "seconds": self.train_seconds + time.perf_counter() - t0})
                if step == estimate_at:  # a long CPU run: say how long before it goes on for hours
                    per_it = (self.train_seconds - seconds0 + time.perf_counter() - t0) / (step - self.first_iter + 1)
                    rest = (last - step) * per_it
                    took = f"{rest / 3600:.1f} h" if rest >= 3600 else f"{rest / 60:.1f} min"
                    print(f"\nCPU run: {per_it:.3f} s per iteration so far, so {last - step} more iterations take "
                          f"at least {took} (densification makes later ones slower); "
                          f"for a first try use a short schedule, e.g. --iterations 3000 -r 2 --init_points 10000",
                          file=sys.stderr, flush=True)
                checkpoint_now = (step in a.test_iterations or step in a.save_iterations
                                  or step in a.checkpoint_iterations)
                if checkpoint_now:  # evaluation and I/O are not training time
                    self._sync()
                    self.train_seconds += time.perf_counter() - t0
                    if step in a.test_iterations:
                        self.eval_history[step] = self.evaluate(step)
                    if step in a.save_iterations:
                        self.save(step)
                    if step in a.checkpoint_iterations:
                        self.save_checkpoint(step)
                    t0 = time.perf_counter()
                if every > 0 and step % every == 0 and step < last:
                    self._sync()
                    self.train_seconds += time.perf_counter() - t0
                    self.save_periodic_checkpoint(step)
                    t0 = time.perf_counter()
                if self.stop_requested:  # Ctrl-C: step `step` is complete; save it and stop
                    bar.close()
                    log.close()
                    self._sync()
                    self.train_seconds += time.perf_counter() - t0
                    path = self.save_checkpoint(step)
                    print(f"\nInterrupted after iteration {step}; checkpoint written. Resume with:\n"
                          f"  python train.py {' '.join(sys.argv[1:])} --start_checkpoint {path}", file=sys.stderr)
                    raise SystemExit(130)
        except KeyboardInterrupt:  # a second Ctrl-C: the step may be half-applied, so nothing is saved
            bar.close()
            log.close()
            print(f"\nAborted during iteration {step} (second Ctrl-C); no checkpoint of it written. Resume from "
                  f"the last one with --start_checkpoint latest", file=sys.stderr)
            raise SystemExit(130)
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        self._sync()
        self.train_seconds += time.perf_counter() - t0
        bar.close()
        log.close()
        return self.finish(step)

    def _install_sigint(self):
        """Ctrl-C sets ``stop_requested`` (checked after each step); a second one interrupts at once.
        Returns the previous handler, or None where handlers cannot be set (not the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigint(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            print("\nCtrl-C: finishing this iteration, then saving a checkpoint (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)

        return signal.signal(signal.SIGINT, on_sigint)

    def finish(self, step: int) -> dict:
        cluster_seconds, clustering = 0.0, None
        if self.objective is not None and self.seg.method == "contrastive_lift":
            from segmentation.labels import fit_contrastive_lift_clusters

            clustering = fit_contrastive_lift_clusters(
                self.views, self.model, self.objective, self.point_cloud_dir(step), backend=self.pipe.backend,
                thing_classes=self.info.thing_classes, log=None if self.quiet else print)
            cluster_seconds = clustering["cluster_seconds"]
        timed = step - self.first_iter + 1
        stats = {"train_seconds": self.train_seconds, "cluster_seconds": cluster_seconds,
                 "iterations_per_second": timed / self.train_seconds if self.train_seconds > 0 and timed > 0 else None,
                 "peak_gpu_mem_mb": (torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None),
                 "num_gaussians": self.model.num_gaussians, "iterations": step,
                 "device": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
                 "data_device": str(self.data_device), "optimizer": self.optimizer_kind,
                 "seg_raster": self.raster_mode(step) if self.objective is not None else None,
                 "step_kernels": self._step_kernels(),
                 "feature_layout": "packed" if self.model.packing is not None else "separate",
                 "l3d_grad": "kernel" if self.l3d_after_backward else "graph" if self.l3d_in_stage else "autograd",
                 "loss_graph": (None if self.stages is None else {
                     "graphed": len(self.stages.graphed), "failed": self.stages.failed,
                     "direct": self.loss_direct}),
                 "optimizer_graph": (None if self.adam_graph is None else {
                     "replays": self.adam_graph.replays, "captures": self.adam_graph.captures,
                     "eager": self.adam_graph.eager, "failed": self.adam_graph.failed}),
                 "eval": {str(k): v for k, v in self.eval_history.items()}}
        if clustering is not None:  # contrastive_lift: the kept min_cluster_size and, when tuned, every candidate
            stats.update({"cluster_tune_seconds": clustering["tune_seconds"],
                          "min_cluster_size": clustering["min_cluster_size"], "clusters": clustering["clusters"],
                          "cluster_tuning": clustering["tuning"]})
        if self.timer.enabled:
            stats["profile"] = self.timer.summary()
            stats["profile_iterations"] = timed
            if not self.quiet:
                print("\n" + PhaseTimer.markdown(stats["profile"], timed), flush=True)
        atomic_write_text(os.path.join(self.dataset.model_path, "train_stats.json"), json.dumps(stats, indent=2))
        return stats


def write_scene_files(model_path: str, info: SceneInfo) -> None:
    """cameras.json and input.ply as 3DGS writes them."""
    from utils.ply import write_ply

    cams = []
    for uid, frame in enumerate(info.train + info.test):
        c = frame.camera
        c2w = np.linalg.inv(c.world_view)
        cams.append({"id": uid, "img_name": c.name, "width": c.width, "height": c.height,
                     "position": c2w[:3, 3].tolist(), "rotation": c2w[:3, :3].tolist(),
                     "fy": float(c.K[1, 1]), "fx": float(c.K[0, 0])})
    atomic_write_text(os.path.join(model_path, "cameras.json"), json.dumps(cams))
    if info.points is not None and len(info.points):
        pts = np.asarray(info.points, np.float32)
        rgb = np.clip(np.asarray(info.colors if info.colors is not None else np.full_like(pts, 0.5)) * 255, 0, 255)
        cols = {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2]}
        cols.update({k: np.zeros(len(pts), np.float32) for k in ("nx", "ny", "nz")})
        cols.update({k: rgb[:, i].astype(np.uint8) for i, k in enumerate(("red", "green", "blue"))})
        write_ply(os.path.join(model_path, "input.ply"), cols)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train 3DGS + UniC-Lift instance embeddings")
    ModelParams.add_to(parser, "Model")
    PipelineParams.add_to(parser, "Pipeline")
    OptimizationParams.add_to(parser, "Optimization")
    SegmentationParams.add_to(parser, "Segmentation")
    parser.add_argument("--test_iterations", nargs="+", type=int, default=[7_000, 30_000])
    parser.add_argument("--save_iterations", nargs="+", type=int, default=[7_000, 30_000])
    parser.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[])
    parser.add_argument("--start_checkpoint", type=str, default=None,
                        help="resume from this chkpnt<N>.pth, or 'latest': the newest loadable one in -m")
    parser.add_argument("--checkpoint_every", type=int, default=0, metavar="N",
                        help="also write a checkpoint every N iterations (the latest two are kept); 0: off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="time each stage of the step (CUDA events on the GPU); summary in train_stats.json")
    parser.add_argument("--torch_profile", type=int, default=-1, metavar="ITER",
                        help="record torch.profiler over iterations ITER..ITER+19; the kernel table goes to "
                             "<model>/torch_profile.txt (-1: off)")
    parser.add_argument("--detect_anomaly", action="store_true",
                        help="check for NaN/inf every iteration and turn on torch.autograd anomaly detection "
                             "(names the backward op that made the first NaN; slow)")
    parser.add_argument("--log_interval", type=int, default=100,
                        help="write the named loss terms to <model>/train_log.jsonl every this many iterations")
    return parser


def emb_dim_problem(emb_dim: int) -> Optional[str]:
    """The one-line error for an embedding width the label files cannot hold, or None."""
    from segmentation.decode import MAX_EMB_DIM

    if 1 <= emb_dim <= MAX_EMB_DIM:
        return None
    return (f"--emb_dim {emb_dim}: must be 1..{MAX_EMB_DIM} (instance id = code + 1 is stored as uint16, so "
            f"16 bits would wrap); pass --emb_dim {MAX_EMB_DIM} or less")


def check_args(args: argparse.Namespace) -> None:
    """Every flag value checked before anything is read or written (one-line SceneError each)."""

    if not args.source_path:
        raise SceneError("no scene given: pass -s SCENE_FOLDER")
    if args.iterations < 1:
        raise SceneError(f"--iterations {args.iterations}: train at least 1 iteration; pass e.g. --iterations 3000")
    checks = [
        (0.0 < args.mask_fraction <= 1.0, f"--mask_fraction {args.mask_fraction}: must be in (0, 1] (the share of "
         "training views whose masks are used); pass e.g. 0.1, or --seg_dir '' to train colour only"),
        (0.0 <= args.mask_view_share < 1.0, f"--mask_view_share {args.mask_view_share}: must be in [0, 1) (the "
         "share of iterations drawn from views with masks); pass e.g. 0.5, or 0 to draw every view equally"),
        (0.0 < args.mask_downscale <= 1.0, f"--mask_downscale {args.mask_downscale}: must be in (0, 1] (the scale "
         "training views are loaded at); pass e.g. 0.5"),
        (not emb_dim_problem(args.emb_dim), emb_dim_problem(args.emb_dim)),
        (args.semantic_dim >= 0, f"--semantic_dim {args.semantic_dim}: negative; pass 0 (the channels left) or a "
         "positive width, e.g. --semantic_dim 8"),
        (0 <= args.sh_degree <= 3, f"--sh_degree {args.sh_degree}: must be 0..3; pass e.g. --sh_degree 3"),
        (args.resolution == -1 or args.resolution > 0, f"-r {args.resolution}: not a resolution; use 1, 2, 4 or 8 "
         "(downscale), a target width in pixels, or -1 (width capped at 1600)"),
        (args.init_points >= 0, f"--init_points {args.init_points}: negative; pass 0 (all points) or a positive cap"),
        (args.checkpoint_every >= 0, f"--checkpoint_every {args.checkpoint_every}: negative; pass 0 (off) or a "
         "positive number of iterations"),
        (args.log_interval >= 1, f"--log_interval {args.log_interval}: must be at least 1; pass e.g. 100"),
        (args.seg_interval >= 1, f"--seg_interval {args.seg_interval}: must be at least 1; pass 1 (every "
         "iteration) or e.g. 2"),
        (0.0 < args.seg_scale <= 1.0, f"--seg_scale {args.seg_scale}: must be in (0, 1] (the scale the features "
         "and their masks are rendered at); pass e.g. 0.5, or 1 for full size"),
        (args.cluster_tune_workers >= 0, f"--cluster_tune_workers {args.cluster_tune_workers}: negative; pass 0 "
         "(one process per candidate, up to the cores but one) or a positive count, e.g. 1 (one after another)"),
        (args.seg_scale == 1.0 or not args.seg_geometry_grad, f"--seg_scale {args.seg_scale} renders the features "
         "of the geometry-detached model; it does not combine with --seg_geometry_grad: drop one of the two"),
    ]
    for ok, message in checks:
        if not ok:
            raise SceneError(message)
    for flag, name in (("--device", args.device), ("--data_device", args.data_device)):
        if name == "auto":
            continue
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise SceneError(f"{flag} {name}: not a device; use auto, cpu or cuda") from None
        if dev.type not in ("cpu", "cuda"):
            raise SceneError(f"{flag} {name}: not supported; use auto, cpu or cuda")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SceneError(f"{flag} {name}: no CUDA GPU is visible to torch; use {flag} cpu (or auto)")
    try:
        resolve_optimizer(args.optimizer, pick_device(args.device))
    except ValueError as e:
        raise SceneError(str(e)) from None
    check_output_folder(args.model_path)


def check_output_folder(model_path: str) -> None:
    """``-m`` must be a folder we can create and write: not a file, not under a file, writable."""
    path = os.path.abspath(model_path)
    probe = path
    while not os.path.exists(probe):  # the deepest part of the path that exists
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "is a file" if probe == path else f"lies under the file {probe}"
        raise SceneError(f"{model_path}: output folder {where}; pass another -m")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SceneError(f"{probe}: no permission to write the output folder {model_path} there; pass another -m")


def prepare_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model_path and args.source_path:
        args.model_path = os.path.join("output", os.path.basename(os.path.normpath(args.source_path)))
    check_args(args)
    note = fit_schedule(args, explicit_flags(parser, argv))
    if note and not args.quiet:
        print(note)
    args.save_iterations = sorted(set(args.save_iterations) | {args.iterations})
    warning = reset_warning(args)
    if warning:
        print(warning, file=sys.stderr)
    args.source_path = os.path.abspath(args.source_path)
    return args


def training(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    torch.autograd.set_detect_anomaly(bool(getattr(args, "detect_anomaly", False)))
    info = read_scene_for(args, allow_missing_masks=getattr(args, "mask_fraction", 1.0) < 1.0)
    if os.path.abspath(args.model_path) == os.path.abspath(args.source_path):
        raise SceneError(f"{args.model_path}: the output folder is the scene folder; pass another -m "
                         f"(train.py never writes into the dataset)")
    try:
        os.makedirs(args.model_path, exist_ok=True)
    except OSError as e:
        raise SceneError(f"{args.model_path}: cannot create the output folder ({e.strerror}); pass another -m") from None
    lock = acquire_lock(args.model_path)  # before anything is written into the folder
    try:
        return _training_locked(args, info)
    finally:
        release_lock(lock)


RENDER_CHANNELS = 32  # gsplat's kernels come in 32 and 64 channels: 37 (22 logits) pads to 64


def resolve_semantic_head(args: argparse.Namespace, info: SceneInfo) -> None:
    """``--semantic_head auto`` -> logits or embed, and ``--semantic_dim 0`` -> the channels left.

    Colour (3) + embedding (d) + semantic channels are rasterised in one pass; gsplat pads 33..64
    channels to its 64-wide kernels, which doubles the feature backward (benchmarks/RESULTS.md,
    section 6a). So C logits when they fit in 32 channels (Messy-Rooms and instance-only scenes:
    C = 2), else a (32 - 3 - d)-wide semantic embedding decoded by a Linear (PanopLi, C = 22, d = 12:
    17 channels; section 7: 69 vs 56 it/s, PQ^scene and mIoU unchanged)."""
    left = max(1, RENDER_CHANNELS - 3 - int(getattr(args, "emb_dim", 12)))
    if getattr(args, "semantic_head", "logits") == "auto":
        c = info.num_classes or 0
        args.semantic_head = "logits" if c <= left else "embed"
    if args.semantic_head == "embed" and not getattr(args, "semantic_dim", 0):
        args.semantic_dim = left


def _training_locked(args: argparse.Namespace, info: SceneInfo) -> dict:
    remove_stale_tmp(args.model_path)  # left by a write that was killed (we hold the lock: no other writer)
    if not args.quiet:
        print(f"Output folder: {args.model_path} ({info.format} scene, {len(info.train)} train / "
              f"{len(info.test)} test views)")
    resolve_semantic_head(args, info)  # before cfg_args: render.py and tools read the resolved head
    # Views, model and checkpoint first: a run refused for any of them leaves the folder's files
    # (cfg_args of an earlier model above all) as they were.
    trainer = Trainer(args, info)
    if args.start_checkpoint:
        trainer.restore(args.start_checkpoint)
    save_cfg_args(args.model_path, args)
    write_scene_files(args.model_path, info)
    stats = trainer.run()
    if not args.quiet:
        print(f"\nTraining complete: {stats['num_gaussians']} Gaussians, {stats['train_seconds']:.1f} s")
    return stats


def main(argv=None) -> int:
    try:
        training(prepare_args(argv))
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
