"""Multi-lead QRS (R-peak) detection.

The detector follows Pan & Tompkins (1985) in spirit -- band-pass, derivative,
squaring, moving-window integration, an adaptive threshold between running
signal and noise peak levels, a refractory period and search-back -- but works
on all leads at once: each lead's integrated energy is normalised to its own
scale, weighted by how "peaky" it is and the loudest leads at each instant are
trimmed, so the result does not depend on the units (mV or z-scored), on QRS
polarity, or on one flat or noisy lead.

Each detection is then placed on the maximum of the spatial QRS magnitude
(the root sum of squares of the clean, wander-free leads) within +-40 ms; on a
single lead that is the extremum of ``|signal|``. Taking the magnitude rather
than one "dominant" lead matters in bundle branch block, where the loudest
precordial lead often peaks on the late R' 60 ms after the main R.
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
_QTC_S = 0.42
# Hamilton & Tompkins' 0.3125 rather than Pan & Tompkins' 0.25: the search-back
# (at half the threshold) recovers the few small beats this misses.
_THRESHOLD_FRACTION = 0.3125
_SEARCHBACK_FACTOR = 1.66
_RR_HISTORY = 8
# Each lead's normalised energy is capped so one artefact burst cannot outvote the rest.
_LEAD_CAP = 4.0
# With n usable leads, the (n - 1) // 5 largest contributions at each sample are left out
# of the sum (2 of 12): enough to ignore one or two artefact-ridden leads.
_TRIM_ONE_IN = 5
_LEAD_SCALE_PERCENTILE = 98.0
# Peak-to-peak below this (in any unit, mV or z-score) is a flat lead.
_FLAT_PTP = 1e-6
# At 30 bpm at least one beat every 2 s; the QRS level is estimated from that many peaks.
_MIN_BEATS_PER_S = 0.5
# Leads at least half as clean as the cleanest one place the R peak.
_CLEAN_QUALITY_RATIO = 0.5


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
        Sorted, unique int64 sample indices of the R peaks: the maximum of the
        spatial QRS magnitude over the clean leads (``|signal|`` for one lead)
        within +-40 ms of each detected QRS. Empty for flat or too-short
        signals.

    Raises
    ------
    ValueError
        If ``fs`` is too low or ``signal`` has the wrong number of dimensions.
    """
    x = as_leads_first(signal, leads_axis)
    check_fs(fs)
    empty = np.zeros(0, dtype=np.int64)
    n = x.shape[1]
    if n < int(round(2 * _REFRACTORY_S * fs)):
        return empty
    mwi = _lead_energy(x, fs)
    background, high = np.percentile(mwi, [50.0, _LEAD_SCALE_PERCENTILE], axis=-1)
    weights = _lead_weights(x, background, high)
    if not np.any(weights > 0):
        return empty
    combined = _combine_leads(mwi, weights, background, high)
    positions, heights = _candidates(combined, fs)
    if positions.size == 0:
        return empty
    beats = _threshold_beats(positions, heights, fs, n)
    if beats.size == 0:
        return empty
    return _refine(_qrs_magnitude(x, mwi, background, beats, fs), beats, fs)


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


def check_fs(fs: float) -> None:
    """Raise ``ValueError`` unless ``fs`` (Hz) is high enough to resolve a QRS complex."""
    if not np.isfinite(fs) or fs < _MIN_FS:
        raise ValueError(f"fs must be at least {_MIN_FS:g} Hz to resolve the QRS complex, got {fs}")


@lru_cache(maxsize=32)
def _bandpass_sos(fs: float, low_hz: float, high_hz: float) -> np.ndarray:
    # Keep the upper edge below Nyquist: at 100 Hz a 40 Hz edge is fine, at 50 Hz it is not.
    high = min(high_hz, 0.45 * fs)
    return sps.butter(2, [low_hz, high], btype="bandpass", fs=fs, output="sos")


def _bandpass(x: np.ndarray, fs: float, band: tuple[float, float]) -> np.ndarray:
    sos = _bandpass_sos(float(fs), band[0], band[1])
    # Removing the offset first keeps the DC step at the edges from ringing through the filter.
    centred = x - np.mean(x, axis=-1, keepdims=True)
    padlen = min(centred.shape[-1] - 1, int(fs))
    return sps.sosfiltfilt(sos, centred, axis=-1, padlen=padlen)


def _lead_energy(x: np.ndarray, fs: float) -> np.ndarray:
    """Per-lead moving-window integrated QRS energy envelope, ``[n_leads, T]``.

    Band-pass (about 5-18 Hz), first difference, square, a centred moving
    average over 120 ms, then the square root. The zero-phase filter and the
    centred window keep the peak on the QRS rather than delayed behind it. The
    root turns energy back into amplitude: a tall ectopic beat has 3x, not 10x,
    the height of a sinus beat, so the sinus beats still clear the threshold.
    """
    filtered = _bandpass(x, fs, _QRS_BAND_HZ)
    slope = np.diff(filtered, axis=-1, prepend=filtered[:, :1]) * fs
    width = max(1, int(round(_INTEGRATION_S * fs)))
    energy = uniform_filter1d(slope * slope, size=width, axis=-1, mode="nearest")
    return np.sqrt(np.maximum(energy, 0.0))


