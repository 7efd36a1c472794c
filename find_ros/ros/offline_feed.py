"""The feeding side of a ``find-ros run`` (:func:`run_bag`): an in-process perception node fed a bag's frames
over DDS one at a time, each when the node has settled the previous one and its outputs are recorded; the run's
summary. The command line and the full description are in :mod:`find_ros.ros.offline`."""
from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from find_ros.ros.offline_plan import Instruction, RunError
from find_ros.ros.offline_progress import Progress
from find_ros.ros.offline_record import FIELD_TOPIC, OUTPUT_TOPICS, OutputRecorder, output_typestore
from find_ros.sim.bag import BagConfig, BagFrame, RgbdBag

__all__ = ["run_bag", "Progress"]

_HANDLED = ("processed", "idle", "rejected", "stale", "dropped")  # node counters that settle a frame set
_REFUSED = ("invalid_input", "out_of_order", "future")  # counters of messages refused on arrival


def _pct(x: list[float], q: float) -> float | None:
    return round(float(np.percentile(x, q)), 3) if x else None


def _node_parameters(values: dict[str, Any]) -> list[Any]:
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in values.items()]


def _check_args(*, out: Path, storage: str, frame_timeout_s: float) -> None:
    """RunError for arguments a run cannot start with."""
    if storage not in ("sqlite3", "mcap"):
        raise RunError(f"--storage must be sqlite3 or mcap, got {storage!r}")
    if out.exists():
        raise RunError(f"output {str(out)!r} exists already: choose another --out or remove it")
    if frame_timeout_s <= 0:
        raise RunError(f"frame timeout must be > 0, got {frame_timeout_s}")


