"""Video grounding: tracks, smoothing, lost / re-acquired, poses and the label mask (find_ros.grounding.pipeline)."""
from __future__ import annotations

import numpy as np
import pytest

from find_ros.grounder import GrounderError
from find_ros.grounding.baseline import HsvBaselineGrounder
from find_ros.grounding.pipeline import ConfigError, FrameError, PipelineConfig, VideoGrounder, mean_embedding
from find_ros.grounding.tracking import Detection, EntityTracker, box_iou
from find_ros.instruction import parse_instruction

H, W = 120, 160
K = np.array([[100.0, 0, 80.0], [0, 100.0, 60.0], [0, 0, 1]])
RED, BLUE = (220, 20, 20), (30, 60, 200)


def frame(blobs=(), depth=2.0):
    """Grey image with (x, y, size, colour) squares; flat depth."""
    rgb = np.full((H, W, 3), 128, np.uint8)
    for x, y, s, c in blobs:
        rgb[y:y + s, x:x + s] = c
    return rgb, np.full((H, W), depth, np.float32)


def pipeline(text="the red cube", **cfg):
    vg = VideoGrounder(HsvBaselineGrounder(), config=PipelineConfig(**cfg))
    vg.set_instruction(parse_instruction(text))
    return vg


def test_found_entity_gets_label_pose_and_world_pose():
    vg = pipeline("the red cube, the blue ball", shape_voxel_m=0.0)  # visible centroid: exact hand maths
    rgb, depth = frame([(60, 40, 30, RED)])
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 0.5]
    res = vg.process(rgb, depth, K, T)
    red, blue = res.entities
    assert red.found and red.track_id is not None and not red.lost and red.score > 0.9
    assert red.box == (60, 40, 90, 70)
    assert set(np.unique(res.label_mask)) == {0, 1} and (res.label_mask == 1).sum() == red.mask.sum()
    assert red.pose_cam.frame == "camera" and red.pose_cam.position[2] == pytest.approx(2.0)
    np.testing.assert_allclose(red.pose_cam.position[:2], [(74.5 - 80) / 50, (54.5 - 60) / 50], atol=1e-6)
    np.testing.assert_allclose(red.pose_world.position, red.pose_cam.position + T[:3, 3], atol=1e-9)
    assert not blue.found and blue.track_id is None and blue.pose_cam is None and blue.score == 0.0
    assert res.pixel_embeddings.shape[-1] == 12
    ov = res.overlay(rgb)
    assert ov.shape == rgb.shape and ov.dtype == np.uint8
    assert not np.array_equal(ov[50:60, 70:80], rgb[50:60, 70:80])  # tinted
    assert np.array_equal(ov[100:110, 120:150], rgb[100:110, 120:150])  # untouched background


def test_last_timings_split_the_per_entity_path_into_pose_and_tracking():
    vg = pipeline("the red cube, the blue ball")
    rgb, depth = frame([(60, 40, 30, RED), (10, 10, 20, BLUE)])
    vg.process(rgb, depth, K, np.eye(4))
    t = vg.last_timings
    assert set(t) == {"ground", "pose", "tracking", "pose_tracking"}
    assert t["ground"] > 0 and t["pose"] > 0 and t["tracking"] > 0  # two entities found: both parts ran
    assert t["pose"] + t["tracking"] == pytest.approx(t["pose_tracking"])


def test_a_grounder_without_prepare_instruction_prepares_nothing_and_switches_as_before():
    vg = pipeline("the red cube")
    second = parse_instruction("the blue ball")
    assert vg.prepare_instruction(second) is None and vg.instruction.entities[0].phrase == "the red cube"
    vg.set_instruction(second, prepared=None)
    rgb, depth = frame([(10, 10, 20, BLUE)])
    assert vg.process(rgb, depth, K).entities[0].found


def test_no_world_pose_without_camera_pose_and_no_pose_without_depth():
    vg = pipeline()
    rgb, depth = frame([(60, 40, 30, RED)])
    e = vg.process(rgb, depth, K, None).entities[0]
    assert e.found and e.pose_cam is not None and e.pose_world is None
    e = vg.process(rgb, np.zeros_like(depth), K, None).entities[0]
    assert e.found and e.pose_cam is None


def test_one_id_over_a_moving_blob():
    vg = pipeline()
    ids = []
    for k in range(40):
        x = 10 + 3 * k  # moves 3 px per frame across the image
        rgb, depth = frame([(x, 40, 20, RED)])
        T = np.eye(4)
        e = vg.process(rgb, depth, K, T).entities[0]
        assert e.found, k
        ids.append(e.track_id)
    assert len(set(ids)) == 1 and vg.trackers[0].tracks_started == 1


