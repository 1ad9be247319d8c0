"""Helpers for the continual-learning tests: tiny WFDB records, fake recordings, store backends."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import wfdb

from client.store import NewRecording
from liteheart_core.data.incoming import PreparedRecording
from liteheart_core.quality import QualityReport
from tests.storage.conftest import ALL_BACKENDS, _url_for

LEADS_12 = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_wfdb(
    folder: Path,
    name: str,
    sig: np.ndarray,
    fs: float = 100.0,
    leads: list[str] | None = None,
    comments: list[str] | None = None,
) -> Path:
    """Write ``sig`` [T, leads] in mV as a WFDB record; returns the record path without extension."""
    folder.mkdir(parents=True, exist_ok=True)
    n = sig.shape[1]
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * n,
        sig_name=leads or LEADS_12[:n],
        p_signal=sig,
        fmt=["16"] * n,
        adc_gain=[1000.0] * n,
        baseline=[0] * n,
        write_dir=str(folder),
        comments=comments or [],
    )
    return folder / name


def fake_recording(
    record_id: str, usable: bool = True, label: list[int] | None = None, seed: int = 0, length: int = 50
) -> NewRecording:
    """A small stored-recording stand-in (12 leads x ``length``), without WFDB or filtering."""
    rng = np.random.default_rng(seed)
    windows = rng.standard_normal((1, 12, length)).astype(np.float32)
    regions = rng.integers(-1, 4, size=(1, length)).astype(np.int8)
    flags = {} if usable else {"noisy": "lead I noisy: in-band SNR -3.0 dB (minimum 0 dB)"}
    quality = QualityReport(score=0.9 if usable else 0.0, flags=flags, heart_rate=70.0, beats=12, seconds=10.0)
    digest = hashlib.sha256(f"{record_id}/{seed}".encode()).hexdigest()
    return NewRecording(
        record_id,
        digest,
        f"/data/{record_id}",
        quality,
        PreparedRecording(windows, regions, (length,)),
        label=None if label is None else np.asarray(label, dtype=np.uint8),
        label_source=None if label is None else "csv",
    )


@pytest.fixture(params=ALL_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store URL on each backend (SQLite in memory, SQLite file, PostgreSQL when available)."""
    return _url_for(request.param, request, tmp_path)
