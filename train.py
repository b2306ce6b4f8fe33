"""Train a 3D Gaussian Splatting scene, and with instance masks, its UniC-Lift embedding.

    python train.py -s data/room_0 -m output/room_0 --eval
    python train.py -s data/room_0 --seg_dir m2f_instance          # colour + segmentation
    python train.py -s SCENE -m MODEL --start_checkpoint MODEL/chkpnt7000.pth   # resume

One iteration: pick a view, render it, compute the named losses, step the optimisers, let the
densification strategy grow and prune. Everything random draws from generators saved in the
checkpoints, so a resumed run matches an uninterrupted one (exactly, on the CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from arguments import (ModelParams, OptimizationParams, PipelineParams, SegmentationParams,
                       save_cfg_args)
from gaussian_renderer import render
from scene import View, load_views, resolution_scale, select_mask_views
from scene.cameras import SceneError, SceneInfo
from scene.dataset_readers import read_scene_for  # noqa: F401  (re-exported for old imports)
from scene.gaussian_model import GaussianModel
from utils.general_utils import (atomic_torch_save, atomic_write_text, exponential_lr, pick_device,
                                 seed_everything)
from utils.loss_utils import l1_loss, photometric_loss, psnr

CHECKPOINT_VERSION = 1


class GeometryDetached:
    """A read-only view of a model whose geometry carries no gradient (for segmentation renders
    that must not move means, scales, rotations or opacities)."""

    def __init__(self, model: GaussianModel):
        self.model = model
        self.active_sh_degree, self.max_sh_degree = model.active_sh_degree, model.max_sh_degree
        self.device = model.device

    def get_means(self): return self.model.get_means().detach()
    def get_scales(self): return self.model.get_scales().detach()
    def get_quats(self): return self.model.get_quats().detach()
    def get_opacities(self): return self.model.get_opacities().detach()
    def get_sh(self): return self.model.get_sh().detach()


def make_strategy(opt: OptimizationParams, verbose: bool = False):
    """gsplat's DefaultStrategy with the 3DGS schedule, and the opacity reset that 1.5.3 never
    fires (its ``step % reset_every == 0 & step > 0`` test is always False) done by hand."""
    from gsplat.strategy import DefaultStrategy
    from gsplat.strategy.ops import reset_opa

    class Densifier(DefaultStrategy):
        def step_post_backward(self, params, optimizers, state, step, info, packed=False):
            super().step_post_backward(params, optimizers, state, step, info, packed=packed)
            if 0 < step < self.refine_stop_iter and step % self.reset_every == 0:
                reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

    return Densifier(
        grow_grad2d=opt.densify_grad_threshold, grow_scale3d=opt.percent_dense,
        refine_start_iter=opt.densify_from_iter, refine_stop_iter=opt.densify_until_iter,
        reset_every=opt.opacity_reset_interval, refine_every=opt.densification_interval,
        verbose=verbose)


class Trainer:
    def __init__(self, args: argparse.Namespace, scene_info: SceneInfo):
        self.args = args
        self.dataset, self.opt = ModelParams.extract(args), OptimizationParams.extract(args)
        self.pipe, self.seg = PipelineParams.extract(args), SegmentationParams.extract(args)
        for name in ("triplet_from_iter", "l3d_from_iter"):  # -1: when densification stops
            if getattr(self.seg, name) < 0:
                setattr(self.seg, name, self.opt.densify_until_iter)
        self.info = scene_info
        self.device = pick_device(self.dataset.device)
        self.gen = torch.Generator().manual_seed(args.seed)  # camera order, backgrounds
        self.seg_gen = torch.Generator(device=self.device).manual_seed(args.seed + 1)  # loss sampling
        self.quiet = args.quiet
        self.views = self._load_train_views()
        self.test_views: Optional[List[View]] = None
        self.has_masks = any(v.instance is not None for v in self.views)
        self.model = self._init_model()
        self.objective = self._init_objective()
        self.optimizers = self._init_optimizers()
        self.strategy = make_strategy(self.opt)
        self.strategy.check_sanity(self.model.params, self.optimizers)
        self.strategy_state = self.strategy.initialize_state(scene_scale=scene_info.extent)
        self.stack: List[int] = []
        self.first_iter = 1
        self.train_seconds = 0.0
        self.eval_history: Dict[int, dict] = {}

    # ----- setup ---------------------------------------------------------------------------
    def _load_train_views(self) -> List[View]:
        frames = self.info.train
        if not frames:
            raise SceneError(f"{self.info.path}: no training views")
        scale = resolution_scale(frames[0].camera.width, self.dataset.resolution) * self.seg.mask_downscale
        views = load_views(frames, scale, device=self.dataset.data_device, quiet=self.quiet,
                           desc="Loading training views")
        if self.info.semantic_from_instances:  # instance masks only: fg/bg target, object where id > 0
            for view in views:
                view.semantic = (view.instance > 0).to(torch.int8) if view.instance is not None else None
        if self.seg.mask_fraction < 1.0:
            keep = select_mask_views(len(views), self.seg.mask_fraction, self.args.seed)
            for view, k in zip(views, keep):
                if not k:
                    view.instance = view.semantic = view.confidence = None
        return views

    def _init_model(self) -> GaussianModel:
        features: Dict[str, int] = {}
        if self.has_masks:
            from segmentation.decode import MAX_EMB_DIM

            if not 1 <= self.seg.emb_dim <= MAX_EMB_DIM:
                raise SceneError(f"--emb_dim {self.seg.emb_dim}: must be 1..{MAX_EMB_DIM} (instance id = code + 1 "
                                 f"is stored as uint16, so 16 bits would wrap); pass --emb_dim {MAX_EMB_DIM} or less")
            features["embedding"] = self.seg.emb_dim
            if self.seg.use_semantic and self.info.num_classes and any(v.semantic is not None for v in self.views):
                embed = self.seg.semantic_head == "embed"  # embed: semantic_dim channels, decoded by a Linear
                if embed and self.seg.semantic_dim < 1:
                    raise SceneError(f"--semantic_dim {self.seg.semantic_dim}: must be at least 1")
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
        if "semantic" in model.params:
            model.params["semantic"].data.mul_(0.1)  # near-uniform class logits at the start
        return model

    def _init_objective(self):
        if not self.has_masks:
            return None
        from segmentation.objective import SegmentationObjective

        num_classes = self.info.num_classes if "semantic" in self.model.params else None
        return SegmentationObjective(self.seg, num_classes, self.device, generator=self.seg_gen)

    def _init_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        o, s = self.opt, self.seg
        lrs = {"means": o.position_lr_init * self.info.extent, "scales": o.scaling_lr, "quats": o.rotation_lr,
               "opacities": o.opacity_lr, "sh0": o.feature_lr, "shN": o.feature_lr / 20.0,
               "embedding": s.embedding_lr, "semantic": s.semantic_lr}
        opts = {name: torch.optim.Adam([{"params": p, "lr": lrs[name], "name": name}], eps=1e-15)
                for name, p in self.model.params.items()}
        if self.objective is not None and self.objective.head is not None and any(
                p.requires_grad for p in self.objective.head.parameters()):
            self.head_optimizer = torch.optim.Adam(self.objective.head.parameters(), lr=1e-3)
        else:
            self.head_optimizer = None
        decoder = self.objective.decoder if self.objective is not None else None  # --semantic_head embed
        self.decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3) if decoder is not None else None
        return opts

    # ----- one iteration -------------------------------------------------------------------
    def next_view(self) -> View:
        if not self.stack:
            self.stack = torch.randperm(len(self.views), generator=self.gen).tolist()
        return self.views[self.stack.pop()]

    def update_learning_rate(self, step: int) -> None:
        o = self.opt
        lr = exponential_lr(step, o.position_lr_init * self.info.extent, o.position_lr_final * self.info.extent,
                            o.position_lr_max_steps, delay_mult=o.position_lr_delay_mult)
        for group in self.optimizers["means"].param_groups:
            group["lr"] = lr

    def background(self) -> Tensor:
        if self.pipe.random_background:
            return torch.rand(3, generator=self.gen).to(self.device)
        return torch.full((3,), 1.0 if self.dataset.white_background else 0.0, device=self.device)

    def train_step(self, step: int) -> Dict[str, Tensor]:
        self.update_learning_rate(step)
        if step % self.opt.sh_increase_interval == 0:
            self.model.oneup_sh_degree()
        view = self.next_view()
        cam, bg = view.camera, self.background()
        gt = view.image_float(self.device)  # [H, W, 3]
        seg_on = self.objective is not None and (view.instance is not None or view.semantic is not None
                                                 or step >= self.seg.l3d_from_iter)
        densifying = step < self.opt.densify_until_iter
        joint = seg_on and (self.seg.seg_raster == "joint" or (self.seg.seg_geometry_grad and not densifying))
        feats = self.objective.features(self.model) if seg_on else None
        out = render(cam, self.model, bg=bg, features=feats if joint else None, backend=self.pipe.backend)
        if seg_on and not joint:
            seg_model = self.model if self.seg.seg_geometry_grad else GeometryDetached(self.model)
            seg_out = render(cam, seg_model, features=feats, with_rgb=False, backend=self.pipe.backend)
        else:
            seg_out = out
        self.strategy.step_pre_backward(self.model.params, self.optimizers, self.strategy_state, step, out.info)

        losses = {"render": photometric_loss(out.rgb, gt, self.opt.lambda_dssim)}
        weights = {"render": 1.0}
        if seg_on:
            losses.update(self.objective.losses(step, seg_out.features, view, self.model))
            weights.update(self.objective.weights())
        total = sum(weights[k] * v for k, v in losses.items())
        means2d = out.info.get("means2d")
        if joint and densifying and len(losses) > 1 and means2d is not None and means2d.requires_grad:
            # Densification must see the rendering loss's screen-space gradient only.
            (render_grad,) = torch.autograd.grad(losses["render"], means2d, retain_graph=True)
            total.backward()
            means2d.grad = render_grad
        else:
            total.backward()

        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.head_optimizer is not None:
            self.head_optimizer.step()
            self.head_optimizer.zero_grad(set_to_none=True)
        if self.decoder_optimizer is not None:
            self.decoder_optimizer.step()
            self.decoder_optimizer.zero_grad(set_to_none=True)
        self.strategy.step_post_backward(self.model.params, self.optimizers, self.strategy_state, step, out.info)
        with torch.no_grad():  # tensors: read back to the host only when the bar is updated
            stats = {k: v.detach() for k, v in losses.items()}
            stats["loss"] = total.detach()
            stats["psnr"] = psnr(out.rgb.detach().clamp(0, 1), gt)
        return stats

    # ----- evaluation, saving --------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, step: int) -> Dict[str, float]:
        if self.test_views is None:
            scale = resolution_scale(self.info.train[0].camera.width, self.dataset.resolution)
            self.test_views = load_views(self.info.test, scale, with_masks=False, device=self.dataset.data_device,
                                         quiet=True)
        result = {}
        for split, views in (("test", self.test_views), ("train", self.views[:: max(1, len(self.views) // 5)][:5])):
            if not views:
                continue
            l1s, psnrs = [], []
            for view in views:
                bg = torch.full((3,), 1.0 if self.dataset.white_background else 0.0, device=self.device)
                img = render(view.camera, self.model, bg=bg, backend=self.pipe.backend).rgb.clamp(0, 1)
                gt = view.image_float(self.device)
                l1s.append(float(l1_loss(img, gt)))
                psnrs.append(float(psnr(img, gt)))
            result[split] = {"l1": float(np.mean(l1s)), "psnr": float(np.mean(psnrs))}
            if not self.quiet:
                print(f"\n[ITER {step}] Evaluating {split}: L1 {result[split]['l1']:.5f} PSNR {result[split]['psnr']:.3f}")
        return result

    def point_cloud_dir(self, step: int) -> str:
        return os.path.join(self.dataset.model_path, "point_cloud", f"iteration_{step}")

    def save(self, step: int) -> None:
        from segmentation.labels import gaussian_label_columns

        folder = self.point_cloud_dir(step)
        labels = None
        if self.objective is not None:  # snapped as render.py snaps by default, so the ids agree
            from segmentation.labels import save_code_votes, training_code_votes

            votes = training_code_votes(self.model, self.views, lambda v: render(
                v.camera, self.model, features=self.objective.features(self.model), with_rgb=False,
                backend=self.pipe.backend).features["embedding"], self.seg.sigmoid_where)
            os.makedirs(folder, exist_ok=True)
            save_code_votes(votes, folder)
            labels = gaussian_label_columns(self.model, self.info.thing_classes, decoder=self.objective.decoder,
                                            valid=votes.valid())
        self.model.save_ply(os.path.join(folder, "point_cloud.ply"), labels=labels)
        if self.objective is not None:
            atomic_torch_save(self.objective.state_dict(), os.path.join(folder, "segmentation.pt"))
        if not self.quiet:
            print(f"\n[ITER {step}] Saved Gaussians to {folder}")

    def checkpoint_state(self, step: int) -> dict:
        return {
            "format_version": CHECKPOINT_VERSION, "iteration": step,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "head_optimizer": self.head_optimizer.state_dict() if self.head_optimizer else None,
            "decoder_optimizer": self.decoder_optimizer.state_dict() if self.decoder_optimizer else None,
            "strategy_state": self.strategy_state,
            "objective": self.objective.state_dict() if self.objective else None,
            "rng": {"gen": self.gen.get_state(), "seg_gen": self.seg_gen.get_state(),
                    "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "stack": list(self.stack), "train_seconds": self.train_seconds,
        }

    def save_checkpoint(self, step: int) -> str:
        path = os.path.join(self.dataset.model_path, f"chkpnt{step}.pth")
        atomic_torch_save(self.checkpoint_state(step), path)
        return path

    def restore(self, path: str) -> None:
        if not os.path.isfile(path):
            raise SceneError(f"{path}: no such checkpoint; list the chkpnt<N>.pth files in the model folder")
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("format_version") != CHECKPOINT_VERSION:
            raise SceneError(f"{path}: checkpoint format {state.get('format_version')!r} is not "
                             f"{CHECKPOINT_VERSION}; it was written by another version of train.py")
        self.model = GaussianModel.from_state_dict(state["model"], device=self.device)
        if self.objective is not None and state.get("objective") is not None:
            self.objective.load_state_dict(state["objective"])
        self.optimizers = self._init_optimizers()
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        if self.head_optimizer is not None and state["head_optimizer"] is not None:
            self.head_optimizer.load_state_dict(state["head_optimizer"])
        if self.decoder_optimizer is not None and state.get("decoder_optimizer") is not None:
            self.decoder_optimizer.load_state_dict(state["decoder_optimizer"])
        self.strategy_state = state["strategy_state"]
        rng = state["rng"]
        self.gen.set_state(rng["gen"])
        self.seg_gen.set_state(rng["seg_gen"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.stack = list(state["stack"])
        self.first_iter = state["iteration"] + 1
        self.train_seconds = state.get("train_seconds", 0.0)

    # ----- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm import tqdm

        a = self.args
        last = self.opt.iterations
        bar = tqdm(range(self.first_iter, last + 1), desc="Training", disable=self.quiet,
                   initial=self.first_iter - 1, total=last, dynamic_ncols=True)
        ema: Dict[str, float] = {}
        step = self.first_iter - 1
        try:
            for step in bar:
                t0 = time.perf_counter()
                stats = self.train_step(step)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                self.train_seconds += time.perf_counter() - t0
                if step % 10 == 0:  # one host-device sync every 10 iterations, not every one
                    for k, v in stats.items():
                        v = float(v)
                        ema[k] = v if k not in ema else 0.6 * ema[k] + 0.4 * v
                    bar.set_postfix(loss=f"{ema['loss']:.4f}", psnr=f"{ema['psnr']:.2f}",
                                    n=self.model.num_gaussians)
                if step in a.test_iterations:
                    self.eval_history[step] = self.evaluate(step)
                if step in a.save_iterations:
                    self.save(step)
                if step in a.checkpoint_iterations:
                    self.save_checkpoint(step)
        except KeyboardInterrupt:
            bar.close()
            path = self.save_checkpoint(step)
            print(f"\nInterrupted at iteration {step}; checkpoint written. Resume with:\n"
                  f"  python train.py {' '.join(sys.argv[1:])} --start_checkpoint {path}", file=sys.stderr)
            raise SystemExit(130)
        bar.close()
        return self.finish(step)

    def finish(self, step: int) -> dict:
        cluster_seconds = 0.0
        if self.objective is not None and self.seg.method == "contrastive_lift":
            from segmentation.labels import fit_contrastive_lift_clusters

            t0 = time.perf_counter()
            fit_contrastive_lift_clusters(self, self.point_cloud_dir(step))
            cluster_seconds = time.perf_counter() - t0
        stats = {"train_seconds": self.train_seconds, "cluster_seconds": cluster_seconds,
                 "peak_gpu_mem_mb": (torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None),
                 "num_gaussians": self.model.num_gaussians, "iterations": step,
                 "device": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
                 "eval": {str(k): v for k, v in self.eval_history.items()}}
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
    parser.add_argument("--start_checkpoint", type=str, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    return parser


def prepare_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not args.source_path:
        raise SceneError("no scene given: pass -s SCENE_FOLDER")
    args.save_iterations = sorted(set(args.save_iterations) | {args.iterations})
    args.source_path = os.path.abspath(args.source_path)
    if not args.model_path:
        args.model_path = os.path.join("output", os.path.basename(os.path.normpath(args.source_path)))
    return args


def training(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    info = read_scene_for(args, allow_missing_masks=getattr(args, "mask_fraction", 1.0) < 1.0)
    os.makedirs(args.model_path, exist_ok=True)
    if not args.quiet:
        print(f"Output folder: {args.model_path} ({info.format} scene, {len(info.train)} train / "
              f"{len(info.test)} test views)")
    save_cfg_args(args.model_path, args)
    write_scene_files(args.model_path, info)
    trainer = Trainer(args, info)
    if args.start_checkpoint:
        trainer.restore(args.start_checkpoint)
    stats = trainer.run()
    if not args.quiet:
        print(f"\nTraining complete: {stats['num_gaussians']} Gaussians, {stats['train_seconds']:.1f} s")
    return stats


def main(argv=None) -> int:
    try:
        training(prepare_args(argv))
    except SceneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
