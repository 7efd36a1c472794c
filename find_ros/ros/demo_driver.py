"""The ``find-ros demo`` driver node (:mod:`find_ros.ros.demo`): sim ground truth in, instructions out, results
scored against the ground truth by stamp (``score``), or, for ``find-ros bench``, only timed: the driver then takes
the 1.2 MB ground-truth instance image of every frame only while it cuts a reference crop, so that what runs beside
the node being measured is a camera and a consumer (simulator ground truth is no part of a robot's load)."""
from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from find_ros.stamps import stamp_to_ns

__all__ = ["DemoDriver"]


class DemoDriver:
    """In-process rclpy node: ground truth in, instructions out, results collected."""

    def __init__(self, *, context: Any, out: Path, instruction_period_s: float, score: bool = True) -> None:
        from find_ros.msg import Grounding, InterleavedInstruction
        from find_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS
        from sensor_msgs.msg import CameraInfo, Image
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
        """camera_info messages received (the camera runs)."""
        self.score = bool(score)
        n = self.node
        n.create_subscription(String, "camera/gt/objects", self._on_objects, OUTPUT_QOS)
        n.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, SENSOR_QOS)
        self._gt_sub: Any = None  # always when scoring, else only while a reference crop is wanted
        if self.score:
            self._subscribe_gt()
        n.create_subscription(Grounding, "find/grounding", self._on_grounding, OUTPUT_QOS)
        n.create_subscription(Image, "find/mask", self._on_mask, OUTPUT_QOS)
        n.create_subscription(String, "find/status", self._on_status, OUTPUT_QOS)
        self._color_sub: Any = None  # only while a reference crop is wanted (watch_crop_sources): the driver
        # then copies no colour frames beside the node being measured
        self._overlay_sub: Any = None  # only while a snapshot is taken (watch_overlay): the node builds the overlay
        # for subscribers only, and a headless consumer is what the e2e benchmark measures
        self.pub = n.create_publisher(InterleavedInstruction, "find/instruction", OUTPUT_QOS)

    # -- callbacks (thin: store, then match by stamp)
    def _on_objects(self, msg) -> None:
        self.objects = json.loads(msg.data)

    def _on_info(self, msg) -> None:
        self.camera_frames += 1

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)

    def _on_color(self, msg) -> None:
        from find_ros.ros.conversions import image_to_rgb

        self._put(self.color, stamp_to_ns(msg.header.stamp), image_to_rgb(msg).copy(), keep=4)

    def _on_gt_instance(self, msg) -> None:
        from find_ros.ros.conversions import image_to_numpy

        self._put(self.gt_instance, stamp_to_ns(msg.header.stamp), image_to_numpy(msg), keep=60)  # (a view)
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
        if not self.score:
            return
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

    def watch_overlay(self, on: bool) -> None:
        """Subscribe to ``find/overlay`` (``on``; :attr:`overlay_last` is reset and then holds the newest) or drop
        the subscription. The demo watches it only for the snapshot at the end of each instruction."""
        from find_ros.ros.qos import OUTPUT_QOS
        from sensor_msgs.msg import Image

        if on and self._overlay_sub is None:
            self.overlay_last = None
            self._overlay_sub = self.node.create_subscription(Image, "find/overlay", self._on_overlay, OUTPUT_QOS)
        elif not on and self._overlay_sub is not None:
            self.node.destroy_subscription(self._overlay_sub)
            self._overlay_sub = None

    def _subscribe_gt(self) -> None:
        from find_ros.ros.qos import SENSOR_QOS
        from sensor_msgs.msg import Image

        self._gt_sub = self.node.create_subscription(Image, "camera/gt/instance", self._on_gt_instance, SENSOR_QOS)

    def watch_crop_sources(self, on: bool) -> None:
        """Subscribe to what reference crops are cut from (``on``): the colour frames, and the ground-truth instance
        images when not scoring (scoring keeps them throughout); or drop those subscriptions and their frames."""
        from find_ros.ros.qos import SENSOR_QOS
        from sensor_msgs.msg import Image

        n = self.node
        if on and self._color_sub is None:
            self._color_sub = n.create_subscription(Image, "camera/color/image_raw", self._on_color, SENSOR_QOS)
            if self._gt_sub is None:
                self._subscribe_gt()
        elif not on and self._color_sub is not None:
            n.destroy_subscription(self._color_sub)
            self._color_sub = None
            self.color.clear()
            if not self.score and self._gt_sub is not None:
                n.destroy_subscription(self._gt_sub)
                self._gt_sub = None
                self.gt_instance.clear()

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
