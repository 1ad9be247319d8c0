"""Differential privacy for LiteHeart: record-level DP-SGD on a client, and the privacy accounting of a run.

Two guarantees, chosen per run with the ``dp`` key (see ``liteheart_core.config``):

- client level (``dp = client|server``): a client's whole update is clipped to
  ``dp-clip-norm`` (on the client by Flower's ``fixedclipping_mod``, or on the server)
  and the server adds Gaussian noise to the mean of the clipped updates (Flower's
  fixed-clipping wrappers). The unit protected is a client; the server is trusted.
- record level (``dp = dp-sgd``): every local step clips each record's gradient to
  ``dp-max-grad-norm`` and adds Gaussian noise before the optimiser sees it
  (Abadi et al., 2016). The unit protected is one ECG record (signal and labels) of
  a client; the server is not trusted with records.

Both are accounted with Opacus's RDP accountant of the sampled Gaussian mechanism
(Mironov et al., 2019). Per-sample gradients are computed here one record at a
time with autograd (micro-batches of one), not with Opacus's ``GradSampleModule``:
the region-evidence term reads the classifier's weights through ``F.conv1d``
rather than through the ``nn.Linear`` call Opacus hooks, so its hooks would miss
that part of each record's gradient. Only Opacus's accountant is used.

No Flower import here: the ClientApp keeps the per-client ledger in its context
and passes it in.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from liteheart_core.config import FedConfig
from liteheart_core.federated import LocalData
from liteheart_core.models import Net
from liteheart_core.train import Distiller, Trainable, TrainConfig, make_trainable, resolve_device, teacher_stage

CLIENT_LEVEL = ("client", "server")  # the dp modes with client-level DP (liteheart_core.config.DP_MODES)
DEFAULT_DELTA = 1e-5
DEFAULT_MAX_GRAD_NORM = 1.0
# RDP orders searched for the tightest epsilon: a coarser grid below 12 than Opacus's default (fractional
# orders cost most; a subset of orders can only loosen the bound: by <= 0.8% on this project's settings)
# and larger orders, which small budgets over few steps need
ORDERS = (
    [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    + list(range(12, 64))
    + [80, 96, 128, 192, 256, 512, 1024]
)
# terms whose value for one record depends on the other records of its batch: per-record
# clipping would not bound a record's influence on them, so DP-SGD switches them off
BATCH_COUPLED_TERMS = ("mi",)  # InfoNCE uses the other records of the batch as negatives


# ---------------------------------------------------------------------------------------------
# accounting


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` after a sequence of sampled Gaussian mechanisms (Opacus RDP accountant).

    Parameters
    ----------
    history : list of (noise_multiplier, sample_rate, steps)
        Each entry is ``steps`` releases of a sum of records' (or clients') contributions,
        each clipped to norm C, plus N(0, (noise_multiplier * C)^2) noise, every
        contributor included independently with probability ``sample_rate``
        (``sample_rate = 1``: everyone, no amplification).
    delta : float
        Target delta in (0, 1).

    Returns
    -------
    float
        Epsilon (0.0 for an empty history).
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    history = [(float(z), float(q), int(t)) for z, q, t in history if int(t) > 0]
    for z, q, _ in history:
        if not (z > 0 and math.isfinite(z)):
            raise ValueError(f"noise multiplier must be a finite number > 0, got {z}")
        if not 0 < q <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {q}")
    return _rdp_epsilon(tuple(history), float(delta)) if history else 0.0


@lru_cache(maxsize=256)  # every client asks the same questions every round; each answer costs ~0.1 s
def _rdp_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    from opacus.accountants import RDPAccountant  # 1-2 s to import: only DP runs pay it

    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta, alphas=ORDERS))


@lru_cache(maxsize=64)
def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier that spends ``target_epsilon`` at ``delta`` over ``steps`` sampled releases."""
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"target epsilon must be a finite number > 0, got {target_epsilon}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
            epsilon_tolerance=0.005,
            alphas=ORDERS,
        )
    )


