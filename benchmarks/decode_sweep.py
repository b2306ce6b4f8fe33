"""Oracle sweep of the decoding rule on one trained model: test views rendered once, then decoded
with every setting and scored with the project's evaluator (PQ^scene, SQ, RQ, mIoU).

    python benchmarks/decode_sweep.py -m output/room_0
    python benchmarks/decode_sweep.py -m output/room_0 --segments 1 2 3 5 --gaussians 50 200 --json sweep.json

Rows: ``plain`` (the paper's thresholding), ``segments N`` (codes that won >= N input mask segments of
the training views; the default rule is marked), ``gaussians K`` (codes held by >= K opaque Gaussians)
and ``fraction F`` (K = F x the number of Gaussians, the former default). Every row is what
``render.py --labels`` + ``metrics.py`` would report for that setting (pixel-wise maps commute with the
evaluator's nearest-neighbour resize, so codes are resized once), one class per object included
(``render.py --fold_share``, its default). Rows scored from dumps (``--from_dump``, ``--compare``) have no
model to fold with: there each object's rim keeps its pixels' classes, as with ``--fold_share 0``.
Prints a Markdown table, then JSON.
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
from scene.gaussian_model import feature_of, has_feature  # noqa: E402


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
    emb = feature_of(model, "embedding")
    feats = {"embedding": torch.sigmoid(emb) if sigmoid_where == "gaussian" else emb}
    if has_feature(model, "semantic"):
        feats["semantic"] = feature_of(model, "semantic")
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


def score(flat, variant, thing_classes, valid, id_classes=None):
    """PQ^scene, SQ, RQ, mIoU of the flattened test pixels decoded with ``valid``; ``id_classes``
    (``segmentation.labels.IdClasses``): each object's classes fold as render.py folds them."""
    from segmentation.labels import DEFAULT_FOLD_SHARE, fold_fragments, ids_from_codes
    from utils.panoptic_eval import mean_iou, panoptic_quality

    ids = ids_from_codes(flat["codes"], flat["sem"], flat["covered"][:, None], thing_classes, valid=valid)
    if flat["sem"] is not None:
        sem = fold_fragments(flat["sem"], ids, id_classes, DEFAULT_FOLD_SHARE)
    else:
        sem = (ids > 0).to(torch.int64)
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
    from segmentation.labels import (decoding_valid_codes, gaussian_id_classes, load_code_votes,
                                     load_semantic_decoder, save_code_votes, votes_for_model)
    from segmentation.postprocess import DEFAULT_MIN_SEGMENTS
    from utils.general_utils import pick_device

    cfg = load_cfg_args(model_path)
    dev = pick_device(device or getattr(cfg, "device", "auto"))
    info = read_scene_for(cfg, allow_missing_masks=True)
    if not info.test:
        raise SceneError(f"{cfg.source_path}: no test views; train with --eval")
    iteration = find_iteration(model_path, iteration)
    model = load_model(model_path, iteration, dev)
    if not has_feature(model, "embedding"):
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
        table = gaussian_id_classes(model, info.thing_classes, valid=valid, decoder=decoder)
        r = score(flat, variant, info.thing_classes, valid, table)
        r.update({"rule": rule, "knob": knob, "valid_codes": None if valid is None else int(valid.numel()),
                  "default": rule == "segments" and knob == DEFAULT_MIN_SEGMENTS})
        rows.append(r)
    return rows


# ----- dumps: everything a decoding rule sees, so rules can be compared offline (no GPU, no model) -----

def segment_code_pairs(codes, segments, min_pixels: int = 4):
    """(segment id [Q], code [Q], pixels [Q]) for every (input mask segment, decoded code) pair of one
    view, over segments (ids > 0) of at least ``min_pixels`` pixels. Sorts only, no loops."""
    inside = segments.reshape(-1) > 0
    seg = segments.reshape(-1)[inside].to(torch.int64)
    code = codes.reshape(-1)[inside].to(torch.int64)
    if seg.numel() == 0:
        z = torch.zeros(0, dtype=torch.int64)
        return z, z, z
    span = int(code.max()) + 1
    pair, count = torch.unique(seg * span + code, return_counts=True)
    pseg, pcode = pair // span, pair % span
    useg, inv = torch.unique(pseg, return_inverse=True)
    size = torch.zeros(useg.numel(), dtype=torch.int64, device=seg.device).index_add_(0, inv, count)
    keep = size[inv] >= min_pixels
    return pseg[keep].cpu(), pcode[keep].cpu(), count[keep].cpu()


