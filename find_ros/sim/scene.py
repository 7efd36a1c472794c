"""Procedural rooms of coloured objects with ground truth (categories, colours, sizes, boxes).

World frame: z up, floor at z = 0, room centred on the origin in x and y. Units are metres.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import open3d as o3d

LOG = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = ("cube", "box", "sphere", "cylinder", "cone", "torus", "mug", "table", "chair", "lamp")
"""Object categories: six primitives and four simple compounds."""

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.10, 0.25, 0.85),
    "yellow": (0.90, 0.85, 0.10),
    "orange": (0.95, 0.50, 0.05),
    "purple": (0.50, 0.15, 0.70),
    "white": (0.92, 0.92, 0.92),
    "black": (0.08, 0.08, 0.08),
    "pink": (0.95, 0.50, 0.70),
    "cyan": (0.10, 0.80, 0.85),
    "brown": (0.50, 0.30, 0.12),
    "grey": (0.50, 0.50, 0.50),
}
"""Colour names -> linear albedo in [0, 1]."""

SIZES: tuple[str, ...] = ("small", "medium", "large")
"""Size names; each scales a category's medium dimensions (see ``SIZE_SCALE``)."""

SIZE_SCALE: dict[str, float] = {"small": 0.6, "medium": 1.0, "large": 1.5}
"""Linear scale applied to a category's medium dimensions."""

FURNITURE: tuple[str, ...] = ("table", "chair", "lamp")
"""Categories that stand only on the floor; the others may also stand on a table."""

ROOM_COLOURS: dict[str, tuple[float, float, float]] = {
    "floor": (0.62, 0.55, 0.45),
    "wall": (0.74, 0.76, 0.80),
    "ceiling": (0.90, 0.90, 0.88),
}
"""Albedo of the room surfaces (instance id 0)."""

Mesh = tuple[np.ndarray, np.ndarray]  # vertices (N,3) float32, triangles (M,3) uint32


@dataclass
class ObjectSpec:
    """One object of a scene with its ground truth."""

    id: int
    """Instance id, >= 1 (0 is the room)."""
    category: str
    """One of ``CATEGORIES``."""
    colour: str
    """One of ``COLOURS``."""
    size: str
    """One of ``SIZES``."""
    center: np.ndarray
    """(3,) world centre of the axis-aligned box."""
    box_min: np.ndarray
    """(3,) world AABB minimum corner."""
    box_max: np.ndarray
    """(3,) world AABB maximum corner."""
    rgb: np.ndarray
    """(3,) float albedo in [0, 1]."""
    yaw: float = 0.0
    """Rotation about the world z axis, radians."""
    on: int = 0
    """Id of the object this one stands on (0 = floor)."""

    def describe(self) -> str:
        """Noun phrase such as ``"small red cube"``."""
        return f"{self.size} {self.colour} {self.category}"

    def to_json(self) -> dict:
        """Plain-python dict (floats and lists) for JSON."""
        return {
            "id": int(self.id),
            "category": self.category,
            "colour": self.colour,
            "size": self.size,
            "center": [float(v) for v in self.center],
            "box_min": [float(v) for v in self.box_min],
            "box_max": [float(v) for v in self.box_max],
            "rgb": [float(v) for v in self.rgb],
            "description": self.describe(),
        }


# --------------------------------------------------------------------------- meshes (object frame: footprint
# centred on the origin, bottom at z = 0)

def _legacy(m: o3d.geometry.TriangleMesh, shift=(0.0, 0.0, 0.0)) -> Mesh:
    v = np.asarray(m.vertices, dtype=np.float64) + np.asarray(shift, dtype=np.float64)
    return v.astype(np.float32), np.asarray(m.triangles, dtype=np.uint32)


def _box(sx: float, sy: float, sz: float, at=(0.0, 0.0, 0.0)) -> Mesh:
    """Box of size (sx, sy, sz) whose bottom-face centre is ``at``."""
    m = o3d.geometry.TriangleMesh.create_box(sx, sy, sz)
    return _legacy(m, (at[0] - sx / 2, at[1] - sy / 2, at[2]))


