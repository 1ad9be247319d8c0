"""Reliability bins and expected calibration error: properties, not just shapes."""

from __future__ import annotations

import numpy as np
import pytest

from liteheart_core.calibration import reliability


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_large() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = rng.random(20_000) < p  # outcomes drawn with the predicted probability: calibrated by construction

    calibrated = reliability(y, p)
    overconfident = reliability(y, np.where(p > 0.5, 1.0, 0.0))

    assert calibrated.ece < 0.02
    assert overconfident.ece > 0.2
    assert calibrated.counts.sum() == 20_000
    filled = calibrated.counts > 0
    assert np.allclose(calibrated.observed[filled], calibrated.mean_predicted[filled], atol=0.05)


def test_ece_agrees_with_a_hand_computed_case() -> None:
    # 4 records at 0.9 (3 positive) and 2 at 0.1 (none): |0.75-0.9|*4/6 + |0-0.1|*2/6
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1])

    rel = reliability(y, p, bins=10)

    assert rel.ece == pytest.approx(0.15 * 4 / 6 + 0.1 * 2 / 6)
    assert rel.counts[9] == 4 and rel.counts[1] == 2 and np.isnan(rel.observed[5])


def test_probability_one_falls_in_the_last_bin_and_bad_inputs_are_refused() -> None:
    assert reliability(np.array([1]), np.array([1.0]), bins=5).counts[-1] == 1
    with pytest.raises(ValueError, match="within"):
        reliability(np.array([1]), np.array([1.2]))
    with pytest.raises(ValueError, match="shape"):
        reliability(np.array([1, 0]), np.array([0.5]))
