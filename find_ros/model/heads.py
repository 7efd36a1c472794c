"""Projections out of the interface: pixel (masks = Q_pixel x M_image^T) and semantic (scores = Q_sem x Q_sem^T)."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FindOutput", "FindHeads"]


@dataclasses.dataclass
class FindOutput:
    """Everything one forward pass predicts (h, w = input size / mask_stride)."""

    object_masks: torch.Tensor
    """(B, Q, h, w) mask logits of the object queries."""
    object_logits: torch.Tensor
    """(B, Q) objectness logits of the object queries."""
    object_sem: torch.Tensor
    """(B, Q, D) unit-norm semantic embeddings of the object queries."""
    entity_masks: torch.Tensor
    """(B, E, h, w) mask logits, one per instruction entity (E = 0 for segment / retrieve)."""
    entity_score_logits: torch.Tensor
    """(B, E) match logits: scaled cosine of the entity (prompt) and its grounding query (image side)."""
    entity_sem: torch.Tensor
    """(B, E, D) unit-norm entity embeddings (prompt side, depends on the instruction only)."""
    entity_query_sem: torch.Tensor
    """(B, E, D) unit-norm semantic embeddings of the entity queries (image side)."""
    entity_valid: torch.Tensor
    """(B, E) bool, False for padding entities."""
    image_sem: torch.Tensor
    """(B, D) unit-norm image embedding (image query) for retrieval."""
    pixel_sem: torch.Tensor | None
    """(B, h, w, D) unit-norm per-pixel embeddings in the semantic space (None when not asked for)."""
    class_logits: torch.Tensor | None
    """(B, Q, E) scaled cosine of object queries vs entity prompts (segmentation with class names), or None."""
    logit_scale: torch.Tensor
    """Scalar temperature (exp of the learned log scale) used for the contrastive terms."""
    aux_object_masks: list[torch.Tensor] = dataclasses.field(default_factory=list)
    """Per earlier layer: (B, Q, h, w) object mask logits (deep supervision)."""
    aux_entity_masks: list[torch.Tensor] = dataclasses.field(default_factory=list)
    """Per earlier layer: (B, E, h, w) entity mask logits (deep supervision)."""

    @property
    def entity_scores(self) -> torch.Tensor:
        """(B, E) match scores in [0, 1]."""
        return torch.sigmoid(self.entity_score_logits)


class FindHeads(nn.Module):
    """Pixel MLP for mask embeddings, semantic projection, objectness, pixel-to-semantic projection."""

    def __init__(self, *, hidden: int, sem_dim: int, mask_channels: int | None = None) -> None:
        """``mask_channels``: width of the pixel decoder's mask features (default ``hidden``)."""
        super().__init__()
        mc = hidden if mask_channels is None else int(mask_channels)
        self.pixel = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                   nn.Linear(hidden, mc))
        self.sem = nn.Linear(hidden, sem_dim)
        self.objectness = nn.Linear(hidden, 1)
        self.pixel_sem = nn.Conv2d(mc, sem_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.score_bias = nn.Parameter(torch.tensor(0.0))

    def masks(self, q: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """(B, N, C) query states x (B, M, h, w) mask features -> (B, N, h, w) logits."""
        return torch.einsum("bnc,bchw->bnhw", self.pixel(q), mask_features)

    def semantic(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.sem(x), dim=-1)

    def pixels(self, mask_features: torch.Tensor) -> torch.Tensor:
        """(B, M, h, w) mask features -> (B, h, w, D) unit-norm pixel embeddings."""
        return F.normalize(self.pixel_sem(mask_features), dim=1).permute(0, 2, 3, 1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100.0)).exp()
