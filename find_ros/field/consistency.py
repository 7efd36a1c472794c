"""Geometry consistency: field surface voxels z-buffered into held-out frames vs the measured depth."""
from __future__ import annotations

import numpy as np

from find_ros.field.config import FieldInputError
from find_ros.field.grid import FeatureField


def render_depth(xyz: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Z-buffer points (N,3) world into an (H,W) depth image (0 where nothing projects)."""
    H, W = shape
    T_cw = np.linalg.inv(np.asarray(T_world_cam, np.float64))
    pc = xyz.astype(np.float64) @ T_cw[:3, :3].T + T_cw[:3, 3]
    z = pc[:, 2]
    front = z > 1e-6
    pc, z = pc[front], z[front]
    u = np.floor(pc[:, 0] * K[0, 0] / z + K[0, 2] + 0.5).astype(np.int64)
    v = np.floor(pc[:, 1] * K[1, 1] / z + K[1, 2] + 0.5).astype(np.int64)
    ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    flat = v[ok] * W + u[ok]
    out = np.full(H * W, np.inf)
    np.minimum.at(out, flat, z[ok])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(H, W).astype(np.float32)


def surface_points(ff: FeatureField, *, surface_voxels: float = 0.5) -> np.ndarray:
    """Observed voxels near the surface; with a TSDF each centre is moved along nothing (kept quantised)
    but only voxels with |tsdf| * trunc <= surface_voxels * voxel are kept."""
    p = ff.points()
    if "tsdf" not in p:
        return p["xyz"]
    trunc = ff.config.trunc_voxels * ff.config.voxel_size
    keep = np.abs(p["tsdf"]) * trunc <= surface_voxels * ff.config.voxel_size
    return p["xyz"][keep]


def depth_consistency(ff: FeatureField, frames, *, max_error: float = 0.5) -> dict[str, float]:
    """Median and p90 |rendered - measured| depth (m); rendered = TSDF ray cast (z-buffered voxels without TSDF) over pixels valid in both, across held-out frames.

    frames: iterable of objects with depth (H,W) m, K (3,3), T_world_cam (4,4). Errors above ``max_error``
    (occlusion, unseen surfaces) are counted in ``outlier_fraction`` and left out of the statistics.
    """
    errs = []
    n_px = 0
    n_out = 0
    for fr in frames:
        if fr.T_world_cam is None:
            continue
        meas = np.asarray(fr.depth, np.float32)
        if ff.config.use_tsdf:
            r = ff.raycast_depth(fr.K, fr.T_world_cam, meas.shape)
        else:
            r = render_depth(surface_points(ff), fr.K, fr.T_world_cam, meas.shape)
        both = (r > 0) & (meas > 0)
        e = np.abs(r[both] - meas[both])
        n_px += e.size
        n_out += int((e > max_error).sum())
        errs.append(e[e <= max_error])
    if not errs or n_px == 0:
        raise FieldInputError("no held-out pixel overlaps the field (no frames with poses, or empty field)")
    e = np.concatenate(errs)
    return {"median_m": float(np.median(e)), "p90_m": float(np.percentile(e, 90)), "pixels": int(n_px),
            "outlier_fraction": float(n_out / n_px)}
