"""Field memory run (find_ros.tools.field_bench.run_memory): a short sim walk-through under a block cap evicts blocks,
never exceeds the cap and reports RSS windows (no timing or RSS assertions: the figures belong to the benchmark)."""
import json

import pytest

pytest.importorskip("find_ros.sim")

from find_ros.tools import field_bench as bench  # noqa: E402


def test_memory_run_evicts_under_the_cap_and_reports_rss():
    res = bench.run_memory(minutes=0.04, width=160, height=120, max_blocks=60, sample_s=0.5, log=None)
    assert res["frames"] > 0 and res["evicted_blocks"] > 0
    assert res["peak_active_blocks"] <= 60
    assert res["rss_first_window_mb"] > 0 and res["rss_last_window_mb"] > 0
    assert res["rss_ratio_last_vs_first"] == pytest.approx(res["rss_last_window_mb"] / res["rss_first_window_mb"])
    assert len(res["rss_samples"]) >= 3 and res["window_s"] == pytest.approx(0.04 * 60 / 3)
    # the storage grows with use: allocated up to the capacity, never past it
    assert 0 < res["field_allocated_mb"] <= res["field_capacity_mb"]
    assert res["t_cap_s"] is not None and res["t_cap_s"] >= 0
    assert res["fuse_ms_first_window_median"] > 0 and res["fuse_ms_ratio_last_vs_first"] is not None
    json.dumps(res)


def test_memory_run_under_a_budget():
    res = bench.run_memory(minutes=0.02, width=160, height=120, max_blocks=10**6, memory_mb=8.0, sample_s=0.5,
                           log=None)
    assert res["block_cap"] < 10**6 and res["peak_active_blocks"] <= res["block_cap"]
    assert res["field_capacity_mb"] <= 8.0


def test_memory_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match="embed"):
        bench.run_memory(minutes=0.01, embed="nope", log=None)
    with pytest.raises(ValueError, match="minutes"):
        bench.run_memory(minutes=0, log=None)
