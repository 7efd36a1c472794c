"""Sim FIND-Bench data: determinism, masks, references from other scenes, heldout split, shard cache."""
import re

import numpy as np
import pytest

from find_ros.model.data import (
    DataConfig,
    DataError,
    ObjectInfo,
    ShardDataset,
    SimFindDataset,
    build_shards,
    is_heldout_pair,
    referring_phrases,
    relation_matrix,
    vocabulary,
)

try:
    import find_ros.sim as _sim

    HAVE_SIM = hasattr(_sim, "Scene") and hasattr(_sim, "SimRenderer")
except ImportError:
    HAVE_SIM = False
needs_sim = pytest.mark.skipif(not HAVE_SIM, reason="find_ros.sim is not importable (sim layer missing)")

CFG = DataConfig(n_objects=(3, 6))


@pytest.fixture(scope="module")
def train_samples():
    ds = SimFindDataset(split="train", config=CFG)
    return [ds[i] for i in range(6)]


def _same(a, b):
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instance, b.instance)
    assert a.to_meta() == b.to_meta()
    assert len(a.references) == len(b.references)
    for (ia, ma), (ib, mb) in zip(a.references, b.references):
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)


@needs_sim
def test_deterministic_by_split_and_index(train_samples):
    again = SimFindDataset(split="train", config=CFG)[3]
    _same(train_samples[3], again)
    other = SimFindDataset(split="test", config=CFG)[3]
    assert other.seed != train_samples[3].seed


@needs_sim
def test_masks_match_instance_ids(train_samples):
    for s in train_samples:
        assert s.image.shape == (CFG.height, CFG.width, 3) and s.image.dtype == np.uint8
        assert s.instance.shape == (CFG.height, CFG.width)
        ids = set(np.unique(s.instance).tolist())
        for o in s.objects:
            assert o.id in ids and int(s.mask(o.id).sum()) == o.pixels >= CFG.min_pixels
            assert o.center_cam[2] > 0  # in front of the camera
        for r in s.referring:
            assert s.mask(r.object_id).any()
            assert r.phrase.startswith("the ") and r.attributes in r.phrase
        # the interleaved instruction parses into exactly its entities
        instr = s.instruction(mode="interleaved")
        assert len(instr.entities) == len(s.interleaved.object_ids)
        assert len(s.instruction(mode="text_only").entities) == len(s.interleaved.object_ids)
        assert len(s.instruction(mode="text").entities) == len(s.interleaved.object_ids)


@needs_sim
def test_references_from_other_scene_same_kind(train_samples):
    n_vis = 0
    for s in train_samples:
        by_id = {o.id: o for o in s.objects}
        for e, vis in enumerate(s.interleaved.visual):
            if not vis:
                assert s.interleaved.ref_index[e] == -1
                continue
            n_vis += 1
            k = s.interleaved.ref_index[e]
            seed, _, cat, col = s.reference_sources[k]
            o = by_id[s.interleaved.object_ids[e]]
            assert seed != s.seed
            assert (cat, col) == (o.category, o.colour)
            img, m = s.references[k]
            assert img.shape == (CFG.ref_size, CFG.ref_size, 3) and m.any()
            assert f"<{k}>" in s.interleaved.text
    assert n_vis > 0


@needs_sim
def test_heldout_pairs_absent_from_train_present_in_heldout(train_samples):
    for s in train_samples:
        assert not any(is_heldout_pair(o.category, o.colour) for o in s.objects)
    ho = SimFindDataset(split="heldout", config=CFG)
    for i in range(3):
        s = ho[i]
        by_id = {o.id: o for o in s.objects}
        assert s.referring
        for r in s.referring:
            o = by_id[r.object_id]
            assert is_heldout_pair(o.category, o.colour)


@needs_sim
def test_vocabulary_covers_text(train_samples):
    vocab = set(vocabulary())
    for s in train_samples:
        words = " ".join([r.phrase for r in s.referring] + [s.caption]).split()
        assert set(words) <= vocab, set(words) - vocab


@needs_sim
def test_shards_round_trip(tmp_path, train_samples):
    d = build_shards(split="train", n_samples=3, out_dir=tmp_path, config=CFG, shard_size=2)
    assert len(list(d.glob("shard_*.npz"))) == 2
    sd = ShardDataset(directory=d)
    assert len(sd) == 3
    for i in range(3):
        _same(sd[i], train_samples[i])
    with pytest.raises(DataError, match="another config"):
        build_shards(split="train", n_samples=3, out_dir=tmp_path, config=DataConfig(width=64, height=48), shard_size=2)


