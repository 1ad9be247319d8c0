"""The signal-quality gate: good ECGs pass, each kind of damage is flagged with its own reason."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import signal as sps

from liteheart_core.data.signal import read_wfdb
from liteheart_core.data.synth import generate_record, sample_anatomy
from liteheart_core.quality import FLAGS, assess_quality
from tests.conftest import ecg_like

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LABELS = [("NORM",), ("MI",), ("STTC",), ("CD",), ("HYP",), ("MI", "CD")]


def _synth(seed: int, fs: int = 100, labels: tuple[str, ...] | None = None) -> tuple[np.ndarray, float]:
    rec = generate_record(np.random.default_rng(seed), labels or LABELS[seed % len(LABELS)], fs=fs)
    return rec.signal.T.astype(np.float64), rec.heart_rate


def _amplitude(x: np.ndarray) -> np.ndarray:
    return (np.percentile(x, 99.5, axis=1) - np.percentile(x, 0.5, axis=1))[:, None]


@pytest.mark.parametrize("fs", [100, 500])
def test_good_synthetic_records_pass_with_their_heart_rate(fs: int) -> None:
    # Prepare
    records = [_synth(seed, fs) for seed in range(12)]

    # Execute
    reports = [assess_quality(x, fs, "mV", LEADS, f"synth-{i}") for i, (x, _) in enumerate(records)]

    # Assert
    assert all(r.usable and r.score > 0 for r in reports), [r.reason for r in reports if not r.usable]
    for (_x, true_hr), r in zip(records, reports):
        assert r.heart_rate == pytest.approx(true_hr, rel=0.1)
        assert r.beats >= 5


def test_flat_records_are_flagged_flat() -> None:
    # Prepare
    x, _ = _synth(1)
    dead_lead_i = x.copy()
    dead_lead_i[0] = 0.0
    electrodes_off = x.copy()  # 4 leads go flat (with a little amplifier noise) after 3 s
    electrodes_off[6:10, 300:] = 0.003 * np.random.default_rng(0).standard_normal((4, 700))

    # Execute
    everything = assess_quality(np.zeros_like(x), 100, "mV", LEADS)
    lead_i = assess_quality(dead_lead_i, 100, "mV", LEADS)
    partial = assess_quality(electrodes_off, 100, "mV", LEADS)

    # Assert
    assert "flat" in everything.flags and everything.score == 0.0 and not everything.usable
    assert set(lead_i.flags) == {"flat"} and "lead I" in lead_i.flags["flat"]
    assert set(partial.flags) == {"flat"} and "4 leads" in partial.flags["flat"]


def test_clipped_records_are_flagged_clipped() -> None:
    for seed in range(6):
        # Prepare
        x, _ = _synth(seed)
        rail = 0.5 * np.percentile(np.abs(x), 99.5, axis=1, keepdims=True)

        # Execute
        report = assess_quality(np.clip(x, -rail, rail), 100, "mV", LEADS)

        # Assert
        assert "clipped" in report.flags, (seed, report.flags)
        assert report.measures["clipped_fraction"] >= 0.01 and report.score == 0.0


@pytest.mark.parametrize("kind", ["white", "muscle"])
def test_heavy_noise_is_flagged_noisy_and_snr_falls_with_noise(kind: str) -> None:
    for seed in range(6):
        # Prepare
        x, _ = _synth(seed)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(x.shape)
        if kind == "muscle":  # EMG lives above ~20 Hz
            noise = sps.sosfilt(sps.butter(2, 20 / 50, "high", output="sos"), noise, axis=-1)
            noise /= noise.std(axis=1, keepdims=True)

        # Execute
        snrs = [
            assess_quality(x + level * _amplitude(x) * noise, 100, "mV", LEADS).measures["lead_i_snr_db"]
            for level in (0.01, 0.05, 0.2)
        ]
        heavy = assess_quality(x + 0.5 * _amplitude(x) * noise, 100, "mV", LEADS)
        mild = assess_quality(x + 0.01 * _amplitude(x) * noise, 100, "mV", LEADS)

        # Assert
        assert "noisy" in heavy.flags, (seed, heavy.flags, heavy.measures)
        assert mild.usable, mild.reason
        assert snrs[0] > snrs[1] > snrs[2]


def test_implausible_heart_rates_are_flagged() -> None:
    # Prepare: a synthetic patient at 18 bpm, and crude beating signals at 20 and 265 bpm
    rng = np.random.default_rng(3)
    slow_patient = replace(sample_anatomy(rng), heart_rate=18.0)
    slow = generate_record(rng, ("NORM",), fs=100, seconds=20.0, anatomy=slow_patient).signal.T
    very_slow = ecg_like(12, 1000, 100, seed=1, hr=20).T
    fast = ecg_like(12, 1000, 100, seed=1, hr=265).T

    # Execute
    reports = {
        name: assess_quality(x, 100, "mV", LEADS)
        for name, x in [("slow", slow), ("very_slow", very_slow), ("fast", fast)]
    }

    # Assert
    for name, report in reports.items():
        assert "heart_rate" in report.flags, (name, report.flags)
        assert "flat" not in report.flags and "clipped" not in report.flags
    assert re.search(r"implausible heart rate 2[5-7]\d bpm", reports["fast"].flags["heart_rate"])
    assert reports["slow"].heart_rate < 25 and reports["very_slow"].heart_rate < 25


def test_the_gate_does_not_depend_on_units_or_scale() -> None:
    # Prepare: one good and one clipped record in mV, in uV, and z-scored ("NU", as half of PTB-XL is)
    x, _ = _synth(4)
    rail = 0.5 * np.percentile(np.abs(x), 99.5, axis=1, keepdims=True)
    clipped = np.clip(x, -rail, rail)

    for sig in (x, clipped):
        # Execute
        mv = assess_quality(sig, 100, "mV", LEADS)
        uv = assess_quality(sig * 1000.0, 100, "uV", LEADS)
        nu = assess_quality((sig - sig.mean(1, keepdims=True)) / sig.std(1, keepdims=True), 100, "NU", LEADS)

        # Assert
        assert set(mv.flags) == set(uv.flags) == set(nu.flags)
        assert mv.score == pytest.approx(uv.score, abs=1e-6) == pytest.approx(nu.score, abs=1e-6)


def test_one_lead_recording_is_judged_on_that_lead() -> None:
    x, _ = _synth(2)

    good = assess_quality(x[0], 100, "mV", ("I",))
    flat = assess_quality(np.zeros(1000), 100, "mV", ("I",))

    assert good.usable and set(flat.flags) >= {"flat"}


@pytest.mark.parametrize(
    "signal,fs,message",
    [
        (np.full((12, 1000), np.nan), 100.0, "NaN"),
        (np.zeros((12, 1000)), 20.0, "below the 50 Hz"),
        (np.zeros((12, 100)), 100.0, "only 1.00 s"),
        (np.zeros((2, 3, 4)), 100.0, "shape"),
    ],
)
def test_unjudgeable_input_is_an_error_naming_the_record(signal: np.ndarray, fs: float, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        assess_quality(signal, fs, "mV", record="rec-42")
    assert "rec-42" in str(info.value)


def test_flags_are_the_documented_ones() -> None:
    x, _ = _synth(0)
    report = assess_quality(np.zeros_like(x), 100, "mV", LEADS)
    assert set(report.flags) <= set(FLAGS)


@pytest.mark.realdata
def test_real_ptbxl_records_pass(ptbxl_dir: Path) -> None:
    # Prepare: 150 records spread over the database (both signal sources: mV and z-scored)
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    rows = db.iloc[np.linspace(0, len(db) - 1, 150).astype(int)]

    # Execute
    reports = []
    for row in rows.itertuples():
        raw = read_wfdb(ptbxl_dir / row.filename_lr, str(row.ecg_id))
        reports.append(assess_quality(raw.signal, raw.fs, raw.units, LEADS, raw.record))

    # Assert: most pass (all 2,020 did when the thresholds were set), with plausible rates
    usable = [r for r in reports if r.usable]
    assert len(usable) >= 0.97 * len(reports), [r.reason for r in reports if not r.usable]
    assert all(30 <= r.heart_rate <= 200 for r in usable)
    assert np.median([r.score for r in usable]) > 0.9
