"""Video grounding: a :class:`~find_ros.grounder.Grounder` + tracks + 3D target poses, per frame.

:class:`VideoGrounder` embeds an instruction once (through the grounder), then for every RGB-D frame:
grounds it, measures each entity's mean pixel embedding inside its mask, computes the camera-frame and
(given the camera pose) world-frame target pose (:mod:`find_ros.grounding.geometry`), and feeds one
:class:`~find_ros.grounding.tracking.EntityTracker` per entity. An entity is *found* when its smoothed
score >= ``score_threshold``, its track is not lost and it has a non-empty mask this frame; only found
entities get label pixels and poses. No ROS here: the perception node wraps it.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any

import cv2
import numpy as np

from find_ros.config_fields import setting, validate_settings
from find_ros.grounder import FrameGrounding, Grounder, GrounderError, LazyPixelEmbeddings, mask_box
from find_ros.grounding.geometry import TargetPose, target_pose_from_mask, transform_pose
from find_ros.grounding.tracker_config import ConfigError, TrackerConfig
from find_ros.grounding.tracking import Detection, EntityTracker, TrackState
from find_ros.instruction import Instruction

__all__ = ["ConfigError", "FrameError", "PipelineConfig", "TrackerConfig", "TrackedEntity", "FrameResult",
           "VideoGrounder", "mean_embedding", "ENTITY_COLOURS"]

log = logging.getLogger(__name__)

ENTITY_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.95, 0.25, 0.2), (0.2, 0.6, 0.95), (0.3, 0.85, 0.35), (0.95, 0.8, 0.2), (0.75, 0.35, 0.9), (0.2, 0.85, 0.85))
"""RGB (0..1) of each entity by entity index (cycled): the overlay's tint, boxes and labels, and the RViz markers
(:data:`find_ros.ros.markers.MARKER_COLOURS`)."""
_PALETTE = tuple(tuple(int(c * 255 + 0.5) for c in rgb) for rgb in ENTITY_COLOURS)  # 8-bit RGB for the overlay


class FrameError(ValueError):
    """A frame the pipeline cannot use (shapes, dtypes); the message names the offending input."""


@dataclasses.dataclass
class PipelineConfig(TrackerConfig):
    """Video grounding settings: the tracker's (:class:`~find_ros.grounding.tracking.TrackerConfig`, whose fields
    it takes as its own, so ``PipelineConfig(score_threshold=..., erode_px=...)`` stays flat) plus the pose
    geometry's. Mutable: ``score_threshold`` may be changed live.

    Each field's default, range and description live once in its :func:`find_ros.config_fields.setting`; the
    perception node's parameters of the same names are derived from them (:mod:`find_ros.ros.params`)."""

    erode_px: int = setting(2, "Mask erosion (pixels) before back-projection, to drop depth-edge pixels.",
                            range=(0, 50))
    min_points: int = setting(30, "Fewest valid 3D points a mask needs for a target pose.", range=(1, 1_000_000))
    depth_edge_m: float = setting(
        0.05, "Pixels whose 3x3 neighbourhood spans more depth than this (m) are dropped before back-projection; "
        "0 disables the check.", range=(0.0, None))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range field (:func:`find_ros.config_fields.problem`)."""
        validate_settings(self, ConfigError)


@dataclasses.dataclass
class TrackedEntity:
    """One instruction entity in one frame, after tracking."""

    phrase: str
    """The entity phrase as written in the instruction."""
    entity_index: int
    """Index into ``Instruction.entities``."""
    score: float
    """Smoothed score of the entity's track (the raw score when it has no track yet)."""
    raw_score: float
    """The grounder's score for this frame."""
    mask: np.ndarray
    """(H, W) bool: the grounder's mask when it belongs to the track (or no track exists yet); empty when
    this frame's detection did not associate with the entity's track."""
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) box of ``mask``, exclusive upper bounds; zeros when empty."""
    track_id: int | None
    """Stable id of the entity's track; None before the first confident detection."""
    lost: bool
    """True when the track has gone ``lost_after_frames`` frames without a confident detection."""
    pose_cam: TargetPose | None
    """Target pose in the camera optical frame (found entities with enough valid depth only)."""
    pose_world: TargetPose | None
    """Target pose in the world frame (found entities, when the camera pose was given). Its position is the
    track's amodal centre (``shape_voxel_m`` > 0) and ``pose_cam``'s position is that centre in the camera
    frame; orientation and extent are this frame's."""
    found: bool = False
    """score >= score_threshold, not lost, non-empty mask."""


