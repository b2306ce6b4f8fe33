"""Which Gaussians the training views actually see, and labels for the ones they do not.

The 2D losses shape a Gaussian's embedding only through the pixels it contributes to. Gaussians
hidden inside an object (under its surface, behind another object in every view) keep whatever
code they were born with, so an object extracted by id loses them, and a removed object leaves
them behind. ``gaussian_visibility`` measures each Gaussian's total blending weight over the
training views (in pixels: the sum over views and pixels of T_i alpha_i); ``fill_unseen`` gives
every Gaussian below a weight the majority id of its nearest seen neighbours.

Visibility comes from one render and one backward per view: rendering a constant 1-channel feature
f_i = 1 with the geometry held constant gives d(sum of the feature image)/d f_i = sum over pixels of
the Gaussian's blending weight, on both rasterizer backends. No loop over Gaussians or pixels.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaussian_visibility", "fill_unseen", "DEFAULT_MIN_WEIGHT", "DEFAULT_FILL_NEIGHBOURS"]

# A Gaussian whose blending weights over all training views sum to less than one pixel never
# shaped a rendered embedding: its code is whatever densification gave it.
DEFAULT_MIN_WEIGHT = 1.0
DEFAULT_FILL_NEIGHBOURS = 8


def gaussian_visibility(model, cameras: Iterable, *, backend: str = "auto", progress: bool = False) -> Tensor:
    """[N] float32: each Gaussian's blending weight summed over ``cameras`` and their pixels.

    ``model``: the render contract of ``gaussian_renderer.render`` (a ``GaussianModel`` or a subset);
    its parameters are not changed and get no gradient."""
    from gaussian_renderer import GeometryDetached, render

    means = model.get_means()
    ones = torch.ones(means.shape[0], 1, device=means.device, dtype=means.dtype, requires_grad=True)
    fixed = GeometryDetached(model)
    cams = list(cameras)
    it = cams
    if progress:
        from tqdm import tqdm

        it = tqdm(cams, desc="visibility", unit="view", leave=False)
    for cam in it:
        with torch.enable_grad():
            out = render(cam, fixed, features={"weight": ones}, with_rgb=False, backend=backend)
            out.features["weight"].sum().backward()
    return ones.grad[:, 0].detach() if ones.grad is not None else torch.zeros_like(ones[:, 0]).detach()


@torch.no_grad()
def fill_unseen(ids: Tensor, means: Tensor, weight: Tensor, *, min_weight: float = DEFAULT_MIN_WEIGHT,
                k: int = DEFAULT_FILL_NEIGHBOURS, chunk: int = 1 << 16) -> Tensor:
    """Give every Gaussian seen less than ``min_weight`` the most common id of its ``k`` nearest
    seen Gaussians (ties: the smaller id).

    Args:
        ids: [N] int64 labels (0 = stuff counts as a label too: a hidden Gaussian under the floor
            stays stuff).
        means: [N, 3] centres; weight: [N] ``gaussian_visibility``.
    Returns:
        [N] int64: ``ids`` with the unseen Gaussians relabelled; unchanged when none (or all) are seen.
    """
    from scipy.spatial import cKDTree

    ids = ids.reshape(-1).to(torch.int64)
    seen = weight.reshape(-1).to(ids.device) >= min_weight
    n_seen = int(seen.sum())
    if n_seen == 0 or n_seen == ids.numel():
        return ids.clone()
    pts = means.detach().reshape(-1, 3).to(torch.float64).cpu().numpy()
    seen_np = seen.cpu().numpy()
    src_ids = ids.cpu().numpy()[seen_np]  # [S]
    tree = cKDTree(pts[seen_np])
    unseen_idx = np.nonzero(~seen_np)[0]  # [U]
    kk = min(k, n_seen)
    out = ids.cpu().numpy().copy()
    for start in range(0, len(unseen_idx), chunk):  # chunks of Gaussians, each chunk vectorised
        rows = unseen_idx[start:start + chunk]
        _, nb = tree.query(pts[rows], k=kk, workers=-1)
        nb = nb.reshape(len(rows), kk)
        lab = np.sort(src_ids[nb], axis=1)  # [u, k] sorted, so equal ids are adjacent
        count = (lab[:, :, None] == lab[:, None, :]).sum(-1)  # [u, k] occurrences of each entry
        # the most frequent id; among equals the first in sorted order, i.e. the smaller id
        out[rows] = lab[np.arange(len(rows)), count.argmax(1)]
    return torch.from_numpy(out).to(ids.device)
