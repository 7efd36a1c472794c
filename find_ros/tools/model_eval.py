"""Evaluate a FIND checkpoint on the sim FIND-Bench splits.

``find-ros eval [--checkpoint DIR] [--grounder find|hsv-baseline] [--split test|heldout] [--seed S]
[--scenes N] [--json FILE]`` (the checkpoint defaults to the shipped ``find_ros/models/find-sim-tiny``)

Masks are compared at the sample resolution (the model input size). For each sample:

* grounding: every referring phrase of the image is grounded (``ground`` task);
* interleaved: the sample's interleaved instruction (``interleaved`` task);
* separate: each entity of that instruction alone — text entities by their text, visual entities by
  their reference image alone (``"<0>"``), the SEEM-style baseline of the paper;
* text only: the interleaved instruction with its visual references dropped;
* retrieval: gallery captions -> images (IR@k over ``gallery`` images of the split).

IoU of an empty prediction and a non-empty target is 0. mIoU averages per entity, cIoU divides the
summed intersections by the summed unions. Deterministic for a seed (samples
``seed * 10_000 + i`` of the split). A sample whose random scene draws all fail comes from a staged
scene (``SimFindDataset.staged``); ``n_staged_samples`` counts them.

``--grounder hsv-baseline`` scores the same samples with the colour-threshold baseline
(``find_ros.grounding.baseline``), run on the sample image resized to 640x480 (the camera size the node
sees; masks are compared after area-resizing back to the sample size). An entity the baseline cannot
express (no colour word it knows and no reference with a dominant colour) is grounded as an empty mask,
so it counts as a miss, and ``not_expressible`` counts such entities per task; retrieval is not
expressible at all (IR@k = 0, every gallery caption counted). FIND reports the same keys (all 0).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from find_ros.instruction import Reference, parse_instruction
from find_ros.model.data import DataConfig, SimFindDataset, SimSample
from find_ros.tools.timing import time_stage

__all__ = ["evaluate", "cli", "EvalError", "METRIC_KEYS", "GROUNDERS", "TASKS"]

log = logging.getLogger(__name__)

METRIC_KEYS = (
    "grounding_miou", "grounding_ciou", "grounding_acc50", "interleaved_ciou", "interleaved_miou",
    "separate_ciou", "text_only_ciou", "ir_at_5", "ir_at_10", "ms_per_frame_median",
)


GROUNDERS = ("find", "hsv-baseline")
"""What ``--grounder`` accepts."""
TASKS = ("grounding", "interleaved", "separate", "text_only", "retrieval")
"""Keys of ``not_expressible``."""
_CAMERA_WH = (640, 480)


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


class _FindScorer:
    """FIND: per sample, the image is encoded once; each instruction is grounded with the given task."""

    def __init__(self, model, device: str, out_hw: tuple[int, int]) -> None:
        self.model, self.device, self.out_hw = model, device, out_hw
        self._feats = None

    def begin(self, s: SimSample) -> None:
        x = torch.from_numpy(s.image.transpose(2, 0, 1).copy()).float().div(255)[None].to(self.device)
        with torch.no_grad():
            self._feats = self.model.encode_image(x)

    @torch.no_grad()
    def masks(self, instructions, *, task: str) -> list[tuple[np.ndarray, list[bool]]]:
        """Per instruction: (E, H, W) bool masks and per entity whether the grounder could express it."""
        out = []
        for instr in instructions:
            prompts = self.model.encode_instructions([instr])
            o = self.model(self._feats, prompts, task=task)
            logits = o.entity_masks[:, : len(instr.entities)]
            up = torch.nn.functional.interpolate(logits.float(), size=self.out_hw, mode="bilinear",
                                                 align_corners=False)
            out.append(((up[0] > 0).cpu().numpy(), [True] * len(instr.entities)))
        return out


class _HsvScorer:
    """The colour-threshold baseline on the sample image resized to the camera size (see module docstring)."""

    def __init__(self, out_hw: tuple[int, int]) -> None:
        from find_ros.grounding.baseline import HsvBaselineGrounder

        self.g = HsvBaselineGrounder()
        self.out_hw = out_hw
        self._rgb = None

    def begin(self, s: SimSample) -> None:
        import cv2

        self._rgb = cv2.resize(s.image, _CAMERA_WH, interpolation=cv2.INTER_LINEAR)

    def expressible(self, instr) -> list[bool]:
        """Whether the baseline resolves each entity to at least one colour (its references' dominant colours,
        else its colour words: the rule of ``HsvBaselineGrounder.set_instruction``)."""
        from find_ros.grounding.baseline import colour_words

        res = []
        for e in instr.entities:
            if e.reference_indices:
                res.append(any(self.g.reference_colour(instr.references[k].image, instr.references[k].mask)
                               is not None for k in e.reference_indices))
            else:
                res.append(bool(colour_words(e.text)))
        return res

    def masks(self, instructions, *, task: str) -> list[tuple[np.ndarray, list[bool]]]:
        import cv2

        H, W = self.out_hw
        out = []
        for instr in instructions:
            # the baseline warns about every entity it cannot express; here they are counted instead
            blog = logging.getLogger("find_ros.grounding.baseline")
            level = blog.level
            blog.setLevel(logging.ERROR)
            try:
                self.g.set_instruction(instr)
            finally:
                blog.setLevel(level)
            fg = self.g.ground(self._rgb)
            ms = [cv2.resize(e.mask.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA) >= 0.5
                  for e in fg.entities]
            out.append((np.stack(ms) if ms else np.zeros((0, H, W), bool), self.expressible(instr)))
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


def _timing(grounder, sample: SimSample, frames: int = 30) -> float:
    """Median ms of ``grounder.ground`` on the sample resized to 640x480, instruction cached."""
    import cv2

    grounder.set_instruction(sample.instruction(mode="interleaved"))
    rgb = cv2.resize(sample.image, _CAMERA_WH, interpolation=cv2.INTER_LINEAR)
    return time_stage(lambda: grounder.ground(rgb), warmup=3, repeat=frames).median_ms


def _data_config(checkpoint) -> DataConfig:
    tc = Path(checkpoint) / "train_config.json" if checkpoint else None
    return DataConfig.from_dict(json.loads(tc.read_text())["data"]) if tc and tc.is_file() else DataConfig()


def _check_arguments(*, split: str, scenes: int, seed: int, grounder: str) -> None:
    """Raise :class:`EvalError` naming the first bad argument."""
    if split not in ("test", "heldout", "val"):
        raise EvalError(f"split must be test, heldout or val, got {split!r}")
    if scenes < 1:
        raise EvalError(f"scenes must be >= 1, got {scenes}")
    if int(seed) < 0:
        raise EvalError(f"seed must be >= 0, got {seed}")
    if grounder not in GROUNDERS:
        raise EvalError(f"grounder must be one of {GROUNDERS}, got {grounder!r}")


def _find_scorer(*, model, checkpoint, device: str, out_hw: tuple[int, int]):
    """(scorer, model) for FIND: ``model`` as given, else loaded from ``checkpoint``."""
    from find_ros.model.find import FindModel

    if model is None:
        if checkpoint is None:
            raise EvalError("give a checkpoint directory or a model")
        model = FindModel.from_pretrained(checkpoint, device=device)
    model.eval()
    return _FindScorer(model, device, out_hw), model


@dataclasses.dataclass
class _Scores:
    """IoU tallies per task and the entities each grounder could not express."""

    g: _IoU = dataclasses.field(default_factory=_IoU)
    il: _IoU = dataclasses.field(default_factory=_IoU)
    sep: _IoU = dataclasses.field(default_factory=_IoU)
    txt: _IoU = dataclasses.field(default_factory=_IoU)
    missing: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(TASKS, 0))
    n_vis: int = 0

    def add(self, scorer, s: SimSample) -> None:
        """Score one sample: its referring phrases, interleaved, text-only and separate instructions."""
        scorer.begin(s)
        phrases = [r.phrase for r in s.referring]
        gt_ref = [s.mask(r.object_id) for r in s.referring]
        [(m, ok)] = scorer.masks([parse_instruction(", ".join(phrases))], task="ground")
        self.missing["grounding"] += ok.count(False)
        for e, gt in enumerate(gt_ref):
            self.g.add(m[e], gt)
        gts = [s.mask(o) for o in s.interleaved.object_ids]
        [(mi, oki), (mt, okt)] = scorer.masks([s.instruction(mode="interleaved"), s.instruction(mode="text_only")],
                                              task="interleaved")
        seps = scorer.masks(_separate_instructions(s), task="interleaved")
        self.missing["interleaved"] += oki.count(False)
        self.missing["text_only"] += okt.count(False)
        self.missing["separate"] += sum(not ok[0] for _, ok in seps)
        for e, gt in enumerate(gts):
            self.il.add(mi[e], gt)
            self.txt.add(mt[e], gt)
            self.sep.add(seps[e][0][0], gt)
        self.n_vis += sum(s.interleaved.visual)


def evaluate(*, checkpoint: str | Path | None = None, model=None, split: str = "test", seed: int = 0,
             scenes: int = 200, gallery: int | None = None, device: str = "cpu",
             data_config: DataConfig | None = None, timing: bool = True, grounder: str = "find") -> dict:
    """Evaluate ``model`` (or the checkpoint), or the HSV baseline on the same samples; returns the metrics
    dict (:data:`METRIC_KEYS` plus counts). ``grounder="hsv-baseline"`` needs no model: the checkpoint (if
    given) only supplies the data config (``train_config.json``), so both grounders see the same samples."""
    _check_arguments(split=split, scenes=scenes, seed=seed, grounder=grounder)
    cfg = data_config if data_config is not None else _data_config(checkpoint)
    H, W = cfg.height, cfg.width
    if grounder == "find":
        scorer, model = _find_scorer(model=model, checkpoint=checkpoint, device=device, out_hw=(H, W))
    else:
        scorer = _HsvScorer((H, W))
    ds = SimFindDataset(split=split, config=cfg)
    start = int(seed) * 10_000
    n_gal = max(scenes, gallery or 0)
    samples = [ds[start + i] for i in range(n_gal)]
    sc = _Scores()
    t0 = time.perf_counter()
    for s in samples[:scenes]:
        sc.add(scorer, s)
    eval_s = time.perf_counter() - t0
    if grounder == "find":
        ir5, ir10, n_gallery = _retrieval(model, samples, device)
        ms = float("nan")
        if timing and checkpoint:
            from find_ros.model.grounder import FindGrounder

            ms = _timing(FindGrounder.from_pretrained(checkpoint, device=device), samples[0])
    else:
        ir5, ir10, n_gallery = 0.0, 0.0, len(samples)
        sc.missing["retrieval"] = n_gallery
        ms = _timing(scorer.g, samples[0]) if timing else float("nan")
    g, il = sc.g, sc.il
    return {
        "grounding_miou": g.miou(), "grounding_ciou": g.ciou(), "grounding_acc50": g.acc50(),
        "interleaved_ciou": il.ciou(), "interleaved_miou": il.miou(),
        "separate_ciou": sc.sep.ciou(), "text_only_ciou": sc.txt.ciou(),
        "ir_at_5": ir5, "ir_at_10": ir10,
        "ms_per_frame_median": ms,
        "grounder": grounder, "split": split, "seed": int(seed), "scenes": scenes, "gallery_size": n_gallery,
        "n_grounding_phrases": len(g.ious), "n_interleaved_entities": len(il.ious),
        "n_visual_entities": sc.n_vis, "n_staged_samples": sum(s.staged for s in samples),
        "not_expressible": sc.missing, "eval_seconds": round(eval_s, 1),
    }


def cli(argv: list[str] | None = None) -> int:
    """``find-ros eval``."""
    ap = argparse.ArgumentParser(prog="find-ros eval", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None,
                    help="model folder (save_pretrained layout); default: the shipped model "
                         "find_ros/models/find-sim-tiny of this install. With --grounder hsv-baseline it only "
                         "supplies the data config, so that both grounders see the same samples")
    ap.add_argument("--grounder", default="find", choices=GROUNDERS,
                    help="find (the model) or hsv-baseline (colour thresholds on the same samples)")
    ap.add_argument("--split", default="test", choices=("test", "heldout", "val"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=200, help="samples for the grounding metrics")
    ap.add_argument("--gallery", type=int, default=None, help="retrieval gallery size (default: --scenes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--no-timing", action="store_true", help="skip the 640x480 per-frame timing")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(a.threads)
    checkpoint = a.checkpoint
    if checkpoint is None:
        from find_ros.model.grounder import DEFAULT_MODEL_DIR

        checkpoint = DEFAULT_MODEL_DIR
    if not (Path(checkpoint) / "config.json").is_file():
        ap.error(f"--checkpoint {checkpoint}: no config.json there (not a saved FIND model)")
    try:
        res = evaluate(checkpoint=checkpoint, split=a.split, seed=a.seed, scenes=a.scenes, gallery=a.gallery,
                       device=a.device, timing=not a.no_timing, grounder=a.grounder)
    except EvalError as e:
        ap.error(str(e))
    res["checkpoint"] = str(checkpoint)
    text = json.dumps(res, indent=1)
    if a.json:
        Path(a.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
