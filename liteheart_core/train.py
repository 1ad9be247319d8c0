"""Centralised training: the 12-lead teacher, and lead-I students by every method.

One linear loop (nanoGPT-style). Data are prepared arrays held in memory;
the teacher's targets (logits and the stage features distillation needs) are
computed once per run, because the teacher is frozen and sees the clean
12-lead record, never an augmented one.

Methods
-------
``teacher``     12-lead supervised BCE.
``supervised``  lead-I student, BCE on the labelled records only.
``kd``          + temperature-scaled distillation of the teacher's outputs on all records.
``fitnets``     + feature imitation through 1x1 adapters, uniform over time.
``liteheart``   + region-aware feature and class-evidence distillation, cross-layer
                mutual information, and semi-supervision (teacher pseudo-labels,
                weak/strong consistency) on unlabelled records.
``liteheart-no-region`` / ``-no-mi`` / ``-no-semi``: ablations.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

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
    weak_augment,
)
from liteheart_core.metrics import evaluate, summarise, tune_thresholds
from liteheart_core.models import Net, build_net, student_config, teacher_config

METHODS = ("teacher", "supervised", "kd", "fitnets", "liteheart", "liteheart-no-region", "liteheart-no-mi",
           "liteheart-no-semi")
UNIFORM = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class LossWeights:
    """Weight of every term of the objective (0 switches a term off)."""

    bce: float = 1.0
    kd: float = 0.0
    feature: float = 0.0
    evidence: float = 0.0
    mi: float = 0.0
    pseudo: float = 0.0
    consistency: float = 0.0


def method_weights(method: str) -> tuple[LossWeights, bool]:
    """Loss weights of a method, and whether its feature term is region-weighted."""
    base = {
        "teacher": LossWeights(),
        "supervised": LossWeights(),
        "kd": LossWeights(kd=1.0),
        "fitnets": LossWeights(kd=1.0, feature=1.0),
        "liteheart": LossWeights(kd=1.0, feature=1.0, evidence=0.5, mi=0.1, pseudo=0.5, consistency=0.5),
    }
    if method in base:
        return base[method], method == "liteheart"
    if method == "liteheart-no-region":  # same feature term, but uniform over time and no region evidence
        return replace(base["liteheart"], evidence=0.0), False
    if method == "liteheart-no-mi":
        return replace(base["liteheart"], mi=0.0), True
    if method == "liteheart-no-semi":
        return replace(base["liteheart"], pseudo=0.0, consistency=0.0), True
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored in the checkpoint)."""

    method: str = "liteheart"
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
    weights: LossWeights | None = None  # None: the method's defaults
    net: dict | None = None  # network config override (NetConfig fields); None: teacher/student defaults

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if not 0 < self.labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.5 <= self.pseudo_threshold < 1:
            raise ValueError(f"pseudo_threshold must be in [0.5, 1), got {self.pseudo_threshold}")

    @property
    def loss_weights(self) -> LossWeights:
        return self.weights or method_weights(self.method)[0]

    @property
    def region_aware(self) -> bool:
        return method_weights(self.method)[1]

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
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
def predict(model: nn.Module, x: np.ndarray | Tensor, device: torch.device, batch: int = 256,
            bf16: bool = False) -> np.ndarray:
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
    return Split(torch.as_tensor(data.x(rows), dtype=torch.float32), torch.as_tensor(y[rows], dtype=torch.float32), regions, rows)


@dataclass
class TrainResult:
    model: Net
    thresholds: np.ndarray
    val_metrics: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    labelled: int = 0


@torch.no_grad()
def teacher_targets(teacher: Net, x: Tensor, stages: list[int], device: torch.device, batch: int = 128,
                    bf16: bool = False) -> tuple[Tensor, list[Tensor]]:
    """Teacher logits and the chosen stage features for every record, computed once (float16 on the device)."""
    teacher.eval()
    logits, feats = [], {s: [] for s in stages}
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device)
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
        self.adapters = nn.ModuleDict({
            str(s): RegionAdapter(student.stage_channels[s], teacher.stage_channels[s]) for s in self.pairs
        })
        self.mi = None
        if w.mi > 0:
            pairs = default_pairs(len(student.stage_channels), len(teacher.stage_channels))
            self.mi = CrossLayerMI(student.stage_channels, teacher.stage_channels, pairs)

    def teacher_stages(self) -> list[int]:
        stages = set(self.pairs)
        if self.mi is not None:
            stages |= {t for _, t in self.mi.pairs}
        return sorted(stages)


