"""Properties of the InfoNCE estimator and the cross-layer MI module."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liteheart_core.losses import CrossLayerMI, default_pairs, infonce

STUDENT_CHANNELS = (4, 8)
TEACHER_CHANNELS = (6, 12, 16)
LATENT = 8


def test_bound_ranks_correlated_above_independent() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(0)
    z_s = torch.randn(128, 16, generator=gen)
    correlated = z_s + 0.1 * torch.randn(128, 16, generator=gen)
    independent = torch.randn(128, 16, generator=gen)
    # Execute
    _, bound_correlated = infonce(z_s, correlated)
    _, bound_independent = infonce(z_s, independent)
    # Assert
    assert bound_correlated.item() > bound_independent.item() + 2.0
    assert bound_correlated.item() > 0.8 * math.log(128)


@pytest.mark.parametrize("symmetric", [True, False])
def test_bound_is_log_batch_minus_loss(symmetric: bool) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(2, 32, 8, generator=gen)
    # Execute
    loss, bound = infonce(z_s, z_t, 0.2, symmetric=symmetric)
    # Assert
    assert bound.item() == pytest.approx(math.log(32) - loss.item(), abs=1e-6)
    assert not bound.requires_grad


def test_one_sided_loss_matches_hand_written_cross_entropy() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(2)
    z_s, z_t = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    s = z_s / z_s.norm(dim=1, keepdim=True)
    t = z_t / z_t.norm(dim=1, keepdim=True)
    sim = s @ t.T / 0.5
    expected = -(sim.diag() - sim.logsumexp(dim=1)).mean()
    # Execute
    loss, _ = infonce(z_s, z_t, 0.5, symmetric=False)
    # Assert
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(min_value=2, max_value=16),
    seed=st.integers(min_value=0, max_value=2**16),
    temperature=st.floats(min_value=0.01, max_value=5.0),
    copy_student=st.booleans(),
)
def test_bound_never_exceeds_log_batch(batch: int, seed: int, temperature: float, copy_student: bool) -> None:
    # Prepare: include the best case, identical embeddings.
    gen = torch.Generator().manual_seed(seed)
    z_s = torch.randn(batch, 4, generator=gen)
    z_t = z_s.clone() if copy_student else torch.randn(batch, 4, generator=gen)
    # Execute
    loss, bound = infonce(z_s, z_t, temperature)
    # Assert
    assert torch.isfinite(loss) and loss.item() >= 0.0
    assert bound.item() <= math.log(batch) + 1e-6


@pytest.mark.parametrize(
    ("z_s", "z_t", "message"),
    [
        (torch.zeros(1, 4), torch.zeros(1, 4), "at least 2"),
        (torch.zeros(3, 4), torch.zeros(3, 5), "shape"),
        (torch.zeros(3, 4, 1), torch.zeros(3, 4, 1), r"\[B, D\]"),
    ],
)
def test_infonce_rejects_bad_input(z_s: torch.Tensor, z_t: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        infonce(z_s, z_t)


def test_default_pairs_examples() -> None:
    assert default_pairs(3, 3) == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]
    assert default_pairs(2, 4) == [(0, 0), (0, 1), (1, 2), (1, 3)]
    assert default_pairs(1, 1) == [(0, 0)]


@settings(max_examples=50, deadline=None)
@given(n_student=st.integers(min_value=1, max_value=8), n_teacher=st.integers(min_value=1, max_value=8))
def test_default_pairs_cover_every_stage_in_depth_order(n_student: int, n_teacher: int) -> None:
    # Execute
    pairs = default_pairs(n_student, n_teacher)
    # Assert: every student stage is paired, indices are valid, and deeper
    # student stages never pair with shallower teacher stages.
    assert {i for i, _ in pairs} == set(range(n_student))
    assert all(0 <= j < n_teacher for _, j in pairs)
    aligned = [min(j for i, j in pairs if i == stage) for stage in range(n_student)]
    assert aligned == sorted(aligned)
    if n_student == n_teacher:
        assert all(j in (i, i + 1) for i, j in pairs)


class SyntheticStages:
    """Stage features driven by per-record latents; fixed random read-outs per stage."""

    def __init__(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.student_maps = [torch.randn(c, LATENT, generator=gen) for c in STUDENT_CHANNELS]
        self.teacher_maps = [torch.randn(c, LATENT, generator=gen) for c in TEACHER_CHANNELS]

    def batch(self, gen: torch.Generator, size: int, correlated: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        latent = torch.randn(size, LATENT, generator=gen)
        teacher_latent = latent if correlated else torch.randn(size, LATENT, generator=gen)

        def stage(mapping: torch.Tensor, z: torch.Tensor, length: int) -> torch.Tensor:
            signal = torch.tanh(z @ mapping.T).unsqueeze(-1)
            return signal + 0.5 * torch.randn(size, mapping.shape[0], length, generator=gen)

        student = [stage(m, latent, 32 // (2**k)) for k, m in enumerate(self.student_maps)]
        teacher = [stage(m, teacher_latent, 64 // (2**k)) for k, m in enumerate(self.teacher_maps)]
        return student, teacher


def _train(correlated: bool, steps: int = 40) -> tuple[float, float, dict[str, float]]:
    """Train fresh heads; return (eval loss before, eval loss after, eval bounds after)."""
    torch.manual_seed(0)
    module = CrossLayerMI(STUDENT_CHANNELS, TEACHER_CHANNELS, default_pairs(2, 3), dim=16)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    stages = SyntheticStages(seed=1)
    eval_student, eval_teacher = stages.batch(torch.Generator().manual_seed(99), 64, correlated)
    with torch.no_grad():
        before, _ = module(eval_student, eval_teacher)
    train_gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        student, teacher = stages.batch(train_gen, 64, correlated)
        loss, _ = module(student, teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after, bounds = module(eval_student, eval_teacher)
    return before.item(), after.item(), bounds


@pytest.mark.usefixtures("single_thread")
def test_trained_heads_rank_correlated_stages_above_independent() -> None:
    # Execute: fresh batches each step, evaluated on a held-out batch, so memorising cannot help.
    _, _, correlated = _train(correlated=True)
    _, _, independent = _train(correlated=False)
    # Assert
    assert set(correlated) == {"mi_s0_t0", "mi_s0_t1", "mi_s1_t1", "mi_s1_t2"}
    assert min(correlated.values()) > max(independent.values()) + 1.0
    assert max(correlated.values()) <= math.log(64) + 1e-6


@pytest.mark.usefixtures("single_thread")
def test_loss_decreases_when_training_on_correlated_stages() -> None:
    # Execute
    before, after, _ = _train(correlated=True)
    # Assert
    assert after < before - 0.5


def test_teacher_features_get_no_gradient_but_teacher_heads_do() -> None:
    # Prepare
    module = CrossLayerMI(STUDENT_CHANNELS, TEACHER_CHANNELS, [(0, 0), (1, 2)], dim=8)
    student, teacher = SyntheticStages(seed=3).batch(torch.Generator().manual_seed(4), 8, True)
    student = [s.requires_grad_(True) for s in student]
    teacher = [t.requires_grad_(True) for t in teacher]
    # Execute
    loss, bounds = module(student, teacher)
    loss.backward()
    # Assert
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None for s in student)
    assert all(p.grad is not None for p in module.teacher_heads.parameters())
    assert set(bounds) == {"mi_s0_t0", "mi_s1_t2"}


def test_cross_layer_mi_rejects_bad_configuration_and_input() -> None:
    with pytest.raises(ValueError, match="out of range"):
        CrossLayerMI(STUDENT_CHANNELS, TEACHER_CHANNELS, [(0, 3)])
    with pytest.raises(ValueError, match="duplicates"):
        CrossLayerMI(STUDENT_CHANNELS, TEACHER_CHANNELS, [(0, 0), (0, 0)])
    module = CrossLayerMI(STUDENT_CHANNELS, TEACHER_CHANNELS, [(0, 0)])
    student, teacher = SyntheticStages(seed=5).batch(torch.Generator().manual_seed(6), 4, True)
    with pytest.raises(ValueError, match="expected 3 teacher feature maps, got 2"):
        module(student, teacher[:2])
    with pytest.raises(ValueError, match="student stage 1 features have 5 channels, expected 8"):
        module([student[0], torch.zeros(4, 5, 16)], teacher)
    with pytest.raises(ValueError, match="one batch size"):
        module([student[0][:3], student[1]], teacher)
