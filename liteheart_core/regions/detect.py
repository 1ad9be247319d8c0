"""Multi-lead QRS (R-peak) detection.

The detector follows Pan & Tompkins (1985) in spirit -- band-pass, derivative,
squaring, moving-window integration, an adaptive threshold between running
signal and noise peak levels, a refractory period and search-back -- but works
on all leads at once: each lead's integrated energy is normalised to its own
scale and weighted by how "peaky" it is, so the result does not depend on the
units (mV or z-scored), on QRS polarity, or on one flat or noisy lead.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal as sps
from scipy.ndimage import uniform_filter1d

# QRS energy sits mostly in 5-20 Hz; P/T waves and baseline wander lie below.
_QRS_BAND_HZ = (5.0, 18.0)
# The refinement signal keeps the QRS shape but not the wander.
_SHAPE_BAND_HZ = (0.5, 40.0)
_MIN_FS = 50.0
_INTEGRATION_S = 0.12
_REFRACTORY_S = 0.22
_REFINE_HALF_S = 0.04
# A peak this close after a beat and much smaller than it is taken for a T wave.
_T_WAVE_WINDOW_S = 0.36
_T_WAVE_RATIO = 0.5
_SEARCHBACK_FACTOR = 1.66
_RR_HISTORY = 8
# Each lead's normalised energy is capped so one artefact burst cannot outvote the rest.
_LEAD_CAP = 4.0
_LEAD_SCALE_PERCENTILE = 98.0
# Peak-to-peak below this (in any unit, mV or z-score) is a flat lead.
_FLAT_PTP = 1e-6
# At 30 bpm at least one beat every 2 s; the QRS level is estimated from that many peaks.
_MIN_BEATS_PER_S = 0.5


def detect_r_peaks(signal: np.ndarray, fs: float, leads_axis: int = 0) -> np.ndarray:
    """Detect R peaks in a single- or multi-lead ECG.

    Parameters
    ----------
    signal
        ECG ``[n_leads, T]`` (or ``[T, n_leads]`` with ``leads_axis=1``; a 1-D
        array is one lead), in any units.
    fs
        Sampling rate in Hz (at least 50).
    leads_axis
        Axis of ``signal`` that indexes leads.

    Returns
    -------
    numpy.ndarray
        Sorted, unique int64 sample indices of the R peaks: the extremum of
        ``|signal|`` within +-40 ms of each detected QRS on the lead with the
        largest QRS energy. Empty for flat or too-short signals.

    Raises
    ------
    ValueError
        If ``fs`` is too low or ``signal`` has the wrong number of dimensions.
    """
    x = as_leads_first(signal, leads_axis)
    _check_fs(fs)
    empty = np.zeros(0, dtype=np.int64)
    n = x.shape[1]
    if n < int(round(2 * _REFRACTORY_S * fs)):
        return empty
    mwi = lead_energy(x, fs)
    weights = lead_weights(x, mwi)
    if not np.any(weights > 0):
        return empty
    combined = combine_leads(mwi, weights)
    positions, heights = _candidates(combined, fs)
    if positions.size == 0:
        return empty
    beats = _threshold_beats(positions, heights, fs, n)
    if beats.size == 0:
        return empty
    lead = _dominant_lead(mwi, weights, beats)
    return _refine(x[lead], beats, fs)


def heart_rate(r_peaks: np.ndarray, fs: float) -> float:
    """Heart rate in beats per minute from the median RR interval.

    Parameters
    ----------
    r_peaks
        Sample indices of R peaks.
    fs
        Sampling rate in Hz.

    Returns
    -------
    float
        ``60 / median(RR)``, or ``nan`` with fewer than two beats.
    """
    if fs <= 0:
        raise ValueError(f"fs must be positive, got {fs}")
    peaks = np.sort(np.asarray(r_peaks, dtype=np.float64).ravel())
    if peaks.size < 2:
        return float("nan")
    rr = np.diff(peaks) / fs
    rr = rr[rr > 0]
    if rr.size == 0:
        return float("nan")
    return float(60.0 / np.median(rr))


def as_leads_first(signal: np.ndarray, leads_axis: int = 0) -> np.ndarray:
    """Return ``signal`` as float64 ``[n_leads, T]`` with non-finite samples set to 0.

    Raises
    ------
    ValueError
        If ``signal`` is not 1-D or 2-D, or ``leads_axis`` is not a valid axis.
    """
    x = np.asarray(signal)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    elif x.ndim == 2:
        if leads_axis not in (0, 1, -1, -2):
            raise ValueError(f"leads_axis must be 0 or 1 for a 2-D signal, got {leads_axis}")
        x = np.moveaxis(x, leads_axis, 0)
    else:
        raise ValueError(f"signal must be [n_leads, T] or [T]; got shape {x.shape}")
    x = x.astype(np.float64, copy=True)
    # A dropped sample (NaN) must not poison the filters of the whole lead.
    x[~np.isfinite(x)] = 0.0
    return x


def _check_fs(fs: float) -> None:
    if not np.isfinite(fs) or fs < _MIN_FS:
        raise ValueError(f"fs must be at least {_MIN_FS:g} Hz to resolve the QRS complex, got {fs}")


@lru_cache(maxsize=32)
def _bandpass_sos(fs: float, low_hz: float, high_hz: float) -> np.ndarray:
    # Keep the upper edge below Nyquist: at 100 Hz a 40 Hz edge is fine, at 50 Hz it is not.
    high = min(high_hz, 0.45 * fs)
    return sps.butter(2, [low_hz, high], btype="bandpass", fs=fs, output="sos")


def _bandpass(x: np.ndarray, fs: float, band: tuple[float, float]) -> np.ndarray:
    sos = _bandpass_sos(float(fs), band[0], band[1])
    # Removing the median first keeps the DC step at the edges from ringing through the filter.
    centred = x - np.median(x, axis=-1, keepdims=True)
    padlen = min(centred.shape[-1] - 1, int(fs))
    return sps.sosfiltfilt(sos, centred, axis=-1, padlen=padlen)


def lead_energy(x: np.ndarray, fs: float) -> np.ndarray:
    """Per-lead moving-window integrated QRS energy, ``[n_leads, T]``.

    Band-pass (about 5-18 Hz), first difference, square, then a centred moving
    average over 120 ms. The zero-phase filter and the centred window keep the
    energy peak on the QRS rather than delayed behind it.
    """
    filtered = _bandpass(x, fs, _QRS_BAND_HZ)
    slope = np.diff(filtered, axis=-1, prepend=filtered[:, :1]) * fs
    width = max(1, int(round(_INTEGRATION_S * fs)))
    return uniform_filter1d(slope * slope, size=width, axis=-1, mode="nearest")


def lead_weights(x: np.ndarray, mwi: np.ndarray) -> np.ndarray:
    """Weight in ``[0, 1]`` per lead: 0 for flat leads, near 1 for clean beat trains.

    ``1 - median / p98`` of the integrated energy: a lead with sharp QRS bursts
    over a quiet background scores near 1, a lead drowned in broadband noise
    (energy everywhere) scores near 0.
    """
    high = np.percentile(mwi, _LEAD_SCALE_PERCENTILE, axis=-1)
    median = np.median(mwi, axis=-1)
    flat = (np.ptp(x, axis=-1) <= _FLAT_PTP) | (high <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(flat, 0.0, 1.0 - median / np.where(high > 0, high, 1.0))
    return np.clip(weights, 0.0, 1.0)


def combine_leads(mwi: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of per-lead energies, each normalised to its own scale.

    Normalising makes the sum independent of units and lead gain; capping keeps
    a single artefact from dominating.
    """
    keep = weights > 0
    energy = mwi[keep]
    low = np.median(energy, axis=-1, keepdims=True)
    high = np.percentile(energy, _LEAD_SCALE_PERCENTILE, axis=-1, keepdims=True)
    scale = np.where(high > low, high - low, 1.0)
    normalised = np.clip((energy - low) / scale, 0.0, _LEAD_CAP)
    w = weights[keep]
    return (w[:, np.newaxis] * normalised).sum(axis=0) / w.sum()


