"""Training: a few steps lower the loss on a fixed tiny batch; resume reproduces an uninterrupted run."""
import json

import numpy as np
import pytest
import torch

try:
    import find_ros.sim as _sim
    from find_ros.model.find import FindModel  # noqa: F401

    READY = hasattr(_sim, "Scene")
    WHY = "find_ros.sim lacks Scene"
except ImportError as exc:  # the model / sim layers are written by other helpers
    READY, WHY = False, f"model or sim layer missing: {exc}"

pytestmark = pytest.mark.skipif(not READY, reason=WHY)

from find_ros.model.data import DataConfig, SimFindDataset  # noqa: E402


class _ListDataset(list):
    pass


@pytest.fixture(scope="module")
def tiny_data():
    ds = SimFindDataset(split="train", config=DataConfig(n_objects=(3, 5)))
    return _ListDataset(ds[i] for i in range(8))


def _config(**kw):
    from find_ros.model.train import TrainConfig

    base = dict(n_train=8, batch_size=4, steps=6, lr=2e-3, warmup=1, checkpoint_every=3, log_every=1,
                model={"kind": "tiny"}, data=DataConfig(n_objects=(3, 5)).to_dict())
    base.update(kw)
    return TrainConfig.from_dict(base)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fit_fixed_batch(tr, data, *, task: str, steps: int = 8) -> tuple[float, float]:
    """Total loss on one fixed batch of ``task`` before and after ``steps`` optimiser steps on it."""
    from find_ros.model.train import batch_losses, collate

    batch = collate(list(data[:4]), task=task, mask_hw=tr.mask_hw, max_entities=3, rng=np.random.default_rng(0))
    first = float(batch_losses(tr.model, batch, device="cpu", weights=tr.loss_weights)["total"].detach())
    for _ in range(steps):
        loss = batch_losses(tr.model, batch, device="cpu", weights=tr.loss_weights)["total"]
        tr.opt.zero_grad()
        loss.backward()
        tr.opt.step()
    last = float(batch_losses(tr.model, batch, device="cpu", weights=tr.loss_weights)["total"].detach())
    return first, last


def test_steps_lower_loss_on_fixed_batch(tiny_data, tmp_path):
    from find_ros.model.train import Trainer

    torch.set_num_threads(1)
    tr = Trainer(config=_config(), out_dir=tmp_path, dataset=tiny_data)
    for task in ("ground", "interleaved", "segment", "retrieve"):
        rng_task = tr.batch_for(0)
        assert rng_task["task"] in ("ground", "interleaved", "segment", "retrieve")
    first, last = _fit_fixed_batch(tr, tiny_data, task="interleaved")
    assert np.isfinite(first) and last < first * 0.9, (first, last)


def test_resume_reproduces_uninterrupted_run(tiny_data, tmp_path):
    from find_ros.model.train import Trainer

    torch.set_num_threads(1)
    full = Trainer(config=_config(), out_dir=tmp_path / "full", dataset=tiny_data)
    full.run(progress=False)
    # interrupted: stop at step 3 (a checkpoint), then resume in a fresh trainer
    part = Trainer(config=_config(), out_dir=tmp_path / "part", dataset=tiny_data)
    part.run(progress=False, stop_at=3)
    assert part.step == 3 and not (tmp_path / "part" / "model").exists()
    resumed = Trainer(config=_config(), out_dir=tmp_path / "part", dataset=tiny_data)
    resumed.run(resume=True, progress=False)
    assert resumed.step == full.step == 6
    a, b = _params(full.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 7))
    assert (tmp_path / "full" / "model" / "config.json").is_file()


def test_bad_config_raises():
    from find_ros.model.train import TrainConfig, TrainError

    with pytest.raises(TrainError, match="unknown training config keys"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(TrainError, match="unknown tasks"):
        TrainConfig.from_dict({"task_weights": {"dance": 1.0}})


CONV_MODEL = {"kind": "tiny", "vision_kind": "convnext",
              "vision": {"hidden_sizes": [16, 16, 32, 32], "depths": [1, 1, 1, 1]},
              "text": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
              "interface": {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "num_object_queries": 8,
                            "num_entity_queries": 4, "sem_dim": 16, "fpn_channels": 16}}


def test_conv_model_trains_and_resumes_exactly(tiny_data, tmp_path):
    from find_ros.model.train import Trainer

    torch.set_num_threads(1)
    tr = Trainer(config=_config(model=CONV_MODEL), out_dir=tmp_path / "fit", dataset=tiny_data)
    assert tr.model.vision.hierarchical and tr.mask_hw == (24, 32)  # 128x96 data, masks at stride 4
    first, last = _fit_fixed_batch(tr, tiny_data, task="ground")
    assert np.isfinite(first) and last < first * 0.9, (first, last)
    full = Trainer(config=_config(model=CONV_MODEL), out_dir=tmp_path / "full", dataset=tiny_data)
    full.run(progress=False)
    Trainer(config=_config(model=CONV_MODEL), out_dir=tmp_path / "part", dataset=tiny_data).run(progress=False,
                                                                                                  stop_at=3)
    resumed = Trainer(config=_config(model=CONV_MODEL), out_dir=tmp_path / "part", dataset=tiny_data)
    resumed.run(resume=True, progress=False)
    a, b = _params(full.model), _params(resumed.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_validation_metrics_and_learning_curve_png(tiny_data, tmp_path):
    import cv2

    from find_ros.model.train import Trainer, validate

    torch.set_num_threads(1)
    tr = Trainer(config=_config(steps=4, eval_every=2, log_every=3, val_samples=3), out_dir=tmp_path,
                 dataset=tiny_data, val_dataset=tiny_data[4:])
    assert len(tr.val_samples) == 3
    before = validate(tr.model, tr.val_samples)
    assert set(before) == {"val/grounding_miou", "val/interleaved_miou"}
    assert all(0.0 <= v <= 1.0 for v in before.values())
    tr.run(progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 2, 3, 4]  # validation at 0, 2 and 4, logging at 3 and the last step
    assert [("val/grounding_miou" in r) for r in lines] == [True, True, False, True]
    assert lines[0]["val/grounding_miou"] == before["val/grounding_miou"]
    assert lines[-1]["val/grounding_miou"] == validate(tr.model, tr.val_samples)["val/grounding_miou"]
    img = cv2.imread(str(tmp_path / "learning_curve.png"))
    assert img is not None and img.shape == (540, 720, 3) and int(img.min()) < 100  # something was drawn


def test_max_seconds_stops_with_a_final_model(tiny_data, tmp_path):
    from find_ros.model.train import Trainer

    torch.set_num_threads(1)
    tr = Trainer(config=_config(steps=50, max_seconds=1e-6), out_dir=tmp_path, dataset=tiny_data)
    final = tr.run(progress=False)
    assert tr.step == 1 and final == tmp_path / "model" and (final / "config.json").is_file()


def test_max_cpu_seconds_stops_too(tiny_data, tmp_path):
    from find_ros.model.train import Trainer

    torch.set_num_threads(1)
    tr = Trainer(config=_config(steps=50, max_cpu_seconds=1e-6), out_dir=tmp_path, dataset=tiny_data)
    tr.run(progress=False)
    assert tr.step == 1 and (tmp_path / "model" / "config.json").is_file()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["step"] == 1 and rec["cpu_s"] > 0
