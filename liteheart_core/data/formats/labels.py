"""Labels from the coded statements a file carries (``SCP:NORM``, ``SNOMED:426783006``).

SCP-ECG statements (the vocabulary of PTB-XL) map to the PTB-XL tasks through PTB-XL's own statement
table, shipped as ``resources/ptbxl_scp_statements.csv`` (PTB-XL 1.0.3, CC BY 4.0: Wagner et al., Scientific
Data 7, 154, 2020), so that a DICOM or aECG file coded in SCP-ECG is labelled exactly as its PTB-XL
original. SNOMED CT codes map to the Challenge 2021 classes through the Challenge's table.
"""

from __future__ import annotations

import io
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from liteheart_core.data import challenge, ptbxl


@lru_cache(maxsize=1)
def scp_statements() -> pd.DataFrame:
    """PTB-XL's SCP statement table, indexed by statement code."""
    text = resources.files("liteheart_core.data").joinpath("resources/ptbxl_scp_statements.csv").read_text()
    return pd.read_csv(io.StringIO(text), index_col=0)


def split_codes(codes: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(SCP codes, SNOMED codes)`` of a record's prefixed codes, prefixes removed."""
    scp = tuple(c[4:] for c in codes if c.startswith("SCP:"))
    snomed = tuple(c[7:] for c in codes if c.startswith("SNOMED:"))
    return scp, snomed


def code_tasks(codes: list[tuple[str, ...]]) -> dict[str, tuple[list[str], np.ndarray]]:
    """Every task's ``(classes, multi-hot [N, C])`` for records' prefixed codes: the PTB-XL tasks
    (from SCP codes) and ``challenge2021`` (from SNOMED codes)."""
    scp = [split_codes(c)[0] for c in codes]
    snomed = [split_codes(c)[1] for c in codes]
    out = {task: ptbxl.task_labels(scp, scp_statements(), task) for task in ptbxl.TASKS}
    out[challenge.TASK] = challenge.challenge_labels(snomed)
    return out


def code_label(codes: tuple[str, ...], task: str, classes: list[str]) -> np.ndarray | None:
    """One record's multi-hot label over ``classes`` for ``task`` from its codes, or None when they give none."""
    scp, snomed = split_codes(codes)
    if task in ptbxl.TASKS and scp:
        names, y = ptbxl.task_labels([scp], scp_statements(), task)
    elif task == challenge.TASK and snomed:
        names, y = challenge.challenge_labels([snomed])
    else:
        return None
    col = {c: i for i, c in enumerate(names)}
    label = np.array([y[0, col[c]] if c in col else 0 for c in classes], dtype=np.uint8)
    return label if label.any() else None
