"""The perception node's parameters: one table, declared once with descriptors, validated in one place.

The rows of settings that belong to a core dataclass (``score_threshold``, ``erode_px``, ``min_points``,
``shape_voxel_m`` of :class:`~find_ros.grounding.pipeline.PipelineConfig`; ``field_*`` of
:class:`~find_ros.field.config.FieldBridgeConfig`) are derived from its fields
(:func:`from_setting`): their default, range and description are written there once, and their values also pass
that dataclass's own check. Node-only parameters are rows here.

Every parameter is a :class:`~find_ros.ros.param_spec.ParamSpec` row of :data:`PARAMS` (name, type, default,
description, numeric range or string choices). :func:`declare_parameters` declares the rows on a node with a
``ParameterDescriptor`` (``FloatingPointRange`` / ``IntegerRange`` for numbers) and returns the
values; :func:`validate_value` is the one check shared by configure, runtime ``set_parameters``
and the YAML test. ``config/perception.yaml`` holds the same names with comments.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from find_ros.field.config import FieldBridgeConfig
from find_ros.grounding.pipeline import PipelineConfig
from find_ros.ros.param_spec import (ParameterError, ParamSpec, declare_one, declare_table, descriptor,
                                     from_setting, validate_value)

__all__ = [
    "apply_parameter_changes",
    "ParamSpec",
    "from_setting",
    "declare_one",
    "ParameterError",
    "PARAMS",
    "PARAMS_BY_NAME",
    "NODE_NAME",
    "descriptor",
    "validate_value",
    "validate_all",
    "declare_parameters",
    "load_yaml_parameters",
    "pipeline_kwargs",
]

NODE_NAME = "perception_node"
"""Default node name; also the top-level key of ``config/perception.yaml``."""


def _pipeline(field: str, *, live: bool = False) -> ParamSpec:
    return from_setting(PipelineConfig, field, live=live, pipeline_field=field)


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", bool, False,
              "Configure and activate at start (for graphs without a lifecycle manager)."),
    ParamSpec("executor", str, "events",
              "Executor of the node's executable: 'events' (rclpy's EventsExecutor, C++: its callbacks take ~2 ms "
              "less Python per frame from the model thread; SingleThreadedExecutor where rclpy lacks it) or "
              "'single' (rclpy's SingleThreadedExecutor). Read at start only.", choices=("events", "single")),
    ParamSpec("grounder", str, "find",
              "Model behind the node: 'find' (FIND model) or 'hsv-baseline' (colour-word HSV baseline).",
              choices=("find", "hsv-baseline")),
    ParamSpec("model_path", str, "",
              "FIND model directory (from save_pretrained); empty = the model shipped with the package."),
    ParamSpec("device", str, "cpu", "torch device for the model: cpu, cuda, cuda:N or mps.",
              pattern=r"cpu|cuda(:\d+)?|mps"),
    ParamSpec("torch_threads", int, 1,
              "torch CPU threads (torch.set_num_threads, process-wide) set when the FIND model is loaded; 0 = "
              "leave torch's default. The shipped model is fastest on one thread and slows down ~100x when its "
              "threads compete with another busy process for the cores.", range=(0, 256)),
    _pipeline("score_threshold", live=True),
    ParamSpec("sync_slop_s", float, 0.02,
              "Largest stamp difference (s) between colour, depth, camera_info and pose of one frame set.",
              range=(0.0, 1.0)),
    ParamSpec("max_stamp_age_s", float, 1.0,
              "Frames stamped more than this (s) before the node clock are dropped as stale, and camera messages "
              "stamped more than this after it as from the future (a clock mismatch); 0 disables both checks.",
              range=(0.0, 3600.0), live=True),
    ParamSpec("max_image_pixels", int, 4096 * 4096,
              "Largest width*height accepted for a colour, depth or reference image; bigger ones (and camera_info "
              "claiming a bigger size) are refused on arrival from their header, before any conversion.",
              range=(1, 1_000_000_000)),
    ParamSpec("depth_scale", float, 0.001,
              "Metres per unit of 16UC1/mono16 depth (0.001 = millimetres); 32FC1 depth is metres already.",
              range=(1e-6, 10.0)),
    ParamSpec("world_frame", str, "map", "Frame id of world poses (frame of the camera pose input).",
              pattern=r"[A-Za-z_][A-Za-z0-9_/]*"),
    ParamSpec("camera_pose_source", str, "pose",
              "Camera pose input: 'pose' (camera/pose PoseStamped), 'odom' (camera/odom Odometry), 'tf' (world_frame "
              "-> the colour image's frame at its stamp: tf2_ros when importable, else the node's own /tf + "
              "/tf_static buffer, interpolated between samples or the nearest within sync_slop_s) or 'none'.",
              choices=("pose", "odom", "tf", "none")),
    ParamSpec("sensor_reliability", str, "best_effort",
              "Reliability of the camera subscriptions (colour, depth, camera_info, pose/odom; keep last 1, "
              "volatile): 'best_effort' receives from best-effort (SensorDataQoS) and reliable publishers alike; "
              "'reliable' receives nothing from a best-effort camera.",
              choices=("best_effort", "reliable")),
    ParamSpec("publish_overlay", bool, True, "Publish find/overlay (rgb8 visualisation).", live=True),
    ParamSpec("publish_markers", bool, True, "Publish find/markers (a cube and a label per target).",
              live=True),
    _pipeline("erode_px"),
    _pipeline("min_points"),
    _pipeline("shape_voxel_m"),
    ParamSpec("log_throttle_s", float, 5.0,
              "A warning of one kind (bad encoding, missing camera_info, ...) is logged at most once per this "
              "many seconds.", range=(0.0, 3600.0), live=True),
    ParamSpec("status_period_s", float, 1.0,
              "Period (s) of the find/status JSON counters (frames in / processed / dropped).",
              range=(0.05, 3600.0)),
    # --- 3D feature field (find_ros.field, bridged by find_ros.ros.field_bridge) ---
    *(from_setting(FieldBridgeConfig, f.name, "field_" + f.name) for f in dataclasses.fields(FieldBridgeConfig)),
    ParamSpec("reference_dir", str, "",
              "Directory of the stored references taught by clicks or find/reference/add (one sub-directory per "
              "name: crop.png, mask.png, meta.json; written atomically, loaded at activate). Empty = "
              "$ROS_HOME/find_ros/references (ROS_HOME defaults to ~/.ros)."),
    ParamSpec("reference_persist", bool, True,
              "Keep stored references in reference_dir (they survive a restart); false = memory only."),
    ParamSpec("reference_max_count", int, 64, "Most stored references; find/reference/add refuses more.",
              range=(1, 10000)),
    ParamSpec("click_min_score", float, 0.5,
              "A click becomes a reference only when FIND's best segmentation proposal under it has at least this "
              "mask probability there (a click on the floor or a wall scores near 0).", range=(0.0, 1.0)),
    ParamSpec("click_surface_tolerance_m", float, 0.1,
              "A 3D click must lie within this distance (along the optical axis) of the depth the camera measures "
              "at its pixel, i.e. on the surface the camera sees.", range=(0.001, 10.0)),
    ParamSpec("click_mask_depth_tolerance_m", float, 0.35,
              "Pixels of the clicked proposal whose depth differs from the click's by more than this are not the "
              "clicked object.", range=(0.01, 100.0)),
    ParamSpec("click_max_age_s", float, 2.0,
              "A click's stamp must be within this many seconds of the frame it is resolved in (the newest frame "
              "for 3D clicks, the frame with the nearest stamp for pixel clicks; a zero stamp means 'now').",
              range=(0.01, 3600.0)),
    ParamSpec("click_overlay_frames", int, 30,
              "Frames of find/overlay that mark a new reference's click and mask.", range=(0, 10000)),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
def validate_all(values: dict[str, Any]) -> dict[str, Any]:
    """Validate a name -> value mapping (unknown names are errors); all problems in one message."""
    errors, out = [], {}
    for name, value in values.items():
        spec = PARAMS_BY_NAME.get(name)
        if spec is None:
            errors.append(f"{name} is not a parameter of {NODE_NAME} (known: {', '.join(PARAMS_BY_NAME)})")
            continue
        try:
            out[name] = validate_value(spec, value)
        except ParameterError as e:
            errors.append(str(e))
    if errors:
        raise ParameterError("; ".join(errors))
    return out

def declare_parameters(node: Any) -> dict[str, Any]:
    """Declare every parameter not yet declared on ``node`` and return all values by name.

    Values come from the node's overrides (``--ros-args -p`` / ``--params-file``) or the defaults.
    Raises :class:`ParameterError` naming every invalid parameter and value; parameters that
    failed are left undeclared so that a later configure retries them.
    """
    return declare_table(node, PARAMS)


def load_yaml_parameters(path: str | Path, *, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The ``ros__parameters`` mapping of ``node_name`` in a ROS 2 parameter YAML file."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: top level is not a mapping")
    for key in (node_name, f"/{node_name}", f"/**/{node_name}", "/**", "**"):
        block = data.get(key)
        if isinstance(block, dict) and isinstance(block.get("ros__parameters"), dict):
            return dict(block["ros__parameters"])
    raise ParameterError(f"{path}: no '{node_name}: ros__parameters:' block (keys: {list(data)})")


def pipeline_kwargs(values: dict[str, Any], allowed: set[str] | None = None) -> dict[str, Any]:
    """``PipelineConfig`` keyword arguments from parameter values (restricted to ``allowed`` fields)."""
    out = {}
    for spec in PARAMS:
        f = spec.pipeline_field
        if f is not None and spec.name in values and (allowed is None or f in allowed):
            out[f] = values[spec.name]
    return out


def apply_parameter_changes(changes: Any, values: dict[str, Any], pipeline: Any = None) -> str | None:
    """Check ``set_parameters`` changes (objects with ``name`` and ``value``) against :data:`PARAMS`; store each
    valid ``live`` one in ``values`` (the node's values in force; nothing before configure) and a new
    ``score_threshold`` in ``pipeline``'s config too. Returns why the first invalid change is refused, or None."""
    for prm in changes:
        spec = PARAMS_BY_NAME.get(prm.name)
        if spec is None:
            continue
        try:
            value = validate_value(spec, prm.value)
        except ParameterError as e:
            return str(e)
        if spec.live and values:
            values[prm.name] = value
            cfg = getattr(pipeline, "config", None)
            if prm.name == "score_threshold" and cfg is not None and hasattr(cfg, "score_threshold"):
                try:
                    cfg.score_threshold = value
                except dataclasses.FrozenInstanceError:
                    pass
    return None