def _candidates(combined: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    distance = max(1, int(round(_REFRACTORY_S * fs)))
    positions, _ = sps.find_peaks(combined, distance=distance)
    heights = combined[positions]
    keep = heights > 0
    return positions[keep], heights[keep]


def _initial_levels(heights: np.ndarray, n: int, fs: float) -> tuple[float, float]:
    """Starting signal and noise peak levels from the whole record.

    Even at 30 bpm the record holds at least ``duration / 2`` beats, and QRS
    energy peaks are the largest, so the median of that many top peaks is a QRS
    level that one or two artefacts cannot move.
    """
    n_top = max(1, int(n / fs * _MIN_BEATS_PER_S))
    ordered = np.sort(heights)[::-1]
    signal_level = float(np.median(ordered[:n_top]))
    below = heights[heights < 0.3 * signal_level]
    noise_level = float(np.median(below)) if below.size else 0.0
    return signal_level, noise_level


def _threshold_beats(positions: np.ndarray, heights: np.ndarray, fs: float, n: int) -> np.ndarray:
    """Pan-Tompkins-like adaptive thresholding of energy peaks, then search-back."""
    spk, npk = _initial_levels(heights, n, fs)
    t_window = int(round(_T_WAVE_WINDOW_S * fs))
    edge = int(round(_INTEGRATION_S * fs))
    thresholds = np.empty(positions.size)
    accepted: list[int] = []
    for i, (pos, h) in enumerate(zip(positions, heights)):
        thr = npk + 0.25 * (spk - npk)
        thresholds[i] = thr
        is_beat = h >= thr
        if is_beat and accepted:
            prev = accepted[-1]
            if pos - positions[prev] < t_window and h < _T_WAVE_RATIO * heights[prev]:
                is_beat = False
        # At the edges the window and filters are incomplete: only a clear beat counts there.
        if is_beat and (pos < edge or pos >= n - edge) and h < 0.5 * spk:
            is_beat = False
        if is_beat:
            accepted.append(i)
            spk = 0.125 * h + 0.875 * spk
        else:
            npk = 0.125 * h + 0.875 * npk
    beats = _search_back(np.asarray(accepted, dtype=np.int64), positions, heights, thresholds, fs)
    return positions[beats]


def _search_back(
    accepted: np.ndarray,
    positions: np.ndarray,
    heights: np.ndarray,
    thresholds: np.ndarray,
    fs: float,
) -> np.ndarray:
    """Add the largest half-threshold peak inside each gap longer than 1.66x the running mean RR."""
    if accepted.size < 2:
        return accepted
    refractory = _REFRACTORY_S * fs
    t_window = _T_WAVE_WINDOW_S * fs
    beats = list(accepted)
    k = 1
    while k < len(beats):
        left, right = beats[k - 1], beats[k]
        gap = positions[right] - positions[left]
        rr_mean = _running_rr(positions, beats, k)
        if rr_mean is not None and gap > _SEARCHBACK_FACTOR * rr_mean:
            idx = np.arange(left + 1, right)
            ok = (
                (heights[idx] >= 0.5 * thresholds[idx])
                & (positions[idx] - positions[left] > refractory)
                & (positions[right] - positions[idx] > refractory)
            )
            # Still reject T-wave-like peaks right after a beat.
            t_like = (positions[idx] - positions[left] < t_window) & (
                heights[idx] < _T_WAVE_RATIO * heights[left]
            )
            idx = idx[ok & ~t_like]
            if idx.size:
                beats.insert(k, int(idx[np.argmax(heights[idx])]))
                continue  # re-examine the shorter gap left of the new beat
        k += 1
    return np.asarray(beats, dtype=np.int64)


def _running_rr(positions: np.ndarray, beats: list[int], k: int) -> float | None:
    """Mean of up to 8 RR intervals around gap ``k`` (excluding it); None if there are none."""
    pos = positions[np.asarray(beats)]
    rr = np.diff(pos)
    others = np.delete(rr, k - 1)
    if others.size == 0:
        return None
    before = others[max(0, k - 1 - _RR_HISTORY) : k - 1]
    # Early in the record there is no history yet: fall back to the intervals after the gap.
    recent = before if before.size else others[:_RR_HISTORY]
    return float(np.mean(recent))


def _dominant_lead(mwi: np.ndarray, weights: np.ndarray, beats: np.ndarray) -> int:
    """The lead whose QRS energy stands highest above its own background."""
    at_beats = np.median(mwi[:, beats], axis=-1)
    background = np.median(mwi, axis=-1)
    # Absolute energy (the biggest QRS gives the sharpest extremum), discounted by
    # lead quality so that a lead does not win on noise alone.
    score = (at_beats - background) * weights
    return int(np.argmax(score))


def _refine(lead: np.ndarray, beats: np.ndarray, fs: float) -> np.ndarray:
    """Move each beat to the extremum of ``|lead|`` within +-40 ms, after removing wander."""
    shape = np.abs(_bandpass(lead[np.newaxis, :], fs, _SHAPE_BAND_HZ)[0])
    n = shape.size
    half = max(1, int(round(_REFINE_HALF_S * fs)))
    refined = []
    for b in beats:
        lo, hi = max(0, b - half), min(n, b + half + 1)
        r = lo + int(np.argmax(shape[lo:hi]))
        # An extremum on the record's first/last sample is a beat cut by the edge, not an R peak.
        if 0 < r < n - 1:
            refined.append(r)
    return np.unique(np.asarray(refined, dtype=np.int64))