@torch.no_grad()
def dump(model_path: str, path: str, iteration: int = -1, device=None, quiet: bool = False) -> None:
    """Write ``path`` (.npz): the (view, segment, code, pixels) pairs of every training view as the
    model renders it, the opaque Gaussians' codes, and the test views' decoded maps with their GT,
    so ``--from_dump`` can score any rule on this model without it."""
    import numpy as np

    from arguments import load_cfg_args
    from gaussian_renderer import render
    from scene import load_view, resolution_scale
    from scene.dataset_readers import read_scene_for
    from scene.model_folder import find_iteration, load_model
    from segmentation.decode import gaussian_labels
    from segmentation.labels import load_semantic_decoder, pixel_codes
    from utils.general_utils import pick_device

    cfg = load_cfg_args(model_path)
    dev = pick_device(device or getattr(cfg, "device", "auto"))
    info = read_scene_for(cfg, allow_missing_masks=True)
    iteration = find_iteration(model_path, iteration)
    model = load_model(model_path, iteration, dev)
    folder = os.path.join(model_path, "point_cloud", f"iteration_{iteration}")
    decoder = load_semantic_decoder(folder, dev) if getattr(cfg, "semantic_head", "logits") == "embed" else None
    sigmoid_where = getattr(cfg, "sigmoid_where", "rendered")
    emb = feature_of(model, "embedding")
    feats = {"embedding": torch.sigmoid(emb) if sigmoid_where == "gaussian" else emb}
    frames = [f for f in info.train if f.instance_path]
    scale = resolution_scale(frames[0].camera.width, cfg.resolution) * getattr(cfg, "mask_downscale", 1.0)
    cols = {k: [] for k in ("view", "seg", "code", "pixels")}
    for i, frame in enumerate(frames):
        view = load_view(frame, scale, device=dev)
        out = render(view.camera, model, features=feats, with_rgb=False, backend=getattr(cfg, "backend", "auto"))
        codes = pixel_codes(out.features["embedding"], sigmoid_where)
        seg = view.instance.to(dev)
        if getattr(view, "valid", None) is not None:
            seg = seg.masked_fill(~view.valid.to(dev), 0)
        s, c, n = segment_code_pairs(codes, seg)
        for k, v in (("view", torch.full_like(s, i)), ("seg", s), ("code", c), ("pixels", n)):
            cols[k].append(v)
    opaque = model.get_opacities().detach().reshape(-1) >= 0.1
    gcodes, gcounts = torch.unique(gaussian_labels(emb.detach()[opaque]), return_counts=True)
    flat, variant = rendered_test_codes(model, cfg, info, dev, decoder)
    def small(t):  # the narrowest integer type that holds the values (dumps come back over the wire)
        a = t.numpy()
        return a.astype(np.int16) if a.size == 0 or (a.min() >= -32768 and a.max() < 32768) else a.astype(np.int32)

    arrays = {k: torch.cat(v).numpy().astype(np.int32) for k, v in cols.items()}
    arrays.update(gauss_codes=gcodes.cpu().numpy(), gauss_counts=gcounts.cpu().numpy(),
                  test_codes=small(flat["codes"]), test_covered=flat["covered"].numpy(),
                  gt_sem=small(flat["gt_sem"]), gt_inst=small(flat["gt_inst"]),
                  views=np.int64(len(frames)), num_gaussians=np.int64(model.num_gaussians),
                  thing_classes=np.asarray(list(info.thing_classes or []), dtype=np.int64),
                  variant=np.asarray([variant.name, str(variant.num_classes), str(variant.has_void)]),
                  variant_things=np.asarray(variant.thing_classes, dtype=np.int64))
    if flat["sem"] is not None:
        arrays["test_sem"] = flat["sem"].numpy().astype(np.int16)
    np.savez_compressed(path, **arrays)
    if not quiet:
        print(f"dumped {len(frames)} training views, {arrays['code'].size} segment-code pairs to {path}", file=sys.stderr)


