"""Per-view instance-id maps (uint16 PNG, 0 = unlabelled) for a prepared scene: SAM's automatic
masks through ``transformers`` from a local checkpoint, or masks made elsewhere (``--masks-from``).

Convention: ids need not agree across views (UniC-Lift makes them consistent); a map has the
size of SCENE/images/<name> and is written to SCENE/<mask_dir>/<stem>.png.

SAM's automatic mask generation is written here on top of ``SamModel``/``SamImageProcessor``
rather than ``pipeline("mask-generation")``: the pipeline's mask NMS needs torchvision, which
this project does not depend on (its PyPI wheels pin a CUDA torch build).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .common import CaptureError, atomic_save_png, list_images

GET_SAM = ("download a SAM checkpoint folder once (e.g. facebook/sam-vit-base from huggingface.co: config.json, "
           "preprocessor_config.json, model.safetensors) and pass it with --checkpoint")


# ----------------------------------------------------------------------------- id maps

def relabel(ids: np.ndarray) -> np.ndarray:
    """Any integer id map [H, W] -> uint16 ids 1..K in order of first id value, 0 kept as 0."""
    vals, inv = np.unique(ids, return_inverse=True)
    lut = np.zeros(len(vals), np.int64)
    nz = vals != 0
    lut[nz] = np.arange(1, int(nz.sum()) + 1)
    if nz.sum() > 65535:
        raise ValueError(f"{int(nz.sum())} ids in one view; at most 65535 fit a 16-bit PNG")
    return lut[inv.reshape(ids.shape)].astype(np.uint16)


def paint(masks: np.ndarray, min_area: int) -> np.ndarray:
    """Overlapping boolean masks [M, H, W] -> one id map [H, W] uint16: larger masks first, so a
    small mask on top of a large one keeps its pixels; a mask left with fewer than ``min_area``
    visible pixels is dropped and the masks below it take its pixels back (0 where none);
    ids 1..K by decreasing area."""
    M = len(masks)
    if M == 0:
        return np.zeros(masks.shape[1:], np.uint16)
    area = masks.reshape(M, -1).sum(1)
    order = np.argsort(-area, kind="stable")
    stack = masks[order]  # [M, H, W], largest first
    alive = np.ones(M, bool)
    for _ in range(4):  # dropping a mask can only enlarge the others: a few rounds settle it
        live = stack[alive]
        idx = np.nonzero(alive)[0]
        covered = live.any(0)
        last = len(live) - 1 - np.argmax(live[::-1], axis=0)  # [H, W] the last-painted mask covering it
        ids = np.where(covered, idx[last] + 1, 0)
        counts = np.bincount(ids.ravel(), minlength=M + 1)[1:]
        small = alive & (counts < max(int(min_area), 1))
        if not small.any():
            break
        alive &= ~small
        if not alive.any():
            return np.zeros(masks.shape[1:], np.uint16)
    counts = np.bincount(ids.ravel(), minlength=M + 1)
    ids = np.where(counts[ids] >= max(int(min_area), 1), ids, 0)
    return relabel(ids)


# ----------------------------------------------------------------------------- masks made elsewhere

def load_mask(path: str) -> np.ndarray:
    """A mask file -> integer id map [H, W] int64. PNG: 8/16/32-bit grey or palette (values are
    ids), RGB(A) (each colour an id, black = 0); NPY: a 2D integer or boolean array."""
    try:
        if path.lower().endswith(".npy"):
            a = np.load(path, allow_pickle=False)
            if a.ndim == 3 and a.shape[-1] == 1:
                a = a[..., 0]
            if a.ndim != 2:
                raise CaptureError(f"{path}: a {a.ndim}-D array of shape {a.shape}; expected one H x W id map")
            if a.dtype.kind == "f":
                if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                    raise CaptureError(f"{path}: float values that are not whole numbers; expected integer ids")
            elif a.dtype.kind not in "iub":
                raise CaptureError(f"{path}: dtype {a.dtype}; expected integer ids")
            return a.astype(np.int64)
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB")).astype(np.int64)
                return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            if im.mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                return np.asarray(im).astype(np.int64)
            raise CaptureError(f"{path}: PNG mode {im.mode}; expected grey (8/16 bit), palette or RGB ids")
    except CaptureError:
        raise
    except Exception as e:
        raise CaptureError(f"{path}: not a readable mask ({type(e).__name__}); write PNG or NPY id maps") from None


def _mask_files(folder: str) -> Dict[str, str]:
    if not os.path.isdir(folder):
        raise CaptureError(f"{folder}: no such folder; pass the folder of your per-image masks")
    files = {}
    for n in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(n)
        if ext.lower() in (".png", ".npy"):
            if stem in files:
                raise CaptureError(f"{folder}: both {os.path.basename(files[stem])} and {n}; keep one mask per image")
            files[stem] = os.path.join(folder, n)
    if not files:
        raise CaptureError(f"{folder}: holds no .png or .npy masks")
    return files


@dataclass
class Undistortion:
    """Maps a map on the original photo to the undistorted image: for each undistorted pixel, the
    original pixel it came from (nearest), through the two cameras pycolmap estimated."""
    src: Dict[str, Tuple[int, int, np.ndarray]]  # name -> (W, H, [h*w] flat index into the original)

    @staticmethod
    def from_scene(scene: str) -> Optional["Undistortion"]:
        dist_dir = os.path.join(scene, "colmap", "sparse", "0")
        und_dir = os.path.join(scene, "sparse", "0")
        if not os.path.isdir(dist_dir) or not os.path.isdir(und_dir):
            return None
        import pycolmap
        dist, und = pycolmap.Reconstruction(dist_dir), pycolmap.Reconstruction(und_dir)
        by_name = {im.name: im for im in dist.images.values()}
        out = {}
        for im in und.images.values():
            if im.name not in by_name:
                continue
            cu, cd = und.cameras[im.camera_id], dist.cameras[by_name[im.name].camera_id]
            w, h = cu.width, cu.height
            u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # COLMAP: pixel centres at +0.5
            xy = cu.cam_from_img(np.stack([u.ravel(), v.ravel()], 1).astype(np.float64))  # [h*w, 2]
            uv = cd.img_from_cam(np.concatenate([xy, np.ones((len(xy), 1))], 1), check_cheirality=False)
            x = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, cd.width - 1)
            y = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, cd.height - 1)
            out[im.name] = (int(cd.width), int(cd.height), y * cd.width + x)
        return Undistortion(out)


def _resize_nearest(a: np.ndarray, w: int, h: int) -> np.ndarray:
    ys = np.minimum((np.arange(h) + 0.5) * a.shape[0] / h, a.shape[0] - 1).astype(np.int64)
    xs = np.minimum((np.arange(w) + 0.5) * a.shape[1] / w, a.shape[1] - 1).astype(np.int64)
    return a[ys[:, None], xs[None, :]]


def convert_masks(scene: str, folder: str, mask_dir: str = "masks", progress: bool = True) -> dict:
    """Masks made elsewhere (``folder/<stem>.png|npy``, any ids) -> ``scene/<mask_dir>/<stem>.png``.
    A mask with the aspect ratio of the original photo is taken as made on it (resized by nearest
    neighbour if its size differs) and warped through the undistortion (nearest); one the size of
    the undistorted image (when that differs from the photo) is used as is; without a distorted
    model (a scene not made here) a mask of the image's aspect ratio is resized to it; anything
    else is an error naming the file."""
    names = list_images(os.path.join(scene, "images"))
    files = _mask_files(folder)
    missing = [n for n in names if os.path.splitext(n)[0] not in files]
    if missing:
        raise CaptureError(f"{folder}: no mask for {len(missing)} of {len(names)} images (e.g. "
                           f"{os.path.splitext(missing[0])[0]}.png); masks are matched to images by file name stem")
    und = Undistortion.from_scene(scene)
    out_dir = os.path.join(scene, mask_dir)
    os.makedirs(out_dir, exist_ok=True)
    stats = {"views": 0, "warped": 0, "resized": 0, "instances": 0}
    for n in tqdm(names, desc="masks", unit="img", disable=not progress):
        path = files[os.path.splitext(n)[0]]
        ids = load_mask(path)
        with Image.open(os.path.join(scene, "images", n)) as im:
            W, H = im.size
        h, w = ids.shape
        src = und.src.get(n) if und is not None else None
        if src is not None and abs(w / h - src[0] / src[1]) < 1e-2 and not ((w, h) == (W, H) != src[:2]):
            # made on the original photo (the usual case): through the undistortion, nearest
            if (w, h) != (src[0], src[1]):
                ids = _resize_nearest(ids, src[0], src[1])
                stats["resized"] += 1
            ids = ids.ravel()[src[2]].reshape(H, W)
            stats["warped"] += 1
        elif (w, h) != (W, H):
            if abs(w / h - W / H) >= 1e-2:
                raise CaptureError(f"{path}: {w}x{h} does not match its image {n} ({W}x{H}) nor its aspect ratio; "
                                   f"make the mask on that image")
            ids = _resize_nearest(ids, W, H)
            stats["resized"] += 1
        out = relabel(ids)
        stats["instances"] += int(out.max())
        atomic_save_png(os.path.join(out_dir, os.path.splitext(n)[0] + ".png"), out)
        stats["views"] += 1
    return stats


# ----------------------------------------------------------------------------- SAM

@dataclass
class SamOptions:
    points_per_side: int = 32  # grid of prompts, points_per_side^2 per image
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88  # SAM's own quality estimate
    stability_thresh: float = 0.92  # IoU of the mask at logit cutoffs -offset and +offset
    stability_offset: float = 1.0
    nms_thresh: float = 0.7  # mask IoU above which the lower-scored duplicate is dropped
    min_area: float = 0.0005  # fraction of the image: smaller masks (and leftovers) are dropped
    threads: int = 0  # torch threads (0: leave torch's default)
    device: str = "auto"  # auto: CUDA when available (SAM is minutes per image on a CPU), else the CPU


def sam_device(device: str) -> str:
    """``--sam-device`` -> a torch device: auto = CUDA when available, else the CPU; CaptureError for
    CUDA on a machine without it."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CaptureError(f"--sam-device {device}: this machine has no CUDA GPU; use --sam-device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise CaptureError(f"--sam-device {device}: use auto, cpu or cuda")
    return device


