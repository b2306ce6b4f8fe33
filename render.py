"""Render a trained model's views, and with --labels, its instance and semantic label maps.

    python render.py -m output/room_0                 # {train,test}/ours_N/{renders,gt}/
    python render.py -m output/room_0 --labels        # + pred_surrogateid/, pred_semantics/, overlay/

Label files use the papers' names so their evaluator can score them: ``pred_surrogateid/<name>.png``
(uint16, instance id = code + 1, 0 = stuff / none) and ``pred_semantics/<name>.png`` (uint8 class).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Optional

import numpy as np
import torch

from scene.cameras import SceneError
from scene.gaussian_model import feature_of, has_feature
from scene.model_folder import find_iteration, load_model, require_model  # noqa: F401  (shared with tools/)


def overlay(rgb: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Labels blended over the render, a stable colour per id; id 0 left as the render."""
    from segmentation.decode import colorize_ids

    colours = colorize_ids(torch.from_numpy(ids)).numpy().astype(np.float32)  # [H, W, 3]
    out = rgb.astype(np.float32)
    labelled = ids[..., None] > 0
    out = np.where(labelled, (1 - alpha) * out + alpha * colours, out)
    return np.clip(out, 0, 255).astype(np.uint8)


PARTIAL = ".partial-"  # suffix of a split folder being written (metrics.py skips such folders)


def render_set(model_path: str, split: str, iteration: int, frames, model, cfg, *, labels: bool,
               device, quiet: bool, clusters=None, thing_classes=(), valid=None, decoder=None,
               out_suffix: str = "", pieces: bool = False, fold_share: float = 0.0) -> str:
    """Render ``frames`` into ``<model>/<split>/ours_<iteration><suffix>`` (returned). Written to a
    ``.partial-<pid>`` folder first and renamed when complete, replacing an older folder: a failed or
    interrupted run leaves the previous output (or nothing), never a half-written folder."""
    final = os.path.join(model_path, split, f"ours_{iteration}{out_suffix}")
    base = f"{final}{PARTIAL}{os.getpid()}"  # written here, renamed to ``final`` when complete
    try:
        _render_into(base, frames, model, cfg, labels=labels, device=device, quiet=quiet, split=split,
                     model_path=model_path, clusters=clusters, thing_classes=thing_classes, valid=valid,
                     decoder=decoder, pieces=pieces, fold_share=fold_share)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)  # nothing half-written is left behind
        raise
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(base, final)
    return final


