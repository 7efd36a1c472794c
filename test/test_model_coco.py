"""COCO reader on the real coco_mini subset (real JPEGs, real polygon and RLE annotations)."""
from pathlib import Path

import numpy as np
import pytest

from find_ros.model.coco import CocoDataset, CocoError, rle_decode, rle_string_to_counts

DATA = Path(__file__).parents[1] / ".." / "shared" / "data" / "coco_mini"
needs_data = pytest.mark.skipif(not (DATA / "annotations").is_dir(), reason=f"coco_mini not found at {DATA}")


def _encode_string(counts):
    """COCO compressed RLE encoder (reference for the decoder test)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_rle_list_and_string_agree():
    rng = np.random.default_rng(0)
    m = rng.random((7, 5)) > 0.6
    flat = m.T.reshape(-1)
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    assert np.array_equal(rle_decode({"size": [7, 5], "counts": runs}), m)
    s = _encode_string(runs)
    assert rle_string_to_counts(s) == runs
    assert np.array_equal(rle_decode({"size": [7, 5], "counts": s}), m)


def test_rle_bad_sum_raises():
    with pytest.raises(CocoError, match="expected h\\*w"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


@needs_data
def test_coco_mini_val_masks_and_categories():
    ds = CocoDataset.from_root(DATA, split="val2017")
    assert len(ds) == 79
    n_inst = n_crowd = 0
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.dtype == np.uint8 and s.image.ndim == 3
        assert len(s.captions) == 5
        for inst in s.instances:
            n_inst += 1
            assert inst.mask.shape == s.image.shape[:2]
            assert inst.mask.any(), (s.image_id, inst.id)
            assert inst.category in ds.categories.values()
            # the mask lies inside its (slightly inflated) bbox
            x, y, w, h = inst.box
            ys, xs = np.nonzero(inst.mask)
            assert xs.min() >= x - 2 and xs.max() <= x + w + 2 and ys.min() >= y - 2 and ys.max() <= y + h + 2
            if inst.iscrowd:
                n_crowd += 1
    assert n_inst == 624 and n_crowd == 5


@needs_data
def test_coco_mini_rle_area_exact_and_known_image():
    import json

    ann = json.loads((DATA / "annotations" / "instances_val2017.json").read_text())
    crowd = [a for a in ann["annotations"] if a["iscrowd"]]
    assert len(crowd) == 5
    for a in crowd:
        # COCO's crowd 'area' fields are not all the RLE area, but the bbox is the mask's exact extent
        m = rle_decode(a["segmentation"])
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert (xs.min(), ys.min()) == (x, y)
        assert abs((xs.max() + 1 - x) - w) <= 1 and abs((ys.max() + 1 - y) - h) <= 1
        assert int(m.sum()) == sum(a["segmentation"]["counts"][1::2])
    ds = CocoDataset.from_root(DATA, split="val2017")
    idx = ds.image_ids.index(397133)
    s = ds[idx]
    cats = {i.category for i in s.instances}
    assert {"person", "bottle", "dining table"} <= cats
    # polygon areas agree with COCO's 'area' within rasterisation error
    areas = {a["id"]: a["area"] for a in ann["annotations"] if a["image_id"] == 397133}
    for inst in s.instances:
        if not inst.iscrowd and areas[inst.id] > 500:
            assert abs(inst.mask.sum() - areas[inst.id]) / areas[inst.id] < 0.15


def test_missing_file_raises(tmp_path):
    with pytest.raises(CocoError, match="not found"):
        CocoDataset(instances_json=tmp_path / "x.json", image_dir=tmp_path)


@needs_data
def test_resized_for_model_input():
    ds = CocoDataset.from_root(DATA, split="train2017")
    assert len(ds) == 80
    s = ds.resized(0, height=96, width=128)
    assert s.image.shape == (96, 128, 3)
    assert s.instances and all(i.mask.shape == (96, 128) and i.mask.any() and not i.iscrowd for i in s.instances)
