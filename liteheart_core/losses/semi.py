"""Semi-supervised losses for multi-label (sigmoid) classifiers.

Labelled rows give an ordinary BCE; unlabelled rows learn from the teacher
(soft targets or confident pseudo-labels) and from agreement between a weakly
and a strongly augmented view of the same record.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from liteheart_core.losses._checks import (
    check_floating,
    check_ndim,
    check_probabilities,
    check_same_shape,
)
from liteheart_core.losses.kd import binary_kl_from_logits


def _check_logits_and_targets(logits: Tensor, targets: Tensor, targets_name: str) -> None:
    check_ndim(logits, 2, "logits", "[B, K]")
    check_floating(logits, "logits")
    check_ndim(targets, 2, targets_name, "[B, K]")
    check_same_shape(logits, targets, "logits", targets_name)


def masked_bce(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Binary cross-entropy over the labelled entries only.

    Parameters
    ----------
    logits : Tensor
        Student logits, shape ``[B, K]``.
    targets : Tensor
        Labels in ``[0, 1]``, shape ``[B, K]``. Entries outside ``mask`` are
        never read, so unlabelled rows may hold NaN or any placeholder.
    mask : Tensor
        Bool, shape ``[B]`` (labelled rows) or ``[B, K]`` (labelled entries).

    Returns
    -------
    Tensor
        Scalar mean BCE over the labelled entries; ``0`` (still attached to
        ``logits`` so ``backward`` works) when nothing is labelled.

    Raises
    ------
    ValueError
        On shape or dtype mismatches, or labelled targets outside ``[0, 1]``.
    """
    _check_logits_and_targets(logits, targets, "targets")
    check_floating(targets, "targets")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.shape == logits.shape[:1]:
        mask = mask.unsqueeze(1).expand_as(logits)
    elif mask.shape != logits.shape:
        raise ValueError(
            f"mask must have shape [B] = {tuple(logits.shape[:1])} or [B, K] = {tuple(logits.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    # where() rather than multiplication: 0 * NaN placeholder would still be NaN.
    safe_targets = torch.where(mask, targets.to(logits.dtype), torch.zeros_like(logits))
    check_probabilities(safe_targets, "labelled targets")
    per_entry = F.binary_cross_entropy_with_logits(logits, safe_targets, reduction="none")
    weight = mask.to(per_entry.dtype)
    return (per_entry * weight).sum() / weight.sum().clamp_min(1.0)


def soft_target_loss(student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
    """Binary KL from soft teacher probabilities to the student, mean over entries.

    Equal to BCE with soft targets minus the targets' entropy, so it is 0 (up
    to rounding) when ``sigmoid(student_logits) == teacher_probs`` and its
    gradient equals that of the soft-target BCE.

    Parameters
    ----------
    student_logits : Tensor
        Shape ``[B, K]``.
    teacher_probs : Tensor
        Probabilities in ``[0, 1]``, shape ``[B, K]``. Detached inside.

    Returns
    -------
    Tensor
        Scalar ``>= 0``; 0 for an empty batch.
    """
    _check_logits_and_targets(student_logits, teacher_probs, "teacher_probs")
    check_probabilities(teacher_probs, "teacher_probs")
    p = teacher_probs.detach().to(student_logits.dtype)
    # xlogy gives 0 * log 0 = 0 for hard 0/1 targets.
    entropy = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))
    bce = F.binary_cross_entropy_with_logits(student_logits, p, reduction="none")
    divergence = (bce - entropy).clamp_min(0.0)
    return divergence.sum() / max(divergence.numel(), 1)


def pseudo_label_loss(
    student_logits: Tensor,
    probs: Tensor,
    threshold: float = 0.9,
    *,
    normalize: Literal["all", "confident"] = "all",
) -> tuple[Tensor, float]:
    """BCE against hard pseudo-labels on the confident entries only.

    An entry counts as a confident positive if ``p >= threshold`` (label 1)
    and as a confident negative if ``p <= 1 - threshold`` (label 0); every
    other entry is ignored and gets exactly zero gradient.

    Parameters
    ----------
    student_logits : Tensor
        Shape ``[B, K]``.
    probs : Tensor
        Pseudo-labelling probabilities (teacher or weak view), ``[B, K]``.
        Detached inside.
    threshold : float, default 0.9
        Confidence threshold in ``(0.5, 1]``.
    normalize : {"all", "confident"}, default "all"
        ``"all"`` divides the summed BCE by all ``B*K`` entries (FixMatch: the
        term fades in as confidence grows); ``"confident"`` divides by the
        number of confident entries (a plain mean over them).

    Returns
    -------
    loss : Tensor
        Scalar, 0 when no entry is confident.
    fraction : float
        Fraction of the ``B*K`` entries that were confident (0.0 when empty).
    """
    _check_logits_and_targets(student_logits, probs, "probs")
    check_probabilities(probs, "probs")
    if not (isinstance(threshold, (int, float)) and 0.5 < threshold <= 1.0):
        raise ValueError(f"threshold must lie in (0.5, 1], got {threshold!r}")
    if normalize not in ("all", "confident"):
        raise ValueError(f"normalize must be 'all' or 'confident', got {normalize!r}")
    p = probs.detach()
    positive = p >= threshold
    confident = positive | (p <= 1.0 - threshold)
    per_entry = F.binary_cross_entropy_with_logits(student_logits, positive.to(student_logits.dtype), reduction="none")
    weight = confident.to(per_entry.dtype)
    total = (per_entry * weight).sum()
    if normalize == "all":
        loss = total / max(weight.numel(), 1)
    else:
        loss = total / weight.sum().clamp_min(1.0)
    fraction = float(weight.mean()) if weight.numel() else 0.0
    return loss, fraction


def consistency_loss(student_logits_strong: Tensor, student_logits_weak: Tensor) -> Tensor:
    """Make the strongly augmented view predict the weak view's probabilities.

    Parameters
    ----------
    student_logits_strong : Tensor
        Student logits on the strong view, ``[B, K]``; receives gradient.
    student_logits_weak : Tensor
        Student logits on the weak view, ``[B, K]``; detached (the weak view is
        the target, as in FixMatch/UDA, so the two views cannot collapse onto
        each other through it).

    Returns
    -------
    Tensor
        Scalar mean binary KL ``KL(sigmoid(weak) || sigmoid(strong))``,
        exactly 0 when the logits are equal; 0 for an empty batch.
    """
    check_ndim(student_logits_strong, 2, "student_logits_strong", "[B, K]")
    check_ndim(student_logits_weak, 2, "student_logits_weak", "[B, K]")
    check_floating(student_logits_strong, "student_logits_strong")
    check_floating(student_logits_weak, "student_logits_weak")
    check_same_shape(student_logits_strong, student_logits_weak, "student_logits_strong", "student_logits_weak")
    divergence = binary_kl_from_logits(
        student_logits_strong, student_logits_weak.detach().to(student_logits_strong.dtype)
    )
    return divergence.sum() / max(divergence.numel(), 1)
