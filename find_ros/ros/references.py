"""Reference images / masks of an ``InterleavedInstruction`` message -> validated core :class:`Reference` s.

The one conversion used by everything that takes an instruction message: the perception node
(``find/instruction``, ``find/set_instruction``) and the field bridge (``find/field/query``), so both refuse the same
references for the same reasons:

- more than :data:`~find_ros.instruction.MAX_REFERENCES` images (checked before any conversion);
- a mask count that is neither 0 nor one per image;
- an image that :func:`~find_ros.ros.conversions.check_image` refuses from its header (encoding not an RGB one, zero
  size, more than ``max_pixels`` pixels, bad step, truncated data) or that does not convert;
- a mask (non-empty ones only: a 0x0 mask means "no mask for this image") not ``mono8`` / ``8UC1``, refused by
  ``check_image``, of another size than its image, or with no pixel set.

Every refusal raises :class:`ReferenceInputError` (an :class:`~find_ros.instruction.InstructionError`) carrying the
offending values. Pure: no node, no rclpy calls; the message classes are only read.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sensor_msgs.msg import Image

from find_ros.instruction import MAX_REFERENCES, Instruction, InstructionError, Reference, parse_instruction
from find_ros.ros import conversions as conv

__all__ = ["ReferenceInputError", "MASK_ENCODINGS", "references_from_msgs", "instruction_from_msg"]

MASK_ENCODINGS: tuple[str, ...] = ("mono8", "8UC1")
"""Encodings a reference mask may have (non-zero pixels are the mask)."""


class ReferenceInputError(InstructionError):
    """Reference images / masks that cannot be used.

    ``part`` is ``"count"`` (too many images, or mask count != image count), ``"image"``, ``"mask"`` or
    ``"reference"`` (the core :class:`Reference` refused the pair: image too small, mask empty); ``index`` the
    reference at fault (None for ``"count"``); ``values`` the offending values (counts, encoding, sizes, the pixel
    limit, the conversion problem ``kind``).
    """

    def __init__(self, message: str, *, part: str, index: int | None = None, **values: Any) -> None:
        super().__init__(message)
        self.part = part
        self.index = index
        self.values: dict[str, Any] = values


def _size(msg: Image) -> dict[str, Any]:
    return {"encoding": msg.encoding[:40], "width": int(msg.width), "height": int(msg.height)}


def references_from_msgs(images: Sequence[Image], masks: Sequence[Image], *, max_pixels: int) -> list[Reference]:
    """Validated references of ``images`` (rgb8 / bgr8 / ... see ``RGB_ENCODINGS``) with their optional ``masks``.

    Raises :class:`ReferenceInputError` (see the module docstring); ``max_pixels`` is the node's ``max_image_pixels``.
    """
    if len(images) > MAX_REFERENCES:  # before converting any of them
        raise ReferenceInputError(f"instruction has {len(images)} reference images (max {MAX_REFERENCES})",
                                  part="count", images=len(images), max_references=MAX_REFERENCES)
    if masks and len(masks) != len(images):
        raise ReferenceInputError(f"instruction has {len(images)} reference image(s) but {len(masks)} "
                                  "reference mask(s); give none or one per image",
                                  part="count", images=len(images), masks=len(masks))
    refs = []
    for k, img in enumerate(images):
        try:
            conv.check_image(img, encodings=conv.RGB_ENCODINGS, max_pixels=max_pixels)
            rgb = conv.image_to_rgb(img)
        except conv.ConversionError as e:
            raise ReferenceInputError(f"reference image {k}: {e}", part="image", index=k, kind=e.kind,
                                      max_pixels=max_pixels, **_size(img)) from e
        mask = None
        m_msg = masks[k] if masks else None
        if m_msg is not None and m_msg.width > 0 and m_msg.height > 0:
            if m_msg.encoding not in MASK_ENCODINGS:
                raise ReferenceInputError(f"reference mask {k} has encoding {m_msg.encoding[:40]!r}, expected mono8",
                                          part="mask", index=k, kind="encoding", **_size(m_msg))
            try:
                conv.check_image(m_msg, encodings=MASK_ENCODINGS, max_pixels=max_pixels)
                m = conv.image_to_numpy(m_msg)
            except conv.ConversionError as e:
                raise ReferenceInputError(f"reference mask {k}: {e}", part="mask", index=k, kind=e.kind,
                                          max_pixels=max_pixels, **_size(m_msg)) from e
            if m.shape != rgb.shape[:2]:
                raise ReferenceInputError(f"reference mask {k} is {m.shape[1]}x{m.shape[0]} but its image is "
                                          f"{rgb.shape[1]}x{rgb.shape[0]}", part="mask", index=k, kind="size",
                                          image_width=rgb.shape[1], image_height=rgb.shape[0], **_size(m_msg))
            mask = m != 0
        try:
            refs.append(Reference(image=rgb, mask=mask))
        except InstructionError as e:  # too small an image, an empty mask
            raise ReferenceInputError(f"reference {k}: {e}", part="reference", index=k, kind="invalid",
                                      **_size(img)) from e
    return refs


def instruction_from_msg(text: str, images: Sequence[Image], masks: Sequence[Image], *, id: str,
                         max_pixels: int) -> Instruction:
    """The parsed instruction of an ``InterleavedInstruction``'s fields (``text``, ``reference_images``,
    ``reference_masks``) with id ``id``: :func:`references_from_msgs`, then
    :func:`~find_ros.instruction.parse_instruction`. Raises :class:`~find_ros.instruction.InstructionError`
    (:class:`ReferenceInputError` for the references)."""
    return parse_instruction(text, references_from_msgs(images, masks, max_pixels=max_pixels), id=id)
