"""Properties of the ECG augmentations."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import pytest
import torch

from liteheart_core.losses import (
    amplitude_scale,
    baseline_wander,
    gaussian_noise,
    muscle_noise,
    span_mask,
    strong_augment,
    time_mask,
    time_shift,
    weak_augment,
)

FS = 100.0
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

AUGMENTATIONS: dict[str, Augment] = {
    "amplitude_scale": amplitude_scale,
    "baseline_wander": baseline_wander,
    "gaussian_noise": gaussian_noise,
    "muscle_noise": muscle_noise,
    "time_shift_circular": partial(time_shift, max_shift=50),
    "time_shift_pad": partial(time_shift, max_shift=50, mode="pad"),
    "time_mask": time_mask,
    "weak_augment": weak_augment,
    "strong_augment": strong_augment,
}


def smooth_ecg_like(batch: int = 8, leads: int = 2, length: int = 1000) -> torch.Tensor:
    """Unit-variance quasi-periodic signals (a 1.2 Hz sine plus harmonic), smooth like an ECG at 100 Hz."""
    time = torch.arange(length) / FS
    phase = torch.linspace(0, 1, batch * leads).view(batch, leads, 1)
    signal = torch.sin(2 * math.pi * 1.2 * time + phase) + 0.5 * torch.sin(2 * math.pi * 3.6 * time + phase)
    return (signal - signal.mean(-1, keepdim=True)) / signal.std(-1, keepdim=True)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_shape_dtype_finiteness_and_determinism(name: str, dtype: torch.dtype) -> None:
    # Prepare
    augment = AUGMENTATIONS[name]
    x = smooth_ecg_like().to(dtype)
    original = x.clone()
    # Execute
    first = augment(x, seeded(0))
    again = augment(x, seeded(0))
    other = augment(x, seeded(1))
    # Assert
    assert first.shape == x.shape and first.dtype == dtype
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(x, original), "input must not be modified in place"


def test_strong_view_perturbs_more_than_weak_view() -> None:
    # Prepare
    x = smooth_ecg_like(batch=32)
    # Execute
    weak = [(weak_augment(x, seeded(s)) - x).pow(2).mean().item() for s in range(3)]
    strong = [(strong_augment(x, seeded(s)) - x).pow(2).mean().item() for s in range(3)]
    # Assert: the weak view stays close to the signal (unit variance), the strong one does not.
    assert max(weak) < 0.2
    assert min(strong) > 5 * max(weak)


def test_time_mask_zeroes_exactly_the_drawn_spans() -> None:
    # Prepare
    x = smooth_ecg_like() + 3.0  # offset so no original sample is zero
    expected_mask = span_mask(8, 1000, seeded(5), n_spans=2, max_fraction=0.1)
    # Execute
    masked = time_mask(x, seeded(5), n_spans=2, max_fraction=0.1)
    # Assert
    zero = (masked == 0).all(dim=1)
    assert torch.equal(zero, expected_mask)
    assert torch.equal(masked[:, :, ~expected_mask[0]][0], x[0][:, ~expected_mask[0]])
    assert bool(expected_mask.any(dim=1).all())


def test_span_mask_respects_span_count_and_length() -> None:
    # Execute
    mask = span_mask(64, 200, seeded(6), n_spans=1, max_fraction=0.1)
    # Assert: one contiguous span of 1..20 samples per record.
    lengths = mask.sum(dim=1)
    assert bool(((lengths >= 1) & (lengths <= 20)).all())
    edges = (mask[:, 1:] != mask[:, :-1]).sum(dim=1) + mask[:, 0] + mask[:, -1]
    assert bool((edges == 2).all())


@pytest.mark.parametrize("mode", ["circular", "pad"])
def test_time_shift_moves_each_record_rigidly(mode: str) -> None:
    # Prepare
    x = smooth_ecg_like(batch=6) + 3.0
    # Execute
    shifted = time_shift(x, seeded(7), max_shift=30, mode=mode)
    # Assert: each record equals its original moved by one shift within range (zero-filled in pad mode).
    for record in range(6):
        matches = []
        for shift in range(-30, 31):
            candidate = torch.roll(x[record], shift, dims=-1)
            if mode == "pad":
                if shift > 0:
                    candidate[:, :shift] = 0
                elif shift < 0:
                    candidate[:, shift:] = 0
            matches.append(torch.equal(candidate, shifted[record]))
        assert sum(matches) == 1


def test_amplitude_scale_applies_one_gain_per_record_within_range() -> None:
    # Prepare
    x = smooth_ecg_like() + 3.0
    # Execute
    gains = amplitude_scale(x, seeded(8), 0.7, 1.3) / x
    # Assert
    per_record = gains.flatten(1)
    assert torch.allclose(per_record, per_record[:, :1].expand_as(per_record), rtol=1e-5)
    assert bool(((per_record >= 0.7 - 1e-6) & (per_record <= 1.3 + 1e-6)).all())


def test_gaussian_noise_has_requested_std() -> None:
    # Prepare
    x = torch.zeros(16, 2, 1000)
    # Execute
    noise = gaussian_noise(x, seeded(9), std=0.2)
    # Assert
    assert noise.std().item() == pytest.approx(0.2, rel=0.05)


def test_baseline_wander_is_slow_and_bounded() -> None:
    # Prepare
    x = torch.zeros(16, 2, 1000)
    # Execute
    wander = baseline_wander(x, seeded(10), max_amplitude=0.5, fs=FS)
    power = torch.fft.rfft(wander, dim=-1).abs().pow(2)
    freqs = torch.fft.rfftfreq(1000, d=1 / FS)
    # Assert: almost all power below 2 Hz, peak within the two components' amplitudes.
    assert (power[..., freqs > 2.0].sum() / power.sum()).item() < 0.02
    assert wander.abs().max().item() <= 2 * 0.5 + 1e-6


def test_muscle_noise_is_band_limited_and_bursty() -> None:
    # Prepare
    x = torch.zeros(16, 2, 1000)
    # Execute
    noise = muscle_noise(x, seeded(11), std=0.2, fs=FS, band=(20.0, 45.0))
    power = torch.fft.rfft(noise, dim=-1).abs().pow(2)
    freqs = torch.fft.rfftfreq(1000, d=1 / FS)
    touched = noise != 0
    # Assert: mostly in band; silent outside bursts; RMS inside bursts close to std.
    assert (power[..., (freqs >= 20) & (freqs <= 45)].sum() / power.sum()).item() > 0.9
    assert 0.0 < touched.float().mean().item() < 0.7
    assert noise[touched].pow(2).mean().sqrt().item() == pytest.approx(0.2, rel=0.15)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: gaussian_noise(torch.zeros(2, 100), g), r"\[B, L, T\]"),
        (lambda g: gaussian_noise(torch.zeros(1, 1, 10, dtype=torch.long), g), "floating-point"),
        (lambda g: amplitude_scale(torch.zeros(1, 1, 10), g, 1.2, 0.8), "high must be >= low"),
        (lambda g: time_shift(torch.zeros(1, 1, 10), g, max_shift=-1), "max_shift"),
        (lambda g: muscle_noise(torch.zeros(1, 1, 10), g, fs=30.0), "Nyquist"),
        (lambda g: span_mask(2, 10, g, max_fraction=1.5), "max_fraction"),
    ],
)
def test_invalid_arguments_raise(call: Callable[[torch.Generator], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(seeded(0))
