"""Perception-node parameters: the table, descriptors, validation, the shipped YAML, a real rclpy node.

The rclpy nodes live on the test's claimed domain (conftest ``ros`` / ``domain_id``), never on the default
context or domain 0, and are destroyed in the fixture's ``finally``."""
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from find_ros.ros import params as P  # noqa: E402
from find_ros.ros.shutdown import release_context  # noqa: E402

YAML = Path(__file__).resolve().parents[1] / "config" / "perception.yaml"


def test_table_has_the_required_parameters():
    required = {"grounder", "model_path", "device", "score_threshold", "sync_slop_s", "max_stamp_age_s",
                "depth_scale", "world_frame", "camera_pose_source", "publish_overlay", "publish_markers",
                "erode_px", "min_points", "autostart"}
    assert required <= set(P.PARAMS_BY_NAME)
    assert len(P.PARAMS_BY_NAME) == len(P.PARAMS), "duplicate parameter names"
    assert P.PARAMS_BY_NAME["grounder"].choices == ("find", "hsv-baseline")


@pytest.mark.parametrize("spec", P.PARAMS, ids=lambda s: s.name)
def test_every_default_is_valid_and_described(spec):
    assert P.validate_value(spec, spec.default) == spec.default
    assert spec.description.strip()
    d = P.descriptor(spec)
    assert d.name == spec.name and d.description == spec.description
    if spec.range is not None and spec.type is float:
        assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == spec.range
    elif spec.range is not None:
        assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == spec.range
    else:
        assert not d.floating_point_range and not d.integer_range
    assert spec.type in (bool, int, float, str)
    assert spec.type is not str or spec.range is None


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("score_threshold", 1.7, "score_threshold=1.7 is outside [0, 1]"),
        ("score_threshold", -0.1, "score_threshold=-0.1 is outside [0, 1]"),
        ("score_threshold", "high", "score_threshold='high' must be a number"),
        ("score_threshold", float("nan"), "score_threshold=nan must be finite"),
        ("grounder", "yolo", "grounder='yolo' is not one of find, hsv-baseline"),
        ("camera_pose_source", "gps", "camera_pose_source='gps' is not one of"),
        ("erode_px", 2.5, "erode_px=2.5 must be an integer"),
        ("erode_px", 99, "erode_px=99 is outside [0, 50]"),
        ("publish_overlay", 1, "publish_overlay=1 must be a bool"),
        ("device", "gpu", "device='gpu' does not match"),
        ("world_frame", "", "world_frame='' does not match"),
    ],
)
def test_invalid_values_name_parameter_and_value(name, value, message):
    with pytest.raises(P.ParameterError) as e:
        P.validate_value(P.PARAMS_BY_NAME[name], value)
    assert message in str(e.value)


def test_ints_are_accepted_for_floats_and_devices_parse():
    assert P.validate_value(P.PARAMS_BY_NAME["score_threshold"], 1) == 1.0
    for dev in ("cpu", "cuda", "cuda:1", "mps"):
        assert P.validate_value(P.PARAMS_BY_NAME["device"], dev) == dev


def test_validate_all_reports_every_problem_and_unknown_names():
    with pytest.raises(P.ParameterError) as e:
        P.validate_all({"score_threshold": 2.0, "grounder": "x", "no_such_param": 1})
    msg = str(e.value)
    assert "score_threshold=2 is outside" in msg and "grounder='x'" in msg and "no_such_param is not a parameter" in msg


def test_shipped_yaml_declares_every_parameter_with_a_valid_value():
    values = P.load_yaml_parameters(YAML)
    assert set(values) == set(P.PARAMS_BY_NAME), (set(values) ^ set(P.PARAMS_BY_NAME))
    P.validate_all(values)
    text = YAML.read_text()
    for name in values:  # every key carries a comment just above it (or in its group)
        assert f"\n    {name}:" in text


def test_load_yaml_errors_name_the_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("other_node:\n  ros__parameters:\n    a: 1\n")
    with pytest.raises(P.ParameterError, match="no 'perception_node: ros__parameters:'"):
        P.load_yaml_parameters(f)


def test_pipeline_kwargs_maps_fields():
    vals = {"score_threshold": 0.4, "erode_px": 3, "min_points": 10, "grounder": "find"}
    assert P.pipeline_kwargs(vals) == {"score_threshold": 0.4, "erode_px": 3, "min_points": 10}
    assert P.pipeline_kwargs(vals, allowed={"erode_px"}) == {"erode_px": 3}


def _node(ros, overrides):
    return ros.node("perception_node", parameter_overrides=overrides,
                    automatically_declare_parameters_from_overrides=False)


