"""The Gaussian model: parameters, activations and PLY I/O. Nothing else.

The optimisers, learning-rate schedule and densification live in the trainer; densification is
gsplat's strategy, which grows and prunes every tensor of ``params`` together, so extra
per-Gaussian features (the segmentation embedding, semantic logits) ride along for free.

Convention: ``quats`` are (w, x, y, z), unnormalised; ``scales`` are log-scales; ``opacities``
are logits; ``sh0`` is the DC SH coefficient [N, 1, 3] and ``shN`` the rest [N, (deg+1)^2-1, 3].
PLY files follow the 3DGS property order (x y z nx ny nz f_dc_0..2 f_rest_0..44 opacity
scale_0..2 rot_0..3) with extra features appended after rot_3 as ``<name>_<i>``.

Feature layout (``pack_features``): while training, the extra features may live as column blocks of
ONE parameter ``params[PACKED_KEY]`` [N, slot + widths], whose first ``slot`` columns the renderer
fills with the view's SH colour in place (``gaussian_renderer.render``): the rasterizer then reads
that parameter as its colour input, and its colour gradient is that parameter's gradient, with no
concatenation forward and no strided copies backward. Read features with ``feature(name)`` /
``has_feature(name)`` whatever the layout; ``state_dict()`` and the PLY always hold them by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from utils.ply import PlyError, read_ply, write_ply

SH_C0 = 0.28209479177387814
CORE_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")
LABEL_COLUMNS = ("instance_label", "semantic_label")  # decoded per-Gaussian labels, written for tools
PACKED_KEY = "packed_features"  # the one parameter of packed features (pack_features)


@dataclass(frozen=True)
class FeaturePacking:
    """Where each packed feature lives in ``params[PACKED_KEY]``: columns ``slot + offset`` on, in
    ``names`` order; the first ``slot`` columns are the renderer's (the view's colour)."""
    names: Tuple[str, ...]
    widths: Tuple[int, ...]
    slot: int = 3

    def columns(self, name: str) -> Tuple[int, int]:
        """(first, end) column of ``name`` in the packed parameter."""
        start = self.slot
        for n, w in zip(self.names, self.widths):
            if n == name:
                return start, start + w
            start += w
        raise KeyError(name)

    @property
    def width(self) -> int:
        return self.slot + sum(self.widths)


def feature_of(model, name: str) -> Tensor:
    """``model.feature(name)`` for a ``GaussianModel`` (any layout); ``model.params[name]`` for any other object
    with a ``params`` mapping (stand-ins, older callers)."""
    get = getattr(model, "feature", None)
    return get(name) if get is not None else model.params[name]


def has_feature(model, name: str) -> bool:
    """``model.has_feature(name)``, or ``name in model.params`` for objects without it (see ``feature_of``)."""
    has = getattr(model, "has_feature", None)
    return has(name) if has is not None else name in model.params


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def knn_mean_sq_dist(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean squared distance of each point to its ``k`` nearest other points (scipy KD-tree)."""
    from scipy.spatial import cKDTree

    n = len(points)
    if n < 2:
        return np.full(n, 1e-2, dtype=np.float32)
    k_eff = min(k, n - 1)
    d, _ = cKDTree(points).query(points, k=k_eff + 1, workers=-1)  # [N, k+1], first is the point itself
    d = np.asarray(d).reshape(n, -1)[:, 1:]
    return np.maximum((d**2).mean(axis=1), 1e-7).astype(np.float32)


