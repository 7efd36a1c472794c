"""Stress benchmark of start-up, shutdown and DDS teardown (``python -m find_ros.ros.stress``): hangs and exit codes.

Three parts, each counting hangs (a process or a cycle that does not finish within its bound):

- ``signals``: each executable (perception node with the HSV baseline, unconfigured, and with FIND + the field on;
  sim camera with prerender; replay node; ``find-ros demo``) is started in its own process group, and once it is up
  the group gets SIGINT twice (the terminal's and ``ros2 launch``'s forwarded one) with a short or a long gap. Each
  cycle records the exit code, the seconds from the first signal to exit, and whether a traceback was printed.
- ``pairs``: a publisher / subscriber node pair exchanging 640x480 rgb8 frames at 30 Hz, started and stopped
  (SIGINT to both) ``n`` times.
- ``inprocess``: ``n`` rclpy contexts created and destroyed in this process while a peer process streams
  640x480 frames to them, so a read is pending at every teardown (the situation that deadlocked libfastdds 3.2.2
  with the LARGE_DATA TCP transport).

Every process runs on a domain id claimed for the run, with the transport given by ``--transport``
(:mod:`find_ros.ros.dds`). The test suite runs one cycle of each ``signals`` case; the figures in the README come
from this benchmark.
"""
from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from find_ros.ros.dds import (DEFAULT_TRANSPORT, TRANSPORTS, claim_domain_id, find_zombie_segments, process_env,
                              segment_names, select_for_this_process)
from find_ros.ros.shutdown import release_context, stop_processes

__all__ = ["Executable", "EXECUTABLES", "SignalResult", "signal_cycle", "pair_cycles", "inprocess_cycles", "cli"]


@dataclasses.dataclass(frozen=True)
class Executable:
    """How to start one executable and how to tell it is up (a line in its output, or in a file it writes)."""

    name: str
    argv: tuple[str, ...]
    ready: str
    """Text that appears in the process output (or in ``ready_file``) once it is up."""
    ready_file: str | None = None
    """A file, relative to the run directory, that holds ``ready`` instead of the process output."""
    startup_s: float = 120.0


_PN = ("-m", "find_ros.ros.perception_node", "--ros-args")
#: The recorded RGB-D sequence beside the checkout (``../shared/data``), replayed by the replay node case.
TUM_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tum_fr3_teddy"
EXECUTABLES: dict[str, Executable] = {e.name: e for e in (
    Executable("perception_node/hsv", _PN + ("-p", "autostart:=true", "-p", "grounder:=hsv-baseline"),
               "active: grounding"),
    Executable("perception_node/unconfigured", _PN + ("-p", "autostart:=false", "-p", "grounder:=hsv-baseline"),
               "unconfigured (autostart:=false)"),
    Executable("perception_node/find+field", _PN + ("-p", "autostart:=true", "-p", "grounder:=find",
                                                    "-p", "field_enable:=true"), "active: grounding"),
    Executable("sim_camera_node", ("-m", "find_ros.ros.sim_camera_node", "--ros-args", "-p", "prerender:=true",
                                   "-p", "loop_frames:=60"), "sim camera: seed"),
    Executable("replay_node", ("-m", "find_ros.ros.replay_node", "--ros-args", "-p", "format:=tum",
                               "-p", f"path:={TUM_DATA}", "-p", "loop:=true"), "replaying"),
    Executable("find-ros demo", ("-m", "find_ros.tools.cli", "demo", "--seconds", "60", "--rate", "10", "--grounder",
                                 "hsv-baseline", "--out", "demo"), "active: grounding",
               ready_file="demo/perception_node.log"),
)}


