"""Feature field core: plane fusion, embedding averages, query ranking, persistence, block cap (real open3d)."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from find_ros.field import FeatureField, FieldConfig, FieldInputError, FieldSaveError

H, W = 120, 160
K = np.array([[130.0, 0, 79.5], [0, 130.0, 59.5], [0, 0, 1]])
D = 8


def _plane_depth(z=1.5):
    return np.full((H, W), z, np.float32)


def _region_embeddings(left, right, h=30, w=40):
    pe = np.zeros((h, w, D), np.float32)
    pe[:, : w // 2] = left
    pe[:, w // 2:] = right
    return pe


def _unit(i):
    e = np.zeros(D, np.float32)
    e[i] = 1
    return e


def _pose(x=0.0, y=0.0, z=0.0):
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


@pytest.fixture
def field():
    return FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=D, max_blocks=2000))


def test_plane_voxels_lie_on_plane(field):
    st = field.integrate(_plane_depth(1.5), K, _pose(), color=np.full((H, W, 3), 200, np.uint8))
    assert st.new_blocks > 0 and st.active_blocks == st.new_blocks
    p = field.points()
    assert p["xyz"].shape[0] == field.num_voxels > 100
    assert np.all(np.abs(p["xyz"][:, 2] - 1.5) < 0.05)
    # voxels cover the frustum cross-section at 1.5 m (x half-width = 80/130*1.5 = 0.92 m)
    assert p["xyz"][:, 0].max() > 0.8 and p["xyz"][:, 0].min() < -0.8
    assert np.all(p["rgb"] == 200)
    assert p["embedding"].dtype == np.float16 and p["embedding"].shape[1] == D


def test_plane_under_pose_is_in_world_frame(field):
    field.integrate(_plane_depth(1.0), K, _pose(0.3, -0.2, 2.0))
    z = field.points()["xyz"][:, 2]
    assert np.all(np.abs(z - 3.0) < 0.05)


def test_embedding_is_mean_of_observations(field):
    a, b = _unit(0), _unit(1)
    field.integrate(_plane_depth(), K, _pose(), pixel_embeddings=_region_embeddings(a, a))
    field.integrate(_plane_depth(), K, _pose(), pixel_embeddings=_region_embeddings(b, b))
    p = field.points()
    full = p["weight"] == 2
    assert full.sum() > 100
    np.testing.assert_allclose(p["embedding"][full].astype(np.float32), np.tile((a + b) / 2, (full.sum(), 1)),
                               atol=1e-3)


def test_query_ranks_matching_region_first(field):
    field.integrate(_plane_depth(), K, _pose(), pixel_embeddings=_region_embeddings(_unit(2), _unit(5)))
    for target, side in ((5, 1.0), (2, -1.0)):
        r = field.query(_unit(target), max_goals=3)
        assert r.scores.shape == (field.num_voxels,)
        assert r.goals, "no goal found"
        g = r.goals[0]
        assert np.sign(g.position[0]) == side
        assert g.score > 0.99 and g.num_voxels > 50
        assert g.extent[0] > 0.5
    # a query matching nothing scores below the absolute threshold
    assert field.query(_unit(7), min_score=0.5).goals == []
    with pytest.raises(FieldInputError):
        field.query(np.ones(D + 1, np.float32))


def test_two_separate_objects_give_two_goals(field):
    depth = _plane_depth(2.0)
    pe = np.zeros((H, W, D), np.float32)
    pe[:] = _unit(0)
    pe[40:60, 10:30] = _unit(3)
    pe[40:60, 120:140] = _unit(3)
    field.integrate(depth, K, _pose(), pixel_embeddings=pe)
    r = field.query(_unit(3), top_fraction=0.5, min_score=0.9)
    assert len(r.goals) == 2
    xs = sorted(g.position[0] for g in r.goals)
    assert xs[0] < -0.5 and xs[1] > 0.5


def test_bad_inputs_raise(field):
    with pytest.raises(FieldInputError):
        field.integrate(np.zeros((H, W), np.float64), K, _pose())
    with pytest.raises(FieldInputError):
        field.integrate(_plane_depth(), K, _pose(), pixel_embeddings=np.zeros((4, 4, D + 1), np.float32))
    with pytest.raises(FieldInputError):
        field.integrate(_plane_depth(), K, np.full((4, 4), np.nan))
    with pytest.raises(FieldInputError):
        FieldConfig(eviction="random")


def test_save_load_round_trip_exact(field, tmp_path):
    field.integrate(_plane_depth(), K, _pose(), pixel_embeddings=_region_embeddings(_unit(1), _unit(4)),
                    color=np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))
    field.integrate(_plane_depth(1.7), K, _pose(0.1), pixel_embeddings=_region_embeddings(_unit(2), _unit(4)))
    path = tmp_path / "f.npz"
    field.save(path)
    g = FeatureField.load(path)
    assert g.config == field.config
    a, b = field.points(), g.points()
    oa, ob = np.lexsort(a["xyz"].T), np.lexsort(b["xyz"].T)
    for k in a:
        np.testing.assert_array_equal(a[k][oa], b[k][ob])
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_save_to_readonly_dir_raises_and_keeps_old(field):
    field.integrate(_plane_depth(), K, _pose())
    base = Path(tempfile.mkdtemp(prefix="field_ro_"))
    try:
        base.chmod(0o755)
        d = base / "ro"
        d.mkdir()
        path = d / "f.npz"
        field.save(path)
        before = path.read_bytes()
        d.chmod(0o555)
        if os.geteuid() == 0:
            # root ignores directory modes: save from a child that drops to an unprivileged uid
            child = textwrap.dedent(f"""
                import os, zipfile, numpy as np
                from find_ros.field import FeatureField, FieldSaveError
                f = FeatureField.load({str(path)!r})
                f.integrate(np.full(({H}, {W}), 1.2, np.float32), np.array({K.tolist()}), np.eye(4))
                f.save({str(path)!r} + ".warm")  # every lazy import done while still root
                os.setgid(65534); os.setuid(65534)  # the interpreter itself may be unreadable to nobody
                try:
                    f.save({str(path)!r})
                except FieldSaveError as exc:
                    print("raised:", exc)
            """)
            out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60,
                                 cwd=Path(__file__).parents[1])
            assert out.returncode == 0, out.stderr
            assert "raised:" in out.stdout and "f.npz" in out.stdout, out.stdout
        else:
            field.integrate(_plane_depth(1.2), K, _pose())
            with pytest.raises(FieldSaveError, match="f.npz"):
                field.save(path)
        assert path.read_bytes() == before
        FeatureField.load(path)
        assert not [p for p in os.listdir(d) if p.endswith(".tmp")]
    finally:
        (base / "ro").chmod(0o755)
        shutil.rmtree(base)


def test_sigkill_during_save_keeps_old_file(tmp_path):
    path = tmp_path / "big.npz"
    small = FeatureField(config=FieldConfig(embedding_dim=D))
    small.integrate(_plane_depth(), K, _pose())
    small.save(path)
    n_small = small.num_voxels
    child = textwrap.dedent(f"""
        import numpy as np, sys
        from find_ros.field import FeatureField, FieldConfig
        f = FeatureField(config=FieldConfig(voxel_size=0.02, embedding_dim=512, max_blocks=4000))
        K = np.array([[130.0, 0, 79.5], [0, 130.0, 59.5], [0, 0, 1]])
        for z in (1.0, 1.5, 2.0, 2.5):
            f.integrate(np.full(({H}, {W}), z, np.float32), K, np.eye(4))
        print("saving", flush=True)
        while True:
            f.save({str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])
    try:
        assert proc.stdout.readline().strip() == "saving"
        deadline = time.monotonic() + 60
        while not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]:
            assert time.monotonic() < deadline, "tmp file never appeared"
            time.sleep(0.0005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    g = FeatureField.load(path)  # old (or a complete newer) file, never a torn one
    assert g.num_voxels == n_small or g.config.embedding_dim == 512


def test_block_cap_holds_while_moving_away():
    for policy in ("farthest", "oldest"):
        f = FeatureField(config=FieldConfig(voxel_size=0.05, embedding_dim=D, max_blocks=150, eviction=policy))
        total_evicted = 0
        for i in range(25):
            st = f.integrate(_plane_depth(1.5), K, _pose(x=0.6 * i), pixel_embeddings=_region_embeddings(
                _unit(0), _unit(1)))
            assert st.active_blocks <= 150
            total_evicted += st.evicted_blocks
        assert total_evicted > 0
        x = f.points()["xyz"][:, 0]
        assert x.max() > 0.6 * 24  # the newest observations survive
        assert x.min() > 0.6 * 5  # the earliest are gone
        assert f.memory_bytes <= 150 * 8 ** 3 * f.bytes_per_voxel


def test_clear_and_exports(field, tmp_path):
    import open3d as o3d
    field.integrate(_plane_depth(), K, _pose(), color=np.full((H, W, 3), 50, np.uint8))
    n = field.num_voxels
    r = field.query(_unit(0))
    field.export_ply(tmp_path / "f.ply", scores=r.scores)
    pc = o3d.t.io.read_point_cloud(str(tmp_path / "f.ply"))
    assert pc.point.positions.shape[0] == n
    assert "score" in pc.point
    field.export_npz(tmp_path / "f_pts.npz")
    assert np.load(tmp_path / "f_pts.npz")["xyz"].shape == (n, 3)
    field.clear()
    assert field.num_voxels == 0 and field.active_blocks == 0


def test_connected_components_26_diagonal_joins_gap_splits():
    from find_ros.field import connected_components_26
    a = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [4, 2, 2], [5, 3, 1], [9, 9, 9]])
    lab = connected_components_26(a)
    assert lab[0] == lab[1] == lab[2]
    assert lab[3] == lab[4] != lab[0]
    assert len(set(lab.tolist())) == 3


