"""Per-object tools for a trained model: which id is which object; extract, remove or move objects.

    python tools/objects.py list     -m output/room10 [--iteration N] [--min_gaussians 50] [--json objects.json]
    python tools/objects.py sheet    -m output/room10 -o objects.png      # every object rendered alone, captioned
    python tools/objects.py extract  -m output/room10 --id 12 [--id 7 ...] -o chair.ply
    python tools/objects.py remove   -m output/room10 --id 12 -o without_chair.ply
    python tools/objects.py move     -m output/room10 --id 12 --translate 0.5 0 0 -o moved.ply
    python tools/objects.py evaluate -m output/room10 [--json extraction.json]  # synthetic scenes only
    python tools/objects.py list     -m output/room10 --split_disconnected    # one code, two places -> two ids
    python tools/objects.py evaluate -m output/room10 --decode plain          # ids by plain thresholding
    python tools/objects.py relabel  -m output/old_model -o output/old_model_relabelled  # current label rule

Convention: an object id is the PLY's per-Gaussian ``instance_label`` column (code + 1, 0 = stuff;
ids above 2^emb_dim are second objects that share a code, ``segmentation.pieces.separate_pieces``,
shown by the renders as their code's id) as train.py writes it; a PLY without that column is decoded from its embedding
(``segmentation.decode.gaussian_labels`` + 1, no thing/stuff mask). Ids are the ones the renders
use (``--decode plain``: the ids of ``render.py --decode plain``), and ``list`` prints each id's overlay colour (``colorize_ids``) so rows can be matched to the
``overlay/`` PNGs. ``--split_disconnected`` first gives spatially separate groups of one id their
own ids (``segmentation.postprocess.split_disconnected_codes`` on the neighbour graph of the
object Gaussians' means); those new ids exist only for this tool, not in the renders.

An object is the thing Gaussians of its id minus stray groups: ``stray_filter`` splits each id
into connected components of its neighbour graph (radius ``--stray_radius`` times the median
spacing of object Gaussians) and keeps the heaviest component (by opacity) and any holding at
least ``--stray_min_share`` of the id's opacity. ``--keep_strays`` turns the filter off. Every
command uses the same selection, so ``remove`` removes exactly what ``extract`` writes (the
strays stay in the scene). ``evaluate`` measures that selection against the synthetic
generator's object boxes (``tools/extraction_eval.py``).

``extract`` / ``remove`` / ``move`` copy every PLY column of the kept rows unchanged (dtype and
order too), so the output opens in any 3DGS viewer and loads back with ``GaussianModel.load_ply``;
``move`` changes only x, y, z of the chosen Gaussians. Outputs are written atomically. Bad input
(missing model or iteration, unknown id, a model trained without masks) prints one line on stderr
and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scene.cameras import SceneError  # noqa: E402
from scene.gaussian_model import GaussianModel, feature_of, has_feature  # noqa: E402
from segmentation.decode import colorize_ids, gaussian_labels  # noqa: E402
from segmentation.labels import DEFAULT_THING_RULE, THING_RULES  # noqa: E402
# the stray filter lives in the package (train.py's label save uses it too); re-exported here
from segmentation.pieces import (DEFAULT_MIN_OPACITY, DEFAULT_MIN_SHARE, DEFAULT_NEAR,  # noqa: E402,F401
                                 first_piece_id, stray_filter)
# the stray filter's radius: RADIUS_FACTOR x the median spacing of object Gaussians, at least SCALE_FACTOR x
# their median largest scale (shared with the thing rule's rescue, hence in the package)
from segmentation.visibility import DEFAULT_RADIUS_FACTOR  # noqa: E402
from segmentation.visibility import object_radius as default_radius  # noqa: E402

__all__ = ["ObjectsError", "ModelLabels", "OpenedModel", "ObjectRow", "ObjectTable", "open_model", "load_labels",
           "split_ids", "object_table", "model_table", "select", "extract", "remove", "move", "class_names_for",
           "training_cameras", "relabel", "main"]

DEFAULT_RADIUS2 = 1e-2  # neighbour radius^2 when cfg_args has no l3d_radius2 (the training default)
NEIGHBOURS = 16  # k of the neighbour graph for --split_disconnected and the stray filter
SHEET_SAMPLE = 4096  # sheet: Gaussians per object used to score the views


OBJECT_DECODE_RULES = ("segments", "plain")  # --decode: the PLY's snapped column, or plain thresholding


class ObjectsError(Exception):
    """Bad input for the object tool; the message is one line (printed as ``error: ...``, exit 2)."""


# ----- loading -------------------------------------------------------------------------------
@dataclass
class ModelLabels:
    """A trained model's Gaussians with their object ids.

    ``ids``: [N] int64 object id per Gaussian (0 = stuff); ``semantic``: [N] int64 class per
    Gaussian, or None when the model has no semantic head.
    """
    model_path: str
    iteration: int
    ply_path: str
    model: GaussianModel
    ids: Tensor  # [N] int64
    semantic: Optional[Tensor]  # [N] int64 or None
    split: bool = False  # ids went through split_ids
    source: str = "column"  # "column" (instance_label in the PLY) or "embedding" (decoded here)
    num_classes: Optional[int] = None  # classes of the semantic head when known
    raw_ids: Optional[Tensor] = None  # [N] int64 ids before the stray filter (after split_ids); None = ids
    strays: int = 0  # object Gaussians the stray filter gave id 0
    filled: bool = False  # unseen Gaussians relabelled from their neighbours (--fill_unseen)

    @property
    def column_ids(self) -> Tensor:
        """[N] ids the PLY's ``instance_label`` column holds (strays keep their id there)."""
        return self.ids if self.raw_ids is None else self.raw_ids


def _cfg(model_path: str) -> Optional[argparse.Namespace]:
    """The model's cfg_args, or None when it is missing or unreadable (the PLY is enough here)."""
    from arguments import load_cfg_args

    try:
        return load_cfg_args(model_path)
    except (FileNotFoundError, ValueError):
        return None


def _semantic_from_params(model: GaussianModel, folder: str, cfg) -> Optional[Tensor]:
    """[N] int64 classes from the semantic feature (argmax of logits, or of the embed head's decoder
    saved in ``segmentation.pt``); None when there is no semantic feature or its decoder is gone."""
    if not has_feature(model, "semantic"):
        return None
    from segmentation.labels import load_semantic_decoder, semantic_classes

    feat = feature_of(model, "semantic").detach()  # [N, F]
    decoder = load_semantic_decoder(folder)
    if decoder is not None and decoder.in_features == feat.shape[1]:
        return semantic_classes(feat, decoder)
    if getattr(cfg, "semantic_head", "logits") == "embed":
        return None  # an embedding without its decoder says nothing about classes
    return semantic_classes(feat)


