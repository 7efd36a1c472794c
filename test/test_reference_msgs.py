"""The stored-reference interfaces (StoredReference, ReferenceList, AddReference, ListReferences, RemoveReference):
fields and constants exist, and each message survives a CDR serialization round trip (no DDS needed)."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import Point, PointStamped  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from find_ros.msg import ReferenceList, StoredReference  # noqa: E402
from find_ros.srv import AddReference, ListReferences, RemoveReference  # noqa: E402


def _image(encoding: str, w: int, h: int, channels: int) -> Image:
    data = bytes((i * 7) % 256 for i in range(w * h * channels))
    return Image(encoding=encoding, width=w, height=h, step=w * channels, data=data)


def _stored(name: str = "mug") -> StoredReference:
    return StoredReference(
        name=name, thumbnail=_image("rgb8", 16, 12, 3), mask=_image("mono8", 16, 12, 1),
        source_frame="camera_color_optical_frame", stamp=Time(sec=1700000000, nanosec=5),
        has_position=True, position=Point(x=1.0, y=-2.0, z=0.5), score=0.75, origin="point")


def _round_trip(msg):
    back = deserialize_message(serialize_message(msg), type(msg))
    assert back == msg
    return back


def test_stored_reference_fields_round_trip():
    back = _round_trip(_stored())
    assert back.name == "mug" and back.origin == "point" and back.has_position
    assert (back.position.x, back.position.y, back.position.z) == (1.0, -2.0, 0.5)
    assert back.thumbnail.encoding == "rgb8" and back.mask.encoding == "mono8"
    assert (back.mask.width, back.mask.height) == (back.thumbnail.width, back.thumbnail.height)
    assert back.stamp.sec == 1700000000 and back.score == pytest.approx(0.75)
    nan = deserialize_message(serialize_message(StoredReference(score=float("nan"))), StoredReference)
    assert math.isnan(nan.score)  # "unknown" survives the wire


def test_reference_list_round_trip():
    h = Header(frame_id="map", stamp=Time(sec=3, nanosec=4))
    back = _round_trip(ReferenceList(header=h, references=[_stored("mug"), _stored("ref1")]))
    assert [r.name for r in back.references] == ["mug", "ref1"] and back.header.frame_id == "map"
    assert ReferenceList().references == []


def test_add_reference_service_fields_and_constants():
    assert (AddReference.Request.SOURCE_POINT, AddReference.Request.SOURCE_PIXEL,
            AddReference.Request.SOURCE_IMAGE) == (0, 1, 2)
    req = AddReference.Request(
        name="", source=AddReference.Request.SOURCE_PIXEL,
        point=PointStamped(header=Header(frame_id="map"), point=Point(x=1.0, y=2.0, z=3.0)),
        pixel=PointStamped(header=Header(frame_id="camera_color_optical_frame", stamp=Time(sec=9)),
                           point=Point(x=320.0, y=240.0)),
        image=_image("rgb8", 8, 6, 3), mask=Image())
    back = _round_trip(req)
    assert back.source == 1 and back.pixel.point.x == 320.0 and back.pixel.header.stamp.sec == 9
    assert back.point.header.frame_id == "map" and back.mask.width == 0 and back.image.height == 6
    resp = AddReference.Response(success=True, message="stored 'ref1'", name="ref1", score=0.625,
                                 reference=_stored("ref1"))
    assert _round_trip(resp).reference.name == "ref1"
    assert AddReference.Response().success is False and AddReference.Response().name == ""


def test_list_and_remove_services():
    assert not [f for f in ListReferences.Request.get_fields_and_field_types()]
    resp = _round_trip(ListReferences.Response(references=[_stored()]))
    assert resp.references[0].name == "mug"
    assert _round_trip(RemoveReference.Request(name="mug")).name == "mug"
    r = _round_trip(RemoveReference.Response(success=False, message="no stored reference named 'cup'"))
    assert not r.success and "cup" in r.message