def _cylinder(r: float, h: float, at=(0.0, 0.0, 0.0), res: int = 24) -> Mesh:
    m = o3d.geometry.TriangleMesh.create_cylinder(radius=r, height=h, resolution=res, split=1)
    return _legacy(m, (at[0], at[1], at[2] + h / 2))


def _merge(parts: Sequence[Mesh]) -> Mesh:
    vs, fs, n = [], [], 0
    for v, f in parts:
        vs.append(v)
        fs.append(f + n)
        n += len(v)
    return np.concatenate(vs), np.concatenate(fs).astype(np.uint32)


def _category_mesh(category: str, f: float) -> Mesh:
    """Mesh of ``category`` at linear scale ``f`` in the object frame."""
    if category == "cube":
        return _box(0.3 * f, 0.3 * f, 0.3 * f)
    if category == "box":
        return _box(0.45 * f, 0.3 * f, 0.22 * f)
    if category == "sphere":
        r = 0.16 * f
        return _legacy(o3d.geometry.TriangleMesh.create_sphere(radius=r, resolution=14), (0, 0, r))
    if category == "cylinder":
        return _cylinder(0.11 * f, 0.32 * f)
    if category == "cone":
        return _legacy(o3d.geometry.TriangleMesh.create_cone(radius=0.15 * f, height=0.34 * f, resolution=24))
    if category == "torus":
        r = 0.05 * f
        t = o3d.geometry.TriangleMesh.create_torus(torus_radius=0.13 * f, tube_radius=r, radial_resolution=24,
                                                   tubular_resolution=10)
        return _legacy(t, (0, 0, r))
    if category == "mug":
        r, h = 0.08 * f, 0.17 * f
        handle = o3d.geometry.TriangleMesh.create_torus(torus_radius=0.05 * f, tube_radius=0.014 * f,
                                                        radial_resolution=16, tubular_resolution=8)
        handle.rotate(o3d.geometry.get_rotation_matrix_from_xyz((np.pi / 2, 0.0, 0.0)), center=(0, 0, 0))
        return _merge([_cylinder(r, h), _legacy(handle, (r + 0.02 * f, 0.0, h / 2))])
    if category == "table":
        w, d, top, hgt, leg = 1.0 * f, 0.65 * f, 0.05, 0.5 + 0.2 * f, 0.05
        parts = [_box(w, d, top, (0, 0, hgt - top))]
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(_box(leg, leg, hgt - top, (sx * (w / 2 - leg), sy * (d / 2 - leg), 0)))
        return _merge(parts)
    if category == "chair":
        w, seat, th, leg = 0.45 * f, 0.3 + 0.15 * f, 0.05, 0.04
        parts = [_box(w, w, th, (0, 0, seat - th)), _box(w, th, 0.45 * f, (0, w / 2 - th / 2, seat))]
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(_box(leg, leg, seat - th, (sx * (w / 2 - leg), sy * (w / 2 - leg), 0)))
        return _merge(parts)
    if category == "lamp":
        pole = 0.7 + 0.4 * f
        shade = o3d.geometry.TriangleMesh.create_cone(radius=0.2 * f, height=0.28 * f, resolution=24)
        return _merge([_cylinder(0.13 * f, 0.03), _cylinder(0.015, pole, (0, 0, 0.03)),
                       _legacy(shade, (0, 0, 0.03 + pole - 0.12 * f))])
    raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def _room_meshes(w: float, d: float, h: float) -> dict[str, Mesh]:
    """Floor, four walls and a ceiling, each a single quad (two triangles)."""
    x, y = w / 2, d / 2

    def quad(a, b, c, e) -> Mesh:
        return (np.array([a, b, c, e], dtype=np.float32), np.array([[0, 1, 2], [0, 2, 3]], dtype=np.uint32))

    return {
        "floor": quad((-x, -y, 0), (x, -y, 0), (x, y, 0), (-x, y, 0)),
        "ceiling": quad((-x, -y, h), (-x, y, h), (x, y, h), (x, -y, h)),
        "wall_xn": quad((-x, -y, 0), (-x, y, 0), (-x, y, h), (-x, -y, h)),
        "wall_xp": quad((x, -y, 0), (x, -y, h), (x, y, h), (x, y, 0)),
        "wall_yn": quad((-x, -y, 0), (-x, -y, h), (x, -y, h), (x, -y, 0)),
        "wall_yp": quad((-x, y, 0), (x, y, 0), (x, y, h), (-x, y, h)),
    }


