"""Test helper: small rosbag2 recordings of the TUM fr3 teddy frames (``../shared/data``), written with the rosbags
writer through :class:`find_ros.sim.bag.RgbdBagWriter`, optionally with malformed messages inside.

Used by test_bag.py (pure reading) and test_ros_bag.py (replay node, ``find-ros run``). A bag of five 640x480
frames takes about 0.1 s to write; the frames are read from the dataset once per test process.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest

from find_ros.sim.bag import RgbdBagWriter

TUM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tum_fr3_teddy"
FIRST = 12  # the first frames of the subset have no mocap pose
N_FRAMES = 5

#: What the malformed messages of :func:`write_tum_bag` are counted as (``BagCounts.malformed``).
MALFORMED = {"depth_undecodable": 1, "color_encoding": 1, "frame_size_mismatch": 1}


def need_tum() -> None:
    if not (TUM / "associations_subset.txt").is_file():
        pytest.skip(f"TUM data not found at {TUM}")


@functools.lru_cache(maxsize=2)
def tum_frames(n: int = N_FRAMES) -> tuple:
    """``n`` consecutive TUM frames with poses (colour, depth in metres, K, camera -> world, stamp)."""
    need_tum()
    from find_ros.sim.datasets import read_tum

    seq = read_tum(TUM, max_frames=FIRST + n)
    frames = tuple(seq[i] for i in range(FIRST, FIRST + n))
    assert all(f.T_world_cam is not None for f in frames)
    return frames


@dataclasses.dataclass
class TumBag:
    path: Path
    stamps_ns: list[int]
    """Header stamps of the good frames, in order."""
    malformed: dict
    """Expected malformed counts."""
    pose: str | None
    reliability: str


def write_tum_bag(path: Path, *, storage: str = "sqlite3", reliability: str = "reliable", pose: str | None = "pose",
                  malformed: bool = True, n: int = N_FRAMES, depth_encoding: str = "16UC1") -> TumBag:
    """A rosbag2 at ``path`` with ``n`` TUM frames (stamps as recorded by TUM, log time = stamp) and, with
    ``malformed``, three bad messages between frames 1 and 2: a truncated (undecodable) depth message, a colour
    image in an unsupported encoding (with depth + camera_info of its stamp) and a frame whose depth is half the
    colour's size."""
    frames = tum_frames(n)
    stamps = [int(round(f.stamp_s * 1e9)) for f in frames]
    with RgbdBagWriter(path, storage=storage, reliability=reliability, pose=pose,
                       depth_encoding=depth_encoding) as w:
        for k, (f, s) in enumerate(zip(frames, stamps)):
            w.write_frame(color=f.color, depth_m=f.depth, K=f.K, T_world_cam=f.T_world_cam, stamp_ns=s)
            if malformed and k == 1:
                gap = (stamps[2] - s) // 4
                h, wd = f.color.shape[:2]
                # 1. depth whose CDR stops in the middle of the header
                good = w.serialize(w.image_msg(np.zeros((4, 4), np.uint16), "16UC1", stamp=s + gap))
                w.write_raw("depth", good[:10], log_ns=s + gap)
                # 2. colour in an encoding the reader does not take, with its depth and camera_info
                t = s + 2 * gap
                yuv = w.image_msg(np.zeros((h, wd, 2), np.uint8), "rgb8", stamp=t)
                yuv.encoding = "yuv422"
                w.write_message("color", yuv, log_ns=t)
                w.write_message("depth", w.image_msg(np.full((h, wd), 1000, np.uint16), "16UC1", stamp=t), log_ns=t)
                w.write_message("camera_info", w.camera_info_msg(f.K, wd, h, stamp=t), log_ns=t)
                # 3. a frame whose depth is half the colour's size
                t = s + 3 * gap
                w.write_message("color", w.image_msg(f.color, "rgb8", stamp=t), log_ns=t)
                w.write_message("depth", w.image_msg(np.full((h // 2, wd // 2), 1000, np.uint16), "16UC1",
                                                     stamp=t), log_ns=t)
                w.write_message("camera_info", w.camera_info_msg(f.K, wd, h, stamp=t), log_ns=t)
    return TumBag(path=Path(path), stamps_ns=stamps, malformed=dict(MALFORMED) if malformed else {}, pose=pose,
                  reliability=reliability)
