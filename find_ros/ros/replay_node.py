"""Replay a recording as a live camera, on the sim camera's topics: a TUM RGB-D or 7-Scenes folder, or a rosbag2.

Publishes ``camera/color/image_raw`` (rgb8), ``camera/depth/image_raw`` (16UC1 mm or 32FC1 m),
``camera/color/camera_info``, ``camera/pose`` (when the recording has a pose for the frame) and ``camera/odom``
(with ``publish_odom``), all of one frame with one stamp. No ground truth topics.

Folders (``format: tum | 7scenes``) play at ``rate_hz``, stamped with the clock at publish time (the recorded
stamp is logged, not published).

A rosbag2 (``format: rosbag2``; sqlite3 or mcap storage; ``path`` is the bag folder or its .db3 / .mcap file) is
read with the pure-Python ``rosbags`` package (:mod:`find_ros.sim.bag`, no ``ros2 bag`` needed): colour (Image or
CompressedImage), depth (16UC1 / mono16 / 32FC1), camera_info and the camera pose (PoseStamped, Odometry or tf)
from the topics named by the ``bag.*`` parameters, paired by stamp. Malformed messages are counted and skipped
with a log line, never fatal. Frames play at their recorded timing scaled by ``rate`` (as ``ros2 bag play
--rate``); ``loop`` starts again after the last frame. Frame ids are the recorded ones (``frame_id`` /
``world_frame`` stand in for empty ones).

``stamps`` (rosbag2): ``now`` (default) restamps every frame with the node clock when it is published, like the
folder replay and a live camera, so a perception node with its default ``max_stamp_age_s`` (1 s) takes the frames:
recorded stamps are minutes to years old and every frame would be dropped as stale. ``recorded`` keeps the header
stamps exactly as recorded (outputs can then be matched with the bag); consumers must then run on the bag's time:
``publish_clock:=true`` here and ``use_sim_time:=true`` there (as with ``ros2 bag play --clock``), or
``max_stamp_age_s: 0`` on the perception node. With ``loop`` the recorded stamps repeat on every pass.

Camera publishers are keep-last 1, volatile; their reliability (``qos_reliability``) follows the QoS the bag's
colour topic was recorded with (``auto``: best effort when the recording publisher was, else reliable) or is set.
The perception node subscribes best effort, which receives both.

    python -m find_ros.ros.replay_node --ros-args -p format:=tum -p path:=../shared/data/tum_fr3_teddy -p loop:=true
    python -m find_ros.ros.replay_node --ros-args -p format:=rosbag2 -p path:=my_bag -p rate:=0.5 \\
        -p bag.color_topic:=/camera/color/image_raw -p bag.pose_topic:=/tf -p bag.tf_world_frame:=odom
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from find_ros.ros.conversions import stamp_from_ns as stamp_msg  # re-exported: Time of ns nanoseconds
from find_ros.ros.shutdown import entry_point
from find_ros.ros.param_spec import ParamSpec
from find_ros.ros.sim_camera_node import (DEPTH_ENCODINGS, FrameTimer, ParameterValueError, RgbdPublisher, declare,
                                          run_source_node)

try:
    from find_ros.sim.datasets import open_dataset
except ImportError as e:  # a partial checkout: report it as a missing module (pytest.importorskip skips on that)
    raise ModuleNotFoundError(f"find_ros.sim.datasets is not available: {e}", name="find_ros.sim.datasets") from e
from find_ros.sim.bag import BagConfig, BagConfigError, BagError, BagFrame, RgbdBag, config_fields

__all__ = ["PARAMS", "PARAMETERS", "BAG_PREFIX", "ReplayNode", "BagPlayer", "bag_config", "set_publisher_reliability",
           "stamp_msg", "main"]

FORMATS = ("tum", "7scenes", "rosbag2")
STAMPS = ("now", "recorded")
RELIABILITIES = ("auto", "reliable", "best_effort")
BAG_PREFIX = "bag."
"""Prefix of the parameters derived from :class:`find_ros.sim.bag.BagConfig` (``bag.color_topic``, ...)."""

#: The node's parameters, declared once with descriptors and validated by
#: :func:`find_ros.ros.param_spec.validate_value`;
#: the ``bag.*`` rows come from :class:`find_ros.sim.bag.BagConfig`'s fields (which check their ranges).
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("format", str, "tum", "recording format: tum, 7scenes (folders) or rosbag2", choices=FORMATS,
              want="one of " + ", ".join(FORMATS)),
    ParamSpec("path", str, "", "dataset folder, or rosbag2 folder (or its .db3 / .mcap file)"),
    ParamSpec("rate_hz", float, 30.0, "folders: frames per second (> 0)", check=lambda v: v > 0, want="> 0"),
    ParamSpec("rate", float, 1.0,
              "rosbag2: playback speed as a factor of the recorded rate, like ros2 bag play --rate (> 0)",
              check=lambda v: v > 0, want="> 0"),
    ParamSpec("loop", bool, False, "start again after the last frame (otherwise the node exits)"),
    ParamSpec("depth_encoding", str, "16UC1", "16UC1 (millimetres) or 32FC1 (metres)", choices=DEPTH_ENCODINGS,
              want="16UC1 or 32FC1"),
    ParamSpec("frame_id", str, "camera_color_optical_frame",
              "optical frame of the images and camera_info (rosbag2: only where the recorded frame_id is empty)"),
    ParamSpec("world_frame", str, "map",
              "frame of camera/pose and camera/odom (rosbag2: only where the recorded one is empty)"),
    ParamSpec("publish_odom", bool, False, "publish camera/odom (nav_msgs/Odometry)"),
    ParamSpec("stamps", str, "now",
              "rosbag2: 'now' restamps each frame with the node clock (a live perception node takes it); "
              "'recorded' keeps the bag's header stamps (consumers need use_sim_time + publish_clock, or "
              "max_stamp_age_s 0)", choices=STAMPS, want="one of " + ", ".join(STAMPS)),
    ParamSpec("publish_clock", bool, False,
              "rosbag2 with stamps 'recorded': publish /clock (rosgraph_msgs/Clock) with each frame's recorded "
              "stamp, for consumers with use_sim_time:=true"),
    ParamSpec("delay_s", float, 0.0,
              "rosbag2: seconds to wait before the first frame, like ros2 bag play --delay (>= 0)",
              range=(0.0, None), want=">= 0"),
    ParamSpec("qos_reliability", str, "auto",
              "rosbag2: reliability of the camera publishers: auto (as the bag's colour topic was recorded; "
              "reliable when unknown), reliable or best_effort", choices=RELIABILITIES,
              want="one of " + ", ".join(RELIABILITIES)),
    *(ParamSpec(BAG_PREFIX + name, type(default), default, desc) for name, default, desc in config_fields()),
)

#: name -> (default, description) of :data:`PARAMS` (a read-only view for launch files and tests).
PARAMETERS: dict[str, tuple[Any, str]] = {s.name: (s.default, s.description) for s in PARAMS}


def bag_config(p: dict[str, Any]) -> BagConfig:
    """The :class:`BagConfig` of the ``bag.*`` parameter values in ``p``."""
    kw = {k[len(BAG_PREFIX):]: v for k, v in p.items() if k.startswith(BAG_PREFIX)}
    try:
        return BagConfig(**kw)
    except BagConfigError as e:
        raise ParameterValueError(f"parameter {BAG_PREFIX}{e}") from None


def set_publisher_reliability(node: Node, holder: Any, attrs: tuple[str, ...], reliability: str) -> None:
    """Re-create the publishers ``holder.<attr>`` of ``node`` with ``reliability`` (``reliable`` /
    ``best_effort``), keeping their topic, type and other QoS policies. (:class:`RgbdPublisher` creates its
    camera publishers reliable.)"""
    policy = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}[reliability]
    for attr in attrs:
        pub = getattr(holder, attr, None)
        if pub is None or pub.qos_profile.reliability == policy:
            continue
        q = pub.qos_profile
        qos = QoSProfile(history=q.history, depth=q.depth, reliability=policy, durability=q.durability)
        msg_type, topic = pub.msg_type, pub.topic_name
        node.destroy_publisher(pub)
        setattr(holder, attr, node.create_publisher(msg_type, topic, qos))


class BagPlayer:
    """Plays the frames of an :class:`RgbdBag` on a worker thread at their recorded timing / ``rate``.

    ``publish(frame)`` is called for each frame when it is due (at once when playback is late: ``late`` counts
    those). ``done`` is set after the last frame (without ``loop``) or on a failure; ``stop()`` ends it early.
    """

    def __init__(self, bag: RgbdBag, *, rate: float, loop: bool, publish, log, first: tuple[BagFrame, Iterator]
                 | None = None, delay_s: float = 0.0) -> None:
        self.bag, self.rate, self.loop, self._publish, self._log = bag, float(rate), bool(loop), publish, log
        self.delay_s = float(delay_s)
        self.published = 0
        self.passes = 0
        self.late = 0
        self.skipped = 0  # interface of FrameTimer (spin_until_done): never skips
        self.done = threading.Event()
        self._stop = threading.Event()
        self._first = first
        self._thread = threading.Thread(target=self._run, name="bag_player", daemon=True)
        self._thread.start()

    def _frames(self) -> Iterator[BagFrame]:
        if self._first is not None:
            frame, rest = self._first
            self._first = None
            yield frame
            yield from rest
        else:
            yield from self.bag.frames(log=self.passes == 0)  # malformed messages are logged on the first pass

    def _run(self) -> None:
        try:
            if self.delay_s > 0 and self._stop.wait(self.delay_s):
                return
            while not self._stop.is_set():
                t0 = log0 = None
                n = 0
                for frame in self._frames():
                    if t0 is None:
                        t0, log0 = time.monotonic(), frame.log_time_ns
                    wait = t0 + (frame.log_time_ns - log0) * 1e-9 / self.rate - time.monotonic()
                    if wait > 0:
                        if self._stop.wait(wait):
                            return
                    elif wait < -0.05:
                        self.late += 1
                    if self._stop.is_set():
                        return
                    self._publish(frame)
                    self.published += 1
                    n += 1
                self.passes += 1
                c = self.bag.counts
                self._log(f"played pass {self.passes} of {self.bag.path.name}: {n} frames of "
                          f"{c.messages.get('color', 0)} colour messages; malformed skipped: "
                          f"{c.malformed or 'none'}; unpaired: {c.unpaired or 'none'}; late: {self.late}")
                if not self.loop or n == 0:
                    return
                if self._stop.wait(1.0 / 30.0 / self.rate):  # one frame interval between passes
                    return
        except Exception as e:  # noqa: BLE001 - an unreadable bag chunk ends playback with a message
            self._log(f"playback stopped: {type(e).__name__}: {e}", error=True)
        finally:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class ReplayNode(Node):
    """Publishes the frames of a dataset folder at ``rate_hz`` or of a rosbag2 at its recorded timing (see the
    module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("replay_node", **kwargs)
        self.timer: Any = None
        self.bag: RgbdBag | None = None
        try:
            self._setup()
        except BaseException:
            # A node that fails to set up releases its DDS entities (and a started frame timer) here, before
            # main() shuts the context down, instead of whenever the exception's frames are freed.
            self.shutdown()
            self.destroy_node()
            raise

    def _setup(self) -> None:
        p = declare(self, PARAMS)  # ranges and choices are checked here (ParamSpec)
        self.p = p
        if not p["path"]:
            raise ParameterValueError("path is empty: set -p path:=<dataset folder or rosbag2>")
        if p["format"] == "rosbag2":
            self._setup_bag(p)
            return
        self.frames = open_dataset(p["format"], p["path"])
        self.n = len(self.frames)
        if self.n == 0:
            raise ParameterValueError(f"no frames in {p['format']} dataset {p['path']!r}")
        self.out = RgbdPublisher(self, frame_id=p["frame_id"], world_frame=p["world_frame"],
                                 depth_encoding=p["depth_encoding"], publish_odom=bool(p["publish_odom"]))
        self.published = 0
        self.timer = FrameTimer(self, rate_hz=float(p["rate_hz"]), produce=self._publish_frame, name="replay")
        self.get_logger().info(f"replaying {self.n} frames of {p['format']} {p['path']} at {p['rate_hz']} Hz"
                               f"{' (looping)' if p['loop'] else ''}, depth {p['depth_encoding']}")

    def _setup_bag(self, p: dict[str, Any]) -> None:
        try:
            self.bag = RgbdBag(p["path"], bag_config(p))
            frames = self.bag.frames()
            first = next(frames, None)
        except BagError as e:
            raise ParameterValueError(f"rosbag2 {p['path']!r}: {e}") from None
        if first is None:
            c = self.bag.counts
            raise ParameterValueError(f"no usable frame in rosbag2 {p['path']!r} ({c.messages.get('color', 0)} colour "
                                      f"messages; malformed {c.malformed or 'none'}; unpaired "
                                      f"{c.unpaired or 'none'})")
        self.out = RgbdPublisher(self, frame_id=first.frame_id or p["frame_id"],
                                 world_frame=first.world_frame or p["world_frame"],
                                 depth_encoding=p["depth_encoding"], publish_odom=bool(p["publish_odom"]))
        recorded = self.bag.reliability()
        rel = p["qos_reliability"] if p["qos_reliability"] != "auto" else (recorded or "reliable")
        set_publisher_reliability(self, self.out, ("color", "depth", "info", "pose", "odom"), rel)
        self.reliability = rel
        self.clock_pub = None
        if p["publish_clock"]:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
            self._clock_type = Clock
        self.published = 0
        self.timer = BagPlayer(self.bag, rate=float(p["rate"]), loop=bool(p["loop"]), publish=self._publish_bag_frame,
                               log=self._log, first=(first, frames), delay_s=float(p["delay_s"]))
        self.get_logger().info(
            f"replaying rosbag2 {self.bag.describe()} at rate {p['rate']:g}{' (looping)' if p['loop'] else ''}; "
            f"stamps {p['stamps']}; publishers {rel}; depth {p['depth_encoding']}")

    def _log(self, text: str, *, error: bool = False) -> None:
        (self.get_logger().error if error else self.get_logger().info)(text)

    def _publish_bag_frame(self, f: BagFrame) -> None:
        if self.p["stamps"] == "recorded":
            stamp = stamp_msg(f.stamp_ns)
            if self.clock_pub is not None:
                self.clock_pub.publish(self._clock_type(clock=stamp))
        else:
            stamp = self.get_clock().now().to_msg()
        self.out.publish(stamp=stamp, color=f.color, depth_m=f.depth, K=f.K, T_world_cam=f.T_world_cam)
        self.published += 1

    def _publish_frame(self) -> bool:
        i = self.published % self.n
        f = self.frames[i]
        stamp = self.get_clock().now().to_msg()
        self.out.publish(stamp=stamp, color=f.color, depth_m=f.depth, K=f.K, T_world_cam=f.T_world_cam)
        self.published += 1
        if self.published % self.n == 0:
            self.get_logger().info(f"published all {self.n} frames (last recorded stamp {f.stamp_s:.3f}; "
                                   f"skipped ticks: {self.timer.skipped})")
            return bool(self.p["loop"])
        return True

    def shutdown(self) -> None:
        """Stop playback and close the bag."""
        if self.timer is not None:
            self.timer.stop()
        if self.bag is not None:
            self.bag.close()
            self.bag = None


def main(argv: list[str] | None = None) -> int:
    """Replay the recording; SIGINT / SIGTERM (also twice) end it with exit code 0."""
    return run_source_node(lambda _stop_requested: ReplayNode(), argv, name="replay_node",
                           errors=(ParameterValueError, ImportError, ValueError, OSError))


run = entry_point(main)  # console script (setup.py) and python -m

if __name__ == "__main__":
    run()
