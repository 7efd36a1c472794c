"""Training batches: collating sim samples per task, building the model, forward + losses, validation mIoU."""
from __future__ import annotations

import numpy as np
import torch

from find_ros.model.data import SimSample, vocabulary
from find_ros.model.train_config import TrainError

__all__ = ["collate", "build_model", "batch_losses", "validate"]


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
