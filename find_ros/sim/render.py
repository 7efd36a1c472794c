"""Ray-cast RGB-D renderer for a ``Scene`` (open3d RaycastingScene, one ``cast_rays`` per frame)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d

from .scene import ROOM_COLOURS, ObjectSpec, Scene

LOG = logging.getLogger(__name__)

LIGHT_DIR = np.array([0.35, 0.25, 1.0]) / np.linalg.norm([0.35, 0.25, 1.0])
"""Direction towards the fixed light, world frame."""
AMBIENT = 0.35
"""Ambient shading term; diffuse adds up to ``1 - AMBIENT``."""


@dataclass
class SimFrame:
    """One rendered RGB-D frame with ground truth."""

    color: np.ndarray
    """(H, W, 3) uint8 RGB."""
    depth: np.ndarray
    """(H, W) float32 depth along the optical axis, metres; 0.0 = invalid."""
    K: np.ndarray
    """(3, 3) float64 pinhole intrinsics."""
    T_world_cam: np.ndarray
    """(4, 4) float64 pose of the camera optical frame (x right, y down, z forward) in the world (z up)."""
    instance: np.ndarray
    """(H, W) int32 object id per pixel, 0 = room."""
    objects: list[ObjectSpec]
    """All objects of the scene."""
    index: int
    """Frame index in its stream."""
    time_s: float
    """Frame time, seconds."""


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """Pinhole K with square pixels, horizontal field of view ``fov_deg`` and the principal point at the centre."""
    if not (0.0 < fov_deg < 180.0):
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _check_pose(T) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T_world_cam must be a finite (4, 4) matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4):
        raise ValueError(f"T_world_cam rotation is not orthonormal: {R.tolist()}")
    return T


class SimRenderer:
    """Renders colour, metric depth and instance ids of a ``Scene`` from a camera pose."""

    def __init__(self, scene: Scene, *, width: int = 640, height: int = 480, fov_deg: float = 60.0,
                 shading: bool = True, noise_std: float = 0.0, invalid_depth: bool = False, max_range: float = 8.0,
                 seed: int = 0) -> None:
        """``noise_std``: Gaussian depth noise, metres. ``invalid_depth``: zero depth beyond ``max_range``, at
        grazing angles and in random dropout blobs. ``seed`` drives noise and dropout (per frame index)."""
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if noise_std < 0 or max_range <= 0:
            raise ValueError(f"noise_std must be >= 0 and max_range > 0, got {noise_std}, {max_range}")
        self.scene = scene
        self.width, self.height = int(width), int(height)
        self.shading, self.noise_std = bool(shading), float(noise_std)
        self.invalid_depth, self.max_range, self.seed = bool(invalid_depth), float(max_range), int(seed)
        self._K = intrinsics(self.width, self.height, float(fov_deg))
        # camera-frame ray directions with z = 1, so the ray parameter of a hit is its optical depth
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        self._dirs_cam = np.stack([(u - self._K[0, 2]) / self._K[0, 0], (v - self._K[1, 2]) / self._K[1, 1],
                                   np.ones_like(u)], axis=-1).reshape(-1, 3).astype(np.float32)
        self._dirs_x = np.ascontiguousarray(self._dirs_cam[:, 0])
        self._dirs_y = np.ascontiguousarray(self._dirs_cam[:, 1])
        self._rays = np.empty((self.width * self.height, 6), dtype=np.float32)
        self._rcs = o3d.t.geometry.RaycastingScene()
        ids, albedo, kind = [], [], []  # per geometry id: instance id, albedo, surface kind (0 obj, 1 floor, 2 wall)
        for name, (vtx, tri) in scene._room.items():
            self._rcs.add_triangles(o3d.core.Tensor(vtx), o3d.core.Tensor(tri))
            key = "floor" if name == "floor" else ("ceiling" if name == "ceiling" else "wall")
            ids.append(0)
            albedo.append(ROOM_COLOURS[key])
            kind.append({"floor": 1, "wall": 2, "ceiling": 3}[key])
        for o in scene.objects:
            vtx, tri = scene._meshes[o.id]
            self._rcs.add_triangles(o3d.core.Tensor(vtx), o3d.core.Tensor(tri))
            ids.append(o.id)
            albedo.append(tuple(o.rgb))
            kind.append(0)
        # one extra entry for "no hit" (the lookup index is clipped there)
        self._geom_instance = np.array(ids + [0], dtype=np.int32)
        self._geom_albedo = np.array(albedo + [(0.0, 0.0, 0.0)], dtype=np.float32)
        self._geom_kind = np.array(kind + [-1], dtype=np.int8)
        self._geom_albedo255 = self._geom_albedo * np.float32(255.0)
        self._light = LIGHT_DIR.astype(np.float32)
        self._n_geom = len(ids)
        # The light is fixed in the world and faces are flat, so a face's shaded colour never changes: one
        # uint8 colour per triangle (plus a trailing black "no hit" entry), looked up per pixel by
        # geometry offset + primitive id. Same formula as the per-pixel path used with texture.
        meshes = [scene._room[n] for n in scene._room] + [scene._meshes[o.id] for o in scene.objects]
        counts = np.array([len(tri) for _, tri in meshes], dtype=np.int64)
        self._tri_offset = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # per geometry id (+ miss)
        tri_rgb = []
        for gi, (vtx, tri) in enumerate(meshes):
            v = np.asarray(vtx, dtype=np.float32)
            t = np.asarray(tri, dtype=np.int64)
            n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), np.float32(1e-12))
            shade = np.ones(len(t), np.float32)
            if self.shading:
                shade = np.abs(n @ self._light) * np.float32(1.0 - AMBIENT) + np.float32(AMBIENT)
            tri_rgb.append(self._geom_albedo255[gi][None, :] * shade[:, None] + np.float32(0.5))
        tri_rgb.append(np.zeros((1, 3), np.float32))
        self._tri_rgb = np.concatenate(tri_rgb).astype(np.uint8)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 intrinsics."""
        return self._K.copy()

    def render(self, T_world_cam: np.ndarray, *, index: int = 0, time_s: float = 0.0) -> SimFrame:
        """Render the scene from ``T_world_cam`` (optical frame -> world)."""
        T = _check_pose(T_world_cam)
        R = T[:3, :3].astype(np.float32)
        H, W = self.height, self.width
        rays = self._rays
        rays[:, :3] = T[:3, 3]
        # world direction = R @ (x, y, 1), one column at a time: numpy's (N,3)@(3,3) matmul is ~100x slower here
        x, y = self._dirs_x, self._dirs_y
        for i in range(3):
            np.multiply(x, R[i, 0], out=rays[:, 3 + i])
            rays[:, 3 + i] += y * R[i, 1]
            rays[:, 3 + i] += R[i, 2]
        ans = self._rcs.cast_rays(o3d.core.Tensor.from_numpy(rays))
        t = ans["t_hit"].numpy()
        # misses carry geometry id 2**32 - 1 and t = inf: clip them onto the trailing "no hit" table entry
        g = np.minimum(ans["geometry_ids"].numpy(), np.uint32(self._n_geom))
        miss = g == self._n_geom
        depth = np.where(miss, np.float32(0.0), t) if miss.any() else t
        instance = np.take(self._geom_instance, g)
        normals = ans["primitive_normals"].numpy()
        if self.scene.texture:
            color = np.take(self._geom_albedo255, g, axis=0)
            color *= self._texture(rays, depth, np.take(self._geom_kind, g))[:, None]
            if self.shading:
                shade = np.abs(normals @ self._light)
                shade *= np.float32(1.0 - AMBIENT)
                shade += np.float32(AMBIENT)
                color *= shade[:, None]
            color += np.float32(0.5)  # round; values stay within [0.5, 255.5]
            color = color.astype(np.uint8)
        else:  # per-triangle colour table; misses go to its trailing black entry
            tri = np.take(self._tri_offset, g)
            tri += ans["primitive_ids"].numpy()
            tri[miss] = len(self._tri_rgb) - 1
            color = np.take(self._tri_rgb, tri, axis=0)
        if self.noise_std > 0 or self.invalid_depth:
            depth = self._degrade(depth, rays, normals, index)
        return SimFrame(color=color.reshape(H, W, 3), depth=depth.reshape(H, W), K=self._K.copy(), T_world_cam=T.copy(),
                        instance=instance.reshape(H, W), objects=list(self.scene.objects), index=int(index),
                        time_s=float(time_s))

    @staticmethod
    def _texture(rays: np.ndarray, depth: np.ndarray, kind: np.ndarray) -> np.ndarray:
        """Brightness factor: 0.5 m checker on the floor, 0.5 m vertical stripes on the walls, 1 elsewhere."""
        p = rays[:, :3] + rays[:, 3:] * depth[:, None]
        cell = np.floor(p / 0.5).astype(np.int64)
        checker = ((cell[:, 0] + cell[:, 1]) & 1).astype(np.float32)
        stripes = ((cell[:, 0] + cell[:, 1]) & 1).astype(np.float32)  # along the wall, x or y changes
        f = np.ones(len(depth), dtype=np.float32)
        f = np.where(kind == 1, 1.0 - 0.25 * checker, f)
        f = np.where(kind == 2, 1.0 - 0.12 * stripes, f)
        return f

    def _degrade(self, depth: np.ndarray, rays: np.ndarray, normals: np.ndarray, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(index)])
        d = depth.copy()
        valid = d > 0
        if self.noise_std > 0:
            d = np.where(valid, d + rng.normal(0.0, self.noise_std, d.shape).astype(np.float32), 0.0)
            d = np.where(d > 0, d, 0.0).astype(np.float32)
        if self.invalid_depth:
            dirs = rays[:, 3:]
            cos_v = np.abs(np.sum(dirs * normals, axis=1)) / np.linalg.norm(dirs, axis=1)
            bad = (d > self.max_range) | (cos_v < 0.1)
            # dropout blobs: thresholded smooth noise, about 3 % of the image
            H, W = self.height, self.width
            coarse = rng.random((max(2, H // 24), max(2, W // 24))).astype(np.float32)
            blobs = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC).reshape(-1) > 0.93
            d = np.where(bad | blobs, 0.0, d).astype(np.float32)
        return d
