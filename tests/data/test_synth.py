"""Tests of the synthetic PTB-XL generator: determinism, physics, class effects, layout."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from liteheart_core.data.synth import (
    BASE_PREVALENCE,
    CLASSES,
    LEADS,
    WAVE_KEYS,
    SynthRecord,
    generate_record,
    sample_anatomy,
    sample_labels,
    write_synth_ptbxl,
)

LEAD = {name: i for i, name in enumerate(LEADS)}
CSV_COLUMNS = [
    "ecg_id",
    "patient_id",
    "age",
    "sex",
    "site",
    "strat_fold",
    "scp_codes",
    "filename_lr",
    "filename_hr",
    "signal_source",
]


def _record(seed: int, labels: tuple[str, ...] = ("NORM",), **kwargs: object) -> SynthRecord:
    return generate_record(np.random.default_rng(seed), labels, **kwargs)


def _paired(label: str, n: int) -> list[tuple[SynthRecord, SynthRecord]]:
    """Noise-free (NORM, label) records of the same patients, so anatomy cancels out."""
    pairs = []
    for seed in range(n):
        anatomy = sample_anatomy(np.random.default_rng([seed, 0]))
        norm, sick = (
            generate_record(np.random.default_rng([seed, k]), labels, 500, 4.0, anatomy=anatomy, noise_scale=0.0)
            for k, labels in ((1, ["NORM"]), (2, [label]))
        )
        pairs.append((norm, sick))
    return pairs


def _template(rec: SynthRecord, lead: str) -> np.ndarray:
    """Mean beat of one lead from 20 ms before QRS onset to 300 ms after."""
    before, after = int(0.02 * rec.fs), int(0.3 * rec.fs)
    starts = [q for q in rec.waves["qrs_on"] if q >= before and q + after <= rec.signal.shape[0]]
    return np.mean([rec.signal[q - before : q + after, LEAD[lead]] for q in starts], axis=0)


def _change(pairs: list[tuple[SynthRecord, SynthRecord]], lead: str) -> float:
    """Mean RMS difference (mV) between the paired beat templates in one lead."""
    return float(np.mean([np.sqrt(np.mean((_template(b, lead) - _template(a, lead)) ** 2)) for a, b in pairs]))


def _mean_over(
    pairs: list[tuple[SynthRecord, SynthRecord]], measure: Callable[[SynthRecord], float]
) -> tuple[float, float]:
    return (float(np.mean([measure(a) for a, _ in pairs])), float(np.mean([measure(b) for _, b in pairs])))


def test_same_seed_gives_identical_record() -> None:
    # Prepare / Execute
    first, second = _record(7, ("MI", "CD")), _record(7, ("MI", "CD"))

    # Assert
    assert np.array_equal(first.signal, second.signal)
    assert first.scp_codes == second.scp_codes
    assert all(np.array_equal(first.waves[k], second.waves[k]) for k in WAVE_KEYS)


def test_different_seeds_give_different_records() -> None:
    # Prepare / Execute
    first, second = _record(1), _record(2)

    # Assert
    assert not np.allclose(first.signal, second.signal)


def test_record_has_documented_shape_and_types() -> None:
    # Prepare / Execute
    rec = _record(3, ("STTC",), fs=500, seconds=8.0)

    # Assert
    assert rec.signal.shape == (4000, 12)
    assert rec.signal.dtype == np.float32
    assert rec.fs == 500 and rec.labels == ("STTC",)
    assert all(rec.waves[k].dtype == np.int64 for k in WAVE_KEYS)
    assert any(code in rec.scp_codes for code in ("SR", "SBRAD", "STACH"))


@pytest.mark.parametrize("noise_scale", [0.0, 1.0, 3.0])
def test_limb_leads_obey_einthoven_and_goldberger(noise_scale: float) -> None:
    # Prepare
    x = _record(11, ("HYP",), noise_scale=noise_scale).signal.astype(np.float64)
    i, ii = x[:, LEAD["I"]], x[:, LEAD["II"]]

    # Execute
    residuals = {
        "III": x[:, LEAD["III"]] - (ii - i),
        "AVR": x[:, LEAD["AVR"]] + (i + ii) / 2,
        "AVL": x[:, LEAD["AVL"]] - (i - ii / 2),
        "AVF": x[:, LEAD["AVF"]] - (ii - i / 2),
    }

    # Assert: exact up to float32 rounding, with or without electrode noise
    assert {k: float(np.abs(v).max()) for k, v in residuals.items()} == pytest.approx(
        dict.fromkeys(residuals, 0.0), abs=1e-5
    )


@pytest.mark.parametrize("fs", [100, 250, 500])
@pytest.mark.parametrize("labels", [("NORM",), ("MI",), ("STTC",), ("CD",), ("HYP",), ("MI", "STTC", "CD", "HYP")])
def test_waves_are_ordered_and_inside_the_signal(fs: int, labels: tuple[str, ...]) -> None:
    for seed in range(4):
        # Prepare / Execute
        rec = _record(seed, labels, fs=fs)
        waves = np.stack([rec.waves[k] for k in WAVE_KEYS])  # [9, beats]

        # Assert
        assert waves.shape[1] >= 5
        assert np.all(np.diff(waves, axis=0) > 0), f"seed {seed}: wave order broken"
        assert waves.min() >= 0 and waves.max() < rec.signal.shape[0]
        assert np.all(rec.waves["t_off"][:-1] < rec.waves["p_on"][1:]), "beats overlap"


@pytest.mark.parametrize("seed", range(6))
def test_heart_rate_matches_r_peaks(seed: int) -> None:
    # Prepare / Execute
    rec = _record(seed, sample_labels(np.random.default_rng(seed)))
    from_waves = 60.0 * rec.fs / np.mean(np.diff(rec.waves["r_peak"]))

    # Assert
    assert from_waves == pytest.approx(rec.heart_rate, abs=1.0)
    assert 40.0 <= rec.heart_rate <= 125.0


def test_heart_rate_varies_beat_to_beat() -> None:
    # Prepare / Execute: sinus arrhythmia and jitter, not a metronome
    rr = np.diff(_record(5, fs=500, seconds=30.0).waves["r_peak"])

    # Assert
    assert rr.std() > 0.005 * rr.mean()


def test_qt_shortens_at_higher_heart_rate() -> None:
    # Prepare: one patient at rest and at a faster rate
    anatomy = sample_anatomy(np.random.default_rng(0))
    slow, fast = (
        generate_record(
            np.random.default_rng(1), ["NORM"], 500, anatomy=replace(anatomy, heart_rate=bpm), noise_scale=0.0
        )
        for bpm in (55.0, 100.0)
    )

    # Execute
    qt_slow, qt_fast = (float(np.mean(r.waves["t_off"] - r.waves["qrs_on"])) / r.fs for r in (slow, fast))

    # Assert: QT adapts to RR (about 0.04 s shorter per Fridericia), PR and QRS do not
    assert qt_fast < qt_slow - 0.02
    assert np.mean(fast.waves["qrs_off"] - fast.waves["qrs_on"]) == pytest.approx(
        np.mean(slow.waves["qrs_off"] - slow.waves["qrs_on"]), abs=1.0
    )


def test_conduction_disturbance_widens_qrs() -> None:
    # Prepare
    pairs = _paired("CD", 40)

    # Execute
    norm, cd = _mean_over(pairs, lambda r: float(np.mean(r.waves["qrs_off"] - r.waves["qrs_on"])) / r.fs)

    # Assert
    assert cd > norm + 0.005


def test_hypertrophy_raises_qrs_voltage() -> None:
    # Prepare
    pairs = _paired("HYP", 30)

    def qrs_voltage(rec: SynthRecord) -> float:
        spans = zip(rec.waves["qrs_on"], rec.waves["qrs_off"])
        return float(np.mean([np.ptp(rec.signal[a:b], axis=0).sum() for a, b in spans]))

    # Execute
    norm, hyp = _mean_over(pairs, qrs_voltage)

    # Assert
    assert hyp > 1.1 * norm


def test_sttc_lowers_t_waves_in_lateral_and_inferior_leads() -> None:
    # Prepare
    pairs = _paired("STTC", 30)

    for lead in ("II", "V5", "V6"):
        # Execute
        norm, sttc = _mean_over(pairs, lambda r, lead=lead: float(np.mean(r.signal[r.waves["t_peak"], LEAD[lead]])))

        # Assert
        assert sttc < 0.8 * norm, lead


@pytest.mark.parametrize(
    ("codes", "territory"),
    [
        ({"IMI"}, ("II", "III", "AVF")),
        ({"ASMI", "AMI"}, ("V1", "V2", "V3", "V4")),
    ],
)
def test_mi_changes_its_territory_leads_more_than_lead_i(codes: set[str], territory: tuple[str, ...]) -> None:
    # Prepare
    pairs = [(a, b) for a, b in _paired("MI", 70) if codes & set(b.scp_codes)]

    # Execute
    in_territory = np.mean([_change(pairs, lead) for lead in territory])
    in_lead_i = _change(pairs, "I")

    # Assert: the 12-lead -> 1-lead diagnostic gap is real
    assert len(pairs) >= 10
    assert in_territory > 1.8 * in_lead_i


def test_inferior_mi_deepens_initial_qrs_in_lead_iii() -> None:
    # Prepare
    pairs = [(a, b) for a, b in _paired("MI", 70) if "IMI" in b.scp_codes]

    def initial_min(rec: SynthRecord) -> float:
        spans = zip(rec.waves["qrs_on"], rec.waves["r_peak"])
        return float(np.mean([rec.signal[a : b + 1, LEAD["III"]].min() for a, b in spans]))

    # Execute
    norm, imi = _mean_over(pairs, initial_min)

    # Assert: pathological Q waves
    assert imi < norm - 0.05


def _hum_ratio(seed: int, fs: int) -> float:
    """Spectral peak at 50 Hz (or its alias at Nyquist) over the median of nearby bins."""
    clean = _record(seed, fs=fs, noise_scale=0.0).signal[:, LEAD["II"]]
    noisy = _record(seed, fs=fs, noise_scale=1.0).signal[:, LEAD["II"]]
    spectrum = np.abs(np.fft.rfft(noisy - clean))
    offset = np.abs(np.fft.rfftfreq(clean.size, 1 / fs) - 50.0)
    nearby = spectrum[(offset > 1.0) & (offset < 10.0)]
    return float(spectrum[np.argmin(offset)] / np.median(nearby))


def test_mains_hum_only_appears_where_50_hz_is_in_band() -> None:
    # Prepare / Execute: the clean part does not depend on noise_scale, so the
    # difference of the two records is the noise alone
    at_500 = np.median([_hum_ratio(seed, 500) for seed in range(8)])
    at_100 = np.median([_hum_ratio(seed, 100) for seed in range(8)])

    # Assert: hum at 500 Hz; at 100 Hz it was filtered before decimation, not aliased
    assert at_500 > 10.0
    assert at_100 < 3.0


def test_noise_scale_zero_gives_clean_signal_between_beats() -> None:
    # Prepare / Execute
    rec = _record(6, noise_scale=0.0, fs=500)
    gaps = [rec.signal[b - 10 : b, LEAD["II"]] for b in rec.waves["p_on"][1:]]

    # Assert: the TP segment is flat without noise (baseline at 0 mV)
    assert np.abs(np.concatenate(gaps)).max() < 0.03


@pytest.mark.parametrize("labels", [(), ("AFIB",), ("NORM", "MI")])
def test_generate_record_rejects_invalid_labels(labels: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="labels|NORM"):
        _record(0, labels)


@pytest.mark.parametrize("kwargs", [{"fs": 50}, {"seconds": 1.0}, {"noise_scale": -1.0}])
def test_generate_record_rejects_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _record(0, ("NORM",), **kwargs)


def test_label_prevalence_matches_ptbxl() -> None:
    # Prepare
    rng = np.random.default_rng(0)

    # Execute
    draws = [sample_labels(rng) for _ in range(6000)]
    prevalence = {c: np.mean([c in d for d in draws]) for c in CLASSES}

    # Assert
    assert prevalence == pytest.approx(BASE_PREVALENCE, abs=0.025)
    assert sum(len(d) > 1 for d in draws) > 0.1 * len(draws)  # co-occurrence exists


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_sampled_labels_are_valid_sets(seed: int) -> None:
    # Execute
    labels = sample_labels(np.random.default_rng(seed))

    # Assert
    assert labels and set(labels) <= set(CLASSES)
    assert labels == ("NORM",) or "NORM" not in labels
    assert list(labels) == sorted(labels, key=CLASSES.index)


def test_sample_labels_rejects_impossible_prevalence() -> None:
    # Prepare: diseases cannot cover every abnormal record
    prevalence = {"NORM": 0.2, "MI": 0.1, "STTC": 0.1, "CD": 0.1, "HYP": 0.1}

    # Execute / Assert
    with pytest.raises(ValueError, match="abnormal share"):
        sample_labels(np.random.default_rng(0), prevalence)


def _features(rec: SynthRecord) -> np.ndarray:
    """Per-lead Q, R, S, ST and T levels relative to the PR baseline, mean over beats."""
    w, x = rec.waves, rec.signal
    base = x[w["qrs_on"] - 2]
    q = np.stack([x[a : b + 1].min(0) for a, b in zip(w["qrs_on"], w["r_peak"])])
    r = np.stack([x[a : b + 1].max(0) for a, b in zip(w["qrs_on"], w["qrs_off"])])
    s = np.stack([x[a : b + 1].min(0) for a, b in zip(w["qrs_on"], w["qrs_off"])])
    st_level, t = x[(w["qrs_off"] + w["t_on"]) // 2], x[w["t_peak"]]
    return (np.stack([q, r, s, st_level, t]) - base).mean(axis=1)  # [5, 12]


def _mi_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    features, target = [], []
    for child in np.random.SeedSequence(seed).spawn(n):
        rng = np.random.default_rng(child)
        labels = ("MI",) if rng.random() < 0.4 else sample_labels(rng)
        features.append(_features(generate_record(rng, labels, seconds=5.0)))
        target.append("MI" in labels)
    return np.stack(features), np.asarray(target, dtype=np.float64)


def _logistic_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-9
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    w, bias = np.zeros(a.shape[1]), 0.0
    for _ in range(1500):
        p = 1.0 / (1.0 + np.exp(-(a @ w + bias)))
        w -= 0.1 * (a.T @ (p - y_train) / len(y_train) + 1e-2 * w)
        bias -= 0.1 * float(np.mean(p - y_train))
    return b @ w + bias


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    pos, neg = score[y == 1], score[y == 0]
    return float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))


def test_twelve_leads_detect_mi_better_than_lead_i() -> None:
    # Prepare
    x_train, y_train = _mi_dataset(240, seed=1)
    x_test, y_test = _mi_dataset(160, seed=2)

    # Execute
    all_leads = _logistic_scores(x_train.reshape(240, -1), y_train, x_test.reshape(160, -1))
    auc_12 = _auc(y_test, all_leads)
    auc_1 = _auc(y_test, _logistic_scores(x_train[:, :, 0], y_train, x_test[:, :, 0]))

    # Assert: informative but not perfect with 12 leads, clearly worse with lead I only
    assert 0.75 < auc_12 < 0.99
    assert auc_12 > auc_1 + 0.1


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_ptbxl")
    return out, write_synth_ptbxl(out, n=60, seed=3, n_sites=3)


def test_written_records_read_back_with_wfdb(written: tuple[Path, dict]) -> None:
    # Prepare
    out, _ = written
    db = pd.read_csv(out / "ptbxl_database.csv")

    for filename in db["filename_lr"].iloc[:5]:
        # Execute
        rec = wfdb.rdrecord(str(out / filename), physical=True)

        # Assert
        assert rec.p_signal.shape == (1000, 12)
        assert rec.fs == 100
        assert rec.sig_name == list(LEADS)
        assert rec.units == ["mV"] * 12
        assert rec.fmt == ["16"] * 12


def test_written_signal_equals_annotated_record(written: tuple[Path, dict]) -> None:
    # Prepare
    out, _ = written
    row = pd.read_csv(out / "ptbxl_database.csv").iloc[0]
    notes = json.loads((out / "annotations" / f"{row.ecg_id:05d}.json").read_text())

    # Execute
    x = wfdb.rdrecord(str(out / row.filename_lr)).p_signal
    r_peaks = np.asarray(notes["r_peak"])

    # Assert: the annotations are in samples of this signal and the identities survive ADC
    assert set(WAVE_KEYS) <= set(notes) and "heart_rate" in notes
    assert np.all(np.diff(np.stack([notes[k] for k in WAVE_KEYS]), axis=0) > 0)
    assert r_peaks.max() < x.shape[0]
    assert np.abs(x[:, 2] - (x[:, 1] - x[:, 0])).max() < 3e-3


def test_database_csv_matches_ptbxl_conventions(written: tuple[Path, dict]) -> None:
    # Prepare
    out, summary = written

    # Execute
    db = pd.read_csv(out / "ptbxl_database.csv")
    codes = db["scp_codes"].map(ast.literal_eval)

    # Assert
    assert list(db.columns) == CSV_COLUMNS
    assert len(db) == summary["records"] == 60
    assert db["ecg_id"].tolist() == list(range(1, 61))
    assert db["filename_lr"].iloc[0] == "records100/00000/00001_lr"
    assert db["filename_hr"].iloc[0] == "records500/00000/00001_hr"
    assert set(db["signal_source"]) == {"synthetic"}
    assert db["strat_fold"].between(1, 10).all() and db["site"].between(0, 2).all()
    assert all(isinstance(c, dict) and c for c in codes)
    assert (db.groupby("patient_id")["strat_fold"].nunique() == 1).all()
    assert (db.groupby("patient_id")["site"].nunique() == 1).all()
    assert db["patient_id"].value_counts().max() >= 2  # some patients have two ECGs
    assert (out / "README.md").read_text().lower().count("synthetic") >= 1


def test_statement_table_maps_codes_to_the_written_labels(written: tuple[Path, dict]) -> None:
    # Prepare
    out, summary = written
    statements = pd.read_csv(out / "scp_statements.csv", index_col=0)
    db = pd.read_csv(out / "ptbxl_database.csv")
    diagnostic = statements[statements["diagnostic"] == 1.0]

    for row in db.itertuples():
        # Execute: PTB-XL's usual aggregation to superclasses
        codes = ast.literal_eval(row.scp_codes)
        classes = {diagnostic.loc[c, "diagnostic_class"] for c in codes if c in diagnostic.index}
        notes = json.loads((out / "annotations" / f"{row.ecg_id:05d}.json").read_text())

        # Assert
        assert set(codes) <= set(statements.index)
        assert classes == set(notes["labels"]), row.ecg_id
    assert sum(summary["label_counts"].values()) >= summary["records"]


def test_writer_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    # Prepare / Execute
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_synth_ptbxl(tmp_path / name, n=4, seed=seed)
    first, second, other = (tmp_path / name for name in "abc")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())

    # Assert
    assert len(files) > 10
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    dat = Path("records100/00000/00001_lr.dat")
    assert (first / dat).read_bytes() != (other / dat).read_bytes()


def test_writer_uses_records500_at_500_hz(tmp_path: Path) -> None:
    # Prepare / Execute
    write_synth_ptbxl(tmp_path, n=2, seed=0, fs=500)
    db = pd.read_csv(tmp_path / "ptbxl_database.csv")
    rec = wfdb.rdrecord(str(tmp_path / db["filename_hr"].iloc[0]))

    # Assert
    assert db["filename_hr"].iloc[0] == "records500/00000/00001_hr"
    assert rec.fs == 500 and rec.p_signal.shape == (5000, 12)
    assert not (tmp_path / "records100").exists()


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"fs": 250}, {"n_sites": 0}])
def test_writer_rejects_invalid_settings(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        write_synth_ptbxl(tmp_path, **kwargs)
