"""find-ros demo: a short real run (sim camera + perception node processes, driver in this process).

The demo runs in a child process whose environment comes from :func:`find_ros.ros.dds.process_env` (the shipped
transport, the test's claimed ROS domain); nothing here changes this process's environment."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("find_ros.msg")
pytest.importorskip("find_ros.ros.sim_camera_node")

from find_ros.ros.dds import process_env  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPORT_KEYS = {"grounder", "frames_in", "frames_processed", "dropped", "latency_ms", "instructions", "overlays",
               "groundings_received", "node_counters"}


def test_short_demo_writes_a_report(tmp_path, domain_id):
    out = tmp_path / "demo"
    # find-ros demo claims a free domain itself (lock file) for its graph; ROS_DOMAIN_ID is set all the same
    env = process_env(domain_id=domain_id, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "find_ros.tools.cli", "demo", "--seconds", "6", "--rate", "10",
                        "--out", str(out)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report), set(report) ^ REPORT_KEYS
    assert report["grounder"] == "find"
    assert report["frames_processed"] > 0 and report["groundings_received"] > 0
    assert report["frames_in"] >= report["frames_processed"]
    lat = report["latency_ms"]
    assert lat["count"] == report["groundings_received"] and lat["median"] > 0 and lat["p95"] >= lat["median"]
    # the per-grounding series the soak splits into fifths: one latency and one node processing time each
    assert len(report["latency_series_ms"]) == len(report["processing_series_ms"]) == lat["count"]
    assert all(x > 0 for x in report["processing_series_ms"])
    assert [i["id"] for i in report["instructions"]] == ["demo-1", "demo-2", "demo-3"]
    for ins in report["instructions"]:
        assert ins["text"] and ins["target"]["category"]
        assert ins["iou_mean"] is None or 0.0 <= ins["iou_mean"] <= 1.0
    assert report["overlays"] and all((out / name).stat().st_size > 1000 for name in report["overlays"])
    assert "latency median" in r.stdout
    # the running node's per-stage medians (find/status stage_ms; find-ros bench reports them)
    stages = report["node_counters"]["stage_ms"]
    assert {"queue_wait", "convert_in", "pose_lookup", "model_forward", "pose", "tracking", "pose_tracking",
            "build_msgs", "publish", "total"} <= set(stages), stages
    assert 0 < stages["model_forward"] <= stages["total"]


def test_demo_help_and_bad_arguments():
    r = subprocess.run([sys.executable, "-m", "find_ros.tools.cli", "demo", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--seconds" in r.stdout and "--grounder" in r.stdout
    r = subprocess.run([sys.executable, "-m", "find_ros.tools.cli", "demo", "--grounder", "nope"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_graph_that_does_not_start_names_the_missing_links(tmp_path, domain_id):
    """A start-up timeout says which publishers this process discovered and shows both logs (one fresh-session run
    of the demo waited 60 s for camera frames while the node was receiving them)."""
    code = ("import sys\nfrom pathlib import Path\nfrom find_ros.ros.demo import run_demo, DemoError\n"
            "try:\n    run_demo(seconds=1, out=Path(sys.argv[1]), grounder='hsv-baseline', startup_timeout_s=0.3,\n"
            "             domain_id=int(sys.argv[2]))\n"
            "except DemoError as e:\n    print(e)\n    sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "demo"), str(domain_id)], capture_output=True,
                       text=True, timeout=120, env=process_env(domain_id=domain_id, OMP_NUM_THREADS="1"))
    assert r.returncode == 3, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "graph did not start within 0 s" in r.stdout
    for topic in ("camera/color/image_raw", "camera/gt/objects", "find/status"):
        assert f"{topic} " in r.stdout.split("publishers discovered:")[1]
    assert "camera log:" in r.stdout and "node log:" in r.stdout


def test_without_overlay_snapshots_nothing_watches_the_overlay(tmp_path, domain_id):
    """``run_demo(overlay_snapshots=False, score=False)`` (what find-ros bench runs: a headless consumer, no ground
    truth beside the node) never subscribes to the overlay: no snapshot, no PNG, frames still grounded, nothing
    scored, and the interleaved instruction still gets its reference crop (ground truth taken for that only)."""
    code = ("import json, sys\nfrom pathlib import Path\nfrom find_ros.ros.demo import run_demo\n"
            "r = run_demo(seconds=4, rate_hz=10, out=Path(sys.argv[1]), grounder='hsv-baseline',\n"
            "             domain_id=int(sys.argv[2]), overlay_snapshots=False, score=False)\n"
            "print(json.dumps({'overlays': r['overlays'], 'processed': r['frames_processed'],\n"
            "                  'texts': [i['text'] for i in r['instructions']],\n"
            "                  'scored': [i['frames_scored'] for i in r['instructions']]}))\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "demo"), str(domain_id)], capture_output=True,
                       text=True, timeout=120, env=process_env(domain_id=domain_id, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["overlays"] == [] and got["processed"] > 0, got
    assert got["scored"] == [0, 0, 0] and got["texts"][2] == "the <0>", got
    assert not list((tmp_path / "demo").glob("overlay_*.png"))
