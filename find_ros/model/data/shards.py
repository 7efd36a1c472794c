"""The shard cache of the sim data: :func:`build_shards` renders samples once into ``.npz`` shards (about 30 kB
per sample compressed at 128x96) so that training never re-renders; :class:`ShardDataset` reads them back."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from find_ros.model.data.dataset import SimFindDataset
from find_ros.model.data.samples import DataConfig, DataError, SimSample

log = logging.getLogger(__name__)


def build_shards(*, split: str, n_samples: int, out_dir: str | Path, config: DataConfig | None = None,
                 shard_size: int = 256) -> Path:
    """Render ``n_samples`` of ``split`` into ``out_dir/<split>/shard_XXXXX.npz`` (skips shards already present).

    Each shard holds ``images`` (N,H,W,3) uint8, ``instance`` (N,H,W) uint8, ``refs`` (R,S,S,3) uint8,
    ``ref_masks`` (R,S,S) bool, ``ref_offsets`` (N+1,) int64 and ``meta`` (JSON per sample).
    """
    config = config or DataConfig()
    ds = SimFindDataset(split=split, config=config)
    d = Path(out_dir) / split
    d.mkdir(parents=True, exist_ok=True)
    # JSON-normal (tuples -> lists) so that it compares equal with what a previous run wrote
    info = json.loads(json.dumps({"split": split, "n_samples": n_samples, "shard_size": shard_size,
                                  "config": config.to_dict()}))
    info_path = d / "info.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        try:  # fields added since the cache was built compare at their defaults
            old_cfg = json.loads(json.dumps(DataConfig.from_dict(old.get("config") or {}).to_dict()))
        except (TypeError, DataError):
            old_cfg = old.get("config")
        if old_cfg != info["config"] or old.get("shard_size") != shard_size:
            raise DataError(f"{d} was built with another config/shard size: {old}")
    info_path.write_text(json.dumps(info, indent=1))
    for s0 in range(0, n_samples, shard_size):
        path = d / f"shard_{s0 // shard_size:05d}.npz"
        if path.exists():
            continue
        samples = [ds[i] for i in range(s0, min(n_samples, s0 + shard_size))]
        refs = [r for s in samples for r in s.references]
        offs = np.cumsum([0] + [len(s.references) for s in samples]).astype(np.int64)
        S = config.ref_size
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            images=np.stack([s.image for s in samples]),
            instance=np.stack([s.instance for s in samples]),
            refs=np.stack([r[0] for r in refs]) if refs else np.zeros((0, S, S, 3), np.uint8),
            ref_masks=np.stack([r[1] for r in refs]) if refs else np.zeros((0, S, S), bool),
            ref_offsets=offs,
            meta=np.array([json.dumps(s.to_meta()) for s in samples]),
        )
        tmp.rename(path)
        log.info("wrote %s (%d samples)", path, len(samples))
    return d


class ShardDataset:
    """All samples of a shard directory in memory: ``len(ds)``, ``ds[i] -> SimSample``."""

    def __init__(self, *, directory: str | Path, limit: int | None = None) -> None:
        d = Path(directory)
        files = sorted(d.glob("shard_*.npz"))
        files = [f for f in files if not f.name.endswith(".tmp.npz")]
        if not files:
            raise DataError(f"no shard_*.npz files in {d}")
        self.images, self.instance, self.meta, self._refs = [], [], [], []
        for f in files:
            # read each array once (NpzFile decompresses on every item access); samples are views of them
            with np.load(f) as z:
                offs, refs, rmasks = z["ref_offsets"], z["refs"], z["ref_masks"]
                images, instance, meta = z["images"], z["instance"], z["meta"]
            for k, m in enumerate(meta):
                self.images.append(images[k])
                self.instance.append(instance[k])
                self.meta.append(json.loads(str(m)))
                self._refs.append([(refs[j], rmasks[j]) for j in range(offs[k], offs[k + 1])])
                if limit is not None and len(self.meta) >= limit:
                    break
            if limit is not None and len(self.meta) >= limit:
                break

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> SimSample:
        return SimSample.from_meta(self.meta[i], self.images[i], self.instance[i], self._refs[i])
