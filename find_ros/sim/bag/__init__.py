"""RGB-D frames from a rosbag2 recording (sqlite3 or mcap), read with the pure-Python ``rosbags`` package.

No ROS install is needed (``ros2 bag`` and ``rosbag2_py`` are not available everywhere): messages are decoded
with a ``rosbags`` typestore, checked, and paired by header stamp into :class:`BagFrame` objects, the bag
counterpart of :class:`find_ros.sim.datasets.RGBDFrame`:

- colour: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or ``sensor_msgs/CompressedImage`` (jpeg/png);
- depth: ``sensor_msgs/Image`` 16UC1 / mono16 (units of ``depth_scale``, 0 = invalid) or 32FC1 (metres, NaN = invalid);
- camera_info: ``sensor_msgs/CameraInfo`` with the stamp of the frame, else the latest one (intrinsics are static);
- camera pose (optional): ``geometry_msgs/PoseStamped``, ``geometry_msgs/PoseWithCovarianceStamped``,
  ``nav_msgs/Odometry`` (the camera optical frame in the world frame) or ``tf2_msgs/TFMessage`` (the chain
  ``tf_world_frame`` -> camera frame through ``/tf`` and ``/tf_static``).

Messages are read in recording (log) order. A colour message waits ``window_s`` of log time for its partners,
then depth and camera_info within ``sync_slop_s`` of its stamp and a pose within ``pose_slop_s`` are taken; so
memory stays bounded however long the bag is. A malformed message (undecodable CDR, wrong encoding, data shorter
than its size, zero size, bad camera_info K, non-finite pose, depth/colour/camera_info size mismatch) is counted
in :attr:`BagCounts.malformed` by ``<stream>_<kind>``, logged (the first few of each kind, then every 100th) and
skipped; a colour frame left without depth or camera_info is counted in :attr:`BagCounts.unpaired`. Nothing
about a bad message is fatal; a bag that cannot be opened or lacks the colour topic raises :class:`BagError`.

:class:`RgbdBagWriter` writes such bags (from frames of :mod:`find_ros.sim.datasets` or the simulator), with the
reliability a recorder would note in the topic metadata.

Modules: :mod:`~find_ros.sim.bag.config` (topics, pairing settings, records, errors), :mod:`~find_ros.sim.bag.decode`
(messages -> numpy, pose maths, tf tree), :mod:`~find_ros.sim.bag.pairing` (stamp pairing of one pass),
:mod:`~find_ros.sim.bag.reader` (:class:`RgbdBag`) and :mod:`~find_ros.sim.bag.writer` (:class:`RgbdBagWriter`);
every public name is importable from ``find_ros.sim.bag``.
"""
from __future__ import annotations

from find_ros.sim.bag.config import (AUTO_POSE_TOPICS, COLOR_ENCODINGS, DEPTH_ENCODINGS, POSE_TYPES, BagConfig,
                                     BagConfigError, BagCounts, BagError, BagFrame, MalformedMessage, config_fields)
from find_ros.sim.bag.decode import (TfTree, decode_camera_info, decode_color, decode_depth, default_typestore,
                                     matrix_to_pose, pose_to_matrix, resolve_bag_path, stamp_ns)
from find_ros.sim.bag.reader import RgbdBag
from find_ros.sim.bag.writer import RgbdBagWriter

__all__ = [
    "BagConfig", "BagConfigError", "BagError", "MalformedMessage", "BagFrame", "BagCounts", "RgbdBag",
    "RgbdBagWriter", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "POSE_TYPES", "default_typestore", "decode_color",
    "decode_depth", "decode_camera_info", "pose_to_matrix", "matrix_to_pose", "TfTree", "stamp_ns",
    "config_fields", "resolve_bag_path", "AUTO_POSE_TOPICS",
]
