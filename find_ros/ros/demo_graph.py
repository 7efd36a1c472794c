"""The ``find-ros demo`` graph (:mod:`find_ros.ros.demo`): the sim camera and perception node processes, the
driver node spinning in this process while the children are watched, RSS samples; the demo's errors."""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from find_ros.ros.dds import process_env
from find_ros.ros.demo_driver import DemoDriver
from find_ros.ros.shutdown import StopSignals, release_context, stop_process, stop_processes

__all__ = ["DemoError", "DemoInterrupted", "DemoGraph", "tail"]


class DemoError(RuntimeError):
    """The demo could not run or processed nothing; the message says what happened."""


class DemoInterrupted(DemoError):
    """A stop signal (SIGINT / SIGTERM) ended the demo early; its processes were stopped."""


def _spawn(module: str, ros_args: list[str], env: dict, log: Path) -> subprocess.Popen:
    f = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], env=env,
                            stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _param_text(v: Any) -> str:
    """A ``--ros-args -p name:=value`` value (YAML syntax)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MiB (Linux /proc), None when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _spawn_nodes(*, env: dict, logs: dict[str, Path], rate_hz: float, seconds: float, seed: int, grounder: str,
                 node_params: dict[str, Any] | None) -> list[subprocess.Popen]:
    """Start the sim camera and the perception node (autostart) as child processes: [camera, node]."""
    return [
        _spawn("find_ros.ros.sim_camera_node",
               ["-p", f"rate_hz:={float(rate_hz)}", "-p", f"seed:={int(seed)}", "-p", "publish_gt:=true",
                "-p", "prerender:=true",  # rendering live would take CPU from the node being measured
                # one orbit of 300 frames, or fewer when the run is shorter than that (a 6 s run at 10 Hz
                # prerenders 60 frames, not 300: start-up stays short on a busy machine)
                "-p", f"loop_frames:={max(30, min(300, math.ceil(rate_hz * seconds)))}"],
               env, logs["camera"]),
        _spawn("find_ros.ros.perception_node",
               ["-p", "autostart:=true", "-p", f"grounder:={grounder}", "-p", "status_period_s:=0.5",
                *[a for k, v in (node_params or {}).items() for a in ("-p", f"{k}:={_param_text(v)}")]],
               env, logs["node"]),
    ]


class DemoGraph:
    """The running demo: the two node processes, the driver node and its executor, the RSS samples."""

    def __init__(self, *, ctx: Any, procs: list[subprocess.Popen], logs: dict[str, Path], driver: DemoDriver,
                 executor: Any, stop: StopSignals | None, sample_period_s: float) -> None:
        self.ctx, self.procs, self.logs, self.driver, self.executor = ctx, procs, logs, driver, executor
        self.stop, self.sample_period_s = stop, sample_period_s
        self.watched = list(procs)  # processes that must stay alive
        self.samples: list[dict] = []  # once per sample_period_s: node/camera RSS and how many latencies so far
        self.t_start = time.monotonic()

    @classmethod
    def start(cls, *, out: Path, domain: int, transport: str, rate_hz: float, seconds: float, seed: int,
              grounder: str, node_params: dict[str, Any] | None, stop: StopSignals | None,
              sample_period_s: float, score: bool = True) -> DemoGraph:
        """Init a context on ``domain``, spawn the two nodes, create the driver node (``score``: against the ground
        truth, :class:`DemoDriver`) and its executor."""
        env = process_env(domain_id=domain, transport=transport, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        ctx = rclpy.Context()
        # the caller's signals, not rclpy's handlers
        rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        logs = {"camera": out / "sim_camera_node.log", "node": out / "perception_node.log"}
        procs = _spawn_nodes(env=env, logs=logs, rate_hz=rate_hz, seconds=seconds, seed=seed, grounder=grounder,
                             node_params=node_params)
        driver = DemoDriver(context=ctx, out=out, instruction_period_s=max(seconds / 3.0, 1.0), score=score)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(driver.node)
        return cls(ctx=ctx, procs=procs, logs=logs, driver=driver, executor=executor, stop=stop,
                   sample_period_s=sample_period_s)

    def sample(self) -> None:
        """Append an RSS sample when ``sample_period_s`` has passed since the last one."""
        now = time.monotonic()
        if self.samples and now - self.t_start - self.samples[-1]["t_s"] < self.sample_period_s:
            return
        self.samples.append({"t_s": round(now - self.t_start, 3), "node_rss_mb": _rss_mb(self.procs[1].pid),
                             "camera_rss_mb": _rss_mb(self.procs[0].pid),
                             "latency_count": len(self.driver.latency),
                             "dropped": int(self.driver.status.get("dropped", 0))})

    def spin_until(self, cond: Callable[[], Any], timeout_s: float) -> bool:
        """Spin the driver until ``cond()`` or the timeout; a stop signal or a dead child raises."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return True
            if self.stop is not None and self.stop.requested.is_set():
                raise DemoInterrupted("stop signal: demo ended early")
            self.sample()
            for p in self.watched:
                if p.poll() is not None:
                    raise DemoError(f"{p.args[2]} exited with {p.returncode} during the demo:\n"
                                    f"{tail(self.logs['camera' if 'camera' in p.args[2] else 'node'])}")
            self.executor.spin_once(timeout_sec=0.05)
        return cond()

    def wait_started(self, timeout_s: float) -> None:
        """Until the driver has the objects, a node status, a subscriber and a camera frame (its camera_info);
        DemoError if not."""
        d = self.driver
        if self.spin_until(lambda: d.objects is not None and d.status and d.pub.get_subscription_count() > 0
                           and d.camera_frames > 0, timeout_s):
            return
        seen = ", ".join(f"{t} {d.node.count_publishers(t)}"
                         for t in ("camera/color/image_raw", "camera/gt/objects", "find/status"))
        raise DemoError(f"graph did not start within {timeout_s:.0f} s (objects={d.objects is not None}"
                        f", node status={bool(d.status)}, camera frames={d.camera_frames}; publishers"
                        f" discovered: {seen})\n"
                        f"camera log:\n{tail(self.logs['camera'])}\nnode log:\n{tail(self.logs['node'])}")

    def wind_down(self) -> dict:
        """Camera off, then let the node drain until its counters settle; its final status."""
        self.watched.remove(self.procs[0])
        stop_process(self.procs[0])
        last: list = []
        d = self.driver

        def settled() -> bool:
            last.append((d.status.get("frame_sets"), d.status.get("processed"), d.received))
            return len(last) > 40 and last[-1] == last[-40]  # unchanged for ~2 s (4 status periods)

        self.spin_until(settled, 10.0)
        return dict(d.status)

    def close(self) -> None:
        """Stop the children, the executor, the driver node and the context."""
        stop_processes(self.procs)
        self.executor.shutdown()
        self.driver.node.destroy_node()
        release_context(self.ctx)
