"""Round trips and error cases of find_ros.ros.conversions on real ROS message classes."""
import numpy as np
import pytest
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from find_ros.ros import conversions as conv
from find_ros.ros.conversions import ConversionError

RNG = np.random.default_rng(0)
H, W = 7, 5

_CASES = {
    "rgb8": RNG.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "bgr8": RNG.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "rgba8": RNG.integers(0, 256, (H, W, 4), dtype=np.uint8),
    "bgra8": RNG.integers(0, 256, (H, W, 4), dtype=np.uint8),
    "mono8": RNG.integers(0, 256, (H, W), dtype=np.uint8),
    "mono16": RNG.integers(0, 65536, (H, W), dtype=np.uint16),
    "16UC1": RNG.integers(0, 65536, (H, W), dtype=np.uint16),
    "32FC1": RNG.normal(size=(H, W)).astype(np.float32),
    "32SC1": RNG.integers(-2**31, 2**31 - 1, (H, W), dtype=np.int32),
}


def _padded(arr: np.ndarray, encoding: str, *, pad: int, bigendian: bool) -> Image:
    """Image built by hand (not by numpy_to_image): rows padded by `pad` bytes, optional big-endian data."""
    a = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.reshape(a.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((a.shape[0], pad), 0xAB, np.uint8)], axis=1)
    m = Image(height=a.shape[0], width=a.shape[1], encoding=encoding, is_bigendian=int(bigendian),
              step=padded.shape[1])
    m.data = padded.tobytes()
    return m


@pytest.mark.parametrize("encoding", list(_CASES))
def test_round_trip_every_encoding(encoding):
    arr = _CASES[encoding]
    hdr = Header(frame_id="cam")
    hdr.stamp.sec, hdr.stamp.nanosec = 12, 345
    msg = conv.numpy_to_image(arr, encoding, header=hdr)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (H, W, encoding, 0)
    assert msg.step == W * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    back = conv.image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("encoding", list(_CASES))
@pytest.mark.parametrize("bigendian", [False, True])
def test_row_padding_and_big_endian(encoding, bigendian):
    arr = _CASES[encoding]
    msg = _padded(arr, encoding, pad=arr.itemsize * 3, bigendian=bigendian)
    back = conv.image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, arr)


def test_unaligned_step_is_read_correctly():
    arr = _CASES["16UC1"]
    np.testing.assert_array_equal(conv.image_to_numpy(_padded(arr, "16UC1", pad=1, bigendian=False)), arr)


def test_read_is_zero_copy_for_native_layout():
    msg = conv.numpy_to_image(_CASES["rgb8"], "rgb8")
    a = conv.image_to_numpy(msg)
    assert np.shares_memory(a, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_to_rgb(encoding):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    src = {"rgb8": rgb, "bgr8": rgb[..., ::-1],
           "rgba8": np.dstack([rgb, np.full((H, W), 9, np.uint8)]),
           "bgra8": np.dstack([rgb[..., ::-1], np.full((H, W), 9, np.uint8)]),
           "mono8": rgb[..., 0]}[encoding]
    out = conv.image_to_rgb(conv.numpy_to_image(np.ascontiguousarray(src), encoding))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    expect = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expect)


def test_image_to_rgb_rejects_depth():
    with pytest.raises(ConversionError, match="32FC1"):
        conv.image_to_rgb(conv.numpy_to_image(_CASES["32FC1"], "32FC1"))


def test_depth_16uc1_scaled_and_32fc1_cleaned():
    mm = np.array([[0, 1000], [2500, 65535]], np.uint16)
    d = conv.image_to_depth_m(conv.numpy_to_image(mm, "16UC1"))
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, mm * 0.001, rtol=1e-6)
    np.testing.assert_allclose(conv.image_to_depth_m(conv.numpy_to_image(mm, "mono16"), depth_scale=0.0002),
                               mm * 0.0002, rtol=1e-6)
    m = np.array([[1.5, np.nan], [np.inf, -2.0], [-np.inf, 0.25]], np.float32)
    msg = conv.numpy_to_image(m, "32FC1")
    d = conv.image_to_depth_m(msg)
    np.testing.assert_array_equal(d, np.array([[1.5, 0], [0, 0], [0, 0.25]], np.float32))
    assert np.isnan(conv.image_to_numpy(msg)[0, 1]), "the message buffer must not be modified"