def _objective(cfg: TrainConfig, student: Net, teacher: Net | None, distiller: Distiller | None,
               xs: Tensor, y: Tensor, mask: Tensor, codes: Tensor | None, t_logits: Tensor | None,
               t_feats: list[Tensor | None] | None, gen: torch.Generator, fs: float) -> tuple[Tensor, dict[str, float]]:
    """Total loss of one batch and every term separately (for the log)."""
    w = cfg.loss_weights
    logits, feats = student.forward_features(xs)
    terms: dict[str, Tensor] = {"bce": masked_bce(logits, y, mask)}
    if t_logits is not None and w.kd > 0:
        terms["kd"] = kd_loss(logits, t_logits, cfg.temperature)
    if distiller is not None and t_feats is not None:
        if distiller.pairs:
            region_w = cfg.region_weights if cfg.region_aware else UNIFORM
            uniform_codes = codes if codes is not None else torch.zeros(xs.shape[0], xs.shape[-1], dtype=torch.long,
                                                                        device=xs.device)
            parts = [region_feature_loss(distiller.adapters[str(s)](feats[s]), t_feats[s].float(), uniform_codes,
                                         region_w, standardize=True, input_length=xs.shape[-1])
                     for s in distiller.pairs]
            terms["feature"] = torch.stack(parts).mean()
        if w.evidence > 0 and cfg.region_aware and codes is not None and teacher is not None:
            t_ev = teacher.class_evidence(t_feats[-1].float()) if t_feats[-1] is not None else None
            if t_ev is not None:
                terms["evidence"] = region_evidence_loss(student.class_evidence(feats[-1]), t_ev, codes,
                                                         input_length=xs.shape[-1])
        if distiller.mi is not None:
            mi_loss, bounds = distiller.mi(feats, [f.float() if f is not None else None for f in t_feats])
            terms["mi"] = mi_loss
    extra: dict[str, float] = {}
    if t_logits is not None and (w.pseudo > 0 or w.consistency > 0):
        weak = weak_augment(xs, gen, fs=fs)
        strong = strong_augment(xs, gen, fs=fs)
        strong_logits = student(strong)
        unl = ~mask
        if w.pseudo > 0 and unl.any():
            terms["pseudo"], extra["pseudo_fraction"] = pseudo_label_loss(
                strong_logits[unl], torch.sigmoid(t_logits[unl]), cfg.pseudo_threshold)
        if w.consistency > 0:
            with torch.no_grad():
                weak_logits = student(weak)
            terms["consistency"] = consistency_loss(strong_logits, weak_logits)
    total = sum(getattr(w, k) * v for k, v in terms.items())
    log = {k: float(v.detach()) for k, v in terms.items()}
    if distiller is not None and distiller.mi is not None and "mi" in terms:
        log.update({k: float(v) for k, v in bounds.items()})
    log.update(extra)
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

    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters()) + (list(self.distiller.parameters()) if self.distiller else [])


def make_trainable(model: Net, cfg: TrainConfig, x: Tensor, y: Tensor, labelled: np.ndarray,
                   codes: Tensor | None, device: torch.device, teacher: Net | None = None,
                   targets: tuple[Tensor, list[Tensor | None]] | None = None) -> Trainable:
    """Move a training set to the device and compute the frozen teacher's targets on it once.

    ``targets`` are teacher targets computed earlier for the same records and
    teacher (a federated client reuses them across rounds).
    """
    is_teacher = cfg.method == "teacher"
    leads = list(range(12)) if is_teacher else lead_indices(cfg.student_lead)
    uses_teacher = not is_teacher and cfg.method != "supervised"
    if uses_teacher and teacher is None:
        raise ValueError(f"method {cfg.method} needs a teacher checkpoint")
    tr = Trainable(model=model.to(device), leads=leads, x=x[:, leads].to(device), y=y.to(device),
                   mask=torch.as_tensor(np.asarray(labelled, dtype=bool), device=device),
                   codes=codes.to(device) if codes is not None else None)
    if uses_teacher:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        tr.teacher = teacher
        tr.distiller = Distiller(model, teacher, cfg).to(device)
        stages = tr.distiller.teacher_stages() or [len(teacher.stage_channels) - 1]
        if cfg.loss_weights.evidence > 0:
            stages = sorted(set(stages) | {len(teacher.stage_channels) - 1})
        if targets is not None and all(s < len(targets[1]) and targets[1][s] is not None for s in stages):
            tr.t_logits, tr.t_feats = targets[0].to(device), [f.to(device) if f is not None else None
                                                              for f in targets[1]]
        else:
            tr.t_logits, tr.t_feats = teacher_targets(teacher, x, stages, device, bf16=cfg.bf16)
        while len(tr.t_feats) < len(teacher.stage_channels):
            tr.t_feats.append(None)
    return tr


