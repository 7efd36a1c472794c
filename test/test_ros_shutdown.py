"""Clean exit of every executable: SIGINT twice to its process group (a terminal Ctrl-C, then the one ``ros2 launch``
forwards), with a short and a long gap, once it is up: exit code 0, no traceback, no hang.

The cycles come from :mod:`find_ros.ros.stress` (the benchmark runs 10 per executable and records the seconds to
exit; no timing is asserted here beyond the hang bound).
"""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("find_ros.msg")

from find_ros.ros.stress import EXECUTABLES, inprocess_cycles, pair_cycles, signal_cycle  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CASES = [("perception_node/hsv", 0.05), ("perception_node/unconfigured", 0.25), ("perception_node/find+field", 0.25),
         ("perception_node/find+field", 1.0), ("sim_camera_node", 0.05), ("replay_node", 0.25),
         ("find-ros demo", 0.25)]


@pytest.mark.parametrize("name, gap_s", CASES, ids=[f"{n}-{g}s" for n, g in CASES])
def test_sigint_twice_to_the_process_group_exits_zero(name, gap_s, domain_id, tmp_path):
    r = signal_cycle(EXECUTABLES[name], gap_s=gap_s, domain_id=domain_id, run_dir=tmp_path, exit_bound_s=20.0)
    log = (tmp_path / "output.log").read_text(errors="replace")
    assert r.started, f"{name} did not come up:\n{log[-3000:]}"
    assert r.exit_s is not None, f"{name} still running 20 s after SIGINT x2:\n{log[-3000:]}"
    assert r.returncode == 0 and not r.traceback, f"{name}: rc {r.returncode}\n{log[-3000:]}"
    # its DDS participants were deleted: no 64 MiB shared-memory segment of it is left in /dev/shm
    assert not r.leaked_segments, f"{name} left {r.leaked_segments} in /dev/shm\n{log[-3000:]}"


def test_sigint_during_start_up_exits_zero(domain_id, tmp_path):
    """A sim camera interrupted while it prerenders its loop gives up at once and exits 0."""
    from find_ros.ros.stress import Executable

    exe = Executable("sim_camera_node/prerendering", ("-m", "find_ros.ros.sim_camera_node", "--ros-args",
                                                      "-p", "prerender:=true", "-p", "loop_frames:=3000",
                                                      "-p", "prerender_max_mb:=100000"), "prerendering 3000 frames")
    r = signal_cycle(exe, gap_s=0.1, domain_id=domain_id, run_dir=tmp_path, exit_bound_s=20.0)
    log = (tmp_path / "output.log").read_text(errors="replace")
    assert r.started and r.exit_s is not None and r.returncode == 0 and not r.traceback, log[-3000:]
    assert "prerendered" not in log


def test_node_pairs_and_in_process_contexts_start_and_stop_without_hanging(domain_id, tmp_path):
    """A few cycles of the stress benchmark's pair and in-process parts (the benchmark runs 100 + 100)."""
    pairs = pair_cycles(3, domain_id=domain_id, run_dir=tmp_path / "pairs")
    assert pairs["hangs"] == 0 and pairs["bad_exit"] == 0 and pairs["no_frames"] == 0, \
        {**pairs, "hung_logs": "\n".join(pairs["hung_logs"])}
    inproc = inprocess_cycles(5, domain_id=domain_id, run_dir=tmp_path / "inprocess")
    assert inproc["no_frames"] == 0, inproc


def test_entry_point_exits_with_mains_code_and_flushes(tmp_path):
    """shutdown.entry_point: run() calls main() and exits the process with its code, output flushed."""
    import subprocess
    import sys

    code = ("from find_ros.ros.shutdown import entry_point\n"
            "def main():\n    print('teardown done', end='')\n    return 3\n"
            "entry_point(main)()\nprint('not reached')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stdout == "teardown done", (r.returncode, r.stdout, r.stderr[-2000:])


def test_console_scripts_are_the_shared_entry_point():
    """setup.py's node console scripts (module:run) resolve to shutdown.entry_point(main) of their module."""
    import ast
    import importlib
    from pathlib import Path

    setup = ast.parse((Path(__file__).resolve().parents[1] / "setup.py").read_text())
    specs = [n.value for n in ast.walk(setup) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and ":" in n.value and " = find_ros.ros." in n.value]
    assert {s.split(" = ")[0] for s in specs} == {"perception_node", "sim_camera_node", "replay_node"}
    for spec in specs:
        module, attr = spec.split(" = ")[1].split(":")
        mod = importlib.import_module(module)
        run = getattr(mod, attr)
        assert attr == "run" and callable(run) and run.__module__ == module
        assert run.__code__ is importlib.import_module("find_ros.ros.shutdown").entry_point(mod.main).__code__


@pytest.mark.parametrize("kind", ["events", "single"])
def test_make_executor_spins_real_subscriptions(kind, ros):
    """make_executor: 'events' is rclpy's EventsExecutor where rclpy has one (kilted: this install), 'single' a
    SingleThreadedExecutor; either delivers a message between two nodes on the given context. A bad kind is refused."""
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from find_ros.ros.shutdown import make_executor

    with pytest.raises(ValueError, match="'threads'"):
        make_executor("threads", context=ros.context)
    ex = make_executor(kind, context=ros.context)
    try:
        import rclpy.experimental  # noqa: F401
        has_events = hasattr(rclpy.experimental, "EventsExecutor")
    except ImportError:
        has_events = False
    assert isinstance(ex, SingleThreadedExecutor) == (kind == "single" or not has_events)
    pub_node = rclpy.create_node("exec_pub", context=ros.context)
    sub_node = rclpy.create_node("exec_sub", context=ros.context)
    got: list[str] = []
    try:
        sub_node.create_subscription(String, "exec_test", lambda m: got.append(m.data), 10)
        pub = pub_node.create_publisher(String, "exec_test", 10)
        ex.add_node(pub_node)
        ex.add_node(sub_node)
        deadline = time.monotonic() + 20.0
        while not got and time.monotonic() < deadline:
            pub.publish(String(data=kind))
            ex.spin_once(timeout_sec=0.1)
        assert got[:1] == [kind]
    finally:
        ex.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()


def test_single_threaded_executor_choice_starts_and_stops_cleanly(domain_id, tmp_path):
    """perception_node with executor:=single (rclpy's SingleThreadedExecutor): active, then SIGINT twice: exit 0."""
    from find_ros.ros.stress import Executable

    exe = Executable("perception_node/single", ("-m", "find_ros.ros.perception_node", "--ros-args", "-p",
                                                "autostart:=true", "-p", "grounder:=hsv-baseline", "-p",
                                                "executor:=single"), "active: grounding")
    r = signal_cycle(exe, gap_s=0.25, domain_id=domain_id, run_dir=tmp_path, exit_bound_s=20.0)
    log = (tmp_path / "output.log").read_text(errors="replace")
    assert r.started and r.exit_s is not None and r.returncode == 0 and not r.traceback, log[-3000:]


@pytest.mark.parametrize("bad", ["executor:=threads", "autostart:=maybe"])
def test_an_invalid_start_parameter_exits_one_with_its_name_and_no_traceback(bad, procs):
    """A start-time parameter (read before configure) with an invalid value: one error line naming it, exit 1."""
    p = procs.node("find_ros.ros.perception_node", ["-p", bad, "-p", "grounder:=hsv-baseline"], "node.log")
    assert p.wait(timeout=60) == 1
    log = procs.log_text(p)
    assert f"cannot start: {bad.split(':=')[0]}=" in log and "Traceback" not in log, log[-3000:]
