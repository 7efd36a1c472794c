"""``find-ros demo``: the sim camera and the perception node as real ROS 2 processes, scripted instructions, a report.

Starts ``sim_camera_node`` and ``perception_node`` (``autostart:=true``) as separate processes on a
``ROS_DOMAIN_ID`` claimed for the run, over the shipped shared-memory Fast DDS profile
(:mod:`find_ros.ros.dds`), and runs a driver node in this
process that reads the sim ground truth (``camera/gt/objects``, ``camera/gt/instance``), publishes
instructions naming scene objects (two by text, then one interleaved ``"the <0>"`` with a reference
crop cut from a camera frame), and collects ``find/grounding``, ``find/mask``, ``find/overlay`` and
``find/status``. It writes ``DIR/report.json`` (frames in / processed / dropped, latency = receipt
of the Grounding here minus its header stamp, first vs last quarter, per-instruction IoU of the
published mask against the sim instance ground truth) plus overlay PNGs and the two nodes' logs.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from find_ros.ros.dds import DEFAULT_TRANSPORT, claim_domain_id, process_env, select_for_this_process
from find_ros.ros.shutdown import StopSignals, release_context, stop_process, stop_processes
from find_ros.stamps import stamp_to_ns

__all__ = ["cli", "run_demo", "DemoError", "DemoInterrupted"]

_COLOURS_FIRST = ("red",)


class DemoError(RuntimeError):
    """The demo could not run or processed nothing; the message says what happened."""


class DemoInterrupted(DemoError):
    """A stop signal (SIGINT / SIGTERM) ended the demo early; its processes were stopped."""


def _percentile(x: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(x), q)) if x else None


def _latency_stats(lat_ms: list[float]) -> dict[str, Any]:
    n = len(lat_ms)
    q = max(n // 4, 1)
    first, last = lat_ms[:q], lat_ms[-q:]
    return {
        "count": n,
        "median": _percentile(lat_ms, 50), "p95": _percentile(lat_ms, 95),
        "mean": float(np.mean(lat_ms)) if lat_ms else None, "max": float(np.max(lat_ms)) if lat_ms else None,
        "first_quarter_median": _percentile(first, 50), "first_quarter_p95": _percentile(first, 95),
        "last_quarter_median": _percentile(last, 50), "last_quarter_p95": _percentile(last, 95),
    }


class _Driver:
    """In-process rclpy node: ground truth in, instructions out, results collected."""

    def __init__(self, *, context: Any, out: Path, instruction_period_s: float) -> None:
        from find_ros.msg import Grounding, InterleavedInstruction
        from find_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        import rclpy

        self.node = rclpy.create_node("find_ros_demo_driver", context=context)
        self.out = out
        self.period = instruction_period_s
        self.objects: list[dict] | None = None
        self.status: dict = {}
        self.gt_instance: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.masks: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.groundings: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self.color: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.latency: list[float] = []
        self.processing_ms: list[float] = []
        self.received = 0
        self.overlay_last: np.ndarray | None = None
        self.iou: dict[str, list[float]] = collections.defaultdict(list)
        self.found: dict[str, list[bool]] = collections.defaultdict(list)
        self.targets: dict[str, dict] = {}
        self.camera_frames = 0
        n = self.node
        n.create_subscription(String, "camera/gt/objects", self._on_objects, OUTPUT_QOS)
        n.create_subscription(Image, "camera/gt/instance", self._on_gt_instance, SENSOR_QOS)
        n.create_subscription(Grounding, "find/grounding", self._on_grounding, OUTPUT_QOS)
        n.create_subscription(Image, "find/mask", self._on_mask, OUTPUT_QOS)
        n.create_subscription(Image, "find/overlay", self._on_overlay, OUTPUT_QOS)
        n.create_subscription(String, "find/status", self._on_status, OUTPUT_QOS)
        self._color_sub = n.create_subscription(Image, "camera/color/image_raw", self._on_color, SENSOR_QOS)
        self.pub = n.create_publisher(InterleavedInstruction, "find/instruction", OUTPUT_QOS)

    # -- callbacks (thin: store, then match by stamp)
    def _on_objects(self, msg) -> None:
        self.objects = json.loads(msg.data)

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)

    def _on_color(self, msg) -> None:
        from find_ros.ros.conversions import image_to_rgb

        self.camera_frames += 1
        self._put(self.color, stamp_to_ns(msg.header.stamp), image_to_rgb(msg).copy(), keep=4)

    def _on_gt_instance(self, msg) -> None:
        from find_ros.ros.conversions import image_to_numpy

        self._put(self.gt_instance, stamp_to_ns(msg.header.stamp), image_to_numpy(msg).astype(np.int32), keep=60)
        self._match(stamp_to_ns(msg.header.stamp))

    def _on_mask(self, msg) -> None:
        from find_ros.ros.conversions import image_to_numpy

        self._put(self.masks, stamp_to_ns(msg.header.stamp), image_to_numpy(msg).copy(), keep=60)
        self._match(stamp_to_ns(msg.header.stamp))

    def _on_overlay(self, msg) -> None:
        from find_ros.ros.conversions import image_to_rgb

        self.overlay_last = image_to_rgb(msg)

    def _on_grounding(self, msg, info) -> None:
        # The middleware's reception time (wall clock) is immune to this driver's own callback backlog.
        now = time.time_ns()
        t = int(info["received_timestamp"]) if info and 0 < int(info.get("received_timestamp", 0)) <= now else now
        self.received += 1
        self.latency.append((t - stamp_to_ns(msg.header.stamp)) / 1e6)
        self.processing_ms.append(float(msg.processing_ms))
        self._put(self.groundings, stamp_to_ns(msg.header.stamp), msg, keep=60)
        self._match(stamp_to_ns(msg.header.stamp))

    @staticmethod
    def _put(d: collections.OrderedDict, key: int, value: Any, *, keep: int) -> None:
        d[key] = value
        while len(d) > keep:
            d.popitem(last=False)

    def _match(self, stamp: int) -> None:
        if stamp not in self.groundings or stamp not in self.masks or stamp not in self.gt_instance:
            return
        g = self.groundings.pop(stamp)
        mask = self.masks.pop(stamp)
        gt = self.gt_instance.pop(stamp)
        target = self.targets.get(g.instruction_id)
        if target is None or not g.entities:
            return
        truth = gt == int(target["id"])
        if truth.sum() < 200:  # target (almost) out of view: IoU is not meaningful
            return
        e = g.entities[0]
        pred = (mask == e.label) if (e.found and e.label > 0) else np.zeros_like(truth)
        inter = np.logical_and(pred, truth).sum()
        union = np.logical_or(pred, truth).sum()
        self.iou[g.instruction_id].append(float(inter / union) if union else 0.0)
        self.found[g.instruction_id].append(bool(e.found))

    # -- instructions
    def publish_instruction(self, iid: str, text: str, target: dict, reference: tuple | None = None) -> None:
        from find_ros.msg import InterleavedInstruction
        from find_ros.ros.conversions import numpy_to_image

        msg = InterleavedInstruction(id=iid, text=text)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        if reference is not None:
            img, mask = reference
            msg.reference_images = [numpy_to_image(img, "rgb8")]
            msg.reference_masks = [numpy_to_image(mask.astype(np.uint8) * 255, "mono8")]
        self.targets[iid] = target
        self.pub.publish(msg)

    def reference_crop(self, obj_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """A crop of ``obj_id`` (+ its mask) from the newest colour frame that has ground truth."""
        for stamp in reversed(list(self.color)):
            gt = self.gt_instance.get(stamp)
            if gt is None:
                continue
            m = gt == obj_id
            if m.sum() < 400:
                continue
            ys, xs = np.nonzero(m)
            pad = 6
            y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, m.shape[0])
            x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, m.shape[1])
            return self.color[stamp][y0:y1, x0:x1].copy(), m[y0:y1, x0:x1].copy()
        return None


def _pick_targets(objects: list[dict]) -> list[dict]:
    """Objects to ask for: a red one first when there is one, then others of distinct colours."""
    ordered = sorted(objects, key=lambda o: (o.get("colour") not in _COLOURS_FIRST, o["id"]))
    picked, colours = [], set()
    for o in ordered:
        if o.get("colour") not in colours:
            picked.append(o)
            colours.add(o.get("colour"))
    return picked + [o for o in ordered if o not in picked]


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


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_demo(*, seconds: float = 20.0, out: Path = Path("out/demo"), rate_hz: float = 30.0,
             grounder: str = "find", seed: int = 3, startup_timeout_s: float = 60.0,
             domain_id: int | None = None, sample_period_s: float = 1.0,
             node_params: dict[str, Any] | None = None, transport: str = DEFAULT_TRANSPORT,
             stop: StopSignals | None = None) -> dict[str, Any]:
    """Run the graph for ``seconds`` after start-up; write ``out/report.json`` and return the report.

    ``node_params`` adds perception-node parameters; ``sample_period_s`` sets how often the node's and
    camera's RSS are sampled into ``report["samples"]`` (used by the soak benchmark). ``domain_id`` defaults
    to a free one claimed for the run; ``transport`` (:mod:`find_ros.ros.dds`) is what the two node processes
    use; this process's own participant uses whatever its environment selects (``find-ros demo`` selects the
    same). A stop signal (``stop``) ends the run early with :class:`DemoInterrupted`, children stopped.
    """
    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lease = claim_domain_id() if domain_id is None else None
    domain = lease.domain_id if lease is not None else int(domain_id)
    env = process_env(domain_id=domain, transport=transport, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    import rclpy

    ctx = rclpy.Context()
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)  # the caller's signals
    logs = {"camera": out / "sim_camera_node.log", "node": out / "perception_node.log"}
    procs = [
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
    from rclpy.executors import SingleThreadedExecutor

    watched = list(procs)  # processes that must stay alive
    period = max(seconds / 3.0, 1.0)
    driver = _Driver(context=ctx, out=out, instruction_period_s=period)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(driver.node)

    samples: list[dict] = []  # once per sample_period_s: node/camera RSS and how many latencies so far
    t_start = time.monotonic()

    def sample() -> None:
        now = time.monotonic()
        if samples and now - t_start - samples[-1]["t_s"] < sample_period_s:
            return
        samples.append({"t_s": round(now - t_start, 3), "node_rss_mb": _rss_mb(procs[1].pid),
                        "camera_rss_mb": _rss_mb(procs[0].pid), "latency_count": len(driver.latency)})

    def spin_until(cond, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return True
            if stop is not None and stop.requested.is_set():
                raise DemoInterrupted("stop signal: demo ended early")
            sample()
            for p in watched:
                if p.poll() is not None:
                    raise DemoError(f"{p.args[2]} exited with {p.returncode} during the demo:\n"
                                    f"{_tail(logs['camera' if 'camera' in p.args[2] else 'node'])}")
            executor.spin_once(timeout_sec=0.05)
        return cond()

    overlays: list[str] = []
    script: list[dict] = []
    try:
        if not spin_until(lambda: driver.objects is not None and driver.status and
                          driver.pub.get_subscription_count() > 0 and len(driver.color) > 0, startup_timeout_s):
            seen = ", ".join(f"{t} {driver.node.count_publishers(t)}"
                             for t in ("camera/color/image_raw", "camera/gt/objects", "find/status"))
            raise DemoError(f"graph did not start within {startup_timeout_s:.0f} s (objects={driver.objects is not None}"
                            f", node status={bool(driver.status)}, camera frames={driver.camera_frames}; publishers"
                            f" discovered: {seen})\n"
                            f"camera log:\n{_tail(logs['camera'])}\nnode log:\n{_tail(logs['node'])}")
        targets = _pick_targets(driver.objects)
        start_status = dict(driver.status)
        t0 = time.monotonic()
        for k in range(3):
            obj = targets[k % len(targets)] if k < 2 else targets[min(2, len(targets) - 1)]
            iid = f"demo-{k + 1}"
            if k < 2:
                text = f"the {obj['colour']} {obj['category']}".replace("_", " ")
                driver.publish_instruction(iid, text, obj)
            else:
                spin_until(lambda: driver.reference_crop(int(obj["id"])) is not None, 3.0)
                ref = driver.reference_crop(int(obj["id"]))
                if ref is None:  # the object is not in view right now: fall back to text
                    text = f"the {obj['colour']} {obj['category']}".replace("_", " ")
                    driver.publish_instruction(iid, text, obj)
                else:
                    text = "the <0>"
                    driver.publish_instruction(iid, text, obj, reference=ref)
                    cv2.imwrite(str(out / "reference_crop.png"), cv2.cvtColor(ref[0], cv2.COLOR_RGB2BGR))
                if k == 2:
                    driver.node.destroy_subscription(driver._color_sub)
            script.append({"id": iid, "text": text, "target": {key: obj.get(key) for key in
                                                              ("id", "category", "colour", "size", "description")},
                           "interleaved": text == "the <0>", "t_s": round(time.monotonic() - t0, 2)})
            spin_until(lambda: False, min(period, max(seconds - (time.monotonic() - t0), 0.0)))
            if driver.overlay_last is not None:
                png = out / f"overlay_{iid}.png"
                cv2.imwrite(str(png), cv2.cvtColor(driver.overlay_last, cv2.COLOR_RGB2BGR))
                overlays.append(png.name)
        watched.remove(procs[0])
        stop_process(procs[0])  # camera off, then let the node drain and report its final counters
        last: list = []

        def settled() -> bool:
            last.append((driver.status.get("frame_sets"), driver.status.get("processed"), driver.received))
            return len(last) > 40 and last[-1] == last[-40]  # unchanged for ~2 s (4 status periods)

        spin_until(settled, 10.0)
        status = dict(driver.status)
    finally:
        stop_processes(procs)
        executor.shutdown()
        driver.node.destroy_node()
        release_context(ctx)
        if lease is not None:
            lease.release()

    per_instruction = []
    for s in script:
        ious = driver.iou.get(s["id"], [])
        fnd = driver.found.get(s["id"], [])
        per_instruction.append({**s, "frames_scored": len(ious),
                                "iou_mean": float(np.mean(ious)) if ious else None,
                                "iou_median": _percentile(ious, 50),
                                "found_rate": float(np.mean(fnd)) if fnd else None})
    processed = int(status.get("processed", 0))
    report = {
        "grounder": status.get("grounder", grounder),
        "seconds": seconds, "rate_hz": rate_hz, "seed": seed, "ros_domain_id": domain,
        "frames_in": int(status.get("frames_in", 0)),
        "frames_processed": processed,
        "dropped": int(status.get("dropped", 0)),
        "stale": int(status.get("stale", 0)),
        "rejected": int(status.get("rejected", 0)),
        "idle_before_first_instruction": int(start_status.get("idle", 0)),
        "groundings_received": driver.received,
        "latency_ms": _latency_stats(driver.latency),
        "latency_definition": "reception of find/grounding at the driver (DDS received_timestamp, wall clock) "
                              "minus its header stamp (the camera frame's stamp)",
        "node_processing_ms": {"median": _percentile(driver.processing_ms, 50),
                               "p95": _percentile(driver.processing_ms, 95)},
        "instructions": per_instruction,
        "overlays": overlays,
        "node_counters": status,
        "logs": {k: v.name for k, v in logs.items()},
        "samples": samples,
        "latency_series_ms": [round(x, 3) for x in driver.latency],
        "processing_series_ms": [round(x, 3) for x in driver.processing_ms],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if processed == 0 and driver.received == 0:
        raise DemoError(f"no frame was processed (report in {out / 'report.json'})\n"
                        f"node log:\n{_tail(logs['node'])}")
    return report


def cli(argv: list[str] | None = None) -> int:
    """``find-ros demo`` entry point."""
    ap = argparse.ArgumentParser(prog="find-ros demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="run time after start-up (default 20)")
    ap.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)")
    ap.add_argument("--rate", type=float, default=30.0, help="sim camera rate in Hz (default 30)")
    ap.add_argument("--grounder", default="find", choices=("hsv-baseline", "find"),
                    help="perception node grounder (default find: the shipped FIND model)")
    ap.add_argument("--seed", type=int, default=3, help="sim scene seed (default 3)")
    ap.add_argument("--model", default=None, help="FIND model directory for --grounder find (default: the shipped one)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    stop = StopSignals.install()
    select_for_this_process(DEFAULT_TRANSPORT)  # this process's participant speaks what its children speak
    try:
        report = run_demo(seconds=args.seconds, out=args.out, rate_hz=args.rate, grounder=args.grounder,
                          seed=args.seed, node_params={"model_path": args.model} if args.model else None,
                          stop=stop)
    except DemoInterrupted as e:
        print(f"find-ros demo: {e}", file=sys.stderr)
        return 0
    except DemoError as e:
        print(f"find-ros demo: {e}", file=sys.stderr)
        return 1
    finally:  # the graph is down: a signal forwarded now must not kill the exiting interpreter (-SIGINT)
        stop.teardown_done()
    lat = report["latency_ms"]
    print(f"grounder={report['grounder']} frames in={report['frames_in']} processed={report['frames_processed']} "
          f"dropped={report['dropped']} latency median={lat['median']:.1f} ms p95={lat['p95']:.1f} ms "
          f"(first quarter p95={lat['first_quarter_p95']:.1f}, last quarter p95={lat['last_quarter_p95']:.1f})")
    for ins in report["instructions"]:
        iou = "n/a" if ins["iou_mean"] is None else f"{ins['iou_mean']:.3f}"
        print(f"  {ins['id']} {ins['text']!r} -> {ins['target']['description']!r}: IoU {iou} "
              f"over {ins['frames_scored']} frames")
    print(f"report: {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
