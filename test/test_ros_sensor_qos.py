"""Camera QoS over real DDS: a best-effort camera (``SensorDataQoS``, as most drivers and bag players publish) and
a reliable one both feed the perception node, whose camera subscriptions are best effort by default
(``sensor_reliability``, :func:`find_ros.ros.qos.sensor_subscription_qos`).

One node process (autostart, hsv-baseline) per test, started through ``procs``; frames are published from this
process by the :class:`test_ros_fuzz.Node` harness with its publishers swapped for the QoS under test. With
``sensor_reliability:=reliable`` the node asks for reliable data: a best-effort camera is then refused with an
incompatible-QoS event (what a user of the old RELIABLE subscriptions saw).
"""
from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("find_ros.msg")
pytest.importorskip("find_ros.grounding.baseline", reason="find_ros.grounding.baseline not delivered yet")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks  # noqa: E402
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile,  # noqa: E402
                       ReliabilityPolicy, qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.params import PARAMS_BY_NAME  # noqa: E402
from find_ros.ros.qos import (DEFAULT_SENSOR_RELIABILITY, SENSOR_QOS, SENSOR_RELIABILITIES,  # noqa: E402
                              sensor_subscription_qos)
from test_ros_fuzz import Node, spawn, square_iou  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAMERA_TOPICS = (("pub_color", Image, "camera/color/image_raw"), ("pub_depth", Image, "camera/depth/image_raw"),
                 ("pub_info", CameraInfo, "camera/color/camera_info"), ("pub_pose", PoseStamped, "camera/pose"))
NODE_ARGS = ["-p", "autostart:=true", "-p", "grounder:=hsv-baseline", "-p", "status_period_s:=0.25",
             "-p", "max_stamp_age_s:=3.0", "-p", "publish_overlay:=false", "-p", "min_points:=20"]


# ---------------------------------------------------------------------------------------------- pure units
def test_sensor_subscription_qos_profiles_and_the_parameter_agree():
    spec = PARAMS_BY_NAME["sensor_reliability"]
    assert spec.type is str and spec.choices == SENSOR_RELIABILITIES
    assert spec.default == DEFAULT_SENSOR_RELIABILITY == "best_effort"
    assert spec.description.strip() and not spec.live
    be, rel = sensor_subscription_qos("best_effort"), sensor_subscription_qos("reliable")
    assert be.reliability == ReliabilityPolicy.BEST_EFFORT and rel.reliability == ReliabilityPolicy.RELIABLE
    for q in (be, rel, sensor_subscription_qos()):
        assert (q.history, q.depth, q.durability) == (HistoryPolicy.KEEP_LAST, 1, DurabilityPolicy.VOLATILE)
    assert sensor_subscription_qos().reliability == ReliabilityPolicy.BEST_EFFORT
    with pytest.raises(ValueError, match="'sometimes' is not one of best_effort, reliable"):
        sensor_subscription_qos("sometimes")


# ---------------------------------------------------------------------------------------------- over DDS
class Camera:
    """The fuzz harness with its four camera publishers replaced by ones of ``qos``; incompatible-QoS events
    of those publishers are counted in :attr:`incompatible` (policy ids)."""

    def __init__(self, ros, procs, proc, qos: QoSProfile) -> None:
        self.t = Node(ros, procs, proc)
        self.use(qos)

    def use(self, qos: QoSProfile) -> None:
        """Replace the camera publishers by ones of ``qos`` (and forget earlier incompatible-QoS events)."""
        t, self.incompatible = self.t, []
        events = PublisherEventCallbacks(incompatible_qos=lambda e: self.incompatible.append(e.last_policy_kind))
        for attr, mtype, topic in CAMERA_TOPICS:
            t.node.destroy_publisher(getattr(t, attr))
            setattr(t, attr, t.node.create_publisher(mtype, topic, qos, event_callbacks=events))

    def node_subscription_reliability(self, topic: str = "camera/color/image_raw"):
        """Reliability of the perception node's subscription to ``topic`` (from the ROS graph), or None."""
        infos = [i for i in self.t.node.get_subscriptions_info_by_topic(topic) if i.node_name == "perception_node"]
        return infos[0].qos_profile.reliability if infos else None


