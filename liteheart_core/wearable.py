"""Wearable clients: lead I only, no teacher on the device.

A wearable sees a degraded single lead (motion artefacts, electrode noise, its
own native rate) and learns from its mostly unlabelled recordings by
semi-supervised consistency against the current global student: an
exponential-moving-average copy of the student (mean teacher) gives confident
pseudo-labels on a weak view that the student must reproduce on a strong view,
plus BCE on whatever labels the wearable has.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from liteheart_core.config import WEARABLE_TEACHER_KINDS
from liteheart_core.data.signal import resample, standardise
from liteheart_core.losses import consistency_loss, masked_bce, pseudo_label_loss, strong_augment, weak_augment
from liteheart_core.models import Net
from liteheart_core.train import TrainConfig, resolve_device


@dataclass(frozen=True)
class WearableView:
    """How a dataset's lead I is turned into what a wearable would record."""

    degrade: bool = True
    native_rate: int = 250  # the device's own sampling rate; signals go there and back to the model's rate
    motion_artefacts: float = 0.5  # peak amplitude of motion steps/spikes, in standardised units
    electrode_noise: float = 0.15  # broadband noise std, in standardised units
    seed: int = 0


def wearable_signals(x: np.ndarray, fs: float, view: WearableView, lead: int = 0) -> np.ndarray:
    """Lead I of ``x`` [N, leads, T] as a wearable records it: [N, 1, T] float32, standardised per record.

    With ``degrade``: resampled to the device's native rate and back (its
    anti-alias filtering), electrode noise, and motion artefacts (baseline
    steps with exponential recovery and short spikes) at seeded random times.
    """
    one = np.asarray(x[:, lead : lead + 1], dtype=np.float32)
    if not view.degrade:
        return one
    rng = np.random.default_rng(view.seed)
    n, _, length = one.shape
    native = resample(resample(one, fs, view.native_rate), view.native_rate, fs)[..., :length]
    if native.shape[-1] < length:
        native = np.pad(native, ((0, 0), (0, 0), (0, length - native.shape[-1])))
    out = native + view.electrode_noise * rng.standard_normal(native.shape).astype(np.float32)
    t = np.arange(length) / fs
    for i in range(n):
        for _ in range(rng.poisson(1.5)):  # a few movements per 10 s
            start = rng.uniform(0, t[-1])
            step = view.motion_artefacts * rng.uniform(-1, 1)
            decay = np.where(t >= start, np.exp(-(t - start) / rng.uniform(0.3, 1.5)), 0.0)
            out[i, 0] += (step * decay).astype(np.float32)
            spike = int(start * fs)
            out[i, 0, spike : spike + max(1, int(0.04 * fs))] += view.motion_artefacts * rng.uniform(1, 3)
    return standardise(out)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Mean-teacher update: teacher <- decay * teacher + (1 - decay) * student."""
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(decay).add_(ps.detach(), alpha=1 - decay)


def wearable_round(
    student: Net,
    x: Tensor,
    y: Tensor,
    labelled: np.ndarray,
    cfg: TrainConfig,
    epochs: int,
    server_round: int,
    fs: float = 100.0,
    ema_decay: float = 0.99,
    threshold: float = 0.9,
    w_pseudo: float = 1.0,
    w_consistency: float = 1.0,
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One local round on a wearable: labels where present, mean-teacher pseudo-labels and consistency elsewhere.

    Parameters
    ----------
    x
        Lead-I recordings [N, 1, T] (the wearable never holds 12 leads).
    labelled
        Which records carry a label (may be none).

    Returns
    -------
    state, metrics
        The trained student weights and scalar metrics (same keys as a paired client's where they apply).
    """
    if x.ndim != 3 or x.shape[1] != 1:
        raise ValueError(f"a wearable holds lead-I recordings [N, 1, T], got {tuple(x.shape)}")
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    seed = cfg.seed * 100_003 + server_round
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    student = student.to(device).train()
    teacher = copy.deepcopy(student).eval()  # the EMA teacher starts at the global student just received
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, y = x.to(device), y.to(device)
    mask = torch.as_tensor(np.asarray(labelled, dtype=bool), device=device)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(x)
    steps = max(1, math.ceil(n / cfg.batch_size))
    sums: dict[str, float] = {}
    for _ in range(epochs * steps):
        it = torch.as_tensor(rng.choice(n, size=min(cfg.batch_size, n), replace=False), device=device)
        xb = x[it]
        weak, strong = weak_augment(xb, gen, fs=fs), strong_augment(xb, gen, fs=fs)
        with torch.no_grad():
            t_probs = torch.sigmoid(teacher(weak))
        logits_weak = student(weak)
        logits_strong = student(strong)
        bce = masked_bce(logits_weak, y[it], mask[it])
        pseudo, frac = pseudo_label_loss(logits_strong, t_probs, threshold)
        cons = consistency_loss(logits_strong, logits_weak)
        loss = bce + w_pseudo * pseudo + w_consistency * cons
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss on the wearable")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        opt.step()
        ema_update(teacher, student, ema_decay)
        for k, v in (("bce", bce), ("pseudo", pseudo), ("consistency", cons), ("total", loss)):
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["pseudo_fraction"] = sums.get("pseudo_fraction", 0.0) + frac
    metrics = {k: v / (epochs * steps) for k, v in sums.items()}
    metrics.update(
        {"num-examples": float(n), "labelled-examples": float(mask.sum()), "train-seconds": time.perf_counter() - t0}
    )
    return {k: v.detach().cpu() for k, v in student.state_dict().items()}, metrics


def wearable_teacher_config(
    kind: str,
    train_folds: tuple[int, ...],
    epochs: int = 30,
    seed: int = 0,
    device: str = "auto",
    task: str = "superdiagnostic",
) -> TrainConfig:
    """How the server trains a teacher for lead-I-only devices on its own labelled 12-lead archive.

    ``lead-dropout``
        The 12-lead teacher's network trained with lead dropout (p = 0.5: a quarter of the
        records show lead I alone), so that shown lead I with the other leads zero it still
        answers; it is the 12-lead teacher too.
    ``assistant``
        A lead-I network of the teacher's size (~4.7 M parameters) distilled from the
        12-lead teacher (vanilla KD plus the archive's labels): a teacher assistant that
        reads what a wearable records.
    """
    from dataclasses import asdict, replace

    from liteheart_core.models import teacher_config

    teacher = TrainConfig(
        method="teacher", task=task, epochs=epochs, lr=1e-3, seed=seed, device=device, train_folds=train_folds
    )
    if kind == "lead-dropout":
        return replace(teacher, lead_dropout=0.5)
    if kind == "assistant":
        return replace(teacher, method="kd", net=asdict(teacher_config()))
    raise ValueError(f"unknown wearable teacher kind {kind!r}; choose from {', '.join(WEARABLE_TEACHER_KINDS)}")
