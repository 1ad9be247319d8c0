"""Properties of contrastive distillation against a memory of teacher embeddings, and the per-wave term."""

from __future__ import annotations

import math

import pytest
import torch

from liteheart_core.losses import memory_infonce, wave_evidence_loss


def test_memory_infonce_matches_hand_written_cross_entropy() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64)
    memory = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    n = lambda v: v / v.norm(dim=1, keepdim=True)  # noqa: E731
    pos = (n(z_s) * n(z_t)).sum(1, keepdim=True)
    logits = torch.cat([pos, n(z_s) @ n(memory).T], 1) / 0.2
    expected = -(logits[:, 0] - logits.logsumexp(1)).mean()
    # Execute
    loss, bound = memory_infonce(z_s, z_t, memory, 0.2)
    # Assert
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert bound.item() == pytest.approx(math.log(11) - loss.item(), abs=1e-9)


def test_memory_infonce_bound_rises_with_the_memory_and_with_agreement() -> None:
    # Prepare: a student that agrees with its teacher row, against one that does not
    gen = torch.Generator().manual_seed(1)
    z_t = torch.randn(64, 16, generator=gen)
    memory = torch.randn(1024, 16, generator=gen)
    agree = z_t + 0.05 * torch.randn(64, 16, generator=gen)
    disagree = torch.randn(64, 16, generator=gen)
    # Execute
    _, b_agree = memory_infonce(agree, z_t, memory)
    _, b_disagree = memory_infonce(disagree, z_t, memory)
    _, b_small = memory_infonce(agree, z_t, memory[:63])
    # Assert: in-batch InfoNCE over 64 rows could never pass log(64) = 4.16 nats
    assert b_agree.item() > math.log(64) + 1.0
    assert b_agree.item() > b_small.item() + 1.0
    assert b_disagree.item() < 0.5


def test_memory_infonce_sends_no_gradient_to_the_teacher_side() -> None:
    # Prepare
    z_s = torch.randn(4, 3, requires_grad=True)
    z_t = torch.randn(4, 3, requires_grad=True)
    memory = torch.randn(8, 3, requires_grad=True)
    # Execute
    memory_infonce(z_s, z_t, memory)[0].backward()
    # Assert
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert z_t.grad is None and memory.grad is None


@pytest.mark.parametrize(
    "bad",
    [
        (torch.randn(4, 3), torch.randn(4, 3), torch.randn(0, 3)),
        (torch.randn(4, 3), torch.randn(4, 3), torch.randn(5, 2)),
        (torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, 3)),
    ],
)
def test_memory_infonce_refuses_bad_shapes(bad) -> None:
    with pytest.raises(ValueError):
        memory_infonce(*bad)


def _codes(batch: int, length: int) -> torch.Tensor:
    codes = torch.zeros(batch, length, dtype=torch.long)
    codes[:, 10:20] = 1  # P
    codes[:, 30:40] = 2  # QRS
    codes[:, 50:70] = 3  # T
    return codes


def test_wave_evidence_loss_is_zero_when_the_student_pools_to_the_teacher_and_ignores_background() -> None:
    # Prepare: evidence constant within each wave, anything at all on the background
    length, batch, classes = 100, 3, 2
    codes = _codes(batch, length)
    waves = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -3.0]]).expand(batch, classes, 3)
    evidence = torch.randn(batch, classes, length) * 50  # background
    for w, code in enumerate((1, 2, 3)):
        evidence = torch.where((codes == code).unsqueeze(1), waves[..., w : w + 1], evidence)
    present = torch.ones(batch, 3, dtype=torch.bool)
    # Execute
    loss = wave_evidence_loss(evidence, waves, present, codes)
    # Assert
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_wave_evidence_loss_counts_only_present_waves() -> None:
    # Prepare
    length, batch, classes = 100, 2, 3
    codes = _codes(batch, length)
    evidence = torch.zeros(batch, classes, length, requires_grad=True)
    waves = torch.zeros(batch, classes, 3)
    waves[0, :, 2] = 10.0  # the T wave of record 0 disagrees, but is marked absent
    present = torch.ones(batch, 3, dtype=torch.bool)
    present[0, 2] = False
    # Execute
    loss = wave_evidence_loss(evidence, waves, present, codes)
    present[0, 2] = True
    loss_all = wave_evidence_loss(evidence, waves, present, codes)
    # Assert
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert loss_all.item() > 0.01
