"""Words the model does not know: tokenizer normalisation (case, punctuation, plurals, synonyms) and the
grounder's report of what is still unknown."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from find_ros.instruction import Reference, parse_instruction
from find_ros.model.tokenizer import (
    IGNORED_WORDS,
    SYNONYMS,
    build_word_tokenizer,
    known_words_summary,
    normalize_text,
    tokenize_entities,
    unknown_words,
    word_vocabulary,
)

SIM_WORDS = ["the", "a", "an", "and", "of", "left", "right", "in", "front", "behind", "on", "find", "with",
             "cube", "box", "sphere", "cylinder", "cone", "torus", "mug", "table", "chair", "lamp",
             "red", "green", "blue", "yellow", "orange", "purple", "white", "black", "pink", "cyan", "brown", "grey",
             "small", "medium", "large"]
"""The shipped model's vocabulary, spelled out so that these tests need no sim (``data.vocabulary()``)."""


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(SIM_WORDS)


@pytest.fixture(scope="module")
def vocab(tok):
    return word_vocabulary(tok)


@pytest.mark.parametrize("text, expected", [
    ("The RED Cube.", "the red cube"),
    ("the red cubes", "the red cube"),
    ("boxes", "box"),
    ("tori", "torus"),
    ("the big ball to the left of the Gray ring!", "the large sphere left of the grey torus"),
    ("a tiny doughnut on top of the desk", "a small torus on the table"),
    ("the little cups", "the small mug"),
    ("the medium-sized crate in back of the stool", "the medium box behind the chair"),
    ("please pick up the blue block", "the blue cube"),
    ("where is the turquoise lantern?", "the cyan lamp"),
    ("the <0> right of the  <1>", "the <0> right of the <1>"),
    ("[UNK] cube", "[UNK] cube"),
])
def test_normalisation(vocab, text, expected):
    assert normalize_text(text, vocab) == expected


def test_sim_categories_keep_their_own_names(vocab):
    # "cube" and "box" are different sim shapes: a vocabulary word is never mapped to another one
    for w in SIM_WORDS:
        assert normalize_text(w, vocab) == w and normalize_text(w.upper(), vocab) == w
    assert normalize_text("the box and the cube", vocab) == "the box and the cube"
    # every synonym lands on a sim word, and none of them is a sim word itself
    assert set(SYNONYMS.values()) <= set(SIM_WORDS)
    assert not set(SYNONYMS) & set(SIM_WORDS) and not IGNORED_WORDS & set(SIM_WORDS)


def test_plurals_of_every_category(vocab):
    for cat, plural in [("cube", "cubes"), ("box", "boxes"), ("sphere", "spheres"), ("cylinder", "cylinders"),
                        ("cone", "cones"), ("torus", "toruses"), ("mug", "mugs"), ("table", "tables"),
                        ("chair", "chairs"), ("lamp", "lamps"), ("sphere", "balls"), ("torus", "rings")]:
        assert normalize_text(f"the {plural}", vocab) == f"the {cat}", plural


def test_generated_grammar_tokenises_exactly_as_before(tok):
    # every phrase shape the data generator writes: the normalisation must not change one id
    phrases = []
    for size in ("small", "medium", "large"):
        for colour in ("red", "grey", "cyan"):
            for cat in ("cube", "box", "torus", "table"):
                for rel in ("left of", "right of", "in front of", "behind", "on"):
                    phrases.append(f"the {size} {colour} {cat} {rel} the {colour} {cat}")
    phrases.append("a small red cube a large blue torus and a medium grey box")
    rows = tokenize_entities(tok, [[p] for p in phrases], max_tokens=32)
    for i, p in enumerate(phrases):
        raw = [tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert rows.ids[i, : len(raw)].tolist() == raw and rows.attention[i].sum() == len(raw), p
        assert tok.unk_token_id not in raw


def test_tokenize_entities_applies_normalisation(tok):
    a = tokenize_entities(tok, [["the red cube", "the <0> left of the blue torus"]], max_tokens=16,
                          ref_offsets=[0])
    b = tokenize_entities(tok, [["The red CUBES.", "the <0> to the left of the blue ring"]], max_tokens=16,
                          ref_offsets=[0])
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.ref_slot, b.ref_slot)


