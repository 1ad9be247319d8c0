"""Labels from the coded statements a file carries (``SCP:NORM``, ``SNOMED:426783006``, ``MDC:MDC_ECG_RHY_ATR_FIB``,
``SRT:D3-31520``).

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


@lru_cache(maxsize=1)
def _to_scp() -> dict[str, str]:
    """Other vocabularies' codes -> SCP-ECG statement, from the table's own cross-references:
    ``MDC:<aECG REFID>`` (``MDC_ECG_RHY_ATR_FIB`` -> AFIB) and ``SRT:``/``DCM:<DICOM Code>``
    (``D3-31520`` -> AFIB; a cell may list two codes, ``D3-33120 or 122752``)."""
    table = scp_statements()
    out: dict[str, str] = {}
    for scp, row in table.iterrows():
        refid = row.get("aECG REFID")
        if isinstance(refid, str) and refid.strip():
            out[f"MDC:{refid.strip()}"] = str(scp)
        dicom = row.get("DICOM Code")
        if isinstance(dicom, str):
            for code in dicom.split(" or "):
                code = code.strip()
                out[f"{'DCM' if code.isdigit() else 'SRT'}:{code}"] = str(scp)
    return out


def split_codes(codes: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(SCP codes, SNOMED CT codes)`` of a record's prefixed codes, prefixes removed; aECG (``MDC:``) and
    DICOM (``SRT:``, ``DCM:``) statement codes that PTB-XL's table cross-references count as their SCP code."""
    to_scp = _to_scp()
    scp = tuple(
        dict.fromkeys(
            c[4:] if c.startswith("SCP:") else to_scp[c] for c in codes if c.startswith("SCP:") or c in to_scp
        )
    )
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
