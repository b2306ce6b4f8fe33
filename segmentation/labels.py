"""From a trained model to labels: per pixel (render.py --labels) and per Gaussian (the PLY).

UniC-Lift reads labels off by thresholding (no clustering): instance id = code + 1 on pixels whose
predicted class is a thing, 0 elsewhere. The Contrastive-Lift baseline instead assigns each
rendered embedding to the nearest HDBSCAN centroid fitted after training. The class is the argmax
of the semantic logits: the feature itself (``--semantic_head logits``) or the linear decoder
applied to it (``--semantic_head embed``; the decoder is saved in ``segmentation.pt``).

Convention: instance ids are int64 (written as uint16 PNG); 0 = stuff / no instance.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from scene.gaussian_model import feature_of, has_feature
from segmentation.decode import decode_codes, gaussian_labels

CLUSTERS_FILE = "clusters.pt"
SEGMENTATION_FILE = "segmentation.pt"  # SegmentationObjective.state_dict(), next to the PLY
VOTES_FILE = "code_votes.pt"  # postprocess.CodeVotes of the training views, next to the PLY
DECODE_RULES = ("segments", "gaussians", "plain")  # render.py --decode


def semantic_classes(semantic: Tensor, decoder: Optional[torch.nn.Module] = None) -> Tensor:
    """Semantic feature [..., F] -> class ids [...] int64: argmax of the logits, which are the
    feature itself (F = C) or ``decoder(feature)`` (F = semantic_dim) when a decoder is given."""
    logits = decoder(semantic) if decoder is not None else semantic  # [..., C]
    return logits.argmax(dim=-1)


def thing_mask(semantic: Optional[Tensor], thing_classes: Sequence[int]) -> Optional[Tensor]:
    """[...] bool, True where the class is a thing; None when there is no semantic prediction."""
    if semantic is None or not thing_classes:
        return None
    things = torch.as_tensor(list(thing_classes), device=semantic.device)
    return torch.isin(semantic, things)


@torch.no_grad()
def gaussian_label_columns(model, thing_classes: Sequence[int],
                           decoder: Optional[torch.nn.Module] = None,
                           valid: Optional[Tensor] = None,
                           thing_votes: Optional["ThingVotes"] = None,
                           thing_rule: Optional[str] = None, semantic_masks: bool = True) -> Dict[str, Tensor]:
    """Each Gaussian's decoded labels for the PLY: instance (code + 1, 0 for stuff Gaussians)
    and semantic class (argmax of its logits, ``decoder`` applied first when given) when the model
    has a semantic head. Columns are [N] int64. ``valid`` ([K] codes, ``postprocess.valid_codes``)
    snaps rare codes exactly as rendered label maps are snapped, so ids agree between the two.
    ``thing_votes`` (``label_votes``): a Gaussian is a thing when its own semantic feature says so or
    when most of its blending weight fell on thing pixels (``ThingVotes.decide``); a Gaussian made a
    thing by the vote gets the most likely thing class of its own logits as ``semantic_label``, and one
    made stuff its most likely stuff class, so the two columns agree. ``thing_rule``:
    ``ThingVotes.decide``'s rule; "union_fill_masks" (the default, ``DEFAULT_THING_RULE``) gives each
    unseen Gaussian the labels of its seen neighbours (``ThingVotes.fill_unseen``), then lets the input masks settle two kinds of doubt: a seen Gaussian
    that only its own feature calls a thing (its pixels render as stuff, ``ThingVotes.disputed``) stays
    a thing only when at least ``DEFAULT_DISPUTE_MASK_SHARE`` of its weight fell on the masks' object
    pixels, and a stuff Gaussian among an object's Gaussians that carry its code, on the masks' object
    pixels, goes back to that object (``visibility.rescue_stuff`` gated by the same share). "union_fill"
    stops after the fill; "union_fill_rescue" skips the first of the two. Both steps need the masks'
    share in the votes; without it the rule is "union_fill". ``semantic_masks``: whether the scene's
    thing/stuff target came from semantic masks of its own (False: the fg/bg derived from the instance
    masks, ``SceneInfo.semantic_from_instances``); without them "union_fill_masks" skips the rescue,
    which corrects a semantic segmenter's thing/stuff flips, and on an instance-only room only added
    floor (RESULTS.md 14c). Last, "union_fill_masks" gives a piece of an id that lies apart from its
    object, and that the masks back, an id of its own (``separate_code_pieces``): a second object that
    shares the code, which the stray filter would otherwise drop.
    Without votes, each Gaussian's own feature decides (the former rule)."""
    thing_rule = DEFAULT_THING_RULE if thing_rule is None else thing_rule
    cols: Dict[str, Tensor] = {}
    codes = gaussian_labels(feature_of(model, "embedding").detach())  # [N]
    if valid is not None:
        from segmentation.postprocess import snap_to_valid

        codes = snap_to_valid(codes, valid)
    inst = codes + 1  # [N]
    if has_feature(model, "semantic"):
        feat = feature_of(model, "semantic").detach()
        sem = semantic_classes(feat, decoder)  # [N]
        own = thing_mask(sem, thing_classes)
        if own is not None:
            things = own if thing_votes is None else thing_votes.decide(own, rule=thing_rule)
            inst = torch.where(things, inst, torch.zeros_like(inst))
            if thing_votes is not None and thing_rule in FILL_RULES:
                means = model.get_means().detach()
                inst = thing_votes.fill_unseen(inst, codes + 1, own, means)
                share = thing_votes.mask_share() if thing_rule in MASK_RULES else None
                if share is not None:  # without masks there is nothing to settle disputes or gate the rescue on
                    from segmentation.visibility import (DEFAULT_RESCUE_MASK_SHARE, DEFAULT_RESCUE_RADIUS_FACTOR,
                                                         object_radius, rescue_stuff)

                    share = share.to(inst.device)
                    if thing_rule == "union_fill_masks":  # the masks settle what own feature and render dispute
                        doubt = thing_votes.disputed(own).to(inst.device) & (share < DEFAULT_DISPUTE_MASK_SHARE)
                        inst = torch.where(doubt, torch.zeros_like(inst), inst)
                    if thing_rule == "union_fill_rescue" or semantic_masks:
                        radius = object_radius(means, inst, DEFAULT_RESCUE_RADIUS_FACTOR, scales=model.get_scales())
                        inst = rescue_stuff(inst, codes + 1, means, radius, allowed=share >= DEFAULT_RESCUE_MASK_SHARE)
                    if thing_rule == "union_fill_masks":  # a second object sharing a code gets its own id
                        inst = separate_code_pieces(inst, model, thing_votes.seen, share)
                things = inst > 0
            sem = _agree_classes(sem, things, own, feat, decoder, thing_classes)
        cols["semantic_label"] = sem
    cols["instance_label"] = inst
    return cols


