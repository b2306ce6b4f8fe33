"""Semantic classes of the synthetic scenes: the 21 "reduced ScanNet" classes of DATA.md.

Convention: class 0 is void; things are {4, 5, 6, 14, 15, 16, 17, 18, 20}; everything else
(walls, floor, furniture such as tables and shelves, lamps, "otherprop") is stuff and carries
instance id 0 in every ground-truth and predicted instance map.
"""
from __future__ import annotations

CLASS_NAMES = (
    "void", "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "counter", "shelves", "curtain", "ceiling", "refrigerator", "television", "person",
    "toilet", "sink", "lamp", "bag", "otherprop",
)
NUM_CLASSES = len(CLASS_NAMES)  # 22, void included
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
THING_CLASSES = (4, 5, 6, 14, 15, 16, 17, 18, 20)
STUFF_CLASSES = tuple(c for c in range(1, NUM_CLASSES) if c not in THING_CLASSES)

# Messy-Rooms has two classes: 0 background (stuff), 1 object (thing).
MESSY_CLASS_NAMES = ("background", "object")
