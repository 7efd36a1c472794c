"""find_ros.ros.references: InterleavedInstruction reference images / masks -> validated core references.

Pure unit tests on real message classes (find_ros.msg, sensor_msgs); no node, no DDS."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("find_ros.ros.conversions")

from sensor_msgs.msg import Image  # noqa: E402

from find_ros.instruction import MAX_REFERENCES, InstructionError  # noqa: E402
from find_ros.msg import InterleavedInstruction  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.references import ReferenceInputError, instruction_from_msg, references_from_msgs  # noqa: E402

MAX_PX = 4096 * 4096


def _img(w=20, h=16, enc="rgb8"):
    return conv.numpy_to_image(np.full((h, w, 3), (220, 20, 20), np.uint8), enc)


def _mask(w=20, h=16, enc="mono8", value=255):
    return conv.numpy_to_image(np.full((h, w), value, np.uint8), enc)


def test_image_and_mask_convert():
    bgr = _img(enc="bgr8")
    m = np.zeros((16, 20), np.uint8)
    m[2:6, 3:9] = 7
    refs = references_from_msgs([_img(), bgr], [Image(), conv.numpy_to_image(m, "8UC1")], max_pixels=MAX_PX)
    assert refs[0].mask is None  # a 0x0 mask means "no mask"
    assert refs[0].image.shape == (16, 20, 3) and tuple(refs[0].image[0, 0]) == (220, 20, 20)
    assert tuple(refs[1].image[0, 0]) == (20, 20, 220)  # bgr8 read as bgr
    assert refs[1].mask.dtype == bool and refs[1].mask.sum() == 4 * 6


def test_instruction_from_an_interleaved_message():
    msg = InterleavedInstruction(id="i-1", text="the <0> and the red mug", reference_images=[_img()],
                                 reference_masks=[_mask()])
    ins = instruction_from_msg(msg.text, msg.reference_images, msg.reference_masks, id=msg.id, max_pixels=MAX_PX)
    assert ins.id == "i-1" and len(ins.references) == 1 and ins.references[0].mask.all()
    assert [e.phrase for e in ins.entities] == ["the <0>", "the red mug"]
    with pytest.raises(InstructionError, match="<0> name no reference"):  # parse errors pass through unchanged
        instruction_from_msg("the <0>", [], [], id="x", max_pixels=MAX_PX)


def test_oversize_reference_is_refused_from_its_header():
    """8000x8000 rgb8 is refused before its (absent) data is looked at: the error carries the sizes and limit."""
    big = Image(width=8000, height=8000, encoding="rgb8", step=24000)
    with pytest.raises(ReferenceInputError, match="max_image_pixels=16777216") as ei:
        references_from_msgs([_img(), big], [], max_pixels=MAX_PX)
    e = ei.value
    assert isinstance(e, InstructionError) and str(e).startswith("reference image 1: ")
    assert (e.part, e.index) == ("image", 1)
    assert e.values == {"kind": "too_large", "max_pixels": MAX_PX, "encoding": "rgb8", "width": 8000, "height": 8000}
    with pytest.raises(ReferenceInputError, match="max_image_pixels=100"):  # the caller's limit
        references_from_msgs([_img()], [], max_pixels=100)


def test_count_checks_come_before_any_conversion():
    junk = Image(width=1, height=1, encoding="nope")
    with pytest.raises(ReferenceInputError, match=f"max {MAX_REFERENCES}") as ei:
        references_from_msgs([junk] * (MAX_REFERENCES + 1), [], max_pixels=MAX_PX)
    assert ei.value.part == "count" and ei.value.index is None
    assert ei.value.values == {"images": MAX_REFERENCES + 1, "max_references": MAX_REFERENCES}
    with pytest.raises(ReferenceInputError, match="2 reference image.s. but 1 reference mask") as ei:
        references_from_msgs([junk, junk], [_mask()], max_pixels=MAX_PX)
    assert ei.value.values == {"images": 2, "masks": 1}


@pytest.mark.parametrize(
    "images, masks, part, index, kind, text",
    [
        ([conv.numpy_to_image(np.ones((16, 20), np.float32), "32FC1")], [], "image", 0, "encoding",
         "reference image 0: encoding '32FC1'"),
        ([Image(width=0, height=0, encoding="rgb8")], [], "image", 0, "empty", "reference image 0: rgb8 image has zero"),
        ([Image(width=20, height=16, encoding="rgb8", step=60, data=bytes(10))], [], "image", 0, "truncated",
         "data has 10 bytes"),
        ([_img()], [_img()], "mask", 0, "encoding", "reference mask 0 has encoding 'rgb8', expected mono8"),
        ([_img()], [Image(width=20, height=16, encoding="mono8", step=20, data=bytes(5))], "mask", 0, "truncated",
         "reference mask 0: mono8 image 20x16: data has 5 bytes"),
        ([_img()], [_mask(w=5, h=5)], "mask", 0, "size", "reference mask 0 is 5x5 but its image is 20x16"),
        ([_img()], [_mask(value=0)], "reference", 0, "invalid", "reference 0: reference mask is empty"),
        ([_img(w=1, h=1)], [], "reference", 0, "invalid", "reference 0: reference image is too small"),
    ],
    ids=["image-encoding", "image-empty", "image-truncated", "mask-encoding", "mask-truncated", "mask-size",
         "mask-all-zero", "image-too-small"],
)
def test_bad_references_name_the_reference_and_values(images, masks, part, index, kind, text):
    with pytest.raises(ReferenceInputError) as ei:
        references_from_msgs(images, masks, max_pixels=MAX_PX)
    e = ei.value
    assert text in str(e), str(e)
    assert (e.part, e.index, e.values["kind"]) == (part, index, kind)


def test_oversize_mask_is_refused():
    big = Image(width=300, height=300, encoding="mono8", step=300)
    with pytest.raises(ReferenceInputError, match="max_image_pixels=1000") as ei:
        references_from_msgs([_img()], [big], max_pixels=1000)
    assert (ei.value.part, ei.value.values["width"], ei.value.values["kind"]) == ("mask", 300, "too_large")
