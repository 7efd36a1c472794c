"""Per-entity tracks over a video: stable ids, smoothed scores, honest "lost", re-acquisition.

One :class:`EntityTracker` follows one instruction entity. Every frame the grounder proposes at most one
detection for the entity (its best mask); the tracker decides whether it is the object it is already
following (association), a previously seen object coming back (re-acquisition), or a new one.

Association cues, each used when both sides have it (all available cues must agree):

- embedding: cosine similarity of the mean pixel embedding inside the mask >= ``assoc_min_similarity``;
- 3D: the detection's world position is within ``assoc_max_dist_m`` of the box of the track's shape memory
  (below), or of the track's smoothed position once half the track's largest extent is subtracted (the
  visible-surface centroid of a large object moves with the viewpoint);
- 2D box IoU >= ``assoc_min_iou``, only when neither of the above is available (and only against the
  active track: a box says nothing about a track lost frames ago).

Position: besides the smoothed visible-surface centroid used for association, every track keeps a bounded
voxel set of the world points of its detections (:class:`ShapeMemory`, ``shape_voxel_m`` voxels, at most
``shape_max_voxels``). The centre of the box of its voxels seen at least twice is the track's
*amodal* centre: a single view gives the centre of what is seen (closer to the object's centre than the
visible-surface centroid, which is biased toward the camera); as the object is seen from more sides it
converges to the centre of the whole object. This assumes the object does not move while tracked.

Scores: ``s <- smoothing * s + (1 - smoothing) * raw`` on every frame of a track, ``raw = 0`` on frames
where the track gets no detection; a new or re-acquired track starts at its raw score. A frame whose
detection is missing, does not associate, or is below ``score_threshold`` counts as a miss; after
``lost_after_frames`` consecutive misses the track is ``lost``. A confident (>= threshold) detection that
does not associate with the active track ends the active track (kept in memory, not lost) and either
re-acquires a remembered track it matches (same id) or starts a new id.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Iterator

import numpy as np

from find_ros.grounding.geometry import row_percentiles
from find_ros.grounding.tracker_config import TrackerConfig
from find_ros.voxel_keys import KEY_OFFSET, in_key_range, key_bounds, pack_keys, run_starts, unpack_keys

__all__ = ["Detection", "TrackState", "EntityTracker", "ShapeMemory", "box_iou"]

log = logging.getLogger(__name__)

_MEMORY = 16
"""Most ended/lost tracks remembered for re-acquisition (oldest forgotten first)."""


@dataclasses.dataclass
class Detection:
    """One frame's proposal for an entity."""

    score: float
    """Raw grounder score in [0, 1]."""
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) box of the mask, exclusive upper bounds."""
    embedding: np.ndarray | None = None
    """(D,) unit-norm mean pixel embedding inside the mask, when the grounder has pixel embeddings."""
    position: np.ndarray | None = None
    """(3,) world position (m) of the target, when a world pose was computed."""
    extent: np.ndarray | None = None
    """(3,) extent (m) of the target's visible points, when a pose was computed."""
    points: np.ndarray | None = None
    """(N, 3) world points (m) of the target this frame (for the track's :class:`ShapeMemory`)."""


@dataclasses.dataclass
class TrackState:
    """What the tracker reports for one frame."""

    track_id: int | None
    """Id of the track the entity is on; ``None`` before the first confident detection."""
    score: float
    """Smoothed score (the raw score when no track exists yet)."""
    lost: bool
    """True when the track has had ``lost_after_frames`` consecutive misses."""
    matched: bool
    """True when this frame's detection belongs to ``track_id``."""
    event: str
    """``"new"``, ``"reacquired"``, ``"update"``, ``"weak"`` (associated, below threshold), ``"miss"``,
    ``"lost"`` (the miss that made it lost) or ``"none"`` (no track, no confident detection)."""


@dataclasses.dataclass
class _Track:
    id: int
    score: float
    box: tuple[int, int, int, int]
    embedding: np.ndarray | None
    position: np.ndarray | None
    extent: np.ndarray | None
    misses: int = 0
    lost: bool = False
    hits: int = 1
    shape: "ShapeMemory | None" = None