def candidate_rules(d) -> list:
    """(rule, knob, valid codes [K] int64 or None) for every rule family compared offline.

    - ``segments N``: codes that won >= N segments (the default family);
    - ``segments/views F``: N = max(2, ceil(F x training views with masks));
    - ``win ratio R``: won >= 2 segments and at least R of the segments it is present in (>= 10 %
      of the segment's pixels);
    - ``segments N or win ratio R``: won >= N segments, or >= 2 and at least R of those it is present in;
    - ``segments[>= S px] N`` / ``segments[share 0.5] N``: the vote counting only segments of >= S pixels,
      or only winners that hold at least half of their segment;
    - ``gaussians K``: codes of >= K opaque Gaussians; ``plain``: no snapping."""
    import math

    import numpy as np

    view, seg, code, pix = (d[k].astype(np.int64) for k in ("view", "seg", "code", "pixels"))
    key = view * (int(seg.max(initial=0)) + 1) + seg  # one key per (view, segment)
    order = np.lexsort((code, -pix, key))  # per segment: most pixels first, ties smaller code
    k_sorted = key[order]
    head = np.ones(order.size, dtype=bool)
    head[1:] = k_sorted[1:] != k_sorted[:-1]
    winners = code[order][head]
    wcodes, wins = np.unique(winners, return_counts=True)
    ukey, inv = np.unique(key, return_inverse=True)
    seg_size = np.bincount(inv, weights=pix).astype(np.int64)
    present = pix >= 0.1 * seg_size[inv]
    pcodes, presence = np.unique(code[present], return_counts=True)
    at = np.clip(np.searchsorted(pcodes, wcodes), 0, max(len(pcodes) - 1, 0))
    found = (len(pcodes) > 0) & (pcodes[at] == wcodes) if len(pcodes) else np.zeros(len(wcodes), bool)
    ratio = wins / np.maximum(1, np.where(found, presence[at] if len(pcodes) else 0, wins))  # [U]
    V = int(d["views"])
    out = [("plain", None, None)]
    for n in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30):
        out.append(("segments", n, torch.from_numpy(wcodes[wins >= n])))
    # the vote's own settings, offline: only segments of >= S pixels vote, or only winners holding >= half
    # of their segment count (the winner of each segment is the head row of its key)
    head_key, head_pix = k_sorted[head], pix[order][head]
    head_size = seg_size[np.searchsorted(ukey, head_key)]
    for label, ok in [(f"segments[>= {s_px} px]", head_size >= s_px) for s_px in (16, 64, 256)] + \
                     [("segments[share 0.5]", head_pix >= 0.5 * head_size)]:
        c, w = np.unique(winners[ok], return_counts=True)
        for n in (2, 3, 5):
            out.append((label, n, torch.from_numpy(c[w >= n])))
    for f in (0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1):
        n = max(2, math.ceil(f * V))
        out.append(("segments/views", f, torch.from_numpy(wcodes[wins >= n])))
    for r in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        out.append(("win ratio", r, torch.from_numpy(wcodes[(wins >= 2) & (ratio >= r)])))
    for n in (3, 5, 8):  # many wins, or few but most of the segments the code is present in (a small object)
        for r in (0.3, 0.5, 0.7):
            keep = (wins >= n) | ((wins >= 2) & (ratio >= r))
            out.append((f"segments {n} or win ratio", r, torch.from_numpy(wcodes[keep])))
    gc, gn = d["gauss_codes"].astype(np.int64), d["gauss_counts"]
    for k in (10, 50, 200, 1000):
        out.append(("gaussians", k, torch.from_numpy(gc[gn >= k])))
    return out


