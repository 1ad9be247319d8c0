"""One evaluation for every path: macro F1 (thresholds tuned on validation), AUC, AP, bootstrap intervals.

Only numpy: the same function scores a centralised model, a federated global
student and an exported one, so numbers in every table are comparable.
"""

from __future__ import annotations

import numpy as np


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be equal [N, C] arrays")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    return y.astype(bool), p


def roc_auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-class ROC AUC by the rank (Mann-Whitney) formula, ties averaged; NaN where a class is constant."""
    y, p = _check(y, p)
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        pos = y[:, c]
        n_pos, n_neg = pos.sum(), (~pos).sum()
        if n_pos == 0 or n_neg == 0:
            continue
        order = np.argsort(p[:, c], kind="mergesort")
        ranks = np.empty(len(order))
        sorted_p = p[order, c]
        # average ranks of ties
        _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
        avg = first + (counts + 1) / 2.0
        ranks[order] = np.repeat(avg, counts)
        out[c] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return out


def average_precision(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-class average precision (area under the step precision-recall curve); NaN without positives."""
    y, p = _check(y, p)
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        n_pos = y[:, c].sum()
        if n_pos == 0:
            continue
        order = np.argsort(-p[:, c], kind="mergesort")
        hits = y[order, c]
        scores = p[order, c]
        tp = np.cumsum(hits)
        # only the last position of each tied score counts as a threshold
        last = np.r_[scores[1:] != scores[:-1], True]
        precision = tp[last] / (np.flatnonzero(last) + 1)
        recall_gain = np.diff(np.r_[0, tp[last]]) / n_pos
        out[c] = float(np.sum(precision * recall_gain))
    return out


def f1_scores(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-class F1 of hard predictions (0 where a class has neither positives nor predictions)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    tp = (y & pred).sum(0)
    denom = y.sum(0) + pred.sum(0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def tune_thresholds(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-class threshold that maximises F1 on (validation) data.

    Candidates are the midpoints between consecutive distinct scores, so the
    threshold does not sit on a training example; a class without positives
    gets 0.5.
    """
    y, p = _check(y, p)
    out = np.full(y.shape[1], 0.5)
    for c in range(y.shape[1]):
        n_pos = y[:, c].sum()
        if n_pos == 0:
            continue
        order = np.argsort(-p[:, c], kind="mergesort")
        scores = p[order, c]
        tp = np.cumsum(y[order, c])
        k = np.arange(1, len(scores) + 1)  # predicted positives when cutting after position k
        last = np.r_[scores[1:] != scores[:-1], True]
        f1 = np.where(last, 2 * tp / (k + n_pos), -1)
        best = int(np.argmax(f1))
        nxt = scores[best + 1] if best + 1 < len(scores) else scores[best] - 1e-6
        out[c] = float((scores[best] + nxt) / 2.0)
    return out


def _macro(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


def summarise(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Macro F1 (at the given thresholds), macro AUC and macro AP over classes with positives."""
    y, p = _check(y, p)
    present = y.sum(0) > 0
    f1 = f1_scores(y, p >= thresholds[None, :])
    return {
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "macro_auc": _macro(roc_auc(y, p)),
        "macro_ap": _macro(average_precision(y, p)),
    }


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: np.ndarray,
    classes: list[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Every number a table needs, with bootstrap 95% intervals over records.

    Parameters
    ----------
    thresholds
        Per-class thresholds tuned on validation data (never on the scored data).

    Returns
    -------
    dict
        ``macro_f1``, ``macro_auc``, ``macro_ap``, ``ci`` (each macro metric's
        [2.5%, 97.5%] interval), ``per_class`` (f1, auc, ap, support,
        threshold, f1_ci), ``n``.
    """
    y, p = _check(y, p)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (y.shape[1],) or len(classes) != y.shape[1]:
        raise ValueError(f"{y.shape[1]} classes but {len(classes)} names and {thresholds.shape} thresholds")
    result = summarise(y, p, thresholds)
    pred = p >= thresholds[None, :]
    f1 = f1_scores(y, pred)
    auc = roc_auc(y, p)
    ap = average_precision(y, p)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {k: [] for k in result}
    class_f1 = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        s = summarise(y[idx], p[idx], thresholds)
        for k, v in s.items():
            boots[k].append(v)
        class_f1.append(np.where(y[idx].sum(0) > 0, f1_scores(y[idx], pred[idx]), np.nan))
    ci = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in boots.items()}
    class_f1_arr = np.array(class_f1) if class_f1 else np.full((1, len(classes)), np.nan)
    per_class = {}
    for c, name in enumerate(classes):
        col = class_f1_arr[:, c]
        per_class[name] = {
            "f1": float(f1[c]),
            "auc": None if np.isnan(auc[c]) else float(auc[c]),
            "ap": None if np.isnan(ap[c]) else float(ap[c]),
            "support": int(y[:, c].sum()),
            "threshold": float(thresholds[c]),
            "f1_ci": [float(np.nanpercentile(col, 2.5)), float(np.nanpercentile(col, 97.5))]
            if np.any(np.isfinite(col))
            else None,
        }
    return {**result, "ci": ci, "per_class": per_class, "n": int(len(y))}


def paired_bootstrap(
    y: np.ndarray,
    p_a: np.ndarray,
    thr_a: np.ndarray,
    p_b: np.ndarray,
    thr_b: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, list[float]]:
    """95% intervals of (A - B) for each macro metric, resampling the same records for both."""
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {"macro_f1": [], "macro_auc": [], "macro_ap": []}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        a = summarise(y[idx], p_a[idx], thr_a)
        b = summarise(y[idx], p_b[idx], thr_b)
        for k in diffs:
            diffs[k].append(a[k] - b[k])
    return {
        k: [float(np.nanpercentile(v, 2.5)), float(np.nanmean(v)), float(np.nanpercentile(v, 97.5))]
        for k, v in diffs.items()
    }
