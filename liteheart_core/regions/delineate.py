"""P / QRS / T region masks from R peaks, and their computation over a dataset.

The windows are not a wave-by-wave delineation; they are where each wave is
expected given the R peak and the local RR interval, which is all that the
region-weighted distillation loss needs: the P wave sits in the PR segment, the
QRS around R, and the T wave after the QRS for a QT that shortens with RR
(Bazett: QT ~ 0.42 s * sqrt(RR in s)).
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import numpy as np

from liteheart_core.regions.detect import as_leads_first, check_fs, detect_r_peaks

BACKGROUND: int = 0
P_WAVE: int = 1
QRS: int = 2
T_WAVE: int = 3
PAD: int = -1  # reserved for padded samples; never produced here

_QRS_HALF_S = 0.05
_P_END_S = 0.06  # before R: the P wave ends in the PR segment, clear of the Q wave
# 0.3 RR rather than 0.25 RR: at 60-75 bpm the window then reaches 240-300 ms before R,
# which covers P waves of PR intervals up to about 220-260 ms (mild first-degree AV block).
_P_START_FRACTION = 0.30
_P_START_MIN_S = 0.12
_P_START_MAX_S = 0.30
_T_START_S = 0.10
_QTC_S = 0.42
# Bounds on the RR used to size windows, so that a pause or a missed beat does not
# stretch a T window across seconds.
_RR_MIN_S = 0.30
_RR_MAX_S = 2.0
_RR_DEFAULT_S = 1.0  # a lone beat: assume 60 bpm
_CHUNKS_PER_WORKER = 4
_MIN_CHUNK = 16


def delineate(r_peaks: np.ndarray, n_samples: int, fs: float) -> np.ndarray:
    """Region codes for one record from its R peaks.

    Parameters
    ----------
    r_peaks
        Sample indices of R peaks (any order; duplicates are ignored).
    n_samples
        Length of the record.
    fs
        Sampling rate in Hz.

    Returns
    -------
    numpy.ndarray
        int8 ``[n_samples]`` with :data:`BACKGROUND`, :data:`P_WAVE`,
        :data:`QRS` or :data:`T_WAVE` per sample. Per beat: QRS is R +- 50 ms;
        P runs from ``R - clip(0.3 RR, 120 ms, 300 ms)`` to ``R - 60 ms`` (RR
        before the beat); T runs from ``R + 100 ms`` to ``R + 0.42 sqrt(RR) s``
        (RR after the beat), cut before the next beat's P window. Windows
        never overlap; where QRS meets another window, QRS wins.

    Raises
    ------
    ValueError
        If ``fs`` or ``n_samples`` is invalid or a peak lies outside the record.
    """
    if not np.isfinite(fs) or fs <= 0:
        raise ValueError(f"fs must be a positive number, got {fs}")
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    r = np.unique(np.asarray(r_peaks).astype(np.int64).ravel())
    if r.size and (r[0] < 0 or r[-1] >= n_samples):
        raise ValueError(f"R peaks must lie in [0, {n_samples}); got range [{r[0]}, {r[-1]}]")
    codes = np.zeros(n_samples, dtype=np.int8)
    if r.size == 0:
        return codes
    rr_before, rr_after = _local_rr(r, fs)
    p_on, p_off = _p_windows(r, rr_before, fs)
    t_on, t_off = _t_windows(r, rr_after, p_on, fs)
    q_half = int(round(_QRS_HALF_S * fs))
    _paint(codes, p_on, p_off, P_WAVE)
    _paint(codes, t_on, t_off, T_WAVE)
    # QRS last, so that it wins wherever a window of a neighbouring beat reaches it.
    _paint(codes, r - q_half, r + q_half + 1, QRS)
    return codes


def _local_rr(r: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """RR (s) before and after each beat; the other side stands in at the ends."""
    if r.size == 1:
        rr = np.full(1, _RR_DEFAULT_S)
        return rr, rr
    rr = np.diff(r) / fs
    before = np.concatenate([rr[:1], rr])
    after = np.concatenate([rr, rr[-1:]])
    return np.clip(before, _RR_MIN_S, _RR_MAX_S), np.clip(after, _RR_MIN_S, _RR_MAX_S)


def _p_windows(r: np.ndarray, rr_before: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    lead_in = np.clip(_P_START_FRACTION * rr_before, _P_START_MIN_S, _P_START_MAX_S)
    p_on = r - np.round(lead_in * fs).astype(np.int64)
    p_off = r - int(round(_P_END_S * fs)) + 1  # exclusive end
    return p_on, p_off


def _t_windows(r: np.ndarray, rr_after: np.ndarray, p_on: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    t_on = r + int(round(_T_START_S * fs))
    t_off = r + np.round(_QTC_S * np.sqrt(rr_after) * fs).astype(np.int64) + 1
    # The T wave ends before the next beat's P window (and hence before its QRS).
    t_off[:-1] = np.minimum(t_off[:-1], p_on[1:])
    return t_on, t_off


def _paint(codes: np.ndarray, start: np.ndarray, stop: np.ndarray, value: int) -> None:
    n = codes.size
    for a, b in zip(np.clip(start, 0, n), np.clip(stop, 0, n)):
        if b > a:
            codes[a:b] = value


def region_codes(signal: np.ndarray, fs: float) -> np.ndarray:
    """Detect beats in one record ``[n_leads, T]`` and return its int8 region codes ``[T]``."""
    x = as_leads_first(signal, 0)
    return delineate(detect_r_peaks(x, fs), x.shape[1], fs)


def _codes_chunk(chunk: np.ndarray, fs: float) -> np.ndarray:
    """Region codes for ``[n, n_leads, T]``; module level so that worker processes can run it."""
    out = np.empty((chunk.shape[0], chunk.shape[2]), dtype=np.int8)
    for i in range(chunk.shape[0]):
        out[i] = region_codes(chunk[i], fs)
    return out


def compute_regions(X: np.ndarray, fs: float, workers: int = 1) -> np.ndarray:
    """Region codes for a whole dataset.

    Parameters
    ----------
    X
        Signals ``[N, n_leads, T]`` (a ``numpy.memmap`` is fine: it is read
        chunk by chunk).
    fs
        Sampling rate in Hz.
    workers
        Number of processes; 1 runs in this process. Worker processes are
        spawned (not forked), so a script that calls this with ``workers > 1``
        needs the usual ``if __name__ == "__main__":`` guard. Each worker pays
        about a second to import scipy, and one record takes a few
        milliseconds, so a pool only pays off beyond a few thousand records.

    Returns
    -------
    numpy.ndarray
        int8 ``[N, T]`` region codes, identical whatever ``workers`` is.

    Raises
    ------
    ValueError
        If ``X`` is not 3-D, ``workers`` is below 1 or ``fs`` below 50 Hz.
    """
    if X.ndim != 3:
        raise ValueError(f"X must be [N, n_leads, T]; got shape {X.shape}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_fs(fs)
    n = X.shape[0]
    chunk = max(_MIN_CHUNK, -(-n // (workers * _CHUNKS_PER_WORKER)))
    bounds = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]
    out = np.empty((n, X.shape[2]), dtype=np.int8)
    if workers == 1 or len(bounds) == 1:
        for a, b in bounds:
            out[a:b] = _codes_chunk(np.asarray(X[a:b]), fs)
        return out
    _run_pool(X, fs, workers, bounds, out)
    return out


def _run_pool(X: np.ndarray, fs: float, workers: int, bounds: list[tuple[int, int]], out: np.ndarray) -> None:
    """Fill ``out`` chunk by chunk in a process pool, keeping few chunks in memory at once."""
    # spawn, not fork: the caller may already run torch threads, and a forked child inherits
    # their locks in whatever state they were in.
    context = mp.get_context("spawn")
    todo = iter(bounds)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:

        def submit(span: tuple[int, int]) -> Future[np.ndarray]:
            return pool.submit(_codes_chunk, np.ascontiguousarray(X[span[0] : span[1]]), fs)

        # Two chunks per worker in flight: workers never idle, and a memmap is never
        # read into memory all at once.
        pending = {submit(span): span for _, span in zip(range(2 * workers), todo)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                a, b = pending.pop(future)
                out[a:b] = future.result()
                span = next(todo, None)
                if span is not None:
                    pending[submit(span)] = span
