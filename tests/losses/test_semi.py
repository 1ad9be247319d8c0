"""Properties of the semi-supervised losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from liteheart_core.losses import (
    consistency_loss,
    kd_loss,
    masked_bce,
    pseudo_label_loss,
    soft_target_loss,
)

probability = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=32)
logit = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, width=32)


# ---------------------------------------------------------------- masked_bce


def test_masked_bce_uses_only_labelled_rows_and_ignores_nan_placeholders() -> None:
    # Prepare: unlabelled rows carry NaN targets, as an unlabelled label matrix might.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=gen, requires_grad=True)
    targets = (torch.rand(4, 5, generator=gen) > 0.5).float()
    targets[[1, 3]] = float("nan")
    mask = torch.tensor([True, False, True, False])
    expected = F.binary_cross_entropy_with_logits(logits[[0, 2]], targets[[0, 2]])
    # Execute
    loss = masked_bce(logits, targets, mask)
    loss.backward()
    # Assert
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.count_nonzero(logits.grad[[1, 3]]) == 0
    assert torch.isfinite(logits.grad).all()


def test_masked_bce_without_labelled_rows_is_zero_and_backpropagates() -> None:
    # Prepare
    logits = torch.randn(3, 5, requires_grad=True)
    targets = torch.full((3, 5), float("nan"))
    # Execute
    loss = masked_bce(logits, targets, torch.zeros(3, dtype=torch.bool))
    loss.backward()
    # Assert
    assert loss.item() == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_masked_bce_accepts_per_entry_mask() -> None:
    # Prepare
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, float("nan")]])
    mask = torch.tensor([[True, True], [True, False]])
    expected = F.binary_cross_entropy_with_logits(logits[mask], targets[mask])
    # Execute
    loss = masked_bce(logits, targets, mask)
    # Assert
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("mask", "targets", "message"),
    [
        (torch.ones(3), torch.zeros(3, 5), "bool"),
        (torch.ones(4, dtype=torch.bool), torch.zeros(3, 5), r"\[B\] = \(3,\)"),
        (torch.ones(3, dtype=torch.bool), torch.full((3, 5), 2.0), r"\[0, 1\]"),
        (torch.ones(3, dtype=torch.bool), torch.zeros(3, 4), "shape"),
    ],
)
def test_masked_bce_rejects_bad_input(mask: torch.Tensor, targets: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        masked_bce(torch.zeros(3, 5), targets, mask)


# ---------------------------------------------------------------- soft targets


@settings(max_examples=50, deadline=None)
@given(logits=st.lists(logit, min_size=4, max_size=4), probs=st.lists(probability, min_size=4, max_size=4))
def test_soft_target_loss_nonnegative_and_finite(logits: list[float], probs: list[float]) -> None:
    # Execute
    loss = soft_target_loss(torch.tensor([logits]), torch.tensor([probs]))
    # Assert
    assert torch.isfinite(loss) and loss.item() >= 0.0


def test_soft_target_loss_is_minimal_at_agreement() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(1)
    teacher_logits = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 2
    probs = torch.sigmoid(teacher_logits)
    at_target = teacher_logits.clone().requires_grad_(True)
    # Execute
    loss = soft_target_loss(at_target, probs)
    loss.backward()
    nearby = soft_target_loss(teacher_logits + 0.2 * torch.randn(6, 5, generator=gen, dtype=torch.float64), probs)
    # Assert
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert at_target.grad.abs().max().item() < 1e-12
    assert nearby.item() > loss.item()


def test_soft_target_loss_equals_kd_at_unit_temperature() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64) * 3
    # Execute / Assert
    assert soft_target_loss(student, torch.sigmoid(teacher)).item() == pytest.approx(
        kd_loss(student, teacher, temperature=1.0).item(), rel=1e-9
    )


def test_soft_target_loss_handles_hard_targets_and_detaches_teacher() -> None:
    # Prepare
    student = torch.tensor([[3.0, -3.0]], requires_grad=True)
    probs = torch.tensor([[1.0, 0.0]], requires_grad=True)
    # Execute
    loss = soft_target_loss(student, probs)
    loss.backward()
    # Assert: with hard targets the entropy is 0, so the loss is the plain BCE.
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(student, probs).item(), rel=1e-6)
    assert probs.grad is None
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_target_loss(student, torch.tensor([[1.5, 0.0]]))


# ---------------------------------------------------------------- pseudo-labels


def test_pseudo_labels_count_only_confident_entries() -> None:
    # Prepare: 3 confident positives, 2 confident negatives, 3 unconfident.
    probs = torch.tensor([[0.95, 0.5, 0.02, 0.91], [0.89, 0.99, 0.11, 0.05]])
    logits = torch.randn(2, 4, requires_grad=True)
    confident = torch.tensor([[True, False, True, True], [False, True, False, True]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    expected_sum = F.binary_cross_entropy_with_logits(logits[confident], labels[confident], reduction="sum")
    # Execute
    loss, fraction = pseudo_label_loss(logits, probs, threshold=0.9)
    loss.backward()
    # Assert
    assert fraction == pytest.approx(5 / 8)
    assert loss.item() == pytest.approx(expected_sum.item() / 8, rel=1e-6)
    assert torch.count_nonzero(logits.grad[~confident]) == 0
    assert bool((logits.grad[confident] != 0).all())


def test_pseudo_label_normalisations_differ_by_the_confident_fraction() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 5, generator=gen)
    probs = torch.rand(16, 5, generator=gen)
    # Execute
    over_all, fraction = pseudo_label_loss(logits, probs, 0.8)
    over_confident, _ = pseudo_label_loss(logits, probs, 0.8, normalize="confident")
    # Assert
    assert 0 < fraction < 1
    assert over_all.item() == pytest.approx(over_confident.item() * fraction, rel=1e-5)


def test_pseudo_labels_without_confident_entries_give_zero_not_nan() -> None:
    # Prepare
    logits = torch.randn(3, 4, requires_grad=True)
    probs = torch.full((3, 4), 0.5)
    # Execute
    loss, fraction = pseudo_label_loss(logits, probs, normalize="confident")
    loss.backward()
    # Assert
    assert loss.item() == 0.0 and fraction == 0.0
    assert torch.count_nonzero(logits.grad) == 0


def test_pseudo_labels_detach_probs_and_validate_threshold() -> None:
    # Prepare
    probs = torch.tensor([[0.99, 0.01]], requires_grad=True)
    # Execute
    loss, _ = pseudo_label_loss(torch.zeros(1, 2, requires_grad=True), probs)
    loss.backward()
    # Assert
    assert probs.grad is None
    for bad in (0.5, 1.2):
        with pytest.raises(ValueError, match="threshold"):
            pseudo_label_loss(torch.zeros(1, 2), torch.zeros(1, 2), threshold=bad)


# ---------------------------------------------------------------- consistency


@settings(max_examples=50, deadline=None)
@given(strong=st.lists(logit, min_size=3, max_size=3), weak=st.lists(logit, min_size=3, max_size=3))
def test_consistency_nonnegative(strong: list[float], weak: list[float]) -> None:
    loss = consistency_loss(torch.tensor([strong]), torch.tensor([weak]))
    assert torch.isfinite(loss) and loss.item() >= 0.0


def test_consistency_zero_at_agreement_and_weak_view_detached() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(4)
    weak = torch.randn(4, 5, generator=gen, requires_grad=True)
    strong = (weak.detach() + torch.randn(4, 5, generator=gen)).requires_grad_(True)
    # Execute
    same = consistency_loss(weak.detach().clone(), weak)
    loss = consistency_loss(strong, weak)
    loss.backward()
    # Assert: exact zero at agreement; only the strong view learns, towards the weak one.
    assert same.item() == 0.0
    assert loss.item() > 0.0
    assert weak.grad is None
    assert bool((strong.grad * (strong - weak).detach() > 0).all())
