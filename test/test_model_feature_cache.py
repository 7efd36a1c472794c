"""Frozen-encoder stage 2: the feature cache holds exactly the encoder's maps, training over it equals training
through the frozen encoder, and the encoders do not move. Tiny random encoders (hidden 32, 2 layers), CPU."""
import json

import numpy as np
import pytest
import torch

try:
    import find_ros.sim as _sim

    READY = hasattr(_sim, "Scene")
except ImportError:  # pragma: no cover - the sim layer is another helper's
    READY = False

pytestmark = pytest.mark.skipif(not READY, reason="find_ros.sim lacks Scene")

from find_ros.model.data import DataConfig, SimFindDataset  # noqa: E402

TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
ITF = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "num_object_queries": 8, "num_entity_queries": 4,
       "sem_dim": 16, "fpn_channels": 16, "stem_channels": 8}
MODELS = {
    "tiny-clip": {"kind": "tiny", "freeze_encoders": True, "text": TEXT, "interface": ITF,
                  "vision": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                             "intermediate_size": 64}},
    "convnext": {"kind": "tiny", "vision_kind": "convnext", "freeze_encoders": True, "text": TEXT, "interface": ITF,
                 "vision": {"hidden_sizes": [16, 16, 32, 32], "depths": [1, 1, 1, 1]}, "reference_size": 64},
}


@pytest.fixture(scope="module")
def data():
    ds = SimFindDataset(split="train", config=DataConfig(n_objects=(3, 5)))
    return [ds[i] for i in range(6)]


def _config(model, **kw):
    from find_ros.model.train import TrainConfig

    base = dict(n_train=6, batch_size=3, steps=3, lr=2e-3, warmup=1, checkpoint_every=100, log_every=1,
                eval_every=0, model=model, data=DataConfig(n_objects=(3, 5)).to_dict())
    base.update(kw)
    return TrainConfig.from_dict(base)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_cache_holds_the_encoder_maps_and_training_over_it_matches(kind, data, tmp_path):
    from find_ros.instruction import Reference
    from find_ros.model.feature_cache import FeatureCache, build_feature_cache
    from find_ros.model.train import Trainer, batch_losses, collate

    torch.set_num_threads(1)
    tr = Trainer(config=_config(MODELS[kind]), out_dir=tmp_path / "run", dataset=data)
    model = tr.model
    assert model.config.freeze_encoders
    assert not any(p.requires_grad for p in model.vision.parameters())
    d = build_feature_cache(model, data, tmp_path / "cache", batch_size=4, dtype="float32")
    cache = FeatureCache(d, model=model)
    assert len(cache) == 6
    info = json.loads((d / "info.json").read_text())
    assert info["complete"] and info["key"]["kind"] == kind
    idx = [4, 1]
    x = torch.from_numpy(np.stack([data[i].image for i in idx]).transpose(0, 3, 1, 2).copy()).float().div(255)
    for a, b in zip(cache.maps(idx), model.vision_maps(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    refs = [Reference(image=im, mask=m) for i in idx for im, m in data[i].references]
    cached_refs = cache.reference_maps(idx)
    if refs:
        for a, b in zip(cached_refs, model.reference_vision_maps(refs)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # the same batch with and without the cache gives the same losses (float32 cache)
    model.train()
    for task in ("interleaved", "ground", "segment"):
        batch = collate([data[i] for i in idx], task=task, mask_hw=tr.mask_hw, max_entities=3,
                        rng=np.random.default_rng(0))
        batch["indices"] = idx
        live = batch_losses(model, batch, device="cpu", weights=tr.loss_weights)
        cached = batch_losses(model, batch, device="cpu", weights=tr.loss_weights, cache=cache)
        for k in live:
            torch.testing.assert_close(cached[k], live[k], rtol=1e-4, atol=1e-4), (task, k)
    # a cache from another encoder is refused
    from find_ros.model.feature_cache import FeatureCacheError
    from find_ros.model.train import build_model

    other = build_model(MODELS[kind], seed=7, image_size=(96, 128))
    with pytest.raises(FeatureCacheError, match="another vision encoder"):
        FeatureCache(d, model=other)


def test_stage2_training_moves_only_the_interface(data, tmp_path):
    from find_ros.model.train import Trainer

    torch.set_num_threads(1)
    tr = Trainer(config=_config(MODELS["convnext"], feature_cache=str(tmp_path / "cache")), out_dir=tmp_path / "run",
                 dataset=data)
    assert tr.cache is not None and (tmp_path / "cache" / "info.json").is_file()
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.run(progress=False)
    after = tr.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert not [k for k in moved if k.startswith(("vision.", "language."))]
    assert any(k.startswith("decoder.") for k in moved) and any(k.startswith("interface.") for k in moved)
    # the saved model knows its encoders are frozen and reloads; a second trainer reuses the cache
    from find_ros.model.find import FindModel

    assert FindModel.from_pretrained(tmp_path / "run" / "model").config.freeze_encoders
    again = Trainer(config=_config(MODELS["convnext"], feature_cache=str(tmp_path / "cache")),
                    out_dir=tmp_path / "run2", dataset=data)
    assert again.cache.directory == tmp_path / "cache"


def test_feature_cache_needs_frozen_encoders(data, tmp_path):
    from find_ros.model.train import Trainer, TrainError

    spec = dict(MODELS["convnext"], freeze_encoders=False)
    with pytest.raises(TrainError, match="frozen"):
        Trainer(config=_config(spec, feature_cache=str(tmp_path / "c")), out_dir=tmp_path, dataset=data)
