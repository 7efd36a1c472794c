"""RGB-D dataset readers: real TUM fr3 teddy data, a 7-Scenes folder written here, the sim sequence."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from find_ros.sim.datasets import (DatasetError, RGBDFrame, open_dataset, quat_to_matrix, read_7scenes,
                                   read_tum)

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
TUM = DATA / "tum_fr3_teddy"
needs_tum = pytest.mark.skipif(not (TUM / "associations_subset.txt").is_file(),
                               reason=f"TUM fr3 teddy subset not found at {TUM}")


@needs_tum
def test_tum_subset_frames_intrinsics_poses():
    seq = read_tum(TUM)
    assert len(seq) == 189
    f = seq[0]
    assert isinstance(f, RGBDFrame) and f.index == 0
    assert f.color.shape == (480, 640, 3) and f.color.dtype == np.uint8
    assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    assert np.allclose(f.K, [[535.4, 0, 320.1], [0, 539.2, 247.6], [0, 0, 1]])
    valid = f.depth[f.depth > 0]
    assert valid.size > 0.5 * f.depth.size
    assert 0.3 < np.median(valid) < 5.0 and valid.max() < 10.0
    for g in (seq[0], seq[100], seq[-1]):
        T = g.T_world_cam
        assert T is not None and np.all(np.isfinite(T))
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    assert seq[-1].stamp_s > seq[0].stamp_s
    assert np.allclose(seq[0].T_world_cam[:3, 3], [-2.1837, 0.6821, 1.4854])


@needs_tum
def test_tum_consecutive_frames_agree_in_3d():
    """Frame 0 back-projected with K, depth and pose lands where frame 5 sees the same surface."""
    seq = read_tum(TUM, max_frames=6)
    a, b = seq[0], seq[5]
    K = a.K
    v, u = np.mgrid[0:480:4, 0:640:4]
    z = a.depth[v, u]
    m = z > 0
    pc = np.stack([(u[m] - K[0, 2]) / K[0, 0] * z[m], (v[m] - K[1, 2]) / K[1, 1] * z[m], z[m]], 1)
    pw = pc @ a.T_world_cam[:3, :3].T + a.T_world_cam[:3, 3]
    Tb = np.linalg.inv(b.T_world_cam)
    pb = pw @ Tb[:3, :3].T + Tb[:3, 3]
    ub = np.round(pb[:, 0] / pb[:, 2] * K[0, 0] + K[0, 2]).astype(int)
    vb = np.round(pb[:, 1] / pb[:, 2] * K[1, 1] + K[1, 2]).astype(int)
    ok = (ub >= 0) & (ub < 640) & (vb >= 0) & (vb < 480)
    zb = b.depth[vb[ok], ub[ok]]
    err = np.abs(zb - pb[ok, 2])[zb > 0]
    assert np.median(err) < 0.03


@needs_tum
def test_tum_sequence_folder_lists_and_stride():
    seq = read_tum(TUM / "rgbd_dataset_freiburg3_teddy", stride=10, max_frames=5)
    assert len(seq) == 5
    assert np.allclose(seq[0].K[0, 0], 535.4)  # intrinsics.txt of the parent folder
    stamps = [f.stamp_s for f in seq]
    assert np.all(np.diff(stamps) > 0.25)  # every 10th frame at 30 Hz
    assert sum(f.T_world_cam is not None for f in seq) >= 4
    assert len(seq[1:3]) == 2
    with pytest.raises(IndexError):
        seq[5]


def test_tum_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_tum(tmp_path / "nope")
    with pytest.raises(DatasetError, match="rgb.txt"):
        read_tum(tmp_path)


def _write_7scenes(root: Path, n: int = 3) -> list[np.ndarray]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    poses = []
    for i in range(n):
        color = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        depth = np.full((48, 64), 1500 + 100 * i, dtype=np.uint16)
        depth[:5, :5] = 65535
        cv2.imwrite(str(root / f"frame-{i:06d}.color.png"), color[:, :, ::-1])
        cv2.imwrite(str(root / f"frame-{i:06d}.depth.png"), depth)
        T = quat_to_matrix([0.1 * i, 0.2, 1.0], [0.0, 0.0, np.sin(0.1 * i), np.cos(0.1 * i)])
        np.savetxt(root / f"frame-{i:06d}.pose.txt", T)
        poses.append((T, color))
    return poses


def test_7scenes_reader(tmp_path):
    written = _write_7scenes(tmp_path / "seq-01")
    for path in (tmp_path / "seq-01", tmp_path):  # a sequence folder, or a scene folder of seq-* folders
        seq = read_7scenes(path)
        assert len(seq) == 3
        for i, f in enumerate(seq):
            T, color = written[i]
            assert np.array_equal(f.color, color)
            assert np.allclose(f.T_world_cam, T)
            assert f.depth.dtype == np.float32
            assert f.depth[10, 10] == pytest.approx(1.5 + 0.1 * i)
            assert np.all(f.depth[:5, :5] == 0)  # 65535 = invalid
            assert np.allclose(f.K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
            assert f.stamp_s == pytest.approx(i / 30.0)
    assert len(open_dataset("7scenes", tmp_path / "seq-01", max_frames=2)) == 2
    with pytest.raises(DatasetError, match="frame-XXXXXX"):
        (tmp_path / "empty").mkdir()
        read_7scenes(tmp_path / "empty")


def test_7scenes_reader_takes_jpg_colour_and_prefers_png(tmp_path):
    """Copies of 7-Scenes that store colour as frame-XXXXXX.color.jpg read like the png originals."""
    written = _write_7scenes(tmp_path / "seq-01")
    for i, (_, color) in enumerate(written):  # jpg instead of png for every frame
        png = tmp_path / "seq-01" / f"frame-{i:06d}.color.png"
        png.unlink()
        assert cv2.imwrite(str(png.with_suffix(".jpg")), color[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    for path in (tmp_path / "seq-01", tmp_path):
        seq = read_7scenes(path)
        assert len(seq) == 3
        for i, f in enumerate(seq):
            T, color = written[i]
            jpg = cv2.imread(str(tmp_path / "seq-01" / f"frame-{i:06d}.color.jpg"))  # lossy: compare decoded
            assert f.color.shape == color.shape and np.array_equal(f.color, jpg[:, :, ::-1])  # RGB order
            assert np.allclose(f.T_world_cam, T) and f.depth[10, 10] == pytest.approx(1.5 + 0.1 * i)
    # a frame stored both ways is one frame, read from the lossless png
    _, color0 = written[0]
    cv2.imwrite(str(tmp_path / "seq-01" / "frame-000000.color.png"), color0[:, :, ::-1])
    seq = read_7scenes(tmp_path / "seq-01")
    assert len(seq) == 3 and np.array_equal(seq[0].color, color0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "frame-000000.color.bmp").write_bytes(b"")
    with pytest.raises(DatasetError, match="color.png or frame-XXXXXX.color.jpg"):
        read_7scenes(tmp_path / "other")


def test_7scenes_bad_pose(tmp_path):
    _write_7scenes(tmp_path / "s", n=1)
    (tmp_path / "s" / "frame-000000.pose.txt").write_text("1 2 3\n")
    with pytest.raises(DatasetError, match="4x4"):
        read_7scenes(tmp_path / "s")[0]


def test_open_dataset_sim_and_errors():
    seq = open_dataset("sim", 3, n_frames=4, width=64, height=48)
    assert len(seq) == 4
    f = seq[2]
    assert f.color.shape == (48, 64, 3) and f.T_world_cam.shape == (4, 4) and f.depth.max() > 0
    assert np.array_equal(f.depth, open_dataset("sim", 3, n_frames=4, width=64, height=48)[2].depth)
    sub = open_dataset("sim", "3", n_frames=4, width=64, height=48, stride=2, max_frames=1)
    assert len(sub) == 1 and np.array_equal(sub[0].T_world_cam, seq[0].T_world_cam)
    assert np.array_equal(open_dataset("sim", 3, n_frames=4, width=64, height=48, stride=2)[1].depth, f.depth)
    with pytest.raises(DatasetError, match="unknown dataset format"):
        open_dataset("kitti", "x")
    with pytest.raises(DatasetError, match="integer seed"):
        open_dataset("sim", "abc")