@dataclass
class StrayFilter:
    """Settings of ``stray_filter`` (``keep`` = no filter: every Gaussian of an id is the object)."""
    keep: bool = False
    radius_factor: float = DEFAULT_RADIUS_FACTOR
    min_share: float = DEFAULT_MIN_SHARE
    min_opacity: float = DEFAULT_MIN_OPACITY
    near: float = DEFAULT_NEAR


@dataclass
class OpenedModel:
    """A trained model's PLY loaded on the CPU (``open_model``), before any labels are read."""
    model_path: str
    iteration: int
    ply_path: str
    model: GaussianModel

    @property
    def has_objects(self) -> bool:
        """The PLY carries object ids (``instance_label``) or the embedding they decode from."""
        return "instance_label" in self.model.labels or has_feature(self.model, "embedding")


def open_model(model_path: str, iteration: int = -1) -> OpenedModel:
    """Load ``MODEL/point_cloud/iteration_N/point_cloud.ply`` (-1 = latest) on the CPU.

    Raises ObjectsError (one line) for a missing folder or iteration or an unreadable PLY.
    """
    from scene.model_folder import find_iteration, load_model

    if not os.path.isdir(model_path):  # cfg_args is optional here: the PLY is enough
        what = "is a file, not a model folder" if os.path.exists(model_path) else "no such model folder"
        raise ObjectsError(f"{model_path}: {what}; pass the folder train.py -m wrote")
    try:
        iteration = find_iteration(model_path, iteration)
        model = load_model(model_path, iteration, "cpu")
    except SceneError as e:
        raise ObjectsError(str(e)) from None
    ply_path = os.path.join(model_path, "point_cloud", f"iteration_{iteration}", "point_cloud.ply")
    return OpenedModel(model_path, iteration, ply_path, model)


@torch.no_grad()
def load_labels(model_path: str, iteration: int = -1, *, split_disconnected: bool = False,
                min_gaussians: int = 50, strays: Optional[StrayFilter] = None,
                fill_unseen: bool = False, decode: str = "segments",
                opened: Optional[OpenedModel] = None) -> ModelLabels:
    """Load ``MODEL/point_cloud/iteration_N/point_cloud.ply`` (-1 = latest) on the CPU with its ids.

    ``ids`` are the Gaussians each object id stands for in ``list`` / ``extract`` / ``remove`` /
    ``move``: thing Gaussians of the id, with stray groups (``stray_filter``, settings ``strays``;
    default ``StrayFilter()``) set to 0. ``raw_ids`` keeps the ids before the filter. ``opened``:
    a model ``open_model`` already loaded (then ``model_path`` and ``iteration`` are ignored).

    ``decode``: "segments" (default) takes the PLY's ``instance_label`` column, snapped as render.py
    snaps by default; "plain" thresholds each Gaussian's embedding without snapping (the paper's
    rule, ``render.py --decode plain``), keeping the column's thing/stuff split (0 stays 0).

    Raises ObjectsError (one line) for a missing folder or iteration, an unreadable PLY, or a model
    trained without masks (no ``instance_label`` column and no ``embedding``).

    ``fill_unseen``: Gaussians the training views never see (``segmentation.visibility``) first take
    the majority id of their nearest seen neighbours (renders every training view once).
    """
    if decode not in OBJECT_DECODE_RULES:
        raise ObjectsError(f"--decode {decode}: use one of {', '.join(OBJECT_DECODE_RULES)}")
    if opened is None:
        opened = open_model(model_path, iteration)
    model_path, iteration, ply_path, model = opened.model_path, opened.iteration, opened.ply_path, opened.model
    folder = os.path.dirname(ply_path)
    cfg = _cfg(model_path)
    if "instance_label" in model.labels and decode == "plain" and has_feature(model, "embedding"):
        column = model.labels["instance_label"].to(torch.int64)  # 0 = stuff, whatever the snapping
        plain = gaussian_labels(feature_of(model, "embedding").detach()) + 1
        ids, source = torch.where(column > 0, plain, torch.zeros_like(plain)), "embedding"
    elif "instance_label" in model.labels:
        ids, source = model.labels["instance_label"].to(torch.int64), "column"
    elif has_feature(model, "embedding"):
        ids, source = gaussian_labels(feature_of(model, "embedding").detach()) + 1, "embedding"
    else:
        raise ObjectsError(f"{ply_path}: no instance embedding (model trained without masks); "
                           f"retrain with masks to get objects")
    semantic = model.labels.get("semantic_label")
    if semantic is None:
        semantic = _semantic_from_params(model, folder, cfg)
    num_classes = None
    if has_feature(model, "semantic") and getattr(cfg, "semantic_head", "logits") != "embed":
        num_classes = int(feature_of(model, "semantic").shape[1])
    if fill_unseen:
        from segmentation.visibility import fill_unseen as fill, gaussian_visibility

        cameras = training_cameras(model_path)
        model.to("cuda" if torch.cuda.is_available() else "cpu")  # renders one view each, on the GPU if any
        try:
            weight = gaussian_visibility(model, cameras, progress=sys.stderr.isatty()).cpu()
        finally:
            model.to("cpu")  # ids and every later step stay on the CPU
        ids = fill(ids, model.get_means().detach(), weight)
    out = ModelLabels(model_path, iteration, ply_path, model, ids, semantic, source=source, num_classes=num_classes)
    out.filled = fill_unseen
    if split_disconnected:
        radius2 = float(getattr(cfg, "l3d_radius2", DEFAULT_RADIUS2) or DEFAULT_RADIUS2)
        out.ids = split_ids(ids, model.get_means().detach(), radius2=radius2, min_gaussians=min_gaussians)
        out.split = True
    strays = strays if strays is not None else StrayFilter()
    if not strays.keep:
        means = model.get_means().detach()
        keep = stray_filter(out.ids, means, model.get_opacities().detach(),
                            radius=default_radius(means, out.ids, strays.radius_factor, model.get_scales()),
                            min_share=strays.min_share, min_opacity=strays.min_opacity, near=strays.near)
        out.raw_ids = out.ids
        out.ids = torch.where(keep, out.ids, torch.zeros_like(out.ids))
        out.strays = int(((out.raw_ids > 0) & ~keep).sum())
    return out


