"""Back-projection and target-pose maths against hand-computed cases (find_ros.grounding.geometry)."""
from __future__ import annotations

import numpy as np
import pytest

from find_ros.grounding.geometry import (GeometryError, TargetPose, backproject, depth_edges, facing_rotation,
                                         matrix_from_quaternion, quaternion_from_matrix, target_pose_from_mask,
                                         transform_pose)

K = np.array([[100.0, 0.0, 40.0], [0.0, 120.0, 30.0], [0.0, 0.0, 1.0]])


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * x + (1 - np.cos(angle)) * x @ x


def test_backproject_matches_hand_computed_points():
    depth = np.zeros((60, 80), np.float32)
    depth[30, 40] = 2.0   # principal point: straight ahead
    depth[0, 0] = 1.0     # top-left: x = (0-40)/100, y = (0-30)/120
    depth[59, 79] = 4.0
    depth[10, 10] = np.nan
    depth[11, 11] = np.inf
    depth[12, 12] = -1.0
    pts = backproject(depth, K)
    expected = np.array([[-0.4, -0.25, 1.0], [0.0, 0.0, 2.0], [(79 - 40) / 100 * 4, (59 - 30) / 120 * 4, 4.0]])
    np.testing.assert_allclose(pts, expected, atol=1e-9)
    mask = np.zeros_like(depth, bool)
    mask[30, 40] = mask[10, 10] = True
    np.testing.assert_allclose(backproject(depth, K, mask), [[0.0, 0.0, 2.0]])


def test_backproject_rejects_bad_inputs():
    with pytest.raises(GeometryError, match="mask shape"):
        backproject(np.ones((4, 4), np.float32), K, np.ones((3, 4), bool))
    with pytest.raises(GeometryError, match="depth_m"):
        backproject(np.ones((4, 4), np.uint16), K)
    with pytest.raises(GeometryError, match="K must be"):
        backproject(np.ones((4, 4), np.float32), np.eye(2))


def test_pose_of_a_fronto_parallel_square_at_known_depth():
    depth = np.full((60, 80), 3.0, np.float32)
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True  # columns 30..49, rows 20..39
    pose = target_pose_from_mask(mask, depth, K, erode_px=0, min_points=10)
    assert pose is not None and pose.frame == "camera" and pose.num_points == 400
    cx = (39.5 - 40) / 100 * 3
    cy = (29.5 - 30) / 120 * 3
    np.testing.assert_allclose(pose.position, [cx, cy, 3.0], atol=1e-9)
    # orientation: faces the camera, z = image up; for a target near the axis x ~ -z_opt, y ~ +x_opt, z ~ -y_opt
    R = matrix_from_quaternion(pose.orientation_xyzw)
    np.testing.assert_allclose(R[:, 0], -pose.position / np.linalg.norm(pose.position), atol=1e-9)
    assert R[:, 1] @ [1, 0, 0] > 0.99 and R[:, 2] @ [0, -1, 0] > 0.99
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)
    # extent: depth ~0 (flat), width/height = 5..95 % span of 20 pixel columns/rows at 3 m
    assert pose.extent[0] < 0.01  # flat (the x axis points at the camera, slightly off the plane normal)
    assert pose.extent[1] == pytest.approx(0.9 * 19 / 100 * 3, rel=0.08)
    assert pose.extent[2] == pytest.approx(0.9 * 19 / 120 * 3, rel=0.08)


def test_erosion_and_min_points():
    depth = np.full((60, 80), 2.0, np.float32)
    mask = np.zeros((60, 80), bool)
    mask[20:30, 20:30] = True
    eroded = target_pose_from_mask(mask, depth, K, erode_px=2, min_points=10)
    assert eroded.num_points == 36  # a radius-2 ellipse keeps the inner 6x6 of a 10x10 square
    assert target_pose_from_mask(mask, depth, K, erode_px=0, min_points=101) is None
    assert target_pose_from_mask(np.zeros_like(mask), depth, K) is None
    # erosion would leave too few points: the un-eroded mask is used instead
    small = np.zeros_like(mask)
    small[10:14, 10:14] = True
    assert target_pose_from_mask(small, depth, K, erode_px=2, min_points=16).num_points == 16


