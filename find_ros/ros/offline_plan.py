"""The plan of a ``find-ros run``: its instructions and when each takes effect, and the run's error."""
from __future__ import annotations

import dataclasses
import math

__all__ = ["RunError", "Instruction", "schedule"]


class RunError(RuntimeError):
    """The run cannot start or go on (bad arguments, output exists, node failed its lifecycle)."""


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction of the run and when it takes effect."""

    text: str
    at_s: float
    """Seconds after the bag's first frame (by recorded stamp)."""
    id: str


def schedule(texts: list[str], at: list[float] | None) -> list[Instruction]:
    """The instructions in order of start time; ``at`` gives one start per text, or one fewer (the first at 0).
    :class:`RunError` names what is wrong."""
    if not texts:
        raise RunError("give at least one --instruction")
    at = list(at or [])
    if len(at) == len(texts) - 1:
        at = [0.0, *at]
    if len(at) != len(texts):
        raise RunError(f"{len(texts)} --instruction but {len(at)} --instruction-at: give one per instruction "
                       "(or one fewer: the first then starts at 0)")
    for t in at:
        if not math.isfinite(t) or t < 0:
            raise RunError(f"--instruction-at {t} must be a time >= 0 (s after the first frame)")
    if any(b < a for a, b in zip(at, at[1:])):
        raise RunError(f"--instruction-at times must not decrease, got {at}")
    for text in texts:
        if not text.strip():
            raise RunError("an --instruction is empty")
    return [Instruction(text=t, at_s=float(a), id=f"run-{k + 1}") for k, (t, a) in enumerate(zip(texts, at))]

