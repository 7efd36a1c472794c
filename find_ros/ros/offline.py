"""``find-ros run``: the perception node over a recorded rosbag2, offline, its outputs recorded into a new rosbag2.

    find-ros run --bag IN --instruction "the red chair" [--instruction-at T ...] --out OUT
                 [--grounder find|hsv-baseline] [--model DIR] [--field] [--storage sqlite3|mcap]

The frames go through the same code as on a robot: a :class:`~find_ros.ros.perception_node.PerceptionNode` in this
process, configured and activated through its lifecycle, fed over DDS (a private domain, claimed for the run) by a
publisher in this process with the camera topics of the sim camera / replay node. Frames are read from the bag with
:mod:`find_ros.sim.bag` (malformed messages counted and skipped) and published one at a time with their recorded
header stamps: the next one when the node has accounted for the previous one (grounded, idle, rejected) and its
outputs have been recorded, so the node always keeps up and no frame is lost to keep-last-1 queues. The node runs
with ``max_stamp_age_s: 0`` (recorded stamps are old by design).

The node's outputs (``find/grounding``, ``find/mask``, ``find/overlay``, ``find/target_pose``,
``find/target_pose_world``, ``find/markers``, with ``--field`` ``find/field/cloud``) are serialised with
``rclpy.serialization.serialize_message`` and written with the ``rosbags`` writer (rosbag2 format 9, sqlite3 or mcap)
under the recorded stamp of their frame (the field cloud under the latest frame's), with their message definitions (the find_ros ones from ``msg/``), so
``rosbags``, ``ros2 bag`` and Foxglove read the bag. ``OUT/summary.json`` (or ``--summary``) holds frames in /
processed / skipped, the bag's malformed and unpaired counts, the node's counters, per-instruction found fractions
and timing. A progress bar goes to stderr.

``--instruction TEXT`` may be repeated; ``--instruction-at T`` (seconds after the bag's first frame, by recorded
stamp) gives each its start: one per instruction, or one fewer (the first starts at 0). Ctrl-C ends the run early
with a complete bag and summary.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from find_ros.sim.bag import (BagConfig, BagConfigError, BagError, BagFrame, RgbdBag, config_fields,
                              default_typestore)

__all__ = ["OUTPUT_TOPICS", "RunError", "Instruction", "schedule", "find_ros_msg_dir", "output_typestore",
           "run_bag", "cli"]

#: Output topic -> (message type name, transient local): what the run records.
OUTPUT_TOPICS: dict[str, tuple[str, bool]] = {
    "/find/grounding": ("find_ros/msg/Grounding", False),
    "/find/mask": ("sensor_msgs/msg/Image", False),
    "/find/overlay": ("sensor_msgs/msg/Image", False),
    "/find/target_pose": ("geometry_msgs/msg/PoseStamped", False),
    "/find/target_pose_world": ("geometry_msgs/msg/PoseStamped", False),
    "/find/markers": ("visualization_msgs/msg/MarkerArray", False),
}
FIELD_TOPIC = ("/find/field/cloud", ("sensor_msgs/msg/PointCloud2", True))
_HANDLED = ("processed", "idle", "rejected", "stale", "dropped")  # node counters that settle a frame set
_REFUSED = ("invalid_input", "out_of_order", "future")  # counters of messages refused on arrival
_FIND_ROS_MSGS = ("GroundedEntity", "Grounding", "InterleavedInstruction")


class RunError(RuntimeError):
    """The run cannot start or go on (bad arguments, output exists, node failed its lifecycle)."""


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction of the run and when it takes effect."""

    text: str
    at_s: float
    """Seconds after the bag's first frame (by recorded stamp)."""
    id: str


def schedule(texts: list[str], at: list[float] | None) -> list[Instruction]:
    """The instructions in order of start time; ``at`` gives one start per text, or one fewer (the first at 0).
    :class:`RunError` names what is wrong."""
    if not texts:
        raise RunError("give at least one --instruction")
    at = list(at or [])
    if len(at) == len(texts) - 1:
        at = [0.0, *at]
    if len(at) != len(texts):
        raise RunError(f"{len(texts)} --instruction but {len(at)} --instruction-at: give one per instruction "
                       "(or one fewer: the first then starts at 0)")
    for t in at:
        if not math.isfinite(t) or t < 0:
            raise RunError(f"--instruction-at {t} must be a time >= 0 (s after the first frame)")
    if any(b < a for a, b in zip(at, at[1:])):
        raise RunError(f"--instruction-at times must not decrease, got {at}")
    for text in texts:
        if not text.strip():
            raise RunError("an --instruction is empty")
    return [Instruction(text=t, at_s=float(a), id=f"run-{k + 1}") for k, (t, a) in enumerate(zip(texts, at))]


