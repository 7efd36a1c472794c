"""find_ros.sim.bag: RGB-D frames from rosbag2 recordings (rosbags, no ROS): decoding, pairing by stamp, camera
poses from PoseStamped / Odometry / tf, recorded QoS, and malformed messages counted and skipped, never fatal.

Bags are written by the rosbags writer (test/bag_data.py) from the TUM teddy frames in ../shared/data or from
small synthetic arrays."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rosbags")

from bag_data import MALFORMED, N_FRAMES, tum_frames, write_tum_bag  # noqa: E402
from find_ros.sim.bag import (BagConfig, BagConfigError, BagError, RgbdBag, RgbdBagWriter, TfTree,  # noqa: E402
                              config_fields, decode_camera_info, decode_color, decode_depth, matrix_to_pose,
                              pose_to_matrix, resolve_bag_path)


def _img(arr: np.ndarray, encoding: str, *, step: int | None = None, bigendian: bool = False) -> SimpleNamespace:
    a = np.ascontiguousarray(arr)
    h, w = a.shape[:2]
    row = a.nbytes // h
    step = row if step is None else step
    data = np.zeros((h, step), np.uint8)
    data[:, :row] = a.view(np.uint8).reshape(h, row)
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=step, is_bigendian=int(bigendian),
                           data=data.reshape(-1))


def _frames(bag: RgbdBag) -> list:
    return list(bag.frames())


# ---------------------------------------------------------------------------------------------- decoding
def test_decode_color_encodings_step_padding_and_errors():
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(decode_color(_img(rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(decode_color(_img(rgb[:, :, ::-1], "bgr8", step=20)), rgb)  # 5 bytes padding
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_color(_img(rgba, "rgba8")), rgb)
    np.testing.assert_array_equal(decode_color(_img(rgba[:, :, [2, 1, 0, 3]], "bgra8")), rgb)
    mono = rgb[:, :, 0]
    np.testing.assert_array_equal(decode_color(_img(mono, "mono8")), np.repeat(mono[:, :, None], 3, axis=2))
    with pytest.raises(ValueError, match="encoding 'yuv422' is not one of") as e:
        decode_color(_img(rgb[:, :, :2], "yuv422"))
    assert e.value.kind == "encoding"
    short = _img(rgb, "rgb8")
    short.data = short.data[:-1]
    with pytest.raises(ValueError, match=r"rgb8 5x4 \(step 15\) needs 60 bytes, data has 59") as e:
        decode_color(short)
    assert e.value.kind == "size"
    bad_step = _img(rgb, "rgb8")
    bad_step.step = 14
    with pytest.raises(ValueError, match="step 14 < 15 bytes per row"):
        decode_color(bad_step)
    with pytest.raises(ValueError, match="zero size 0x4"):
        decode_color(SimpleNamespace(encoding="rgb8", height=4, width=0, step=0, is_bigendian=0, data=np.zeros(0)))


def test_decode_depth_units_big_endian_and_invalid_values():
    mm = np.array([[0, 1000], [2500, 65535]], np.uint16)
    np.testing.assert_allclose(decode_depth(_img(mm, "16UC1")), [[0, 1.0], [2.5, 65.535]], rtol=1e-6)
    np.testing.assert_allclose(decode_depth(_img(mm.byteswap(), "16UC1", bigendian=True)), decode_depth(_img(mm, "16UC1")))
    np.testing.assert_allclose(decode_depth(_img(mm, "mono16"), depth_scale=0.0002), mm * np.float32(0.0002))
    m = np.array([[np.nan, 1.5], [np.inf, -1.0]], np.float32)
    d = decode_depth(_img(m, "32FC1"))
    assert d.dtype == np.float32 and d.tolist() == [[0.0, 1.5], [0.0, 0.0]]
    with pytest.raises(ValueError, match="depth image encoding 'rgb8'"):
        decode_depth(_img(np.zeros((2, 2, 3), np.uint8), "rgb8"))


def test_camera_info_and_pose_checks():
    info = SimpleNamespace(k=np.array([500.0, 0, 320, 0, 510, 240, 0, 0, 1]), width=640, height=480)
    K, w, h = decode_camera_info(info)
    assert (w, h) == (640, 480) and K[1, 1] == 510
    for bad, match in ((dict(k=np.zeros(9)), "focal lengths fx=0.0"), (dict(width=0), "zero size 0x480"),
                       (dict(k=np.full(9, np.nan)), "9 finite values")):
        with pytest.raises(ValueError, match=match) as e:
            decode_camera_info(SimpleNamespace(**{**vars(info), **bad}))
        assert e.value.kind == "camera_info"
    v = lambda **kw: SimpleNamespace(**kw)  # noqa: E731
    T = pose_to_matrix(v(x=1.0, y=2.0, z=3.0), v(x=0.0, y=0.0, z=np.sin(0.25), w=np.cos(0.25)))
    (p, q) = matrix_to_pose(T)
    np.testing.assert_allclose(p, [1, 2, 3])
    np.testing.assert_allclose(q, [0, 0, np.sin(0.25), np.cos(0.25)], atol=1e-12)
    with pytest.raises(ValueError, match="unusable") as e:
        pose_to_matrix(v(x=np.nan, y=0.0, z=0.0), v(x=0.0, y=0.0, z=0.0, w=1.0))
    assert e.value.kind == "pose"
    with pytest.raises(ValueError, match="unusable"):
        pose_to_matrix(v(x=0.0, y=0.0, z=0.0), v(x=0.0, y=0.0, z=0.0, w=0.0))


def test_tf_tree_composes_static_and_timed_links_within_the_slop():
    tf = TfTree()

    def tr(x):
        T = np.eye(4)
        T[0, 3] = x
        return T

    tf.add("map", "odom", 0, tr(1.0), static=True)
    tf.add("/odom", "base", 100, tr(2.0), static=False)
    tf.add("odom", "base", 200, tr(3.0), static=False)
    tf.add("base", "camera_optical", 0, tr(0.5), static=True)
    assert tf.lookup("map", "camera_optical", 190, 20)[0, 3] == pytest.approx(4.5)  # nearest timed: t=200
    assert tf.lookup("map", "camera_optical", 110, 20)[0, 3] == pytest.approx(3.5)
    assert tf.lookup("map", "camera_optical", 150, 20) is None  # no timed link within 20 ns
    assert tf.lookup("map", "elsewhere", 200, 20) is None
    assert tf.lookup("/map", "map", 0, 0)[0, 3] == 0.0


def test_bag_config_validates_and_lists_its_fields():
    names = [n for n, _, _ in config_fields()]
    assert names[:4] == ["color_topic", "depth_topic", "camera_info_topic", "pose_topic"]
    assert all(desc.strip() for _, _, desc in config_fields())
    with pytest.raises(BagConfigError, match=r"sync_slop_s=2.0 is outside \[0, 1\]"):
        BagConfig(sync_slop_s=2.0)
    with pytest.raises(BagConfigError, match="depth_scale='x' must be a finite number"):
        BagConfig(depth_scale="x")
    with pytest.raises(BagConfigError, match="must be set"):
        BagConfig(color_topic="")
    assert BagConfig(window_s=2).window_s == 2.0


# ---------------------------------------------------------------------------------------------- TUM bags
@pytest.mark.parametrize("storage,pose", [("sqlite3", "pose"), ("mcap", "odom"), ("mcap", "tf"), ("sqlite3", None)])
def test_tum_bag_round_trip(tmp_path, storage, pose):
    """Frames written from the TUM teddy sequence come back pixel for pixel with their exact stamps, intrinsics and
    camera poses, from PoseStamped, Odometry or /tf."""
    b = write_tum_bag(tmp_path / "bag", storage=storage, pose=pose, malformed=False)
    cfg = BagConfig(pose_topic="/tf", tf_world_frame="map") if pose == "tf" else BagConfig()
    with RgbdBag(b.path, cfg) as bag:
        assert bag.pose_topic == {"pose": "/camera/pose", "odom": "/camera/odom", "tf": "/tf", None: ""}[pose]
        frames = _frames(bag)
        counts = bag.counts
    ref = tum_frames()
    assert [f.stamp_ns for f in frames] == b.stamps_ns and [f.index for f in frames] == list(range(N_FRAMES))
    assert counts.frames == N_FRAMES and counts.malformed == {} and counts.unpaired == {} and counts.no_pose == 0
    for f, r in zip(frames, ref):
        np.testing.assert_array_equal(f.color, r.color)
        np.testing.assert_allclose(f.depth, r.depth, atol=0.0006)  # millimetres in the bag
        np.testing.assert_allclose(f.K, r.K)
        assert f.frame_id == "camera_color_optical_frame" and f.depth_encoding == "16UC1"
        assert f.log_time_ns == f.stamp_ns
        if pose is None:
            assert f.T_world_cam is None and f.world_frame == ""
        else:
            np.testing.assert_allclose(f.T_world_cam, r.T_world_cam, atol=1e-9)
            assert f.world_frame == "map"


def test_malformed_messages_are_counted_and_skipped(tmp_path, caplog):
    """A truncated message, a colour image in an unknown encoding and a frame with half-size depth are each counted
    and logged; every good frame still comes out, and a second pass counts the same."""
    b = write_tum_bag(tmp_path / "bag", storage="mcap", malformed=True)
    with caplog.at_level(logging.WARNING, logger="find_ros.sim.bag"), RgbdBag(b.path) as bag:
        frames = _frames(bag)
        first = bag.counts.as_dict()
        again = _frames(bag)
    assert [f.stamp_ns for f in frames] == b.stamps_ns == [f.stamp_ns for f in again]
    assert first["malformed"] == MALFORMED and first["malformed_total"] == 3
    assert first == bag.counts.as_dict()
    assert first["messages"] == {"pose": N_FRAMES, "color": N_FRAMES + 2, "depth": N_FRAMES + 3,
                                 "camera_info": N_FRAMES + 2}
    text = caplog.text
    assert "[depth_undecodable, 1 so far]" in text and "does not deserialize" in text
    assert "[color_encoding, 1 so far]: colour image encoding 'yuv422'" in text
    assert "[frame_size_mismatch, 1 so far]: colour 640x480, depth 320x240, camera_info 640x480" in text


def test_pairing_within_the_slop_and_unpaired_frames(tmp_path):
    """Depth 5 ms after its colour pairs (slop 20 ms); depth 50 ms off does not (counted no_depth); camera_info
    recorded only once serves every later frame (intrinsics are static); bgr8 colour is converted."""
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200
    K = np.array([[50.0, 0, 4], [0, 50, 3], [0, 0, 1]])
    t0 = 1_700_000_000_000_000_000
    ms = 1_000_000
    with RgbdBagWriter(tmp_path / "bag", pose=None) as w:
        w.write_message("camera_info", w.camera_info_msg(K, 8, 6, stamp=t0), log_ns=t0)
        for k, depth_offset in enumerate((5 * ms, 50 * ms, -3 * ms)):
            t = t0 + k * 100 * ms
            w.write_message("color", w.image_msg(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", stamp=t), log_ns=t)
            w.write_message("depth", w.image_msg(np.full((6, 8), 1500, np.uint16), "16UC1", stamp=t + depth_offset),
                            log_ns=t + abs(depth_offset))
    with RgbdBag(tmp_path / "bag", BagConfig(window_s=0.05)) as bag:
        frames = _frames(bag)
        assert bag.counts.unpaired == {"no_depth": 1}
    assert [f.stamp_ns for f in frames] == [t0, t0 + 200 * ms]
    np.testing.assert_array_equal(frames[0].color, rgb)
    assert float(frames[1].depth.mean()) == pytest.approx(1.5)
    np.testing.assert_allclose(frames[1].K, K)


def test_recorded_reliability_and_bag_errors(tmp_path):
    be = write_tum_bag(tmp_path / "be", reliability="best_effort", pose=None, malformed=False, n=1)
    rel = write_tum_bag(tmp_path / "rel", storage="mcap", reliability="reliable", pose=None, malformed=False, n=1)
    with RgbdBag(be.path) as a, RgbdBag(next(rel.path.glob("*.mcap"))) as b:  # the folder or its storage file
        assert a.reliability() == "best_effort" and b.reliability() == "reliable"
        assert b.path == rel.path and b.color_count == 1
        assert "no pose topic" in a.describe() and "best_effort" in a.describe()
    with pytest.raises(BagError, match="does not exist"):
        RgbdBag(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        resolve_bag_path(tmp_path / "empty")
    with pytest.raises(BagError, match=r"no colour topic '/rgb'; recorded: /camera/color/camera_info "
                                       r"\(sensor_msgs/msg/CameraInfo\), /camera/color/image_raw"):
        RgbdBag(be.path, BagConfig(color_topic="rgb"))
    with pytest.raises(BagError, match="camera pose topic /camera/depth/image_raw has type sensor_msgs/msg/Image"):
        RgbdBag(be.path, BagConfig(pose_topic="/camera/depth/image_raw"))


def test_compressed_colour_decodes():
    import cv2

    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, :5] = (200, 30, 30)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    msg = SimpleNamespace(format="rgb8; png compressed bgr8", data=np.frombuffer(png.tobytes(), np.uint8))
    np.testing.assert_array_equal(decode_color(msg, "sensor_msgs/msg/CompressedImage"), rgb)
    with pytest.raises(ValueError, match="does not decode") as e:
        decode_color(SimpleNamespace(format="jpeg", data=np.zeros(5, np.uint8)), "sensor_msgs/msg/CompressedImage")
    assert e.value.kind == "undecodable"
