"""Sparse 3D feature field: TSDF geometry plus per-voxel colour and embedding averages in 8^3-voxel blocks.

Blocks are addressed by an open3d ``core.HashMap`` (block key -> buffer index); the voxel attributes live in
numpy arrays indexed by that buffer index; open3d's ``VoxelBlockGrid`` computes the blocks a depth frame touches.

Memory grows with use. The hash map is made once for the whole capacity (about 17 bytes per block: keys,
values, free-list) and never rehashes, so buffer indices are stable; its free-list hands out indices from 0
upwards and reuses freed ones first. The attribute arrays are anonymous private memory maps of the whole
capacity: the kernel backs a page with memory only when it is first written, so the resident storage is that of
the blocks written so far (``allocated_blocks``, a high-water mark: evicted blocks' slots are reused, not
returned) and never more than ``capacity_blocks``. Measured with open3d 0.20 on CPU, the alternatives were worse:
a VoxelBlockGrid zero-fills its whole ``block_count`` when it is made (the 1.9 GB at start-up of issue 10), and
letting its hash map grow (it doubles itself when an activation overflows it) stalled for 0.6 s at 260 blocks and
3.3 s at 2,100 blocks of D=64 per doubling.
"""
from __future__ import annotations

import json
import logging
import math
import mmap
import numbers
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d
import open3d.core as o3c

LOG = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_FROM_FILE = object()  # FeatureField.load: keep the saved memory_mb


class FieldInputError(ValueError):
    """An integrate/query input has the wrong shape, dtype or value."""


class FieldSaveError(OSError):
    """Saving a field failed; the previous file at the target path is untouched."""


@dataclass
class FieldConfig:
    """Feature field settings.

    voxel_size: voxel edge in metres.
    block_resolution: voxels per block edge (blocks hold block_resolution**3 voxels).
    embedding_dim: length D of the per-voxel embedding.
    max_blocks: cap on active blocks; above it blocks are evicted (see ``eviction``). The field's storage grows with
        the blocks written, up to ``capacity_blocks(...)`` = int(1.25 * cap) + 64 blocks (room for one frame's new
        blocks before eviction runs).
    memory_mb: optional budget (MiB, 2**20 bytes) for the voxel storage; None = no budget. When given, the block
        cap is the largest whose capacity (int(1.25 * cap) + 64 blocks of ``block_bytes``) fits in the budget, and
        the smaller of that and ``max_blocks`` wins (see :meth:`block_cap`). A budget too small for a cap of one
        block raises :class:`FieldInputError`.
    depth_max / depth_min: depth readings outside [depth_min, depth_max] metres are ignored.
    trunc_voxels: TSDF truncation distance in voxels.
    use_tsdf: keep a TSDF (and its weight); when off only surface voxels are allocated/updated.
    surface_voxels: a voxel takes colour/embedding from a pixel when |measured depth - voxel depth| <= this many voxels.
    eviction: "farthest" erases the blocks farthest from the current camera centre; "oldest" erases the blocks
        least recently seen in a frame.
    device: open3d device string for the voxel block grid (CPU:0 only is exercised).
    """

    voxel_size: float = 0.05
    block_resolution: int = 8
    embedding_dim: int = 64
    max_blocks: int = 20000
    memory_mb: float | None = None
    depth_max: float = 5.0
    depth_min: float = 0.1
    trunc_voxels: float = 4.0
    use_tsdf: bool = True
    surface_voxels: float = 0.75
    eviction: str = "farthest"
    device: str = "CPU:0"

    def __post_init__(self) -> None:
        if self.voxel_size <= 0:
            raise FieldInputError(f"voxel_size must be > 0, got {self.voxel_size}")
        if self.block_resolution < 1 or self.embedding_dim < 1 or self.max_blocks < 1:
            raise FieldInputError(
                f"block_resolution/embedding_dim/max_blocks must be >= 1, got "
                f"{self.block_resolution}/{self.embedding_dim}/{self.max_blocks}")
        if not 0 <= self.depth_min < self.depth_max:
            raise FieldInputError(f"need 0 <= depth_min < depth_max, got {self.depth_min}, {self.depth_max}")
        if self.eviction not in ("farthest", "oldest"):
            raise FieldInputError(f"eviction must be 'farthest' or 'oldest', got {self.eviction!r}")
        if self.memory_mb is not None:
            m = self.memory_mb
            if isinstance(m, bool) or not isinstance(m, numbers.Real) or not math.isfinite(m) or m <= 0:
                raise FieldInputError(f"memory_mb must be a finite number > 0 (MiB) or None, got {m!r}")
            if self._budget_cap() < 1:
                raise FieldInputError(
                    f"memory_mb={m:g} MiB holds {self._budget_blocks()} blocks of {self.block_bytes} bytes "
                    f"(D={self.embedding_dim}, {self.block_resolution}^3 voxels); a cap of one block needs "
                    f"{_capacity_for(1)} blocks = {_capacity_for(1) * self.block_bytes / 2**20:.2f} MiB")

    @property
    def bytes_per_voxel(self) -> int:
        """Stored bytes per voxel: obs 4, colour 12, embedding 2 D (float16), seen 4, tsdf + weight 8."""
        return 4 + 12 + 2 * self.embedding_dim + 4 + (8 if self.use_tsdf else 0)

    @property
    def block_bytes(self) -> int:
        """Stored bytes per block: block_resolution**3 voxels of ``bytes_per_voxel``."""
        return self.block_resolution ** 3 * self.bytes_per_voxel

    def _budget_blocks(self) -> int:
        return int(self.memory_mb * 2**20 // self.block_bytes)

    def _budget_cap(self) -> int:
        """Largest cap whose capacity fits in ``memory_mb`` (0 when none does)."""
        n = self._budget_blocks()
        cap = max(0, int((n - 64) / 1.25))
        while cap > 0 and _capacity_for(cap) > n:  # float rounding of the 1.25 factor
            cap -= 1
        while _capacity_for(cap + 1) <= n:
            cap += 1
        return cap

    @property
    def block_cap(self) -> int:
        """Active blocks kept: ``max_blocks``, or the budget's cap when ``memory_mb`` is given and it is smaller."""
        return self.max_blocks if self.memory_mb is None else min(self.max_blocks, self._budget_cap())

    @property
    def capacity_blocks(self) -> int:
        """Most blocks the storage ever holds: int(1.25 * block_cap) + 64."""
        return _capacity_for(self.block_cap)


def _capacity_for(cap: int) -> int:
    """Storage blocks for a block cap: a frame's new blocks must fit before eviction brings it back to the cap."""
    return int(cap * 1.25) + 64


def _lazy_zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zero-filled array on an anonymous private memory map: pages take memory only once written."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    if n == 0:
        return np.zeros(shape, dtype)
    mm = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mm, dtype=dtype).reshape(shape)  # the array keeps the map alive; unmapped with it


