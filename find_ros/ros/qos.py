"""QoS profiles of the find_ros topics.

- ``SENSOR_QOS`` (camera inputs): RELIABLE, KEEP_LAST 1, VOLATILE. Keep-last 1: newest frame wins and the writer
  history holds one sample, so nothing queues even when reliable. Reliable rather than best-effort because a
  640x480 rgb8 frame is ~100 UDP fragments with FastDDS's default transports and a best-effort frame is lost when
  one fragment is: measured here (2 processes, 30 Hz, 4 s) best-effort/default received 1 of 120 frames, while
  reliable/default received all at p95 14.8 ms; with ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (shared memory +
  TCP) both received 120/120 at p95 ~4.1 ms. Reliable works under either transport; LARGE_DATA is set in launch
  files and the demo for the latency. Caveat: a reliable subscriber does not match a best-effort publisher (camera
  drivers using ``SensorDataQoS``); set such a driver's reliability to reliable.
- ``OUTPUT_QOS`` (results): RELIABLE, KEEP_LAST 10, VOLATILE.
- ``LATCHED_QOS`` (state a late joiner must get: sim ground-truth objects, the field cloud): RELIABLE,
  KEEP_LAST 1, TRANSIENT_LOCAL. A VOLATILE subscriber still matches it (it just gets no history).

``MEASURED`` records those figures; ``python -m find_ros.ros.qos`` reruns the measurement (~30 s).
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["SENSOR_QOS", "OUTPUT_QOS", "LATCHED_QOS", "MEASURED"]

SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: Measured on this machine (2 shared CPU cores), two processes, 640x480 rgb8 at 30 Hz for 4 s, FastDDS;
#: {reliability/transport: (received fraction, stamp->callback latency p50 ms, p95 ms)}.
MEASURED: dict[str, tuple[float, float, float]] = {
    "reliable/LARGE_DATA": (1.0, 3.68, 4.16),
    "best_effort/LARGE_DATA": (1.0, 3.74, 4.05),
    "reliable/DEFAULT": (1.0, 14.46, 14.81),
    "best_effort/DEFAULT": (0.008, 3.65, 3.65),
}


_PUBLISHER = r'''
import sys, time
import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rel = ReliabilityPolicy.RELIABLE if sys.argv[1] == "reliable" else ReliabilityPolicy.BEST_EFFORT
seconds, rate = float(sys.argv[2]), float(sys.argv[3])
rclpy.init()
node = rclpy.create_node("qos_probe_pub")
pub = node.create_publisher(Image, "probe/image", QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=rel))
img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8).tobytes()
time.sleep(2.0)  # discovery
t0 = time.monotonic()
i = 0
while time.monotonic() - t0 < seconds:
    m = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    m.data = img
    m.header.frame_id = str(i)
    m.header.stamp = node.get_clock().now().to_msg()
    pub.publish(m)
    i += 1
    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
time.sleep(0.5)
print(i, flush=True)
'''


def measure(*, seconds: float = 4.0, rate_hz: float = 30.0, domain_id: int = 231) -> dict[str, tuple[float, float, float]]:
    """Two processes, 640x480 rgb8 at ``rate_hz``: received fraction and stamp->receive latency (ms) per setting."""
    import os
    import subprocess
    import sys
    import time

    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    results = {}
    for transport in ("LARGE_DATA", "DEFAULT"):
        for rel in ("reliable", "best_effort"):
            env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), FASTDDS_BUILTIN_TRANSPORTS=transport)
            os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = transport
            ctx = rclpy.Context()
            rclpy.init(context=ctx, domain_id=domain_id)
            node = rclpy.create_node("qos_probe_sub", context=ctx)
            lat: list[float] = []

            def on_image(m: Image, lat=lat, node=node) -> None:
                now = node.get_clock().now().nanoseconds
                lat.append((now - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)) * 1e-6)

            sub_qos = SENSOR_QOS if rel == "reliable" else QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
            node.create_subscription(Image, "probe/image", on_image, sub_qos)
            ex = SingleThreadedExecutor(context=ctx)
            ex.add_node(node)
            proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, rel, str(seconds), str(rate_hz)], env=env,
                                    stdout=subprocess.PIPE, text=True)
            try:
                while proc.poll() is None:
                    ex.spin_once(timeout_sec=0.05)
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    ex.spin_once(timeout_sec=0.05)
                sent = int((proc.stdout.read() or "0").split()[-1])
            finally:
                if proc.poll() is None:
                    proc.kill()
                ex.shutdown()
                node.destroy_node()
                rclpy.shutdown(context=ctx)
            a = np.asarray(lat) if lat else np.asarray([np.nan])
            results[f"{rel}/{transport}"] = (round(len(lat) / max(sent, 1), 3), round(float(np.median(a)), 2),
                                             round(float(np.percentile(a, 95)), 2))
            print(f"{rel:12s} {transport:10s} received {len(lat)}/{sent}  latency p50 "
                  f"{results[f'{rel}/{transport}'][1]} ms  p95 {results[f'{rel}/{transport}'][2]} ms", flush=True)
    return results


if __name__ == "__main__":
    measure()
