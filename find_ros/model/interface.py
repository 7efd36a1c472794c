"""The FIND interface: queries and prompts reasoning under one per-task attention table.

Sequence layout per image: ``[object queries (Q) | image query (1) | entity queries (E) | prompts (T)]``.
Each layer: (1) content attention — the queries attend to the image memory, masked by the previous
layer's mask prediction (the image query sees the whole image); (2) conditional attention —
self-attention over queries and prompts where who may attend to whom is :data:`ATTENTION_TABLE`;
(3) an FFN. Prompts never attend to queries, so prompt outputs (entity embeddings) depend on the
instruction only — they can be cached and compared with any frame's pixel embeddings.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from find_ros.model.config import InterfaceConfig
from find_ros.model.pixel_decoder import ImageFeatures
from find_ros.model.sampler import PromptBatch

__all__ = ["TASKS", "GROUPS", "ATTENTION_TABLE", "attention_mask", "FindInterface", "InterfaceError"]

TASKS = ("segment", "ground", "interleaved", "separate", "interactive", "retrieve")
GROUPS = ("object_queries", "image_query", "entity_queries", "text_prompts", "reference_prompts")
_G = {name: i for i, name in enumerate(GROUPS)}
_PAD = len(GROUPS)

ALL = "all"
SAME = "same_entity"

_BASE = {("object_queries", "object_queries"): ALL, ("image_query", "object_queries"): ALL}

# (source, target) -> relation: tokens of group `source` may attend to tokens of group `target`,
# either all of them or only those of the same entity. Unlisted pairs are blocked; every token
# always sees itself; padding is never seen.
ATTENTION_TABLE: dict[str, dict[tuple[str, str], str]] = {
    # generic segmentation: queries find objects; class-name prompts (optional) are embedded alone and
    # classify the queries by similarity
    "segment": {**_BASE, ("text_prompts", "text_prompts"): SAME, ("reference_prompts", "reference_prompts"): SAME,
                ("text_prompts", "reference_prompts"): SAME, ("reference_prompts", "text_prompts"): SAME},
    # grounding of referring phrases: each entity query reads its own phrase; phrases are independent
    "ground": {**_BASE, ("entity_queries", "object_queries"): ALL,
               ("entity_queries", "text_prompts"): SAME, ("entity_queries", "reference_prompts"): SAME,
               ("text_prompts", "text_prompts"): SAME, ("text_prompts", "reference_prompts"): SAME,
               ("reference_prompts", "text_prompts"): SAME, ("reference_prompts", "reference_prompts"): SAME},
    # interleaved grounding: the whole instruction (text and visual references) is one context; entity
    # queries read their own entity's (contextualised) prompts and see each other
    "interleaved": {**_BASE, ("entity_queries", "object_queries"): ALL, ("entity_queries", "entity_queries"): ALL,
                    ("entity_queries", "text_prompts"): SAME, ("entity_queries", "reference_prompts"): SAME,
                    ("text_prompts", "text_prompts"): ALL, ("text_prompts", "reference_prompts"): ALL,
                    ("reference_prompts", "text_prompts"): ALL, ("reference_prompts", "reference_prompts"): ALL},
    # the SEEM-style baseline with the same weights: interleaved prompts, but no entity sees another
    "separate": {**_BASE, ("entity_queries", "object_queries"): ALL,
                 ("entity_queries", "text_prompts"): SAME, ("entity_queries", "reference_prompts"): SAME,
                 ("text_prompts", "text_prompts"): SAME, ("text_prompts", "reference_prompts"): SAME,
                 ("reference_prompts", "text_prompts"): SAME, ("reference_prompts", "reference_prompts"): SAME},
    # interactive segmentation: only the visual prompt of each entity drives its query
    "interactive": {**_BASE, ("entity_queries", "object_queries"): ALL,
                    ("entity_queries", "reference_prompts"): SAME,
                    ("reference_prompts", "reference_prompts"): SAME},
    # retrieval: the image query summarises the image (prompts, if any, are embedded alone)
    "retrieve": {**_BASE, ("text_prompts", "text_prompts"): ALL, ("text_prompts", "reference_prompts"): ALL,
                 ("reference_prompts", "text_prompts"): ALL, ("reference_prompts", "reference_prompts"): ALL},
}


class InterfaceError(ValueError):
    """Bad task name or inputs for the interface; the message names the offending value."""


def attention_mask(task: str, groups: torch.Tensor, entity: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, N, N) bool, True where token i may attend to token j under ``ATTENTION_TABLE[task]``.

    ``groups`` (B, N) index into :data:`GROUPS`; ``entity`` (B, N) entity index (-1 for object/image
    queries); ``valid`` (B, N) False on padding.
    """
    if task not in ATTENTION_TABLE:
        raise InterfaceError(f"unknown task {task!r}; tasks are {TASKS}")
    B, N = groups.shape
    allowed = torch.zeros(B, N, N, dtype=torch.bool, device=groups.device)
    same = entity[:, :, None] == entity[:, None, :]
    for (src, dst), rel in ATTENTION_TABLE[task].items():
        m = (groups[:, :, None] == _G[src]) & (groups[:, None, :] == _G[dst])
        if rel == SAME:
            m = m & same
        allowed |= m
    allowed &= valid[:, None, :]
    allowed |= torch.eye(N, dtype=torch.bool, device=groups.device)[None]
    return allowed


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        B, L, C = q.shape
        S = k.shape[1]
        h = self.heads
        qh = self.q(q).view(B, L, h, C // h).transpose(1, 2)
        kh = self.k(k).view(B, S, h, C // h).transpose(1, 2)
        vh = self.v(v).view(B, S, h, C // h).transpose(1, 2)
        m = None if mask is None else mask[:, None]
        y = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=m, dropout_p=self.dropout if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(B, L, C))


class InterfaceLayer(nn.Module):
    """Masked cross-attention (queries -> image), conditional self-attention (table), FFN; pre-norm."""

    def __init__(self, *, hidden: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm_cross = nn.LayerNorm(hidden)
        self.cross = _Attention(hidden, heads, dropout)
        self.norm_self = nn.LayerNorm(hidden)
        self.self_attn = _Attention(hidden, heads, dropout)
        self.norm_ffn = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, hidden))

    def forward(self, x, pos, nq: int, memory, memory_pos, cross_mask, self_mask):
        q = x[:, :nq]
        h = self.norm_cross(q)
        q = q + self.cross(h + pos[:, :nq], memory + memory_pos, memory, cross_mask)
        x = torch.cat([q, x[:, nq:]], dim=1)
        h = self.norm_self(x)
        hp = h + pos
        x = x + self.self_attn(hp, hp, h, self_mask)
        return x + self.ffn(self.norm_ffn(x))


class FindInterface(nn.Module):
    """Learnable query pools + L interface layers; returns per-layer query/prompt states."""

    def __init__(self, *, config: InterfaceConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        C = c.hidden
        self.object_queries = nn.Parameter(torch.randn(c.num_object_queries, C) * 0.02)
        self.object_pos = nn.Parameter(torch.randn(c.num_object_queries, C) * 0.02)
        self.image_query = nn.Parameter(torch.randn(1, C) * 0.02)
        self.image_pos = nn.Parameter(torch.randn(1, C) * 0.02)
        self.entity_pool = nn.Parameter(torch.randn(c.num_entity_queries, C) * 0.02)
        self.entity_pos = nn.Parameter(torch.randn(c.num_entity_queries, C) * 0.02)
        self.entity_init = nn.Linear(C, C)
        self.memory_norm = nn.LayerNorm(C)
        self.layers = nn.ModuleList(InterfaceLayer(hidden=C, heads=c.heads, ffn=c.ffn, dropout=c.dropout)
                                    for _ in range(c.layers))
        self.final_norm = nn.LayerNorm(C)

    def entity_means(self, prompts: PromptBatch, x: torch.Tensor, E: int) -> torch.Tensor:
        """(B, E, C) mean of ``x`` (B, T, C) over each entity's prompt tokens."""
        oh = F.one_hot(prompts.entity.clamp_min(0), max(E, 1))[..., :E].to(x.dtype)
        oh = oh * prompts.valid[..., None].to(x.dtype)
        return torch.einsum("bte,btc->bec", oh, x) / oh.sum(1)[..., None].clamp_min(1)

    def _sequence(self, prompts: PromptBatch | None, *, task: str, mem: torch.Tensor) -> tuple:
        """The token sequence ``[object queries | image query | entity queries | prompts]`` of a batch: states
        (B, N, C), positions (B, N, C), self-attention mask (B, N, N), E, T and entity validity (B, E)."""
        B, _, C = mem.shape
        dev, dt = mem.device, mem.dtype
        Q = self.config.num_object_queries
        with_entities = task in ("ground", "interleaved", "separate", "interactive")
        E = prompts.max_entities if (prompts is not None and with_entities) else 0
        T = prompts.tokens.shape[1] if prompts is not None else 0
        P = self.entity_pool.shape[0]
        ent_valid = torch.zeros(B, 0, dtype=torch.bool, device=dev)
        parts = [self.object_queries.expand(B, -1, -1), self.image_query.expand(B, -1, -1)]
        pos = [self.object_pos.expand(B, -1, -1), self.image_pos.expand(B, -1, -1)]
        groups = [torch.full((B, Q), _G["object_queries"], device=dev), torch.full((B, 1), _G["image_query"], device=dev)]
        ents = [torch.full((B, Q + 1), -1, device=dev)]
        valid = [torch.ones(B, Q + 1, dtype=torch.bool, device=dev)]
        if E:
            k = torch.arange(E, device=dev)
            content = self.entity_means(prompts, prompts.tokens, E)
            parts.append(self.entity_pool[k % P][None] + self.entity_init(content))
            pos.append(self.entity_pos[k % P][None].expand(B, -1, -1))
            groups.append(torch.full((B, E), _G["entity_queries"], device=dev))
            ents.append(k[None].expand(B, -1))
            ent_valid = k[None] < prompts.num_entities[:, None]
            valid.append(ent_valid)
        if prompts is not None:
            parts.append(prompts.tokens.to(dt))
            pos.append(torch.zeros(B, T, C, device=dev, dtype=dt))
            g = torch.where(prompts.is_reference, _G["reference_prompts"], _G["text_prompts"])
            groups.append(torch.where(prompts.valid, g, _PAD))
            ents.append(prompts.entity)
            valid.append(prompts.valid)
        self_mask = attention_mask(task, torch.cat(groups, dim=1), torch.cat(ents, dim=1), torch.cat(valid, dim=1))
        return torch.cat(parts, dim=1), torch.cat(pos, dim=1), self_mask, E, T, ent_valid

    def _cross_mask(self, qn: torch.Tensor, features: ImageFeatures, *, predict_masks, preds: list, nq: int,
                    mask_idx: torch.Tensor) -> torch.Tensor:
        """(B, nq, hm*wm) bool cross-attention mask of one layer from the mask prediction of the normed queries
        ``qn``; appends the prediction that is deep-supervised to ``preds``."""
        hm, wm = features.memory_hw
        att = features.attention_features
        if att is None:
            logits = predict_masks(qn)  # (B, Q+E, h, w)
            preds.append(logits)
            with torch.no_grad():
                low = F.interpolate(logits.detach().float(), size=(hm, wm), mode="bilinear", align_corners=False)
        else:
            # masks on the memory grid from the cell-averaged mask features (the mean logit of each cell);
            # when training, the same low-resolution logits are the earlier layers' deep supervision
            if self.training:
                logits = predict_masks(qn, att)
                preds.append(logits)
                low = logits.detach().float()
            else:
                low = predict_masks(qn, att).float()
        with torch.no_grad():
            m = low.flatten(2) > 0  # attend where the previous prediction says "object"
            m = m | ~m.any(-1, keepdim=True)  # empty prediction: attend everywhere
            cross = torch.ones(qn.shape[0], nq, hm * wm, dtype=torch.bool, device=qn.device)
            cross[:, mask_idx] = m
        return cross

    def forward(self, features: ImageFeatures, prompts: PromptBatch | None, *, task: str, predict_masks):
        """Run the layers. ``predict_masks(q_normed (B, Q+E, C)[, features]) -> (B, Q+E, h, w)`` logits (on
        ``features``, default the mask features) drives the masked cross-attention: on the full-resolution
        logits resampled to the memory grid, or, when ``features.attention_features`` is given, on the logits
        over those cell-averaged features. Returns (final normed states (B, N, C), layout dict, list of
        per-layer mask logits: full resolution, or on the memory grid with ``attention_features`` (then only
        when training))."""
        if task not in ATTENTION_TABLE:
            raise InterfaceError(f"unknown task {task!r}; tasks are {TASKS}")
        if task in ("ground", "interleaved", "separate", "interactive") and prompts is None:
            raise InterfaceError(f"task {task!r} needs prompts")
        mem = self.memory_norm(features.memory)
        dt = mem.dtype
        x, qpos, self_mask, E, T, ent_valid = self._sequence(prompts, task=task, mem=mem)
        Q = self.config.num_object_queries
        nq = Q + 1 + E
        mask_idx = torch.cat([torch.arange(Q, device=mem.device), torch.arange(Q + 1, nq, device=mem.device)])
        preds = []
        for layer in self.layers:
            cross = self._cross_mask(self.final_norm(x[:, mask_idx]), features, predict_masks=predict_masks,
                                     preds=preds, nq=nq, mask_idx=mask_idx)
            x = layer(x, qpos, nq, mem, features.memory_pos[None].to(dt), cross, self_mask)
        out = self.final_norm(x)
        layout = {"Q": Q, "E": E, "T": T, "nq": nq, "entity_valid": ent_valid}
        return out, layout, preds