def find_ros_msg_dir() -> Path:
    """The folder of find_ros's ``.msg`` files: the install's ``share/find_ros/msg`` (ament prefixes, this
    interpreter's prefix) or the source checkout's ``msg/``."""
    candidates = [Path(p) / "share" / "find_ros" / "msg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(
        os.pathsep) if p]
    candidates += [Path(sys.prefix) / "share" / "find_ros" / "msg", Path(__file__).resolve().parents[2] / "msg"]
    for c in candidates:
        if all((c / f"{name}.msg").is_file() for name in _FIND_ROS_MSGS):
            return c
    raise RunError("find_ros message definitions (Grounding.msg, ...) not found in "
                   + ", ".join(str(c) for c in candidates))


def output_typestore() -> Any:
    """The standard ROS 2 typestore plus find_ros's messages (from their ``.msg`` files)."""
    from rosbags.typesys import get_types_from_msg

    store = default_typestore()
    d = find_ros_msg_dir()
    types: dict = {}
    for name in _FIND_ROS_MSGS:
        types.update(get_types_from_msg((d / f"{name}.msg").read_text(), f"find_ros/msg/{name}"))
    store.register(types)
    return store


def _qos_record(transient_local: bool) -> Any:
    """The offered QoS noted in the output bag: the node's OUTPUT_QOS (reliable, keep last 10, volatile), or
    LATCHED_QOS (keep last 1, transient local) for the field cloud."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    forever = QosTime(9223372036, 854775807)
    return Qos(QosHistory.KEEP_LAST, 1 if transient_local else 10, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE, forever, forever,
               QosLiveliness.AUTOMATIC, forever, False)


def _pct(x: list[float], q: float) -> float | None:
    return round(float(np.percentile(x, q)), 3) if x else None


class _Progress:
    """A one-line text progress bar on a stream (stderr), redrawn at most 10 times a second."""

    def __init__(self, total: int, *, stream: Any = None, enabled: bool = True, width: int = 30) -> None:
        self.total, self.stream, self.enabled, self.width = max(int(total), 1), stream or sys.stderr, enabled, width
        self._last = 0.0
        self._t0 = time.monotonic()
        self._drawn = False

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        fill = int(round(frac * self.width))
        rate = done / max(now - self._t0, 1e-9)
        self.stream.write(f"\rrun [{'#' * fill}{'.' * (self.width - fill)}] {done}/{self.total} frames "
                          f"{rate:5.1f}/s, {extra}\033[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT / SIGTERM set the yielded event (the run winds down and writes its bag and summary) instead of
    raising; the previous handlers are back afterwards. Only in the main thread (elsewhere: no handlers)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Recorder:
    """Subscribes to the node's outputs and writes each message into the output bag as it arrives (executor
    thread), recorded at its header stamp when that is a frame's recorded stamp (every per-frame output), else
    (the field cloud, stamped by the node's clock) at the latest frame's stamp, so the bag spans the input's time."""

    def __init__(self, node: Any, writer: Any, typestore: Any, topics: dict[str, tuple[str, bool]]) -> None:
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from find_ros.msg import Grounding

        classes = {"find_ros/msg/Grounding": Grounding, "sensor_msgs/msg/Image": Image,
                   "geometry_msgs/msg/PoseStamped": PoseStamped, "visualization_msgs/msg/MarkerArray": MarkerArray,
                   "sensor_msgs/msg/PointCloud2": PointCloud2}
        self.writer = writer
        self.counts: dict[str, int] = {t: 0 for t in topics}
        self.groundings: list[dict] = []
        self.last_stamp_ns = 0
        self.frame_stamps: set[int] = set()
        self._conns: dict[str, Any] = {}
        self._subs = []
        for topic, (mtype, latched) in topics.items():
            self._conns[topic] = writer.add_connection(topic, mtype, typestore=typestore,
                                                       offered_qos_profiles=[_qos_record(latched)])
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1 if latched else 100,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self._subs.append(node.create_subscription(classes[mtype], topic.lstrip("/"),
                                                       lambda m, t=topic: self._on(t, m), qos))

    def _on(self, topic: str, msg: Any) -> None:
        from rclpy.serialization import serialize_message

        header = getattr(msg, "header", None)
        if header is None and getattr(msg, "markers", None):
            header = msg.markers[0].header
        stamp = 0 if header is None else int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
        if stamp not in self.frame_stamps:
            stamp = self.last_stamp_ns
        self.writer.write(self._conns[topic], stamp, serialize_message(msg))
        self.counts[topic] += 1
        if topic == "/find/grounding":
            self.groundings.append({"stamp_ns": stamp, "instruction_id": msg.instruction_id,
                                    "found": [bool(e.found) for e in msg.entities],
                                    "phrases": [e.phrase for e in msg.entities],
                                    "processing_ms": float(msg.processing_ms)})


def _node_parameters(values: dict[str, Any]) -> list[Any]:
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in values.items()]


