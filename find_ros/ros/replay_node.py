"""Replay a recorded RGB-D folder (TUM RGB-D or 7-Scenes) as a live camera, on the sim camera's topics.

Publishes ``camera/color/image_raw`` (rgb8), ``camera/depth/image_raw`` (16UC1 mm or 32FC1 m),
``camera/color/camera_info``, ``camera/pose`` (when the dataset has a pose for the frame) and ``camera/odom`` (with
``publish_odom``), all of one frame with one stamp: the clock at publish time (so consumers' stamp-age checks
work as with a live camera; the recorded stamp is logged, not published). No ground truth topics.

    python -m find_ros.ros.replay_node --ros-args -p format:=tum -p path:=../shared/data/tum_fr3_teddy -p loop:=true
"""
from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from find_ros.ros.shutdown import StopSignals, release_context
from find_ros.ros.sim_camera_node import FrameTimer, ParameterValueError, RgbdPublisher, declare, spin_until_done

try:
    from find_ros.sim.datasets import open_dataset
except ImportError as e:  # a partial checkout: report it as a missing module (pytest.importorskip skips on that)
    raise ModuleNotFoundError(f"find_ros.sim.datasets is not available: {e}", name="find_ros.sim.datasets") from e

__all__ = ["PARAMETERS", "ReplayNode", "main"]

#: name -> (default, description): the node's parameters, declared once.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "format": ("tum", "dataset format: tum or 7scenes"),
    "path": ("", "dataset folder"),
    "rate_hz": (30.0, "frames per second (> 0)"),
    "loop": (False, "start again after the last frame (otherwise the node exits)"),
    "depth_encoding": ("16UC1", "16UC1 (millimetres) or 32FC1 (metres)"),
    "frame_id": ("camera_color_optical_frame", "optical frame of the images and camera_info"),
    "world_frame": ("map", "frame of camera/pose and camera/odom"),
    "publish_odom": (False, "publish camera/odom (nav_msgs/Odometry)"),
}


class ReplayNode(Node):
    """Publishes the frames of a dataset folder at ``rate_hz`` (see the module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("replay_node", **kwargs)
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
        p = declare(self, PARAMETERS)
        self.p = p
        if p["format"] not in ("tum", "7scenes"):
            raise ParameterValueError(f"format must be tum or 7scenes, got {p['format']!r}")
        if not p["path"]:
            raise ParameterValueError("path is empty: set -p path:=<dataset folder>")
        if not p["rate_hz"] > 0:
            raise ParameterValueError(f"rate_hz must be > 0, got {p['rate_hz']}")
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
        self.timer.stop()


def main(argv: list[str] | None = None) -> int:
    """Replay the dataset; SIGINT / SIGTERM (also twice) end it with exit code 0."""
    stop = StopSignals.install()
    rclpy.init(args=sys.argv if argv is None else argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = ReplayNode()
        spin_until_done(node, node.timer, stop)
        return 0
    except (ParameterValueError, ImportError, ValueError, OSError) as e:
        print(f"replay_node: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        release_context()
        stop.teardown_done()


def run() -> None:
    """Console-script entry point: :func:`main`, then :func:`find_ros.ros.shutdown.exit_process`."""
    from find_ros.ros.shutdown import exit_process

    exit_process(main())


if __name__ == "__main__":
    run()