def test_connected_components_26_matches_a_breadth_first_search():
    from collections import deque

    from find_ros.field import connected_components_26

    rng = np.random.default_rng(3)
    for n in (1, 50, 400):
        grid = np.unique(rng.integers(-4, 5, (n, 3)), axis=0)
        lab = connected_components_26(grid)
        index = {tuple(p): i for i, p in enumerate(grid.tolist())}
        ref = -np.ones(len(grid), np.int64)
        comp = 0
        for i in range(len(grid)):  # plain BFS over the 26 neighbours
            if ref[i] >= 0:
                continue
            ref[i] = comp
            todo = deque([i])
            while todo:
                x, y, z = grid[todo.popleft()]
                for d in np.ndindex(3, 3, 3):
                    j = index.get((x + d[0] - 1, y + d[1] - 1, z + d[2] - 1))
                    if j is not None and ref[j] < 0:
                        ref[j] = comp
                        todo.append(j)
            comp += 1
        # same partition: a bijection between labels
        pairs = set(zip(lab.tolist(), ref.tolist()))
        assert len(pairs) == len(set(lab.tolist())) == len(set(ref.tolist())) == comp



def test_fusion_projects_voxels_to_the_nearest_pixel_as_float64_does_away_from_pixel_borders():
    """The fusion projects in float32 ((a, b, z) = P (x, y, z, 1) per block origin + per local offset, pixel =
    floor(a / z), floor(b / z)): the voxels it finds in view and their nearest pixels are the float64 ones except
    within float32 rounding of a pixel border."""
    from find_ros.field.fusion import _voxels_in_view
    from find_ros.geometry import matrix_from_quaternion

    rng = np.random.default_rng(0)
    cfg = FieldConfig(voxel_size=0.05, embedding_dim=8)
    r, vs, (H, W) = cfg.block_resolution, cfg.voxel_size, (480, 640)
    loc = np.arange(r ** 3)
    local = (np.stack([loc % r, (loc // r) % r, loc // (r * r)], axis=1) * vs).astype(np.float32)
    keys = rng.integers(-12, 12, (600, 3)).astype(np.int32)
    K = np.array([[525.3, 0.0, 319.7], [0.0, 523.1, 241.2], [0.0, 0.0, 1.0]])
    T_cw = np.eye(4)
    T_cw[:3, :3] = matrix_from_quaternion(np.array([0.1, -0.2, 0.05, 0.97]) / np.linalg.norm([0.1, -0.2, 0.05, 0.97]))
    T_cw[:3, 3] = [0.3, -0.2, 3.0]
    idx, first, z, pix = _voxels_in_view(np.arange(len(keys)), keys, local, (H, W), K, T_cw, config=cfg)
    pts = (keys.astype(np.float64)[:, None, :] * (r * vs) + local.astype(np.float64)[None]).reshape(-1, 3)
    cam = pts @ T_cw[:3, :3].T + T_cw[:3, 3]
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2] + 0.5
    v = K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2] + 0.5
    in_view = (cam[:, 2] > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    near_border = (np.abs(u - np.round(u)) < 1e-3) | (np.abs(v - np.round(v)) < 1e-3)
    assert in_view.sum() > 10_000 and near_border.mean() < 0.01  # a real test: many voxels, few on borders
    got = np.zeros(len(pts), bool)
    got[idx] = True
    assert np.array_equal(got[~near_border], in_view[~near_border])
    ref_pix = np.floor(v).astype(np.int64) * W + np.floor(u).astype(np.int64)
    far = ~near_border[idx]
    assert np.array_equal(pix[far], ref_pix[idx][far]) and np.array_equal(first, (idx // r ** 3) * r ** 3)
    np.testing.assert_allclose(z, cam[idx, 2], rtol=1e-5)


def _fuse_reference(store, idx, first, z, pix, depth, pe, color, cfg, frame):
    """fuse_frame's update, voxel by voxel in float32 scalars (the vectorised one must match it bit for bit)."""
    f32 = np.float32
    trunc, surf = cfg.trunc_voxels * cfg.voxel_size, cfg.surface_voxels * cfg.voxel_size
    Hd, Wd = depth.shape
    h, w = pe.shape[:2]
    for j in range(idx.size):
        d = depth.reshape(-1)[pix[j]]
        if not d > 0:
            continue
        sdf = f32(d - z[j])
        i = idx[j]
        if sdf >= -trunc:
            wt = store["weight"][i, 0]
            store["tsdf"][i, 0] = (store["tsdf"][i, 0] * wt + min(f32(sdf / f32(trunc)), f32(1.0))) / (wt + f32(1))
            store["weight"][i, 0] = wt + f32(1)
            store["seen"][first[j], 0] = frame + 1
        if abs(sdf) <= surf:
            o = store["obs"][i, 0]
            inv = f32(1.0) / (o + f32(1.0))
            v, u = divmod(int(pix[j]), Wd)
            store["color"][i] = (store["color"][i] * o + color[v, u].astype(f32)) * inv
            e_new = pe[min(v * h // Hd, h - 1), min(u * w // Wd, w - 1)]
            store["embedding"][i] = ((store["embedding"][i].astype(f32) * o + e_new) * inv).astype(np.float16)
            store["obs"][i, 0] = o + f32(1)


def test_fuse_frame_matches_a_voxel_by_voxel_reference_bit_for_bit():
    """The vectorised fusion (positions + take, 1-D views, one ``seen`` write per block) updates TSDF, weight,
    colour, embedding, observation count and ``seen`` exactly as a per-voxel loop does, over frames that overlap,
    with invalid depth (0, NaN, out of range) in them, from contiguous and channels-first pixel embeddings."""
    from find_ros.field.fusion import _voxels_in_view, fuse_frame, in_range_or_zero

    rng = np.random.default_rng(3)
    cfg = FieldConfig(voxel_size=0.05, embedding_dim=D)
    r = cfg.block_resolution
    loc = np.arange(r ** 3)
    local = (np.stack([loc % r, (loc // r) % r, loc // (r * r)], axis=1) * cfg.voxel_size).astype(np.float32)
    gx, gy, gz = np.meshgrid(np.arange(-3, 3), np.arange(-2, 2), np.arange(2, 5), indexing="ij")
    keys = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], 1).astype(np.int32)  # 72 blocks around z = 1.5 m
    buf = rng.permutation(len(keys) + 10)[: len(keys)]  # storage slots out of order, as the hash map gives them
    n = (len(keys) + 10) * r ** 3
    layout = {"tsdf": 1, "weight": 1, "obs": 1, "color": 3, "seen": 1}
    got = {k: np.zeros((n, c), np.float32) for k, c in layout.items()} | {"embedding": np.zeros((n, D), np.float16)}
    ref = {k: v.copy() for k, v in got.items()}
    slots = np.empty(n // r ** 3, np.int64)
    slots[buf] = np.arange(len(keys))
    for frame in range(3):
        yy, xx = np.mgrid[0:H, 0:W]
        depth = (1.45 + 0.002 * xx + 0.001 * yy + rng.normal(0, 0.01, (H, W))).astype(np.float32)
        depth[rng.random((H, W)) < 0.05] = 0.0
        depth[10:14, 20:30] = np.nan
        depth[50:52] = 9.0
        depth = in_range_or_zero(depth, cfg.depth_min, cfg.depth_max)
        pe = rng.normal(size=(30, 40, D)).astype(np.float32)
        if frame == 1:  # a channels-first view, as a grounder's embeddings may be
            pe = np.ascontiguousarray(pe.transpose(2, 0, 1)).transpose(1, 2, 0)
        color = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        T_cw = np.linalg.inv(_pose(0.02 * frame, 0.0, 0.01 * frame))
        fuse_frame(got, buf, keys, local, depth, K, T_cw, pe, color, config=cfg, frame=frame)
        view = _voxels_in_view(buf, keys, local, depth.shape, K, T_cw, config=cfg)
        assert view[0].size > 5000
        _fuse_reference(ref, *view, depth, pe, color, cfg, frame)
    assert (got["obs"] > 0).sum() > 500 and (got["weight"] > 0).sum() > 2000  # a real test: many voxels fused
    for k in got:
        assert np.array_equal(got[k].view(np.uint8), ref[k].view(np.uint8)), k


def test_in_range_or_zero_is_numpy_boolean_assignment_bit_for_bit():
    """The depth range mask (OpenCV thresholds + patchNaNs) zeroes exactly what ``d[~((d >= lo) & (d <= hi))] = 0``
    zeroes: NaN, +-inf, negative, the float32 just outside each bound; keeps the bounds themselves; works on a
    non-contiguous view and an empty image, and never writes its input."""
    from find_ros.field.fusion import in_range_or_zero

    f32 = np.float32
    rng = np.random.default_rng(0)
    base = (rng.random((60, 160)) * 7 - 1).astype(f32)
    for lo, hi in ((0.1, 5.0), (0.0, 3.3), (0.25, 0.3)):
        d = base.copy()
        d[0, :10] = [np.nan, np.inf, -np.inf, -0.0, 0.0, f32(lo), np.nextafter(f32(lo), f32(-1)), f32(hi),
                     np.nextafter(f32(hi), f32(9)), -1.0]
        view = d[:, ::2]  # non-contiguous
        for src in (d, view):
            keep = src.copy()
            want = src.copy()
            want[~((want >= lo) & (want <= hi))] = 0.0
            out = in_range_or_zero(src, lo, hi)
            assert np.array_equal(out.view(np.uint32), want.view(np.uint32)), (lo, hi)
            assert np.array_equal(src.view(np.uint32), keep.view(np.uint32))
        assert (out > 0).sum() > 20  # a real test: readings kept and zeroed in every range
    assert in_range_or_zero(np.zeros((0, 4), f32), 0.1, 5.0).shape == (0, 4)
