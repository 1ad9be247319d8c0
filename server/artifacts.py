"""What the server holds about a run, for the report and the export: record, final global student, validation data.

Both ``liteheart-server runs report`` and ``liteheart-server export`` start from
the registry's record of a run, find the run's final global student (the
``global_student.pt`` written when the run completed, else the checkpoint of its
last recorded round), check it against the SHA-256 the registry recorded, and
score it again on the server's validation fold of the run's own data.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and pandas load only when a command needs them: `--help` stays fast
    from liteheart_core.data.dataset import PreparedData
    from liteheart_core.models import Net


class ArtifactError(ValueError):
    """A run, checkpoint or dataset that the report or export cannot use, with the reason."""


@dataclass
class FinalModel:
    """The run's final global student and how far it can be trusted."""

    path: Path
    round: int | None  # the registry round it corresponds to (None when no recorded checkpoint matches)
    sha256: str
    recorded_sha256: str | None  # what the registry recorded for that round
    net: Net
    meta: dict
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """The file is byte for byte the checkpoint the registry recorded."""
        return self.recorded_sha256 is not None and self.sha256 == self.recorded_sha256


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_run(run_id: str, run_dir: Path, db: str | None = None) -> dict:
    """The registry's JSON view of a run (``Registry.export_run``).

    Raises
    ------
    ArtifactError
        No registry at ``run_dir`` (and no ``db``), the registry cannot be opened, or it has no such run.
    """
    from liteheart_core.storage import Registry, RegistryError

    run_dir = Path(run_dir)
    if not db and not (run_dir / "registry.sqlite").is_file():
        raise ArtifactError(f"no registry at {run_dir / 'registry.sqlite'}: pass --run-dir of a run folder or --db URL")
    try:
        registry = Registry(db or Registry.default_url(run_dir))
    except RegistryError as exc:
        raise ArtifactError(str(exc)) from None
    try:
        return registry.export_run(run_id)
    except RegistryError as exc:
        raise ArtifactError(str(exc)) from None
    finally:
        registry.close()


def _candidates(recorded: str, run_dir: Path, run_id: str) -> list[Path]:
    """Where a recorded checkpoint path may lie now (it was written relative to the server's working folder)."""
    path = Path(recorded)
    return [path, run_dir / run_id / "checkpoints" / path.name]


def final_model(shown: dict, run_dir: Path) -> FinalModel:
    """The run's final global student.

    ``<run_dir>/<run_id>/global_student.pt`` when the run completed, otherwise the
    checkpoint of the last recorded round; its SHA-256 is compared with the registry's.

    Raises
    ------
    ArtifactError
        The run has no checkpoint, the file is gone, cannot be read, or belongs to another run.
    """
    from liteheart_core.checkpoint import CheckpointError, load_checkpoint

    run = shown["run"]
    run_id = run["id"]
    checkpoints = shown.get("checkpoints") or []
    if not checkpoints:
        raise ArtifactError(
            f"run {run_id} has no checkpoint ({len(shown.get('rounds') or [])} rounds recorded, "
            f"status {run['status']}): there is no global student to report on or export"
        )
    last = checkpoints[-1]
    notes: list[str] = []
    final = Path(run_dir) / run_id / "global_student.pt"
    if final.is_file():
        path = final
    else:
        path = next((p for p in _candidates(last["path"], Path(run_dir), run_id) if p.is_file()), None)
        if path is None:
            raise ArtifactError(
                f"run {run_id}: neither {final} nor the checkpoint of round {last['round']} "
                f"({last['path']}) exists here; pass --run-dir of the folder the run wrote to"
            )
        if run["status"] != "completed":
            notes.append(
                f"the run is {run['status']}: this is the global student after round {last['round']}, "
                f"the last one recorded"
            )
    try:
        net, meta = load_checkpoint(path)
    except CheckpointError as exc:
        raise ArtifactError(str(exc)) from None
    if meta.get("run_id") not in (None, run_id):
        raise ArtifactError(f"{path} belongs to run {meta['run_id']}, not {run_id}")
    if meta.get("kind") != "student":
        raise ArtifactError(f"{path} is a {meta.get('kind')} checkpoint, not a global student")
    sha = sha256_file(path)
    by_sha = {c["sha256"]: c for c in checkpoints}
    match = by_sha.get(sha)
    if match is None:
        notes.append(
            f"{path.name} (sha256 {sha[:12]}...) matches no checkpoint the registry recorded: "
            "the file was changed after the run"
        )
    return FinalModel(
        path=path,
        round=match["round"] if match else meta.get("round"),
        sha256=sha,
        recorded_sha256=match["sha256"] if match else None,
        net=net,
        meta=meta,
        notes=notes,
    )


def run_data(fed: dict, progress: Callable[[int, int], None] | None = None) -> PreparedData:
    """The run's own dataset (``fed["data"]``), prepared as the run prepared it (cached after the first time).

    Raises
    ------
    ArtifactError
        The data are not on this machine or cannot be prepared.
    """
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.data.prepare import PreparationError
    from liteheart_core.data.ptbxl import LayoutError
    from liteheart_core.federated import open_data

    source = str(fed.get("data", ""))
    try:
        if source == "synth":
            return open_data("synth", int(fed.get("synth-records", 600)), int(fed.get("seed", 0)))
        if not source:
            raise ArtifactError("the run's config names no data")
        path = Path(source)
        if not path.exists():
            raise ArtifactError(f"the run's data {source} are not on this machine")
        return resolve_data(path, progress=progress)  # what open_data does, with a progress callback
    except (LayoutError, PreparationError, OSError) as exc:
        raise ArtifactError(f"the run's data {source} cannot be opened: {exc}") from None


