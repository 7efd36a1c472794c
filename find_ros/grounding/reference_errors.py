"""Errors of the reference store (:mod:`find_ros.grounding.reference_store`) and of names in instruction text."""
from __future__ import annotations

from typing import Any

from find_ros.instruction import InstructionError

__all__ = [
    "ReferenceStoreError",
    "InvalidStoredReference",
    "BadReferenceName",
    "DuplicateReferenceName",
    "UnknownReference",
    "ReferenceStoreFull",
    "NamedReferenceError",
]


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
