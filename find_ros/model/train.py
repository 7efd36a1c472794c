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
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from find_ros.model.data import ShardDataset, build_shards
from find_ros.model.train_batches import _mask_hw, batch_losses, build_model, collate, validate  # noqa: F401
from find_ros.model.train_config import TRAIN_TASKS, TrainConfig, TrainError

__all__ = ["TrainConfig", "TrainError", "Trainer", "collate", "cli", "TRAIN_TASKS", "validate"]

log = logging.getLogger(__name__)


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

    def _write(self, log_f, rec: dict) -> None:
        log_f.write(json.dumps(rec) + "\n")
        log_f.flush()

    def _validated(self, rec: dict) -> dict:
        """``rec`` with the ``val/*`` metrics and the seconds they took (``val_s``)."""
        tv = time.perf_counter()
        rec.update(self.validate())
        rec["val_s"] = round(time.perf_counter() - tv, 1)
        return rec

    def _progress(self, rec: dict, rate: float) -> None:
        """One progress-bar line on stderr (overwritten by the next)."""
        c = self.config
        eta = (c.steps - self.step) / max(rate, 1e-9)
        bar = "#" * int(30 * self.step / max(1, c.steps))
        tot = [v for k, v in rec.items() if k.endswith("/total")]
        val = " ".join(f"{k[4:]} {v:.3f}" for k, v in rec.items() if k.startswith("val/"))
        print(f"\r[{bar:<30}] {self.step}/{c.steps} {rate:.2f} it/s eta {eta / 60:.1f} min "
              f"loss {np.mean(tot) if tot else float('nan'):.3f} {val}", end="", file=sys.stderr,
              flush=True)

    def _log_step(self, *, log_f, metrics_path: Path, acc: dict[str, list[float]], do_val: bool, rate: float,
                  train_s: float, cpu_s: float, progress: bool) -> None:
        """Write the metrics line of the current step (mean losses since the last line, ``val/*`` when
        ``do_val``), redraw the learning curve after a validation, print progress."""
        from find_ros.model.curves import CURVE_FILE, plot_learning_curve, read_metrics

        rec = {"step": self.step, "lr": self.lr_at(self.step - 1), "elapsed_s": round(train_s, 1),
               "cpu_s": round(cpu_s, 1), **{k: round(float(np.mean(v)), 5) for k, v in sorted(acc.items())}}
        if do_val:
            rec = self._validated(rec)
        self._write(log_f, rec)
        acc.clear()
        if do_val:
            plot_learning_curve(read_metrics(metrics_path), self.out / CURVE_FILE)
        if progress:
            self._progress(rec, rate)

    def _loop(self, *, end: int, log_f, metrics_path: Path, progress: bool) -> tuple[bool, float, float]:
        """Train steps up to ``end`` (or the time caps); returns (timed out, train seconds, CPU seconds)."""
        c = self.config
        train_s = cpu_s = 0.0
        start = self.step
        acc: dict[str, list[float]] = {}
        timed_out = False
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
                self._log_step(log_f=log_f, metrics_path=metrics_path, acc=acc, do_val=do_val, train_s=train_s,
                               rate=(self.step - start) / max(train_s, 1e-9), cpu_s=cpu_s, progress=progress)
            if self.step % c.checkpoint_every == 0:
                self.save_checkpoint()
        return timed_out, train_s, cpu_s

    def run(self, *, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> Path:
        """Train to ``config.steps``; ``stop_at`` ends early (checkpointed) without changing the lr schedule;
        so does ``config.max_seconds`` (then the final model is written too)."""
        c = self.config
        end = c.steps if stop_at is None else min(c.steps, int(stop_at))
        if resume:
            self.load_checkpoint()
        (self.out / "train_config.json").write_text(json.dumps(c.to_dict(), indent=1))
        metrics_path = self.out / "metrics.jsonl"
        log_f = metrics_path.open("a")
        if self.step == 0 and self.val_samples and c.eval_every > 0 and end > 0:  # the curve's origin
            self._write(log_f, self._validated({"step": 0}))
        try:
            timed_out, train_s, cpu_s = self._loop(end=end, log_f=log_f, metrics_path=metrics_path, progress=progress)
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