def validation_rows(meta: dict, data: PreparedData) -> np.ndarray:
    """The rows ``score(..., split="val")`` scores: labelled records of the server's validation fold."""
    from liteheart_core.data.splits import split_folds

    folds = split_folds("val")
    return data.rows(meta["task"], folds=list(folds) if folds else None)


def validation_inputs(meta: dict, data: PreparedData, rows: np.ndarray) -> np.ndarray:
    """The model inputs of ``rows``: the checkpoint's leads of the prepared windows."""
    from liteheart_core.data.signal import lead_indices

    return data.x(rows, leads=[data.meta["leads"][i] for i in lead_indices(meta["leads"])])


def validation_results(
    model: FinalModel, data: PreparedData, n_bootstrap: int = 1000, seed: int = 0
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Scores of the final student on the server's validation fold, and its labels and probabilities there.

    Returns
    -------
    scores, y, probs
        ``score(..., split="val")`` (macro metrics with intervals, per-class table),
        the labels ``[N, C]`` and the sigmoid outputs ``[N, C]`` on the same records.

    Raises
    ------
    ArtifactError
        The data do not fit the checkpoint (task, classes, rate, window) or hold no validation record.
    """
    import torch

    from liteheart_core.scoring import score
    from liteheart_core.train import predict

    meta = model.meta
    try:
        scores = score(model.net, meta, data, "val", device="cpu", n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as exc:
        raise ArtifactError(f"cannot score the global student on the run's data: {exc}") from None
    rows = validation_rows(meta, data)
    _, labels = data.labels(meta["task"])
    probs = predict(model.net, validation_inputs(meta, data, rows), torch.device("cpu"))
    if len(rows) != scores["n"]:
        raise ArtifactError(f"scored {scores['n']} records but selected {len(rows)}: the selection drifted")
    return scores, labels[rows], probs


_PRIVACY_KEY = re.compile(r"(^|[-_])(dp|epsilon|delta|noise|clip|clipping|secagg|secure)([-_]|$)")


def privacy_settings(config: dict) -> dict:
    """The run's privacy-related settings (differential privacy, secure aggregation); empty when it has none."""
    flat = {**{k: v for k, v in config.items() if k not in ("fed", "partition_table")}, **(config.get("fed") or {})}
    return {k: v for k, v in flat.items() if _PRIVACY_KEY.search(str(k).lower())}


_OFF = (None, False, 0, 0.0, "", "off", "none", "false", "no")


def privacy_summary(config: dict, rounds: list[dict]) -> dict:
    """Differential privacy and secure aggregation as the run recorded them: ``"none"`` unless a setting is on.

    Returns
    -------
    dict
        ``differential_privacy`` and ``secure_aggregation`` ("on" or "none"), ``settings`` (every
        privacy-related key), ``epsilon_spent`` (the last round's, when rounds record it) and a
        plain-language ``statement``.
    """
    settings = privacy_settings(config)

    def active(pattern: str) -> bool:
        return any(
            re.search(pattern, k.lower()) and (v.lower() if isinstance(v, str) else v) not in _OFF
            for k, v in settings.items()
        )

    fed = config.get("fed") or {}
    if "dp" in fed or "secagg" in fed:
        # the run config says it outright (`dp`, `secagg`); its other keys (e.g. secagg-clipping-range,
        # which has a default) mean nothing while their switch is off
        dp = str(fed.get("dp", "none")).lower() not in _OFF
        secure = fed.get("secagg") not in _OFF
        settings = {
            k: v
            for k, v in settings.items()
            if ((dp and str(k).startswith("dp")) or (secure and str(k).startswith("secagg")))
            and (k in ("dp", "secagg") or v not in _OFF)
        }  # a dp-* key at 0 is unset
    else:
        dp = active(r"(^|[-_])(dp|epsilon|delta|noise|clip|clipping)([-_]|$)")
        secure = active(r"(^|[-_])(secagg|secure)([-_]|$)")
    _, eps = epsilon_per_round(rounds)
    if dp or secure:
        statement = "the run recorded the privacy settings listed here" + (
            "" if secure else "; without secure aggregation the server saw each client's update"
        )
    else:
        statement = (
            "none: no differential privacy and no secure aggregation; the server received each client's "
            "model update (weights and scalar metrics, never ECG signals) in clear"
        )
    return {
        "differential_privacy": "on" if dp else "none",
        "secure_aggregation": "on" if secure else "none",
        "settings": settings,
        "epsilon_spent": eps[-1] if eps else None,
        "statement": statement,
    }


def epsilon_per_round(rounds: list[dict]) -> tuple[list[int], list[float]]:
    """Rounds whose metrics carry ``epsilon`` (privacy spent so far), and its values."""
    xs, ys = [], []
    for r in rounds:
        for source in ("train_metrics", "central_metrics"):
            value = (r.get(source) or {}).get("epsilon")
            if isinstance(value, (int, float)) and math.isfinite(value):
                xs.append(int(r["number"]))
                ys.append(float(value))
                break
    return xs, ys


def data_notes(meta: dict, data: PreparedData, run_fingerprint: str | None) -> list[str]:
    """Warnings when the data here are not the data the run trained and scored on."""
    notes = []
    if run_fingerprint and data.fingerprint != run_fingerprint:
        notes.append(
            f"the data here (fingerprint {data.fingerprint[:12]}) differ from the run's "
            f"({run_fingerprint[:12]}): the validation scores below are on other records"
        )
    settings = meta.get("prep_settings")
    if settings and settings != data.meta.get("settings"):
        notes.append("the data here were prepared with other settings than the checkpoint's")
    return notes
