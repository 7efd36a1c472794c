"""Depth images rendered from the field's TSDF by ray marching in numpy (the first + to - zero crossing)."""
from __future__ import annotations

import numpy as np

from find_ros.field.config import FieldConfig, FieldInputError, check_pose
from find_ros.voxel_keys import pack_keys


def raycast_tsdf(K: np.ndarray, T_world_cam: np.ndarray, shape: tuple[int, int], *, config: FieldConfig,
                 block_keys: np.ndarray, block_index: np.ndarray, tsdf: np.ndarray, weight: np.ndarray,
                 weight_threshold: float = 1.0, max_steps: int = 1000) -> np.ndarray:
    """Depth (H,W) m of the first TSDF zero crossing (+ to -) along each pixel ray; 0 = no hit.

    The TSDF is given as the field stores it: ``block_keys`` (B,3) integer block coordinates of the active
    blocks, ``block_index`` (B,) their storage slots, and flat ``tsdf`` / ``weight`` (slots * R^3,) per voxel
    (voxel ``slot * R^3 + x + R * (y + R * z)``, R = ``config.block_resolution``).

    Ray marching over the active blocks, sampling the nearest voxel: a ray advances to the next block
    where no block is allocated, one voxel where a voxel has weight < ``weight_threshold``, else
    max(tsdf * trunc, voxel); a sign change between two observed samples is a hit, placed by linear
    interpolation. (open3d's VoxelBlockGrid.ray_cast is not used: on CPU with open3d 0.20 it segfaulted in 5 of
    10 processes ray casting the TUM teddy field, after "Could not generate full range map" warnings.)
    """
    T = check_pose(T_world_cam, "T_world_cam")
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise FieldInputError(f"K must be a finite (3,3) intrinsic matrix with fx, fy > 0, got {K.tolist()}")
    H, W = (int(x) for x in shape)
    if H < 1 or W < 1:
        raise FieldInputError(f"shape must be (H, W) >= 1, got {tuple(shape)}")
    out = np.zeros(H * W, np.float32)
    if block_index.size == 0:
        return out.reshape(H, W)
    r, vs = config.block_resolution, config.voxel_size
    keys = block_keys.astype(np.int64)
    vv, uu = np.divmod(np.arange(H * W, dtype=np.int64), W)
    d_cam = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones(H * W)], axis=1)
    d_world = d_cam @ T[:3, :3].T
    inv_len = 1.0 / np.linalg.norm(d_cam, axis=1)  # depth change per metre along the ray
    o = T[:3, 3]
    # clip every ray to the box around the active blocks (slab test); rays missing it never start
    lo = (keys.min(axis=0) * r - 0.5) * vs
    hi = ((keys.max(axis=0) + 1) * r - 0.5) * vs
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (lo - o) / d_world, (hi - o) / d_world
    t_in = np.nan_to_num(np.minimum(ta, tb), nan=-np.inf).max(axis=1)
    t_out = np.nan_to_num(np.maximum(ta, tb), nan=np.inf).min(axis=1)
    t = np.maximum(t_in, config.depth_min)
    t_end = np.minimum(t_out, config.depth_max)
    ray = np.flatnonzero(t <= t_end)
    _march(out, ray, t[ray], t_end[ray], o, d_world, inv_len, config=config, keys=keys, block_index=block_index,
           tsdf=tsdf, weight=weight, weight_threshold=weight_threshold, max_steps=max_steps)
    return out.reshape(H, W)


def _march(out: np.ndarray, ray: np.ndarray, t: np.ndarray, t_end: np.ndarray, o: np.ndarray,
           d_world: np.ndarray, inv_len: np.ndarray, *, config: FieldConfig, keys: np.ndarray, block_index: np.ndarray,
           tsdf: np.ndarray, weight: np.ndarray, weight_threshold: float, max_steps: int) -> None:
    """March rays ``ray`` (pixel indices) from depth ``t`` to ``t_end``; write each hit's depth into ``out``."""
    r, vs = config.block_resolution, config.voxel_size
    r3 = r ** 3
    trunc = config.trunc_voxels * vs
    enc = pack_keys(keys)
    order = np.argsort(enc)
    enc_sorted, buf_sorted = enc[order], block_index[order]
    t_prev = np.zeros(ray.size, np.float64)
    s_prev = np.full(ray.size, np.nan, np.float64)  # last observed tsdf sample (nan: none)
    for _ in range(max_steps):
        if ray.size == 0:
            break
        g = np.floor((o + t[:, None] * d_world[ray]) / vs + 0.5).astype(np.int64)
        blk = g // r
        loc = g - blk * r
        e = pack_keys(blk)
        pos = np.minimum(np.searchsorted(enc_sorted, e), enc_sorted.size - 1)
        found = enc_sorted[pos] == e
        step = np.empty(ray.size)  # metres along the ray
        s = np.full(ray.size, np.nan)
        miss = ~found
        if miss.any():  # outside allocated blocks: to just past the block's far face (no block is skipped)
            dw, tm = d_world[ray[miss]], t[miss]
            face = np.where(dw > 0, (blk[miss] + 1) * r - 0.5, blk[miss] * r - 0.5) * vs
            with np.errstate(divide="ignore", invalid="ignore"):
                dt_face = np.where(dw != 0, (face - (o + tm[:, None] * dw)) / dw, np.inf)
            step[miss] = (dt_face.min(axis=1) + 1e-4) / inv_len[ray[miss]]
        if found.any():
            vi = buf_sorted[pos[found]] * r3 + loc[found, 0] + r * (loc[found, 1] + r * loc[found, 2])
            observed = weight[vi] >= weight_threshold
            sf = np.where(observed, tsdf[vi], np.nan)
            s[found] = sf
            step[found] = np.where(observed, np.maximum(sf * trunc, vs), vs)
        hit = (s_prev > 0) & (s <= 0)
        if hit.any():
            a, b = s_prev[hit], s[hit]
            out[ray[hit]] = t_prev[hit] + (t[hit] - t_prev[hit]) * (a / (a - b))
        t_next = t + step * inv_len[ray]
        keep = ~hit & (t_next <= t_end)
        ray, t_prev, s_prev, t, t_end = ray[keep], t[keep], s[keep], t_next[keep], t_end[keep]
