"""Node parameters as :class:`ParamSpec` rows: declared with descriptors, validated by one function.

The machinery every find_ros node uses (the perception node's table is :mod:`find_ros.ros.params`; the sim camera
and replay nodes have their own tables): :func:`descriptor` gives a row's ``ParameterDescriptor`` (type,
description, ``FloatingPointRange`` / ``IntegerRange``, constraints), :func:`validate_value` is the one check of a
value, :func:`declare_one` declares a row on a node from its override through public rclpy API only, and
:func:`from_setting` derives a row from a core dataclass field (:func:`find_ros.config_fields.setting`).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from find_ros.config_fields import problem, settings_field

__all__ = ["ParamSpec", "ParameterError", "from_setting", "descriptor", "validate_value", "declare_one",
           "declare_table"]


class ParameterError(ValueError):
    """One or more parameter values are invalid; the message names each parameter and value."""


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One node parameter."""

    name: str
    type: type
    """``bool``, ``int``, ``float`` or ``str``."""
    default: Any
    description: str
    range: tuple[float | None, float | None] | None = None
    """Inclusive ``(low, high)`` for ``int``/``float`` parameters; ``None`` for an open end (the descriptor then
    carries the bound as text only)."""
    choices: tuple[str, ...] | None = None
    """Allowed values of a ``str`` parameter."""
    pattern: str | None = None
    """Regular expression a ``str`` value must match in full (when ``choices`` is None)."""
    pipeline_field: str | None = None
    """Name of the ``PipelineConfig`` field this parameter sets, if any."""
    live: bool = False
    """True when a runtime change takes effect immediately; otherwise at the next configure/activate."""
    source: tuple[type, str] | None = None
    """``(dataclass, field)`` this row is derived from (:func:`from_setting`); its value must also pass that
    dataclass's own check (:func:`find_ros.config_fields.problem`)."""
    check: Callable[[Any], bool] | None = None
    """An extra condition on a value of the right type (e.g. ``> 0``)."""
    want: str | None = None
    """Words of everything a value must be (e.g. ``"orbit or walk"``); when given, any refused value of the right
    type raises ``"<name> must be <want>, got <value>"``."""


def from_setting(cls: type, field: str, name: str | None = None, *, live: bool = False,
                 pipeline_field: str | None = None) -> ParamSpec:
    """The row of parameter ``name`` (default: ``field``) derived from the :func:`find_ros.config_fields.setting`
    field ``field`` of dataclass ``cls``: its type, default, description, range and choices."""
    f = settings_field(cls, field)
    md = f.metadata
    typ = {"bool": bool, "int": int, "float": float, "str": str}[str(f.type)]
    return ParamSpec(name or field, typ, f.default, md["description"], range=md.get("range"),
                     choices=md.get("choices"), pipeline_field=pipeline_field, live=live, source=(cls, field))


_ROS_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def _fmt(x: float) -> str:
    return f"{x:g}"


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ``ParameterDescriptor`` of ``spec`` (type, description, range, choices as constraints)."""
    d = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.type], description=spec.description)
    if spec.range is not None and None in spec.range:
        lo, hi = spec.range
        d.additional_constraints = f">= {_fmt(lo)}" if hi is None else f"<= {_fmt(hi)}"
    elif spec.range is not None:
        lo, hi = spec.range
        if spec.type is float:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        else:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        d.additional_constraints = f"in [{_fmt(lo)}, {_fmt(hi)}]"
    elif spec.choices is not None:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    elif spec.pattern is not None:
        d.additional_constraints = f"matches {spec.pattern}"
    if spec.want is not None:
        d.additional_constraints = spec.want
    return d


def _in_range(rng: tuple[float | None, float | None] | None, value: Any) -> bool:
    return rng is None or ((rng[0] is None or value >= rng[0]) and (rng[1] is None or value <= rng[1]))


def validate_value(spec: ParamSpec, value: Any) -> Any:
    """Check ``value`` for ``spec`` and return it (ints are accepted for float parameters).

    Raises :class:`ParameterError` naming the parameter and value.
    """
    name = spec.name
    if spec.type is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{name}={value!r} must be a bool (true/false)")
        return value
    if spec.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"{name}={value!r} must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(f"{name}={value} must be finite")
    elif spec.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{name}={value!r} must be an integer")
    elif spec.type is str:
        if not isinstance(value, str):
            raise ParameterError(f"{name}={value!r} must be a string")
    if spec.want is not None:
        ok = _in_range(spec.range, value)
        ok = ok and (spec.choices is None or value in spec.choices)
        ok = ok and (spec.pattern is None or re.fullmatch(spec.pattern, value) is not None)
        if not (ok and (spec.check is None or spec.check(value))):
            raise ParameterError(f"{name} must be {spec.want}, got {value!r}")
        return value
    if not _in_range(spec.range, value):
        lo, hi = spec.range
        if lo is None or hi is None:
            bound = f">= {_fmt(lo)}" if hi is None else f"<= {_fmt(hi)}"
            raise ParameterError(f"{name}={_fmt(value)} must be {bound}")
        raise ParameterError(f"{name}={_fmt(value)} is outside [{_fmt(lo)}, {_fmt(hi)}]")
    if spec.choices is not None and value not in spec.choices:
        raise ParameterError(f"{name}={value!r} is not one of {', '.join(spec.choices)}")
    if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
        raise ParameterError(f"{name}={value!r} does not match {spec.pattern}")
    if spec.source is not None:
        why = problem(*spec.source, value)
        if why is not None:
            raise ParameterError(f"{name}: {why}")
    return value


def declare_table(node: Any, specs: tuple[ParamSpec, ...], error: type[Exception] = ParameterError) -> dict[str, Any]:
    """:func:`declare_one` for every row of ``specs``; name -> value. Raises ``error`` naming every bad value."""
    errors, values = [], {}
    for spec in specs:
        try:
            values[spec.name] = declare_one(node, spec)
        except ParameterError as e:
            errors.append(str(e))
    if errors:
        raise error("; ".join(errors))
    return values


def declare_one(node: Any, spec: ParamSpec) -> Any:
    """Declare ``spec`` on ``node`` (if not yet declared) with its descriptor; return the validated value.

    The node's override (``--ros-args -p`` / ``--params-file``) is read through a first, dynamically typed
    declaration, validated, and the parameter declared again with its typed descriptor and the validated value
    (so YAML ``1`` for a double parameter becomes 1.0 instead of failing on the type). Public rclpy API only.
    Raises :class:`ParameterError`; a parameter that failed is left undeclared so a later configure retries it.
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    if not node.has_parameter(spec.name):
        probe = ParameterDescriptor(name=spec.name, description=spec.description, dynamic_typing=True)
        try:
            raw = node.declare_parameter(spec.name, spec.default, probe).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as e:
            raise ParameterError(f"{spec.name}: {e}") from None
        node.undeclare_parameter(spec.name)
        value = validate_value(spec, raw)
        try:
            node.declare_parameter(spec.name, value, descriptor(spec), ignore_override=True)
        except (InvalidParameterTypeException, InvalidParameterValueException) as e:
            raise ParameterError(f"{spec.name}={raw!r}: {e}") from None
    return validate_value(spec, node.get_parameter(spec.name).value)
