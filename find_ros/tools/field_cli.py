"""`find-ros field fuse|query`: fuse an RGB-D dataset into a feature field, query a saved field."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from find_ros.field.consistency import depth_consistency
from find_ros.field.config import FieldConfig
from find_ros.field.grid import FeatureField

LOG = logging.getLogger(__name__)


def _open(fmt: str, path: str, *, stride: int = 1, max_frames: int | None = None, width: int = 640,
          height: int = 480):
    """A lazy frame sequence from ``find_ros.sim.datasets.open_dataset`` (sim: ``path`` is the scene seed)."""
    from find_ros.sim.datasets import DatasetError, open_dataset

    kw = {"stride": stride, "max_frames": max_frames}
    if fmt == "sim":
        kw.update(width=width, height=height)
    try:
        return open_dataset(fmt, path, **kw)
    except DatasetError as e:
        raise SystemExit(f"cannot open {fmt} dataset {path!r}: {e}") from e


def _embedder(args: argparse.Namespace):
    """(FieldEmbedder or None, description): --model DIR -> FIND, --embed hsv -> the HSV baseline, else colour."""
    from find_ros.field.embedder import FieldEmbedder

    if args.model:
        from find_ros.model.grounder import DEFAULT_MODEL_DIR, FindGrounder

        path = DEFAULT_MODEL_DIR if args.model == "default" else Path(args.model)
        if not Path(path).is_dir():
            raise SystemExit(f"--model {args.model}: no model directory at {path}")
        g = FindGrounder.from_pretrained(path, device=args.device)
        return FieldEmbedder(grounder=g), f"FIND pixel embeddings ({path})"
    if args.embed == "hsv":
        from find_ros.grounding.baseline import HsvBaselineGrounder

        return FieldEmbedder(grounder=HsvBaselineGrounder()), "hsv-baseline colour memberships (BASELINE, not FIND)"
    return None, "colour feature (no model)"


def fuse(args: argparse.Namespace) -> dict:
    frames = _open(args.format, args.path, stride=args.stride, max_frames=args.max_frames,
                   width=args.width, height=args.height)
    embedder, what = _embedder(args)
    dim = embedder.dim if embedder is not None else args.dim
    cfg = FieldConfig(voxel_size=args.voxel, embedding_dim=dim, max_blocks=args.max_blocks,
                      memory_mb=getattr(args, "memory_mb", None))
    ff = FeatureField(config=cfg)
    fused, held, ms, embed_ms = [], [], [], []
    for k, fr in enumerate(frames):  # lazy: one frame decoded at a time (held-out frames are kept)
        if fr.T_world_cam is None:
            continue
        if args.holdout_every and k % args.holdout_every == args.holdout_every - 1:
            held.append(fr)
            continue
        pe = None
        if embedder is not None:
            t0 = time.perf_counter()
            pe = embedder.pixel_embeddings(fr.color)
            embed_ms.append((time.perf_counter() - t0) * 1e3)
        st = ff.integrate(fr.depth.astype(np.float32), fr.K, fr.T_world_cam, pixel_embeddings=pe, color=fr.color)
        ms.append(st.ms)
        fused.append(fr.index)
    if not ms:
        raise SystemExit("no frame with a pose to fuse")
    t0 = time.perf_counter()
    ff.save(args.out)
    save_ms = (time.perf_counter() - t0) * 1e3
    report = {"format": args.format, "path": str(args.path), "out": str(args.out),
              "embedding": what, "embedding_dim": dim, "voxel_size": cfg.voxel_size,
              "frames_fused": len(fused), "frames_held_out": len(held), "voxels": ff.num_voxels,
              "active_blocks": ff.active_blocks, "bytes_per_voxel": ff.bytes_per_voxel,
              "memory_bytes": ff.memory_bytes, "allocated_bytes": ff.allocated_bytes, "block_cap": ff.block_cap,
              "ms_per_frame_median": float(np.median(ms)),
              "embed_ms_per_frame_median": float(np.median(embed_ms)) if embed_ms else 0.0,
              "save_ms": save_ms}
    if held:
        c = depth_consistency(ff, held)
        report.update({"consistency_median_m": c["median_m"], "consistency_p90_m": c["p90_m"],
                       "consistency_pixels": c["pixels"], "consistency_outlier_fraction": c["outlier_fraction"]})
    return report


def query(args: argparse.Namespace) -> dict:
    """Text query of a saved field; the embedder must be the one the field was fused with."""
    ff = FeatureField.load(args.field)
    embedder, what = _embedder(args)
    if embedder is None:
        raise SystemExit("query needs --model DIR or --embed hsv (the colour feature has no text embedding)")
    if embedder.dim != ff.config.embedding_dim:
        raise SystemExit(f"{args.field} holds D={ff.config.embedding_dim} embeddings but {what} has D={embedder.dim}")
    t0 = time.perf_counter()
    r = ff.query(embedder.embed_text(args.text), max_goals=args.max_goals)
    return {"field": str(args.field), "text": args.text, "embedding": what, "voxels": int(r.xyz.shape[0]),
            "query_ms": (time.perf_counter() - t0) * 1e3,
            "goals": [{"position": g.position.tolist(), "extent": g.extent.tolist(), "score": g.score,
                       "num_voxels": g.num_voxels} for g in r.goals]}


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="find-ros field")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fuse", help="fuse an RGB-D dataset into a feature field file")
    f.add_argument("--format", choices=("tum", "7scenes", "sim"), required=True)
    f.add_argument("--path", required=True, help="dataset folder (tum, 7scenes) or scene seed (sim)")
    f.add_argument("--out", required=True)
    f.add_argument("--json")
    f.add_argument("--voxel", type=float, default=0.05)
    f.add_argument("--dim", type=int, default=64)
    f.add_argument("--max-blocks", type=int, default=20000)
    f.add_argument("--memory-mb", type=float, default=None,
                   help="memory budget (MiB) of the field's storage; the smaller of its cap and --max-blocks wins")
    f.add_argument("--stride", type=int, default=1)
    f.add_argument("--max-frames", type=int)
    f.add_argument("--holdout-every", type=int, default=0)
    f.add_argument("--width", type=int, default=640, help="sim only: image width")
    f.add_argument("--height", type=int, default=480, help="sim only: image height")
    q = sub.add_parser("query", help="text query of a saved field (goals as JSON)")
    q.add_argument("--field", required=True)
    q.add_argument("--text", required=True)
    q.add_argument("--max-goals", type=int, default=5)
    q.add_argument("--json")
    for p in (f, q):
        p.add_argument("--model", help="FIND model directory ('default' = the shipped one): FIND pixel embeddings")
        p.add_argument("--embed", choices=("colour", "hsv"), default="colour",
                       help="without --model: colour feature (--dim) or the hsv-baseline's colour memberships")
        p.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    rep = fuse(args) if args.cmd == "fuse" else query(args)
    text = json.dumps(rep, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
