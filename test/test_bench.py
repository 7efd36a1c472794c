"""find-ros bench: stage timing, a stage on a tiny random FIND model, missing model reported as a stage error."""
import json

import numpy as np
import pytest

from find_ros import bench


def test_time_stage_repeats_and_orders_percentiles():
    calls = []
    t = bench.time_stage(lambda: calls.append(sum(range(2000))), warmup=3, repeat=7)
    assert len(calls) == 10 and t.n == 7
    assert 0 < t.median_ms <= t.p95_ms


def test_soak_fifths_are_medians_of_consecutive_fifths():
    series = [10.0] * 20 + [30.0] * 20 + [11.0, 13.0, 12.0] * 20
    assert bench.fifths(series) == [10.0, 30.0, 12.0, 12.0, 12.0]
    assert bench.fifths([1.0, 2.0]) == []  # too short to split into fifths


def test_model_stage_on_tiny_model_reports_overhead(tmp_path):
    torch = pytest.importorskip("torch")
    from find_ros.model.data import vocabulary
    from find_ros.model.find import FindModel

    torch.set_num_threads(1)
    FindModel.build_tiny(vocab=vocabulary(), seed=0).save_pretrained(tmp_path / "m")
    b = bench._Bench(quick=True)
    b.repeat, b.warmup = 2, 1
    b.run("model", lambda: b.model(str(tmp_path / "m")))
    m = b.stages["model"]
    assert "error" not in m, m
    assert [(r["width"], r["height"]) for r in m["ground_per_frame"]] == [(320, 240), (640, 480), (1280, 720)]
    assert m["model_forward_640x480"]["median_ms"] > 0 and m["node_path_640x480"]["median_ms"] > 0
    assert b.ratios["node_overhead_reference"] == "model_forward_640x480"
    assert b.ratios["node_path_vs_model_forward"] == pytest.approx(
        m["node_path_640x480"]["median_ms"] / m["model_forward_640x480"]["median_ms"], rel=1e-2)
    json.dumps(b.stages)  # JSON-ready


def test_missing_model_is_a_stage_error_not_a_crash(tmp_path):
    b = bench._Bench(quick=True)
    b.run("model", lambda: b.model(str(tmp_path / "nope")))
    assert "no FIND model in" in b.stages["model"]["error"] and str(tmp_path / "nope") in b.stages["model"]["error"]


def test_conversions_stage_has_references():
    b = bench._Bench(quick=True)
    b.repeat, b.warmup = 2, 1
    b.run("conversions", b.conversions)
    c = b.stages["conversions"]
    assert {"rgb8_in", "depth16_in_m", "rgb8_out", "ref_frombuffer_copy", "cloud2_pack_100k"} <= set(c)
    assert np.isfinite(b.ratios["conversion_rgb8_in_vs_frombuffer_copy"])