def separate_code_pieces(inst: Tensor, model, seen: Tensor, share: Tensor) -> Tensor:
    """[N] ids with the mask-backed pieces that the stray filter would drop given ids of their own
    (``pieces.separate_pieces`` at the filter's default radius, as ``tools/objects.py`` computes it), numbered
    from 2^emb_dim + 1 so that they never collide with a code's id. On the three full-schedule rooms of
    RESULTS.md 15a the stray filter dropped the second of two far-apart objects with one code (a ring
    3 m from the object that shared its code): it could not be extracted under any id."""
    from segmentation.pieces import first_piece_id, separate_pieces
    from segmentation.visibility import DEFAULT_RADIUS_FACTOR, object_radius

    means = model.get_means().detach()
    radius = object_radius(means, inst, DEFAULT_RADIUS_FACTOR, scales=model.get_scales())
    return separate_pieces(inst, means, model.get_opacities().detach(), seen, share, radius=radius,
                           first_id=first_piece_id(model))


def _agree_classes(sem: Tensor, things: Tensor, own: Tensor, feat: Tensor, decoder: Optional[torch.nn.Module],
                   thing_classes: Sequence[int]) -> Tensor:
    """``semantic_label`` [N] made to agree with the thing decisions ``things`` [N] bool: a Gaussian made a
    thing whose own argmax (``own`` [N] bool: a thing class) is a stuff class gets the most likely thing
    class of its own logits; one made stuff (``union_fill_masks``) whose own argmax is a thing class gets
    the most likely stuff class (unchanged when every class is a thing)."""
    promoted, demoted = things & ~own, ~things & own  # [N]
    if not bool((promoted | demoted).any()):
        return sem
    logits = decoder(feat) if decoder is not None else feat  # [N, C]
    is_thing = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    is_thing[list(thing_classes)] = True
    for moved, allowed in ((promoted, is_thing), (demoted, ~is_thing)):
        if bool(moved.any()) and bool(allowed.any()):
            best = logits.masked_fill(~allowed, float("-inf")).argmax(dim=1)  # [N] the best allowed class
            sem = torch.where(moved, best.to(sem.dtype), sem)
    return sem


def pixel_codes(embedding: Tensor, sigmoid_where: str) -> Tensor:
    """Rendered embedding [H, W, d] -> [H, W] int64 codes (thresholding in code space)."""
    prob = embedding.clamp(0, 1) if sigmoid_where == "gaussian" else torch.sigmoid(embedding)
    return decode_codes(prob)


def ids_from_codes(codes: Tensor, semantic: Optional[Tensor], alpha: Tensor, thing_classes: Sequence[int],
                   *, valid: Optional[Tensor] = None, min_alpha: float = 0.5) -> Tensor:
    """[H, W] codes -> instance ids: snapped to ``valid`` when given, ``+ 1``, 0 where the class
    (``semantic`` [H, W]) is not a thing, or without semantics where ``alpha`` [H, W, 1] < min_alpha."""
    if valid is not None:
        from segmentation.postprocess import snap_to_valid

        codes = snap_to_valid(codes, valid)
    ids = codes + 1  # [H, W]
    keep = thing_mask(semantic, thing_classes)
    if keep is None:
        keep = alpha[..., 0] >= min_alpha  # no semantics: every covered pixel is a thing
    return torch.where(keep, ids, torch.zeros_like(ids))