class ShapeMemory:
    """A bounded set of world voxels seen on one object, with hit counts (detections that hit each voxel).

    ``add`` voxelises points at ``voxel_m`` and merges them (vectorised: packed int64 keys, a sorted merge).
    Keys are relative to the voxel of the first point added (21 bits per axis: +-10 km at 1 cm around the
    object); points beyond that range are dropped and counted in :attr:`dropped_points`. Beyond ``max_voxels``
    the voxels of the current view are kept first, then the most-hit ones (so a new side of a large object is
    never starved by the sides already seen). ``box`` is the full box of the voxels hit by at least two
    detections (thin parts such as chair legs count, a single frame's mask leak does not; a leak repeated
    in two frames does widen it: trimming percentiles was measured to lose thin parts and cost more, see
    ``find_ros.tools.grounding_eval``), or, before ten such voxels exist, the 1..99th percentile box of all of
    them; ``centre`` is its centre (both ``None`` when empty).
    """

    def __init__(self, voxel_m: float, max_voxels: int) -> None:
        if voxel_m <= 0 or max_voxels < 1:
            raise ValueError(f"ShapeMemory needs voxel_m > 0 and max_voxels >= 1, got {voxel_m}, {max_voxels}")
        self.voxel_m = float(voxel_m)
        self.max_voxels = int(max_voxels)
        self._origin: np.ndarray | None = None
        self._keys = np.empty(0, np.int64)
        self._hits = np.empty(0, np.int64)
        self._box: tuple[np.ndarray, np.ndarray] | None = None  # cache of box(), cleared by add()
        self.dropped_points = 0
        """Points farther than the key range from the first point (not stored)."""

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, points: np.ndarray) -> None:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if not np.isfinite(p).all():  # (the whole-array check first: the per-row one costs 10x more)
            p = p[np.isfinite(p).all(axis=1)]
        if not len(p):
            return
        vox = np.floor(p / self.voxel_m)
        if self._origin is None:
            self._origin = vox[0].copy()
        rel = vox - self._origin
        if not (rel.min() >= -KEY_OFFSET and rel.max() < KEY_OFFSET):  # (the per-row check only when needed)
            ok = in_key_range(rel)
            self.dropped_points += int((~ok).sum())
            rel = rel[ok]
            if not len(rel):
                return
        keys = _sorted_unique(pack_keys(rel))  # one hit per voxel per view
        uniq, hits = _merge_keys(self._keys, self._hits, keys)
        if len(uniq) > self.max_voxels:
            current = np.isin(uniq, keys, assume_unique=True)
            order = np.lexsort((-hits, ~current))  # current view first, then most hits
            keep = np.sort(order[: self.max_voxels])
            uniq, hits = uniq[keep], hits[keep]
        self._keys, self._hits = uniq, hits
        self._box = None

    def voxel_centres(self) -> np.ndarray:
        """(N, 3) centres (m) of the stored voxels."""
        k = self._keys
        if self._origin is None:
            return np.empty((0, 3))
        idx = unpack_keys(k) + self._origin
        return (idx + 0.5) * self.voxel_m

    def box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo, hi) world box whose centre is :meth:`centre` (see the class docstring), or None.

        Computed once per :meth:`add` (association and the published centre both read it every frame)."""
        if not len(self._keys):
            return None
        if self._box is None:
            seen = self._hits >= 2
            if int(np.count_nonzero(seen)) >= 10:  # confirmed voxels (thin parts such as legs count)
                # the box of their centres, from their index range (centres are monotonic in the index)
                self._box = tuple((i + self._origin + 0.5) * self.voxel_m for i in key_bounds(self._keys[seen]))
            else:  # one view so far: trim single-pixel outliers
                lo, hi = row_percentiles(self.voxel_centres().T, (1.0, 99.0))  # (np.percentile(.., axis=0))
                self._box = (lo, hi)
        return self._box

    def centre(self) -> np.ndarray | None:
        b = self.box()
        return None if b is None else (b[0] + b[1]) / 2.0


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` of a 1-D int array by sorting (numpy 2's hash-based unique is ~10x slower on 4k keys)."""
    s = np.sort(a)
    return s.compress(run_starts(s))


