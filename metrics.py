"""Score rendered test views: PSNR, SSIM (LPIPS when its weights are on disk), and with labels,
PQ^scene, SQ, RQ and mIoU exactly as Panoptic Lifting / Contrastive-Lift / UniC-Lift compute them.

    python metrics.py -m output/room_0 [output/office_0 ...]

Writes ``results.json`` and ``per_view.json`` (as 3DGS) and ``panoptic_details.json`` per model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np
import torch

from scene.cameras import SceneError

LPIPS_NOTE = ("LPIPS skipped: its network weights are not on this machine (no download at run time); "
              "install the 'lpips' package and place its VGG weights in the torch hub cache to enable it")


def _lpips_model():
    """An LPIPS(VGG) model if the package and every weight file are already on disk, else None."""
    try:
        import lpips
    except ImportError:
        return None
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    if not (os.path.isdir(hub) and any(f.startswith("vgg16") for f in os.listdir(hub))):
        return None
    return lpips.LPIPS(net="vgg", verbose=False)


def _rendered(path: str) -> torch.Tensor:
    """``[H, W, 3]`` float in [0, 1] of a rendered / ground-truth PNG; a bad file is one SceneError line."""
    from utils.image_io import ImageReadError, load_rgb

    try:
        return torch.from_numpy(np.array(load_rgb(path))).float() / 255  # [H, W, 3]
    except ImageReadError as e:
        raise SceneError(f"{' '.join(str(e).split())}; re-run render.py on this model") from None


def image_metrics(method_dir: str, lpips_net=None) -> dict:
    from utils.loss_utils import psnr, ssim

    renders, gts = os.path.join(method_dir, "renders"), os.path.join(method_dir, "gt")
    names = sorted(os.listdir(renders)) if os.path.isdir(renders) else []
    if not names:
        raise SceneError(f"{renders}: no rendered images; run render.py -m MODEL first")
    per_view = {"PSNR": {}, "SSIM": {}}
    if lpips_net is not None:
        per_view["LPIPS"] = {}
    for name in names:
        gt_path = os.path.join(gts, name)
        if not os.path.isfile(gt_path):
            raise SceneError(f"{gt_path}: ground-truth image missing; re-run render.py")
        a, b = (_rendered(p) for p in (os.path.join(renders, name), gt_path))
        if a.shape != b.shape:
            raise SceneError(f"{gt_path}: {b.shape[1]}x{b.shape[0]} but its render is {a.shape[1]}x{a.shape[0]}; "
                             f"re-run render.py on this model")
        per_view["PSNR"][name] = float(psnr(a, b))
        per_view["SSIM"][name] = float(ssim(a, b))
        if lpips_net is not None:
            with torch.no_grad():
                x, y = (t.permute(2, 0, 1)[None] * 2 - 1 for t in (a, b))
                per_view["LPIPS"][name] = float(lpips_net(x, y))
    means = {k: float(np.mean(list(v.values()))) for k, v in per_view.items()}
    return {"means": means, "per_view": per_view}


def evaluate_model(model_path: str, quiet: bool = False) -> dict:
    from scene.dataset_readers import read_scene_for
    from scene.model_folder import require_model
    from utils.general_utils import atomic_write_text
    from utils.panoptic_eval import evaluate_views, variant_for

    cfg = require_model(model_path)  # a model folder with a readable cfg_args, else one line
    test_dir = os.path.join(model_path, "test")
    methods = sorted(d for d in (os.listdir(test_dir) if os.path.isdir(test_dir) else [])
                     if ".partial-" not in d)  # render.py's folders being written (or left by a kill)
    if not methods:
        raise SceneError(f"{test_dir}: no rendered test views; train with test views (--eval) and run "
                         f"render.py -m {model_path}")
    info = read_scene_for(cfg, allow_missing_masks=True)
    has_gt = bool(info.test) and all(f.gt_semantic_path and f.gt_instance_path for f in info.test)
    lpips_net = _lpips_model()
    results, per_view, details = {}, {}, {}
    for method in methods:
        method_dir = os.path.join(test_dir, method)
        img = image_metrics(method_dir, lpips_net)
        results[method], per_view[method] = dict(img["means"]), img["per_view"]
        labelled = os.path.isdir(os.path.join(method_dir, "pred_surrogateid"))
        if labelled and has_gt:
            pan = evaluate_views(method_dir, info.test, variant_for(info))
            details[method] = pan.pop("details", {})
            results[method].update({k: pan[k] for k in ("PQ_scene", "SQ", "RQ", "mIoU")})
        elif labelled and not quiet:
            print(f"note: {info.path} has no ground-truth labels for its test views: PSNR/SSIM only")
        if not quiet:
            print(f"{model_path} {method}: " + "  ".join(f"{k} {v:.4f}" for k, v in results[method].items()))
    if lpips_net is None and not quiet:
        print(f"note: {LPIPS_NOTE}")
    atomic_write_text(os.path.join(model_path, "results.json"), json.dumps(results, indent=2))
    atomic_write_text(os.path.join(model_path, "per_view.json"), json.dumps(per_view, indent=2))
    if details:
        atomic_write_text(os.path.join(model_path, "panoptic_details.json"), json.dumps(details, indent=2))
    return results


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="Image and panoptic metrics of rendered test views")
    parser.add_argument("-m", "--model_paths", nargs="+", required=True)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    status = 0
    for path in args.model_paths:
        try:
            evaluate_model(path, quiet=args.quiet)
        except (SceneError, FileNotFoundError, ValueError) as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