@dataclass
class IntegrateStats:
    ms: float
    active_blocks: int
    new_blocks: int
    evicted_blocks: int


@dataclass
class Goal:
    """One connected group of matching voxels; score = mean of its top-k voxel similarities (k = min(10, size))."""

    position: np.ndarray
    extent: np.ndarray
    score: float
    num_voxels: int


@dataclass
class QueryResult:
    scores: np.ndarray
    xyz: np.ndarray
    goals: list[Goal] = field(default_factory=list)


def _encode_keys(keys: np.ndarray) -> np.ndarray:
    """(N,3) integer block keys -> (N,) int64, order-free and collision-free for |key| < 2**20."""
    k = keys.astype(np.int64) + (1 << 20)
    return (k[:, 0] << 42) | (k[:, 1] << 21) | k[:, 2]


def _check_pose(T: np.ndarray, name: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise FieldInputError(f"{name} must be a finite (4,4) matrix, got shape {T.shape}")
    return T


class FeatureField:
    """TSDF + colour + embedding voxel field (observed voxels are those with an observation weight > 0).

    Storage grows with the blocks written (see the module docstring); ``allocated_bytes`` says how much.
    """

    def __init__(self, *, config: FieldConfig) -> None:
        self.config = config
        self._device = o3c.Device(config.device)
        r = config.block_resolution
        self._r3 = r ** 3
        self._cap = config.block_cap
        # capacity headroom so a frame's new blocks fit before eviction runs
        self._capacity = config.capacity_blocks
        names = ["obs", "color", "embedding", "seen"]
        dtypes = [np.float32, np.float32, np.float16, np.float32]
        chans = [1, 3, config.embedding_dim, 1]
        if config.use_tsdf:
            names = ["tsdf", "weight"] + names
            dtypes = [np.float32, np.float32] + dtypes
            chans = [1, 1] + chans
        self._names = names
        self._layout = list(zip(names, dtypes, chans))
        # only computes the blocks a depth frame touches (its own hash map stays empty: one block of one byte)
        self._vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("unused",), attr_dtypes=(o3c.uint8,), attr_channels=(1,),
            voxel_size=config.voxel_size, block_resolution=r, block_count=1, device=self._device)
        self._new_storage()
        self._frame = 0
        self._cache: dict | None = None
        self._warned_overflow = False
        loc = np.arange(self._r3, dtype=np.int64)
        # voxel offsets inside a block in open3d's order (x fastest), in metres
        self._local = (np.stack([loc % r, (loc // r) % r, loc // (r * r)], axis=1) * config.voxel_size
                       ).astype(np.float32)

    def _new_storage(self) -> None:
        """A fresh block hash map for the whole capacity and lazily backed, zero attribute arrays."""
        self._hm = o3c.HashMap(self._capacity, o3c.int32, (3,), o3c.uint8, (1,), self._device)
        n = self._capacity * self._r3
        self._store = {name: _lazy_zeros((n, c), dt) for name, dt, c in self._layout}
        self._high_water = 0  # buffer indices below it have been handed out (their pages are backed)

    # ------------------------------------------------------------------ attributes
    def _attr(self, name: str) -> np.ndarray:
        """Flat (capacity*R^3, C) attribute array (embedding float16, the others float32)."""
        return self._store[name]

    def _keys_all(self) -> np.ndarray:
        """(capacity, 3) int32 block keys by buffer index (entries of free indices are stale)."""
        return self._hm.key_tensor().numpy().reshape(-1, 3)

    @property
    def bytes_per_voxel(self) -> int:
        return self.config.bytes_per_voxel

    @property
    def block_cap(self) -> int:
        """Active blocks kept after each frame (``max_blocks``, lowered by ``memory_mb`` when that is smaller)."""
        return self._cap

    @property
    def capacity_blocks(self) -> int:
        """Most blocks the storage can ever hold: int(1.25 * block_cap) + 64."""
        return self._capacity

    @property
    def capacity_bytes(self) -> int:
        """Voxel storage at ``capacity_blocks`` (what the field takes at most; <= memory_mb when that is given)."""
        return self._capacity * self.config.block_bytes

    @property
    def active_blocks(self) -> int:
        return int(self._hm.size())

    @property
    def allocated_blocks(self) -> int:
        """Blocks whose storage has been handed out so far (high-water mark: eviction reuses, never returns)."""
        return self._high_water

    @property
    def allocated_bytes(self) -> int:
        """Voxel storage of ``allocated_blocks``: the memory the field's storage has taken (at most; pages of a
        block that were never written stay unbacked)."""
        return self._high_water * self.config.block_bytes

    @property
    def memory_bytes(self) -> int:
        """Bytes of voxel storage in active blocks (hashmap keys excluded)."""
        return self.active_blocks * self.config.block_bytes

    @property
    def reserved_bytes(self) -> int:
        """Memory the field holds: ``allocated_bytes`` plus the block hash map's buffers (about 17 bytes per block
        of capacity: int32 x 3 key, uint8 value, int32 free-list entry). Grows with use, from about 0.4 MB at the
        default cap (it was the whole capacity, 1.9 GB at D=64, before storage grew with use)."""
        return self.allocated_bytes + self._capacity * 17

    @property
    def num_voxels(self) -> int:
        return int(self._observed()[0].size)

    def _active_buf(self) -> np.ndarray:
        return self._hm.active_buf_indices().numpy().astype(np.int64)

    def _observed(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat voxel indices, xyz) of voxels with obs > 0."""
        if self._cache is None:
            buf = self._active_buf()
            if buf.size == 0:
                self._cache = {"idx": np.zeros(0, np.int64), "xyz": np.zeros((0, 3), np.float32)}
            else:
                idx = (buf[:, None] * self._r3 + np.arange(self._r3)[None, :]).ravel()
                keep = self._attr("obs")[idx, 0] > 0
                idx = idx[keep]
                self._cache = {"idx": idx, "xyz": self._voxel_xyz(idx)}
        return self._cache["idx"], self._cache["xyz"]

    def _voxel_xyz(self, flat_idx: np.ndarray) -> np.ndarray:
        """World coordinates of voxel centres for flat indices (block key from the hashmap key buffer)."""
        keys = self._keys_all()[: self._high_water]
        origin = (keys.astype(np.float64) * (self.config.block_resolution * self.config.voxel_size)
                  ).astype(np.float32)
        return origin[flat_idx // self._r3] + self._local[flat_idx % self._r3]

    # ------------------------------------------------------------------ integrate
    def integrate(self, depth_m: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                  pixel_embeddings: np.ndarray | None = None, color: np.ndarray | None = None) -> IntegrateStats:
        """Fuse one depth frame (metres, optical frame pose in world) with optional embeddings and colour."""
        t0 = time.perf_counter()
        cfg = self.config
        depth = np.asarray(depth_m)
        if depth.ndim != 2 or depth.dtype != np.float32:
            raise FieldInputError(f"depth_m must be (H,W) float32, got {depth.shape} {depth.dtype}")
        H, W = depth.shape
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise FieldInputError(f"K must be (3,3), got {K.shape}")
        T = _check_pose(T_world_cam, "T_world_cam")
        if pixel_embeddings is not None:
            pe = np.asarray(pixel_embeddings)
            if pe.ndim != 3 or pe.shape[2] != cfg.embedding_dim or pe.dtype != np.float32:
                raise FieldInputError(
                    f"pixel_embeddings must be (h,w,{cfg.embedding_dim}) float32, got {pe.shape} {pe.dtype}")
        if color is not None:
            color = np.asarray(color)
            if color.shape != (H, W, 3) or color.dtype != np.uint8:
                raise FieldInputError(f"color must be ({H},{W},3) uint8, got {color.shape} {color.dtype}")
        depth = np.where((depth >= cfg.depth_min) & (depth <= cfg.depth_max) & np.isfinite(depth), depth, 0.0
                         ).astype(np.float32)
        T_cam_world = np.linalg.inv(T)
        hm = self._hm
        trunc_mult = cfg.trunc_voxels if cfg.use_tsdf else cfg.surface_voxels + 1.0
        coords = self._vbg.compute_unique_block_coordinates(
            o3d.t.geometry.Image(o3c.Tensor(depth)), o3c.Tensor(K), o3c.Tensor(T_cam_world),
            depth_scale=1.0, depth_max=cfg.depth_max, trunc_voxel_multiplier=float(trunc_mult))
        n_new = 0
        if coords.shape[0] > self._capacity:  # one frame alone overflows the storage: keep its nearest blocks
            coords = self._nearest_blocks(coords.numpy(), T[:3, 3])
        if coords.shape[0] > 0:
            free = self._capacity - self.active_blocks
            if coords.shape[0] > free:  # make room before activation; keep the map inside its capacity
                self._evict(need=coords.shape[0] - free, cam=T[:3, 3], protect=coords.numpy().astype(np.int64))
            buf_t, new_t = hm.activate(coords)
            if hm.capacity() != self._capacity:  # a rehash would move every block: never let it pass silently
                raise RuntimeError(f"block hash map grew from {self._capacity} to {hm.capacity()} blocks")
            new_mask = new_t.numpy().astype(bool)
            buf_new = buf_t.numpy().astype(np.int64)[new_mask]
            n_new = int(buf_new.size)
            if n_new:
                self._reset_blocks(buf_new)
            buf_t, _ = hm.find(coords)
            buf = buf_t.numpy().astype(np.int64)
            self._update(buf, depth, K, T_cam_world, pixel_embeddings, color)
        evicted = 0
        if self.active_blocks > self._cap:
            evicted = self._evict(need=self.active_blocks - self._cap, cam=T[:3, 3], protect=None)
        self._frame += 1
        self._cache = None
        return IntegrateStats(ms=(time.perf_counter() - t0) * 1e3, active_blocks=self.active_blocks,
                              new_blocks=n_new, evicted_blocks=evicted)

    def _nearest_blocks(self, coords: np.ndarray, cam: np.ndarray) -> o3c.Tensor:
        """The ``capacity_blocks`` block keys of ``coords`` nearest the camera centre (a frame that alone
        touches more blocks than the storage holds: only with a very small cap)."""
        if not self._warned_overflow:
            LOG.warning("a frame touches %d blocks, more than the field's capacity of %d (block cap %d): "
                        "fusing the %d nearest the camera", coords.shape[0], self._capacity, self._cap,
                        self._capacity)
            self._warned_overflow = True
        r, vs = self.config.block_resolution, self.config.voxel_size
        dist = np.linalg.norm((coords.astype(np.float64) + 0.5) * r * vs - cam[None, :], axis=1)
        keep = np.argsort(dist, kind="stable")[: self._capacity]
        return o3c.Tensor(np.ascontiguousarray(coords[keep]).astype(np.int32))

    def _reset_blocks(self, buf: np.ndarray) -> None:
        """Zero newly activated blocks. Slots at or above the high-water mark were never written (the map's pages
        are still zero, and stay unbacked until fused into), so only reused slots are cleared."""
        reused = buf[buf < self._high_water]
        self._high_water = max(self._high_water, int(buf.max()) + 1)
        if reused.size:
            idx = (reused[:, None] * self._r3 + np.arange(self._r3)[None, :]).ravel()
            for name in self._names:
                self._attr(name)[idx] = 0

    def _update(self, buf: np.ndarray, depth: np.ndarray, K: np.ndarray, T_cw: np.ndarray,
                pe: np.ndarray | None, color: np.ndarray | None) -> None:
        cfg = self.config
        H, W = depth.shape
        idx = (buf[:, None] * self._r3 + np.arange(self._r3, dtype=np.int64)[None, :]).ravel()
        keys = self._keys_all()[buf].astype(np.float64)
        origin = keys * (cfg.block_resolution * cfg.voxel_size)
        R = T_cw[:3, :3]
        # camera coordinates per block origin + per local offset, broadcast (no per-voxel matmul)
        pc = ((origin @ R.T + T_cw[:3, 3]).astype(np.float32)[:, None, :]
              + (self._local @ R.T.astype(np.float32))[None, :, :]).reshape(-1, 3)
        z = pc[:, 2]
        zs = np.where(z > 1e-6, z, 1.0)
        u = np.floor(pc[:, 0] * (K[0, 0] / zs) + K[0, 2] + 0.5).astype(np.int64)  # nearest pixel
        v = np.floor(pc[:, 1] * (K[1, 1] / zs) + K[1, 2] + 0.5).astype(np.int64)
        ok = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        idx, z, u, v = idx[ok], z[ok], u[ok], v[ok]
        d = depth[v, u]
        sdf = d - z
        valid = d > 0
        vs = cfg.voxel_size
        if cfg.use_tsdf:
            trunc = cfg.trunc_voxels * vs
            band = valid & (sdf >= -trunc)
            bi = idx[band]
            tsdf_new = np.minimum(sdf[band] / trunc, 1.0).astype(np.float32)
            tsdf = self._attr("tsdf")
            w = self._attr("weight")
            w_old = w[bi, 0]
            tsdf[bi, 0] = (tsdf[bi, 0] * w_old + tsdf_new) / (w_old + 1.0)
            w[bi, 0] = w_old + 1.0
        surf = valid & (np.abs(sdf) <= cfg.surface_voxels * vs)
        si, su, sv = idx[surf], u[surf], v[surf]
        if si.size == 0:
            return
        obs = self._attr("obs")
        o_old = obs[si, 0:1]
        inv = 1.0 / (o_old + 1.0)
        if color is not None:
            col = self._attr("color")
            col[si] = (col[si] * o_old + color[sv, su].astype(np.float32)) * inv
        emb = self._attr("embedding")
        if pe is not None:
            h, w_ = pe.shape[:2]
            eu = np.minimum((su * w_) // W, w_ - 1)
            ev = np.minimum((sv * h) // H, h - 1)
            e_new = pe[ev, eu]
        elif color is not None:
            e_new = self._color_feature(color[sv, su])
        else:
            e_new = None
        if e_new is not None:
            emb[si] = ((emb[si].astype(np.float32) * o_old + e_new) * inv).astype(np.float16)
        obs[si, 0] = o_old[:, 0] + 1.0
        self._attr("seen")[idx[band if cfg.use_tsdf else surf] // self._r3 * self._r3, 0] = float(self._frame + 1)

    def _color_feature(self, rgb: np.ndarray) -> np.ndarray:
        """Fallback embedding when no model is given: centred, unit-norm RGB padded with zeros to D."""
        f = np.zeros((rgb.shape[0], self.config.embedding_dim), np.float32)
        c = rgb.astype(np.float32) / 255.0 - 0.5
        n = min(3, self.config.embedding_dim)
        f[:, :n] = c[:, :n]
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-6)

    def _evict(self, *, need: int, cam: np.ndarray, protect: np.ndarray | None) -> int:
        """Erase ``need`` blocks by the configured policy (blocks in ``protect`` go last)."""
        hm = self._hm
        buf = self._active_buf()
        if need <= 0 or buf.size == 0:
            return 0
        keys = self._keys_all()[buf].astype(np.int64)
        r, vs = self.config.block_resolution, self.config.voxel_size
        if self.config.eviction == "farthest":
            centre = (keys + 0.5) * r * vs
            badness = np.linalg.norm(centre - cam[None, :], axis=1)
        else:
            badness = -self._attr("seen")[buf * self._r3, 0].astype(np.float64)
        if protect is not None and protect.size:
            kk = keys @ np.array([1, 1 << 21, 1 << 42], np.int64)
            pk = protect.reshape(-1, 3) @ np.array([1, 1 << 21, 1 << 42], np.int64)
            badness = np.where(np.isin(kk, pk), -np.inf, badness)
        order = np.argsort(-badness, kind="stable")[:need]
        hm.erase(o3c.Tensor(np.ascontiguousarray(keys[order]).astype(np.int32)))
        self._cache = None
        LOG.debug("evicted %d blocks (%s)", order.size, self.config.eviction)
        return int(order.size)

    # ------------------------------------------------------------------ read-out
    def points(self) -> dict[str, np.ndarray]:
        """Observed voxels: xyz (N,3) float32, rgb (N,3) uint8, weight (N,), embedding (N,D) float16."""
        idx, xyz = self._observed()
        out = {"xyz": xyz.copy(),
               "rgb": np.clip(np.rint(self._attr("color")[idx]), 0, 255).astype(np.uint8),
               "weight": self._attr("obs")[idx, 0].copy(),
               "embedding": self._attr("embedding")[idx].copy()}
        if self.config.use_tsdf:
            out["tsdf"] = self._attr("tsdf")[idx, 0].copy()
        return out

    def _unit_embeddings(self) -> np.ndarray:
        self._observed()
        if "unit" not in self._cache:
            e = self._attr("embedding")[self._cache["idx"]].astype(np.float32)
            e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-6)
            self._cache["unit"] = e
        return self._cache["unit"]

    def similarity(self, q: np.ndarray) -> np.ndarray:
        """(N,) cosine similarity of each observed voxel (order of :meth:`points`) to q (max over rows)."""
        q = np.asarray(q, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.config.embedding_dim:
            raise FieldInputError(f"q must be (D,) or (E,D) with D={self.config.embedding_dim}, got {q.shape}")
        e = self._unit_embeddings()
        if e.shape[0] == 0:
            return np.zeros(0, np.float32)
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
        return (e @ qn.T).max(axis=1).astype(np.float32)

    def query(self, q: np.ndarray, *, max_goals: int = 5, min_score: float | None = None,
              top_fraction: float = 0.02, min_voxels: int = 3) -> QueryResult:
        """Cosine similarity per observed voxel (max over rows of q), then goals.

        Voxels pass when score >= min_score (if given) and score is within the top ``top_fraction`` of voxels;
        passing voxels are grouped into 26-connected components on the voxel grid; components with at least
        ``min_voxels`` voxels become goals ranked by the mean of their top-k (k=min(10,size)) similarities.
        """
        q = np.asarray(q, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.config.embedding_dim:
            raise FieldInputError(f"q must be (D,) or (E,D) with D={self.config.embedding_dim}, got {q.shape}")
        if not 0 < top_fraction <= 1:
            raise FieldInputError(f"top_fraction must be in (0,1], got {top_fraction}")
        e = self._unit_embeddings()
        xyz = self._cache["xyz"]
        if e.shape[0] == 0:
            return QueryResult(scores=np.zeros(0, np.float32), xyz=xyz, goals=[])
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
        s = e @ qn.T
        scores = s.max(axis=1) if s.shape[1] > 1 else s[:, 0]
        # relative threshold: the (1 - top_fraction) quantile, estimated on a strided sample above 50k voxels
        sample = scores[:: max(1, scores.size // 50_000)]
        k = max(1, int(np.ceil(top_fraction * sample.size)))
        thr = np.partition(sample, sample.size - k)[sample.size - k]
        sel = scores >= thr
        if min_score is not None:
            sel &= scores >= min_score
        sel_idx = np.flatnonzero(sel)
        goals: list[Goal] = []
        if sel_idx.size:
            grid = np.rint(xyz[sel_idx] / self.config.voxel_size).astype(np.int64)  # lattice points
            labels = connected_components_26(grid)
            ss = scores[sel_idx]
            p = xyz[sel_idx]
            order = np.lexsort((-ss, labels))  # by component, best score first inside each
            lab = labels[order]
            starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
            sizes = np.diff(np.r_[starts, lab.size])
            rank = np.arange(lab.size) - np.repeat(starts, sizes)
            top = rank < 10
            comp = np.repeat(np.arange(starts.size), sizes)
            goal_score = (np.bincount(comp[top], weights=ss[order][top], minlength=starts.size)
                          / np.minimum(sizes, 10))
            ps = p[order]
            lo = np.minimum.reduceat(ps, starts, axis=0)
            hi = np.maximum.reduceat(ps, starts, axis=0)
            mean = np.add.reduceat(ps.astype(np.float64), starts, axis=0) / sizes[:, None]
            ok = np.flatnonzero(sizes >= min_voxels)
            best = ok[np.argsort(-goal_score[ok], kind="stable")][:max_goals]
            goals = [Goal(position=mean[c].astype(np.float32),
                          extent=(hi[c] - lo[c] + self.config.voxel_size).astype(np.float32),
                          score=float(goal_score[c]), num_voxels=int(sizes[c])) for c in best]
        return QueryResult(scores=scores, xyz=xyz, goals=goals[:max_goals])

    def raycast_depth(self, K: np.ndarray, T_world_cam: np.ndarray, shape: tuple[int, int], *,
                      weight_threshold: float = 1.0, max_steps: int = 1000) -> np.ndarray:
        """Depth (H,W) m of the first TSDF zero crossing (+ to -) along each pixel ray; 0 = no hit.

        Ray marching in numpy over the active blocks, sampling the nearest voxel: a ray advances to the next block
        where no block is allocated, one voxel where a voxel has weight < ``weight_threshold``, else
        max(tsdf * trunc, voxel); a sign change between two observed samples is a hit, placed by linear
        interpolation. (open3d's VoxelBlockGrid.ray_cast is not used: on CPU with open3d 0.20 it segfaulted in 5 of
        10 processes ray casting the TUM teddy field, after "Could not generate full range map" warnings.)
        """
        if not self.config.use_tsdf:
            raise FieldInputError("raycast_depth needs use_tsdf=True")
        T = _check_pose(T_world_cam, "T_world_cam")
        K = np.asarray(K, np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise FieldInputError(f"K must be a finite (3,3) intrinsic matrix with fx, fy > 0, got {K.tolist()}")
        H, W = (int(x) for x in shape)
        if H < 1 or W < 1:
            raise FieldInputError(f"shape must be (H, W) >= 1, got {tuple(shape)}")
        out = np.zeros(H * W, np.float32)
        buf = self._active_buf()
        if buf.size == 0:
            return out.reshape(H, W)
        cfg = self.config
        r, vs = cfg.block_resolution, cfg.voxel_size
        trunc = cfg.trunc_voxels * vs
        keys = self._keys_all()[buf].astype(np.int64)
        enc = _encode_keys(keys)
        order = np.argsort(enc)
        enc_sorted, buf_sorted = enc[order], buf[order]
        tsdf_all = self._attr("tsdf")[:, 0]
        w_all = self._attr("weight")[:, 0]
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
        t = np.maximum(t_in, cfg.depth_min)
        t_end = np.minimum(t_out, cfg.depth_max)
        ray = np.flatnonzero(t <= t_end)
        t, t_end = t[ray], t_end[ray]
        t_prev = np.zeros(ray.size, np.float64)
        s_prev = np.full(ray.size, np.nan, np.float64)  # last observed tsdf sample (nan: none)
        for _ in range(max_steps):
            if ray.size == 0:
                break
            g = np.floor((o + t[:, None] * d_world[ray]) / vs + 0.5).astype(np.int64)
            blk = g // r
            loc = g - blk * r
            e = _encode_keys(blk)
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
                vi = buf_sorted[pos[found]] * self._r3 + loc[found, 0] + r * (loc[found, 1] + r * loc[found, 2])
                observed = w_all[vi] >= weight_threshold
                sf = np.where(observed, tsdf_all[vi], np.nan)
                s[found] = sf
                step[found] = np.where(observed, np.maximum(sf * trunc, vs), vs)
            hit = (s_prev > 0) & (s <= 0)
            if hit.any():
                a, b = s_prev[hit], s[hit]
                out[ray[hit]] = t_prev[hit] + (t[hit] - t_prev[hit]) * (a / (a - b))
            t_next = t + step * inv_len[ray]
            keep = ~hit & (t_next <= t_end)
            ray, t_prev, s_prev, t, t_end = ray[keep], t[keep], s[keep], t_next[keep], t_end[keep]
        return out.reshape(H, W)

    def clear(self) -> None:
        """Drop every block and give the storage's memory back (fresh, unbacked maps)."""
        self._store = {}
        self._new_storage()
        self._frame = 0
        self._cache = None

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        buf = self._active_buf()
        keys = self._keys_all()[buf].astype(np.int32)
        idx = (buf[:, None] * self._r3 + np.arange(self._r3)[None, :]).ravel()
        arrays = {"config": np.array(json.dumps(asdict(self.config))),
                  "version": np.array(_FORMAT_VERSION), "frame": np.array(self._frame), "block_keys": keys}
        for name in self._names:
            a = self._attr(name)[idx]
            arrays["attr_" + name] = a
        return arrays

    def save(self, path: str | os.PathLike) -> None:
        """Write the field to one .npz atomically (tmp file in the same directory, fsync, os.replace)."""
        path = Path(path)
        d = path.parent if str(path.parent) else Path(".")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=d)
        except OSError as exc:
            raise FieldSaveError(exc.errno, f"cannot save field to {path}: {exc.strerror}") from exc
        try:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual permissions
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **self._state())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise FieldSaveError(exc.errno, f"cannot save field to {path}: {exc.strerror}") from exc
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, *, max_blocks: int | None = None,
             memory_mb: float | None | object = _FROM_FILE) -> "FeatureField":
        """Read a field saved by :meth:`save`. ``max_blocks`` / ``memory_mb`` replace the file's cap / budget
        (memory_mb None = no budget); a file with more blocks than the resulting cap raises FieldInputError."""
        with np.load(path, allow_pickle=False) as z:
            ver = int(z["version"])
            if ver != _FORMAT_VERSION:
                raise FieldInputError(f"{path}: unsupported field format version {ver}")
            saved = json.loads(str(z["config"]))
            if max_blocks is not None:
                saved["max_blocks"] = max_blocks
            if memory_mb is not _FROM_FILE:
                saved["memory_mb"] = memory_mb
            cfg = FieldConfig(**saved)
            ff = cls(config=cfg)
            keys = z["block_keys"].astype(np.int32)
            ff._frame = int(z["frame"])
            if keys.shape[0]:
                if keys.shape[0] > ff._cap:
                    raise FieldInputError(f"{path}: {keys.shape[0]} blocks exceed the block cap {ff._cap} "
                                          f"(max_blocks {cfg.max_blocks}, memory_mb {cfg.memory_mb})")
                buf_t, _ = ff._hm.activate(o3c.Tensor(keys))
                buf = buf_t.numpy().astype(np.int64)
                ff._high_water = max(ff._high_water, int(buf.max()) + 1)
                idx = (buf[:, None] * ff._r3 + np.arange(ff._r3)[None, :]).ravel()
                for name in ff._names:
                    ff._attr(name)[idx] = z["attr_" + name]
        return ff

    def export_npz(self, path: str | os.PathLike) -> None:
        """Observed voxels as plain arrays (xyz, rgb, weight, embedding)."""
        np.savez(path, **self.points())

    def export_ply(self, path: str | os.PathLike, scores: np.ndarray | None = None) -> None:
        """Observed voxel centres as a point cloud with colours and, if given, a per-point "score" attribute."""
        p = self.points()
        pc = o3d.t.geometry.PointCloud(o3c.Tensor(p["xyz"]))
        pc.point.colors = o3c.Tensor(p["rgb"].astype(np.float32) / 255.0)
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32)
            if scores.shape != (p["xyz"].shape[0],):
                raise FieldInputError(f"scores must have shape ({p['xyz'].shape[0]},), got {scores.shape}")
            pc.point.score = o3c.Tensor(scores[:, None])
        if not o3d.t.io.write_point_cloud(str(path), pc):
            raise FieldSaveError(0, f"open3d could not write {path}")


