"""Calibration of predicted probabilities: reliability bins and expected calibration error.

A model is calibrated when, among the records it gives probability ``p`` for a
class, a fraction ``p`` has that class. Thresholds tuned for F1 say nothing
about it, so the report shows both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reliability:
    """One class's reliability diagram: per equal-width probability bin, what was predicted and what happened."""

    edges: np.ndarray  # [bins + 1], 0 .. 1
    mean_predicted: np.ndarray  # [bins], NaN for an empty bin
    observed: np.ndarray  # [bins] fraction of positives, NaN for an empty bin
    counts: np.ndarray  # [bins] records per bin
    ece: float  # count-weighted mean |observed - predicted|; NaN without records


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> Reliability:
    """Reliability bins of one class.

    Parameters
    ----------
    y
        Labels ``[N]`` (0/1 or bool).
    p
        Predicted probabilities ``[N]`` in [0, 1].
    bins
        Number of equal-width bins; a probability of exactly 1 falls in the last.

    Raises
    ------
    ValueError
        Shapes differ, ``bins < 1``, or a probability is outside [0, 1] or not finite.
    """
    y = np.asarray(y).astype(bool).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} differ in shape")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not np.all(np.isfinite(p)) or (p.size and (p.min() < 0 or p.max() > 1)):
        raise ValueError("probabilities must be finite and within [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=bins) / counts
        observed = np.bincount(which, weights=y.astype(np.float64), minlength=bins) / counts
    filled = counts > 0
    ece = (
        float(np.sum(counts[filled] * np.abs(observed[filled] - mean_p[filled])) / counts.sum())
        if counts.sum()
        else float("nan")
    )
    return Reliability(
        edges=edges,
        mean_predicted=np.where(filled, mean_p, np.nan),
        observed=np.where(filled, observed, np.nan),
        counts=counts,
        ece=ece,
    )
