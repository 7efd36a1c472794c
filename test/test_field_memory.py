"""Feature field memory (issue 10): storage starts small and grows with the blocks fused, the block cap still holds,
and ``memory_mb`` sets the cap (real open3d; RSS figures with wide margins, no timing)."""
import logging
import math

import numpy as np
import pytest

from find_ros.field import FeatureField, FieldConfig, FieldInputError

H, W = 120, 160
K = np.array([[130.0, 0, 79.5], [0, 130.0, 59.5], [0, 0, 1]])


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _pose(x=0.0):
    T = np.eye(4)
    T[0, 3] = x
    return T


def _walk(ff: FeatureField, n: int, *, step=2.0, seed=0, start=0):
    """Fuse n frames of a plane while the camera slides along x (each frame sees new blocks)."""
    rng = np.random.default_rng(seed)
    d = ff.config.embedding_dim
    stats = []
    for i in range(start, start + n):
        pe = rng.standard_normal((30, 40, d)).astype(np.float32)
        col = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        stats.append(ff.integrate(np.full((H, W), 1.5 + 0.05 * (i % 3), np.float32), K, _pose(step * i),
                                  pixel_embeddings=pe, color=col))
    return stats


def test_storage_starts_small_and_grows_with_the_blocks_fused():
    before = _rss()
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=256, max_blocks=4000))
    made = _rss() - before
    # the cap-based figure: 5064 blocks x 512 voxels x (28 + 2*256) bytes = 1.3 GB; the field takes < 1 MB of it
    assert ff.capacity_blocks == int(4000 * 1.25) + 64
    assert ff.capacity_bytes == ff.capacity_blocks * 512 * (28 + 2 * 256)
    assert ff.allocated_blocks == 0 and ff.allocated_bytes == 0 and ff.memory_bytes == 0
    assert ff.reserved_bytes < 1 << 20
    assert made < 0.02 * ff.capacity_bytes, (made, ff.capacity_bytes)

    grown, prev = [], 0
    for i in range(8):
        (st,) = _walk(ff, 1, start=i, seed=i)
        assert st.evicted_blocks == 0
        assert ff.allocated_blocks == ff.active_blocks > prev  # no eviction yet: one slot per block, in order
        prev = ff.allocated_blocks
        grown.append(ff.reserved_bytes)
    assert grown == sorted(grown)
    assert ff.allocated_bytes == ff.allocated_blocks * 512 * (28 + 2 * 256)
    assert ff.reserved_bytes > ff.allocated_bytes >= ff.memory_bytes > 0
    assert ff.allocated_bytes < 0.2 * ff.capacity_bytes
    # the process took no more than the allocated storage (pages of unwritten voxels stay unbacked)
    grew = _rss() - before
    assert 0 < grew < ff.allocated_bytes + (16 << 20), (grew, ff.allocated_bytes)


def test_cap_holds_and_evicted_slots_are_reused():
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=8, max_blocks=150))
    stats = _walk(ff, 30)
    assert sum(s.evicted_blocks for s in stats) > 0
    assert all(s.active_blocks <= 150 for s in stats)
    # storage never passes the capacity: new blocks take evicted blocks' slots
    assert ff.allocated_blocks <= ff.capacity_blocks == int(150 * 1.25) + 64
    assert sum(s.new_blocks for s in stats) > 4 * ff.allocated_blocks
    # the surviving blocks are those nearest the last camera (farthest-first eviction, as before)
    xyz = ff.points()["xyz"]
    assert xyz.shape[0] > 0 and xyz[:, 0].min() > 2.0 * 29 - 8.0


def test_reused_slots_start_from_zero():
    """A block activated into an evicted block's slot must not inherit its colour or embedding."""
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=4, max_blocks=16, use_tsdf=False))
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 255
    for i in range(6):  # far apart: every frame evicts the previous blocks
        ff.integrate(np.full((H, W), 1.5, np.float32), K, _pose(10.0 * i), color=red)
    assert ff.allocated_blocks < 6 * 16  # slots were reused
    blue = np.zeros((H, W, 3), np.uint8)
    blue[..., 2] = 255
    ff.integrate(np.full((H, W), 1.5, np.float32), K, _pose(100.0), color=blue)
    p = ff.points()
    assert p["xyz"].shape[0] > 0
    assert np.all(p["rgb"] == [0, 0, 255]) and np.all(p["weight"] == 1.0)


def test_query_save_load_after_growth(tmp_path):
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=8, max_blocks=120))
    _walk(ff, 12, step=1.0)
    assert ff.allocated_blocks > ff.active_blocks  # grown and evicted
    p = ff.points()
    q = p["embedding"][0].astype(np.float32)
    res = ff.query(q, max_goals=3)
    assert res.scores.shape == (p["xyz"].shape[0],) and res.goals
    best = int(np.argmax(res.scores))
    assert np.allclose(res.xyz[best], p["xyz"][best]) and res.scores[best] == pytest.approx(1.0, abs=1e-3)

    path = tmp_path / "f.npz"
    ff.save(path)
    g = FeatureField.load(path)
    assert g.active_blocks == ff.active_blocks and g.allocated_blocks == g.active_blocks  # compacted on load
    a, b = ff.points(), g.points()
    oa, ob = np.lexsort(a["xyz"].T), np.lexsort(b["xyz"].T)
    for k in a:
        np.testing.assert_array_equal(a[k][oa], b[k][ob])
    np.testing.assert_array_equal(np.sort(ff.similarity(q)), np.sort(g.similarity(q)))
    # the loaded field keeps growing and evicting under its cap
    stats = _walk(g, 5, seed=3)
    assert all(s.active_blocks <= 120 for s in stats)


