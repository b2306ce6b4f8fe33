"""Frames from a video (imageio-ffmpeg: its wheel carries an ffmpeg binary) with blurred frames
dropped by the variance of the Laplacian.

Convention: frames are uint8 RGB [H, W, 3]; sharpness is var(4-neighbour Laplacian) of the
grey image in 0..255 units (higher = sharper).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from tqdm import tqdm

from .common import CaptureError, atomic_save_jpeg


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image. rgb: [H, W, 3] uint8 -> float."""
    g = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # [H, W]
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def blurred(scores: np.ndarray, ratio: float, window: int = 9) -> np.ndarray:
    """[N] bool: frames whose sharpness is below ``ratio`` x the median of their ``window``
    neighbours (the scene's own level: an absolute threshold would depend on the content)."""
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    if ratio <= 0 or n < 3:
        return np.zeros(n, bool)
    half = max(1, window // 2)
    pad = np.pad(scores, half, mode="reflect") if n > half else np.pad(scores, half, mode="edge")
    local = np.median(np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1), axis=1)[:n]
    return scores < ratio * local


@dataclass
class FrameReport:
    names: List[str]  # kept frames, in time order
    extracted: int
    fps: float
    dropped: List[str] = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # name -> sharpness

    def line(self, ratio: float) -> str:
        med = float(np.median(list(self.scores.values()))) if self.scores else 0.0
        s = f"frames: {self.extracted} extracted at {self.fps:.3g} fps, kept {len(self.names)}"
        if ratio > 0:
            s += (f"; {len(self.dropped)} blurred dropped (var(Laplacian) < {ratio:g} x local median, "
                  f"median {med:.0f})")
        return s


def video_info(path: str) -> tuple:
    """-> (fps, duration_s, (W, H)) from ffmpeg's header, or CaptureError for an unreadable file."""
    import imageio_ffmpeg
    if not os.path.isfile(path):
        raise CaptureError(f"{path}: no such video file")
    try:
        gen = imageio_ffmpeg.read_frames(path)
        meta = next(gen)
        gen.close()
    except Exception as e:  # ffmpeg's failure comes back as OSError/RuntimeError/StopIteration
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CaptureError(f"{path}: not a readable video ({msg[:120]}); re-encode it as H.264 mp4 "
                           f"or pass the frames with --images") from None
    return float(meta.get("fps") or 0.0), float(meta.get("duration") or 0.0), tuple(meta["size"])


def extract_frames(path: str, out_dir: str, fps: Optional[float] = None, max_frames: Optional[int] = None,
                   blur_ratio: float = 0.35, blur_window: int = 9, quality: int = 95,
                   progress: bool = True) -> FrameReport:
    """Writes frames of the video ``path`` to ``out_dir/frame_NNNNN.jpg``: ``fps`` frames a second
    (default 2), or, with ``max_frames`` alone, that many spread over the whole video; blurred
    frames (see :func:`blurred`) are dropped, then ``max_frames`` caps the count (evenly)."""
    import imageio_ffmpeg
    src_fps, duration, (w, h) = video_info(path)
    if fps is not None and fps <= 0:
        raise CaptureError(f"--fps must be > 0, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise CaptureError(f"--max-frames must be >= 1, got {max_frames}")
    if fps is None:
        fps = 2.0 if max_frames is None or duration <= 0 else max_frames / duration * 1.5  # spare for blur drops
    if src_fps > 0:
        fps = min(fps, src_fps)
    os.makedirs(out_dir, exist_ok=True)
    for n in os.listdir(out_dir):  # a previous run's frames would mix with this one's
        if n.startswith("frame_") and n.endswith(".jpg"):
            os.remove(os.path.join(out_dir, n))
    expected = int(duration * fps) + 1 if duration > 0 else None
    names, scores = [], {}
    try:
        gen = imageio_ffmpeg.read_frames(path, output_params=["-vf", f"fps={fps:.6g}"])
        meta = next(gen)
        w, h = meta["size"]
        with tqdm(total=expected, desc="frames", unit="frame", disable=not progress) as bar:
            for buf in gen:
                rgb = np.frombuffer(buf, np.uint8).reshape(h, w, 3)
                name = f"frame_{len(names):05d}.jpg"
                atomic_save_jpeg(os.path.join(out_dir, name), rgb, quality)
                scores[name] = sharpness(rgb)
                names.append(name)
                bar.update(1)
    except CaptureError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CaptureError(f"{path}: ffmpeg failed while decoding ({msg[:120]}); re-encode the video "
                           f"as H.264 mp4 or pass the frames with --images") from None
    if not names:
        raise CaptureError(f"{path}: no frames could be decoded; re-encode the video as H.264 mp4")
    drop = blurred(np.array([scores[n] for n in names]), blur_ratio, blur_window)
    dropped = [n for n, d in zip(names, drop) if d]
    kept = [n for n, d in zip(names, drop) if not d]
    if max_frames is not None and len(kept) > max_frames:
        pick = set(np.round(np.linspace(0, len(kept) - 1, max_frames)).astype(int).tolist())
        extra = [n for i, n in enumerate(kept) if i not in pick]
        kept = [n for i, n in enumerate(kept) if i in pick]
    else:
        extra = []
    for n in dropped + extra:
        os.remove(os.path.join(out_dir, n))
    return FrameReport(kept, len(names), fps, dropped, scores)
