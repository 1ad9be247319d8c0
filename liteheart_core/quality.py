"""Signal-quality gate for recordings that arrive on a device: is this ECG fit to train on?

Four checks, each on the recording as it came off the device (before standardisation, which
would hide a flat line or a clipped amplifier):

``flat``
    Share of the lead lying in 0.5-s stretches whose peak-to-peak is below a tolerance
    (20 uV when the units are known, else 1 % of the lead's own amplitude; on the
    PTB-XL records in mV no lead I exceeds 5 % and no third-worst lead 10 %): an electrode off
    or a dead channel. Flagged at 50 % of the record.
``clipped``
    Share of samples in plateaus (>= 30 ms) at the lead's own maximum or minimum: an
    amplifier or ADC saturating. Flagged at 1 % of samples (a 10-s record clipping ~10 beats).
``noisy``
    In-band signal-to-noise power ratio after the preparation filter (0.5-40 Hz at 100 Hz):
    the noise level comes from the median absolute first difference (Donoho's MAD estimator:
    an ECG's steep slopes are few, so the median difference is the noise's), the signal power
    is the lead's variance minus that noise power. Flagged at 0 dB or below, i.e. when the
    noise is at least as strong as the ECG. On the 2,020 PTB-XL records of ``../shared/data``
    the lowest value is +3.2 dB (lead I, or the third-worst lead); on synthetic records, white
    or muscle-band noise at half the ECG's peak-to-peak amplitude gives below -0.7 dB. Unlike a beat-template SNR
    this does not penalise ectopic beats or atrial fibrillation, which are pathology, not noise.
``heart_rate``
    Beats from :func:`liteheart_core.regions.detect_r_peaks`; flagged when fewer beats are
    found than 25 bpm would give over the record, or the median-RR rate is outside 25-250 bpm.
    The detector's 220-ms refractory period caps what it can count near 270 bpm: a faster
    rhythm (or a record whose header states too high a sampling rate) may be counted at half
    its rate and pass this check.

Every check is unit-free except the flat tolerance: PTB-XL mixes records in mV with records
already z-scored ("NU"), and both must pass or fail on shape, not scale.

The flat, clipped and noisy checks look at lead I (the student's input) and at the worst
quarter of the leads (the teacher's): a record is flagged when lead I fails, or when at least
``ceil(n_leads / 4)`` leads (3 of 12) fail. Each check also gives a severity in [0, 1]
(1 at its flag threshold); the score is ``prod(1 - severity)``, so a record is usable exactly
when its score is above 0, and among usable records a higher score means cleaner.

Arrays in, a report out: no torch, no I/O (numpy, plus scipy through the shared filters and
the beat detector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from liteheart_core.data.signal import bandpass, resample
from liteheart_core.regions import detect_r_peaks, heart_rate

FLAGS: tuple[str, ...] = ("flat", "clipped", "noisy", "heart_rate")

ANALYSIS_FS = 100.0  # the rate the models see: noise and beats are judged there
ANALYSIS_BAND = (0.5, 40.0)
FLAT_SEGMENT_S = 0.5
FLAT_TOL_MV = 0.02
FLAT_REL_TOL = 0.01
FLAT_MAX_FRACTION = 0.5
CLIP_MIN_RUN_S = 0.03
CLIP_MAX_FRACTION = 0.01
SNR_MIN_DB = 0.0
SNR_GOOD_DB = 10.0  # severity falls linearly from 1 at SNR_MIN_DB to 0 here
HR_MIN_BPM = 25.0
HR_MAX_BPM = 250.0
MIN_FS = 50.0
MIN_SECONDS = 2.0

# Factors to mV; anything else ("NU", "", "adu") is treated as unknown units.
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}


@dataclass(frozen=True)
class QualityReport:
    """Outcome of the gate for one recording.

    Attributes
    ----------
    score
        ``prod(1 - severity)`` over the checks, in [0, 1]; 0 exactly when a flag is raised.
    flags
        Failed checks, each with a one-line reason (empty when usable).
    heart_rate
        Median-RR heart rate in bpm (nan with fewer than two beats).
    beats
        Number of detected beats.
    seconds
        Duration of the recording.
    measures
        The values the flags were decided on: ``flat_fraction``, ``clipped_fraction`` (max of
        lead I and the quarter-worst lead), ``snr_db`` (min of the same), and lead I's own.
    """

    score: float
    flags: dict[str, str]
    heart_rate: float
    beats: int
    seconds: float
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return not self.flags

    @property
    def reason(self) -> str:
        """All flags and their reasons on one line ("" when usable)."""
        return "; ".join(f"{k}: {v}" for k, v in self.flags.items())


def _units_to_mv(units: str | None) -> float | None:
    if units is None:
        return None
    return _TO_MV.get(units.strip().lower())


def _robust_amplitude(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [0.5, 99.5], axis=-1)
    return hi - lo


def flat_fraction(x: np.ndarray, fs: float, abs_tol: np.ndarray | float = 0.0) -> np.ndarray:
    """Per lead, the share of the record in 0.5-s stretches with peak-to-peak <= tolerance.

    The tolerance is the larger of ``abs_tol`` (in the signal's units) and 1 % of the lead's
    robust amplitude; a lead that is exactly constant is flat whatever its tolerance.
    """
    n_leads, n = x.shape
    seg = max(2, int(round(FLAT_SEGMENT_S * fs)))
    n_seg = max(1, n // seg)
    body = x[:, : n_seg * seg].reshape(n_leads, n_seg, seg)
    ptp = np.ptp(body, axis=-1)
    tol = np.maximum(
        np.broadcast_to(np.asarray(abs_tol, dtype=np.float64), (n_leads,)), FLAT_REL_TOL * _robust_amplitude(x)
    )
    return (ptp <= tol[:, None]).mean(axis=-1)


def clipped_fraction(x: np.ndarray, fs: float) -> np.ndarray:
    """Per lead, the share of samples in plateaus of at least 30 ms at the lead's max or min."""
    min_run = max(3, int(round(CLIP_MIN_RUN_S * fs)))
    out = np.zeros(x.shape[0])
    for i, lead in enumerate(x):
        hi, lo = lead.max(), lead.min()
        span = hi - lo
        if span <= 0:  # a constant lead is flat, not clipped
            continue
        tol = 1e-6 * span
        at_rail = (lead >= hi - tol) | (lead <= lo + tol)
        out[i] = _in_runs(at_rail, min_run).sum() / lead.size
    return out


def _in_runs(mask: np.ndarray, min_run: int) -> np.ndarray:
    """Samples of ``mask`` that belong to runs of at least ``min_run`` consecutive True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    keep = np.zeros(mask.size, dtype=bool)
    for s, e in zip(starts, ends):
        if e - s >= min_run:
            keep[s:e] = True
    return keep


def noise_snr_db(x100: np.ndarray) -> np.ndarray:
    """Per lead, in-band signal power over noise power in dB (``nan`` for a constant lead).

    ``x100`` is band-passed and at :data:`ANALYSIS_FS`. The noise standard deviation is
    ``median|diff| / (0.6745 sqrt 2)``; the signal power is the variance minus its square.
    """
    sigma2 = (np.median(np.abs(np.diff(x100, axis=-1)), axis=-1) / (0.6745 * math.sqrt(2.0))) ** 2
    total = np.var(x100, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10.0 * np.log10(np.maximum(total - sigma2, 1e-6 * total) / sigma2)
    # All-quiet stretches can make the median difference 0: the noise is below resolution.
    snr = np.where((sigma2 <= 0) & (total > 0), np.inf, snr)
    return np.where(total > 0, snr, np.nan)


def _relevant(values: np.ndarray, lead_i: int, worst_high: bool) -> float:
    """Worse of lead I and the ``ceil(L/4)``-th worst lead (the 'at least a quarter' rule)."""
    finite = values[np.isfinite(values)]
    k = math.ceil(len(values) / 4)
    if finite.size == 0:
        return float("nan")
    ordered = np.sort(finite)[::-1] if worst_high else np.sort(finite)
    quarter = ordered[min(k, ordered.size) - 1]
    own = values[lead_i]
    if not np.isfinite(own):
        return float(quarter)
    return float(max(own, quarter) if worst_high else min(own, quarter))


def assess_quality(
    signal: np.ndarray,
    fs: float,
    units: str | tuple[str, ...] | None = None,
    leads: tuple[str, ...] | list[str] | None = None,
    record: str = "recording",
) -> QualityReport:
    """Judge whether a recording is fit for training.

    Parameters
    ----------
    signal
        ``[n_leads, T]`` (or ``[T]`` for one lead) as recorded, in any units.
    fs
        Sampling rate in Hz (at least 50).
    units
        Physical units, one for all leads or one per lead ("mV", "uV", ...). Unknown or absent
        units switch the flat check to its relative tolerance only.
    leads
        Lead names; lead I is the one named "I" (case-insensitive), else the first lead.
    record
        Id used in error messages.

    Returns
    -------
    QualityReport
        Score, flags with reasons, heart rate, beats and the measures behind the flags.

    Raises
    ------
    ValueError
        The signal is not 1-D/2-D, holds NaN or Inf, is shorter than 2 s, or ``fs`` is
        below 50 Hz; the message names ``record``.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"record {record}: signal must be [n_leads, T] or [T], got shape {np.shape(signal)}")
    if not np.isfinite(fs) or fs < MIN_FS:
        raise ValueError(f"record {record}: sampling rate {fs} Hz is below the {MIN_FS:g} Hz the gate needs")
    seconds = x.shape[1] / fs
    if seconds < MIN_SECONDS:
        raise ValueError(f"record {record}: only {seconds:.2f} s long (the gate needs {MIN_SECONDS:g} s)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"record {record}: NaN or infinite samples")
    n_leads = x.shape[0]
    names = [str(n).upper() for n in (leads or [])]
    lead_i = names.index("I") if "I" in names else 0
    per_lead_units = [units] * n_leads if units is None or isinstance(units, str) else list(units)
    if len(per_lead_units) != n_leads:
        raise ValueError(f"record {record}: {len(per_lead_units)} units for {n_leads} leads")
    factors = [_units_to_mv(u) for u in per_lead_units]
    abs_tol = np.array([FLAT_TOL_MV / f if f else 0.0 for f in factors])

    flat = flat_fraction(x, fs, abs_tol)
    clipped = clipped_fraction(x, fs)
    x100 = resample(bandpass(x, fs, *ANALYSIS_BAND), fs, ANALYSIS_FS).astype(np.float64)
    snr = noise_snr_db(x100)
    snr[flat >= FLAT_MAX_FRACTION] = np.nan  # a dead lead is judged flat, not noisy
    peaks = detect_r_peaks(x100, ANALYSIS_FS)
    hr = heart_rate(peaks, ANALYSIS_FS)

    flat_v = _relevant(flat, lead_i, worst_high=True)
    clip_v = _relevant(clipped, lead_i, worst_high=True)
    snr_v = _relevant(snr, lead_i, worst_high=False)
    flags: dict[str, str] = {}
    worst = "lead I" if flat[lead_i] >= FLAT_MAX_FRACTION else f"{int((flat >= FLAT_MAX_FRACTION).sum())} leads"
    if flat_v >= FLAT_MAX_FRACTION:
        flags["flat"] = (
            f"{worst} flat for {flat_v:.0%} of the record "
            f"(peak-to-peak below tolerance in {FLAT_SEGMENT_S:g}-s stretches)"
        )
    if clip_v >= CLIP_MAX_FRACTION:
        where = (
            "lead I" if clipped[lead_i] >= CLIP_MAX_FRACTION else f"{int((clipped >= CLIP_MAX_FRACTION).sum())} leads"
        )
        flags["clipped"] = f"{where} saturated: {clip_v:.1%} of samples in plateaus at the lead's max/min"
    if np.isfinite(snr_v) and snr_v <= SNR_MIN_DB:
        where = "lead I" if snr[lead_i] <= SNR_MIN_DB else f"{int((snr <= SNR_MIN_DB).sum())} leads"
        flags["noisy"] = f"{where} noisy: in-band SNR {snr_v:.1f} dB (minimum {SNR_MIN_DB:g} dB)"
    min_beats = max(2, int(math.floor(seconds * HR_MIN_BPM / 60.0)))
    if np.isfinite(hr) and not HR_MIN_BPM <= hr <= HR_MAX_BPM:
        flags["heart_rate"] = f"implausible heart rate {hr:.0f} bpm (plausible {HR_MIN_BPM:g}-{HR_MAX_BPM:g})"
    elif peaks.size < min_beats:
        flags["heart_rate"] = (
            f"only {peaks.size} beats detected in {seconds:.1f} s (at least {min_beats} expected at {HR_MIN_BPM:g} bpm)"
        )

    severities = [
        min(1.0, flat_v / FLAT_MAX_FRACTION) if np.isfinite(flat_v) else 0.0,
        min(1.0, clip_v / CLIP_MAX_FRACTION) if np.isfinite(clip_v) else 0.0,
        float(np.clip((SNR_GOOD_DB - snr_v) / (SNR_GOOD_DB - SNR_MIN_DB), 0.0, 1.0)) if np.isfinite(snr_v) else 0.0,
        1.0 if "heart_rate" in flags else 0.0,
    ]
    score = float(np.prod([1.0 - s for s in severities]))
    if flags:
        score = 0.0  # rounding must never make a flagged record look usable
    measures = {
        "flat_fraction": flat_v,
        "clipped_fraction": clip_v,
        "snr_db": snr_v,
        "lead_i_flat_fraction": float(flat[lead_i]),
        "lead_i_clipped_fraction": float(clipped[lead_i]),
        "lead_i_snr_db": float(snr[lead_i]),
    }
    return QualityReport(
        score=score, flags=flags, heart_rate=float(hr), beats=int(peaks.size), seconds=seconds, measures=measures
    )
