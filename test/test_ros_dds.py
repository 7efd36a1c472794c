"""Fast DDS shared-memory segments: a participant's 64 MiB segment goes with it, and dead owners' ones are found.

A segment left in /dev/shm costs its RAM until the machine reboots (one session's test runs had left 18 GB there
and the kernel killed a training job for memory)."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from find_ros.ros.dds import SHM_DIR, find_zombie_segments, remove_zombie_segments, segment_names


def _segment(directory: Path, name: str, *, age_s: float) -> Path:
    (directory / name).write_bytes(b"\0" * 64)
    lock = directory / f"{name}_el"
    lock.touch()
    t = time.time() - age_s
    os.utime(lock, (t, t))
    return lock


def test_zombie_segments_are_those_whose_lock_nobody_holds(tmp_path):
    dead = "fastdds_00112233445566aa"
    live = "fastdds_00112233445566bb"
    young = "fastdds_00112233445566cc"
    _segment(tmp_path, dead, age_s=60)
    live_lock = _segment(tmp_path, live, age_s=60)
    _segment(tmp_path, young, age_s=0)
    _segment(tmp_path, "fastdds_port7000", age_s=60)  # ports are Fast DDS's own to reclaim
    fd = os.open(live_lock, os.O_RDWR)  # a participant holding its lock (another open file description)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert segment_names(tmp_path) == {dead, live, young}
        assert find_zombie_segments(tmp_path) == [dead]
        assert (tmp_path / dead).exists(), "found, not removed"
        assert sorted(find_zombie_segments(tmp_path, min_age_s=0)) == [dead, young]
        assert remove_zombie_segments(tmp_path) == [dead]
        assert not (tmp_path / dead).exists() and not (tmp_path / f"{dead}_el").exists()
        assert {p.name for p in tmp_path.iterdir()} == {live, f"{live}_el", young, f"{young}_el",
                                                        "fastdds_port7000", "fastdds_port7000_el"}
    finally:
        os.close(fd)
    assert remove_zombie_segments(tmp_path, min_age_s=0) == [live, young]  # its owner is gone now
    assert remove_zombie_segments(tmp_path / "missing") == []


@pytest.mark.ros
def test_a_destroyed_lifecycle_node_takes_its_segment_with_it(domain_id):
    """rclpy's LifecycleNode sits in reference cycles; release_context collects it before the context goes, so the
    participant (and its shared-memory segment) is deleted even by a process that then ends with os._exit."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.lifecycle import LifecycleNode

    from find_ros.ros.shutdown import release_context

    before = segment_names()
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = None
    released = False
    try:
        node = LifecycleNode("segment_probe", context=context)
        ours = segment_names() - before
        if not ours:
            pytest.skip(f"no Fast DDS shared-memory segment appeared in {SHM_DIR} (transport without shm)")
        node.destroy_node()
        node = None
        release_context(context)
        released = True
        assert not ours & segment_names(), f"{ours} still in {SHM_DIR} after the context was released"
    finally:
        if node is not None:
            node.destroy_node()
        if not released:
            release_context(context)
