"""Feature field benchmark (issue 4): fusion ms/frame vs open3d TSDF+colour and a numpy scatter-mean; query ms.

Run: python -m find_ros.tools.field_bench [--data DIR] [--frames N]. Prints measured medians and returns them as a dict.
Embeddings are random unit vectors at 1/8 resolution (80x60x64), the size FIND's pixel embeddings have.

Memory (issue 3, "RSS stays flat while voxels are evicted"):
python -m find_ros.tools.field_bench --rss [--minutes 10] [--width 320 --height 240] [--max-blocks 400] fuses a sim
walk-through (find_ros.sim walkthrough_trajectory + SimRenderer, looping) for M minutes with a block cap small
enough to force eviction, samples the process RSS every few seconds and reports the mean RSS of the first and
the last window (60 s each, or a third of the run when it is shorter than 3 minutes) and their ratio. The field's
storage grows with the blocks fused (issue 10), so RSS rises until the cap is first reached: the run also reports
``t_cap_s`` (first eviction), the ratio of the last window to the first window after it, and the median fusion ms
of the first and last windows (latency drift).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import open3d as o3d
import open3d.core as o3c

from find_ros.field.config import FieldConfig
from find_ros.field.grid import FeatureField
from find_ros.voxel_keys import pack_keys

DEFAULT_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tum_fr3_teddy"


def _frames(data: Path, n: int, stride: int):
    from find_ros.tools.field_cli import _open
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
        k = pack_keys(np.floor(pw / voxel))
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


def rss_mb() -> float:
    """Resident set size of this process (MB) from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_embedder(*, embed: str, seed: int, width: int, height: int,
                     dim: int) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """(embedding length, rgb -> pixel embeddings) for ``embed`` ("hsv" or "random")."""
    if embed == "hsv":
        from find_ros.field.embedder import FieldEmbedder
        from find_ros.grounding.baseline import HsvBaselineGrounder

        embedder = FieldEmbedder(grounder=HsvBaselineGrounder())
        return embedder.dim, embedder.pixel_embeddings
    if embed == "random":
        rng = np.random.default_rng(seed)

        def embed_fn(rgb):
            e = rng.standard_normal((height // 8, width // 8, dim)).astype(np.float32)
            return e / np.linalg.norm(e, axis=-1, keepdims=True)
        return dim, embed_fn
    raise ValueError(f"embed must be 'hsv' or 'random', got {embed!r}")


@dataclasses.dataclass
class _MemoryTrace:
    """What a memory run recorded while fusing."""

    samples: list[tuple[float, float, int, int]] = dataclasses.field(default_factory=list)
    """(t s, rss MB, active blocks, frames) every ``sample_s``."""
    ms: list[float] = dataclasses.field(default_factory=list)
    ms_t: list[float] = dataclasses.field(default_factory=list)
    """Time of each fused frame (s since start)."""
    frames: int = 0
    evicted: int = 0
    peak_blocks: int = 0
    t_cap: float | None = None


def _fuse_for(ff: FeatureField, *, render: Callable[[int], Any], embed_fn: Callable[[np.ndarray], np.ndarray],
              duration: float, sample_s: float, log: Callable[[str], None] | None) -> _MemoryTrace:
    """Fuse ``render(i)`` frames into ``ff`` for ``duration`` s, sampling RSS every ``sample_s`` s."""
    tr = _MemoryTrace()
    t_start = time.monotonic()
    next_sample = 0.0
    while True:
        t = time.monotonic() - t_start
        if t >= next_sample:
            tr.samples.append((t, rss_mb(), ff.active_blocks, tr.frames))
            if log is not None and len(tr.samples) % max(1, int(60 / sample_s)) == 1:
                log(f"t={t:6.0f} s rss={tr.samples[-1][1]:.1f} MB blocks={ff.active_blocks} frames={tr.frames} "
                    f"evicted={tr.evicted}")
            next_sample += sample_s
        if t >= duration:
            return tr
        f = render(tr.frames)
        st = ff.integrate(f.depth, f.K, f.T_world_cam, pixel_embeddings=embed_fn(f.color), color=f.color)
        tr.frames += 1
        tr.evicted += st.evicted_blocks
        if tr.t_cap is None and st.evicted_blocks:
            tr.t_cap = time.monotonic() - t_start
        tr.peak_blocks = max(tr.peak_blocks, st.active_blocks)
        tr.ms.append(st.ms)
        tr.ms_t.append(time.monotonic() - t_start)


def _window_figures(tr: _MemoryTrace, *, duration: float) -> dict:
    """RSS and fusion-latency figures of the first and last windows (and the first window after the cap)."""
    ts = np.array([s[0] for s in tr.samples])
    rss = np.array([s[1] for s in tr.samples])
    win = min(60.0, duration / 3.0)
    first = rss[ts <= win]
    last = rss[ts >= duration - win]
    mt, msa = np.array(tr.ms_t), np.array(tr.ms)
    ms_first, ms_last = msa[mt <= win], msa[mt >= duration - win]
    t_cap = tr.t_cap
    after_cap = rss[(ts >= t_cap) & (ts <= t_cap + win)] if t_cap is not None else np.zeros(0)
    return {"fuse_ms_median": float(np.median(tr.ms)) if tr.ms else 0.0,
            "fuse_ms_first_window_median": float(np.median(ms_first)) if ms_first.size else None,
            "fuse_ms_last_window_median": float(np.median(ms_last)) if ms_last.size else None,
            "fuse_ms_ratio_last_vs_first": (float(np.median(ms_last) / np.median(ms_first))
                                            if ms_first.size and ms_last.size else None),
            "window_s": win, "rss_first_window_mb": float(first.mean()), "rss_last_window_mb": float(last.mean()),
            "rss_ratio_last_vs_first": float(last.mean() / first.mean()),
            "t_cap_s": t_cap,
            "rss_first_window_after_cap_mb": float(after_cap.mean()) if after_cap.size else None,
            "rss_ratio_last_vs_first_after_cap": (float(last.mean() / after_cap.mean()) if after_cap.size
                                                  else None),
            "rss_min_mb": float(rss.min()), "rss_max_mb": float(rss.max()),
            "rss_samples": [[round(a, 1), round(b, 1), c, d] for a, b, c, d in tr.samples]}


def run_memory(*, minutes: float = 10.0, width: int = 320, height: int = 240, max_blocks: int = 400,
               voxel: float = 0.05, embed: str = "hsv", dim: int = 64, seed: int = 0, loop_frames: int = 600,
               sample_s: float = 5.0, memory_mb: float | None = None,
               log: Callable[[str], None] | None = print) -> dict:
    """Fuse a looping sim walk-through for ``minutes`` under a block cap; RSS sampled every ``sample_s`` s.

    ``embed``: "hsv" = the hsv-baseline grounder's pixel embeddings (D=12), "random" = random unit vectors of
    length ``dim`` at 1/8 resolution (FIND-sized). ``memory_mb``: the field's budget (FieldConfig.memory_mb); the
    smaller of its cap and ``max_blocks`` applies.
    """
    from find_ros.sim import Scene, SimRenderer, walkthrough_trajectory

    if minutes <= 0 or sample_s <= 0:
        raise ValueError(f"minutes and sample_s must be > 0, got {minutes}, {sample_s}")
    scene = Scene.generate(seed)
    poses = walkthrough_trajectory(scene, loop_frames, seed=seed)
    renderer = SimRenderer(scene, width=width, height=height)
    dim, embed_fn = _memory_embedder(embed=embed, seed=seed, width=width, height=height, dim=dim)
    ff = FeatureField(config=FieldConfig(voxel_size=voxel, embedding_dim=dim, max_blocks=max_blocks,
                                         memory_mb=memory_mb))
    duration = minutes * 60.0
    tr = _fuse_for(ff, render=lambda i: renderer.render(poses[i % len(poses)], index=i), embed_fn=embed_fn,
                   duration=duration, sample_s=sample_s, log=log)
    return {"minutes": minutes, "resolution": [height, width], "voxel_size": voxel, "embedding": embed,
            "embedding_dim": dim, "max_blocks": max_blocks, "memory_mb": memory_mb, "block_cap": ff.block_cap,
            "frames": tr.frames, "evicted_blocks": int(tr.evicted),
            "peak_active_blocks": int(tr.peak_blocks), "final_voxels": ff.num_voxels,
            "field_memory_mb": ff.memory_bytes / 2**20, "field_allocated_mb": ff.allocated_bytes / 2**20,
            "field_capacity_mb": ff.capacity_bytes / 2**20, **_window_figures(tr, duration=duration)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m find_ros.tools.field_bench")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--voxel", type=float, default=0.05)
    ap.add_argument("--rss", action="store_true", help="memory run: RSS over a sim walk-through with eviction")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--max-blocks", type=int, default=400)
    ap.add_argument("--memory-mb", type=float, default=None, help="--rss: field memory budget (MiB)")
    ap.add_argument("--embed", choices=("hsv", "random"), default="hsv")
    ap.add_argument("--dim", type=int, default=64, help="--embed random: embedding length")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--json", type=Path, help="also write the result here")
    a = ap.parse_args(argv)
    if a.rss:
        res = run_memory(minutes=a.minutes, width=a.width, height=a.height, max_blocks=a.max_blocks,
                         voxel=a.voxel, embed=a.embed, dim=a.dim, sample_s=a.sample_s, memory_mb=a.memory_mb)
    else:
        res = run(data=a.data, frames=a.frames, voxel=a.voxel)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
