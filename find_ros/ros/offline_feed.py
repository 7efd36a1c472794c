"""The feeding side of a ``find-ros run`` (:func:`run_bag`): an in-process perception node fed a bag's frames
over DDS one at a time, each when the node has settled the previous one and its outputs are recorded; the run's
summary. The command line and the full description are in :mod:`find_ros.ros.offline`."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from find_ros.ros.offline_plan import Instruction, RunError
from find_ros.ros.offline_record import FIELD_TOPIC, OUTPUT_TOPICS, OutputRecorder, output_typestore
from find_ros.sim.bag import BagConfig, BagFrame, RgbdBag

__all__ = ["run_bag", "Progress"]

_HANDLED = ("processed", "idle", "rejected", "stale", "dropped")  # node counters that settle a frame set
_REFUSED = ("invalid_input", "out_of_order", "future")  # counters of messages refused on arrival


def _pct(x: list[float], q: float) -> float | None:
    return round(float(np.percentile(x, q)), 3) if x else None


class Progress:
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



def _node_parameters(values: dict[str, Any]) -> list[Any]:
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in values.items()]


def run_bag(bag_path: str | Path, instructions: list[Instruction], out: str | Path, *, grounder: str = "find",
            model: str | None = None, device: str = "cpu", field: bool = False, storage: str = "sqlite3",
            config: BagConfig | None = None, node_params: dict[str, Any] | None = None,
            frame_timeout_s: float = 30.0, max_frames: int = 0, progress: bool = True, verbose: bool = False,
            summary_path: str | Path | None = None, domain_id: int | None = None,
            stop: threading.Event | None = None) -> dict[str, Any]:
    """Run the perception node over ``bag_path`` (see :mod:`find_ros.ros.offline`); write the output bag ``out``
    and the summary JSON; return the summary. :class:`RunError` / :class:`find_ros.sim.bag.BagError` when it
    cannot start."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.logging import LoggingSeverity
    from rclpy.signals import SignalHandlerOptions
    from rosbags.rosbag2 import StoragePlugin, Writer

    from find_ros.msg import InterleavedInstruction
    from find_ros.ros.conversions import stamp_from_ns
    from find_ros.ros.dds import claim_domain_id
    from find_ros.ros.params import ParameterError, validate_all, validate_value, PARAMS_BY_NAME
    from find_ros.ros.perception_node import PerceptionNode
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
    prog = Progress(min(bag.color_count, max_frames) if max_frames else bag.color_count, enabled=progress)
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
        recorder = OutputRecorder(feeder, writer, output_typestore(), topics)

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
            camera.publish(stamp=stamp_from_ns(frame.stamp_ns), color=frame.color, depth_m=frame.depth, K=frame.K,
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
