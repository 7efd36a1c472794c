"""Pixel and query embeddings for the feature field, taken from a grounder (no ROS imports).

The field stores the grounder's own per-pixel embeddings so that a query embedded by the same grounder
(:class:`find_ros.grounder.QueryEmbedder`) compares with them by dot product:

- :class:`~find_ros.grounding.baseline.HsvBaselineGrounder`: ``pixel_embeddings(rgb)`` (soft colour
  memberships, D = 12, 1/4 resolution) and ``embed_instruction``;
- :class:`~find_ros.model.grounder.FindGrounder`: the model's pixel semantic head on the encoded frame
  (D = ``sem_dim``, at the mask-feature resolution), computed without an instruction, and ``embed_instruction``.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from find_ros.instruction import Instruction, parse_instruction

LOG = logging.getLogger(__name__)

__all__ = ["EmbedderError", "FieldEmbedder"]


class EmbedderError(ValueError):
    """The grounder cannot provide field embeddings (no query embedding, inconsistent dimensions)."""


class FieldEmbedder:
    """Per-pixel (h, w, D) and query (E, D) embeddings of one grounder, in one space of dimension :attr:`dim`."""

    def __init__(self, *, grounder: Any) -> None:
        if not callable(getattr(grounder, "embed_instruction", None)):
            raise EmbedderError(f"grounder {getattr(grounder, 'name', type(grounder).__name__)!r} has no "
                                "embed_instruction (QueryEmbedder protocol): it cannot feed or query a field")
        self.grounder = grounder
        self.name = str(getattr(grounder, "name", type(grounder).__name__))
        self._cache: list[tuple[Instruction, np.ndarray]] = []  # last few (instruction, embedding), newest last
        dim = getattr(grounder, "embedding_dim", None)  # FindGrounder says it; others are probed once
        self.dim = int(dim) if dim is not None else int(self.embed_text("object").shape[1])

    def pixel_embeddings(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w, D) float32 unit-norm pixel embeddings of an (H, W, 3) uint8 frame, no instruction needed."""
        g = self.grounder
        if callable(getattr(g, "pixel_embeddings", None)):
            pe = g.pixel_embeddings(rgb)
        elif hasattr(g, "model") and callable(getattr(g, "prepare", None)):  # FindGrounder
            import torch

            with torch.inference_mode():
                feats = g.model.encode_image(g.prepare(rgb))
                pe = g.model.heads.pixels(feats.mask_features)[0].float().cpu().numpy()
        else:
            raise EmbedderError(f"grounder {self.name!r} exposes no pixel embeddings")
        return self.check_pixels(pe)

    def check_pixels(self, pe: np.ndarray) -> np.ndarray:
        """``pe`` as (h, w, D) float32; :class:`EmbedderError` when D is not :attr:`dim`."""
        pe = np.asarray(pe, dtype=np.float32)
        if pe.ndim != 3 or pe.shape[2] != self.dim:
            raise EmbedderError(f"{self.name}: pixel embeddings must be (h, w, {self.dim}), got {pe.shape}")
        return pe

    def embed_instruction(self, instruction: Instruction) -> np.ndarray:
        """(E, D) float32 unit-norm query embeddings, cached for the last few instruction objects."""
        for ins, q in self._cache:
            if ins is instruction:
                return q
        q = np.asarray(self.grounder.embed_instruction(instruction), dtype=np.float32)
        if q.ndim != 2 or q.shape[0] != len(instruction.entities) or (hasattr(self, "dim") and q.shape[1] != self.dim):
            raise EmbedderError(f"{self.name}: embed_instruction returned {q.shape}, expected "
                                f"({len(instruction.entities)}, {getattr(self, 'dim', 'D')})")
        self._cache = [*self._cache[-3:], (instruction, q)]
        return q

    def embed_text(self, text: str) -> np.ndarray:
        """(E, D) query embeddings of a plain-text instruction."""
        return self.embed_instruction(parse_instruction(text, []))