def test_outliers_do_not_move_the_centre():
    depth = np.full((60, 80), 2.0, np.float32)
    mask = np.zeros((60, 80), bool)
    mask[20:40, 20:40] = True
    clean = target_pose_from_mask(mask, depth, K, erode_px=0, depth_edge_m=0.0, min_points=10)
    noisy = depth.copy()
    noisy[25, 25] = noisy[30, 33] = noisy[35, 22] = 9.0  # three isolated far readings inside the mask
    noisy[22, 37] = 0.2
    out = target_pose_from_mask(mask, noisy, K, erode_px=0, depth_edge_m=0.0, min_points=10)
    assert out.num_points == clean.num_points - 4
    inliers = mask.copy()
    inliers[25, 25] = inliers[30, 33] = inliers[35, 22] = inliers[22, 37] = False
    np.testing.assert_allclose(out.position, backproject(depth, K, inliers).mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(out.position, clean.position, atol=1e-3)
    # the plain mean would have moved by about 5 cm in z
    pts = backproject(noisy, K, mask)
    assert pts.mean(axis=0)[2] - 2.0 > 0.04


def test_depth_edge_pixels_are_dropped():
    depth = np.full((60, 80), 1.0, np.float32)
    depth[:, 40:] = 3.0  # a step: the mask straddles it with a thin strip on the far side
    edges = depth_edges(depth, 0.05)
    assert edges[:, 39].all() and edges[:, 40].all() and not edges[:, 38].any() and not edges[:, 41].any()
    depth[5, 5] = 0.0  # an invalid pixel makes no edge around it
    assert not depth_edges(depth, 0.05)[4:7, 4:7].any()
    mask = np.zeros((60, 80), bool)
    mask[10:50, 20:42] = True  # columns 20..39 near, 40..41 far (both at the step)
    pose = target_pose_from_mask(mask, depth, K, erode_px=0, min_points=10, depth_edge_m=0.05)
    assert pose.position[2] == pytest.approx(1.0)
    assert pose.num_points == 40 * 19  # column 39 (edge) and 40..41 (edge/far) dropped
    kept_all = target_pose_from_mask(mask, depth, K, erode_px=0, min_points=10, depth_edge_m=0.0)
    assert kept_all.num_points == 40 * 20  # without it column 39 stays; the far columns are MAD outliers


def test_quaternion_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = matrix_from_quaternion(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        q2 = quaternion_from_matrix(R)
        np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-9)
        np.testing.assert_allclose(matrix_from_quaternion(q2), R, atol=1e-12)
    # hand-computed: 90 degrees about z
    np.testing.assert_allclose(quaternion_from_matrix(_rot([0, 0, 1], np.pi / 2)),
                               [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    # 180 degrees (w = 0) about x: the trace branch is not the stable one
    np.testing.assert_allclose(np.abs(quaternion_from_matrix(np.diag([1.0, -1.0, -1.0]))), [1, 0, 0, 0], atol=1e-12)
    with pytest.raises(GeometryError):
        matrix_from_quaternion(np.zeros(4))


def test_world_transform_faces_the_camera_with_z_up():
    # camera at (1, 2, 1.5) looking along world +x, pitched 30 degrees down
    pitch = np.deg2rad(30)
    look = np.array([np.cos(pitch), 0.0, -np.sin(pitch)])
    right = np.array([0.0, -1.0, 0.0])
    down = np.cross(look, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, look], axis=1)  # optical axes (x right, y down, z forward) in world
    T[:3, 3] = [1.0, 2.0, 1.5]
    cam_pose = TargetPose(position=np.array([0.1, 0.0, 2.0]), orientation_xyzw=np.array([0, 0, 0, 1.0]),
                          extent=np.array([0.1, 0.2, 0.3]), num_points=50)
    w = transform_pose(cam_pose, T)
    assert w.frame == "world" and w.num_points == 50
    expected = T[:3, :3] @ cam_pose.position + T[:3, 3]
    np.testing.assert_allclose(w.position, expected, atol=1e-12)
    np.testing.assert_allclose(w.position, [1 + 2 * np.cos(pitch), 2 - 0.1, 1.5 - 2 * np.sin(pitch)], atol=1e-12)
    R = matrix_from_quaternion(w.orientation_xyzw)
    np.testing.assert_allclose(R[:, 2], [0, 0, 1], atol=1e-12)  # z up
    to_cam = T[:3, 3] - w.position
    to_cam[2] = 0
    np.testing.assert_allclose(R[:, 0], to_cam / np.linalg.norm(to_cam), atol=1e-12)  # x toward the camera
    np.testing.assert_allclose(w.extent, cam_pose.extent)
    np.testing.assert_allclose(w.matrix()[:3, 3], w.position)
    with pytest.raises(GeometryError, match="camera-frame"):
        transform_pose(w, T)
    with pytest.raises(GeometryError, match="orthonormal"):
        transform_pose(cam_pose, np.diag([2.0, 1, 1, 1]))


def test_pose_through_a_camera_pose_equals_the_world_points_centre():
    """Render a fronto-parallel patch seen by a rotated camera; the world pose is the patch centre."""
    depth = np.full((60, 80), 2.5, np.float32)
    mask = np.zeros((60, 80), bool)
    mask[10:50, 10:70] = True
    T = np.eye(4)
    T[:3, :3] = _rot([0.3, 1.0, 0.2], 0.7)
    T[:3, 3] = [-1.0, 0.5, 2.0]
    pose = target_pose_from_mask(mask, depth, K, erode_px=0)
    pts_w = backproject(depth, K, mask) @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(transform_pose(pose, T).position, pts_w.mean(axis=0), atol=1e-9)


def test_facing_rotation_degenerate_cases_stay_rotations():
    for to_viewer, up in (([0, 0, 1], [0, 0, 1]), ([0, 0, 0], [0, 0, 1]), ([1, 1, 0], [0, -1, 0])):
        R = facing_rotation(np.array(to_viewer, float), np.array(up, float))
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)


def _pose_on_the_whole_image(mask, d, K, *, erode_px=2, min_points=30, depth_edge_m=0.05):
    """target_pose_from_mask as it was before it cropped to the mask's box (the reference for the crop)."""
    import cv2

    from find_ros.grounding import geometry as g

    usable = np.isfinite(d) & (d > 0)
    if depth_edge_m > 0:
        usable &= ~depth_edges(d, depth_edge_m)
    keep = mask & usable
    if erode_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        eroded = cv2.erode(mask.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        if int((eroded & usable).sum()) >= min_points:
            keep = eroded & usable
    if int(keep.sum()) < min_points:
        return None
    pts = backproject(d, K, keep)
    centre, inl = g.robust_centre(pts)
    if int(inl.sum()) < min_points:
        return None
    R = facing_rotation(-centre, g._CAM_UP)
    lo, hi = np.percentile((pts[inl] - centre) @ R, [g._PCT_LO, g._PCT_HI], axis=0)
    kept = pts[inl]
    if len(kept) > g.MAX_POSE_POINTS:
        kept = kept[np.linspace(0, len(kept) - 1, g.MAX_POSE_POINTS).astype(np.int64)]
    return centre, hi - lo, int(inl.sum()), kept


def test_pose_from_the_masks_box_equals_the_whole_image_computation_bit_for_bit():
    rng = np.random.default_rng(3)
    h, w = 120, 160
    K = np.array([[201.3, 0.7, 79.37], [0, 199.9, 61.113], [0, 0, 1]])  # fractional centre, skew
    for trial in range(40):
        d = (1.0 + rng.random((h, w)) * 0.02).astype(np.float32)
        d[rng.random((h, w)) < 0.05] = 0.0  # holes
        d[:, int(rng.integers(0, w)):] += 0.5  # a depth step somewhere
        mask = np.zeros((h, w), bool)
        y0, x0 = int(rng.integers(0, h - 5)), int(rng.integers(0, w - 5))  # boxes touch the borders sometimes
        mask[y0:y0 + int(rng.integers(3, 60)), x0:x0 + int(rng.integers(3, 80))] = True
        if trial % 3 == 0:
            mask[0, :] = True  # a row along the top edge
        for erode_px, edge in ((2, 0.05), (0, 0.05), (3, 0.0)):
            got = target_pose_from_mask(mask, d, K, erode_px=erode_px, min_points=10, depth_edge_m=edge)
            ref = _pose_on_the_whole_image(mask, d, K, erode_px=erode_px, min_points=10, depth_edge_m=edge)
            assert (got is None) == (ref is None)
            if got is not None:
                assert np.array_equal(got.position, ref[0]) and np.array_equal(got.extent, ref[1])
                assert got.num_points == ref[2] and np.array_equal(got.points, ref[3])


def test_large_masks_take_order_statistics_on_a_sample_with_the_same_pose(monkeypatch):
    """Beyond STATS_SAMPLE points the median / MAD / extent percentiles come from an even sample: on sim objects
    seen close (large masks) the position matches the all-points computation within a millimetre, the extent
    within 0.5 %."""
    from find_ros.grounding import geometry as g
    from find_ros.sim.datasets import SimSequence

    compared = 0
    for seed, i in ((0, 0), (0, 6), (0, 12), (7, 6), (7, 12)):  # objects of 10k-54k pixels
        seq = SimSequence(seed, n_frames=24, width=640, height=480)
        f = seq.renderer.render(seq.poses[i])
        ids, counts = np.unique(f.instance[f.instance > 0], return_counts=True)
        for oid in ids[counts > g.STATS_SAMPLE]:
            mask = f.instance == oid
            sampled = target_pose_from_mask(mask, f.depth, f.K)
            with monkeypatch.context() as m:
                m.setattr(g, "STATS_SAMPLE", 10**9)
                full = target_pose_from_mask(mask, f.depth, f.K)
            assert (sampled is None) == (full is None)
            if full is not None:
                compared += 1
                assert np.abs(sampled.position - full.position).max() < 1e-3
                assert np.all(np.abs(sampled.extent - full.extent) <= 0.005 * full.extent + 1e-4)
                assert abs(sampled.num_points - full.num_points) <= 0.01 * full.num_points
    assert compared >= 4


def test_row_order_statistics_are_numpys_bit_for_bit():
    """The pose's medians and extent percentiles (single-kth partition, sorted rows) equal np.median / np.percentile
    exactly, for odd and even counts, ties and one point."""
    from find_ros.grounding import geometry as g

    rng = np.random.default_rng(11)
    for n in (1, 2, 3, 4, 7, 10, 101, 4096, 8191):
        for _ in range(5):
            a = rng.standard_normal((3, n)) * rng.uniform(0.01, 10.0)
            if rng.random() < 0.4:
                a = np.round(a, 1)  # ties
            assert np.array_equal(g.row_medians(a), np.median(a, axis=1))
            for qs in ((5.0, 95.0), (0.0, 100.0), (1.0, 99.0), (50.0,)):
                for got, ref in zip(g.row_percentiles(a, qs), np.percentile(a, list(qs), axis=1)):
                    assert np.array_equal(got, ref), (n, qs)
