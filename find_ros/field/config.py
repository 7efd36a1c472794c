"""Feature field settings (:class:`FieldConfig`), its errors, and the storage size a configuration takes."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from find_ros.config_fields import setting, validate_settings


class FieldInputError(ValueError):
    """An integrate/query input has the wrong shape, dtype or value."""


class FieldSaveError(OSError):
    """Saving a field failed; the previous file at the target path is untouched."""


@dataclass
class FieldConfig:
    """Feature field settings: each field's default, range and description once (``setting`` metadata).

    The field's storage grows with the blocks written, up to ``capacity_blocks`` = int(1.25 * cap) + 64 blocks
    (room for one frame's new blocks before eviction runs).
    """

    voxel_size: float = setting(0.05, "Voxel edge in metres.", check=lambda v: v > 0, want="> 0")
    block_resolution: int = setting(8, "Voxels per block edge (blocks hold block_resolution**3 voxels).",
                                    range=(1, None))
    embedding_dim: int = setting(64, "Length D of the per-voxel embedding.", range=(1, None))
    max_blocks: int = setting(
        20000, "Cap on active blocks; above it blocks are evicted (see eviction).", range=(1, None))
    memory_mb: float | None = setting(
        None, "Optional budget (MiB, 2**20 bytes) for the voxel storage; None = no budget. When given, the block "
        "cap is the largest whose capacity (int(1.25 * cap) + 64 blocks of block_bytes) fits in the budget, and "
        "the smaller of that and max_blocks wins (block_cap). A budget too small for a cap of one block raises "
        "FieldInputError.", check=lambda m: m is None or (not isinstance(m, bool) and isinstance(m, numbers.Real)
                                                          and math.isfinite(m) and m > 0),
        want="a finite number > 0 (MiB) or None")
    depth_max: float = setting(5.0, "Depth readings beyond this many metres are ignored (> depth_min).")
    depth_min: float = setting(0.1, "Depth readings below this many metres are ignored (>= 0).", range=(0.0, None))
    trunc_voxels: float = setting(4.0, "TSDF truncation distance in voxels.")
    use_tsdf: bool = setting(True, "Keep a TSDF (and its weight); when off only surface voxels are "
                                   "allocated/updated.")
    surface_voxels: float = setting(
        0.75, "A voxel takes colour/embedding from a pixel when |measured depth - voxel depth| <= this many voxels.")
    eviction: str = setting(
        "farthest", "'farthest' erases the blocks farthest from the current camera centre; 'oldest' erases the "
        "blocks least recently seen in a frame.", choices=("farthest", "oldest"))
    device: str = setting("CPU:0", "open3d device string for the voxel block grid (CPU:0 only is exercised).")

    def __post_init__(self) -> None:
        validate_settings(self, FieldInputError)
        if not 0 <= self.depth_min < self.depth_max:
            raise FieldInputError(f"need 0 <= depth_min < depth_max, got {self.depth_min}, {self.depth_max}")
        if self.memory_mb is not None and self._budget_cap() < 1:
            m = self.memory_mb
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


@dataclass
class FieldBridgeConfig:
    """The perception node's feature-field settings (parameters ``field_<name>``, derived from these fields by
    :mod:`find_ros.ros.params`): default, range and description written once here."""

    enable: bool = setting(
        False, "Fuse posed frames into a 3D feature field (grounder pixel embeddings + colour) and publish it on "
        "find/field/cloud; services find/field/query, find/field/save, find/field/load, find/field/clear.")
    voxel_size: float = setting(0.05, "Feature field voxel edge (m).", range=(0.005, 1.0))
    max_blocks: int = setting(
        20000, "Cap on active 8^3-voxel blocks; blocks farthest from the camera are evicted above it. Memory grows "
        "with the blocks fused, (28 + 2 D) bytes per voxel, up to 1.25x the cap + 64 blocks: 20000 blocks at "
        "D=64 reach 1.9 GB, at D=12 0.6 GB (field_reserved_bytes / field_capacity_bytes in find/status). "
        "With field_memory_mb the smaller cap wins.", range=(16, 10_000_000))
    memory_mb: float = setting(
        0.0, "Memory budget (MiB) of the feature field's voxel storage; 0 = none (field_max_blocks alone caps it). "
        "Sets the block cap to the largest whose storage, 1.25x the cap + 64 blocks of 512 x (28 + 2 D) "
        "bytes, fits in it (D=64: 1000 MiB -> 10,451 blocks; D=12: 200 MiB -> 6,250); the smaller of that "
        "and field_max_blocks wins. A budget below one block's share fails activate.", range=(0.0, 1_000_000.0))
    embedding_dim: int = setting(
        0, "Per-voxel embedding length: 0 = the grounder's (hsv-baseline 12, FIND its sem_dim); "
        "any other value must equal it (activate fails otherwise).", range=(0, 4096))
    publish_period_s: float = setting(
        1.0, "Period (s) of the check that republishes find/field/cloud when the field or instruction changed.",
        range=(0.05, 3600.0))
    max_goals: int = setting(5, "Goals returned by find/field/query when the request asks for 0.", range=(1, 100))
    path: str = setting(
        "", "Default file of find/field/save (atomic replace) and find/field/load when the request's path is "
        "empty (empty: such requests are refused).")

    def __post_init__(self) -> None:
        validate_settings(self, FieldInputError)

    @property
    def budget_mb(self) -> float | None:
        """``memory_mb`` as :class:`FieldConfig` takes it: None for 0 (no budget)."""
        return None if float(self.memory_mb) == 0.0 else float(self.memory_mb)


def _capacity_for(cap: int) -> int:
    """Storage blocks for a block cap: a frame's new blocks must fit before eviction brings it back to the cap."""
    return int(cap * 1.25) + 64


def check_pose(T: np.ndarray, name: str) -> np.ndarray:
    """``T`` as a finite (4,4) float64 matrix, else :class:`FieldInputError` naming ``name``."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise FieldInputError(f"{name} must be a finite (4,4) matrix, got shape {T.shape}")
    return T
