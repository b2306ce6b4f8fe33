"""Per-object tools for a trained model: which id is which object; extract, remove or move objects.

    python tools/objects.py list    -m output/room10 [--iteration N] [--min_gaussians 50] [--json objects.json]
    python tools/objects.py extract -m output/room10 --id 12 [--id 7 ...] -o chair.ply
    python tools/objects.py remove  -m output/room10 --id 12 -o without_chair.ply
    python tools/objects.py move    -m output/room10 --id 12 --translate 0.5 0 0 -o moved.ply
    python tools/objects.py list    -m output/room10 --split_disconnected    # one code, two places -> two ids

Convention: an object id is the PLY's per-Gaussian ``instance_label`` column (code + 1, 0 = stuff)
as train.py writes it; a PLY without that column is decoded from its embedding
(``segmentation.decode.gaussian_labels`` + 1, no thing/stuff mask). Ids are the ones the renders
use, and ``list`` prints each id's overlay colour (``colorize_ids``) so rows can be matched to the
``overlay/`` PNGs. ``--split_disconnected`` first gives spatially separate groups of one id their
own ids (``segmentation.postprocess.split_disconnected_codes`` on the neighbour graph of the
object Gaussians' means); those new ids exist only for this tool, not in the renders.

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
from scene.gaussian_model import GaussianModel  # noqa: E402
from segmentation.decode import colorize_ids, gaussian_labels  # noqa: E402

__all__ = ["ObjectsError", "ModelLabels", "ObjectRow", "ObjectTable", "load_labels", "split_ids",
           "object_table", "select", "extract", "remove", "move", "class_names_for", "main"]

DEFAULT_RADIUS2 = 1e-2  # neighbour radius^2 when cfg_args has no l3d_radius2 (the training default)
NEIGHBOURS = 16  # k of the neighbour graph for --split_disconnected


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
    if "semantic" not in model.params:
        return None
    from segmentation.labels import load_semantic_decoder, semantic_classes

    feat = model.params["semantic"].detach()  # [N, F]
    decoder = load_semantic_decoder(folder)
    if decoder is not None and decoder.in_features == feat.shape[1]:
        return semantic_classes(feat, decoder)
    if getattr(cfg, "semantic_head", "logits") == "embed":
        return None  # an embedding without its decoder says nothing about classes
    return semantic_classes(feat)


@torch.no_grad()
def load_labels(model_path: str, iteration: int = -1, *, split_disconnected: bool = False,
                min_gaussians: int = 50) -> ModelLabels:
    """Load ``MODEL/point_cloud/iteration_N/point_cloud.ply`` (-1 = latest) on the CPU with its ids.

    Raises ObjectsError (one line) for a missing folder or iteration, an unreadable PLY, or a model
    trained without masks (no ``instance_label`` column and no ``embedding``).
    """
    from scene.model_folder import find_iteration, load_model

    if not os.path.isdir(model_path):
        raise ObjectsError(f"{model_path}: no such model folder (pass the folder train.py -m wrote)")
    try:
        iteration = find_iteration(model_path, iteration)
        model = load_model(model_path, iteration, "cpu")
    except SceneError as e:
        raise ObjectsError(str(e)) from None
    folder = os.path.join(model_path, "point_cloud", f"iteration_{iteration}")
    ply_path = os.path.join(folder, "point_cloud.ply")
    cfg = _cfg(model_path)
    if "instance_label" in model.labels:
        ids, source = model.labels["instance_label"].to(torch.int64), "column"
    elif "embedding" in model.params:
        ids, source = gaussian_labels(model.params["embedding"].detach()) + 1, "embedding"
    else:
        raise ObjectsError(f"{ply_path}: no instance embedding (model trained without masks); "
                           f"retrain with masks to get objects")
    semantic = model.labels.get("semantic_label")
    if semantic is None:
        semantic = _semantic_from_params(model, folder, cfg)
    out = ModelLabels(model_path, iteration, ply_path, model, ids, semantic, source=source)
    if split_disconnected:
        radius2 = float(getattr(cfg, "l3d_radius2", DEFAULT_RADIUS2) or DEFAULT_RADIUS2)
        out.ids = split_ids(ids, model.get_means().detach(), radius2=radius2, min_gaussians=min_gaussians)
        out.split = True
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
def class_names_for(cfg) -> Optional[List[str]]:
    """Class names of the scene the model was trained on, or None (no cfg, scene gone, no names).

    ``SceneInfo`` carries no names, so they come from the scene folder: ``generator.json``'s
    ``class_names`` (our synthetic scenes), else the format's fixed classes (PanopLi: the 21 reduced
    ScanNet classes + void of DATA.md; Messy-Rooms: background / object). COLMAP and Blender: None.
    """
    path = getattr(cfg, "source_path", None)
    if not path or not os.path.isdir(path):
        return None
    gen = os.path.join(path, "generator.json")
    if os.path.isfile(gen):
        try:
            with open(gen) as f:
                names = json.load(f).get("class_names")
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return list(names)
        except (OSError, ValueError):
            pass  # a broken generator.json: fall back to the format's names
    from scene.dataset_readers import detect_format

    try:
        fmt = detect_format(path)
    except SceneError:
        return None
    from tools.synthetic.classes import CLASS_NAMES, MESSY_CLASS_NAMES

    return {"panopli": list(CLASS_NAMES), "messy": list(MESSY_CLASS_NAMES)}.get(fmt)


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
    color: str  # "#rrggbb", colorize_ids(id)


@dataclass
class ObjectTable:
    """Every object id of a model; ``rows`` (>= min_gaussians, by count desc then id) and ``small``."""
    model_path: str
    iteration: int
    num_gaussians: int
    stuff_gaussians: int
    min_gaussians: int
    split_disconnected: bool
    rows: List[ObjectRow] = field(default_factory=list)
    small_ids: List[int] = field(default_factory=list)
    small_gaussians: int = 0

    def to_json(self) -> dict:
        """``{model_path, iteration, num_gaussians, stuff_gaussians, min_gaussians, split_disconnected,
        objects: [row, ...], small: {ids, gaussians}}``."""
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
    table = ObjectTable(labels.model_path, labels.iteration, N, int((ids == 0).sum()), min_gaussians,
                        labels.split)
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
    colours = colorize_ids(uniq)  # [K, 3] uint8
    order = sorted(range(K), key=lambda i: (-int(counts[i]), int(uniq[i])))  # rows, not Gaussians
    for i in order:
        n = int(counts[i])
        if n < min_gaussians:
            table.small_ids.append(int(uniq[i]))
            table.small_gaussians += n
            continue
        cls = int(semantic[i]) if semantic is not None else None
        name = class_names[cls] if cls is not None and class_names and 0 <= cls < len(class_names) else None
        table.rows.append(ObjectRow(
            id=int(uniq[i]), gaussians=n, semantic=cls, class_name=name,
            centroid=centroid[i].tolist(), bbox_min=lo[i].tolist(), bbox_max=hi[i].tolist(),
            extent=(hi[i] - lo[i]).tolist(), color=_hex(colours[i].tolist())))
    return table


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
        lines.append(f"{r.id:>6}  {cls:<18} {r.gaussians:>9}  {c:<28} {e:<26} {r.color}")
    if table.small_ids:
        lines.append(f"{len(table.small_ids)} small ids ({table.small_gaussians} Gaussians)")
    lines.append(f"stuff (id 0): {table.stuff_gaussians} Gaussians")
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
    if labels.split and "instance_label" in cols:
        cols["instance_label"] = labels.ids.numpy().astype(cols["instance_label"].dtype)
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


# ----- command line --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-m", "--model_path", required=True, help="trained model folder (train.py -m)")
    common.add_argument("--iteration", type=int, default=-1, help="saved iteration; -1 = latest")
    common.add_argument("--split_disconnected", action="store_true",
                        help="give spatially separate groups of one id their own ids first")
    common.add_argument("--min_gaussians", type=int, default=50,
                        help="ids (and, with --split_disconnected, groups) smaller than this are 'small'")
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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        labels = load_labels(args.model_path, args.iteration, split_disconnected=args.split_disconnected,
                             min_gaussians=args.min_gaussians)
        if args.command == "list":
            table = object_table(labels, min_gaussians=args.min_gaussians,
                                 class_names=class_names_for(_cfg(args.model_path)))
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
    except (ObjectsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