def _merge_keys(stored: np.ndarray, hits: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys, hits) of sorted unique ``stored`` with ``hits`` after one view of sorted unique ``keys``: a hit more
    where a key is stored, the others inserted in order with one hit (what ``np.insert`` at their
    ``searchsorted`` places gives; positions and ``take`` instead: ~2x faster on a few thousand keys)."""
    n = stored.size
    pos = np.searchsorted(stored, keys)
    found = pos < n
    if n:
        found &= stored.take(np.minimum(pos, n - 1)) == keys
    hits = hits.copy()
    hits[pos.compress(found)] += 1  # (keys are unique: so are their places)
    fresh = np.flatnonzero(~found)
    if not fresh.size:
        return stored, hits
    at = pos.take(fresh) + np.arange(fresh.size)  # the new keys' places in the merged array
    old = np.ones(n + fresh.size, bool)
    old[at] = False
    out_keys, out_hits = np.empty(n + fresh.size, stored.dtype), np.empty(n + fresh.size, hits.dtype)
    out_keys[at], out_hits[at] = keys.take(fresh), 1
    out_keys[old], out_hits[old] = stored, hits
    return out_keys, out_hits


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes with exclusive upper bounds; 0 when either is empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


class EntityTracker:
    """Tracks of one instruction entity (see the module docstring); thresholds come from ``config``.

    ``config`` is read on every update, so live changes (e.g. ``score_threshold``) apply at once.
    ``id_source`` yields track ids (share one between the trackers of a pipeline for unique ids).
    """

    def __init__(self, *, config: TrackerConfig, id_source: Iterator[int] | None = None) -> None:
        self.config = config
        self._ids = id_source if id_source is not None else itertools.count(1)
        self._active: _Track | None = None
        self._memory: list[_Track] = []
        self.tracks_started = 0
        """New track ids handed out."""
        self.reacquisitions = 0
        """Times a lost or ended track got its id back."""
        self.losses = 0
        """Times the active track became lost."""
        self.switches = 0
        """Times a confident non-matching detection ended the active (not lost) track."""

    # -------------------------------------------------------------------------------- queries
    @property
    def track_id(self) -> int | None:
        """Id of the active track (also while it is lost), or None."""
        return None if self._active is None else self._active.id

    @property
    def position(self) -> np.ndarray | None:
        """Smoothed world position (visible-surface centroid) of the active track, or None."""
        return None if self._active is None or self._active.position is None else self._active.position.copy()

    @property
    def centre(self) -> np.ndarray | None:
        """Amodal world centre of the active track (its :class:`ShapeMemory`, see the module docstring), or
        None (no world points yet, or ``shape_voxel_m`` is 0)."""
        t = self._active
        return None if t is None or t.shape is None else t.shape.centre()

    def reset(self) -> None:
        """Forget every track (counters too)."""
        self._active, self._memory = None, []
        self.tracks_started = self.reacquisitions = self.losses = self.switches = 0

    # -------------------------------------------------------------------------------- association
    def _affinity(self, t: _Track, d: Detection, *, allow_iou: bool) -> float | None:
        """Match quality (higher is better) when every available cue agrees, else None."""
        cfg = self.config
        cues, quality = 0, 0.0
        if t.embedding is not None and d.embedding is not None:
            sim = float(np.dot(t.embedding, d.embedding))
            if sim < cfg.assoc_min_similarity:
                return None
            cues, quality = cues + 1, quality + sim
        if d.position is not None and (t.position is not None or t.shape is not None):
            # 3D: the closer of (distance to the multi-view box) and (centroid distance minus half the extent)
            margins = []
            box = None if t.shape is None else t.shape.box()
            if box is not None:
                margins.append(float(np.linalg.norm(d.position - np.clip(d.position, box[0], box[1]))))
            if t.position is not None:
                slack = 0.5 * float(np.max(t.extent)) if t.extent is not None else 0.0
                margins.append(max(0.0, float(np.linalg.norm(t.position - d.position)) - slack))
            dist, limit = min(margins), cfg.assoc_max_dist_m
            if dist > limit:
                return None
            cues, quality = cues + 1, quality + 1.0 - dist / max(limit, 1e-9)
        if cues == 0:
            if not allow_iou:
                return None
            iou = box_iou(t.box, d.box)
            if iou < cfg.assoc_min_iou:
                return None
            return iou
        return quality / cues

    def _absorb(self, t: _Track, d: Detection) -> None:
        a = self.config.smoothing
        t.box = d.box
        if d.embedding is not None:
            t.embedding = d.embedding.copy() if t.embedding is None else _unit(a * t.embedding + (1 - a) * d.embedding)
        if d.position is not None:
            t.position = d.position.copy() if t.position is None else a * t.position + (1 - a) * d.position
        if d.extent is not None:
            t.extent = d.extent.copy() if t.extent is None else a * t.extent + (1 - a) * d.extent
        t.hits += 1
        self._add_points(t, d)

    def _add_points(self, t: _Track, d: Detection) -> None:
        cfg = self.config
        if d.points is None or not len(d.points) or cfg.shape_voxel_m <= 0:
            return
        if t.shape is None or t.shape.voxel_m != cfg.shape_voxel_m or t.shape.max_voxels != cfg.shape_max_voxels:
            t.shape = ShapeMemory(cfg.shape_voxel_m, cfg.shape_max_voxels)
        t.shape.add(d.points)

    def _remember(self, t: _Track) -> None:
        self._memory.append(t)
        if len(self._memory) > _MEMORY:
            self._memory.pop(0)

    def _start(self, d: Detection) -> TrackState:
        """A confident detection with no active track to go to: re-acquire a remembered track or start one."""
        best, best_q = None, -np.inf
        for t in self._memory:
            q = self._affinity(t, d, allow_iou=False)
            if q is not None and q > best_q:
                best, best_q = t, q
        if best is not None:
            self._memory.remove(best)
            best.lost, best.misses, best.score = False, 0, float(d.score)
            self._absorb(best, d)
            self._active = best
            self.reacquisitions += 1
            log.debug("track %d re-acquired (affinity %.2f)", best.id, best_q)
            return TrackState(best.id, best.score, False, True, "reacquired")
        t = _Track(id=next(self._ids), score=float(d.score), box=d.box,
                   embedding=None if d.embedding is None else d.embedding.copy(),
                   position=None if d.position is None else np.asarray(d.position, float).copy(),
                   extent=None if d.extent is None else np.asarray(d.extent, float).copy())
        self._add_points(t, d)
        self._active = t
        self.tracks_started += 1
        log.debug("track %d started", t.id)
        return TrackState(t.id, t.score, False, True, "new")

    def _miss(self, t: _Track, *, decay: bool = True) -> TrackState:
        if decay:  # no detection this frame: raw score 0 in the average
            t.score *= self.config.smoothing
        t.misses += 1
        if not t.lost and t.misses >= self.config.lost_after_frames:
            t.lost = True
            self.losses += 1
            log.debug("track %d lost after %d frames without a detection", t.id, t.misses)
            return TrackState(t.id, t.score, True, False, "lost")
        return TrackState(t.id, t.score, t.lost, False, "miss")

    # -------------------------------------------------------------------------------- update
    def update(self, detection: Detection | None) -> TrackState:
        """Feed one frame: ``detection`` is the entity's proposal, None when its mask is empty."""
        cfg = self.config
        d = detection
        strong = d is not None and d.score >= cfg.score_threshold
        t = self._active
        if t is not None and not t.lost:
            if d is not None and self._affinity(t, d, allow_iou=True) is not None:
                a = cfg.smoothing
                t.score = a * t.score + (1 - a) * float(d.score)
                if strong:
                    t.misses = 0
                    self._absorb(t, d)
                    return TrackState(t.id, t.score, False, True, "update")
                state = self._miss(t, decay=False)  # associated but weak: counts toward lost
                return dataclasses.replace(state, matched=not state.lost, event="lost" if state.lost else "weak")
            if strong:  # a confident detection of something else: end this track, go to the other
                self.switches += 1
                self._remember(t)
                self._active = None
                return self._start(d)
            return self._miss(t)
        # no active track, or it is lost
        if strong:
            if t is not None:
                self._remember(t)
                self._active = None
            return self._start(d)
        if t is not None:
            return self._miss(t)
        return TrackState(None, 0.0 if d is None else float(d.score), False, False, "none")