# fold_fragments' default share (render.py --fold_share): benchmarks/RESULTS.md 17d
DEFAULT_FOLD_SHARE = 0.5


@dataclass
class IdClasses:
    """Each object id's classes in 3D: ``share`` [K, C] float, the opacity share of the id's thing Gaussians
    in each class (rows of ids without a thing Gaussian are 0); ``main`` [K] int64, its largest class."""
    share: Tensor
    main: Tensor


@torch.no_grad()
def id_class_table(ids: Tensor, classes: Tensor, weights: Tensor, thing_classes: Sequence[int],
                   num_classes: int) -> IdClasses:
    """``IdClasses`` from Gaussians: ``ids`` [N] int64 (0 = none), ``classes`` [N] int64, ``weights`` [N]
    (opacities). Only Gaussians of a thing class count."""
    num_ids = int(ids.max()) + 1 if ids.numel() else 1
    things = thing_mask(classes, thing_classes)  # [N] bool, None without thing classes
    keep = (ids > 0) & (things if things is not None else torch.zeros_like(ids, dtype=torch.bool))
    mass = torch.zeros(num_ids * num_classes, dtype=torch.float64, device=ids.device)
    mass.index_add_(0, ids[keep] * num_classes + classes[keep], weights[keep].to(torch.float64))
    mass = mass.reshape(num_ids, num_classes)  # [K, C]
    share = (mass / mass.sum(dim=1, keepdim=True).clamp(min=1e-12)).float()
    return IdClasses(share=share, main=mass.argmax(dim=1))


@torch.no_grad()
def gaussian_id_classes(model, thing_classes: Sequence[int], *, valid: Optional[Tensor] = None, clusters=None,
                        decoder: Optional[torch.nn.Module] = None) -> Optional[IdClasses]:
    """``IdClasses`` of a trained model: each Gaussian's id decoded as its pixels are (its code snapped to
    ``valid`` + 1, or its nearest cluster), its class from its own semantic feature, weighted by opacity.
    None without an embedding or a semantic feature."""
    if not has_feature(model, "embedding") or not has_feature(model, "semantic") or not thing_classes:
        return None
    prob = torch.sigmoid(feature_of(model, "embedding").detach())  # [N, d] what a pixel of this Gaussian alone decodes
    if clusters is not None:
        ids = clusters.assign(prob).long()
    else:
        from segmentation.postprocess import snap_to_valid

        codes = decode_codes(prob)
        ids = (snap_to_valid(codes, valid) if valid is not None else codes) + 1
    logits_dim = decoder.out_features if decoder is not None else feature_of(model, "semantic").shape[-1]
    classes = semantic_classes(feature_of(model, "semantic").detach(), decoder)
    return id_class_table(ids, classes, model.get_opacities().detach().reshape(-1), thing_classes, logits_dim)


@torch.no_grad()
def fold_fragments(semantic: Tensor, ids: Tensor, table: Optional[IdClasses], max_share: float) -> Tensor:
    """[H, W] classes in which each object's pixels of a class it hardly holds take the object's class.

    A pixel of id ``i`` > 0 and thing class ``c`` moves to ``table.main[i]`` when class ``c`` holds less than
    ``max_share`` of id ``i``'s Gaussians (``table.share[i, c]``, opacity-weighted, in 3D, so every view of
    an object agrees). Where the semantic head and the code disagree at an object's rim (the neighbour's
    class on a few of its pixels), PQ^scene counts the pair (c, i) as a segment of its own, a false
    positive, and a user sees an object of two classes. A second object that shares the code and holds
    ``max_share`` or more keeps its class. Ids without thing Gaussians, and ``max_share`` <= 0 or no
    table, leave ``semantic`` unchanged. Every class of an id > 0 is a thing (``ids_from_codes``), so no
    stuff pixel moves."""
    if table is None or max_share <= 0 or ids.numel() == 0:
        return semantic
    num_ids, num_classes = table.share.shape
    known = (ids > 0) & (ids < num_ids) & (semantic >= 0) & (semantic < num_classes)  # [H, W]
    i = torch.where(known, ids, torch.zeros_like(ids))
    c = torch.where(known, semantic, torch.zeros_like(semantic))
    has_things = table.share.sum(dim=1) > 0  # [K]
    move = known & has_things[i] & (table.share[i, c] < max_share)
    return torch.where(move, table.main[i], semantic)


