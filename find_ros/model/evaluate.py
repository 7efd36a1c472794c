"""Evaluate a FIND checkpoint on the sim FIND-Bench splits.

``find-ros eval --checkpoint DIR --split test|heldout --seed S --scenes N --json FILE``

Masks are compared at the sample resolution (the model input size). For each sample:

* grounding: every referring phrase of the image is grounded (``ground`` task);
* interleaved: the sample's interleaved instruction (``interleaved`` task);
* separate: each entity of that instruction alone — text entities by their text, visual entities by
  their reference image alone (``"<0>"``), the SEEM-style baseline of the paper;
* text only: the interleaved instruction with its visual references dropped;
* retrieval: gallery captions -> images (IR@k over ``gallery`` images of the split).

IoU of an empty prediction and a non-empty target is 0. mIoU averages per entity, cIoU divides the
summed intersections by the summed unions. Deterministic for a seed (samples
``seed * 10_000 + i`` of the split).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from find_ros.instruction import Reference, parse_instruction
from find_ros.model.data import DataConfig, SimFindDataset, SimSample

__all__ = ["evaluate", "cli", "EvalError", "METRIC_KEYS"]

log = logging.getLogger(__name__)

METRIC_KEYS = (
    "grounding_miou", "grounding_ciou", "grounding_acc50", "interleaved_ciou", "interleaved_miou",
    "separate_ciou", "text_only_ciou", "ir_at_5", "ir_at_10", "ms_per_frame_median",
)


class EvalError(ValueError):
    """Bad evaluation arguments; the message names the offending value."""


class _IoU:
    def __init__(self) -> None:
        self.inter = 0
        self.union = 0
        self.ious: list[float] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        i = int(np.logical_and(pred, gt).sum())
        u = int(np.logical_or(pred, gt).sum())
        self.inter += i
        self.union += u
        self.ious.append(i / u if u else 1.0)

    def miou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else float("nan")

    def ciou(self) -> float:
        return self.inter / self.union if self.union else float("nan")

    def acc50(self) -> float:
        return float(np.mean(np.array(self.ious) >= 0.5)) if self.ious else float("nan")


@torch.no_grad()
def _entity_masks(model, image_t: torch.Tensor, feats_cache: dict, key, instructions, *, task: str,
                  out_hw: tuple[int, int]) -> list[np.ndarray]:
    """Ground each instruction on one image; returns per instruction an (E, H, W) bool array."""
    feats = feats_cache.get(key)
    if feats is None:
        feats = model.encode_image(image_t)
        feats_cache.clear()
        feats_cache[key] = feats
    out = []
    for instr in instructions:
        prompts = model.encode_instructions([instr])
        o = model(feats, prompts, task=task)
        logits = o.entity_masks[:, : len(instr.entities)]
        up = torch.nn.functional.interpolate(logits.float(), size=out_hw, mode="bilinear", align_corners=False)
        out.append((up[0] > 0).cpu().numpy())
    return out


def _separate_instructions(s: SimSample):
    il = s.interleaved
    res = []
    for e, vis in enumerate(il.visual):
        if vis:
            im, m = s.references[il.ref_index[e]]
            res.append(parse_instruction("<0>", [Reference(image=im, mask=m)]))
        else:
            res.append(parse_instruction(il.text_phrases[e]))
    return res


@torch.no_grad()
def _retrieval(model, samples: list[SimSample], device: str, batch: int = 32) -> tuple[float, float, int]:
    img, txt = [], []
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        x = torch.from_numpy(np.stack([s.image for s in chunk]).transpose(0, 3, 1, 2).copy()).float().div(255).to(device)
        o = model(model.encode_image(x), None, task="retrieve")
        img.append(torch.nn.functional.normalize(o.image_sem.float(), dim=-1))
        txt.append(torch.nn.functional.normalize(model.caption_embeddings([s.caption for s in chunk]).float(), dim=-1))
    I, T = torch.cat(img), torch.cat(txt)
    sim = T @ I.T  # caption -> image
    rank = (sim > sim.diag()[:, None]).sum(dim=1)  # images scoring strictly higher than the true one
    return float((rank < 5).float().mean()), float((rank < 10).float().mean()), len(samples)


def _timing(checkpoint: str | Path, sample: SimSample, device: str, frames: int = 30) -> float:
    import cv2

    from find_ros.model.grounder import FindGrounder

    g = FindGrounder.from_pretrained(checkpoint, device=device)
    g.set_instruction(sample.instruction(mode="interleaved"))
    rgb = cv2.resize(sample.image, (640, 480), interpolation=cv2.INTER_LINEAR)
    for _ in range(3):
        g.ground(rgb)
    ts = []
    for _ in range(frames):
        t0 = time.perf_counter()
        g.ground(rgb)
        ts.append((time.perf_counter() - t0) * 1000)
    return float(np.median(ts))


def evaluate(*, checkpoint: str | Path | None = None, model=None, split: str = "test", seed: int = 0,
             scenes: int = 200, gallery: int | None = None, device: str = "cpu",
             data_config: DataConfig | None = None, timing: bool = True) -> dict:
    """Evaluate ``model`` (or the checkpoint) and return the metrics dict (see :data:`METRIC_KEYS`)."""
    from find_ros.model.find import FindModel

    if split not in ("test", "heldout", "val"):
        raise EvalError(f"split must be test, heldout or val, got {split!r}")
    if scenes < 1:
        raise EvalError(f"scenes must be >= 1, got {scenes}")
    if model is None:
        if checkpoint is None:
            raise EvalError("give a checkpoint directory or a model")
        model = FindModel.from_pretrained(checkpoint, device=device)
    model.eval()
    cfg = data_config
    if cfg is None:
        tc = Path(checkpoint) / "train_config.json" if checkpoint else None
        cfg = DataConfig.from_dict(json.loads(tc.read_text())["data"]) if tc and tc.is_file() else DataConfig()
    ds = SimFindDataset(split=split, config=cfg)
    start = int(seed) * 10_000
    n_gal = max(scenes, gallery or 0)
    samples = [ds[start + i] for i in range(n_gal)]
    H, W = cfg.height, cfg.width
    g, il, sep, txt = _IoU(), _IoU(), _IoU(), _IoU()
    n_vis = 0
    t0 = time.perf_counter()
    for s in samples[:scenes]:
        x = torch.from_numpy(s.image.transpose(2, 0, 1).copy()).float().div(255)[None].to(device)
        cache: dict = {}
        phrases = [r.phrase for r in s.referring]
        gt_ref = [s.mask(r.object_id) for r in s.referring]
        [m] = _entity_masks(model, x, cache, s.index, [parse_instruction(", ".join(phrases))], task="ground", out_hw=(H, W))
        for e, gt in enumerate(gt_ref):
            g.add(m[e], gt)
        gts = [s.mask(o) for o in s.interleaved.object_ids]
        [mi, mt] = _entity_masks(model, x, cache, s.index,
                                 [s.instruction(mode="interleaved"), s.instruction(mode="text_only")],
                                 task="interleaved", out_hw=(H, W))
        seps = _entity_masks(model, x, cache, s.index, _separate_instructions(s), task="interleaved", out_hw=(H, W))
        for e, gt in enumerate(gts):
            il.add(mi[e], gt)
            txt.add(mt[e], gt)
            sep.add(seps[e][0], gt)
        n_vis += sum(s.interleaved.visual)
    eval_s = time.perf_counter() - t0
    ir5, ir10, n_gallery = _retrieval(model, samples, device)
    res = {
        "grounding_miou": g.miou(), "grounding_ciou": g.ciou(), "grounding_acc50": g.acc50(),
        "interleaved_ciou": il.ciou(), "interleaved_miou": il.miou(),
        "separate_ciou": sep.ciou(), "text_only_ciou": txt.ciou(),
        "ir_at_5": ir5, "ir_at_10": ir10,
        "ms_per_frame_median": _timing(checkpoint, samples[0], device) if (timing and checkpoint) else float("nan"),
        "split": split, "seed": int(seed), "scenes": scenes, "gallery_size": n_gallery,
        "n_grounding_phrases": len(g.ious), "n_interleaved_entities": len(il.ious),
        "n_visual_entities": n_vis, "eval_seconds": round(eval_s, 1),
    }
    return res


def cli(argv: list[str] | None = None) -> int:
    """``find-ros eval``."""
    ap = argparse.ArgumentParser(prog="find-ros eval", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="model folder (save_pretrained layout)")
    ap.add_argument("--split", default="test", choices=("test", "heldout", "val"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=200, help="samples for the grounding metrics")
    ap.add_argument("--gallery", type=int, default=None, help="retrieval gallery size (default: --scenes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--no-timing", action="store_true", help="skip the 640x480 FindGrounder timing")
    ap.add_argument("--json", required=True, help="output JSON file")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(a.threads)
    res = evaluate(checkpoint=a.checkpoint, split=a.split, seed=a.seed, scenes=a.scenes, gallery=a.gallery,
                   device=a.device, timing=not a.no_timing)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