@torch.no_grad()
def _render_into(base: str, frames, model, cfg, *, labels: bool, device, quiet: bool, split: str, model_path: str,
                 clusters, thing_classes, valid, decoder, pieces: bool = False, fold_share: float = 0.0) -> None:
    from tqdm import tqdm

    from gaussian_renderer import render
    from scene import load_view, resolution_scale
    from segmentation.labels import decode_pixels, fold_fragments, gaussian_id_classes
    from utils.image_io import save_label_png, save_rgb

    dirs = {k: os.path.join(base, k) for k in ("renders", "gt", "pred_semantics", "pred_surrogateid", "overlay")}
    for k, d in dirs.items():
        if labels or k in ("renders", "gt"):
            os.makedirs(d, exist_ok=True)
    bg = torch.full((3,), 1.0 if cfg.white_background else 0.0, device=device)
    with_labels = labels and has_feature(model, "embedding")
    if labels and not with_labels:
        print(f"note: {model_path} has no segmentation embedding (trained without masks); no labels written",
              file=sys.stderr)
    sigmoid_where = getattr(cfg, "sigmoid_where", "rendered")
    piece_feats = None  # --pieces: second objects with an id of their own in the PLY (segmentation.pieces)
    if pieces and with_labels and clusters is None and valid is not None and "instance_label" in model.labels:
        from segmentation.pieces import first_piece_id, piece_features, piece_pixels

        piece_feats = piece_features(model.labels["instance_label"].to(device), first_piece_id(model))
    id_classes = None  # each object id's classes over its Gaussians (--fold_share)
    if with_labels and fold_share > 0 and piece_feats is None:
        id_classes = gaussian_id_classes(model, thing_classes, valid=valid, clusters=clusters, decoder=decoder)
    for idx, frame in enumerate(tqdm(frames, desc=f"Rendering {split}", disable=quiet)):
        scale = resolution_scale(frame.camera.width, cfg.resolution)
        view = load_view(frame, scale, with_masks=False)
        feats = {}
        if with_labels:
            emb = feature_of(model, "embedding")
            feats["embedding"] = torch.sigmoid(emb) if sigmoid_where == "gaussian" else emb
            if has_feature(model, "semantic"):
                feats["semantic"] = feature_of(model, "semantic")
            if piece_feats is not None:
                feats["piece"] = piece_feats[0]
        out = render(view.camera, model, bg=bg, features=feats or None, backend=getattr(cfg, "backend", "auto"))
        rgb = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        save_rgb(os.path.join(dirs["renders"], f"{idx:05d}.png"), rgb)
        save_rgb(os.path.join(dirs["gt"], f"{idx:05d}.png"), view.image.cpu().numpy())
        if with_labels:
            semantic, ids = decode_pixels(out.features, out.alpha, sigmoid_where=sigmoid_where,
                                          thing_classes=thing_classes, clusters=clusters, valid=valid,
                                          decoder=decoder)
            if piece_feats is not None:
                ids = piece_pixels(ids, out.features["piece"], out.alpha, piece_feats[1])
            if semantic is not None:  # an object's rim in a neighbour's class takes the object's class
                semantic = fold_fragments(semantic, ids, id_classes, fold_share)
            name = frame.camera.name
            ids_np = ids.cpu().numpy()
            save_label_png(os.path.join(dirs["pred_surrogateid"], f"{name}.png"), ids_np.astype(np.uint16))
            sem_np = (semantic.cpu().numpy() if semantic is not None else (ids_np > 0)).astype(np.uint8)
            save_label_png(os.path.join(dirs["pred_semantics"], f"{name}.png"), sem_np)
            save_rgb(os.path.join(dirs["overlay"], f"{name}.png"), overlay(rgb, ids_np))


def _valid_codes(model_path, iteration, model, cfg, info, dev, *, quiet, decode, snap_min_segments,
                 snap_min_gaussians, snap_fraction):
    """The codes pixel codes snap to under the chosen rule (``segmentation.labels.decoding_valid_codes``);
    the segment votes come from the model folder, or are recomputed (and saved) when missing."""
    from segmentation.labels import decoding_valid_codes, load_code_votes, save_code_votes, votes_for_model

    if snap_min_gaussians is not None:  # the former flag: K > 0 the Gaussian-count rule, 0 plain
        decode = "gaussians" if snap_min_gaussians > 0 else "plain"
    elif snap_fraction is not None and decode == "segments":  # the former flag: F > 0 Gaussian counts, 0 plain
        decode = "gaussians" if snap_fraction > 0 else "plain"
    votes = None
    if decode == "segments":
        folder = os.path.join(model_path, "point_cloud", f"iteration_{iteration}")
        votes = load_code_votes(folder)
        if votes is None:
            votes = votes_for_model(model, cfg, info, dev)
            if votes is not None:
                save_code_votes(votes, folder)
    valid = decoding_valid_codes(decode, model, votes=votes, min_segments=snap_min_segments,
                                 min_gaussians=snap_min_gaussians, snap_fraction=snap_fraction)
    if not quiet:
        if valid is None:
            print(f"decode {decode}: plain thresholding (no snapping)")
        else:
            print(f"decode {decode}: {valid.numel()} valid codes kept; stray pixel codes snap to the nearest")
    return valid


