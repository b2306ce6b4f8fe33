"""What the viewer shows of a trained model: splats, object ids and table, training cameras.

Everything is loaded through ``tools.objects`` (``open_model``, ``load_labels``, ``model_table``,
``training_cameras``), so ids, the stray filter, the per-object numbers and exports are the ones
``tools/objects.py`` uses. Nothing here needs viser or a GPU.

Convention: world coordinates are the model's; cameras are ``scene.cameras.Camera`` (OpenCV axes,
world-to-camera), as viser's frusta and client cameras expect (OpenCV: +z forward, +y down).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from tools import objects
from viewer.colours import MODES, mode_colours, rgb_from_sh0
from viewer.picking import Picker

__all__ = ["DEFAULT_MAX_SPLATS", "ViewerData", "load_viewer_data", "display_subset", "camera_pose"]

DEFAULT_MAX_SPLATS = 1_000_000  # above this many Gaussians the page shows a random subset


@dataclass
class ViewerData:
    """A model as the viewer shows it. N Gaussians in the model, M of them displayed."""
    model_path: str
    iteration: int
    ply_path: str
    means: np.ndarray  # [N, 3] float32
    opacities: np.ndarray  # [N] float32 in [0, 1]
    rgb: np.ndarray  # [N, 3] float32 in [0, 1], SH DC colour
    display: np.ndarray  # [M] int64 sorted indices of the displayed Gaussians
    covariances: np.ndarray  # [M, 3, 3] float32 of the displayed Gaussians
    picker: Picker
    labels: Optional[objects.ModelLabels] = None  # None: the model has no segmentation
    table: Optional[objects.ObjectTable] = None  # every object id (min_gaussians 1)
    min_gaussians: int = 50  # ids below this stay out of the object list
    cameras: list = field(default_factory=list)  # training views' scene.cameras.Camera
    notes: List[str] = field(default_factory=list)  # one line each, shown on the page
    _colours: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def ids(self) -> Optional[Tensor]:
        """[N] int64 object ids (0 = stuff) as ``extract`` selects them, or None."""
        return None if self.labels is None else self.labels.ids

    @property
    def column_ids(self) -> Optional[Tensor]:
        """[N] int64 ids of the PLY's ``instance_label`` (strays keep their id), or None."""
        return None if self.labels is None else self.labels.column_ids

    @property
    def semantic(self) -> Optional[Tensor]:
        return None if self.labels is None else self.labels.semantic

    @property
    def modes(self) -> List[str]:
        """Colour modes this model supports (RGB always; Instance with ids; Semantic with classes)."""
        out = ["RGB"]
        if self.ids is not None:
            out.append("Instance")
        if self.semantic is not None:
            out.append("Semantic")
        return out

    @property
    def rows(self) -> Dict[int, objects.ObjectRow]:
        return {} if self.table is None else {r.id: r for r in self.table.rows}

    def listed(self) -> List[objects.ObjectRow]:
        """Rows of the object list: ids with at least ``min_gaussians`` Gaussians, largest first."""
        return [] if self.table is None else [r for r in self.table.rows if r.gaussians >= self.min_gaussians]

    def colours(self, mode: str) -> np.ndarray:
        """[N, 3] colours of ``mode`` (cached). Instance mode colours by the PLY's ids, as the renders'
        overlays do, so a stray Gaussian keeps its id's colour, and a second object with its own id
        (``segmentation.pieces``) shows its code's colour, as in the overlays and the object list."""
        if mode not in MODES:
            raise ValueError(f"unknown colour mode {mode!r}; expected one of {MODES}")
        if mode not in self._colours:
            self._colours[mode] = mode_colours(mode, self.rgb, self.render_ids, self.semantic)
        return self._colours[mode]

    @property
    def render_ids(self) -> Optional[Tensor]:
        """[N] ``column_ids`` with each id replaced by the id the renders show for it (``ObjectRow.render_id``)."""
        ids = self.column_ids
        moved = [(r.id, r.render_id) for r in self.table.rows if r.render_id != r.id] if self.table else []
        if ids is None or not moved:
            return ids
        lut = torch.arange(int(ids.max()) + 1, dtype=torch.int64)  # [L] id -> rendered id
        src, dst = torch.tensor(moved, dtype=torch.int64).T
        lut[src] = dst
        return lut[ids.clamp_min(0)]

    def scene_centre_and_size(self) -> tuple:
        """(centre [3], size): the median of the means and the 2-98 percentile box diagonal."""
        lo, hi = np.percentile(self.means, [2, 98], axis=0)
        return np.median(self.means, axis=0), float(np.linalg.norm(hi - lo)) or 1.0


