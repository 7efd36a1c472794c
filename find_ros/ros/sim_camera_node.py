"""Simulated RGB-D camera node: publishes the find_ros.sim world as a real camera driver would.

Topics (relative): ``camera/color/image_raw`` (rgb8), ``camera/depth/image_raw`` (16UC1 mm or 32FC1 m, NaN/0 =
invalid, REP 118), ``camera/color/camera_info``, ``camera/pose`` (PoseStamped: optical frame -> ``world_frame``),
``camera/odom`` (Odometry, with ``publish_odom``), ``/tf`` (``world_frame -> frame_id``, tf2_msgs/TFMessage, with
``publish_tf`` when tf2_msgs is importable: :mod:`find_ros.ros.tf`), and with ``publish_gt``: ``camera/gt/instance``
(32SC1 object ids, 0 = room; built and published only while something subscribes: 1.2 MB a 640x480 frame) and
``camera/gt/objects`` (std_msgs/String, JSON list of ObjectSpec.to_json(), reliable transient-local so late joiners
get it; republished with every frame for volatile subscribers).

All messages of one frame share one stamp (the clock at render time); images and camera_info are in ``frame_id``
(an optical frame: x right, y down, z forward, REP 103/105), poses in ``world_frame``. A timer at ``rate_hz``
wakes a render thread; ticks that arrive while it is still rendering are coalesced (counted as skipped), so a
slow machine lowers the rate instead of building a backlog. With ``prerender`` every trajectory frame is
rendered once at start-up and replayed (stamps still from the clock), so on a small machine the renderer does not
take CPU from the nodes under test; ``prerender_max_mb`` bounds the memory it may take.

    python -m find_ros.ros.sim_camera_node --ros-args -p rate_hz:=10.0 -p seed:=0 -p publish_gt:=true
"""
from __future__ import annotations

import gc
import json
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from find_ros.ros import conversions as conv
from find_ros.ros.param_spec import ParamSpec, declare_table

try:
    from find_ros.sim import Scene, SimFrame, SimRenderer, orbit_trajectory, walkthrough_trajectory
except ImportError as e:  # a partial checkout: report it as a missing module (pytest.importorskip skips on that)
    raise ModuleNotFoundError(f"find_ros.sim is not available: {e}", name="find_ros.sim") from e
from find_ros.ros.qos import LATCHED_QOS, SENSOR_QOS
from find_ros.ros.tf import create_tf_publisher, tf_message, transform_stamped
from find_ros.ros.shutdown import StopSignals, entry_point, release_context, spin_until_stopped

DEPTH_ENCODINGS = ("16UC1", "32FC1")

__all__ = ["PARAMS", "PARAMETERS", "RgbdPublisher", "FrameTimer", "SimCameraNode", "GT_OBJECTS_QOS", "main"]