def render_model(model_path: str, iteration: int = -1, *, skip_train: bool = False, skip_test: bool = False,
                 labels: bool = False, quiet: bool = False, device: Optional[str] = None,
                 decode: str = "segments", snap_min_segments: Optional[int] = None,
                 snap_min_gaussians: Optional[int] = None, snap_fraction: Optional[float] = None,
                 out_suffix: str = "", pieces: bool = False, fold_share: Optional[float] = None) -> dict:
    """Render every split of a trained model; returns {split: output folder}.

    Decoding (UniC-Lift labels only; ``segmentation.labels.decoding_valid_codes``): pixel codes outside a
    set of valid codes snap to the nearest valid code (Hamming). ``decode``: "segments" (default: codes
    that won >= ``snap_min_segments`` input mask segments of the training views, saved at training
    time in ``code_votes.pt``), "gaussians" (codes held by >= K opaque Gaussians, K =
    ``snap_min_gaussians`` or ``snap_fraction`` of the Gaussians), "plain" (no snapping).
    ``snap_min_gaussians`` given: K > 0 selects "gaussians", 0 "plain" (the former flag).
    ``out_suffix``: write to ``<split>/ours_N<suffix>`` so several decodings of one model sit side by
    side (metrics.py scores every folder). ``pieces``: pixels drawn by a second object that shares a
    code (its own id in the PLY, ``segmentation.pieces``) get that id (off by default, RESULTS.md 15e).
    ``fold_share`` (None: ``DEFAULT_FOLD_SHARE``): the pixels of an object id whose class holds less than this
    share of the id's Gaussians (opacity-weighted) take the id's main class (``segmentation.labels.
    fold_fragments``); 0 leaves the semantic head's classes as they are. Not with ``pieces``.
    """
    from scene.dataset_readers import read_scene_for
    from segmentation.labels import DEFAULT_FOLD_SHARE, load_clusters
    from utils.general_utils import pick_device

    fold_share = DEFAULT_FOLD_SHARE if fold_share is None else fold_share
    if not 0 <= fold_share <= 1:
        raise SceneError(f"--fold_share {fold_share}: a share of an object's Gaussians lies in [0, 1]; give e.g. "
                         f"{DEFAULT_FOLD_SHARE} (the default) or 0 (off)")

    cfg = require_model(model_path, ("resolution", "white_background"))  # else one line
    iteration = find_iteration(model_path, iteration)  # before any work: a missing iteration is one line
    dev = pick_device(device or getattr(cfg, "device", "auto"))
    if not os.path.isdir(cfg.source_path):
        raise SceneError(f"{cfg.source_path}: the scene this model was trained on is gone; "
                         f"fix source_path in {os.path.join(model_path, 'cfg_args')}")
    info = read_scene_for(cfg, allow_missing_masks=True)
    model = load_model(model_path, iteration, dev)
    if labels and not has_feature(model, "embedding"):
        ply = os.path.join(model_path, "point_cloud", f"iteration_{iteration}", "point_cloud.ply")
        raise SceneError(f"{ply}: no segmentation embedding (model trained without masks), so there are no "
                         f"labels to render; drop --labels or retrain with masks")
    clusters = None
    if getattr(cfg, "method", "unic") == "contrastive_lift":
        clusters = load_clusters(os.path.join(model_path, "point_cloud", f"iteration_{iteration}"), dev)
        if clusters is None and labels:
            raise SceneError(f"{model_path}: contrastive_lift model without clusters.pt; retrain to fit them")
    decoder = None  # --semantic_head embed: Linear(semantic_dim, C) saved in segmentation.pt
    if labels and getattr(cfg, "semantic_head", "logits") == "embed" and has_feature(model, "semantic"):
        from segmentation.labels import SEGMENTATION_FILE, load_semantic_decoder

        folder = os.path.join(model_path, "point_cloud", f"iteration_{iteration}")
        decoder = load_semantic_decoder(folder, dev)
        if decoder is None or decoder.in_features != feature_of(model, "semantic").shape[-1]:
            raise SceneError(f"{os.path.join(folder, SEGMENTATION_FILE)}: missing or without a semantic decoder "
                             f"matching the PLY (model trained with --semantic_head embed); retrain or restore it")
    valid = None
    if labels and clusters is None and has_feature(model, "embedding"):
        valid = _valid_codes(model_path, iteration, model, cfg, info, dev, quiet=quiet, decode=decode,
                             snap_min_segments=snap_min_segments, snap_min_gaussians=snap_min_gaussians,
                             snap_fraction=snap_fraction)
    written = {}
    for split, frames, skip in (("train", info.train, skip_train), ("test", info.test, skip_test)):
        if not skip and frames:
            written[split] = render_set(model_path, split, iteration, frames, model, cfg, labels=labels,
                                        device=dev, quiet=quiet, clusters=clusters,
                                        thing_classes=info.thing_classes, valid=valid, decoder=decoder,
                                        out_suffix=out_suffix, pieces=pieces, fold_share=fold_share)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Render a trained model (and its labels)")
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("--iteration", type=int, default=-1, help="saved iteration; -1 = latest")
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--skip_test", action="store_true")
    parser.add_argument("--labels", action="store_true", help="also write instance / semantic label maps")
    parser.add_argument("--device", default=None, help="override the training device (cpu, cuda)")
    parser.add_argument("--quiet", action="store_true")
    from segmentation.labels import DECODE_RULES, DEFAULT_FOLD_SHARE
    from segmentation.postprocess import DEFAULT_MIN_SEGMENTS, DEFAULT_SNAP_FRACTION

    parser.add_argument("--decode", default="segments", choices=DECODE_RULES,
                        help="segments: snap stray pixel codes to codes that won >= --snap_min_segments input mask "
                             "segments of the training views (default); gaussians: to codes held by >= K opaque "
                             "Gaussians (the former rule); plain: the paper's thresholding, no snapping")
    parser.add_argument("--snap_min_segments", type=int, default=DEFAULT_MIN_SEGMENTS, metavar="N",
                        help="--decode segments: a code is valid when it won at least N segments (default %(default)s)")
    parser.add_argument("--snap_min_gaussians", type=int, default=None, metavar="K",
                        help="the former rule: codes held by >= K opaque Gaussians are valid (implies --decode "
                             "gaussians); 0 = plain thresholding")
    parser.add_argument("--snap_fraction", type=float, default=None, metavar="F",
                        help=f"--decode gaussians without K: K = ceil(F x number of Gaussians) (default "
                             f"{DEFAULT_SNAP_FRACTION}); 0 = plain thresholding")
    parser.add_argument("--out_suffix", default="", help="write <split>/ours_N<suffix>/ (several decodings side by side)")
    parser.add_argument("--pieces", action="store_true",
                        help="give the pixels of a second object that shares a code (an id above 2^emb_dim in the "
                             "PLY, tools/objects.py list) that id, as the PLY does (default decoding only); off by default: on four CPU "
                             "models it moved PQ^scene by +2.2 / 0 / -0.4 / -1.0 (RESULTS.md 15e)")
    parser.add_argument("--fold_share", type=float, default=DEFAULT_FOLD_SHARE, metavar="S",
                        help="an object's pixels of a class that holds less than S of the object's Gaussians (its rim "
                             "in a neighbour's class) take the object's main class; a second object that shares the "
                             "code and holds S or more keeps its own (default %(default)s; 0: off; not with --pieces)")
    args = parser.parse_args(argv)
    try:
        render_model(args.model_path, args.iteration, skip_train=args.skip_train, skip_test=args.skip_test,
                     labels=args.labels, quiet=args.quiet, device=args.device,
                     decode=args.decode, snap_min_segments=args.snap_min_segments,
                     snap_min_gaussians=args.snap_min_gaussians, snap_fraction=args.snap_fraction,
                     out_suffix=args.out_suffix, pieces=args.pieces, fold_share=args.fold_share)
    except (SceneError, FileNotFoundError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
