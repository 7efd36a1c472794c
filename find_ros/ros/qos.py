"""QoS profiles of the find_ros topics, and the measurement behind the transport choice.

- Camera inputs of the perception node (colour, depth, camera_info, camera pose / odometry):
  :func:`sensor_subscription_qos` with the node parameter ``sensor_reliability``: BEST_EFFORT (default) or
  RELIABLE, KEEP_LAST 1, VOLATILE. A best-effort subscriber matches every camera driver: it receives from
  best-effort publishers (``SensorDataQoS``, most drivers and bag players) and from reliable ones (the sample is
  then sent best effort). A reliable subscriber receives nothing from a best-effort publisher ("incompatible QoS
  ... RELIABILITY"), so ``sensor_reliability: reliable`` is only for a graph whose cameras are all reliable and
  which wants retransmission of lost fragments. Keep-last 1: the newest frame wins, nothing queues.
- ``SENSOR_QOS`` (camera-like publishers of this package: the sim camera, the replay node, test harnesses):
  RELIABLE, KEEP_LAST 1, VOLATILE. It matches best-effort and reliable subscribers alike (a best-effort
  subscriber gets the samples best effort), and the writer history holds one sample, so nothing queues.
- ``OUTPUT_QOS`` (results): RELIABLE, KEEP_LAST 10, VOLATILE.
- ``LATCHED_QOS`` (state a late joiner must get: sim ground-truth objects, the field cloud): RELIABLE,
  KEEP_LAST 1, TRANSIENT_LOCAL. A VOLATILE subscriber still matches it (it just gets no history).

Transport (:mod:`find_ros.ros.dds`): a 640x480 rgb8 frame is ~15 UDP-sized fragments, and with Fast DDS's default
transports (512 KiB shared-memory segment) a best-effort frame is lost when one fragment is recycled before it is
read. ``MEASURED`` (``python -m find_ros.ros.qos``: two processes, rgb8 at 30 Hz for 4 s, 2 shared cores) compares
the shipped shared-memory profile (``shm``: 64 MiB segment + UDP, no TCP), ``LARGE_DATA`` (shared memory + TCP,
whose teardown can deadlock in libfastdds 3.2.2) and the defaults: ``shm`` delivers everything, reliable and
best-effort, at LARGE_DATA's latency. So the best-effort camera subscriptions lose no 640x480 or 1280x720 frame
with the shipped profile (the launch files and ``find-ros demo`` set it); with Fast DDS's defaults best-effort
large images are mostly lost, whatever the publisher's reliability.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["SENSOR_QOS", "SENSOR_RELIABILITIES", "DEFAULT_SENSOR_RELIABILITY", "sensor_subscription_qos",
           "OUTPUT_QOS", "LATCHED_QOS", "MEASURED", "measure"]

#: Values of the perception node's ``sensor_reliability`` parameter (the first one is the default).
SENSOR_RELIABILITIES = ("best_effort", "reliable")
DEFAULT_SENSOR_RELIABILITY = SENSOR_RELIABILITIES[0]

SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)


def sensor_subscription_qos(reliability: str = DEFAULT_SENSOR_RELIABILITY) -> QoSProfile:
    """The QoS of a camera-input subscription: ``reliability`` (``"best_effort"`` or ``"reliable"``),
    KEEP_LAST 1, VOLATILE. Raises ``ValueError`` naming the value for anything else."""
    policies = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
    if reliability not in policies:
        raise ValueError(f"sensor reliability {reliability!r} is not one of {', '.join(SENSOR_RELIABILITIES)}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=policies[reliability],
                      durability=DurabilityPolicy.VOLATILE)


OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: Measured 2026-12-02 on this machine (2 shared CPU cores): {"reliability/transport/WxH": (received fraction,
#: stamp->callback latency p50 ms, p95 ms)}.
MEASURED: dict[str, tuple[float, float, float]] = {
    "reliable/shm/640x480": (1.0, 4.0, 8.28),
    "best_effort/shm/640x480": (1.0, 3.71, 7.17),
    "reliable/large_data/640x480": (1.0, 4.13, 7.85),
    "best_effort/large_data/640x480": (1.0, 3.79, 7.63),
    "reliable/default/640x480": (0.992, 15.24, 22.57),
    "best_effort/default/640x480": (0.033, 5.49, 7.62),
    "reliable/shm/1280x720": (1.0, 9.9, 19.12),
    "best_effort/shm/1280x720": (1.0, 8.85, 17.53),
    "reliable/large_data/1280x720": (1.0, 8.82, 12.76),
    "best_effort/large_data/1280x720": (0.975, 13.76, 34.36),
    "reliable/default/1280x720": (0.533, 32.47, 70.1),
    "best_effort/default/1280x720": (0.0, float("nan"), float("nan")),
}


_PUBLISHER = r'''
import sys, time
import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rel = ReliabilityPolicy.RELIABLE if sys.argv[1] == "reliable" else ReliabilityPolicy.BEST_EFFORT
seconds, rate, w, h = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rclpy.init()
node = rclpy.create_node("qos_probe_pub")
pub = node.create_publisher(Image, "probe/image", QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=rel))
img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes()
end = time.monotonic() + 10.0
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    time.sleep(0.05)
time.sleep(1.0)  # let the reader's side of the match settle too
t0 = time.monotonic()
i = 0
while time.monotonic() - t0 < seconds:
    m = Image(height=h, width=w, encoding="rgb8", step=w * 3)
    m.data = img
    m.header.frame_id = str(i)
    m.header.stamp = node.get_clock().now().to_msg()
    pub.publish(m)
    i += 1
    time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
time.sleep(0.5)
print(i, flush=True)
node.destroy_node()
rclpy.shutdown()
'''

_SUBSCRIBER = r'''
import json, sys, time
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rel = ReliabilityPolicy.RELIABLE if sys.argv[1] == "reliable" else ReliabilityPolicy.BEST_EFFORT
seconds = float(sys.argv[2])
rclpy.init()
node = rclpy.create_node("qos_probe_sub")
lat = []
def on_image(m):
    now = node.get_clock().now().nanoseconds
    lat.append((now - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)) * 1e-6)
node.create_subscription(Image, "probe/image", on_image,
                         QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=rel))
end = time.monotonic() + seconds
while time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps(lat), flush=True)
node.destroy_node()
rclpy.shutdown()
'''


def measure(*, seconds: float = 4.0, rate_hz: float = 30.0, domain_id: int = 231,
            transports: tuple[str, ...] = ("shm", "large_data", "default"),
            sizes: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720))) -> dict[str, tuple[float, float, float]]:
    """Two processes (publisher, subscriber), rgb8 at ``rate_hz`` for ``seconds``: per
    ``"<reliability>/<transport>/<w>x<h>"`` the received fraction and the stamp->callback latency p50 / p95 (ms)."""
    import json
    import subprocess
    import sys

    import numpy as np

    from find_ros.ros.dds import process_env

    results = {}
    for w, h in sizes:
        for transport in transports:
            for rel in ("reliable", "best_effort"):
                env = process_env(domain_id=domain_id, transport=transport)
                sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, rel, str(seconds + 14.0)], env=env,
                                       stdout=subprocess.PIPE, text=True)
                pub = subprocess.Popen([sys.executable, "-c", _PUBLISHER, rel, str(seconds), str(rate_hz), str(w),
                                        str(h)], env=env, stdout=subprocess.PIPE, text=True)
                try:
                    sent = int((pub.communicate(timeout=seconds + 30)[0] or "0").split()[-1])
                    lat = json.loads(sub.communicate(timeout=seconds + 30)[0] or "[]")
                finally:
                    for p in (pub, sub):
                        if p.poll() is None:
                            p.kill()
                            p.wait()
                a = np.asarray(lat) if lat else np.asarray([np.nan])
                key = f"{rel}/{transport}/{w}x{h}"
                results[key] = (round(min(len(lat) / max(sent, 1), 1.0), 3), round(float(np.median(a)), 2),
                                round(float(np.percentile(a, 95)), 2))
                print(f"{key:34s} received {len(lat)}/{sent}  latency p50 {results[key][1]} ms  "
                      f"p95 {results[key][2]} ms", flush=True)
    return results


if __name__ == "__main__":
    measure()
