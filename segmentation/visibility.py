"""Which Gaussians the training views actually see, and labels for the ones they do not.

The 2D losses shape a Gaussian's embedding only through the pixels it contributes to. Gaussians
hidden inside an object (under its surface, behind another object in every view) keep whatever
code they were born with, so an object extracted by id loses them, and a removed object leaves
them behind. ``gaussian_visibility`` measures each Gaussian's total blending weight over the
training views (in pixels: the sum over views and pixels of T_i alpha_i); ``fill_unseen`` gives
every Gaussian below a weight the majority id of its nearest seen neighbours. ``rescue_stuff`` gives
object surface that the thing/stuff decision missed back to its object, by its own code and the ids
around it; ``object_radius`` is the neighbourhood both it and the stray filter of
``tools/objects.py`` use.

Visibility comes from one render and one backward per view: rendering a constant 1-channel feature
f_i = 1 with the geometry held constant gives d(sum of the feature image)/d f_i = sum over pixels of
the Gaussian's blending weight, on both rasterizer backends. No loop over Gaussians or pixels.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaussian_visibility", "fill_unseen", "rescue_stuff", "object_radius", "DEFAULT_MIN_WEIGHT",
           "DEFAULT_FILL_NEIGHBOURS", "DEFAULT_RESCUE_AGREE", "DEFAULT_RESCUE_RADIUS_FACTOR",
           "DEFAULT_RESCUE_MASK_SHARE", "DEFAULT_RESCUE_EXTENT_QUANTILE", "id_extents", "DEFAULT_RADIUS_FACTOR",
           "DEFAULT_SCALE_FACTOR"]

# A Gaussian whose blending weights over all training views sum to less than one pixel never
# shaped a rendered embedding: its code is whatever densification gave it.
DEFAULT_MIN_WEIGHT = 1.0
DEFAULT_FILL_NEIGHBOURS = 8
# rescue_stuff: a stuff Gaussian joins the object its own code names when at least this many of its
# DEFAULT_FILL_NEIGHBOURS nearest thing Gaussians carry that id ...
DEFAULT_RESCUE_AGREE = 5
# ... within object_radius with this factor (the stray filter's) ...
DEFAULT_RESCUE_RADIUS_FACTOR = 8.0
# ... when at least this share of its blending weight in the views with a mask fell on pixels the input masks
# give an object (``labels.ThingVotes.mask_share``). Floor, wall and table around an object, which L_3D gives
# the object's code, lie on pixels the masks call background. Without a gate, on the full-schedule
# Messy-Rooms models (1.3-2.3 M Gaussians) the rescue (factor 4) took them: median precision 0.992 -> 0.919
# (25 objects) and 0.926 -> 0.826 (100), box reference (RESULTS.md 13b). With it, on the CPU models of 12c:
# the quick start's failure at factor 8 (0.918) is gone (1.000 / 0.957) and the Messy room keeps the whole
# gain (0.886 -> 0.985) (RESULTS.md 13d).
DEFAULT_RESCUE_MASK_SHARE = 0.1
# id_extents, the other gate studied (benchmarks/rescue_gates.py): per axis, this quantile to 1 - it of the
# centres of the Gaussians that already carry the id. It halved the quick start's loss only.
DEFAULT_RESCUE_EXTENT_QUANTILE = 0.01
DEFAULT_RADIUS_FACTOR = 8.0  # object_radius: this x the median nearest-neighbour spacing (4 cuts objects apart)
DEFAULT_SCALE_FACTOR = 2.0  # object_radius: at least this x the object Gaussians' median largest scale


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


def object_radius(means: Tensor, ids: Tensor, factor: float = DEFAULT_RADIUS_FACTOR,
                  scales: Optional[Tensor] = None, scale_factor: float = DEFAULT_SCALE_FACTOR) -> float:
    """The neighbourhood radius of object Gaussians (``ids`` > 0): ``factor`` times the median distance
    from one to its nearest other, and at least ``scale_factor`` times their median largest scale when
    ``scales`` [N, 3] are given (scale-free: works in any scene unit). The spacing alone is too small on
    sparse models, whose centres come in near-duplicate clones while each Gaussian spans centimetres:
    objects fell apart into hundreds of pieces (RESULTS.md 7d)."""
    from scipy.spatial import cKDTree

    things = ids > 0
    pts = means.detach()[things].to(torch.float64).cpu().numpy()  # [M, 3]
    if len(pts) < 2:
        return 1.0
    d, _ = cKDTree(pts).query(pts, k=2, workers=-1)
    nn = d[:, 1][d[:, 1] > 0]
    r = float(factor * np.median(nn)) if len(nn) else 1.0
    if scales is not None and scale_factor > 0:
        r = max(r, float(scale_factor * scales.detach()[things].max(dim=1).values.median()))
    return r


def id_extents(ids: Tensor, means: Tensor, q: float = DEFAULT_RESCUE_EXTENT_QUANTILE):
    """Each id's axis-aligned extent: per axis, the ``q`` and ``1 - q`` quantiles (nearest rank) of the
    centres of the Gaussians carrying it. ids: [N] int64 (0 = stuff, ignored); means: [N, 3].
    Returns (lo, hi): [L, 3] float64 numpy arrays, L = ids.max() + 1; rows of absent ids are empty
    (lo = +inf, hi = -inf). One sort per axis, no loop over ids."""
    ids_np = ids.reshape(-1).cpu().numpy().astype(np.int64)
    pts = means.detach().reshape(-1, 3).to(torch.float64).cpu().numpy()
    L = int(ids_np.max(initial=0)) + 1
    lo, hi = np.full((L, 3), np.inf), np.full((L, 3), -np.inf)
    sel = ids_np > 0
    if not sel.any():
        return lo, hi
    lab, P = ids_np[sel], pts[sel]
    count = np.bincount(lab, minlength=L)  # [L]
    start = np.concatenate([[0], np.cumsum(count)[:-1]])  # [L] first row of each id in the sorted order
    present = np.nonzero(count)[0]
    n = count[present]
    i_lo = start[present] + np.floor(q * (n - 1)).astype(np.int64)
    i_hi = start[present] + np.ceil((1.0 - q) * (n - 1)).astype(np.int64)
    for a in range(3):  # the three axes
        order = np.lexsort((P[:, a], lab))  # by id, then by coordinate
        v = P[order, a]
        lo[present, a], hi[present, a] = v[i_lo], v[i_hi]
    return lo, hi


def rescue_stuff(ids: Tensor, own_ids: Tensor, means: Tensor, radius: float, *, k: int = DEFAULT_FILL_NEIGHBOURS,
                 min_agree: int = DEFAULT_RESCUE_AGREE, allowed: Optional[Tensor] = None,
                 extent_quantile: Optional[float] = None, chunk: int = 1 << 16) -> Tensor:
    """Give stuff Gaussians (``ids`` == 0) back to the object their own code names.

    A stuff Gaussian becomes a thing of id ``own_ids[i]`` when at least ``min_agree`` of its ``k``
    nearest thing Gaussians, all within ``radius``, carry that id; only where ``allowed`` ([N] bool,
    e.g. ``ThingVotes.mask_share() >= DEFAULT_RESCUE_MASK_SHARE``) when given, and only inside that
    id's extent (``id_extents``) when ``extent_quantile`` is given. Object surface whose pixels the
    fg/bg head rendered as stuff (a segmenter's thing/stuff flips) still carries the object's code and
    lies among that object's Gaussians. Floor, wall and table Gaussians touching an object may carry
    its code too (L_3D smooths codes across the contact): the gates keep them out.

    Args:
        ids: [N] int64, 0 = stuff. own_ids: [N] int64, each Gaussian's own (snapped) code + 1.
        means: [N, 3] centres; radius: ``object_radius`` with ``DEFAULT_RESCUE_RADIUS_FACTOR``.
    Returns:
        [N] int64: ``ids`` with the rescued Gaussians set to their own id.
    """
    from scipy.spatial import cKDTree

    ids = ids.reshape(-1).to(torch.int64)
    ids_np, own_np = ids.cpu().numpy().copy(), own_ids.reshape(-1).cpu().numpy()
    thing = ids_np > 0
    if thing.sum() < k:
        return ids.clone()
    pts = means.detach().reshape(-1, 3).to(torch.float64).cpu().numpy()
    ok_np = np.ones(len(ids_np), bool) if allowed is None else allowed.reshape(-1).cpu().numpy().astype(bool)
    cand = np.nonzero(~thing & (own_np > 0) & ok_np)[0]  # [U]
    if extent_quantile is not None:  # only candidates inside the extent of the id they would join
        lo, hi = id_extents(ids, means, extent_quantile)
        c_id = own_np[cand]
        known = c_id < len(lo)
        c_id = np.where(known, c_id, 0)
        inside = known & (pts[cand] >= lo[c_id]).all(1) & (pts[cand] <= hi[c_id]).all(1)
        cand = cand[inside]
    tree = cKDTree(pts[thing])
    src = ids_np[thing]  # [M]
    for start in range(0, len(cand), chunk):  # chunks of Gaussians, each chunk vectorised
        rows = cand[start:start + chunk]
        d, nb = tree.query(pts[rows], k=k, distance_upper_bound=radius, workers=-1)
        lab = np.where(np.isfinite(d), src[np.minimum(nb, len(src) - 1)], -1)  # [u, k]; -1: none within
        ok = (lab == own_np[rows][:, None]).sum(1) >= min_agree
        ids_np[rows[ok]] = own_np[rows[ok]]
    return torch.from_numpy(ids_np).to(ids.device)