def split_ids(ids: Tensor, means: Tensor, *, radius2: float = DEFAULT_RADIUS2, k: int = NEIGHBOURS,
              min_gaussians: int = 50) -> Tensor:
    """Give spatially separate groups of one object id their own ids; stuff (0) is left alone.

    Args:
        ids: [N] int64 object ids, 0 = stuff.
        means: [N, 3] Gaussian centres.
        radius2, k: the neighbour graph (``segmentation.neighbors.neighbor_graph``) of the object
            Gaussians' means; two Gaussians of one id are connected through its edges.
        min_gaussians: groups smaller than this keep their id.
    Returns:
        [N] int64: per id, its largest group keeps the id; the other groups get ``max(ids) + 1, ...``
        in order of (id, first Gaussian index), so the numbering is deterministic.
    """
    from segmentation.neighbors import neighbor_graph
    from segmentation.postprocess import split_disconnected_codes

    if ids.dim() != 1 or means.shape != (ids.shape[0], 3):
        raise ValueError(f"split_ids: expected ids [N] and means [N,3], got {tuple(ids.shape)}, {tuple(means.shape)}")
    things = torch.nonzero(ids > 0).squeeze(1)  # [M] the object Gaussians
    out = ids.clone()
    if things.numel() < 2:
        return out
    edges = neighbor_graph(means[things], radius2=radius2, k=k)  # [E, 2] indices into things
    out[things] = split_disconnected_codes(ids[things], edges, min_gaussians=min_gaussians).to(ids.dtype)
    return out


# ----- class names ---------------------------------------------------------------------------
def class_names_for(cfg, num_classes: Optional[int] = None) -> Optional[List[str]]:
    """Class names of the scene the model was trained on, or None (no cfg, scene gone, no names).

    Instance-only scenes (the model's semantic head has at most 2 classes, a Messy-Rooms scene, a
    COLMAP scene trained without ``--sem_dir``) have two classes: background / object. Otherwise
    the names come from the scene folder (``SceneInfo`` carries none): ``generator.json``'s
    ``class_names`` (our synthetic scenes), else the format's fixed classes (PanopLi: the 21
    reduced ScanNet classes + void of DATA.md). COLMAP with semantics and Blender: None.
    """
    from tools.synthetic.classes import CLASS_NAMES, MESSY_CLASS_NAMES

    if num_classes is not None and num_classes <= 2:
        return list(MESSY_CLASS_NAMES)
    path = getattr(cfg, "source_path", None)
    if not path or not os.path.isdir(path):
        return None
    from scene.dataset_readers import detect_format

    try:
        fmt = detect_format(path)
    except SceneError:
        fmt = None
    sem_dir = getattr(cfg, "sem_dir", None)
    if fmt == "messy" or (fmt == "colmap" and not sem_dir) or (isinstance(sem_dir, str) and sem_dir.lower() == "none"):
        return list(MESSY_CLASS_NAMES)
    gen = os.path.join(path, "generator.json")
    if os.path.isfile(gen):
        try:
            with open(gen) as f:
                names = json.load(f).get("class_names")
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return list(names)
        except (OSError, ValueError):
            pass  # a broken generator.json: fall back to the format's names
    return {"panopli": list(CLASS_NAMES)}.get(fmt)


# ----- the table -----------------------------------------------------------------------------
@dataclass
class ObjectRow:
    """One object id. Centroid: opacity-weighted mean of its Gaussians' centres (plain mean when all
    its opacities are 0); bbox: axis-aligned box of the centres; colour: its overlay colour."""
    id: int
    gaussians: int
    semantic: Optional[int]
    class_name: Optional[str]
    centroid: List[float]  # [3]
    bbox_min: List[float]  # [3]
    bbox_max: List[float]  # [3]
    extent: List[float]  # [3] bbox_max - bbox_min
    color: str  # "#rrggbb", colorize_ids(render_id): its colour in the overlays
    render_id: int = 0  # the id the renders give it: its own, or for a separated piece its code's id
    # (render.py --pieces gives a piece its own id in the label maps; the overlays' colour then differs)


@dataclass
class ObjectTable:
    """Every object id of a model; ``rows`` (>= min_gaussians, by count desc then id) and ``small``."""
    model_path: str
    iteration: int
    num_gaussians: int
    stuff_gaussians: int
    min_gaussians: int
    split_disconnected: bool
    strays: int = 0  # object Gaussians the stray filter dropped (not in any row)
    rows: List[ObjectRow] = field(default_factory=list)
    small_ids: List[int] = field(default_factory=list)
    small_gaussians: int = 0

    def to_json(self) -> dict:
        """``{model_path, iteration, num_gaussians, stuff_gaussians, min_gaussians, split_disconnected,
        strays, objects: [row, ...], small: {ids, gaussians}}``."""
        out = {k: v for k, v in asdict(self).items() if k not in ("rows", "small_ids", "small_gaussians")}
        out["objects"] = [asdict(r) for r in self.rows]
        out["small"] = {"ids": list(self.small_ids), "gaussians": self.small_gaussians}
        return out


def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