def test_depth_rejects_colour_and_bad_scale():
    with pytest.raises(ConversionError, match="rgb8"):
        conv.image_to_depth_m(conv.numpy_to_image(_CASES["rgb8"], "rgb8"))
    with pytest.raises(ConversionError, match="depth_scale"):
        conv.image_to_depth_m(conv.numpy_to_image(_CASES["16UC1"], "16UC1"), depth_scale=0.0)


def test_errors_name_encoding_and_sizes():
    good = conv.numpy_to_image(_CASES["rgb8"], "rgb8")
    bad = Image(height=H, width=W, encoding="yuv422", step=W * 2)
    bad.data = bytes(H * W * 2)
    with pytest.raises(ConversionError, match="yuv422"):
        conv.image_to_numpy(bad)
    short = Image(height=H, width=W, encoding="rgb8", step=good.step)
    short.data = bytes(good.step * H - 1)
    with pytest.raises(ConversionError, match=rf"{good.step * H - 1} bytes.*{good.step * H}"):
        conv.image_to_numpy(short)
    narrow = Image(height=H, width=W, encoding="rgb8", step=W * 3 - 1)
    narrow.data = bytes(W * 3 * H)
    with pytest.raises(ConversionError, match=rf"step {W * 3 - 1} < width\*bytes_per_pixel {W * 3}"):
        conv.image_to_numpy(narrow)
    with pytest.raises(ConversionError, match="zero size"):
        conv.image_to_numpy(Image(height=0, width=W, encoding="rgb8", step=W * 3))
    with pytest.raises(ConversionError, match="zero size"):
        conv.numpy_to_image(np.zeros((0, 4), np.uint8), "mono8")
    with pytest.raises(ConversionError, match="shape"):
        conv.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(ConversionError, match="float32"):
        conv.numpy_to_image(np.zeros((4, 4), np.float32), "16UC1")
    with pytest.raises(ConversionError, match="unsupported image encoding 'rgb16'"):
        conv.numpy_to_image(np.zeros((4, 4, 3), np.uint16), "rgb16")


def test_numpy_to_image_casts_safely():
    m = conv.numpy_to_image(np.array([[True, False]]), "mono8")
    np.testing.assert_array_equal(conv.image_to_numpy(m), [[1, 0]])
    m = conv.numpy_to_image(np.array([[3, 4]], np.uint8), "16UC1")
    assert conv.image_to_numpy(m).dtype == np.uint16


def test_camera_info_round_trip_and_errors():
    K = np.array([[525.0, 0, 319.5], [0, 530.0, 239.5], [0, 0, 1]])
    info = conv.camera_info_from_K(K, 640, 480, header=Header(frame_id="cam"))
    assert isinstance(info, CameraInfo) and (info.width, info.height) == (640, 480)
    assert info.header.frame_id == "cam" and info.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(conv.camera_info_to_K(info), K)
    np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4)[:, :3], K)
    with pytest.raises(ConversionError, match="focal"):
        conv.camera_info_to_K(CameraInfo(width=640, height=480))
    bad = conv.camera_info_from_K(K, 0, 480, header=None)
    with pytest.raises(ConversionError, match="zero size"):
        conv.camera_info_to_K(bad)
    with pytest.raises(ConversionError, match="3x3"):
        conv.camera_info_from_K(np.eye(4), 640, 480, header=None)