def _place(mesh: Mesh, yaw: float, xyz) -> Mesh:
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)
    v = mesh[0].astype(np.float64) @ R.T + np.asarray(xyz, dtype=np.float64)
    return v.astype(np.float32), mesh[1]


def _overlaps(lo: np.ndarray, hi: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]], gap: float) -> bool:
    for blo, bhi in boxes:
        if (np.all(lo[:2] < bhi[:2] + gap) and np.all(hi[:2] > blo[:2] - gap)
                and lo[2] < bhi[2] - 1e-6 and hi[2] > blo[2] + 1e-6):
            return True
    return False


def _check_names(kind: str, given: Iterable[str] | None, allowed: Sequence[str]) -> list[str]:
    if given is None:
        return list(allowed)
    given = list(given)
    bad = [g for g in given if g not in allowed]
    if bad or not given:
        raise ValueError(f"{kind} {bad or given!r} not allowed; expected a non-empty subset of {tuple(allowed)}")
    return given


@dataclass
class Scene:
    """A room with objects; geometry is kept privately for ``SimRenderer``."""

    seed: int
    """Seed it was generated from (same seed and arguments -> identical scene)."""
    objects: list[ObjectSpec]
    """Objects with ids 1..n."""
    room_size: tuple[float, float, float]
    """Room width (x), depth (y) and height (z), metres; the room spans [-w/2, w/2] x [-d/2, d/2] x [0, h]."""
    texture: bool = False
    """Checker texture on floor and walls (rendered by ``SimRenderer``)."""
    _room: dict[str, Mesh] = field(default_factory=dict, repr=False, compare=False)
    _meshes: dict[int, Mesh] = field(default_factory=dict, repr=False, compare=False)

    @property
    def room_min(self) -> np.ndarray:
        """(3,) world minimum corner of the room."""
        w, d, _ = self.room_size
        return np.array([-w / 2, -d / 2, 0.0])

    @property
    def room_max(self) -> np.ndarray:
        """(3,) world maximum corner of the room."""
        w, d, h = self.room_size
        return np.array([w / 2, d / 2, h])

    def object(self, object_id: int) -> ObjectSpec:
        """The object with instance id ``object_id``."""
        for o in self.objects:
            if o.id == object_id:
                return o
        raise KeyError(f"no object with id {object_id} (ids {[o.id for o in self.objects]})")

    @classmethod
    def generate(cls, seed: int, *, n_objects: tuple[int, int] = (3, 10), categories: Iterable[str] | None = None,
                 colours: Iterable[str] | None = None, sizes: Iterable[str] | None = None,
                 exclude: Callable[[str, str, str], bool] | None = None, texture: bool = False) -> "Scene":
        """Random room with ``n_objects`` (inclusive range) objects, deterministic by ``seed``.

        Objects stand on the floor, small ones sometimes on a table, without overlapping.
        ``exclude(category, colour, size) -> True`` forbids a combination.
        """
        lo, hi = (int(n_objects[0]), int(n_objects[1]))
        if not 0 <= lo <= hi:
            raise ValueError(f"n_objects must be (lo, hi) with 0 <= lo <= hi, got {n_objects!r}")
        cats = _check_names("categories", categories, CATEGORIES)
        cols = _check_names("colours", colours, tuple(COLOURS))
        szs = _check_names("sizes", sizes, SIZES)
        combos = [(c, k, s) for c in cats for k in cols for s in szs]
        if exclude is not None:
            combos = [t for t in combos if not exclude(*t)]
        if not combos and hi > 0:
            raise ValueError(f"every combination of categories {cats}, colours {cols}, sizes {szs} is excluded")
        rng = np.random.default_rng(seed)
        w, d = float(rng.uniform(5.0, 8.0)), float(rng.uniform(5.0, 8.0))
        n = int(rng.integers(lo, hi + 1))
        picks = [combos[i] for i in rng.integers(0, len(combos), size=n)] if n else []
        # furniture first so that small objects can go on a table
        picks.sort(key=lambda t: t[0] not in FURNITURE)
        return cls._build(seed, rng, picks, (w, d, 3.0), texture)

    @classmethod
    def with_objects(cls, seed: int, specs: Sequence[dict], *, room_size: tuple[float, float, float] = (6.0, 6.0, 3.0),
                     texture: bool = False) -> "Scene":
        """Scene with given objects: dicts with category, colour, size and optional ``xy`` (floor position) and
        ``yaw``; objects without ``xy`` are placed at random (deterministic by ``seed``)."""
        rng = np.random.default_rng(seed)
        for s in specs:
            _check_names("category", [s["category"]], CATEGORIES)
            _check_names("colour", [s["colour"]], tuple(COLOURS))
            _check_names("size", [s["size"]], SIZES)
        picks = [(s["category"], s["colour"], s["size"], s.get("xy"), s.get("yaw")) for s in specs]
        return cls._build(seed, rng, picks, tuple(float(v) for v in room_size), texture)

    @classmethod
    def _build(cls, seed, rng, picks, room_size, texture) -> "Scene":
        w, d, h = room_size
        margin = 0.25
        boxes: list[tuple[np.ndarray, np.ndarray]] = []
        tables: list[ObjectSpec] = []
        objects: list[ObjectSpec] = []
        meshes: dict[int, Mesh] = {}
        for pick in picks:
            cat, col, size = pick[:3]
            fixed_xy = pick[3] if len(pick) > 3 else None
            fixed_yaw = pick[4] if len(pick) > 4 else None
            local = _category_mesh(cat, SIZE_SCALE[size])
            placed = None
            for attempt in range(60):
                if fixed_yaw is not None:
                    yaw = float(fixed_yaw)
                elif cat == "table":  # axis-aligned so that its box is its top (objects stand on it)
                    yaw = float(rng.integers(4)) * np.pi / 2
                else:
                    yaw = float(rng.uniform(-np.pi, np.pi))
                z, on = 0.0, 0
                if fixed_xy is not None:
                    xy = np.asarray(fixed_xy, dtype=np.float64)
                elif tables and cat not in FURNITURE and rng.random() < 0.4:
                    t = tables[int(rng.integers(len(tables)))]
                    xy = rng.uniform(t.box_min[:2] + 0.1, t.box_max[:2] - 0.1)
                    z, on = float(t.box_max[2]), t.id
                else:
                    xy = rng.uniform((-w / 2 + margin, -d / 2 + margin), (w / 2 - margin, d / 2 - margin))
                mesh = _place(local, yaw, (xy[0], xy[1], z))
                blo, bhi = mesh[0].min(axis=0).astype(np.float64), mesh[0].max(axis=0).astype(np.float64)
                inside = (np.all(blo[:2] >= (-w / 2 + 0.05, -d / 2 + 0.05))
                          and np.all(bhi[:2] <= (w / 2 - 0.05, d / 2 - 0.05)) and bhi[2] < h)
                if on:
                    t = objects[on - 1]
                    inside = inside and np.all(blo[:2] >= t.box_min[:2]) and np.all(bhi[:2] <= t.box_max[:2])
                if inside and (fixed_xy is not None or not _overlaps(blo, bhi, boxes, gap=0.05)):
                    placed = (mesh, blo, bhi, yaw, on)
                    break
                if fixed_xy is not None:
                    raise ValueError(f"{size} {col} {cat} at xy={tuple(fixed_xy)} does not fit in room {room_size}")
            if placed is None:
                LOG.debug("seed %s: no room for a %s %s %s, dropped", seed, size, col, cat)
                continue
            mesh, blo, bhi, yaw, on = placed
            oid = len(objects) + 1
            spec = ObjectSpec(id=oid, category=cat, colour=col, size=size, center=(blo + bhi) / 2, box_min=blo,
                              box_max=bhi, rgb=np.asarray(COLOURS[col], dtype=np.float64), yaw=yaw, on=on)
            objects.append(spec)
            boxes.append((blo, bhi))
            meshes[oid] = mesh
            if cat == "table":
                tables.append(spec)
        if len(objects) < len(picks):
            LOG.info("seed %s: placed %d of %d objects", seed, len(objects), len(picks))
        return cls(seed=int(seed), objects=objects, room_size=(float(w), float(d), float(h)), texture=bool(texture),
                   _room=_room_meshes(w, d, h), _meshes=meshes)
