"""Object and furniture prototypes: composite meshes in a local frame, plus what the layout needs
to place them (footprint, height, collision boxes, support surfaces).

Convention: local frame in metres, origin at the centre of the footprint on the supporting
surface, z up, the object's back towards local +y (furniture stands with +y against a wall).
Part slot 0 uses the object's primary material, slot 1 its secondary material.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import numpy as np

from .classes import CLASS_ID
from .meshes import Mesh, box, ellipsoid, frustum, rot_x, rot_z, sphere, torus, wavy_sheet

Box = Tuple[float, float, float, float, float, float]  # (cx, cy, hx, hy, z0, z1), local frame
Support = Tuple[float, float, float, float, float, float]  # (cx, cy, hx, hy, z, clearance)


@dataclass
class Proto:
    kind: str
    cls: int
    parts: List[Tuple[Mesh, int]]  # (local mesh, material slot)
    half: Tuple[float, float]  # footprint half extents (x, y)
    height: float
    palettes: Tuple[str, str]  # palette names of slot 0 and slot 1
    blockers: List[Box] = field(default_factory=list)  # collision boxes; default: the bounding box
    supports: List[Support] = field(default_factory=list)  # surfaces other objects may stand on
    flat_top: bool = False  # things only: small objects may be stacked on top

    def __post_init__(self):
        if not self.blockers:
            self.blockers = [(0.0, 0.0, self.half[0], self.half[1], 0.0, self.height)]
        if self.flat_top and not self.supports:
            self.supports = [(0.0, 0.0, self.half[0], self.half[1], self.height, np.inf)]


def _bounded(kind, cls, parts, palettes, **kw) -> Proto:
    """A Proto whose footprint and height are the bounds of its parts (re-centred on x, y)."""
    lo = np.min([m.bounds[0] for m, _ in parts], 0)
    hi = np.max([m.bounds[1] for m, _ in parts], 0)
    c = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    parts = [(m.translated(-c), s) for m, s in parts]
    half = ((hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2)
    return Proto(kind, cls, parts, half, float(hi[2] - lo[2]), palettes, **kw)


U = lambda rng, a, b: float(rng.uniform(a, b))  # noqa: E731


# ----------------------------------------------------------------------------------------------
# Things. Each builder: (rng, s) -> Proto, with s a size factor (1 = natural size; the layout
# shrinks small objects in crowded scenes).
# ----------------------------------------------------------------------------------------------
BAG = CLASS_ID["bag"]


def parcel(rng, s):
    sx, sy, sz = U(rng, .08, .45) * s, U(rng, .08, .4) * s, U(rng, .06, .35) * s
    return _bounded("parcel", BAG, [(box(sx, sy, sz, (0, 0, sz / 2)), 0)], ("thing", "thing"), flat_top=True)


def ball(rng, s):
    r = U(rng, .04, .15) * s
    return _bounded("ball", BAG, [(sphere(r, (0, 0, r)), 0)], ("thing", "thing"))


def can(rng, s):
    r, h = U(rng, .03, .08) * s, U(rng, .08, .25) * s
    return _bounded("can", BAG, [(frustum(r, r, h), 0), (frustum(r * 1.02, r * 1.02, h * .3, z0=h * .35), 1)],
                    ("thing", "metal"), flat_top=True)


def bottle(rng, s):
    r, h = U(rng, .03, .055) * s, U(rng, .14, .3) * s
    parts = [(frustum(r, r, h * .65), 0), (frustum(r, r * .35, h * .2, z0=h * .65), 0),
             (frustum(r * .35, r * .35, h * .15, z0=h * .85), 1)]
    return _bounded("bottle", BAG, parts, ("thing", "thing"))


def bucket(rng, s):
    r, h = U(rng, .08, .16) * s, U(rng, .14, .3) * s
    parts = [(frustum(r, r * 1.3, h, segments=28), 0),
             (torus(r * 1.3, .006 * s + .003, 28, 6).translated((0, 0, h)), 1)]
    return _bounded("bucket", BAG, parts, ("thing", "metal"), flat_top=True)


def ring(rng, s):
    R = U(rng, .06, .16) * s
    r = R * U(rng, .2, .38)
    return _bounded("ring", BAG, [(torus(R, r).translated((0, 0, r)), 0)], ("thing", "thing"))


def duffel(rng, s):
    rx, ry = U(rng, .15, .32) * s, U(rng, .08, .15) * s
    parts = [(ellipsoid(rx, ry, ry * .9, (0, 0, ry * .9)), 0),
             (box(rx * .9, ry * 2.05, .02 * s, (0, 0, ry * 1.0)), 1)]
    return _bounded("duffel", BAG, parts, ("thing", "fabric"))


def backpack(rng, s):
    w, d, h = U(rng, .25, .36) * s, U(rng, .12, .18) * s, U(rng, .32, .48) * s
    parts = [(box(w, d, h, (0, 0, h / 2)), 0), (ellipsoid(w * .38, d * .45, h * .25, (0, -d / 2, h * .35)), 1)]
    return _bounded("backpack", BAG, parts, ("fabric", "thing"))


def mug(rng, s):
    r, h = U(rng, .035, .05) * s, U(rng, .08, .12) * s
    handle = torus(h * .28, r * .18, 16, 6).transformed(rot_x(np.pi / 2), (r + h * .18, 0, h * .5))
    return _bounded("mug", BAG, [(frustum(r, r, h), 0), (handle, 0)], ("thing", "thing"))


def books(rng, s):
    parts, z = [], 0.0
    w, d = U(rng, .15, .3) * s, U(rng, .11, .22) * s
    for k in range(int(rng.integers(2, 5))):
        t = U(rng, .02, .05) * s
        b = box(w * U(rng, .85, 1), d * U(rng, .85, 1), t, (0, 0, z + t / 2)).transformed(rot_z(U(rng, -.2, .2)))
        parts.append((b, k % 2))
        z += t
    return _bounded("books", BAG, parts, ("thing", "thing"), flat_top=True)


def traffic_cone(rng, s):
    h, r = U(rng, .2, .45) * s, U(rng, .06, .1) * s
    parts = [(box(r * 2.6, r * 2.6, h * .06, (0, 0, h * .03)), 1), (frustum(r, r * .15, h * .94, z0=h * .06), 0),
             (frustum(r * .72, r * .58, h * .15, z0=h * .45), 1)]
    return _bounded("cone", BAG, parts, ("thing", "ceramic"))


def toy(rng, s):
    r = U(rng, .06, .12) * s
    parts = [(ellipsoid(r, r * .85, r * 1.1, (0, 0, r * 1.1)), 0), (sphere(r * .7, (0, 0, r * 2.7)), 0),
             (sphere(r * .25, (r * .5, 0, r * 3.3)), 1), (sphere(r * .25, (-r * .5, 0, r * 3.3)), 1)]
    return _bounded("toy", BAG, parts, ("thing", "thing"))


def vase(rng, s):
    r, h = U(rng, .05, .1) * s, U(rng, .15, .35) * s
    parts = [(frustum(r * .7, r * 1.2, h * .5), 0), (frustum(r * 1.2, r * .5, h * .35, z0=h * .5), 0),
             (frustum(r * .5, r * .7, h * .15, z0=h * .85), 1)]
    return _bounded("vase", BAG, parts, ("thing", "ceramic"), flat_top=False)


def chair(rng, s):
    w, seat, back = U(rng, .4, .5), U(rng, .42, .48), U(rng, .35, .5)
    leg = lambda x, y: (frustum(.02, .02, seat - .04, 10).translated((x, y, 0)), 1)  # noqa: E731
    o = w / 2 - .03
    parts = [leg(o, o), leg(-o, o), leg(o, -o), leg(-o, -o), (box(w, w, .04, (0, 0, seat - .02)), 0),
             (box(w, .04, back, (0, w / 2 - .02, seat + back / 2)), 0)]
    return _bounded("chair", CLASS_ID["chair"], parts, ("fabric", "wood"))


def stool(rng, s):
    h, r = U(rng, .45, .7), U(rng, .15, .2)
    parts = [(frustum(r, r, .04, z0=h - .04), 0)]
    for a in np.linspace(0, 2 * np.pi, 3, endpoint=False) + U(rng, 0, 1):
        parts.append((frustum(.018, .018, h - .04, 8).translated((np.cos(a) * r * .7, np.sin(a) * r * .7, 0)), 1))
    return _bounded("stool", CLASS_ID["chair"], parts, ("wood", "metal"))


def sofa(rng, s):
    w, d = U(rng, 1.5, 2.1), U(rng, .8, .95)
    parts = [(box(w, d, .42, (0, 0, .21)), 0), (box(w, .22, .42, (0, d / 2 - .11, .63)), 0),
             (box(.2, d, .22, (w / 2 - .1, 0, .53)), 0), (box(.2, d, .22, (-w / 2 + .1, 0, .53)), 0),
             (box(w - .44, d - .3, .1, (0, -.1, .47)), 1)]
    return _bounded("sofa", CLASS_ID["sofa"], parts, ("fabric", "fabric"))


def armchair(rng, s):
    w = U(rng, .75, .95)
    parts = [(box(w, .85, .4, (0, 0, .2)), 0), (box(w, .2, .45, (0, .325, .62)), 0),
             (box(.16, .85, .2, (w / 2 - .08, 0, .5)), 1), (box(.16, .85, .2, (-w / 2 + .08, 0, .5)), 1)]
    return _bounded("armchair", CLASS_ID["sofa"], parts, ("fabric", "fabric"))


def bed(rng, s):
    w, L = U(rng, 1.2, 1.7), U(rng, 1.95, 2.1)
    parts = [(box(w, L, .3, (0, 0, .15)), 1), (box(w - .05, L - .1, .2, (0, -.03, .4)), 0),
             (box(w, .08, .95, (0, L / 2 - .04, .475)), 1),
             (ellipsoid(w * .3, .18, .07, (0, L / 2 - .32, .57)), 0)]
    return _bounded("bed", CLASS_ID["bed"], parts, ("fabric", "wood"))


def refrigerator(rng, s):
    w, d, h = U(rng, .6, .8), U(rng, .6, .72), U(rng, 1.6, 1.9)
    parts = [(box(w, d, h, (0, 0, h / 2)), 0), (box(w * .98, .01, .015, (0, -d / 2 - .004, h * .62)), 1),
             (box(.03, .04, h * .25, (w * .38, -d / 2 - .02, h * .75)), 1),
             (box(.03, .04, h * .2, (w * .38, -d / 2 - .02, h * .35)), 1)]
    return _bounded("refrigerator", CLASS_ID["refrigerator"], parts, ("ceramic", "metal"))


def television(rng, s):
    w = U(rng, .5, 1.1) * max(s, .6)
    h = w * 9 / 16
    parts = [(box(w, .05, h, (0, 0, .1 + h / 2)), 1), (box(w * .94, .01, h * .9, (0, -.03, .1 + h / 2)), 0),
             (box(.06, .04, .1, (0, .0, .05)), 1), (box(w * .4, .2, .02, (0, 0, .01)), 1)]
    return _bounded("television", CLASS_ID["television"], parts, ("screen", "metal"))


def person(rng, s):
    k = U(rng, .9, 1.08)
    parts = [(frustum(.07, .06, .85 * k, 12).translated((.1, 0, 0)), 0),
             (frustum(.07, .06, .85 * k, 12).translated((-.1, 0, 0)), 0),
             (ellipsoid(.21, .13, .33 * k, (0, 0, 1.15 * k)), 0), (sphere(.11, (0, 0, 1.6 * k)), 1),
             (frustum(.05, .04, .6 * k, 10).translated((.27, 0, .85 * k)), 0),
             (frustum(.05, .04, .6 * k, 10).translated((-.27, 0, .85 * k)), 0)]
    return _bounded("person", CLASS_ID["person"], parts, ("fabric", "skin"))


def toilet(rng, s):
    parts = [(frustum(.17, .21, .38, 24), 0), (torus(.19, .03, 24, 8).translated((0, 0, .41)), 1),
             (box(.42, .18, .36, (0, .22, .56)), 0)]
    return _bounded("toilet", CLASS_ID["toilet"], parts, ("ceramic", "ceramic"))


def sink(rng, s):
    parts = [(frustum(.09, .07, .7, 16), 0), (frustum(.14, .28, .16, 28, z0=.7), 0),
             (frustum(.015, .015, .14, 8).translated((0, .2, .86)), 1)]
    return _bounded("sink", CLASS_ID["sink"], parts, ("ceramic", "metal"))


SMALL_THINGS: Dict[str, Callable] = {
    "parcel": parcel, "ball": ball, "can": can, "bottle": bottle, "bucket": bucket, "ring": ring,
    "duffel": duffel, "backpack": backpack, "mug": mug, "books": books, "cone": traffic_cone,
    "toy": toy, "vase": vase,
}
LARGE_THINGS: Dict[str, Callable] = {
    "chair": chair, "stool": stool, "sofa": sofa, "armchair": armchair, "bed": bed,
    "refrigerator": refrigerator, "television": television, "person": person, "toilet": toilet,
    "sink": sink,
}
THING_BUILDERS: Dict[str, Callable] = {**SMALL_THINGS, **LARGE_THINGS}
# where each kind may stand: floor, furniture (tables, shelves, cabinets, counters), stack (on things)
FLOOR_ONLY = {"chair", "stool", "sofa", "armchair", "bed", "refrigerator", "person", "toilet", "sink"}


# ----------------------------------------------------------------------------------------------
# Stuff (instance 0)
# ----------------------------------------------------------------------------------------------
def table(rng, length=None, depth=None, height=None):
    L = length or U(rng, 1.1, 1.8)
    D = depth or U(rng, .7, .9)
    H = height or .75
    legs = [(box(.05, .05, H - .04, (x, y, (H - .04) / 2)), 1)
            for x in (-L / 2 + .05, L / 2 - .05) for y in (-D / 2 + .05, D / 2 - .05)]
    parts = [(box(L, D, .04, (0, 0, H - .02)), 0)] + legs
    blockers = [(0, 0, L / 2, D / 2, H - .04, H)] + [(x, y, .025, .025, 0, H) for x in (-L / 2 + .05, L / 2 - .05)
                                                     for y in (-D / 2 + .05, D / 2 - .05)]
    return Proto("table", CLASS_ID["table"], parts, (L / 2, D / 2), H, ("wood", "wood"), blockers,
                 [(0, 0, L / 2 - .02, D / 2 - .02, H, np.inf)])


def shelves(rng, width=None, height=None):
    W, D, H = width or U(rng, .8, 1.3), .36, height or U(rng, 1.5, 2.0)
    n = int(rng.integers(3, 5))
    t = .025
    zs = np.linspace(.08, H - t, n + 1)
    parts = [(box(t, D, H, (-W / 2 + t / 2, 0, H / 2)), 0), (box(t, D, H, (W / 2 - t / 2, 0, H / 2)), 0),
             (box(W, t, H, (0, D / 2 - t / 2, H / 2)), 0)]
    blockers = [(-W / 2 + t / 2, 0, t / 2, D / 2, 0, H), (W / 2 - t / 2, 0, t / 2, D / 2, 0, H),
                (0, D / 2 - t / 2, W / 2, t / 2, 0, H), (0, 0, W / 2, D / 2, 0, .08)]
    supports = []
    for k, z in enumerate(zs):
        parts.append((box(W - 2 * t, D - t, t, (0, -t / 2, z - t / 2)), 1 if k else 0))
        blockers.append((0, -t / 2, W / 2 - t, D / 2 - t / 2, z - t, z))
        if k < n:
            supports.append((0, -t / 2, W / 2 - t - .01, D / 2 - t / 2 - .01, z, zs[k + 1] - z - t - .02))
    parts.append((box(W, D, .08, (0, 0, .04)), 0))
    return Proto("shelves", CLASS_ID["shelves"], parts, (W / 2, D / 2), H, ("wood", "painted"), blockers, supports)


def cabinet(rng, width=None, height=None):
    W, D, H = width or U(rng, .7, 1.4), U(rng, .4, .55), height or U(rng, .7, .95)
    n = max(1, int(round(W / .45)))
    parts = [(box(W, D, H, (0, 0, H / 2)), 0)]
    for k in range(n):
        x = -W / 2 + (k + .5) * W / n
        parts.append((box(W / n - .03, .012, H - .08, (x, -D / 2 - .006, H / 2)), 1))
        parts.append((box(.02, .02, .12, (x + W / n * .35, -D / 2 - .02, H * .7)), 1))
    return Proto("cabinet", CLASS_ID["cabinet"], parts, (W / 2, D / 2 + .03), H, ("wood", "painted"),
                 [(0, 0, W / 2, D / 2 + .03, 0, H)], [(0, 0, W / 2 - .02, D / 2 - .02, H, np.inf)])


def counter(rng, length=None):
    L, D, H = length or U(rng, 1.6, 2.6), .62, .9
    parts = [(box(L, D - .04, H - .04, (0, .02, (H - .04) / 2)), 1), (box(L, D, .04, (0, 0, H - .02)), 0)]
    return Proto("counter", CLASS_ID["counter"], parts, (L / 2, D / 2), H, ("stone", "painted"), [],
                 [(0, 0, L / 2 - .02, D / 2 - .02, H, np.inf)])


def floor_lamp(rng):
    H = U(rng, 1.4, 1.75)
    r = U(rng, .16, .24)
    parts = [(frustum(.15, .13, .03), 1), (frustum(.015, .015, H - .3, 8), 1),
             (frustum(r, r * .65, .3, 24, z0=H - .3), 0)]
    return _bounded("floor_lamp", CLASS_ID["lamp"], parts, ("fabric", "metal"))


def table_lamp(rng):
    H = U(rng, .35, .55)
    parts = [(frustum(.08, .06, .03), 1), (frustum(.012, .012, H - .18, 8), 1),
             (frustum(.14, .09, .18, 20, z0=H - .18), 0)]
    return _bounded("table_lamp", CLASS_ID["lamp"], parts, ("fabric", "metal"))


# wall items: local frame with the back (+y) against the wall, z = height of the bottom above the floor
def door(rng):
    W, H = U(rng, .8, .95), 2.05
    parts = [(box(W + .12, .03, H + .06, (0, 0, (H + .06) / 2)), 1), (box(W, .05, H, (0, -.02, H / 2)), 0),
             (sphere(.03, (W / 2 - .08, -.07, 1.0)), 1)]
    return _bounded("door", CLASS_ID["door"], parts, ("wood", "painted"))


def window(rng):
    W, H = U(rng, .9, 1.5), U(rng, 1.0, 1.4)
    parts = [(box(W + .1, .04, H + .1, (0, 0, (H + .1) / 2)), 1), (box(W, .02, H, (0, -.02, H / 2 + .05)), 0),
             (box(.04, .04, H, (0, -.03, H / 2 + .05)), 1), (box(W, .04, .04, (0, -.03, H / 2 + .05)), 1)]
    return _bounded("window", CLASS_ID["window"], parts, ("glass", "painted"))


def curtain(rng, height=2.3):
    W = U(rng, .4, .7)
    sheet = wavy_sheet(W, height, .035, int(rng.integers(3, 6)))
    return _bounded("curtain", CLASS_ID["curtain"], [(sheet, 0)], ("fabric", "fabric"))


def picture(rng):
    W, H = U(rng, .35, .9), U(rng, .3, .7)
    parts = [(box(W, .03, H, (0, 0, H / 2)), 1), (box(W - .08, .01, H - .08, (0, -.016, H / 2)), 0)]
    return _bounded("picture", CLASS_ID["otherprop"], parts, ("art", "wood"))


def radiator(rng):
    W = U(rng, .6, 1.2)
    parts = [(box(W, .08, .55, (0, 0, .275)), 0)]
    return _bounded("radiator", CLASS_ID["otherprop"], parts, ("metal", "metal"))


def bin_(rng):
    r = U(rng, .12, .18)
    return _bounded("bin", CLASS_ID["otherprop"], [(frustum(r * .85, r, U(rng, .3, .45), 20), 0)], ("metal", "metal"))


def plant(rng):
    r = U(rng, .1, .16)
    h = U(rng, .6, 1.1)
    pot, crown = r * 1.6, (h - r * 1.6) / 2  # pot height, half height of the foliage
    parts = [(frustum(r * .8, r, pot), 1), (ellipsoid(r * 1.6, r * 1.6, crown, (0, 0, pot + crown)), 0)]
    return _bounded("plant", CLASS_ID["otherprop"], parts, ("fabric", "stone"))