def test_declare_on_a_real_node_uses_overrides_and_descriptors(ros):
    node = _node(ros, [Parameter("score_threshold", value=0.3), Parameter("grounder", value="find"),
                       Parameter("max_stamp_age_s", value=2)])
    values = P.declare_parameters(node)
    assert values["score_threshold"] == 0.3 and values["grounder"] == "find"
    assert values["max_stamp_age_s"] == 2.0 and isinstance(values["max_stamp_age_s"], float)
    assert values["erode_px"] == P.PARAMS_BY_NAME["erode_px"].default
    d = node.describe_parameter("score_threshold")
    assert d.floating_point_range[0].to_value == 1.0 and "[0, 1]" in d.additional_constraints
    # the descriptor range is enforced on runtime changes too
    assert not node.set_parameters([Parameter("score_threshold", value=1.5)])[0].successful
    assert node.set_parameters([Parameter("score_threshold", value=0.9)])[0].successful
    # declaring again (a second configure) is a no-op returning the current values
    assert P.declare_parameters(node)["score_threshold"] == 0.9


def test_declare_on_a_real_node_rejects_bad_overrides(ros):
    node = _node(ros, [Parameter("score_threshold", value=1.7), Parameter("camera_pose_source", value="gps"),
                       Parameter("erode_px", value="three")])
    with pytest.raises(P.ParameterError) as e:
        P.declare_parameters(node)
    msg = str(e.value)
    assert "score_threshold=1.7 is outside [0, 1]" in msg
    assert "camera_pose_source='gps' is not one of" in msg
    assert "erode_px='three' must be an integer" in msg
    assert not node.has_parameter("score_threshold") and node.has_parameter("depth_scale")


def test_shipped_yaml_applies_through_rcl_in_any_namespace(tmp_path, domain_id):
    """rcl parses config/perception.yaml (the /**/perception_node wildcard) for a node in a namespace.

    The file comes in as a process-wide (global) ``--ros-args --params-file`` argument, the way a launch file
    passes it; conftest's RosSession takes no arguments, so this test owns its context (on its claimed domain)."""
    from rclpy.signals import SignalHandlerOptions

    text = YAML.read_text()
    assert "score_threshold: 0.5" in text
    f = tmp_path / "p.yaml"
    f.write_text(text.replace("score_threshold: 0.5", "score_threshold: 0.37"))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id, args=["--ros-args", "--params-file", str(f)],
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node("perception_node", namespace="robot1", context=ctx)
        try:
            values = P.declare_parameters(node)
            assert values["score_threshold"] == pytest.approx(0.37)
            assert values["grounder"] == P.load_yaml_parameters(f)["grounder"]
        finally:
            node.destroy_node()
    finally:
        release_context(ctx)


# Keys whose shipped value differs from the node's default on purpose (the YAML's comment says why).
YAML_NOT_DEFAULT = {"autostart": True}  # the shipped file runs the node active; the node's own default is false


def test_shipped_yaml_values_are_the_table_defaults():
    values = P.load_yaml_parameters(YAML)
    for name, value in values.items():
        assert name in P.PARAMS_BY_NAME, f"{name} in {YAML.name} is not a parameter"
        want = YAML_NOT_DEFAULT.get(name, P.PARAMS_BY_NAME[name].default)
        assert value == want and type(value) is type(want), (name, value, want)


def test_derived_rows_equal_their_dataclass_fields():
    import dataclasses

    from find_ros.field.config import FieldBridgeConfig
    from find_ros.grounding.pipeline import PipelineConfig

    derived = [s for s in P.PARAMS if s.source is not None]
    assert {s.name for s in derived} >= {"score_threshold", "erode_px", "min_points", "shape_voxel_m"}
    assert {s.name for s in derived} >= {"field_" + f.name for f in dataclasses.fields(FieldBridgeConfig)}
    for spec in derived:
        cls, field = spec.source
        f = {f.name: f for f in dataclasses.fields(cls)}[field]
        if cls is PipelineConfig:
            assert spec.pipeline_field == field == spec.name
        else:
            assert cls is FieldBridgeConfig and spec.name == "field_" + field and spec.pipeline_field is None
        assert spec.default == f.default == getattr(cls(), field)
        assert spec.range == f.metadata["range"] and spec.description == f.metadata["description"]
        assert spec.type.__name__ == f.type