@torch.no_grad()
def decode_pixels(features: Dict[str, Tensor], alpha: Tensor, *, sigmoid_where: str,
                  thing_classes: Sequence[int], clusters=None, min_alpha: float = 0.5,
                  valid: Optional[Tensor] = None, decoder: Optional[torch.nn.Module] = None):
    """Rendered features -> (semantic [H, W] int64 or None, instance ids [H, W] int64).

    ``features["semantic"]`` is [H, W, C] logits, or [H, W, semantic_dim] with ``decoder`` (the
    embed head's Linear, see ``load_semantic_decoder``) mapping it to C logits.

    ``valid``: [K] int64 codes (``decoding_valid_codes``); when given, UniC-Lift pixel codes are
    snapped to the nearest valid code (``postprocess.snap_to_valid``) before ``+ 1``. Ignored with
    ``clusters``.
    """
    semantic = semantic_classes(features["semantic"], decoder) if "semantic" in features else None
    if clusters is not None:
        emb = features["embedding"]
        prob = emb.clamp(0, 1) if sigmoid_where == "gaussian" else torch.sigmoid(emb)
        ids = clusters.assign(prob).long()  # 0 = noise / stuff
        keep = thing_mask(semantic, thing_classes)
        if keep is None:
            keep = alpha[..., 0] >= min_alpha
        return semantic, torch.where(keep, ids, torch.zeros_like(ids))
    codes = pixel_codes(features["embedding"], sigmoid_where)
    return semantic, ids_from_codes(codes, semantic, alpha, thing_classes, valid=valid, min_alpha=min_alpha)


# ----- which codes are valid (decoding rule) --------------------------------------------------

