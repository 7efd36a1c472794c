"""The perception node: RGB-D frames + an instruction in, grounding results, masks and target poses out.

A ``rclpy`` lifecycle node (``python -m find_ros.ros.perception_node`` or the ``perception_node`` executable):

- configure: declare and validate the parameters (:mod:`find_ros.ros.params`), create the publishers, the camera
  side (:mod:`find_ros.ros.camera_inputs`), the instruction side (:mod:`find_ros.ros.instruction_input`), the
  stored references (:mod:`find_ros.ros.reference_bridge`) and, with ``field_enable``, the feature field
  (:mod:`find_ros.ros.field_bridge`);
- activate: build the grounder (``find`` or the ``hsv-baseline`` colour baseline) and the video pipeline
  (:mod:`find_ros.ros.grounder_factory`), subscribe, offer the services, start the worker;
- deactivate: stop the worker, drop subscriptions and services, free the model; cleanup / shutdown: the publishers.

With ``autostart:=true`` it configures and activates itself; ``executor``: what its process spins (see ``shutdown``).

Frame path: the camera side checks each message on arrival and matches colour, depth and camera_info by stamp; the
matched set goes into a one-slot mailbox (:class:`find_ros.ros.latest_worker.LatestWorker`) read by a single worker
thread, so the newest frame wins and inference never queues behind the camera (a set replaced before the worker took
it counts as dropped). The worker checks the set (:mod:`find_ros.ros.frame_checks`), looks the camera pose up by
stamp, grounds it and publishes, with the colour image's header, the grounding, target poses and mask first
(:func:`find_ros.ros.grounding_msgs.frame_messages`; ``processing_ms`` = frame receipt -> this publish), then the
overlay and markers when enabled and subscribed (:func:`~find_ros.ros.grounding_msgs.display_messages`), then the
field hand-off. Bad input is counted per kind and logged once per kind per ``log_throttle_s``; the frame is dropped
and the node keeps running (no callback raises). Counters and per-stage medians (``stage_ms``,
:class:`find_ros.ros.stage_timer.StageTimer`) are published as JSON on ``find/status``.
"""
from __future__ import annotations

import gc
import json
import sys
import threading
import time
from typing import Any

from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from find_ros.instruction import InstructionError
from find_ros.msg import Grounding
from find_ros.ros import grounding_msgs as build
from find_ros.ros.camera_inputs import TF_FALLBACK_NEEDS, CameraInputs, tf_available
from find_ros.ros.instruction_input import InstructionInput
from find_ros.ros.counters import Counters, NodeCounters
from find_ros.ros.grounder_factory import build_grounder, build_pipeline
from find_ros.ros import frame_checks as checks
from find_ros.ros.latest_worker import LatestWorker
from find_ros.ros.params import (NODE_NAME, PARAMS_BY_NAME, ParameterError, apply_parameter_changes, declare_one,
                                 declare_parameters)
from find_ros.ros.qos import OUTPUT_QOS
from find_ros.ros.reference_bridge import ReferenceBridge
from find_ros.ros.allocator import keep_freed_memory, reserve_heap
from find_ros.ros.shutdown import entry_point, run_lifecycle_node
from find_ros.ros.stage_timer import StageTimer

__all__ = ["PerceptionNode", "main", "Counters"]