def display_subset(n: int, max_splats: int, seed: int = 0) -> np.ndarray:
    """[M] sorted indices of the Gaussians to display: all when ``n <= max_splats``, else a uniform
    random ``max_splats`` of them (fixed seed: the same subset every run)."""
    if max_splats <= 0 or n <= max_splats:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_splats, replace=False)).astype(np.int64)


def load_viewer_data(model_path: str, iteration: int = -1, *, max_splats: int = DEFAULT_MAX_SPLATS,
                     min_gaussians: int = 50, strays: Optional[objects.StrayFilter] = None) -> ViewerData:
    """Load a model folder for the viewer. Raises ``objects.ObjectsError`` (one line) for a missing
    folder, iteration or unreadable PLY; a model without segmentation loads with a note (RGB only)."""
    from gaussian_renderer.torch_rasterizer import quat_scale_to_covar

    opened = objects.open_model(model_path, iteration)
    model = opened.model
    notes: List[str] = []
    labels = table = None
    if opened.has_objects:
        labels = objects.load_labels(model_path, opened=opened, min_gaussians=min_gaussians, strays=strays)
        table = objects.model_table(labels, min_gaussians=1)
        if labels.semantic is None:
            notes.append("No semantic classes in this model: Semantic mode is off.")
    else:
        notes.append("This model has no segmentation (trained without masks): RGB only, nothing to pick.")
    with torch.no_grad():
        means = model.get_means().detach().float().cpu()  # [N, 3]
        quats, scales = model.get_quats().detach().float().cpu(), model.get_scales().detach().float().cpu()
        opac = model.get_opacities().detach().float().cpu()  # [N]
        n = means.shape[0]
        display = display_subset(n, max_splats)
        sel = torch.from_numpy(display)
        covs = quat_scale_to_covar(quats[sel], scales[sel]).numpy().astype(np.float32)  # [M, 3, 3]
        rgb = rgb_from_sh0(model.params["sh0"])
    if len(display) < n:
        notes.append(f"Showing {len(display):,} of {n:,} Gaussians (a random subset, --max_splats "
                     f"{max_splats}); picking uses all of them.")
    try:
        cameras = objects.training_cameras(model_path)
    except objects.ObjectsError as e:
        cameras = []
        notes.append(f"No training cameras to show ({e}).")
    return ViewerData(model_path=opened.model_path, iteration=opened.iteration, ply_path=opened.ply_path,
                      means=means.numpy(), opacities=opac.numpy(), rgb=rgb, display=display, covariances=covs,
                      picker=Picker(means, quats, scales, opac), labels=labels, table=table,
                      min_gaussians=min_gaussians, cameras=cameras, notes=notes)


def camera_pose(camera) -> tuple:
    """(position [3], wxyz [4], vertical fov in radians, aspect) of a ``scene.cameras.Camera``:
    camera-to-world in OpenCV axes, as viser's frusta and client cameras take it."""
    from scipy.spatial.transform import Rotation

    c2w = np.linalg.inv(camera.world_view)
    xyzw = Rotation.from_matrix(c2w[:3, :3]).as_quat()  # scipy: (x, y, z, w)
    wxyz = np.array([xyzw[3], xyzw[0], xyzw[1], xyzw[2]])
    fov = 2.0 * np.arctan(camera.height / (2.0 * camera.K[1, 1]))
    return c2w[:3, 3], wxyz, float(fov), camera.width / camera.height
