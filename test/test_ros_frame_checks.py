"""frame_checks: arrival prechecks, matched-set checks and stamp ages, each refusal a FrameRejected with its kind."""
import numpy as np
import pytest

from find_ros.ros import conversions as conv
from find_ros.ros.frame_checks import FrameRejected, check_frame, precheck, seconds_ahead, seconds_stale

K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])


def _set(w=80, h=60, depth_mm=1500):
    color = conv.numpy_to_image(np.zeros((h, w, 3), np.uint8), "rgb8")
    depth = conv.numpy_to_image(np.full((h, w), depth_mm, np.uint16), "16UC1")
    info = conv.camera_info_from_K(K, w, h, header=None)
    return color, depth, info


def _kind(fn, *a, **kw) -> str:
    with pytest.raises(FrameRejected) as e:
        fn(*a, **kw)
    return e.value.kind


def test_a_good_set_converts():
    rgb, depth_m, k = check_frame(*_set(), depth_scale=0.001)
    assert rgb.shape == (60, 80, 3) and depth_m.dtype == np.float32 and depth_m[0, 0] == pytest.approx(1.5)
    assert np.array_equal(k, K)
    for stream, msg in zip(("color", "depth", "camera_info"), _set()):
        precheck(stream, msg, max_pixels=80 * 60)


def test_precheck_kinds():
    color, depth, info = _set()
    assert _kind(precheck, "color", depth, max_pixels=10**6) == "color_encoding"  # 16UC1 is no colour encoding
    assert _kind(precheck, "depth", color, max_pixels=10**6) == "depth_encoding"
    assert _kind(precheck, "color", color, max_pixels=100) == "color_too_large"
    color.data = bytes(10)
    assert _kind(precheck, "color", color, max_pixels=10**6) == "color_truncated"
    assert _kind(precheck, "camera_info", info, max_pixels=100) == "camera_info"
    info.k = [0.0] * 9
    assert _kind(precheck, "camera_info", info, max_pixels=10**6) == "camera_info"


def test_check_frame_kinds():
    color, depth, info = _set()
    small = conv.numpy_to_image(np.full((30, 40), 1500, np.uint16), "16UC1")
    assert _kind(check_frame, color, small, info, depth_scale=0.001) == "size_mismatch"
    assert _kind(check_frame, color, depth, _set(w=40, h=30)[2], depth_scale=0.001) == "camera_info_size"
    assert _kind(check_frame, color, _set(depth_mm=0)[1], info, depth_scale=0.001) == "depth_invalid"
    assert _kind(check_frame, depth, depth, info, depth_scale=0.001) == "color_image"
    assert _kind(check_frame, color, color, info, depth_scale=0.001) == "depth_image"
    info.k = [0.0] * 9
    with pytest.raises(FrameRejected, match="camera_info unusable") as e:
        check_frame(color, depth, info, depth_scale=0.001)
    assert e.value.kind == "camera_info" and isinstance(e.value, ValueError)


def test_stamp_ages():
    assert seconds_ahead(105.0, 100.0, 1.0) == 5.0 and seconds_ahead(100.5, 100.0, 1.0) is None
    assert seconds_ahead(105.0, 100.0, 0.0) is None  # 0 disables
    assert seconds_stale(95.0, 100.0, 1.0) == 5.0 and seconds_stale(99.5, 100.0, 1.0) is None
    assert seconds_stale(0.0, 100.0, -1.0) is None
