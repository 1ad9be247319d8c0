"""Properties of region weight maps and region-aware distillation losses."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liteheart_core.losses import (
    RegionAdapter,
    pool_region_evidence,
    region_evidence_loss,
    region_feature_loss,
    region_weight_map,
)

NO_BACKGROUND = (0.0, 1.0, 1.0, 1.0)


def beat_codes(batch: int, length: int, period: int = 100) -> torch.Tensor:
    """Synthetic beats: P 10-19, QRS 30-39, T 50-69 of every period; boundaries are multiples of 10."""
    phase = torch.arange(length) % period
    codes = torch.zeros(length, dtype=torch.int8)
    codes[(phase >= 10) & (phase < 20)] = 1
    codes[(phase >= 30) & (phase < 40)] = 2
    codes[(phase >= 50) & (phase < 70)] = 3
    return codes.expand(batch, length).clone()


def pad_codes(codes: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([codes, torch.full((codes.shape[0], extra), -1, dtype=codes.dtype)], dim=1)


def pad_time(feat: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([feat, feat.new_zeros(*feat.shape[:2], extra)], dim=2)


# ---------------------------------------------------------------- weight map


def test_weight_map_full_resolution_is_lookup_with_zero_padding() -> None:
    # Prepare
    codes = torch.tensor([[-1, 0, 1, 2, 3, -1]], dtype=torch.int8)
    # Execute
    weights = region_weight_map(codes, (0.5, 1.0, 2.0, 3.0))
    # Assert
    assert weights.tolist() == [[0.0, 0.5, 1.0, 2.0, 3.0, 0.0]]


@pytest.mark.parametrize("length", [100, 300, 7, 1])
def test_weight_map_averages_each_steps_input_span(length: int) -> None:
    # Prepare: random codes including padding, T = 1000 not always divisible by length.
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-1, 4, (3, 1000), generator=gen)
    weights = (0.25, 1.0, 2.0, 0.5)
    per_sample = torch.tensor((0.0, *weights))[codes + 1]
    # Execute
    pooled = region_weight_map(codes, weights, length)
    # Assert: step l averages samples floor(l*T/L) .. ceil((l+1)*T/L) - 1.
    assert pooled.shape == (3, length)
    for step in range(length):
        start = (step * 1000) // length
        end = math.ceil((step + 1) * 1000 / length)
        expected = per_sample[:, start:end].mean(dim=1)
        torch.testing.assert_close(pooled[:, step], expected)


@settings(max_examples=40, deadline=None)
@given(
    codes=st.lists(st.integers(min_value=-1, max_value=3), min_size=1, max_size=60),
    length=st.integers(min_value=1, max_value=30),
    weights=st.tuples(*[st.floats(min_value=0.0, max_value=10.0)] * 4),
)
def test_weight_map_bounded_by_weights(
    codes: list[int], length: int, weights: tuple[float, float, float, float]
) -> None:
    # Prepare
    tensor = torch.tensor([codes], dtype=torch.int16)
    # Execute
    pooled = region_weight_map(tensor, weights, length)
    # Assert: an average of weights and padding zeros never leaves [0, max weight].
    assert pooled.shape == (1, length)
    assert bool((pooled >= 0).all())
    assert bool((pooled <= max(weights) * (1 + 1e-6) + 1e-6).all())


@pytest.mark.parametrize(
    ("codes", "kwargs", "message"),
    [
        (torch.zeros(2, 10), {}, "integer dtype"),
        (torch.full((2, 10), 4), {}, r"\{-1, 0, 1, 2, 3\}"),
        (torch.zeros(10, dtype=torch.long), {}, r"\[B, T\]"),
        (torch.zeros(2, 10, dtype=torch.long), {"weights": (1.0, 1.0, 1.0)}, "4 numbers"),
        (torch.zeros(2, 10, dtype=torch.long), {"weights": (-1.0, 1.0, 1.0, 1.0)}, ">= 0"),
        (torch.zeros(2, 10, dtype=torch.long), {"length": 0}, "positive int"),
    ],
)
def test_weight_map_rejects_bad_input(codes: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        region_weight_map(codes, **kwargs)


# ---------------------------------------------------------------- feature loss


@pytest.mark.parametrize("standardize", [False, True])
def test_feature_loss_zero_for_identical_positive_for_different(standardize: bool) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(1)
    codes = beat_codes(2, 400)
    teacher = torch.randn(2, 8, 40, generator=gen)
    other = torch.randn(2, 8, 40, generator=gen)
    # Execute
    same = region_feature_loss(teacher.clone(), teacher, codes, standardize=standardize)
    different = region_feature_loss(other, teacher, codes, standardize=standardize)
    # Assert
    assert same.item() == pytest.approx(0.0, abs=1e-12)
    assert different.item() > 0.1


def test_standardize_ignores_scale_and_offset() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(2)
    codes = beat_codes(2, 400)
    teacher = torch.randn(2, 8, 40, generator=gen)
    student = 5.0 * teacher + 3.0
    # Execute
    raw = region_feature_loss(student, teacher, codes)
    standardized = region_feature_loss(student, teacher, codes, standardize=True)
    # Assert
    assert raw.item() > 1.0
    assert standardized.item() == pytest.approx(0.0, abs=1e-8)


def test_feature_loss_interpolates_student_to_teacher_length() -> None:
    # Prepare: features constant in time are resolution-free, so a coarser student matches exactly.
    codes = beat_codes(2, 400)
    values = torch.randn(2, 6, 1)
    student = values.expand(2, 6, 25).clone()
    teacher = values.expand(2, 6, 100).clone()
    # Execute
    loss = region_feature_loss(student, teacher, codes)
    # Assert
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("length", [1000, 100])
def test_zero_gradient_where_span_is_background_or_padding(length: int, standardize: bool) -> None:
    # Prepare: beats plus trailing padding; background weight 0.
    gen = torch.Generator().manual_seed(3)
    codes = pad_codes(beat_codes(2, 900), 100)
    student = torch.randn(2, 4, length, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 4, length, generator=gen)
    span_weight = region_weight_map(codes, NO_BACKGROUND, length)
    # Execute
    region_feature_loss(student, teacher, codes, NO_BACKGROUND, standardize=standardize).backward()
    # Assert: exactly zero where the whole input span is background/padding, non-zero elsewhere.
    grad_per_step = student.grad.abs().sum(dim=1)
    silent = span_weight == 0
    assert bool(silent.any()) and bool((~silent).any())
    assert bool((grad_per_step[silent] == 0).all())
    assert bool((grad_per_step[~silent] > 0).all())


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("factor", [1, 10])
def test_padding_invariance(factor: int, standardize: bool) -> None:
    # Prepare: 1000 samples, stage downsampled by `factor`; append 200 padded samples (zero features).
    gen = torch.Generator().manual_seed(4)
    codes = beat_codes(3, 1000)
    student = torch.randn(3, 5, 1000 // factor, generator=gen)
    teacher = torch.randn(3, 5, 1000 // factor, generator=gen)
    extra = 200 // factor
    # Execute
    plain = region_feature_loss(student, teacher, codes, standardize=standardize)
    padded = region_feature_loss(
        pad_time(student, extra), pad_time(teacher, extra), pad_codes(codes, 200), standardize=standardize
    )
    # Assert
    assert padded.item() == pytest.approx(plain.item(), abs=1e-6)


def test_scaling_all_weights_leaves_loss_unchanged() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(5)
    codes = beat_codes(2, 500)
    student = torch.randn(2, 4, 50, generator=gen)
    teacher = torch.randn(2, 4, 50, generator=gen)
    weights = (0.2, 1.0, 1.5, 0.7)
    # Execute
    base = region_feature_loss(student, teacher, codes, weights)
    doubled = region_feature_loss(student, teacher, codes, tuple(2 * w for w in weights))
    # Assert
    assert doubled.item() == pytest.approx(base.item(), rel=1e-6)


def test_raising_qrs_weight_raises_loss_when_errors_sit_in_qrs() -> None:
    # Prepare: student equals the teacher except at full-resolution QRS samples.
    gen = torch.Generator().manual_seed(6)
    codes = beat_codes(2, 500)
    teacher = torch.randn(2, 4, 500, generator=gen)
    student = teacher + (codes == 2).unsqueeze(1) * torch.randn(2, 4, 500, generator=gen)
    # Execute
    losses = [region_feature_loss(student, teacher, codes, (0.1, 1.0, qrs, 1.0)).item() for qrs in (0.5, 1.0, 2.0, 4.0)]
    # Assert
    assert losses == sorted(losses) and len(set(losses)) == 4


def test_all_zero_weights_give_zero_not_nan() -> None:
    # Prepare
    codes = torch.full((2, 100), -1)
    student = torch.randn(2, 3, 10, requires_grad=True)
    # Execute
    loss = region_feature_loss(student, torch.randn(2, 3, 10), codes)
    loss.backward()
    # Assert
    assert loss.item() == 0.0
    assert torch.count_nonzero(student.grad) == 0


def test_feature_loss_teacher_gets_no_gradient() -> None:
    # Prepare
    codes = beat_codes(2, 200)
    student = torch.randn(2, 3, 20, requires_grad=True)
    teacher = torch.randn(2, 3, 20, requires_grad=True)
    # Execute
    region_feature_loss(student, teacher, codes, standardize=True).backward()
    # Assert
    assert teacher.grad is None
    assert student.grad is not None


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "codes_length", "input_length", "message"),
    [
        ((2, 4, 10), (2, 4, 10), 900, 1000, "region codes have length 900 but features were computed from 1000"),
        ((2, 3, 10), (2, 4, 10), 100, None, "3 channels but teacher features have 4"),
        ((3, 4, 10), (2, 4, 10), 100, None, "batch size 3"),
        ((2, 4), (2, 4, 10), 100, None, r"\[B, C, L\]"),
    ],
)
def test_feature_loss_rejects_mismatched_shapes(
    student_shape: tuple[int, ...],
    teacher_shape: tuple[int, ...],
    codes_length: int,
    input_length: int | None,
    message: str,
) -> None:
    codes = torch.zeros(2, codes_length, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        region_feature_loss(torch.zeros(student_shape), torch.zeros(teacher_shape), codes, input_length=input_length)


@pytest.mark.usefixtures("single_thread")
def test_region_adapter_maps_width_and_learns() -> None:
    # Prepare: the teacher is a fixed linear map of the student, so a 1x1 conv can fit it.
    torch.manual_seed(7)
    codes = beat_codes(4, 300)
    student = torch.randn(4, 3, 30)
    teacher = torch.einsum("oc,bcl->bol", torch.randn(6, 3), student)
    adapter = RegionAdapter(3, 6)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=0.1)
    # Execute
    first = region_feature_loss(adapter(student), teacher, codes).item()
    for _ in range(30):
        optimizer.zero_grad()
        region_feature_loss(adapter(student), teacher, codes).backward()
        optimizer.step()
    last = region_feature_loss(adapter(student), teacher, codes).item()
    # Assert
    assert adapter(student).shape == (4, 6, 30)
    assert last < 0.1 * first
    with pytest.raises(ValueError, match="expects 3 student channels"):
        adapter(torch.zeros(1, 4, 10))


# ---------------------------------------------------------------- evidence loss


def region_constant_evidence(codes: torch.Tensor, values: torch.Tensor, length: int) -> torch.Tensor:
    """Evidence [B, K, length] equal to values[k, code] inside each region (codes aligned to steps)."""
    factor = codes.shape[1] // length
    step_codes = codes[:, ::factor].long().clamp_min(0)
    return values[:, step_codes].permute(1, 0, 2)


def test_evidence_pooling_is_resolution_free_for_region_constant_maps() -> None:
    # Prepare: region boundaries are multiples of 10, so a 10x coarser map sees pure steps.
    codes = beat_codes(2, 1000)
    values = torch.randn(5, 4)  # [K, code]
    fine = region_constant_evidence(codes, values, 1000)
    coarse = region_constant_evidence(codes, values, 100)
    # Execute
    pooled_fine, present = pool_region_evidence(fine, codes)
    pooled_coarse, _ = pool_region_evidence(coarse, codes)
    loss = region_evidence_loss(coarse, fine, codes)
    # Assert
    torch.testing.assert_close(pooled_fine, values[:, 1:].expand(2, 5, 3))
    torch.testing.assert_close(pooled_coarse, pooled_fine)
    assert bool(present.all())
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("temperature", [2.0, None])
def test_evidence_loss_zero_for_identical_positive_for_different(temperature: float | None) -> None:
    # Prepare
    gen = torch.Generator().manual_seed(8)
    codes = beat_codes(2, 500)
    teacher = torch.randn(2, 5, 50, generator=gen)
    other = teacher + torch.randn(2, 5, 50, generator=gen)
    # Execute
    same = region_evidence_loss(teacher.clone(), teacher, codes, temperature)
    different = region_evidence_loss(other, teacher, codes, temperature)
    # Assert
    assert same.item() == 0.0
    assert different.item() > 0.0


def test_evidence_gradient_zero_on_background_and_padding() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(9)
    codes = pad_codes(beat_codes(2, 800), 200)
    student = torch.randn(2, 5, 100, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 5, 100, generator=gen)
    wave_fraction = region_weight_map(codes, NO_BACKGROUND, 100)
    # Execute
    region_evidence_loss(student, teacher, codes).backward()
    # Assert
    grad_per_step = student.grad.abs().sum(dim=1)
    assert bool((grad_per_step[wave_fraction == 0] == 0).all())
    assert bool((grad_per_step[wave_fraction > 0] > 0).all())


def test_evidence_loss_padding_invariant() -> None:
    # Prepare
    gen = torch.Generator().manual_seed(10)
    codes = beat_codes(2, 1000)
    student = torch.randn(2, 5, 100, generator=gen)
    teacher = torch.randn(2, 5, 250, generator=gen)
    # Execute
    plain = region_evidence_loss(student, teacher, codes)
    padded = region_evidence_loss(pad_time(student, 20), pad_time(teacher, 50), pad_codes(codes, 200))
    # Assert
    assert padded.item() == pytest.approx(plain.item(), abs=1e-6)


def test_absent_regions_are_masked_out() -> None:
    # Prepare: record 0 has all waves; record 1 has only QRS and background.
    gen = torch.Generator().manual_seed(11)
    codes = beat_codes(2, 400)
    codes[1][(codes[1] == 1) | (codes[1] == 3)] = 0
    student = torch.randn(2, 3, 400, generator=gen)
    teacher = torch.randn(2, 3, 400, generator=gen)
    pooled_s, present = pool_region_evidence(student, codes)
    pooled_t, _ = pool_region_evidence(teacher, codes)
    per_pair = (pooled_s - pooled_t).pow(2).mean(dim=1)  # [B, 3], raw evidence scale
    # Execute
    loss = region_evidence_loss(student, teacher, codes, temperature=None)
    # Assert: mean over the 4 present (record, region) pairs only.
    assert present.tolist() == [[True, True, True], [False, True, False]]
    expected = (per_pair[0].sum() + per_pair[1, 1]) / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_evidence_loss_teacher_gets_no_gradient_and_checks_shapes() -> None:
    # Prepare
    codes = beat_codes(2, 200)
    student = torch.randn(2, 5, 20, requires_grad=True)
    teacher = torch.randn(2, 5, 40, requires_grad=True)
    # Execute
    region_evidence_loss(student, teacher, codes).backward()
    # Assert
    assert teacher.grad is None and student.grad is not None
    with pytest.raises(ValueError, match="does not match teacher evidence"):
        region_evidence_loss(torch.zeros(2, 4, 20), torch.zeros(2, 5, 20), codes)
    with pytest.raises(ValueError, match="region codes have length 200 but features were computed from 250"):
        region_evidence_loss(torch.zeros(2, 5, 20), torch.zeros(2, 5, 20), codes, input_length=250)
