"""Train FIND on the sim FIND-Bench data: mixed task batches, the paper's linear loss combination.

``find-ros train --config C --out DIR [--resume] [--seed S] [--steps N] [--device cpu|cuda]``

Determinism: the batch and task of step ``t`` depend only on (seed, t), dropout is off, so a run
resumed from a checkpoint reproduces the parameters of an uninterrupted run. ``OUT/checkpoint/``
holds the latest checkpoint (model via ``save_pretrained`` + ``trainer.pt``: optimiser, step, RNG);
``OUT/model/`` the final model; ``OUT/metrics.jsonl`` one JSON line per logged step, with the fixed
validation set's grounding / interleaved mIoU (``val/*`` keys) every ``eval_every`` steps, drawn into
``OUT/learning_curve.png`` after every validation.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from find_ros.model.data import DataConfig, ShardDataset, SimSample, build_shards, vocabulary

__all__ = ["TrainConfig", "TrainError", "Trainer", "collate", "cli", "TRAIN_TASKS", "validate"]

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- batches


def _resize_masks(masks: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, H, W) bool -> (N, h, w) float32 area fractions (integer downsampling factor)."""
    n, H, W = masks.shape
    if (H, W) == (h, w):
        return masks.astype(np.float32)
    if H % h or W % w:
        raise TrainError(f"mask size {H}x{W} is not a multiple of the target {h}x{w}")
    return masks.reshape(n, h, H // h, w, W // w).mean(axis=(2, 4), dtype=np.float32)


def collate(samples: list[SimSample], *, task: str, mask_hw: tuple[int, int], max_entities: int,
            rng: np.random.Generator) -> dict:
    """Numpy batch for one task.

    Returns ``images`` (B,3,H,W) float32 in [0,1], ``texts`` per sample (entity phrases / instruction
    text / caption), ``instructions`` (Instruction per sample, for ground/interleaved), ``entity_masks``
    (B,E,h,w), ``entity_valid`` (B,E), ``object_masks`` (B,M,h,w), ``object_valid`` (B,M),
    ``object_names`` (per sample, per object: category), ``captions`` (B,).
    """
    from find_ros.instruction import parse_instruction

    h, w = mask_hw
    B = len(samples)
    images = np.stack([s.image for s in samples]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    M = max(len(s.objects) for s in samples)
    object_masks = np.zeros((B, M, h, w), np.float32)
    object_valid = np.zeros((B, M), bool)
    names = []
    for b, s in enumerate(samples):
        ids = np.array([o.id for o in s.objects])
        object_masks[b, : len(ids)] = _resize_masks(s.instance[None] == ids[:, None, None], h, w)
        object_valid[b, : len(ids)] = True
        names.append([o.category for o in s.objects])
    out = {"task": task, "images": images, "object_masks": object_masks, "object_valid": object_valid,
           "object_names": names, "captions": [s.caption for s in samples], "instructions": None}
    if task in ("ground", "interleaved"):
        instrs, ent_ids = [], []
        for s in samples:
            if task == "ground":
                k = min(max_entities, len(s.referring))
                pick = sorted(rng.choice(len(s.referring), size=k, replace=False))
                refs = [s.referring[i] for i in pick]
                instrs.append(parse_instruction(", ".join(r.phrase for r in refs)))
                ent_ids.append([r.object_id for r in refs])
            else:
                instrs.append(s.instruction(mode="interleaved"))
                ent_ids.append(list(s.interleaved.object_ids))
        E = max(len(e) for e in ent_ids)
        em = np.zeros((B, E, h, w), np.float32)
        ev = np.zeros((B, E), bool)
        for b, (s, ids) in enumerate(zip(samples, ent_ids)):
            if len(instrs[b].entities) != len(ids):
                raise TrainError(f"sample {s.index}: instruction {instrs[b].text!r} parsed into "
                                 f"{len(instrs[b].entities)} entities, expected {len(ids)}")
            arr = np.array(ids)
            em[b, : len(ids)] = _resize_masks(s.instance[None] == arr[:, None, None], h, w)
            ev[b, : len(ids)] = True
        out.update(instructions=instrs, entity_masks=em, entity_valid=ev)
    return out


# ----------------------------------------------------------------------------- model glue


def build_model(spec: dict, *, seed: int, image_size: tuple[int, int]):
    """Make the model named by ``TrainConfig.model`` (``"freeze_encoders": true/false`` in the spec overrides the
    model's setting: stage 2 of FIND's recipe trains the interface over frozen encoders)."""
    from find_ros.model.find import FindModel

    spec = dict(spec or {})
    kind = spec.pop("kind", "tiny")
    freeze = spec.pop("freeze_encoders", None)
    if kind == "tiny":
        model = FindModel.build_tiny(vocab=vocabulary(), image_size=tuple(image_size), seed=seed, **spec)
    elif kind == "config":
        from find_ros.model.config import FindConfig

        torch.manual_seed(seed)
        model = FindModel(config=FindConfig.from_dict(spec["config"]))
    elif kind == "pretrained":
        model = FindModel.from_pretrained(spec["path"])
    else:
        raise TrainError(f"unknown model kind {kind!r} (tiny, config, pretrained)")
    if freeze is not None:
        model.set_frozen_encoders(bool(freeze))
    return model


def _mask_hw(model, image_size: tuple[int, int]) -> tuple[int, int]:
    stride = int(model.config.interface.mask_stride)
    return image_size[0] // stride, image_size[1] // stride


def batch_losses(model, batch: dict, *, device: str, weights, cache=None) -> dict[str, torch.Tensor]:
    """Forward one collated batch through ``model`` for its task and return ``find_losses``. With a
    :class:`~find_ros.model.feature_cache.FeatureCache` (frozen encoders) the vision maps of the batch's
    ``indices`` and of their references come from it instead of the encoder."""
    from find_ros.model.losses import FindTargets, find_losses

    task = batch["task"]
    images = torch.from_numpy(batch["images"]).to(device)
    ref_maps = None
    if cache is not None:
        if not model.config.freeze_encoders:
            raise TrainError("a feature cache needs frozen encoders (model spec freeze_encoders: true)")
        feats = model.encode_image(images, maps=[m.to(device) for m in cache.maps(batch["indices"])])
        if task == "interleaved":
            rm = cache.reference_maps(batch["indices"])
            ref_maps = None if rm is None else [m.to(device) for m in rm]
    else:
        feats = model.encode_image(images)
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    captions = None
    if task == "segment":
        # class names of the visible objects as the prompts: the object queries classify against them
        prompts = None
        out = model(feats, prompts, task="segment")
        targets = FindTargets(entity_masks=None, entity_valid=None, object_masks=t(batch["object_masks"]),
                              object_valid=t(batch["object_valid"]), captions=None)
    elif task in ("ground", "interleaved"):
        prompts = model.encode_instructions(batch["instructions"], reference_maps=ref_maps)
        out = model(feats, prompts, task=task)
        targets = FindTargets(entity_masks=t(batch["entity_masks"]), entity_valid=t(batch["entity_valid"]),
                              object_masks=t(batch["object_masks"]), object_valid=t(batch["object_valid"]),
                              captions=None)
    elif task == "retrieve":
        captions = model.encode_text(batch["captions"])
        out = model(feats, None, task="retrieve")
        targets = FindTargets(entity_masks=None, entity_valid=None, object_masks=t(batch["object_masks"]),
                              object_valid=t(batch["object_valid"]), captions=captions)
    else:
        raise TrainError(f"unknown training task {task!r}")
    return find_losses(out, targets, weights=weights)


@torch.no_grad()
def validate(model, samples: list[SimSample], *, device: str = "cpu", batch_size: int = 16) -> dict[str, float]:
    """Grounding mIoU (every referring phrase of each image, task ``ground``) and interleaved mIoU (the sample's
    interleaved instruction) on ``samples``, with masks upsampled to the image and thresholded at 0, as
    ``find-ros eval`` scores them. Keys ``val/grounding_miou``, ``val/interleaved_miou``."""
    from find_ros.instruction import parse_instruction

    was = model.training
    model.eval()
    ious: dict[str, list[float]] = {"grounding": [], "interleaved": []}
    try:
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            H, W = chunk[0].image.shape[:2]
            x = torch.from_numpy(np.stack([s.image for s in chunk]).transpose(0, 3, 1, 2).copy()).float().div(255)
            feats = model.encode_image(x.to(device))
            for name, task, instrs, ids in (
                ("grounding", "ground", [parse_instruction(", ".join(r.phrase for r in s.referring)) for s in chunk],
                 [[r.object_id for r in s.referring] for s in chunk]),
                ("interleaved", "interleaved", [s.instruction(mode="interleaved") for s in chunk],
                 [list(s.interleaved.object_ids) for s in chunk]),
            ):
                out = model(feats, model.encode_instructions(instrs), task=task)
                up = torch.nn.functional.interpolate(out.entity_masks.float(), size=(H, W), mode="bilinear",
                                                     align_corners=False) > 0
                for b, (s, obj) in enumerate(zip(chunk, ids)):
                    for e, oid in enumerate(obj[: up.shape[1]]):
                        pred = up[b, e].cpu().numpy()
                        gt = s.instance == oid
                        u = np.logical_or(pred, gt).sum()
                        ious[name].append(float(np.logical_and(pred, gt).sum() / u) if u else 1.0)
    finally:
        model.train(was)
    return {f"val/{k}_miou": round(float(np.mean(v)), 5) if v else float("nan") for k, v in ious.items()}


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """One training run in ``out_dir``; :meth:`run` trains to ``config.steps`` (resuming when asked)."""

    def __init__(self, *, config: TrainConfig, out_dir: str | Path, dataset=None, model=None,
                 val_dataset=None) -> None:
        """``dataset`` / ``val_dataset`` (sequences of SimSample) replace the shard caches (tests); without a
        ``val_dataset`` but with a ``dataset`` given, validation is skipped."""
        self.config = config
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(max(1, int(config.num_threads)))
        data_dir = Path(config.data_dir).expanduser()
        if dataset is None:
            d = build_shards(split="train", n_samples=config.n_train, out_dir=data_dir, config=config.data)
            dataset = ShardDataset(directory=d, limit=config.n_train)
            if val_dataset is None and config.eval_every > 0:
                vd = build_shards(split="val", n_samples=config.val_samples, out_dir=data_dir, config=config.data)
                val_dataset = ShardDataset(directory=vd, limit=config.val_samples)
        self.dataset = dataset
        self.val_samples = None if val_dataset is None else [val_dataset[i] for i in
                                                             range(min(len(val_dataset), config.val_samples))]
        image_size = (config.data.height, config.data.width)
        self.model = model if model is not None else build_model(config.model, seed=config.seed, image_size=image_size)
        self.model.to(config.device)
        self.mask_hw = _mask_hw(self.model, image_size)
        self.cache = None
        if config.feature_cache:
            from find_ros.model.feature_cache import FeatureCache, build_feature_cache

            if not self.model.config.freeze_encoders:
                raise TrainError("feature_cache needs frozen encoders: add \"freeze_encoders\": true to the model "
                                 "spec")
            d = build_feature_cache(self.model, self.dataset, Path(config.feature_cache).expanduser())
            self.cache = FeatureCache(d, model=self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        from find_ros.model.losses import LossWeights

        self.loss_weights = LossWeights(**config.loss_weights)
        self.step = 0
        tasks = [t for t in TRAIN_TASKS if config.task_weights.get(t, 0) > 0]
        if not tasks:
            raise TrainError(f"task_weights {config.task_weights} select no task")
        p = np.array([config.task_weights[t] for t in tasks], float)
        self._tasks, self._task_p = tasks, p / p.sum()

    # -- schedule
    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup:
            return c.lr * (step + 1) / max(1, c.warmup)
        frac = (step - c.warmup) / max(1, c.steps - c.warmup)
        return c.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def batch_for(self, step: int) -> dict:
        """The batch of ``step``: depends only on (seed, step)."""
        c = self.config
        rng = np.random.default_rng([c.seed, step, 11])
        task = self._tasks[int(rng.choice(len(self._tasks), p=self._task_p))]
        idx = rng.choice(len(self.dataset), size=min(c.batch_size, len(self.dataset)), replace=False)
        samples = [self.dataset[int(i)] for i in idx]
        batch = collate(samples, task=task, mask_hw=self.mask_hw, max_entities=c.max_entities, rng=rng)
        batch["indices"] = [int(i) for i in idx]
        return batch

    # -- checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoint"

    def save_checkpoint(self) -> None:
        tmp = self.out / "checkpoint.tmp"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        self.model.save_pretrained(tmp)
        torch.save({"step": self.step, "optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state(),
                    "config": self.config.to_dict()}, tmp / "trainer.pt")
        import shutil

        if self.ckpt_dir.exists():
            shutil.rmtree(self.ckpt_dir)
        tmp.rename(self.ckpt_dir)

    def load_checkpoint(self) -> None:
        from find_ros.model.find import FindModel

        if not (self.ckpt_dir / "trainer.pt").is_file():
            raise TrainError(f"no checkpoint to resume in {self.ckpt_dir}")
        state = torch.load(self.ckpt_dir / "trainer.pt", map_location="cpu", weights_only=False)
        loaded = FindModel.from_pretrained(self.ckpt_dir, device=self.config.device)
        self.model.load_state_dict(loaded.state_dict())
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", self.ckpt_dir, self.step)

    # -- loop
    def train_step(self) -> dict[str, float]:
        batch = self.batch_for(self.step)
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        losses = batch_losses(self.model, batch, device=self.config.device, weights=self.loss_weights,
                              cache=self.cache)
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.opt.step()
        self.step += 1
        return {"task": batch["task"], **{k: float(v.detach()) for k, v in losses.items()}}

    def validate(self) -> dict[str, float]:
        """``val/*`` metrics of the current model on the fixed validation set ({} without one)."""
        if not self.val_samples:
            return {}
        return validate(self.model, self.val_samples, device=self.config.device)

    def run(self, *, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> Path:
        """Train to ``config.steps``; ``stop_at`` ends early (checkpointed) without changing the lr schedule;
        so does ``config.max_seconds`` (then the final model is written too)."""
        from find_ros.model.curves import CURVE_FILE, plot_learning_curve, read_metrics

        c = self.config
        end = c.steps if stop_at is None else min(c.steps, int(stop_at))
        if resume:
            self.load_checkpoint()
        (self.out / "train_config.json").write_text(json.dumps(c.to_dict(), indent=1))
        metrics_path = self.out / "metrics.jsonl"
        log_f = metrics_path.open("a")
        train_s = cpu_s = 0.0
        start = self.step
        acc: dict[str, list[float]] = {}
        timed_out = False
        if self.step == 0 and self.val_samples and c.eval_every > 0 and end > 0:  # the curve's origin
            tv = time.perf_counter()
            rec = {"step": 0, **self.validate()}
            rec["val_s"] = round(time.perf_counter() - tv, 1)
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()
        try:
            while self.step < end and not timed_out:
                t0, c0 = time.perf_counter(), time.process_time()
                m = self.train_step()
                train_s += time.perf_counter() - t0
                cpu_s += time.process_time() - c0
                timed_out = (c.max_seconds > 0 and train_s >= c.max_seconds) or \
                    (c.max_cpu_seconds > 0 and cpu_s >= c.max_cpu_seconds)
                for k, v in m.items():
                    if k != "task":
                        acc.setdefault(f"{m['task']}/{k}", []).append(v)
                last = self.step == end or timed_out
                do_log = self.step % c.log_every == 0 or self.step == c.steps or last
                do_val = bool(self.val_samples) and ((c.eval_every > 0 and self.step % c.eval_every == 0) or last)
                if do_log or do_val:
                    rate = (self.step - start) / max(train_s, 1e-9)
                    rec = {"step": self.step, "lr": self.lr_at(self.step - 1), "elapsed_s": round(train_s, 1),
                           "cpu_s": round(cpu_s, 1),
                           **{k: round(float(np.mean(v)), 5) for k, v in sorted(acc.items())}}
                    if do_val:
                        tv = time.perf_counter()
                        rec.update(self.validate())
                        rec["val_s"] = round(time.perf_counter() - tv, 1)
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
                    acc.clear()
                    if do_val:
                        plot_learning_curve(read_metrics(metrics_path), self.out / CURVE_FILE)
                    if progress:
                        eta = (c.steps - self.step) / max(rate, 1e-9)
                        bar = "#" * int(30 * self.step / max(1, c.steps))
                        tot = [v for k, v in rec.items() if k.endswith("/total")]
                        val = " ".join(f"{k[4:]} {v:.3f}" for k, v in rec.items() if k.startswith("val/"))
                        print(f"\r[{bar:<30}] {self.step}/{c.steps} {rate:.2f} it/s eta {eta / 60:.1f} min "
                              f"loss {np.mean(tot) if tot else float('nan'):.3f} {val}", end="", file=sys.stderr,
                              flush=True)
                if self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            log_f.close()
            if progress:
                print("", file=sys.stderr)
        self.save_checkpoint()
        if self.step < c.steps and not timed_out:  # stopped early: the checkpoint is the result
            return self.ckpt_dir
        if timed_out:
            log.info("time cap reached at step %d of %d (%.0f s wall, %.0f s CPU)", self.step, c.steps, train_s, cpu_s)
        final = self.out / "model"
        self.model.save_pretrained(final)
        (final / "train_config.json").write_text(json.dumps(c.to_dict(), indent=1))
        return final


def cli(argv: list[str] | None = None) -> int:
    """``find-ros train``."""
    ap = argparse.ArgumentParser(prog="find-ros train", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="training config JSON (TrainConfig fields)")
    ap.add_argument("--out", required=True, help="output folder (checkpoint/, model/, metrics.jsonl)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    ap.add_argument("--seed", type=int, default=None, help="override the config seed")
    ap.add_argument("--steps", type=int, default=None, help="override the number of steps")
    ap.add_argument("--device", default=None, help="cpu | cuda | cuda:N (override)")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop (checkpointed) at this step without changing the lr schedule of --steps")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    d = json.loads(Path(a.config).read_text())
    if a.seed is not None:
        d["seed"] = a.seed
    if a.steps is not None:
        d["steps"] = a.steps
    if a.device is not None:
        d["device"] = a.device
    cfg = TrainConfig.from_dict(d)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device {cfg.device!r} requested but CUDA is not available")
    final = Trainer(config=cfg, out_dir=a.out).run(resume=a.resume, stop_at=a.stop_at)
    print(f"{'checkpoint' if a.stop_at is not None and a.stop_at < cfg.steps else 'model'} written to {final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