@dataclasses.dataclass
class FrameResult:
    """Everything :meth:`VideoGrounder.process` returns for one frame."""

    entities: list[TrackedEntity]
    """One per instruction entity, in instruction order."""
    label_mask: np.ndarray
    """(H, W) uint8: ``entity_index + 1`` on found entities' pixels, 0 elsewhere."""
    pixel_embeddings: np.ndarray | LazyPixelEmbeddings | None = None
    """(h, w, D) float32 unit-norm pixel embeddings from the grounder (None when it has none; ``np.asarray``
    computes lazy ones)."""

    def overlay(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 copy of ``rgb`` with found masks tinted, their boxes, and phrase/score/id labels;
        entities not found are listed in the top-left corner."""
        out = np.array(rgb, dtype=np.uint8, copy=True)
        if out.shape[:2] != self.label_mask.shape:
            raise FrameError(f"overlay: image is {out.shape[1]}x{out.shape[0]} but the result is "
                             f"{self.label_mask.shape[1]}x{self.label_mask.shape[0]}")
        H, W = out.shape[:2]
        fs = max(0.35, min(1.0, W / 900.0))
        th = 1 if W < 900 else 2
        if np.any(self.label_mask):
            lut = np.zeros((256, 3), np.float32)
            for e in self.entities:
                lut[e.entity_index + 1] = _PALETTE[e.entity_index % len(_PALETTE)]
            on = self.label_mask > 0
            tint = lut[self.label_mask[on]]
            out[on] = (0.55 * out[on] + 0.45 * tint).astype(np.uint8)
        y_text = int(18 * fs / 0.5)
        for e in self.entities:
            colour = _PALETTE[e.entity_index % len(_PALETTE)]
            tid = "-" if e.track_id is None else str(e.track_id)
            if e.found:
                x0, y0, x1, y1 = e.box
                cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, th)
                label = f"{e.phrase} {e.score:.2f} #{tid}"
                (tw, tht), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, th)
                ty = y0 - 4 if y0 - 4 - tht >= 0 else min(H - 2, y1 + tht + 4)
                cv2.rectangle(out, (x0, ty - tht - 3), (min(W - 1, x0 + tw + 2), ty + 3), (0, 0, 0), -1)
                cv2.putText(out, label, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, fs, colour, th, cv2.LINE_AA)
            else:
                state = "lost" if e.lost else "not found"
                label = f"{e.phrase}: {state} ({e.score:.2f})"
                cv2.putText(out, label, (4, y_text), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), th + 2, cv2.LINE_AA)
                cv2.putText(out, label, (4, y_text), cv2.FONT_HERSHEY_SIMPLEX, fs, colour, th, cv2.LINE_AA)
                y_text += int(20 * fs / 0.5)
        return out


def mean_embedding(pixel_embeddings: np.ndarray | LazyPixelEmbeddings, mask: np.ndarray, *,
                   box: tuple[int, int, int, int] | None = None) -> np.ndarray | None:
    """(D,) unit-norm mean of the (h, w, D) embeddings under a full-resolution (H, W) mask (area-weighted
    when the resolutions differ); None when the mask covers nothing. ``box``: the mask's
    :func:`~find_ros.grounder.mask_box` when the caller has it (not checked). Lazy embeddings are computed on the
    mask's cells only (whole cells) or whole."""
    h, w = pixel_embeddings.shape[:2]
    H, W = mask.shape
    if (H, W) == (h, w):
        wts, emb = mask.astype(np.float32), np.asarray(pixel_embeddings)
    elif H % h == 0 and W % w == 0:  # whole cells (FIND: 8x8 pixels): INTER_AREA's block means, on the mask's box
        sy, sx = H // h, W // w
        y0, y1, x0, x1 = _cells_of(mask_box(mask) if box is None else box, sy, sx)
        if y1 == y0:  # an empty mask
            return None
        # cell means = counts * float32(1 / (sy * sx)), bit for bit numpy's block sums (~4x faster)
        wts = cv2.resize(mask[y0 * sy:y1 * sy, x0 * sx:x1 * sx].astype(np.float32), (x1 - x0, y1 - y0),
                         interpolation=cv2.INTER_AREA)
        emb = (pixel_embeddings.window(y0, y1, x0, x1) if isinstance(pixel_embeddings, LazyPixelEmbeddings)
               else pixel_embeddings[y0:y1, x0:x1])
    else:
        wts = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        emb = np.asarray(pixel_embeddings)
    total = float(wts.sum())
    if total <= 0:
        return None
    e = np.dot(wts.reshape(1, -1), emb.reshape(-1, emb.shape[-1]))[0] / total  # (np.tensordot's own product)
    n = float(np.linalg.norm(e))
    return (e / n).astype(np.float32) if n > 1e-12 else None


def _cells_of(box: tuple[int, int, int, int], sy: int, sx: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the cells of ``sy`` x ``sx`` pixels that hold a mask's box (:func:`mask_box`; exclusive
    ends; all zero for an empty mask)."""
    x_lo, y_lo, x_hi, y_hi = box
    return y_lo // sy, -(-y_hi // sy), x_lo // sx, -(-x_hi // sx)


class VideoGrounder:
    """Ground an instruction through a video: one grounder call + tracking + poses per frame."""

    def __init__(self, grounder: Grounder, *, config: PipelineConfig | None = None) -> None:
        if not callable(getattr(grounder, "ground", None)) or not callable(getattr(grounder, "set_instruction", None)):
            raise TypeError(f"grounder must implement the Grounder protocol, got {type(grounder).__name__}")
        self.grounder = grounder
        self._config = config if config is not None else PipelineConfig()
        self._ids = itertools.count(1)
        self._trackers: list[EntityTracker] = []
        self._instruction: Instruction | None = None
        self.frames = 0
        """Frames processed under the current instruction."""
        self.last_timings: dict[str, float] = {}
        """Milliseconds of the last :meth:`process`: ``ground`` (the grounder's call) and ``pose_tracking`` (the
        rest), split into ``pose`` (masks -> camera and world target poses, mean embeddings) and ``tracking`` (track
        updates, shape memory, amodal centres, the label image)."""

    @property
    def config(self) -> PipelineConfig:
        """The live configuration (mutate fields, or assign a new one)."""
        return self._config

    @config.setter
    def config(self, value: PipelineConfig) -> None:
        value.validate()
        self._config = value
        for t in self._trackers:
            t.config = value

    @property
    def instruction(self) -> Instruction | None:
        """The instruction in force, or None."""
        return self._instruction

    @property
    def trackers(self) -> tuple[EntityTracker, ...]:
        """One tracker per entity of the current instruction (for counters: tracks, losses, re-acquisitions)."""
        return tuple(self._trackers)

    def prepare_instruction(self, instruction: Instruction) -> Any:
        """The grounder's embedding of ``instruction`` (``grounder.prepare_instruction``; None for a grounder
        without one), computed without touching the instruction in force or the tracks: a caller embeds here in
        one thread while another keeps processing frames, then passes it to :meth:`set_instruction`."""
        prepare = getattr(self.grounder, "prepare_instruction", None)
        return prepare(instruction) if callable(prepare) else None

    def set_instruction(self, instruction: Instruction, *, prepared: Any = None) -> None:
        """Embed ``instruction`` once (in the grounder; ``prepared``: :meth:`prepare_instruction`'s result, used
        instead) and start fresh tracks for its entities."""
        if prepared is None:
            self.grounder.set_instruction(instruction)
        else:
            self.grounder.set_instruction(instruction, prepared=prepared)
        self._instruction = instruction
        self._trackers = [EntityTracker(config=self._config, id_source=self._ids) for _ in instruction.entities]
        self.frames = 0

    def clear_instruction(self) -> None:
        """Forget the instruction and the tracks; :meth:`process` raises until a new one is set."""
        self.grounder.clear_instruction()
        self._instruction = None
        self._trackers = []

    def warm_up(self, *, width: int = 640, height: int = 480) -> float:
        """Run the per-entity path once (mask -> pose, world transform, mean embedding, a throwaway track with its
        shape memory, the overlay) on a synthetic ``width`` x ``height`` frame, so the first grounded frame costs
        what later ones do (first calls cost ~10 ms more); tracks, ids and the instruction are untouched.
        Returns the milliseconds it took."""
        t0 = time.perf_counter()
        cfg = self._config
        depth = np.full((height, width), 2.0, np.float32)
        mask = np.zeros((height, width), bool)
        mask[height // 4: height // 2, width // 4: width // 2] = True
        K = np.array([[width * 0.8, 0.0, width / 2.0], [0.0, width * 0.8, height / 2.0], [0.0, 0.0, 1.0]])
        pose = target_pose_from_mask(mask, depth, K, erode_px=int(cfg.erode_px), min_points=int(cfg.min_points),
                                     depth_edge_m=cfg.depth_edge_m)
        world = None if pose is None else transform_pose(pose, np.eye(4))
        emb = mean_embedding(np.ones((max(height // 8, 1), max(width // 8, 1), 8), np.float32), mask)
        tracker = EntityTracker(config=cfg, id_source=itertools.count(1))
        det = Detection(score=1.0, box=(width // 4, height // 4, width // 2, height // 2), embedding=emb,
                        position=None if world is None else world.position,
                        extent=None if pose is None else pose.extent, points=None if world is None else world.points)
        for _ in range(2):  # a new track, then an associated detection; the shape box of one view, then of two
            tracker.update(det)
            _ = tracker.centre
        entity = TrackedEntity(phrase="warm-up", entity_index=0, score=1.0, raw_score=1.0, mask=mask,
                               box=(width // 4, height // 4, width // 2, height // 2), track_id=1, lost=False,
                               pose_cam=pose, pose_world=world, found=True)
        FrameResult(entities=[entity], label_mask=mask.astype(np.uint8)).overlay(np.zeros((height, width, 3), np.uint8))
        return (time.perf_counter() - t0) * 1e3

    @staticmethod
    def _check(rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray | None) -> None:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise FrameError(f"rgb must be an (H, W, 3) uint8 array, got {getattr(rgb, 'shape', type(rgb))} "
                             f"{getattr(rgb, 'dtype', '')}")
        if not isinstance(depth_m, np.ndarray) or depth_m.dtype.kind != "f" or depth_m.shape != rgb.shape[:2]:
            raise FrameError(f"depth_m must be a float (H, W) array in metres matching rgb {rgb.shape[:2]}, got "
                             f"{getattr(depth_m, 'shape', type(depth_m))} {getattr(depth_m, 'dtype', '')}")
        if np.shape(K) != (3, 3):
            raise FrameError(f"K must be (3, 3), got {np.shape(K)}")
        if T_world_cam is not None and np.shape(T_world_cam) != (4, 4):
            raise FrameError(f"T_world_cam must be (4, 4) or None, got {np.shape(T_world_cam)}")

    def process(self, rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray,
                T_world_cam: np.ndarray | None = None) -> FrameResult:
        """Ground, track and localise the current instruction's entities in one RGB-D frame."""
        if self._instruction is None:
            raise GrounderError("VideoGrounder: no instruction set (call set_instruction first)")
        self._check(rgb, depth_m, K, T_world_cam)
        cfg = self._config
        t0 = time.perf_counter()
        fg: FrameGrounding = self.grounder.ground(rgb)
        t1 = time.perf_counter()
        if len(fg.entities) != len(self._trackers):
            raise GrounderError(f"grounder {getattr(self.grounder, 'name', '?')} returned {len(fg.entities)} "
                                f"entity results for an instruction with {len(self._trackers)} entities")
        H, W = rgb.shape[:2]
        emb = fg.pixel_embeddings
        label = np.zeros((H, W), np.uint8)
        out: list[TrackedEntity] = []
        pose_s = 0.0
        for r, tracker in zip(fg.entities, self._trackers):
            mask = np.asarray(r.mask, dtype=bool)
            if mask.shape != (H, W):
                raise GrounderError(f"grounder mask for {r.phrase!r} is {mask.shape}, frame is {(H, W)}")
            t_pose = time.perf_counter()
            det, pose_cam, pose_world = None, None, None
            mbox = mask_box(mask)  # once for the pose and the mean embedding
            if mbox[2]:  # (not empty)
                pose_cam = target_pose_from_mask(mask, depth_m, K, erode_px=int(cfg.erode_px),
                                                 min_points=int(cfg.min_points), depth_edge_m=cfg.depth_edge_m,
                                                 box=mbox)
                if pose_cam is not None and T_world_cam is not None:
                    pose_world = transform_pose(pose_cam, T_world_cam)
                det = Detection(score=float(r.score), box=tuple(int(v) for v in r.box),
                                embedding=None if emb is None else mean_embedding(emb, mask, box=mbox),
                                position=None if pose_world is None else pose_world.position,
                                extent=None if pose_cam is None else pose_cam.extent,
                                points=None if pose_world is None else pose_world.points)
            pose_s += time.perf_counter() - t_pose
            st: TrackState = tracker.update(det)
            own = st.matched or st.track_id is None
            if not own:
                mask = np.zeros((H, W), bool)
            found = bool(st.score >= cfg.score_threshold and not st.lost and own and mbox[2] > 0)
            if found:
                x0, y0, x1, y1 = mbox  # (the mask is empty outside its box: ~10x less to scan)
                label[y0:y1, x0:x1][mask[y0:y1, x0:x1]] = r.entity_index + 1
                centre = tracker.centre if pose_world is not None and st.matched else None
                if centre is not None:  # the track's amodal centre, in both frames
                    pose_world = dataclasses.replace(pose_world, position=centre)
                    T = np.asarray(T_world_cam, dtype=np.float64)
                    pose_cam = dataclasses.replace(pose_cam, position=T[:3, :3].T @ (centre - T[:3, 3]))
            out.append(TrackedEntity(
                phrase=r.phrase, entity_index=int(r.entity_index), score=float(st.score),
                raw_score=float(r.score), mask=mask, box=tuple(int(v) for v in r.box) if own else (0, 0, 0, 0),
                track_id=st.track_id, lost=st.lost, pose_cam=pose_cam if found else None,
                pose_world=pose_world if found else None, found=found))
        self.frames += 1
        rest = time.perf_counter() - t1
        self.last_timings = {"ground": (t1 - t0) * 1e3, "pose": pose_s * 1e3, "tracking": (rest - pose_s) * 1e3,
                             "pose_tracking": rest * 1e3}
        return FrameResult(entities=out, label_mask=label, pixel_embeddings=emb)
