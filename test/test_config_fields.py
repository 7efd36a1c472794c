"""Core config dataclasses hold each setting's default, range and description once (find_ros.config_fields)."""
import dataclasses
import math

import numpy as np
import pytest

from find_ros.config_fields import problem, setting, validate_settings
from find_ros.field.config import FieldBridgeConfig, FieldConfig, FieldInputError
from find_ros.grounding.pipeline import ConfigError, PipelineConfig
from find_ros.grounding.tracker_config import TrackerConfig

CONFIGS = [TrackerConfig, PipelineConfig, FieldConfig, FieldBridgeConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_a_described_setting_whose_default_passes(cls):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("description", "").strip(), f.name
        assert problem(cls, f.name, f.default) is None, f.name
    cls()


def test_problem_names_class_field_value_and_what_it_wants():
    assert problem(PipelineConfig, "shape_voxel_m", 0.0005) == \
        "PipelineConfig.shape_voxel_m=0.0005 must be 0 (off) or in [0.001, 1]"
    assert problem(PipelineConfig, "erode_px", 2.5) == "PipelineConfig.erode_px=2.5 must be an integer in [0, 50]"
    assert problem(PipelineConfig, "lost_after_frames", 0) == \
        "PipelineConfig.lost_after_frames=0 must be an integer >= 1"
    assert problem(PipelineConfig, "smoothing", math.nan) is not None
    assert problem(PipelineConfig, "erode_px", np.int64(3)) is None
    assert problem(FieldConfig, "eviction", "random") == "FieldConfig.eviction='random' must be one of farthest, oldest"


def test_dataclasses_raise_their_own_errors():
    with pytest.raises(ConfigError, match=r"PipelineConfig.shape_voxel_m=0.0005"):
        PipelineConfig(shape_voxel_m=0.0005)
    with pytest.raises(FieldInputError, match="FieldBridgeConfig.voxel_size=2"):
        FieldBridgeConfig(voxel_size=2.0)
    assert FieldBridgeConfig().budget_mb is None and FieldBridgeConfig(memory_mb=5.0).budget_mb == 5.0


def test_setting_helper_with_open_ranges_and_checks():
    @dataclasses.dataclass
    class C:
        a: int = setting(1, "a", range=(1, None))
        b: float = setting(0.5, "b", range=(0.0, 1.0), check=lambda v: v < 1.0, want="in [0, 1)")

    validate_settings(C(), ValueError)
    with pytest.raises(ValueError, match=r"C.b=1.0 must be in \[0, 1\)"):
        validate_settings(C(b=1.0), ValueError)
    with pytest.raises(ValueError, match="C.a=0 must be an integer >= 1"):
        validate_settings(C(a=0), ValueError)


def test_pipeline_config_takes_the_tracker_config_fields_flat_and_live():
    tracker = {f.name for f in dataclasses.fields(TrackerConfig)}
    assert tracker <= {f.name for f in dataclasses.fields(PipelineConfig)}
    assert {"score_threshold", "smoothing", "lost_after_frames", "shape_voxel_m"} <= tracker
    assert "erode_px" not in tracker
    cfg = PipelineConfig(lost_after_frames=2, erode_px=3)
    assert isinstance(cfg, TrackerConfig) and cfg.lost_after_frames == 2 and cfg.erode_px == 3
    with pytest.raises(ConfigError, match="TrackerConfig.smoothing=1.0"):
        TrackerConfig(smoothing=1.0)