def check_sam_checkpoint(checkpoint: str) -> None:
    """The folder exists, holds a SAM config (model_type 'sam') and weights; else CaptureError."""
    if not checkpoint:
        raise CaptureError(f"--masks sam needs --checkpoint: {GET_SAM}")
    if not os.path.isdir(checkpoint):
        raise CaptureError(f"{checkpoint}: no such checkpoint folder; {GET_SAM}")
    cfg_path = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(cfg_path):
        raise CaptureError(f"{checkpoint}: no config.json, not a transformers checkpoint; {GET_SAM}")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
        model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    except (OSError, ValueError) as e:
        raise CaptureError(f"{cfg_path}: unreadable ({type(e).__name__}); {GET_SAM}") from None
    if model_type != "sam":
        raise CaptureError(f"{checkpoint}: a {model_type!r} model, not SAM (model_type 'sam'); {GET_SAM}")
    if not any(os.path.isfile(os.path.join(checkpoint, w)) for w in
               ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")):
        raise CaptureError(f"{checkpoint}: config.json but no weights (model.safetensors); {GET_SAM}")


def load_sam(checkpoint: str):
    """(model, image_processor) from a local transformers SAM folder; never downloads."""
    check_sam_checkpoint(checkpoint)
    import torch  # noqa: F401
    from transformers import SamImageProcessorPil, SamModel
    try:
        model = SamModel.from_pretrained(checkpoint, local_files_only=True).eval()
        if os.path.isfile(os.path.join(checkpoint, "preprocessor_config.json")):
            proc = SamImageProcessorPil.from_pretrained(checkpoint, local_files_only=True)
        else:  # the model's own input size
            s = int(model.config.vision_config.image_size)
            proc = SamImageProcessorPil(size={"longest_edge": s}, pad_size={"height": s, "width": s})
    except Exception as e:
        msg = " ".join(str(e).split())[:160]
        raise CaptureError(f"{checkpoint}: could not load the SAM checkpoint ({type(e).__name__}: {msg}); {GET_SAM}") from None
    return model, proc


def _mask_nms(masks, scores, thresh: float, stride: int = 1):
    """Greedy NMS on mask IoU. masks: [M, H, W] bool tensor, scores: [M] -> kept indices, best first.
    IoU is measured on every ``stride``-th pixel."""
    import torch
    order = torch.argsort(scores, descending=True)
    small = masks[order][:, ::stride, ::stride].reshape(len(order), -1).float()  # [M, P]
    inter = small @ small.T  # [M, M]
    area = small.sum(1)
    iou = inter / (area[:, None] + area[None, :] - inter).clamp_min(1)
    keep = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):  # M is at most a few hundred masks
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > thresh
    return order[keep]