def _lead_weights(x: np.ndarray, background: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Weight in ``[0, 1]`` per lead: 0 for flat leads, near 1 for clean beat trains.

    ``1 - median / p98`` of the integrated energy: a lead with sharp QRS bursts
    over a quiet background scores near 1, a lead drowned in broadband noise
    (energy everywhere) scores near 0.
    """
    flat = (np.ptp(x, axis=-1) <= _FLAT_PTP) | (high <= 0)
    weights = np.where(flat, 0.0, 1.0 - background / np.where(high > 0, high, 1.0))
    return np.clip(weights, 0.0, 1.0)


def _combine_leads(mwi: np.ndarray, weights: np.ndarray, background: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Trimmed, weighted sum of per-lead energies, each normalised to its own scale.

    Normalising makes the sum independent of units and lead gain. At each
    sample the largest contributions (2 of 12 leads) are dropped, so an
    artefact burst or noise in a single lead cannot make a beat on its own;
    a true QRS shows in most leads and survives the trim.
    """
    keep = weights > 0
    low = background[keep, np.newaxis]
    top = high[keep, np.newaxis]
    scale = np.where(top > low, top - low, 1.0)
    normalised = np.clip((mwi[keep] - low) / scale, 0.0, _LEAD_CAP)
    contributions = weights[keep][:, np.newaxis] * normalised
    n_trim = (contributions.shape[0] - 1) // _TRIM_ONE_IN
    if n_trim == 0:
        return contributions.sum(axis=0)
    n_kept = contributions.shape[0] - n_trim
    return np.partition(contributions, n_kept - 1, axis=0)[:n_kept].sum(axis=0)


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
    edge = int(round(_INTEGRATION_S * fs))
    thresholds = np.empty(positions.size)
    accepted: list[int] = []
    for i, (pos, h) in enumerate(zip(positions, heights)):
        thr = npk + _THRESHOLD_FRACTION * (spk - npk)
        thresholds[i] = thr
        is_beat = bool(h >= thr)
        if is_beat and accepted:
            rr = _recent_rr(positions, accepted)
            is_beat = not _is_t_wave(i, accepted[-1], positions, heights, rr, fs)
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


def _recent_rr(positions: np.ndarray, accepted: list[int]) -> float | None:
    """Mean of the last 8 RR intervals (samples) among accepted beats; None before two beats."""
    if len(accepted) < 2:
        return None
    recent = positions[np.asarray(accepted[-_RR_HISTORY - 1 :])]
    return float(np.mean(np.diff(recent)))


def _is_t_wave(i: int, prev: int, positions: np.ndarray, heights: np.ndarray, rr: float | None, fs: float) -> bool:
    """Whether peak ``i`` is small and soon enough after beat ``prev`` to be its T wave.

    The window grows with RR as the QT interval does (about 0.42 s * sqrt(RR)),
    so that slow rhythms, whose T wave comes late, are covered too.
    """
    window_s = _T_WAVE_WINDOW_S
    if rr is not None:
        window_s = max(window_s, _QTC_S * float(np.sqrt(rr / fs)))
    soon = positions[i] - positions[prev] < window_s * fs
    return bool(soon and heights[i] < _T_WAVE_RATIO * heights[prev])


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
    beats = list(accepted)
    k = 1
    while k < len(beats):
        left, right = beats[k - 1], beats[k]
        gap = positions[right] - positions[left]
        rr_mean = _running_rr(positions, beats, k)
        if rr_mean is not None and gap > _SEARCHBACK_FACTOR * rr_mean:
            inside = [
                j
                for j in range(left + 1, right)
                if heights[j] >= 0.5 * thresholds[j]
                and positions[j] - positions[left] > refractory
                and positions[right] - positions[j] > refractory
                and not _is_t_wave(j, left, positions, heights, rr_mean, fs)
            ]
            if inside:
                beats.insert(k, max(inside, key=lambda j: heights[j]))
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


def _qrs_magnitude(x: np.ndarray, mwi: np.ndarray, background: np.ndarray, beats: np.ndarray, fs: float) -> np.ndarray:
    """Spatial QRS magnitude over the clean leads, wander removed, ``[T]``."""
    shape = _bandpass(x[_clean_leads(mwi, background, beats)], fs, _SHAPE_BAND_HZ)
    return np.sqrt(np.sum(shape * shape, axis=0))


def _clean_leads(mwi: np.ndarray, background: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Leads whose energy at the beats stands clear of their background.

    Quality is the share of a lead's energy at the beats that is not background;
    a lead of loud noise (or a flat one) scores near 0 and would otherwise pull
    the magnitude's maximum to wherever the noise happens to peak.
    """
    at_beats = np.median(mwi[:, beats], axis=-1)
    safe = np.where(at_beats > 0, at_beats, 1.0)
    quality = np.where(at_beats > 0, 1.0 - background / safe, 0.0)
    return quality >= _CLEAN_QUALITY_RATIO * quality.max()


def _refine(shape: np.ndarray, beats: np.ndarray, fs: float) -> np.ndarray:
    """Move each beat to the maximum of ``shape`` within +-40 ms."""
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
