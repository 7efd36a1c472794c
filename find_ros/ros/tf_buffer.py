"""A small time-buffered transform tree: the fallback of ``camera_pose_source: tf`` where tf2_ros is not importable.

``/tf`` and ``/tf_static`` transforms go in with :meth:`TfBuffer.add` (parent, child, stamp in ns, translation,
quaternion x y z w); :meth:`TfBuffer.lookup` gives ``T_target_source`` (``p_target = T p_source``) at a stamp,
composing the chain of edges through the frames' common ancestor (``map -> odom -> base_link -> camera_link ->
camera_color_optical_frame``; the target need not be the root), every timed edge evaluated at the same stamp, as tf2
does.

Lookup rule of one timed edge at stamp ``t``:

- ``t`` between two buffered samples: translation interpolated linearly, rotation by slerp (tf2's rule);
- ``t`` outside the buffered span: the nearest end sample when it lies within ``slop_ns``, else
  :class:`TfLookupError` (kind ``extrapolation``) naming the edge, the stamp and the span;
- a static edge (``/tf_static``) holds for every stamp.

Bounded memory: each timed edge keeps at most ``max_per_edge`` samples, and only those within ``cache_ns`` of its
newest one (tf2's ``cache_time``, 10 s by default); at most ``max_edges`` edges (more is :class:`TfInputError`). A
child re-parented drops its history (tf is a tree: one parent per child).

When the edges' newest samples are a little older than the stamp (the transform is published after the image), the
lookup waits up to ``wait_s`` for :meth:`add` to bring them, as :class:`find_ros.ros.pose_buffer.PoseBuffer` does.

Pure: numpy and :mod:`find_ros.geometry` only, no rclpy; thread-safe (one condition guards the tree).
"""
from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from find_ros.geometry import GeometryError, pose_to_matrix

__all__ = ["TfBuffer", "TfError", "TfInputError", "TfLookupError", "frame_name", "slerp",
           "TF_CACHE_S", "TF_MAX_PER_EDGE", "TF_MAX_EDGES", "TF_WAIT_S", "TF_ALIVE_S"]

TF_CACHE_S = 10.0
"""Seconds of history kept per timed edge, behind its newest sample (tf2's default cache time)."""
TF_MAX_PER_EDGE = 1000
"""Most samples kept per timed edge (100 Hz over the cache time)."""
TF_MAX_EDGES = 1000
"""Most edges (child frames) in one tree."""
TF_WAIT_S = 0.1
"""Longest wait of a lookup for transforms stamped like the image when they lag it."""
TF_ALIVE_S = 1.0
"""An edge whose newest sample is older than this (relative to the stamp asked) has stopped: no waiting."""

_MAX_DEPTH = 64  # a chain longer than this is a loop


class TfError(ValueError):
    """Base of the errors of :class:`TfBuffer`; the message names the frames and values at fault."""


class TfInputError(TfError):
    """A transform refused by :meth:`TfBuffer.add`: empty or equal frames, non-finite values, a full tree."""