def test_referring_phrases_single_out_targets():
    # two red cubes side by side and a blue torus: the cubes need a relation, the torus does not
    objs = [
        ObjectInfo(id=1, category="cube", colour="red", size="small", pixels=100, center_cam=(-1.0, 0.0, 3.0)),
        ObjectInfo(id=2, category="cube", colour="red", size="small", pixels=100, center_cam=(1.0, 0.0, 3.0)),
        ObjectInfo(id=3, category="torus", colour="blue", size="large", pixels=100, center_cam=(0.0, 0.0, 3.0)),
    ]
    boxes = {
        1: (np.array([0.0, 0.0, 0.0]), np.array([0.2, 0.2, 0.2])),
        2: (np.array([2.0, 0.0, 0.0]), np.array([2.2, 0.2, 0.2])),
        3: (np.array([1.0, 0.0, 0.0]), np.array([1.2, 0.2, 0.2])),
    }
    rel = relation_matrix(objs, boxes)
    assert rel["left of"][0, 2] and rel["right of"][1, 2] and not rel["left of"][1, 2]
    for seed in range(10):
        refs = {r.object_id: r for r in referring_phrases(objs, rel, np.random.default_rng(seed))}
        assert set(refs) == {1, 2, 3}
        assert refs[1].relation is not None and refs[2].relation is not None
        assert refs[1].phrase != refs[2].phrase
        assert re.fullmatch(r"the (small )?red cube left of the (blue )?torus", refs[1].phrase)
        assert re.fullmatch(r"the (small )?red cube right of the (blue )?torus", refs[2].phrase)
        assert refs[3].relation is not None or re.fullmatch(r"the (large )?blue torus", refs[3].phrase)


def test_bad_config_raises():
    with pytest.raises(DataError, match="p_visual"):
        DataConfig(p_visual=1.5)
    with pytest.raises(DataError, match="unknown split"):
        SimFindDataset(split="nope")


# ----------------------------------------------------------------------------- every sample can be drawn
# Heldout scenes only *allow* a held-out (category, colour) pair and look from a random side, so about 70 % of
# the random draws show no held-out target; ``find-ros eval --split heldout --seed 918273`` hit a sample whose
# 20 draws all failed (index 9182730058). Such a sample now comes from a staged scene.
SMALL = DataConfig(width=64, height=48)
"""Small images: fast, and far more failed random draws than at 128x96, so the staged path runs often."""


def _check_valid(s, split, cfg):
    assert s.image.shape == (cfg.height, cfg.width, 3)
    by_id = {o.id: o for o in s.objects}
    assert len(s.objects) >= 2 and s.referring
    for o in s.objects:
        assert int(s.mask(o.id).sum()) == o.pixels >= cfg.min_pixels
    for r in s.referring:
        held = is_heldout_pair(by_id[r.object_id].category, by_id[r.object_id].colour)
        assert held == (split == "heldout"), (split, r.phrase)
    assert len(s.instruction(mode="interleaved").entities) == len(s.interleaved.object_ids) >= 1
    for seed, _, cat, col in s.reference_sources:
        assert is_heldout_pair(cat, col) == (split == "heldout")


@needs_sim
def test_heldout_seed_918273_sample_that_crashed_the_eval():
    s = SimFindDataset(split="heldout")[918273 * 10_000 + 58]
    assert s.index == 9182730058 and s.staged
    _check_valid(s, "heldout", DataConfig())


@needs_sim
def test_heldout_samples_of_many_eval_seeds_never_raise():
    ds = SimFindDataset(split="heldout", config=SMALL)
    seeds = [918273, 0, 1, 7, 42, 123, 4242, 99991, 500000, 2**31 - 1] + list(range(1000, 1090, 6))
    staged = 0
    for seed in seeds:
        for i in range(4):
            s = ds[seed * 10_000 + i]
            assert s.index == seed * 10_000 + i
            _check_valid(s, "heldout", SMALL)
            staged += s.staged
    assert staged >= 1  # the fallback ran (about 10 % of the samples at 64x48)


@needs_sim
@pytest.mark.parametrize("split", ["heldout", "test"])
def test_staged_scenes_always_give_a_valid_deterministic_sample(split):
    ds = SimFindDataset(split=split, config=SMALL)
    for i in range(120):
        s = ds.staged(i)
        assert s.staged
        _check_valid(s, split, SMALL)
    again = SimFindDataset(split=split, config=SMALL)
    for i in (0, 57, 119):
        _same(ds.staged(i), again.staged(i))


def test_meta_without_staged_flag_reads_as_random_draw():
    meta = {"split": "train", "index": 0, "seed": 0, "objects": [], "referring": [],
            "interleaved": {"text": "the red cube", "object_ids": [1], "text_phrases": ["the red cube"],
                            "visual": [False], "ref_index": [-1]},
            "caption": "a red cube", "reference_sources": []}
    from find_ros.model.data import SimSample

    sample = SimSample.from_meta(meta, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), [])
    assert sample.staged is False and sample.to_meta()["staged"] is False


@needs_sim
def test_synonym_phrases_fold_back_to_the_plain_sample():
    from find_ros.model.tokenizer import build_word_tokenizer, normalize_text, word_vocabulary

    vocab = word_vocabulary(build_word_tokenizer(vocabulary()))
    plain = SimFindDataset(split="test", config=CFG)
    syn = SimFindDataset(split="test", config=DataConfig(n_objects=(3, 6), p_synonym=0.6))
    changed = 0
    for i in range(5):
        a, b = plain[i], syn[i]
        assert np.array_equal(a.image, b.image) and a.interleaved.object_ids == b.interleaved.object_ids
        for ra, rb in zip(a.referring, b.referring):
            assert normalize_text(rb.phrase, vocab) == ra.phrase
            assert normalize_text(ra.phrase, vocab) == ra.phrase  # generated phrases are never rewritten
            changed += rb.phrase != ra.phrase
        assert normalize_text(b.caption, vocab) == a.caption
    assert changed > 0
    with pytest.raises(DataError, match="p_synonym"):
        DataConfig(p_synonym=2.0)