#: The node's parameters, declared once with descriptors and validated by
#: :func:`find_ros.ros.param_spec.validate_value`.
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("rate_hz", float, 30.0, "frames per second (> 0)", check=lambda v: v > 0, want="> 0"),
    ParamSpec("seed", int, 0, "scene seed (same seed -> same scene and frames)"),
    ParamSpec("width", int, 640, "image width in pixels", range=(8, None), want=">= 8"),
    ParamSpec("height", int, 480, "image height in pixels", range=(8, None), want=">= 8"),
    ParamSpec("trajectory", str, "orbit", "camera path: orbit or walk", choices=("orbit", "walk"),
              want="orbit or walk"),
    ParamSpec("n_frames", int, 0, "frames to publish, then stop; 0 = loop forever", range=(0, None), want=">= 0"),
    ParamSpec("loop_frames", int, 300, "trajectory length when n_frames is 0 (the path repeats after it)",
              range=(2, None), want=">= 2"),
    ParamSpec("depth_encoding", str, "16UC1", "16UC1 (millimetres) or 32FC1 (metres)", choices=DEPTH_ENCODINGS,
              want="16UC1 or 32FC1"),
    ParamSpec("invalid_depth", bool, False, "add realistic invalid depth regions (range, grazing angles, dropout)"),
    ParamSpec("noise_std", float, 0.0, "depth noise standard deviation in metres", range=(0.0, None), want=">= 0"),
    ParamSpec("frame_id", str, "camera_color_optical_frame", "optical frame of the images and camera_info"),
    ParamSpec("world_frame", str, "map", "frame of camera/pose and camera/odom, parent of the camera's /tf transform"),
    ParamSpec("publish_gt", bool, False,
              "publish camera/gt/instance (only while it has a subscriber) and camera/gt/objects"),
    ParamSpec("publish_odom", bool, False, "publish camera/odom (nav_msgs/Odometry)"),
    ParamSpec("publish_tf", bool, True,
              "publish world_frame -> frame_id on /tf (tf2_msgs/TFMessage) when tf2_msgs is importable"),
    ParamSpec("prerender", bool, False,
              "render every trajectory frame once at start-up and replay them, so the renderer does not compete "
              "for CPU with the nodes under test (memory: see prerender_max_mb)"),
    ParamSpec("prerender_max_mb", int, 2048,
              "refuse prerender when the rendered frames would need more memory than this (MB)"),
)

#: name -> (default, description) of :data:`PARAMS` (a read-only view for launch files and tests).
PARAMETERS: dict[str, tuple[Any, str]] = {s.name: (s.default, s.description) for s in PARAMS}

#: ground-truth object list: reliable, transient-local (late joiners get the last one), keep-last 1.
GT_OBJECTS_QOS = LATCHED_QOS


class ParameterValueError(ValueError):
    """A node parameter outside its allowed values."""