@dataclass(frozen=True)
class ClientLevelDP:
    """Client-level DP of a run: clipping norm, noise multiplier and delta, resolved from the run config."""

    clip_norm: float
    noise_multiplier: float
    delta: float
    sample_rate: float  # fraction of the population sampled per round
    rounds: int

    @classmethod
    def resolve(
        cls,
        clip_norm: float,
        noise_multiplier: float,
        target_epsilon: float,
        delta: float,
        sampled: int,
        population: int,
        rounds: int,
    ) -> ClientLevelDP:
        """Noise from the given multiplier, or the one that spends ``target_epsilon`` over ``rounds``."""
        if not 1 <= sampled <= population:
            raise ValueError(f"clients sampled per round ({sampled}) must be in [1, {population}]")
        delta = delta or DEFAULT_DELTA
        q = sampled / population
        z = noise_multiplier or noise_for_epsilon(target_epsilon, delta, q, rounds)
        return cls(clip_norm, z, delta, q, rounds)

    def epsilon(self, released_rounds: int) -> float:
        """Epsilon after ``released_rounds`` noised aggregates."""
        return rdp_epsilon([(self.noise_multiplier, self.sample_rate, released_rounds)], self.delta)


# ---------------------------------------------------------------------------------------------
# record-level DP-SGD


@dataclass(frozen=True)
class DPSGDConfig:
    """Record-level DP-SGD settings of a run (``dp-*`` keys of the round config)."""

    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    delta: float = DEFAULT_DELTA
    target_epsilon: float = 0.0  # spend this over the planned rounds (0: use noise_multiplier)
    noise_multiplier: float = 0.0
    planned_rounds: int = 1

    def __post_init__(self) -> None:
        if not (self.max_grad_norm > 0 and math.isfinite(self.max_grad_norm)):
            raise ValueError(f"dp-max-grad-norm must be a finite number > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp-delta must be in (0, 1), got {self.delta}")
        if (self.target_epsilon > 0) == (self.noise_multiplier > 0):
            raise ValueError(
                "dp-sgd needs exactly one of dp-epsilon (> 0) and dp-noise-multiplier (> 0), "
                f"got {self.target_epsilon} and {self.noise_multiplier}"
            )
        if self.planned_rounds < 1:
            raise ValueError(f"planned rounds must be >= 1, got {self.planned_rounds}")

    @classmethod
    def from_run(cls, cfg: FedConfig) -> DPSGDConfig:
        """A run's dp-* settings; a numeric one at 0 is unset (``liteheart_core/config.py``), so its default applies."""
        return cls(
            max_grad_norm=cfg.dp_max_grad_norm or DEFAULT_MAX_GRAD_NORM,
            delta=cfg.dp_delta or DEFAULT_DELTA,
            target_epsilon=cfg.dp_epsilon,
            noise_multiplier=cfg.dp_noise_multiplier,
            planned_rounds=cfg.rounds,
        )


