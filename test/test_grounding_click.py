"""find_ros.grounding.click: 3D / pixel clicks -> pixel, proposal choice, depth + connectivity clean-up, crops;
and the shipped FIND model's segmentation proposals under a click on a rendered sim frame."""
import numpy as np
import pytest

from find_ros.grounding.click import ClickError, check_pixel, mask_at_click, project_world_point, reference_crop

K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])


def _cam_at_origin_looking_forward() -> np.ndarray:
    return np.eye(4)  # optical frame == world frame


def test_projection_lands_on_the_pixel_and_checks_depth():
    depth = np.full((48, 64), 2.0, np.float32)
    u, v = project_world_point(np.array([0.2, -0.1, 2.0]), T_world_cam=_cam_at_origin_looking_forward(), K=K,
                               depth_m=depth)
    assert (u, v) == (42, 19)  # 32 + 100 * 0.1, 24 - 100 * 0.05
    T = np.eye(4)
    T[:3, 3] = [1.0, 0.0, 0.0]  # camera 1 m to the right: the same world point appears 50 px further left
    u2, _ = project_world_point(np.array([1.2, -0.1, 2.0]), T_world_cam=T, K=K, depth_m=depth)
    assert u2 == 42


@pytest.mark.parametrize("point, depth_value, kind", [
    ((0.0, 0.0, -1.0), 2.0, "behind_camera"),
    ((5.0, 0.0, 2.0), 2.0, "outside_image"),
    ((0.0, 0.0, 2.0), 0.0, "no_depth"),
    ((0.0, 0.0, 2.0), np.nan, "no_depth"),
    ((0.0, 0.0, 3.0), 2.0, "occluded"),     # behind the visible surface
    ((0.0, 0.0, 1.0), 2.0, "occluded"),     # in free space in front of it
    ((np.nan, 0.0, 1.0), 2.0, "bad_point"),
])
def test_projection_refusals_name_the_problem(point, depth_value, kind):
    depth = np.full((48, 64), depth_value, np.float32)
    with pytest.raises(ClickError) as e:
        project_world_point(np.array(point), T_world_cam=np.eye(4), K=K, depth_m=depth, depth_tolerance_m=0.1)
    assert e.value.kind == kind
    assert str(e.value)


def test_check_pixel_bounds():
    assert check_pixel(0, 0, (48, 64)) == (0, 0)
    assert check_pixel(63.9, 47.2, (48, 64)) == (63, 47)
    for uv in ((64, 0), (-0.5, 3), (3, 48), (np.inf, 1)):
        with pytest.raises(ClickError) as e:
            check_pixel(*uv, (48, 64))
        assert e.value.kind == "outside_image"


def _proposals() -> np.ndarray:
    """Three proposals at 12x16 (stride 4 of 48x64): 0 = the left object, 1 = the right object (two blobs),
    2 = a weak background everywhere."""
    p = np.full((3, 12, 16), -6.0, np.float32)
    p[0, 2:8, 1:6] = 5.0
    p[1, 2:8, 9:14] = 4.0
    p[1, 10:12, 0:3] = 4.0  # a second, disconnected blob of proposal 1
    p[2] = -1.0
    return p


def test_mask_at_click_picks_the_proposal_under_the_click_and_its_connected_part():
    r = mask_at_click(_proposals(), 44, 16, shape=(48, 64))
    assert r.proposal == 1 and r.score > 0.95
    assert r.mask.shape == (48, 64) and r.mask[16, 44]
    assert not r.mask[44, 4], "the disconnected blob of the same proposal is another object"
    assert not r.mask[:, :30].any()
    left = mask_at_click(_proposals(), 10, 16, shape=(48, 64))
    assert left.proposal == 0 and left.mask[16, 10] and not left.mask[:, 34:].any()


def test_mask_at_click_on_background_is_no_object():
    with pytest.raises(ClickError) as e:
        mask_at_click(_proposals(), 30, 40, shape=(48, 64))
    assert e.value.kind == "no_object" and "(30, 40)" in str(e.value)


def test_mask_at_click_drops_pixels_at_another_depth():
    depth = np.full((48, 64), 3.0, np.float32)
    depth[8:32, 36:56] = 1.0        # the right object's surface
    depth[8:32, 36:40] = 2.5        # its left columns are something behind it
    depth[20, 50] = 0.0             # a hole in the depth keeps the proposal's word
    r = mask_at_click(_proposals(), 44, 16, shape=(48, 64), depth_m=depth, depth_tolerance_m=0.3)
    assert r.mask[16, 44] and r.mask[20, 50]
    assert not r.mask[16, 37], "a pixel 1.5 m behind the click is not the clicked object"


def test_reference_crop_grows_the_box_and_clips():
    rgb = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:40] = True
    crop, cm, box = reference_crop(rgb, mask, margin=0.1)
    assert crop.shape == (24, 24, 3) and cm.shape == (24, 24) and cm.sum() == mask.sum() and box == (18, 8, 42, 32)
    np.testing.assert_array_equal(crop, rgb[8:32, 18:42])
    corner = np.zeros((48, 64), bool)
    corner[0, 0] = True
    crop, cm, _ = reference_crop(rgb, corner, min_side=16)
    assert crop.shape[:2] == (9, 9) and cm[0, 0]  # grown to 16 then clipped at the image edge
    with pytest.raises(ClickError):
        reference_crop(rgb, np.zeros((48, 64), bool))
    with pytest.raises(ClickError):
        reference_crop(rgb, np.ones((4, 4), bool))


def test_shipped_model_click_segments_a_sim_object():
    """The shipped FIND model's proposals under a click at the deepest interior pixel of each sizeable object of a
    rendered sim frame: the mask overlaps the object (IoU >= 0.6 on average; the acceptance figure over many scenes
    is in README) and a click on the floor is refused."""
    import cv2

    from find_ros.model.grounder import FindGrounder
    from find_ros.sim.trajectory import sim_stream

    g = FindGrounder.from_pretrained()
    frame = next(iter(sim_stream(3, 1, trajectory="orbit")))
    logits = g.segment_proposals(frame.color)
    assert logits.ndim == 3 and logits.dtype == np.float32
    ious = []
    for oid in np.unique(frame.instance):
        gt = frame.instance == oid
        if oid == 0 or gt.sum() < 1500:
            continue
        dt = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, 5)
        v, u = np.unravel_index(np.argmax(dt), dt.shape)
        r = mask_at_click(logits, int(u), int(v), shape=gt.shape, depth_m=frame.depth)
        ious.append((r.mask & gt).sum() / (r.mask | gt).sum())
    assert len(ious) >= 2 and np.mean(ious) >= 0.6, ious
    floor = cv2.erode((frame.instance == 0).astype(np.uint8), np.ones((41, 41), np.uint8))
    ys, xs = np.nonzero(floor[frame.depth.shape[0] // 2:])
    refused = 0
    for i in np.linspace(0, len(ys) - 1, 5).astype(int):
        try:
            mask_at_click(logits, int(xs[i]), int(ys[i]) + frame.depth.shape[0] // 2, shape=frame.depth.shape)
        except ClickError as e:
            refused += e.kind == "no_object"
    assert refused >= 4
