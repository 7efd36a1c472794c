"""Stored references (find_ros.grounding.reference_store): names, persistence, atomic writes, names in text.

Real numpy arrays and real PNG / JSON files in a temporary directory; no mocks.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import resource
import shutil
import signal
import threading

import cv2
import numpy as np
import pytest

from find_ros.instruction import InstructionError, Reference, parse_instruction
from find_ros.grounding.reference_store import (
    BadReferenceName,
    DuplicateReferenceName,
    InvalidStoredReference,
    NamedReferenceError,
    ReferenceStore,
    ReferenceStoreError,
    ReferenceStoreFull,
    StoredReference,
    UnknownReference,
    resolve_named_references,
)


def _crop(seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ref(seed: int = 0, *, name: str = "", mask: bool | np.ndarray = True, h: int = 24, w: int = 32,
         **kw) -> StoredReference:
    """A reference with a made-up crop; ``mask``: True = a box mask, False = none, an array = that array."""
    m = mask if isinstance(mask, np.ndarray) else None
    if mask is True:
        m = np.zeros((h, w), bool)
        m[h // 4: 3 * h // 4, w // 5: 4 * w // 5] = True
        m[0, 0] = True  # a corner pixel: orientation errors would move it
    T = np.eye(4)
    T[:3, 3] = (1.0, -2.0, 0.5)
    args = dict(name=name, crop=_crop(seed, h, w), mask=m, source_frame="camera_color_optical_frame",
                stamp_ns=1_700_000_000_123_456_789 + seed, camera_pose=T, world_position=np.array([0.1, 0.2, 0.3]),
                score=0.875, origin="point")
    args.update(kw)
    return StoredReference(**args)


def _same(a: StoredReference, b: StoredReference) -> None:
    assert a.name == b.name and a.source_frame == b.source_frame and a.stamp_ns == b.stamp_ns
    assert a.origin == b.origin and a.created == pytest.approx(b.created)
    assert np.array_equal(a.crop, b.crop) and a.crop.dtype == b.crop.dtype == np.uint8
    if a.mask is None:
        assert b.mask is None
    else:
        assert b.mask is not None and b.mask.dtype == bool and np.array_equal(a.mask, b.mask)
    for x, y in ((a.camera_pose, b.camera_pose), (a.world_position, b.world_position)):
        assert (x is None) == (y is None)
        if x is not None:
            assert np.array_equal(x, y) and y.dtype == np.float64
    assert (math.isnan(a.score) and math.isnan(b.score)) or a.score == b.score


# ------------------------------------------------------------------------------------------------ StoredReference


def test_stored_reference_copies_freezes_and_converts():
    crop = _crop(1)
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 5:10] = 255
    r = StoredReference(name="", crop=crop, mask=mask, source_frame="cam", stamp_ns=5, camera_pose=None,
                        world_position=[1, 2, 3], score=float("nan"), origin="image")
    crop[:] = 0
    assert r.crop.any() and not r.crop.flags.writeable and r.mask.dtype == bool and r.mask.sum() == 25
    assert r.world_position.dtype == np.float64 and r.world_position.tolist() == [1.0, 2.0, 3.0]
    ref = r.to_reference()
    assert isinstance(ref, Reference) and np.array_equal(ref.image, r.crop) and np.array_equal(ref.mask, r.mask)
    assert StoredReference(name="x", crop=r.crop, mask=None, source_frame="", stamp_ns=0, camera_pose=None,
                           world_position=None, score=0.0, origin="pixel").to_reference().mask is None


@pytest.mark.parametrize("field, value, match", [
    ("crop", np.zeros((4, 4), np.uint8), r"crop must be an \(H, W, 3\) uint8"),
    ("crop", np.zeros((4, 4, 3), np.float32), "uint8"),
    ("crop", np.zeros((1, 4, 3), np.uint8), "too small"),
    ("mask", np.ones((5, 5), bool), "does not match"),
    ("mask", np.zeros((24, 32), bool), "empty"),
    ("stamp_ns", -1, "non-negative integer"),
    ("stamp_ns", 1.5, "non-negative integer"),
    ("camera_pose", np.eye(3), "4x4"),
    ("camera_pose", np.full((4, 4), np.nan), "finite"),
    ("camera_pose", np.diag([2.0, 1, 1, 1]), "rigid"),
    ("world_position", [1.0, 2.0], "3 finite"),
    ("world_position", [1.0, np.inf, 2.0], "3 finite"),
    ("score", 1.5, r"\[0, 1\]"),
    ("score", "high", r"\[0, 1\]"),
    ("origin", "click", "point, pixel, image"),
    ("name", 3, "string"),
])
def test_stored_reference_rejects_bad_fields(field, value, match):
    with pytest.raises(InvalidStoredReference, match=match) as e:
        _ref(**{field: value})
    assert e.value.field == field and isinstance(e.value, ReferenceStoreError) and isinstance(e.value, ValueError)


def test_thumbnail_bounds_the_long_side_and_keeps_the_mask():
    r = _ref(h=300, w=200)
    rgb, mask = r.thumbnail()
    assert rgb.shape == (128, 85, 3) and rgb.dtype == np.uint8
    assert mask.shape == (128, 85) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    small_rgb, small_mask = _ref(mask=False).thumbnail()  # 24x32: never upscaled, no mask -> all 255
    assert small_rgb.shape == (24, 32, 3) and (small_mask == 255).all()
    thin = np.zeros((400, 400), bool)
    thin[200, 10:390] = True  # one pixel thick: would vanish under plain nearest-neighbour
    rgb, mask = dataclasses.replace(_ref(mask=False, h=400, w=400), mask=thin).thumbnail(max_side=64)
    assert mask.shape == (64, 64) and mask.any()


# ------------------------------------------------------------------------------------------------ names


def test_add_auto_names_lowest_unused_and_keeps_insertion_order():
    s = ReferenceStore(directory=None)
    a = s.add(_ref(1))
    b = s.add(_ref(2), name="mug")
    c = s.add(_ref(3))
    assert (a.name, b.name, c.name) == ("ref1", "mug", "ref2")
    assert s.names() == ["ref1", "mug", "ref2"] and len(s) == 3 and "mug" in s and "cup" not in s and 3 not in s
    assert s.get("mug") is b and [r.name for r in s.references()] == s.names()
    s.remove("ref1")
    assert s.add(_ref(4)).name == "ref1"  # the lowest unused number comes back
    assert s.names() == ["mug", "ref2", "ref1"]
    assert s.add(_ref(5, name="fromfield")).name == "fromfield"  # a name carried by the reference itself
    assert s.add(_ref(6, name="ignored"), name="kwarg").name == "kwarg"  # the keyword wins


def test_auto_name_skips_a_user_name_that_takes_it():
    s = ReferenceStore(directory=None)
    s.add(_ref(), name="ref1")
    s.add(_ref(), name="REF2")
    assert s.add(_ref()).name == "ref3"


@pytest.mark.parametrize("name, rule", [
    ("", "non-empty"),
    ("x" * 33, "at most 32 characters"),
    ("12", "not a number"),
    ("0", "not a number"),
    ("1mug", "[A-Za-z]"),
    ("my mug", "[A-Za-z]"),
    ("mug!", "[A-Za-z]"),
    ("_mug", "[A-Za-z]"),
    ("müg", "[A-Za-z]"),
    ("../etc", "[A-Za-z]"),
    (".tmp-x", "[A-Za-z]"),
])
def test_bad_names_are_refused_with_name_and_rule(name, rule, tmp_path):
    s = ReferenceStore(directory=tmp_path)
    with pytest.raises(BadReferenceName) as e:
        s.add(_ref(), name=name)
    assert e.value.name == name and rule in e.value.rule
    assert (name[:20] in str(e.value)) if name else "empty" in str(e.value)
    assert len(s) == 0 and list(tmp_path.iterdir()) == []


def test_max_name_chars_is_configurable():
    s = ReferenceStore(directory=None, max_name_chars=8)
    s.add(_ref(), name="abcdefgh")
    with pytest.raises(BadReferenceName, match="9 characters"):
        s.add(_ref(), name="abcdefghi")
    with pytest.raises(ReferenceStoreError, match="max_name_chars"):
        ReferenceStore(directory=None, max_name_chars=3)
    with pytest.raises(ReferenceStoreError, match="max_references"):
        ReferenceStore(directory=None, max_references=0)


def test_duplicate_names_store_nothing(tmp_path):
    s = ReferenceStore(directory=tmp_path)
    first = s.add(_ref(1), name="mug")
    for dup in ("mug", "Mug", "MUG"):
        with pytest.raises(DuplicateReferenceName, match="'mug' is already stored") as e:
            s.add(_ref(2), name=dup)
        assert e.value.existing == "mug" and e.value.name == dup
    assert s.names() == ["mug"] and s.get("mug") is first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug"]
    assert np.array_equal(ReferenceStore(directory=tmp_path).get("mug").crop, first.crop)


def test_full_store_refuses_and_stores_nothing(tmp_path):
    s = ReferenceStore(directory=tmp_path, max_references=2)
    s.add(_ref(1))
    s.add(_ref(2))
    with pytest.raises(ReferenceStoreFull, match="full") as e:
        s.add(_ref(3), name="third")
    assert e.value.max_references == 2 and e.value.name == "third"
    assert s.names() == ["ref1", "ref2"] and sorted(p.name for p in tmp_path.iterdir()) == ["ref1", "ref2"]
    s.remove("ref1")
    assert s.add(_ref(3), name="third").name == "third"


def test_unknown_names_list_the_stored_ones():
    s = ReferenceStore(directory=None)
    with pytest.raises(UnknownReference, match=r"'cup' \(stored: none\)"):
        s.get("cup")
    s.add(_ref(), name="mug")
    s.add(_ref())
    with pytest.raises(UnknownReference, match=r"no stored reference named 'cup' \(stored: mug, ref1\)") as e:
        s.remove("cup")
    assert e.value.known == ("mug", "ref1") and e.value.name == "cup"
    with pytest.raises(UnknownReference):
        s.update_position("cup", [0, 0, 0])
    assert s.names() == ["mug", "ref1"]


def test_add_takes_only_stored_references():
    with pytest.raises(InvalidStoredReference, match="StoredReference"):
        ReferenceStore(directory=None).add(Reference(image=_crop()))


# ------------------------------------------------------------------------------------------------ persistence


def test_round_trip_across_a_restart(tmp_path):
    s = ReferenceStore(directory=tmp_path)
    a = s.add(_ref(1), name="mug")
    b = s.add(_ref(2, mask=False, camera_pose=None, world_position=None, score=float("nan"), origin="image"))
    c = s.add(_ref(3, origin="pixel"), name="zeta")
    s.add(_ref(4), name="gone")
    s.remove("gone")
    moved = s.update_position("mug", (4.0, 5.0, 6.5))
    assert moved.world_position.tolist() == [4.0, 5.0, 6.5] and s.get("mug") is moved
    del s

    files = {p.name: sorted(q.name for q in p.iterdir()) for p in tmp_path.iterdir()}
    assert files == {"mug": ["crop.png", "mask.png", "meta.json"], "ref1": ["crop.png", "meta.json"],
                     "zeta": ["crop.png", "mask.png", "meta.json"]}
    meta = json.loads((tmp_path / "mug" / "meta.json").read_text())
    assert meta["name"] == "mug" and meta["format_version"] == 1 and meta["origin"] == "point"
    assert meta["stamp_ns"] == 1_700_000_000_123_456_790 and meta["world_position"] == [4.0, 5.0, 6.5]
    assert len(meta["camera_pose"]) == 4 and isinstance(meta["created"], float)
    assert json.loads((tmp_path / "ref1" / "meta.json").read_text())["score"] is None  # nan -> null (valid JSON)
    # the PNG is a real colour PNG in OpenCV's BGR order: red in RGB reads back as red
    on_disk = cv2.imread(str(tmp_path / "mug" / "crop.png"), cv2.IMREAD_UNCHANGED)
    assert on_disk.shape == (24, 32, 3) and np.array_equal(on_disk[..., ::-1], a.crop)
    mask_png = cv2.imread(str(tmp_path / "mug" / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask_png.dtype == np.uint8 and mask_png.ndim == 2 and set(np.unique(mask_png)) == {0, 255}

    s2 = ReferenceStore(directory=tmp_path)  # the restart
    assert s2.names() == ["mug", "ref1", "zeta"] and s2.skipped == []
    _same(s2.get("mug"), moved)
    _same(s2.get("ref1"), b)
    _same(s2.get("zeta"), c)
    assert s2.add(_ref(5)).name == "ref2"
    assert ReferenceStore(directory=tmp_path).names() == ["mug", "ref1", "zeta", "ref2"]  # order survives again


def test_insertion_order_survives_names_that_sort_differently(tmp_path):
    s = ReferenceStore(directory=tmp_path)
    for n in ("zulu", "alpha", "Mike", "bravo"):
        s.add(_ref(), name=n)
    assert ReferenceStore(directory=tmp_path).names() == ["zulu", "alpha", "Mike", "bravo"]


def test_directory_is_created(tmp_path):
    d = tmp_path / "a" / "b"
    s = ReferenceStore(directory=d)
    s.add(_ref())
    assert (d / "ref1" / "meta.json").exists()


def test_leftover_temporaries_and_corrupt_entries_are_ignored_on_load(tmp_path, caplog):
    s = ReferenceStore(directory=tmp_path)
    good = s.add(_ref(1), name="good")
    for n in ("badjson", "nocrop", "wrongname", "badmask", "future", "badpose"):
        s.add(_ref(2), name=n)
    # a crash in the middle of an add: a complete-looking temporary directory that was never renamed into place
    s.add(_ref(3), name="halfway")
    os.replace(tmp_path / "halfway", tmp_path / ".tmp-halfway-0123abcd")
    # a crash in the middle of a remove: the renamed, not yet deleted, directory of a complete reference
    shutil.copytree(tmp_path / "good", tmp_path / ".trash-good-0123abcd")
    (tmp_path / "badjson" / "meta.json").write_text("{not json")
    (tmp_path / "nocrop" / "crop.png").unlink()
    meta = json.loads((tmp_path / "wrongname" / "meta.json").read_text())
    (tmp_path / "wrongname" / "meta.json").write_text(json.dumps({**meta, "name": "other"}))
    (tmp_path / "badmask" / "mask.png").write_bytes(b"\x89PNG truncated")
    meta = json.loads((tmp_path / "future" / "meta.json").read_text())
    (tmp_path / "future" / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    meta = json.loads((tmp_path / "badpose" / "meta.json").read_text())
    (tmp_path / "badpose" / "meta.json").write_text(json.dumps({**meta, "camera_pose": [[1, 2], [3, 4]]}))
    (tmp_path / "not a name").mkdir()
    (tmp_path / "stray.txt").write_text("x")

    with caplog.at_level(logging.WARNING, logger="find_ros.grounding.reference_store"):
        s2 = ReferenceStore(directory=tmp_path)
    assert s2.names() == ["good"]
    _same(s2.get("good"), good)
    skipped = {p.name: why for p, why in s2.skipped}
    assert set(skipped) == {"badjson", "nocrop", "wrongname", "badmask", "future", "badpose", "not a name"}
    assert "format_version 99" in skipped["future"] and "'other'" in skipped["wrongname"]
    assert "crop.png" in skipped["nocrop"] and "mask.png" in skipped["badmask"]
    assert "camera_pose" in skipped["badpose"]
    for n in skipped:
        assert any(n in rec.getMessage() for rec in caplog.records), n
    # the store keeps working; a new reference under a skipped entry's name moves the corrupt one aside
    assert s2.add(_ref(4), name="badjson").name == "badjson"
    assert any(p.name.startswith(".corrupt-badjson-") for p in tmp_path.iterdir())
    assert ReferenceStore(directory=tmp_path).names() == ["good", "badjson"]


def test_a_write_that_fails_midway_stores_nothing(tmp_path):
    """A real I/O error after the temporary directory exists (file size limit: EFBIG, also for root)."""
    s = ReferenceStore(directory=tmp_path)
    s.add(_ref(1), name="keep")
    big = _ref(2, h=96, w=96)  # a random 96x96 crop: a PNG of ~28 kB
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))
    try:
        with pytest.raises(OSError):
            s.add(big, name="new")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert s.names() == ["keep"] and sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert s.add(big).name == "ref1"  # the same add works once the disk does
    assert ReferenceStore(directory=tmp_path).names() == ["keep", "ref1"]


def test_a_vanished_directory_stores_nothing(tmp_path):
    d = tmp_path / "refs"
    s = ReferenceStore(directory=d)
    s.add(_ref(1), name="keep")
    os.replace(d, tmp_path / "elsewhere")
    d.write_text("now a file")  # the store's directory cannot hold anything any more
    with pytest.raises(OSError):
        s.add(_ref(2))
    assert s.names() == ["keep"]


def test_remove_deletes_the_directory_atomically(tmp_path):
    s = ReferenceStore(directory=tmp_path)
    s.add(_ref(), name="a")
    removed = s.remove("a")
    assert removed.name == "a" and len(s) == 0 and list(tmp_path.iterdir()) == []
    assert ReferenceStore(directory=tmp_path).names() == []


def test_max_references_bounds_what_a_load_takes(tmp_path):
    s = ReferenceStore(directory=tmp_path)
    for n in ("a", "b", "c"):
        s.add(_ref(), name=n)
    small = ReferenceStore(directory=tmp_path, max_references=2)
    assert small.names() == ["a", "b"] and [p.name for p, _ in small.skipped] == ["c"]
    assert (tmp_path / "c").exists()  # not deleted


def test_concurrent_adds_get_distinct_auto_names(tmp_path):
    s = ReferenceStore(directory=tmp_path)
    out: list[str] = []
    lock = threading.Lock()

    def work():
        for _ in range(5):
            name = s.add(_ref()).name
            with lock:
                out.append(name)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == sorted(f"ref{k}" for k in range(1, 21))
    assert sorted(ReferenceStore(directory=tmp_path).names()) == sorted(out)


# ------------------------------------------------------------------------------------------------ names in text


@pytest.fixture
def store():
    s = ReferenceStore(directory=None)
    s.add(_ref(1), name="mug")
    s.add(_ref(2, mask=False))  # ref1
    return s


def test_named_references_become_ordinary_interleaved_instructions(store):
    r = resolve_named_references("the <mug> next to the red cube", store, id="x")
    ins = r.instruction
    assert ins.id == "x" and ins.text == "the <0> next to the red cube" and len(ins.references) == 1
    assert np.array_equal(ins.references[0].image, store.get("mug").crop)
    assert np.array_equal(ins.references[0].mask, store.get("mug").mask)
    assert r.reference_names == ("mug",) and r.names == ("mug",)
    assert r.entity_names == (("mug",),) and r.entity_phrases == ("the <mug> next to the red cube",)

    r = resolve_named_references("the <ref1>", store)
    assert r.instruction.text == "the <0>" and r.instruction.references[0].mask is None
    assert r.instruction.entities[0].reference_indices == (0,) and r.entity_names == (("ref1",),)


def test_names_mix_with_explicit_references_and_repeat(store):
    explicit = Reference(image=_crop(9, 8, 8))
    r = resolve_named_references("put <mug> on <0>, then <ref1> and the <mug> again; the red cube", store, [explicit])
    ins = r.instruction
    assert ins.text == "put <1> on <0>, then <2> and the <1> again; the red cube"
    assert len(ins.references) == 3 and ins.references[0] is explicit
    assert r.reference_names == (None, "mug", "ref1") and r.names == ("mug", "ref1")
    assert [e.reference_indices for e in ins.entities] == [(1, 0), (2,), (1,), ()]
    assert r.entity_names == (("mug",), ("ref1",), ("mug",), ())
    assert r.entity_phrases == ("put <mug> on <0>", "<ref1>", "the <mug> again", "the red cube")


def test_text_without_names_parses_as_before(store):
    for text, refs in (("the red cube, the blue ball", ()), ("use <0>", [Reference(image=_crop())]),
                       ("a < b and c > d", ())):
        r = resolve_named_references(text, store, refs)
        p = parse_instruction(text, refs)
        assert r.instruction.text == p.text and r.instruction.entities == p.entities
        assert r.reference_names == (None,) * len(refs) and all(n == () for n in r.entity_names)


def test_unknown_and_invalid_names_raise_instruction_errors(store):
    with pytest.raises(NamedReferenceError, match=r"no stored reference named <cup>, <bowl> \(stored: mug, ref1\)") \
            as e:
        resolve_named_references("the <cup> and the <bowl> and the <mug>", store)
    assert isinstance(e.value, InstructionError) and e.value.unknown == ("cup", "bowl")
    assert e.value.known == ("mug", "ref1")
    with pytest.raises(InstructionError, match=r"<my mug> in the instruction is not a reference name") as e:
        resolve_named_references("the <my mug>", store)
    assert e.value.invalid == ("my mug",)
    with pytest.raises(InstructionError, match="stored: none"):
        resolve_named_references("the <mug>", ReferenceStore(directory=None))
    with pytest.raises(InstructionError, match="name no reference"):  # explicit indices keep their own checks
        resolve_named_references("the <mug> and <3>", store)
    with pytest.raises(InstructionError, match="never mentioned"):
        resolve_named_references("the <mug>", store, [Reference(image=_crop())])
