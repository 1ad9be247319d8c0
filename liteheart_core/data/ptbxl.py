"""PTB-XL layout: ``ptbxl_database.csv`` + ``scp_statements.csv`` + ``records100|500/``.

Labels follow the PTB-XL benchmark convention (Strodthoff et al.): every SCP
statement present counts, whatever its likelihood; a record without a label for
a task is dropped for that task (preparation itself keeps every record).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TASKS: tuple[str, ...] = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")


@dataclass(frozen=True)
class RecordMeta:
    """What preparation needs to know about one record of any layout."""

    record: str  # stable id (PTB-XL ecg_id, Challenge file stem)
    path: Path  # WFDB path without extension
    patient: str = ""
    fold: int = 0  # 0 when the layout has no folds
    site: str = ""  # PTB-XL site / Challenge source: the natural federated client
    age: float = float("nan")
    sex: str = ""
    codes: tuple[str, ...] = field(default_factory=tuple)  # SCP statements or SNOMED codes


class LayoutError(ValueError):
    """A dataset folder that does not have the expected layout."""


def is_ptbxl(root: Path) -> bool:
    """True when ``root`` looks like a PTB-XL folder."""
    return (root / "ptbxl_database.csv").is_file()


def parse_scp_codes(text: object, ecg_id: str) -> dict[str, float]:
    """A ``scp_codes`` cell (``{'NORM': 100.0, ...}``) as statement -> likelihood; LayoutError names the record.

    The one parser of this cell, for batch preparation and for ingest alike.
    """
    try:
        codes = ast.literal_eval(str(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise LayoutError(f"ecg_id {ecg_id}: scp_codes {text!r} is not a dict literal") from exc
    if not isinstance(codes, dict):
        raise LayoutError(f"ecg_id {ecg_id}: scp_codes {text!r} is not a dict")
    try:
        return {str(k): float(v) for k, v in codes.items()}
    except (TypeError, ValueError):
        raise LayoutError(f"ecg_id {ecg_id}: scp_codes {text!r} must map statements to likelihoods") from None


def _whole(value: object, where: str, column: str, missing_ok: bool = False) -> int | None:
    """A whole-number cell of the database (ids, folds), or None for an empty one when allowed."""
    if missing_ok and (value is None or (isinstance(value, float) and np.isnan(value)) or value == ""):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # a cell of any type: TypeError/ValueError say it is none  # pandas reads whole columns with a gap as floats
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or not number.is_integer():
        raise LayoutError(f"ptbxl_database.csv, {where}: {column} {value!r} is not a whole number")
    return int(number)


def _relative_file(value: object, ecg_id: str, column: str) -> str:
    """A record path inside the dataset folder (no absolute path, no '..')."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    parts = Path(text).parts
    if not text.strip() or Path(text).is_absolute() or ".." in parts:
        raise LayoutError(f"ecg_id {ecg_id}: {column} {text!r} is not a record path inside the dataset folder")
    return text


def read_ptbxl_records(root: Path, rate: int = 100) -> list[RecordMeta]:
    """List the records of a PTB-XL folder; the first bad row is a LayoutError (see ``read_ptbxl_table``)."""
    records, problems = read_ptbxl_table(root, rate)
    if problems:
        raise LayoutError(f"ptbxl_database.csv, ecg_id {problems[0]['record']}: {problems[0]['reason']}")
    return records


