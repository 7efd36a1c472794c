"""What the tracker reads (:class:`TrackerConfig`): score smoothing, association thresholds, the shape memory.

:class:`~find_ros.grounding.pipeline.PipelineConfig` extends it with the pose geometry's settings. No ROS here.
"""
from __future__ import annotations

import dataclasses

from find_ros.config_fields import setting, validate_settings

__all__ = ["ConfigError", "TrackerConfig"]


class ConfigError(ValueError):
    """A :class:`TrackerConfig` / :class:`~find_ros.grounding.pipeline.PipelineConfig` value out of range; the
    message names the field and value."""


@dataclasses.dataclass
class TrackerConfig:
    """What :class:`EntityTracker` reads: score smoothing, association thresholds and the shape memory. Mutable and
    read on every update, so live changes (``score_threshold``) apply at once. Each default, range and description
    once (:func:`find_ros.config_fields.setting`)."""

    score_threshold: float = setting(
        0.5, "Minimum (smoothed) score for an entity to count as found and be published as a target; detections "
        "below it count as misses.", range=(0.0, 1.0))
    smoothing: float = setting(
        0.6, "Exponential smoothing weight of the past: s <- smoothing * s + (1 - smoothing) * raw; also the "
        "weight of the past in the tracks' embedding / position / extent averages. 0 = no smoothing.",
        range=(0.0, 1.0), check=lambda v: v < 1.0, want="in [0, 1)")
    lost_after_frames: int = setting(
        15, "Consecutive frames without an associated detection above threshold before a track is lost.",
        range=(1, None))
    assoc_max_dist_m: float = setting(
        0.3, "Largest world distance (m) between a track and a detection of it (plus half the track's largest "
        "extent, for big objects whose visible centroid moves with the viewpoint).",
        check=lambda v: v > 0, want="> 0")
    assoc_min_similarity: float = setting(
        0.5, "Smallest cosine similarity between a track's and a detection's mean pixel embedding.",
        range=(-1.0, 1.0))
    assoc_min_iou: float = setting(
        0.1, "Smallest 2D box IoU for association when neither embeddings nor world positions are available.",
        range=(0.0, 1.0))
    shape_voxel_m: float = setting(
        0.01, "Voxel (m) of each track's multi-view shape memory; the published target position is its robust "
        "box centre (converges to the object centre as more sides are seen; assumes a static target). "
        "0 = the frame's visible-surface centroid; else at least 0.001.",
        range=(0.0, 1.0), check=lambda v: v == 0 or v >= 0.001, want="0 (off) or in [0.001, 1]")
    shape_max_voxels: int = setting(
        20000, "Most voxels a track's shape memory keeps (the least-seen are dropped): 16 bytes each.",
        range=(1, None))

    def __post_init__(self) -> None:
        validate_settings(self, ConfigError)
