"""Fuse CLI on real TUM frames and geometry consistency (skip when the shared data is absent)."""
import json
from pathlib import Path

import numpy as np
import pytest

from find_ros.field import FeatureField, FieldConfig
from find_ros.field.field import FieldInputError
from find_ros.tools.field_cli import cli
from find_ros.field.consistency import depth_consistency

DATA = Path(__file__).parents[1] / ".." / "shared" / "data" / "tum_fr3_teddy"
needs_tum = pytest.mark.skipif(not (DATA / "associations_subset.txt").exists(),
                               reason=f"TUM teddy subset not found at {DATA}")


@needs_tum
def test_fuse_cli_writes_field_and_json(tmp_path, capsys):
    out, js = tmp_path / "teddy.npz", tmp_path / "teddy.json"
    rc = cli(["fuse", "--format", "tum", "--path", str(DATA), "--out", str(out), "--json", str(js),
              "--voxel", "0.05", "--stride", "3", "--max-frames", "20", "--holdout-every", "4", "--dim", "16"])
    assert rc == 0
    rep = json.loads(js.read_text())
    for key in ("voxels", "bytes_per_voxel", "memory_bytes", "ms_per_frame_median", "frames_fused",
                "frames_held_out", "consistency_median_m", "consistency_p90_m", "embedding"):
        assert key in rep, key
    assert rep["frames_fused"] + rep["frames_held_out"] <= 20 and rep["frames_held_out"] > 0
    assert "no model" in rep["embedding"]
    ff = FeatureField.load(out)
    assert ff.num_voxels == rep["voxels"] > 1000
    assert rep["consistency_median_m"] <= 1.5 * 0.05
    assert "consistency_median_m" in capsys.readouterr().out


@needs_tum
def test_fuse_cli_memory_budget_caps_the_field(tmp_path):
    out, js = tmp_path / "teddy.npz", tmp_path / "teddy.json"
    assert cli(["fuse", "--format", "tum", "--path", str(DATA), "--out", str(out), "--json", str(js),
                "--voxel", "0.05", "--stride", "6", "--max-frames", "6", "--dim", "16", "--memory-mb", "6"]) == 0
    rep = json.loads(js.read_text())
    cfg = FieldConfig(voxel_size=0.05, embedding_dim=16, memory_mb=6.0)
    assert rep["block_cap"] == cfg.block_cap and rep["active_blocks"] <= cfg.block_cap
    assert 0 < rep["allocated_bytes"] <= 6 * 2**20
    assert FeatureField.load(out).config.memory_mb == 6.0


