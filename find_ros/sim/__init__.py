"""Simulated RGB-D world with ground truth (open3d ray casting) and RGB-D dataset readers.

No ROS imports here: the sim camera node in ``find_ros.ros`` wraps it.
"""
from .datasets import DatasetError, RGBDFrame, open_dataset, read_7scenes, read_tum
from .render import AMBIENT, LIGHT_DIR, SimFrame, SimRenderer, intrinsics
from .scene import CATEGORIES, COLOURS, FURNITURE, ROOM_COLOURS, SIZE_SCALE, SIZES, ObjectSpec, Scene
from .trajectory import look_at, orbit_trajectory, sim_stream, walkthrough_trajectory

__all__ = [
    "AMBIENT", "CATEGORIES", "COLOURS", "DatasetError", "RGBDFrame", "open_dataset", "read_7scenes", "read_tum", "FURNITURE", "LIGHT_DIR", "ROOM_COLOURS", "SIZES", "SIZE_SCALE",
    "ObjectSpec", "Scene", "SimFrame", "SimRenderer", "intrinsics", "look_at", "orbit_trajectory", "sim_stream",
    "walkthrough_trajectory",
]