@torch.no_grad()
def object_table(labels: ModelLabels, *, min_gaussians: int = 50,
                 class_names: Optional[Sequence[str]] = None) -> ObjectTable:
    """Per-id statistics, vectorised over Gaussians (unique / index_add / scatter_reduce / bincount)."""
    ids = labels.ids.reshape(-1).to(torch.int64)  # [N]
    model = labels.model
    N = ids.numel()
    table = ObjectTable(labels.model_path, labels.iteration, N, int((labels.column_ids == 0).sum()), min_gaussians,
                        labels.split, strays=labels.strays)
    things = ids > 0  # [N]
    obj = ids[things]  # [M]
    if obj.numel() == 0:
        return table
    means = model.get_means().detach()[things].to(torch.float64)  # [M, 3]
    w = model.get_opacities().detach()[things].to(torch.float64)  # [M]
    uniq, inv, counts = torch.unique(obj, return_inverse=True, return_counts=True)  # [K], [M], [K]
    K = uniq.numel()
    wsum = torch.zeros(K, dtype=torch.float64).index_add_(0, inv, w)  # [K]
    wpos = torch.zeros(K, 3, dtype=torch.float64).index_add_(0, inv, means * w[:, None])  # [K, 3]
    psum = torch.zeros(K, 3, dtype=torch.float64).index_add_(0, inv, means)  # [K, 3]
    plain = psum / counts[:, None].to(torch.float64)
    centroid = torch.where(wsum[:, None] > 0, wpos / wsum.clamp_min(1e-300)[:, None], plain)  # [K, 3]
    idx3 = inv[:, None].expand(-1, 3)  # [M, 3]
    lo = torch.full((K, 3), float("inf"), dtype=torch.float64).scatter_reduce_(0, idx3, means, "amin")  # [K, 3]
    hi = torch.full((K, 3), float("-inf"), dtype=torch.float64).scatter_reduce_(0, idx3, means, "amax")  # [K, 3]
    semantic = None
    if labels.semantic is not None:
        sem = labels.semantic.reshape(-1).to(torch.int64)[things].clamp_min(0)  # [M]
        C = int(sem.max()) + 1
        votes = torch.bincount(inv * C + sem, minlength=K * C).reshape(K, C)  # [K, C]
        semantic = votes.argmax(dim=1)  # [K] majority class (ties: the smaller class)
    render_ids = _render_ids(model, uniq, inv, things)  # [K]
    colours = colorize_ids(render_ids)  # [K, 3] uint8
    order = sorted(range(K), key=lambda i: (-int(counts[i]), int(uniq[i])))  # rows, not Gaussians
    for i in order:
        n = int(counts[i])
        if n < min_gaussians:
            table.small_ids.append(int(uniq[i]))
            table.small_gaussians += n
            continue
        cls = int(semantic[i]) if semantic is not None else None
        if cls is None:
            name = "object"  # no semantics: an instance-only model, every id is an object
        else:
            name = class_names[cls] if class_names and 0 <= cls < len(class_names) else None
        table.rows.append(ObjectRow(
            id=int(uniq[i]), gaussians=n, semantic=cls, class_name=name,
            centroid=centroid[i].tolist(), bbox_min=lo[i].tolist(), bbox_max=hi[i].tolist(),
            extent=(hi[i] - lo[i]).tolist(), color=_hex(colours[i].tolist()), render_id=int(render_ids[i])))
    return table


def _render_ids(model, uniq: Tensor, inv: Tensor, things: Tensor) -> Tensor:
    """[K] the id the renders give each id of ``uniq`` [K]: the id itself, except for pieces that train.py
    gave an id of their own (``segmentation.pieces.separate_pieces``, ids from 2^emb_dim + 1), which
    render with the id of their code (the most common code + 1 of their Gaussians). ``inv`` [M]: the
    row of each thing Gaussian (``things`` [N] bool)."""
    if not has_feature(model, "embedding"):
        return uniq.clone()
    piece = uniq >= first_piece_id(model)  # [K]
    if not bool(piece.any()):
        return uniq.clone()
    code = gaussian_labels(feature_of(model, "embedding").detach()[things].cpu()) + 1  # [M]
    sel = piece[inv]  # [M]
    pairs, count = torch.unique(torch.stack([inv[sel], code[sel]], 1), dim=0, return_counts=True)  # [P, 2], [P]
    K = uniq.numel()
    best = torch.zeros(K, dtype=count.dtype).scatter_reduce_(0, pairs[:, 0], count, "amax")  # [K]
    top = count == best[pairs[:, 0]]  # [P] the most common code(s) of each piece
    big = torch.iinfo(torch.int64).max
    out = torch.full((K,), big, dtype=torch.int64).scatter_reduce_(0, pairs[top, 0], pairs[top, 1], "amin")
    return torch.where(piece, out, uniq)  # ties: the smaller code


def model_table(labels: ModelLabels, *, min_gaussians: int = 50) -> ObjectTable:
    """``object_table`` with the class names of the model's scene (``class_names_for``): the table
    ``list`` prints."""
    return object_table(labels, min_gaussians=min_gaussians,
                        class_names=class_names_for(_cfg(labels.model_path), labels.num_classes))


def format_table(table: ObjectTable) -> str:
    """The table as text: a header line, one line per row, the small-id summary and the stuff count."""
    split = ", disconnected groups split" if table.split_disconnected else ""
    lines = [f"{table.model_path} iteration {table.iteration}: {table.num_gaussians} Gaussians, "
             f"{len(table.rows)} objects with >= {table.min_gaussians} Gaussians{split}"]
    lines.append(f"{'id':>6}  {'class':<18} {'gaussians':>9}  {'centroid x, y, z':<28} "
                 f"{'extent x, y, z':<26} colour")
    for r in table.rows:
        cls = "-" if r.semantic is None else (f"{r.class_name} ({r.semantic})" if r.class_name else str(r.semantic))
        c = ", ".join(f"{v:8.3f}" for v in r.centroid)
        e = ", ".join(f"{v:7.3f}" for v in r.extent)
        shown = f" (renders as id {r.render_id}: a second object with its code)" if r.render_id != r.id else ""
        lines.append(f"{r.id:>6}  {cls:<18} {r.gaussians:>9}  {c:<28} {e:<26} {r.color}{shown}")
    if table.small_ids:
        lines.append(f"{len(table.small_ids)} small ids ({table.small_gaussians} Gaussians)")
    lines.append(f"stuff (id 0): {table.stuff_gaussians} Gaussians"
                 + (f"; stray groups left out of their objects: {table.strays} Gaussians" if table.strays else ""))
    return "\n".join(lines)


# ----- selection and edits -------------------------------------------------------------------
def select(ids: Tensor, wanted: Sequence[int]) -> Tensor:
    """[N] bool mask of the Gaussians whose id is in ``wanted``.

    Raises ObjectsError naming the first id no Gaussian carries, with the 10 largest ids.
    """
    uniq, counts = torch.unique(ids, return_counts=True)  # [K], [K]
    present = set(uniq.tolist())
    unknown = [i for i in wanted if i not in present]
    if unknown:
        objects = uniq > 0
        uniq, counts = uniq[objects], counts[objects]
        order = torch.argsort(-counts, stable=True)[:10]  # ties: the smaller id (uniq is sorted)
        largest = ", ".join(f"{int(uniq[j])} ({int(counts[j])} Gaussians)" for j in order) or "none"
        raise ObjectsError(f"unknown id {unknown[0]}: no Gaussian carries it; the largest ids are {largest} "
                           f"(see `list`)")
    return torch.isin(ids, torch.as_tensor(list(wanted), dtype=ids.dtype))


def _columns(labels: ModelLabels) -> Dict[str, np.ndarray]:
    """The PLY's raw columns (every property, stored dtype and order); ``instance_label`` replaced by
    the split ids when ``labels.split``."""
    from utils.ply import read_ply

    cols = read_ply(labels.ply_path)
    if (labels.split or labels.filled) and "instance_label" in cols:
        cols["instance_label"] = labels.column_ids.numpy().astype(cols["instance_label"].dtype)
    return cols


