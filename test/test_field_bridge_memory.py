"""The node side of field memory (issue 10): field_memory_mb / field_max_blocks -> FieldConfig, the find/status
memory counters, and the parameter's validation (pure functions: no node is created)."""
import math

import numpy as np
import pytest

pytest.importorskip("rclpy")

from find_ros.field import FeatureField, FieldConfig  # noqa: E402
from find_ros.ros import params as P  # noqa: E402
from find_ros.ros.field_bridge import FieldBridgeError, field_config, field_counters  # noqa: E402

BASE = {"field_voxel_size": 0.05, "field_max_blocks": 20000, "field_memory_mb": 0.0}


def test_zero_budget_means_max_blocks_alone():
    cfg = field_config(BASE, embedding_dim=64)
    assert cfg.memory_mb is None and cfg.block_cap == 20000 and cfg.embedding_dim == 64
    assert field_config({k: v for k, v in BASE.items() if k != "field_memory_mb"}, embedding_dim=12).block_cap == 20000


def test_budget_lowers_the_cap_and_the_smaller_cap_wins():
    cfg = field_config({**BASE, "field_memory_mb": 100.0}, embedding_dim=64)
    assert cfg.memory_mb == 100.0 and cfg.block_cap == FieldConfig(embedding_dim=64, memory_mb=100.0).block_cap == 999
    assert field_config({**BASE, "field_memory_mb": 100.0, "field_max_blocks": 300}, embedding_dim=64).block_cap == 300


def test_budget_too_small_for_the_grounders_d_names_the_parameters():
    with pytest.raises(FieldBridgeError, match=r"field_memory_mb=1\.0.*field_max_blocks=20000.*D=64"):
        field_config({**BASE, "field_memory_mb": 1.0}, embedding_dim=64)
    assert field_config({**BASE, "field_memory_mb": 1.0}, embedding_dim=1).block_cap >= 1


def test_status_counters_report_allocated_and_capacity():
    zero = field_counters(None)
    assert set(zero) == {"field_active_blocks", "field_memory_bytes", "field_allocated_blocks",
                         "field_reserved_bytes", "field_block_cap", "field_capacity_blocks",
                         "field_capacity_bytes", "field_budget_mb"}
    assert not any(zero.values())
    ff = FeatureField(config=field_config({**BASE, "field_memory_mb": 50.0}, embedding_dim=8))
    c0 = field_counters(ff)
    assert c0["field_allocated_blocks"] == 0 and c0["field_reserved_bytes"] < 1 << 20
    assert c0["field_capacity_bytes"] <= 50 * 2**20 and c0["field_budget_mb"] == 50.0
    assert c0["field_block_cap"] == ff.block_cap and c0["field_capacity_blocks"] == ff.capacity_blocks
    K = np.array([[130.0, 0, 79.5], [0, 130.0, 59.5], [0, 0, 1]])
    ff.integrate(np.full((120, 160), 1.5, np.float32), K, np.eye(4))
    c1 = field_counters(ff)
    assert c1["field_allocated_blocks"] == c1["field_active_blocks"] > 0
    assert c1["field_reserved_bytes"] > c1["field_memory_bytes"] > 0
    assert c1["field_reserved_bytes"] > c0["field_reserved_bytes"]
    assert set(c1) == set(zero)


def test_field_memory_mb_parameter():
    spec = P.PARAMS_BY_NAME["field_memory_mb"]
    assert spec.type is float and spec.default == 0.0
    assert P.validate_value(spec, 512) == 512.0
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(P.ParameterError, match="field_memory_mb"):
            P.validate_value(spec, bad)
    yaml_values = P.load_yaml_parameters(P.Path(__file__).resolve().parents[1] / "config" / "perception.yaml")
    assert yaml_values["field_memory_mb"] == spec.default
