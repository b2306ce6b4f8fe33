"""Room layouts: a furnished room (stuff) holding N thing objects, placed without interpenetration,
on the floor, on furniture, stacked on each other and touching each other.

Convention: world frame in metres, z up, the room spans [0, L] x [0, W] x [0, H] (floor at
z = 0). Yaw is the counter-clockwise rotation about +z of an object's local frame (see
``objects.py``). Instance ids: 0 for stuff, 1..N for things in placement order; they are the
ground-truth ids written to every view.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import objects as ob
from .classes import CLASS_ID, THING_CLASSES
from .materials import Material, make_material
from .meshes import Mesh, box, quad, rot_z, vertex_normals

LAYOUTS = ("old_room", "large_corridor", "replica_like")
_EPS = 1e-3  # contact tolerance (m): boxes may touch but not overlap by more than this


class LayoutError(RuntimeError):
    """The requested objects do not fit into the layout."""


@dataclass
class Item:
    """One placed object (thing or stuff) as recorded in generator.json."""
    kind: str
    cls: int
    instance: int  # 0 = stuff
    position: Tuple[float, float, float]  # footprint centre on its support (world)
    yaw: float
    half: Tuple[float, float]
    height: float
    materials: Tuple[int, int]
    support: str  # floor | furniture | stack | wall | room

    def to_json(self) -> dict:
        return {"kind": self.kind, "class": self.cls, "instance": self.instance,
                "position": [round(float(v), 4) for v in self.position], "yaw": round(float(self.yaw), 4),
                "size": [round(2 * self.half[0], 4), round(2 * self.half[1], 4), round(self.height, 4)],
                "materials": list(self.materials), "support": self.support}


@dataclass
class SceneMesh:
    """All triangles of a scene with per-triangle labels (what the ray caster and shader read)."""
    vertices: np.ndarray  # [V, 3] float64, world
    faces: np.ndarray  # [F, 3] int64
    normals: np.ndarray  # [V, 3] float32 unit vertex normals (smooth within a part)
    tri_instance: np.ndarray  # [F] int32, 0 = stuff
    tri_class: np.ndarray  # [F] int32, 0..21
    tri_material: np.ndarray  # [F] int32 index into the layout's materials


@dataclass
class Layout:
    name: str
    size: Tuple[float, float, float]  # (L, W, H) metres
    items: List[Item]
    parts: List[Tuple[Mesh, int, int, int]]  # (world mesh, instance, class, material)
    materials: List[Material]
    lights: np.ndarray  # [Lt, 3] point-light positions
    light_power: np.ndarray  # [Lt]
    blockers: np.ndarray  # [B, 7] (cx, cy, hx, hy, yaw, z0, z1): occupied boxes (cameras keep out)
    thing_scale: float  # size factor applied to small things

    @property
    def num_things(self) -> int:
        return sum(1 for it in self.items if it.instance > 0)

    def interest_points(self) -> Tuple[np.ndarray, np.ndarray]:
        """Camera targets: centres [P, 3] of things and furniture, and weights [P] (things 4x)."""
        sel = [it for it in self.items if it.support in ("floor", "furniture", "stack") and it.height < 2.2]
        pts = np.array([(it.position[0], it.position[1], it.position[2] + 0.5 * it.height) for it in sel],
                       np.float64).reshape(-1, 3)
        return pts, np.array([4.0 if it.instance > 0 else 1.0 for it in sel])

    def assemble(self) -> SceneMesh:
        verts, faces, normals, inst, cls, mat = [], [], [], [], [], []
        offset = 0
        for mesh, instance, c, m in self.parts:
            verts.append(mesh.vertices)
            faces.append(mesh.faces + offset)
            normals.append(vertex_normals(mesh.vertices, mesh.faces))
            n = len(mesh.faces)
            inst.append(np.full(n, instance, np.int32))
            cls.append(np.full(n, c, np.int32))
            mat.append(np.full(n, m, np.int32))
            offset += len(mesh.vertices)
        return SceneMesh(np.concatenate(verts), np.concatenate(faces), np.concatenate(normals).astype(np.float32),
                         np.concatenate(inst), np.concatenate(cls), np.concatenate(mat))


# ----------------------------------------------------------------------------------------------
# Geometry helpers (vectorised over existing boxes)
# ----------------------------------------------------------------------------------------------
def obb_overlap(c: np.ndarray, h: np.ndarray, yaw: float, C: np.ndarray, Hh: np.ndarray, Y: np.ndarray,
                eps: float = _EPS) -> np.ndarray:
    """2D oriented-box overlap by separating axes. c, h: [2]; C, Hh: [B, 2]; Y: [B] -> [B] bool.
    Boxes that only touch (overlap < eps) do not count."""
    ua = np.array([np.cos(yaw), np.sin(yaw)])
    va = np.array([-np.sin(yaw), np.cos(yaw)])
    UB = np.stack([np.cos(Y), np.sin(Y)], 1)  # [B, 2]
    VB = np.stack([-np.sin(Y), np.cos(Y)], 1)
    d = C - c  # [B, 2]
    sep = np.zeros(len(C), bool)
    for n in (np.broadcast_to(ua, UB.shape), np.broadcast_to(va, UB.shape), UB, VB):
        ra = h[0] * np.abs(n @ ua) + h[1] * np.abs(n @ va)
        rb = Hh[:, 0] * np.abs((UB * n).sum(1)) + Hh[:, 1] * np.abs((VB * n).sum(1))
        sep |= np.abs((d * n).sum(1)) >= ra + rb - eps
    return ~sep


def point_box_distance(p: np.ndarray, blockers: np.ndarray) -> np.ndarray:
    """Euclidean distance from points p [P, 3] to yaw-boxes [B, 7] -> [P, B] (0 inside)."""
    c, s = np.cos(blockers[:, 4]), np.sin(blockers[:, 4])  # [B]
    dx = p[:, None, 0] - blockers[None, :, 0]
    dy = p[:, None, 1] - blockers[None, :, 1]
    lx, ly = c * dx + s * dy, -s * dx + c * dy  # [P, B] in box frame
    zc, zh = (blockers[:, 5] + blockers[:, 6]) / 2, (blockers[:, 6] - blockers[:, 5]) / 2
    ex = np.maximum(np.abs(lx) - blockers[:, 2], 0)
    ey = np.maximum(np.abs(ly) - blockers[:, 3], 0)
    ez = np.maximum(np.abs(p[:, None, 2] - zc) - zh, 0)
    return np.sqrt(ex * ex + ey * ey + ez * ez)


@dataclass
class _Support:
    center: np.ndarray  # [2]
    half: np.ndarray  # [2]
    yaw: float
    z: float
    clearance: float
    kind: str  # floor | furniture | stack

    def contains(self, c: np.ndarray, h: Sequence[float], yaw: float) -> bool:
        """Whether the footprint (c, h, yaw) lies inside this support rectangle."""
        R = rot_z(yaw)[:2, :2]
        corners = c + (np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) * np.asarray(h)) @ R.T  # [4, 2]
        Rs = rot_z(self.yaw)[:2, :2]
        local = (corners - self.center) @ Rs  # into the support frame
        return bool(np.all(np.abs(local) <= self.half + 1e-6))


@dataclass
class _Wall:
    origin: np.ndarray  # [2] start corner
    tangent: np.ndarray  # [2] unit, along the wall
    normal: np.ndarray  # [2] unit, into the room
    length: float
    yaw: float  # yaw that turns an object's back (+y) towards this wall
    used: List[Tuple[float, float, float, float]] = field(default_factory=list)  # (s0, s1, z0, z1)


class _Builder:
    """Mutable layout state: placed parts, collision boxes, support surfaces, wall occupancy."""

    def __init__(self, name: str, rng: np.random.Generator, size: Tuple[float, float, float]):
        self.name, self.rng = name, rng
        self.L, self.W, self.H = size
        self.materials: List[Material] = []
        self.parts: List[Tuple[Mesh, int, int, int]] = []
        self.items: List[Item] = []
        self.blk = np.zeros((0, 7))  # (cx, cy, hx, hy, yaw, z0, z1)
        self.supports: List[_Support] = [
            _Support(np.array([self.L / 2, self.W / 2]), np.array([self.L / 2 - .02, self.W / 2 - .02]), 0.0, 0.0,
                     self.H - .3, "floor")]
        self.stack_tops: List[Tuple[int, _Support]] = []  # (item index, support) on flat-topped things
        L, W = self.L, self.W
        self.walls = [
            _Wall(np.array([0., 0.]), np.array([1., 0.]), np.array([0., 1.]), L, np.pi),
            _Wall(np.array([L, 0.]), np.array([0., 1.]), np.array([-1., 0.]), W, -np.pi / 2),
            _Wall(np.array([L, W]), np.array([-1., 0.]), np.array([0., -1.]), L, 0.0),
            _Wall(np.array([0., W]), np.array([0., -1.]), np.array([1., 0.]), W, np.pi / 2)]
        self.next_instance = 1
        self.shared_looks: Dict[str, List[Tuple[int, int]]] = {}

    # -------------------------------------------------------------------------------- materials
    def looks(self, proto: ob.Proto, share: float = 0.35) -> Tuple[int, int]:
        """Material ids for an object's two slots; with probability ``share`` it reuses the look of
        an earlier object of the same kind (same-class objects then look alike)."""
        prev = self.shared_looks.setdefault(proto.kind, [])
        if prev and self.rng.random() < share:
            return prev[int(self.rng.integers(len(prev)))]
        m0 = self.new_material(proto.palettes[0])
        same = proto.palettes[1] == proto.palettes[0] and self.rng.random() < .5
        m1 = m0 if same else self.new_material(proto.palettes[1])
        prev.append((m0, m1))
        return m0, m1

    def new_material(self, palette: str) -> int:
        self.materials.append(make_material(self.rng, palette))
        return len(self.materials) - 1

    # -------------------------------------------------------------------------------- placement
    def fits(self, proto: ob.Proto, x: float, y: float, z: float, yaw: float) -> bool:
        if len(self.blk) == 0:
            return True
        R = rot_z(yaw)[:2, :2]
        for cx, cy, hx, hy, z0, z1 in proto.blockers:
            c = np.array([x, y]) + R @ np.array([cx, cy])
            zo = (self.blk[:, 5] < z + z1 - _EPS) & (z + z0 < self.blk[:, 6] - _EPS)
            if not zo.any():
                continue
            if obb_overlap(c, np.array([hx, hy]), yaw, self.blk[zo, :2], self.blk[zo, 2:4], self.blk[zo, 4]).any():
                return False
        return True

    def add(self, proto: ob.Proto, x: float, y: float, z: float, yaw: float, support: str,
            mats: Optional[Tuple[int, int]] = None) -> Item:
        is_thing = proto.cls in THING_CLASSES
        instance = self.next_instance if is_thing else 0
        self.next_instance += int(is_thing)
        mats = mats if mats is not None else self.looks(proto)
        R = rot_z(yaw)
        t = np.array([x, y, z])
        for mesh, slot in proto.parts:
            self.parts.append((mesh.transformed(R, t), instance, proto.cls, mats[slot]))
        R2 = R[:2, :2]
        rows = []
        for cx, cy, hx, hy, z0, z1 in proto.blockers:
            c = np.array([x, y]) + R2 @ np.array([cx, cy])
            rows.append([c[0], c[1], hx, hy, yaw, z + z0, z + z1])
        self.blk = np.concatenate([self.blk, np.array(rows)])
        item = Item(proto.kind, proto.cls, instance, (x, y, z), yaw, proto.half, proto.height, mats, support)
        self.items.append(item)
        for cx, cy, hx, hy, sz, clr in proto.supports:
            c = np.array([x, y]) + R2 @ np.array([cx, cy])
            sup = _Support(c, np.array([hx, hy]), yaw, z + sz, min(clr, self.H - .3 - z - sz),
                           "stack" if is_thing else "furniture")
            if is_thing:
                self.stack_tops.append((len(self.items) - 1, sup))
            else:
                self.supports.append(sup)
        return item

    def on_wall(self, proto: ob.Proto, z: float = 0.0, gap: float = 0.0, wall: Optional[int] = None,
                s: Optional[float] = None, support: str = "floor", tries: int = 200,
                mats: Optional[Tuple[int, int]] = None, check: bool = True) -> Optional[Item]:
        """Places ``proto`` with its back against a wall at height ``z``; None if nothing fits."""
        hx, hy = proto.half
        for _ in range(tries):
            w = int(self.rng.choice(4, p=np.array([wl.length for wl in self.walls]) / (2 * (self.L + self.W)))) \
                if wall is None else wall
            wl = self.walls[w]
            lo, hi = hx + .05, wl.length - hx - .05
            if hi < lo:
                continue
            pos = float(self.rng.uniform(lo, hi)) if s is None else s
            taken = any(a < pos + hx and pos - hx < b and c < z + proto.height and z < d for a, b, c, d in wl.used)
            if check and taken:
                if s is not None:
                    return None
                continue
            p = wl.origin + pos * wl.tangent + (hy + gap) * wl.normal
            if check and not self.fits(proto, p[0], p[1], z, wl.yaw):
                if s is not None:
                    return None
                continue
            wl.used.append((pos - hx, pos + hx, z, z + proto.height))
            return self.add(proto, p[0], p[1], z, wl.yaw, support if z == 0 else "wall", mats)
        return None

    def free_standing(self, proto: ob.Proto, wall_margin: float = .4, tries: int = 300) -> Optional[Item]:
        hx, hy = proto.half
        r = float(np.hypot(hx, hy))
        for _ in range(tries):
            x = self.rng.uniform(r + wall_margin, self.L - r - wall_margin)
            y = self.rng.uniform(r + wall_margin, self.W - r - wall_margin)
            yaw = float(self.rng.choice([0, np.pi / 2, np.pi, -np.pi / 2])) + self.rng.normal(0, .05)
            if self.fits(proto, x, y, 0.0, yaw):
                return self.add(proto, x, y, 0.0, yaw, "floor")
        return None

    def place_thing(self, proto: ob.Proto, allowed: Sequence[str], p_touch: float, p_stack: float,
                    tries: int = 250) -> Optional[Item]:
        """Places one thing: next to (touching) another thing, on top of one, or anywhere on an
        allowed support surface. None when no spot was found."""
        rng = self.rng
        hx, hy = proto.half
        things = [i for i, it in enumerate(self.items) if it.instance > 0 and it.support in allowed]
        sups = [s for s in self.supports if s.kind in allowed and s.clearance >= proto.height
                and min(s.half) * 2 >= min(hx, hy) * 2 and max(s.half) >= max(hx, hy)]
        stacks = [s for _, s in self.stack_tops if "stack" in allowed and s.clearance >= proto.height
                  and s.half.max() >= max(hx, hy) * .8 and s.half.min() >= min(hx, hy) * .8]
        weights = np.array([s.half.prod() * (1.0 if s.kind == "floor" else 4.0) for s in sups])
        for _ in range(tries):
            u = rng.random()
            if u < p_touch and things:
                nb = self.items[things[int(rng.integers(len(things)))]]
                k = int(rng.integers(4))
                yaw = nb.yaw + k * np.pi / 2 + (rng.normal(0, .03) if rng.random() < .5 else 0.0)
                ext = np.array([hx, hy]) if k % 2 == 0 else np.array([hy, hx])  # along nb's axes
                a = int(rng.integers(2))
                sign = rng.choice([-1.0, 1.0])
                off = np.zeros(2)
                off[a] = sign * (nb.half[a] + ext[a])
                off[1 - a] = rng.uniform(-1, 1) * nb.half[1 - a] * .8
                c = np.array(nb.position[:2]) + rot_z(nb.yaw)[:2, :2] @ off
                z = nb.position[2]
                sup = next((s for s in self.supports + [s for _, s in self.stack_tops]
                            if abs(s.z - z) < 1e-6 and s.contains(c, (hx, hy), yaw)), None)
                if sup is None or sup.clearance < proto.height:
                    continue
                kind = "floor" if sup.kind == "floor" else sup.kind
            elif u < p_touch + p_stack and stacks:
                sup = stacks[int(rng.integers(len(stacks)))]
                yaw = sup.yaw + float(rng.choice([0, np.pi / 2])) + rng.normal(0, .1)
                c = sup.center + rng.uniform(-1, 1, 2) * np.maximum(sup.half - max(hx, hy), 0)
                z, kind = sup.z, "stack"
            elif sups:
                sup = sups[int(rng.choice(len(sups), p=weights / weights.sum()))]
                yaw = float(rng.uniform(-np.pi, np.pi))
                r = min(np.hypot(hx, hy), sup.half.min())
                c = sup.center + rot_z(sup.yaw)[:2, :2] @ (rng.uniform(-1, 1, 2) * np.maximum(sup.half - r, 0))
                z, kind = sup.z, sup.kind
            else:
                return None
            if not sup.contains(c, (hx, hy), yaw) or not self.fits(proto, c[0], c[1], z, yaw):
                continue
            return self.add(proto, float(c[0]), float(c[1]), z, float(yaw), kind)
        return None

    # -------------------------------------------------------------------------------- room shell
    def shell(self, wall_look: int, floor_look: int, ceiling_look: int):
        L, W, H = self.L, self.W, self.H
        floor = quad(np.array([[0, 0, 0], [L, 0, 0], [L, W, 0], [0, W, 0]]))
        ceiling = quad(np.array([[0, 0, H], [0, W, H], [L, W, H], [L, 0, H]]))
        walls = [quad(np.array([[0, 0, 0], [0, 0, H], [L, 0, H], [L, 0, 0]])),  # y = 0, faces +y
                 quad(np.array([[L, 0, 0], [L, 0, H], [L, W, H], [L, W, 0]])),  # x = L, faces -x
                 quad(np.array([[L, W, 0], [L, W, H], [0, W, H], [0, W, 0]])),  # y = W, faces -y
                 quad(np.array([[0, W, 0], [0, W, H], [0, 0, H], [0, 0, 0]]))]  # x = 0, faces +x
        self.parts.append((floor, 0, CLASS_ID["floor"], floor_look))
        self.parts.append((ceiling, 0, CLASS_ID["ceiling"], ceiling_look))
        for w in walls:
            self.parts.append((w, 0, CLASS_ID["wall"], wall_look))
        # a skirting board (wall class) gives the wall/floor edge some detail
        for w in self.walls:
            mid = w.origin + w.tangent * w.length / 2 + w.normal * .006
            sx, sy = (w.length, .012) if abs(w.tangent[0]) > .5 else (.012, w.length)
            self.parts.append((box(sx, sy, .08, (mid[0], mid[1], .04)), 0, CLASS_ID["wall"], ceiling_look))


# ----------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------
def _windows(b: _Builder, n: int, walls: Optional[Sequence[int]] = None, curtains: float = .5, radiators: float = .5):
    for _ in range(n):
        w = None if walls is None else int(b.rng.choice(walls))
        it = b.on_wall(ob.window(b.rng), z=float(b.rng.uniform(.8, 1.0)), wall=w)
        if it is None:
            continue
        wi = next(k for k, wl in enumerate(b.walls) if abs(wl.yaw - it.yaw) < 1e-9)
        wl = b.walls[wi]
        s_mid = float((np.array(it.position[:2]) - wl.origin) @ wl.tangent)
        if b.rng.random() < radiators:
            rad = ob.radiator(b.rng)
            b.on_wall(rad, z=.12, gap=.04, wall=wi, s=s_mid, support="wall")
        if b.rng.random() < curtains:
            look = None
            for side in (-1, 1):
                cur = ob.curtain(b.rng, height=b.H - .25)
                s = s_mid + side * (it.half[0] + cur.half[0] + .02)
                got = b.on_wall(cur, z=.1, gap=.06, wall=wi, s=s, support="wall", mats=look)
                if got is not None:
                    look = got.materials


def _wall_things(b: _Builder, builders: Sequence[Callable], z_range=(1.2, 1.6), gap=0.0):
    for f in builders:
        b.on_wall(f(b.rng), z=float(b.rng.uniform(*z_range)), gap=gap, support="wall")


def _furnish_old_room(b: _Builder):
    rng = b.rng
    b.on_wall(ob.door(rng))
    _windows(b, 2)
    for _ in range(2):
        b.on_wall(ob.shelves(rng), gap=.01)
    cab = b.on_wall(ob.cabinet(rng), gap=.01)
    for _ in range(2):
        b.free_standing(ob.table(rng), wall_margin=.5)
    b.on_wall(ob.floor_lamp(rng), gap=.1)
    _wall_things(b, [ob.picture] * int(rng.integers(2, 4)))
    b.on_wall(ob.plant(rng), gap=.05)
    b.on_wall(ob.bin_(rng), gap=.03)
    if cab is not None and rng.random() < .7:
        sup = b.supports[-1]
        lamp = ob.table_lamp(rng)
        if b.fits(lamp, sup.center[0], sup.center[1], sup.z, sup.yaw):
            b.add(lamp, sup.center[0] + .0, sup.center[1], sup.z, sup.yaw, "furniture")


def _furnish_corridor(b: _Builder):
    rng = b.rng
    for _ in range(4):
        b.on_wall(ob.door(rng), wall=int(rng.choice([0, 2])))
    _windows(b, 3, walls=[0, 2], curtains=.3, radiators=.7)
    for _ in range(3):
        b.on_wall(ob.shelves(rng), gap=.01, wall=int(rng.choice([0, 2])))
    for _ in range(2):
        b.on_wall(ob.cabinet(rng), gap=.01)
    for _ in range(3):
        b.on_wall(ob.table(rng, depth=float(rng.uniform(.4, .5))), gap=.01, wall=int(rng.choice([0, 2])))
    b.on_wall(ob.table(rng, length=1.4, depth=.4, height=.45), gap=.01)  # a bench
    for _ in range(2):
        b.on_wall(ob.floor_lamp(rng), gap=.1)
    _wall_things(b, [ob.picture] * 4)
    for f in (ob.plant, ob.plant, ob.bin_, ob.bin_):
        b.on_wall(f(rng), gap=.05)


def _furnish_replica(b: _Builder):
    rng = b.rng
    b.on_wall(ob.door(rng))
    _windows(b, 2, curtains=1.0, radiators=.3)
    b.on_wall(ob.counter(rng), gap=.01)
    for _ in range(2):
        b.on_wall(ob.shelves(rng), gap=.01)
    b.on_wall(ob.cabinet(rng, width=float(rng.uniform(1.2, 1.6)), height=.55), gap=.01)  # TV stand
    b.free_standing(ob.table(rng, length=float(rng.uniform(1.4, 1.8)), depth=.9), wall_margin=1.0)  # dining
    b.free_standing(ob.table(rng, length=1.0, depth=.55, height=.42), wall_margin=1.0)  # coffee table
    b.on_wall(ob.floor_lamp(rng), gap=.1)
    _wall_things(b, [ob.picture] * 3)
    b.on_wall(ob.plant(rng), gap=.05)
    b.on_wall(ob.bin_(rng), gap=.05)


_FURNISH = {"old_room": _furnish_old_room, "large_corridor": _furnish_corridor, "replica_like": _furnish_replica}
_SIZES = {"old_room": ((5.5, 6.5), (4.5, 5.2), 2.7), "large_corridor": ((12.0, 15.0), (3.0, 3.6), 2.8),
          "replica_like": ((6.5, 7.5), (5.2, 6.0), 2.8)}
# Kind frequencies of the thing objects. Messy-Rooms-like rooms hold mostly small clutter.
_SMALL_KINDS = tuple(ob.SMALL_THINGS)
_MESSY_LARGE = {"chair": .05, "stool": .03, "television": .02, "armchair": .01}
_REPLICA_FIRST = ("sofa", "bed", "refrigerator", "television", "chair", "chair", "chair", "chair", "person",
                  "toilet", "sink", "armchair", "stool")
_REPLICA_LARGE = {"chair": .08, "television": .03, "stool": .04, "person": .02}


def _thing_kinds(layout: str, n: int, rng: np.random.Generator) -> List[str]:
    if layout == "replica_like":
        kinds = list(_REPLICA_FIRST[:n])
        large = _REPLICA_LARGE
    else:
        kinds, large = [], _MESSY_LARGE
    names = list(large) + list(_SMALL_KINDS)
    crowd = min(1.0, 60.0 / max(n, 1))  # big things get rarer in crowded rooms (the floor is finite)
    p_large = np.array(list(large.values())) * crowd
    p = np.concatenate([p_large, np.full(len(_SMALL_KINDS), (1 - p_large.sum()) / len(_SMALL_KINDS))])
    kinds += [names[i] for i in rng.choice(len(names), n - len(kinds), p=p / p.sum())]
    return kinds


def thing_scale(num_objects: int) -> float:
    """Size factor of small things: 1 up to 60 objects, then shrinking so 500 fit (0.53)."""
    return float(min(1.0, (60.0 / max(num_objects, 1)) ** 0.3))


def build_layout(layout: str, num_objects: int, rng: np.random.Generator, p_touch: float = .25,
                 p_stack: float = .12) -> Layout:
    """A furnished room of preset ``layout`` holding ``num_objects`` thing objects."""
    if layout not in _FURNISH:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not 1 <= num_objects <= 1000:
        raise ValueError(f"num_objects must be in 1..1000, got {num_objects}")
    (l0, l1), (w0, w1), H = _SIZES[layout]
    shrink = float(np.clip(np.sqrt(num_objects / 25.0), 0.75, 1.0))  # small rooms for few objects
    if layout != "old_room":  # the corridor and the furnished Replica-like room keep their size
        shrink = 1.0
    b = _Builder(layout, rng, (float(rng.uniform(l0, l1)) * shrink, float(rng.uniform(w0, w1)) * shrink, H))
    b.shell(b.new_material("wall"), b.new_material("floor"), b.new_material("ceiling"))
    _FURNISH[layout](b)

    s = thing_scale(num_objects)
    kinds = _thing_kinds(layout, num_objects, rng)
    protos = [ob.THING_BUILDERS[k](rng, s) for k in kinds]
    # large first: they need the most room; stable order keeps it deterministic
    order = sorted(range(len(protos)), key=lambda i: -protos[i].half[0] * protos[i].half[1])
    against_wall = {"sofa", "bed", "refrigerator", "toilet", "sink"}
    for i in order:
        proto, kind = protos[i], kinds[i]
        placed = None
        for shrink in range(5):
            if kind in against_wall:
                placed = b.on_wall(proto, gap=.02) or b.place_thing(proto, ("floor",), 0.0, 0.0)
            elif kind == "television" and layout == "replica_like":
                placed = b.place_thing(proto, ("furniture",), 0.0, 0.0)
            elif kind in ob.FLOOR_ONLY:
                placed = b.place_thing(proto, ("floor",), p_touch * .5, 0.0)
            else:
                placed = b.place_thing(proto, ("floor", "furniture", "stack"), p_touch, p_stack)
            if placed is not None:
                break
            proto = ob.THING_BUILDERS[kind](rng, s * 0.85 ** (shrink + 1))
        if placed is None:
            raise LayoutError(f"could not place object {i} ({kind}) in layout {layout!r} with "
                              f"{num_objects} objects; use fewer objects")
    _check_thing_ids(b)
    n_lights = max(1, int(round(b.L / 3.5)))
    lights = np.array([[b.L * (k + .5) / n_lights, b.W / 2, b.H - .35] for k in range(n_lights)])
    return Layout(layout, (b.L, b.W, b.H), b.items, b.parts, b.materials, lights,
                  np.full(n_lights, 1.0), b.blk.copy(), s)


def _check_thing_ids(b: _Builder):
    """Instance ids are 1..N in placement order; the ground truth relies on it."""
    ids = sorted(it.instance for it in b.items if it.instance > 0)
    if ids != list(range(1, len(ids) + 1)):
        raise AssertionError("thing instance ids must be 1..N")