def test_unknown_words_are_listed(tok):
    assert unknown_words(tok, ["the red mug next to the fire extinguisher", "the <0> by the Fire door"]) == (
        "next", "fire", "extinguisher", "by", "door")
    assert unknown_words(tok, ["Pick up the big balls, please!", "<0>", "the [UNK]"]) == ()
    s = known_words_summary(tok)
    assert "cube" in s and "torus" in s and "grey" in s and "large" in s and "left of" in s


def test_subword_tokenizers_are_left_alone():
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "the": 2, "red": 3, "cu": 4, "##be": 5, "##s": 6, "ball": 7}
    t = Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]")
    assert word_vocabulary(fast) is None
    assert normalize_text("The red BALLS.", None) == "The red BALLS."
    assert unknown_words(fast, ["the red cubes", "the red mug"]) == ("mug",)
    assert "subword" in known_words_summary(fast)


# ----------------------------------------------------------------------------- through a real FindGrounder


@pytest.fixture(scope="module")
def grounder():
    from find_ros.model.find import FindModel
    from find_ros.model.grounder import FindGrounder

    torch.set_num_threads(1)
    return FindGrounder(model=FindModel.build_tiny(vocab=SIM_WORDS, seed=0))


def test_grounder_reports_unknown_words(grounder, caplog):
    ins = parse_instruction("the red mug next to the fire extinguisher, the blue cubes")
    with caplog.at_level(logging.WARNING, logger="find_ros.model.grounder"):
        grounder.set_instruction(ins)
    assert grounder.unknown_words == ("next", "fire", "extinguisher")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert all(w in warned[0] for w in ("'next'", "'fire'", "'extinguisher'", "mug", "torus", "left of"))
    # still grounded (with [UNK] at those words), one mask per entity
    fg = grounder.ground(np.zeros((48, 64, 3), np.uint8))
    assert len(fg.entities) == 2 and fg.entities[0].mask.shape == (48, 64)
    # the same words again: no second warning, but the attribute follows the instruction
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="find_ros.model.grounder"):
        grounder.set_instruction(parse_instruction("the red mug next to the fire extinguisher, the blue cubes"))
    assert grounder.unknown_words == ("next", "fire", "extinguisher") and not caplog.records
    grounder.set_instruction(parse_instruction("Pick up the big balls to the left of the gray ring."))
    assert grounder.unknown_words == ()
    grounder.clear_instruction()
    assert grounder.unknown_words == ()


def test_grounder_synonyms_give_the_same_prompts(grounder):
    ref = Reference(image=np.full((16, 16, 3), 200, np.uint8))
    a = grounder.model.encode_instructions([parse_instruction("the large sphere, the <0> left of the grey torus",
                                                              [ref])])
    b = grounder.model.encode_instructions([parse_instruction("The big BALLS; the <0> to the left of the gray ring!",
                                                              [ref])])
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.valid, b.valid)


def test_shipped_model_reports_unknown_words(caplog):
    from find_ros.model.grounder import DEFAULT_MODEL_DIR, FindGrounder

    assert DEFAULT_MODEL_DIR == Path(__file__).parents[1] / "find_ros" / "models" / "find-sim-tiny"
    torch.set_num_threads(1)
    g = FindGrounder.from_pretrained()
    with caplog.at_level(logging.WARNING, logger="find_ros.model.grounder"):
        g.set_instruction(parse_instruction("find the fire extinguisher"))
        q = g.embed_text("the red cups")
    assert g.unknown_words == ("fire", "extinguisher")
    assert q.shape[0] > 0 and any("extinguisher" in r.getMessage() for r in caplog.records)