def test_load_takes_the_callers_cap_and_budget(tmp_path):
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=8, max_blocks=300))
    _walk(ff, 6)
    path = tmp_path / "f.npz"
    ff.save(path)
    assert FeatureField.load(path).config.max_blocks == 300
    g = FeatureField.load(path, max_blocks=ff.active_blocks + 10, memory_mb=50.0)
    assert g.config.max_blocks == ff.active_blocks + 10 and g.config.memory_mb == 50.0
    assert g.active_blocks == ff.active_blocks
    with pytest.raises(FieldInputError, match="exceed the block cap"):
        FeatureField.load(path, max_blocks=ff.active_blocks - 1)
    h = FeatureField.load(path, memory_mb=None)
    assert h.config.memory_mb is None


def test_clear_gives_the_storage_back():
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=8, max_blocks=500))
    _walk(ff, 4)
    assert ff.allocated_blocks > 0
    ff.clear()
    assert ff.active_blocks == ff.allocated_blocks == ff.num_voxels == 0
    assert ff.reserved_bytes < 1 << 20
    _walk(ff, 2)
    assert ff.num_voxels > 0 and ff.allocated_blocks == ff.active_blocks


def test_memory_mb_sets_the_block_cap():
    bpb = 512 * (28 + 2 * 64)  # bytes per block at D=64 with TSDF
    cfg = FieldConfig(embedding_dim=64, memory_mb=100.0)
    assert cfg.block_bytes == bpb
    n = int(100 * 2**20 // bpb)  # 1312 blocks fit in 100 MiB
    assert cfg.block_cap == 999  # int(1.25 * 999) + 64 = 1312 <= n < int(1.25 * 1000) + 64
    assert int(1.25 * cfg.block_cap) + 64 <= n < int(1.25 * (cfg.block_cap + 1)) + 64
    ff = FeatureField(config=cfg)
    assert ff.block_cap == 999 and ff.capacity_bytes <= 100 * 2**20
    # the smaller cap wins
    assert FieldConfig(embedding_dim=64, memory_mb=100.0, max_blocks=500).block_cap == 500
    assert FieldConfig(embedding_dim=64, memory_mb=100.0, max_blocks=5000).block_cap == 999
    assert FieldConfig(embedding_dim=64).block_cap == 20000  # no budget: max_blocks alone
    # D changes the bytes per block, so the cap
    assert FieldConfig(embedding_dim=12, memory_mb=100.0).block_cap > FieldConfig(embedding_dim=64,
                                                                                   memory_mb=100.0).block_cap
    assert FieldConfig(embedding_dim=64, memory_mb=30).block_cap >= 1  # ints are accepted


def test_memory_budget_holds_while_fusing():
    ff = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=32, memory_mb=10.0, max_blocks=10**6))
    cap = ff.block_cap
    assert cap < 200
    stats = _walk(ff, 20)
    assert sum(s.evicted_blocks for s in stats) > 0
    assert all(s.active_blocks <= cap for s in stats)
    assert ff.allocated_bytes <= 10 * 2**20


@pytest.mark.parametrize("bad", [0, 0.0, -5.0, math.nan, math.inf, -math.inf, True, "100"])
def test_bad_memory_mb_raises_naming_the_value(bad):
    with pytest.raises(FieldInputError, match="memory_mb") as e:
        FieldConfig(embedding_dim=64, memory_mb=bad)
    assert repr(bad) in str(e.value)


def test_budget_too_small_for_one_block_raises():
    with pytest.raises(FieldInputError, match=r"memory_mb=0\.5 MiB holds 6 blocks"):
        FieldConfig(embedding_dim=64, memory_mb=0.5)


def test_a_frame_larger_than_the_storage_keeps_its_nearest_blocks(caplog):
    ff = FeatureField(config=FieldConfig(voxel_size=0.02, embedding_dim=4, max_blocks=1))
    assert ff.capacity_blocks == 65
    depth = np.linspace(0.5, 4.0, H * W, dtype=np.float32).reshape(H, W)  # touches far more than 65 blocks
    with caplog.at_level(logging.WARNING, logger="find_ros.field.grid"):
        st = ff.integrate(depth, K, _pose())
        ff.integrate(depth, K, _pose())
    assert st.active_blocks <= 1 and ff.active_blocks <= 1
    assert ff.allocated_blocks <= 65
    assert sum("more than the field's capacity" in r.message for r in caplog.records) == 1  # warned once
