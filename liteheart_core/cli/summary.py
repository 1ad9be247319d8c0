"""The final summary of a run, read back from the registry: what ``liteheart-sim run`` and ``liteheart-server start``
print (or emit with ``--json``) when a run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liteheart_core.storage import Registry


def finish_summary(run_dir: Path, db_url: str, result: dict[str, Any]) -> dict[str, Any]:
    """The final JSON: run id, per-round metrics and the final global student's scores, from the registry.

    ``result`` is what the server handed back (at least its ``run_id``); ``db_url`` empty means the
    run folder's own SQLite registry.
    """
    run_id = result.get("run_id")
    if not run_id:
        return {"status": "failed", "error": "the server did not start a run (see the log above)"}
    registry = Registry(db_url or Registry.default_url(run_dir))
    try:
        shown = registry.show_run(run_id)
    finally:
        registry.close()
    rounds = [
        {
            "round": r["number"],
            "macro_f1": r["central_metrics"].get("macro_f1"),
            "macro_auc": r["central_metrics"].get("macro_auc"),
            "loss": r["train_metrics"].get("total"),
            "participants": len(r["participants"]),
            "failures": r["n_failures"],
            **{k: r["train_metrics"][k] for k in ("epsilon", "delta") if k in r["train_metrics"]},
        }
        for r in shown["rounds"]
    ]
    return {
        "run_id": run_id,
        "status": shown["run"]["status"],
        "error": shown["run"].get("error"),
        "dp": (shown["run"].get("config") or {}).get("fed", {}).get("dp", "none"),
        "rounds": rounds,
        "final": rounds[-1] if rounds else {},
        "global_student": str(run_dir / run_id / "global_student.pt"),
        "teacher_transfers": result.get("teacher_transfers"),
    }
