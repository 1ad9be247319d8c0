"""ECG augmentations for semi-supervised consistency training.

All functions take a batch ``x`` of shape ``[B, L, T]`` (records, leads,
samples) and an explicit ``torch.Generator`` so that a seed reproduces the
exact same views. Random numbers are drawn on the generator's device and then
moved to ``x``'s device, so a CPU generator also serves GPU batches.

Magnitudes are stated for standardised signals (zero mean, unit variance per
lead): a noise ``std`` of 0.1 is 10% of the signal's standard deviation. At
100 Hz a QRS complex spans about 10 samples.

Time shifts and masks move or hide samples, so region codes computed on the
un-augmented record no longer line up with an augmented view; apply
region-aware losses to un-augmented inputs only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from liteheart_core.losses._checks import check_floating, check_ndim, check_positive

#: Default sampling rate in Hz (PTB-XL's 100 Hz release).
DEFAULT_FS = 100.0


def _check_signal(x: Tensor) -> None:
    check_ndim(x, 3, "ECG batch", "[B, L, T]")
    check_floating(x, "ECG batch")
    if x.shape[-1] < 1:
        raise ValueError("ECG batch must have at least one sample per lead")


def _rand(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, returned on ``like``'s."""
    values = torch.rand(shape, generator=generator, device=generator.device)
    return values.to(device=like.device, dtype=like.dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    values = torch.randn(shape, generator=generator, device=generator.device)
    return values.to(device=like.device, dtype=like.dtype)


def amplitude_scale(
    x: Tensor, generator: torch.Generator, low: float = 0.8, high: float = 1.2, *, per_lead: bool = False
) -> Tensor:
    """Multiply each record by a gain drawn uniformly from ``[low, high]``.

    Parameters
    ----------
    x : Tensor
        ECG batch ``[B, L, T]``.
    generator : torch.Generator
        Source of randomness.
    low, high : float, default 0.8, 1.2
        Gain range, ``0 < low <= high``.
    per_lead : bool, default False
        Draw one gain per lead instead of per record. Off by default because a
        common gain keeps the amplitude ratios between leads physiological.

    Returns
    -------
    Tensor
        Scaled batch, same shape and dtype.
    """
    _check_signal(x)
    check_positive(low, "low")
    if high < low:
        raise ValueError(f"high must be >= low, got low={low}, high={high}")
    shape = (x.shape[0], x.shape[1] if per_lead else 1, 1)
    return x * (low + (high - low) * _rand(shape, generator, x))


def baseline_wander(
    x: Tensor,
    generator: torch.Generator,
    max_amplitude: float = 0.3,
    *,
    fs: float = DEFAULT_FS,
    freq_range: tuple[float, float] = (0.05, 0.5),
    n_components: int = 2,
) -> Tensor:
    """Add slow sinusoidal drift like respiration or electrode motion.

    Each record gets ``n_components`` sinusoids with a frequency in
    ``freq_range`` Hz and a random phase shared by its leads (one breathing
    pattern), and a per-lead amplitude in ``[-max_amplitude, max_amplitude]``
    (each lead sees the drift with its own strength and sign).

    Parameters
    ----------
    x : Tensor
        ECG batch ``[B, L, T]``.
    generator : torch.Generator
        Source of randomness.
    max_amplitude : float, default 0.3
        Peak amplitude per component, in units of the signal's std.
    fs : float, default 100.0
        Sampling rate in Hz.
    freq_range : (float, float), default (0.05, 0.5)
        Frequency range in Hz.
    n_components : int, default 2
        Number of sinusoids summed.

    Returns
    -------
    Tensor
        Batch with drift added, same shape and dtype.
    """
    _check_signal(x)
    check_positive(fs, "fs")
    if max_amplitude < 0:
        raise ValueError(f"max_amplitude must be >= 0, got {max_amplitude}")
    low, high = freq_range
    if not 0 <= low <= high:
        raise ValueError(f"freq_range must satisfy 0 <= low <= high, got {freq_range}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    batch, leads, length = x.shape
    time = torch.arange(length, device=x.device, dtype=x.dtype) / fs
    wander = torch.zeros_like(x)
    for _ in range(n_components):
        freq = low + (high - low) * _rand((batch, 1, 1), generator, x)
        phase = 2 * math.pi * _rand((batch, 1, 1), generator, x)
        amplitude = max_amplitude * (2 * _rand((batch, leads, 1), generator, x) - 1)
        wander = wander + amplitude * torch.sin(2 * math.pi * freq * time + phase)
    return x + wander


def gaussian_noise(x: Tensor, generator: torch.Generator, std: float = 0.05) -> Tensor:
    """Add white Gaussian noise with standard deviation ``std`` (signal-std units)."""
    _check_signal(x)
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return x + std * _randn(tuple(x.shape), generator, x)


def span_mask(
    batch: int,
    length: int,
    generator: torch.Generator,
    n_spans: int = 1,
    max_fraction: float = 0.1,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random time spans per record, as a bool mask ``[batch, length]``.

    Each of the ``n_spans`` spans has a length drawn uniformly from
    ``1 .. max(1, round(max_fraction * length))`` and a uniformly drawn start
    that keeps it inside the record; spans may overlap.

    Parameters
    ----------
    batch, length : int
        Mask shape.
    generator : torch.Generator
        Source of randomness.
    n_spans : int, default 1
        Spans per record (0 gives an all-False mask).
    max_fraction : float, default 0.1
        Longest span as a fraction of ``length``, in ``(0, 1]``.
    device : torch.device or str, optional
        Device of the result; defaults to the generator's.

    Returns
    -------
    Tensor
        Bool mask, True inside a span.
    """
    if batch < 0 or length < 1:
        raise ValueError(f"span_mask needs batch >= 0 and length >= 1, got {batch}, {length}")
    if n_spans < 0:
        raise ValueError(f"n_spans must be >= 0, got {n_spans}")
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must lie in (0, 1], got {max_fraction}")
    max_len = max(1, round(max_fraction * length))
    gen_device = generator.device
    span_len = torch.randint(1, max_len + 1, (batch, n_spans, 1), generator=generator, device=gen_device)
    # A uniform draw scaled by the number of legal starts keeps every span inside the record.
    start_u = torch.rand((batch, n_spans, 1), generator=generator, device=gen_device)
    start = (start_u * (length - span_len + 1)).floor().long()
    time = torch.arange(length, device=gen_device)
    mask = ((time >= start) & (time < start + span_len)).any(dim=1)
    return mask.to(gen_device if device is None else device)


def muscle_noise(
    x: Tensor,
    generator: torch.Generator,
    std: float = 0.1,
    *,
    fs: float = DEFAULT_FS,
    band: tuple[float, float] = (20.0, 45.0),
    n_bursts: int = 2,
    max_burst_fraction: float = 0.3,
) -> Tensor:
    """Add bursts of band-limited noise like skeletal-muscle (EMG) artefacts.

    White noise is band-passed to ``band`` Hz in the frequency domain (the
    upper edge is capped at the Nyquist frequency), rescaled to RMS ``std``
    per lead, and switched on only inside ``n_bursts`` random spans per record
    (shared by the leads: one muscle contraction disturbs several leads).

    Parameters
    ----------
    x : Tensor
        ECG batch ``[B, L, T]``.
    generator : torch.Generator
        Source of randomness.
    std : float, default 0.1
        RMS of the noise inside a burst, in signal-std units.
    fs : float, default 100.0
        Sampling rate in Hz.
    band : (float, float), default (20.0, 45.0)
        Pass band in Hz.
    n_bursts : int, default 2
        Bursts per record.
    max_burst_fraction : float, default 0.3
        Longest burst as a fraction of the record.

    Returns
    -------
    Tensor
        Noisy batch, same shape and dtype.

    Raises
    ------
    ValueError
        If the band holds no frequency bin for this length and rate.
    """
    _check_signal(x)
    check_positive(fs, "fs")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    low, high = band[0], min(band[1], fs / 2)
    if not 0 <= low < high:
        raise ValueError(f"band {band} Hz is empty below the Nyquist frequency {fs / 2} Hz")
    batch, leads, length = x.shape
    white = torch.randn((batch, leads, length), generator=generator, device=generator.device)
    spectrum = torch.fft.rfft(white, dim=-1)
    freqs = torch.fft.rfftfreq(length, d=1.0 / fs, device=generator.device)
    keep = (freqs >= low) & (freqs <= high)
    if not bool(keep.any()):
        raise ValueError(f"band {band} Hz holds no frequency bin for {length} samples at {fs} Hz")
    noise = torch.fft.irfft(spectrum * keep, n=length, dim=-1)
    noise = noise / noise.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)
    bursts = span_mask(batch, length, generator, n_bursts, max_burst_fraction)
    noise = noise * bursts.unsqueeze(1)
    return x + std * noise.to(device=x.device, dtype=x.dtype)


def time_shift(
    x: Tensor,
    generator: torch.Generator,
    max_shift: int,
    mode: Literal["circular", "pad"] = "circular",
) -> Tensor:
    """Shift each record in time by a random integer in ``[-max_shift, max_shift]``.

    Parameters
    ----------
    x : Tensor
        ECG batch ``[B, L, T]``.
    generator : torch.Generator
        Source of randomness.
    max_shift : int
        Largest shift in samples, ``>= 0``.
    mode : {"circular", "pad"}, default "circular"
        ``"circular"`` wraps samples around (fine for quasi-periodic rhythms);
        ``"pad"`` fills vacated samples with 0 (the mean of a standardised lead).

    Returns
    -------
    Tensor
        Shifted batch, same shape and dtype; all leads of a record move together.
    """
    _check_signal(x)
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    if mode not in ("circular", "pad"):
        raise ValueError(f"mode must be 'circular' or 'pad', got {mode!r}")
    batch, leads, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 1), generator=generator, device=generator.device).to(
        x.device
    )
    source = torch.arange(length, device=x.device) - shift
    if mode == "circular":
        return x.gather(2, (source % length).unsqueeze(1).expand(batch, leads, length))
    inside = (source >= 0) & (source < length)
    shifted = x.gather(2, source.clamp(0, length - 1).unsqueeze(1).expand(batch, leads, length))
    return shifted * inside.unsqueeze(1).to(x.dtype)


def time_mask(x: Tensor, generator: torch.Generator, n_spans: int = 1, max_fraction: float = 0.1) -> Tensor:
    """Zero random time spans across all leads (see :func:`span_mask`).

    A generator in the same state passed to :func:`span_mask` with the same
    arguments reproduces the zeroed positions.
    """
    _check_signal(x)
    mask = span_mask(x.shape[0], x.shape[-1], generator, n_spans, max_fraction, device=x.device)
    return x.masked_fill(mask.unsqueeze(1), 0.0)


def weak_augment(x: Tensor, generator: torch.Generator, *, fs: float = DEFAULT_FS) -> Tensor:
    """Mild view: gain 0.9-1.1, white noise std 0.03, circular shift up to 50 ms.

    Parameters
    ----------
    x : Tensor
        Standardised ECG batch ``[B, L, T]``.
    generator : torch.Generator
        Source of randomness.
    fs : float, default 100.0
        Sampling rate in Hz (converts the shift to samples).

    Returns
    -------
    Tensor
        Augmented batch, same shape and dtype.
    """
    check_positive(fs, "fs")
    x = amplitude_scale(x, generator, 0.9, 1.1)
    x = gaussian_noise(x, generator, std=0.03)
    return time_shift(x, generator, max_shift=round(0.05 * fs), mode="circular")


def strong_augment(x: Tensor, generator: torch.Generator, *, fs: float = DEFAULT_FS) -> Tensor:
    """Strong view combining every perturbation.

    In order: gain 0.6-1.4; baseline wander of two 0.05-0.5 Hz sinusoids up
    to 0.5 std each; muscle-noise bursts (20-45 Hz, RMS 0.2, up to two bursts
    of 30% of the record); white noise std 0.1; circular shift up to 0.5 s;
    two zeroed spans of up to 10% of the record each.

    Parameters
    ----------
    x : Tensor
        Standardised ECG batch ``[B, L, T]``.
    generator : torch.Generator
        Source of randomness.
    fs : float, default 100.0
        Sampling rate in Hz.

    Returns
    -------
    Tensor
        Augmented batch, same shape and dtype.
    """
    check_positive(fs, "fs")
    x = amplitude_scale(x, generator, 0.6, 1.4)
    x = baseline_wander(x, generator, max_amplitude=0.5, fs=fs)
    x = muscle_noise(x, generator, std=0.2, fs=fs, n_bursts=2, max_burst_fraction=0.3)
    x = gaussian_noise(x, generator, std=0.1)
    x = time_shift(x, generator, max_shift=round(0.5 * fs), mode="circular")
    return time_mask(x, generator, n_spans=2, max_fraction=0.1)
