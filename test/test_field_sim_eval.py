"""Field query evaluation against sim ground truth (colour baseline embedder: fast, no model needed)."""
import numpy as np
import pytest

from find_ros.field.embedder import FieldEmbedder
from find_ros.tools.field_eval import evaluate_scene, main, parse_seeds
from find_ros.grounding.baseline import HsvBaselineGrounder


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("3,5, 8") == [3, 5, 8]
    assert parse_seeds("4") == [4]
    with pytest.raises(ValueError):
        parse_seeds(" , ")


def test_colour_queries_find_their_objects_and_hits_are_checked_against_the_boxes():
    emb = FieldEmbedder(grounder=HsvBaselineGrounder())
    r = evaluate_scene(emb, 2, frames=30, width=160, height=120, categories=False)
    obs = [row for row in r["rows"] if row["observed"]]
    assert r["queried"] == len(obs) >= 3 and r["voxels"] > 1000
    assert r["hits"] >= r["queried"] - 1  # the colour baseline finds unique colours
    for row in obs:  # a hit is exactly "first goal inside the box + 10 cm"
        g, lo, hi = (np.asarray(row[k]) for k in ("goal", "box_min", "box_max"))
        assert row["hit"] == bool(np.all(g >= lo - 0.1 - 1e-3) and np.all(g <= hi + 0.1 + 1e-3))
    assert all(row["query"].endswith("object") for row in r["rows"])


def test_cli_writes_a_summary(tmp_path):
    out = tmp_path / "f.json"
    assert main(["--embed", "hsv", "--seeds", "1", "--frames", "12", "--width", "160", "--height", "120",
                 "--json", str(out)]) == 0
    import json

    d = json.loads(out.read_text())
    assert d["summary"]["scenes"] == 1 and d["summary"]["objects_queried"] >= 1
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "none"), "--seeds", "1"])
