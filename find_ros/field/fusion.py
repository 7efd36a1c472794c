"""Projective fusion of one depth frame into the voxels of its blocks: TSDF, and colour and embedding averages
on the surface voxels. Pure numpy over the field's flat attribute arrays (see :class:`FeatureField`)."""
from __future__ import annotations

import numpy as np

from find_ros.field.config import FieldConfig


def fuse_frame(store: dict[str, np.ndarray], buf: np.ndarray, block_keys: np.ndarray, local: np.ndarray,
               depth: np.ndarray, K: np.ndarray, T_cw: np.ndarray, pe: np.ndarray | None, color: np.ndarray | None,
               *, config: FieldConfig, frame: int) -> None:
    """Update, in place, the voxels of blocks ``buf`` (storage slots; integer coordinates ``block_keys``) of
    ``store`` (name -> flat (slots * R^3, C) arrays) from one depth frame (metres, 0 = no reading) seen from
    the world -> camera transform ``T_cw``; ``local`` (R^3, 3) are voxel offsets in a block (metres).

    The TSDF (when ``config.use_tsdf``) averages over the truncation band; colour and embedding average over
    voxels within ``surface_voxels`` of the measured surface (embedding from ``pe`` at the pixel's place in
    its grid, else from ``color``, else left as is); ``seen`` of each touched block becomes ``frame + 1``.
    """
    cfg = config
    H, W = depth.shape
    idx, first, z, pix = _voxels_in_view(buf, block_keys, local, depth.shape, K, T_cw, config=cfg)
    d = depth.reshape(-1)[pix]
    sdf = d - z
    valid = d > 0
    vs = cfg.voxel_size
    band = _fuse_tsdf(store, idx, sdf, valid, trunc=cfg.trunc_voxels * vs) if cfg.use_tsdf else None
    surf = valid & (np.abs(sdf) <= cfg.surface_voxels * vs)
    si, spix = idx[surf], pix[surf]
    if si.size == 0:
        return
    sv, su = np.divmod(spix, W)
    obs = store["obs"]
    o_old = obs[si, 0:1]
    inv = 1.0 / (o_old + 1.0)
    if color is not None:
        col = store["color"]
        c = col[si]
        c *= o_old
        c += color[sv, su]
        c *= inv
        col[si] = c
    emb = store["embedding"]
    if pe is not None:
        h, w_ = pe.shape[:2]
        eu = np.minimum((su * w_) // W, w_ - 1)
        ev = np.minimum((sv * h) // H, h - 1)
        e_new = pe[ev, eu]
    elif color is not None:
        e_new = color_feature(color[sv, su], cfg.embedding_dim)
    else:
        e_new = None
    if e_new is not None:
        e = emb[si].astype(np.float32)  # running mean in float32, stored as float16 (in place: no temporaries)
        e *= o_old
        e += e_new
        e *= inv
        emb[si] = e
    obs[si, 0] = o_old[:, 0] + 1.0
    store["seen"][first[band if cfg.use_tsdf else surf], 0] = float(frame + 1)


def _voxels_in_view(buf: np.ndarray, block_keys: np.ndarray, local: np.ndarray, shape: tuple[int, int],
                    K: np.ndarray, T_cw: np.ndarray, *, config: FieldConfig
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The voxels of blocks ``buf`` that project into the ``shape`` image, in front of the camera: (their
    attribute rows, the first row of their block, their camera z, their nearest pixel's flat index)."""
    H, W = shape
    r3 = local.shape[0]
    origin = block_keys.astype(np.float64) * (config.block_resolution * config.voxel_size)
    # rows of P = [K with the centres shifted by half a pixel] @ T_cw: per voxel (a, b, z) = P @ (x, y, z, 1), so
    # its nearest pixel is (floor(a / z), floor(b / z)); computed per block origin + per local offset, broadcast
    # (no per-voxel matmul), one contiguous float32 row each
    P = np.array([[K[0, 0], K[0, 1], K[0, 2] + 0.5], [0.0, K[1, 1], K[1, 2] + 0.5], [0.0, 0.0, 1.0]]) @ T_cw[:3]
    o = (origin @ P[:, :3].T + P[:, 3]).astype(np.float32)
    off = local @ P[:, :3].T.astype(np.float32)
    a, b, z = ((o[:, None, k] + off[None, :, k]).ravel() for k in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):  # z <= 0 (behind the camera) is masked out below
        a /= z
        b /= z
    ok = z > 1e-6
    ok &= a >= 0
    ok &= a < W
    ok &= b >= 0
    ok &= b < H
    blk, vox = np.nonzero(ok.reshape(-1, r3))  # in view
    seen = blk * r3 + vox
    first = buf[blk] * r3
    # in view, a and b are >= 0: truncation is the floor
    return first + vox, first, z[seen], b[seen].astype(np.int64) * W + a[seen].astype(np.int64)


def _fuse_tsdf(store: dict[str, np.ndarray], idx: np.ndarray, sdf: np.ndarray, valid: np.ndarray, *,
               trunc: float) -> np.ndarray:
    """Running TSDF average over the voxels ``idx`` within the truncation band; returns the band mask."""
    band = valid & (sdf >= -trunc)
    bi = idx[band]
    tsdf_new = sdf[band]  # float32, in place from here on (no temporaries)
    tsdf_new /= trunc
    np.minimum(tsdf_new, 1.0, out=tsdf_new)
    tsdf, w = store["tsdf"], store["weight"]
    w_new = w[bi, 0]
    t = tsdf[bi, 0]
    t *= w_new
    t += tsdf_new
    w_new += 1.0
    t /= w_new
    tsdf[bi, 0] = t
    w[bi, 0] = w_new
    return band


def color_feature(rgb: np.ndarray, embedding_dim: int) -> np.ndarray:
    """Fallback embedding when no model is given: centred, unit-norm RGB padded with zeros to D."""
    f = np.zeros((rgb.shape[0], embedding_dim), np.float32)
    c = rgb.astype(np.float32) / 255.0 - 0.5
    n = min(3, embedding_dim)
    f[:, :n] = c[:, :n]
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-6)