def _write(cols: Dict[str, np.ndarray], rows: Optional[np.ndarray], out_path: str, labels: ModelLabels) -> int:
    """Write ``cols`` (restricted to ``rows`` [N] bool, None = all) atomically; returns the row count."""
    from utils.ply import write_ply

    if os.path.abspath(out_path) == os.path.abspath(labels.ply_path):
        raise ObjectsError(f"{out_path}: is the model's own PLY; write the result elsewhere (-o)")
    out = cols if rows is None else {k: v[rows] for k, v in cols.items()}
    write_ply(out_path, out)
    return int(rows.sum()) if rows is not None else len(next(iter(cols.values())))


def extract(labels: ModelLabels, ids: Sequence[int], out_path: str) -> int:
    """Write only the Gaussians of ``ids`` to ``out_path`` (all columns); returns how many."""
    mask = select(labels.ids, ids).numpy()  # [N]
    return _write(_columns(labels), mask, out_path, labels)


def remove(labels: ModelLabels, ids: Sequence[int], out_path: str) -> int:
    """Write every Gaussian except those of ``ids`` to ``out_path``; returns how many were kept."""
    mask = select(labels.ids, ids).numpy()  # [N]
    return _write(_columns(labels), ~mask, out_path, labels)


def move(labels: ModelLabels, ids: Sequence[int], translate: Sequence[float], out_path: str) -> int:
    """Write the whole model with the means of ``ids``' Gaussians shifted by ``translate`` [3]
    (added in the column's dtype); returns how many Gaussians moved."""
    if len(translate) != 3:
        raise ObjectsError(f"--translate needs 3 numbers (DX DY DZ), got {len(translate)}")
    mask = select(labels.ids, ids).numpy()  # [N]
    cols = _columns(labels)
    for axis, d in zip("xyz", translate):
        col = cols[axis]
        cols[axis] = np.where(mask, col + np.asarray(d, dtype=col.dtype), col).astype(col.dtype)
    _write(cols, None, out_path, labels)
    return int(mask.sum())


# ----- labels recomputed from the training views ----------------------------------------------


