"""Reference names: the naming rule and its check, shared by the store and by names in instruction text.

``[A-Za-z][A-Za-z0-9_-]*``, at most ``max_name_chars`` characters. A name can never be all digits (``<0>`` is an index
placeholder) because it must start with a letter.
"""
from __future__ import annotations

import re
from typing import Any

from find_ros.grounding.reference_errors import BadReferenceName

__all__ = ["NAME_PATTERN", "AUTO_NAME_PREFIX", "INT_PLACEHOLDER", "check_reference_name"]

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
"""A reference name (full match)."""
AUTO_NAME_PREFIX = "ref"
"""Automatic names are ``ref1``, ``ref2``, ...: the lowest unused number."""
INT_PLACEHOLDER = re.compile(r"\d+")
"""An index placeholder's token (``<0>``), full match."""


def check_reference_name(name: Any, *, max_name_chars: int) -> None:
    """Raise :class:`BadReferenceName` when ``name`` breaks a naming rule (does not check for duplicates)."""
    if not isinstance(name, str):
        raise BadReferenceName(f"reference name must be a string, got {type(name).__name__}",
                               name=name, rule="string")
    shown = name if len(name) <= 80 else name[:77] + "..."
    if not name:
        raise BadReferenceName("reference name is empty", name=name, rule="non-empty")
    if len(name) > max_name_chars:
        raise BadReferenceName(
            f"reference name {shown!r} has {len(name)} characters (max {max_name_chars})",
            name=name, rule=f"at most {max_name_chars} characters")
    if INT_PLACEHOLDER.fullmatch(name):
        raise BadReferenceName(f"reference name {shown!r} is a number, which would read as the index "
                               f"placeholder <{name}>; start it with a letter", name=name, rule="not a number")
    if not NAME_PATTERN.fullmatch(name):
        raise BadReferenceName(
            f"reference name {shown!r} must start with a letter and contain only letters, digits, '_' and '-' "
            f"({NAME_PATTERN.pattern})", name=name, rule=NAME_PATTERN.pattern)
