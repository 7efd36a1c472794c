"""find-ros bench: stage timing, a stage on a tiny random FIND model, missing model reported as a stage error."""
import json
import time

import numpy as np
import pytest

from find_ros.tools import bench


def test_time_stage_repeats_and_orders_percentiles():
    calls = []
    t = bench.time_stage(lambda: calls.append(sum(range(2000))), warmup=3, repeat=7)
    assert len(calls) == 10 and t.n == 7
    assert 0 < t.median_ms <= t.p95_ms


def test_time_stage_paced_starts_each_call_one_period_after_the_last():
    starts = []
    t = bench.time_stage(lambda: starts.append(time.perf_counter()), warmup=2, repeat=5, period_s=0.02)
    assert t.n == 5 and len(starts) == 7
    gaps = np.diff(starts[1:])  # the first timed call follows the warm-up by a period too
    assert (gaps >= 0.0195).all() and gaps.min() < 0.06, gaps  # paced, not back to back (and not stalled)
    slow = bench.time_stage(lambda: time.sleep(0.03), warmup=0, repeat=3, period_s=0.01)  # longer than the period
    assert slow.n == 3 and slow.median_ms >= 29.0  # the next call starts at once, no sleep is timed
    with pytest.raises(ValueError, match="period_s"):
        bench.time_stage(lambda: None, warmup=0, repeat=1, period_s=-1.0)


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
    # the reference of the e2e node's processing time: the forward pass at the node's torch_threads (1)
    assert m["model_forward_640x480"]["median_ms"] > 0 and m["model_forward_640x480"]["torch_threads"] == 1
    again = b._forward_reference()  # what the e2e stage times before and after its run: the same forward pass
    assert again.n >= b.repeat and len(again.samples_ms) == again.n and torch.get_num_threads() == 1
    paced = b._forward_reference(0.01)  # and paced at a camera period
    assert paced.n >= b.repeat and paced.median_ms > 0
    assert "node_path_640x480" not in m  # the synthetic node path is gone: the e2e stage measures the real node
    json.dumps(b.stages)  # JSON-ready


def test_e2e_stage_reports_the_running_nodes_stages_and_ratio(monkeypatch):
    from find_ros.ros import demo

    calls = []

    def fake_run_demo(**kw):
        calls.append(kw)
        return {"latency_ms": {"median": 60.0}, "node_processing_ms": {"median": 50.0, "p95": 70.0},
                "frames_in": 10, "frames_processed": 9, "dropped": 1, "samples": [],
                "node_counters": {"stage_ms": {"convert_in": 1.0, "model_forward": 40.0, "total": 48.0}}}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    b = bench._Bench(quick=True)
    b.stages["model"] = {"model_forward_640x480": {"median_ms": 30.0, "torch_threads": 1}}
    # the reference just before the run (back to back, then paced), then just after it (paced, then back to back)
    timings = {0.0: iter([(20.0, 24.0, 25.0), (25.0, 26.0, 30.0)]), 1 / 30.0: iter([(40.0,), (50.0,)])}
    refs = []

    def reference(period_s=0.0):
        refs.append((len(calls), period_s))  # how many e2e runs had happened when the reference was timed
        s = next(timings[period_s])
        return bench.StageTiming(float(np.median(s)), max(s), len(s), None, s)

    b._forward_reference = reference
    b.e2e(1.0, "find", 30.0)
    e = b.stages["e2e_find"]
    assert e["stage_ms"] == {"convert_in": 1.0, "model_forward": 40.0, "total": 48.0}
    assert refs == [(0, 0.0), (0, 1 / 30.0), (1, 1 / 30.0), (1, 0.0)]  # right before and right after the run
    r = e["model_forward_reference"]
    assert (r["median_ms"], r["n"], r["before_median_ms"], r["after_median_ms"]) == (25.0, 6, 24.0, 26.0)
    assert b.ratios["node_processing_vs_model_forward"] == 2.0  # 50 / the pooled median (not the model stage's 30)
    p = e["model_forward_reference_paced"]  # one call per camera period, as the node runs the model
    assert (p["median_ms"], p["before_median_ms"], p["after_median_ms"], p["period_ms"]) == (45.0, 40.0, 50.0, 33.333)
    assert b.ratios["node_processing_vs_paced_model_forward"] == round(50.0 / 45.0, 3)
    assert b.ratios["node_processing_vs_node_model_forward"] == 1.25
    assert calls[0]["overlay_snapshots"] is False  # a headless consumer: nothing subscribes to find/overlay


def test_e2e_stage_without_a_model_reference_reports_no_ratio(monkeypatch):
    from find_ros.ros import demo

    monkeypatch.setattr(demo, "run_demo", lambda **kw: {
        "latency_ms": {"median": 60.0}, "node_processing_ms": {"median": 50.0, "p95": 70.0}, "frames_in": 1,
        "frames_processed": 1, "dropped": 0, "samples": [], "node_counters": {"stage_ms": {"model_forward": 40.0}}})
    b = bench._Bench(quick=True)  # the model stage failed or did not run: no forward reference
    b.e2e(1.0, "find", 30.0)
    assert b.stages["e2e_find"]["model_forward_reference"] is None
    assert b.stages["e2e_find"]["model_forward_reference_paced"] is None
    assert b.ratios["node_processing_vs_model_forward"] is None
    assert b.ratios["node_processing_vs_paced_model_forward"] is None
    assert b.ratios["node_processing_vs_node_model_forward"] == 1.25


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


def test_source_revision_names_the_checkouts_commit_and_whether_it_is_dirty(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert bench.source_revision(repo) == {"commit": head, "dirty": False}
    (repo / "b.txt").write_text("untracked files do not count\n")
    assert bench.source_revision(repo) == {"commit": head, "dirty": False}
    (repo / "a.txt").write_text("two\n")
    assert bench.source_revision(repo) == {"commit": head, "dirty": True}
    (repo / "sub").mkdir()  # a folder inside a checkout is not its top: nothing is claimed for it
    assert bench.source_revision(repo / "sub") == {"commit": None, "dirty": None}
    assert bench.source_revision(tmp_path / "plain") == {"commit": None, "dirty": None}  # (does not exist)
