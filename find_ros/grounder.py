"""The one protocol the perception pipeline uses to talk to a model: :class:`Grounder`.

A grounder is given an instruction once (:meth:`Grounder.set_instruction`, where it embeds the
instruction and caches it) and then grounds every frame against it (:meth:`Grounder.ground`).
The FIND model and the HSV colour baseline both implement it.

A top-level module (like :mod:`find_ros.instruction`) so that :mod:`find_ros.model` (``FindGrounder``) and
:mod:`find_ros.grounding` (the baseline, ``VideoGrounder``) both import it and neither imports the other.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from find_ros.instruction import Instruction

__all__ = ["EntityResult", "FrameGrounding", "Grounder", "GrounderError", "LazyPixelEmbeddings", "QueryEmbedder",
           "mask_box"]


class GrounderError(RuntimeError):
    """A grounder cannot run (no instruction set, bad frame); the message says why."""


@dataclasses.dataclass
class EntityResult:
    """The best match in one frame for one entity of the instruction."""

    phrase: str
    """The entity phrase as written in the instruction."""
    entity_index: int
    """Index into ``Instruction.entities``."""
    score: float
    """Match confidence in [0, 1]; callers threshold it."""
    mask: np.ndarray
    """(H, W) bool at the input frame's resolution."""
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) pixel box of the mask, x1/y1 exclusive; (0, 0, 0, 0) when the mask is empty."""


class LazyPixelEmbeddings:
    """(h, w, D) float32 per-pixel embeddings computed where they are asked for: :meth:`window` (the cells under a
    mask, on the frame path) or the whole grid once (:meth:`array`, ``np.asarray``: the feature field, off it).

    ``window(y0, y1, x0, x1)`` must return the (y1 - y0, x1 - x0, D) float32 block of the whole grid (a per-pixel
    head run on those cells). Thread-safe: a race computes the grid twice, never a wrong one."""

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, *, shape: tuple[int, int, int], window: Callable[[int, int, int, int], np.ndarray]) -> None:
        self.shape = tuple(int(v) for v in shape)
        self._window = window
        self._array: np.ndarray | None = None

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._array is not None:
            return self._array[y0:y1, x0:x1]
        return self._window(y0, y1, x0, x1)

    def array(self) -> np.ndarray:
        """The whole (h, w, D) grid, computed on the first call."""
        if self._array is None:
            self._array = self._window(0, self.shape[0], 0, self.shape[1])
        return self._array

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.array()
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a


@dataclasses.dataclass
class FrameGrounding:
    """Everything a grounder returns for one frame."""

    entities: list[EntityResult]
    """One result per instruction entity, in instruction order."""
    pixel_embeddings: np.ndarray | LazyPixelEmbeddings | None = None
    """(h, w, D) float32 unit-norm per-pixel embeddings in the grounder's semantic space, at any
    resolution (callers resize), computed on demand when lazy (``np.asarray`` gives the array); ``None`` for
    grounders without an embedding space."""


@runtime_checkable
class Grounder(Protocol):
    """Set an instruction once, then ground frames against it."""

    name: str
    """Short name used in logs and reports (e.g. ``"find"``, ``"hsv-baseline"``)."""

    def set_instruction(self, instruction: Instruction) -> None:
        """Embed and cache ``instruction``; replaces the previous one."""

    def clear_instruction(self) -> None:
        """Forget the current instruction; :meth:`ground` then raises :class:`GrounderError`."""

    def ground(self, rgb: np.ndarray) -> FrameGrounding:
        """Ground the current instruction in an (H, W, 3) uint8 RGB frame."""


@runtime_checkable
class QueryEmbedder(Protocol):
    """A grounder whose instructions live in the same space as its pixel embeddings (for 3D field queries)."""

    def embed_instruction(self, instruction: Instruction) -> np.ndarray:
        """(E, D) float32 unit-norm embeddings, one per entity of ``instruction``, comparable by dot product
        with :attr:`FrameGrounding.pixel_embeddings`."""


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x0, y0, x1, y1) box of a bool mask, exclusive upper bounds; zeros when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return (0, 0, 0, 0)
    y0, y1 = int(ys[0]), int(ys[-1]) + 1
    xs = np.flatnonzero(mask[y0:y1].any(axis=0))  # columns of the occupied rows only (an object: ~5x fewer)
    return (int(xs[0]), y0, int(xs[-1]) + 1, y1)