def read_ptbxl_table(root: Path, rate: int = 100) -> tuple[list[RecordMeta], list[dict[str, str]]]:
    """The records of a PTB-XL folder, and the rows that cannot be a record (``{"record", "reason"}``).

    A bad cell of one row (its statements, fold, patient or file name) leaves that record out,
    named with the reason, as preparation does with a bad signal; what breaks the table (a
    missing column, an unreadable file, a row without a valid or with a repeated ``ecg_id``,
    which could not be named) is a LayoutError.

    Parameters
    ----------
    rate
        100 reads ``filename_lr`` (records100), 500 reads ``filename_hr``.
    """
    db_path = root / "ptbxl_database.csv"
    if not db_path.is_file():
        raise LayoutError(f"{root} is not a PTB-XL folder: ptbxl_database.csv is missing")
    if rate not in (100, 500):
        raise ValueError(f"PTB-XL comes at 100 or 500 Hz, not {rate}")
    try:
        db = pd.read_csv(db_path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError/EmptyDataError are ValueErrors
        raise LayoutError(f"{db_path} is not a readable CSV table: {exc}") from None
    needed = {"ecg_id", "patient_id", "strat_fold", "scp_codes", "filename_lr", "filename_hr"}
    missing = needed - set(db.columns)
    if missing:
        raise LayoutError(f"{db_path}: missing columns {', '.join(sorted(missing))}")
    column = "filename_lr" if rate == 100 else "filename_hr"
    out: list[RecordMeta] = []
    problems: list[dict[str, str]] = []
    seen: set[str] = set()
    for line, row in enumerate(db.itertuples(index=False), start=2):
        rid = str(_whole(row.ecg_id, f"line {line}", "ecg_id"))
        if rid in seen:
            raise LayoutError(f"ptbxl_database.csv, line {line}: ecg_id {rid} appears twice")
        seen.add(rid)
        try:
            out.append(_record(root, row, rid, column))
        except LayoutError as exc:
            problems.append({"record": rid, "reason": _without_prefix(str(exc), rid)})
    return out, problems


def _record(root: Path, row: Any, rid: str, column: str) -> RecordMeta:
    """One row of the database as a record; LayoutError names the cell that is wrong."""
    fold = _whole(row.strat_fold, f"ecg_id {rid}", "strat_fold")
    if fold is None or not 1 <= fold <= 10:  # (None only with missing_ok)
        raise LayoutError(f"ptbxl_database.csv, ecg_id {rid}: strat_fold {fold} is not one of the folds 1-10")
    patient = _whole(row.patient_id, f"ecg_id {rid}", "patient_id", missing_ok=True)
    return RecordMeta(
        record=rid,
        path=root / _relative_file(getattr(row, column), rid, column),
        patient="" if patient is None else str(patient),
        fold=fold,
        site=_text(getattr(row, "site", "")),
        age=_number(getattr(row, "age", float("nan"))),
        sex=_text(getattr(row, "sex", "")),
        codes=tuple(parse_scp_codes(row.scp_codes, rid)),
    )


def _without_prefix(message: str, rid: str) -> str:
    """A reason without the 'ptbxl_database.csv, ecg_id N: ' its record is already named by."""
    for prefix in (f"ptbxl_database.csv, ecg_id {rid}: ", f"ecg_id {rid}: "):
        if message.startswith(prefix):
            return "ptbxl_database.csv: " + message[len(prefix) :]
    return message


def _text(value: object) -> str:
    """A label cell as text: empty for a gap, ``1`` rather than ``1.0`` for a whole number."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: object) -> float:
    """A numeric cell (age), NaN when empty or not a finite number."""
    try:
        number = float(value)  # type: ignore[arg-type]  # a cell of any type: TypeError/ValueError say it is none
    except (TypeError, ValueError):
        return float("nan")
    return number if np.isfinite(number) else float("nan")


def read_statements(root: Path) -> pd.DataFrame:
    """The SCP statement table indexed by statement code."""
    path = root / "scp_statements.csv"
    if not path.is_file():
        raise LayoutError(f"{root} is not a PTB-XL folder: scp_statements.csv is missing")
    table = pd.read_csv(path, index_col=0)
    for col in ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"):
        if col not in table.columns:
            raise LayoutError(f"{path}: missing column {col}")
    return table


def task_labels(codes: list[tuple[str, ...]], statements: pd.DataFrame, task: str) -> tuple[list[str], np.ndarray]:
    """Multi-hot labels of one PTB-XL task.

    Returns
    -------
    classes, Y
        Class names (superdiagnostic in the fixed order NORM, MI, STTC, CD, HYP;
        other tasks: the classes present, sorted) and a uint8 matrix [N, C].
    """
    if task not in TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; expected one of {', '.join(TASKS)}")

    def mapped(code: str) -> str | None:
        if code not in statements.index:
            return None
        row = statements.loc[code]
        if task == "all":
            return code
        if task in ("form", "rhythm"):
            return code if row[task] == 1 else None
        if row["diagnostic"] != 1:
            return None
        if task == "diagnostic":
            return code
        value = row["diagnostic_class" if task == "superdiagnostic" else "diagnostic_subclass"]
        return None if pd.isna(value) else str(value)

    per_record = [{c for c in (mapped(code) for code in rec) if c} for rec in codes]
    if task == "superdiagnostic":
        classes = list(SUPERCLASSES)
    else:
        classes = sorted(set().union(*per_record)) if per_record else []
    col = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(codes), len(classes)), dtype=np.uint8)
    for i, labels in enumerate(per_record):
        for lab in labels:
            if lab in col:
                y[i, col[lab]] = 1
    return classes, y
