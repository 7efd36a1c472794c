"""InstructionInput without DDS: set_from converts, resolves, applies; refusals are counted and answered."""
import pytest

pytest.importorskip("rclpy")

from find_ros.instruction import InstructionError  # noqa: E402
from find_ros.ros.instruction_input import InstructionInput  # noqa: E402
from find_ros.ros.reference_bridge import ReferenceBridge  # noqa: E402


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(text)


class _Node:
    def __init__(self):
        self.log = _Log()

    def get_logger(self):
        return self.log


class _Refs:
    resolve = ReferenceBridge.resolve

    def __init__(self):
        self.store = None


def _input(*, refs=True, fail=None):
    counts, warns, applied = [], [], []

    def apply(instruction, resolved):
        if fail is not None:
            raise fail
        applied.append((instruction, resolved))

    node = _Node()
    r = _Refs() if refs else None
    ii = InstructionInput(node=node, params={"max_image_pixels": 10**6}, count=counts.append,
                          warn=lambda kind, msg, level="warning": warns.append(kind), refs=lambda: r, apply=apply,
                          clear=lambda: applied.clear(), current_id=lambda: "old")
    return ii, node, counts, warns, applied


def test_an_accepted_instruction_is_applied_counted_and_logged():
    ii, node, counts, warns, applied = _input()
    ok, message, iid = ii.set_from("the red mug, the blue chair", [], [], "ins-7")
    assert (ok, message, iid) == (True, "accepted", "ins-7") and counts == ["instructions"] and warns == []
    (instruction, resolved), = applied
    assert instruction.id == "ins-7" and len(instruction.entities) == 2 and resolved.instruction is instruction
    assert "instruction ins-7" in node.log.lines[-1]
    ok, _, iid = ii.set_from("a cup", [], [], "")
    assert ok and iid.startswith("ins-")  # an id is made up when none is given


def test_refusals_are_counted_warned_and_answered_with_the_id_in_force():
    ii, _, counts, warns, applied = _input(refs=False)
    assert ii.set_from("a cup", [], [], "x") == (False, "node is not active", "old")
    ii, _, counts2, warns2, _ = _input(fail=InstructionError("node is not active"))
    assert ii.set_from("a cup", [], [], "x")[0] is False
    ii, _, counts3, warns3, _ = _input(fail=RuntimeError("embedding exploded"))
    assert ii.set_from("a cup", [], [], "x") == (False, "RuntimeError: embedding exploded", "old")
    assert counts == counts2 == counts3 == ["instructions_rejected"]
    assert warns == warns2 == ["instruction_rejected"] and warns3 == ["instruction_failed"] and applied == []
