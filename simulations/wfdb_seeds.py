"""Small valid WFDB records that fuzzing starts from: the hypothesis suites in ``tests/fuzz`` and
the coverage-guided ``simulations/fuzz_wfdb.py`` (which must not import the tests: they are not packaged)."""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import wfdb

LEADS_12 = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
BASES = ("fmt16", "fmt212", "fmt80", "lead1")


def ecg_signal(n_leads: int, n: int, fs: float) -> np.ndarray:
    """The base records' signal [n, n_leads] in mV: beats with a T wave, slightly different per lead."""
    t = np.arange(n) / fs
    sig = np.zeros((n, n_leads))
    for lead in range(n_leads):
        for b in np.arange(0.3, n / fs, 0.85):
            sig[:, lead] += (0.6 + 0.05 * lead) * np.exp(-0.5 * ((t - b) / 0.012) ** 2)
            sig[:, lead] += 0.2 * np.exp(-0.5 * ((t - b - 0.28) / 0.05) ** 2)
    return sig + 0.01 * np.sin(np.arange(n)[:, None] * (1 + np.arange(n_leads)))


@cache
def base_record(kind: str) -> tuple[str, dict[str, bytes]]:
    """A small valid record: its name and ``{file name: bytes}`` (header first)."""
    folder = Path(tempfile.mkdtemp(prefix="lh-fuzz-base-"))
    n_leads = 1 if kind == "lead1" else 12
    fmt = {"fmt212": "212", "fmt80": "80"}.get(kind, "16")
    gain = 50.0 if fmt == "80" else 1000.0
    wfdb.wrsamp(
        "rec",
        fs=100,
        units=["mV"] * n_leads,
        sig_name=LEADS_12[:n_leads],
        p_signal=ecg_signal(n_leads, 300, 100),
        fmt=[fmt] * n_leads,
        adc_gain=[gain] * n_leads,
        baseline=[0] * n_leads,
        write_dir=str(folder),
        comments=["Age: 61", "Sex: Female", "Dx: 426783006"],
    )
    files = {"rec.hea": (folder / "rec.hea").read_bytes(), "rec.dat": (folder / "rec.dat").read_bytes()}
    shutil.rmtree(folder, ignore_errors=True)
    return "rec", files
