"""Command-line groups, one dataclass per concern (the 3DGS flags users know, plus ours).

Each group is a dataclass whose fields become ``--field`` flags (a one-letter alias where the
3DGS command line has one). ``extract(args)`` pulls a group back out of a parsed namespace.
The saved ``cfg_args`` file uses 3DGS's ``Namespace(...)`` text so existing tools read it;
we read it back with a literal parser, never ``eval``.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

SHORT_FLAGS = {"source_path": "-s", "model_path": "-m", "resolution": "-r"}


class GroupMixin:
    """Adds a dataclass's fields to an argparse parser and reads them back."""

    @classmethod
    def add_to(cls, parser: argparse.ArgumentParser, title: Optional[str] = None):
        group = parser.add_argument_group(title or cls.__name__)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            names = [f"--{f.name}"] + ([SHORT_FLAGS[f.name]] if f.name in SHORT_FLAGS else [])
            help_text = f.metadata.get("help", "")
            if isinstance(default, bool):
                group.add_argument(*names, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            elif isinstance(default, list):
                group.add_argument(*names, nargs="+", type=int, default=default, help=help_text)
            else:
                kind = f.metadata.get("type", type(default) if default is not None else str)
                kwargs = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
                group.add_argument(*names, type=kind, default=default, help=help_text, **kwargs)
        return cls

    @classmethod
    def extract(cls, args) -> "GroupMixin":
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(**values)


def _f(default, help: str = "", **meta):
    meta["help"] = help
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelParams(GroupMixin):
    source_path: str = _f("", "scene folder (COLMAP, NeRF-synthetic, PanopLi or Messy-Rooms)")
    model_path: str = _f("", "output folder (default: output/<scene name>)")
    resolution: int = _f(-1, "1/2/4/8: downscale factor; other >0: target width; -1: cap width at 1600")
    white_background: bool = _f(False, "white instead of black background")
    data_device: str = _f("auto", "where training images and prepared segmentation targets live: auto (the "
                                  "training GPU when they take < 25%% of its free memory, else the host) | cpu | cuda")
    eval: bool = _f(False, "hold out test views (COLMAP: every 8th; PanopLi/Messy use their split always)")
    sh_degree: int = _f(3, "maximum spherical-harmonics degree")
    seg_dir: Optional[str] = _f(None, "subfolder of per-view inconsistent instance masks (default per format)", type=str)
    sem_dir: Optional[str] = _f(None, "subfolder of per-view semantic masks (default per format)", type=str)
    device: str = _f("auto", "auto | cpu | cuda")
    init_points: int = _f(0, "keep at most this many initial points (random subset; 0 = all). "
                             "Small values make CPU runs fast")


@dataclass
class PipelineParams(GroupMixin):
    backend: str = _f("auto", "rasterizer: auto (gsplat on CUDA, torch on CPU) | gsplat | torch",
                      choices=["auto", "gsplat", "torch"])
    random_background: bool = _f(False, "random background colour per iteration")
    loss_graph: str = _f("auto", "the per-view losses as ONE replayed CUDA graph (their weighted sum's gradients "
                         "computed in the replay): auto (direct where graphed, i.e. on CUDA) | on (the sum's backward node hands the "
                         "gradients out) | direct (the trainer hands them straight to the backward: no node and no "
                         "multiplication per input; with --l3d_grad graph 3-10 %% faster than on over whole runs on "
                         "an H200, RESULTS.md 35) | off. Graphed on CUDA only; the CPU runs the same steps eagerly",
                         choices=["auto", "on", "direct", "off"])
    feature_backward: str = _f("auto", "kernel for the segmentation features' gradient on CUDA: auto (fused where nvcc "
                               "builds it and the GPU's shared memory holds its block, else tile_sparse, else gsplat) | tile (a weights-times-gradient product per tile, "
                               "gaussian_renderer/feature_backward.py; built with nvcc on first use) | tile_sparse (the same "
                               "product over each batch's active pixels only, same result) | fused (one kernel for the "
                               "geometry's and the features' backward: the weights are computed once; 3 colour + at most "
                               "32 feature channels, else tile_sparse) | gsplat (its full backward, geometry gradients "
                               "discarded)", choices=["auto", "tile", "tile_sparse", "fused", "gsplat"])
    feature_layout: str = _f("auto", "how the per-Gaussian embedding and semantic logits are stored while training: "
                             "separate (one parameter each; the render concatenates them after the colour) | packed "
                             "(one parameter [N, 3 + d + C] whose first 3 columns take the colour in place: no "
                             "concatenation forward, no gradient copies backward; needs --embedding_lr = --semantic_lr "
                             "and --sigmoid_where rendered) | auto (packed where the run allows it, else separate). "
                             "Same results either way; checkpoints and PLYs store features by name",
                             choices=["auto", "separate", "packed"])
    l3d_grad: str = _f("auto", "how L_3D's gradient reaches the embedding on CUDA: autograd (one term of the step's "
                       "loss) | kernel (after the backward, L_3D's kernel adds its weighted gradient straight into the "
                       "embedding's .grad: no autograd node, no zeroed [N, W] gradient to scale and accumulate; "
                       "CUDA with the step kernels, else autograd) | graph (once densification has stopped, L_3D is a "
                       "term of the loss stage's one CUDA graph: its value and gradient come with the view's terms, "
                       "no Python or autograd node of its own per step; on the CPU the stage runs eagerly with it) | "
                       "auto (graph where the loss stage is a CUDA graph, else autograd: kernel saved no host time "
                       "that showed, RESULTS.md 31c; graph with --loss_graph direct 3-10 %% faster, RESULTS.md 35). "
                       "Same gradients every way",
                       choices=["auto", "autograd", "kernel", "graph"])


@dataclass
class OptimizationParams(GroupMixin):
    iterations: int = _f(30_000)
    position_lr_init: float = _f(0.00016)
    position_lr_final: float = _f(0.0000016)
    position_lr_delay_mult: float = _f(0.01)
    position_lr_max_steps: int = _f(30_000)
    feature_lr: float = _f(0.0025)
    opacity_lr: float = _f(0.05)
    scaling_lr: float = _f(0.005)
    rotation_lr: float = _f(0.001)
    lambda_dssim: float = _f(0.2)
    densification_interval: int = _f(100)
    opacity_reset_interval: int = _f(3000)
    densify_from_iter: int = _f(500)
    densify_until_iter: int = _f(15_000)
    densify_grad_threshold: float = _f(0.0002)
    percent_dense: float = _f(0.01)
    sh_increase_interval: int = _f(1000, "raise the active SH degree every this many iterations")
    optimizer: str = _f("auto", "Adam implementation: auto (fused on CUDA, adam on CPU) | adam | fused "
                                "(torch fused Adam, CUDA) | selective (gsplat SelectiveAdam for geometry and colour: "
                                "visible Gaussians only, no bias correction; CUDA)",
                        choices=["auto", "adam", "fused", "selective"])
    optimizer_graph: str = _f("auto", "fused Adam after densification as a replayed CUDA graph: one launch per step "
                                      "instead of a kernel call per learning rate and the Python around them (the step "
                                      "is bound by the host at 250k Gaussians; the gradients are copied into the "
                                      "graph's own buffers) | on | off | auto (off: it saved 0.06-0.11 ms of host per "
                                      "step on an H200, inside the noise, RESULTS.md 31c). The same updates (the "
                                      "means' to the float32 rounding of their learning rate); --optimizer fused on "
                                      "CUDA only",
                              choices=["auto", "on", "off"])


@dataclass
class SegmentationParams(GroupMixin):
    method: str = _f("unic", "unic (thresholded codes) | contrastive_lift (HDBSCAN baseline)",
                     choices=["unic", "contrastive_lift"])
    emb_dim: int = _f(12, "embedding width d (codes 0..2^d-1; at most 15: ids code + 1 are stored as uint16)")
    embedding_lr: float = _f(0.005, "Adam lr of the per-Gaussian embedding (the paper's 1e-4 is far too small)")
    semantic_lr: float = _f(0.005, "Adam lr of the per-Gaussian semantic logits")
    semantic_head: str = _f("auto", "semantic head: per-Gaussian C logits (argmax) | a small per-Gaussian "
                                    "embedding + linear decoder to C logits | auto: logits when colour, embedding "
                                    "and C logits fit in 32 rendered channels, else embed with the channels left "
                                    "(22 PanopLi classes: 17) | vote: nothing semantic is rendered or trained; each "
                                    "Gaussian's classes are the training masks' classes under its blending weight, "
                                    "lifted when the model is saved (PanopLi: 17 fewer rendered channels per step; on an H200 "
                                    "no faster, 0.3 GB less memory)",
                    choices=["auto", "logits", "embed", "vote"])
    semantic_dim: int = _f(0, "width of the semantic embedding with --semantic_head embed (0: the channels "
                              "left in 32 after colour and embedding)")
    lambda_cluster: float = _f(0.1)
    lambda_triplet: float = _f(0.1)
    lambda_3d: float = _f(0.1)
    lambda_sem: float = _f(0.1)
    use_cluster: bool = _f(True, "L_cluster on/off")
    use_triplet: bool = _f(True, "L_triplet on/off")
    use_3d: bool = _f(True, "L_3D on/off")
    use_semantic: bool = _f(True, "semantic head and its loss (when the scene has semantic masks)")
    linear_layer: str = _f("normalized", "triplet layer W: normalized | free | fixed | identity (no layer)",
                           choices=["normalized", "free", "fixed", "identity"])
    push: str = _f("sqdist", "cluster push term: sqdist (Eq. 4, mean over pairs; won the sweep in "
                   "benchmarks/RESULTS.md) | gauss (bounded repulsion exp(-d^2/s))",
                   choices=["gauss", "sqdist"])
    push_scale: float = _f(0.25, "s in exp(-||m_i - m_j||^2 / s)")
    sigmoid_where: str = _f("rendered", "sigmoid on the rendered V (paper) or on each Gaussian's v before blending",
                            choices=["rendered", "gaussian"])
    stuff_id: str = _f("ignore", "mask id 0 (stuff / unlabelled): ignore | segment", choices=["ignore", "segment"])
    triplet_max: int = _f(3000)
    triplet_margin: float = _f(1.0)
    triplet_from_iter: int = _f(-1, "L_triplet starts here (-1: when densification stops, --densify_until_iter)")
    l3d_from_iter: int = _f(-1, "L_3D starts here (-1: when densification stops; Tab. 6 sweeps 7k/12k/15k/20k)")
    l3d_radius2: float = _f(1e-2, "tau: squared neighbour radius (scene units)")
    l3d_k: int = _f(16, "at most k nearest neighbours per Gaussian")
    l3d_refresh: int = _f(2000, "rebuild the neighbour graph every this many iterations")
    l3d_rebuild_lag: int = _f(1000, "a rebuild is computed in a background thread from the means of its "
                                    "iteration and used from this many iterations later (0: in place); the loop "
                                    "waits there if it is not done (a 1.2 M-Gaussian graph takes about 3 s). The "
                                    "first graph, and any after the Gaussian count changed, is built in place")
    l3d_max_edges: int = _f(200_000, "random subset of neighbour pairs per iteration")
    seg_geometry_grad: bool = _f(False, "let segmentation losses move geometry (means, scales, rotations, opacity)")
    seg_raster: str = _f("fused", "fused: one rasterisation for colour and features in which feature gradients never "
                         "reach geometry and densification sees the colour's screen-space gradient only "
                         "(render(..., feature_geometry_grad=False); falls back to separate where the renderer "
                         "lacks it); separate: colour and features in two rasterisations (segmentation gradients "
                         "never reach geometry unless --seg_geometry_grad); joint: one call for all channels "
                         "(segmentation gradients reach geometry; densification statistics still come from the "
                         "rendering loss alone, via a second autograd pass while densifying)",
                         choices=["fused", "separate", "joint"])
    seg_interval: int = _f(1, "segmentation losses (and the feature channels of the rasterisation) every Nth "
                              "iteration only; colour trains every iteration. N = 2 trained 13 %% faster than the "
                              "default on an H200 at about 257k Gaussians (1.17x plain against 1.35x) but lost "
                              "3.6-3.8 PQ^scene points at 30k (benchmarks/RESULTS.md 34); 1: every iteration, as "
                              "the paper")
    seg_scale: float = _f(1.0, "render the segmentation features, and take their masks (nearest pixel), at this "
                               "scale of the training views, in a second rasterisation of the geometry-detached "
                               "model; colour stays at full size, labels render at full size. Saves memory only: slower than "
                               "the one fused rasterisation on the GPU and the CPU (benchmarks/RESULTS.md 17a); 1: "
                               "full size, one fused rasterisation")
    mask_fraction: float = _f(1.0, "use masks on only this fraction of training views (RGB on all)")
    mask_view_share: float = _f(0.0, "where only some training views have masks (--mask_fraction, or masks missing): "
                                      "draw views with masks at least this share of the iterations, each repeated in "
                                      "the shuffled epoch (colour trains on every view, those more often); e.g. 0.5 "
                                      "(on the GPU at 10k iterations it found no more objects and cost 0.2-0.7 dB "
                                      "test PSNR, benchmarks/RESULTS.md 21b); 0: every view equally often, as the "
                                      "paper")
    mask_downscale: float = _f(1.0, "train masks and images at this scale (0.25, 0.5); labels render at full size")
    min_cluster_size: int = _f(100, "contrastive_lift: HDBSCAN min_cluster_size with --cluster_tune off")
    cluster_tune: str = _f("pseudo_pq", "contrastive_lift: how min_cluster_size is chosen: pseudo_pq (the candidate of "
                           "--cluster_tune_sizes with the best PQ against the training views' 2D pseudo-masks, "
                           "never GT: Contrastive-Lift tunes it per dataset) | off (--min_cluster_size)",
                           choices=["pseudo_pq", "off"])
    cluster_tune_sizes: list = _f([10, 25, 50, 100, 200, 400], "contrastive_lift: candidate min_cluster_size values")
    cluster_tune_workers: int = _f(0, "contrastive_lift: processes for the candidates' HDBSCAN fits (0: one per "
                                      "candidate, up to the cores but one; 1: one after another)")
    cluster_tune_views: int = _f(16, "contrastive_lift: training views (with masks) scored per candidate")


def save_cfg_args(model_path: str, args: argparse.Namespace) -> None:
    """Writes ``cfg_args`` as 3DGS does (a ``Namespace(...)`` line), atomically."""
    from utils.general_utils import atomic_write_text

    atomic_write_text(os.path.join(model_path, "cfg_args"), repr(argparse.Namespace(**vars(args))))


def load_cfg_args(model_path: str) -> argparse.Namespace:
    """Reads ``cfg_args`` back with a literal parser (no ``eval``)."""
    path = os.path.join(model_path, "cfg_args")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no cfg_args; is {model_path} a trained model folder (train.py -m)?")
    with open(path) as f:
        text = f.read().strip()
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Namespace"):
            raise ValueError("not a Namespace(...) line")
        return argparse.Namespace(**{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords})
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: unreadable cfg_args ({e}); retrain or fix the file") from None
