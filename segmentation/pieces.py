"""Objects as groups in space: the stray filter and the pieces of one code that lie apart.

* ``stray_filter``: which Gaussians of each object id belong to the object (the heaviest connected
  piece, plus pieces holding a share of the id's opacity or lying next to it); what ``tools/objects.py``
  extracts, removes and moves.
* ``separate_pieces``: a piece that the stray filter would drop but that the input masks back (seen in
  the training views, most of its weight on the masks' object pixels) is a second object that shares the
  code, not a stray: it gets an id of its own, so it can be listed and extracted.
* ``piece_features`` / ``piece_pixels``: render.py blends two more channels (is a piece, which piece) and
  gives the pixels a piece draws its id, so the label maps and overlays agree with the PLY.

Both work on the CPU, vectorised over Gaussians (one sparse connected-components call, no loop over
points or ids).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from scene.gaussian_model import feature_of

__all__ = ["stray_filter", "separate_pieces", "first_piece_id", "piece_features", "piece_pixels", "DEFAULT_MIN_SHARE",
           "DEFAULT_MIN_OPACITY", "DEFAULT_NEAR", "PIECE_MIN_GAUSSIANS", "PIECE_MIN_SEEN", "PIECE_MIN_MASK_SHARE"]

DEFAULT_MIN_SHARE = 0.2  # stray filter: components below this share of their id's opacity go (0.5 cuts real parts)
DEFAULT_MIN_OPACITY = 0.0  # stray filter: object Gaussians below this opacity are strays
DEFAULT_NEAR = 0.0  # stray filter: parts whose centre lies in the main part's box grown by this x its size stay
# separate_pieces: a dropped piece is an object of its own with at least this many Gaussians, seen on at
# least this many pixels of blending weight and with at least this share of it on the masks' object
# pixels (both opacity-weighted means over the piece; RESULTS.md 15c)
PIECE_MIN_GAUSSIANS = 50
PIECE_MIN_SEEN = 3.0
PIECE_MIN_MASK_SHARE = 0.5


def stray_filter(ids: Tensor, means: Tensor, opacities: Tensor, *, radius: float, k: int = 16,
                 min_share: float = DEFAULT_MIN_SHARE, min_opacity: float = 0.0,
                 near: float = DEFAULT_NEAR) -> Tensor:
    """Which Gaussians belong to their object: drop far-away stray groups of each id.

    Per id, its Gaussians with opacity >= ``min_opacity`` are split into connected components at
    scale ``radius`` (``_voxel_components``: any two of the id's Gaussians closer than ``radius`` are
    connected; other ids never connect). A component is kept when it is the id's heaviest (most
    opacity), holds at least ``min_share`` of the id's opacity, or has its centre of mass inside the
    heaviest component's bounding box grown by ``near`` times that box's size on every side (a part
    of the object cut off by a gap, not a far-away group; 0 turns this off); everything else of the
    id is a stray. ``k`` is accepted for compatibility and unused. Vectorised over Gaussians.

    Args:
        ids: [N] int64 object ids, 0 = stuff.
        means: [N, 3] centres; opacities: [N] in [0, 1].
    Returns:
        [N] bool: True for the Gaussians ``extract`` returns for their id (always False for id 0).
    """
    N = ids.shape[0]
    if ids.dim() != 1 or means.shape != (N, 3) or opacities.reshape(-1).shape != (N,):
        raise ValueError(f"stray_filter: expected ids [N], means [N,3], opacities [N], got {tuple(ids.shape)}, "
                         f"{tuple(means.shape)}, {tuple(opacities.shape)}")
    if not radius > 0 or not 0 <= min_share <= 1:
        raise ValueError(f"stray_filter: need radius > 0 and min_share in [0, 1], got {radius}, {min_share}")
    ids = ids.to(torch.int64).cpu()
    w = opacities.detach().reshape(-1).to(torch.float64).cpu()  # [N]
    cand = (ids > 0) & (w >= min_opacity)  # [N]
    keep = torch.zeros(N, dtype=torch.bool)
    idx = torch.nonzero(cand).squeeze(1)  # [M]
    M = idx.numel()
    if M == 0:
        return keep
    oid, ow = ids[idx], w[idx]  # [M]
    comp = _voxel_components(means.detach()[idx].cpu().to(torch.float64), oid, radius)  # [M]
    C = int(comp.max()) + 1
    cmass = torch.zeros(C, dtype=torch.float64).index_add_(0, comp, ow)  # [C]
    cid = torch.zeros(C, dtype=torch.int64).scatter_(0, comp, oid)  # [C] the id of each component
    L = int(oid.max()) + 1
    idmass = torch.zeros(L, dtype=torch.float64).index_add_(0, oid, ow)  # [L]
    idbest = torch.full((L,), -1.0, dtype=torch.float64).scatter_reduce_(0, cid, cmass, "amax")  # [L]
    is_best = cmass >= idbest[cid]  # [C]
    keep_c = is_best | (cmass >= min_share * idmass[cid])  # [C]
    if near > 0:
        pts = means.detach()[idx].cpu().to(torch.float64)  # [M, 3]
        # the heaviest component of each id (ties: the first), its box, and every component's centre
        best_c = torch.full((L,), C, dtype=torch.int64).scatter_reduce_(
            0, cid, torch.where(is_best, torch.arange(C), torch.full((C,), C)), "amin")  # [L]
        in_best = comp == best_c[oid]  # [M]
        lo = torch.full((L, 3), float("inf"), dtype=torch.float64).scatter_reduce_(
            0, oid[in_best, None].expand(-1, 3), pts[in_best], "amin")
        hi = torch.full((L, 3), float("-inf"), dtype=torch.float64).scatter_reduce_(
            0, oid[in_best, None].expand(-1, 3), pts[in_best], "amax")
        grow = near * (hi - lo)  # [L, 3]
        wsum = torch.zeros(C, 3, dtype=torch.float64).index_add_(0, comp, pts * ow[:, None])
        centre = wsum / cmass.clamp_min(1e-12)[:, None]  # [C, 3] opacity-weighted
        inside = ((centre >= lo[cid] - grow[cid]) & (centre <= hi[cid] + grow[cid])).all(1)  # [C]
        keep_c |= inside
    keep[idx] = keep_c[comp]
    return keep


def _voxel_components(pts: Tensor, oid: Tensor, radius: float) -> Tensor:
    """Connected components of each id's points at scale ``radius``: points are binned into cubic
    voxels of side ``radius`` and two occupied voxels of the same id touch when they are 26-neighbours,
    so any two points of one id closer than ``radius`` always share a component (a radius graph, not
    a k-nearest graph: dense surfaces do not fall apart into clumps). O(N log N), no loop over points.

    Args:
        pts: [M, 3] float64 centres; oid: [M] int64 ids; radius: voxel side (> 0).
    Returns:
        [M] int64 component index (components never mix ids).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v = torch.floor((pts - pts.min(0).values) / radius).to(torch.int64) + 1  # [M, 3], >= 1
    R = (v.max(0).values + 2).tolist()  # room for the -1 / +1 neighbours
    _, ids_dense = torch.unique(oid, return_inverse=True)  # [M] in [0, L)
    L = int(ids_dense.max()) + 1
    if float(L) * R[0] * R[1] * R[2] >= 2.0 ** 62:
        raise ValueError(f"stray filter: radius {radius:g} is too small for this scene's extent; raise --stray_radius")
    key = ((ids_dense * R[0] + v[:, 0]) * R[1] + v[:, 1]) * R[2] + v[:, 2]  # [M] packed (id, voxel)
    cells, point_cell = torch.unique(key, return_inverse=True)  # [V] sorted, [M]
    cv = torch.stack([cells // (R[1] * R[2]) % R[0], cells // R[2] % R[1], cells % R[2]], 1)  # [V, 3]
    cid = cells // (R[0] * R[1] * R[2])  # [V]
    rows, cols = [], []
    for dx in (-1, 0, 1):  # the 13 forward offsets of the 26-neighbourhood (a fixed loop, not over data)
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                if (dx, dy, dz) <= (0, 0, 0):
                    continue
                nk = ((cid * R[0] + cv[:, 0] + dx) * R[1] + cv[:, 1] + dy) * R[2] + cv[:, 2] + dz  # [V]
                pos = torch.searchsorted(cells, nk).clamp_max(len(cells) - 1)
                hit = cells[pos] == nk
                rows.append(torch.nonzero(hit).squeeze(1))
                cols.append(pos[hit])
    r, c = torch.cat(rows).numpy(), torch.cat(cols).numpy()
    V = len(cells)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(V, V))
    _, cell_comp = connected_components(graph, directed=False)
    return torch.from_numpy(cell_comp.astype(np.int64))[point_cell]


def separate_pieces(ids: Tensor, means: Tensor, opacities: Tensor, seen: Tensor, mask_share: Tensor, *,
                    radius: float, first_id: int, min_gaussians: int = PIECE_MIN_GAUSSIANS,
                    min_seen: float = PIECE_MIN_SEEN, min_mask_share: float = PIECE_MIN_MASK_SHARE,
                    min_share: float = DEFAULT_MIN_SHARE, near: float = DEFAULT_NEAR) -> Tensor:
    """Give the pieces of an id that lie apart from its object, and that the input masks call an object,
    ids of their own.

    Two objects never seen together can end up with one code. The stray filter (same ``radius``,
    ``min_share``, ``near``) keeps the heavier and drops the other, so the lighter one could not be
    extracted under any id. Here each piece the filter would drop (a connected group of the id's
    Gaussians at scale ``radius``) becomes a new object when it has at least ``min_gaussians``
    Gaussians and, opacity-weighted over the piece, at least ``min_seen`` pixels of blending weight in
    the training views and at least ``min_mask_share`` of that weight on the masks' object pixels.
    Floaters and stray bits of surface (barely seen, or mostly on the masks' background) stay strays, and
    so does a piece whose opacity-weighted centre lies inside the box of what the filter keeps of its id
    (a part of the same object cut off by a gap).
    What the filter keeps is never touched, so no object loses a Gaussian it had.

    Args:
        ids: [N] int64 object ids, 0 = stuff. means: [N, 3]; opacities: [N] in [0, 1].
        seen: [N] blending weight per Gaussian over the training views, in pixels
            (``ThingVotes.seen``); mask_share: [N] its share on the masks' object pixels
            (``ThingVotes.mask_share``).
        first_id: the first new id (above every code + 1, so no rendered id can collide with it).
    Returns:
        [N] int64 ids on ``ids``' device: new pieces numbered ``first_id, first_id + 1, ...`` in order of
        their first Gaussian; every other Gaussian keeps its id.
    """
    N = ids.shape[0]
    if seen.reshape(-1).shape != (N,) or mask_share.reshape(-1).shape != (N,):
        raise ValueError(f"separate_pieces: expected seen and mask_share [N={N}], got {tuple(seen.shape)}, "
                         f"{tuple(mask_share.shape)}")
    dev = ids.device
    ids_c = ids.to(torch.int64).cpu()
    if not bool((ids_c > 0).any()):
        return ids.clone()
    means_c = means.detach().to(torch.float64).cpu()
    w = opacities.detach().reshape(-1).to(torch.float64).cpu()
    keep = stray_filter(ids_c, means_c, w, radius=radius, min_share=min_share, near=near)
    idx = torch.nonzero((ids_c > 0) & ~keep).squeeze(1)  # [D] the Gaussians the filter drops
    if idx.numel() == 0:
        return ids.clone()
    comp = _voxel_components(means_c[idx], ids_c[idx], radius)  # [D]
    C = int(comp.max()) + 1
    wd = w[idx]
    mass = torch.zeros(C, dtype=torch.float64).index_add_(0, comp, wd).clamp_min(1e-12)  # [C]
    count = torch.bincount(comp, minlength=C)  # [C]
    seen_w = torch.zeros(C, dtype=torch.float64).index_add_(
        0, comp, seen.detach().reshape(-1).to(torch.float64).cpu()[idx] * wd) / mass  # [C]
    share_w = torch.zeros(C, dtype=torch.float64).index_add_(
        0, comp, mask_share.detach().reshape(-1).to(torch.float64).cpu()[idx] * wd) / mass  # [C]
    new = (count >= min_gaussians) & (seen_w >= min_seen) & (share_w >= min_mask_share)  # [C]
    # a piece whose centre lies inside the box of what the filter keeps of its id is a cut-off part of that
    # object (a bed's far end), not a second object: it stays a stray
    from segmentation.visibility import id_extents

    lo, hi = (torch.from_numpy(a) for a in id_extents(torch.where(keep, ids_c, 0), means_c, 0.0))  # [L, 3] kept box
    parent = torch.zeros(C, dtype=torch.int64).scatter_(0, comp, ids_c[idx])  # [C]; every parent has a kept piece
    centre = torch.zeros(C, 3, dtype=torch.float64).index_add_(0, comp, means_c[idx] * wd[:, None]) / mass[:, None]
    new &= ~((centre >= lo[parent]) & (centre <= hi[parent])).all(1)
    if not bool(new.any()):
        return ids.clone()
    first = torch.full((C,), idx.numel(), dtype=torch.int64).scatter_reduce_(
        0, comp, torch.arange(idx.numel()), "amin")  # [C] first Gaussian of each piece
    order = torch.argsort(torch.where(new, first, torch.full_like(first, idx.numel())))  # new pieces first
    rank = torch.empty(C, dtype=torch.int64)
    rank[order] = torch.arange(C)
    out = ids_c.clone()
    take = new[comp]  # [D]
    out[idx[take]] = first_id + rank[comp[take]]
    return out.to(dev)


def first_piece_id(model) -> int:
    """The first id ``separate_pieces`` gives a piece in ``model``'s PLY: 2^emb_dim + 1, above every code's
    id (code + 1), so that no rendered id can collide with it."""
    return 2 ** int(feature_of(model, "embedding").shape[1]) + 1


def piece_features(instance: Tensor, first_id: int) -> Optional[Tuple[Tensor, Tensor]]:
    """Per-Gaussian channels that let a render tell the separated pieces (ids >= ``first_id`` in the
    PLY's ``instance_label``, ``separate_pieces``) from the rest of their code.

    Returns None when the column has no piece, else ([N, 2] float32 features: 1 and the piece's rank
    1..K for a piece's Gaussians, 0 and 0 for every other; [K] int64 the piece ids by rank).
    """
    inst = instance.reshape(-1).to(torch.int64)
    is_piece = inst >= first_id  # [N]
    if not bool(is_piece.any()):
        return None
    ids, rank = torch.unique(inst[is_piece], return_inverse=True)  # [K], [P]
    feat = torch.zeros(inst.numel(), 2, dtype=torch.float32, device=inst.device)
    feat[is_piece, 0] = 1.0
    feat[is_piece, 1] = (rank + 1).to(torch.float32)
    return feat, ids


def piece_pixels(ids: Tensor, rendered: Tensor, alpha: Tensor, piece_ids: Tensor, *, share: float = 0.5) -> Tensor:
    """[H, W] ids with every object pixel whose blending weight comes mostly (more than ``share`` of
    ``alpha``) from one piece's Gaussians given that piece's id. ``rendered``: [H, W, 2] the blended
    ``piece_features``; ``alpha``: [H, W, 1] or [H, W]. Pieces lie apart from the rest of their code,
    so a pixel is either the piece's or not; a pixel that two pieces share takes the nearer rank."""
    a = alpha.reshape(ids.shape).to(rendered.dtype)
    weight, rank = rendered[..., 0], rendered[..., 1]  # [H, W]
    mine = (ids > 0) & (weight > share * a.clamp_min(1e-6))
    k = torch.round(rank / weight.clamp_min(1e-6)).to(torch.int64).clamp(1, piece_ids.numel()) - 1  # [H, W]
    return torch.where(mine, piece_ids.to(ids.device)[k], ids)
