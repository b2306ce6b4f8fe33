"""Contact sheet of a scene: per row one view, columns RGB | GT instances | GT classes |
segmenter instances | segmenter classes | segmenter confidence.

Example:
    python tools/contact_sheet.py examples/room10 --rows 4 --out docs/contact_sheet.png

Reads any scene the project's reader reads (PanopLi or Messy-Rooms). Instance colours are a
fixed function of the id, so a GT object has one colour in every row while the segmenter's
ids (permuted per view) change colour from row to row.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scene.dataset_readers import read_scene  # noqa: E402
from utils.image_io import load_confidence, load_label, load_rgb  # noqa: E402

COLUMNS = ("RGB", "GT instances", "GT classes", "segmenter instances", "segmenter classes", "confidence")


def id_colors(n: int, seed: int = 7) -> np.ndarray:
    """[n, 3] uint8 distinct-ish colours (golden-ratio hues, varied value); row 0 is unused."""
    k = np.arange(n)
    h = (k * 0.618033988749895 + 0.05 * seed) % 1.0
    s = 0.55 + 0.35 * ((k * 7) % 3) / 2
    v = 0.95 - 0.25 * ((k * 5) % 4) / 3
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sectors = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))  # HSV -> RGB by hue sector
    rgb = np.choose(i[:, None], [np.stack(c, 1) for c in sectors])
    return np.round(rgb * 255).astype(np.uint8)


def colorize_instances(ids: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """[H, W] ids -> [H, W, 3]: id colour where id > 0, a dimmed grey of the image elsewhere."""
    pal = id_colors(int(ids.max()) + 1)
    grey = (rgb.astype(np.float32).mean(-1, keepdims=True) * 0.35).astype(np.uint8).repeat(3, -1)
    return np.where(ids[..., None] > 0, pal[ids], grey)


def colorize_classes(cls: np.ndarray) -> np.ndarray:
    pal = id_colors(max(int(cls.max()) + 1, 32), seed=3)
    pal[0] = 0
    return pal[cls]


def sheet(scene: str, rows: int = 4, names: Optional[Sequence[str]] = None, scale: float = 1.0) -> Image.Image:
    info = read_scene(scene)
    frames = sorted(info.train + info.test, key=lambda f: f.camera.uid)
    if names:
        by = {f.camera.name: f for f in frames}
        missing = [n for n in names if n not in by]
        if missing:
            raise SystemExit(f"contact_sheet: no view named {missing[0]!r} in {scene}")
        chosen = [by[n] for n in names]
    else:
        chosen = [frames[i] for i in np.linspace(0, len(frames), min(rows, len(frames)), endpoint=False).astype(int)]
    tiles: List[np.ndarray] = []
    for f in chosen:
        rgb = load_rgb(f.image_path)
        if rgb.dtype != np.uint8:
            rgb = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        H, W = rgb.shape[:2]
        blank = np.zeros_like(rgb)
        load = lambda p: load_label(p, (W, H)).astype(np.int64) if p else None  # noqa: E731
        gi, gs = load(f.gt_instance_path), load(f.gt_semantic_path)
        pi, ps = load(f.instance_path), load(f.semantic_path)
        conf = load_confidence(f.confidence_path, (W, H)) if f.confidence_path else None
        row = [rgb,
               colorize_instances(gi, rgb) if gi is not None else blank,
               colorize_classes(gs) if gs is not None else blank,
               colorize_instances(pi, rgb) if pi is not None else blank,
               colorize_classes(ps) if ps is not None else blank,
               (np.clip(conf, 0, 1)[..., None].repeat(3, -1) * 255).astype(np.uint8) if conf is not None else blank]
        tiles.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in row], 1))
    body = np.concatenate(tiles, 0)
    header_h = 18
    img = Image.new("RGB", (body.shape[1], body.shape[0] + header_h), (255, 255, 255))
    img.paste(Image.fromarray(body), (0, header_h))
    draw = ImageDraw.Draw(img)
    tile_w = body.shape[1] // len(COLUMNS)
    for k, title in enumerate(COLUMNS):
        draw.text((k * tile_w + 6, 3), title, fill=(0, 0, 0))
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    return img


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scene", help="scene folder (PanopLi or Messy-Rooms)")
    p.add_argument("--out", default="docs/contact_sheet.png")
    p.add_argument("--rows", type=int, default=4, help="number of views (evenly spaced)")
    p.add_argument("--names", nargs="*", default=None, help="view names to show instead")
    p.add_argument("--scale", type=float, default=1.0, help="resize the sheet by this factor")
    args = p.parse_args(argv)
    img = sheet(args.scene, args.rows, args.names, args.scale)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    img.save(args.out, optimize=True)
    print(f"wrote {args.out} ({img.width}x{img.height})")


if __name__ == "__main__":
    main()
