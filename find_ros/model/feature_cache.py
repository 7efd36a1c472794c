"""Frozen-encoder feature cache: the vision encoder's maps of every training view (and of its reference crops)
written once to disk, so that stage-2 training (FIND's recipe: frozen foundation encoders, train the interface)
pays only for the pixel decoder, the interface and the heads.

Layout of a cache folder::

    info.json              vision config (kind, hf_config, image/reference size, feature layers), sample count,
                           level shapes, dtype: a cache built for another encoder is refused
    image_<k>.npy          (N, C_k, h_k, w_k) level k of every sample (np.load(mmap_mode="r"))
    reference_<k>.npy      (R, C_k, h'_k, w'_k) level k of every reference crop, samples in order
    reference_offsets.npy  (N + 1,) int64: references of sample i are rows offsets[i]:offsets[i + 1]

Valid only while the encoder is frozen (``FindModel.config.freeze_encoders``): the trainer checks it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

__all__ = ["FeatureCache", "FeatureCacheError", "build_feature_cache", "cache_key"]

log = logging.getLogger(__name__)

INFO_FILE = "info.json"


class FeatureCacheError(ValueError):
    """A cache that does not belong to this model / dataset; the message names the mismatch."""


def cache_key(model) -> dict:
    """What the cached maps depend on: the vision encoder's config (and so its frozen weights' identity, when
    loaded from a path) and the input sizes."""
    v = model.config.vision
    return json.loads(json.dumps({"kind": v.kind, "path": v.path, "hf_config": v.hf_config,
                                  "feature_layers": list(v.feature_layers), "image_size": list(v.image_size),
                                  "reference_size": list(model.reference_size()), "image_mean": list(v.image_mean),
                                  "image_std": list(v.image_std)}, default=str))


def _weights_digest(model) -> str:
    """A short digest of the vision encoder's weights (a cache from other random weights is refused too)."""
    import hashlib

    h = hashlib.sha1()
    for k, t in sorted(model.vision.state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().float().cpu().numpy().tobytes()[:4096])
        h.update(str(float(t.detach().float().sum())).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_feature_cache(model, dataset, out_dir: str | Path, *, batch_size: int = 16,
                        dtype: str = "float16") -> Path:
    """Encode every sample of ``dataset`` (and its reference crops) with ``model``'s vision encoder into
    ``out_dir``; returns the folder. An existing complete cache with the same key is reused."""
    from find_ros.instruction import Reference

    out = Path(out_dir)
    key = {**cache_key(model), "weights": _weights_digest(model), "n_samples": len(dataset), "dtype": dtype}
    info_path = out / INFO_FILE
    if info_path.is_file():
        old = json.loads(info_path.read_text())
        if old.get("key") == key and old.get("complete"):
            log.info("feature cache %s reused (%d samples)", out, len(dataset))
            return out
        raise FeatureCacheError(f"{out} holds a cache of another encoder or dataset; delete it or choose another "
                                f"folder (cached {old.get('key', {}).get('kind')!r} x {old.get('key', {}).get('n_samples')})")
    out.mkdir(parents=True, exist_ok=True)
    np_dtype = np.dtype(dtype)
    was = model.training
    model.eval()
    n = len(dataset)
    counts = [len(dataset[i].references) for i in range(n)]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    images: list[np.lib.format.open_memmap] = []
    refs: list[np.lib.format.open_memmap] = []
    try:
        for s0 in range(0, n, batch_size):
            samples = [dataset[i] for i in range(s0, min(n, s0 + batch_size))]
            x = torch.from_numpy(np.stack([s.image for s in samples]).transpose(0, 3, 1, 2).copy()).float().div(255)
            maps = model.vision_maps(x)
            if not images:
                images = [np.lib.format.open_memmap(out / f"image_{k}.npy", mode="w+", dtype=np_dtype,
                                                    shape=(n, *m.shape[1:])) for k, m in enumerate(maps)]
            for k, m in enumerate(maps):
                images[k][s0 : s0 + len(samples)] = m.float().cpu().numpy().astype(np_dtype)
            rs = [Reference(image=im, mask=mk) for s in samples for im, mk in s.references]
            if rs:
                rmaps = model.reference_vision_maps(rs)
                if not refs:
                    refs = [np.lib.format.open_memmap(out / f"reference_{k}.npy", mode="w+", dtype=np_dtype,
                                                      shape=(int(offsets[-1]), *m.shape[1:]))
                            for k, m in enumerate(rmaps)]
                r0 = int(offsets[s0])
                for k, m in enumerate(rmaps):
                    refs[k][r0 : r0 + len(rs)] = m.float().cpu().numpy().astype(np_dtype)
    finally:
        model.train(was)
    for a in images + refs:
        a.flush()
    np.save(out / "reference_offsets.npy", offsets)
    info_path.write_text(json.dumps({"key": key, "complete": True, "levels": len(images),
                                     "image_shapes": [list(a.shape[1:]) for a in images],
                                     "reference_shapes": [list(a.shape[1:]) for a in refs]}, indent=1))
    log.info("feature cache %s: %d samples, %d references, %.1f MB", out, n, int(offsets[-1]),
             sum(a.nbytes for a in images + refs) / 1e6)
    return out


class FeatureCache:
    """Read side of a cache folder: ``maps(indices)`` and ``reference_maps(indices)`` as float32 tensors."""

    def __init__(self, directory: str | Path, *, model=None) -> None:
        d = Path(directory)
        info_path = d / INFO_FILE
        if not info_path.is_file():
            raise FeatureCacheError(f"no {INFO_FILE} in {d} (build it with build_feature_cache)")
        self.info = json.loads(info_path.read_text())
        if not self.info.get("complete"):
            raise FeatureCacheError(f"feature cache {d} is incomplete")
        if model is not None:
            want = {**cache_key(model), "weights": _weights_digest(model)}
            have = {k: self.info["key"].get(k) for k in want}
            if have != want:
                bad = sorted(k for k in want if have[k] != want[k])
                raise FeatureCacheError(f"feature cache {d} was built for another vision encoder (differs in {bad})")
        self.directory = d
        self.images = [np.load(d / f"image_{k}.npy", mmap_mode="r") for k in range(self.info["levels"])]
        self.references = [np.load(d / f"reference_{k}.npy", mmap_mode="r")
                           for k in range(len(self.info["reference_shapes"]))]
        self.offsets = np.load(d / "reference_offsets.npy")

    def __len__(self) -> int:
        return int(self.info["key"]["n_samples"])

    def maps(self, indices) -> list[torch.Tensor]:
        idx = np.asarray(indices, np.int64)
        return [torch.from_numpy(np.ascontiguousarray(a[idx]).astype(np.float32)) for a in self.images]

    def reference_maps(self, indices) -> list[torch.Tensor] | None:
        """Maps of the references of samples ``indices``, concatenated in that order (None when they have none)."""
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices]).astype(np.int64) \
            if len(indices) else np.zeros(0, np.int64)
        if not len(rows) or not self.references:
            return None
        return [torch.from_numpy(np.ascontiguousarray(a[rows]).astype(np.float32)) for a in self.references]
