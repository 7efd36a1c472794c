"""Names in instruction text: ``"the <mug> next to the red cube"`` -> ``"the <0> ..."`` + the stored crop.

:func:`resolve_named_references` turns ``<name>`` placeholders into ordinary ``<k>`` references to a store's
:class:`~find_ros.grounding.stored_reference.StoredReference` s and parses the result.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Protocol

from find_ros.grounding.reference_errors import NamedReferenceError
from find_ros.grounding.reference_names import INT_PLACEHOLDER, NAME_PATTERN
from find_ros.grounding.stored_reference import StoredReference
from find_ros.instruction import Instruction, InstructionError, Reference, parse_instruction

__all__ = ["ResolvedInstruction", "resolve_named_references"]

# A placeholder candidate: "<" + a token with no whitespace at either end + ">". "<mug>", "<0>", "<my mug>" match;
# "a < b and c > d" (spaces inside the brackets' edges) stays plain text.
_ANGLE_TOKEN = re.compile(r"<([^<>\s](?:[^<>]*[^<>\s])?)>")


class _ReferenceSource(Protocol):
    """What resolution needs of a :class:`~find_ros.grounding.reference_store.ReferenceStore`."""

    def snapshot(self) -> dict[str, StoredReference]:
        """All stored references by name, in insertion order, as one consistent copy."""
        ...


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


def _scan_names(text: str, stored: dict[str, StoredReference]) -> tuple[list[str], list[str], list[str]]:
    """(stored names in order of first mention, unknown names, invalid tokens) among ``text``'s ``<...>``."""
    order: list[str] = []
    unknown: list[str] = []
    invalid: list[str] = []
    for token in _ANGLE_TOKEN.findall(text):
        if INT_PLACEHOLDER.fullmatch(token):
            continue
        if not NAME_PATTERN.fullmatch(token):
            if token not in invalid:
                invalid.append(token)
        elif token not in stored:
            if token not in unknown:
                unknown.append(token)
        elif token not in order:
            order.append(token)
    return order, unknown, invalid


def _check_names(*, unknown: list[str], invalid: list[str], known: tuple[str, ...]) -> None:
    """Raise :class:`NamedReferenceError` when any token is invalid (first) or any name unknown."""
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


def _names_to_indices(text: str, index: dict[str, int]) -> str:
    """``text`` with each ``<name>`` in ``index`` replaced by ``<k>``."""

    def to_index(m: re.Match[str]) -> str:
        token = m.group(1)
        return f"<{index[token]}>" if token in index else m.group(0)

    return _ANGLE_TOKEN.sub(to_index, text)


def _indices_to_names(phrase: str, names_by_index: tuple[str | None, ...]) -> str:
    """``phrase`` with each ``<k>`` that stands for a stored name put back as ``<name>``."""
    return re.sub(
        r"<(\d+)>",
        lambda m: (f"<{names_by_index[int(m.group(1))]}>" if names_by_index[int(m.group(1))] is not None
                   else m.group(0)),
        phrase)


def resolve_named_references(
    text: str,
    store: _ReferenceSource,
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
    order, unknown, invalid = _scan_names(text, stored)
    _check_names(unknown=unknown, invalid=invalid, known=tuple(stored))
    index = {n: len(explicit) + i for i, n in enumerate(order)}
    named_refs = tuple(stored[n].to_reference() for n in order)
    instruction = parse_instruction(_names_to_indices(text, index), explicit + named_refs, id=id)
    names_by_index: tuple[str | None, ...] = (None,) * len(explicit) + tuple(order)
    entity_names = tuple(tuple(names_by_index[k] for k in entity.reference_indices if names_by_index[k] is not None)
                         for entity in instruction.entities)
    entity_phrases = tuple(_indices_to_names(entity.phrase, names_by_index) for entity in instruction.entities)
    return ResolvedInstruction(instruction=instruction, reference_names=names_by_index,
                               entity_names=entity_names, entity_phrases=entity_phrases)
