"""Multi-view shape memory of a track: the published world position converges to the object's centre."""
import numpy as np
import pytest

from find_ros.grounding.pipeline import PipelineConfig, VideoGrounder
from find_ros.grounding.baseline import HsvBaselineGrounder
from find_ros.tools.grounding_eval import EvalConfig, main as sim_eval_main, pick_target, run as sim_eval_run
from find_ros.grounding.tracking import Detection, EntityTracker, ShapeMemory
from find_ros.instruction import parse_instruction


def face(axis, value, lo, hi, n=30):
    """Points on the face ``axis = value`` of the box [lo, hi]."""
    others = [a for a in range(3) if a != axis]
    g = np.stack(np.meshgrid(np.linspace(lo[others[0]], hi[others[0]], n),
                             np.linspace(lo[others[1]], hi[others[1]], n)), -1).reshape(-1, 2)
    p = np.empty((len(g), 3))
    p[:, axis], p[:, others[0]], p[:, others[1]] = value, g[:, 0], g[:, 1]
    return p


LO, HI = np.array([1.0, 2.0, 0.0]), np.array([1.4, 2.3, 0.5])


def test_shape_memory_centre_converges_with_more_sides():
    s = ShapeMemory(0.01, 100_000)
    assert s.centre() is None and len(s) == 0
    front = face(0, LO[0], LO, HI)  # only the face toward a camera at -x
    s.add(front)
    s.add(front)
    c1 = s.centre()
    assert c1[0] == pytest.approx(LO[0], abs=0.01)  # one face: the box is flat at x = 1.0
    np.testing.assert_allclose(c1[1:], ((LO + HI) / 2)[1:], atol=0.01)
    for pts in (face(2, HI[2], LO, HI), face(0, HI[0], LO, HI)):  # top, back: seen twice each
        s.add(pts)
        s.add(pts)
    np.testing.assert_allclose(s.centre(), (LO + HI) / 2, atol=0.01)


def test_shape_memory_ignores_one_off_leaks_and_keeps_its_cap():
    s = ShapeMemory(0.02, 500)
    pts = face(2, HI[2], LO, HI)
    s.add(pts)
    s.add(pts)
    before = s.centre()
    s.add(np.array([[5.0, 5.0, 5.0], [np.nan, 0, 0]]))  # a single stray point (and a NaN) in one frame
    np.testing.assert_allclose(s.centre(), before)
    with pytest.raises(ValueError):
        ShapeMemory(0.0, 10)
    s.add(np.array([[1e6, 0.0, 0.0]]))  # beyond the key range around the object: dropped, counted
    assert s.dropped_points == 1
    np.testing.assert_allclose(s.centre(), before)


def test_shape_memory_cap_keeps_the_current_view():
    s = ShapeMemory(0.01, 1500)
    front = face(0, LO[0], LO, HI)
    for _ in range(3):
        s.add(front)  # ~900 voxels seen three times
    back = face(0, HI[0], LO, HI)
    s.add(back)  # over the cap: the new side is kept, the least-hit old voxels go
    assert len(s) == 1500
    v = s.voxel_centres()
    assert np.sum(np.abs(v[:, 0] - HI[0]) < 0.01) >= 800  # the back face is in
    far = ShapeMemory(0.01, 100)
    far.add(np.array([[7.0e5, -3.0e5, 12.0]]) + face(2, 0.5, LO, HI)[:50])  # UTM-like coordinates work
    assert far.dropped_points == 0 and far.centre()[0] == pytest.approx(7.0e5 + 1.2, abs=0.3)


def test_tracker_reacquires_from_the_other_side_of_a_large_object():
    cfg = PipelineConfig(lost_after_frames=2, assoc_max_dist_m=0.1)
    tr = EntityTracker(config=cfg)
    front, back = face(0, LO[0], LO, HI), face(0, HI[0], LO, HI)
    top = face(2, HI[2], LO, HI)
    for pts in (np.vstack([front, top]), np.vstack([front, top])):
        st = tr.update(Detection(score=0.9, box=(0, 0, 10, 10), position=pts.mean(0), points=pts))
    first = st.track_id
    for _ in range(3):
        st = tr.update(None)
    assert st.lost
    pts = np.vstack([back, top])  # seen again from behind: its centroid is 0.4 m from the first one
    st = tr.update(Detection(score=0.9, box=(50, 0, 60, 10), position=pts.mean(0), points=pts))
    assert st.track_id == first and st.event == "reacquired"
    tr.update(Detection(score=0.9, box=(50, 0, 60, 10), position=pts.mean(0), points=pts))
    np.testing.assert_allclose(tr.centre, (LO + HI) / 2, atol=0.01)
    far = face(0, 3.0, LO + 2, HI + 2)  # a look-alike 2 m away: a new track
    st = tr.update(Detection(score=0.9, box=(0, 0, 10, 10), position=far.mean(0), points=far))
    assert st.track_id != first and st.event == "new"


