"""Word-level tokenizer for the tiny default model, and instruction tokenisation for any tokenizer."""
from __future__ import annotations

import re

import numpy as np

__all__ = ["REF_TOKEN", "build_word_tokenizer", "tokenize_entities", "EntityTokens"]

REF_TOKEN = "[REF]"
"""Placeholder token standing for a visual reference ``<k>`` (its embedding is replaced after encoding)."""
_SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", REF_TOKEN]
_PLACEHOLDER = re.compile(r"<(\d+)>")


def build_word_tokenizer(vocab: list[str]):
    """A lower-casing word-level ``PreTrainedTokenizerFast`` over ``vocab`` (+ [PAD] [UNK] [BOS] [EOS] [REF])."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words: dict[str, int] = {}
    for w in list(_SPECIAL) + [str(v).lower() for v in vocab]:
        if w not in words:
            words[w] = len(words)
    tok = Tokenizer(WordLevel(vocab=words, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
        additional_special_tokens=[REF_TOKEN],
    )
    return fast


class EntityTokens:
    """Token ids of every entity of a batch of instructions, flattened to one padded matrix.

    ``ids`` (N, L) int64 and ``attention`` (N, L) bool, one row per entity (N = all entities of all
    instructions); ``instruction`` (N,) and ``entity`` (N,) say whose row it is; ``ref_slot`` (N, L)
    int64 holds, at a ``<k>`` position, the index of that reference in the batch-wide reference list
    (-1 elsewhere).
    """

    def __init__(self, ids, attention, instruction, entity, ref_slot):
        self.ids = ids
        self.attention = attention
        self.instruction = instruction
        self.entity = entity
        self.ref_slot = ref_slot


def _ref_id(tokenizer) -> int:
    vocab = tokenizer.get_vocab()
    if REF_TOKEN in vocab:
        return int(vocab[REF_TOKEN])
    for cand in (tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id):
        if cand is not None:
            return int(cand)
    return 0


def tokenize_entities(tokenizer, phrases: list[list[str]], *, max_tokens: int, add_eos: bool = True,
                      ref_offsets: list[int] | None = None) -> EntityTokens:
    """Tokenise ``phrases[b][k]`` (entity k of instruction b, ``<j>`` placeholders allowed) one entity per row.

    Each row is [BOS] + tokens + [EOS] (when the tokenizer has them; EOS only if ``add_eos``), with a
    placeholder token at each ``<j>``; ``ref_offsets[b]`` is added to ``j`` to index the batch-wide
    reference list. Rows longer than ``max_tokens`` are cut (EOS kept).
    """
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    eos = eos if add_eos else None
    ref = _ref_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    rows, slots, inst, ent = [], [], [], []
    texts: list[str] = []
    layout: list[list[tuple[str, int]]] = []  # per row: pieces ("text", idx into texts) / ("ref", j)
    for b, ents in enumerate(phrases):
        off = 0 if ref_offsets is None else int(ref_offsets[b])
        for k, phrase in enumerate(ents):
            pieces, pos = [], 0
            for m in _PLACEHOLDER.finditer(phrase):
                seg = phrase[pos:m.start()].strip()
                if seg:
                    pieces.append(("text", len(texts)))
                    texts.append(seg)
                pieces.append(("ref", off + int(m.group(1))))
                pos = m.end()
            seg = phrase[pos:].strip()
            if seg:
                pieces.append(("text", len(texts)))
                texts.append(seg)
            layout.append(pieces)
            inst.append(b)
            ent.append(k)
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for pieces in layout:
        ids, sl = [], []
        if bos is not None:
            ids.append(bos)
            sl.append(-1)
        for kind, v in pieces:
            if kind == "text":
                ids.extend(enc[v])
                sl.extend([-1] * len(enc[v]))
            else:
                ids.append(ref)
                sl.append(v)
        budget = max_tokens - (1 if eos is not None else 0)
        if len(ids) > budget:
            # keep every reference slot: drop text tokens from the end first
            keep = np.ones(len(ids), bool)
            excess = len(ids) - budget
            for i in range(len(ids) - 1, -1, -1):
                if excess == 0:
                    break
                if sl[i] < 0 and not (i == 0 and bos is not None):
                    keep[i] = False
                    excess -= 1
            ids = [t for t, k in zip(ids, keep) if k][:budget]
            sl = [s for s, k in zip(sl, keep) if k][:budget]
        if eos is not None:
            ids.append(eos)
            sl.append(-1)
        rows.append(ids)
        slots.append(sl)
    n = len(rows)
    L = max((len(r) for r in rows), default=1)
    ids = np.full((n, L), pad, np.int64)
    att = np.zeros((n, L), bool)
    slot = np.full((n, L), -1, np.int64)
    for i, (r, s) in enumerate(zip(rows, slots)):
        ids[i, : len(r)] = r
        att[i, : len(r)] = True
        slot[i, : len(s)] = s
    return EntityTokens(ids, att, np.asarray(inst, np.int64), np.asarray(ent, np.int64), slot)
