"""Load the real perception node over DDS: a 60 Hz 640x480 camera into a node that grounds fewer frames per second.

The node (HSV baseline, real 640x480 frames: ~30-45 ms of grounding + publishing per frame here) cannot keep up
with 60 Hz, so its one-slot mailbox must drop frames (newest frame wins): ``dropped > 0``, the latency of the
frames it does ground (receipt of find/grounding here minus the header stamp) does not grow over the run, and
its RSS does not grow (no queue). No absolute timing thresholds: the last third of the run is compared with
the first third of the same run.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("find_ros.grounding.baseline", reason="find_ros.grounding.baseline not delivered yet")

from std_msgs.msg import Header, String  # noqa: E402

from find_ros.ros import conversions as conv  # noqa: E402
from test_ros_fuzz import Node, ns, rss_mb, spawn  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CW, CH = 640, 480
RATE_HZ = 60.0
SECONDS = 12.0


def _scene():
    rgb = np.full((CH, CW, 3), 128, np.uint8)
    rgb[160:320, 240:400] = (220, 20, 20)
    depth = np.full((CH, CW), 1.5, np.float32)
    K = np.array([[500.0, 0, CW / 2], [0, 500.0, CH / 2], [0, 0, 1]])
    return rgb, depth, K


def test_camera_faster_than_grounding_drops_frames_with_flat_latency_and_bounded_rss(ros, procs):
    proc = spawn(procs, ["-p", "autostart:=true", "-p", "grounder:=hsv-baseline", "-p", "status_period_s:=0.25",
                         "-p", "camera_pose_source:=none", "-p", "max_stamp_age_s:=5.0", "-p", "sync_slop_s:=0.002"])
    t = Node(ros, procs, proc, keep=2000)
    assert t.spin_until(lambda: t.status.get("grounder") == "hsv-baseline", 60), t.log_text()[-3000:]
    t.pub_text.publish(String(data="the red cube"))
    assert t.wait_log("'the red cube' -> entities"), t.log_text()[-2000:]
    rgb, depth, K = _scene()
    color = conv.numpy_to_image(rgb, "rgb8")
    dmsg = conv.numpy_to_image(depth, "32FC1")
    info = conv.camera_info_from_K(K, CW, CH, header=None)
    sent: list[int] = []
    rss: list[tuple[float, float]] = []

    def publish() -> None:
        now = t.node.get_clock().now().nanoseconds
        h = Header(frame_id="load_camera_optical_frame")
        h.stamp.sec, h.stamp.nanosec = now // 1_000_000_000, now % 1_000_000_000
        info.header = dmsg.header = color.header = h
        t.pub_info.publish(info)
        t.pub_depth.publish(dmsg)
        t.pub_color.publish(color)
        sent.append(ns(h))

    # warm-up: 1 s at the full rate, until groundings flow
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 1.0 or not t.grounding:
        assert time.monotonic() - t0 < 20, f"no grounding during warm-up; status={t.status}"
        publish()
        i += 1
        t.spin_until(lambda: False, max(0.0, t0 + i / RATE_HZ - time.monotonic()))
    first_sent = len(sent)
    status0 = dict(t.status)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < SECONDS:
        publish()
        i += 1
        if i % int(RATE_HZ) == 0:
            rss.append((time.monotonic() - t0, rss_mb(proc.pid)))
        t.spin_until(lambda: False, max(0.0, t0 + i / RATE_HZ - time.monotonic()))
    elapsed = time.monotonic() - t0
    t.spin_until(lambda: False, 1.0)
    status = dict(t.status)
    assert t.alive(), t.log_text()[-3000:]

    run = set(sent[first_sent:])
    stamps = sorted(s for s in t.grounding if s in run)
    lat_ms = np.array([(t.receipt_ns[s] - s) * 1e-6 for s in stamps])
    proc_ms = np.array([t.grounding[s].processing_ms for s in stamps])
    n = len(stamps)
    third = max(n // 3, 1)
    lat_first, lat_last = float(np.median(lat_ms[:third])), float(np.median(lat_ms[-third:]))
    pm_first, pm_last = float(np.median(proc_ms[:third])), float(np.median(proc_ms[-third:]))
    rss_first = float(np.median([r for _, r in rss[: len(rss) // 3]]))
    rss_last = float(np.median([r for _, r in rss[-(len(rss) // 3):]]))
    dropped = status["dropped"] - status0.get("dropped", 0)
    processed = status["processed"] - status0.get("processed", 0)
    sets = status["frame_sets"] - status0.get("frame_sets", 0)
    print(f"\nload: published {len(run)} frames {CW}x{CH} in {elapsed:.1f} s ({len(run) / elapsed:.1f} Hz); node: "
          f"frame sets {sets}, processed {processed} ({processed / elapsed:.1f} Hz), dropped {dropped}; "
          f"latency stamp->grounding received median first/last third {lat_first:.1f}/{lat_last:.1f} ms "
          f"(p95 {np.percentile(lat_ms, 95):.1f} ms), node processing_ms {pm_first:.1f}/{pm_last:.1f}; "
          f"node RSS first/last third {rss_first:.1f}/{rss_last:.1f} MB (max {max(r for _, r in rss):.1f})")
    # newest frame wins: a node slower than the camera saw more sets than it grounded and says it dropped the
    # difference (on a machine fast enough to keep up, nothing needs dropping)
    period_ms = 1000.0 * elapsed / max(len(run), 1)
    if np.median(proc_ms) > 1.5 * period_ms:
        assert dropped > 0 and processed < sets, status
        assert processed < len(run), (n, status)
    assert n >= 10, (n, status)
    # no queue: every matched set was processed, dropped (replaced in the one-slot mailbox) or refused,
    # give or take the one in the mailbox and the one being processed when the counters were sampled
    rejected = status["rejected"] - status0.get("rejected", 0)
    assert abs(sets - processed - dropped - rejected) <= 3, status
    assert all(t.grounding[s].entities[0].found for s in stamps)
    # latency does not grow (a queue would make it grow linearly): generous factor vs the run's own start
    assert lat_last <= 3.0 * lat_first + 50.0, (lat_first, lat_last)
    assert pm_last <= 3.0 * pm_first + 50.0, (pm_first, pm_last)
    # RSS does not grow with the number of frames
    assert rss_last - rss_first < 30.0, rss
