"""Region-aware feature and class-evidence distillation.

Region codes annotate every input sample of a record: ``0`` background,
``1`` P wave, ``2`` QRS complex, ``3`` T wave and ``-1`` padding. A network
stage that downsamples the input by a factor ``f`` sees each of its time steps
as a summary of about ``f`` input samples, so region information is carried to
a stage by averaging the per-sample weights over that span (adaptive average
pooling, which also handles lengths that do not divide evenly).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from liteheart_core.losses._checks import check_floating, check_ndim, check_positive

#: Codes used in region annotations.
PADDING_CODE = -1
BACKGROUND_CODE = 0
P_CODE = 1
QRS_CODE = 2
T_CODE = 3
#: Region codes pooled by :func:`pool_region_evidence`, in output order.
WAVE_CODES: tuple[int, int, int] = (P_CODE, QRS_CODE, T_CODE)

#: Default ``(background, P, QRS, T)`` weights: waves dominate, background still
#: contributes a little so isoelectric segments are not ignored entirely.
DEFAULT_REGION_WEIGHTS: tuple[float, float, float, float] = (0.1, 1.0, 1.0, 1.0)
# Weights that select one wave type; pooling with them yields, per time step,
# the fraction of its input span that lies in that wave.
_SELECT_WAVE: dict[int, tuple[float, float, float, float]] = {
    P_CODE: (0.0, 1.0, 0.0, 0.0),
    QRS_CODE: (0.0, 0.0, 1.0, 0.0),
    T_CODE: (0.0, 0.0, 0.0, 1.0),
}


def check_region_codes(codes: Tensor, batch: int | None = None, input_length: int | None = None) -> None:
    """Validate a ``[B, T]`` integer tensor of region codes.

    Parameters
    ----------
    codes : Tensor
        Region codes, shape ``[B, T]``, integer dtype, values in ``{-1, 0, 1, 2, 3}``.
    batch : int, optional
        Expected batch size (that of the feature maps).
    input_length : int, optional
        Number of input samples the feature maps were computed from.

    Raises
    ------
    ValueError
        On a wrong shape, dtype, value, batch size or length.
    """
    check_ndim(codes, 2, "region codes", "[B, T]")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"region codes must have an integer dtype, got {codes.dtype}")
    if batch is not None and codes.shape[0] != batch:
        raise ValueError(f"region codes cover {codes.shape[0]} records but the features have batch size {batch}")
    if input_length is not None and codes.shape[1] != input_length:
        raise ValueError(
            f"region codes have length {codes.shape[1]} but features were computed from {input_length} samples"
        )
    if codes.shape[1] == 0:
        raise ValueError("region codes have length 0; at least one sample is needed")
    if codes.numel() and (int(codes.min()) < PADDING_CODE or int(codes.max()) > T_CODE):
        raise ValueError(
            f"region codes must lie in {{-1, 0, 1, 2, 3}}, got values in [{int(codes.min())}, {int(codes.max())}]"
        )


def _check_weights(weights: tuple[float, float, float, float]) -> None:
    if len(weights) != 4:
        raise ValueError(f"region weights must be 4 numbers (background, P, QRS, T), got {len(weights)}")
    for name, value in zip(("background", "P", "QRS", "T"), weights):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"region weight for {name} must be finite and >= 0, got {value!r}")


def region_weight_map(
    codes: Tensor,
    weights: tuple[float, float, float, float] = DEFAULT_REGION_WEIGHTS,
    length: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per-time-step region weights at a stage's temporal resolution.

    Parameters
    ----------
    codes : Tensor
        Region codes, shape ``[B, T]`` (see module docstring).
    weights : tuple of 4 floats, default ``DEFAULT_REGION_WEIGHTS``
        Non-negative weights for background, P, QRS and T samples. Padding
        (code ``-1``) always gets weight 0.
    length : int, optional
        Temporal length ``L`` of the target feature map; ``None`` keeps ``T``.
    dtype : torch.dtype, default torch.float32
        Floating dtype of the result.

    Returns
    -------
    Tensor
        Shape ``[B, L]``. Entry ``l`` is the mean per-sample weight over the
        input span of step ``l``, i.e. samples ``floor(l*T/L)`` to
        ``ceil((l+1)*T/L) - 1`` (adaptive average pooling). A step whose span
        is all padding, or all background with background weight 0, is exactly 0.

    Raises
    ------
    ValueError
        On invalid codes, weights or length.
    """
    check_region_codes(codes)
    _check_weights(weights)
    if length is not None and (not isinstance(length, int) or length < 1):
        raise ValueError(f"length must be a positive int, got {length!r}")
    return _weight_map(codes, weights, codes.shape[1] if length is None else length, dtype)