class RgbdPublisher:
    """Publishers of one RGB-D camera on ``node``: colour, depth, camera_info, pose, optionally odom, and the
    camera's transform ``world_frame -> frame_id`` on ``/tf`` (``publish_tf`` and tf2_msgs importable; otherwise
    one log line says why not).

    Shared by the sim camera and the replay node so both look the same to subscribers.
    """

    def __init__(self, node: Node, *, frame_id: str, world_frame: str, depth_encoding: str,
                 publish_odom: bool, publish_tf: bool = True) -> None:
        if depth_encoding not in DEPTH_ENCODINGS:
            raise ParameterValueError(f"depth_encoding must be 16UC1 or 32FC1, got {depth_encoding!r}")
        if publish_tf and (not frame_id or not world_frame or frame_id == world_frame):
            raise ParameterValueError(f"publish_tf needs two different, non-empty frames: world_frame {world_frame!r}, "
                                      f"frame_id {frame_id!r}")
        self.node = node
        self.frame_id, self.world_frame, self.depth_encoding = frame_id, world_frame, depth_encoding
        self.color = node.create_publisher(Image, "camera/color/image_raw", SENSOR_QOS)
        self.depth = node.create_publisher(Image, "camera/depth/image_raw", SENSOR_QOS)
        self.info = node.create_publisher(CameraInfo, "camera/color/camera_info", SENSOR_QOS)
        self.pose = node.create_publisher(PoseStamped, "camera/pose", SENSOR_QOS)
        self.odom = node.create_publisher(Odometry, "camera/odom", SENSOR_QOS) if publish_odom else None
        self.tf = create_tf_publisher(node) if publish_tf else None
        self._last_T: tuple[float, np.ndarray] | None = None

    def header(self, stamp) -> Header:
        return Header(stamp=stamp, frame_id=self.frame_id)

    def depth_msg(self, depth_m: np.ndarray, header: Header) -> Image:
        """Depth image: 16UC1 millimetres (0 = invalid) or 32FC1 metres (NaN = invalid), REP 118."""
        valid = np.isfinite(depth_m) & (depth_m > 0)
        if self.depth_encoding == "16UC1":
            mm = np.where(valid, np.rint(depth_m * 1000.0), 0.0)
            return conv.numpy_to_image(np.clip(mm, 0, 65535).astype(np.uint16), "16UC1", header=header)
        return conv.numpy_to_image(np.where(valid, depth_m, np.nan).astype(np.float32), "32FC1", header=header)

    def publish(self, *, stamp, color: np.ndarray, depth_m: np.ndarray, K: np.ndarray,
                T_world_cam: np.ndarray | None) -> Header:
        """Publish one frame with one shared stamp; returns the image header used. The camera pose (pose, /tf,
        odom) goes out before the images, as a robot's localisation runs ahead of its camera: a node that grounds a
        frame the moment its images are matched has its pose by then."""
        h = self.header(stamp)
        H, W = color.shape[:2]
        if T_world_cam is not None:
            wh = Header(stamp=stamp, frame_id=self.world_frame)
            pose = conv.matrix_to_pose(T_world_cam)
            self.pose.publish(PoseStamped(header=wh, pose=pose))
            if self.tf is not None:
                self.tf.publish(tf_message([transform_stamped(T_world_cam, stamp=stamp, parent_frame=self.world_frame,
                                                              child_frame=self.frame_id)]))
            if self.odom is not None:
                odom = Odometry(header=wh, child_frame_id=self.frame_id)
                odom.pose.pose = pose
                t = conv.stamp_to_s(stamp)
                if self._last_T is not None and t > self._last_T[0]:
                    # body-frame linear velocity by finite difference (angular left 0: not needed by consumers)
                    dt = t - self._last_T[0]
                    v_world = (T_world_cam[:3, 3] - self._last_T[1][:3, 3]) / dt
                    v = T_world_cam[:3, :3].T @ v_world
                    odom.twist.twist.linear.x, odom.twist.twist.linear.y, odom.twist.twist.linear.z = map(float, v)
                self._last_T = (t, T_world_cam)
                self.odom.publish(odom)
        self.color.publish(conv.numpy_to_image(np.ascontiguousarray(color), "rgb8", header=h))
        self.depth.publish(self.depth_msg(depth_m, h))
        self.info.publish(conv.camera_info_from_K(K, W, H, header=h))
        return h


class FrameTimer:
    """Timer-driven frame loop: a ROS timer at ``rate_hz`` wakes a worker thread that calls ``produce()``.

    Ticks arriving while ``produce()`` still runs are coalesced (counted in ``skipped``): a slow producer lowers
    the rate, never builds a backlog. ``produce()`` returns False to stop (``done`` is then set).
    """

    def __init__(self, node: Node, *, rate_hz: float, produce, name: str) -> None:
        self.node, self._produce = node, produce
        self.skipped = 0
        self.done = threading.Event()
        self._due = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()
        self._timer = node.create_timer(1.0 / rate_hz, self._tick)

    def _tick(self) -> None:
        if self._due.is_set():
            self.skipped += 1
        self._due.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._due.wait(timeout=0.1):
                continue
            self._due.clear()
            if self._stop.is_set():
                break
            try:
                more = self._produce()
            except Exception as e:  # noqa: BLE001 - keep the camera alive, say what failed
                self.node.get_logger().error(f"frame failed: {type(e).__name__}: {e}")
                time.sleep(0.5)
                continue
            if not more:
                self._timer.cancel()
                self.done.set()
                return

    def stop(self) -> None:
        self._stop.set()
        self._due.set()
        self._worker.join(timeout=5.0)


