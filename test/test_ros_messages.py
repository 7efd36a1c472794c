"""Every custom message and service over real DDS between two processes.

A child process (``python -c CHILD``) echoes InterleavedInstruction and Grounding messages back on other topics
and serves SetInstruction, QueryField and FieldFile with answers computed from the request; this test's node
publishes / calls and compares every value. Message contents come from BUILDERS, run in both processes.
Both processes are on the test's claimed domain (conftest ``ros`` / ``procs``), the peer is stopped and its log
closed at the end.
"""
import time

import pytest

rclpy = pytest.importorskip("rclpy")

BUILDERS = r'''
import hashlib
import numpy as np
from geometry_msgs.msg import PoseStamped, Vector3
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header
from find_ros.msg import GroundedEntity, Grounding, InterleavedInstruction
from find_ros.ros import conversions as conv


def build_instruction():
    rng = np.random.default_rng(7)
    h = Header(frame_id="")
    h.stamp.sec, h.stamp.nanosec = 1700000000, 123456789
    imgs = [conv.numpy_to_image(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "rgb8"),
            conv.numpy_to_image(rng.integers(0, 256, (10, 12, 4), dtype=np.uint8), "bgra8")]
    masks = [conv.numpy_to_image((rng.random((24, 32)) > 0.5).astype(np.uint8) * 255, "mono8"),
             conv.numpy_to_image(np.ones((10, 12), np.uint8), "mono8")]
    return InterleavedInstruction(header=h, id="instr-42", text="put <0> next to the red mug left of <1>",
                                  reference_images=imgs, reference_masks=masks)


def build_grounding():
    h = Header(frame_id="camera_color_optical_frame")
    h.stamp.sec, h.stamp.nanosec = 1700000001, 5
    ents = []
    for i, phrase in enumerate(["<0>", "the red mug", "<1>"]):
        e = GroundedEntity(phrase=phrase, entity_index=i, track_id=10 + i, score=0.25 * (i + 1), found=i != 2,
                           lost=i == 2, label=i + 1, pose_valid=i == 0, world_pose_valid=i == 1)
        e.box = RegionOfInterest(x_offset=5 * i, y_offset=7, width=20 + i, height=30, do_rectify=False)
        e.pose = conv.matrix_to_pose(np.array([[0, -1, 0, 0.1 * i], [1, 0, 0, 0.2], [0, 0, 1, 1.5], [0, 0, 0, 1.0]]))
        e.extent = Vector3(x=0.1, y=0.2 + i, z=0.3)
        e.world_pose = PoseStamped(header=Header(stamp=h.stamp, frame_id="map"), pose=e.pose)
        ents.append(e)
    return Grounding(header=h, instruction_id="instr-42", instruction_text="put <0> next to the red mug",
                     grounder="hsv-baseline", entities=ents, processing_ms=12.5)


def digest(instr):
    d = hashlib.sha1(instr.text.encode())
    for im in list(instr.reference_images) + list(instr.reference_masks):
        d.update(f"{im.encoding}:{im.width}x{im.height}:{im.step}".encode())
        d.update(bytes(im.data))
    return d.hexdigest()


def query_answer(text):
    words = text.split()
    goals, scores, extents = [], [], []
    for i, w in enumerate(words):
        T = np.eye(4)
        T[:3, 3] = (float(i), float(len(w)), 0.0)
        goals.append(PoseStamped(header=Header(frame_id="map"), pose=conv.matrix_to_pose(T)))
        scores.append(1.0 / (i + 1))
        extents.append(Vector3(x=0.1 * len(w), y=0.2, z=0.3))
    xyz = np.arange(3 * len(words) * 4, dtype=np.float32).reshape(-1, 3)
    rgb = (np.arange(xyz.size, dtype=np.int64) % 256).astype(np.uint8).reshape(-1, 3)
    heat = conv.points_to_cloud2(xyz, header=Header(frame_id="map"), rgb=rgb,
                                 score=np.linspace(0, 1, len(xyz)).astype(np.float32))
    return goals, scores, extents, heat
'''

CHILD = BUILDERS + r'''
import rclpy
from rclpy.executors import ExternalShutdownException
from find_ros.ros.qos import OUTPUT_QOS
from find_ros.srv import FieldFile, QueryField, SetInstruction

rclpy.init()
node = rclpy.create_node("messages_peer")
echo_i = node.create_publisher(InterleavedInstruction, "rt/instruction_echo", OUTPUT_QOS)
echo_g = node.create_publisher(Grounding, "rt/grounding_echo", OUTPUT_QOS)
node.create_subscription(InterleavedInstruction, "rt/instruction", echo_i.publish, OUTPUT_QOS)
node.create_subscription(Grounding, "rt/grounding", echo_g.publish, OUTPUT_QOS)


def set_instruction(req, res):
    res.success = bool(req.instruction.text)
    res.message = digest(req.instruction)
    res.instruction_id = req.instruction.id + "-ack"
    return res


def query(req, res):
    text = req.instruction.text or req.text
    res.goals, res.scores, res.extents, res.heatmap = query_answer(text)
    res.goals = res.goals[: req.max_goals or None]
    res.success, res.message = True, f"{len(res.goals)} goals for {text!r}"
    return res


def field_file(req, res):
    res.success = req.path.endswith(".npz")
    res.message = req.path[::-1]
    res.num_voxels = len(req.path) * 1000003
    return res


node.create_service(SetInstruction, "rt/set_instruction", set_instruction)
node.create_service(QueryField, "rt/query_field", query)
node.create_service(FieldFile, "rt/field_file", field_file)
print("peer ready", flush=True)
try:
    rclpy.spin(node)  # this child's own context, on the ROS_DOMAIN_ID its environment names
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    rclpy.try_shutdown()
'''