def _weight_map(codes: Tensor, weights: tuple[float, float, float, float], length: int, dtype: torch.dtype) -> Tensor:
    """:func:`region_weight_map` without validation, for callers that already checked."""
    # Index 0 of the table is padding so that ``code + 1`` is a valid index.
    table = torch.tensor((0.0, *weights), dtype=dtype, device=codes.device)
    per_sample = table[codes.long() + 1]
    if length == codes.shape[1]:
        return per_sample
    return F.adaptive_avg_pool1d(per_sample.unsqueeze(1), length).squeeze(1)


class RegionAdapter(nn.Module):
    """Learned 1x1 convolution from the student's width to the teacher's width.

    Parameters
    ----------
    student_channels : int
        Channels of the student feature map.
    teacher_channels : int
        Channels of the teacher feature map it is compared with.
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        for name, value in (("student_channels", student_channels), ("teacher_channels", teacher_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.proj = nn.Conv1d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student_feat: Tensor) -> Tensor:
        """Map ``[B, C_s, L]`` student features to ``[B, C_t, L]``."""
        check_ndim(student_feat, 3, "student features", "[B, C, L]")
        if student_feat.shape[1] != self.student_channels:
            raise ValueError(
                f"RegionAdapter expects {self.student_channels} student channels, got {student_feat.shape[1]}"
            )
        return self.proj(student_feat)


def _weighted_standardize(feat: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Standardise ``[B, C, L]`` features per record and channel under ``weight`` [B, L].

    The statistics use the same weights as the loss, so steps with weight 0
    (padding, ignored regions) neither shift the statistics nor receive any
    gradient through them.
    """
    w = weight.unsqueeze(1)
    total = w.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(feat.dtype).tiny)
    mean = (w * feat).sum(dim=-1, keepdim=True) / total
    var = (w * (feat - mean).pow(2)).sum(dim=-1, keepdim=True) / total
    return (feat - mean) / torch.sqrt(var + eps)