def sweep_dump(path: str) -> list:
    """Rows of every ``candidate_rules`` setting, scored from a dump (CPU, no model needed)."""
    import numpy as np

    from utils.panoptic_eval import Variant

    d = np.load(path)
    name, nc, void = d["variant"].tolist()
    variant = Variant(name=name, num_classes=int(nc), thing_classes=tuple(d["variant_things"].tolist()),
                      has_void=void == "True")
    flat = {"codes": torch.from_numpy(d["test_codes"].astype(np.int64)),
            "covered": torch.from_numpy(d["test_covered"]),
            "sem": torch.from_numpy(d["test_sem"].astype(np.int64)) if "test_sem" in d else None,
            "gt_sem": torch.from_numpy(d["gt_sem"].astype(np.int64)),
            "gt_inst": torch.from_numpy(d["gt_inst"].astype(np.int64))}
    rows = []
    for rule, knob, valid in candidate_rules(d):
        r = score(flat, variant, tuple(d["thing_classes"].tolist()), valid)
        r.update({"rule": rule, "knob": knob, "valid_codes": None if valid is None else int(valid.numel()),
                  "default": False})
        rows.append(r)
    return rows


def compare_dumps(paths) -> str:
    """Every candidate rule scored on several dumps (one per trained model): PQ^scene per model, and
    how far each rule falls below the oracle best of the default family (``segments N``) on each
    model, worst case first. The rule to pick is the one whose worst shortfall is smallest."""
    import os as _os

    per = [{(r["rule"], r["knob"]): r["PQ_scene"] for r in sweep_dump(p)} for p in paths]
    best = [max(v for (rule, _), v in rows.items() if rule == "segments") for rows in per]
    keys = [k for k in per[0] if all(k in rows for rows in per)]
    short = {k: [b - rows[k] for rows, b in zip(per, best)] for k in keys}
    names = [_os.path.splitext(_os.path.basename(p))[0] for p in paths]
    lines = ["| rule | " + " | ".join(names) + " | worst shortfall | mean PQ^scene |",
             "|---|" + "---:|" * (len(paths) + 2)]
    for k in sorted(keys, key=lambda k: (max(short[k]), -sum(r[k] for r in per))):
        label = k[0] if k[1] is None else f"{k[0]} {k[1]}"
        cells = " | ".join(f"{rows[k]:.1f}" for rows in per)
        lines.append(f"| {label} | {cells} | {max(short[k]):.1f} | {sum(r[k] for r in per) / len(per):.1f} |")
    lines.append("")
    lines.append("oracle best of segments N: " + ", ".join(f"{n} {b:.1f}" for n, b in zip(names, best)))
    return "\n".join(lines)


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
    p.add_argument("-m", "--model_path", default=None)
    p.add_argument("--iteration", type=int, default=-1)
    p.add_argument("--segments", type=int, nargs="*", default=[1, 2, 3, 5, 8, 13, 20], help="min segments won")
    p.add_argument("--gaussians", type=int, nargs="*", default=[10, 50, 200, 1000], help="min opaque Gaussians")
    p.add_argument("--fractions", type=float, nargs="*", default=[0.002], help="min share of all Gaussians")
    p.add_argument("--shares", type=float, nargs="*", default=[],
                   help="also vote with these min shares (the winning code's fraction of its segment), e.g. 0.5")
    p.add_argument("--min_pixels", type=int, nargs="*", default=[], help="also vote with these min segment sizes")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--dump", default=None, metavar="NPZ",
                   help="also write what every rule sees (training-view segment/code pairs, test maps) to NPZ")
    p.add_argument("--from_dump", action="store_true",
                   help="-m names a dump written by --dump: compare every candidate rule from it, on the CPU")
    p.add_argument("--compare", nargs="+", default=None, metavar="NPZ",
                   help="score every candidate rule on these dumps (one per model) side by side, worst shortfall "
                        "against each model's oracle best first (no -m needed)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.compare:
        print(compare_dumps(args.compare))
        return 0
    if args.model_path is None:
        p.error("-m/--model_path is required (except with --compare)")
    if args.from_dump:
        rows = sweep_dump(args.model_path)
        print(markdown(rows, args.model_path))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"dump": args.model_path, "rows": rows}, f, indent=1)
        return 0
    try:
        if args.dump:
            dump(args.model_path, args.dump, args.iteration, device=args.device, quiet=args.quiet)
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