@dataclass
class Ledger:
    """A client's privacy spending: runs of (noise multiplier, sample rate, steps), oldest first."""

    history: list[tuple[float, float, int]]

    def add(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            z, q, t = self.history[-1]
            self.history[-1] = (z, q, t + steps)
        else:
            self.history.append((noise_multiplier, sample_rate, steps))

    def epsilon(self, delta: float) -> float:
        return rdp_epsilon(self.history, delta)

    @property
    def steps(self) -> int:
        return sum(t for _, _, t in self.history)

    def to_lists(self) -> dict[str, list]:
        return {
            "noise": [z for z, _, _ in self.history],
            "rate": [q for _, q, _ in self.history],
            "steps": [t for _, _, t in self.history],
        }

    @classmethod
    def from_lists(cls, lists: dict | None) -> Ledger | None:
        if not lists:
            return None
        return cls([(float(z), float(q), int(t)) for z, q, t in zip(lists["noise"], lists["rate"], lists["steps"])])


def dp_sgd_train_config(cfg: TrainConfig) -> TrainConfig:
    """The training config under DP-SGD: batch-coupled terms off (see ``BATCH_COUPLED_TERMS``)."""
    return replace(cfg, weights=replace(cfg.loss_weights, **{k: 0.0 for k in BATCH_COUPLED_TERMS}))


def sampling_plan(n_records: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """Poisson sample rate (expected batch ``batch_size``) and steps of one local round."""
    if n_records < 1:
        raise ValueError("DP-SGD needs at least one training record")
    q = min(1.0, batch_size / n_records)
    return q, epochs * max(1, math.ceil(n_records / batch_size))


def check_no_buffers(model: nn.Module) -> None:
    """DP noise goes on every shared array: a running-statistics buffer would be noised into nonsense (NaN)."""
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        raise ValueError(
            f"differential privacy needs a model without normalisation buffers; this one has "
            f"{', '.join(buffers[:3])}: use GroupNorm/LayerNorm (the student's norm='group')"
        )


class _PerRecord(nn.Module):
    """The student and the distiller's adapters as one module, so ``torch.func`` can take each record's gradient."""

    student: Net
    distiller: Distiller | None

    def __init__(self, student: Net, distiller: Distiller | None) -> None:
        super().__init__()
        self.student = student
        self.distiller = distiller

    def forward(
        self, x: Tensor, strong: Tensor | None, pairs: list[int]
    ) -> tuple[Tensor, list[Tensor], Tensor, Tensor | None]:
        logits, feats = self.student.forward_features(x)
        adapters: nn.ModuleDict | dict[str, nn.Module] = (
            self.distiller.adapters if self.distiller else {}
        )  # none: no pairs
        adapted = [adapters[str(s)](feats[s]) for s in pairs]
        fc = self.student.fc
        evidence = F.conv1d(feats[-1], fc.weight.unsqueeze(-1), fc.bias)  # Net.class_evidence
        return logits, adapted, evidence, (self.student(strong) if strong is not None else None)


def _standardize(feat: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    # liteheart_core.losses.region._weighted_standardize, written out so that torch.func can map it
    w = weight.unsqueeze(1)
    total = w.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(feat.dtype).tiny)
    mean = (w * feat).sum(dim=-1, keepdim=True) / total
    var = (w * (feat - mean).pow(2)).sum(dim=-1, keepdim=True) / total
    return (feat - mean) / torch.sqrt(var + eps)


def _batch_inputs(tr: Trainable, cfg: TrainConfig, it: Tensor, gen: torch.Generator, fs: float) -> dict:
    """Everything of a batch that does not depend on the trained weights: views, teacher targets, region maps.

    Computed once for the batch; the per-record function below then only runs the
    trained modules. The random views are drawn as ``_objective`` draws them.
    """
    from liteheart_core.losses import region as R
    from liteheart_core.losses import strong_augment, weak_augment
    from liteheart_core.train import UNIFORM

    w = cfg.loss_weights
    x = tr.x[it]
    b: dict[str, Any] = {"x": x, "y": tr.y[it], "lab": tr.mask[it].to(x.dtype)}
    codes = tr.codes[it] if tr.codes is not None else None
    t_logits = tr.t_logits[it] if tr.t_logits is not None else None
    t_feats = [f[it] if f is not None else None for f in tr.t_feats] if tr.t_feats is not None else None
    d = tr.distiller
    b["pairs"] = list(d.pairs) if d is not None and t_feats is not None else []
    if b["pairs"] and t_feats is not None:
        region_w = cfg.region_weights if cfg.region_aware else UNIFORM
        fcodes = codes if codes is not None else torch.zeros(x.shape[0], x.shape[-1], dtype=torch.long, device=x.device)
        b["feat_w"], b["feat_t"] = [], []
        for s in b["pairs"]:
            teacher = teacher_stage(t_feats, s).float()
            weight = R._weight_map(fcodes, region_w, teacher.shape[-1], teacher.dtype)
            b["feat_w"].append(weight)
            b["feat_t"].append(_standardize(teacher, weight))
    b["evidence"] = bool(
        d is not None
        and t_feats is not None
        and w.evidence > 0
        and cfg.region_aware
        and codes is not None
        and tr.teacher is not None
        and t_feats[-1] is not None
    )
    if b["evidence"] and tr.teacher is not None and t_feats is not None and codes is not None:
        with torch.no_grad():
            t_ev = tr.teacher.class_evidence(teacher_stage(t_feats, -1).float())
        pooled, present = R._pool_evidence(t_ev, codes)
        b["ev_t"] = torch.sigmoid(pooled / 2.0)  # region_evidence_loss's default temperature
        b["ev_present"] = present.to(x.dtype)
        length = math.ceil(x.shape[-1] / tr.model.stage_strides[-1])  # the student's last stage
        b["ev_frac"] = torch.stack(
            [R._weight_map(codes, R._SELECT_WAVE[c], length, x.dtype) for c in R.WAVE_CODES], dim=1
        )  # [B, 3, L]
    b["t_logits"] = t_logits if t_logits is not None and w.kd > 0 else None
    b["semi"] = t_logits is not None and (w.pseudo > 0 or w.consistency > 0)
    if b["semi"] and t_logits is not None:
        weak = weak_augment(x, gen, fs=fs)
        b["strong"] = strong_augment(x, gen, fs=fs)
        with torch.no_grad():
            b["weak_logits"] = tr.model(weak)
        b["t_probs"] = torch.sigmoid(t_logits)
    return b


def _record_loss(
    params: dict[str, Tensor], module: _PerRecord, cfg: TrainConfig, b: dict, r: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The LiteHeart objective of ONE record (``r``: its slice of the batch inputs), as ``_objective`` computes it
    for a batch of one; written without the losses' input checks, which ``torch.func`` cannot map."""
    from liteheart_core.losses.kd import binary_kl_from_logits

    w = cfg.loss_weights
    one = {k: v.unsqueeze(0) for k, v in r.items()}
    logits, adapted, evidence, strong_logits = torch.func.functional_call(
        module, params, (one["x"], one.get("strong"), b["pairs"])
    )
    lab = one["lab"][0]
    target = torch.where(lab > 0, one["y"], torch.zeros_like(one["y"]))  # an unlabelled row's y is never read
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean() * lab
    terms = {"bce": bce}
    if b["t_logits"] is not None:
        t = cfg.temperature
        terms["kd"] = binary_kl_from_logits(logits / t, one["t_logits"] / t).mean() * t**2
    if b["pairs"]:
        parts = []
        for j in range(len(b["pairs"])):
            student, weight, teacher = adapted[j], one[f"feat_w{j}"], one[f"feat_t{j}"]
            if student.shape[-1] != teacher.shape[-1]:
                student = F.interpolate(student, size=teacher.shape[-1], mode="linear", align_corners=False)
            error = (_standardize(student, weight) - teacher).pow(2).mean(dim=1)
            parts.append((weight * error).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny))
        terms["feature"] = torch.stack(parts).mean()
    if b["evidence"]:
        frac = one["ev_frac"]  # [1, 3, L]
        mass = frac.sum(dim=-1).clamp_min(torch.finfo(frac.dtype).tiny)  # [1, 3]
        pooled = torch.einsum("bkl,brl->bkr", evidence, frac) / mass.unsqueeze(1)
        error = (torch.sigmoid(pooled / 2.0) - one["ev_t"]).pow(2).mean(dim=1)  # [1, 3]
        present = one["ev_present"]
        terms["evidence"] = (error * present).sum() / present.sum().clamp_min(1.0)
    if b["semi"]:
        if w.pseudo > 0:  # FixMatch pseudo-labels on unlabelled records only
            p = one["t_probs"]
            confident = ((p >= cfg.pseudo_threshold) | (p <= 1.0 - cfg.pseudo_threshold)).to(p.dtype)
            target = (p >= cfg.pseudo_threshold).to(p.dtype)
            per_entry = F.binary_cross_entropy_with_logits(strong_logits, target, reduction="none")
            terms["pseudo"] = (per_entry * confident).mean() * (1.0 - lab)
        if w.consistency > 0:
            terms["consistency"] = binary_kl_from_logits(strong_logits, one["weak_logits"]).mean()
    total = sum(getattr(w, k) * v for k, v in terms.items())
    return total, {**terms, "total": total}


def per_record_grads(
    tr: Trainable, cfg: TrainConfig, it: Tensor, gen: torch.Generator, fs: float
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Each record's gradient (``[B, *param.shape]`` per trainable parameter) and the mean of every loss term."""
    b = _batch_inputs(tr, cfg, it, gen, fs)
    module = _PerRecord(tr.model, tr.distiller)
    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}
    rows = {"x": b["x"], "y": b["y"], "lab": b["lab"]}
    for key in ("t_logits", "strong", "weak_logits", "t_probs", "ev_frac", "ev_t", "ev_present"):
        if b.get(key) is not None:
            rows[key] = b[key]
    for j in range(len(b["pairs"])):
        rows[f"feat_w{j}"], rows[f"feat_t{j}"] = b["feat_w"][j], b["feat_t"][j]
    grad_fn = torch.func.grad(lambda prm, r: _record_loss(prm, module, cfg, b, r), has_aux=True)
    grads, terms = torch.func.vmap(grad_fn, in_dims=(None, 0), randomness="different")(params, rows)
    return grads, {k: float(v.mean()) for k, v in terms.items()}


def clip_and_sum(grads: dict[str, Tensor], max_grad_norm: float) -> tuple[dict[str, Tensor], Tensor]:
    """Scale each record's gradient to norm <= ``max_grad_norm`` and sum over records; also returns the
    norms before clipping."""
    norms = torch.sqrt(torch.stack([g.flatten(1).pow(2).sum(dim=1) for g in grads.values()]).sum(dim=0))
    factor = (max_grad_norm / (norms + 1e-12)).clamp(max=1.0)
    return {k: torch.einsum("b,b...->...", factor, g) for k, g in grads.items()}, norms


def dp_sgd_local_round(
    student: Net,
    teacher: Net | None,
    local: LocalData,
    cfg: TrainConfig,
    epochs: int,
    server_round: int,
    dp: DPSGDConfig,
    ledger: Ledger | None,
    proximal_mu: float = 0.0,
    distiller_state: dict | None = None,
) -> tuple[dict[str, Tensor], dict[str, float], dict, Ledger]:
    """A local round of DP-SGD: Poisson-sampled records, per-record clipping, Gaussian noise, AdamW.

    ``local`` is a ``liteheart_core.federated.LocalData``. The noise multiplier is
    the one that spends ``dp.target_epsilon`` after ``dp.planned_rounds`` rounds
    of ``epochs`` epochs (or ``dp.noise_multiplier``); ``ledger`` is the client's
    spending in earlier rounds (``None`` for a node without one: it is then assumed
    to have trained in every earlier round, which over-states, never under-states,
    its epsilon).

    Returns
    -------
    state, metrics, distiller_state, ledger
        Metrics hold the loss terms (for the node's own log: they are computed from
        records and not covered by the guarantee), ``dp-epsilon``, ``dp-delta``,
        ``dp-noise-multiplier``, ``dp-steps``, ``dp-max-grad-norm-seen``.
    """
    t0 = time.perf_counter()
    check_no_buffers(student)
    if cfg.spec.uses_bank:
        raise ValueError(
            f"dp-sgd has no per-record objective for method {cfg.method} (its view bank mixes records); "
            "use kd, fitnets or liteheart (v1)"
        )
    cfg = dp_sgd_train_config(cfg)
    device = resolve_device(cfg.device)
    seed = cfg.seed * 100_003 + server_round
    torch.manual_seed(seed)  # dropout and augmentations: reproducible, and not what protects records
    gen = torch.Generator(device=device).manual_seed(seed)
    # record sampling and noise must be secret: never derive them from the run seed, which the server knows
    # (seeded from std::random_device; not a cryptographic generator like Opacus's secure_mode)
    secret = torch.Generator(device=device)
    secret.seed()
    n = local.n_train
    q, steps = sampling_plan(n, cfg.batch_size, epochs)
    if ledger is None:
        ledger = Ledger([])
    sigma = dp.noise_multiplier or noise_for_epsilon(dp.target_epsilon, dp.delta, q, steps * dp.planned_rounds)
    if not ledger.history and server_round > 1:
        ledger.add(sigma, q, steps * (server_round - 1))
    key = (getattr(teacher, "content_hash", id(teacher)), cfg.method, "dp-sgd")
    tr = make_trainable(
        student,
        cfg,
        local.x,
        local.y,
        local.labelled,
        local.regions,
        device,
        teacher if cfg.spec.needs_teacher else None,
        targets=local.teacher_cache.get(key),
    )
    if tr.t_logits is not None:  # the teacher is frozen: its targets are reused across rounds
        local.teacher_cache.clear()
        local.teacher_cache[key] = (tr.t_logits, tr.t_feats)
    if tr.distiller is not None and distiller_state:
        tr.distiller.load_state_dict(distiller_state)
    params = [p for p in tr.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in student.parameters()] if proximal_mu > 0 else None
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    c = dp.max_grad_norm
    expected_batch = q * n
    tr.model.train()
    sums: dict[str, float] = {}
    max_norm = 0.0
    module = _PerRecord(tr.model, tr.distiller)
    named = {k: p for k, p in module.named_parameters() if p.requires_grad}
    for _ in range(steps):
        it = torch.nonzero(torch.rand(n, generator=secret, device=device) < q).flatten()
        if len(it):
            grads, log = per_record_grads(tr, cfg, it, gen, local.fs)
            summed, norms = clip_and_sum(grads, c)
        else:  # an empty Poisson batch still releases noise, and counts as a step
            summed, log, norms = {k: torch.zeros_like(p) for k, p in named.items()}, {}, torch.zeros(0)
        for k, p in named.items():
            noise = torch.randn(p.shape, generator=secret, device=device) * (sigma * c)
            p.grad = (summed[k] + noise) / expected_batch
        if anchor is not None:  # the proximal term reads no record: added after the noise
            for p, a in zip(student.parameters(), anchor):
                if p.grad is not None:  # every trainable parameter got its noised gradient above
                    p.grad.add_(p.detach() - a, alpha=proximal_mu)
        opt.step()
        opt.zero_grad(set_to_none=True)
        max_norm = max(max_norm, float(norms.max()) if len(norms) else 0.0)
        for k, v in log.items():
            sums[k] = sums.get(k, 0.0) + v
    ledger.add(sigma, q, steps)
    metrics = {k: v / steps for k, v in sums.items()}
    metrics.update(
        {
            "num-examples": float(n),
            "labelled-examples": float(local.labelled.sum()),
            "dp-epsilon": ledger.epsilon(dp.delta),
            "dp-delta": dp.delta,
            "dp-noise-multiplier": sigma,
            "dp-steps": float(ledger.steps),
            "dp-sample-rate": q,
            "dp-max-grad-norm-seen": max_norm,
            "train-seconds": time.perf_counter() - t0,
        }
    )
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    dstate = {k: v.detach().cpu() for k, v in tr.distiller.state_dict().items()} if tr.distiller else {}
    return state, metrics, dstate, ledger