@pytest.fixture
def peer(ros, procs):
    proc = procs.spawn(["-c", CHILD], "peer.log")
    node = ros.node("messages_test")

    def alive():
        assert proc.poll() is None, f"peer exited: {procs.log_text(proc)[-2000:]}"

    return node, ros, proc, alive, lambda: procs.log_text(proc)[-2000:]


def _builders():
    ns = {}
    exec(BUILDERS, ns)
    return ns


def _round_trip(peer, mtype, topic, msg):
    from find_ros.ros.qos import OUTPUT_QOS

    node, ros, proc, alive, tail = peer
    got = []
    node.create_subscription(mtype, f"{topic}_echo", got.append, OUTPUT_QOS)
    pub = node.create_publisher(mtype, topic, OUTPUT_QOS)
    end = time.monotonic() + 30
    while not got and time.monotonic() < end:  # republish until the peer is discovered and echoes
        pub.publish(msg)
        ros.spin_until(lambda: bool(got), 0.5, alive=alive, period=0.05)
    assert got, f"no echo on {topic}_echo; peer log: {tail()}"
    return got[0]


def test_messages_and_services_cross_processes(peer):
    node, ros, proc, alive, tail = peer
    from find_ros.msg import Grounding, InterleavedInstruction
    from find_ros.ros import conversions as conv
    from find_ros.srv import FieldFile, QueryField, SetInstruction

    b = _builders()
    # -- InterleavedInstruction with images + masks
    sent = b["build_instruction"]()
    echo = _round_trip(peer, InterleavedInstruction, "rt/instruction", sent)
    assert echo == sent
    assert (echo.id, echo.text, echo.header.stamp.nanosec) == ("instr-42", sent.text, 123456789)
    for a, e in zip(echo.reference_images, sent.reference_images):
        assert a.encoding == e.encoding
        assert (conv.image_to_numpy(a) == conv.image_to_numpy(e)).all()
    assert [m.encoding for m in echo.reference_masks] == ["mono8", "mono8"]
    assert (conv.image_to_numpy(echo.reference_masks[0]) == conv.image_to_numpy(sent.reference_masks[0])).all()
    # -- Grounding with entities
    g = b["build_grounding"]()
    echo_g = _round_trip(peer, Grounding, "rt/grounding", g)
    assert echo_g == g and len(echo_g.entities) == 3
    e1 = echo_g.entities[1]
    assert (e1.phrase, e1.track_id, e1.label, e1.found, e1.lost, e1.world_pose_valid) == \
        ("the red mug", 11, 2, True, False, True)
    assert e1.score == pytest.approx(0.5) and e1.box.x_offset == 5 and e1.extent.y == pytest.approx(1.2)
    assert e1.world_pose.header.frame_id == "map" and e1.pose.position.x == pytest.approx(0.1)
    assert echo_g.processing_ms == pytest.approx(12.5)

    # -- services
    def call(stype, name, req):
        cli = node.create_client(stype, name)
        try:
            assert ros.spin_until(cli.service_is_ready, 20, alive=alive, period=0.05), f"{name} not available"
            fut = cli.call_async(req)
            assert ros.spin_until(fut.done, 20, alive=alive, period=0.05), f"{name} did not answer"
            return fut.result()
        finally:
            node.destroy_client(cli)

    res = call(SetInstruction, "rt/set_instruction", SetInstruction.Request(instruction=sent))
    assert res.success and res.instruction_id == "instr-42-ack"
    assert res.message == b["digest"](sent)  # the peer hashed exactly the bytes we sent

    text = "where is the fire extinguisher"
    res = call(QueryField, "rt/query_field", QueryField.Request(text=text, max_goals=3))
    goals, scores, extents, heat = b["query_answer"](text)
    assert res.success and res.message == f"3 goals for {text!r}"
    assert list(res.goals) == goals[:3] and list(res.extents) == extents
    assert list(res.scores) == pytest.approx(scores)
    assert res.heatmap == heat
    cloud = conv.cloud2_to_numpy(res.heatmap)
    assert cloud["rgb"].shape == (len(cloud["x"]), 3) and cloud["score"][-1] == pytest.approx(1.0)
    # the instruction field wins over text
    res = call(QueryField, "rt/query_field", QueryField.Request(text="ignored", instruction=sent))
    assert len(res.goals) == len(sent.text.split())

    res = call(FieldFile, "rt/field_file", FieldFile.Request(path="/tmp/field.npz"))
    assert res.success and res.message == "zpn.dleif/pmt/" and res.num_voxels == len("/tmp/field.npz") * 1000003
    res = call(FieldFile, "rt/field_file", FieldFile.Request(path=""))
    assert not res.success and res.num_voxels == 0
