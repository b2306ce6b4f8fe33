"""Your own capture -> a trainable scene: photos or a video -> posed, undistorted images
(pycolmap) -> per-view instance masks (SAM via transformers, or your own), with pip packages only.

    python tools/prepare_capture.py --images my_photos/ --out data/my_room      # or --video clip.mp4 --fps 2
    python tools/prepare_capture.py --out data/my_room --masks sam --checkpoint /path/to/sam_vit_b
    python train.py -s data/my_room --seg_dir masks --eval

Writes OUT/images/ (undistorted, PINHOLE), OUT/sparse/0/ (COLMAP binary model), OUT/masks/
(uint16 instance ids, 0 = unlabelled), OUT/capture.json (what was done) and OUT/colmap/ (the
pycolmap database, the distorted model and COLMAP's log); a video's frames go to OUT/frames/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.capture.common import CaptureError, check_images, list_images  # noqa: E402

EXHAUSTIVE_MAX = 150  # photo sets up to this size are matched exhaustively, larger ones sequentially


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="scene folder to write (train with train.py -s OUT)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of photos (jpg/png), top level only")
    src.add_argument("--video", help="a video file; frames are extracted with imageio-ffmpeg")
    g = p.add_argument_group("frames (--video)")
    g.add_argument("--fps", type=float, default=None, help="frames per second to extract (default 2)")
    g.add_argument("--max-frames", type=int, default=None, help="at most this many frames, spread over the video")
    g.add_argument("--blur-ratio", type=float, default=0.35,
                   help="drop a frame whose variance of the Laplacian is below this x the median of its 9 "
                        "neighbours (0: keep all). Measured: a 3 px box blur leaves 3-6 %% of a frame's value, "
                        "sharp frames of one clip vary 0.5-1.5x")
    g = p.add_argument_group("poses (pycolmap)")
    g.add_argument("--matcher", default="auto", choices=("auto", "exhaustive", "sequential"),
                   help=f"auto: sequential for a video, exhaustive for up to {EXHAUSTIVE_MAX} photos")
    g.add_argument("--camera-model", default="SIMPLE_RADIAL",
                   choices=("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"),
                   help="camera model estimated before undistortion")
    g.add_argument("--per-image-camera", action="store_true",
                   help="one camera per image size / EXIF (photos from several cameras or zoom levels); "
                        "default: one shared camera")
    g.add_argument("--max-features", type=int, default=8192, help="SIFT features per image")
    g.add_argument("--max-size", type=int, default=1600, help="longest image side for features and output images")
    g.add_argument("--threads", type=int, default=-1, help="pycolmap threads (-1: all cores)")
    g = p.add_argument_group("masks")
    g.add_argument("--masks", choices=("sam", "none"), default="none", help="segment OUT/images with SAM")
    g.add_argument("--masks-from", metavar="DIR", help="convert your own masks (PNG or NPY id maps, any ids, "
                                                         "named like the images) instead")
    g.add_argument("--checkpoint", help="local transformers SAM folder (config.json + model.safetensors)")
    g.add_argument("--mask-dir", default="masks", help="subfolder of OUT for the masks (train.py --seg_dir)")
    g.add_argument("--points-per-side", type=int, default=32, help="SAM prompt grid per side")
    g.add_argument("--sam-device", default="auto", help="where SAM runs: auto (CUDA when available), cpu, cuda")
    g.add_argument("--points-per-batch", type=int, default=64)
    g.add_argument("--pred-iou-thresh", type=float, default=0.88, help="keep SAM masks whose predicted IoU is above")
    g.add_argument("--stability-thresh", type=float, default=0.92, help="keep SAM masks at least this stable")
    g.add_argument("--nms-thresh", type=float, default=0.7, help="drop a mask overlapping a better one above this IoU")
    g.add_argument("--min-area", type=float, default=0.0005,
                   help="drop masks (and what is left of them after painting) below this fraction of the image")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _install(undistorted: str, out: str) -> None:
    """Moves pycolmap's undistorted images/ and sparse/ to OUT/images and OUT/sparse/0."""
    for src, dst in ((os.path.join(undistorted, "images"), os.path.join(out, "images")),
                     (os.path.join(undistorted, "sparse"), os.path.join(out, "sparse", "0"))):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        old = dst + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(dst):
            os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(undistorted, ignore_errors=True)