def _ground(cam: Camera, label: str) -> None:
    """Frames from ``cam`` until several are grounded: the red square found with a good mask."""
    t = cam.t
    assert t.spin_until(lambda: t.status.get("grounder") == "hsv-baseline", 60), t.log_text()[-3000:]
    t.pub_text.publish(String(data="the red cube"))
    assert t.wait_log("'the red cube' -> entities"), t.log_text()[-2000:]
    sent: list[int] = []

    def grounded() -> list[int]:
        return [s for s in sent if s in t.grounding and s in t.mask]

    for _ in range(60):  # at most ~6 s of 10 Hz frames
        sent.append(t.frame())
        t.spin_for(0.1)
        if len(grounded()) >= 5:
            break
    t.spin_until(lambda: len(grounded()) >= 5, 5)
    done = grounded()
    print(f"\n{label}: {len(done)}/{len(sent)} frames grounded; status frames_in={t.status.get('frames_in')} "
          f"processed={t.status.get('processed')}")
    assert len(done) >= 5, (label, len(done), len(sent), t.status, t.log_text()[-2000:])
    for s in done:
        g = t.grounding[s]
        assert g.entities[0].found, g
        assert square_iou(conv.image_to_numpy(t.mask[s]), g.entities[0].label) > 0.7
    assert t.spin_until(lambda: t.status.get("frames_in", 0) >= len(done), 5), t.status  # a status period later
    assert not cam.incompatible, cam.incompatible


@pytest.mark.parametrize("camera_qos", ["sensor_data", "reliable"])
def test_best_effort_and_reliable_cameras_feed_the_default_node(ros, procs, camera_qos):
    """The node at its defaults subscribes best effort; a SensorDataQoS camera and a reliable one both ground."""
    proc = spawn(procs, NODE_ARGS)
    qos = qos_profile_sensor_data if camera_qos == "sensor_data" else SENSOR_QOS
    cam = Camera(ros, procs, proc, qos)
    # discovery reports each of the node's subscriptions on its own: wait until the graph shows all of them
    topics = [topic for _, _, topic in CAMERA_TOPICS]
    assert cam.t.spin_until(lambda: all(cam.node_subscription_reliability(t) is not None for t in topics), 60), \
        cam.t.log_text()[-2000:]
    assert cam.node_subscription_reliability() == ReliabilityPolicy.BEST_EFFORT
    for _, _, topic in CAMERA_TOPICS:
        assert cam.node_subscription_reliability(topic) == ReliabilityPolicy.BEST_EFFORT, topic
    assert "sensor_reliability=best_effort" in cam.t.log_text()
    _ground(cam, f"{camera_qos} camera -> best-effort node")


def test_reliable_node_grounds_a_reliable_camera_and_refuses_a_best_effort_one(ros, procs):
    """``sensor_reliability:=reliable``: a reliable camera still grounds; a best-effort one gets the
    incompatible-QoS event on RELIABILITY and the node counts no frame from it."""
    proc = spawn(procs, [*NODE_ARGS, "-p", "sensor_reliability:=reliable"])
    cam = Camera(ros, procs, proc, SENSOR_QOS)
    t = cam.t
    assert t.spin_until(lambda: cam.node_subscription_reliability() is not None, 60), t.log_text()[-2000:]
    assert cam.node_subscription_reliability() == ReliabilityPolicy.RELIABLE
    _ground(cam, "reliable camera -> reliable node")

    # now a best-effort camera: its publishers are refused by the node's reliable subscriptions
    cam.use(qos_profile_sensor_data)
    assert t.spin_until(lambda: len(cam.incompatible) >= len(CAMERA_TOPICS), 15), cam.incompatible
    assert set(cam.incompatible) == {QoSPolicyKind.RELIABILITY}, cam.incompatible
    t.spin_until(lambda: False, 0.6)  # a status period or two
    before = t.status.get("frames_in", 0)
    sent = []
    for _ in range(10):
        sent.append(t.frame())
        t.spin_for(0.1)
    t.spin_for(1.0)
    assert t.status.get("frames_in", 0) == before, t.status
    assert not any(s in t.grounding for s in sent)
