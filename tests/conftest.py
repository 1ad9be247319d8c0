"""Shared fixtures: where the read-only real ECG data lives, and tiny WFDB writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (or ``$LITEHEART_SHARED_DATA``)."""
    return Path(os.environ.get("LITEHEART_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    path = shared_data_dir() / "ptbxl"
    if not (path / "ptbxl_database.csv").is_file():
        pytest.skip(f"real PTB-XL data not found at {path} (tests on real data need ../shared/data)")
    return path


@pytest.fixture(scope="session")
def challenge_dir() -> Path:
    path = shared_data_dir() / "challenge"
    if not path.is_dir():
        pytest.skip(f"real Challenge data not found at {path} (tests on real data need ../shared/data)")
    return path


def ecg_like(n_leads: int, n: int, fs: float, seed: int = 0, hr: float = 70.0) -> np.ndarray:
    """A crude beating signal [n, n_leads] in mV: narrow R spikes plus a T bump, different per lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    beats = np.arange(0.3, n / fs, 60.0 / hr)
    sig = np.zeros((n, n_leads))
    for lead in range(n_leads):
        gain = 0.5 + rng.random()
        for b in beats:
            sig[:, lead] += gain * np.exp(-0.5 * ((t - b) / 0.012) ** 2)
            sig[:, lead] += 0.25 * gain * np.exp(-0.5 * ((t - b - 0.28) / 0.05) ** 2)
    return sig + 0.01 * rng.standard_normal((n, n_leads))