def region_feature_loss(
    student_feat: Tensor,
    teacher_feat: Tensor,
    codes: Tensor,
    weights: tuple[float, float, float, float] = DEFAULT_REGION_WEIGHTS,
    *,
    standardize: bool = False,
    input_length: int | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Region-weighted feature matching between an adapted student and the teacher.

    Parameters
    ----------
    student_feat : Tensor
        Student features already mapped to the teacher's width (e.g. by
        :class:`RegionAdapter`), shape ``[B, C, Ls]``.
    teacher_feat : Tensor
        Teacher features, shape ``[B, C, Lt]``. Detached inside.
    codes : Tensor
        Region codes of the input, shape ``[B, T]``.
    weights : tuple of 4 floats, default ``DEFAULT_REGION_WEIGHTS``
        ``(background, P, QRS, T)`` weights; padding always weighs 0.
    standardize : bool, default False
        Standardise each record's channels over time (weighted by the region
        map) before comparing, so the loss ignores the scale gap between the
        two networks' activations.
    input_length : int, optional
        Number of input samples the features came from; checked against ``T``.
    eps : float, default 1e-5
        Variance floor used by ``standardize``.

    Returns
    -------
    Tensor
        Scalar ``sum_{b,l} w_bl * mean_c (s - t)^2 / sum_{b,l} w_bl`` with ``w``
        the region weight map at ``Lt``; 0 when every weight is 0.

    Raises
    ------
    ValueError
        On mismatched batch size, channels, or region-code length.

    Notes
    -----
    If ``Ls != Lt`` the student map is linearly interpolated to ``Lt``.
    Normalising by the summed weights (not by ``B * Lt``) makes the value
    invariant to appended padding and to a common rescaling of ``weights``; it
    does mean a record with more wave samples counts more in the batch.
    With interpolation, the student steps next to a padding boundary mix in
    padded values, so exact padding invariance holds only for ``Ls == Lt``.
    """
    check_ndim(student_feat, 3, "student features", "[B, C, L]")
    check_ndim(teacher_feat, 3, "teacher features", "[B, C, L]")
    check_floating(student_feat, "student features")
    check_floating(teacher_feat, "teacher features")
    check_positive(eps, "eps")
    batch, channels, _ = teacher_feat.shape
    if student_feat.shape[0] != batch:
        raise ValueError(f"student features have batch size {student_feat.shape[0]} but teacher features have {batch}")
    if student_feat.shape[1] != channels:
        raise ValueError(
            f"student features have {student_feat.shape[1]} channels but teacher features have "
            f"{channels}; map the student with RegionAdapter first"
        )
    if student_feat.shape[2] == 0 or teacher_feat.shape[2] == 0:
        raise ValueError("feature maps must have at least one time step")
    check_region_codes(codes, batch=batch, input_length=input_length)

    teacher = teacher_feat.detach().to(student_feat.dtype)
    length = teacher.shape[-1]
    student = student_feat
    if student.shape[-1] != length:
        student = F.interpolate(student, size=length, mode="linear", align_corners=False)
    _check_weights(weights)
    weight = _weight_map(codes, weights, length, student.dtype)
    if standardize:
        student = _weighted_standardize(student, weight, eps)
        teacher = _weighted_standardize(teacher, weight, eps)
    step_error = (student - teacher).pow(2).mean(dim=1)
    return (weight * step_error).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)


def pool_region_evidence(evidence: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """Average class evidence inside each wave type at the map's own resolution.

    Parameters
    ----------
    evidence : Tensor
        Class evidence, shape ``[B, K, L]`` (the classifier applied per time step).
    codes : Tensor
        Region codes of the input, shape ``[B, T]``.

    Returns
    -------
    pooled : Tensor
        Shape ``[B, K, 3]``: for P, QRS and T, the mean evidence over time steps
        weighted by the fraction of each step's input span in that region.
        Absent regions give 0.
    present : Tensor
        Bool, shape ``[B, 3]``: whether the record contains that region at all.
    """
    check_ndim(evidence, 3, "class evidence", "[B, K, L]")
    check_floating(evidence, "class evidence")
    if evidence.shape[2] == 0:
        raise ValueError("class evidence must have at least one time step")
    check_region_codes(codes, batch=evidence.shape[0])
    return _pool_evidence(evidence, codes)


def _pool_evidence(evidence: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`pool_region_evidence` without validation."""
    length = evidence.shape[-1]
    pooled = []
    for code in WAVE_CODES:
        fraction = _weight_map(codes, _SELECT_WAVE[code], length, evidence.dtype)
        mass = fraction.sum(dim=-1).clamp_min(torch.finfo(evidence.dtype).tiny)
        pooled.append((evidence * fraction.unsqueeze(1)).sum(dim=-1) / mass.unsqueeze(1))
    present = torch.stack([(codes == code).any(dim=1) for code in WAVE_CODES], dim=1)
    return torch.stack(pooled, dim=-1), present


