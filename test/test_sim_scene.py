"""Simulated RGB-D world: scenes, real open3d ray casting, camera convention, trajectories."""
from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest

from find_ros import sim

W, H = 160, 120


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*np.asarray(rgb, float))[0] * 360.0


def _backproject(frame: sim.SimFrame) -> np.ndarray:
    """World points (H, W, 3) of every pixel from depth, K and T_world_cam."""
    K, T = frame.K, frame.T_world_cam
    v, u = np.mgrid[0:frame.depth.shape[0], 0:frame.depth.shape[1]]
    z = frame.depth
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    return pc @ T[:3, :3].T + T[:3, 3]


@pytest.fixture(scope="module")
def scene():
    return sim.Scene.generate(7, n_objects=(6, 8))


@pytest.fixture(scope="module")
def frames(scene):
    r = sim.SimRenderer(scene, width=W, height=H)
    return [r.render(T, index=i) for i, T in enumerate(sim.orbit_trajectory(scene, 6))]


def test_generate_deterministic_and_in_range():
    a, b = sim.Scene.generate(11), sim.Scene.generate(11)
    assert [o.to_json() for o in a.objects] == [o.to_json() for o in b.objects]
    assert a.room_size == b.room_size
    c = sim.Scene.generate(12)
    assert [o.to_json() for o in a.objects] != [o.to_json() for o in c.objects]
    for seed in range(8):
        s = sim.Scene.generate(seed, n_objects=(2, 5))
        assert 2 <= len(s.objects) <= 5
        assert [o.id for o in s.objects] == list(range(1, len(s.objects) + 1))
        for o in s.objects:
            assert o.category in sim.CATEGORIES and o.colour in sim.COLOURS and o.size in sim.SIZES
            assert np.all(o.box_min >= s.room_min - 1e-6) and np.all(o.box_max <= s.room_max + 1e-6)
            assert o.box_min[2] >= -1e-6  # standing on the floor or on a table, never below
            assert o.describe() == f"{o.size} {o.colour} {o.category}"


def test_objects_do_not_overlap_and_some_stand_on_tables():
    on_table = 0
    for seed in range(25):
        s = sim.Scene.generate(seed, n_objects=(6, 10), categories=["table", "cube", "mug", "sphere", "cone"])
        objs = s.objects
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                inter = np.minimum(a.box_max, b.box_max) - np.maximum(a.box_min, b.box_min)
                assert not np.all(inter > 1e-4), (seed, a.describe(), b.describe())
            if a.on:
                t = s.object(a.on)
                assert t.category == "table"
                assert a.box_min[2] == pytest.approx(t.box_max[2], abs=1e-5)
                on_table += 1
    assert on_table > 0


def test_exclude_and_filters_honoured():
    def exclude(category, colour, size):
        return category == "cube" or colour == "red"

    for seed in range(10):
        s = sim.Scene.generate(seed, n_objects=(5, 8), exclude=exclude)
        assert all(o.category != "cube" and o.colour != "red" for o in s.objects)
    s = sim.Scene.generate(3, n_objects=(4, 4), categories=["sphere"], colours=["blue", "green"], sizes=["small"])
    assert {o.category for o in s.objects} == {"sphere"} and {o.size for o in s.objects} == {"small"}
    assert {o.colour for o in s.objects} <= {"blue", "green"}
    with pytest.raises(ValueError, match="excluded"):
        sim.Scene.generate(0, categories=["cube"], exclude=exclude)
    with pytest.raises(ValueError, match="teapot"):
        sim.Scene.generate(0, categories=["teapot"])


def test_to_json_is_plain():
    s = sim.Scene.generate(5)
    txt = json.dumps([o.to_json() for o in s.objects])
    back = json.loads(txt)
    assert back[0]["description"] == s.objects[0].describe()
    assert set(back[0]) >= {"id", "category", "colour", "size", "center", "box_min", "box_max", "description"}


def test_render_deterministic_and_typed(scene):
    T = sim.orbit_trajectory(scene, 4)[1]
    kw = dict(width=W, height=H, noise_std=0.01, invalid_depth=True, seed=3)
    a = sim.SimRenderer(scene, **kw).render(T, index=5)
    b = sim.SimRenderer(scene, **kw).render(T, index=5)
    for x, y in ((a.color, b.color), (a.depth, b.depth), (a.instance, b.instance)):
        assert np.array_equal(x, y)
    assert a.color.shape == (H, W, 3) and a.color.dtype == np.uint8
    assert a.depth.shape == (H, W) and a.depth.dtype == np.float32
    assert a.instance.shape == (H, W) and a.instance.dtype == np.int32
    assert a.K.dtype == np.float64 and a.T_world_cam.shape == (4, 4)
    c = sim.SimRenderer(scene, **kw).render(T, index=6)  # other frame index -> other noise
    assert not np.array_equal(a.depth, c.depth)


