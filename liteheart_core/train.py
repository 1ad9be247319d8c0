"""Centralised training: the 12-lead teacher, and lead-I students by every method.

One linear loop (nanoGPT-style). Data are prepared arrays held in memory; the frozen
teacher's targets are computed once per run: on the clean record (``kd``, ``fitnets``,
LiteHeart v1), or on a bank of fixed augmented views of every record (LiteHeart v2,
:mod:`liteheart_core.views`), so a step never runs the teacher.

Methods (the table, with what each needs, is :mod:`liteheart_core.methods`)
-------
``teacher``       12-lead supervised BCE (optionally with lead dropout).
``supervised``    lead-I student, BCE on the labelled records only.
``kd``            + temperature-scaled distillation of the teacher's outputs on all records.
``fitnets``       + feature imitation through 1x1 adapters, uniform over time.
``liteheart``     v1: + region-weighted feature and class-evidence distillation, cross-layer
                  in-batch InfoNCE, teacher pseudo-labels and weak/strong consistency.
``liteheart-v2``  consistent teaching on the view bank (mixup views included), KD,
                  contrastive distillation of the teacher's embedding against a memory of
                  teacher embeddings, and per-wave (P/QRS/T) class-evidence distillation.
Ablations: ``liteheart-no-region/-no-mi/-no-semi`` (v1), ``liteheart-v2-no-views/-no-mix/-no-crd/-no-region``.
Every student method sees the same weak augmentation on its labelled path.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from liteheart_core.data.dataset import PreparedData
from liteheart_core.data.signal import lead_indices
from liteheart_core.data.splits import SPLITS, labelled_subset
from liteheart_core.fields import typed_values
from liteheart_core.losses import (
    CrossLayerMI,
    RegionAdapter,
    consistency_loss,
    default_pairs,
    kd_loss,
    masked_bce,
    pseudo_label_loss,
    region_evidence_loss,
    region_feature_loss,
    strong_augment,
    wave_evidence_loss,
    weak_augment,
)
from liteheart_core.methods import (  # noqa: F401  (re-exported: the table is asked for through train too)
    DEFAULT_METHOD,
    METHOD_TABLE,
    METHODS,
    STUDENT_METHODS,
    LossWeights,
    Method,
    method_spec,
)
from liteheart_core.metrics import evaluate, summarise, tune_thresholds
from liteheart_core.models import Net, build_net, student_config, teacher_config
from liteheart_core.views import BatchView, ViewBank, batch_view, cached_view_bank, teacher_view, weak_view

UNIFORM = (1.0, 1.0, 1.0, 1.0)


def method_weights(method: str) -> tuple[LossWeights, bool]:
    """Loss weights of a method, and whether its v1 feature term is region-weighted."""
    spec = method_spec(method)
    return spec.weights, spec.region_aware


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored in the checkpoint)."""

    method: str = DEFAULT_METHOD
    task: str = "superdiagnostic"
    student_lead: str = "I"
    labelled_fraction: float = 1.0
    epochs: int = 30
    patience: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    temperature: float = 2.0
    region_weights: tuple[float, float, float, float] = (0.2, 1.0, 1.0, 1.0)  # background, P, QRS, T
    feature_stages: tuple[int, ...] = (1, 2, 3)
    pseudo_threshold: float = 0.9
    train_folds: tuple[int, ...] = SPLITS["train"]
    val_folds: tuple[int, ...] = SPLITS["val"]
    test_folds: tuple[int, ...] = SPLITS["test"]  # carried by the checkpoint: what `evaluate --split test` scores
    crd_temperature: float = 0.1
    crd_memory: int = 1024  # teacher embeddings contrasted with each student embedding
    embed_dim: int = 64  # whitened PCA components of the teacher's pooled features
    mix_alpha: float = 0.4
    view_seed: int = 0  # seeds the view bank, so one bank serves every student of a teacher
    lead_dropout: float = 0.0  # teacher only: each lead but the student's is zeroed with this probability per record
    views: int = 0  # view-bank methods: views per record (0: the method's own)
    mix_views: int = -1  # of which mixups (-1: the method's own)
    view_jitter: bool = False  # a fresh weak augmentation on top of the bank's view, every step
    teacher_input: str = "all"  # view-bank methods: "all" twelve leads, or "student": the student's leads alone
    weights: LossWeights | None = None  # None: the method's defaults
    net: dict | None = None  # network config override (NetConfig fields); None: teacher/student defaults

    def __post_init__(self) -> None:
        method_spec(self.method)
        overlap = (set(self.train_folds) & set(self.val_folds)) | (
            set(self.test_folds) & (set(self.train_folds) | set(self.val_folds))
        )
        if overlap:
            raise ValueError(
                f"train_folds {list(self.train_folds)}, val_folds {list(self.val_folds)} and test_folds "
                f"{list(self.test_folds)} must not share a fold (shared: {sorted(overlap)})"
            )
        if not self.train_folds or not self.val_folds:
            raise ValueError("train_folds and val_folds must each name at least one fold")
        if not 0 < self.labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.views < 0 or (self.views and not self.spec.uses_bank):
            raise ValueError(
                f"views must be >= 0 and only set for a view-bank method, got {self.views} for {self.method}"
            )
        if self.mix_views >= max(1, self.bank_views):
            raise ValueError(f"mix_views ({self.mix_views}) must leave at least one plain view of {self.bank_views}")
        if self.teacher_input not in ("all", "student"):
            raise ValueError(f"teacher_input must be 'all' or 'student', got {self.teacher_input!r}")
        if self.teacher_input != "all" and not self.spec.uses_bank:
            raise ValueError(f"teacher_input applies to view-bank methods; {self.method} has none")
        if not 0 <= self.lead_dropout < 1:
            raise ValueError(f"lead_dropout must be in [0, 1), got {self.lead_dropout}")
        if self.lead_dropout > 0 and self.spec.student:
            raise ValueError(f"lead_dropout trains a teacher; method {self.method!r} has no 12-lead input to drop")
        if not 0.5 <= self.pseudo_threshold < 1:
            raise ValueError(f"pseudo_threshold must be in [0.5, 1), got {self.pseudo_threshold}")

    @property
    def spec(self) -> Method:
        return method_spec(self.method)

    @property
    def loss_weights(self) -> LossWeights:
        return self.weights or self.spec.weights

    @property
    def region_aware(self) -> bool:
        return self.spec.region_aware

    @property
    def bank_views(self) -> int:
        return self.views or self.spec.views

    @property
    def bank_mix_views(self) -> int:
        return self.spec.mix_views if self.mix_views < 0 else self.mix_views

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Settings from a dict (a checkpoint's, the CLI's); bad keys and values are errors naming the key."""
        data = typed_values(cls, data, "training settings")
        if isinstance(data.get("weights"), dict):
            data["weights"] = LossWeights(**typed_values(LossWeights, data["weights"], "training settings weights"))
        for key, kind in (("weights", LossWeights), ("net", dict)):
            if data.get(key) is not None and not isinstance(data[key], kind):
                raise ValueError(f"bad training settings: {key} = {data[key]!r} is not a table")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


@torch.no_grad()
def predict(
    model: nn.Module, x: np.ndarray | Tensor, device: torch.device, batch: int = 256, bf16: bool = False
) -> np.ndarray:
    """Sigmoid probabilities [N, C] of a model over signals [N, leads, T]."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.as_tensor(np.asarray(x[i : i + batch]), dtype=torch.float32, device=device)
        with autocast(device, bf16):
            out.append(torch.sigmoid(model(xb).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


@dataclass
class Split:
    """Signals, labels and regions of one split, in memory."""

    x: Tensor  # [N, 12, T] float32
    y: Tensor  # [N, C] float32
    regions: Tensor | None  # [N, T] int64
    rows: np.ndarray


def load_split(data: PreparedData, task: str, folds: tuple[int, ...]) -> Split:
    rows = data.rows(task, folds=list(folds))
    if len(rows) == 0:
        raise ValueError(f"{data.root}: no record with a {task} label in folds {list(folds)}")
    _, y = data.labels(task)
    regions = None
    if data.regions is not None:
        regions = torch.as_tensor(np.asarray(data.regions[rows]), dtype=torch.int64)
    return Split(
        torch.as_tensor(data.x(rows), dtype=torch.float32), torch.as_tensor(y[rows], dtype=torch.float32), regions, rows
    )


@dataclass
class TrainResult:
    model: Net
    thresholds: np.ndarray
    val_metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    labelled: int = 0
    setup_seconds: float = 0.0  # one-off: moving the data, the teacher's targets or view bank
    windows_per_second: float = 0.0  # training throughput of the optimisation steps alone


@torch.no_grad()
def teacher_targets(
    teacher: Net,
    x: Tensor,
    stages: list[int],
    device: torch.device,
    batch: int = 128,
    bf16: bool = False,
    teacher_leads: list[int] | None = None,
) -> tuple[Tensor, list[Tensor | None]]:
    """Teacher logits and the chosen stage features for every record, computed once (float16 on the device).

    ``teacher_leads``: where the records' leads go among the teacher's (see ``views.teacher_view``)."""
    teacher.eval()
    logits: list[Tensor] = []
    feats: dict[int, list[Tensor]] = {s: [] for s in stages}
    for i in range(0, len(x), batch):
        xb = teacher_view(x[i : i + batch].to(device), teacher.n_leads, teacher_leads)
        with autocast(device, bf16):
            out, fs = teacher.forward_features(xb)
        logits.append(out.float())
        for s in stages:
            feats[s].append(fs[s].to(torch.float16))
    return torch.cat(logits), [torch.cat(feats[s]) if s in feats else None for s in range(max(stages) + 1)]


class Distiller(nn.Module):
    """The trainable parts of distillation besides the student: adapters and MI projection heads."""

    def __init__(self, student: Net, teacher: Net, cfg: TrainConfig) -> None:
        super().__init__()
        w = cfg.loss_weights
        self.pairs = list(cfg.feature_stages) if w.feature > 0 else []
        self.adapters = nn.ModuleDict(
            {str(s): RegionAdapter(student.stage_channels[s], teacher.stage_channels[s]) for s in self.pairs}
        )
        self.mi = None
        if w.mi > 0:
            pairs = default_pairs(len(student.stage_channels), len(teacher.stage_channels))
            self.mi = CrossLayerMI(student.stage_channels, teacher.stage_channels, pairs)
        # v2: a linear map from the student's pooled embedding to the teacher's PCA space (8 k parameters,
        # a tenth of the student), the only trainable part contrastive distillation adds.
        self.proj = nn.Linear(student.stage_channels[-1], cfg.embed_dim) if w.crd > 0 else None

    def teacher_stages(self) -> list[int]:
        stages = set(self.pairs)
        if self.mi is not None:
            stages |= {t for _, t in self.mi.pairs}
        return sorted(stages)


def teacher_stage(t_feats: list[Tensor | None], stage: int) -> Tensor:
    """The teacher's features of one stage, which ``make_trainable`` computed for every stage a term reads."""
    feats = t_feats[stage]
    if feats is None:
        raise ValueError(f"the teacher's stage-{stage} features were not computed")
    return feats


def _objective(
    cfg: TrainConfig,
    student: Net,
    teacher: Net | None,
    distiller: Distiller | None,
    xs: Tensor,
    y: Tensor,
    mask: Tensor,
    codes: Tensor | None,
    t_logits: Tensor | None,
    t_feats: list[Tensor | None] | None,
    gen: torch.Generator,
    fs: float,
    view: BatchView | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Total loss of one batch and every term separately (for the log)."""
    w = cfg.loss_weights
    logits, feats = student.forward_features(xs)
    terms: dict[str, Tensor] = {"bce": masked_bce(logits, y, mask)}
    if t_logits is not None and w.kd > 0:
        terms["kd"] = kd_loss(logits, t_logits, cfg.temperature)
    if distiller is not None and t_feats is not None:
        if distiller.pairs:
            region_w = cfg.region_weights if cfg.region_aware else UNIFORM
            uniform_codes = (
                codes
                if codes is not None
                else torch.zeros(xs.shape[0], xs.shape[-1], dtype=torch.long, device=xs.device)
            )
            parts = [
                region_feature_loss(
                    distiller.adapters[str(s)](feats[s]),
                    teacher_stage(t_feats, s).float(),
                    uniform_codes,
                    region_w,
                    standardize=True,
                    input_length=xs.shape[-1],
                )
                for s in distiller.pairs
            ]
            terms["feature"] = torch.stack(parts).mean()
        if w.evidence > 0 and cfg.region_aware and codes is not None and teacher is not None:
            t_ev = teacher.class_evidence(t_feats[-1].float()) if t_feats[-1] is not None else None
            if t_ev is not None:
                terms["evidence"] = region_evidence_loss(
                    student.class_evidence(feats[-1]), t_ev, codes, input_length=xs.shape[-1]
                )
        if distiller.mi is not None:
            mi_loss, bounds = distiller.mi(feats, [f.float() if f is not None else None for f in t_feats])
            terms["mi"] = mi_loss
    extra: dict[str, float] = {}
    if view is not None:
        if w.crd > 0 and distiller is not None and distiller.proj is not None:
            z = distiller.proj(feats[-1].mean(-1))
            terms["crd"], bound = view.crd(z, cfg.crd_temperature)
            extra["crd_mi_bound"] = float(bound)
        if w.waves > 0 and codes is not None and view.waves is not None and view.present is not None:
            terms["waves"] = wave_evidence_loss(student.class_evidence(feats[-1]), view.waves, view.present, codes)
    if t_logits is not None and (w.pseudo > 0 or w.consistency > 0):
        weak = weak_augment(xs, gen, fs=fs)
        strong = strong_augment(xs, gen, fs=fs)
        strong_logits = student(strong)
        unl = ~mask
        if w.pseudo > 0 and unl.any():
            terms["pseudo"], extra["pseudo_fraction"] = pseudo_label_loss(
                strong_logits[unl], torch.sigmoid(t_logits[unl]), cfg.pseudo_threshold
            )
        if w.consistency > 0:
            with torch.no_grad():
                weak_logits = student(weak)
            terms["consistency"] = consistency_loss(strong_logits, weak_logits)
    total = sum(getattr(w, k) * v for k, v in terms.items())
    log = {k: float(v.detach()) for k, v in terms.items()}
    if distiller is not None and distiller.mi is not None and "mi" in terms:
        log.update({k: float(v) for k, v in bounds.items()})
    log.update({k: float(v) for k, v in extra.items()})
    log["total"] = float(total.detach())
    return total, log


@dataclass
class Trainable:
    """One model's training state on the device: inputs, labels, regions and cached teacher targets."""

    model: Net
    leads: list[int]
    x: Tensor  # [N, len(leads), T]
    y: Tensor
    mask: Tensor  # bool [N]: which records keep their labels
    codes: Tensor | None
    teacher: Net | None = None
    distiller: Distiller | None = None
    t_logits: Tensor | None = None
    t_feats: list[Tensor | None] | None = None
    bank: ViewBank | None = None  # v2: teacher targets on fixed views of every record

    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters()) + (list(self.distiller.parameters()) if self.distiller else [])


def make_trainable(
    model: Net,
    cfg: TrainConfig,
    x: Tensor,
    y: Tensor,
    labelled: np.ndarray,
    codes: Tensor | None,
    device: torch.device,
    teacher: Net | None = None,
    targets: tuple | None = None,
    bank_cache: Path | None = None,
) -> Trainable:
    """Move a training set to the device and compute the frozen teacher's targets on it once.

    ``targets`` are teacher targets computed earlier for the same records and
    teacher (a federated client reuses them across rounds): ``(logits, features)``,
    or ``(logits, features, view bank)`` for a method with a view bank. ``bank_cache`` keeps
    view banks on disk by content hash, so students of one teacher share one bank.
    """
    spec = cfg.spec
    is_teacher = not cfg.spec.student
    leads = list(range(12)) if is_teacher else lead_indices(cfg.student_lead)
    # the teacher's leads the student's input sits at: all twelve (None), or the student's alone
    teacher_leads = leads if cfg.teacher_input == "student" else None
    if not is_teacher and x.shape[1] == len(leads) < 12:
        # records that hold the student's leads only (a wearable's lead I): a teacher that reads twelve
        # leads (trained with lead dropout) is shown them in their places, the other leads zero
        teacher_leads, leads = leads, list(range(x.shape[1]))
    uses_teacher = spec.needs_teacher
    if uses_teacher and teacher is None:
        raise ValueError(f"method {cfg.method} needs a teacher checkpoint")
    tr = Trainable(
        model=model.to(device),
        leads=leads,
        x=x[:, leads].to(device),
        y=y.to(device),
        mask=torch.as_tensor(np.asarray(labelled, dtype=bool), device=device),
        codes=codes.to(device) if codes is not None else None,
    )
    if uses_teacher and teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        tr.teacher = teacher
        tr.distiller = Distiller(model, teacher, cfg).to(device)
        if spec.uses_bank:
            if targets is not None and len(targets) > 2 and targets[2] is not None:
                tr.bank = targets[2].to(device)
            else:
                tr.bank = cached_view_bank(
                    bank_cache,
                    teacher,
                    x,
                    codes if spec.needs_regions else None,
                    leads,
                    n_views=cfg.bank_views,
                    mix_views=cfg.bank_mix_views,
                    mix_alpha=cfg.mix_alpha,
                    embed_dim=cfg.embed_dim,
                    seed=cfg.view_seed,
                    device=device,
                    augment=spec.consistent,
                    teacher_leads=teacher_leads,
                ).to(device)
            dim = tr.bank.embed.shape[-1]  # PCA keeps at most min(embed_dim, teacher channels, records - 1)
            if tr.distiller.proj is not None and tr.distiller.proj.out_features != dim:
                tr.distiller.proj = nn.Linear(tr.distiller.proj.in_features, dim).to(device)
            return tr
        stages = tr.distiller.teacher_stages() or [len(teacher.stage_channels) - 1]
        if cfg.loss_weights.evidence > 0:
            stages = sorted(set(stages) | {len(teacher.stage_channels) - 1})
        t_feats: list[Tensor | None]
        if targets is not None and all(s < len(targets[1]) and targets[1][s] is not None for s in stages):
            t_logits, t_feats = targets[0].to(device), [f.to(device) if f is not None else None for f in targets[1]]
        else:
            t_logits, t_feats = teacher_targets(teacher, x, stages, device, bf16=cfg.bf16, teacher_leads=teacher_leads)
        while len(t_feats) < len(teacher.stage_channels):
            t_feats.append(None)
        tr.t_logits, tr.t_feats = t_logits, t_feats
    return tr


def drop_leads(x: Tensor, p: float, keep: list[int], gen: torch.Generator) -> Tensor:
    """Lead dropout for a teacher, never touching the ``keep`` leads.

    With probability ``p / 2`` a record keeps only the ``keep`` leads, with probability
    ``p / 2`` each other lead is dropped independently with probability 1/2, otherwise all
    leads stay. A teacher trained this way also answers from lead I alone, so it can be
    asked what lead I carries (its targets on a lead-I-only input are ones a lead-I
    student can reach), besides what the twelve leads carry.
    """
    u = torch.rand(x.shape[0], 1, generator=gen, device=gen.device).to(x.device)
    some = torch.rand(x.shape[0], x.shape[1], generator=gen, device=gen.device).to(x.device) < 0.5
    drop = (u < p / 2) | ((u < p) & some)
    drop[:, keep] = False
    return x.masked_fill(drop.unsqueeze(-1), 0.0)


def _bank_batch(
    tr: Trainable, cfg: TrainConfig, it: Tensor, half: int, rng: np.random.Generator, gen: torch.Generator, fs: float
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, BatchView]:
    """Inputs and targets of one batch drawn from the view bank.

    Each record gets a random view; the labelled rows (the first ``half``) only plain
    views, whose labels still hold (a mixup has no label). With consistent teaching the
    student sees the teacher's view; otherwise (the ablation) the teacher's targets are
    on the clean record and the student sees a fresh weak augmentation of it.
    """
    bank, device = tr.bank, it.device
    if bank is None:
        raise ValueError(f"method {cfg.method} draws its batches from a view bank, and none was built")
    views = np.concatenate(
        [rng.integers(0, bank.plain_views, size=half), rng.integers(0, bank.n_views, size=len(it) - half)]
    )
    kt = torch.as_tensor(views, device=device)
    if cfg.spec.consistent:
        xb = bank.x[kt, it].float()
        codes = bank.codes[kt, it].long() if bank.codes is not None else None
        if cfg.view_jitter:  # new every step, so the student never sees the same input twice
            xb, codes = weak_view(xb, codes, gen, fs)
    else:
        xb, codes = weak_view(
            tr.x[it], tr.codes[it] if tr.codes is not None and bank.codes is not None else None, gen, fs
        )
    memory = min(cfg.crd_memory, bank.n_views * len(tr.x))
    mv = torch.as_tensor(rng.integers(0, bank.n_views, size=memory), device=device)
    mr = torch.as_tensor(rng.integers(0, len(tr.x), size=memory), device=device)
    mask = tr.mask[it] & ~bank.mixed.to(device)[kt]
    return xb, codes, mask, bank.logits[kt, it], batch_view(bank, kt, it, mv, mr)


def run_epoch(
    tr: Trainable,
    cfg: TrainConfig,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    gen: torch.Generator,
    fs: float,
    steps: int,
    sched=None,
    anchor: list[Tensor] | None = None,
    proximal_mu: float = 0.0,
) -> dict[str, float]:
    """``steps`` optimisation steps; returns the mean of every logged term.

    ``anchor`` and ``proximal_mu`` add FedProx's proximal term mu/2 * ||w - w_global||^2.
    """
    device = tr.x.device
    params = tr.parameters()
    spec = cfg.spec
    lab_idx = np.flatnonzero(tr.mask.cpu().numpy())
    n = len(tr.x)
    if len(lab_idx) == 0 and spec.labelled_only:
        raise ValueError(f"{cfg.method} training needs labelled records and this set has none")
    tr.model.train()
    sums: dict[str, float] = {}
    for _ in range(steps):
        half = 0  # leading rows drawn from the labelled records
        if spec.labelled_only:
            idx = rng.choice(lab_idx, size=cfg.batch_size, replace=len(lab_idx) < cfg.batch_size)
        elif len(lab_idx) == 0:  # a client without labels learns from the teacher alone
            idx = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        else:  # half labelled, half from every training record: labels are scarce, unlabelled plenty
            half = max(1, cfg.batch_size // 2)
            idx = np.concatenate(
                [
                    rng.choice(lab_idx, size=half, replace=len(lab_idx) < half),
                    rng.choice(n, size=min(cfg.batch_size - half, n), replace=False),
                ]
            )
        it = torch.as_tensor(idx, device=device)
        mask, codes, view = tr.mask[it], tr.codes[it] if tr.codes is not None else None, None
        t_logits = tr.t_logits[it] if tr.t_logits is not None else None
        t_feats = [f[it] if f is not None else None for f in tr.t_feats] if tr.t_feats is not None else None
        if tr.bank is not None:
            xb, codes, mask, t_logits, view = _bank_batch(tr, cfg, it, half, rng, gen, fs)
        else:  # every method gets the same weak augmentation on its labelled path
            xb = weak_augment(tr.x[it], gen, fs=fs)
            if cfg.lead_dropout > 0:
                xb = drop_leads(xb, cfg.lead_dropout, lead_indices(cfg.student_lead), gen)
        with autocast(device, cfg.bf16):
            loss, log = _objective(
                cfg, tr.model, tr.teacher, tr.distiller, xb, tr.y[it], mask, codes, t_logits, t_feats, gen, fs, view
            )
        if anchor is not None and proximal_mu > 0:
            prox = sum(((p - a) ** 2).sum() for p, a in zip(tr.model.parameters(), anchor))
            loss = loss + proximal_mu / 2 * prox
            log["proximal"] = float(prox)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss: {log}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if sched is not None:
            sched.step()
        for k, v in log.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / max(1, steps) for k, v in sums.items()}


def train(
    data: PreparedData,
    cfg: TrainConfig,
    teacher: Net | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    bank_cache: Path | None = None,
) -> TrainResult:
    """Train the teacher (``method="teacher"``) or a lead-I student, early-stopped on validation macro AUC.

    Returns
    -------
    TrainResult
        The best model (by validation macro AUC), per-class thresholds tuned on
        validation, validation metrics with bootstrap intervals, per-epoch history.
    """
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    classes = data.tasks[cfg.task] if cfg.task in data.tasks else data.labels(cfg.task)[0]
    tr_split = load_split(data, cfg.task, cfg.train_folds)
    va = load_split(data, cfg.task, cfg.val_folds)
    labelled = labelled_subset(data.index, data.labels(cfg.task)[1], tr_split.rows, cfg.labelled_fraction, cfg.seed)
    is_teacher = not cfg.spec.student
    n_leads = 12 if is_teacher else len(lead_indices(cfg.student_lead))
    net_cfg = cfg.net or (teacher_config() if is_teacher else student_config())
    model = build_net(n_leads, len(classes), net_cfg)
    t_setup = time.perf_counter()
    tr = make_trainable(
        model, cfg, tr_split.x, tr_split.y, labelled, tr_split.regions, device, teacher, bank_cache=bank_cache
    )
    setup_seconds, step_seconds = time.perf_counter() - t_setup, 0.0
    params = tr.parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(tr_split.rows) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    x_va = va.x[:, tr.leads]
    best, best_auc, stale, history = None, -1.0, 0, []
    fs = float(data.fs)
    for epoch in range(cfg.epochs):
        try:
            t_epoch = time.perf_counter()
            log = run_epoch(tr, cfg, opt, rng, gen, fs, steps_per_epoch, sched)
            step_seconds += time.perf_counter() - t_epoch
        except FloatingPointError as exc:
            raise FloatingPointError(f"epoch {epoch + 1}: {exc}") from exc
        probs = predict(model, x_va, device, bf16=cfg.bf16)
        val = summarise(va.y.numpy(), probs, tune_thresholds(va.y.numpy(), probs))
        entry = {"epoch": epoch + 1, **log, "val_macro_auc": val["macro_auc"], "val_macro_f1": val["macro_f1"]}
        history.append(entry)
        if progress:
            progress(epoch + 1, cfg.epochs, entry)
        if val["macro_auc"] > best_auc:
            best_auc, best, stale = val["macro_auc"], copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best is None:  # every epoch's validation macro AUC was NaN
        raise ValueError(
            "no epoch gave a validation macro AUC: the validation fold needs records of each class with and without it"
        )
    model.load_state_dict(best)
    probs = predict(model, x_va, device, bf16=cfg.bf16)
    thresholds = tune_thresholds(va.y.numpy(), probs)
    val_metrics = evaluate(va.y.numpy(), probs, thresholds, list(classes), n_bootstrap=200, seed=cfg.seed)
    windows = len(history) * steps_per_epoch * cfg.batch_size
    return TrainResult(
        model.cpu(),
        thresholds,
        val_metrics,
        history,
        time.perf_counter() - t0,
        int(labelled.sum()),
        setup_seconds,
        windows / max(step_seconds, 1e-9),
    )


def checkpoint_meta(data: PreparedData, cfg: TrainConfig, result: TrainResult) -> dict:
    """Metadata a checkpoint needs to score any PTB-XL-layout folder the same way."""
    is_teacher = not cfg.spec.student
    leads = list(data.meta["leads"]) if is_teacher else [data.meta["leads"][i] for i in lead_indices(cfg.student_lead)]
    return {
        "kind": "teacher" if is_teacher else "student",
        "method": cfg.method,
        "task": cfg.task,
        "classes": list(data.tasks[cfg.task]),
        "leads": leads,
        "n_leads": len(leads),
        "fs": data.fs,
        "length": int(data.meta["length"]),
        "prep_settings": data.meta["settings"],
        "net_config": result.model.cfg.to_dict(),
        "thresholds": [float(t) for t in result.thresholds],
        "val_metrics": result.val_metrics,
        "train_config": cfg.to_dict(),
        "data_fingerprint": data.fingerprint,
        "data_source": data.meta.get("source_root", str(data.root)),
        "labelled_records": result.labelled,
        "epochs_run": len(result.history),
        "history": result.history,
        "train_seconds": round(result.seconds, 1),
    }
