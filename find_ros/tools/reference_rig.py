"""The rig ``find-ros reference-eval`` drives: an in-process perception node and a feeder node on a private domain.

The feeder publishes sim frames with their camera poses (pose first) through an in-process camera node, records the
node's ``find/grounding`` and ``find/mask`` by stamp, and calls its reference, instruction and field services. Needs
ROS 2 (rclpy and the find_ros interfaces): :mod:`find_ros.tools.reference_eval` imports this module only to run.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.logging import LoggingSeverity
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from find_ros.msg import Grounding, InterleavedInstruction
from find_ros.ros import conversions as conv
from find_ros.ros.dds import claim_domain_id
from find_ros.ros.perception_node import PerceptionNode
from find_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS
from find_ros.ros.shutdown import release_context
from find_ros.ros.sim_camera_node import RgbdPublisher
from find_ros.srv import AddReference, QueryField, RemoveReference, SetInstruction

__all__ = ["ReferenceRig"]


class ReferenceRig:
    """The perception node under evaluation (FIND grounder) and the feeder that talks to it over DDS.

    Use as a context manager: :meth:`start` brings the nodes up, leaving the ``with`` block tears everything down
    (nodes, context, domain lease, the temporary reference folder) and restores the node logger's level."""

    def __init__(self, *, frame_timeout_s: float) -> None:
        self.frame_timeout_s = frame_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="find_ros_ref_eval_")
        self._lease = claim_domain_id()
        self._ctx = rclpy.Context()
        rclpy.init(context=self._ctx, domain_id=self._lease.domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self._executor: SingleThreadedExecutor | None = SingleThreadedExecutor(context=self._ctx)
        self.node: PerceptionNode | None = None
        self._feeder = self._saved_level = self._camera = self._pose_pub = None
        self._clients: dict[str, Any] = {}
        self.groundings: dict[int, Any] = {}
        self.masks: dict[int, Any] = {}
        self._stamp_ns = 0

    def __enter__(self) -> ReferenceRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, *, field: bool, model_path: str) -> None:
        """Configure and activate the node, wire the feeder, wait until its services and subscriptions are up."""
        self._start_node(field=field, model_path=model_path)
        self._wire_feeder(field=field)
        pubs = [self._camera.color, self._camera.depth, self._camera.info, self._pose_pub]
        if not self.spin_until(lambda: all(c.service_is_ready() for c in self._clients.values())
                               and all(p.get_subscription_count() > 0 for p in pubs), 30.0):
            raise RuntimeError("the node's services and subscriptions did not come up in 30 s")
        self._stamp_ns = time.time_ns()

    def _start_node(self, *, field: bool, model_path: str) -> None:
        refs = str(Path(self._tmp.name) / "refs")
        params = [Parameter("grounder", value="find"), Parameter("reference_dir", value=refs),
                  Parameter("max_stamp_age_s", value=0.0), Parameter("publish_overlay", value=False),
                  Parameter("publish_markers", value=False), Parameter("field_enable", value=bool(field)),
                  Parameter("field_publish_period_s", value=1000.0), Parameter("status_period_s", value=1000.0)]
        if model_path:
            params.append(Parameter("model_path", value=str(model_path)))
        node = self.node = PerceptionNode(context=self._ctx, parameter_overrides=params)
        self._saved_level = node.get_logger().get_effective_level()  # logger levels are per process: restored
        node.get_logger().set_level(LoggingSeverity.ERROR)
        self._feeder = rclpy.create_node("find_ros_reference_eval", context=self._ctx)
        for n in (node, self._feeder):
            self._executor.add_node(n)
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("the perception node did not activate (its log says why)")

    def _wire_feeder(self, *, field: bool) -> None:
        feeder = self._feeder
        self._camera = RgbdPublisher(feeder, frame_id="camera_color_optical_frame", world_frame="map",
                                     depth_encoding="32FC1", publish_odom=False, publish_tf=False)
        self._pose_pub = feeder.create_publisher(PoseStamped, "camera/pose", SENSOR_QOS)
        feeder.create_subscription(Grounding, "find/grounding",
                                   lambda m: self.groundings.__setitem__(conv.stamp_to_ns(m.header.stamp), m),
                                   OUTPUT_QOS)
        feeder.create_subscription(Image, "find/mask",
                                   lambda m: self.masks.__setitem__(conv.stamp_to_ns(m.header.stamp), m), OUTPUT_QOS)
        self._clients = {"add": feeder.create_client(AddReference, "find/reference/add"),
                         "remove": feeder.create_client(RemoveReference, "find/reference/remove"),
                         "set": feeder.create_client(SetInstruction, "find/set_instruction")}
        if field:
            self._clients["query"] = feeder.create_client(QueryField, "find/field/query")
            self._clients["clear"] = feeder.create_client(Trigger, "find/field/clear")

    def close(self) -> None:
        """Restore the node logger's level, destroy the nodes, release the context, the domain and the folder."""
        if self.node is not None and self._saved_level is not None:
            self.node.get_logger().set_level(self._saved_level)
        self._executor.shutdown()
        for n in (self.node, self._feeder):
            if n is not None:
                n.destroy_node()
        # release_context collects garbage first: no reference to the destroyed nodes may be left
        self.node = self._feeder = self._executor = self._camera = self._pose_pub = None
        self._clients = {}
        release_context(self._ctx)
        self._lease.release()
        self._tmp.cleanup()

    def spin_until(self, cond: Callable[[], Any], timeout_s: float) -> bool:
        """Spin the executor until ``cond()`` holds or ``timeout_s`` passed; returns ``cond()``."""
        end = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > end:
                return bool(cond())
            self._executor.spin_once(timeout_sec=0.01)
        return True

    def call(self, name: str, req: Any) -> Any:
        """Call the service ``name`` (add, remove, set, query, clear) and wait for its answer (60 s)."""
        fut = self._clients[name].call_async(req)
        if not self.spin_until(fut.done, 60.0):
            raise RuntimeError(f"{name}: no answer in 60 s")
        return fut.result()

    def counters(self) -> dict:
        """The node's counters."""
        return self.node.counters()

    def _taken(self) -> int:
        c = self.node.counters()
        return c.get("processed", 0) + c.get("idle", 0) + c.get("rejected", 0)

    def publish(self, frame: Any, *, wait_output: bool) -> int:
        """Publish one frame (pose first), wait until the node took it; returns its stamp (ns)."""
        self._stamp_ns += 100_000_000
        stamp_ns = self._stamp_ns
        stamp = conv.stamp_from_ns(stamp_ns)
        before = self._taken()
        self._pose_pub.publish(PoseStamped(header=Header(stamp=stamp, frame_id="map"),
                                           pose=conv.matrix_to_pose(frame.T_world_cam)))
        self._camera.publish(stamp=stamp, color=frame.color, depth_m=frame.depth, K=frame.K, T_world_cam=None)
        if not self.spin_until(lambda: self._taken() > before, self.frame_timeout_s):
            raise RuntimeError("the node did not take a frame in time")
        if wait_output and not self.spin_until(lambda: stamp_ns in self.groundings and stamp_ns in self.masks,
                                               self.frame_timeout_s):
            raise RuntimeError("no grounding for a frame")
        return stamp_ns

    def output(self, stamp_ns: int) -> tuple[Any, np.ndarray]:
        """The ``find/grounding`` message and the ``find/mask`` label image published for the frame ``stamp_ns``."""
        return self.groundings[stamp_ns], conv.image_to_numpy(self.masks[stamp_ns])

    @staticmethod
    def point_request(p: Any, *, frame: str = "map", name: str = "") -> Any:
        """An ``AddReference`` request for a 3D click at ``p`` in ``frame``."""
        r = AddReference.Request(name=name, source=AddReference.Request.SOURCE_POINT)
        r.point = PointStamped()
        r.point.header.frame_id = frame
        r.point.point.x, r.point.point.y, r.point.point.z = map(float, p)
        return r

    @staticmethod
    def pixel_request(x: float, y: float, *, stamp_ns: int | None = None, name: str = "") -> Any:
        """An ``AddReference`` request for a pixel click (of the frame ``stamp_ns``; default: the newest)."""
        r = AddReference.Request(name=name, source=AddReference.Request.SOURCE_PIXEL)
        r.pixel = PointStamped()
        r.pixel.point.x, r.pixel.point.y = float(x), float(y)
        if stamp_ns is not None:
            r.pixel.header.stamp = conv.stamp_from_ns(stamp_ns)
        return r

    def set_instruction(self, text: str) -> Any:
        """``find/set_instruction`` with ``text``."""
        return self.call("set", SetInstruction.Request(instruction=InterleavedInstruction(text=text)))

    def remove(self, name: str) -> Any:
        """``find/reference/remove`` of ``name``."""
        return self.call("remove", RemoveReference.Request(name=name))

    def query_field(self, text: str) -> Any:
        """``find/field/query`` with ``text``, one goal."""
        return self.call("query", QueryField.Request(text=text, max_goals=1))

    def clear_field(self) -> None:
        """``find/field/clear``; raises when it fails."""
        r = self.call("clear", Trigger.Request())
        if not r.success:
            raise RuntimeError(f"find/field/clear: {r.message}")
