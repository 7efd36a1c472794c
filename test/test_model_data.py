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
    _referring,
    _relation_matrix,
    build_shards,
    is_heldout_pair,
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
    rel = _relation_matrix(objs, boxes)
    assert rel["left of"][0, 2] and rel["right of"][1, 2] and not rel["left of"][1, 2]
    for seed in range(10):
        refs = {r.object_id: r for r in _referring(objs, rel, np.random.default_rng(seed))}
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
