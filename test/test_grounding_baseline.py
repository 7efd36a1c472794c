"""The HSV colour-word BASELINE grounder on synthetic images (find_ros.grounding.baseline)."""
from __future__ import annotations

import numpy as np
import pytest

from find_ros.grounder import Grounder, GrounderError, QueryEmbedder
from find_ros.grounding.baseline import (COLOUR_NAMES, HsvBaselineGrounder, colour_labels, colour_membership,
                                         colour_words)
from find_ros.instruction import Reference, parse_instruction

H, W = 120, 160
SWATCHES = {"red": (220, 20, 20), "green": (30, 180, 40), "blue": (30, 60, 200), "yellow": (230, 220, 30),
            "orange": (255, 140, 0), "purple": (128, 0, 128), "pink": (255, 150, 190), "cyan": (0, 200, 200),
            "white": (245, 245, 245), "black": (10, 10, 10), "grey": (100, 100, 100), "brown": (100, 55, 18)}


def scene() -> np.ndarray:
    rgb = np.full((H, W, 3), 128, np.uint8)
    rgb[40:80, 60:100] = SWATCHES["red"]
    rgb[10:30, 10:50] = SWATCHES["blue"]
    return rgb


def test_protocols_and_name():
    g = HsvBaselineGrounder()
    assert isinstance(g, Grounder) and isinstance(g, QueryEmbedder)
    assert g.name == "hsv-baseline" and "BASELINE" in (HsvBaselineGrounder.__doc__ or "")


@pytest.mark.parametrize("name", list(SWATCHES))
def test_each_colour_name_labels_its_swatch(name):
    lab = colour_labels(np.array([[SWATCHES[name]]], np.uint8))
    assert COLOUR_NAMES[lab[0, 0]] == name


def test_colour_words():
    assert colour_words("the Gray mug and a RED, red box") == ["grey", "red"]
    assert colour_words("the mug") == []


def test_finds_the_red_square_with_the_right_box_and_a_high_score():
    g = HsvBaselineGrounder()
    g.set_instruction(parse_instruction("the red cube, the blue thing"))
    fg = g.ground(scene())
    red, blue = fg.entities
    assert red.box == (60, 40, 100, 80) and blue.box == (10, 10, 50, 30)
    assert red.score > 0.9 and blue.score > 0.9
    assert red.mask.shape == (H, W) and red.mask.dtype == bool
    truth = np.zeros((H, W), bool)
    truth[40:80, 60:100] = True
    assert (red.mask & truth).sum() / (red.mask | truth).sum() > 0.98
    assert fg.pixel_embeddings.shape == (H // 4, W // 4, len(COLOUR_NAMES))
    np.testing.assert_allclose(np.linalg.norm(fg.pixel_embeddings, axis=-1), 1.0, atol=1e-5)


def test_missing_colour_or_no_colour_word_scores_zero():
    g = HsvBaselineGrounder()
    g.set_instruction(parse_instruction("the green cube; the cube"))
    for e in g.ground(scene()).entities:
        assert e.score == 0.0 and not e.mask.any() and e.box == (0, 0, 0, 0)


def test_largest_component_wins_and_speckles_are_removed():
    rgb = scene()
    rgb[100:110, 10:20] = SWATCHES["red"]  # a smaller red patch
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, H, 40), rng.integers(0, W, 40)
    rgb[ys, xs] = SWATCHES["red"]  # isolated red pixels
    g = HsvBaselineGrounder()
    g.set_instruction(parse_instruction("red"))
    e = g.ground(rgb).entities[0]
    assert e.box == (60, 40, 100, 80)


def test_small_component_scores_lower():
    g = HsvBaselineGrounder()
    g.set_instruction(parse_instruction("the red cube"))
    rgb = np.full((H, W, 3), 128, np.uint8)
    rgb[50:54, 50:54] = SWATCHES["red"]
    small = g.ground(rgb).entities[0].score
    assert 0.0 < small < 0.5 < g.ground(scene()).entities[0].score


def test_reference_entity_uses_the_reference_colour():
    ref = np.full((16, 20, 3), 128, np.uint8)
    ref[4:12, 5:15] = SWATCHES["blue"]
    mask = np.zeros((16, 20), bool)
    mask[4:12, 5:15] = True
    g = HsvBaselineGrounder()
    ins = parse_instruction("find <0>", [Reference(image=ref, mask=mask)])
    g.set_instruction(ins)
    assert g.ground(scene()).entities[0].box == (10, 10, 50, 30)
    # without a mask the dominant chromatic colour of the image is used (blue covers 25 %)
    g.set_instruction(parse_instruction("find <0>", [Reference(image=ref)]))
    assert g.ground(scene()).entities[0].box == (10, 10, 50, 30)
    q = g.embed_instruction(ins)
    assert q.shape == (1, len(COLOUR_NAMES)) and q[0, COLOUR_NAMES.index("blue")] == pytest.approx(1.0)


def test_instruction_embedding_matches_pixel_embeddings():
    g = HsvBaselineGrounder()
    ins = parse_instruction("the red cube, the blue thing, the box")
    q = g.embed_instruction(ins)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    emb = colour_membership(scene())
    sim = emb @ q.T  # (H, W, 3)
    assert sim[60, 80, 0] > 0.9 and sim[60, 80, 1] < 0.2  # red pixel: red entity, not blue
    assert sim[20, 30, 1] > 0.9 and sim[20, 30, 0] < 0.2
    np.testing.assert_allclose(q[2], np.full(len(COLOUR_NAMES), 1 / np.sqrt(len(COLOUR_NAMES))), atol=1e-6)


def test_errors():
    g = HsvBaselineGrounder()
    with pytest.raises(GrounderError, match="no instruction"):
        g.ground(scene())
    g.set_instruction(parse_instruction("red"))
    with pytest.raises(GrounderError, match="uint8"):
        g.ground(scene().astype(np.float32))
    g.clear_instruction()
    with pytest.raises(GrounderError):
        g.ground(scene())
    with pytest.raises(ValueError, match="open_px"):
        HsvBaselineGrounder(open_px=-1)