def region_evidence_loss(
    student_evidence: Tensor,
    teacher_evidence: Tensor,
    codes: Tensor,
    temperature: float | None = 2.0,
    *,
    input_length: int | None = None,
) -> Tensor:
    """Match per-region pooled class evidence of the student to the teacher's.

    Parameters
    ----------
    student_evidence : Tensor
        Student class evidence, shape ``[B, K, Ls]``.
    teacher_evidence : Tensor
        Teacher class evidence, shape ``[B, K, Lt]``. Detached inside.
    codes : Tensor
        Region codes of the input, shape ``[B, T]``.
    temperature : float or None, default 2.0
        If a number, compare ``sigmoid(pooled / temperature)`` probabilities
        (bounded, so one extreme logit cannot dominate); if ``None``, compare
        the raw pooled evidence (logit scale).
    input_length : int, optional
        Number of input samples the evidence came from; checked against ``T``.

    Returns
    -------
    Tensor
        Scalar: mean over classes of the squared difference, averaged over the
        (record, region) pairs whose region occurs in the record; 0 if none does.

    Raises
    ------
    ValueError
        On mismatched batch size, class count or region-code length.

    Notes
    -----
    Each network is pooled at its own resolution, so no interpolation is
    needed and ``Ls`` may differ from ``Lt``. Background and padding steps take
    no part: their gradient is exactly zero.
    """
    check_ndim(student_evidence, 3, "student evidence", "[B, K, L]")
    check_ndim(teacher_evidence, 3, "teacher evidence", "[B, K, L]")
    check_floating(student_evidence, "student evidence")
    check_floating(teacher_evidence, "teacher evidence")
    if student_evidence.shape[:2] != teacher_evidence.shape[:2]:
        raise ValueError(
            f"student evidence [B, K] = {tuple(student_evidence.shape[:2])} does not match "
            f"teacher evidence [B, K] = {tuple(teacher_evidence.shape[:2])}"
        )
    if student_evidence.shape[2] == 0 or teacher_evidence.shape[2] == 0:
        raise ValueError("evidence maps must have at least one time step")
    if temperature is not None:
        check_positive(temperature, "temperature")
    check_region_codes(codes, batch=student_evidence.shape[0], input_length=input_length)

    student_pooled, present = _pool_evidence(student_evidence, codes)
    teacher_pooled, _ = _pool_evidence(teacher_evidence.detach().to(student_evidence.dtype), codes)
    if temperature is not None:
        student_pooled = torch.sigmoid(student_pooled / temperature)
        teacher_pooled = torch.sigmoid(teacher_pooled / temperature)
    error = (student_pooled - teacher_pooled).pow(2).mean(dim=1)
    mask = present.to(error.dtype)
    return (error * mask).sum() / mask.sum().clamp_min(1.0)


__all__ = [
    "DEFAULT_REGION_WEIGHTS",
    "RegionAdapter",
    "check_region_codes",
    "pool_region_evidence",
    "region_evidence_loss",
    "region_feature_loss",
    "region_weight_map",
]


def wave_evidence_loss(
    student_evidence: Tensor,
    teacher_waves: Tensor,
    present: Tensor,
    codes: Tensor,
    temperature: float = 2.0,
) -> Tensor:
    """Match the student's per-wave class evidence to teacher evidence pooled earlier.

    The region-aware term of LiteHeart v2: the teacher's evidence was pooled over the
    P, QRS and T samples of the very view the student sees (``views.build_view_bank``),
    so only the student's map is pooled here. Background and padding take no part (weight
    0): the contrast between a wave and the rest is total.

    Parameters
    ----------
    student_evidence : Tensor
        ``[B, K, L]``, the student's classifier applied at every time step.
    teacher_waves : Tensor
        ``[B, K, 3]``, teacher evidence pooled over P, QRS, T. Detached inside.
    present : Tensor
        Bool ``[B, 3]``: the (record, wave) pairs that count.
    codes : Tensor
        Region codes of the student's input ``[B, T]``.
    temperature : float, default 2.0
        Both sides are compared as ``sigmoid(evidence / temperature)``.

    Returns
    -------
    Tensor
        Scalar mean squared difference over present (record, wave) pairs and classes; 0 when none is present.
    """
    check_ndim(student_evidence, 3, "student evidence", "[B, K, L]")
    check_ndim(teacher_waves, 3, "teacher waves", "[B, K, 3]")
    check_positive(temperature, "temperature")
    if teacher_waves.shape[:2] != student_evidence.shape[:2] or teacher_waves.shape[2] != 3:
        raise ValueError(
            f"teacher waves must be [B, K, 3] = {(*student_evidence.shape[:2], 3)}, got {tuple(teacher_waves.shape)}"
        )
    if present.shape != (student_evidence.shape[0], 3):
        raise ValueError(f"present must be [B, 3], got {tuple(present.shape)}")
    check_region_codes(codes, batch=student_evidence.shape[0])
    student_pooled, _ = _pool_evidence(student_evidence, codes)
    diff = torch.sigmoid(student_pooled / temperature) - torch.sigmoid(
        teacher_waves.detach().to(student_pooled.dtype) / temperature
    )
    error = diff.pow(2).mean(dim=1)
    mask = present.to(error.dtype)
    return (error * mask).sum() / mask.sum().clamp_min(1.0)


__all__.append("wave_evidence_loss")
