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

import logging
import mmap
import os
import time
from dataclasses import dataclass

import numpy as np
import open3d as o3d
import open3d.core as o3c

from find_ros.field import io as field_io
from find_ros.field.config import FieldConfig, FieldInputError, check_pose
from find_ros.field.fusion import fuse_frame, in_range_or_zero
from find_ros.field.query import QueryResult, query_voxels, similarity_scores
from find_ros.field.raycast import raycast_tsdf
from find_ros.voxel_keys import pack_keys

LOG = logging.getLogger(__name__)

_FROM_FILE = object()  # FeatureField.load: keep the saved memory_mb


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

    def _voxels_of(self, buf: np.ndarray) -> np.ndarray:
        """Flat voxel indices of the blocks in storage slots ``buf``, block by block."""
        return (buf[:, None] * self._r3 + np.arange(self._r3)[None, :]).ravel()

    def _observed(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat voxel indices, xyz) of voxels with obs > 0."""
        if self._cache is None:
            buf = self._active_buf()
            if buf.size == 0:
                self._cache = {"idx": np.zeros(0, np.int64), "xyz": np.zeros((0, 3), np.float32)}
            else:
                idx = self._voxels_of(buf)
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
        T = check_pose(T_world_cam, "T_world_cam")
        if pixel_embeddings is not None:
            pe = np.asarray(pixel_embeddings)
            if pe.ndim != 3 or pe.shape[2] != cfg.embedding_dim or pe.dtype != np.float32:
                raise FieldInputError(
                    f"pixel_embeddings must be (h,w,{cfg.embedding_dim}) float32, got {pe.shape} {pe.dtype}")
        if color is not None:
            color = np.asarray(color)
            if color.shape != (H, W, 3) or color.dtype != np.uint8:
                raise FieldInputError(f"color must be ({H},{W},3) uint8, got {color.shape} {color.dtype}")
        depth = in_range_or_zero(depth, cfg.depth_min, cfg.depth_max)
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
            fuse_frame(self._store, buf, self._keys_all()[buf], self._local, depth, K, T_cam_world,
                       pixel_embeddings, color, config=cfg, frame=self._frame)
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
            idx = self._voxels_of(reused)
            for name in self._names:
                self._attr(name)[idx] = 0

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
            badness = np.where(np.isin(pack_keys(keys), pack_keys(protect.reshape(-1, 3))), -np.inf, badness)
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
        return similarity_scores(self._unit_embeddings(), q, embedding_dim=self.config.embedding_dim)

    def query(self, q: np.ndarray, *, max_goals: int = 5, min_score: float | None = None,
              top_fraction: float = 0.02, min_voxels: int = 3) -> QueryResult:
        """Cosine similarity per observed voxel (max over rows of q), then goals (see :func:`query_voxels`)."""
        e = self._unit_embeddings()
        return query_voxels(e, self._cache["xyz"], q, embedding_dim=self.config.embedding_dim,
                            voxel_size=self.config.voxel_size, max_goals=max_goals, min_score=min_score,
                            top_fraction=top_fraction, min_voxels=min_voxels)

    def raycast_depth(self, K: np.ndarray, T_world_cam: np.ndarray, shape: tuple[int, int], *,
                      weight_threshold: float = 1.0, max_steps: int = 1000) -> np.ndarray:
        """Depth (H,W) m of the first TSDF zero crossing (+ to -) along each pixel ray; 0 = no hit
        (see :func:`raycast_tsdf`)."""
        if not self.config.use_tsdf:
            raise FieldInputError("raycast_depth needs use_tsdf=True")
        buf = self._active_buf()
        return raycast_tsdf(K, T_world_cam, shape, config=self.config, block_keys=self._keys_all()[buf],
                            block_index=buf, tsdf=self._attr("tsdf")[:, 0], weight=self._attr("weight")[:, 0],
                            weight_threshold=weight_threshold, max_steps=max_steps)

    def clear(self) -> None:
        """Drop every block and give the storage's memory back (fresh, unbacked maps)."""
        self._store = {}
        self._new_storage()
        self._frame = 0
        self._cache = None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the field to one .npz atomically (tmp file in the same directory, fsync, os.replace)."""
        buf = self._active_buf()
        keys = self._keys_all()[buf].astype(np.int32)
        idx = self._voxels_of(buf)
        attrs = {name: self._attr(name)[idx] for name in self._names}
        field_io.write_npz_atomic(path, field_io.field_arrays(self.config, self._frame, keys, attrs))

    @classmethod
    def load(cls, path: str | os.PathLike, *, max_blocks: int | None = None,
             memory_mb: float | None | object = _FROM_FILE) -> "FeatureField":
        """Read a field saved by :meth:`save`. ``max_blocks`` / ``memory_mb`` replace the file's cap / budget
        (memory_mb None = no budget); a file with more blocks than the resulting cap raises FieldInputError."""
        with field_io.open_field_file(path) as saved:
            fields = saved.config
            if max_blocks is not None:
                fields["max_blocks"] = max_blocks
            if memory_mb is not _FROM_FILE:
                fields["memory_mb"] = memory_mb
            cfg = FieldConfig(**fields)
            ff = cls(config=cfg)
            keys = saved.block_keys.astype(np.int32)
            ff._frame = saved.frame
            if keys.shape[0]:
                if keys.shape[0] > ff._cap:
                    raise FieldInputError(f"{path}: {keys.shape[0]} blocks exceed the block cap {ff._cap} "
                                          f"(max_blocks {cfg.max_blocks}, memory_mb {cfg.memory_mb})")
                buf_t, _ = ff._hm.activate(o3c.Tensor(keys))
                buf = buf_t.numpy().astype(np.int64)
                ff._high_water = max(ff._high_water, int(buf.max()) + 1)
                idx = ff._voxels_of(buf)
                for name in ff._names:
                    ff._attr(name)[idx] = saved.attr(name)
        return ff

    def export_npz(self, path: str | os.PathLike) -> None:
        """Observed voxels as plain arrays (xyz, rgb, weight, embedding)."""
        np.savez(path, **self.points())

    def export_ply(self, path: str | os.PathLike, scores: np.ndarray | None = None) -> None:
        """Observed voxel centres as a point cloud with colours and, if given, a per-point "score" attribute."""
        field_io.write_point_cloud(path, self.points(), scores)
