"""Evaluation writes every metric on a tiny random model; the shipped checkpoint reproduces its card."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import find_ros.sim as _sim
    from find_ros.model.find import FindModel

    READY = hasattr(_sim, "Scene")
    WHY = "find_ros.sim lacks Scene"
except ImportError as exc:
    READY, WHY = False, f"model or sim layer missing: {exc}"

pytestmark = pytest.mark.skipif(not READY, reason=WHY)

from find_ros.tools.model_eval import METRIC_KEYS, EvalError, cli, evaluate  # noqa: E402

SHIPPED = Path(__file__).parents[1] / "find_ros" / "models" / "find-sim-tiny"


def test_eval_cli_writes_every_key_tiny_random(tmp_path):
    from find_ros.model.data import DataConfig, vocabulary

    torch.set_num_threads(1)
    m = FindModel.build_tiny(vocab=vocabulary(), image_size=(96, 128), seed=0)
    m.save_pretrained(tmp_path / "m")
    out = tmp_path / "r.json"
    assert cli(["--checkpoint", str(tmp_path / "m"), "--split", "test", "--seed", "1", "--scenes", "2",
                "--gallery", "12", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for k in METRIC_KEYS:
        assert k in res, k
        assert np.isfinite(res[k]), (k, res[k])
    for k in METRIC_KEYS:
        if k != "ms_per_frame_median":
            assert 0.0 <= res[k] <= 1.0, (k, res[k])
    assert res["gallery_size"] == 12 and res["n_grounding_phrases"] >= 2
    # deterministic for a seed (timing aside)
    again = evaluate(model=m, split="test", seed=1, scenes=2, gallery=12, data_config=DataConfig(), timing=False)
    for k in METRIC_KEYS:
        if k != "ms_per_frame_median":
            assert again[k] == pytest.approx(res[k], abs=1e-6), k


def test_bad_args_raise():
    with pytest.raises(EvalError, match="split"):
        evaluate(model=object(), split="train")


def test_shipped_checkpoint_reproduces_card_metrics():
    assert (SHIPPED / "MODEL_CARD.md").is_file() and (SHIPPED / "model.safetensors").is_file()
    assert sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()) <= 25 * 2**20
    torch.set_num_threads(1)
    card = json.loads((SHIPPED / "card_small_eval.json").read_text())
    res = evaluate(checkpoint=SHIPPED, split=card["split"], seed=card["seed"], scenes=card["scenes"],
                   gallery=card["gallery_size"], timing=False)
    for k in ("grounding_miou", "interleaved_ciou", "separate_ciou", "ir_at_5"):
        assert res[k] == pytest.approx(card[k], abs=0.02), (k, res[k], card[k])


def test_default_checkpoint_is_the_shipped_model_from_any_cwd(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # the default is found next to the package, not in the working directory
    assert cli(["--split", "test", "--seed", "2", "--scenes", "1", "--gallery", "2", "--no-timing"]) == 0
    res = json.loads(capsys.readouterr().out.replace("NaN", "null"))
    assert Path(res["checkpoint"]).resolve() == SHIPPED.resolve()
    assert res["grounder"] == "find" and res["not_expressible"] == {k: 0 for k in res["not_expressible"]}
    with pytest.raises(SystemExit):
        cli(["--checkpoint", str(tmp_path), "--scenes", "1"])


def test_hsv_baseline_scores_the_same_samples(tmp_path):
    from find_ros.grounding.baseline import colour_words
    from find_ros.model.data import DataConfig, SimFindDataset

    out = tmp_path / "hsv.json"
    args = ["--grounder", "hsv-baseline", "--split", "test", "--seed", "3", "--scenes", "4", "--gallery", "6",
            "--no-timing", "--json", str(out)]
    assert cli(args) == 0
    res = json.loads(out.read_text().replace("NaN", "null"))
    assert res["grounder"] == "hsv-baseline" and res["gallery_size"] == 6
    for k in METRIC_KEYS:
        if k != "ms_per_frame_median":
            assert 0.0 <= res[k] <= 1.0, (k, res[k])
    assert res["ir_at_5"] == res["ir_at_10"] == 0.0 and res["not_expressible"]["retrieval"] == 6
    # the same samples as FIND's evaluation (the shipped model's data config), phrases without a colour
    # word counted as not expressible
    cfg = DataConfig.from_dict(json.loads((SHIPPED / "train_config.json").read_text())["data"])
    ds = SimFindDataset(split="test", config=cfg)
    samples = [ds[3 * 10_000 + i] for i in range(4)]
    phrases = [r.phrase for s in samples for r in s.referring]
    assert res["n_grounding_phrases"] == len(phrases)
    assert res["not_expressible"]["grounding"] == sum(not colour_words(p) for p in phrases)
    assert res["n_interleaved_entities"] == sum(len(s.interleaved.object_ids) for s in samples)
    for task in ("interleaved", "separate", "text_only"):
        assert 0 <= res["not_expressible"][task] <= res["n_interleaved_entities"]
    # deterministic by seed
    assert cli(args) == 0
    again = json.loads(out.read_text().replace("NaN", "null"))
    assert {k: again[k] for k in again if k != "eval_seconds"} == {k: res[k] for k in res if k != "eval_seconds"}


def test_unknown_grounder_raises():
    with pytest.raises(EvalError, match="grounder"):
        evaluate(model=object(), grounder="clip")
