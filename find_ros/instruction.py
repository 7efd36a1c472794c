"""Interleaved instructions: text with ``<k>`` image references, parsed into entities.

An interleaved instruction is text such as ``"water the green leaves using <0>"`` together with a
list of reference images (each optionally with a mask). ``<k>`` refers to ``references[k]``.

This module is pure numpy and shared by every layer (model, grounding, ros).
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

__all__ = [
    "InstructionError",
    "Reference",
    "Entity",
    "Instruction",
    "parse_instruction",
    "MAX_TEXT_CHARS",
    "MAX_REFERENCES",
    "MAX_ID_CHARS",
]

MAX_TEXT_CHARS = 2000
"""Longest instruction text accepted (characters)."""
MAX_REFERENCES = 16
"""Most reference images one instruction may carry."""
MAX_ID_CHARS = 128
"""Longest instruction id accepted (characters)."""

_PLACEHOLDER = re.compile(r"<(\d+)>")
_SEPARATORS = re.compile(r"\s*(?:;|,|\band\b|\bthen\b)\s*", re.IGNORECASE)


class InstructionError(ValueError):
    """An instruction that cannot be used; the message names the offending part."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """A visual reference: an RGB image (H, W, 3) uint8 and an optional boolean mask (H, W)."""

    image: np.ndarray
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InstructionError(
                f"reference image must be an (H, W, 3) uint8 array, got "
                f"{getattr(img, 'shape', type(img))} {getattr(img, 'dtype', '')}"
            )
        if img.shape[0] < 2 or img.shape[1] < 2:
            raise InstructionError(f"reference image is too small: {img.shape[1]}x{img.shape[0]}")
        if self.mask is not None:
            m = self.mask
            if not isinstance(m, np.ndarray) or m.shape != img.shape[:2]:
                raise InstructionError(
                    f"reference mask shape {getattr(m, 'shape', type(m))} does not match image "
                    f"{img.shape[:2]}"
                )
            if not np.any(m):
                raise InstructionError("reference mask is empty (no pixel set)")
            object.__setattr__(self, "mask", m.astype(bool, copy=False))


@dataclasses.dataclass(frozen=True)
class Entity:
    """One thing to find: a phrase, with the reference indices it mentions (may be empty)."""

    phrase: str
    """The phrase as written, placeholders included (e.g. ``"the red mug"`` or ``"<0>"``)."""
    text: str
    """The phrase with placeholders removed and whitespace folded (may be empty for ``"<0>"``)."""
    reference_indices: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Instruction:
    """A validated interleaved instruction.

    ``entities`` splits the text on ``;``, ``,``, ``and``, ``then``; an instruction with no
    separator is a single entity. Every ``<k>`` must have ``k < len(references)`` and every
    reference must be used.
    """

    id: str
    text: str
    references: tuple[Reference, ...]
    entities: tuple[Entity, ...]

    @property
    def is_interleaved(self) -> bool:
        return bool(self.references)


def parse_instruction(
    text: str, references: list[Reference] | tuple[Reference, ...] = (), *, id: str = ""
) -> Instruction:
    """Validate ``text`` + ``references`` and split it into entities.

    Raises :class:`InstructionError` for empty, oversized or non-printable text or id, placeholders that
    name a missing reference, references never mentioned, too many references, or text in which no part
    has a letter, a digit or a placeholder (e.g. only punctuation or symbols: nothing to find).
    """
    if not isinstance(text, str):
        raise InstructionError(f"instruction text must be a string, got {type(text).__name__}")
    if not isinstance(id, str) or len(id) > MAX_ID_CHARS or not id.isprintable():
        shown = id[:40] if isinstance(id, str) else type(id).__name__
        raise InstructionError(f"instruction id {shown!r} must be a printable string of at most {MAX_ID_CHARS} "
                               "characters")
    if len(text) > MAX_TEXT_CHARS:
        raise InstructionError(f"instruction text has {len(text)} characters (max {MAX_TEXT_CHARS})")
    bad = [c for c in text if not c.isprintable() and c not in "\t\n"]
    if bad:
        raise InstructionError(f"instruction text contains {len(bad)} non-printable character(s), e.g. {bad[0]!r}")
    folded = " ".join(text.split())
    if not folded:
        raise InstructionError("instruction text is empty")
    refs = tuple(references)
    if len(refs) > MAX_REFERENCES:
        raise InstructionError(f"instruction has {len(refs)} references (max {MAX_REFERENCES})")
    for r in refs:
        if not isinstance(r, Reference):
            raise InstructionError(f"references must be Reference objects, got {type(r).__name__}")
    used = [int(m) for m in _PLACEHOLDER.findall(folded)]
    missing = sorted({k for k in used if k >= len(refs)})
    if missing:
        raise InstructionError(
            f"placeholder(s) {', '.join(f'<{k}>' for k in missing)} name no reference "
            f"(instruction has {len(refs)} reference image(s))"
        )
    unused = sorted(set(range(len(refs))) - set(used))
    if unused:
        raise InstructionError(
            f"reference image(s) {unused} are never mentioned in the text {folded!r}"
        )
    entities = []
    for part in _SEPARATORS.split(folded):
        part = part.strip()
        if not part:
            continue
        idx = tuple(int(m) for m in _PLACEHOLDER.findall(part))
        plain = " ".join(_PLACEHOLDER.sub(" ", part).split())
        if not idx and not any(c.isalnum() for c in plain):
            continue  # punctuation / symbols only: nothing to find
        entities.append(Entity(phrase=part, text=plain, reference_indices=idx))
    if not entities:
        raise InstructionError(f"instruction {folded!r} names nothing to find")
    return Instruction(id=id, text=folded, references=refs, entities=tuple(entities))