def prepare_poses(args, log) -> dict:
    from tools.capture.sfm import SfmConfig, run_sfm
    out = args.out
    if os.path.isdir(os.path.join(out, "images")) and not os.path.isfile(os.path.join(out, "capture.json")):
        raise CaptureError(f"{out}: already holds images/ that prepare_capture did not write; choose another --out")
    t0 = time.time()
    info = {}
    if args.video:
        from tools.capture.frames import extract_frames
        image_dir = os.path.join(out, "frames")
        rep = extract_frames(args.video, image_dir, args.fps, args.max_frames, args.blur_ratio,
                             progress=not args.quiet)
        log(rep.line(args.blur_ratio))
        names = rep.names
        info.update(source={"video": os.path.abspath(args.video)}, frames=rep.extracted, fps=rep.fps,
                    blurred=rep.dropped)
    else:
        image_dir = args.images
        if os.path.isdir(os.path.join(out, "images")) and \
                os.path.realpath(image_dir) == os.path.realpath(os.path.join(out, "images")):
            raise CaptureError(f"{image_dir}: is OUT/images, which this tool rewrites; keep your photos elsewhere")
        names = list_images(image_dir)
        check_images(image_dir, names)
        info.update(source={"images": os.path.abspath(image_dir)})
    matcher = args.matcher
    if matcher == "auto":
        matcher = "sequential" if args.video or len(names) > EXHAUSTIVE_MAX else "exhaustive"
    cfg = SfmConfig(image_dir=image_dir, names=names, work_dir=os.path.join(out, "colmap"), out_dir=out,
                    matcher=matcher, camera_model=args.camera_model, single_camera=not args.per_image_camera,
                    max_features=args.max_features, max_image_size=args.max_size, threads=args.threads)
    res = run_sfm(cfg, video=bool(args.video), progress=not args.quiet)
    _install(os.path.join(cfg.work_dir, "undistorted"), out)
    dt = time.time() - t0
    models = res.models
    log(f"poses: {len(res.registered)} of {len(names)} images registered in {dt:.0f} s ({matcher} matching; "
        f"{res.points} points; {res.camera}; models {models})")
    if res.missing:
        log(f"not registered ({len(res.missing)}): {' '.join(res.missing)}")
    info.update(matcher=matcher, images=len(names), registered=res.registered, not_registered=res.missing,
                models=models, points=res.points, camera=res.camera,
                seconds={k: round(v, 2) for k, v in res.seconds.items()}, total_seconds=round(dt, 2))
    return info


def prepare_masks(args, log) -> dict:
    from tools.capture import masks as M
    out = args.out
    if not os.path.isdir(os.path.join(out, "images")) or not os.path.isdir(os.path.join(out, "sparse", "0")):
        raise CaptureError(f"{out}: no images/ and sparse/0 yet; run with --images or --video first")
    t0 = time.time()
    if args.masks_from:
        st = M.convert_masks(out, args.masks_from, args.mask_dir, progress=not args.quiet)
        how = f"converted from {args.masks_from}" + (f" ({st['warped']} warped through the undistortion)"
                                                      if st["warped"] else "")
    else:
        opt = M.SamOptions(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                           pred_iou_thresh=args.pred_iou_thresh, stability_thresh=args.stability_thresh,
                           nms_thresh=args.nms_thresh, min_area=args.min_area, device=args.sam_device)
        st = M.sam_masks(out, args.checkpoint, opt, args.mask_dir, progress=not args.quiet)
        how = f"SAM ({os.path.basename(os.path.normpath(args.checkpoint))}; {st['passed']} of {st['candidates']} " \
              f"candidate masks passed the filters)"
    dt = time.time() - t0
    log(f"masks: {st['views']} views, {st['instances'] / max(st['views'], 1):.1f} instances per view, {how}, "
        f"in {dt:.0f} s -> {os.path.join(out, args.mask_dir)}")
    return {"masks": {"how": "from" if args.masks_from else "sam", "dir": args.mask_dir, **st, "seconds": round(dt, 2)}}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    log = print
    try:
        if args.masks_from and args.masks == "sam":
            raise CaptureError("give --masks sam or --masks-from DIR, not both")
        want_masks = args.masks == "sam" or args.masks_from
        if not (args.images or args.video or want_masks):
            raise CaptureError("nothing to do: give --images DIR or --video FILE (poses), and/or --masks sam / "
                               "--masks-from DIR (masks)")
        if args.masks == "sam":  # check the checkpoint folder before minutes of pose recovery
            from tools.capture.masks import check_sam_checkpoint, sam_device
            check_sam_checkpoint(args.checkpoint)
            sam_device(args.sam_device)  # before pose recovery, like the checkpoint
        meta_path = os.path.join(args.out, "capture.json")
        meta = {}
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
        if args.images or args.video:
            os.makedirs(args.out, exist_ok=True)
            meta = prepare_poses(args, log)
            _write_json(meta_path, meta)
        if want_masks:
            meta.update(prepare_masks(args, log))
            _write_json(meta_path, meta)
    except CaptureError as e:
        print(f"prepare_capture: {e}", file=sys.stderr)
        return 2
    seg = f" --seg_dir {args.mask_dir}" if want_masks or os.path.isdir(os.path.join(args.out, args.mask_dir)) else ""
    log(f"next: python train.py -s {args.out}{seg} --eval")
    return 0


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