def test_fuse_cli_reads_a_7scenes_folder_with_jpg_colour(tmp_path):
    """``find-ros field fuse --format 7scenes`` on a copy whose colour frames are frame-XXXXXX.color.jpg."""
    import cv2

    seq = tmp_path / "chess" / "seq-01"
    seq.mkdir(parents=True)
    H, W = 480, 640
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(4):
        colour = np.stack([(xx * 255 // W), (yy * 255 // H), np.full_like(xx, 60 * i)], -1).astype(np.uint8)
        assert cv2.imwrite(str(seq / f"frame-{i:06d}.color.jpg"), colour)
        depth = np.full((H, W), 2000, np.uint16)  # a wall 2 m ahead (mm), one invalid corner
        depth[:20, :20] = 65535
        assert cv2.imwrite(str(seq / f"frame-{i:06d}.depth.png"), depth)
        T = np.eye(4)
        T[0, 3] = 0.05 * i  # sliding sideways
        np.savetxt(seq / f"frame-{i:06d}.pose.txt", T)
    out, js = tmp_path / "chess.npz", tmp_path / "chess.json"
    assert cli(["fuse", "--format", "7scenes", "--path", str(tmp_path / "chess"), "--out", str(out),
                "--json", str(js), "--voxel", "0.05", "--dim", "8", "--holdout-every", "0"]) == 0
    rep = json.loads(js.read_text())
    assert rep["frames_fused"] == 4
    ff = FeatureField.load(out)
    assert ff.num_voxels > 100


def test_consistency_is_small_for_the_fused_frame_and_large_for_a_wrong_pose():
    H, W = 120, 160
    K = np.array([[130.0, 0, 79.5], [0, 130.0, 59.5], [0, 0, 1]])
    yy, xx = np.mgrid[0:H, 0:W]
    depth = (1.5 + 0.004 * xx).astype(np.float32)  # slanted plane
    ff = FeatureField(config=FieldConfig(voxel_size=0.02, embedding_dim=4))
    for _ in range(2):
        ff.integrate(depth, K, np.eye(4))
    frame = type("F", (), {"depth": depth, "K": K, "T_world_cam": np.eye(4)})
    good = depth_consistency(ff, [frame])
    assert good["median_m"] < 0.01 and good["pixels"] > 0.5 * H * W
    T = np.eye(4)
    T[2, 3] = -0.2  # camera 20 cm behind: the rendered surface is 20 cm farther
    bad = depth_consistency(ff, [type("F", (), {"depth": depth, "K": K, "T_world_cam": T})])
    assert bad["median_m"] > 0.15


def test_fuse_sim_with_hsv_embeddings_then_query_finds_the_object(tmp_path):
    pytest.importorskip("find_ros.sim")
    from find_ros.sim import Scene

    out, js = tmp_path / "sim.npz", tmp_path / "q.json"
    assert cli(["fuse", "--format", "sim", "--path", "1", "--out", str(out), "--embed", "hsv",
                "--width", "160", "--height", "120", "--stride", "15", "--holdout-every", "5"]) == 0
    ff = FeatureField.load(out)
    assert ff.config.embedding_dim == 12 and ff.num_voxels > 1000
    assert cli(["query", "--field", str(out), "--text", "blue chair", "--embed", "hsv", "--json", str(js)]) == 0
    goal = np.array(json.loads(js.read_text())["goals"][0]["position"])
    (chair,) = [o for o in Scene.generate(1).objects if o.colour == "blue"]
    assert np.all(goal >= np.asarray(chair.box_min) - 0.1) and np.all(goal <= np.asarray(chair.box_max) + 0.1)
    with pytest.raises(SystemExit, match="needs --model"):
        cli(["query", "--field", str(out), "--text", "blue chair"])


def test_fuse_sim_with_a_find_model_dir(tmp_path):
    pytest.importorskip("find_ros.sim")
    torch = pytest.importorskip("torch")
    from find_ros.model.find import FindModel

    torch.set_num_threads(1)
    tiny = dict(vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
                text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
                interface=dict(hidden=32, layers=2, heads=2, ffn=64, num_object_queries=8, num_entity_queries=4,
                               sem_dim=16, stem_channels=8))
    mdir = tmp_path / "model"
    FindModel.build_tiny(vocab="a red blue chair cube".split(), image_size=(32, 48), **tiny).save_pretrained(mdir)
    out, js = tmp_path / "f.npz", tmp_path / "f.json"
    assert cli(["fuse", "--format", "sim", "--path", "1", "--out", str(out), "--model", str(mdir),
                "--width", "80", "--height", "60", "--stride", "50", "--json", str(js)]) == 0
    rep = json.loads(js.read_text())
    assert rep["embedding_dim"] == 16 and "FIND" in rep["embedding"] and rep["frames_fused"] == 6
    assert FeatureField.load(out).config.embedding_dim == 16
    with pytest.raises(SystemExit, match="D=16"):
        cli(["query", "--field", str(out), "--text", "red cube", "--embed", "hsv"])


def test_raycast_depth_finds_a_fused_plane_from_the_fusing_and_a_moved_camera():
    H, W = 120, 160
    K = np.array([[130.0, 0, 79.5], [0, 130.0, 59.5], [0, 0, 1]])
    vs = 0.05
    ff = FeatureField(config=FieldConfig(voxel_size=vs, embedding_dim=4))
    depth = np.full((H, W), 1.5, np.float32)
    for _ in range(2):
        ff.integrate(depth, K, np.eye(4))
    d = ff.raycast_depth(K, np.eye(4), (H, W))
    assert d.shape == (H, W) and d.dtype == np.float32
    hit = d > 0
    assert hit.mean() > 0.9
    assert np.median(np.abs(d[hit] - 1.5)) < 0.25 * vs
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.05, -0.3]  # 30 cm farther back and off to the side: the plane is 1.8 m away
    d = ff.raycast_depth(K, T, (H, W))
    hit = d > 0
    assert 0.3 < hit.mean() < 1.0
    assert np.median(np.abs(d[hit] - 1.8)) < 0.25 * vs
    T_away = np.diag([-1.0, 1.0, -1.0, 1.0])  # looking along -z: nothing in front
    assert not ff.raycast_depth(K, T_away, (H, W)).any()
    empty = FeatureField(config=FieldConfig(voxel_size=vs, embedding_dim=4))
    assert not empty.raycast_depth(K, np.eye(4), (H, W)).any()
    with pytest.raises(FieldInputError, match="K must be"):
        ff.raycast_depth(K[:2], np.eye(4), (H, W))
    with pytest.raises(FieldInputError, match="T_world_cam"):
        ff.raycast_depth(K, np.full((4, 4), np.nan), (H, W))
    with pytest.raises(FieldInputError, match="shape"):
        ff.raycast_depth(K, np.eye(4), (0, W))