def _params(first: BagFrame, *, pose: bool, grounder: str, model: str | None, device: str, field: bool,
            node_params: dict[str, Any] | None) -> dict[str, Any]:
    """The perception node's parameters for the run, validated (RunError when they are not valid)."""
    from find_ros.ros.params import PARAMS_BY_NAME, ParameterError, validate_all, validate_value

    params: dict[str, Any] = {"grounder": grounder, "device": device, "max_stamp_age_s": 0.0,
                              "camera_pose_source": "pose" if pose else "none",
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
        return validate_all(params)
    except ParameterError as e:
        raise RunError(f"perception node parameters: {e}") from None


class _Feed:
    """One :func:`run_bag`: the node and the feeder in one context, the output bag, the counts; phases as methods."""

    def __init__(self, *, bag: RgbdBag, stop: threading.Event, field: bool, frame_timeout_s: float,
                 max_frames: int, progress: bool) -> None:
        self.bag, self.stop, self.field = bag, stop, field
        self.frame_timeout_s, self.max_frames = frame_timeout_s, max_frames
        self.lease = self.ctx = self.node = self.feeder = self.executor = self.writer = None
        self.camera = self.client = self.recorder = self.saved_level = None
        self.prog = Progress(min(bag.color_count, max_frames) if max_frames else bag.color_count, enabled=progress)
        self.frames_published = 0
        self.outcomes = {k: 0 for k in (*_HANDLED, "refused", "timeout")}
        self.round_trip_ms: list[float] = []
        self.applied: list[dict] = []
        self.params: dict[str, Any] = {}
        self.pending: list[Instruction] = []
        self.status: dict = {}
        self.interrupted = False
        self.t_loop = self.t_setup_done = None
        self.first: BagFrame | None = None
        self.frames: Iterator[BagFrame] = iter(())

    # ------------------------------------------------------------------ start
    def open_bag(self) -> BagFrame:
        """The bag's first usable frame (the rest follow in ``frames``); RunError when there is none."""
        self.frames = self.bag.frames()
        self.first = next(self.frames, None)
        if self.first is None:
            c = self.bag.counts
            raise RunError(f"no usable frame in {self.bag.path} ({c.messages.get('color', 0)} colour messages; "
                           f"malformed {c.malformed or 'none'}; unpaired {c.unpaired or 'none'})")
        return self.first

    def start(self, *, params: dict[str, Any], domain_id: int | None, verbose: bool) -> None:
        """A context on a claimed domain; the perception node (configured, active) and the feeder on one executor."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.lifecycle import TransitionCallbackReturn
        from rclpy.logging import LoggingSeverity
        from rclpy.signals import SignalHandlerOptions

        from find_ros.ros.dds import claim_domain_id
        from find_ros.ros.perception_node import PerceptionNode

        self.params = params
        self.lease = claim_domain_id() if domain_id is None else None
        domain = self.lease.domain_id if self.lease is not None else int(domain_id)
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.node = PerceptionNode(context=self.ctx, parameter_overrides=_node_parameters(params))
        if not verbose:  # logger levels are per process: put it back afterwards
            self.saved_level = self.node.get_logger().get_effective_level()
            self.node.get_logger().set_level(LoggingSeverity.WARN)
        self.executor.add_node(self.node)
        self.feeder = rclpy.create_node("find_ros_run", context=self.ctx)
        self.executor.add_node(self.feeder)
        if self.node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RunError("the perception node failed to configure (its log says why)")
        if self.node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RunError("the perception node failed to activate (its log says why)")

    def open_outputs(self, *, out: Path, storage: str) -> None:
        """The camera publishers and the instruction client on the feeder; the output bag and its recorder."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        from find_ros.ros.sim_camera_node import RgbdPublisher
        from find_ros.srv import SetInstruction

        first = self.first
        self.camera = RgbdPublisher(self.feeder, frame_id=first.frame_id or "camera_color_optical_frame",
                                    world_frame=self.params.get("world_frame", "map"),
                                    depth_encoding="32FC1" if first.depth_encoding == "32FC1" else "16UC1",
                                    publish_odom=False)
        self.client = self.feeder.create_client(SetInstruction, "find/set_instruction")
        self.writer = Writer(out, version=9,
                             storage_plugin=StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP)
        self.writer.open()
        topics = dict(OUTPUT_TOPICS)
        if self.field:
            topics[FIELD_TOPIC[0]] = FIELD_TOPIC[1]
        self.recorder = OutputRecorder(self.feeder, self.writer, output_typestore(), topics)

    def wait_ready(self) -> None:
        """Until the node subscribes to the camera, serves instructions and publishes its outputs (20 s)."""
        cam = self.camera
        cam_pubs = [cam.color, cam.depth, cam.info] + ([cam.pose] if self.bag.pose_topic else [])
        if not self.spin_until(lambda: self.client.service_is_ready()
                               and all(p.get_subscription_count() > 0 for p in cam_pubs)
                               and all(self.feeder.count_publishers(t) > 0 for t in OUTPUT_TOPICS), 20.0):
            raise RunError("the perception node's topics and services did not come up within 20 s")
        self.t_setup_done = time.monotonic()

    # ------------------------------------------------------------------ helpers
    def spin_until(self, cond: Callable[[], Any], timeout_s: float) -> bool:
        """Spin until ``cond()``, the timeout or a stop request; ``cond()``'s last value."""
        end = time.monotonic() + timeout_s
        while not cond():
            if self.stop.is_set() or time.monotonic() > end:
                return bool(cond())
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def value(self, name: str) -> Any:
        """A node parameter's value for the run (its default when not set)."""
        from find_ros.ros.params import PARAMS_BY_NAME

        return self.params.get(name, PARAMS_BY_NAME[name].default)

    def recorded_all(self, n_processed: int, timeout_s: float) -> bool:
        """Until each per-frame output topic has been recorded ``n_processed`` times."""
        per_frame = ["/find/grounding", "/find/mask"] + (["/find/overlay"] if self.value("publish_overlay") else []) \
            + (["/find/markers"] if self.value("publish_markers") else [])  # published for every processed frame
        return self.spin_until(lambda: all(self.recorder.counts[t] >= n_processed for t in per_frame), timeout_s)

    def colour_done(self) -> int:
        """Colour messages dealt with: published as frames or skipped (malformed, unpaired)."""
        c = self.bag.counts
        skipped = sum(v for k, v in c.malformed.items() if k.startswith(("color_", "frame_")))
        return self.frames_published + skipped + sum(c.unpaired.values())

    def apply(self, ins: Instruction) -> None:
        """Set ``ins`` through ``find/set_instruction``; record whether it was accepted."""
        from find_ros.msg import InterleavedInstruction
        from find_ros.srv import SetInstruction

        req = SetInstruction.Request(instruction=InterleavedInstruction(id=ins.id, text=ins.text))
        fut = self.client.call_async(req)
        if not self.spin_until(fut.done, 30.0):
            if self.stop.is_set():
                return
            raise RunError(f"find/set_instruction did not answer within 30 s for {ins.text!r}")
        r = fut.result()
        self.applied.append({"id": ins.id, "text": ins.text, "at_s": ins.at_s, "accepted": bool(r.success),
                             "message": r.message, "first_frame": self.frames_published})
        if not r.success:
            print(f"\nfind-ros run: instruction {ins.text!r} rejected: {r.message}", file=sys.stderr)

    # ------------------------------------------------------------------ frames
    def feed(self, instructions: list[Instruction]) -> None:
        """Publish the frames one at a time, each instruction before the first frame at or after its start."""
        self.pending = list(instructions)
        self.t_loop = time.monotonic()
        for frame in itertools.chain([self.first], self.frames):
            if self.stop.is_set():
                self.interrupted = True
                break
            if self.max_frames and self.frames_published >= self.max_frames:
                break
            t_rel = (frame.stamp_ns - self.first.stamp_ns) * 1e-9
            while self.pending and self.pending[0].at_s <= t_rel + 1e-9:
                self.apply(self.pending.pop(0))
            self._feed_one(frame)
        else:
            if self.stop.is_set():
                self.interrupted = True

    def _feed_one(self, frame: BagFrame) -> None:
        """Publish ``frame``, wait until the node has settled it (and its outputs are recorded), count how."""
        from find_ros.ros.conversions import stamp_from_ns

        before = self.node.counters()
        t_pub = time.monotonic()
        self.camera.publish(stamp=stamp_from_ns(frame.stamp_ns), color=frame.color, depth_m=frame.depth, K=frame.K,
                            T_world_cam=frame.T_world_cam)
        self.frames_published += 1
        self.recorder.last_stamp_ns = max(self.recorder.last_stamp_ns, frame.stamp_ns)
        self.recorder.frame_stamps.add(frame.stamp_ns)
        outcome = self._outcome(before)
        if outcome == "processed":  # its outputs are recorded before the next frame goes out
            self.recorded_all(self.node.counters()["processed"], 5.0)
            self.round_trip_ms.append((time.monotonic() - t_pub) * 1e3)
        self.outcomes[outcome] += 1
        self.prog.update(self.colour_done(), f"processed {self.outcomes['processed']}")

    def _outcome(self, before: dict) -> str:
        """How the node dealt with the frame published after its counters were ``before``: a :data:`_HANDLED`
        counter, "refused" (refused on arrival) or "timeout"."""
        def grew(keys: tuple[str, ...]) -> bool:
            c = self.node.counters()
            return sum(c[k] for k in keys) > sum(before[k] for k in keys)

        end = time.monotonic() + self.frame_timeout_s
        while time.monotonic() < end and not self.stop.is_set():
            if grew(_HANDLED):
                after = self.node.counters()
                return next(k for k in _HANDLED if after[k] > before[k])
            if grew(_REFUSED) and self.spin_until(lambda: grew(_HANDLED), 0.5) is False:
                return "refused"
            self.executor.spin_once(timeout_sec=0.01)
        return "timeout"

    def finish(self) -> None:
        """The last outputs (with the field, its cloud once more after the last frame); the final counters."""
        self.prog.update(self.colour_done(), f"processed {self.outcomes['processed']}", force=True)
        self.prog.close()
        self.recorded_all(self.node.counters()["processed"], 5.0)
        if self.field and not self.stop.is_set():
            n_cloud = self.recorder.counts[FIELD_TOPIC[0]]
            self.spin_until(lambda: self.recorder.counts[FIELD_TOPIC[0]] > n_cloud,
                            self.value("field_publish_period_s") + 2.0)
        self.status = self.node.counters()

    def close(self) -> None:
        """Close the output bag, the nodes, the context, the domain lease and the input bag (whatever was opened)."""
        from find_ros.ros.shutdown import release_context

        self.prog.close()
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            if self.executor is not None:
                self.executor.shutdown()
            if self.saved_level is not None:
                self.node.get_logger().set_level(self.saved_level)
            for n in (self.feeder, self.node):
                if n is not None:
                    n.destroy_node()
            if self.ctx is not None:
                release_context(self.ctx)
            if self.lease is not None:
                self.lease.release()
            self.bag.close()

    # ------------------------------------------------------------------ summary
    def summary(self, *, out: Path, storage: str, grounder: str, t_begin: float, t_end: float) -> dict[str, Any]:
        """The run's summary (frames, outcomes, bag counts, instructions, outputs, node counters, timing)."""
        counts = self.bag.counts
        return {
            "bag": str(self.bag.path), "out": str(out), "storage": storage,
            "grounder": self.status.get("grounder", grounder), "model": self.params.get("model_path") or None,
            "field": bool(self.field), "interrupted": self.interrupted,
            "frames_in": self.frames_published,
            "frames_processed": self.outcomes["processed"],
            "frames_skipped": self.frames_published - self.outcomes["processed"],
            "frame_outcomes": self.outcomes,
            "bag_counts": counts.as_dict(),
            "malformed": counts.as_dict()["malformed"],
            "malformed_total": counts.malformed_total,
            "instructions": _per_instruction(self.applied, self.recorder.groundings),
            "instructions_not_reached": [{"id": i.id, "text": i.text, "at_s": i.at_s} for i in self.pending],
            "output_messages": dict(self.recorder.counts),
            "node_counters": self.status,
            "timing": self._timing(t_begin, t_end),
        }

    def _timing(self, t_begin: float, t_end: float) -> dict[str, Any]:
        loop_s = (t_end - self.t_loop) if self.t_loop is not None else 0.0
        proc_ms = [g["processing_ms"] for g in self.recorder.groundings]
        return {"wall_s": round(t_end - t_begin, 3),
                "setup_s": round((self.t_setup_done or t_end) - t_begin, 3),
                "frames_s": round(loop_s, 3),
                "frames_per_s": round(self.frames_published / loop_s, 3) if loop_s > 0 else None,
                "node_processing_ms": {"median": _pct(proc_ms, 50), "p95": _pct(proc_ms, 95)},
                "frame_round_trip_ms": {"median": _pct(self.round_trip_ms, 50), "p95": _pct(self.round_trip_ms, 95)}}


def _per_instruction(applied: list[dict], groundings: list[dict]) -> list[dict]:
    """Each applied instruction with the frames it was grounded in, found in, and per entity found fractions."""
    rows = []
    for a in applied:
        gs = [g for g in groundings if g["instruction_id"] == a["id"]]
        found = [any(g["found"]) for g in gs]
        phrases = gs[0]["phrases"] if gs else []
        rows.append({**a, "frames_grounded": len(gs), "frames_found": int(sum(found)),
                     "found_fraction": round(float(np.mean(found)), 4) if found else None,
                     "entities": {p: round(float(np.mean([g["found"][i] for g in gs])), 4)
                                  for i, p in enumerate(phrases)}})
    return rows


def run_bag(bag_path: str | Path, instructions: list[Instruction], out: str | Path, *, grounder: str = "find",
            model: str | None = None, device: str = "cpu", field: bool = False, storage: str = "sqlite3",
            config: BagConfig | None = None, node_params: dict[str, Any] | None = None,
            frame_timeout_s: float = 30.0, max_frames: int = 0, progress: bool = True, verbose: bool = False,
            summary_path: str | Path | None = None, domain_id: int | None = None,
            stop: threading.Event | None = None) -> dict[str, Any]:
    """Run the perception node over ``bag_path`` (see :mod:`find_ros.ros.offline`); write the output bag ``out``
    and the summary JSON; return the summary. :class:`RunError` / :class:`find_ros.sim.bag.BagError` when it
    cannot start."""
    t_begin = time.monotonic()
    out = Path(out)
    _check_args(out=out, storage=storage, frame_timeout_s=frame_timeout_s)
    summary_path = Path(summary_path) if summary_path is not None else out / "summary.json"
    run = _Feed(bag=RgbdBag(bag_path, config), stop=stop or threading.Event(), field=field,
                frame_timeout_s=frame_timeout_s, max_frames=max_frames, progress=progress)
    try:
        first = run.open_bag()
        params = _params(first, pose=bool(run.bag.pose_topic), grounder=grounder, model=model, device=device,
                         field=field, node_params=node_params)
        run.start(params=params, domain_id=domain_id, verbose=verbose)
        run.open_outputs(out=out, storage=storage)
        run.wait_ready()
        run.feed(instructions)
        run.finish()
    finally:
        run.close()
    summary = run.summary(out=out, storage=storage, grounder=grounder, t_begin=t_begin, t_end=time.monotonic())
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    summary["summary_path"] = str(summary_path)
    return summary
