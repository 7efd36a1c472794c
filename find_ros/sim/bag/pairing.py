"""Pairing of an RGB-D bag's messages into frames, in recording order: a colour message waits ``window_s`` of log
time for its partners, then depth and camera_info within ``sync_slop_s`` of its stamp and a pose within
``pose_slop_s`` are taken; older partners are forgotten, so memory stays bounded however long the bag is.
Malformed messages and colour frames without partners are counted and logged (the first few of each kind, then
every 100th)."""
from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from find_ros.sim.bag.config import (COLOR_ENCODINGS, DEPTH_ENCODINGS, IMAGE_TYPE, TF_TYPE, BagCounts, BagFrame,
                                     MalformedMessage)
from find_ros.sim.bag.decode import (TfTree, decode_camera_info, decode_color, decode_depth, frame_name,
                                     image_array, pose_to_matrix, stamp_ns)

if TYPE_CHECKING:
    from find_ros.sim.bag.reader import RgbdBag

LOG = logging.getLogger(__name__)

__all__ = ["BagPass"]

_LOG_FIRST = 3  # malformed messages of one kind logged one by one, then every _LOG_EVERY-th
_LOG_EVERY = 100


class BagPass:
    """The state of one pass over a bag: buffers by stream, tf tree, counters."""

    def __init__(self, bag: "RgbdBag", *, log: bool = True) -> None:
        self.bag, self.cfg, self.log = bag, bag.config, log
        self.counts = BagCounts()
        self.color: collections.deque = collections.deque()  # (stamp, log, msg, msgtype)
        self.depth: collections.deque = collections.deque()  # (stamp, log, msg)
        self.info: collections.deque = collections.deque()  # (stamp, log, (K, w, h))
        self.last_info: tuple | None = None
        self.poses: collections.deque = collections.deque()  # (stamp, log, T, frame)
        self.tf = TfTree()
        self.index = 0

    # -- counting
    def malformed(self, stream: str, topic: str, log_ns: int, e: MalformedMessage) -> None:
        key = f"{stream}_{e.kind}"
        n = self.counts.malformed[key] = self.counts.malformed.get(key, 0) + 1
        if self.log and n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            more = " (further ones of this kind are counted, every 100th logged)" if n == _LOG_FIRST else ""
            LOG.warning("bag %s: %s message on %s recorded at %.3f s skipped [%s, %d so far]: %s%s",
                        self.bag.path.name, stream, topic, log_ns * 1e-9, key, n, e, more)

    def unpaired(self, kind: str, stamp: int, detail: str) -> None:
        n = self.counts.unpaired[kind] = self.counts.unpaired.get(kind, 0) + 1
        if self.log and n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            LOG.warning("bag %s: colour frame stamped %.3f skipped [%s, %d so far]: %s", self.bag.path.name,
                        stamp * 1e-9, kind, n, detail)

    # -- arrival
    def add(self, stream: str, topic: str, msgtype: str, log_ns: int, raw: bytes) -> None:
        c = self.counts.messages
        c[stream] = c.get(stream, 0) + 1
        try:
            try:
                msg = self.bag.typestore.deserialize_cdr(raw, msgtype)
            except Exception as e:  # noqa: BLE001 - any decoding failure: truncated, bad lengths, bad utf-8
                raise MalformedMessage("undecodable", f"{msgtype} does not deserialize: {type(e).__name__}: "
                                                      f"{str(e)[:120]}") from None
            if stream == "color":
                if msgtype == IMAGE_TYPE:
                    image_array(msg, COLOR_ENCODINGS, "colour image")  # header-level checks on arrival
                self.color.append((self._stamp(msg, log_ns), log_ns, msg, msgtype))
            elif stream == "depth":
                image_array(msg, DEPTH_ENCODINGS, "depth image")
                self.depth.append((self._stamp(msg, log_ns), log_ns, msg))
            elif stream == "camera_info":
                kwh = decode_camera_info(msg)
                self.info.append((self._stamp(msg, log_ns), log_ns, kwh))
                self.last_info = kwh
            elif stream == "pose":
                self._add_pose(msgtype, msg, log_ns)
            elif stream == "tf_static":
                self._add_tf(msg, static=True)
        except MalformedMessage as e:
            self.malformed(stream, topic, log_ns, e)

    @staticmethod
    def _stamp(msg: Any, log_ns: int) -> int:
        s = stamp_ns(msg.header)
        return s if s > 0 else log_ns  # an unstamped message: its recording time

    def _add_pose(self, msgtype: str, msg: Any, log_ns: int) -> None:
        if msgtype == TF_TYPE:
            self._add_tf(msg, static=False)
            return
        pose = msg.pose.pose if msgtype in ("nav_msgs/msg/Odometry",
                                            "geometry_msgs/msg/PoseWithCovarianceStamped") else msg.pose
        T = pose_to_matrix(pose.position, pose.orientation)
        self.poses.append((self._stamp(msg, log_ns), log_ns, T, str(msg.header.frame_id)))

    def _add_tf(self, msg: Any, *, static: bool) -> None:
        for tr in msg.transforms:
            T = pose_to_matrix(tr.transform.translation, tr.transform.rotation)
            self.tf.add(tr.header.frame_id, tr.child_frame_id, stamp_ns(tr.header), T, static=static)

    # -- pairing
    def ready(self, now_log: int | None) -> Iterator[BagFrame]:
        """Frames of the colour messages whose wait is over at log time ``now_log`` (None: the bag ended)."""
        window = int(self.cfg.window_s * 1e9)
        while self.color and (now_log is None or self.color[0][1] + window < now_log):
            frame = self._pair(*self.color.popleft())
            if frame is not None:
                yield frame
        # forget partners too old to pair with any colour message still to come
        horizon = (self.color[0][1] if self.color else (now_log or 0)) - 2 * window
        for dq in (self.depth, self.info, self.poses):
            while dq and dq[0][1] < horizon:
                dq.popleft()
        self.tf.prune(horizon - int(self.cfg.pose_slop_s * 1e9) - 2 * window)

    @staticmethod
    def _nearest(dq: collections.deque, stamp: int, slop_ns: int) -> Any:
        best = min(dq, key=lambda e: abs(e[0] - stamp), default=None)
        return best if best is not None and abs(best[0] - stamp) <= slop_ns else None

    def _pair(self, stamp: int, log_ns: int, msg: Any, msgtype: str) -> BagFrame | None:
        cfg, topic = self.cfg, self.bag.config.color_topic
        slop = int(cfg.sync_slop_s * 1e9)
        d = self._nearest(self.depth, stamp, slop)
        if d is None:
            self.unpaired("no_depth", stamp, f"no usable depth within sync_slop_s={cfg.sync_slop_s} of its stamp")
            return None
        info = self._nearest(self.info, stamp, slop)
        kwh = info[2] if info is not None else self.last_info
        if kwh is None:
            self.unpaired("no_camera_info", stamp, "no usable camera_info recorded before it")
            return None
        try:
            rgb = decode_color(msg, msgtype)
        except MalformedMessage as e:
            self.malformed("color", topic, log_ns, e)
            return None
        try:
            depth = decode_depth(d[2], depth_scale=cfg.depth_scale)
        except MalformedMessage as e:  # pragma: no cover - checked on arrival
            self.malformed("depth", cfg.depth_topic, d[1], e)
            return None
        K, w, h = kwh
        if depth.shape != rgb.shape[:2] or (w, h) != (rgb.shape[1], rgb.shape[0]):
            self.malformed("frame", topic, log_ns, MalformedMessage(
                "size_mismatch", f"colour {rgb.shape[1]}x{rgb.shape[0]}, depth {depth.shape[1]}x{depth.shape[0]}, "
                                 f"camera_info {w}x{h} (depth must be registered to colour)"))
            return None
        T, world = self._pose(stamp, str(msg.header.frame_id))
        if T is None and self.bag.pose_topic:
            self.counts.no_pose += 1
        frame = BagFrame(color=rgb, depth=depth, depth_encoding=str(d[2].encoding), K=K, T_world_cam=T,
                         stamp_ns=stamp, log_time_ns=log_ns, frame_id=str(msg.header.frame_id),
                         world_frame=world, index=self.index)
        self.index += 1
        self.counts.frames += 1
        return frame

    def _pose(self, stamp: int, frame_id: str) -> tuple[np.ndarray | None, str]:
        bag, slop = self.bag, int(self.cfg.pose_slop_s * 1e9)
        if not bag.pose_topic:
            return None, ""
        if bag.pose_type == TF_TYPE:
            cam = self.cfg.tf_camera_frame or frame_id
            T = self.tf.lookup(self.cfg.tf_world_frame, cam, stamp, slop)
            return (T, frame_name(self.cfg.tf_world_frame)) if T is not None else (None, "")
        p = self._nearest(self.poses, stamp, slop)
        return (p[2], p[3]) if p is not None else (None, "")
