"""Stored references ("this one"): named crops + masks kept across restarts, and names in instruction text.

A user teaches the robot an object by clicking it; the click becomes a mask, and the crop + mask become a
:class:`StoredReference` with a name (given, or ``ref1``, ``ref2``, ...). Instructions may then name it: ``"the <mug>
next to the red cube"`` is resolved by :func:`resolve_named_references` into an ordinary interleaved instruction
(``"the <0> next to the red cube"`` + the stored crop as reference 0).

Pure numpy / OpenCV; no rclpy and no message types (the ROS side lives in ``find_ros.ros``). This module holds
:class:`ReferenceStore` and re-exports the rest: the errors (:mod:`~find_ros.grounding.reference_errors`), the naming
rule (:mod:`~find_ros.grounding.reference_names`), :class:`StoredReference`
(:mod:`~find_ros.grounding.stored_reference`), the disk format (:mod:`~find_ros.grounding.reference_io`) and names in
text (:mod:`~find_ros.grounding.named_references`).

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
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from find_ros.grounding.named_references import ResolvedInstruction, resolve_named_references
from find_ros.grounding.reference_errors import (BadReferenceName, DuplicateReferenceName, InvalidStoredReference,
                                                 NamedReferenceError, ReferenceStoreError, ReferenceStoreFull,
                                                 UnknownReference)
from find_ros.grounding.reference_io import (FORMAT_VERSION, TMP_PREFIX, TRASH_PREFIX, CorruptEntry, read_entry,
                                             replace_meta, trash_entry, write_entry)
from find_ros.grounding.reference_names import AUTO_NAME_PREFIX, NAME_PATTERN, check_reference_name
from find_ros.grounding.stored_reference import ORIGINS, StoredReference, checked_position

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
        check_reference_name(name, max_name_chars=self.max_name_chars)

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
                write_entry(self.directory, stored, sequence)
            self._refs[chosen] = stored
            self._sequence[chosen] = sequence
            self._next_sequence = sequence + 1
            return stored

    def remove(self, name: str) -> StoredReference:
        """Remove and return the reference called ``name``; :class:`UnknownReference` when there is none."""
        with self._lock:
            ref = self.get(name)
            if self.directory is not None:
                trash_entry(self.directory, name)
            del self._refs[name]
            del self._sequence[name]
            return ref

    def update_position(self, name: str, world_position: Sequence[float] | np.ndarray) -> StoredReference:
        """Record the last known world position (x, y, z) of ``name``, persisted; returns the updated reference."""
        with self._lock:
            ref = self.get(name)
            updated = dataclasses.replace(ref, world_position=checked_position(world_position))
            if self.directory is not None:
                replace_meta(self.directory / name, updated, self._sequence[name])
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

    def _load(self) -> None:
        assert self.directory is not None
        self.skipped = []
        for sequence, name, ref in self._read_directory():
            reason = self._admit(name, ref, sequence)
            if reason is not None:
                log.warning("skipping stored reference %s: %s", self.directory / name, reason)
                self.skipped.append((self.directory / name, reason))
        if self._refs:
            log.info("loaded %d stored reference(s) from %s: %s", len(self._refs), self.directory,
                     ", ".join(self._refs))

    def _read_directory(self) -> list[tuple[int, str, StoredReference]]:
        """The readable entries of ``directory`` as (sequence, name, reference), in load order; skips the rest."""
        assert self.directory is not None
        loaded: list[tuple[int, float, str, StoredReference]] = []
        for entry in sorted(self.directory.iterdir()):
            if entry.name.startswith("."):
                if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                    log.info("ignoring %s (left by an interrupted write or removal)", entry)
                continue
            if not entry.is_dir():
                continue
            reason = None
            if not NAME_PATTERN.fullmatch(entry.name):
                reason = f"directory name {entry.name!r} is not a valid reference name"
            else:
                try:
                    ref, sequence = read_entry(entry)
                except CorruptEntry as e:
                    reason = str(e)
                else:
                    loaded.append((sequence, ref.created, ref.name, ref))
            if reason is not None:
                log.warning("skipping stored reference %s: %s", entry, reason)
                self.skipped.append((entry, reason))
        loaded.sort(key=lambda t: (t[0], t[1], t[2]))
        return [(sequence, name, ref) for sequence, _created, name, ref in loaded]

    def _admit(self, name: str, ref: StoredReference, sequence: int) -> str | None:
        """Keep a loaded reference; the reason when it cannot be kept (a case-duplicate name, the store full)."""
        if self._same_name(name) is not None:
            return f"its name differs only in case from the stored {self._same_name(name)!r}"
        if len(self._refs) >= self.max_references:
            return f"the store is full ({self.max_references} references)"
        if len(name) > self.max_name_chars:
            log.warning("stored reference %r is longer than max_name_chars=%d; kept", name, self.max_name_chars)
        self._refs[name] = ref
        self._sequence[name] = sequence
        self._next_sequence = max(self._next_sequence, sequence + 1)
        return None
