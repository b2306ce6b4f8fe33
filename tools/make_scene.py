"""Generate one synthetic indoor scene with exact ground truth and simulated segmenter masks.

Example:
    python tools/make_scene.py --out data/synth_room25 --objects 25 --views 200 \
        --size 640x480 --noise realistic --seed 0

Writes the PanopLi format of docs/DATA.md (color/, depth/, pose/, intrinsic/, splits.json,
rs_*/ ground truth, m2f_*/ simulated segmenter, points3d.ply, generator.json). ``--format messy``
writes the Messy-Rooms format (fg/bg) instead; ``--format both`` writes PanopLi to OUT and
Messy-Rooms to OUT_messy (or --messy-out). ``--format colmap`` writes a COLMAP capture with
instance-only masks (images/, sparse/0/*.txt, masks/, generator.json; train it with
``train.py -s OUT --seg_dir masks``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.synthetic.generate import SceneConfig, generate_scene, with_size  # noqa: E402
from tools.synthetic.layout import LAYOUTS  # noqa: E402
from tools.synthetic.segmenter import PRESETS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="scene folder to write")
    p.add_argument("--layout", default="old_room", choices=LAYOUTS)
    p.add_argument("--objects", type=int, default=25, help="number of thing objects (instances)")
    p.add_argument("--views", type=int, default=200)
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    p.add_argument("--noise", default="realistic", choices=sorted(PRESETS), help="segmenter noise preset")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override one noise setting, e.g. --set merge_rate=0.5 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="panopli", choices=("panopli", "messy", "both", "colmap"))
    p.add_argument("--messy-out", default=None, help="Messy-Rooms folder for --format both (default OUT_messy)")
    p.add_argument("--points", default="surface", choices=("surface", "depth", "none"),
                   help="initial point cloud points3d.ply: surface samples, back-projected depth, or none")
    p.add_argument("--num-points", type=int, default=100_000)
    p.add_argument("--point-noise", type=float, default=0.005, help="std of the point positions (m)")
    p.add_argument("--hfov", type=float, default=None, help="horizontal field of view (deg); default 60-70")
    p.add_argument("--no-depth", action="store_true", help="do not write depth/")
    p.add_argument("--probabilities", action="store_true",
                   help="also store the H x W x 22 class probabilities in m2f_probabilities/*.npz (large)")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--no-shadows", action="store_true")
    p.add_argument("--texture-detail", type=float, default=0.0,
                   help="amplitude (0-1) of a fine speckle on every surface, photo-like detail for "
                        "structure-from-motion (tools/prepare_capture.py); 0 keeps the default look")
    p.add_argument("--backend", default="auto", choices=("auto", "embree", "torch"), help="ray caster")
    p.add_argument("--workers", type=int, default=2, help="worker processes rendering views (1: none)")
    p.add_argument("--threads", type=int, default=2, help="ray-casting threads when --workers 1")
    p.add_argument("--quiet", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> SceneConfig:
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = v.strip()
    cfg = SceneConfig(layout=args.layout, num_objects=args.objects, num_views=args.views, seed=args.seed,
                      noise=args.noise, noise_overrides=overrides, hfov_deg=args.hfov, points=args.points,
                      num_points=args.num_points, point_noise=args.point_noise, depth=not args.no_depth,
                      probabilities=args.probabilities, jpeg_quality=args.jpeg_quality,
                      shadows=not args.no_shadows, backend=args.backend, threads=args.threads,
                      texture_detail=args.texture_detail)
    return with_size(cfg, args.size)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        cfg.validate()
    except ValueError as e:
        raise SystemExit(f"make_scene: {e}") from None
    out = args.out.rstrip("/")
    panopli = out if args.format in ("panopli", "both") else None
    messy = out if args.format == "messy" else (args.messy_out or out + "_messy") if args.format == "both" else None
    t = time.time()
    colmap = out if args.format == "colmap" else None
    meta = generate_scene(cfg, panopli, messy, progress=not args.quiet, workers=args.workers, colmap_dir=colmap)
    if not args.quiet:
        where = " and ".join(p for p in (panopli, messy, colmap) if p)
        print(f"wrote {cfg.num_views} views of {meta['num_objects']} objects ({cfg.layout}, {cfg.width}x{cfg.height}, "
              f"noise {cfg.noise}) to {where} in {time.time() - t:.1f} s")
    return meta


if __name__ == "__main__":
    main()
