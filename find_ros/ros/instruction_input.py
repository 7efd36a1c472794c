"""The perception node's instruction side: topics and services in, a resolved instruction handed to the node.

Owned by the node (created at configure with its parameters, its ``count`` / ``warn`` callables, its reference
bridge and two hooks into its state):

- ``activate()`` subscribes ``find/instruction`` (``InterleavedInstruction``) and ``find/instruction_text``
  (``std_msgs/String``) and offers ``find/set_instruction`` (``SetInstruction``) and ``find/clear_instruction``
  (``Trigger``) in one mutually exclusive callback group; ``deactivate()`` drops them;
- :meth:`InstructionInput.set_from` converts the reference images (:func:`find_ros.ros.references.references_from_msgs`,
  ``max_image_pixels``), resolves ``<name>`` placeholders to stored references (``refs().resolve``) and hands the
  result to ``apply(instruction, resolved)`` (the node embeds it under its pipeline lock; it raises
  :class:`~find_ros.instruction.InstructionError` when inactive). A refusal is counted (``instructions_rejected``),
  warned about and answered, never raised; an accepted one is counted (``instructions``) and logged.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from std_msgs.msg import String
from std_srvs.srv import Trigger

from find_ros.instruction import InstructionError
from find_ros.msg import InterleavedInstruction
from find_ros.ros import conversions as conv
from find_ros.ros.endpoints import destroy_endpoints
from find_ros.ros.params import PARAMS_BY_NAME
from find_ros.ros.references import references_from_msgs
from find_ros.srv import SetInstruction

__all__ = ["InstructionInput", "INSTRUCTION_QOS"]

INSTRUCTION_QOS = 10


class InstructionInput:
    """Instruction topics and services of one node (see the module docstring)."""

    def __init__(self, *, node: Any, params: dict[str, Any], count: Callable[[str], None], warn: Callable[..., None],
                 refs: Callable[[], Any], apply: Callable[[Any, Any], None], clear: Callable[[], None],
                 current_id: Callable[[], str]) -> None:
        self._node = node
        self._p = params
        self._count = count
        self._warn = warn
        self._refs = refs
        self._apply = apply
        self._clear = clear
        self._current_id = current_id
        self._subs: list[Any] = []
        self._srvs: list[Any] = []

    def activate(self) -> None:
        n = self._node
        self._subs = [
            n.create_subscription(InterleavedInstruction, "find/instruction", lambda m: self.set_from(
                m.text, list(m.reference_images), list(m.reference_masks), m.id), INSTRUCTION_QOS),
            n.create_subscription(String, "find/instruction_text", lambda m: self.set_from(m.data, [], [], ""),
                                  INSTRUCTION_QOS)]
        group = MutuallyExclusiveCallbackGroup()
        self._srvs = [n.create_service(SetInstruction, "find/set_instruction", self._srv_set, callback_group=group),
                      n.create_service(Trigger, "find/clear_instruction", self._srv_clear, callback_group=group)]

    def deactivate(self) -> None:
        destroy_endpoints(self._node, subscriptions=self._subs, services=self._srvs)
        self._subs, self._srvs = [], []

    def _srv_set(self, req, resp):
        ins = req.instruction
        resp.success, resp.message, resp.instruction_id = self.set_from(
            ins.text, list(ins.reference_images), list(ins.reference_masks), ins.id)
        return resp

    def _srv_clear(self, req, resp):
        self._clear()
        resp.success, resp.message = True, "instruction cleared"
        self._node.get_logger().info("instruction cleared")
        return resp

    def set_from(self, text: str, images: list, masks: list, iid: str) -> tuple[bool, str, str]:
        """Convert, resolve and apply an instruction; returns (accepted, message, id in force)."""
        try:
            references = references_from_msgs(images, masks, max_pixels=self._p.get(
                "max_image_pixels", PARAMS_BY_NAME["max_image_pixels"].default))
            refs = self._refs()
            if refs is None:
                raise InstructionError("node is not active")
            # "<name>" placeholders -> stored references (find_ros.grounding.reference_store)
            resolved = refs.resolve(text, references, id=iid or f"ins-{uuid.uuid4().hex[:8]}")
            instruction = resolved.instruction
            self._apply(instruction, resolved)
        except (InstructionError, conv.ConversionError) as e:
            self._count("instructions_rejected")
            preview = text if len(text) <= 60 else text[:57] + "..."
            self._warn("instruction_rejected", f"instruction {preview!r} rejected: {e}")
            return False, str(e), self._current_id()
        except Exception as e:  # the grounder failed to embed it
            self._count("instructions_rejected")
            self._warn("instruction_failed", f"instruction could not be embedded: {type(e).__name__}: {e}",
                       level="error")
            return False, f"{type(e).__name__}: {e}", self._current_id()
        self._count("instructions")
        self._node.get_logger().info(
            f"instruction {instruction.id}: {instruction.text!r} -> entities "
            f"{list(resolved.entity_phrases)} ({len(instruction.references)} reference image(s)"
            + (f", stored: {', '.join(resolved.names)})" if resolved.names else ")"))
        return True, "accepted", instruction.id
