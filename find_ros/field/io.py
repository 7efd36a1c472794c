"""Field files: the ``.npz`` a :class:`~find_ros.field.grid.FeatureField` saves (written atomically) and loads,
and point-cloud export.

A field file holds ``config`` (FieldConfig as JSON), ``version``, ``frame`` (frames fused), ``block_keys``
(B,3) int32 and one ``attr_<name>`` array (B * R^3, C) per voxel attribute, blocks in ``block_keys`` order.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import open3d as o3d
import open3d.core as o3c

from find_ros.field.config import FieldConfig, FieldInputError, FieldSaveError

FORMAT_VERSION = 1


def field_arrays(config: FieldConfig, frame: int, block_keys: np.ndarray,
                 attrs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a field file (see the module docstring), in the order they are written."""
    arrays = {"config": np.array(json.dumps(asdict(config))),
              "version": np.array(FORMAT_VERSION), "frame": np.array(frame), "block_keys": block_keys}
    for name, a in attrs.items():
        arrays["attr_" + name] = a
    return arrays


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to one .npz atomically (tmp file in the same directory, fsync, os.replace); on failure
    :class:`FieldSaveError` and the previous file at ``path`` is untouched."""
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
            np.savez(f, **arrays)
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


class SavedField:
    """An open field file: ``config`` (the saved FieldConfig fields); the other arrays are read when asked for."""

    def __init__(self, z: np.lib.npyio.NpzFile, config: dict) -> None:
        self._z = z
        self.config = config

    @property
    def block_keys(self) -> np.ndarray:
        return self._z["block_keys"]

    @property
    def frame(self) -> int:
        return int(self._z["frame"])

    def attr(self, name: str) -> np.ndarray:
        """(B * R^3, C) values of voxel attribute ``name``."""
        return self._z["attr_" + name]


@contextmanager
def open_field_file(path: str | os.PathLike) -> Iterator[SavedField]:
    """Open a field file for reading; :class:`FieldInputError` when its format version is not this one's."""
    with np.load(path, allow_pickle=False) as z:
        ver = int(z["version"])
        if ver != FORMAT_VERSION:
            raise FieldInputError(f"{path}: unsupported field format version {ver}")
        yield SavedField(z, json.loads(str(z["config"])))


def write_point_cloud(path: str | os.PathLike, points: dict[str, np.ndarray], scores: np.ndarray | None) -> None:
    """``points`` (xyz, rgb as from ``FeatureField.points``) as a point cloud file with colours and, if given, a
    per-point "score" attribute (format from the suffix, by open3d)."""
    pc = o3d.t.geometry.PointCloud(o3c.Tensor(points["xyz"]))
    pc.point.colors = o3c.Tensor(points["rgb"].astype(np.float32) / 255.0)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (points["xyz"].shape[0],):
            raise FieldInputError(f"scores must have shape ({points['xyz'].shape[0]},), got {scores.shape}")
        pc.point.score = o3c.Tensor(scores[:, None])
    if not o3d.t.io.write_point_cloud(str(path), pc):
        raise FieldSaveError(0, f"open3d could not write {path}")
