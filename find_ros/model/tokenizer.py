"""Word-level tokenizer for the tiny default model, and instruction tokenisation for any tokenizer.

Normalisation (word-level tokenizers only, see :func:`normalize_text`): before a phrase is split into
words it is lower-cased, punctuation becomes a space, a few multi-word forms are folded ("to the left of"
-> "left of", "on top of" -> "on"), and every word the vocabulary lacks is tried as a plural ("cubes" ->
"cube", "boxes" -> "box", "tori" -> "torus"), then as a synonym a person would use for the sim world
(:data:`SYNONYMS`: "ball" -> "sphere", "ring" -> "torus", "gray" -> "grey", "big" -> "large", ...), and
dropped when it is a command word that names nothing to find (:data:`IGNORED_WORDS`: "please", "pick",
"up", "go", "to", ...). A word of the vocabulary is never replaced and none of the folded forms occurs in
the data generator's phrases, so the generated training phrases tokenise exactly as before. What is still outside the vocabulary is reported by :func:`unknown_words`
(the grounder warns with it) instead of silently becoming ``[UNK]``.

Subword tokenizers (CLIP, SigLIP, LLMs) get the text as written: they have no closed vocabulary to map to.
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["REF_TOKEN", "build_word_tokenizer", "tokenize_entities", "EntityTokens", "SYNONYMS",
           "PHRASE_SYNONYMS", "IGNORED_WORDS", "normalize_text", "word_vocabulary", "unknown_words",
           "known_words_summary"]

SYNONYMS: dict[str, str] = {
    # categories (the sim's "cube" and "box" are different shapes: a cube and a flat cuboid)
    "block": "cube", "dice": "cube",
    "crate": "box", "carton": "box", "brick": "box", "package": "box", "parcel": "box",
    "ball": "sphere", "orb": "sphere", "globe": "sphere",
    "tube": "cylinder", "pillar": "cylinder", "column": "cylinder",
    "pylon": "cone",
    "ring": "torus", "donut": "torus", "doughnut": "torus",
    "cup": "mug",
    "desk": "table",
    "seat": "chair", "stool": "chair",
    "lantern": "lamp",
    # colours
    "gray": "grey", "silver": "grey",
    "crimson": "red", "scarlet": "red",
    "navy": "blue",
    "lime": "green",
    "gold": "yellow", "golden": "yellow",
    "violet": "purple", "lilac": "purple", "magenta": "pink",
    "turquoise": "cyan", "teal": "cyan", "aqua": "cyan",
    # sizes
    "big": "large", "huge": "large", "tiny": "small", "little": "small", "mid": "medium",
    # relations
    "atop": "on", "upon": "on",
}
"""Word -> sim vocabulary word, used only for words the vocabulary lacks (and only when the target is in it)."""

PHRASE_SYNONYMS: tuple[tuple[str, str], ...] = (
    ("to the left of", "left of"), ("to the right of", "right of"), ("on the left of", "left of"),
    ("on the right of", "right of"), ("on top of", "on"), ("in back of", "behind"), ("medium sized", "medium"),
)
"""Multi-word forms folded before the word-level steps (whole words, after lower-casing and punctuation)."""

IGNORED_WORDS: frozenset[str] = frozenset({
    "please", "pick", "up", "grab", "get", "go", "to", "where", "is", "are", "show", "me", "locate", "look",
    "for", "point", "at", "bring", "fetch", "that", "which", "there", "you", "can", "could", "sized",
})
"""Command and filler words that name nothing to find; dropped when the vocabulary lacks them."""

_PUNCT = re.compile(r"[\W_]+")
_KEEP = re.compile(r"(<\d+>|\[[A-Za-z]+\])")
"""Pieces normalisation leaves alone: placeholders ``<k>`` and special tokens such as ``[UNK]``."""

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


def word_vocabulary(tokenizer) -> frozenset[str] | None:
    """The words of a word-level tokenizer (special tokens excluded); ``None`` for subword tokenizers."""
    cached = getattr(tokenizer, "_find_ros_words", False)
    if cached is not False:
        return cached
    words = None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "WordLevel":
        special = set(getattr(tokenizer, "all_special_tokens", ()))
        words = frozenset(w for w in tokenizer.get_vocab() if w not in special)
    try:
        tokenizer._find_ros_words = words
    except AttributeError:  # a tokenizer that refuses new attributes: recompute next time
        pass
    return words


def _singular(word: str, vocab: frozenset[str]) -> str | None:
    cands = []
    if word.endswith("ies"):
        cands.append(word[:-3] + "y")
    if word.endswith("es"):
        cands.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        cands.append(word[:-1])
    if word.endswith("i"):  # tori -> torus
        cands.append(word[:-1] + "us")
    for c in cands:
        if c in vocab or SYNONYMS.get(c) in vocab:
            return c
    return None


def _normalize_words(text: str, vocab: frozenset[str] | set[str]) -> list[str]:
    words = _PUNCT.sub(" ", text.lower()).split()
    folded = " " + " ".join(words) + " "
    for src, dst in PHRASE_SYNONYMS:  # none of these forms occurs in generated phrases
        folded = folded.replace(f" {src} ", f" {dst} ")
    out = []
    for w in folded.split():
        if w in vocab:
            out.append(w)
            continue
        base = w if w in SYNONYMS else (_singular(w, vocab) or w)
        if base in vocab:
            out.append(base)
        elif SYNONYMS.get(base) in vocab:
            out.append(SYNONYMS[base])
        elif w not in IGNORED_WORDS:
            out.append(w)
    return out


def normalize_text(text: str, vocab: frozenset[str] | set[str] | None) -> str:
    """``text`` as the word-level tokenizer over ``vocab`` should see it (see the module docstring).

    ``vocab=None`` (a subword tokenizer) returns ``text`` unchanged. Placeholders ``<k>`` and special tokens
    (``[UNK]``) are kept as written. Words the vocabulary has are never changed.
    """
    if vocab is None:
        return text
    out: list[str] = []
    for i, piece in enumerate(_KEEP.split(text)):
        if i % 2:
            out.append(piece)
        else:
            out.extend(_normalize_words(piece, vocab))
    return " ".join(out)


def unknown_words(tokenizer, texts: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Words of ``texts`` that stay outside the tokenizer's vocabulary after :func:`normalize_text` (they
    would become the unknown token), lower-cased, each once, in order of first appearance.

    Placeholders and special tokens are not words. For a subword tokenizer: words whose tokens contain
    its unknown token (rare)."""
    vocab = word_vocabulary(tokenizer)
    unk = getattr(tokenizer, "unk_token_id", None)
    out: list[str] = []
    for t in texts:
        for i, piece in enumerate(_KEEP.split(str(t))):
            if i % 2:
                continue
            if vocab is not None:
                cands = [w for w in _normalize_words(piece, vocab) if w not in vocab]
            else:
                cands = [w for w in _PUNCT.sub(" ", piece.lower()).split()
                         if unk is not None and unk in tokenizer(w, add_special_tokens=False)["input_ids"]]
            out.extend(w for w in cands if w not in out)
    return tuple(dict.fromkeys(out))