def spin_until_done(node: Node, timer: FrameTimer, stop: StopSignals) -> None:
    """Spin ``node`` until ``timer`` is done, a stop signal or ROS shutdown; give the last frame time to be delivered."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        spin_until_stopped(executor, stop, until=timer.done.is_set)
        if timer.done.is_set() and not stop.requested.is_set():
            stop.requested.wait(0.5)
    finally:
        executor.shutdown()


def run_source_node(make_node: Callable[[threading.Event], Node], argv: list[str] | None, *, name: str,
                    errors: tuple[type[Exception], ...]) -> int:
    """``main()`` of a node that publishes until its ``timer`` (:class:`FrameTimer`) is done: this camera, the bag
    replay. rclpy without its signal handlers, ``make_node(stop_requested)``, :func:`spin_until_done`; exit code 0
    after the last frame or a stop signal (SIGINT / SIGTERM, also twice, also as ``InterruptedError`` from
    ``make_node``: a stop while it sets up), 2 with one line ``<name>: <Type>: <message>`` on stderr for ``errors``
    (an invalid parameter, a missing library, an unreadable bag). Then the node is shut down and destroyed, the
    reference cycles through its callbacks collected (they would keep Open3D buffers until exit) and the context
    released."""
    stop = StopSignals.install()
    rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = make_node(stop.requested)
        spin_until_done(node, node.timer, stop)
        return 0
    except InterruptedError:  # the stop signal arrived while the node set itself up (prerendering)
        return 0
    except errors as e:
        print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
            node = None
        gc.collect()
        release_context()
        stop.teardown_done()


def declare(node: Node, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare every row of ``specs`` with its descriptor (:func:`find_ros.ros.param_spec.declare_table`); return
    name -> value. Raises :class:`ParameterValueError` naming every invalid value (ints are taken for floats)."""
    return declare_table(node, specs, ParameterValueError)


