"""Wearable view and the wearable's local round (no 12 leads, no teacher)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liteheart_core.federated import student_for
from liteheart_core.train import TrainConfig
from liteheart_core.wearable import WearableView, ema_update, wearable_round, wearable_signals


def test_view_is_lead_one_degraded_and_seeded(synth_data) -> None:
    x = synth_data.x(synth_data.rows()[:8])

    clean = wearable_signals(x, 100, WearableView(degrade=False))
    a = wearable_signals(x, 100, WearableView(seed=1))
    b = wearable_signals(x, 100, WearableView(seed=1))
    c = wearable_signals(x, 100, WearableView(seed=2))

    assert clean.shape == a.shape == (8, 1, x.shape[-1]) and a.dtype == np.float32
    assert np.array_equal(clean, x[:, :1])
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    corr = np.mean([np.corrcoef(a[i, 0], clean[i, 0])[0, 1] for i in range(8)])
    assert 0.3 < corr < 0.99  # still the same ECG, but visibly degraded
    assert np.allclose(a.std(-1), 1, atol=1e-3)


def test_ema_moves_toward_student() -> None:
    teacher, student = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    before = (teacher.weight - student.weight).abs().sum().item()

    ema_update(teacher, student, 0.9)

    assert (teacher.weight - student.weight).abs().sum().item() == pytest.approx(0.9 * before, rel=1e-5)


def test_wearable_round_trains_without_labels_or_teacher(synth_data) -> None:
    rows = synth_data.rows(folds=list(range(1, 9)))[:64]
    x = torch.as_tensor(wearable_signals(synth_data.x(rows), 100, WearableView()))
    y = torch.as_tensor(synth_data.labels()[1][rows], dtype=torch.float32)
    student = student_for(synth_data.tasks["superdiagnostic"])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = TrainConfig(method="liteheart", device="cpu", batch_size=16)

    state, metrics = wearable_round(student, x, y, np.zeros(len(rows), dtype=bool), cfg, 1, 1, threshold=0.6)

    assert any(not torch.equal(state[k], before[k]) for k in before)
    assert metrics["bce"] == 0.0 and metrics["num-examples"] == 64 and metrics["labelled-examples"] == 0
    assert all(np.isfinite(v) for v in metrics.values())
    with pytest.raises(ValueError, match="lead-I"):
        wearable_round(student, torch.zeros(4, 12, 1000), y[:4], np.zeros(4, bool), cfg, 1, 1)
