"""Tests of beat detection and P / QRS / T region masks.

Ground truth comes from two places: the synthetic generator (true wave positions
per beat) and real PhysioNet Challenge records (rhythm labels: sinus bradycardia
and tachycardia give the heart rate's side of 60 and 100 bpm). Edge cases use a
small hand-made beat train whose R peaks are known exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy import signal as sps

from liteheart_core.regions import (
    BACKGROUND,
    P_WAVE,
    QRS,
    T_WAVE,
    compute_regions,
    delineate,
    detect_r_peaks,
    heart_rate,
    region_codes,
)

CHALLENGE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "challenge"
SINUS_BRADY = "426177001"
SINUS_TACHY = "427084000"
TOLERANCE_S = 0.05


# --------------------------------------------------------------------------- helpers


def beat_train(
    rng: np.random.Generator,
    fs: float,
    bpm: float,
    seconds: float = 10.0,
    n_leads: int = 12,
    noise: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """A crude 12-lead ECG in mV ``[n_leads, T]`` and its true R peaks.

    Each beat is Gaussian P, q, R, s and T waves; each lead sees the beat with
    its own gain and sign, an offset and white noise. The T wave follows Bazett.
    """
    n = int(round(fs * seconds))
    t = np.arange(n) / fs
    rr = 60.0 / bpm
    r_times = np.arange(0.2 + rng.uniform(0.0, 0.5) * rr, seconds - 0.05, rr)
    r_times = r_times + rng.normal(0.0, 0.01 * rr, r_times.size)
    qt = 0.40 * np.sqrt(rr)
    waves = (
        (-0.16, 0.025, 0.15),
        (-0.025, 0.008, -0.15),
        (0.0, 0.010, 1.0),
        (0.025, 0.008, -0.25),
        (qt - 0.08, 0.04, 0.3),
    )
    beat = np.zeros(n)
    for r in r_times:
        for shift, width, amp in waves:
            beat += amp * np.exp(-0.5 * ((t - r - shift) / width) ** 2)
    gains = rng.uniform(0.4, 1.5, n_leads) * rng.choice([-1.0, 1.0], n_leads)
    offsets = rng.normal(0.0, 0.3, (n_leads, 1))
    x = gains[:, None] * beat + offsets + noise * rng.standard_normal((n_leads, n))
    return x.astype(np.float32), np.round(r_times * fs).astype(np.int64)


def match(detected: np.ndarray, truth: np.ndarray, tolerance: float) -> tuple[int, int, int]:
    """Greedy one-to-one matching, closest pairs first.

    Returns (true positives, false positives, missed beats).
    """
    pairs = sorted(
        (abs(int(d) - int(r)), i, j)
        for i, d in enumerate(detected)
        for j, r in enumerate(truth)
        if abs(int(d) - int(r)) <= tolerance
    )
    used_d: set[int] = set()
    used_r: set[int] = set()
    for _, i, j in pairs:
        if i not in used_d and j not in used_r:
            used_d.add(i)
            used_r.add(j)
    tp = len(used_d)
    return tp, len(detected) - tp, len(truth) - tp


def f1(tp: int, fp: int, fn: int) -> float:
    return 2.0 * tp / (2.0 * tp + fp + fn) if tp else 0.0


def f1_against(detected: np.ndarray, truth: np.ndarray, fs: float) -> float:
    return f1(*match(detected, truth, TOLERANCE_S * fs))


# --------------------------------------------------------------------------- synthetic truth


def _synth_scores(fs: int, n_records: int, seed0: int) -> dict[str, float]:
    """Detection F1 and region coverage over ``n_records`` synthetic records of every class."""
    synth = pytest.importorskip("liteheart_core.data.synth")
    counts = np.zeros(3, dtype=np.int64)
    qrs_hits, p_hits, t_hits, n_beats = 0, 0, 0, 0
    for k in range(n_records):
        rng = np.random.default_rng(seed0 + k)
        # Even records cycle through the five classes alone, odd ones draw PTB-XL-like mixes.
        labels = (synth.CLASSES[(k // 2) % 5],) if k % 2 == 0 else synth.sample_labels(rng)
        record = synth.generate_record(rng, labels, fs=fs, seconds=10.0)
        waves = record.waves
        peaks = detect_r_peaks(record.signal, fs, leads_axis=1)
        # The generator lists complete beats only; a detection outside their span belongs
        # to a beat cut by the record's edge, which has no truth to be matched against.
        inside = peaks[(peaks >= waves["p_on"][0]) & (peaks <= waves["t_off"][-1])]
        counts += match(inside, waves["r_peak"], TOLERANCE_S * fs)
        codes = delineate(peaks, record.signal.shape[0], fs)
        for b in range(waves["r_peak"].size):
            p = codes[waves["p_on"][b] : waves["p_off"][b] + 1]
            t = codes[waves["t_on"][b] : waves["t_off"][b] + 1]
            qrs_hits += int(codes[waves["r_peak"][b]] == QRS)
            p_hits += int(np.mean(p == P_WAVE) >= 0.5)
            t_hits += int(np.mean(t == T_WAVE) >= 0.5)
            n_beats += 1
    return {
        "f1": f1(*counts),
        "qrs": qrs_hits / n_beats,
        "p": p_hits / n_beats,
        "t": t_hits / n_beats,
        "beats": n_beats,
    }


@pytest.fixture(scope="module")
def synth_scores() -> dict[int, dict[str, float]]:
    return {100: _synth_scores(100, 200, seed0=1000), 500: _synth_scores(500, 40, seed0=5000)}


@pytest.mark.parametrize("fs", [100, 500])
def test_synthetic_r_peak_f1(synth_scores: dict[int, dict[str, float]], fs: int) -> None:
    # Prepare / Execute: the fixture runs the detector on every record.
    scores = synth_scores[fs]

    # Assert: within 50 ms of the true R peak, one detection per beat.
    assert scores["f1"] >= 0.95, scores


@pytest.mark.parametrize("fs", [100, 500])
def test_synthetic_regions_cover_the_waves(synth_scores: dict[int, dict[str, float]], fs: int) -> None:
    scores = synth_scores[fs]

    # The QRS window must hold the true R peak. At least half of each true P / T wave
    # must be labelled as such: P for 90% of beats, since the window knows the RR but not
    # the PR interval (first-degree AV block puts the P wave up to 320 ms before QRS
    # onset, beyond the window); T for 95%, since QT follows RR closely.
    assert scores["qrs"] >= 0.95, scores
    assert scores["p"] >= 0.90, scores
    assert scores["t"] >= 0.95, scores


# --------------------------------------------------------------------------- real records


def _dx_codes(header: Path) -> set[str]:
    for line in header.read_text().splitlines():
        if line.startswith("#") and line.lstrip("#").strip().lower().startswith("dx"):
            return {c.strip() for c in line.split(":", 1)[1].split(",") if c.strip()}
    return set()


def _first_seconds(path: Path, seconds: float = 10.0) -> tuple[np.ndarray, int]:
    wfdb = pytest.importorskip("wfdb")
    record = wfdb.rdrecord(str(path))
    fs = int(record.fs)
    x = np.nan_to_num(record.p_signal[: int(seconds * fs)].T.astype(np.float32))
    return x, fs


def _to_100hz(x: np.ndarray, fs: int) -> np.ndarray:
    ratio = Fraction(100, fs)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


@pytest.fixture(scope="module")
def challenge_rates() -> dict[str, list[tuple[str, float, float]]]:
    """Per rhythm group: (record, heart rate at native fs, heart rate at 100 Hz)."""
    if not CHALLENGE_DIR.is_dir():
        pytest.skip(f"PhysioNet Challenge records not found at {CHALLENGE_DIR} (needs ../shared/data)")
    groups: dict[str, list[tuple[str, float, float]]] = {"brady": [], "tachy": []}
    for header in sorted(CHALLENGE_DIR.glob("*.hea")):
        dx = _dx_codes(header)
        # A record labelled both slow and fast contradicts itself; it tests neither side.
        if (SINUS_BRADY in dx) == (SINUS_TACHY in dx):
            continue
        x, fs = _first_seconds(header.with_suffix(""))
        native = heart_rate(detect_r_peaks(x, fs), fs)
        low = heart_rate(detect_r_peaks(_to_100hz(x, fs), 100.0), 100.0)
        groups["brady" if SINUS_BRADY in dx else "tachy"].append((header.stem, native, low))
    if not groups["brady"] or not groups["tachy"]:
        pytest.skip(f"no sinus brady-/tachycardia records in {CHALLENGE_DIR}")
    return groups


@pytest.mark.realdata
@pytest.mark.parametrize("rate", ["native", "100hz"])
@pytest.mark.parametrize(
    ("group", "agrees"),
    [("brady", lambda hr: hr < 60.0), ("tachy", lambda hr: hr > 100.0)],
    ids=["sinus-bradycardia", "sinus-tachycardia"],
)
def test_heart_rate_agrees_with_rhythm_label(
    challenge_rates: dict[str, list[tuple[str, float, float]]],
    rate: str,
    group: str,
    agrees: Callable[[float], bool],
) -> None:
    # Prepare / Execute: the fixture detects beats in every labelled record.
    rows = challenge_rates[group]
    rates = {name: native if rate == "native" else low for name, native, low in rows}
    failing = {name: round(hr, 1) for name, hr in rates.items() if not agrees(hr)}

    # Assert: the few misses are ectopy around a sinus rate near the limit, not detection errors.
    share = 1.0 - len(failing) / len(rows)
    assert share >= 0.90, f"{group} at {rate}: {share:.1%} of {len(rows)} agree; failing {failing}"


# --------------------------------------------------------------------------- edge cases


def test_flat_signal_gives_no_beats() -> None:
    zeros = np.zeros((12, 1000), dtype=np.float32)
    offset = np.full((12, 5000), 0.7, dtype=np.float32)

    assert detect_r_peaks(zeros, 100.0).size == 0
    assert detect_r_peaks(offset, 500.0).size == 0
    assert np.all(region_codes(zeros, 100.0) == BACKGROUND)
    assert np.isnan(heart_rate(detect_r_peaks(zeros, 100.0), 100.0))


@pytest.mark.parametrize("fs", [100.0, 500.0])
@pytest.mark.parametrize("bpm", [30.0, 45.0, 75.0, 120.0, 160.0, 200.0])
def test_detects_beats_across_heart_rates(fs: float, bpm: float) -> None:
    # Prepare
    x, truth = beat_train(np.random.default_rng(int(bpm * fs)), fs, bpm)

    # Execute
    peaks = detect_r_peaks(x, fs)

    # Assert
    assert f1_against(peaks, truth, fs) >= 0.95
    assert heart_rate(peaks, fs) == pytest.approx(bpm, rel=0.05)


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_single_lead_input(fs: float) -> None:
    x, truth = beat_train(np.random.default_rng(7), fs, 70.0)

    as_row = detect_r_peaks(x[1:2], fs)
    as_vector = detect_r_peaks(x[1], fs)

    assert f1_against(as_row, truth, fs) >= 0.95
    np.testing.assert_array_equal(as_row, as_vector)


def test_leads_axis_selects_layout() -> None:
    x, _ = beat_train(np.random.default_rng(8), 500.0, 80.0)

    time_first = detect_r_peaks(x.T, 500.0, leads_axis=1)

    np.testing.assert_array_equal(time_first, detect_r_peaks(x, 500.0))


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_inverted_polarity_gives_the_same_beats(fs: float) -> None:
    x, truth = beat_train(np.random.default_rng(9), fs, 90.0)

    upright = detect_r_peaks(x, fs)
    inverted = detect_r_peaks(-x, fs)
    one_inverted_lead = detect_r_peaks(-x[2], fs)

    np.testing.assert_array_equal(upright, inverted)
    assert f1_against(inverted, truth, fs) >= 0.95
    assert f1_against(one_inverted_lead, truth, fs) >= 0.95


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_robust_to_baseline_wander(fs: float) -> None:
    # Prepare: breathing-rate drift of 1.5 mV plus a slow ramp, on every lead and on one lead alone.
    x, truth = beat_train(np.random.default_rng(10), fs, 65.0)
    t = np.arange(x.shape[1]) / fs
    wander = (1.5 * np.sin(2 * np.pi * 0.3 * t) + 0.2 * t).astype(np.float32)

    # Execute
    clean = detect_r_peaks(x, fs)
    drifting = detect_r_peaks(x + wander, fs)
    single = detect_r_peaks(x[0] + wander, fs)

    # Assert: same beats, placed within 20 ms of where they were without the drift.
    assert f1_against(drifting, truth, fs) >= 0.95
    assert f1_against(single, truth, fs) >= 0.95
    assert f1(*match(drifting, clean, 0.02 * fs)) == 1.0


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_units_do_not_matter(fs: float) -> None:
    x, truth = beat_train(np.random.default_rng(11), fs, 85.0)
    zscored = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)

    assert f1_against(detect_r_peaks(zscored, fs), truth, fs) >= 0.95
    np.testing.assert_array_equal(detect_r_peaks(1000.0 * x, fs), detect_r_peaks(x, fs))


def test_one_bad_lead_does_not_make_or_break_beats() -> None:
    # Prepare: lead III is loud white noise, lead aVL has an electrode-pop spike, V1 is flat.
    rng = np.random.default_rng(12)
    x, truth = beat_train(rng, 500.0, 75.0)
    x[2] = 5.0 * rng.standard_normal(x.shape[1])
    x[4, 2345] += 40.0
    x[6] = 0.0
    x[7, 100:110] = np.nan

    # Execute
    peaks = detect_r_peaks(x, 500.0)

    # Assert
    assert f1_against(peaks, truth, 500.0) >= 0.95


def test_heart_rate_from_median_rr() -> None:
    regular = np.arange(0, 5000, 500)  # one beat per second at 500 Hz
    with_ectopic = np.sort(np.r_[regular, 2250])

    assert heart_rate(regular, 500.0) == pytest.approx(60.0)
    assert heart_rate(with_ectopic, 500.0) == pytest.approx(60.0)
    assert np.isnan(heart_rate(np.array([10]), 500.0))


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="fs"):
        detect_r_peaks(np.zeros((12, 100)), 20.0)
    with pytest.raises(ValueError, match="shape"):
        detect_r_peaks(np.zeros((2, 12, 100)), 100.0)
    with pytest.raises(ValueError, match="R peaks"):
        delineate(np.array([50, 1200]), 1000, 100.0)
    with pytest.raises(ValueError, match="X must be"):
        compute_regions(np.zeros((12, 1000), dtype=np.float32), 100.0)


# --------------------------------------------------------------------------- delineation


def _runs(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """(code, start, stop) of each run of equal codes, background left out."""
    edges = np.flatnonzero(np.diff(codes)) + 1
    starts = np.r_[0, edges]
    stops = np.r_[edges, codes.size]
    return [(int(codes[a]), int(a), int(b)) for a, b in zip(starts, stops) if codes[a] != BACKGROUND]


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_delineated_windows_are_ordered_and_disjoint(fs: float) -> None:
    # Prepare: RR from 0.3 s (200 bpm) to 2 s (30 bpm) and back.
    rr_s = np.r_[np.linspace(2.0, 0.3, 12), np.linspace(0.3, 2.0, 12)]
    r = np.round((0.5 + np.r_[0.0, np.cumsum(rr_s)]) * fs).astype(np.int64)
    n = int(r[-1] + fs)

    # Execute
    codes = delineate(r, n, fs)
    runs = _runs(codes)

    # Assert: every R sits in a QRS run, and between two QRS runs come at most
    # one T and then one P, in that order -- no window spills into another beat.
    assert codes.dtype == np.int8
    assert set(np.unique(codes)) <= {BACKGROUND, P_WAVE, QRS, T_WAVE}
    assert np.all(codes[r] == QRS)
    qrs_runs = [i for i, (c, _, _) in enumerate(runs) if c == QRS]
    assert len(qrs_runs) == r.size
    for a, b in zip(qrs_runs[:-1], qrs_runs[1:]):
        between = [c for c, _, _ in runs[a + 1 : b]]
        assert between in ([T_WAVE, P_WAVE], [P_WAVE], [T_WAVE], []), between
    # A P window is present before every beat that follows a full RR.
    assert all(runs[i - 1][0] == P_WAVE for i in qrs_runs[1:])


def test_t_window_follows_rr() -> None:
    fs = 500.0
    ends = {}
    for rr_s in (0.5, 0.8, 1.2, 1.8):
        r = np.round(np.arange(0.5, 9.0, rr_s) * fs).astype(np.int64)
        codes = delineate(r, int(10 * fs), fs)
        runs = _runs(codes)
        t_run = next(run for run in runs if run[0] == T_WAVE and run[1] > r[1])
        ends[rr_s] = (t_run[2] - r[1]) / fs  # T window end after its R, in s

    # Longer RR, later end of T (Bazett-like), and always inside the RR interval.
    offsets = [ends[k] for k in sorted(ends)]
    assert offsets == sorted(offsets) and offsets[0] < offsets[-1]
    assert all(ends[rr] < rr for rr in ends)


def test_no_beats_delineate_to_background() -> None:
    codes = delineate(np.array([], dtype=np.int64), 1000, 100.0)

    assert codes.shape == (1000,) and codes.dtype == np.int8
    assert np.all(codes == BACKGROUND)


# --------------------------------------------------------------------------- dataset


def _dataset(n: int, fs: float = 100.0, seed: int = 0) -> np.ndarray:
    """``[n, 12, 10 s]`` float32: a few beat trains at varied rates, each copy with fresh noise."""
    rng = np.random.default_rng(seed)
    bases = [beat_train(rng, fs, bpm)[0] for bpm in np.linspace(40.0, 180.0, 16)]
    X = np.empty((n, 12, int(10 * fs)), dtype=np.float32)
    for i in range(n):
        X[i] = bases[i % len(bases)] + 0.05 * rng.standard_normal(X.shape[1:]).astype(np.float32)
    X[n // 2] = 0.0  # a flat record among them
    return X


def test_compute_regions_shape_codes_and_workers(tmp_path: Path) -> None:
    # Prepare: enough records for several chunks; also as a memmap, as preparation stores them.
    X = _dataset(80)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")

    # Execute
    serial = compute_regions(X, 100.0, workers=1)
    pooled = compute_regions(mapped, 100.0, workers=2)

    # Assert
    assert serial.shape == (80, 1000) and serial.dtype == np.int8
    assert set(np.unique(serial)) == {BACKGROUND, P_WAVE, QRS, T_WAVE}
    np.testing.assert_array_equal(serial, pooled)
    np.testing.assert_array_equal(serial[3], region_codes(X[3], 100.0))
    assert np.all(serial[40] == BACKGROUND)


@pytest.mark.slow
def test_compute_regions_is_fast_enough() -> None:
    # 2,020 records of [12, 1000] at 100 Hz, the size of the PTB-XL sample. One process:
    # if one core manages it in time, two do, and the bound does not depend on how busy
    # the machine's other core is (a pool's start-up alone takes a second or two).
    X = _dataset(2020)

    start = time.perf_counter()
    codes = compute_regions(X, 100.0, workers=1)
    elapsed = time.perf_counter() - start

    assert codes.shape == (2020, 1000)
    assert elapsed < 20.0, f"compute_regions took {elapsed:.1f} s"
