"""PTB-XL layout: ``ptbxl_database.csv`` + ``scp_statements.csv`` + ``records100|500/``.

Labels follow the PTB-XL benchmark convention (Strodthoff et al.): every SCP
statement present counts, whatever its likelihood; a record without a label for
a task is dropped for that task (preparation itself keeps every record).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

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


def _parse_codes(text: object, ecg_id: str) -> dict[str, float]:
    try:
        codes = ast.literal_eval(str(text))
    except (ValueError, SyntaxError) as exc:
        raise LayoutError(f"ecg_id {ecg_id}: scp_codes {text!r} is not a dict literal") from exc
    if not isinstance(codes, dict):
        raise LayoutError(f"ecg_id {ecg_id}: scp_codes {text!r} is not a dict")
    return {str(k): float(v) for k, v in codes.items()}


def read_ptbxl_records(root: Path, rate: int = 100) -> list[RecordMeta]:
    """List the records of a PTB-XL folder.

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
    db = pd.read_csv(db_path)
    needed = {"ecg_id", "patient_id", "strat_fold", "scp_codes", "filename_lr", "filename_hr"}
    missing = needed - set(db.columns)
    if missing:
        raise LayoutError(f"{db_path}: missing columns {', '.join(sorted(missing))}")
    column = "filename_lr" if rate == 100 else "filename_hr"
    out = []
    for row in db.itertuples(index=False):
        rid = str(int(row.ecg_id))
        site = getattr(row, "site", "")
        site = "" if pd.isna(site) else str(int(site)) if float(site).is_integer() else str(site)
        patient = "" if pd.isna(row.patient_id) else str(int(row.patient_id))
        sex = getattr(row, "sex", "")
        out.append(
            RecordMeta(
                record=rid,
                path=root / str(getattr(row, column)),
                patient=patient,
                fold=int(row.strat_fold),
                site=site,
                age=float(getattr(row, "age", float("nan"))),
                sex="" if pd.isna(sex) else str(sex),
                codes=tuple(_parse_codes(row.scp_codes, rid)),
            )
        )
    return out


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
