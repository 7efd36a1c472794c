"""The feature field inside the perception node: fed with processed frames, published as a PointCloud2.

Owned by a node (the perception node creates it when ``field_enable`` is true):
- ``create(node, params)`` at configure: builds the :class:`~find_ros.field.FeatureField` and the lifecycle
  publisher ``find/field_cloud`` (observed voxels, xyz + rgb, world frame);
- ``activate()``: the publish timer and the ``find/field_save`` / ``find/field_clear`` Trigger services;
- ``feed(rgb, depth_m, K, T_world_cam)`` from the worker thread (frames without a camera pose are skipped);
- ``deactivate()`` / ``destroy()`` undo them.
Without pixel embeddings from the grounder the voxel embedding is the field's colour feature.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from find_ros.field import FeatureField, FieldConfig
from find_ros.ros import conversions as conv
from find_ros.ros.qos import OUTPUT_QOS

LOG = logging.getLogger(__name__)

CLOUD_TOPIC = "find/field_cloud"


class FieldBridge:
    """One feature field, its cloud publisher, publish timer and save/clear services on ``node``."""

    def __init__(self, *, node: Any, params: dict[str, Any]) -> None:
        self._node = node
        self._p = params
        self.field = FeatureField(config=FieldConfig(voxel_size=params["field_voxel_size"],
                                                     max_blocks=params["field_max_blocks"],
                                                     embedding_dim=params["field_embedding_dim"]))
        self._lock = threading.Lock()
        self._pub = node.create_lifecycle_publisher(PointCloud2, CLOUD_TOPIC, OUTPUT_QOS)
        self._timer: Any = None
        self._srvs: list[Any] = []
        self.frames = 0
        self.skipped_no_pose = 0

    @classmethod
    def create(cls, node: Any, params: dict[str, Any]) -> "FieldBridge | None":
        return cls(node=node, params=params) if params.get("field_enable") else None

    def activate(self) -> None:
        n = self._node
        self._timer = n.create_timer(self._p["field_publish_period_s"], self.publish)
        self._srvs = [n.create_service(Trigger, "find/field_save", self._srv_save),
                      n.create_service(Trigger, "find/field_clear", self._srv_clear)]

    def deactivate(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
        for s in self._srvs:
            self._node.destroy_service(s)
        self._timer, self._srvs = None, []

    def destroy(self) -> None:
        self.deactivate()
        if self._pub is not None:
            self._node.destroy_lifecycle_publisher(self._pub)
        self._pub = None

    def feed(self, rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray | None) -> None:
        if T_world_cam is None:
            self.skipped_no_pose += 1
            return
        with self._lock:
            self.field.integrate(np.asarray(depth_m, np.float32), K, T_world_cam, color=rgb)
            self.frames += 1

    def publish(self) -> None:
        if self._pub is None:
            return
        with self._lock:
            p = self.field.points()
        hdr = Header(frame_id=self._p["world_frame"], stamp=self._node.get_clock().now().to_msg())
        self._pub.publish(conv.points_to_cloud2(p["xyz"], header=hdr, rgb=p["rgb"]))

    def _srv_save(self, req, resp):
        path = self._p["field_save_path"]
        if not path:
            resp.success, resp.message = False, "field_save_path is empty: nothing saved"
            return resp
        try:
            with self._lock:
                self.field.save(path)
                n = self.field.num_voxels
        except OSError as e:
            resp.success, resp.message = False, f"save failed: {e}"
            return resp
        resp.success, resp.message = True, f"saved {n} voxels to {path}"
        return resp

    def _srv_clear(self, req, resp):
        with self._lock:
            self.field.clear()
        resp.success, resp.message = True, "field cleared"
        return resp
