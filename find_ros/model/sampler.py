"""Embedding sampler: language token embeddings and visual reference embeddings -> interface prompts.

Language prompts are the language model's token embeddings (one row per entity phrase, so that the
language model itself never mixes entities: cross-entity context is the interface's job, under the
attention table). Interleaved prompts: the token at each ``<k>`` is replaced by the embedding of
reference ``k`` — its decoder features averaged inside the reference mask (the whole image without a
mask) plus the features at a few points sampled inside the mask (the paper's point sampling).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from find_ros.model.tokenizer import EntityTokens

__all__ = ["PromptBatch", "EmbeddingSampler", "TEXT_TYPE", "REFERENCE_TYPE"]

TEXT_TYPE = 0
REFERENCE_TYPE = 1


@dataclasses.dataclass
class PromptBatch:
    """Prompts of a batch of instructions (or captions), ready for the interface; cacheable per instruction."""

    tokens: torch.Tensor
    """(B, T, C) prompt embeddings in the interface width."""
    valid: torch.Tensor
    """(B, T) bool, False on padding."""
    entity: torch.Tensor
    """(B, T) int64 entity index of each token (-1 on padding)."""
    is_reference: torch.Tensor
    """(B, T) bool, True where the token is a visual reference embedding (a ``<k>``)."""
    num_entities: torch.Tensor
    """(B,) int64 entities per instruction."""
    sentence: torch.Tensor
    """(B, D) unit-norm whole-instruction embedding in the semantic space (captions for retrieval)."""

    @property
    def batch(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def max_entities(self) -> int:
        return int(self.num_entities.max().item()) if self.num_entities.numel() else 0

    def to(self, device=None, dtype=None) -> "PromptBatch":
        def mv(t, floating):
            return t.to(device=device, dtype=dtype if (floating and dtype is not None) else t.dtype)

        return PromptBatch(mv(self.tokens, True), mv(self.valid, False), mv(self.entity, False),
                           mv(self.is_reference, False), mv(self.num_entities, False), mv(self.sentence, True))

    def expand(self, b: int) -> "PromptBatch":
        """Batch 1 repeated to ``b`` (one instruction grounded in ``b`` frames)."""
        if self.batch == b:
            return self
        return PromptBatch(self.tokens.expand(b, -1, -1), self.valid.expand(b, -1), self.entity.expand(b, -1),
                           self.is_reference.expand(b, -1), self.num_entities.expand(b),
                           self.sentence.expand(b, -1))


def _mlp(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_out), nn.GELU(), nn.Linear(c_out, c_out))


class EmbeddingSampler(nn.Module):
    """Projects language tokens and pooled reference features into prompts; builds the sentence embedding."""

    def __init__(self, *, language_channels: int, hidden: int, sem_dim: int, ref_points: int = 4) -> None:
        super().__init__()
        self.language_proj = nn.Sequential(nn.Linear(language_channels, hidden), nn.LayerNorm(hidden))
        self.reference_proj = nn.Sequential(_mlp(hidden, hidden), nn.LayerNorm(hidden))
        self.point_proj = nn.Linear(hidden, hidden)
        self.type_embed = nn.Embedding(2, hidden)
        self.sentence_proj = _mlp(hidden, sem_dim)
        self.ref_points = int(ref_points)

    def pool_references(self, mask_features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(R, C, h, w) features and (R, h, w) float weights in [0, 1] -> (R, C) reference embeddings.

        The mask average plus the mean of ``ref_points`` points sampled (deterministically: the
        highest-weight pixels on a strided order) inside the mask."""
        R, C, h, w = mask_features.shape
        wts = masks.to(mask_features.dtype).flatten(1)  # (R, hw)
        f = mask_features.flatten(2)  # (R, C, hw)
        pooled = torch.einsum("rcn,rn->rc", f, wts) / wts.sum(1, keepdim=True).clamp_min(1e-6)
        if self.ref_points > 0:
            n = f.shape[2]
            # points spread over the mask: rank pixels by weight, tie-broken by a fixed stride pattern
            jitter = ((torch.arange(n, device=f.device) * 7919) % n).to(wts.dtype) / (n * 1000.0)
            k = min(self.ref_points, n)
            idx = (wts + jitter).topk(k, dim=1).indices  # (R, k)
            pts = torch.gather(f, 2, idx[:, None, :].expand(-1, C, -1)).mean(2)
            pooled = pooled + self.point_proj(pts)
        return self.reference_proj(pooled)

    def forward(self, *, tokens: EntityTokens, language: torch.Tensor, references: torch.Tensor | None,
                batch: int) -> PromptBatch:
        """``language`` (N, L, Cl) token embeddings of ``tokens`` rows; ``references`` (R, C) pooled."""
        dev = language.device
        x = self.language_proj(language)  # (N, L, C)
        att = torch.from_numpy(tokens.attention).to(dev)
        slot = torch.from_numpy(tokens.ref_slot).to(dev)
        is_ref = slot >= 0
        if bool(is_ref.any()):
            if references is None:
                raise ValueError("instruction has <k> placeholders but no reference embeddings were given")
            x = torch.where(is_ref[..., None], references[slot.clamp_min(0)], x)
        x = x + self.type_embed(is_ref.long())
        # flatten valid tokens in row order (rows are grouped by instruction, entities in order)
        flat_valid = tokens.attention.reshape(-1)
        row_of = np.repeat(np.arange(tokens.ids.shape[0]), tokens.ids.shape[1])[flat_valid]
        inst_of = tokens.instruction[row_of]
        counts = np.bincount(inst_of, minlength=batch)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(inst_of.size) - starts[inst_of]
        T = max(int(counts.max()) if counts.size else 1, 1)
        C = x.shape[-1]
        b_idx = torch.from_numpy(inst_of).to(dev)
        p_idx = torch.from_numpy(pos).to(dev)
        sel = att.reshape(-1)
        out = x.new_zeros(batch, T, C)
        out[b_idx, p_idx] = x.reshape(-1, C)[sel]
        valid = torch.zeros(batch, T, dtype=torch.bool, device=dev)
        valid[b_idx, p_idx] = True
        ent = torch.full((batch, T), -1, dtype=torch.long, device=dev)
        ent[b_idx, p_idx] = torch.from_numpy(tokens.entity[row_of]).to(dev)
        isr = torch.zeros(batch, T, dtype=torch.bool, device=dev)
        isr[b_idx, p_idx] = is_ref.reshape(-1)[sel]
        n_ent = np.zeros(batch, np.int64)
        np.maximum.at(n_ent, tokens.instruction, tokens.entity + 1)
        mean = (out * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        sentence = F.normalize(self.sentence_proj(mean), dim=-1)
        return PromptBatch(tokens=out, valid=valid, entity=ent, is_reference=isr,
                           num_entities=torch.from_numpy(n_ent).to(dev), sentence=sentence)