def test_lost_after_n_empty_frames_then_reacquired_with_the_same_id():
    vg = pipeline(lost_after_frames=5)
    T = np.eye(4)
    rgb, depth = frame([(60, 40, 30, RED)])
    tid = vg.process(rgb, depth, K, T).entities[0].track_id
    empty, _ = frame()
    states = [vg.process(empty, depth, K, T).entities[0] for _ in range(6)]
    assert [s.lost for s in states] == [False, False, False, False, True, True]
    assert all(not s.found and s.track_id == tid for s in states)
    assert states[0].score < 1.0 and states[-1].score < states[0].score  # decays while unseen
    back = vg.process(rgb, depth, K, T).entities[0]
    assert back.found and not back.lost and back.track_id == tid
    tr = vg.trackers[0]
    assert (tr.tracks_started, tr.losses, tr.reacquisitions) == (1, 1, 1)


def test_a_different_object_far_away_gets_a_new_id():
    vg = pipeline(lost_after_frames=3)
    rgb, depth = frame([(60, 40, 30, RED)])
    T = np.eye(4)
    tid = vg.process(rgb, depth, K, T).entities[0].track_id
    empty, _ = frame()
    for _ in range(3):
        vg.process(empty, depth, K, T)
    T2 = np.eye(4)
    T2[:3, 3] = [3.0, 0.0, 0.0]  # the camera moved 3 m: same pixels, another place in the world
    e = vg.process(rgb, depth, K, T2).entities[0]
    assert e.found and e.track_id != tid
    # and the same object seen again from the first pose is a switch back to the first id
    e = vg.process(rgb, depth, K, T).entities[0]
    assert e.found and e.track_id == tid and vg.trackers[0].switches == 1


def test_nothing_found_below_the_threshold_and_live_threshold_changes():
    vg = pipeline()
    rgb, depth = frame([(60, 40, 30, RED)])
    res = vg.process(rgb, depth, K, np.eye(4))
    assert res.entities[0].found
    vg.config.score_threshold = 0.999
    res = vg.process(rgb, depth, K, np.eye(4))
    e = res.entities[0]
    assert not e.found and e.pose_cam is None and e.pose_world is None and not res.label_mask.any()
    vg.config.score_threshold = 0.5
    # a small patch: raw score below threshold, never found even over many frames
    vg.set_instruction(parse_instruction("the red cube"))
    small, depth = frame([(60, 40, 3, RED)])
    for _ in range(5):
        e = vg.process(small, depth, K, np.eye(4)).entities[0]
        assert 0 < e.raw_score < 0.5 and not e.found and e.track_id is None


def test_score_smoothing_bridges_a_weak_frame():
    vg = pipeline(smoothing=0.6)
    big, depth = frame([(60, 40, 30, RED)])
    small, _ = frame([(60, 40, 3, RED)])
    s0 = vg.process(big, depth, K, np.eye(4)).entities[0]
    e = vg.process(small, depth, K, np.eye(4)).entities[0]
    assert e.raw_score < 0.5 and e.score == pytest.approx(0.6 * s0.score + 0.4 * e.raw_score)
    assert e.found and e.track_id == s0.track_id  # hysteresis: one weak frame does not drop the target


def test_tracker_iou_fallback_without_embeddings_or_positions():
    cfg = PipelineConfig(lost_after_frames=2)
    tr = EntityTracker(config=cfg)
    a = tr.update(Detection(score=0.9, box=(10, 10, 30, 30)))
    b = tr.update(Detection(score=0.9, box=(12, 10, 32, 30)))
    assert a.event == "new" and b.event == "update" and a.track_id == b.track_id
    c = tr.update(Detection(score=0.9, box=(100, 80, 120, 100)))  # no overlap: another object
    assert c.event == "new" and c.track_id != a.track_id
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 0, 0), (0, 0, 10, 10)) == 0.0


def test_tracker_embedding_cue_rejects_another_colour():
    cfg = PipelineConfig()
    tr = EntityTracker(config=cfg)
    e1 = np.array([1.0, 0.0, 0.0])
    e2 = np.array([0.0, 1.0, 0.0])
    a = tr.update(Detection(score=0.9, box=(0, 0, 5, 5), embedding=e1))
    b = tr.update(Detection(score=0.9, box=(60, 60, 65, 65), embedding=e1))  # moved far in 2D: same embedding
    c = tr.update(Detection(score=0.9, box=(0, 0, 5, 5), embedding=e2))  # same place, other embedding
    assert a.track_id == b.track_id != c.track_id


def test_mean_embedding_resizes_the_mask():
    emb = np.zeros((30, 40, 3), np.float32)
    emb[..., 0] = 1.0
    emb[:15, :, :] = [0.0, 1.0, 0.0]
    mask = np.zeros((120, 160), bool)
    mask[80:, :] = True
    np.testing.assert_allclose(mean_embedding(emb, mask), [1.0, 0.0, 0.0])
    assert mean_embedding(emb, np.zeros_like(mask)) is None


