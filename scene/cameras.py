"""Camera and frame records shared by every reader, the renderer and the trainer.

Convention: ``world_view`` is the 4x4 world-to-camera matrix in OpenCV axes
(x right, y down, z forward). ``K`` is the 3x3 pinhole matrix in gsplat's pixel
convention: the centre of pixel (u, v) sits at (u + 0.5, v + 0.5). Readers convert
their format's convention into this one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Camera:
    uid: int
    name: str  # image stem; also the stem of every per-view output file
    K: np.ndarray  # [3, 3] float64, pixels, at (width, height)
    world_view: np.ndarray  # [4, 4] float64, world-to-camera, OpenCV axes
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:  # [3] camera centre in world coordinates
        R, t = self.world_view[:3, :3], self.world_view[:3, 3]
        return -R.T @ t

    def scaled(self, factor: float) -> "Camera":
        """The same camera at ``round(width * factor) x round(height * factor)`` pixels."""
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        K = self.K.copy()
        K[0] *= w / self.width
        K[1] *= h / self.height
        return Camera(self.uid, self.name, K, self.world_view, w, h)


@dataclass(frozen=True)
class FrameInfo:
    """One view: its camera and the paths of everything stored for it.

    Paths are absolute; ``None`` means the scene has no such file for this view.
    Label files may be PNG (8 or 16 bit) or ``.npy``; confidence may be ``.npz``
    (key ``confidence``) or ``.npy``. Load them with ``utils.image_io``.
    """
    camera: Camera
    image_path: str
    instance_path: Optional[str] = None  # inconsistent 2D instance mask (--seg_dir)
    semantic_path: Optional[str] = None  # predicted (noisy) semantic mask
    confidence_path: Optional[str] = None  # per-pixel confidence of the 2D segmenter
    gt_semantic_path: Optional[str] = None  # GT class per pixel, for evaluation
    gt_instance_path: Optional[str] = None  # GT instance id, consistent across views
    invalid_path: Optional[str] = None  # nonzero = outside the valid region


@dataclass
class SceneInfo:
    format: str  # "colmap" | "blender" | "panopli" | "messy"
    path: str
    train: list  # list[FrameInfo]
    test: list  # list[FrameInfo]
    points: Optional[np.ndarray]  # [P, 3] float32 initial point cloud, or None
    colors: Optional[np.ndarray]  # [P, 3] float32 in [0, 1], or None
    bbox: tuple  # (lo [3], hi [3]) box to sample a random init in when points is None
    extent: float  # 3DGS "cameras_extent": 1.1 x max distance of a camera centre to their mean
    num_classes: Optional[int] = None  # semantic classes incl. 0 (22 PanopLi, 2 Messy); None = none
    thing_classes: tuple = ()  # class ids that are things (the rest are stuff)
    class_names: tuple = ()  # name of each class id (may be empty: no names known)
    # Instance masks but no semantic masks: the semantic target of a view is derived from its
    # instance mask (1 "object" where id > 0, 0 "background" elsewhere; num_classes 2, things (1,)),
    # so a fg/bg head learns which pixels and Gaussians belong to any object (METHOD.md, Background).
    semantic_from_instances: bool = False
    seg_dir: Optional[str] = None
    sem_dir: Optional[str] = None
    extras: dict = field(default_factory=dict)


class SceneError(Exception):
    """A scene on disk is broken or incomplete. The message is one line naming the file."""
