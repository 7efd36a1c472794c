"""Stored references ("this one"): named crops + masks kept across restarts, and names in instruction text.

A user teaches the robot an object by clicking it; the click becomes a mask, and the crop + mask become a
:class:`StoredReference` with a name (given, or ``ref1``, ``ref2``, ...). Instructions may then name it: ``"the <mug>
next to the red cube"`` is resolved by :func:`resolve_named_references` into an ordinary interleaved instruction
(``"the <0> next to the red cube"`` + the stored crop as reference 0).

Pure numpy / OpenCV; no rclpy and no message types (the ROS side lives in ``find_ros.ros``).

Names
-----
``[A-Za-z][A-Za-z0-9_-]*``, at most ``max_name_chars`` characters. A name can never be all digits (``<0>`` is an index
placeholder) because it must start with a letter. Names are case-sensitive, but two names that differ only in case
are refused as duplicates (the store's directory may live on a case-insensitive filesystem).

On disk (``directory`` given)
-----------------------------
One sub-directory per reference, named after it::

    <directory>/<name>/crop.png    RGB crop (stored as an 8-bit colour PNG)
    <directory>/<name>/mask.png    only when the reference has a mask: 8-bit grey, 255 inside
    <directory>/<name>/meta.json   name, source_frame, stamp_ns, camera_pose (4x4 T_world_camera or null),
                                   world_position (x, y, z or null), score (null = unknown), origin, created (unix s),
                                   sequence (insertion order), format_version

Writes are atomic: a reference is written into a temporary sibling directory ``.tmp-<name>-<random>`` (files fsynced)
and renamed into place; a removal renames the directory to ``.trash-<name>-<random>`` and then deletes it; a position
update replaces ``meta.json`` through ``os.replace``. A crash at any point leaves either the whole old reference, the
whole new one, or nothing, plus at most a dot-directory that loading ignores. Loading skips (and logs) an entry it
cannot read instead of failing, so one corrupt reference never costs the others.

One directory belongs to one store (one node) at a time; the store is thread-safe within its process.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from find_ros.instruction import Instruction, InstructionError, Reference, parse_instruction

__all__ = [
    "ORIGINS",
    "FORMAT_VERSION",
    "NAME_PATTERN",
    "ReferenceStoreError",
    "InvalidStoredReference",
    "BadReferenceName",
    "DuplicateReferenceName",
    "UnknownReference",
    "ReferenceStoreFull",
    "NamedReferenceError",
    "StoredReference",
    "ReferenceStore",
    "ResolvedInstruction",
    "resolve_named_references",
]

log = logging.getLogger(__name__)

ORIGINS: tuple[str, ...] = ("point", "pixel", "image")
"""How a reference was made: a 3D click, a pixel click, or an image (+ optional mask) given directly."""
FORMAT_VERSION = 1
"""``format_version`` written to ``meta.json``; entries with a newer version are skipped on load."""
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
"""A reference name (full match)."""
AUTO_NAME_PREFIX = "ref"
"""Automatic names are ``ref1``, ``ref2``, ...: the lowest unused number."""

_CROP_FILE, _MASK_FILE, _META_FILE = "crop.png", "mask.png", "meta.json"
_TMP_PREFIX, _TRASH_PREFIX, _ASIDE_PREFIX = ".tmp-", ".trash-", ".corrupt-"
_INT_PLACEHOLDER = re.compile(r"\d+")
# A placeholder candidate: "<" + a token with no whitespace at either end + ">". "<mug>", "<0>", "<my mug>" match;
# "a < b and c > d" (spaces inside the brackets' edges) stays plain text.
_ANGLE_TOKEN = re.compile(r"<([^<>\s](?:[^<>]*[^<>\s])?)>")


# --------------------------------------------------------------------------------------------------- exceptions


class ReferenceStoreError(ValueError):
    """A store request that cannot be honoured; the message names the offending value, nothing was changed."""


class InvalidStoredReference(ReferenceStoreError):
    """A :class:`StoredReference` field with the wrong type, shape or value; ``field`` and ``value`` name it."""

    def __init__(self, message: str, *, field: str, value: Any) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class BadReferenceName(ReferenceStoreError):
    """A name that breaks a naming rule; ``name`` is the name, ``rule`` the rule it breaks."""

    def __init__(self, message: str, *, name: Any, rule: str) -> None:
        super().__init__(message)
        self.name = name
        self.rule = rule


class DuplicateReferenceName(ReferenceStoreError):
    """The name (or one that differs only in case, ``existing``) is already stored."""

    def __init__(self, message: str, *, name: str, existing: str) -> None:
        super().__init__(message)
        self.name = name
        self.existing = existing


class UnknownReference(ReferenceStoreError):
    """No reference of that name; ``known`` lists the stored names."""

    def __init__(self, message: str, *, name: str, known: tuple[str, ...]) -> None:
        super().__init__(message)
        self.name = name
        self.known = known


class ReferenceStoreFull(ReferenceStoreError):
    """The store already holds ``max_references`` references."""

    def __init__(self, message: str, *, name: str, max_references: int) -> None:
        super().__init__(message)
        self.name = name
        self.max_references = max_references


class NamedReferenceError(InstructionError):
    """Instruction text naming references that do not exist (``unknown``) or with invalid names (``invalid``).

    ``known`` lists the stored names at the time of the call.
    """

    def __init__(self, message: str, *, unknown: tuple[str, ...] = (), invalid: tuple[str, ...] = (),
                 known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unknown = unknown
        self.invalid = invalid
        self.known = known


# --------------------------------------------------------------------------------------------------- the reference


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True, order="C")
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class StoredReference:
    """One stored reference: an RGB crop with its optional mask and where / when it was taken.

    Arrays are copied and made read-only on construction. ``name`` may be ``""`` before the store names it
    (:meth:`ReferenceStore.add` returns the named copy).
    """

    name: str
    """The reference's name (``""``: not yet named; the store assigns ``ref1``, ``ref2``, ...)."""
    crop: np.ndarray
    """RGB crop, (H, W, 3) uint8, H and W >= 2."""
    mask: np.ndarray | None
    """The object inside the crop, (H, W) bool with at least one pixel set; None = the whole crop."""
    source_frame: str
    """Frame id of the image the crop came from (the colour optical frame; ``""`` when unknown)."""
    stamp_ns: int
    """Stamp of that image, nanoseconds since the epoch (>= 0)."""
    camera_pose: np.ndarray | None
    """4x4 float64 T_world_camera of that image (rigid, finite); None when no pose was known."""
    world_position: np.ndarray | None
    """(3,) float64 last known position of the object in the world frame; None when unknown."""
    score: float
    """Confidence of the mask in [0, 1]; nan when unknown (e.g. a mask given by the user)."""
    origin: str
    """How it was made: ``"point"`` (3D click), ``"pixel"`` (image click) or ``"image"`` (image given directly)."""
    created: float = dataclasses.field(default_factory=time.time)
    """Unix time (s) at which the reference was made."""
    box: tuple[int, int, int, int] | None = None
    """Where the crop lies in the source image, ``(x0, y0, x1, y1)`` pixels (end exclusive); None when the crop is
    an image given directly."""

    def __post_init__(self) -> None:
        def bad(field: str, value: Any, why: str) -> InvalidStoredReference:
            return InvalidStoredReference(f"stored reference {field} {why}", field=field, value=value)

        if not isinstance(self.name, str):
            raise bad("name", self.name, f"must be a string, got {type(self.name).__name__}")
        crop = self.crop
        if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise bad("crop", getattr(crop, "shape", type(crop).__name__),
                      f"must be an (H, W, 3) uint8 array, got {getattr(crop, 'shape', type(crop).__name__)} "
                      f"{getattr(crop, 'dtype', '')}".rstrip())
        if crop.shape[0] < 2 or crop.shape[1] < 2:
            raise bad("crop", crop.shape, f"is too small: {crop.shape[1]}x{crop.shape[0]} (at least 2x2)")
        object.__setattr__(self, "crop", _frozen(crop))
        if self.mask is not None:
            m = self.mask
            if not isinstance(m, np.ndarray) or m.shape != crop.shape[:2]:
                raise bad("mask", getattr(m, "shape", type(m).__name__),
                          f"shape {getattr(m, 'shape', type(m).__name__)} does not match the crop's "
                          f"{crop.shape[:2]}")
            if m.dtype != bool and not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
                raise bad("mask", m.dtype, f"dtype {m.dtype} is not bool or numeric")
            mb = m.astype(bool) if m.dtype != bool else m
            if not mb.any():
                raise bad("mask", int(mb.sum()), "is empty (no pixel set)")
            object.__setattr__(self, "mask", _frozen(mb))
        if not isinstance(self.source_frame, str) or not self.source_frame.isprintable():
            raise bad("source_frame", self.source_frame, "must be a printable string")
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, (int, np.integer)) or self.stamp_ns < 0:
            raise bad("stamp_ns", self.stamp_ns, f"must be a non-negative integer, got {self.stamp_ns!r}")
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        if self.camera_pose is not None:
            try:
                T = np.asarray(self.camera_pose, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise bad("camera_pose", self.camera_pose, f"is not numeric ({e})") from None
            if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                raise bad("camera_pose", T.shape, f"must be a finite 4x4 matrix, got shape {T.shape}")
            R = T[:3, :3]
            if (not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0), atol=1e-6)
                    or not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0):
                raise bad("camera_pose", T.tolist(), "is not a rigid transform (rotation + translation, last row "
                          "0 0 0 1)")
            object.__setattr__(self, "camera_pose", _frozen(T))
        if self.world_position is not None:
            object.__setattr__(self, "world_position", _frozen(_position(self.world_position)))
        try:
            score = float(self.score)
        except (TypeError, ValueError):
            raise bad("score", self.score, f"must be a number in [0, 1] or nan, got {self.score!r}") from None
        if not (math.isnan(score) or 0.0 <= score <= 1.0):
            raise bad("score", score, f"must be in [0, 1] or nan, got {score}")
        object.__setattr__(self, "score", score)
        if self.origin not in ORIGINS:
            raise bad("origin", self.origin, f"must be one of {', '.join(ORIGINS)}, got {self.origin!r}")
        try:
            created = float(self.created)
        except (TypeError, ValueError):
            raise bad("created", self.created, f"must be a unix time in seconds, got {self.created!r}") from None
        if not math.isfinite(created):
            raise bad("created", created, "must be finite")
        object.__setattr__(self, "created", created)
        if self.box is not None:
            try:
                b = tuple(int(v) for v in self.box)
            except (TypeError, ValueError):
                raise bad("box", self.box, f"must be 4 integers (x0, y0, x1, y1), got {self.box!r}") from None
            if len(b) != 4 or b[0] < 0 or b[1] < 0 or b[2] - b[0] != crop.shape[1] or b[3] - b[1] != crop.shape[0]:
                raise bad("box", self.box, f"must be (x0, y0, x1, y1) >= 0 spanning the {crop.shape[1]}x"
                                           f"{crop.shape[0]} crop, got {self.box!r}")
            object.__setattr__(self, "box", b)

    def to_reference(self) -> Reference:
        """The crop + mask as an instruction :class:`~find_ros.instruction.Reference`."""
        return Reference(image=self.crop, mask=self.mask)

    def thumbnail(self, *, max_side: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (h, w, 3) uint8, mask (h, w) uint8 255 inside) with the long side at most ``max_side`` pixels.

        Never upscales. A reference without a mask gets an all-255 mask (the whole crop is the reference).
        """
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 2:
            raise InvalidStoredReference(f"thumbnail max_side must be an integer >= 2, got {max_side!r}",
                                         field="max_side", value=max_side)
        h, w = self.crop.shape[:2]
        mask = (self.mask.astype(np.uint8) * 255) if self.mask is not None else np.full((h, w), 255, np.uint8)
        scale = min(1.0, max_side / max(h, w))
        if scale >= 1.0:
            return self.crop.copy(), mask
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2: (width, height)
        rgb = cv2.resize(self.crop, size, interpolation=cv2.INTER_AREA)
        small = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if self.mask is not None and not small.any():  # a thin object vanished: keep its pixel of highest coverage
            cover = cv2.resize(self.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            small[np.unravel_index(int(np.argmax(cover)), cover.shape)] = 255
        return rgb, small


def _position(p: Any) -> np.ndarray:
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidStoredReference(f"world_position is not numeric ({e})", field="world_position",
                                     value=p) from None
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise InvalidStoredReference(f"world_position must be 3 finite numbers (x, y, z), got {a.tolist()!r}",
                                     field="world_position", value=a.tolist())
    return a


# --------------------------------------------------------------------------------------------------- disk format


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


class _CorruptEntry(Exception):
    """An on-disk entry that cannot be loaded (internal: logged and skipped)."""


def _read_entry(path: Path) -> tuple[StoredReference, int]:
    meta_path = path / _META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _CorruptEntry(f"{meta_path} is unreadable: {e}") from None
    if not isinstance(meta, dict):
        raise _CorruptEntry(f"{meta_path} is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise _CorruptEntry(f"{meta_path} has format_version {version!r} (this code reads 1..{FORMAT_VERSION})")
    if meta.get("name") != path.name:
        raise _CorruptEntry(f"{meta_path} names {meta.get('name')!r}, but the directory is {path.name!r}")
    crop_bgr = cv2.imread(str(path / _CROP_FILE), cv2.IMREAD_COLOR)
    if crop_bgr is None:
        raise _CorruptEntry(f"{path / _CROP_FILE} is missing or not an image")
    crop = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2RGB)
    mask = None
    if meta.get("has_mask", (path / _MASK_FILE).exists()):
        m = cv2.imread(str(path / _MASK_FILE), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise _CorruptEntry(f"{path / _MASK_FILE} is missing or not an image")
        mask = m > 127
    score = meta.get("score")
    sequence = meta.get("sequence", 0)
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise _CorruptEntry(f"{meta_path} has sequence {sequence!r} (an integer expected)")
    try:
        ref = StoredReference(
            name=meta["name"], crop=crop, mask=mask, source_frame=meta["source_frame"], stamp_ns=meta["stamp_ns"],
            camera_pose=meta.get("camera_pose"), world_position=meta.get("world_position"),
            score=math.nan if score is None else score, origin=meta["origin"], created=meta.get("created", 0.0),
            box=meta.get("box"),
        )
    except KeyError as e:
        raise _CorruptEntry(f"{meta_path} lacks the field {e.args[0]!r}") from None
    except InvalidStoredReference as e:
        raise _CorruptEntry(f"{path} holds an invalid reference: {e}") from None
    return ref, sequence


# --------------------------------------------------------------------------------------------------- the store


class ReferenceStore:
    """Named :class:`StoredReference` s in insertion order, optionally persisted in ``directory``.

    ``directory`` is created when missing and loaded at construction (see the module docstring for the layout);
    None keeps references in memory only. ``max_references`` bounds how many are stored; ``max_name_chars`` how
    long a name may be. Every method is thread-safe. A refused request raises a :class:`ReferenceStoreError` subclass
    and changes nothing, in memory or on disk; an ``OSError`` while writing also leaves both unchanged.
    """

    def __init__(self, *, directory: Path | None, max_references: int = 64, max_name_chars: int = 32) -> None:
        for field, value, low in (("max_references", max_references, 1), ("max_name_chars", max_name_chars, 8)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ReferenceStoreError(f"{field} must be an integer >= {low}, got {value!r}")
        self.max_references = max_references
        self.max_name_chars = max_name_chars
        self.directory = None if directory is None else Path(directory)
        self._lock = threading.RLock()
        self._refs: dict[str, StoredReference] = {}
        self._sequence: dict[str, int] = {}
        self._next_sequence = 1
        self.skipped: list[tuple[Path, str]] = []
        """Entries of ``directory`` that the last load skipped, with the reason."""
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()

    # ----------------------------------------------------------------------------------------- queries

    def __len__(self) -> int:
        with self._lock:
            return len(self._refs)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return isinstance(name, str) and name in self._refs

    def names(self) -> list[str]:
        """Stored names in insertion order (restored across restarts)."""
        with self._lock:
            return list(self._refs)

    def references(self) -> list[StoredReference]:
        """Stored references in insertion order."""
        with self._lock:
            return list(self._refs.values())

    def snapshot(self) -> dict[str, StoredReference]:
        """All stored references by name, in insertion order, as one consistent copy."""
        with self._lock:
            return dict(self._refs)

    def get(self, name: str) -> StoredReference:
        """The reference called ``name``; :class:`UnknownReference` (listing the stored names) when there is none."""
        with self._lock:
            try:
                return self._refs[name]
            except (KeyError, TypeError):
                raise self._unknown(name) from None

    def check_name(self, name: str) -> None:
        """Raise :class:`BadReferenceName` when ``name`` breaks a naming rule (does not check for duplicates)."""
        if not isinstance(name, str):
            raise BadReferenceName(f"reference name must be a string, got {type(name).__name__}",
                                   name=name, rule="string")
        shown = name if len(name) <= 80 else name[:77] + "..."
        if not name:
            raise BadReferenceName("reference name is empty", name=name, rule="non-empty")
        if len(name) > self.max_name_chars:
            raise BadReferenceName(
                f"reference name {shown!r} has {len(name)} characters (max {self.max_name_chars})",
                name=name, rule=f"at most {self.max_name_chars} characters")
        if _INT_PLACEHOLDER.fullmatch(name):
            raise BadReferenceName(f"reference name {shown!r} is a number, which would read as the index "
                                   f"placeholder <{name}>; start it with a letter", name=name, rule="not a number")
        if not NAME_PATTERN.fullmatch(name):
            raise BadReferenceName(
                f"reference name {shown!r} must start with a letter and contain only letters, digits, '_' and '-' "
                f"({NAME_PATTERN.pattern})", name=name, rule=NAME_PATTERN.pattern)

    # ----------------------------------------------------------------------------------------- changes

    def add(self, reference: StoredReference, *, name: str | None = None) -> StoredReference:
        """Store ``reference`` under ``name`` (else ``reference.name``, else the lowest unused ``refN``).

        Returns the stored (named) reference. Raises :class:`BadReferenceName`, :class:`DuplicateReferenceName` or
        :class:`ReferenceStoreFull` (nothing stored), or ``OSError`` when the directory cannot be written (nothing
        stored either).
        """
        if not isinstance(reference, StoredReference):
            raise InvalidStoredReference(f"add() takes a StoredReference, got {type(reference).__name__}",
                                         field="reference", value=type(reference).__name__)
        with self._lock:
            chosen = name if name is not None else (reference.name or None)
            if chosen is None:
                chosen = self._auto_name()
            self.check_name(chosen)
            existing = self._same_name(chosen)
            if existing is not None:
                raise DuplicateReferenceName(
                    f"a reference named {existing!r} is already stored"
                    + ("" if existing == chosen else f" (names may not differ only in case: {chosen!r})")
                    + "; remove it first or choose another name", name=chosen, existing=existing)
            if len(self._refs) >= self.max_references:
                raise ReferenceStoreFull(
                    f"cannot store {chosen!r}: the store is full ({len(self._refs)} of {self.max_references} "
                    f"references); remove one first", name=chosen, max_references=self.max_references)
            stored = reference if reference.name == chosen else dataclasses.replace(reference, name=chosen)
            sequence = self._next_sequence
            if self.directory is not None:
                self._write_new(stored, sequence)
            self._refs[chosen] = stored
            self._sequence[chosen] = sequence
            self._next_sequence = sequence + 1
            return stored

    def remove(self, name: str) -> StoredReference:
        """Remove and return the reference called ``name``; :class:`UnknownReference` when there is none."""
        with self._lock:
            ref = self.get(name)
            if self.directory is not None:
                target = self.directory / name
                if target.exists():
                    trash = self.directory / f"{_TRASH_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
                    os.replace(target, trash)  # the atomic step: from here on, load no longer sees it
                    _fsync_dir(self.directory)
                    shutil.rmtree(trash, ignore_errors=True)
            del self._refs[name]
            del self._sequence[name]
            return ref

    def update_position(self, name: str, world_position: Sequence[float] | np.ndarray) -> StoredReference:
        """Record the last known world position (x, y, z) of ``name``, persisted; returns the updated reference."""
        with self._lock:
            ref = self.get(name)
            updated = dataclasses.replace(ref, world_position=_position(world_position))
            if self.directory is not None:
                entry = self.directory / name
                tmp = entry / f"{_TMP_PREFIX}{_META_FILE}-{uuid.uuid4().hex[:8]}"
                try:
                    _write_file(tmp, _meta_bytes(updated, self._sequence[name]))
                    os.replace(tmp, entry / _META_FILE)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                _fsync_dir(entry)
            self._refs[name] = updated
            return updated

    # ----------------------------------------------------------------------------------------- internals

    def _unknown(self, name: Any) -> UnknownReference:
        known = tuple(self._refs)
        listing = ", ".join(known) if known else "none"
        return UnknownReference(f"no stored reference named {name!r} (stored: {listing})", name=name, known=known)

    def _same_name(self, name: str) -> str | None:
        folded = name.casefold()
        for existing in self._refs:
            if existing.casefold() == folded:
                return existing
        return None

    def _auto_name(self) -> str:
        k = 1
        while self._same_name(f"{AUTO_NAME_PREFIX}{k}") is not None:
            k += 1
        return f"{AUTO_NAME_PREFIX}{k}"

    def _write_new(self, ref: StoredReference, sequence: int) -> None:
        assert self.directory is not None
        target = self.directory / ref.name
        crop_png = _encode_png(cv2.cvtColor(ref.crop, cv2.COLOR_RGB2BGR), "crop")
        mask_png = None if ref.mask is None else _encode_png(ref.mask.astype(np.uint8) * 255, "mask")
        tmp = self.directory / f"{_TMP_PREFIX}{ref.name}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            _write_file(tmp / _CROP_FILE, crop_png)
            if mask_png is not None:
                _write_file(tmp / _MASK_FILE, mask_png)
            _write_file(tmp / _META_FILE, _meta_bytes(ref, sequence))
            _fsync_dir(tmp)
            if target.exists() or target.is_symlink():
                # an entry the store did not load (corrupt, or beyond max_references): keep it for inspection
                aside = self.directory / f"{_ASIDE_PREFIX}{ref.name}-{uuid.uuid4().hex[:8]}"
                log.warning("reference directory %s was not loaded; moving it to %s before storing %r",
                            target, aside, ref.name)
                os.replace(target, aside)
            os.replace(tmp, target)  # the atomic step
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _load(self) -> None:
        assert self.directory is not None
        self.skipped = []
        loaded: list[tuple[int, float, str, StoredReference]] = []
        for entry in sorted(self.directory.iterdir()):
            if entry.name.startswith("."):
                if entry.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                    log.info("ignoring %s (left by an interrupted write or removal)", entry)
                continue
            if not entry.is_dir():
                continue
            reason = None
            if not NAME_PATTERN.fullmatch(entry.name):
                reason = f"directory name {entry.name!r} is not a valid reference name"
            else:
                try:
                    ref, sequence = _read_entry(entry)
                except _CorruptEntry as e:
                    reason = str(e)
                else:
                    loaded.append((sequence, ref.created, ref.name, ref))
            if reason is not None:
                log.warning("skipping stored reference %s: %s", entry, reason)
                self.skipped.append((entry, reason))
        loaded.sort(key=lambda t: (t[0], t[1], t[2]))
        for sequence, _created, name, ref in loaded:
            if self._same_name(name) is not None:
                reason = f"its name differs only in case from the stored {self._same_name(name)!r}"
            elif len(self._refs) >= self.max_references:
                reason = f"the store is full ({self.max_references} references)"
            else:
                if len(name) > self.max_name_chars:
                    log.warning("stored reference %r is longer than max_name_chars=%d; kept", name,
                                self.max_name_chars)
                self._refs[name] = ref
                self._sequence[name] = sequence
                self._next_sequence = max(self._next_sequence, sequence + 1)
                continue
            log.warning("skipping stored reference %s: %s", self.directory / name, reason)
            self.skipped.append((self.directory / name, reason))
        if self._refs:
            log.info("loaded %d stored reference(s) from %s: %s", len(self._refs), self.directory,
                     ", ".join(self._refs))


# --------------------------------------------------------------------------------------------------- names in text


@dataclasses.dataclass(frozen=True)
class ResolvedInstruction:
    """An instruction whose ``<name>`` placeholders were replaced by ``<k>`` indices of stored references.

    ``instruction.references`` holds the explicit references first, then one per distinct stored name, in order of
    first mention.
    """

    instruction: Instruction
    """The ordinary interleaved instruction (text with ``<k>`` only)."""
    reference_names: tuple[str | None, ...]
    """Per reference index k: the stored name ``<k>`` stands for, None for an explicit reference."""
    entity_names: tuple[tuple[str, ...], ...]
    """Per entity: the stored names it mentions, in order (empty when it mentions none)."""
    entity_phrases: tuple[str, ...]
    """Per entity: its phrase with the names put back (``"the <mug>"`` rather than ``"the <2>"``), for display."""

    @property
    def names(self) -> tuple[str, ...]:
        """The distinct stored names the instruction uses, in order of first mention."""
        return tuple(n for n in self.reference_names if n is not None)


def resolve_named_references(
    text: str,
    store: ReferenceStore,
    references: Sequence[Reference] = (),
    *,
    id: str = "",
) -> ResolvedInstruction:
    """Replace the ``<name>`` placeholders of ``text`` by ``<k>`` references to ``store``'s references and parse it.

    ``<k>`` (digits) keeps pointing at ``references[k]``; each distinct name gets the next index after the explicit
    references (a name used twice maps to one index), carrying the stored crop + mask. Text without names parses
    exactly as :func:`~find_ros.instruction.parse_instruction` parses it. ``<`` ... ``>`` with whitespace just inside
    a bracket (``"a < b and c > d"``) is plain text.

    Raises :class:`NamedReferenceError` (an :class:`~find_ros.instruction.InstructionError`) naming unknown names
    (with the stored names) or bracketed tokens that are not valid names (``"<my mug>"``), and whatever
    ``parse_instruction`` raises (too many references, an index with no reference, ...).
    """
    if not isinstance(text, str):
        raise InstructionError(f"instruction text must be a string, got {type(text).__name__}")
    explicit = tuple(references)
    stored = store.snapshot()  # one consistent view of the store for the whole resolution
    known = tuple(stored)
    order: list[str] = []
    unknown: list[str] = []
    invalid: list[str] = []
    for token in _ANGLE_TOKEN.findall(text):
        if _INT_PLACEHOLDER.fullmatch(token):
            continue
        if not NAME_PATTERN.fullmatch(token):
            if token not in invalid:
                invalid.append(token)
        elif token not in stored:
            if token not in unknown:
                unknown.append(token)
        elif token not in order:
            order.append(token)
    listing = ", ".join(known) if known else "none"
    if invalid:
        shown = ", ".join(f"<{t[:40]}>" for t in invalid)
        raise NamedReferenceError(
            f"{shown} in the instruction is not a reference name: a name starts with a letter and has only "
            f"letters, digits, '_' and '-' (stored: {listing})",
            invalid=tuple(invalid), unknown=tuple(unknown), known=known)
    if unknown:
        shown = ", ".join(f"<{t}>" for t in unknown)
        raise NamedReferenceError(f"no stored reference named {shown} (stored: {listing})",
                                  unknown=tuple(unknown), known=known)
    index = {n: len(explicit) + i for i, n in enumerate(order)}

    def to_index(m: re.Match[str]) -> str:
        token = m.group(1)
        return f"<{index[token]}>" if token in index else m.group(0)

    resolved_text = _ANGLE_TOKEN.sub(to_index, text)
    named_refs = tuple(stored[n].to_reference() for n in order)
    instruction = parse_instruction(resolved_text, explicit + named_refs, id=id)
    names_by_index: tuple[str | None, ...] = (None,) * len(explicit) + tuple(order)
    entity_names = []
    entity_phrases = []
    for entity in instruction.entities:
        entity_names.append(tuple(names_by_index[k] for k in entity.reference_indices
                                  if names_by_index[k] is not None))
        entity_phrases.append(re.sub(
            r"<(\d+)>",
            lambda m: (f"<{names_by_index[int(m.group(1))]}>" if names_by_index[int(m.group(1))] is not None
                       else m.group(0)),
            entity.phrase))
    return ResolvedInstruction(instruction=instruction, reference_names=names_by_index,
                               entity_names=tuple(entity_names), entity_phrases=tuple(entity_phrases))
