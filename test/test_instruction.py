"""Interleaved instruction parsing and validation (find_ros.instruction)."""
import numpy as np
import pytest

from find_ros.instruction import (
    MAX_REFERENCES,
    MAX_TEXT_CHARS,
    InstructionError,
    Reference,
    parse_instruction,
)


def _ref(h=8, w=6, mask=None):
    return Reference(image=np.full((h, w, 3), 120, np.uint8), mask=mask)


def test_plain_text_is_one_entity():
    ins = parse_instruction("  the  red   cube ", id="a")
    assert ins.id == "a" and ins.text == "the red cube"
    assert [e.phrase for e in ins.entities] == ["the red cube"]
    assert ins.entities[0].reference_indices == () and not ins.is_interleaved


def test_interleaved_entities_keep_their_references():
    ins = parse_instruction("water the green leaves using <0>; then the <1> near the lamp", [_ref(), _ref()])
    phrases = [(e.phrase, e.text, e.reference_indices) for e in ins.entities]
    assert phrases == [
        ("water the green leaves using <0>", "water the green leaves using", (0,)),
        ("the <1> near the lamp", "the near the lamp", (1,)),
    ]
    assert ins.is_interleaved


def test_separators_split_entities():
    ins = parse_instruction("the red cube, the blue ball and the yellow cone")
    assert [e.text for e in ins.entities] == ["the red cube", "the blue ball", "the yellow cone"]


def test_placeholder_alone_is_an_entity_with_empty_text():
    ins = parse_instruction("<0>", [_ref()])
    assert ins.entities[0].text == "" and ins.entities[0].reference_indices == (0,)


@pytest.mark.parametrize(
    "text, refs, match",
    [
        ("", 0, "empty"),
        ("   \n ", 0, "empty"),
        ("x" * (MAX_TEXT_CHARS + 1), 0, "characters"),
        ("the <0>", 0, r"<0> name no reference"),
        ("the <0> and <3>", 2, r"<3> name no reference"),
        ("the cube", 1, "never mentioned"),
        ("bell\x07", 0, "non-printable"),
        (", ; and", 0, "names nothing"),
    ],
)
def test_bad_instructions_raise_with_the_reason(text, refs, match):
    with pytest.raises(InstructionError, match=match):
        parse_instruction(text, [_ref() for _ in range(refs)])


def test_too_many_references():
    refs = [_ref() for _ in range(MAX_REFERENCES + 1)]
    text = " ".join(f"<{k}>" for k in range(len(refs)))
    with pytest.raises(InstructionError, match="references"):
        parse_instruction(text, refs)


def test_non_string_text():
    with pytest.raises(InstructionError, match="string"):
        parse_instruction(b"bytes")  # type: ignore[arg-type]


def test_reference_validation():
    with pytest.raises(InstructionError, match=r"\(H, W, 3\) uint8"):
        Reference(image=np.zeros((4, 4), np.uint8))
    with pytest.raises(InstructionError, match=r"\(H, W, 3\) uint8"):
        Reference(image=np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InstructionError, match="too small"):
        Reference(image=np.zeros((1, 4, 3), np.uint8))
    with pytest.raises(InstructionError, match="does not match"):
        _ref(mask=np.ones((3, 3), bool))
    with pytest.raises(InstructionError, match="empty"):
        _ref(mask=np.zeros((8, 6), bool))
    r = _ref(mask=np.eye(8, 6, dtype=np.uint8) * 255)
    assert r.mask.dtype == bool and r.mask.sum() == 6


def test_unicode_text_is_kept():
    ins = parse_instruction("la tasse rouge — près de la lampe")
    assert ins.entities[0].text == "la tasse rouge — près de la lampe"