def load_state_file(path: str, what: str, device="cpu") -> dict:
    """A state dict written next to the PLY (code votes, clusters, segmentation head), loaded with
    ``weights_only=True`` (tensors and plain containers only). A truncated, corrupt or foreign file is
    a one-line SceneError naming it."""
    import pickle

    from scene.cameras import SceneError

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        why = "holds objects other than tensors and plain containers" if "Unsupported global" in str(e) \
            else "is truncated or corrupt"
        raise SceneError(f"{path}: {what} {why}; delete it and retrain (or restore it from a backup)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types on a short or damaged file
        raise SceneError(f"{path}: {what} is truncated or corrupt ({type(e).__name__}); delete it and retrain "
                         f"(or restore it from a backup)") from None
    if not isinstance(state, dict):
        raise SceneError(f"{path}: {what} holds a {type(state).__name__}, not a state dict; delete it and retrain")
    return state


def save_code_votes(votes, folder: str) -> str:
    from utils.general_utils import atomic_torch_save

    path = os.path.join(folder, VOTES_FILE)
    atomic_torch_save(votes.state_dict(), path)
    return path


def load_code_votes(folder: str):
    """``postprocess.CodeVotes`` saved next to the PLY, or None when absent or of another format."""
    from segmentation.postprocess import CodeVotes

    import sys

    from scene.cameras import SceneError

    path = os.path.join(folder, VOTES_FILE)
    if not os.path.isfile(path):
        return None
    try:
        return CodeVotes.from_state_dict(load_state_file(path, "code votes"))
    except SceneError as e:  # a cache: recomputed from the training views
        why = str(e).split(";")[0]
    except (ValueError, KeyError, TypeError) as e:
        why = f"{path}: code votes unusable ({type(e).__name__}: {e})"
    print(f"warning: {why}; recomputing the votes from the training views", file=sys.stderr)
    return None


# A Gaussian is a thing when its own semantic feature says so, or when it was seen (at least
# THING_VOTE_MIN_WEIGHT pixels of blending weight over the training views) and more than
# THING_VOTE_SHARE of that weight fell on pixels the render decodes as a thing (``label_votes``).
# Measured on unseen Messy-Rooms scenes (H200, RESULTS.md 10b): median extraction recall against the
# exact surfaces 0.806 -> 0.960 (25 objects) and 0.811 -> 0.920 (100 objects) against the own rule
# alone; the vote alone reached 0.934 / 0.869. Median precision stays >= 0.985.
THING_VOTE_SHARE = 0.5
THING_VOTE_MIN_WEIGHT = 1.0
# The rules that go on from the union (gaussian_label_columns). "union_fill": unseen Gaussians take their
# seen neighbours' id (COLMAP 100, full schedule: box recall 0.927 -> 0.972, precision 0.991 both, RESULTS.md
# 12b). "union_fill_rescue" then gives stuff Gaussians among an object's Gaussians that carry its code back to
# it, where the input masks put at least a tenth of their weight on object pixels. Without that gate it cost
# precision on the full-schedule Messy-Rooms models (0.992 -> 0.919 at 25 objects, 0.926 -> 0.826 at 100,
# 13b); with it, on the same two rooms trained again (14a, box P / R): 0.994 / 0.973 and 0.931 / 0.984.
# "union_fill_masks" (the default) first drops the disputed Gaussians (seen, a thing by their own feature
# only) that the masks do not back (share < DEFAULT_DISPUTE_MASK_SHARE): on the same two models, offline from
# their dumps (14b), 1.000 / 0.958 and 0.981 / 0.981. Every share from 0.1 to 0.5 met 0.95 / 0.95 on both;
# the three CPU models kept their numbers (min P 0.996, min R 0.957). Chosen on these two rooms: unseen
# rooms are the next lease's question. On a CPU COLMAP room with instance masks only (14c) the rescue cost
# precision (0.963 -> 0.904): "union_fill_masks" rescues only where the scene has semantic masks.
THING_RULES = ("union_fill_masks", "union_fill", "union_fill_rescue", "union", "vote", "own")
DEFAULT_THING_RULE = THING_RULES[0]
FILL_RULES = ("union_fill", "union_fill_rescue", "union_fill_masks")  # the rules that fill unseen Gaussians
MASK_RULES = ("union_fill_rescue", "union_fill_masks")  # the rules that read the input masks' share
DEFAULT_DISPUTE_MASK_SHARE = 0.25


class ThingVotes:
    """Per Gaussian, how much of its blending weight over the training views fell on thing pixels.

    ``seen`` [N]: the weight summed over views and pixels (sum of T_i alpha_i, in pixels);
    ``thing`` [N]: the part of it on pixels the model's own render decodes as a thing;
    ``masked`` [N] or None: the part on pixels the input masks give an object (instance id > 0, inside
    the valid region), what the 2D segmenter said view by view; ``masked_seen`` [N] or None: the weight
    over the views that have a mask (all their pixels), its reference (``mask_share``)."""

    def __init__(self, seen: Tensor, thing: Tensor, masked: Optional[Tensor] = None,
                 masked_seen: Optional[Tensor] = None):
        self.seen, self.thing, self.masked, self.masked_seen = seen, thing, masked, masked_seen

    def mask_share(self) -> Optional[Tensor]:
        """[N] the share of each Gaussian's weight in the views with a mask that fell on object pixels of
        those masks (0 where it has none); None without masks."""
        if self.masked is None:
            return None
        ref = self.masked_seen if self.masked_seen is not None else self.seen
        return torch.where(ref > 0, self.masked / ref.clamp_min(1e-12), torch.zeros_like(ref))

    def decide(self, own: Tensor, *, rule: str = "union", share: float = THING_VOTE_SHARE,
               min_weight: float = THING_VOTE_MIN_WEIGHT) -> Tensor:
        """[N] bool thing decisions from ``own`` [N] bool (each Gaussian's own semantic feature).

        ``rule``: "union" (own, or a seen Gaussian's vote; the FILL_RULES decide the same here, and
        ``gaussian_label_columns`` goes on from it), "vote" (the vote where the Gaussian was seen, else
        own), "own" (the vote ignored)."""
        if rule not in THING_RULES:
            raise ValueError(f"thing rule {rule!r}: use one of {', '.join(THING_RULES)}")
        if rule == "own":
            return own
        seen, vote = self._vote(own.device, share, min_weight)
        return torch.where(seen, vote, own) if rule == "vote" else own | vote

    def disputed(self, own: Tensor, *, share: float = THING_VOTE_SHARE,
                 min_weight: float = THING_VOTE_MIN_WEIGHT) -> Tensor:
        """[N] bool: seen Gaussians that their own feature (``own`` [N] bool) calls a thing while their
        pixels vote stuff, the part of the union that the vote does not back."""
        seen, vote = self._vote(own.device, share, min_weight)
        return seen & own & ~vote

    def _vote(self, device, share: float, min_weight: float):
        """([N] bool seen: at least ``min_weight`` pixels of weight, [N] bool vote: seen and more than
        ``share`` of it on thing pixels) on ``device``."""
        seen_w = self.seen.to(device)
        seen = seen_w >= min_weight
        return seen, seen & (self.thing.to(device) > share * seen_w)

    def fill_unseen(self, ids: Tensor, own_ids: Tensor, own: Tensor, means: Tensor, *,
                    min_weight: float = THING_VOTE_MIN_WEIGHT) -> Tensor:
        """[N] int64 ids (0 = stuff) with every unseen Gaussian (< ``min_weight`` pixels of blending
        weight) decided by its seen neighbours: the most common id of its 8 nearest seen Gaussians
        (``visibility.fill_unseen``); one they call stuff stays a thing with its own id
        (``own_ids``) when its own feature (``own``) says thing. Seen Gaussians keep ``ids``.

        A Gaussian no training view sees gets no vote, and its own feature, barely trained, is
        mostly stuff: inside and behind objects that left a fifth of their surface unextracted.
        Measured at the full schedule (H200, RESULTS.md 12b): median recall on the 100-object
        COLMAP instance-only scene 0.927 -> 0.972 against the object boxes, precision unchanged."""
        from segmentation.visibility import fill_unseen

        filled = fill_unseen(ids, means, self.seen, min_weight=min_weight).to(ids.device)
        unseen = self.seen.to(ids.device) < min_weight
        return torch.where(unseen & (filled == 0) & own.to(ids.device), own_ids.to(ids.device), filled)


def label_votes(model, views, *, sigmoid_where: str = "rendered", thing_classes: Sequence[int] = (),
                decoder: Optional[torch.nn.Module] = None, backend: str = "auto", things: bool = True,
                **vote_settings):
    """One pass over the training views for the labels a saved model carries -> (CodeVotes, ThingVotes
    or None).

    Per view, one render of the embedding (and semantic feature) with the geometry held fixed:
    - its decoded codes vote for the codes that win the view's mask segments
      (``postprocess.segment_winners``, the default decoding rule);
    - with ``things`` and a semantic head, its pixels decoded as things (``decode_pixels``) and its
      pixels inside an input mask segment are sent back through a constant 4-channel feature, so one
      backward gives every Gaussian its blending weight on all pixels, on thing pixels, on masked
      pixels and on all pixels of masked views (``ThingVotes``).

    A Gaussian's own semantic feature says little when it contributes little to any pixel: the
    render is right where the big contributors are, and the small ones inherit nothing. The vote
    reads each Gaussian's thing/stuff decision off the pixels it is part of instead.
    ``vote_settings``: ``min_pixels`` / ``min_share`` of ``segment_winners``. No loop over pixels,
    segments or Gaussians."""
    from gaussian_renderer import GeometryDetached, render
    from segmentation.postprocess import CodeVotes, segment_winners

    emb = feature_of(model, "embedding").detach()
    feats = {"embedding": torch.sigmoid(emb) if sigmoid_where == "gaussian" else emb}
    with_sem = has_feature(model, "semantic") and bool(thing_classes)
    if with_sem:
        feats["semantic"] = feature_of(model, "semantic").detach()
    things = things and with_sem
    ones = torch.ones(emb.shape[0], 4, device=emb.device, dtype=emb.dtype, requires_grad=things)
    if things:
        feats["vote"] = ones
    fixed = GeometryDetached(model)
    winners, n_views = [], 0
    for view in views:
        with torch.set_grad_enabled(things):
            out = render(view.camera, fixed, features=feats, with_rgb=False, backend=backend)
        valid = getattr(view, "valid", None)
        seg = None
        if view.instance is not None:
            codes = pixel_codes(out.features["embedding"].detach(), sigmoid_where)  # [H, W]
            seg = view.instance.to(codes.device)
            if valid is not None:
                seg = seg.masked_fill(~valid.to(codes.device), 0)
            winners.append(segment_winners(codes, seg, **vote_settings).cpu())
            n_views += 1
        if things:
            with torch.no_grad():
                semantic = semantic_classes(out.features["semantic"], decoder)  # [H, W]
                thing_px = thing_mask(semantic, thing_classes).to(ones.dtype)  # [H, W]
            v = out.features["vote"]  # [H, W, 4]
            loss = v[..., 0].sum() + (v[..., 1] * thing_px).sum()
            if seg is not None:
                loss = loss + (v[..., 2] * (seg > 0).to(ones.dtype)).sum() + v[..., 3].sum()
            loss.backward()
    votes = CodeVotes.from_winners(winners, n_views, **vote_settings)
    if not things:
        return votes, None
    grad = ones.grad if ones.grad is not None else torch.zeros_like(ones)
    masked, masked_seen = (grad[:, 2].detach().clone(), grad[:, 3].detach().clone()) if n_views else (None, None)
    return votes, ThingVotes(grad[:, 0].detach().clone(), grad[:, 1].detach().clone(), masked, masked_seen)


def semantic_votes(model, views, num_classes: int, *, backend: str = "auto",
                   min_weight: float = THING_VOTE_MIN_WEIGHT) -> Tensor:
    """[N, C] float: each Gaussian's class shares, read off the training views' 2D semantic masks
    (``--semantic_head vote``: nothing semantic is trained, the classes are lifted after training).

    Per view, one render of a constant C-channel feature with the geometry held fixed, sent back
    through the view's one-hot class map (weighted by its confidence where the scene has one, 0
    outside the valid region and on unlabelled pixels): one backward gives every Gaussian its
    blending weight on each class's pixels, summed over views; the shares are those sums over their
    total. A Gaussian with less than ``min_weight`` pixels of weight in all views takes the class
    its 8 nearest seen Gaussians hold most often (``visibility.fill_unseen``), one-hot. Rendered
    like logits, the shares blend into a per-pixel vote whose argmax is the pixel's class. No loop
    over pixels, segments or Gaussians."""
    from gaussian_renderer import GeometryDetached, render
    from segmentation.visibility import fill_unseen

    means = model.get_means().detach()
    dev = means.device
    ones = torch.ones(means.shape[0], num_classes, device=dev, dtype=means.dtype, requires_grad=True)
    fixed = GeometryDetached(model)
    for view in views:
        if view.semantic is None:
            continue
        with torch.enable_grad():
            out = render(view.camera, fixed, features={"vote": ones}, with_rgb=False, backend=backend)
            sem = view.semantic.to(dev)
            weight = ((sem >= 0) & (sem < num_classes)).to(ones.dtype)
            if getattr(view, "valid", None) is not None:
                weight = weight * view.valid.to(dev).to(ones.dtype)
            if getattr(view, "confidence", None) is not None:
                weight = weight * view.confidence.to(dev).to(ones.dtype)
            target = torch.nn.functional.one_hot(sem.clamp(0, num_classes - 1), num_classes).to(ones.dtype)
            (out.features["vote"] * target * weight[..., None]).sum().backward()
    w = ones.grad.detach() if ones.grad is not None else torch.zeros_like(ones).detach()
    seen = w.sum(1)
    shares = w / seen.clamp_min(1e-12)[:, None]
    unseen = seen < min_weight
    n_unseen = int(unseen.sum())  # once per save, not in the training step
    if n_unseen == len(unseen):  # no labelled pixel anywhere: no class is preferred
        return shares.fill_(1.0 / num_classes)
    if n_unseen:
        filled = fill_unseen(shares.argmax(1), means, seen, min_weight=min_weight).to(dev)
        shares[unseen] = torch.nn.functional.one_hot(filled[unseen], num_classes).to(shares.dtype)
    return shares


def training_views(cfg, info, device, *, masked_only: bool = False):
    """The training views of a saved model's scene, loaded one at a time (a generator) at the
    resolution it trained at (``-r``, ``--mask_downscale``), with their masks; ``masked_only``: only
    views that have an instance mask."""
    from scene import load_view, resolution_scale

    frames = [f for f in info.train if f.instance_path or not masked_only]
    if not frames:
        return
    scale = resolution_scale(frames[0].camera.width, cfg.resolution) * getattr(cfg, "mask_downscale", 1.0)
    for f in frames:
        yield load_view(f, scale, device=device)


def votes_for_model(model, cfg, info, device, **vote_settings):
    """Recomputes the segment votes of a saved model from its training views (render.py, sweeps);
    None when no view has a mask. ``vote_settings``: ``min_pixels`` / ``min_share`` of
    ``postprocess.segment_winners``."""
    if not any(f.instance_path for f in info.train):
        return None
    votes, _ = label_votes(model, training_views(cfg, info, device, masked_only=True),
                           sigmoid_where=getattr(cfg, "sigmoid_where", "rendered"),
                           backend=getattr(cfg, "backend", "auto"), things=False, **vote_settings)
    return votes


def decoding_valid_codes(rule: str, model, *, votes=None, min_segments: Optional[int] = None,
                         min_gaussians: Optional[int] = None, snap_fraction: Optional[float] = None
                         ) -> Optional[Tensor]:
    """The valid codes that pixel and Gaussian codes snap to, or None (no snapping).

    ``rule``: "segments" (default: codes that won >= ``min_segments`` input mask segments, from
    ``votes``), "gaussians" (codes carried by >= K opaque Gaussians; K = ``min_gaussians`` when > 0,
    else ``snap_fraction`` of the Gaussians), "plain" (the paper's thresholding, no snapping).
    """
    from segmentation.postprocess import DEFAULT_MIN_SEGMENTS, DEFAULT_SNAP_FRACTION, model_valid_codes

    if rule == "plain":
        return None
    if rule == "gaussians":
        return model_valid_codes(model, min_gaussians, DEFAULT_SNAP_FRACTION if snap_fraction is None else snap_fraction)
    if rule == "segments":
        if votes is None:
            return None
        return votes.valid(DEFAULT_MIN_SEGMENTS if min_segments is None else min_segments)
    raise ValueError(f"decoding rule {rule!r}: use one of {', '.join(DECODE_RULES)}")


def _tuning_views(views, count: int) -> list:
    """Up to ``count`` training views with a pseudo-mask, evenly spaced over the list."""
    with_masks = [v for v in views if v.instance is not None]
    if len(with_masks) <= count:
        return with_masks
    step = len(with_masks) / count
    return [with_masks[int(i * step)] for i in range(count)]


@torch.no_grad()
def fit_contrastive_lift_clusters(views, model, objective, folder: str, *, backend: str = "auto",
                                  max_points: int = 50_000, thing_classes: Sequence[int] = (),
                                  log=None) -> dict:
    """Contrastive-Lift baseline: HDBSCAN on rendered training-view embeddings, saved next to the PLY.

    views: ``scene.View`` list; model: the trained GaussianModel; objective: its SegmentationObjective.
    With ``cfg.cluster_tune == "pseudo_pq"`` every ``cfg.cluster_tune_sizes`` candidate is fitted and
    the one with the best PQ against the pseudo-masks of up to ``cfg.cluster_tune_views`` training
    views is kept (``baselines.contrastive_lift.tune_min_cluster_size``; no GT is read); else
    ``cfg.min_cluster_size``. Returns ``{"min_cluster_size", "cluster_seconds"`` (the kept fit),
    ``"tune_seconds"`` (the rest of the tuning's wall time: the other candidates, which run side by side in worker
    processes, and the scoring), ``"tuning"`` (per candidate)``}``."""
    from gaussian_renderer import render
    from segmentation.baselines.contrastive_lift import fit_clusters, pseudo_mask_pq, tune_min_cluster_size

    cfg = objective.cfg
    t_all = time.perf_counter()
    per_view = max(1, max_points // max(1, len(views)))
    samples = []
    for view in views:
        out = render(view.camera, model, features=objective.features(model), with_rgb=False, backend=backend)
        prob = objective.code_space(out.features["embedding"]).reshape(-1, cfg.emb_dim)
        covered = out.alpha.reshape(-1) > 0.5
        if view.instance is not None and objective.ignore_id is not None:
            covered &= view.instance.to(prob.device).reshape(-1) != objective.ignore_id
        prob = prob[covered]
        pick = torch.randperm(len(prob), generator=torch.Generator().manual_seed(len(samples)))[:per_view]
        samples.append(prob[pick.to(prob.device)].cpu())
    samples = torch.cat(samples)
    if samples.shape[0] == 0:
        from scene.cameras import SceneError

        raise SceneError(f"{folder}: contrastive_lift has no embedding to cluster: no training-view pixel is covered "
                         "(opacity above 0.5) by the model; train longer (more --iterations or --init_points)")
    t_samples = time.perf_counter() - t_all
    mode = getattr(cfg, "cluster_tune", "off")
    tuned = _tuning_views(views, int(getattr(cfg, "cluster_tune_views", 16))) if mode == "pseudo_pq" else []
    if mode == "pseudo_pq" and not tuned:
        if log is not None:
            log(f"contrastive_lift: no training view has a mask to tune on; min_cluster_size {cfg.min_cluster_size}")
    if tuned:
        maps = []  # per view: code-space embedding [H, W, d], predicted thing [H, W], mask ids, mask thing, valid
        for view in tuned:
            out = render(view.camera, model, features=objective.features(model), with_rgb=False, backend=backend)
            prob = objective.code_space(out.features["embedding"])
            semantic = None
            if "semantic" in out.features:
                semantic = objective.semantic_logits(out.features["semantic"]).argmax(-1)
            pred_thing = thing_mask(semantic, thing_classes) if thing_classes else None
            if pred_thing is None:
                pred_thing = out.alpha[..., 0] >= 0.5
            inst = view.instance.to(prob.device)
            mask_thing = inst != 0
            if view.semantic is not None and thing_classes:
                mask_thing &= thing_mask(view.semantic.to(prob.device), thing_classes)
            maps.append((prob, pred_thing, inst, mask_thing, view.valid))

        def score(clusters) -> float:
            return pseudo_mask_pq([clusters.assign(m[0]) for m in maps], [m[1] for m in maps],
                                  [m[2] for m in maps], [m[3] for m in maps], [m[4] for m in maps])

        clusters, chosen, table = tune_min_cluster_size(
            samples, cfg.cluster_tune_sizes, score, max_points=max_points, generator=torch.Generator().manual_seed(0),
            log=log, workers=int(getattr(cfg, "cluster_tune_workers", 0)) or None)
        fit_seconds = next(r["fit_seconds"] for r in table if r["min_cluster_size"] == chosen)
    else:
        chosen, table = cfg.min_cluster_size, None
        t0 = time.perf_counter()
        clusters = fit_clusters(samples, min_cluster_size=chosen, max_points=max_points)
        fit_seconds = time.perf_counter() - t0
    from utils.general_utils import atomic_torch_save

    atomic_torch_save(clusters.state_dict(), os.path.join(folder, CLUSTERS_FILE))
    total = time.perf_counter() - t_all
    return {"min_cluster_size": chosen, "clusters": clusters.n_clusters, "cluster_seconds": t_samples + fit_seconds,
            "tune_seconds": total - t_samples - fit_seconds if table is not None else 0.0, "tuning": table}


def load_clusters(folder: str, device="cpu"):
    path = os.path.join(folder, CLUSTERS_FILE)
    if not os.path.isfile(path):
        return None
    from segmentation.baselines.contrastive_lift import ClusterModel

    from scene.cameras import SceneError

    try:
        return ClusterModel.from_state_dict(load_state_file(path, "Contrastive-Lift clusters", device))
    except (ValueError, KeyError) as e:
        raise SceneError(f"{path}: unusable clusters ({e}); delete it and retrain") from None


def load_semantic_decoder(folder: str, device="cpu") -> Optional[torch.nn.Linear]:
    """The embed head's Linear(semantic_dim, C) from ``folder/segmentation.pt`` (eval mode, no grad,
    on ``device``); None when the file is missing or the model has no decoder (logits head)."""
    path = os.path.join(folder, SEGMENTATION_FILE)
    if not os.path.isfile(path):
        return None
    from scene.cameras import SceneError

    state = load_state_file(path, "segmentation head", device).get("decoder")
    if state is None:
        return None
    try:
        out_dim, in_dim = state["weight"].shape
        decoder = torch.nn.Linear(in_dim, out_dim, device=device)
        decoder.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise SceneError(f"{path}: semantic decoder does not load ({type(e).__name__}); delete the file and "
                         f"retrain") from None
    return decoder.eval().requires_grad_(False)