def run_bag(bag_path: str | Path, instructions: list[Instruction], out: str | Path, *, grounder: str = "find",
            model: str | None = None, device: str = "cpu", field: bool = False, storage: str = "sqlite3",
            config: BagConfig | None = None, node_params: dict[str, Any] | None = None,
            frame_timeout_s: float = 30.0, max_frames: int = 0, progress: bool = True, verbose: bool = False,
            summary_path: str | Path | None = None, domain_id: int | None = None,
            stop: threading.Event | None = None) -> dict[str, Any]:
    """Run the perception node over ``bag_path`` (see the module docstring); write the output bag ``out`` and
    the summary JSON; return the summary. :class:`RunError` / :class:`find_ros.sim.bag.BagError` when it cannot
    start."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.logging import LoggingSeverity
    from rclpy.signals import SignalHandlerOptions
    from rosbags.rosbag2 import StoragePlugin, Writer

    from find_ros.msg import InterleavedInstruction
    from find_ros.ros.dds import claim_domain_id
    from find_ros.ros.params import ParameterError, validate_all, validate_value, PARAMS_BY_NAME
    from find_ros.ros.perception_node import PerceptionNode
    from find_ros.ros.replay_node import stamp_msg
    from find_ros.ros.shutdown import release_context
    from find_ros.ros.sim_camera_node import RgbdPublisher
    from find_ros.srv import SetInstruction

    t_begin = time.monotonic()
    out = Path(out)
    if storage not in ("sqlite3", "mcap"):
        raise RunError(f"--storage must be sqlite3 or mcap, got {storage!r}")
    if out.exists():
        raise RunError(f"output {str(out)!r} exists already: choose another --out or remove it")
    if frame_timeout_s <= 0:
        raise RunError(f"frame timeout must be > 0, got {frame_timeout_s}")
    summary_path = Path(summary_path) if summary_path is not None else out / "summary.json"
    stop = stop or threading.Event()
    bag = RgbdBag(bag_path, config)
    lease = ctx = node = feeder = executor = writer = None
    prog = _Progress(min(bag.color_count, max_frames) if max_frames else bag.color_count, enabled=progress)
    frames_published, outcomes = 0, {"processed": 0, "idle": 0, "rejected": 0, "stale": 0, "dropped": 0,
                                     "refused": 0, "timeout": 0}
    round_trip_ms: list[float] = []
    applied: list[dict] = []
    recorder = None
    saved_level = None
    status: dict = {}
    interrupted = False
    t_loop = t_setup_done = None
    try:
        frames = bag.frames()
        first = next(frames, None)
        if first is None:
            c = bag.counts
            raise RunError(f"no usable frame in {bag.path} ({c.messages.get('color', 0)} colour messages; malformed "
                           f"{c.malformed or 'none'}; unpaired {c.unpaired or 'none'})")
        params: dict[str, Any] = {"grounder": grounder, "device": device, "max_stamp_age_s": 0.0,
                                  "camera_pose_source": "pose" if bag.pose_topic else "none",
                                  "field_enable": bool(field), "status_period_s": 0.5}
        if model:
            params["model_path"] = str(model)
        if first.world_frame:
            try:
                params["world_frame"] = validate_value(PARAMS_BY_NAME["world_frame"], first.world_frame)
            except ParameterError:
                pass  # an unusual recorded frame name: keep the node's default
        params.update(node_params or {})
        try:
            params = validate_all(params)
        except ParameterError as e:
            raise RunError(f"perception node parameters: {e}") from None

        lease = claim_domain_id() if domain_id is None else None
        domain = lease.domain_id if lease is not None else int(domain_id)
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        executor = SingleThreadedExecutor(context=ctx)
        node = PerceptionNode(context=ctx, parameter_overrides=_node_parameters(params))
        if not verbose:  # logger levels are per process: put it back afterwards
            saved_level = node.get_logger().get_effective_level()
            node.get_logger().set_level(LoggingSeverity.WARN)
        executor.add_node(node)
        feeder = rclpy.create_node("find_ros_run", context=ctx)
        executor.add_node(feeder)
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RunError("the perception node failed to configure (its log says why)")
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RunError("the perception node failed to activate (its log says why)")
        camera = RgbdPublisher(feeder, frame_id=first.frame_id or "camera_color_optical_frame",
                               world_frame=params.get("world_frame", "map"),
                               depth_encoding="32FC1" if first.depth_encoding == "32FC1" else "16UC1",
                               publish_odom=False)
        client = feeder.create_client(SetInstruction, "find/set_instruction")
        writer = Writer(out, version=9,
                        storage_plugin=StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP)
        writer.open()
        topics = dict(OUTPUT_TOPICS)
        if field:
            topics[FIELD_TOPIC[0]] = FIELD_TOPIC[1]
        recorder = _Recorder(feeder, writer, output_typestore(), topics)

        def spin_until(cond, timeout_s: float) -> bool:
            end = time.monotonic() + timeout_s
            while not cond():
                if stop.is_set() or time.monotonic() > end:
                    return bool(cond())
                executor.spin_once(timeout_sec=0.01)
            return True

        def counters() -> dict:
            return node.counters()

        cam_pubs = [camera.color, camera.depth, camera.info] + ([camera.pose] if bag.pose_topic else [])
        if not spin_until(lambda: client.service_is_ready() and all(p.get_subscription_count() > 0 for p in cam_pubs)
                          and all(feeder.count_publishers(t) > 0 for t in OUTPUT_TOPICS), 20.0):
            raise RunError("the perception node's topics and services did not come up within 20 s")
        t_setup_done = time.monotonic()

        def apply(ins: Instruction) -> None:
            req = SetInstruction.Request(instruction=InterleavedInstruction(id=ins.id, text=ins.text))
            fut = client.call_async(req)
            if not spin_until(fut.done, 30.0):
                if stop.is_set():
                    return
                raise RunError(f"find/set_instruction did not answer within 30 s for {ins.text!r}")
            r = fut.result()
            applied.append({"id": ins.id, "text": ins.text, "at_s": ins.at_s, "accepted": bool(r.success),
                            "message": r.message, "first_frame": frames_published})
            if not r.success:
                print(f"\nfind-ros run: instruction {ins.text!r} rejected: {r.message}", file=sys.stderr)

        def value(name: str) -> Any:
            return params.get(name, PARAMS_BY_NAME[name].default)

        per_frame = ["/find/grounding", "/find/mask"] + (["/find/overlay"] if value("publish_overlay") else []) \
            + (["/find/markers"] if value("publish_markers") else [])  # published for every processed frame

        def recorded_all(n_processed: int, timeout_s: float) -> bool:
            return spin_until(lambda: all(recorder.counts[t] >= n_processed for t in per_frame), timeout_s)

        def all_frames() -> Iterator[BagFrame]:
            yield first
            yield from frames

        def colour_done() -> int:
            """Colour messages dealt with: published as frames or skipped (malformed, unpaired)."""
            c = bag.counts
            skipped = sum(v for k, v in c.malformed.items() if k.startswith(("color_", "frame_")))
            return frames_published + skipped + sum(c.unpaired.values())

        pending = list(instructions)
        t_loop = time.monotonic()
        for frame in all_frames():
            if stop.is_set():
                interrupted = True
                break
            if max_frames and frames_published >= max_frames:
                break
            t_rel = (frame.stamp_ns - first.stamp_ns) * 1e-9
            while pending and pending[0].at_s <= t_rel + 1e-9:
                apply(pending.pop(0))
            before = counters()
            t_pub = time.monotonic()
            camera.publish(stamp=stamp_msg(frame.stamp_ns), color=frame.color, depth_m=frame.depth, K=frame.K,
                           T_world_cam=frame.T_world_cam)
            frames_published += 1
            recorder.last_stamp_ns = max(recorder.last_stamp_ns, frame.stamp_ns)
            recorder.frame_stamps.add(frame.stamp_ns)

            def settled() -> bool:
                c = counters()
                return sum(c[k] for k in _HANDLED) > sum(before[k] for k in _HANDLED)

            def refused() -> bool:
                c = counters()
                return sum(c[k] for k in _REFUSED) > sum(before[k] for k in _REFUSED)

            end = time.monotonic() + frame_timeout_s
            outcome = "timeout"
            while time.monotonic() < end and not stop.is_set():
                if settled():
                    after = counters()
                    outcome = next(k for k in _HANDLED if after[k] > before[k])
                    break
                if refused() and spin_until(settled, 0.5) is False:
                    outcome = "refused"
                    break
                executor.spin_once(timeout_sec=0.01)
            if outcome == "processed":  # its outputs are recorded before the next frame goes out
                recorded_all(counters()["processed"], 5.0)
                round_trip_ms.append((time.monotonic() - t_pub) * 1e3)
            outcomes[outcome] += 1
            prog.update(colour_done(), f"processed {outcomes['processed']}")
        else:
            if stop.is_set():
                interrupted = True
        prog.update(colour_done(), f"processed {outcomes['processed']}", force=True)
        prog.close()
        # the last outputs, and with the field its cloud once more after the last frame
        recorded_all(counters()["processed"], 5.0)
        if field and not stop.is_set():
            n_cloud = recorder.counts[FIELD_TOPIC[0]]
            spin_until(lambda: recorder.counts[FIELD_TOPIC[0]] > n_cloud, value("field_publish_period_s") + 2.0)
        status = counters()
    finally:
        prog.close()
        try:
            if writer is not None:
                writer.close()
        finally:
            if executor is not None:
                executor.shutdown()
            if saved_level is not None:
                node.get_logger().set_level(saved_level)
            for n in (feeder, node):
                if n is not None:
                    n.destroy_node()
            if ctx is not None:
                release_context(ctx)
            if lease is not None:
                lease.release()
            bag.close()

    t_end = time.monotonic()
    per_instruction = []
    for k, a in enumerate(applied):
        gs = [g for g in recorder.groundings if g["instruction_id"] == a["id"]]
        found = [any(g["found"]) for g in gs]
        phrases = gs[0]["phrases"] if gs else []
        per_instruction.append({**a, "frames_grounded": len(gs), "frames_found": int(sum(found)),
                                "found_fraction": round(float(np.mean(found)), 4) if found else None,
                                "entities": {p: round(float(np.mean([g["found"][i] for g in gs])), 4)
                                             for i, p in enumerate(phrases)}})
    not_reached = [{"id": i.id, "text": i.text, "at_s": i.at_s} for i in pending]
    proc_ms = [g["processing_ms"] for g in recorder.groundings]
    loop_s = (t_end - t_loop) if t_loop is not None else 0.0
    summary = {
        "bag": str(bag.path), "out": str(out), "storage": storage, "grounder": status.get("grounder", grounder),
        "model": params.get("model_path") or None, "field": bool(field), "interrupted": interrupted,
        "frames_in": frames_published,
        "frames_processed": outcomes["processed"],
        "frames_skipped": frames_published - outcomes["processed"],
        "frame_outcomes": outcomes,
        "bag_counts": bag.counts.as_dict(),
        "malformed": bag.counts.as_dict()["malformed"],
        "malformed_total": bag.counts.malformed_total,
        "instructions": per_instruction,
        "instructions_not_reached": not_reached,
        "output_messages": dict(recorder.counts),
        "node_counters": status,
        "timing": {"wall_s": round(t_end - t_begin, 3),
                   "setup_s": round((t_setup_done or t_end) - t_begin, 3),
                   "frames_s": round(loop_s, 3),
                   "frames_per_s": round(frames_published / loop_s, 3) if loop_s > 0 else None,
                   "node_processing_ms": {"median": _pct(proc_ms, 50), "p95": _pct(proc_ms, 95)},
                   "frame_round_trip_ms": {"median": _pct(round_trip_ms, 50), "p95": _pct(round_trip_ms, 95)}},
    }
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    summary["summary_path"] = str(summary_path)
    return summary


def cli(argv: list[str] | None = None) -> int:
    """``find-ros run`` entry point."""
    ap = argparse.ArgumentParser(prog="find-ros run", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bag", required=True, type=Path, help="input rosbag2 folder (or its .db3 / .mcap file)")
    ap.add_argument("--instruction", action="append", required=True, metavar="TEXT",
                    help="instruction text (repeatable)")
    ap.add_argument("--instruction-at", action="append", type=float, metavar="T",
                    help="start of each instruction, s after the first frame (one per instruction, or one fewer)")
    ap.add_argument("--out", required=True, type=Path, help="output rosbag2 folder (must not exist)")
    ap.add_argument("--grounder", default="find", choices=("find", "hsv-baseline"), help="perception grounder")
    ap.add_argument("--model", default=None, help="FIND model directory (default: the shipped model)")
    ap.add_argument("--device", default="cpu", help="torch device of the FIND model")
    ap.add_argument("--field", action="store_true", help="fuse the 3D feature field; record find/field/cloud")
    ap.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"), help="output bag storage")
    ap.add_argument("--summary", type=Path, default=None, help="summary JSON (default OUT/summary.json)")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    ap.add_argument("--frame-timeout", type=float, default=30.0,
                    help="seconds to wait for the node to settle one frame before counting it skipped")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="another perception node parameter, typed as in a params file (repeatable)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ap.add_argument("--verbose", action="store_true", help="show the perception node's info log")
    bag_group = ap.add_argument_group("bag topics and pairing (find_ros.sim.bag.BagConfig)")
    for name, default, desc in config_fields():
        bag_group.add_argument("--" + name.replace("_", "-"), dest="bag_" + name, default=default, metavar=name.split("_")[-1].upper(),
                               type=type(default), help=desc)
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        import yaml

        node_params = {}
        for item in args.param:
            if "=" not in item:
                raise RunError(f"--param {item!r} is not NAME=VALUE")
            k, v = item.split("=", 1)
            node_params[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        config = BagConfig(**{name: getattr(args, "bag_" + name) for name, _, _ in config_fields()})
        plan = schedule(args.instruction, args.instruction_at)
    except (RunError, BagConfigError) as e:
        print(f"find-ros run: {e}", file=sys.stderr)
        return 2
    with _stop_on_signals() as stop:
        try:
            s = run_bag(args.bag, plan, args.out, grounder=args.grounder, model=args.model, device=args.device,
                        field=args.field, storage=args.storage, config=config, node_params=node_params,
                        frame_timeout_s=args.frame_timeout, max_frames=args.max_frames,
                        progress=not args.no_progress, verbose=args.verbose, summary_path=args.summary, stop=stop)
        except (RunError, BagError) as e:
            print(f"find-ros run: {e}", file=sys.stderr)
            return 2
    print(f"find-ros run: {s['frames_in']} frames in, {s['frames_processed']} processed, {s['frames_skipped']} "
          f"skipped; bag malformed {s['malformed_total']} ({s['malformed'] or 'none'}); "
          f"{s['timing']['frames_per_s']} frames/s{' (interrupted)' if s['interrupted'] else ''}")
    for ins in s["instructions"]:
        frac = "n/a" if ins["found_fraction"] is None else f"{ins['found_fraction']:.2f}"
        print(f"  {ins['id']} {ins['text']!r} from {ins['at_s']:g} s: found in {frac} of {ins['frames_grounded']} "
              f"frames{'' if ins['accepted'] else ' (REJECTED: ' + ins['message'] + ')'}")
    print(f"output bag: {args.out}  summary: {s['summary_path']}")
    return 0