_FUNCTION_WORDS = frozenset({"the", "a", "an", "and", "of", "with", "find", "in", "on", "left", "right", "front",
                             "behind"})


def known_words_summary(tokenizer, limit: int = 32) -> str:
    """A short human list of what the model knows, for warnings: ``"cube, box, ... (+14 more)"``."""
    vocab = word_vocabulary(tokenizer)
    if vocab is None:
        return f"a subword vocabulary of {len(tokenizer.get_vocab())} tokens"
    ids = tokenizer.get_vocab()
    content = sorted((w for w in vocab if w not in _FUNCTION_WORDS), key=lambda w: ids[w])
    shown = ", ".join(content[:limit])
    more = len(content) - limit
    rel = "; relations: left of, right of, in front of, behind, on" if {"left", "behind"} <= vocab else ""
    return shown + (f" (+{more} more)" if more > 0 else "") + rel


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


def _pieces(phrase: str, *, off: int, texts: list[str]) -> list[tuple[str, int]]:
    """The pieces of one entity phrase: ``("text", i)`` (its text appended to ``texts`` at i) / ``("ref", off + j)``
    per ``<j>`` placeholder."""
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
    return pieces


def _row(pieces: list[tuple[str, int]], *, enc: list[list[int]], bos: int | None, eos: int | None, ref: int,
         max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids and reference slots (-1 on text) of one entity row, cut to ``max_tokens`` (EOS and slots kept)."""
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
    return ids, sl


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
    inst, ent = [], []
    texts: list[str] = []
    layout: list[list[tuple[str, int]]] = []  # per row: pieces ("text", idx into texts) / ("ref", j)
    for b, ents in enumerate(phrases):
        off = 0 if ref_offsets is None else int(ref_offsets[b])
        for k, phrase in enumerate(ents):
            layout.append(_pieces(phrase, off=off, texts=texts))
            inst.append(b)
            ent.append(k)
    vocab = word_vocabulary(tokenizer)
    if vocab is not None:
        texts = [normalize_text(t, vocab) for t in texts]
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    rows = [_row(pieces, enc=enc, bos=bos, eos=eos, ref=ref, max_tokens=max_tokens) for pieces in layout]
    n = len(rows)
    L = max((len(r) for r, _ in rows), default=1)
    ids = np.full((n, L), pad, np.int64)
    att = np.zeros((n, L), bool)
    slot = np.full((n, L), -1, np.int64)
    for i, (r, s) in enumerate(rows):
        ids[i, : len(r)] = r
        att[i, : len(r)] = True
        slot[i, : len(s)] = s
    return EntityTokens(ids, att, np.asarray(inst, np.int64), np.asarray(ent, np.int64), slot)
