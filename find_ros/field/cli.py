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
from find_ros.field.field import FeatureField, FieldConfig

LOG = logging.getLogger(__name__)


def _open(fmt: str, path: str, *, stride: int, max_frames: int | None):
    try:
        from find_ros.sim.datasets import open_dataset
    except ImportError:
        open_dataset = None
    if open_dataset is not None:
        return list(open_dataset(fmt, path, stride=stride, max_frames=max_frames))
    if fmt != "tum":
        raise SystemExit(f"format {fmt!r} needs find_ros.sim.datasets, which is not installed yet")
    LOG.warning("find_ros.sim.datasets missing: using the field's minimal TUM reader (associations_subset.txt)")
    return _read_tum_subset(Path(path), stride=stride, max_frames=max_frames)


def _read_tum_subset(root: Path, *, stride: int, max_frames: int | None):
    """Minimal TUM reader for associations_subset.txt + intrinsics.txt (stand-in until find_ros.sim lands)."""
    import cv2
    from types import SimpleNamespace
    assoc = root / "associations_subset.txt"
    if not assoc.exists():
        raise SystemExit(f"{assoc} not found")
    K = np.loadtxt(root / "intrinsics.txt")
    seq = next(p for p in root.iterdir() if p.is_dir())
    rows = [ln.split() for ln in assoc.read_text().splitlines() if ln and not ln.startswith("#")]
    out = []
    for i, r in enumerate(rows[::stride]):
        if max_frames is not None and len(out) >= max_frames:
            break
        tx, ty, tz, qx, qy, qz, qw = map(float, r[5:12])
        x, y, z, w = qx, qy, qz, qw
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, (tx, ty, tz)
        color = cv2.cvtColor(cv2.imread(str(seq / r[1]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(seq / r[3]), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000.0
        out.append(SimpleNamespace(color=color, depth=depth, K=K, T_world_cam=T, stamp_s=float(r[0]), index=i))
    return out


def fuse(args: argparse.Namespace) -> dict:
    frames = _open(args.format, args.path, stride=args.stride, max_frames=args.max_frames)
    cfg = FieldConfig(voxel_size=args.voxel, embedding_dim=args.dim, max_blocks=args.max_blocks)
    ff = FeatureField(config=cfg)
    embedder = None
    if args.model:
        from find_ros.model.grounder import FindGrounder  # noqa: F401  (pixel embeddings from FIND)
        raise SystemExit("--model is not wired yet: pixel embeddings from FindGrounder are pending")
    fused, held, ms = [], [], []
    for k, fr in enumerate(frames):
        if fr.T_world_cam is None:
            continue
        if args.holdout_every and k % args.holdout_every == args.holdout_every - 1:
            held.append(fr)
            continue
        st = ff.integrate(fr.depth.astype(np.float32), fr.K, fr.T_world_cam, pixel_embeddings=embedder,
                          color=fr.color)
        ms.append(st.ms)
        fused.append(fr.index)
    if not ms:
        raise SystemExit("no frame with a pose to fuse")
    t0 = time.perf_counter()
    ff.save(args.out)
    save_ms = (time.perf_counter() - t0) * 1e3
    report = {"format": args.format, "path": str(args.path), "out": str(args.out),
              "embedding": "colour feature (no model)", "voxel_size": cfg.voxel_size,
              "frames_fused": len(fused), "frames_held_out": len(held), "voxels": ff.num_voxels,
              "active_blocks": ff.active_blocks, "bytes_per_voxel": ff.bytes_per_voxel,
              "memory_bytes": ff.memory_bytes, "ms_per_frame_median": float(np.median(ms)),
              "save_ms": save_ms}
    if held:
        c = depth_consistency(ff, held)
        report.update({"consistency_median_m": c["median_m"], "consistency_p90_m": c["p90_m"],
                       "consistency_pixels": c["pixels"], "consistency_outlier_fraction": c["outlier_fraction"]})
    return report


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="find-ros field")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fuse", help="fuse an RGB-D dataset into a feature field file")
    f.add_argument("--format", choices=("tum", "7scenes", "sim"), required=True)
    f.add_argument("--path", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--json")
    f.add_argument("--voxel", type=float, default=0.05)
    f.add_argument("--dim", type=int, default=64)
    f.add_argument("--max-blocks", type=int, default=20000)
    f.add_argument("--stride", type=int, default=1)
    f.add_argument("--max-frames", type=int)
    f.add_argument("--holdout-every", type=int, default=0)
    f.add_argument("--model")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.cmd == "fuse":
        rep = fuse(args)
        text = json.dumps(rep, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
