"""Node parameters as launch arguments of ``launch/perception.launch.py``: which overrides the launch passes.

Each name of :data:`PARAMETER_ARGUMENTS` is a launch argument and a perception-node parameter (a row of
:data:`find_ros.ros.params.PARAMS`). Its launch default is the empty string, meaning "not given". What the node
gets, lowest precedence first:

1. the parameter's own default (:class:`find_ros.ros.params.ParamSpec`);
2. :data:`LAUNCH_DEFAULTS`, the launch file's defaults, only for parameters the params file does not set
   (``autostart: true``: ``ros2 launch find_ros perception.launch.py`` activates the node even with a params file
   that leaves ``autostart`` out);
3. the params file (``params_file:=``, default ``config/perception.yaml``);
4. launch arguments given non-empty (``grounder:=hsv-baseline``, ``autostart:=false`` ...).

The launch file passes ``[params_file, overrides]`` as the node's parameters (launch_ros hands each to the node as
a ``--params-file``; a later file wins), with ``overrides`` from :func:`node_parameter_overrides`, called in an
``OpaqueFunction`` once the launch arguments are known. A launch argument's string is typed the way a params file
types the value (YAML: ``true``/``false``, numbers; strings stay strings) and validated against the parameter's
range or choices; an invalid one stops the launch with :class:`LaunchArgumentError` naming it.

:func:`package_executable` tells ``demo.launch.py`` whether RViz (``rviz2``) is installed before it starts it.

No ``launch`` import here: the logic is testable without a ROS install's launch packages.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from find_ros.ros.params import NODE_NAME, PARAMS_BY_NAME, ParameterError, ParamSpec, validate_value

__all__ = ["PARAMETER_ARGUMENTS", "LAUNCH_DEFAULTS", "LaunchArgumentError", "argument_description",
           "parse_argument", "params_file_parameters", "node_parameter_overrides", "package_executable"]

#: Node parameters a user sets at launch; each is a launch argument of the same name (default "": not given).
PARAMETER_ARGUMENTS: tuple[str, ...] = (
    "autostart", "grounder", "model_path", "device", "camera_pose_source", "world_frame", "field_enable",
    "field_voxel_size", "score_threshold", "sensor_reliability",
)

#: The launch file's own defaults: applied only when the params file does not set the parameter and the launch
#: argument is not given.
LAUNCH_DEFAULTS: dict[str, Any] = {"autostart": True}


class LaunchArgumentError(ParameterError):
    """A launch argument's value does not fit its parameter, or the params file cannot be read; the message
    names the argument (or file) and the value."""


def _yaml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return f"{value:g}" if isinstance(value, float) else str(value)


def _allowed(spec: ParamSpec) -> str:
    if spec.type is bool:
        return "true or false"
    if spec.choices is not None:
        return "one of " + ", ".join(spec.choices)
    if spec.range is not None:
        return f"{spec.type.__name__} in [{spec.range[0]:g}, {spec.range[1]:g}]"
    if spec.pattern is not None:
        return f"matching {spec.pattern}"
    return spec.type.__name__


def argument_description(name: str) -> str:
    """The ``--show-args`` text of launch argument ``name``: the parameter's description, what it accepts, and
    what applies when it is not given."""
    spec = PARAMS_BY_NAME[name]
    fallback = (f"else {_yaml_text(LAUNCH_DEFAULTS[name])} (launch default)" if name in LAUNCH_DEFAULTS
                else f"else {_yaml_text(spec.default)}")
    return (f"{spec.description} ({_allowed(spec)}; empty = not given: the params file's value, {fallback}). "
            f"Node parameter '{name}'.")


def parse_argument(name: str, text: str) -> Any:
    """The typed, validated value of launch argument ``name`` given as ``text`` (typed as a params file types it:
    ``true``/``false`` for bools, YAML numbers for numbers; strings are taken as they are)."""
    import yaml

    spec = PARAMS_BY_NAME[name]
    value: Any = text
    if spec.type is not str:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if spec.type is bool and not isinstance(value, bool):
            raise LaunchArgumentError(f"launch argument {name}:={text!r} must be true or false")
    try:
        return validate_value(spec, value)
    except ParameterError as e:
        raise LaunchArgumentError(f"launch argument {name}:={text!r}: {e}") from None


def _fqn(namespace: str, node_name: str) -> str:
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{node_name}"


def _key_matches(key: str, fqn: str) -> bool:
    """Whether a params-file node key (``perception_node``, ``/robot1/perception_node``, ``/**``,
    ``/**/perception_node``, ``/*/perception_node`` ...) applies to the node ``fqn`` (rcl's wildcards: ``*``
    within one name token, ``**`` any number of tokens)."""
    tokens = [t for t in ("/" + key.lstrip("/")).split("/")[1:]]
    pattern = "".join("(?:/[^/]+)*" if t == "**" else "/" + re.escape(t).replace(r"\*", "[^/]*") for t in tokens)
    return re.fullmatch(pattern, fqn) is not None


def params_file_parameters(path: str | Path, *, namespace: str = "", node_name: str = NODE_NAME) -> dict[str, Any]:
    """The ``ros__parameters`` a params file gives the node ``node_name`` in ``namespace`` (every block whose key
    applies to it, later blocks winning)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise LaunchArgumentError(f"params_file {str(p)!r} cannot be read: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LaunchArgumentError(f"params_file {str(p)!r}: the top level is not a mapping of node names")
    fqn, out = _fqn(namespace, node_name), {}
    for key, block in data.items():
        if isinstance(block, dict) and isinstance(block.get("ros__parameters"), dict) and \
                _key_matches(str(key), fqn):
            out.update(block["ros__parameters"])
    return out


def node_parameter_overrides(arguments: Mapping[str, str], params_file: str | Path | None = None, *,
                             namespace: str = "", node_name: str = NODE_NAME) -> dict[str, Any]:
    """The parameters the launch passes after ``params_file``: every launch argument of
    :data:`PARAMETER_ARGUMENTS` given non-empty in ``arguments`` (typed and validated by :func:`parse_argument`),
    plus each :data:`LAUNCH_DEFAULTS` entry that neither an argument nor the params file sets.
    ``params_file`` None or empty: no params file."""
    out: dict[str, Any] = {}
    for name in PARAMETER_ARGUMENTS:
        text = str(arguments.get(name, "") or "").strip()
        if text:
            out[name] = parse_argument(name, text)
    in_file = (params_file_parameters(params_file, namespace=namespace, node_name=node_name)
               if params_file not in (None, "") else {})
    for name, value in LAUNCH_DEFAULTS.items():
        if name not in out and name not in in_file:
            out[name] = value
    return out


def package_executable(package: str, executable: str) -> str | None:
    """The path of ``executable`` of ROS package ``package`` as ``ros2 run`` / launch_ros find it
    (``<prefix>/lib/<package>/<executable>``, the prefix from the ament index), else an ``executable`` on ``PATH``;
    None when neither exists (the package is not installed)."""
    import os
    import shutil

    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:  # no ament index here: PATH only
        pass
    else:
        try:
            candidate = os.path.join(get_package_prefix(package), "lib", package, executable)
        except (PackageNotFoundError, ValueError):
            candidate = None
        if candidate is not None and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(executable)
