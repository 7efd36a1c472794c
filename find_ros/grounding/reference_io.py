"""The on-disk format of stored references: atomic writes, removals and reads of one entry each.

See :mod:`find_ros.grounding.reference_store` for the directory layout. Every write goes through a temporary file or
directory that is fsynced and renamed into place, so a crash leaves the old entry, the new one, or nothing.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from find_ros.grounding.reference_errors import InvalidStoredReference
from find_ros.grounding.stored_reference import StoredReference

__all__ = [
    "FORMAT_VERSION",
    "CROP_FILE",
    "MASK_FILE",
    "META_FILE",
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "ASIDE_PREFIX",
    "CorruptEntry",
    "read_entry",
    "write_entry",
    "trash_entry",
    "replace_meta",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""``format_version`` written to ``meta.json``; entries with a newer version are skipped on load."""

CROP_FILE, MASK_FILE, META_FILE = "crop.png", "mask.png", "meta.json"
TMP_PREFIX, TRASH_PREFIX, ASIDE_PREFIX = ".tmp-", ".trash-", ".corrupt-"


class CorruptEntry(Exception):
    """An on-disk entry that cannot be loaded (internal: logged and skipped)."""


# ------------------------------------------------------------------------------------------ files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _encode_png(image: np.ndarray, what: str) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"OpenCV could not encode the {what} as PNG ({image.shape} {image.dtype})")
    return buf.tobytes()


def _unique(directory: Path, prefix: str, name: str) -> Path:
    return directory / f"{prefix}{name}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------ meta.json


def _meta(ref: StoredReference, sequence: int) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "name": ref.name,
        "source_frame": ref.source_frame,
        "stamp_ns": ref.stamp_ns,
        "camera_pose": None if ref.camera_pose is None else ref.camera_pose.tolist(),
        "world_position": None if ref.world_position is None else ref.world_position.tolist(),
        "score": None if math.isnan(ref.score) else ref.score,
        "origin": ref.origin,
        "created": ref.created,
        "sequence": sequence,
        "has_mask": ref.mask is not None,
        "crop_size": [int(ref.crop.shape[1]), int(ref.crop.shape[0])],
        "box": None if ref.box is None else list(ref.box),
    }


def _meta_bytes(ref: StoredReference, sequence: int) -> bytes:
    return (json.dumps(_meta(ref, sequence), indent=1, allow_nan=False) + "\n").encode()


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptEntry(f"{meta_path} is unreadable: {e}") from None
    if not isinstance(meta, dict):
        raise CorruptEntry(f"{meta_path} is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise CorruptEntry(f"{meta_path} has format_version {version!r} (this code reads 1..{FORMAT_VERSION})")
    if meta.get("name") != path.name:
        raise CorruptEntry(f"{meta_path} names {meta.get('name')!r}, but the directory is {path.name!r}")
    return meta


# ------------------------------------------------------------------------------------------ entries


def _read_images(path: Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    crop_bgr = cv2.imread(str(path / CROP_FILE), cv2.IMREAD_COLOR)
    if crop_bgr is None:
        raise CorruptEntry(f"{path / CROP_FILE} is missing or not an image")
    crop = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2RGB)
    mask = None
    if meta.get("has_mask", (path / MASK_FILE).exists()):
        m = cv2.imread(str(path / MASK_FILE), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise CorruptEntry(f"{path / MASK_FILE} is missing or not an image")
        mask = m > 127
    return crop, mask


def read_entry(path: Path) -> tuple[StoredReference, int]:
    """The reference stored in the directory ``path`` and its sequence number; :class:`CorruptEntry` if unreadable."""
    meta_path = path / META_FILE
    meta = _read_meta(path)
    crop, mask = _read_images(path, meta)
    score = meta.get("score")
    sequence = meta.get("sequence", 0)
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise CorruptEntry(f"{meta_path} has sequence {sequence!r} (an integer expected)")
    try:
        ref = StoredReference(
            name=meta["name"], crop=crop, mask=mask, source_frame=meta["source_frame"], stamp_ns=meta["stamp_ns"],
            camera_pose=meta.get("camera_pose"), world_position=meta.get("world_position"),
            score=math.nan if score is None else score, origin=meta["origin"], created=meta.get("created", 0.0),
            box=meta.get("box"),
        )
    except KeyError as e:
        raise CorruptEntry(f"{meta_path} lacks the field {e.args[0]!r}") from None
    except InvalidStoredReference as e:
        raise CorruptEntry(f"{path} holds an invalid reference: {e}") from None
    return ref, sequence


def write_entry(directory: Path, ref: StoredReference, sequence: int) -> None:
    """Write ``ref`` as ``directory/<name>`` atomically; a stale entry already there is moved aside first."""
    target = directory / ref.name
    crop_png = _encode_png(cv2.cvtColor(ref.crop, cv2.COLOR_RGB2BGR), "crop")
    mask_png = None if ref.mask is None else _encode_png(ref.mask.astype(np.uint8) * 255, "mask")
    tmp = _unique(directory, TMP_PREFIX, ref.name)
    try:
        tmp.mkdir()
        _write_file(tmp / CROP_FILE, crop_png)
        if mask_png is not None:
            _write_file(tmp / MASK_FILE, mask_png)
        _write_file(tmp / META_FILE, _meta_bytes(ref, sequence))
        _fsync_dir(tmp)
        if target.exists() or target.is_symlink():
            # an entry the store did not load (corrupt, or beyond max_references): keep it for inspection
            aside = _unique(directory, ASIDE_PREFIX, ref.name)
            log.warning("reference directory %s was not loaded; moving it to %s before storing %r",
                        target, aside, ref.name)
            os.replace(target, aside)
        os.replace(tmp, target)  # the atomic step
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def trash_entry(directory: Path, name: str) -> None:
    """Remove ``directory/<name>`` (if there): rename it to a trash dot-directory, then delete that."""
    target = directory / name
    if target.exists():
        trash = _unique(directory, TRASH_PREFIX, name)
        os.replace(target, trash)  # the atomic step: from here on, load no longer sees it
        _fsync_dir(directory)
        shutil.rmtree(trash, ignore_errors=True)


def replace_meta(entry: Path, ref: StoredReference, sequence: int) -> None:
    """Replace ``entry/meta.json`` with ``ref``'s metadata atomically (``os.replace`` of a fsynced temporary)."""
    tmp = entry / f"{TMP_PREFIX}{META_FILE}-{uuid.uuid4().hex[:8]}"
    try:
        _write_file(tmp, _meta_bytes(ref, sequence))
        os.replace(tmp, entry / META_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(entry)