class TfLookupError(TfError, LookupError):
    """No transform between two frames at a stamp; ``kind`` is ``unknown_frame``, ``not_connected``, ``loop`` or
    ``extrapolation``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def frame_name(name: str) -> str:
    """A tf frame id without its leading slash (tf2 ignores it)."""
    return str(name).lstrip("/")


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (x, y, z, w) at ``u`` in [0, 1], along the shorter arc."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    d = float(q0 @ q1)
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9995:  # nearly equal: linear, renormalised
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    th = math.acos(min(d, 1.0))
    s = math.sin(th)
    return (math.sin((1.0 - u) * th) * q0 + math.sin(u * th) * q1) / s


@dataclass
class _Edge:
    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)  # ascending ns
    t: list[np.ndarray] = field(default_factory=list)  # (3,) translations
    q: list[np.ndarray] = field(default_factory=list)  # (4,) unit quaternions x y z w


class TfBuffer:
    """Transforms by child frame, timed (bounded history) or static; see the module docstring."""

    def __init__(self, *, cache_s: float = TF_CACHE_S, max_per_edge: int = TF_MAX_PER_EDGE,
                 max_edges: int = TF_MAX_EDGES, wait_s: float = TF_WAIT_S, alive_s: float = TF_ALIVE_S) -> None:
        if cache_s <= 0 or max_per_edge < 1 or max_edges < 1:
            raise ValueError(f"cache_s={cache_s}, max_per_edge={max_per_edge} and max_edges={max_edges} must be "
                             "positive")
        self.cache_ns = int(cache_s * 1e9)
        self.max_per_edge = int(max_per_edge)
        self.max_edges = int(max_edges)
        self.wait_s = float(wait_s)
        self.alive_ns = int(alive_s * 1e9)
        self._edges: dict[str, _Edge] = {}
        self._cv = threading.Condition()

    # ------------------------------------------------------------------ input
    def add(self, parent: str, child: str, stamp_ns: int, translation, rotation_xyzw, *, static: bool = False) -> None:
        """Keep ``parent -> child`` (``p_parent = T p_child``) at ``stamp_ns`` (ignored for a static edge).

        :class:`TfInputError` for empty or equal frames, a non-finite translation, a bad quaternion or a full tree.
        """
        parent, child = frame_name(parent), frame_name(child)
        if not parent or not child or parent == child:
            raise TfInputError(f"a transform needs two different, non-empty frames; got parent {parent!r} and "
                               f"child {child!r}")
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(rotation_xyzw, dtype=np.float64).reshape(-1)
        n = float(np.linalg.norm(q)) if q.shape == (4,) else 0.0
        if t.shape != (3,) or not np.isfinite(t).all() or not math.isfinite(n) or n < 1e-6:
            raise TfInputError(f"transform {parent} -> {child} is unusable: translation {t.tolist()}, "
                               f"quaternion {q.tolist()}")
        q = q / n
        stamp = int(stamp_ns)
        with self._cv:
            e = self._edges.get(child)
            if e is None or e.parent != parent or e.static != static:
                if e is None and len(self._edges) >= self.max_edges:
                    raise TfInputError(f"transform {parent} -> {child} refused: the tree holds max_edges="
                                       f"{self.max_edges} frames already")
                e = self._edges[child] = _Edge(parent=parent, static=static)
            if static:
                e.stamps, e.t, e.q = [0], [t], [q]
            else:
                i = bisect.bisect_left(e.stamps, stamp)
                if i < len(e.stamps) and e.stamps[i] == stamp:  # same stamp again: the newer message wins
                    e.t[i], e.q[i] = t, q
                else:
                    e.stamps.insert(i, stamp)
                    e.t.insert(i, t)
                    e.q.insert(i, q)
                # bounded: the newest max_per_edge samples, none older than cache_ns behind the newest
                drop = max(len(e.stamps) - self.max_per_edge,
                           bisect.bisect_left(e.stamps, e.stamps[-1] - self.cache_ns))
                if drop > 0:
                    del e.stamps[:drop], e.t[:drop], e.q[:drop]
            self._cv.notify_all()

    def clear(self) -> None:
        with self._cv:
            self._edges.clear()

    def __len__(self) -> int:
        """Samples held, all edges together."""
        with self._cv:
            return sum(len(e.stamps) for e in self._edges.values())

    def frames(self) -> set[str]:
        """Every frame named by an edge (parents and children)."""
        with self._cv:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    # ------------------------------------------------------------------ lookup
    def lookup(self, target: str, source: str, stamp_ns: int, *, slop_ns: int = 0) -> np.ndarray:
        """``T_target_source`` (4x4) at ``stamp_ns``, waiting up to ``wait_s`` for lagging edges.

        :class:`TfLookupError` naming both frames when there is none (see the module docstring)."""
        deadline = time.monotonic() + self.wait_s
        with self._cv:
            while True:
                try:
                    return self._lookup(frame_name(target), frame_name(source), int(stamp_ns), int(slop_ns))
                except _Lagging as e:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise e.error from None
                    self._cv.wait(left)

    def _chain(self, frame: str, target: str, source: str) -> list[str]:
        """``frame`` and its ancestors up to the root (lock held)."""
        out = [frame]
        while frame in self._edges:
            frame = self._edges[frame].parent
            if frame in out or len(out) > _MAX_DEPTH:
                raise TfLookupError("loop", f"no transform {target} -> {source}: the tree has a loop through "
                                            f"{frame!r}")
            out.append(frame)
        return out

    def _lookup(self, target: str, source: str, stamp: int, slop: int) -> np.ndarray:
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for f in (target, source):
            if f not in known:
                raise TfLookupError("unknown_frame", f"no transform {target} -> {source}: frame {f!r} has never been "
                                                     f"received ({len(known)} frames known: "
                                                     f"{', '.join(sorted(known)[:8]) or 'none'})")
        up_s, up_t = self._chain(source, target, source), self._chain(target, target, source)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            raise TfLookupError("not_connected", f"no transform {target} -> {source}: the frames are in different "
                                                 f"trees (roots {up_t[-1]!r} and {up_s[-1]!r})")
        T_common_source = self._compose(up_s[:up_s.index(common)], stamp, slop, target, source)
        T_common_target = self._compose(up_t[:up_t.index(common)], stamp, slop, target, source)
        return np.linalg.inv(T_common_target) @ T_common_source

    def _compose(self, children: list[str], stamp: int, slop: int, target: str, source: str) -> np.ndarray:
        """``T_top_bottom`` of the edges of ``children`` (bottom first) at ``stamp`` (lock held)."""
        T = np.eye(4)
        for child in children:
            T = self._edge_at(child, stamp, slop, target, source) @ T
        return T

    def _edge_at(self, child: str, stamp: int, slop: int, target: str, source: str) -> np.ndarray:
        e = self._edges[child]
        if e.static:
            return _matrix(e.t[0], e.q[0])
        s = e.stamps
        i = bisect.bisect_left(s, stamp)
        if i < len(s) and s[i] == stamp:
            return _matrix(e.t[i], e.q[i])
        if 0 < i < len(s):  # between two samples: lerp + slerp
            u = (stamp - s[i - 1]) / (s[i] - s[i - 1])
            return _matrix(e.t[i - 1] + u * (e.t[i] - e.t[i - 1]), slerp(e.q[i - 1], e.q[i], u))
        j = 0 if i == 0 else len(s) - 1
        if abs(s[j] - stamp) <= slop:
            return _matrix(e.t[j], e.q[j])
        way = "past" if i == 0 else "future"
        err = TfLookupError("extrapolation", (
            f"no transform {target} -> {source} at t={stamp * 1e-9:.3f}: edge {e.parent} -> {child} has "
            f"{len(s)} samples over [{s[0] * 1e-9:.3f}, {s[-1] * 1e-9:.3f}], {abs(s[j] - stamp) * 1e-9:.3f} s "
            f"into the {way} (> slop {slop * 1e-9:.3f} s)"))
        if way == "future" and stamp - s[-1] < self.alive_ns:
            raise _Lagging(err)
        raise err


class _Lagging(Exception):
    """An edge alive but not yet stamped like the lookup: worth waiting for (internal to :meth:`TfBuffer.lookup`)."""

    def __init__(self, error: TfLookupError) -> None:
        super().__init__(str(error))
        self.error = error


def _matrix(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    try:
        return pose_to_matrix(t, q)
    except GeometryError as e:  # pragma: no cover - add() checked both
        raise TfLookupError("invalid", str(e)) from None
