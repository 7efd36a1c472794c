"""Camera poses (optical frame -> world) for simulated streams."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .render import SimFrame, SimRenderer
from .scene import Scene


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) T_world_cam of a camera at ``eye`` looking at ``target``: optical z forward, x right, y down."""
    eye, target, up = (np.asarray(a, dtype=np.float64).reshape(3) for a in (eye, target, up))
    z = target - eye
    n = np.linalg.norm(z)
    if not n > 1e-9:
        raise ValueError(f"eye {eye.tolist()} and target {target.tolist()} coincide")
    z /= n
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking along ``up``: any horizontal right vector will do
        x = np.cross(z, np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def _objects_centre(scene: Scene) -> np.ndarray:
    if not scene.objects:
        return np.array([0.0, 0.0, 0.4])
    c = np.mean([o.center for o in scene.objects], axis=0)
    return np.array([c[0], c[1], min(float(c[2]), 0.5)])


def orbit_trajectory(scene: Scene, n_frames: int, *, radius: float | None = None, height: float = 1.4,
                     target=None) -> list[np.ndarray]:
    """``n_frames`` poses on a circle around the room centre, all looking at ``target`` (default: the mean
    object centre, at most 0.5 m high)."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    w, d, h = scene.room_size
    r = 0.33 * min(w, d) if radius is None else float(radius)
    if not 0 < r < min(w, d) / 2 or not 0 < height < h:
        raise ValueError(f"radius {r} and height {height} must keep the camera inside the room {scene.room_size}")
    tgt = _objects_centre(scene) if target is None else np.asarray(target, dtype=np.float64)
    ang = np.linspace(0.0, 2 * np.pi, int(n_frames), endpoint=False)
    return [look_at((r * np.cos(a), r * np.sin(a), height), tgt) for a in ang]


def _catmull_rom(points: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples of a closed Catmull-Rom spline through ``points`` (K, D)."""
    k = len(points)
    s = np.linspace(0.0, k, n, endpoint=False)
    i = np.floor(s).astype(int)
    t = (s - i)[:, None]
    p0, p1, p2, p3 = (points[(i + o) % k] for o in (-1, 0, 1, 2))
    return 0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)


def walkthrough_trajectory(scene: Scene, n_frames: int, *, seed: int = 0) -> list[np.ndarray]:
    """Smooth closed path through the room at eye height, looking ahead and sweeping left/right, so objects
    come in and out of view. Deterministic by ``seed``."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(seed)
    w, d, h = scene.room_size
    m = 0.7
    k = 6
    ang = np.sort(rng.uniform(0, 2 * np.pi, k)) + np.linspace(0, 0.3, k)
    rad = rng.uniform(0.35, 0.9, (k, 1))
    way = np.concatenate([np.stack([np.cos(ang), np.sin(ang)], 1) * rad * [(w / 2 - m), (d / 2 - m)],
                          rng.uniform(1.1, 1.7, (k, 1))], axis=1)
    p = _catmull_rom(way, int(n_frames))
    p[:, 0] = np.clip(p[:, 0], -w / 2 + 0.3, w / 2 - 0.3)
    p[:, 1] = np.clip(p[:, 1], -d / 2 + 0.3, d / 2 - 0.3)
    p[:, 2] = np.clip(p[:, 2], 0.3, h - 0.3)
    tangent = np.roll(p, -1, axis=0) - np.roll(p, 1, axis=0)
    heading = np.arctan2(tangent[:, 1], tangent[:, 0])
    phase = np.linspace(0, 2 * np.pi, int(n_frames), endpoint=False)
    yaw = heading + np.radians(55.0) * np.sin(3 * phase + rng.uniform(0, 2 * np.pi))
    pitch = np.radians(-22.0) + np.radians(8.0) * np.sin(2 * phase)
    fwd = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)], axis=1)
    return [look_at(e, e + f) for e, f in zip(p, fwd)]


def sim_stream(seed: int, n_frames: int, *, trajectory: str = "orbit", width: int = 640, height: int = 480,
               fps: float = 30.0, scene_kw: dict | None = None, **renderer_kw) -> Iterator[SimFrame]:
    """Frames of ``Scene.generate(seed, **scene_kw)`` along an ``"orbit"`` or ``"walk"`` trajectory."""
    if trajectory not in ("orbit", "walk"):
        raise ValueError(f"trajectory must be 'orbit' or 'walk', got {trajectory!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    scene = Scene.generate(seed, **(scene_kw or {}))
    poses = (orbit_trajectory(scene, n_frames) if trajectory == "orbit"
             else walkthrough_trajectory(scene, n_frames, seed=seed))
    renderer = SimRenderer(scene, width=width, height=height, **renderer_kw)
    for i, T in enumerate(poses):
        yield renderer.render(T, index=i, time_s=i / fps)
