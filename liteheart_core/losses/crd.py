"""Contrastive representation distillation against a memory of teacher embeddings.

In-batch InfoNCE (``mi.infonce``) over 64 records mostly learns to tell those 64
records apart. Contrasting each student embedding with its own teacher embedding
against *many* teacher embeddings of other records (Tian et al., CRD, 2020) raises the
bound's ceiling to ``log(1 + M)`` and, because the teacher's embeddings of records of
the same class lie close together, rewards the student for placing a record where the
teacher's class structure puts it.

The teacher's embeddings are fixed (cached in the view bank), so the memory is simply a
random sample of them: no momentum encoder and no queue to maintain.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from liteheart_core.losses._checks import check_floating, check_ndim, check_positive, check_same_shape


def memory_infonce(z_s: Tensor, z_t: Tensor, memory: Tensor, temperature: float = 0.1) -> tuple[Tensor, Tensor]:
    """InfoNCE of each student row against its teacher row and ``M`` teacher negatives.

    ``loss = mean_b -log( exp(<s_b, t_b>/tau) / (exp(<s_b, t_b>/tau) + sum_m exp(<s_b, n_m>/tau)) )``
    with every vector L2-normalised.

    Parameters
    ----------
    z_s : Tensor
        Student embeddings ``[B, D]`` (projected; gradients flow).
    z_t : Tensor
        Teacher embeddings ``[B, D]``, the positives. Detached inside.
    memory : Tensor
        Teacher embeddings of other records ``[M, D]``, the negatives. Detached inside.
    temperature : float, default 0.1

    Returns
    -------
    loss : Tensor
        Scalar, ``>= 0``.
    mi_lower_bound : Tensor
        Detached ``log(1 + M) - loss`` in nats.

    Raises
    ------
    ValueError
        On shapes that are not ``[B, D]`` / ``[M, D]`` with one ``D``, an empty memory, or ``temperature <= 0``.
    """
    check_ndim(z_s, 2, "z_s", "[B, D]")
    check_ndim(z_t, 2, "z_t", "[B, D]")
    check_ndim(memory, 2, "memory", "[M, D]")
    for t, name in ((z_s, "z_s"), (z_t, "z_t"), (memory, "memory")):
        check_floating(t, name)
    check_same_shape(z_s, z_t, "z_s", "z_t")
    check_positive(temperature, "temperature")
    if memory.shape[0] == 0 or memory.shape[1] != z_s.shape[1]:
        raise ValueError(f"memory must be [M >= 1, {z_s.shape[1]}], got {tuple(memory.shape)}")
    s = F.normalize(z_s, dim=1)
    pos = (s * F.normalize(z_t.detach().to(s.dtype), dim=1)).sum(1, keepdim=True)
    neg = s @ F.normalize(memory.detach().to(s.dtype), dim=1).T
    logits = torch.cat([pos, neg], dim=1) / temperature
    loss = F.cross_entropy(logits, torch.zeros(len(s), dtype=torch.long, device=s.device))
    return loss, math.log(1 + memory.shape[0]) - loss.detach()


__all__ = ["memory_infonce"]