class PerceptionNode(LifecycleNode):
    """Lifecycle node grounding interleaved instructions in an RGB-D stream (see the module docstring)."""

    def __init__(self, *, node_name: str = NODE_NAME, freeze_gc: bool = False, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._freeze_gc = bool(freeze_gc)  # the executable's: gc.freeze() after each warm-up (see _warm_up)
        self._p: dict[str, Any] = {}
        self._pubs: dict[str, Any] = {}
        self._tmrs: list[Any] = []
        self._inputs: CameraInputs | None = None  # camera subscriptions, arrival checks, matching, camera poses
        self._instructions: InstructionInput | None = None  # instruction topics and services
        self._grounder: Any = None
        self._model = ""  # what the grounder loaded: the FIND model directory, or "hsv-baseline"
        self._pipeline: Any = None
        self._instruction: Any = None
        self._pipeline_lock = threading.Lock()
        self._worker = LatestWorker(self._work, name="find_ros-worker", on_start=self._warm_up)  # newest set wins
        self._counters = NodeCounters()  # find/status counters and the per-kind warning throttle
        self._stages = StageTimer(window=200)  # find/status stage_ms: rolling medians of the frame path's stages
        self._field: Any = None  # field hook: FieldBridge when field_enable
        self._refs: ReferenceBridge | None = None  # stored references: clicks, find/reference/* services
        self._resolved: Any = None  # the instruction in force with its stored-reference names (ResolvedInstruction)
        for name in ("autostart", "executor"):  # read before configure (run_lifecycle_node); may raise: last
            declare_one(self, PARAMS_BY_NAME[name])
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ logging and counting
    def _warn(self, kind: str, message: str, *, level: str = "warning") -> None:
        """Log ``message`` at most once per ``log_throttle_s`` for this ``kind``; always count it."""
        n = self._counters.problem(kind, period_s=float(self._p.get("log_throttle_s", 5.0)))
        if n is None:
            return
        text = f"[{kind}] {message} (seen {n}x)"
        logger = self.get_logger()  # rclpy wants one severity per call site: one line per level
        if level == "error":
            logger.error(text)
        elif level == "info":
            logger.info(text)
        else:
            logger.warning(text)

    def _count(self, name: str, k: int = 1) -> None:
        self._counters.count(name, k)

    def counters(self) -> dict:
        """A snapshot of :class:`Counters` as a dict."""
        d = self._counters.snapshot()
        d["grounder"] = getattr(self._grounder, "name", self._p.get("grounder", ""))
        d["model"] = self._model  # the FIND model directory loaded at activation, or "hsv-baseline"
        d["instruction_id"] = getattr(self._instruction, "id", "")
        # words of the instruction in force that the model does not know (FIND grounder; logged when set)
        d["unknown_words"] = list(getattr(self._grounder, "unknown_words", ()))
        d["stage_ms"] = self._stages.medians()  # per-stage medians over the last 200 frames (see _process)
        fb = self._field
        if fb is not None:  # field hook
            d.update(fb.counters())
        if self._refs is not None:
            d.update(self._refs.counters())
        return d

    def _on_set_parameters(self, params) -> Any:
        reason = apply_parameter_changes(params, self._p, self._pipeline)  # live ones apply at once
        return SetParametersResult(successful=reason is None, reason=reason or "")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._p = declare_parameters(self)
        except ParameterError as e:
            self.get_logger().error(f"configure failed: invalid parameter(s): {e}")
            return TransitionCallbackReturn.FAILURE
        if self._p["camera_pose_source"] == "tf" and not tf_available():  # tf2_ros, or tf2_msgs for the fallback
            self.get_logger().error(f"configure failed: {TF_FALLBACK_NEEDS}")
            return TransitionCallbackReturn.FAILURE
        mk = self.create_lifecycle_publisher
        self._pubs = {
            "grounding": mk(Grounding, "find/grounding", OUTPUT_QOS),
            "mask": mk(Image, "find/mask", OUTPUT_QOS),
            "overlay": mk(Image, "find/overlay", OUTPUT_QOS),
            "target_pose": mk(PoseStamped, "find/target_pose", OUTPUT_QOS),
            "target_pose_world": mk(PoseStamped, "find/target_pose_world", OUTPUT_QOS),
            "markers": mk(MarkerArray, "find/markers", OUTPUT_QOS),
            "status": mk(String, "find/status", OUTPUT_QOS),
        }
        self._refs = ReferenceBridge(node=self, params=self._p)
        self._inputs = CameraInputs(node=self, params=self._p, count=self._count, warn=self._warn,
                                    on_frame_set=self._on_frame_set)
        self._instructions = InstructionInput(
            node=self, params=self._p, count=self._count, warn=self._warn, refs=lambda: self._refs,
            apply=self._apply_instruction, clear=self._clear_instruction,
            current_id=lambda: getattr(self._instruction, "id", ""))
        # field hook: the 3D feature field (find_ros/ros/field_bridge.py), only when field_enable
        try:
            from find_ros.ros.field_bridge import FieldBridge

            self._field = FieldBridge.create(self, self._p, instruction=lambda: self._instruction,
                                             resolve=self._refs.resolve)
        except Exception as e:
            self.get_logger().error(f"configure failed: feature field: {e}")
            self._destroy_publishers()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(
            "configured: grounder=%s score_threshold=%.2f camera_pose_source=%s world_frame=%s "
            "sensor_reliability=%s"
            % (self._p["grounder"], self._p["score_threshold"], self._p["camera_pose_source"],
               self._p["world_frame"], self._p["sensor_reliability"]))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._model = ""
            self._grounder, self._model = build_grounder(self._p)
            self._pipeline = build_pipeline(self._grounder, self._p)
            if callable(getattr(self._grounder, "warm_up", None)):  # this thread embeds instructions (cold: ~5x)
                self._grounder.warm_up(frames=False)
        except Exception as e:  # a missing/corrupt model dir, an unavailable grounder
            self.get_logger().error(f"activate failed: {e}")
            self._grounder = self._pipeline = None
            return TransitionCallbackReturn.FAILURE
        self._counters.reset()
        self._stages.reset()
        self._instruction = self._resolved = None
        try:  # stored references: loaded from reference_dir; clicks segment with the grounder's proposals
            self._refs.activate(segment=getattr(self._grounder, "segment_proposals", None),
                                model_lock=self._pipeline_lock)
        except Exception as e:
            self.get_logger().error(f"activate failed: stored references: {e}")
            self._grounder = self._pipeline = None
            return TransitionCallbackReturn.FAILURE
        self._inputs.activate()  # camera, depth, camera_info and camera pose (find_ros.ros.camera_inputs)
        self._instructions.activate()  # find/instruction(_text), find/set_instruction, find/clear_instruction
        self._worker.start()
        self._tmrs.append(self.create_timer(self._p["status_period_s"], self._publish_status))
        if self._field is not None:  # field hook: the field's embeddings come from the grounder (D checked)
            try:  # field hook
                self._field.activate(self._grounder)  # field hook
            except Exception as e:  # field hook
                self.get_logger().error(f"activate failed: feature field: {e}")  # field hook
                self._teardown_active()  # field hook
                return TransitionCallbackReturn.FAILURE  # field hook
        ret = super().on_activate(state)  # enables the lifecycle publishers
        self._refs.publish()  # the latched reference list and markers
        kind = (f"the FIND model from {self._model}" if self._p["grounder"] == "find"
                else "the HSV colour BASELINE (not FIND)")
        self.get_logger().info(f"active: grounding with {kind} ({self._grounder.name}); "
                               "publish an instruction on find/instruction_text or find/instruction")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active()
        self.get_logger().info(f"deactivated; counters: {json.dumps(self.counters())}")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active()
        self._destroy_publishers()
        return TransitionCallbackReturn.SUCCESS

    on_shutdown = on_error = on_cleanup  # from any state: free everything

    # ------------------------------------------------------------------ building
    def _teardown_active(self) -> None:
        self._worker.stop()
        if self._field is not None:  # field hook
            self._field.deactivate()
        if self._refs is not None:
            self._refs.deactivate()
        for t in self._tmrs:
            self.destroy_timer(t)
        self._tmrs = []
        for part in (self._inputs, self._instructions):
            if part is not None:
                part.deactivate()
        with self._pipeline_lock:
            had_model = self._grounder is not None
            self._pipeline = self._grounder = None
            self._instruction = self._resolved = None
        if had_model and "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def destroy_node(self) -> None:
        """Free the model and the field, join the worker threads, then destroy the node (any lifecycle state)."""
        self._teardown_active()
        self._destroy_publishers()
        super().destroy_node()

    def _destroy_publishers(self) -> None:
        if self._field is not None:  # field hook
            self._field.destroy()
            self._field = None
        if self._refs is not None:
            self._refs.destroy()
            self._refs = None
        for p in self._pubs.values():
            self.destroy_lifecycle_publisher(p)
        self._pubs = {}

    # ------------------------------------------------------------------ inputs
    def _on_frame_set(self, color: Image, depth: Image, info: CameraInfo) -> None:
        """A matched colour + depth + camera_info set (CameraInputs): into the worker's one-slot mailbox."""
        self._count("frame_sets")
        if self._worker.put((color, depth, info, time.monotonic())):  # replaced a set the worker had not taken
            self._count("dropped")

    # ------------------------------------------------------------------ instructions
    def _apply_instruction(self, instruction: Any, resolved: Any) -> None:
        """Embed an instruction (InstructionInput) outside the pipeline lock, then make it the one in force."""
        pipeline = self._pipeline  # the worker keeps grounding frames meanwhile (a reference: 17-30 ms to embed)
        prepared = None if pipeline is None else pipeline.prepare_instruction(instruction)
        with self._pipeline_lock:
            if pipeline is None or self._pipeline is not pipeline:  # not active, or deactivated meanwhile
                raise InstructionError("node is not active")
            self._pipeline.set_instruction(instruction, prepared=prepared)
            self._instruction, self._resolved = instruction, resolved

    def _clear_instruction(self) -> None:
        with self._pipeline_lock:
            if self._pipeline is not None:
                self._pipeline.clear_instruction()
            self._instruction = self._resolved = None

    # ------------------------------------------------------------------ worker
    def _work(self, item: tuple) -> None:
        """The worker thread's handler of one frame set: a bad frame is counted and logged, never raised."""
        try:
            self._process(*item)
        except checks.FrameRejected as e:
            self._count("rejected")
            self._warn(e.kind, str(e))
        except Exception as e:  # never let one frame kill the worker
            self._count("rejected")
            self._warn("processing_error", f"frame dropped: {type(e).__name__}: {e}", level="error")

    def _warm_up(self) -> None:
        """In the worker thread at activation: the model's and the pipeline's frame path once on blank frames, then
        the arena grown to the frames' high-water mark (allocator.reserve_heap): first frames cost 2-5x otherwise."""
        with self._pipeline_lock:
            pipeline = self._pipeline
            if pipeline is None:
                return
            if callable(getattr(self._grounder, "warm_up", None)):
                self._grounder.warm_up()
            pipeline.warm_up()
        reserve_heap()  # (a no-op unless main() kept freed memory in this process)
        if self._freeze_gc:  # objects alive now leave the full collections (50-130 ms with the GIL held): unfrozen
            gc.freeze()  # by release_context

    def _process(self, color: Image, depth: Image, info: CameraInfo, t_receipt: float) -> None:
        st = self._stages  # per-stage wall time (find/status stage_ms)
        t_start = time.perf_counter()
        st.record("queue_wait", (time.monotonic() - t_receipt) * 1e3)
        if self._inputs.is_stale(color):  # it may have aged while it waited for the worker
            return
        with st.stage("convert_in"):
            rgb, depth_m, K = checks.check_frame(color, depth, info, depth_scale=self._p["depth_scale"])
        with st.stage("pose_lookup"):
            T_world_cam = self._inputs.lookup_pose(color)
        refs = self._refs
        if refs is not None:  # clicks are resolved in recent frames
            with st.stage("ref_remember"):
                refs.remember(color.header, rgb, depth_m, K, T_world_cam)
        with self._pipeline_lock:
            if self._pipeline is None:
                return
            instruction, resolved = self._instruction, self._resolved
            if instruction is None:
                if self._field is not None:  # field hook: no instruction: the field thread embeds the frame
                    self._field.feed(rgb, depth_m, K, T_world_cam)  # field hook
                if refs is not None and refs.flashing() and self._wanted("overlay"):  # show a new reference
                    self._pubs["overlay"].publish(build.overlay_msg(refs.decorate(rgb.copy()), color.header))
                self._count("idle")
                self._warn("no_instruction", "no instruction yet: publish text on find/instruction_text "
                                             "(std_msgs/String) or an InterleavedInstruction on find/instruction",
                           level="info")
                return
            result = self._pipeline.process(rgb, depth_m, K, T_world_cam)
            st.record_many(getattr(self._grounder, "last_timings", None) or
                           {"ground": self._pipeline.last_timings.get("ground", 0.0)})
            st.record_many({k: v for k, v in self._pipeline.last_timings.items() if k != "ground"})  # pose, tracking
        grounding = self._publish(color.header, instruction, result, t_receipt, resolved)
        self._count("processed")
        # after the grounding is out: the display outputs, the field hand-off, the references' last positions
        self._publish_display(color.header, grounding, result, rgb)
        if self._field is not None:  # field hook: fuse with the grounder's own pixel embeddings (its thread)
            with st.stage("field_handoff"):
                self._field.feed(rgb, depth_m, K, T_world_cam, result.pixel_embeddings)  # field hook
        if resolved is not None and resolved.names and refs is not None:  # last known reference positions
            with st.stage("ref_observe"):
                refs.observe(resolved, grounding.entities)
        st.record("total", (time.perf_counter() - t_start) * 1e3)

    # ------------------------------------------------------------------ outputs
    def _publish(self, header, instruction, result, t_receipt: float, resolved=None):
        """The grounding, the target poses and the mask; ``processing_ms`` = frame receipt -> this publish."""
        st = self._stages
        with st.stage("build_msgs"):
            out, msgs = build.frame_messages(header, instruction, result, resolved=resolved,
                                             grounder=str(getattr(self._grounder, "name", self._p["grounder"])),
                                             world_frame=self._p["world_frame"])
        out.processing_ms = float((time.monotonic() - t_receipt) * 1e3)  # frame receipt -> publish
        with st.stage("publish"):
            for name, msg in [("grounding", out), *msgs]:
                self._pubs[name].publish(msg)
        return out

    def _publish_display(self, header, grounding, result, rgb) -> None:
        """The overlay and the markers, each only when enabled and subscribed (after the grounding is out)."""
        refs = self._refs
        with self._stages.stage("display"):
            overlay = result.overlay(rgb) if self._wanted("overlay") else None
            if overlay is not None and refs is not None and refs.flashing():
                refs.decorate(overlay)
            for name, msg in build.display_messages(header, grounding, overlay=overlay,
                                                    markers=self._wanted("markers")):
                self._pubs[name].publish(msg)

    def _wanted(self, output: str) -> bool:
        """Build the overlay / markers only when enabled (publish_overlay, publish_markers) and subscribed."""
        pub = self._pubs.get(output)
        return bool(self._p[f"publish_{output}"]) and pub is not None and pub.get_subscription_count() > 0

    def _publish_status(self) -> None:
        if "status" in self._pubs:
            self._pubs["status"].publish(String(data=json.dumps(self.counters())))


def main(argv: list[str] | None = None) -> int:
    """Run the node (``--ros-args`` passed through; freed frame buffers stay in the process: allocator module); any
    SIGINT / SIGTERM stops the spin loop, the node frees its model and field and joins its threads, exit 0."""
    keep_freed_memory()
    return run_lifecycle_node(lambda: PerceptionNode(freeze_gc=True), argv)


run = entry_point(main)  # console script (setup.py) and python -m

if __name__ == "__main__":
    run()
