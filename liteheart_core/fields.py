"""Typed values for frozen config dataclasses built from untyped dicts (TOML, JSON, checkpoints).

A dataclass field's default says what its values must be: ``bool`` only a boolean, ``int`` a whole number
(not a boolean) that fits 64 bits, ``float`` a finite number, ``str`` a string, a tuple a list or tuple of
the default's element type. ``bool("false")``, ``int(True)`` or ``str([1])`` would all pass silently;
here each is an error that names the key.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, fields
from typing import Any

_INT_LIMIT = 2**63


def coerce(value: Any, default: Any, key: str, what: str) -> Any:
    """``value`` as the type of ``default``.

    Raises
    ------
    ValueError
        ``value`` is not of that type (or not finite, or too large); the message names ``key``.
    """

    def bad(kind: str) -> ValueError:
        return ValueError(f"bad {what}: {key} = {value!r} is not {kind}")

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= _INT_LIMIT:
            raise bad("a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        try:
            value = float(value)
        except OverflowError:
            raise bad("a finite number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if default:
            return tuple(coerce(v, default[0], key, what) for v in value)
        return tuple(value)
    return value  # fields without a typed default (None) are checked by their class


def default_of(field: Field) -> Any:
    if field.default is not MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not MISSING else None


def typed_values(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    """``data`` with every value coerced to its field's type; unknown keys are an error naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"bad {what}: expected a table of settings, got {type(data).__name__}")
    by_name = {f.name: f for f in fields(cls)}
    unknown = [str(k) for k in data if k not in by_name]
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(unknown))} (known: {', '.join(by_name)})")
    return {
        k: v if v is None and "None" in str(by_name[k].type) else coerce(v, default_of(by_name[k]), k, what)
        for k, v in data.items()
    }