def run_epoch(tr: Trainable, cfg: TrainConfig, opt: torch.optim.Optimizer, rng: np.random.Generator,
              gen: torch.Generator, fs: float, steps: int, sched=None,
              anchor: list[Tensor] | None = None, proximal_mu: float = 0.0) -> dict[str, float]:
    """``steps`` optimisation steps; returns the mean of every logged term.

    ``anchor`` and ``proximal_mu`` add FedProx's proximal term mu/2 * ||w - w_global||^2.
    """
    device = tr.x.device
    params = tr.parameters()
    lab_idx = np.flatnonzero(tr.mask.cpu().numpy())
    n = len(tr.x)
    if len(lab_idx) == 0 and cfg.method in ("teacher", "supervised"):
        raise ValueError(f"{cfg.method} training needs labelled records and this set has none")
    tr.model.train()
    sums: dict[str, float] = {}
    for _ in range(steps):
        if cfg.method in ("teacher", "supervised"):
            idx = rng.choice(lab_idx, size=cfg.batch_size, replace=len(lab_idx) < cfg.batch_size)
        elif len(lab_idx) == 0:  # a client without labels learns from the teacher alone
            idx = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        else:  # half labelled, half from every training record: labels are scarce, unlabelled plenty
            half = max(1, cfg.batch_size // 2)
            idx = np.concatenate([rng.choice(lab_idx, size=half, replace=len(lab_idx) < half),
                                  rng.choice(n, size=min(cfg.batch_size - half, n), replace=False)])
        it = torch.as_tensor(idx, device=device)
        xb = tr.x[it]
        if cfg.method == "teacher":
            xb = weak_augment(xb, gen, fs=fs)
        t_logits = tr.t_logits[it] if tr.t_logits is not None else None
        t_feats = [f[it] if f is not None else None for f in tr.t_feats] if tr.t_feats is not None else None
        with autocast(device, cfg.bf16):
            loss, log = _objective(cfg, tr.model, tr.teacher, tr.distiller, xb, tr.y[it], tr.mask[it],
                                   tr.codes[it] if tr.codes is not None else None, t_logits, t_feats, gen, fs)
        if anchor is not None and proximal_mu > 0:
            prox = sum(((p - a) ** 2).sum() for p, a in zip(tr.model.parameters(), anchor))
            loss = loss + proximal_mu / 2 * prox
            log["proximal"] = float(prox.detach())
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


def train(data: PreparedData, cfg: TrainConfig, teacher: Net | None = None,
          progress: Callable[[int, int, dict], None] | None = None) -> TrainResult:
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
    is_teacher = cfg.method == "teacher"
    n_leads = 12 if is_teacher else len(lead_indices(cfg.student_lead))
    net_cfg = cfg.net or (teacher_config() if is_teacher else student_config())
    model = build_net(n_leads, len(classes), net_cfg)
    tr = make_trainable(model, cfg, tr_split.x, tr_split.y, labelled, tr_split.regions, device, teacher)
    params = tr.parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(tr_split.rows) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    x_va = va.x[:, tr.leads]
    best, best_auc, stale, history = None, -1.0, 0, []
    fs = float(data.fs)
    for epoch in range(cfg.epochs):
        try:
            log = run_epoch(tr, cfg, opt, rng, gen, fs, steps_per_epoch, sched)
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
    model.load_state_dict(best)
    probs = predict(model, x_va, device, bf16=cfg.bf16)
    thresholds = tune_thresholds(va.y.numpy(), probs)
    val_metrics = evaluate(va.y.numpy(), probs, thresholds, list(classes), n_bootstrap=200, seed=cfg.seed)
    return TrainResult(model.cpu(), thresholds, val_metrics, history, time.perf_counter() - t0, int(labelled.sum()))


def checkpoint_meta(data: PreparedData, cfg: TrainConfig, result: TrainResult) -> dict:
    """Metadata a checkpoint needs to score any PTB-XL-layout folder the same way."""
    is_teacher = cfg.method == "teacher"
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