class GaussianModel:
    def __init__(self, sh_degree: int = 3):
        self.max_sh_degree = sh_degree
        self.active_sh_degree = 0
        self.params = nn.ParameterDict()
        self.labels: Dict[str, Tensor] = {}  # decoded per-Gaussian labels read from a PLY, if any
        self.packing: Optional[FeaturePacking] = None  # set by pack_features

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_points(cls, points: np.ndarray, colors: Optional[np.ndarray], sh_degree: int = 3,
                    features: Optional[Dict[str, int]] = None, init_opacity: float = 0.1,
                    device: str | torch.device = "cpu", generator: Optional[torch.Generator] = None
                    ) -> "GaussianModel":
        """Initial Gaussians at ``points`` [P, 3] (colours [P, 3] in [0, 1]); isotropic scales from
        the mean distance to the 3 nearest neighbours; extra ``features`` {name: width} ~ N(0, 1)."""
        model = cls(sh_degree)
        n = len(points)
        pts = torch.as_tensor(np.asarray(points, np.float32))
        rgb = torch.as_tensor(np.asarray(colors, np.float32)) if colors is not None else torch.full((n, 3), 0.5)
        dist2 = torch.as_tensor(knn_mean_sq_dist(np.asarray(points, np.float32)))
        n_rest = (sh_degree + 1) ** 2 - 1
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        model.params = nn.ParameterDict({
            "means": nn.Parameter(pts),
            "scales": nn.Parameter(torch.log(torch.sqrt(dist2))[:, None].repeat(1, 3)),
            "quats": nn.Parameter(quats),
            "opacities": nn.Parameter(torch.logit(torch.full((n,), init_opacity))),
            "sh0": nn.Parameter(rgb_to_sh0(rgb)[:, None, :]),
            "shN": nn.Parameter(torch.zeros(n, n_rest, 3)),
        })
        for name, width in (features or {}).items():
            model.add_feature(name, width, generator=generator)
        return model.to(device)

    def add_feature(self, name: str, width: int, std: float = 1.0,
                    generator: Optional[torch.Generator] = None) -> None:
        if name in CORE_KEYS or name in LABEL_COLUMNS or name == PACKED_KEY:
            raise ValueError(f"feature name {name!r} is reserved")
        if self.packing is not None:
            raise ValueError("add_feature on a model with packed features: unpack_features() first")
        n = self.num_gaussians
        values = torch.randn(n, width, generator=generator) * std
        self.params[name] = nn.Parameter(values.to(self.device))

    def to(self, device) -> "GaussianModel":
        self.params = self.params.to(device)
        return self

    # ----- activations ---------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return self.params["means"].shape[0] if "means" in self.params else 0

    @property
    def device(self) -> torch.device:
        return self.params["means"].device if "means" in self.params else torch.device("cpu")

    @property
    def feature_names(self) -> list:
        """The extra per-Gaussian features by name (the packed ones in their packing order)."""
        out = []
        for k in self.params.keys():
            if k == PACKED_KEY and self.packing is not None:
                out.extend(self.packing.names)
            elif k not in CORE_KEYS:
                out.append(k)
        return out

    def has_feature(self, name: str) -> bool:
        return name in self.feature_names

    def feature(self, name: str) -> Tensor:
        """[N, D] values of the feature ``name``: its parameter, or a view of its columns of the packed one
        (differentiable, row stride = the packed width). KeyError if the model has none."""
        if self.packing is not None and name in self.packing.names:
            a, b = self.packing.columns(name)
            return self.params[PACKED_KEY][:, a:b]
        if name in CORE_KEYS or name not in self.params:
            raise KeyError(f"the model has no feature {name!r} (it has: {', '.join(self.feature_names) or 'none'})")
        return self.params[name]

    # ----- feature layout ------------------------------------------------------------------
    def pack_features(self, names: Sequence[str], slot: int = 3) -> FeaturePacking:
        """Moves the features ``names`` (in this order) into ONE parameter ``params[PACKED_KEY]`` =
        [zeros(N, slot) | names...]. Exact: the values are copied bit for bit. Before the optimisers are
        made (they hold the parameters)."""
        names = tuple(names)
        if self.packing is not None:
            raise ValueError("the model's features are packed already")
        if not names or len(set(names)) != len(names) or any(n not in self.params or n in CORE_KEYS for n in names):
            raise ValueError(f"pack_features: {list(names)} must be distinct features of the model "
                             f"(it has: {', '.join(self.feature_names) or 'none'})")
        if slot < 0:
            raise ValueError(f"pack_features: slot must be >= 0, got {slot}")
        values = [self.params[n].detach() for n in names]
        packed = torch.cat([values[0].new_zeros(self.num_gaussians, slot), *values], dim=1)
        packing = FeaturePacking(names, tuple(int(v.shape[1]) for v in values), int(slot))
        for n in names:
            del self.params[n]
        self.params[PACKED_KEY] = nn.Parameter(packed.contiguous())
        self.packing = packing
        return packing

    def unpack_features(self) -> None:
        """The inverse of ``pack_features``: one parameter per feature again (the slot is dropped)."""
        if self.packing is None:
            return
        packed = self.params[PACKED_KEY].detach()
        del self.params[PACKED_KEY]
        for n in self.packing.names:
            a, b = self.packing.columns(n)
            self.params[n] = nn.Parameter(packed[:, a:b].clone())
        self.packing = None

    def named_tensors(self) -> Dict[str, Tensor]:
        """Every per-Gaussian tensor by its layout-free name (features by name, detached)."""
        out = {k: v.detach() for k, v in self.params.items() if k != PACKED_KEY}
        for n in (self.packing.names if self.packing is not None else ()):
            out[n] = self.feature(n).detach()
        return out

    def get_means(self) -> Tensor:  # [N, 3]
        return self.params["means"]

    def get_scales(self) -> Tensor:  # [N, 3]
        return torch.exp(self.params["scales"])

    def get_quats(self) -> Tensor:  # [N, 4] unit wxyz
        return nn.functional.normalize(self.params["quats"], dim=-1)

    def get_raw_quats(self) -> Tensor:  # [N, 4] wxyz, any nonzero norm: the rasterizers normalise
        return self.params["quats"]

    def get_opacities(self) -> Tensor:  # [N]
        return torch.sigmoid(self.params["opacities"])

    def get_sh(self) -> Tensor:  # [N, (deg+1)^2, 3]
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    def oneup_sh_degree(self) -> None:
        self.active_sh_degree = min(self.active_sh_degree + 1, self.max_sh_degree)

    # ----- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The parameters by name, whatever the feature layout (a packed model stores its features
        unpacked, so a state loads into either layout)."""
        return {"format_version": 1, "max_sh_degree": self.max_sh_degree,
                "active_sh_degree": self.active_sh_degree,
                "params": {k: v.clone() for k, v in self.named_tensors().items()}}

    @classmethod
    def from_state_dict(cls, state: dict, device="cpu") -> "GaussianModel":
        if state.get("format_version") != 1:
            raise ValueError(f"unknown Gaussian model state format {state.get('format_version')!r}")
        model = cls(state["max_sh_degree"])
        model.active_sh_degree = state["active_sh_degree"]
        model.params = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in state["params"].items()})
        return model.to(device)

    # ----- PLY -----------------------------------------------------------------------------
    def ply_columns(self, labels: Optional[Dict[str, Tensor]] = None) -> Dict[str, np.ndarray]:
        p = {k: v.cpu().numpy().astype(np.float32) for k, v in self.named_tensors().items()}
        n = self.num_gaussians
        cols: Dict[str, np.ndarray] = {}
        for i, axis in enumerate("xyz"):
            cols[axis] = p["means"][:, i]
        for axis in ("nx", "ny", "nz"):
            cols[axis] = np.zeros(n, np.float32)
        # explicit widths: reshape(n, -1) cannot infer them for a model with no Gaussians left
        width = {k: int(np.prod(p[k].shape[1:])) for k in ("sh0", "shN")}
        f_dc = p["sh0"].transpose(0, 2, 1).reshape(n, width["sh0"])  # [N, 3]
        f_rest = p["shN"].transpose(0, 2, 1).reshape(n, width["shN"])  # [N, 3 * K]: channel-major like 3DGS
        for i in range(f_dc.shape[1]):
            cols[f"f_dc_{i}"] = f_dc[:, i]
        for i in range(f_rest.shape[1]):
            cols[f"f_rest_{i}"] = f_rest[:, i]
        cols["opacity"] = p["opacities"]
        for i in range(3):
            cols[f"scale_{i}"] = p["scales"][:, i]
        for i in range(4):
            cols[f"rot_{i}"] = p["quats"][:, i]
        for name in self.feature_names:
            for i in range(p[name].shape[1]):
                cols[f"{name}_{i}"] = p[name][:, i]
        for name, values in (labels or {}).items():
            if name not in LABEL_COLUMNS:
                raise ValueError(f"unknown label column {name!r}; expected one of {LABEL_COLUMNS}")
            cols[name] = values.detach().cpu().numpy().astype(np.int32)
        return cols

    def save_ply(self, path: str, labels: Optional[Dict[str, Tensor]] = None) -> None:
        write_ply(path, self.ply_columns(labels))

    @classmethod
    def load_ply(cls, path: str, device="cpu") -> "GaussianModel":
        cols = read_ply(path)
        missing = [k for k in ("x", "y", "z", "opacity", "scale_0", "rot_0", "f_dc_0") if k not in cols]
        if missing:
            raise PlyError(f"{path}: not a Gaussian splat PLY (missing {', '.join(missing)}); pass the "
                           f"point_cloud.ply that train.py wrote")
        n = len(cols["x"])
        n_rest = sum(1 for k in cols if k.startswith("f_rest_"))
        sh_degree = int(round(np.sqrt(n_rest // 3 + 1))) - 1
        if (sh_degree + 1) ** 2 - 1 != n_rest // 3:
            raise PlyError(f"{path}: {n_rest} f_rest columns is not a whole SH degree; the file is damaged or "
                           f"not a 3DGS PLY: retrain or restore it")

        def stack(prefix: str, count: int) -> np.ndarray:  # [N, count]; count 0 (SH degree 0) -> [N, 0]
            if count == 0:
                return np.zeros((n, 0), np.float32)
            return np.stack([cols[f"{prefix}{i}"] for i in range(count)], axis=1).astype(np.float32)

        model = cls(sh_degree)
        model.active_sh_degree = sh_degree
        tensors = {
            "means": np.stack([cols["x"], cols["y"], cols["z"]], 1).astype(np.float32),
            "scales": stack("scale_", 3),
            "quats": stack("rot_", 4),
            "opacities": cols["opacity"].astype(np.float32),
            "sh0": stack("f_dc_", 3).reshape(n, 3, 1).transpose(0, 2, 1),
            "shN": stack("f_rest_", n_rest).reshape(n, 3, n_rest // 3).transpose(0, 2, 1),
        }
        known = {"x", "y", "z", "nx", "ny", "nz", "opacity", *LABEL_COLUMNS}
        extra: Dict[str, int] = {}
        for key in cols:
            if key in known or key.startswith(("f_dc_", "f_rest_", "scale_", "rot_")):
                continue
            name, _, idx = key.rpartition("_")
            if not name or not idx.isdigit():
                continue  # unknown scalar property from another tool: ignored
            extra[name] = max(extra.get(name, 0), int(idx) + 1)
        for name, width in extra.items():
            tensors[name] = stack(f"{name}_", width)
        model.params = nn.ParameterDict(
            {k: nn.Parameter(torch.from_numpy(np.ascontiguousarray(v))) for k, v in tensors.items()})
        model.labels = {k: torch.from_numpy(cols[k].astype(np.int64)) for k in LABEL_COLUMNS if k in cols}
        return model.to(device)