def _random_T(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    p = conv.pose_to_matrix(Pose())  # identity
    assert np.allclose(p, np.eye(4))
    msg = Pose()
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = map(float, q)
    msg.position.x, msg.position.y, msg.position.z = map(float, rng.normal(size=3))
    return conv.pose_to_matrix(msg), q


def test_pose_matrix_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(200):
        T, q = _random_T(rng)
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
        back = conv.pose_to_matrix(conv.matrix_to_pose(T))
        np.testing.assert_allclose(back, T, atol=1e-9)
        o = conv.matrix_to_pose(T).orientation
        assert np.allclose(abs(np.dot([o.x, o.y, o.z, o.w], q)), 1.0)
    # 180 degree rotations (trace -1) take the other branches
    for R in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        T = np.eye(4)
        T[:3, :3] = R
        np.testing.assert_allclose(conv.pose_to_matrix(conv.matrix_to_pose(T)), T, atol=1e-12)


def test_pose_errors():
    with pytest.raises(ConversionError, match="quaternion"):
        p = Pose()
        p.orientation.w = 0.0
        conv.pose_to_matrix(p)
    with pytest.raises(ConversionError, match="rotation"):
        conv.matrix_to_pose(np.diag([2.0, 1, 1, 1]))
    with pytest.raises(ConversionError, match="4x4"):
        conv.matrix_to_pose(np.eye(3))


@pytest.mark.parametrize("with_rgb", [False, True])
@pytest.mark.parametrize("with_score", [False, True])
def test_cloud_round_trip(with_rgb, with_score):
    n = 50
    xyz = RNG.normal(size=(n, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, (n, 3), dtype=np.uint8) if with_rgb else None
    score = RNG.random(n).astype(np.float32) if with_score else None
    msg = conv.points_to_cloud2(xyz, header=Header(frame_id="map"), rgb=rgb, score=score)
    assert isinstance(msg, PointCloud2) and msg.header.frame_id == "map"
    names = [f.name for f in msg.fields]
    assert names[:3] == ["x", "y", "z"] and ("rgb" in names) == with_rgb and ("score" in names) == with_score
    assert all(f.datatype == PointField.FLOAT32 for f in msg.fields)
    assert (msg.height, msg.width, msg.point_step * n) == (1, n, len(msg.data))
    out = conv.cloud2_to_numpy(msg)
    np.testing.assert_array_equal(np.stack([out["x"], out["y"], out["z"]], 1), xyz)
    if with_rgb:
        assert out["rgb"].dtype == np.uint8
        np.testing.assert_array_equal(out["rgb"], rgb)
    if with_score:
        np.testing.assert_array_equal(out["score"], score)


def test_cloud_rgb_packing_follows_rviz_convention():
    msg = conv.points_to_cloud2(np.zeros((1, 3), np.float32), header=None,
                                rgb=np.array([[0x12, 0x34, 0x56]], np.uint8))
    off = next(f.offset for f in msg.fields if f.name == "rgb")
    assert int.from_bytes(bytes(msg.data[off:off + 4]), "little") == 0x00123456


def test_cloud_empty_and_foreign_layout():
    empty = conv.points_to_cloud2(np.zeros((0, 3), np.float32), header=None,
                                  rgb=np.zeros((0, 3), np.uint8), score=np.zeros(0, np.float32))
    out = conv.cloud2_to_numpy(empty)
    assert out["x"].shape == (0,) and out["rgb"].shape == (0, 3) and out["score"].shape == (0,)
    # a big-endian cloud from another driver: float64 x,y,z at offsets 0/8/16 plus padding, 2x2 organised
    pts = RNG.normal(size=(4, 3))
    rec = np.zeros(4, dtype=np.dtype({"names": ["x", "y", "z"], "formats": [">f8"] * 3,
                                      "offsets": [0, 8, 16], "itemsize": 32}))
    rec["x"], rec["y"], rec["z"] = pts.T
    m = PointCloud2(height=2, width=2, is_bigendian=True, point_step=32, row_step=64,
                    fields=[PointField(name=c, offset=8 * i, datatype=PointField.FLOAT64, count=1)
                            for i, c in enumerate("xyz")])
    m.data = rec.tobytes()
    out = conv.cloud2_to_numpy(m)
    np.testing.assert_array_equal(np.stack([out["x"], out["y"], out["z"]], 1), pts)
    m.data = rec.tobytes()[:-1]
    with pytest.raises(ConversionError, match="bytes"):
        conv.cloud2_to_numpy(m)
    with pytest.raises(ConversionError, match=r"\(N, 3\)"):
        conv.points_to_cloud2(np.zeros((3, 2), np.float32), header=None)
