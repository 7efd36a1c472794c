"""FIND model core with tiny random transformers models (hidden 32, 2 layers) on CPU."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from find_ros.instruction import Reference, parse_instruction
from find_ros.model.find import FindModel
from find_ros.model.interface import ATTENTION_TABLE, TASKS
from find_ros.model.losses import FindTargets, LossWeights, find_losses

VOCAB = "the a red green blue small large cube sphere torus cone left right of behind in front on".split()
SIZE = (32, 48)  # model input (h, w); masks at stride 4 -> (8, 12)
TINY = dict(vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
            text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
            interface=dict(hidden=32, layers=2, heads=2, ffn=64, num_object_queries=8, num_entity_queries=4,
                           sem_dim=16, stem_channels=8))


def _tiny(seed: int = 0) -> FindModel:
    torch.set_num_threads(1)
    return FindModel.build_tiny(vocab=VOCAB, image_size=SIZE, seed=seed, **TINY).eval()


def _ref(seed: int, colour=None) -> Reference:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    if colour is not None:
        img[:] = colour
    mask = np.zeros((20, 24), bool)
    mask[4:14, 6:18] = True
    return Reference(image=img, mask=mask)


@pytest.fixture(scope="module")
def model() -> FindModel:
    return _tiny()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, *SIZE, generator=g)


def _instructions():
    return [parse_instruction("the red cube left of the <0>, the blue torus", [_ref(1)]),
            parse_instruction("a green sphere")]


def test_every_task_has_right_shapes(model, images):
    feats = model.encode_image(images)
    assert feats.mask_features.shape == (2, 32, 8, 12)  # stride 4
    assert feats.memory.shape == (2, 4 * 6, 32) and feats.memory_hw == (4, 6)  # ViT patch 8
    prompts = model.encode_instructions(_instructions())
    assert prompts.num_entities.tolist() == [2, 1]
    with torch.no_grad():
        for task in TASKS:
            p = None if task in ("segment", "retrieve") else prompts
            o = model(feats, p, task=task)
            E = 0 if p is None else 2
            assert o.object_masks.shape == (2, 8, 8, 12)
            assert o.object_logits.shape == (2, 8) and o.object_sem.shape == (2, 8, 16)
            assert o.entity_masks.shape == (2, E, 8, 12)
            assert o.entity_scores.shape == (2, E) and o.entity_sem.shape == (2, E, 16)
            assert o.entity_valid.tolist() == ([[True, True], [True, False]] if E else [[], []])
            assert o.image_sem.shape == (2, 16)
            assert o.pixel_sem.shape == (2, 8, 12, 16)
            assert torch.allclose(o.pixel_sem.norm(dim=-1), torch.ones(2, 8, 12), atol=1e-5)
            assert torch.allclose(o.image_sem.norm(dim=-1), torch.ones(2), atol=1e-5)
            if E:
                s = o.entity_scores
                assert bool(((s >= 0) & (s <= 1)).all())
            assert len(o.aux_object_masks) == 2  # one per interface layer (predictions feeding masked attention)
        # generic segmentation with class names: queries classified against the prompts
        classes = model.encode_instructions([parse_instruction("cube, sphere, torus")])
        o = model(feats, classes, task="segment")
        assert o.class_logits.shape == (2, 8, 3)
    with pytest.raises(ValueError, match="unknown task"):
        model(feats, prompts, task="detect")
    with pytest.raises(ValueError, match="needs prompts"):
        model(feats, None, task="ground")


def test_attention_table_is_one_declaration_over_known_groups():
    from find_ros.model.interface import GROUPS, SAME

    assert set(ATTENTION_TABLE) == set(TASKS)
    for task, rules in ATTENTION_TABLE.items():
        for (src, dst), rel in rules.items():
            assert src in GROUPS and dst in GROUPS and rel in ("all", SAME), (task, src, dst)
    # separate = interleaved with entities blind to each other
    assert ATTENTION_TABLE["interleaved"][("text_prompts", "reference_prompts")] == "all"
    assert ATTENTION_TABLE["separate"][("text_prompts", "reference_prompts")] == SAME


def test_masked_prompt_cannot_change_a_query(model, images):
    """Perturb entity 1's visual reference: under ``separate`` entity 0 and the object queries are untouched;
    under ``interleaved`` (entity 0 reads the whole instruction) entity 0 changes."""
    a = parse_instruction("the red cube left of the blue torus, the <0>", [_ref(1)])
    b = parse_instruction("the red cube left of the blue torus, the <0>", [_ref(2, colour=(250, 10, 10))])
    feats = model.encode_image(images[:1])
    with torch.no_grad():
        pa, pb = model.encode_instructions([a]), model.encode_instructions([b])
        assert not torch.allclose(pa.tokens, pb.tokens)  # the prompts differ
        for task in ("separate", "ground"):
            oa, ob = model(feats, pa, task=task), model(feats, pb, task=task)
            torch.testing.assert_close(oa.entity_masks[:, 0], ob.entity_masks[:, 0], rtol=0, atol=1e-6)
            torch.testing.assert_close(oa.entity_sem[:, 0], ob.entity_sem[:, 0], rtol=0, atol=1e-6)
            torch.testing.assert_close(oa.entity_score_logits[:, 0], ob.entity_score_logits[:, 0], rtol=0, atol=1e-6)
            torch.testing.assert_close(oa.object_masks, ob.object_masks, rtol=0, atol=1e-6)
            assert not torch.allclose(oa.entity_masks[:, 1], ob.entity_masks[:, 1])  # entity 1 itself changes
        oa, ob = model(feats, pa, task="interleaved"), model(feats, pb, task="interleaved")
        assert not torch.allclose(oa.entity_sem[:, 0], ob.entity_sem[:, 0], atol=1e-4)
        torch.testing.assert_close(oa.object_masks, ob.object_masks, rtol=0, atol=1e-6)  # objects never read prompts
        # interactive: only visual prompts drive entity queries -> entity 0 (text only) ignores every prompt change
        ta = model.encode_instructions([parse_instruction("the red cube, the <0>", [_ref(1)])])
        tb = model.encode_instructions([parse_instruction("the blue sphere, the <0>", [_ref(1)])])
        oa, ob = model(feats, ta, task="interactive"), model(feats, tb, task="interactive")
        torch.testing.assert_close(oa.entity_masks[:, 1], ob.entity_masks[:, 1], rtol=0, atol=1e-6)


def test_interleaved_prompt_holds_reference_embedding_at_placeholder(model):
    ref = _ref(3)
    with torch.no_grad():
        p = model.encode_instructions([parse_instruction("the <0> left of the red cube", [ref])])
        emb = model.embed_references([ref])[0]
        # row: [BOS] the [REF] left of the red cube [EOS]
        assert p.is_reference[0].nonzero().flatten().tolist() == [2]
        expected = emb + model.sampler.type_embed.weight[1]
        torch.testing.assert_close(p.tokens[0, 2], expected)
        # a text token is the language model's embedding (not the reference)
        assert not torch.allclose(p.tokens[0, 1], expected)
        # changing the reference's masked pixels changes the prompt; changing pixels outside the mask barely
        # does (only through the encoder's receptive field), and the text tokens not at all
        r2 = Reference(image=np.where(ref.mask[..., None], 255 - ref.image, ref.image).astype(np.uint8), mask=ref.mask)
        p2 = model.encode_instructions([parse_instruction("the <0> left of the red cube", [r2])])
        assert not torch.allclose(p2.tokens[0, 2], p.tokens[0, 2])
        torch.testing.assert_close(p2.tokens[0, 3:], p.tokens[0, 3:])


def _targets(out, B, rng):
    h, w = out.object_masks.shape[-2:]
    om = torch.from_numpy(rng.random((B, 3, h, w)) > 0.6).float()
    ov = torch.tensor([[True, True, False], [True, True, True]])[:B]
    E = out.entity_masks.shape[1]
    em = om[:, :E].clone() if E else None
    ev = out.entity_valid.clone() if E else None
    return om, ov, em, ev


@pytest.mark.parametrize("task", ["segment", "ground", "interleaved", "retrieve"])
def test_losses_finite_and_reach_the_interface(task, images):
    m = _tiny(seed=1).train()
    rng = np.random.default_rng(0)
    feats = m.encode_image(images)
    prompts = m.encode_instructions(_instructions()) if task in ("ground", "interleaved") else None
    out = m(feats, prompts, task=task)
    om, ov, em, ev = _targets(out, 2, rng)
    caps = m.encode_text(["a red cube and a blue torus", "a green sphere"]) if task == "retrieve" else None
    losses = find_losses(out, FindTargets(entity_masks=em, entity_valid=ev, object_masks=om, object_valid=ov,
                                          captions=caps), weights=LossWeights())
    assert all(torch.isfinite(v) for v in losses.values())
    expected = {"object_bce", "object_dice", "objectness", "total"}
    if task in ("ground", "interleaved"):
        expected |= {"entity_bce", "entity_dice", "grounding", "score", "pixel"}
    if task == "retrieve":
        expected |= {"retrieval"}
    assert set(losses) == expected
    losses["total"].backward()
    itf = m.interface
    for name, p in [("object_queries", itf.object_queries), ("layer0.cross.q", itf.layers[0].cross.q.weight),
                    ("layer1.ffn", itf.layers[1].ffn[0].weight), ("pixel decoder", m.decoder.out[0].weight),
                    ("vision encoder", next(m.vision.parameters()))]:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    if task in ("ground", "interleaved"):
        assert float(itf.entity_pool.grad.abs().sum()) > 0
        assert float(m.sampler.language_proj[0].weight.grad.abs().sum()) > 0
    if task == "retrieve":
        assert float(itf.image_query.grad.abs().sum()) > 0


def test_a_few_steps_fit_a_fixed_batch(images):
    m = _tiny(seed=2).train()
    rng = np.random.default_rng(1)
    ins = _instructions()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    with torch.no_grad():
        out = m(m.encode_image(images), m.encode_instructions(ins), task="interleaved")
    om, ov, em, ev = _targets(out, 2, rng)
    t = FindTargets(entity_masks=em, entity_valid=ev, object_masks=om, object_valid=ov)
    first = None
    for _ in range(15):
        loss = find_losses(m(m.encode_image(images), m.encode_instructions(ins), task="interleaved"), t,
                           weights=LossWeights())["total"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first, (first, float(loss.detach()))


def test_save_load_round_trip_is_bit_exact(model, images, tmp_path):
    ins = _instructions()
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "tokenizer"}
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["interface"]["hidden"] == 32
    loaded = FindModel.from_pretrained(tmp_path / "m")
    assert loaded.config.to_dict() == model.config.to_dict()
    with torch.no_grad():
        for task in ("interleaved", "segment"):
            a = model(model.encode_image(images), model.encode_instructions(ins), task=task)
            b = loaded(loaded.encode_image(images), loaded.encode_instructions(ins), task=task)
            for f in ("object_masks", "entity_masks", "entity_score_logits", "entity_sem", "image_sem", "pixel_sem"):
                assert torch.equal(getattr(a, f), getattr(b, f)), (task, f)
    # a different seed really gives different weights (the comparison above can fail)
    other = _tiny(seed=5)
    with torch.no_grad():
        c = other(other.encode_image(images), None, task="segment")
    assert not torch.equal(c.object_masks, a.object_masks)
    from find_ros.model.find import FindModelError

    with pytest.raises(FindModelError, match="config.json"):
        FindModel.from_pretrained(tmp_path / "nothing")


def test_config_json_round_trip_and_errors():
    from find_ros.model.config import ConfigError, FindConfig, InterfaceConfig

    cfg = _tiny().config
    again = FindConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ConfigError, match="heads"):
        InterfaceConfig(hidden=30, heads=4)
    with pytest.raises(ConfigError, match="unknown"):
        FindConfig.from_dict({"bogus": 1})


def test_grounder_pixel_embeddings_are_computed_where_asked(model):
    """FindGrounder.ground leaves the model's pixel head out of its forward pass and hands back lazy pixel
    embeddings: a window (the cells under a mask) is the head on those cells; the whole grid, computed once and in
    any thread (the feature field's), is the model's own ``pixel_sem`` bit for bit."""
    import threading

    from find_ros.grounder import LazyPixelEmbeddings
    from find_ros.model.grounder import FindGrounder

    g = FindGrounder(model=model)
    g.set_instruction(parse_instruction("the red cube"))
    rgb = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    pe = g.ground(rgb).pixel_embeddings
    assert isinstance(pe, LazyPixelEmbeddings) and pe.shape == (8, 12, 16) and pe.dtype == np.float32
    full = g.forward_only(g.prepare(rgb)).pixel_sem[0].numpy()
    np.testing.assert_allclose(pe.window(2, 5, 3, 9), full[2:5, 3:9], rtol=0, atol=1e-6)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("grid", np.asarray(pe)))
    t.start()
    t.join()
    assert np.array_equal(got["grid"], full) and np.asarray(pe) is got["grid"]  # computed once
    assert np.array_equal(pe.window(2, 5, 3, 9), full[2:5, 3:9])
    out, mask_features = g.forward_only(g.prepare(rgb), pixel_sem=False)
    assert out.pixel_sem is None
    with torch.inference_mode():
        assert torch.equal(model.heads.pixels(mask_features)[0], torch.from_numpy(full))


def test_grounder_masks_at_input_resolution_and_instruction_cache(model):
    from find_ros.grounder import FrameGrounding, Grounder, GrounderError, QueryEmbedder
    from find_ros.model.grounder import FindGrounder

    g = FindGrounder(model=model)
    assert isinstance(g, Grounder) and isinstance(g, QueryEmbedder) and g.name == "find"
    calls = []
    real = model.encode_instructions

    def counting(instructions):
        calls.append(len(instructions))
        return real(instructions)

    model.encode_instructions = counting
    try:
        ins = parse_instruction("the red cube, the <0>", [_ref(4)])
        rgb = np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)
        with pytest.raises(GrounderError, match="no instruction"):
            g.ground(rgb)
        g.set_instruction(ins)
        r1 = g.ground(rgb)
        r2 = g.ground(rgb)
        g.set_instruction(ins)
        assert calls == [1] and g.embed_calls == 1  # embedded once for three calls
    finally:
        del model.encode_instructions
    assert isinstance(r1, FrameGrounding) and len(r1.entities) == 2
    for e1, e2 in zip(r1.entities, r2.entities):
        assert e1.mask.shape == (61, 83) and e1.mask.dtype == bool
        assert 0.0 <= e1.score <= 1.0
        assert np.array_equal(e1.mask, e2.mask)
    # the mask is the model's logits upsampled to the frame and thresholded at 0
    with torch.no_grad():
        x = g._frame_tensor(rgb)
        # plain NCHW in [0, 1] (a channels-last view costs the forward ~3 %), the frame's pixels / 255 exactly
        h, w = model.config.vision.image_size
        small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        assert x.is_contiguous() and torch.equal(x[0], torch.from_numpy(small).permute(2, 0, 1).float() / 255.0)
        out = model(model.encode_image(x), model.encode_instructions([ins]), task="interleaved")
        up = torch.nn.functional.interpolate(out.entity_masks[:, :2], size=(61, 83), mode="bilinear",
                                             align_corners=False)[0] > 0
    assert np.array_equal(np.stack([e.mask for e in r1.entities]), up.numpy())
    pe = r1.pixel_embeddings
    assert pe.dtype == np.float32 and pe.shape == (8, 12, 16)
    np.testing.assert_allclose(np.linalg.norm(pe, axis=-1), 1.0, atol=1e-5)
    q = g.embed_instruction(ins)
    assert q.shape == (2, 16) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # entity embeddings are instruction-only: equal to the ones computed against a real frame
    torch.testing.assert_close(torch.from_numpy(q), torch.nn.functional.normalize(out.entity_sem[0], dim=-1))
    t = g.embed_text("the red cube")
    assert t.shape == (16,)
    with pytest.raises(GrounderError, match="uint8"):
        g.ground(rgb.astype(np.float32))
    g.clear_instruction()
    with pytest.raises(GrounderError):
        g.ground(rgb)


@pytest.mark.parametrize("size", [(480, 640), (720, 1280), (60, 80), (481, 640)])
def test_mask_from_logits_upsamples_only_around_positive_cells_bit_for_bit(size):
    import cv2

    from find_ros.grounder import mask_box
    from find_ros.model.grounder import mask_from_logits

    rng = np.random.default_rng(size[0])
    cases = [np.full((60, 80), -2.0, np.float32) for _ in range(4)]
    cases[1][20:31, 30:45] = 1.5  # one object
    cases[2][0, 79] = 0.25  # a single positive cell in a corner
    cases[3][:] = np.round(rng.standard_normal((60, 80)) * 2) / 2 - 1  # exact zeros and ties
    cases += [(rng.standard_normal((60, 80)) - rng.uniform(0, 3)).astype(np.float32) for _ in range(20)]
    for logits in cases:
        whole = cv2.resize(logits, size[::-1], interpolation=cv2.INTER_LINEAR) > 0  # every pixel upsampled
        mask, box = mask_from_logits(logits, size)
        assert mask.shape == size and mask.dtype == bool
        assert np.array_equal(mask, whole) and box == mask_box(whole)
    assert mask_from_logits(cases[0], size)[1] == (0, 0, 0, 0) and not mask_from_logits(cases[0], size)[0].any()
    # and the same as torch's bilinear interpolation (half-pixel centres) on an object
    up = torch.nn.functional.interpolate(torch.from_numpy(cases[1])[None, None], size=size, mode="bilinear",
                                         align_corners=False)[0, 0] > 0
    assert np.array_equal(mask_from_logits(cases[1], size)[0], up.numpy())


def test_instruction_prepared_in_advance_switches_without_embedding_again(model):
    """``prepare_instruction`` embeds without touching the instruction in force (the node embeds outside its
    pipeline lock while the worker grounds); ``set_instruction(prepared=...)`` then switches without a second
    embedding, with the same masks and scores as a plain switch."""
    from find_ros.grounder import GrounderError
    from find_ros.grounding.pipeline import VideoGrounder
    from find_ros.model.grounder import FindGrounder

    rgb = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = np.full((48, 64), 1.5, np.float32)
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    first, second = parse_instruction("the red cube"), parse_instruction("the blue ball, the <0>", [_ref(5)])
    plain = FindGrounder(model=model)
    plain.set_instruction(second)
    want = plain.ground(rgb)
    vg = VideoGrounder(FindGrounder(model=model))
    vg.set_instruction(first)
    before = vg.process(rgb, depth, K)
    prepared = vg.prepare_instruction(second)
    assert vg.grounder.embed_calls == 2 and vg.instruction is first  # embedded, not switched
    again = vg.process(rgb, depth, K)
    assert [e.phrase for e in again.entities] == ["the red cube"]
    assert np.array_equal(again.entities[0].mask, before.entities[0].mask)
    vg.set_instruction(second, prepared=prepared)
    assert vg.grounder.embed_calls == 2 and vg.instruction is second  # no second embedding
    got = vg.grounder.ground(rgb)
    for a, b in zip(got.entities, want.entities):
        assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score, abs=1e-6)
    with pytest.raises(GrounderError, match="prepare_instruction"):
        vg.grounder.set_instruction(first, prepared="prompts")
    with pytest.raises(GrounderError, match="needs an Instruction"):
        vg.grounder.prepare_instruction("the red cube")


def test_broadcast_one_instruction_over_frames(model, images):
    p = model.encode_instructions([parse_instruction("the red cube")])
    with torch.no_grad():
        feats = model.encode_image(images)
        o = model(feats, p, task="ground")
        assert o.entity_masks.shape == (2, 1, 8, 12)
        single = model(model.encode_image(images[1:]), p, task="ground")
    torch.testing.assert_close(o.entity_masks[1:], single.entity_masks, rtol=1e-5, atol=1e-5)


def test_core_imports_without_rclpy():
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "import find_ros.model.find, find_ros.model.grounder, find_ros.model.losses, find_ros.tools.model_speed\n"
            "bad = [m for m in sys.modules if m.startswith(('rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs'))]\n"
            "assert not [m for m in bad if sys.modules[m] is not None], bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- hierarchical (conv) vision kinds

CONV = {
    "convnext": dict(hidden_sizes=[16, 16, 32, 32], depths=[1, 1, 1, 1]),
    "resnet": dict(embedding_size=16, hidden_sizes=[16, 16, 32, 32], depths=[1, 1, 1, 1], layer_type="basic"),
}
CONV_SIZE = (64, 96)  # strides 4 / 8 / 16 / 32 -> 16x24, 8x12, 4x6, 2x3


def _conv(kind: str, seed: int = 0) -> FindModel:
    torch.set_num_threads(1)
    itf = dict(TINY["interface"], fpn_channels=16)
    return FindModel.build_tiny(vocab=VOCAB, image_size=CONV_SIZE, seed=seed, vision_kind=kind, vision=CONV[kind],
                                text=TINY["text"], interface=itf).eval()


@pytest.mark.parametrize("kind", ["convnext", "resnet"])
def test_conv_kind_multiscale_features_and_every_task(kind):
    m = _conv(kind)
    assert m.vision.hierarchical and m.vision.level_strides == [4, 8, 16, 32]
    assert m.vision.level_channels == [16, 16, 32, 32]
    x = torch.rand(2, 3, *CONV_SIZE, generator=torch.Generator().manual_seed(0))
    maps = m.vision(x)
    assert [tuple(t.shape[-2:]) for t in maps] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    feats = m.encode_image(x)
    assert feats.mask_features.shape == (2, 16, 16, 24)  # stride 4 of the input, fpn_channels wide
    assert feats.memory_hw == (4, 6) and feats.memory.shape == (2, 24, 32)  # memory_stride 16
    assert feats.memory_pos.shape == (24, 32)
    prompts = m.encode_instructions(_instructions())
    with torch.no_grad():
        for task in TASKS:
            p = None if task in ("segment", "retrieve") else prompts
            o = m(feats, p, task=task)
            assert o.object_masks.shape == (2, 8, 16, 24)
            assert o.entity_masks.shape == (2, 0 if p is None else 2, 16, 24)
            assert o.pixel_sem.shape == (2, 16, 24, 16)
    # a frame of another size is resized to the configured input
    assert m.encode_image(torch.rand(1, 3, 50, 70)).mask_features.shape == (1, 16, 16, 24)
    assert feats.attention_features.shape == (2, 16, 4, 6)  # mask features averaged per memory cell


def test_conv_kind_mask_features_carry_position():
    """Two identical objects far apart get (nearly) the same conv features; the learned position code (zero at
    start) lets a query tell them apart: with it, the mask features of a uniform image differ left and right."""
    m = _conv("convnext")
    d = m.decoder
    assert float(d.mask_pos_x.weight.abs().sum()) == 0.0  # starts at zero: appearance first
    with torch.no_grad():
        img = torch.full((1, 3, *CONV_SIZE), 0.5)
        flat = m.encode_image(img).mask_features[0]
        d.mask_pos_x.weight.normal_()  # as training would make it
        mf = m.encode_image(img).mask_features[0]
    centre = mf[:, 4:12, 4:20]  # away from the zero-padded border
    assert float((mf - flat).abs().max()) > 1e-3  # the position code now moves the features
    assert float((centre[:, :, :8] - centre[:, :, 8:]).abs().max()) > 1e-3


@pytest.mark.parametrize("kind", ["convnext", "resnet"])
def test_conv_kind_gradients_reach_backbone_and_fpn(kind):
    m = _conv(kind, seed=1).train()
    x = torch.rand(2, 3, *CONV_SIZE, generator=torch.Generator().manual_seed(1))
    out = m(m.encode_image(x), m.encode_instructions(_instructions()), task="interleaved")
    om, ov, em, ev = _targets(out, 2, np.random.default_rng(0))
    losses = find_losses(out, FindTargets(entity_masks=em, entity_valid=ev, object_masks=om, object_valid=ov),
                         weights=LossWeights())
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    d = m.decoder
    stem = m.vision.model.embeddings if kind == "convnext" else m.vision.model.embedder
    for name, p in [("stem", next(stem.parameters())),
                    ("last stage", list(m.vision.model.encoder.stages[-1].parameters())[0]),
                    ("coarsest lateral", d.lateral[-1][0].weight), ("finest lateral", d.lateral[0][0].weight),
                    ("mask position", d.mask_pos_x.weight), ("memory", d.memory_backbone[0].weight)]:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("kind", ["convnext", "resnet"])
def test_conv_kind_save_load_round_trip_is_bit_exact(kind, tmp_path):
    m = _conv(kind)
    if kind == "resnet":  # non-trivial batch-norm statistics must travel too
        m.train()
        with torch.no_grad():
            m.encode_image(torch.rand(2, 3, *CONV_SIZE))
        m.eval()
    m.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    v = meta["config"]["vision"]
    assert v["kind"] == kind and v["hf_config"]["model_type"] == kind and v["feature_layers"] == [1, 2, 3, 4]
    assert v["hf_config"]["hidden_sizes"] == [16, 16, 32, 32]
    loaded = FindModel.from_pretrained(tmp_path / "m")
    assert loaded.config.to_dict() == m.config.to_dict()
    x = torch.rand(2, 3, *CONV_SIZE, generator=torch.Generator().manual_seed(2))
    ins = _instructions()
    with torch.no_grad():
        a = m(m.encode_image(x), m.encode_instructions(ins), task="interleaved")
        b = loaded(loaded.encode_image(x), loaded.encode_instructions(ins), task="interleaved")
    for f in ("object_masks", "entity_masks", "entity_sem", "image_sem", "pixel_sem"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_conv_kind_config_errors():
    from find_ros.model.config import ConfigError, VisionEncoderConfig
    from find_ros.model.encoders import EncoderError
    from find_ros.model.find import FindModelError

    with pytest.raises(ConfigError, match="vision kind"):
        VisionEncoderConfig(kind="vgg")
    with pytest.raises((EncoderError, FindModelError), match="multiple"):
        FindModel.build_tiny(vocab=VOCAB, image_size=(62, 96), vision_kind="convnext", vision=CONV["convnext"])
    with pytest.raises(FindModelError, match="vision_kind"):
        FindModel.build_tiny(vocab=VOCAB, image_size=CONV_SIZE, vision_kind="swin")


def test_conv_backbone_loaded_from_a_directory_like_a_real_one(tmp_path):
    """A pretrained ConvNeXt saved with transformers' save_pretrained loads through ``vision.path`` (what a user
    with real weights does); frozen, it is not copied into the FIND checkpoint and reloads from its path."""
    import transformers as T

    from find_ros.model.config import FindConfig, VisionEncoderConfig

    torch.manual_seed(3)
    backbone = T.ConvNextModel(T.ConvNextConfig(**CONV["convnext"]))
    backbone.save_pretrained(tmp_path / "convnext")
    base = _conv("convnext").config.to_dict()
    base["vision"] = {"kind": "convnext", "path": str(tmp_path / "convnext"), "feature_layers": [1, 2, 3, 4],
                      "image_size": list(CONV_SIZE), "reference_size": 64}
    base["freeze_encoders"] = True
    cfg = FindConfig.from_dict(base)
    assert isinstance(cfg.vision, VisionEncoderConfig)
    m = FindModel(config=cfg, tokenizer=_conv("convnext").tokenizer, language=None).eval()
    for k, v in backbone.state_dict().items():
        assert torch.equal(m.vision.model.state_dict()[k], v), k
    assert not any(p.requires_grad for p in m.vision.parameters())
    m.save_pretrained(tmp_path / "find")
    from safetensors.torch import load_file

    assert not [k for k in load_file(str(tmp_path / "find" / "model.safetensors")) if k.startswith("vision.")]
    again = FindModel.from_pretrained(tmp_path / "find")
    x = torch.rand(1, 3, *CONV_SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a = m(m.encode_image(x), None, task="segment")
        b = again(again.encode_image(x), None, task="segment")
    assert torch.equal(a.object_masks, b.object_masks)


def test_grounder_warm_up_runs_every_branch_and_leaves_the_instruction_alone(model):
    from find_ros.model.grounder import FindGrounder

    g = FindGrounder(model=model)
    ins = parse_instruction("the red cube, the <0>", [_ref(4)])
    g.set_instruction(ins)
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    before = g.ground(rgb)
    calls = g.embed_calls
    assert g.warm_up(width=64, height=48) > 0.0 and g.warm_up(frames=False) > 0.0  # frames=False: embedding only
    after = g.ground(rgb)
    assert g._instruction is ins and g.embed_calls == calls  # the cached prompts are still the ones in force
    for a, b in zip(before.entities, after.entities):
        assert np.array_equal(a.mask, b.mask) and a.score == b.score
    g.clear_instruction()
    g.warm_up()  # no instruction needed
    with pytest.raises(Exception, match="no instruction"):
        g.ground(rgb)
