"""Rigid-transform maths shared by every layer (pure numpy): quaternion <-> rotation matrix, pose <-> 4x4.

Quaternions are ``(x, y, z, w)``, the order of ``geometry_msgs/Quaternion``, tf2 and TUM RGB-D. This module is the
one implementation of these conversions: :mod:`find_ros.ros.conversions` (``Pose`` messages),
:mod:`find_ros.grounding.geometry` (target poses), :mod:`find_ros.sim.datasets` (TUM / 7-Scenes poses) and
:mod:`find_ros.sim.bag` (rosbags poses) call it and map :class:`GeometryError` to their own error types where
they have one. Like :mod:`find_ros.instruction` it imports nothing of the package, so any layer may use it.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "GeometryError",
    "MIN_QUATERNION_NORM",
    "RIGID_TOLERANCE",
    "quaternion_from_matrix",
    "matrix_from_quaternion",
    "pose_to_matrix",
    "matrix_to_pose",
]

MIN_QUATERNION_NORM = 1e-9
"""A quaternion with a smaller norm has no direction to normalise to: :class:`GeometryError`."""
RIGID_TOLERANCE = 1e-3
"""Largest ``|R R^T - I|`` entry :func:`matrix_to_pose` accepts as a rotation."""


class GeometryError(ValueError):
    """Inputs of the geometry functions with the wrong shape, type or values; the message names them."""


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (x, y, z, w) with w >= 0 of a (3, 3) rotation matrix (or the rotation of a (4, 4)).

    Shepperd's method: the branch is the largest of (w, x, y, z), so 180-degree rotations (w = 0, trace -1)
    stay exact. The rotation is not checked for orthonormality (:func:`matrix_to_pose` checks it)."""
    m = np.asarray(R, dtype=np.float64)
    if m.shape == (4, 4):
        m = m[:3, :3]
    if m.shape != (3, 3):
        raise GeometryError(f"rotation must be (3, 3) or (4, 4), got {m.shape}")
    # python floats: a pose is converted per message on the node's callback path, where numpy scalars cost 2-3x
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = m.tolist()
    tr = m00 + m11 + m22
    cands = (tr, m00, m11, m22)
    i = max(range(4), key=cands.__getitem__)  # the first largest, as np.argmax
    if i == 0:
        s = 2.0 * math.sqrt(max(1.0 + tr, 1e-300))
        q = ((m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s, 0.25 * s)
    elif i == 1:
        s = 2.0 * math.sqrt(max(1.0 + m00 - m11 - m22, 1e-300))
        q = (0.25 * s, (m01 + m10) / s, (m02 + m20) / s, (m21 - m12) / s)
    elif i == 2:
        s = 2.0 * math.sqrt(max(1.0 + m11 - m00 - m22, 1e-300))
        q = ((m01 + m10) / s, 0.25 * s, (m12 + m21) / s, (m02 - m20) / s)
    else:
        s = 2.0 * math.sqrt(max(1.0 + m22 - m00 - m11, 1e-300))
        q = ((m02 + m20) / s, (m12 + m21) / s, 0.25 * s, (m10 - m01) / s)
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    if q[3] < 0:
        n = -n
    return np.array([q[0] / n, q[1] / n, q[2] / n, q[3] / n])


def _unit_quaternion(q_xyzw: np.ndarray) -> tuple[float, float, float, float]:
    q = np.asarray(q_xyzw, dtype=np.float64)
    if q.shape == (4,):
        x, y, z, w = q.tolist()
        n = math.sqrt(x * x + y * y + z * z + w * w)
        if math.isfinite(n) and n >= MIN_QUATERNION_NORM:
            return x / n, y / n, z / n, w / n
    raise GeometryError(f"quaternion (x, y, z, w) must be 4 finite numbers with a non-zero norm, got {q.tolist()}")


def _rotation_rows(x: float, y: float, z: float, w: float) -> list[list[float]]:
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]


def matrix_from_quaternion(q_xyzw: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (x, y, z, w); the quaternion is normalised first.

    :class:`GeometryError` for another shape, a non-finite value or a norm below :data:`MIN_QUATERNION_NORM`."""
    return np.array(_rotation_rows(*_unit_quaternion(q_xyzw)))


def pose_to_matrix(position: np.ndarray, orientation_xyzw: np.ndarray) -> np.ndarray:
    """(4, 4) float64 homogeneous transform of a position (3,) and a quaternion (x, y, z, w), normalised first.

    :class:`GeometryError` for a bad quaternion (:func:`matrix_from_quaternion`) or a non-finite position."""
    rows = _rotation_rows(*_unit_quaternion(orientation_xyzw))
    t = np.asarray(position, dtype=np.float64)
    if t.shape != (3,) or not all(map(math.isfinite, t.tolist())):
        raise GeometryError(f"position must be 3 finite numbers, got {t.tolist()}")
    for row, v in zip(rows, t.tolist()):
        row.append(v)
    rows.append([0.0, 0.0, 0.0, 1.0])
    return np.array(rows)


def matrix_to_pose(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(position (3,), quaternion (x, y, z, w) (4,), w >= 0)`` of a 4x4 rigid transform.

    :class:`GeometryError` for another shape, a non-finite value, or a rotation block that is not a proper
    rotation within :data:`RIGID_TOLERANCE` (the bottom row is not checked)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise GeometryError(f"expected a finite 4x4 transform, got shape {T.shape}"
                            + (" with non-finite values" if T.shape == (4, 4) else ""))
    R = T[:3, :3]
    err = float(np.abs(R @ R.T - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if err > RIGID_TOLERANCE or det < 0:
        raise GeometryError(f"rotation block is not a proper rotation (|R R^T - I| = {err:.3g}, det = {det:.3g})")
    return T[:3, 3].copy(), quaternion_from_matrix(R)