def test_pipeline_publishes_the_track_centre_in_both_frames():
    H, W = 120, 160
    K = np.array([[100.0, 0, 80.0], [0, 100.0, 60.0], [0, 0, 1]])
    rgb = np.full((H, W, 3), 128, np.uint8)
    rgb[40:70, 60:90] = (220, 20, 20)
    depth = np.full((H, W), 2.0, np.float32)
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 0.5]
    vg = VideoGrounder(HsvBaselineGrounder(), config=PipelineConfig(shape_voxel_m=0.01))
    vg.set_instruction(parse_instruction("the red cube"))
    for _ in range(2):
        e = vg.process(rgb, depth, K, T).entities[0]
    assert e.found
    np.testing.assert_allclose(e.pose_world.position, vg.trackers[0].centre)
    np.testing.assert_allclose(e.pose_cam.position + T[:3, 3], e.pose_world.position, atol=1e-9)
    # the eroded patch spans pixels 62..87 x 42..67 at 2 m: box centre (74.5, 54.5) px, within a voxel
    np.testing.assert_allclose(e.pose_cam.position, [(74.5 - 80) / 50, (54.5 - 60) / 50, 2.0], atol=0.01)


def test_sim_eval_walkthrough_finds_one_track_near_the_object_centre(tmp_path):
    r = sim_eval_run(EvalConfig(seed=1, frames=150, width=320, height=240))
    assert r["frames_in_view"] >= 20 and r["recall_in_view"] >= 0.95 and r["mask_iou_median"] >= 0.95
    assert r["distinct_track_ids_in_view"] == 1
    size = np.asarray(r["target"]["size"])
    assert size.max() > 0.5  # a big object: its visible-surface centroid is far from its centre
    assert r["position_error_vs_centre_m"]["median"] <= 0.05
    with pytest.raises(ValueError, match="trajectory"):
        sim_eval_run(EvalConfig(trajectory="spiral"))
    out = tmp_path / "e.json"
    assert sim_eval_main(["--seed", "1", "--frames", "20", "--width", "160", "--height", "120",
                          "--json", str(out)]) == 0
    assert out.is_file()


def test_pick_target_needs_an_unambiguous_name():
    from find_ros.sim import Scene

    objs = Scene.generate(0, n_objects=(6, 10)).objects
    t = pick_target(objs, baseline=True)
    assert [o.colour for o in objs].count(t.colour) == 1
    t = pick_target(objs, baseline=False)
    assert [(o.colour, o.category) for o in objs].count((t.colour, t.category)) == 1
    assert pick_target(objs[:1] * 2, baseline=True) is None


def test_shape_memory_counts_views_per_voxel_like_a_plain_unique_count():
    """The sorted merge of ``add`` (no cap reached): each stored voxel's hits = the views that hit it, keys sorted and
    unique, and the box = the min / max centre of the voxels hit twice (key_bounds), as numpy computes them plainly."""
    from find_ros.voxel_keys import key_bounds, pack_keys, unpack_keys

    rng = np.random.default_rng(5)
    s = ShapeMemory(0.02, 10**6)
    views = [rng.normal([1.0, 2.0, 0.5], 0.15, (int(rng.integers(1, 2000)), 3)) for _ in range(8)]
    for v in views:
        s.add(v)
    origin = np.floor(views[0][0] / 0.02)
    per_view = [np.unique(pack_keys(np.floor(v / 0.02) - origin)) for v in views]
    keys, hits = np.unique(np.concatenate(per_view), return_counts=True)
    assert np.array_equal(s._keys, keys) and np.array_equal(s._hits, hits)
    centres = (unpack_keys(keys[hits >= 2]) + origin + 0.5) * 0.02
    lo, hi = s.box()
    assert np.array_equal(lo, centres.min(axis=0)) and np.array_equal(hi, centres.max(axis=0))
    idx = unpack_keys(keys)
    assert all(np.array_equal(a, b) for a, b in zip(key_bounds(keys), (idx.min(axis=0), idx.max(axis=0))))


def test_shape_memory_merge_is_np_insert_at_the_searchsorted_places():
    """One view's sorted unique keys merged into the stored ones: a hit more where a key is stored, the others
    inserted with one hit, exactly what ``np.insert`` at their ``searchsorted`` places gives (empty sides too)."""
    from find_ros.grounding.tracking import _merge_keys

    rng = np.random.default_rng(0)
    for _ in range(500):
        stored = np.unique(rng.integers(-100, 100, rng.integers(0, 40))).astype(np.int64)
        hits = rng.integers(1, 9, stored.size).astype(np.int64)
        keys = np.unique(rng.integers(-120, 120, rng.integers(0, 40))).astype(np.int64)
        pos = np.searchsorted(stored, keys)
        old = np.isin(keys, stored)
        want_hits = hits.copy()
        want_hits[pos[old]] += 1
        want = (np.insert(stored, pos[~old], keys[~old]), np.insert(want_hits, pos[~old], 1))
        before = hits.copy()
        got = _merge_keys(stored, hits, keys)
        assert all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in zip(got, want))
        assert np.array_equal(hits, before)  # the stored hits are not written in place
