"""find_ros.geometry: the one quaternion / pose implementation, against Rodrigues' formula and its edge cases."""
from __future__ import annotations

import numpy as np
import pytest

from find_ros.geometry import (MIN_QUATERNION_NORM, RIGID_TOLERANCE, GeometryError, matrix_from_quaternion,
                               matrix_to_pose, pose_to_matrix, quaternion_from_matrix)


def _rot(axis, angle) -> np.ndarray:
    """Rodrigues' rotation matrix: an independent reference for the quaternion formulas."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    x = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * x + (1 - np.cos(angle)) * x @ x


def _quat(axis, angle) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.array([*(a * np.sin(angle / 2)), np.cos(angle / 2)])


def test_matrix_from_quaternion_matches_rodrigues():
    rng = np.random.default_rng(0)
    for _ in range(100):
        axis, angle = rng.normal(size=3), rng.uniform(-np.pi, np.pi)
        np.testing.assert_allclose(matrix_from_quaternion(_quat(axis, angle)), _rot(axis, angle), atol=1e-12)


def test_quaternion_of_a_transform_is_that_of_its_rotation_block():
    rng = np.random.default_rng(1)
    for _ in range(100):
        q = rng.normal(size=4)
        R = matrix_from_quaternion(q)
        assert np.linalg.det(R) == pytest.approx(1.0)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, rng.normal(size=3)
        q2 = quaternion_from_matrix(T)
        np.testing.assert_array_equal(q2, quaternion_from_matrix(R))
        assert q2[3] >= 0 and np.linalg.norm(q2) == pytest.approx(1.0)
        np.testing.assert_allclose(abs(np.dot(q2, q / np.linalg.norm(q))), 1.0, atol=1e-12)


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, -2, 3), (-1, -1, -1)])
@pytest.mark.parametrize("angle", [np.pi, np.pi - 1e-9, np.pi - 1e-4, -(np.pi - 1e-6)])
def test_near_180_degree_rotations_take_the_stable_branches(axis, angle):
    """At (and near) 180 degrees w is ~0: the trace branch divides by ~0, the x / y / z branches stay exact."""
    R = _rot(axis, angle)
    q = quaternion_from_matrix(R)
    ref = _quat(axis, angle)
    ref = ref if ref[3] >= 0 else -ref
    if angle == np.pi:  # w = 0: q and -q are both "w >= 0"
        assert abs(q[3]) < 1e-12
        np.testing.assert_allclose(abs(np.dot(q, ref)), 1.0, atol=1e-12)
    else:
        np.testing.assert_allclose(q, ref, atol=1e-9)
    np.testing.assert_allclose(matrix_from_quaternion(q), R, atol=1e-12)


def test_each_branch_by_hand():
    np.testing.assert_allclose(quaternion_from_matrix(np.eye(3)), [0, 0, 0, 1], atol=0)
    np.testing.assert_allclose(quaternion_from_matrix(_rot([0, 0, 1], np.pi / 2)),
                               [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    for i, R in enumerate((np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]))):
        np.testing.assert_allclose(np.abs(quaternion_from_matrix(R)), np.eye(4)[i], atol=1e-12)


def test_non_normalised_quaternions_are_normalised():
    rng = np.random.default_rng(2)
    for scale in (1e-6, 0.3, 7.0, 1e6):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(matrix_from_quaternion(scale * q), matrix_from_quaternion(q), atol=1e-12)
        np.testing.assert_allclose(pose_to_matrix([1, 2, 3], scale * q)[:3, :3], matrix_from_quaternion(q),
                                   atol=1e-12)
    # just above the floor still normalises; below it has no direction
    np.testing.assert_allclose(matrix_from_quaternion([0, 0, 0, 2 * MIN_QUATERNION_NORM]), np.eye(3), atol=0)
    with pytest.raises(GeometryError, match="quaternion"):
        matrix_from_quaternion([0, 0, 0, MIN_QUATERNION_NORM / 2])


@pytest.mark.parametrize("q", [np.zeros(4), [np.nan, 0, 0, 1], [0, np.inf, 0, 1], np.ones(3), np.ones((2, 2))])
def test_unusable_quaternions_raise(q):
    with pytest.raises(GeometryError, match="quaternion") as e:
        matrix_from_quaternion(q)
    assert isinstance(e.value, ValueError)
    with pytest.raises(GeometryError, match="quaternion"):
        pose_to_matrix([0, 0, 0], q)


def test_pose_matrix_round_trips():
    rng = np.random.default_rng(3)
    for _ in range(200):
        t, q = rng.normal(size=3), rng.normal(size=4)
        T = pose_to_matrix(t, q)
        assert T.dtype == np.float64 and T.shape == (4, 4)
        np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
        np.testing.assert_array_equal(T[:3, 3], t)
        t2, q2 = matrix_to_pose(T)
        np.testing.assert_array_equal(t2, t)
        assert q2[3] >= 0
        np.testing.assert_allclose(abs(np.dot(q2, q / np.linalg.norm(q))), 1.0, atol=1e-12)
        np.testing.assert_allclose(pose_to_matrix(t2, q2), T, atol=1e-12)
    # the position returned is a copy, not a view of the caller's matrix
    T = np.eye(4)
    t, _ = matrix_to_pose(T)
    t[0] = 5.0
    assert T[0, 3] == 0.0


def test_matrix_to_pose_accepts_a_rotation_within_tolerance():
    T = np.eye(4)
    T[:3, :3] = _rot([0, 1, 0], 0.3) * (1 + RIGID_TOLERANCE / 4)
    _, q = matrix_to_pose(T)
    np.testing.assert_allclose(q, _quat([0, 1, 0], 0.3), atol=1e-3)
    assert np.linalg.norm(q) == pytest.approx(1.0)


@pytest.mark.parametrize("T, match", [
    (np.eye(3), "4x4"),
    (np.full((4, 4), np.nan), "non-finite"),
    (np.diag([2.0, 1, 1, 1]), "not a proper rotation"),
    (np.diag([-1.0, 1, 1, 1]), "not a proper rotation"),  # a reflection: det = -1
])
def test_matrix_to_pose_rejects_non_rigid_transforms(T, match):
    with pytest.raises(GeometryError, match=match):
        matrix_to_pose(T)


@pytest.mark.parametrize("t", [[np.nan, 0, 0], [0, 0, np.inf], [1, 2], [[1, 2, 3]]])
def test_pose_to_matrix_rejects_a_bad_position(t):
    with pytest.raises(GeometryError, match="position"):
        pose_to_matrix(t, [0, 0, 0, 1])


def test_quaternion_from_matrix_rejects_other_shapes():
    with pytest.raises(GeometryError, match="rotation"):
        quaternion_from_matrix(np.eye(2))


def test_every_layer_uses_this_implementation():
    from find_ros import geometry
    from find_ros.grounding import geometry as grounding_geometry
    from find_ros.sim import bag, datasets

    assert grounding_geometry.GeometryError is geometry.GeometryError
    assert grounding_geometry.quaternion_from_matrix is geometry.quaternion_from_matrix
    assert grounding_geometry.matrix_from_quaternion is geometry.matrix_from_quaternion
    assert datasets.quat_to_matrix is geometry.pose_to_matrix
    assert bag.matrix_to_pose is geometry.matrix_to_pose
