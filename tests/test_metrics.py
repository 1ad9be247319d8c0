"""Metrics agree with brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from liteheart_core.metrics import average_precision, evaluate, f1_scores, paired_bootstrap, roc_auc, tune_thresholds


def data(seed: int = 0, n: int = 120, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < 0.3
    p = np.clip(0.3 * y + 0.7 * rng.random((n, c)), 0, 1).round(2)  # rounding makes ties
    return y.astype(np.uint8), p


def brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def brute_ap(y: np.ndarray, p: np.ndarray) -> float:
    total, prev_recall = 0.0, 0.0
    for t in sorted(set(p), reverse=True):
        pred = p >= t
        tp = (pred & (y == 1)).sum()
        recall = tp / y.sum()
        total += (tp / pred.sum()) * (recall - prev_recall)
        prev_recall = recall
    return total


def test_auc_and_ap_match_brute_force() -> None:
    y, p = data()

    auc, ap = roc_auc(y, p), average_precision(y, p)

    for c in range(y.shape[1]):
        assert auc[c] == pytest.approx(brute_auc(y[:, c], p[:, c]), abs=1e-12)
        assert ap[c] == pytest.approx(brute_ap(y[:, c], p[:, c]), abs=1e-12)


def test_thresholds_maximise_f1() -> None:
    y, p = data(1)

    thr = tune_thresholds(y, p)

    for c in range(y.shape[1]):
        best = max(f1_scores(y[:, [c]], p[:, [c]] >= t)[0] for t in np.unique(p[:, c]))
        assert f1_scores(y[:, [c]], p[:, [c]] >= thr[c])[0] == pytest.approx(best)


def test_perfect_and_constant_classes() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2], [0.1, 0.4]])

    res = evaluate(y, p, tune_thresholds(y, p), ["A", "B"], n_bootstrap=50)

    assert res["per_class"]["A"]["auc"] == 1.0 and res["per_class"]["B"]["auc"] is None
    assert res["macro_auc"] == 1.0 and res["macro_f1"] == 1.0  # class B has no positives: left out of the macro


def test_bootstrap_interval_brackets_estimate_and_narrows_with_data() -> None:
    y, p = data(2, n=100)
    y2, p2 = data(2, n=2000)

    small = evaluate(y, p, tune_thresholds(y, p), list("abcd"), n_bootstrap=300)
    large = evaluate(y2, p2, tune_thresholds(y2, p2), list("abcd"), n_bootstrap=300)

    lo, hi = small["ci"]["macro_auc"]
    assert lo <= small["macro_auc"] <= hi
    assert (large["ci"]["macro_auc"][1] - large["ci"]["macro_auc"][0]) < (hi - lo)


def test_paired_bootstrap_sign() -> None:
    y, p = data(3, n=300)
    rng = np.random.default_rng(0)
    noisy = np.clip(p + 0.4 * rng.standard_normal(p.shape), 0, 1)

    diff = paired_bootstrap(y, p, tune_thresholds(y, p), noisy, tune_thresholds(y, noisy), n_bootstrap=200)

    assert diff["macro_auc"][0] > 0  # the clean predictor is better and the interval excludes 0


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.zeros((3, 1)), np.array([[np.nan], [0.1], [0.2]]))
    with pytest.raises(ValueError, match="equal"):
        evaluate(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(1), ["a"])
