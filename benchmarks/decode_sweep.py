"""Oracle sweep of the decoding rule on one trained model: test views rendered once, then decoded
with every setting and scored with the project's evaluator (PQ^scene, SQ, RQ, mIoU).

    python benchmarks/decode_sweep.py -m output/room_0
    python benchmarks/decode_sweep.py -m output/room_0 --segments 1 2 3 5 --gaussians 50 200 --json sweep.json

Rows: ``plain`` (the paper's thresholding), ``segments N`` (codes that won >= N input mask segments of
the training views; the default rule is marked), ``gaussians K`` (codes held by >= K opaque Gaussians)
and ``fraction F`` (K = F x the number of Gaussians, the former default). Every row is what
``render.py --labels`` + ``metrics.py`` would report for that setting (pixel-wise maps commute with the
evaluator's nearest-neighbour resize, so codes are resized once). Prints a Markdown table, then JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from scene.cameras import SceneError  # noqa: E402


@torch.no_grad()
def rendered_test_codes(model, cfg, info, dev, decoder=None, size=None):
    """Every test view rendered once: flat [M] codes, predicted classes (or None), coverage, and GT
    classes / ids, all resized to the evaluator's size and with GT void dropped as it does."""
    from gaussian_renderer import render
    from scene import load_view, resolution_scale
    from segmentation.labels import pixel_codes, semantic_classes
    from utils.image_io import load_label
    from utils.panoptic_eval import EVAL_SIZE, resize_nearest, variant_for

    size = size or EVAL_SIZE
    variant = variant_for(info)
    sigmoid_where = getattr(cfg, "sigmoid_where", "rendered")
    emb = model.params["embedding"]
    feats = {"embedding": torch.sigmoid(emb) if sigmoid_where == "gaussian" else emb}
    if "semantic" in model.params:
        feats["semantic"] = model.params["semantic"]
    parts = {k: [] for k in ("codes", "sem", "covered", "gt_sem", "gt_inst")}
    for frame in info.test:
        if not (frame.gt_semantic_path and frame.gt_instance_path):
            raise SceneError(f"{frame.image_path}: test view without ground-truth labels; the sweep needs GT")
        view = load_view(frame, resolution_scale(frame.camera.width, cfg.resolution), with_masks=False, device=dev)
        out = render(view.camera, model, features=feats, with_rgb=False, backend=getattr(cfg, "backend", "auto"))
        maps = {"codes": pixel_codes(out.features["embedding"], sigmoid_where),
                "covered": (out.alpha[..., 0] >= 0.5).to(torch.uint8)}
        if "semantic" in out.features:
            maps["sem"] = semantic_classes(out.features["semantic"], decoder)
        maps = {k: resize_nearest(v, size).cpu() for k, v in maps.items()}
        maps["gt_sem"] = torch.from_numpy(resize_nearest(load_label(frame.gt_semantic_path), size).astype("int64"))
        maps["gt_inst"] = torch.from_numpy(resize_nearest(load_label(frame.gt_instance_path), size).astype("int64"))
        keep = maps["gt_sem"] != 0 if variant.has_void else torch.ones_like(maps["gt_sem"], dtype=torch.bool)
        for k, v in maps.items():
            parts[k].append(v[keep])
    flat = {k: (torch.cat(v) if v else None) for k, v in parts.items()}
    return flat, variant


def score(flat, variant, thing_classes, valid):
    from segmentation.labels import ids_from_codes
    from utils.panoptic_eval import mean_iou, panoptic_quality

    ids = ids_from_codes(flat["codes"], flat["sem"], flat["covered"][:, None], thing_classes, valid=valid)
    sem = flat["sem"] if flat["sem"] is not None else (ids > 0).to(torch.int64)
    pq = panoptic_quality(sem, ids, flat["gt_sem"], flat["gt_inst"], variant)
    iou = mean_iou(sem, flat["gt_sem"], variant)
    return {"PQ_scene": pq["pq"], "SQ": pq["sq"], "RQ": pq["rq"], "mIoU": iou["miou"]}


