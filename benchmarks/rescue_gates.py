"""The stuff rescue's gates, studied offline on a GPU model's dump (issue 9, extraction precision).

    python benchmarks/things_ab.py -m MODEL --dump rescue.npz     # on the GPU machine, with the model
    python benchmarks/rescue_gates.py rescue.npz [more.npz ...] [--json out.json]  # anywhere, in seconds

``things_ab.py --dump`` keeps every Gaussian that can change the measurement of any rescue variant: the
thing Gaussians of ``union_fill`` (the default rule; the rescue's neighbours and the stray filter's
input), the stuff Gaussians that the widest rescue (``object_radius`` factor 8, no gate) would take,
and every Gaussian inside an object's box grown by ``extraction_eval.GROW`` (recall's reference and the
matching). ``measure_extraction`` on that subset gives the numbers it gives on the whole model
(``tests/test_rescue_gates.py`` checks the premise). The centres go to a second file,
``*_means.npz``, and more per-Gaussian columns for later studies to a third, ``*_extra.npz``. The
object boxes travel in the first file, so the scene is not needed.

Variants (box reference, stray filter on, median over objects, P / R): union_fill; with the extra file
the union before the fill, union_fill without the Gaussians that only their own feature makes things,
and union_fill_masks (train.py's default: those Gaussians kept only where the masks back them, at three
shares, then the masked rescue, then the mask-backed pieces of a code that lie apart get ids of their
own, ``pieces.separate_pieces``; each also without its last steps);
union_fill kept to each id's quantile extent (grown by a share of its size: a floater filter); union_fill
with other stray-filter radii (``default_radius`` factor) and minimum shares; the rescue at radius
factor 4 and 8 without a gate, with the extent gate (``visibility.id_extents``, quantiles 0 / 0.01 /
0.03), with a mask gate (the candidate's blending weight on input-mask object pixels, ``ThingVotes.masked``,
at least a share of its weight in masked views), and with both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from typing import Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DUMP_VERSION = 3


def write_dump(path: str, *, ids_fill: torch.Tensor, codes: torch.Tensor, means: torch.Tensor,
               opac: torch.Tensor, scales: torch.Tensor, votes, boxes, own: Optional[torch.Tensor] = None) -> dict:
    """The subset of Gaussians described in the module docstring, and the boxes, in three files (each
    under the device machine's 16 MiB per returned file for about a million kept Gaussians): ``path``
    (what the study needs), ``*_means.npz`` (the centres, float32 as the model holds them) and
    ``*_extra.npz`` (for later studies: the visibility weight, the vote's thing share, the own feature's
    thing decision ``own``). ``votes``: ``segmentation.labels.ThingVotes``."""
    from segmentation.visibility import object_radius, rescue_stuff
    from tools import extraction_eval as ev

    P = means.to(torch.float64).cpu().numpy()
    r8 = object_radius(means, ids_fill, 8.0, scales=scales)
    wide = rescue_stuff(ids_fill, codes, means, r8)
    keep = (ids_fill > 0) | (wide > 0)
    g, _ = ev.box_pairs(P, boxes, ev.GROW)
    keep = keep.numpy().copy()
    keep[g] = True
    if int(max(ids_fill.max(), codes.max())) > np.iinfo(np.int16).max:
        raise ValueError("write_dump: ids above 32767 do not fit the dump's int16 columns")
    share = votes.mask_share()
    share = share.cpu().double() if share is not None else torch.full((len(P),), float("nan"), dtype=torch.float64)
    seen = votes.seen.cpu().double()
    thing_share = torch.where(seen > 0, votes.thing.cpu().double() / seen.clamp_min(1e-12), torch.zeros_like(seen))
    core = {"version": np.int64(DUMP_VERSION), "gaussians": np.int64(len(P)),
            "opacity": opac.numpy()[keep].astype(np.float32),
            "max_scale": scales.max(dim=1).values.numpy()[keep].astype(np.float32),
            "ids_fill": ids_fill.numpy()[keep].astype(np.int16), "codes": codes.numpy()[keep].astype(np.int16),
            "mask_share": share.numpy()[keep].astype(np.float32),
            "box_ids": boxes.ids, "box_classes": boxes.classes, "box_centre": boxes.centre, "box_half": boxes.half,
            "box_yaw": boxes.yaw}
    extra = {"seen": seen.numpy()[keep].astype(np.float32), "thing_share": thing_share.numpy()[keep].astype(np.float32)}
    if own is not None:
        extra["own"] = own.cpu().numpy()[keep].astype(bool)
    np.savez_compressed(path, **core)
    np.savez_compressed(part_path(path, "means"), means=P[keep].astype(np.float32))
    np.savez_compressed(part_path(path, "extra"), **extra)
    sizes = [os.path.getsize(f) for f in (path, part_path(path, "means"), part_path(path, "extra"))]
    return {"kept": int(keep.sum()), "of": int(len(P)), "bytes": sum(sizes), "largest_file": max(sizes)}


def part_path(path: str, part: str) -> str:
    """One of the dump's other files: ``part`` "means" (the kept Gaussians' centres) or "extra"."""
    stem = path[:-4] if path.endswith(".npz") else path
    return f"{stem}_{part}.npz"


def load_dump(path: str) -> dict:
    """The dump's files merged into one dict (the extra file only when present)."""
    d = dict(np.load(path))
    if int(d.get("version", -1)) != DUMP_VERSION:
        raise SystemExit(f"error: {path}: not a rescue dump of version {DUMP_VERSION}; write it again with "
                         f"things_ab.py --dump")
    mp = part_path(path, "means")
    if not os.path.isfile(mp):
        raise SystemExit(f"error: {mp}: missing (things_ab.py --dump writes it beside {path}); copy both files")
    parts = [(mp, dict(np.load(mp)))]
    if os.path.isfile(part_path(path, "extra")):
        parts.append((part_path(path, "extra"), dict(np.load(part_path(path, "extra")))))
    for p, more in parts:
        for k, v in more.items():
            if len(v) != len(d["opacity"]):
                raise SystemExit(f"error: {p}: {len(v)} rows for {len(d['opacity'])} Gaussians in {path}; "
                                 f"the files come from different dumps")
            d[k] = v
    return d


