"""Unit tests of the pure-python approximate-time synchroniser."""
import math

import pytest

from find_ros.ros.sync import ApproximateSync, SyncError


class _Sink:
    def __init__(self):
        self.sets = []

    def __call__(self, matched):
        self.sets.append(matched)


def _feed(sync, stream, t):
    return sync.add(stream, t, (stream, t))


def test_matches_a_complete_set_within_slop():
    out = _Sink()
    s = ApproximateSync(slop_s=0.02, callback=out)
    assert not _feed(s, "color", 1.000)
    assert not _feed(s, "depth", 1.005)
    assert _feed(s, "camera_info", 1.010)
    assert out.sets == [{"color": ("color", 1.0), "depth": ("depth", 1.005), "camera_info": ("camera_info", 1.01)}]
    assert s.buffered() == {"color": 0, "depth": 0, "camera_info": 0}


def test_outside_slop_never_matches():
    out = _Sink()
    s = ApproximateSync(slop_s=0.01, callback=out)
    _feed(s, "color", 1.0)
    _feed(s, "depth", 1.0)
    _feed(s, "camera_info", 1.05)
    assert out.sets == []


def test_newest_frame_wins_and_older_are_discarded():
    out = _Sink()
    s = ApproximateSync(slop_s=0.001, callback=out)
    for t in (1.0, 2.0, 3.0):
        _feed(s, "color", t)
        _feed(s, "depth", t)
    _feed(s, "camera_info", 1.0)  # completes the set at 1.0
    _feed(s, "camera_info", 3.0)  # completes the newer set at 3.0; 2.0 is skipped
    assert [m["color"][1] for m in out.sets] == [1.0, 3.0]
    # stale messages (at or before the last emitted stamp) are dropped, never matched
    assert not _feed(s, "camera_info", 2.0)
    _feed(s, "color", 2.0)
    _feed(s, "depth", 2.0)
    assert len(out.sets) == 2 and s.discarded == 3


def test_out_of_order_stamps():
    out = _Sink()
    s = ApproximateSync(slop_s=0.005, callback=out)
    _feed(s, "color", 2.0)
    _feed(s, "color", 1.0)  # arrives late: inserted in stamp order
    _feed(s, "depth", 1.001)
    _feed(s, "camera_info", 1.002)
    assert [m["color"][1] for m in out.sets] == [1.0]
    _feed(s, "camera_info", 2.0)
    _feed(s, "depth", 1.999)
    assert [m["color"][1] for m in out.sets] == [1.0, 2.0]
    assert out.sets[1]["depth"][1] == 1.999


def test_picks_the_tightest_set_among_equals():
    out = _Sink()
    s = ApproximateSync(slop_s=0.05, callback=out, streams=("a", "b"))
    _feed(s, "a", 1.00)
    _feed(s, "a", 1.03)
    _feed(s, "b", 1.031)  # both 1.00 and 1.03 are within slop: the newest (and tightest) pair wins
    assert out.sets == [{"a": ("a", 1.03), "b": ("b", 1.031)}]


def test_missing_stream_never_matches_and_buffers_stay_bounded():
    out = _Sink()
    s = ApproximateSync(slop_s=0.02, callback=out, streams=("color", "depth", "camera_info", "pose"), queue_size=3)
    for i in range(10_000):
        t = i / 30.0
        for stream in ("color", "depth", "camera_info"):  # pose never arrives
            _feed(s, stream, t)
    assert out.sets == []
    assert s.buffered() == {"color": 3, "depth": 3, "camera_info": 3, "pose": 0}
    _feed(s, "pose", 9999 / 30.0)  # the pose of the last frame completes it
    assert len(out.sets) == 1 and out.sets[0]["pose"][1] == pytest.approx(9999 / 30.0)


def test_steady_stream_matches_every_frame():
    out = _Sink()
    s = ApproximateSync(slop_s=0.004, callback=out)
    for i in range(10_000):
        t = i / 30.0
        _feed(s, "depth", t + 0.002)  # depth a little later, arriving first
        _feed(s, "color", t)
        _feed(s, "camera_info", t)
    assert len(out.sets) == 10_000 and s.matched == 10_000
    assert max(s.buffered().values()) <= 4


def test_reset_allows_time_to_jump_back():
    out = _Sink()
    s = ApproximateSync(slop_s=0.0, callback=out, streams=("a",))
    _feed(s, "a", 10.0)
    assert not _feed(s, "a", 1.0)
    s.reset()
    assert _feed(s, "a", 1.0)
    assert [m["a"][1] for m in out.sets] == [10.0, 1.0]


@pytest.mark.parametrize("kwargs, match", [
    ({"slop_s": -0.1}, "slop_s"), ({"slop_s": math.nan}, "slop_s"),
    ({"slop_s": 0.1, "queue_size": 0}, "queue_size"), ({"slop_s": 0.1, "streams": ("a", "a")}, "distinct"),
])
def test_bad_configuration(kwargs, match):
    with pytest.raises(SyncError, match=match):
        ApproximateSync(callback=lambda m: None, **kwargs)


def test_bad_inputs():
    s = ApproximateSync(slop_s=0.1, callback=lambda m: None)
    with pytest.raises(SyncError, match="'pose'"):
        s.add("pose", 1.0, None)
    with pytest.raises(SyncError, match="not finite"):
        s.add("color", math.inf, None)