@dataclasses.dataclass
class SignalResult:
    name: str
    gap_s: float
    returncode: int | None
    exit_s: float | None
    """Seconds from the first signal to the process's exit (None: it did not exit within the bound: a hang)."""
    traceback: bool
    started: bool
    leaked_segments: tuple[str, ...] = ()
    """Shared-memory segments the process created and left behind in /dev/shm with no live owner."""

    @property
    def clean(self) -> bool:
        return (self.started and self.returncode == 0 and not self.traceback and self.exit_s is not None
                and not self.leaked_segments)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def signal_cycle(exe: Executable, *, gap_s: float, domain_id: int, run_dir: Path,
                 transport: str = DEFAULT_TRANSPORT, exit_bound_s: float = 15.0) -> SignalResult:
    """Start ``exe``, wait until it is up, SIGINT its process group twice ``gap_s`` apart, wait for it to exit."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "output.log"
    env = process_env(domain_id=domain_id, transport=transport, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                      RCUTILS_LOGGING_BUFFERED_STREAM="0")
    before = segment_names()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *exe.argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=run_dir, start_new_session=True)
    ready_path = run_dir / exe.ready_file if exe.ready_file else log
    try:
        end = time.monotonic() + exe.startup_s
        while exe.ready not in _read(ready_path) and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        started = exe.ready in _read(ready_path) and proc.poll() is None
        created = segment_names() - before  # the process's own participants (and any another process made now)
        if not started:
            return SignalResult(exe.name, gap_s, proc.poll(), None, "Traceback" in _read(log), False)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        exit_s = None
        try:
            proc.wait(timeout=gap_s)  # exited before the second signal
            exit_s = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:  # it exited just now (and its group with it)
                pass
            try:
                proc.wait(timeout=exit_bound_s)
                exit_s = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                pass
        leaked = tuple(sorted(created & set(find_zombie_segments(min_age_s=0.0)))) if exit_s is not None else ()
        return SignalResult(exe.name, gap_s, proc.poll(), None if exit_s is None else round(exit_s, 3),
                            "Traceback" in _read(log), True, leaked)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


_PAIR_NODE = r'''
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # a process that does not exit: its stacks, before SIGKILL
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from find_ros.ros.qos import SENSOR_QOS
from find_ros.ros.shutdown import StopSignals, exit_process, release_context, spin_until_stopped
stop = StopSignals.install()
role, rate = sys.argv[1], float(sys.argv[2])
rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
node = rclpy.create_node("stress_" + role)
ex = SingleThreadedExecutor()
ex.add_node(node)
got = [0]
if role == "pub":
    pub = node.create_publisher(Image, "stress/image", SENSOR_QOS)
    data = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8).tobytes()
    def tick():
        m = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
        m.data = data
        m.header.stamp = node.get_clock().now().to_msg()
        pub.publish(m)
    node.create_timer(1.0 / rate, tick)
else:
    def on_image(m):
        got[0] += 1
        if got[0] in (1, 5):
            print(f"got {got[0]}", flush=True)
    node.create_subscription(Image, "stress/image", on_image, SENSOR_QOS)
try:
    spin_until_stopped(ex, stop)
finally:
    ex.shutdown()
    node.destroy_node()
    node = ex = None
    release_context()
    stop.teardown_done()
exit_process(0)  # as the find_ros executables end (shutdown.entry_point): no interpreter finalisation
'''


def _spawn_pair_node(role: str, env: dict[str, str], log: Path, rate_hz: float = 30.0) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-c", _PAIR_NODE, role, str(rate_hz)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def pair_cycles(n: int, *, domain_id: int, run_dir: Path, transport: str = DEFAULT_TRANSPORT,
                frames: int = 5, bound_s: float = 30.0) -> dict[str, Any]:
    """``n`` start/stop cycles of a publisher/subscriber pair; each waits for ``frames`` frames, then SIGINT."""
    env = process_env(domain_id=domain_id, transport=transport, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    run_dir.mkdir(parents=True, exist_ok=True)
    hangs = no_frames = bad_exit = 0
    cycle_s = []
    hung_logs: list[str] = []
    for i in range(n):
        t0 = time.monotonic()
        sub_log, pub_log = run_dir / f"sub{i}.log", run_dir / f"pub{i}.log"
        sub = _spawn_pair_node("sub", env, sub_log)
        pub = _spawn_pair_node("pub", env, pub_log)
        end = t0 + bound_s
        while f"got {frames}" not in _read(sub_log) and time.monotonic() < end and sub.poll() is None:
            time.sleep(0.02)
        if f"got {frames}" not in _read(sub_log):
            no_frames += 1
        codes = stop_processes([pub, sub], timeout_s=bound_s, before_kill=signal.SIGUSR1)
        if any(c == -signal.SIGKILL for c in codes):
            hangs += 1
            hung_logs.append(f"cycle {i}: rc pub {codes[0]} sub {codes[1]}\n--- pub\n{_read(pub_log)[-3000:]}"
                             f"\n--- sub\n{_read(sub_log)[-3000:]}")
        elif any(c != 0 for c in codes) or "Traceback" in _read(sub_log) + _read(pub_log):
            bad_exit += 1
        cycle_s.append(time.monotonic() - t0)
    return {"cycles": n, "hangs": hangs, "no_frames": no_frames, "bad_exit": bad_exit,
            "cycle_s_median": round(sorted(cycle_s)[len(cycle_s) // 2], 3) if cycle_s else None,
            "hung_logs": hung_logs}


def inprocess_cycles(n: int, *, domain_id: int, run_dir: Path, transport: str = DEFAULT_TRANSPORT,
                     frames: int = 2, bound_s: float = 30.0) -> dict[str, Any]:
    """``n`` rclpy contexts created, fed by a streaming peer process and destroyed, in this process."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from find_ros.ros.qos import SENSOR_QOS

    run_dir.mkdir(parents=True, exist_ok=True)
    env = process_env(domain_id=domain_id, transport=transport, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    peer = _spawn_pair_node("pub", env, run_dir / "peer.log")
    no_frames = 0
    cycle_s = []
    try:
        for i in range(n):
            t0 = time.monotonic()
            # a teardown that hangs is reported with every thread's stack and ends the run (exit code 3)
            faulthandler.dump_traceback_later(bound_s, exit=True)
            ctx = rclpy.Context()
            rclpy.init(context=ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
            node = rclpy.create_node(f"stress_inprocess_{i}", context=ctx)
            got = [0]
            node.create_subscription(Image, "stress/image", lambda m: got.__setitem__(0, got[0] + 1), SENSOR_QOS)
            ex = SingleThreadedExecutor(context=ctx)
            ex.add_node(node)
            end = time.monotonic() + bound_s / 2
            while got[0] < frames and time.monotonic() < end:
                ex.spin_once(timeout_sec=0.05)
            if got[0] < frames:
                no_frames += 1
            ex.shutdown()
            node.destroy_node()
            release_context(ctx)
            faulthandler.cancel_dump_traceback_later()
            cycle_s.append(time.monotonic() - t0)
    finally:
        faulthandler.cancel_dump_traceback_later()
        stop_processes([peer])
    return {"cycles": n, "hangs": 0, "no_frames": no_frames,
            "cycle_s_median": round(sorted(cycle_s)[len(cycle_s) // 2], 3) if cycle_s else None}


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m find_ros.ros.stress", description=__doc__.split("\n\n")[0])
    ap.add_argument("--signals", type=int, default=10, help="SIGINT x2 cycles per executable (default 10)")
    ap.add_argument("--pairs", type=int, default=100, help="publisher/subscriber start/stop cycles (default 100)")
    ap.add_argument("--inprocess", type=int, default=100, help="in-process create/destroy cycles (default 100)")
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(EXECUTABLES), help="executables to signal")
    ap.add_argument("--transport", default=DEFAULT_TRANSPORT, choices=TRANSPORTS)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    select_for_this_process(args.transport)
    report: dict[str, Any] = {"transport": args.transport}
    with claim_domain_id() as lease, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.signals:
            rows = []
            for name in args.only or list(EXECUTABLES):
                for k in range(args.signals):
                    gap = (0.05, 0.25, 1.0)[k % 3]
                    r = signal_cycle(EXECUTABLES[name], gap_s=gap, domain_id=lease.domain_id,
                                     run_dir=root / f"sig{len(rows)}", transport=args.transport)
                    rows.append(r)
                    print(f"signals {name:30s} gap {gap:4.2f} s -> rc {r.returncode} in {r.exit_s} s"
                          f"{' TRACEBACK' if r.traceback else ''}{'' if r.started else ' (did not start)'}"
                          f"{f' LEAKED {len(r.leaked_segments)} shm segment(s)' if r.leaked_segments else ''}",
                          flush=True)
            report["signals"] = {
                name: {"cycles": len(rs), "clean": sum(r.clean for r in rs),
                       "hangs": sum(r.started and r.exit_s is None for r in rs),
                       "leaked_segments": sum(len(r.leaked_segments) for r in rs),
                       "exit_s_max": max((r.exit_s for r in rs if r.exit_s is not None), default=None),
                       "exit_s_median": sorted(r.exit_s for r in rs if r.exit_s is not None)[len(rs) // 2]
                       if all(r.exit_s is not None for r in rs) else None}
                for name in dict.fromkeys(r.name for r in rows)
                for rs in [[r for r in rows if r.name == name]]}
        if args.pairs:
            report["pairs"] = pair_cycles(args.pairs, domain_id=lease.domain_id, run_dir=root / "pairs",
                                          transport=args.transport)
            print(f"pairs: {report['pairs']}", flush=True)
        if args.inprocess:
            report["inprocess"] = inprocess_cycles(args.inprocess, domain_id=lease.domain_id,
                                                   run_dir=root / "inprocess", transport=args.transport)
            print(f"inprocess: {report['inprocess']}", flush=True)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
