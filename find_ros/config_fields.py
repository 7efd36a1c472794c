"""Settings fields of the core config dataclasses: one default, range and description per setting.

A setting is a dataclass field made by :func:`setting`; its metadata holds the description, the inclusive
``range`` (``None`` for an open end), the allowed ``choices`` and an optional extra ``check`` with the words it
wants. :func:`problem` is the one check of a value against its field: the dataclass's own validation and the
ROS parameter validation (:mod:`find_ros.ros.params`) both call it, so they cannot disagree. No ROS here.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

try:
    from numpy import bool_ as np_bool
except ImportError:  # pragma: no cover - numpy is a dependency; keep this module importable without it
    np_bool = bool

__all__ = ["setting", "settings_field", "problem", "validate_settings", "from_prefixed"]


def setting(default: Any, description: str, *, range: tuple[float | None, float | None] | None = None,
            choices: tuple[str, ...] | None = None, check: Callable[[Any], bool] | None = None,
            want: str | None = None) -> Any:
    """A dataclass field with its description and limits in ``metadata``.

    ``range``: inclusive ``(low, high)``, either end ``None`` for unbounded; ``check``: an extra condition on the
    value, ``want`` the words of the whole condition (used in the error message instead of the range's).
    """
    return dataclasses.field(default=default, metadata={
        "description": description, "range": range, "choices": choices, "check": check, "want": want})


def settings_field(cls: type, name: str) -> dataclasses.Field:
    """The :func:`setting` field ``name`` of dataclass ``cls`` (KeyError when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _g(x: Any) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else repr(x)


def _want(f: dataclasses.Field) -> str:
    md = f.metadata
    if md.get("want"):
        return md["want"]
    integer = "an integer " if f.type in ("int", int) else ""
    if md.get("choices") is not None:
        return "one of " + ", ".join(md["choices"])
    lo, hi = md.get("range") or (None, None)
    if lo is not None and hi is not None:
        return f"{integer}in [{_g(lo)}, {_g(hi)}]"
    if lo is not None:
        return f"{integer}>= {_g(lo)}"
    if hi is not None:
        return f"{integer}<= {_g(hi)}"
    return integer.strip() or "valid"


def problem(cls: type, name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for field ``name`` of ``cls`` (``"Cls.name=value must be ..."``), or None."""
    f = settings_field(cls, name)
    md = f.metadata
    ok = True
    number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np_bool)) and math.isfinite(value)
    if f.type in ("int", int):
        ok = number and int(value) == value
    elif f.type in ("float", float):
        ok = number
    if ok and md.get("range") is not None:
        lo, hi = md["range"]
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if ok and md.get("choices") is not None:
        ok = value in md["choices"]
    if ok and md.get("check") is not None:
        ok = bool(md["check"](value))
    return None if ok else f"{cls.__name__}.{name}={value!r} must be {_want(f)}"


def validate_settings(obj: Any, error: type[Exception]) -> None:
    """Raise ``error`` naming the first :func:`setting` field of ``obj`` whose value :func:`problem` refuses."""
    for f in dataclasses.fields(obj):
        if "description" not in f.metadata:
            continue
        why = problem(type(obj), f.name, getattr(obj, f.name))
        if why is not None:
            raise error(why)


def from_prefixed(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """``cls`` built from the ``prefix + field`` entries of ``values`` (parameter names -> values); fields
    without an entry keep their defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix) and k[len(prefix):] in names})
