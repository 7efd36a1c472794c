"""The training configuration (``TrainConfig``, saved next to every checkpoint) and its error."""
from __future__ import annotations

import dataclasses

from find_ros.model.data import DataConfig

__all__ = ["TrainConfig", "TrainError", "TRAIN_TASKS"]

TRAIN_TASKS = ("segment", "ground", "interleaved", "retrieve")


class TrainError(ValueError):
    """Bad training configuration or checkpoint; the message names the offending value."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (saved next to every checkpoint)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """How sim samples are rendered (resolution = model input)."""
    data_dir: str = "~/.cache/find_ros/sim_find"
    """Shard cache folder (``<data_dir>/<split>/shard_*.npz``); built on first use."""
    n_train: int = 4096
    """Training samples (rendered views) in the cache."""
    model: dict = dataclasses.field(default_factory=dict)
    """Model spec: ``{}`` / ``{"kind": "tiny", ...build_tiny kwargs}`` or ``{"kind": "config", "config": FindConfig dict}``
    or ``{"kind": "pretrained", "path": DIR}``."""
    steps: int = 3000
    """Optimiser steps."""
    batch_size: int = 16
    """Samples per step (one task per step)."""
    lr: float = 4e-4
    """Peak AdamW learning rate (linear warm-up then cosine decay to 5%)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    warmup: int = 100
    """Warm-up steps."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 = off)."""
    task_weights: dict = dataclasses.field(
        default_factory=lambda: {"segment": 1.0, "ground": 2.0, "interleaved": 2.0, "retrieve": 1.0}
    )
    """Relative frequency of each task's batches."""
    loss_weights: dict = dataclasses.field(default_factory=dict)
    """Overrides of ``find_ros.model.losses.LossWeights`` fields (empty = the paper's defaults there)."""
    max_entities: int = 4
    """Most referring phrases per image in a ``ground`` batch."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    eval_every: int = 250
    """Steps between validations on the fixed val set (``val/*`` keys in metrics.jsonl + learning_curve.png);
    0 = never. A run also validates at its last step."""
    val_samples: int = 64
    """Size of the fixed validation set (the first samples of the ``val`` split, rendered once into
    ``<data_dir>/val``)."""
    feature_cache: str = ""
    """Folder of a frozen-encoder feature cache (``find_ros.model.feature_cache``): the vision encoder's maps of
    every training view and reference crop are computed once there and training runs only the pixel decoder,
    interface and heads. Needs frozen encoders (model spec ``"freeze_encoders": true``); "" = off."""
    max_seconds: float = 0.0
    """Stop (checkpointed, final model written) once this many seconds of training steps have run; 0 = no limit.
    Validation time is not counted. For equal-wall-time comparisons; the lr schedule still follows ``steps``."""
    max_cpu_seconds: float = 0.0
    """The same cap on the process CPU time of the training steps (``time.process_time``): equal-compute
    comparisons that other jobs on a shared machine do not skew; 0 = no limit."""
    log_every: int = 10
    """Steps between metrics lines."""
    num_threads: int = 1
    """``torch.set_num_threads`` (CPU)."""
    seed: int = 0
    """Seed of model init, batch order and task order."""
    device: str = "cpu"
    """Torch device string."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = self.data.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        if "data" in d:
            d["data"] = DataConfig.from_dict(d["data"])
        cfg = cls(**d)
        bad = sorted(set(cfg.task_weights) - set(TRAIN_TASKS))
        if bad:
            raise TrainError(f"unknown tasks in task_weights: {bad} (tasks: {TRAIN_TASKS})")
        if cfg.steps < 0 or cfg.batch_size < 1:
            raise TrainError(f"steps must be >= 0 and batch_size >= 1, got {cfg.steps}, {cfg.batch_size}")
        if cfg.eval_every < 0 or cfg.val_samples < 1 or cfg.max_seconds < 0 or cfg.max_cpu_seconds < 0:
            raise TrainError(f"eval_every and max_seconds must be >= 0 and val_samples >= 1, got "
                             f"{cfg.eval_every}, {cfg.max_seconds}, {cfg.val_samples}")
        return cfg