def relabel(model_path: str, output: str, *, iteration: int = -1, things: str = DEFAULT_THING_RULE,
            device: Optional[str] = None, quiet: bool = False) -> dict:
    """Recompute a trained model's label columns and write the model again to ``output``.

    One render per training view (``segmentation.labels.label_votes``), as train.py does when it
    saves: the segment votes of the default decoding rule, and each Gaussian's thing/stuff decision.
    ``things`` (``segmentation.labels.THING_RULES``): "union_fill_masks" (train.py's default: "union_fill",
    then the input masks settle the Gaussians in doubt: one that only its own feature calls a thing
    stays one where the masks back it, and, where the scene has semantic masks, a stuff Gaussian among an
    object's Gaussians that carries the object's code, and that the masks put on object pixels, joins
    it), "union_fill" ("union", then each
    Gaussian no training view sees takes the labels of its seen neighbours), "union_fill_rescue"
    ("union_fill_masks" without its first step), "union" (a thing when its own semantic
    feature or the pixels it is part of say so), "vote" (the pixels decide for seen Gaussians) or
    "own" (each Gaussian's own feature: the rule of models saved before the vote).
    Models saved by an older version get the current labels this way; the parameters are copied
    unchanged.

    ``output`` gets cfg_args, cameras.json and ``point_cloud/iteration_N/`` (the PLY with the new
    columns, ``code_votes.pt``, and ``segmentation.pt`` / ``clusters.pt`` copied). Returns counts.
    """
    import shutil

    from scene.dataset_readers import read_scene_for
    from scene.model_folder import find_iteration, load_model, require_model
    from segmentation.labels import (CLUSTERS_FILE, SEGMENTATION_FILE, gaussian_label_columns,
                                     label_votes, load_semantic_decoder, save_code_votes, training_views)
    from utils.general_utils import pick_device

    if things not in THING_RULES:
        raise ObjectsError(f"--things {things}: use one of {', '.join(THING_RULES)}")
    if os.path.abspath(output) == os.path.abspath(model_path):
        raise ObjectsError(f"{output}: relabel writes a new model folder; pass another -o than -m")
    try:
        cfg = require_model(model_path, ("resolution",))
        iteration = find_iteration(model_path, iteration)
        if not os.path.isdir(cfg.source_path):
            raise ObjectsError(f"{cfg.source_path}: the scene this model was trained on is gone; fix "
                               f"source_path in {os.path.join(model_path, 'cfg_args')}")
        info = read_scene_for(cfg, allow_missing_masks=True)
        dev = pick_device(device or "auto")
        model = load_model(model_path, iteration, dev)
    except SceneError as e:
        raise ObjectsError(str(e)) from None
    src = os.path.join(model_path, "point_cloud", f"iteration_{iteration}")
    if not has_feature(model, "embedding"):
        raise ObjectsError(f"{os.path.join(src, 'point_cloud.ply')}: no instance embedding (model trained "
                           f"without masks); nothing to relabel")
    decoder = None
    if getattr(cfg, "semantic_head", "logits") == "embed" and has_feature(model, "semantic"):
        decoder = load_semantic_decoder(src, dev)
        if decoder is None or decoder.in_features != feature_of(model, "semantic").shape[-1]:
            raise ObjectsError(f"{os.path.join(src, SEGMENTATION_FILE)}: missing or without a semantic decoder "
                               f"matching the PLY; it is needed to tell things from stuff")
    if not info.train:
        raise ObjectsError(f"{cfg.source_path}: no training views to vote with")
    views = training_views(cfg, info, dev)
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        views = tqdm(views, total=len(info.train), desc="relabel", unit="view", leave=False)
    votes, thing_votes = label_votes(model, views, sigmoid_where=getattr(cfg, "sigmoid_where", "rendered"),
                                     thing_classes=info.thing_classes, decoder=decoder,
                                     backend=getattr(cfg, "backend", "auto"), things=things != "own")
    valid = votes.valid()
    cols = gaussian_label_columns(model, info.thing_classes, decoder=decoder, valid=valid,
                                  thing_votes=thing_votes, thing_rule=things,
                                  semantic_masks=not info.semantic_from_instances)
    dst = os.path.join(output, "point_cloud", f"iteration_{iteration}")
    os.makedirs(dst, exist_ok=True)
    for name in ("cfg_args", "cameras.json"):
        if os.path.isfile(os.path.join(model_path, name)):
            shutil.copy2(os.path.join(model_path, name), os.path.join(output, name))
    for name in (SEGMENTATION_FILE, CLUSTERS_FILE):
        if os.path.isfile(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    save_code_votes(votes, dst)
    model.to("cpu").save_ply(os.path.join(dst, "point_cloud.ply"), labels={k: v.cpu() for k, v in cols.items()})
    inst = cols["instance_label"]
    return {"output": output, "iteration": iteration, "gaussians": int(inst.numel()),
            "thing_gaussians": int((inst > 0).sum()), "valid_codes": 0 if valid is None else int(valid.numel()),
            "things": things}


# ----- extraction quality against the generator's geometry -----------------------------------
def evaluate(labels: ModelLabels, scene: Optional[str] = None, *, grow: Optional[float] = None,
             inner: Optional[float] = None, reference: str = "surface") -> dict:
    """Precision / recall of ``extract`` per ground-truth object (``tools.extraction_eval``), for
    every Gaussian of the id (no stray filter) and for what ``extract`` returns with the settings
    ``labels`` was loaded with. ``scene``: the generator's scene folder (default: the model's
    ``source_path``). Returns ``{"scene", "all": report, "extract": report}`` (reports as JSON)."""
    from tools import extraction_eval as ev

    if scene is None:
        scene = getattr(_cfg(labels.model_path), "source_path", None)
        if not scene:
            raise ObjectsError(f"{labels.model_path}: cfg_args names no scene; pass --scene SCENE")
    try:
        boxes = ev.load_boxes(scene)
    except ev.ExtractionEvalError as e:
        raise ObjectsError(str(e)) from None
    model = labels.model
    means, opac = model.get_means().detach(), model.get_opacities().detach()
    kw = {"grow": ev.GROW if grow is None else grow}
    if reference == "surface":
        try:
            pts, inst = ev.surface_samples(ev.scene_mesh(scene))
        except ev.ExtractionEvalError as e:
            raise ObjectsError(str(e)) from None
        kw["inner"] = ev.SURFACE_TOL if inner is None else inner
        kw["owner"] = ev.surface_owner(means.to(torch.float64).cpu().numpy(), pts, inst, kw["inner"])
    else:
        kw["inner"] = ev.INNER if inner is None else inner
    raw = labels.column_ids
    every = ev.measure_extraction(raw, raw > 0, means, opac, boxes, **kw)
    clean = ev.measure_extraction(raw, labels.ids > 0, means, opac, boxes, **kw)
    return {"scene": os.path.abspath(scene), "all": every, "extract": clean}


# ----- contact sheet -------------------------------------------------------------------------
class _Subset:
    """The render contract (``gaussian_renderer.render``) over some rows of a model."""

    def __init__(self, model: GaussianModel, rows: Tensor):
        self.model, self.rows, self.active_sh_degree = model, rows, model.active_sh_degree

    def get_means(self):
        return self.model.get_means()[self.rows]

    def get_scales(self):
        return self.model.get_scales()[self.rows]

    def get_quats(self):
        return self.model.get_quats()[self.rows]

    def get_opacities(self):
        return self.model.get_opacities()[self.rows]

    def get_sh(self):
        return self.model.get_sh()[self.rows]


def training_cameras(model_path: str) -> list:
    """The training views' cameras (``scene.cameras.Camera``) of a model: from its scene (exact K)
    when the scene folder is there, else from ``cameras.json`` (principal point at the centre)."""
    from scene.cameras import Camera

    cfg = _cfg(model_path)
    if cfg is not None and os.path.isdir(getattr(cfg, "source_path", "") or ""):
        from scene.dataset_readers import read_scene_for

        try:
            return [f.camera for f in read_scene_for(cfg, allow_missing_masks=True).train]
        except SceneError:
            pass  # fall back to cameras.json
    path = os.path.join(model_path, "cameras.json")
    try:
        with open(path) as f:
            cams = json.load(f)
    except (OSError, ValueError):
        raise ObjectsError(f"{path}: missing or unreadable and the scene is gone; cannot place cameras") from None
    out = []
    for c in cams:
        R = np.asarray(c["rotation"], np.float64)  # camera-to-world rotation (3DGS cameras.json)
        w2c = np.eye(4)
        w2c[:3, :3] = R.T
        w2c[:3, 3] = -R.T @ np.asarray(c["position"], np.float64)
        W, H = int(c["width"]), int(c["height"])
        K = np.array([[c["fx"], 0, W / 2], [0, c["fy"], H / 2], [0, 0, 1]], np.float64)
        out.append(Camera(int(c["id"]), str(c["img_name"]), K, w2c, W, H))
    return out


def best_views(cameras: Sequence, means: Tensor, opacities: Tensor, scales: Tensor, ids: Tensor,
               wanted: Sequence[int]) -> Dict[int, int]:
    """Per object id, the index of the camera that sees it best: the most projected opacity
    (sum over its Gaussians in front of the camera and inside the image of opacity x projected
    area (f s / z)^2), times the share of its opacity inside the image (whole objects first).
    Occlusion by other objects is ignored: the sheet renders each object alone."""
    V = torch.as_tensor(np.stack([c.world_view for c in cameras]), dtype=torch.float64)  # [C, 4, 4]
    K = torch.as_tensor(np.stack([c.K for c in cameras]), dtype=torch.float64)  # [C, 3, 3]
    WH = torch.tensor([[c.width, c.height] for c in cameras], dtype=torch.float64)  # [C, 2]
    out = {}
    for i in wanted:  # one object at a time, vectorised over cameras x Gaussians
        rows = torch.nonzero(ids == i).squeeze(1)
        rows = rows[::max(1, rows.numel() // SHEET_SAMPLE)]  # an even subset bounds memory ([C, M, 3])
        p = means[rows].to(torch.float64)  # [M, 3]
        w = opacities[rows].to(torch.float64)  # [M]
        s = scales[rows].to(torch.float64).max(dim=1).values  # [M]
        pc = torch.einsum("cij,mj->cmi", V[:, :3, :3], p) + V[:, None, :3, 3]  # [C, M, 3]
        z = pc[..., 2]
        zs = z.clamp_min(1e-6)
        u = K[:, None, 0, 0] * pc[..., 0] / zs + K[:, None, 0, 2]  # [C, M]
        v = K[:, None, 1, 1] * pc[..., 1] / zs + K[:, None, 1, 2]
        inside = (z > 0.01) & (u >= 0) & (v >= 0) & (u < WH[:, None, 0]) & (v < WH[:, None, 1])  # [C, M]
        area = (K[:, None, 0, 0] * s / zs) ** 2  # [C, M]
        seen = (w * inside).sum(1) / w.sum().clamp_min(1e-12)  # [C]
        score = (w * area * inside).sum(1) * seen  # [C]
        out[int(i)] = int(score.argmax())
    return out


@torch.no_grad()
def render_object(labels: ModelLabels, i: int, camera, *, tile: int = 224, margin: float = 0.12,
                  probe_side: int = 320) -> np.ndarray:
    """[tile, tile, 3] uint8: the Gaussians ``extract`` returns for id ``i``, rendered alone from
    ``camera`` on a white background and framed on the object: a small probe render finds where
    its alpha exceeds 0.1, then the camera's intrinsics zoom onto that square (plus ``margin`` of
    its side on each side) and the object is rendered again at ``tile`` x ``tile``, sharp."""
    from scene.cameras import Camera

    from gaussian_renderer import render

    sub = _Subset(labels.model, torch.nonzero(labels.ids == i).squeeze(1).to(labels.model.device))
    white = torch.ones(3, device=labels.model.device)
    probe = camera.scaled(min(1.0, probe_side / max(camera.width, camera.height)))
    alpha = render(probe, sub, with_rgb=False).alpha[..., 0].cpu().numpy()  # [h, w]
    ys, xs = np.nonzero(alpha > 0.1)
    if len(ys) == 0:
        return np.full((tile, tile, 3), 255, np.uint8)
    sx, sy = camera.width / probe.width, camera.height / probe.height  # probe -> camera pixels
    x0, x1, y0, y1 = xs.min() * sx, (xs.max() + 1) * sx, ys.min() * sy, (ys.max() + 1) * sy
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    left, top = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
    z = tile / side
    K = camera.K.copy()  # Convention: pixel centres at +0.5 (scene.cameras); the crop maps [left, left + side) to [0, tile)
    K[0, 0], K[1, 1] = K[0, 0] * z, K[1, 1] * z
    K[0, 2], K[1, 2] = (K[0, 2] - left) * z, (K[1, 2] - top) * z
    cam = Camera(camera.uid, camera.name, K, camera.world_view, tile, tile)
    rgb = render(cam, sub, bg=white).rgb.clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8).cpu().numpy()


def contact_sheet(labels: ModelLabels, table: "ObjectTable", cameras: Sequence, *, tile: int = 224,
                  columns: Optional[int] = None, max_objects: Optional[int] = None):
    """A PIL image: one tile per row of ``table`` (largest first), each object rendered alone from
    its best training view (``best_views``), captioned "id  class" and its size (extent of its
    Gaussians' centres, in scene units) on a bar of the object's overlay colour."""
    from PIL import Image, ImageDraw, ImageFont

    rows = table.rows[:max_objects] if max_objects else table.rows
    if not rows:
        raise ObjectsError(f"{labels.model_path}: no object with >= {table.min_gaussians} Gaussians to show")
    model = labels.model
    means, opac, scales = (model.get_means().detach(), model.get_opacities().detach(),
                           model.get_scales().detach())
    views = best_views(cameras, means.cpu(), opac.cpu(), scales.cpu(), labels.ids.cpu(), [r.id for r in rows])
    n = len(rows)
    cols = columns or max(1, min(n, int(np.ceil(np.sqrt(n * 1.5)))))
    grid_rows = int(np.ceil(n / cols))
    cap, pad = 34, 6
    W, H = cols * (tile + pad) + pad, grid_rows * (tile + cap + pad) + pad
    img = Image.new("RGB", (W, H), (235, 235, 235))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    for k, r in enumerate(rows):
        x, y = pad + (k % cols) * (tile + pad), pad + (k // cols) * (tile + cap + pad)
        img.paste(Image.fromarray(render_object(labels, r.id, cameras[views[r.id]], tile=tile)), (x, y))
        colour = tuple(int(r.color[j:j + 2], 16) for j in (1, 3, 5))
        draw.rectangle([x, y + tile, x + tile - 1, y + tile + cap - 1], fill=colour)
        ink = (0, 0, 0) if sum(c * f for c, f in zip(colour, (0.299, 0.587, 0.114))) > 140 else (255, 255, 255)
        name = r.class_name or ("-" if r.semantic is None else f"class {r.semantic}")
        size = " x ".join(f"{e:.2f}" for e in r.extent)
        draw.text((x + 4, y + tile + 2), f"{r.id}  {name}", fill=ink, font=font)
        view = f"  (view {cameras[views[r.id]].name})" if tile >= 224 else ""  # narrow tiles: size only
        draw.text((x + 4, y + tile + 17), size + view, fill=ink, font=font)
    return img


# ----- command line --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-m", "--model_path", required=True, help="trained model folder (train.py -m)")
    common.add_argument("--iteration", type=int, default=-1, help="saved iteration; -1 = latest")
    common.add_argument("--decode", default="segments", choices=OBJECT_DECODE_RULES,
                        help="segments: the PLY's instance_label (snapped like render.py's default); plain: "
                             "threshold each Gaussian's embedding, no snapping (render.py --decode plain)")
    common.add_argument("--split_disconnected", action="store_true",
                        help="give spatially separate groups of one id their own ids first")
    common.add_argument("--min_gaussians", type=int, default=50,
                        help="ids (and, with --split_disconnected, groups) smaller than this are 'small'")
    common.add_argument("--keep_strays", action="store_true",
                        help="an object is every Gaussian of its id (no stray filter)")
    common.add_argument("--stray_radius", type=float, default=DEFAULT_RADIUS_FACTOR, metavar="FACTOR",
                        help="stray filter: neighbour radius in median nearest-neighbour distances")
    common.add_argument("--stray_min_share", type=float, default=DEFAULT_MIN_SHARE,
                        help="stray filter: keep groups with at least this share of their id's opacity "
                             "(the heaviest group is always kept)")
    common.add_argument("--stray_near", type=float, default=DEFAULT_NEAR, metavar="F",
                        help="stray filter: keep parts whose centre lies inside the object's main part's box "
                             "grown by F x its size (0: off)")
    common.add_argument("--fill_unseen", action="store_true",
                        help="Gaussians no training view sees take the majority id of their nearest seen "
                             "neighbours (renders the training views once)")
    common.add_argument("--stray_min_opacity", type=float, default=DEFAULT_MIN_OPACITY,
                        help="stray filter: object Gaussians below this opacity are strays")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", parents=[common], help="one row per object id")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
    for name, what in (("extract", "write only these objects"), ("remove", "write all but these objects"),
                       ("move", "translate these objects")):
        p = sub.add_parser(name, parents=[common], help=what)
        p.add_argument("--id", dest="ids", type=int, action="append", required=True,
                       help="object id (repeatable); see `list`")
        p.add_argument("-o", "--output", required=True, help="PLY to write")
        if name == "move":
            p.add_argument("--translate", type=float, nargs=3, required=True, metavar=("DX", "DY", "DZ"))
    p = sub.add_parser("evaluate", parents=[common],
                       help="extraction precision / recall against generator.json (synthetic scenes)")
    p.add_argument("--scene", default=None, help="scene folder holding generator.json (default: the model's)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the reports as JSON")
    p.add_argument("--grow", type=float, default=None, help="precision box margin in scene units (default 0.05)")
    p.add_argument("--reference", choices=["surface", "box"], default="surface",
                   help="recall's reference Gaussians: within --inner of the object's exact surface (default, "
                        "rebuilt from generator.json) or inside its box shrunk by --inner (sessions 3-4)")
    p.add_argument("--inner", type=float, default=None,
                   help="recall: surface tolerance (default 0.02) or box inset (default 0.01), scene units")
    p.add_argument("--quiet", action="store_true", help="print only the summary lines")
    p = sub.add_parser("sheet", parents=[common], help="contact sheet: every object rendered alone, captioned")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--tile", type=int, default=224, help="tile size in pixels")
    p.add_argument("--columns", type=int, default=None, help="tiles per row (default: about sqrt(1.5 n))")
    p.add_argument("--max_objects", type=int, default=None, help="show only the largest N objects")
    p = sub.add_parser("relabel", help="recompute the label columns from the training views into a new model folder")
    p.add_argument("-m", "--model_path", required=True, help="trained model folder (train.py -m)")
    p.add_argument("--iteration", type=int, default=-1, help="saved iteration; -1 = latest")
    p.add_argument("-o", "--output", required=True, help="model folder to write (not -m)")
    p.add_argument("--things", default=DEFAULT_THING_RULE, choices=THING_RULES,
                   help="union: a thing when its own semantic feature or the pixels it is part of say so; "
                        "union_fill: union, and a Gaussian no training view sees takes the labels of its 8 "
                        "nearest seen ones; union_fill_masks (train.py's default): union_fill, then a Gaussian "
                        "that only its own feature calls a thing stays one only where the input masks put a "
                        "quarter of its weight on object pixels, and a stuff Gaussian whose own code most of "
                        "its 8 nearest object Gaussians carry, and that the masks put on object pixels, joins "
                        "that object (only where the scene has semantic masks); union_fill_rescue: "
                        "union_fill_masks without its first step, rescuing on every scene; vote: the pixels "
                        "decide for seen Gaussians; own: each Gaussian's own feature (models saved before the "
                        "vote)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "relabel":
        try:
            r = relabel(args.model_path, args.output, iteration=args.iteration, things=args.things,
                        device=args.device, quiet=args.quiet)
        except (ObjectsError, SceneError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {r['output']} (iteration {r['iteration']}): {r['thing_gaussians']} of {r['gaussians']} "
              f"Gaussians are things (--things {r['things']}), {r['valid_codes']} valid codes")
        return 0
    try:
        strays = StrayFilter(args.keep_strays, args.stray_radius, args.stray_min_share, args.stray_min_opacity,
                             args.stray_near)
        labels = load_labels(args.model_path, args.iteration, split_disconnected=args.split_disconnected,
                             min_gaussians=args.min_gaussians, strays=strays, fill_unseen=args.fill_unseen,
                             decode=args.decode)
        if args.command in ("list", "sheet"):
            table = model_table(labels, min_gaussians=args.min_gaussians)
        if args.command == "sheet":
            if torch.cuda.is_available():  # render with gsplat; the ids stay on the CPU
                labels.model = labels.model.to("cuda")
            img = contact_sheet(labels, table, training_cameras(args.model_path), tile=args.tile,
                                columns=args.columns, max_objects=args.max_objects)
            tmp = f"{args.output}.{os.getpid()}.tmp.png"
            img.save(tmp)
            os.replace(tmp, args.output)
            print(f"wrote {args.output}: {min(len(table.rows), args.max_objects or len(table.rows))} objects "
                  f"({img.width}x{img.height})")
        elif args.command == "evaluate":
            from tools.extraction_eval import format_report

            res = evaluate(labels, args.scene, grow=args.grow, inner=args.inner, reference=args.reference)
            filt = ("none (--keep_strays)" if args.keep_strays else
                    f"radius {args.stray_radius:g} x median spacing, min share {args.stray_min_share:g}, "
                    f"min opacity {args.stray_min_opacity:g}")
            for key, title in (("all", "every Gaussian of the id"), ("extract", f"extract (stray filter: {filt})")):
                text = format_report(res[key], f"{title}:")
                summary = [ln for ln in text.splitlines() if ln.startswith(("median ", "reference opacity missed"))]
                print("\n".join(summary) if args.quiet else text + "\n")
            if args.json:
                from utils.general_utils import atomic_write_text

                data = {"model_path": labels.model_path, "iteration": labels.iteration, "scene": res["scene"],
                        "decode": args.decode,
                        "stray_filter": None if args.keep_strays else {
                            "radius_factor": args.stray_radius, "min_share": args.stray_min_share,
                            "min_opacity": args.stray_min_opacity},
                        "all": res["all"].to_json(), "extract": res["extract"].to_json()}
                atomic_write_text(args.json, json.dumps(data, indent=1) + "\n")
        elif args.command == "list":
            if args.json:
                from utils.general_utils import atomic_write_text

                atomic_write_text(args.json, json.dumps(table.to_json(), indent=1) + "\n")
            print(format_table(table))
        elif args.command == "extract":
            n = extract(labels, args.ids, args.output)
            print(f"wrote {args.output}: {n} Gaussians of ids {', '.join(map(str, args.ids))}")
        elif args.command == "remove":
            n = remove(labels, args.ids, args.output)
            print(f"wrote {args.output}: {n} Gaussians (ids {', '.join(map(str, args.ids))} removed)")
        else:
            n = move(labels, args.ids, args.translate, args.output)
            print(f"wrote {args.output}: {n} Gaussians moved by {tuple(args.translate)}")
    except (ObjectsError, SceneError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