def test_pipeline_parameters_fail_validation_where_pipeline_config_would():
    # params used to take shape_voxel_m in [0, 1] while PipelineConfig needs 0 or >= 0.001: 0.0005 passed
    # configure and failed activate; now both use PipelineConfig's one check
    from find_ros.grounding.pipeline import ConfigError, PipelineConfig

    with pytest.raises(P.ParameterError, match=r"shape_voxel_m: PipelineConfig.shape_voxel_m=0.0005 must be 0 \(off\)"):
        P.validate_value(P.PARAMS_BY_NAME["shape_voxel_m"], 0.0005)
    with pytest.raises(ConfigError, match=r"PipelineConfig.shape_voxel_m=0.0005 must be 0 \(off\)"):
        PipelineConfig(shape_voxel_m=0.0005)
    for spec in (s for s in P.PARAMS if s.pipeline_field is not None):
        lo, hi = spec.range
        for v in (lo, hi, spec.default, 0.0005 if spec.type is float else lo + 1):
            try:
                P.validate_value(spec, v)
                ros_ok = True
            except P.ParameterError:
                ros_ok = False
            try:
                PipelineConfig(**{spec.pipeline_field: v})
                core_ok = True
            except ConfigError:
                core_ok = False
            assert ros_ok == core_ok, (spec.name, v)


def test_declare_reads_overrides_without_private_rclpy_attributes():
    src = Path(P.__file__).read_text()
    assert "_parameter_overrides" not in src


def test_declare_on_a_real_node_refuses_what_pipeline_config_refuses(ros):
    node = _node(ros, [Parameter("shape_voxel_m", value=0.0005), Parameter("min_points", value=5)])
    with pytest.raises(P.ParameterError, match="PipelineConfig.shape_voxel_m=0.0005"):
        P.declare_parameters(node)
    assert not node.has_parameter("shape_voxel_m") and node.get_parameter("min_points").value == 5


@pytest.mark.parametrize("module", ["find_ros.ros.sim_camera_node", "find_ros.ros.replay_node"])
def test_sim_camera_and_replay_use_the_same_param_spec_mechanism(module):
    from find_ros.ros.param_spec import ParamSpec, descriptor, validate_value

    m = pytest.importorskip(module)
    assert m.PARAMS and all(isinstance(s, ParamSpec) for s in m.PARAMS)
    assert m.PARAMETERS == {s.name: (s.default, s.description) for s in m.PARAMS}
    for s in m.PARAMS:
        assert validate_value(s, s.default) == s.default and s.description.strip()
        assert descriptor(s).description == s.description
    rate = {s.name: s for s in m.PARAMS}["rate_hz"]
    assert validate_value(rate, 10) == 10.0  # "rate_hz:=10" is taken as 10.0
    with pytest.raises(P.ParameterError, match="rate_hz must be > 0, got 0.0"):
        validate_value(rate, 0.0)


def test_sim_camera_node_refuses_bad_values_when_declaring(ros):
    sim = pytest.importorskip("find_ros.ros.sim_camera_node")
    node = ros.node("sim_camera_node", parameter_overrides=[
        Parameter("trajectory", value="spiral"), Parameter("width", value=4), Parameter("rate_hz", value=10)],
        automatically_declare_parameters_from_overrides=False)
    with pytest.raises(sim.ParameterValueError) as e:
        sim.declare(node, sim.PARAMS)
    assert "trajectory must be orbit or walk, got 'spiral'" in str(e.value)
    assert "width must be >= 8, got 4" in str(e.value)
    assert node.get_parameter("rate_hz").value == 10.0 and not node.has_parameter("trajectory")


def test_parameter_changes_apply_live_values_and_refuse_invalid_ones():
    from find_ros.grounding.pipeline import PipelineConfig

    class Pipeline:
        config = PipelineConfig()

    values = {"score_threshold": 0.5, "max_image_pixels": 100, "log_throttle_s": 5.0}
    pipe = Pipeline()
    ok = [Parameter("score_threshold", value=0.8), Parameter("log_throttle_s", value=1.0),
          Parameter("max_image_pixels", value=50), Parameter("not_ours", value=1)]
    assert P.apply_parameter_changes(ok, values, pipe) is None
    # live ones apply at once (score_threshold reaches the pipeline too); others wait for the next configure
    assert values == {"score_threshold": 0.8, "max_image_pixels": 100, "log_throttle_s": 1.0}
    assert pipe.config.score_threshold == 0.8
    reason = P.apply_parameter_changes([Parameter("score_threshold", value=1.5)], values, pipe)
    assert reason and "score_threshold" in reason and values["score_threshold"] == 0.8
    before = {}
    assert P.apply_parameter_changes(ok, before, None) is None and before == {}  # nothing in force before configure