def connected_components_26(grid: np.ndarray) -> np.ndarray:
    """Labels of 26-connected components of integer voxel coordinates (N,3), by vectorised union-find."""
    n = grid.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    g = grid - grid.min(0) + 1
    dims = g.max(0) + 2
    key = (g[:, 0] * dims[1] + g[:, 1]) * dims[2] + g[:, 2]
    order = np.argsort(key)
    skey = key[order]
    offs = np.array([(dx * dims[1] + dy) * dims[2] + dz
                     for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                     if (dx, dy, dz) > (0, 0, 0)], np.int64)
    src, dst = [], []
    for o in offs:  # 13 neighbour offsets, each vectorised over all voxels (sorted needles: cache-friendly)
        nk = skey + o
        pos = np.searchsorted(skey, nk)
        pos = np.minimum(pos, n - 1)
        hit = skey[pos] == nk
        src.append(order[hit])
        dst.append(order[pos[hit]])
    src = np.concatenate(src)
    dst = np.concatenate(dst)
    parent = np.arange(n)
    if src.size:
        a = np.concatenate([src, dst])  # both directions, grouped by node for reduceat
        b = np.concatenate([dst, src])
        o = np.argsort(a, kind="stable")
        a, b = a[o], b[o]
        starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
        nodes = a[starts]
        while True:  # min-label propagation with pointer jumping until stable
            m = np.minimum(parent[nodes], np.minimum.reduceat(parent[b], starts))
            newp = parent.copy()
            newp[nodes] = m
            np.minimum.at(newp, parent[nodes], m)  # hook the old root onto the smaller label
            for _ in range(4):
                newp = newp[newp]
            if np.array_equal(newp, parent):
                break
            parent = newp
    _, labels = np.unique(parent, return_inverse=True)
    return labels
