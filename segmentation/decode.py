"""Embedding-to-label decoding by thresholding (no clustering).

Convention: bit k of a code is channel k of the embedding; ``code = sum_k [p_k > 0.5] 2^k``
(0 .. 2^D - 1). Instance id = code + 1, so id 0 stays "stuff / no instance".
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MAX_EMB_DIM", "decode_codes", "codes_to_instance_ids", "gaussian_labels", "colorize_ids"]

MAX_BITS = 62  # codes are int64; keep clear of the sign bit and of code + 1 overflow
MAX_EMB_DIM = 15  # --emb_dim limit: instance id = code + 1 <= 2^15 fits the uint16 label files (16 would wrap)


def decode_codes(prob: Tensor) -> Tensor:
    """Threshold each channel at 0.5 and pack the bits.

    Args:
        prob: [..., D] float in [0, 1] (sigmoid of the embedding), D <= 62.
    Returns:
        [...] int64 codes in [0, 2^D).
    """
    D = prob.shape[-1] if prob.dim() > 0 else 0
    if not 1 <= D <= MAX_BITS:
        raise ValueError(f"decode_codes: last dim must be in [1, {MAX_BITS}], got shape {tuple(prob.shape)}")
    weights = torch.ones(D, dtype=torch.int64, device=prob.device) << torch.arange(D, device=prob.device)  # [D]
    return ((prob > 0.5).to(torch.int64) * weights).sum(-1)


def codes_to_instance_ids(codes: Tensor, thing_mask: Tensor | None = None, *, max_id: int | None = 65535) -> Tensor:
    """Instance ids for evaluation files: ``code + 1`` where ``thing_mask``, else 0.

    Args:
        codes: [...] int64 codes from ``decode_codes``.
        thing_mask: [...] bool, True where the pixel belongs to a "thing" class; None = everywhere.
        max_id: raise if an id exceeds this (65535: the ids are written as uint16; always true for
            D <= MAX_EMB_DIM = 15). None disables the check.
    Returns:
        [...] int64 ids, 0 = stuff / no instance.
    """
    ids = codes.to(torch.int64) + 1
    if thing_mask is not None:
        if thing_mask.shape != codes.shape:
            raise ValueError(f"codes_to_instance_ids: thing_mask {tuple(thing_mask.shape)} != codes {tuple(codes.shape)}")
        ids = ids.masked_fill(~thing_mask.to(torch.bool), 0)
    if max_id is not None and ids.numel() > 0 and int(ids.max()) > max_id:
        raise ValueError(f"codes_to_instance_ids: id {int(ids.max())} exceeds max_id={max_id} (use emb_dim <= 15 for uint16 files)")
    return ids


def gaussian_labels(v: Tensor) -> Tensor:
    """Per-Gaussian codes from raw embeddings v [N, D] -> [N] int64.

    Exactly the pixel rule applied to ``sigmoid(v)``; equal to the bits of ``v > 0`` except for
    |v| below float32's resolution of sigmoid near 0.5 (|v| < ~6e-8), where sigmoid rounds to 0.5.
    """
    if v.dim() != 2:
        raise ValueError(f"gaussian_labels: v must be [N,D], got {tuple(v.shape)}")
    return decode_codes(torch.sigmoid(v))


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer mixing hash (xor-shift-multiply), on int64 without overflow."""
    mask = 0xFFFFFFFF
    x = x & mask
    x = (((x >> 16) ^ x) * 0x45D9F3B) & mask  # product < 2^59
    x = (((x >> 16) ^ x) * 0x45D9F3B) & mask
    return (x >> 16) ^ x


def colorize_ids(ids: Tensor) -> Tensor:
    """A stable colour per id: same id -> same colour in every image and run; 0 -> black.

    Args:
        ids: [H, W] (or [...]) integer ids.
    Returns:
        [..., 3] uint8 RGB; every channel of a non-zero id lies in [48, 255], so no id is black.
    """
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"colorize_ids: ids must be integers, got {ids.dtype}")
    x = ids.to(torch.int64)
    h = _mix32(x ^ (x >> 32))  # [...] 32-bit hash
    rgb = torch.stack([(h >> 16) & 255, (h >> 8) & 255, h & 255], dim=-1)  # [..., 3] in 0..255
    rgb = 48 + (rgb * 208) // 256  # lift away from black
    rgb = rgb.masked_fill((ids == 0)[..., None], 0)
    return rgb.to(torch.uint8)
