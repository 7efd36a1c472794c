"""Feature field benchmark (issue 4): fusion ms/frame vs open3d TSDF+colour and a numpy scatter-mean; query ms.

Run: python -m find_ros.field.bench [--data DIR] [--frames N]. Prints measured medians and returns them as a dict.
Embeddings are random unit vectors at 1/8 resolution (80x60x64), the size FIND's pixel embeddings have.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import open3d as o3d
import open3d.core as o3c

from find_ros.field.field import FeatureField, FieldConfig

DEFAULT_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tum_fr3_teddy"


def _frames(data: Path, n: int, stride: int):
    from find_ros.field.cli import _open
    return [f for f in _open("tum", str(data), stride=stride, max_frames=n) if f.T_world_cam is not None]


def _open3d_tsdf_colour(frames, voxel: float) -> list[float]:
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=voxel, block_resolution=8, block_count=25000)
    ms = []
    for fr in frames:
        t0 = time.perf_counter()
        K = o3c.Tensor(fr.K)
        ext = o3c.Tensor(np.linalg.inv(fr.T_world_cam))
        d = o3d.t.geometry.Image(o3c.Tensor(fr.depth))
        c = o3d.t.geometry.Image(o3c.Tensor(fr.color.astype(np.float32) / 255.0))
        bc = vbg.compute_unique_block_coordinates(d, K, ext, 1.0, 5.0, 4.0)
        vbg.integrate(bc, d, c, K, K, ext, 1.0, 5.0, 4.0)
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def _numpy_scatter_mean(frames, voxel: float, emb: np.ndarray) -> list[float]:
    """Naive baseline: back-project pixels, hash voxel keys, re-unique the global key set every frame."""
    keys = np.zeros(0, np.int64)
    sums = np.zeros((0, emb.shape[-1]), np.float32)
    cnt = np.zeros(0, np.float32)
    ms = []
    for fr in frames:
        t0 = time.perf_counter()
        H, W = fr.depth.shape
        v, u = np.nonzero(fr.depth > 0)
        z = fr.depth[v, u]
        pc = np.stack([(u - fr.K[0, 2]) * z / fr.K[0, 0], (v - fr.K[1, 2]) * z / fr.K[1, 1], z], 1)
        pw = pc @ fr.T_world_cam[:3, :3].T + fr.T_world_cam[:3, 3]
        g = np.floor(pw / voxel).astype(np.int64) + (1 << 20)
        k = (g[:, 0] << 42) | (g[:, 1] << 21) | g[:, 2]
        e = emb[v * emb.shape[0] // H, u * emb.shape[1] // W]
        allk, inv = np.unique(np.concatenate([keys, k]), return_inverse=True)
        ns = np.zeros((allk.size, emb.shape[-1]), np.float32)
        nc = np.zeros(allk.size, np.float32)
        ns[inv[: keys.size]] = sums
        nc[inv[: keys.size]] = cnt
        np.add.at(ns, inv[keys.size:], e)
        np.add.at(nc, inv[keys.size:], 1.0)
        keys, sums, cnt = allk, ns, nc
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def run(*, data: Path = DEFAULT_DATA, frames: int = 60, stride: int = 2, voxel: float = 0.05, dim: int = 64,
        query_voxels: int = 500_000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    frs = _frames(data, frames, stride)
    emb = rng.standard_normal((60, 80, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    ff = FeatureField(config=FieldConfig(voxel_size=voxel, embedding_dim=dim))
    ours = [ff.integrate(f.depth, f.K, f.T_world_cam, pixel_embeddings=emb, color=f.color).ms for f in frs]
    o3 = _open3d_tsdf_colour(frs, voxel)
    naive = _numpy_scatter_mean(frs[: min(len(frs), 20)], voxel, emb)
    out = {"frames": len(frs), "resolution": list(frs[0].depth.shape), "voxel_size": voxel, "embedding_dim": dim,
           "field_ms_median": float(np.median(ours[1:])), "open3d_tsdf_colour_ms_median": float(np.median(o3[1:])),
           "numpy_scatter_mean_ms_median": float(np.median(naive[1:])), "field_voxels": ff.num_voxels,
           "field_bytes_per_voxel": ff.bytes_per_voxel}
    out["ratio_field_vs_open3d"] = out["field_ms_median"] / out["open3d_tsdf_colour_ms_median"]
    # query: a finer field over the same frames until it holds >= query_voxels observed voxels
    qf = FeatureField(config=FieldConfig(voxel_size=0.02, embedding_dim=dim, max_blocks=60000))
    for f in _frames(data, 400, 1):
        qf.integrate(f.depth, f.K, f.T_world_cam, pixel_embeddings=emb)
        if qf.num_voxels >= query_voxels:
            break
    q = emb[30, 40]
    qf.query(q)  # builds the normalised embedding cache once
    qms = []
    for _ in range(7):
        t0 = time.perf_counter()
        r = qf.query(q)
        qms.append((time.perf_counter() - t0) * 1e3)
    out.update({"query_voxels": qf.num_voxels, "query_ms_median": float(np.median(qms)),
                "query_goals": len(r.goals)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m find_ros.field.bench")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--voxel", type=float, default=0.05)
    a = ap.parse_args(argv)
    print(json.dumps(run(data=a.data, frames=a.frames, voxel=a.voxel), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
