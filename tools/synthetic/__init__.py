"""Synthetic indoor scenes with exact ground truth and simulated 2D-segmenter noise.

Public API (see ``tools/make_scene.py`` for the command line):

- :class:`SceneConfig`, :func:`generate_scene` - render a scene and write it (PanopLi and/or
  Messy-Rooms format);
- :func:`build_layout` - a furnished room holding N thing objects;
- :func:`handheld_path`, :func:`intrinsics` - cameras;
- :class:`SceneRenderer` - ray-cast colour, depth, instance and class maps of one view;
- :class:`NoiseConfig`, :data:`PRESETS`, :func:`simulate_segmenter` - the simulated segmenter.
"""
from .cameras import handheld_path, intrinsics
from .generate import SceneConfig, generate_scene
from .layout import build_layout
from .renderer import SceneRenderer
from .segmenter import PRESETS, NoiseConfig, simulate_segmenter

__all__ = ["SceneConfig", "generate_scene", "build_layout", "handheld_path", "intrinsics", "SceneRenderer",
           "NoiseConfig", "PRESETS", "simulate_segmenter"]
