"""Argument checks and JSON conversion for the registry.

Everything is checked before a transaction starts, so a malformed round never touches the
database; each ``ValueError`` names the argument (``client_reports[2]``) and the problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from liteheart_core.storage.models import REPORT_STATUSES

REPORT_KEYS = {"node_id", "status", "num_examples", "metrics", "reason"}


def plain_json(value: Any, what: str) -> Any:
    """``value`` as plain JSON types; numpy scalars/arrays become numbers/lists, NaN and ±inf null.

    PostgreSQL's json type rejects NaN, and a NaN metric (e.g. AUC of a class never seen)
    is better stored as "undefined" than refused.
    """

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

    try:
        text = json.dumps(value, default=default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from None
    return _finite(json.loads(text))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def check_duration(value: float) -> float:
    try:
        duration = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"duration_s must be a number, not {value!r}") from None
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"duration_s must be finite and >= 0, not {value!r}")
    return duration


def check_node_id(value: Any, what: str) -> str:
    # Flower's node ids are integers; the registry keeps them as text so any id scheme fits.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{what}: node id must be a non-empty string or an integer, not {value!r}")
    text = str(value)
    if len(text) > 64:
        raise ValueError(f"{what}: node id {text[:20]}... is longer than 64 characters")
    return text


def check_reports(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Client reports as column values; every problem names the report's position."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, report in enumerate(reports):
        where = f"client_reports[{i}]"
        if not isinstance(report, Mapping):
            raise ValueError(f"{where}: expected a dict, not {type(report).__name__}")
        unknown = set(report) - REPORT_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(REPORT_KEYS)})")
        if "node_id" not in report or "status" not in report:
            raise ValueError(f"{where}: node_id and status are required")
        node = check_node_id(report["node_id"], where)
        if node in seen:
            raise ValueError(f"{where}: node {node} reported twice in one round")
        seen.add(node)
        status = report["status"]
        if status not in REPORT_STATUSES:
            raise ValueError(f"{where}: status {status!r}, expected one of {', '.join(REPORT_STATUSES)}")
        examples = report.get("num_examples", 0)
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
            raise ValueError(f"{where}: num_examples must be an integer >= 0, not {examples!r}")
        metrics = report.get("metrics") or {}
        if not isinstance(metrics, Mapping):
            raise ValueError(f"{where}: metrics must be a dict, not {type(metrics).__name__}")
        reason = report.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"{where}: reason must be a string or None")
        rows.append(
            {
                "node_id": node,
                "status": status,
                "num_examples": int(examples),
                "metrics": plain_json(dict(metrics), f"{where}.metrics"),
                "reason": reason,
            }
        )
    return rows


def isoformat(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: isoformat(v) for k, v in value.items()}
    if isinstance(value, list):
        return [isoformat(v) for v in value]
    return value