def study(d: dict) -> list:
    """[(name, P, R, rescued)] for every variant of the module docstring."""
    from segmentation.visibility import id_extents, object_radius, rescue_stuff
    from tools import extraction_eval as ev
    from tools.objects import default_radius, stray_filter

    boxes = ev.ObjectBoxes(ids=d["box_ids"], kinds=["?"] * len(d["box_ids"]), classes=d["box_classes"],
                           centre=d["box_centre"], half=d["box_half"], yaw=d["box_yaw"])
    means = torch.from_numpy(d["means"].astype(np.float64))
    opac = torch.from_numpy(d["opacity"].astype(np.float64))
    scales = torch.from_numpy(d["max_scale"].astype(np.float64))[:, None].expand(-1, 3)
    ids_f = torch.from_numpy(d["ids_fill"].astype(np.int64))
    codes = torch.from_numpy(d["codes"].astype(np.int64))
    mask_share = d["mask_share"].astype(np.float64)

    P = d["means"].astype(np.float64)

    def score(ids, factor=8.0, min_share=0.2):
        keep = stray_filter(ids, means, opac, radius=default_radius(means, ids, factor, scales=scales),
                            min_share=min_share)
        r = ev.measure_extraction(ids, keep, means, opac, boxes, grow=ev.GROW, inner=ev.INNER)
        return r.median_precision, r.median_recall

    def inside_extent(which, q, grow=0.0):
        """[K] bool: each Gaussian inside the extent (quantiles q to 1 - q of ids_f's Gaussians, grown
        by ``grow`` x its size on every side) of the id ``which`` [K] names."""
        lo, hi = id_extents(ids_f, means, q)
        size = np.where(np.isfinite(hi - lo), hi - lo, 0.0)
        c = np.minimum(which, len(lo) - 1)
        return (P >= (lo - grow * size)[c]).all(1) & (P <= (hi + grow * size)[c]).all(1)

    rows = [("union_fill",) + score(ids_f) + (0,)]
    if "seen" in d and "own" in d:  # the base rule's parts, from the extra file
        from segmentation.labels import THING_VOTE_MIN_WEIGHT, THING_VOTE_SHARE

        seen = torch.from_numpy(d["seen"].astype(np.float64) >= THING_VOTE_MIN_WEIGHT)
        own = torch.from_numpy(d["own"])
        vote = torch.from_numpy(d["thing_share"].astype(np.float64) > THING_VOTE_SHARE) & seen
        union = torch.where(seen, ids_f, torch.where(own, codes, torch.zeros_like(codes)))  # before the fill
        rows.append(("union (no fill)",) + score(union) + (0,))
        own_only = seen & own & ~vote  # things by their own feature though their pixels vote stuff
        rows.append(("union_fill without own-only things",) + score(torch.where(own_only, 0, ids_f)) + (0,))
        if np.isfinite(mask_share).all():  # union_fill_masks: the masks settle the own-only things, then the rescue
            from segmentation.labels import DEFAULT_DISPUTE_MASK_SHARE
            from segmentation.visibility import DEFAULT_RESCUE_MASK_SHARE, DEFAULT_RESCUE_RADIUS_FACTOR

            from segmentation.pieces import separate_pieces

            share_t = torch.from_numpy(mask_share)
            seen_px = torch.from_numpy(d["seen"].astype(np.float64))

            def pieces(ids):  # the default's last step: mask-backed far pieces of a code get their own ids
                return separate_pieces(ids, means, opac, seen_px, share_t, first_id=int(ids.max()) + 1,
                                       radius=object_radius(means, ids, scales=scales))

            ids = torch.where(own_only & (share_t < DEFAULT_DISPUTE_MASK_SHARE), 0, ids_f)
            rows.append(("union_fill_masks without the rescue or the pieces",) + score(ids) + (0,))
            rows.append(("union_fill_masks without the rescue (the default with instance masks only)",)
                        + score(pieces(ids)) + (0,))
            for tau in sorted({0.1, DEFAULT_DISPUTE_MASK_SHARE, 0.5}):
                ids = torch.where(own_only & (share_t < tau), 0, ids_f)
                r = object_radius(means, ids, DEFAULT_RESCUE_RADIUS_FACTOR, scales=scales)
                ids = rescue_stuff(ids, codes, means, r, allowed=share_t >= DEFAULT_RESCUE_MASK_SHARE)
                name = "union_fill_masks" + (" (the default with semantic masks)" if tau == DEFAULT_DISPUTE_MASK_SHARE
                                             else "")
                rescued = int(((ids > 0) & (ids_f == 0)).sum())
                if tau == DEFAULT_DISPUTE_MASK_SHARE:
                    rows.append((f"{name} without the pieces",) + score(ids) + (rescued,))
                rows.append((f"{name}, own-only things kept at mask share >= {tau:g}",) + score(pieces(ids))
                            + (rescued,))
    for q, grow in ((0.02, 0.1), (0.02, 0.25), (0.05, 0.25)):  # extraction kept to each id's core extent
        inside = torch.from_numpy(inside_extent(ids_f.numpy(), q, grow))
        rows.append((f"union_fill, kept to the {q:g}-{1 - q:g} extent grown by {grow:g}",)
                    + score(torch.where(inside, ids_f, 0)) + (0,))
    for factor, min_share in ((4.0, 0.2), (16.0, 0.2), (8.0, 0.1), (8.0, 0.5), (8.0, 0.8)):  # the stray filter
        rows.append((f"union_fill, stray filter x{factor:g}, min share {min_share:g}",)
                    + score(ids_f, factor, min_share) + (0,))
    for factor in (4.0, 8.0):
        base = rescue_stuff(ids_f, codes, means, object_radius(means, ids_f, factor, scales=scales))
        new = ((base > 0) & (ids_f == 0)).numpy()
        gates = {"no gate": np.ones(len(new), bool)}
        for q in (0.0, 0.01, 0.03):
            gates[f"extent {q}"] = inside_extent(base.numpy(), q)
        if np.isfinite(mask_share).all():
            for tau in (0.1, 0.25, 0.5):
                gates[f"mask {tau}"] = mask_share >= tau
            gates["extent 0.01 + mask 0.25"] = inside_extent(base.numpy(), 0.01) & (mask_share >= 0.25)
        for name, ok in gates.items():
            take = new & ok
            ids = torch.where(torch.from_numpy(take), base, ids_f)
            rows.append((f"rescue x{factor:g}, {name}",) + score(ids) + (int(take.sum()),))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dumps", nargs="+", help="npz files written by things_ab.py --dump (one per model)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results = {}
    for path in args.dumps:
        d = load_dump(path)
        results[path] = study(d)
        print(f"{path}: {len(d['means'])} of {int(d['gaussians'])} Gaussians, {len(d['box_ids'])} objects")
    names = [os.path.basename(p).removesuffix(".npz") for p in args.dumps]
    print("| variant | " + " | ".join(f"{n}: P / R" for n in names) + " | worst of P, R |")
    print("|---|" + "---:|" * (len(names) + 1))
    for i, (variant, *_rest) in enumerate(results[args.dumps[0]]):
        cells = [results[p][i] for p in args.dumps]
        worst = min(min(c[1], c[2]) for c in cells)
        print(f"| {variant} | " + " | ".join(f"{c[1]:.3f} / {c[2]:.3f} ({c[3]})" for c in cells) + f" | {worst:.3f} |")
    print("(in brackets: Gaussians the rescue took)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({p: [{"variant": n, "P": a, "R": b, "rescued": k} for n, a, b, k in rows]
                       for p, rows in results.items()}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