def test_mean_embedding_weights_cells_by_the_mask_area_they_hold_bit_for_bit():
    """Whole cells (mask 4x the grid): each embedding cell weighs the fraction of its 4x4 pixels in the mask (block
    sums; mean_embedding takes them with OpenCV's INTER_AREA, on the mask's box), on masks that cut cells."""
    rng = np.random.default_rng(0)
    emb = rng.random((30, 40, 5)).astype(np.float32)
    for _ in range(30):
        mask = np.zeros((120, 160), bool)
        y, x, r = rng.integers(0, 120), rng.integers(0, 160), rng.integers(1, 40)
        yy, xx = np.mgrid[0:120, 0:160]
        mask[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = True
        w = mask.reshape(30, 4, 40, 4).sum(axis=(1, 3), dtype=np.float32) * np.float32(1 / 16)
        assert 0 < (w % 1).nonzero()[0].size  # a real test: partly covered cells
        e = np.dot(w.reshape(1, -1), emb.reshape(-1, 5))[0] / float(w.sum())
        np.testing.assert_allclose(mean_embedding(emb, mask), e / np.linalg.norm(e), rtol=1e-6, atol=1e-7)


def test_mean_embedding_of_lazy_embeddings_asks_only_for_the_masks_cells():
    """Lazy pixel embeddings (FindGrounder's) are asked for the cells under the mask's box only, and the mean is
    the one of the whole array."""
    from find_ros.grounder import LazyPixelEmbeddings

    emb = np.random.default_rng(0).random((30, 40, 5)).astype(np.float32)
    asked = []

    def window(y0, y1, x0, x1):
        asked.append((y0, y1, x0, x1))
        return emb[y0:y1, x0:x1]

    mask = np.zeros((120, 160), bool)
    mask[50:61, 70:93] = True  # cells 12..16 x 17..24
    lazy = LazyPixelEmbeddings(shape=emb.shape, window=window)
    assert np.array_equal(mean_embedding(lazy, mask), mean_embedding(emb, mask))
    assert asked == [(12, 16, 17, 24)]
    assert mean_embedding(lazy, np.zeros_like(mask)) is None and len(asked) == 1


def test_errors_and_instruction_lifecycle():
    vg = VideoGrounder(HsvBaselineGrounder())
    rgb, depth = frame([(60, 40, 30, RED)])
    with pytest.raises(GrounderError, match="no instruction"):
        vg.process(rgb, depth, K)
    vg.set_instruction(parse_instruction("red"))
    assert vg.instruction.text == "red"
    with pytest.raises(FrameError, match="depth_m"):
        vg.process(rgb, depth[:10], K)
    with pytest.raises(FrameError, match="rgb"):
        vg.process(rgb[..., 0], depth, K)
    with pytest.raises(FrameError, match="T_world_cam"):
        vg.process(rgb, depth, K, np.eye(3))
    vg.clear_instruction()
    assert vg.instruction is None
    with pytest.raises(GrounderError):
        vg.process(rgb, depth, K)
    with pytest.raises(ConfigError, match="smoothing"):
        PipelineConfig(smoothing=1.0)
    with pytest.raises(ConfigError, match="score_threshold"):
        PipelineConfig(score_threshold=1.5)


def test_new_instruction_resets_tracks_with_fresh_ids():
    vg = pipeline()
    rgb, depth = frame([(60, 40, 30, RED), (10, 10, 20, BLUE)])
    a = vg.process(rgb, depth, K).entities[0].track_id
    vg.set_instruction(parse_instruction("the blue one"))
    e = vg.process(rgb, depth, K).entities[0]
    assert e.found and e.box == (10, 10, 30, 30) and e.track_id != a


def test_warm_up_leaves_tracks_ids_and_instruction_alone():
    """VideoGrounder.warm_up runs the per-entity path on a synthetic frame (the node calls it at activation): the
    results of a real run afterwards are those of a pipeline that never warmed up."""
    rgb, depth = frame([(60, 40, 30, RED)])
    plain, warmed = pipeline(), pipeline()
    assert warmed.warm_up(width=W, height=H) > 0.0 and warmed.warm_up() > 0.0  # also at another size
    assert warmed.frames == 0 and len(warmed.trackers) == 1 and warmed.trackers[0].track_id is None
    for _ in range(3):
        a, b = plain.process(rgb, depth, K), warmed.process(rgb, depth, K)
        (ea,), (eb,) = a.entities, b.entities
        assert (ea.track_id, ea.found, ea.score, ea.box) == (eb.track_id, eb.found, eb.score, eb.box)
        np.testing.assert_array_equal(ea.pose_cam.position, eb.pose_cam.position)
    assert warmed.instruction.text == "the red cube"
