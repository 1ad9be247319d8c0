"""Properties of the multi-label distillation loss."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liteheart_core.losses import kd_loss

logit_values = st.floats(min_value=-30.0, max_value=30.0, allow_nan=False, width=32)


def _reference_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Textbook formula in float64: p log(p/q) + (1-p) log((1-p)/(1-q)), times T^2."""
    p = torch.sigmoid(teacher.double() / temperature)
    q = torch.sigmoid(student.double() / temperature)
    kl = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    return kl.mean() * temperature**2


def test_zero_when_student_equals_teacher() -> None:
    # Prepare
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)) * 10
    # Execute
    loss = kd_loss(logits.clone(), logits, temperature=3.0)
    # Assert
    assert loss.item() == 0.0


@settings(max_examples=60, deadline=None)
@given(
    student=st.lists(logit_values, min_size=6, max_size=6),
    teacher=st.lists(logit_values, min_size=6, max_size=6),
    temperature=st.floats(min_value=0.5, max_value=8.0),
)
def test_nonnegative_and_finite(student: list[float], teacher: list[float], temperature: float) -> None:
    # Prepare
    s = torch.tensor(student).view(2, 3)
    t = torch.tensor(teacher).view(2, 3)
    # Execute
    loss = kd_loss(s, t, temperature)
    # Assert
    assert torch.isfinite(loss)
    assert loss.item() >= 0.0


def test_gradient_vanishes_at_teacher_and_points_towards_it() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(4, 5, generator=gen) * 3
    at_teacher = teacher.clone().requires_grad_(True)
    above = (teacher + 0.5).requires_grad_(True)
    # Execute
    kd_loss(at_teacher, teacher).backward()
    kd_loss(above, teacher).backward()
    # Assert: stationary at s == t (up to float32 rounding of two sigmoid kernels),
    # and a gradient step from s > t lowers s.
    assert at_teacher.grad.abs().max().item() < 1e-7
    assert bool((above.grad > 0).all())


def test_minimised_at_teacher() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(2)
    teacher = torch.randn(3, 4, generator=gen) * 2
    # Execute
    perturbed = [kd_loss(teacher + 0.3 * torch.randn(3, 4, generator=gen), teacher) for _ in range(20)]
    # Assert
    assert min(p.item() for p in perturbed) > kd_loss(teacher, teacher).item()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_matches_hand_written_formula(temperature: float) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 4
    teacher = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 4
    # Execute
    loss = kd_loss(student, teacher, temperature)
    # Assert
    assert loss.item() == pytest.approx(_reference_kd(student, teacher, temperature).item(), rel=1e-10)


def test_stable_for_saturated_logits() -> None:
    # Prepare: sigmoid(±200) is exactly 0/1 in float32, where a naive log(p/q) gives NaN.
    student = torch.tensor([[200.0, -200.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-200.0, 200.0, 0.0]])
    # Execute
    loss = kd_loss(student, teacher, temperature=1.0)
    loss.backward()
    # Assert
    assert torch.isfinite(loss) and loss.item() > 100
    assert torch.isfinite(student.grad).all()


def test_temperature_squared_keeps_gradient_scale() -> None:
    # Prepare: small logit gaps, where sigmoid is near-linear and the scaling law is exact to first order.
    gen = torch.Generator().manual_seed(4)
    teacher = 0.1 * torch.randn(16, 5, generator=gen)
    student_init = teacher + 0.1 * torch.randn(16, 5, generator=gen)
    norms = {}
    for temperature in (1.0, 4.0):
        student = student_init.clone().requires_grad_(True)
        # Execute
        kd_loss(student, teacher, temperature).backward()
        norms[temperature] = student.grad.norm().item()
    # Assert: without T^2 the ratio would be 16; with it the gradients are comparable.
    assert norms[4.0] / norms[1.0] == pytest.approx(1.0, abs=0.05)


def test_teacher_receives_no_gradient() -> None:
    # Prepare
    student = torch.randn(2, 3, requires_grad=True)
    teacher = torch.randn(2, 3, requires_grad=True)
    # Execute
    kd_loss(student, teacher).backward()
    # Assert
    assert teacher.grad is None
    assert student.grad is not None


@pytest.mark.parametrize(
    ("student", "teacher", "temperature", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), 2.0, "shape"),
        (torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), 2.0, r"\[B, K\]"),
        (torch.zeros(2, 3), torch.zeros(2, 3), 0.0, "temperature"),
        (torch.zeros(2, 3), torch.zeros(2, 3), math.nan, "temperature"),
    ],
)
def test_invalid_inputs_raise(student: torch.Tensor, teacher: torch.Tensor, temperature: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kd_loss(student, teacher, temperature)
