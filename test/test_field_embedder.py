"""FieldEmbedder: the field takes its per-pixel and query embeddings from the grounder (hsv-baseline and a tiny FIND)."""
from __future__ import annotations

import numpy as np
import pytest

from find_ros.field import EmbedderError, FeatureField, FieldConfig, FieldEmbedder
from find_ros.grounding.baseline import HsvBaselineGrounder
from find_ros.instruction import parse_instruction

H, W = 60, 80
K = np.array([[70.0, 0, 39.5], [0, 70.0, 29.5], [0, 0, 1]])


def _frame():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2] = (220, 20, 20)
    rgb[:, W // 2:] = (20, 40, 220)
    return rgb, np.full((H, W), 2.0, np.float32)


def test_hsv_embedder_fuses_and_queries_by_text():
    emb = FieldEmbedder(grounder=HsvBaselineGrounder())
    assert emb.dim == 12
    rgb, depth = _frame()
    pe = emb.pixel_embeddings(rgb)
    assert pe.shape == (H // 4, W // 4, 12) and np.allclose(np.linalg.norm(pe, axis=2), 1, atol=1e-5)
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=emb.dim))
    ff.integrate(depth, K, np.eye(4), pixel_embeddings=pe, color=rgb)
    for word, side in (("red", -1), ("blue", 1)):
        r = ff.query(emb.embed_text(f"{word} wall"))
        assert r.goals and np.sign(r.goals[0].position[0]) == side, (word, r.goals[:1])
        s = ff.similarity(emb.embed_text(f"{word} wall"))
        assert np.allclose(s, r.scores)
    ins = parse_instruction("red wall", [])
    assert emb.embed_instruction(ins) is emb.embed_instruction(ins)  # cached for the same instruction


def test_embedder_checks_dimensions_and_protocol():
    emb = FieldEmbedder(grounder=HsvBaselineGrounder())
    with pytest.raises(EmbedderError, match="12"):
        emb.check_pixels(np.zeros((4, 4, 8), np.float32))

    class NoQuery:
        name = "plain"

        def ground(self, rgb):
            return None

    with pytest.raises(EmbedderError, match="embed_instruction"):
        FieldEmbedder(grounder=NoQuery())


def test_find_grounder_pixel_embeddings_without_instruction():
    torch = pytest.importorskip("torch")
    from find_ros.model.find import FindModel
    from find_ros.model.grounder import FindGrounder

    torch.set_num_threads(1)
    vocab = "the a red green blue small large cube wall sphere object".split()
    tiny = dict(vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
                text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
                interface=dict(hidden=32, layers=2, heads=2, ffn=64, num_object_queries=8, num_entity_queries=4,
                               sem_dim=16, stem_channels=8))
    model = FindModel.build_tiny(vocab=vocab, image_size=(32, 48), seed=0, **tiny).eval()
    g = FindGrounder(model=model)
    emb = FieldEmbedder(grounder=g)
    assert emb.dim == model.config.interface.sem_dim == 16
    rgb, depth = _frame()
    pe = emb.pixel_embeddings(rgb)  # no instruction set
    assert pe.ndim == 3 and pe.shape[2] == 16 and np.allclose(np.linalg.norm(pe, axis=2), 1, atol=1e-4)
    g.set_instruction(parse_instruction("red wall", []))
    assert np.allclose(g.ground(rgb).pixel_embeddings, pe, atol=1e-5)  # the same space as grounding's
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=emb.dim))
    ff.integrate(depth, K, np.eye(4), pixel_embeddings=pe, color=rgb)
    q = emb.embed_text("red wall")
    assert q.shape == (1, 16)
    r = ff.query(q)
    assert r.scores.shape == (ff.num_voxels,) and ff.num_voxels > 0 and r.goals
