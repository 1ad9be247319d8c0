"""Cross-layer mutual-information distillation with the InfoNCE bound.

For a pair (student stage ``i``, teacher stage ``j``) both feature maps are
pooled over time and projected into a shared embedding space. Within a batch,
row ``b`` of the student embedding and row ``b`` of the teacher embedding come
from the same record (a positive pair); every other row is a negative. The
InfoNCE loss ``L`` gives the lower bound ``I(student; teacher) >= log(B) - L``
(van den Oord et al., 2018), so minimising ``L`` maximises a bound on the
information the student stage carries about the teacher stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from liteheart_core.losses._checks import check_floating, check_ndim, check_positive, check_same_shape


def infonce(z_s: Tensor, z_t: Tensor, temperature: float = 0.1, *, symmetric: bool = True) -> tuple[Tensor, Tensor]:
    """InfoNCE loss and mutual-information lower bound between paired embeddings.

    Parameters
    ----------
    z_s : Tensor
        Student embeddings, shape ``[B, D]``.
    z_t : Tensor
        Teacher embeddings, shape ``[B, D]``; row ``b`` is the positive of
        ``z_s[b]``. Not detached here: a learnable teacher-side projection head
        must be trained too; detach the teacher *features* before the head.
    temperature : float, default 0.1
        Softmax temperature applied to cosine similarities.
    symmetric : bool, default True
        Average the student->teacher and teacher->student cross-entropies
        (each alone is a valid bound, so their mean is too). ``False`` keeps
        only student->teacher: each student row must pick its teacher row.

    Returns
    -------
    loss : Tensor
        Scalar InfoNCE loss, ``>= 0``.
    mi_lower_bound : Tensor
        Detached scalar ``log(B) - loss`` in nats, ``<= log(B)``.

    Raises
    ------
    ValueError
        If shapes differ, are not ``[B, D]``, ``B < 2`` or ``temperature <= 0``.

    Notes
    -----
    Embeddings are L2-normalised, so the bound saturates at ``log(B)``: compare
    bounds only between runs with the same batch size.
    """
    check_ndim(z_s, 2, "z_s", "[B, D]")
    check_ndim(z_t, 2, "z_t", "[B, D]")
    check_floating(z_s, "z_s")
    check_floating(z_t, "z_t")
    check_same_shape(z_s, z_t, "z_s", "z_t")
    check_positive(temperature, "temperature")
    batch = z_s.shape[0]
    if batch < 2:
        raise ValueError(f"infonce needs a batch of at least 2 rows for negatives, got {batch}")

    logits = F.normalize(z_s, dim=1) @ F.normalize(z_t.to(z_s.dtype), dim=1).T / temperature
    target = torch.arange(batch, device=z_s.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss, math.log(batch) - loss.detach()


def default_pairs(n_student_stages: int, n_teacher_stages: int) -> list[tuple[int, int]]:
    """Cross-depth (student stage, teacher stage) pairs, 0-based.

    Student stage ``l`` is aligned with teacher stage ``j = floor(l * n_t / n_s)``
    (the same relative depth) and paired with ``j`` and ``j + 1`` when it
    exists. With equal stage counts this gives ``(l, l)`` and ``(l, l + 1)``.

    Parameters
    ----------
    n_student_stages : int
        Number of student stages, ``>= 1``.
    n_teacher_stages : int
        Number of teacher stages, ``>= 1``.

    Returns
    -------
    list of (int, int)
        Sorted, duplicate-free pairs.

    Examples
    --------
    >>> default_pairs(3, 3)
    [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]
    >>> default_pairs(2, 4)
    [(0, 0), (0, 1), (1, 2), (1, 3)]
    """
    for name, value in (("n_student_stages", n_student_stages), ("n_teacher_stages", n_teacher_stages)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    pairs: set[tuple[int, int]] = set()
    for student_stage in range(n_student_stages):
        aligned = student_stage * n_teacher_stages // n_student_stages
        pairs.add((student_stage, aligned))
        if aligned + 1 < n_teacher_stages:
            pairs.add((student_stage, aligned + 1))
    return sorted(pairs)


class ProjectionHead(nn.Module):
    """Global average pool over time followed by a two-layer MLP.

    Parameters
    ----------
    in_channels : int
        Channels of the ``[B, C, L]`` feature map.
    dim : int
        Output embedding size.
    hidden : int
        Hidden width of the MLP.
    """

    def __init__(self, in_channels: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, feat: Tensor) -> Tensor:
        """Embed ``[B, C, L]`` features as ``[B, dim]``."""
        return self.mlp(feat.mean(dim=-1))


def _key(student_stage: int, teacher_stage: int) -> str:
    return f"s{student_stage}_t{teacher_stage}"


class CrossLayerMI(nn.Module):
    """InfoNCE mutual-information distillation across student/teacher stage pairs.

    Parameters
    ----------
    student_channels : sequence of int
        Channel count of each student stage.
    teacher_channels : sequence of int
        Channel count of each teacher stage.
    pairs : sequence of (int, int)
        0-based ``(student stage, teacher stage)`` pairs; cross-depth pairs such
        as ``(l, l + 1)`` are allowed. See :func:`default_pairs`.
    dim : int, default 64
        Shared embedding size.
    temperature : float, default 0.1
        InfoNCE temperature.
    hidden : int, optional
        Hidden width of the projection MLPs; defaults to ``dim``.

    Notes
    -----
    Each pair owns its own pair of projection heads, so one teacher stage can
    be read differently by two student stages. Teacher features are detached
    in :meth:`forward`; the teacher-side heads still learn. The heads belong
    to the distillation objective, not to the student: they need not be
    shipped with the student's weights.
    """

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        pairs: Sequence[tuple[int, int]],
        dim: int = 64,
        temperature: float = 0.1,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.student_channels = tuple(int(c) for c in student_channels)
        self.teacher_channels = tuple(int(c) for c in teacher_channels)
        if not self.student_channels or not self.teacher_channels:
            raise ValueError("student_channels and teacher_channels must each list at least one stage")
        if any(c < 1 for c in (*self.student_channels, *self.teacher_channels)):
            raise ValueError("channel counts must be positive")
        if not pairs:
            raise ValueError("pairs must hold at least one (student stage, teacher stage) pair")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        check_positive(temperature, "temperature")
        self.pairs: tuple[tuple[int, int], ...] = tuple((int(i), int(j)) for i, j in pairs)
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError(f"pairs contain duplicates: {list(pairs)}")
        for i, j in self.pairs:
            if not (0 <= i < len(self.student_channels) and 0 <= j < len(self.teacher_channels)):
                raise ValueError(
                    f"pair ({i}, {j}) is out of range for {len(self.student_channels)} student and "
                    f"{len(self.teacher_channels)} teacher stages (indices are 0-based)"
                )
        self.temperature = temperature
        width = dim if hidden is None else hidden
        self.student_heads = nn.ModuleDict(
            {_key(i, j): ProjectionHead(self.student_channels[i], dim, width) for i, j in self.pairs}
        )
        self.teacher_heads = nn.ModuleDict(
            {_key(i, j): ProjectionHead(self.teacher_channels[j], dim, width) for i, j in self.pairs}
        )

    def _check_feats(self, feats: Sequence[Tensor], channels: tuple[int, ...], who: str) -> None:
        if len(feats) != len(channels):
            raise ValueError(f"expected {len(channels)} {who} feature maps, got {len(feats)}")
        for index, (feat, expected) in enumerate(zip(feats, channels)):
            check_ndim(feat, 3, f"{who} stage {index} features", "[B, C, L]")
            check_floating(feat, f"{who} stage {index} features")
            if feat.shape[1] != expected:
                raise ValueError(f"{who} stage {index} features have {feat.shape[1]} channels, expected {expected}")

    def forward(
        self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """Mean InfoNCE loss over pairs and the per-pair MI lower bounds.

        Parameters
        ----------
        student_feats : sequence of Tensor
            One ``[B, C_i, L_i]`` map per student stage.
        teacher_feats : sequence of Tensor
            One ``[B, C_j, L_j]`` map per teacher stage (detached here).

        Returns
        -------
        loss : Tensor
            Scalar, mean of the per-pair InfoNCE losses.
        bounds : dict of str to float
            ``"mi_s{i}_t{j}"`` -> ``log(B) - loss`` for that pair, in nats.
        """
        self._check_feats(student_feats, self.student_channels, "student")
        self._check_feats(teacher_feats, self.teacher_channels, "teacher")
        batches = {f.shape[0] for f in (*student_feats, *teacher_feats)}
        if len(batches) != 1:
            raise ValueError(f"all feature maps must share one batch size, got {sorted(batches)}")

        losses = []
        bounds: dict[str, float] = {}
        for i, j in self.pairs:
            key = _key(i, j)
            z_s = self.student_heads[key](student_feats[i])
            z_t = self.teacher_heads[key](teacher_feats[j].detach())
            loss, bound = infonce(z_s, z_t, self.temperature)
            losses.append(loss)
            bounds[f"mi_{key}"] = float(bound)
        return torch.stack(losses).mean(), bounds