def sam_id_map(image: Image.Image, model, proc, opt: SamOptions) -> Tuple[np.ndarray, dict]:
    """SAM automatic masks of one RGB image -> (uint16 id map [H, W], stats).

    A grid of point prompts, three masks each. Filters and NMS work on SAM's low-resolution
    logits (256 px on the long side, the padding cropped off): a mask is kept when SAM's predicted
    IoU and its stability pass the thresholds and it covers at least ``min_area``; duplicates are
    removed by mask NMS; only the survivors are upsampled (bilinear, straight to the image size)
    and painted (:func:`paint`). Upsampling every candidate to full size first, as the reference
    generator does, costs gigabytes and most of the time on a CPU."""
    import torch
    import torch.nn.functional as F
    W, H = image.size
    inp = proc(images=image, return_tensors="pt")
    dev = next(model.parameters()).device
    pixel_values = inp["pixel_values"].to(dev, model.dtype)
    rh, rw = (int(v) for v in inp["reshaped_input_sizes"][0])
    ph, pw = pixel_values.shape[-2:]
    n = opt.points_per_side
    g = (np.arange(n) + 0.5) / n
    px, py = np.meshgrid(g * rw, g * rh)  # prompts in the model's resized frame
    pts = torch.from_numpy(np.stack([px.ravel(), py.ravel()], 1)).to(dev, model.dtype)  # [n*n, 2]
    min_px = max(1, int(round(opt.min_area * W * H)))
    kept_logits, kept_scores = [], []
    with torch.inference_mode():
        emb = model.get_image_embeddings(pixel_values)
        for a in range(0, len(pts), opt.points_per_batch):
            p = pts[a:a + opt.points_per_batch]
            B = len(p)
            out = model(image_embeddings=emb, input_points=p[None, :, None, :],
                        input_labels=torch.ones(1, B, 1, dtype=torch.long, device=dev), multimask_output=True)
            low = out.pred_masks[0]  # [B, 3, h, w] logits over the padded square
            lh = max(1, int(round(low.shape[-2] * rh / ph)))
            lw = max(1, int(round(low.shape[-1] * rw / pw)))
            low = low[..., :lh, :lw].reshape(B * 3, lh, lw).float()
            iou = out.iou_scores.reshape(B * 3).float()
            hi = (low > opt.stability_offset).flatten(1).sum(1).float()
            lo = (low > -opt.stability_offset).flatten(1).sum(1).float()
            stab = hi / lo.clamp_min(1)
            area = (low > 0).flatten(1).sum(1).float() * (W * H) / (lh * lw)  # in image pixels
            ok = (iou > opt.pred_iou_thresh) & (stab >= opt.stability_thresh) & (area >= min_px) & (lo > 0)
            if ok.any():
                kept_logits.append(low[ok])
                kept_scores.append(iou[ok])
        stats = {"candidates": int(len(pts) * 3), "passed": int(sum(len(s) for s in kept_scores))}
        if not kept_logits:
            stats["kept"] = 0
            return np.zeros((H, W), np.uint16), stats
        logits = torch.cat(kept_logits)
        keep = _mask_nms(logits > 0, torch.cat(kept_scores), opt.nms_thresh, stride=1)
        full = torch.cat([F.interpolate(logits[keep[k:k + 32]][:, None], size=(H, W), mode="bilinear",
                                        align_corners=False)[:, 0] > 0 for k in range(0, len(keep), 32)])
    ids = paint(full.cpu().numpy(), min_px)
    stats["kept"] = int(ids.max())
    return ids, stats


def sam_masks(scene: str, checkpoint: str, opt: SamOptions, mask_dir: str = "masks", progress: bool = True) -> dict:
    """SAM id maps for every image in ``scene/images`` -> ``scene/<mask_dir>/<stem>.png``."""
    names = list_images(os.path.join(scene, "images"))
    device = sam_device(opt.device)
    model, proc = load_sam(checkpoint)
    import torch
    if opt.threads > 0:
        torch.set_num_threads(opt.threads)
    model = model.to(device)
    out_dir = os.path.join(scene, mask_dir)
    os.makedirs(out_dir, exist_ok=True)
    total = {"views": 0, "instances": 0, "candidates": 0, "passed": 0}
    for n in tqdm(names, desc="SAM masks", unit="img", disable=not progress):
        with Image.open(os.path.join(scene, "images", n)) as im:
            ids, st = sam_id_map(im.convert("RGB"), model, proc, opt)
        atomic_save_png(os.path.join(out_dir, os.path.splitext(n)[0] + ".png"), ids)
        total["views"] += 1
        total["instances"] += st["kept"]
        total["candidates"] += st["candidates"]
        total["passed"] += st["passed"]
    return total