def test_instances_match_objects_and_colours(scene, frames):
    seen = set()
    by_id = {o.id: o for o in scene.objects}
    for f in frames:
        assert f.objects == scene.objects
        ids = set(np.unique(f.instance).tolist()) - {0}
        assert ids <= set(by_id)
        for oid in ids:
            o = by_id[oid]
            px = f.color[f.instance == oid].astype(float) / 255.0
            if len(px) < 10:
                continue
            seen.add(oid)
            hsv = np.array([colorsys.rgb_to_hsv(*p) for p in px[:: max(1, len(px) // 200)]])
            if max(o.rgb) - min(o.rgb) > 0.3:  # chromatic: hue preserved by shading
                dh = np.abs((hsv[:, 0] * 360 - _hue(o.rgb) + 180) % 360 - 180)
                assert np.mean(dh < 12) > 0.95, (o.describe(), np.median(dh))
            else:  # white / black / grey stay unsaturated
                assert np.median(hsv[:, 1]) < 0.1, o.describe()
    assert len(seen) >= 3


def test_depth_backprojects_onto_object_boxes(scene, frames):
    by_id = {o.id: o for o in scene.objects}
    checked = 0
    for f in frames:
        assert np.all(f.depth > 0)  # closed room, no invalidation requested
        P = _backproject(f)
        for oid in set(np.unique(f.instance).tolist()) - {0}:
            o = by_id[oid]
            p = P[f.instance == oid]
            inside = np.all((p >= o.box_min - 0.02) & (p <= o.box_max + 0.02), axis=1)
            assert inside.all(), (o.describe(), p[~inside][:3])
            checked += 1
        room = P[f.instance == 0]
        assert np.all(room >= scene.room_min - 0.02) and np.all(room <= scene.room_max + 0.02)
    assert checked >= 3


def test_optical_convention_object_ahead_projects_to_centre():
    s = sim.Scene.with_objects(0, [{"category": "sphere", "colour": "red", "size": "medium", "xy": (1.5, 0.5)}])
    o = s.objects[0]
    eye = np.array([-1.5, 0.5, o.center[2]])
    T = sim.look_at(eye, o.center)
    assert np.allclose(T[:3, 2], [1, 0, 0])  # optical z forward
    assert np.allclose(T[:3, 0], [0, -1, 0])  # x right of the view direction
    assert np.allclose(T[:3, 1], [0, 0, -1])  # y down
    r = sim.SimRenderer(s, width=W, height=H, fov_deg=60.0)
    f = r.render(T)
    v, u = np.nonzero(f.instance == o.id)
    assert abs(u.mean() - r.K[0, 2]) < 1.0 and abs(v.mean() - r.K[1, 2]) < 1.0
    # the nearest point of the sphere is 3 m minus its radius ahead
    radius = (o.box_max[0] - o.box_min[0]) / 2
    assert f.depth[H // 2, W // 2] == pytest.approx(3.0 - radius, abs=0.01)
    # moving the camera right (its +x) moves the object left in the image
    T2 = T.copy()
    T2[:3, 3] += 0.3 * T[:3, 0]
    _, u2 = np.nonzero(r.render(T2).instance == o.id)
    assert u2.mean() < u.mean() - 5


def test_invalid_depth_and_noise(scene, frames):
    T = frames[0].T_world_cam
    clean = sim.SimRenderer(scene, width=W, height=H).render(T)
    bad = sim.SimRenderer(scene, width=W, height=H, invalid_depth=True, max_range=3.0, seed=1).render(T)
    assert (bad.depth == 0).mean() > 0.02
    assert np.all(bad.depth[clean.depth > 3.0] == 0)
    ok = bad.depth > 0
    assert np.array_equal(bad.depth[ok], clean.depth[ok])
    noisy = sim.SimRenderer(scene, width=W, height=H, noise_std=0.01, seed=1).render(T)
    err = noisy.depth - clean.depth
    assert 0.005 < err.std() < 0.02 and abs(err.mean()) < 0.002


def test_shading_and_texture_change_colour_not_geometry():
    s = sim.Scene.generate(4, texture=True)
    T = sim.orbit_trajectory(s, 3)[0]
    a = sim.SimRenderer(s, width=W, height=H).render(T)
    flat = sim.SimRenderer(s, width=W, height=H, shading=False).render(T)
    assert np.array_equal(a.depth, flat.depth) and np.array_equal(a.instance, flat.instance)
    assert not np.array_equal(a.color, flat.color)
    P = _backproject(flat)
    inner = np.all(np.abs(P[..., :2]) < np.array(s.room_size[:2]) / 2 - 0.05, axis=-1)
    floor = (flat.instance == 0) & (np.abs(P[..., 2]) < 1e-3) & inner
    assert len(np.unique(flat.color[floor], axis=0)) == 2  # checker: two floor shades


def test_trajectories_stay_in_room_and_view_objects(scene):
    for poses in (sim.orbit_trajectory(scene, 12), sim.walkthrough_trajectory(scene, 40, seed=2)):
        assert len(poses) in (12, 40)
        for T in poses:
            assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
            assert np.all(T[:3, 3] > scene.room_min) and np.all(T[:3, 3] < scene.room_max)
    walk = sim.walkthrough_trajectory(scene, 40, seed=2)
    assert np.array_equal(np.array(walk), np.array(sim.walkthrough_trajectory(scene, 40, seed=2)))
    steps = np.linalg.norm(np.diff([T[:3, 3] for T in walk], axis=0), axis=1)
    assert steps.max() < 4 * np.median(steps) + 1e-6  # smooth, no jumps
    r = sim.SimRenderer(scene, width=80, height=60)
    visible = [set(np.unique(r.render(T).instance).tolist()) - {0} for T in walk]
    assert len(set().union(*visible)) >= 2 and len({frozenset(v) for v in visible}) >= 2


def test_sim_stream():
    fr = list(sim.sim_stream(2, 3, trajectory="walk", width=64, height=48, fps=10.0))
    assert [f.index for f in fr] == [0, 1, 2] and [f.time_s for f in fr] == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="spiral"):
        next(sim.sim_stream(2, 3, trajectory="spiral"))


def test_bad_inputs_raise():
    s = sim.Scene.generate(1)
    r = sim.SimRenderer(s, width=32, height=24)
    with pytest.raises(ValueError, match="shape"):
        r.render(np.eye(3))
    with pytest.raises(ValueError, match="coincide"):
        sim.look_at((1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="n_objects"):
        sim.Scene.generate(0, n_objects=(5, 2))