class SimCameraNode(Node):
    """Renders the sim scene along a trajectory and publishes it (see the module docstring)."""

    def __init__(self, *, stop_requested: threading.Event | None = None, **kwargs) -> None:
        super().__init__("sim_camera_node", **kwargs)
        self._stop_requested = stop_requested  # set by a stop signal: prerendering gives up (InterruptedError)
        try:
            self._setup()
        except BaseException:
            # A node that fails to set up releases its DDS entities (and a started frame timer) here, before
            # main() shuts the context down, instead of whenever the exception's frames are freed.
            if getattr(self, "timer", None) is not None:
                self.timer.stop()
            self.destroy_node()
            raise

    def _setup(self) -> None:
        p = declare(self, PARAMS)  # ranges and choices are checked here (ParamSpec)
        self.p = p
        self.scene = Scene.generate(int(p["seed"]))
        self.renderer = SimRenderer(self.scene, width=int(p["width"]), height=int(p["height"]),
                                    noise_std=float(p["noise_std"]), invalid_depth=bool(p["invalid_depth"]),
                                    seed=int(p["seed"]))
        n_traj = int(p["n_frames"]) or int(p["loop_frames"])
        if p["trajectory"] == "orbit":
            self.poses = orbit_trajectory(self.scene, n_traj)
        else:
            self.poses = walkthrough_trajectory(self.scene, n_traj, seed=int(p["seed"]))
        self.frames: list[SimFrame] | None = None
        if p["prerender"]:
            self.frames = self._prerender(int(p["prerender_max_mb"]))
        self.out = RgbdPublisher(self, frame_id=p["frame_id"], world_frame=p["world_frame"],
                                 depth_encoding=p["depth_encoding"], publish_odom=bool(p["publish_odom"]),
                                 publish_tf=bool(p["publish_tf"]))
        self.gt_instance = self.gt_objects = None
        self._objects_json = json.dumps([o.to_json() for o in self.scene.objects])
        if p["publish_gt"]:
            self.gt_instance = self.create_publisher(Image, "camera/gt/instance", SENSOR_QOS)
            self.gt_objects = self.create_publisher(String, "camera/gt/objects", GT_OBJECTS_QOS)
            self.gt_objects.publish(String(data=self._objects_json))
        self.published = 0
        self.timer = FrameTimer(self, rate_hz=float(p["rate_hz"]), produce=self._publish_frame, name="sim_render")
        self.get_logger().info(
            f"sim camera: seed {p['seed']}, {len(self.scene.objects)} objects "
            f"({', '.join(o.describe() for o in self.scene.objects)}), {p['width']}x{p['height']} at "
            f"{p['rate_hz']} Hz, {p['trajectory']} trajectory, depth {p['depth_encoding']}, "
            f"{'%d frames' % p['n_frames'] if p['n_frames'] else 'looping'}")

    def _prerender(self, max_mb: int) -> list[SimFrame]:
        """Every trajectory frame, rendered once (instance ids kept as uint16 when they fit)."""
        first = self._compact(self.renderer.render(self.poses[0], index=0))
        per_frame = first.color.nbytes + first.depth.nbytes + first.instance.nbytes
        need_mb = per_frame * len(self.poses) / 2**20
        if need_mb > max_mb:
            raise ParameterValueError(
                f"prerender of {len(self.poses)} frames at {self.p['width']}x{self.p['height']} needs "
                f"{need_mb:.0f} MB > prerender_max_mb {max_mb}: lower loop_frames / n_frames or raise the cap")
        self.get_logger().info(f"prerendering {len(self.poses)} frames ({need_mb:.0f} MB)")
        t0 = time.monotonic()
        frames = [first]
        for i, T in enumerate(self.poses[1:], start=1):
            if self._stop_requested is not None and self._stop_requested.is_set():
                raise InterruptedError(f"stop signal while prerendering (frame {i} of {len(self.poses)})")
            frames.append(self._compact(self.renderer.render(T, index=i)))
        self.get_logger().info(f"prerendered {len(frames)} frames in {time.monotonic() - t0:.1f} s "
                               f"({need_mb:.0f} MB)")
        return frames

    @staticmethod
    def _compact(frame: SimFrame) -> SimFrame:
        if frame.instance.size and 0 <= frame.instance.min() and frame.instance.max() < 2**16:
            frame.instance = frame.instance.astype(np.uint16)
        return frame

    def _publish_frame(self) -> bool:
        i = self.published
        stamp_time = self.get_clock().now()
        if self.frames is not None:  # the first loop's pixels (a render is a function of pose and index)
            frame = self.frames[i % len(self.frames)]
        else:
            frame = self.renderer.render(self.poses[i % len(self.poses)], index=i,
                                         time_s=stamp_time.nanoseconds * 1e-9)
        stamp = stamp_time.to_msg()
        h = self.out.publish(stamp=stamp, color=frame.color, depth_m=frame.depth, K=frame.K,
                             T_world_cam=frame.T_world_cam)
        if self.gt_instance is not None:
            if self.gt_instance.get_subscription_count() > 0:  # 1.2 MB a frame: built only for a subscriber
                self.gt_instance.publish(conv.numpy_to_image(frame.instance.astype(np.int32, copy=False), "32SC1",
                                                             header=h))
            self.gt_objects.publish(String(data=self._objects_json))
        self.published += 1
        n_total = int(self.p["n_frames"])
        if n_total and self.published >= n_total:
            self.get_logger().info(f"published {self.published} frames; done (skipped ticks: {self.timer.skipped})")
            return False
        return True

    def shutdown(self) -> None:
        """Stop the frame loop and free the prerendered frames and the renderer's scene now: their pixels live in
        Open3D buffers, and Open3D reports buffers still held at interpreter exit as leaks and exits 1."""
        self.timer.stop()
        self.frames = None
        self.renderer = None


def main(argv: list[str] | None = None) -> int:
    """Run the camera; SIGINT / SIGTERM (also twice, also during prerender) end it with exit code 0."""
    return run_source_node(lambda stop_requested: SimCameraNode(stop_requested=stop_requested), argv,
                           name="sim_camera_node", errors=(ParameterValueError, ImportError))


run = entry_point(main)  # console script (setup.py) and python -m

if __name__ == "__main__":
    run()
