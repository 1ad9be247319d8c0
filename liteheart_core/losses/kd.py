"""Logit distillation for multi-label (sigmoid) outputs.

The teacher and the student each emit one independent logit per class, so the
distillation target is a product of Bernoulli distributions, not a softmax.
The per-class divergence is the binary Kullback-Leibler divergence between the
temperature-softened teacher and student probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from liteheart_core.losses._checks import check_floating, check_ndim, check_positive, check_same_shape


def binary_kl_from_logits(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Element-wise ``KL(Bern(sigmoid(t)) || Bern(sigmoid(s)))`` from logits.

    Parameters
    ----------
    student_logits : Tensor
        Logits ``s`` of the approximating distribution, any shape.
    teacher_logits : Tensor
        Logits ``t`` of the target distribution, same shape as ``student_logits``.

    Returns
    -------
    Tensor
        Element-wise divergence, same shape as the inputs, ``>= 0``.

    Notes
    -----
    Written as the Bregman divergence of ``softplus``:
    ``softplus(s) - softplus(t) - sigmoid(t) * (s - t)``. This form needs no
    ``log(p)`` of a saturated probability, so it stays finite for logits of any
    magnitude, and it is exactly zero when ``s == t`` (each term cancels
    bit-for-bit). Rounding can push a true zero a few ulps below zero, hence the
    final clamp; the clamp only bites where the gradient is already ~0.
    The teacher is *not* detached here; callers decide.
    """
    divergence = (
        F.softplus(student_logits)
        - F.softplus(teacher_logits)
        - torch.sigmoid(teacher_logits) * (student_logits - teacher_logits)
    )
    return divergence.clamp_min(0.0)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """Temperature-scaled knowledge distillation for multi-label sigmoid outputs.

    Computes ``T^2 * mean_{b,k} KL(Bern(sigmoid(t_bk / T)) || Bern(sigmoid(s_bk / T)))``.

    Parameters
    ----------
    student_logits : Tensor
        Student logits, shape ``[B, K]``.
    teacher_logits : Tensor
        Teacher logits, shape ``[B, K]``. Detached inside: the teacher is frozen
        and must never receive gradient from the distillation term.
    temperature : float, default 2.0
        Softening temperature ``T > 0``.

    Returns
    -------
    Tensor
        Scalar loss, ``>= 0``, exactly ``0`` when the logits are equal.

    Raises
    ------
    ValueError
        If the shapes differ, are not ``[B, K]``, are empty, or ``temperature <= 0``.

    Notes
    -----
    The gradient with respect to a student logit is ``T * (sigmoid(s/T) -
    sigmoid(t/T)) / (B*K)``; for moderate logits that is about
    ``(s - t) / (4 * B * K)`` whatever ``T`` is, which is why the ``T^2`` factor
    keeps the distillation weight comparable when ``T`` changes (Hinton et al.).
    """
    check_ndim(student_logits, 2, "student_logits", "[B, K]")
    check_ndim(teacher_logits, 2, "teacher_logits", "[B, K]")
    check_floating(student_logits, "student_logits")
    check_floating(teacher_logits, "teacher_logits")
    check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    check_positive(temperature, "temperature")
    if student_logits.numel() == 0:
        raise ValueError(f"kd_loss needs at least one logit, got shape {tuple(student_logits.shape)}")

    teacher = teacher_logits.detach().to(student_logits.dtype)
    divergence = binary_kl_from_logits(student_logits / temperature, teacher / temperature)
    return divergence.mean() * temperature**2