def sweep(model_path: str, iteration: int = -1, *, segments=(1, 2, 3, 5, 8, 13, 20), gaussians=(10, 50, 200, 1000),
          fractions=(0.002,), shares=(), min_pixels=(), device=None, quiet: bool = False) -> list:
    """Rows of the sweep (see the module doc). ``shares`` / ``min_pixels``: extra vote settings
    (``postprocess.count_code_votes``), each re-rendering the training views once and adding
    ``segments N`` rows for it."""
    from arguments import load_cfg_args
    from scene.dataset_readers import read_scene_for
    from scene.model_folder import find_iteration, load_model
    from segmentation.labels import (decoding_valid_codes, load_code_votes, load_semantic_decoder,
                                     save_code_votes, votes_for_model)
    from segmentation.postprocess import DEFAULT_MIN_SEGMENTS
    from utils.general_utils import pick_device

    cfg = load_cfg_args(model_path)
    dev = pick_device(device or getattr(cfg, "device", "auto"))
    info = read_scene_for(cfg, allow_missing_masks=True)
    if not info.test:
        raise SceneError(f"{cfg.source_path}: no test views; train with --eval")
    iteration = find_iteration(model_path, iteration)
    model = load_model(model_path, iteration, dev)
    if "embedding" not in model.params:
        raise SceneError(f"{model_path}: model has no segmentation embedding (trained without masks)")
    folder = os.path.join(model_path, "point_cloud", f"iteration_{iteration}")
    decoder = load_semantic_decoder(folder, dev) if getattr(cfg, "semantic_head", "logits") == "embed" else None
    t0 = time.perf_counter()
    votes = load_code_votes(folder)
    if votes is None:
        votes = votes_for_model(model, cfg, info, dev)
        if votes is None:
            raise SceneError(f"{cfg.source_path}: no training view has an instance mask; nothing to vote with")
        save_code_votes(votes, folder)
    flat, variant = rendered_test_codes(model, cfg, info, dev, decoder)
    if not quiet:
        print(f"rendered {len(info.test)} test views ({flat['codes'].numel()} pixels) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    settings = [("plain", None, {})]
    settings += [("segments", n, {"min_segments": n}) for n in segments]
    default_votes = votes
    extra = [(sh, votes.min_pixels) for sh in shares] + [(votes.min_share, mp) for mp in min_pixels]
    for sh, mp in dict.fromkeys(extra):
        if (sh, mp) == (votes.min_share, votes.min_pixels):
            continue
        v = votes_for_model(model, cfg, info, dev, min_pixels=mp, min_share=sh)
        settings += [(f"segments[share {sh:g}, px {mp}]", n, {"min_segments": n, "votes": v}) for n in segments]
    settings += [("gaussians", k, {"min_gaussians": k}) for k in gaussians]
    settings += [("fraction", f, {"snap_fraction": f}) for f in fractions]
    rows = []
    for rule, knob, kw in settings:
        kw = {"votes": default_votes, **kw}
        base = "gaussians" if rule == "fraction" else "segments" if rule.startswith("segments") else rule
        valid = decoding_valid_codes(base, model, **kw)
        r = score(flat, variant, info.thing_classes, valid)
        r.update({"rule": rule, "knob": knob, "valid_codes": None if valid is None else int(valid.numel()),
                  "default": rule == "segments" and knob == DEFAULT_MIN_SEGMENTS})
        rows.append(r)
    return rows


def markdown(rows, model_path: str) -> str:
    lines = [f"Decoding sweep of {model_path}", "",
             "| setting | valid codes | PQ^scene | SQ | RQ | mIoU |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["rule"] if r["knob"] is None else f"{r['rule']} {r['knob']}"
        name += " (default)" if r["default"] else ""
        n = "-" if r["valid_codes"] is None else str(r["valid_codes"])
        lines.append(f"| {name} | {n} | {r['PQ_scene']:.1f} | {r['SQ']:.1f} | {r['RQ']:.1f} | {r['mIoU']:.1f} |")
    best = max(rows, key=lambda r: r["PQ_scene"])
    default = next((r for r in rows if r["default"]), None)
    if default is not None:
        lines += ["", f"best {best['rule']} {best['knob']}: PQ^scene {best['PQ_scene']:.1f}; default "
                      f"{default['PQ_scene']:.1f} ({default['PQ_scene'] - best['PQ_scene']:+.1f})"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--model_path", required=True)
    p.add_argument("--iteration", type=int, default=-1)
    p.add_argument("--segments", type=int, nargs="*", default=[1, 2, 3, 5, 8, 13, 20], help="min segments won")
    p.add_argument("--gaussians", type=int, nargs="*", default=[10, 50, 200, 1000], help="min opaque Gaussians")
    p.add_argument("--fractions", type=float, nargs="*", default=[0.002], help="min share of all Gaussians")
    p.add_argument("--shares", type=float, nargs="*", default=[],
                   help="also vote with these min shares (the winning code's fraction of its segment), e.g. 0.5")
    p.add_argument("--min_pixels", type=int, nargs="*", default=[], help="also vote with these min segment sizes")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        rows = sweep(args.model_path, args.iteration, segments=args.segments, gaussians=args.gaussians,
                     fractions=args.fractions, shares=args.shares, min_pixels=args.min_pixels,
                     device=args.device, quiet=args.quiet)
    except (SceneError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(rows, args.model_path))
    print(json.dumps(rows, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model_path, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
