"""The server's side of a run: teacher, registry, rounds through the strategy, checkpoints, resume."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from liteheart_core.checkpoint import load_checkpoint, save_checkpoint
from liteheart_core.config import WEARABLE_TEACHER_KINDS, FedConfig
from liteheart_core.data.dataset import PreparedData, default_cache_dir
from liteheart_core.data.splits import SPLITS
from liteheart_core.federated import global_evaluation, open_data, state_hash, student_for
from liteheart_core.models import Net
from liteheart_core.privacy import check_no_buffers
from liteheart_core.round_config import RoundConfig
from liteheart_core.storage import CheckpointInfo, Registry
from liteheart_core.train import TrainConfig, checkpoint_meta, train
from liteheart_core.wearable import WearableView, wearable_teacher_config
from server import dp
from server.secagg import SecAggFedAvg
from server.strategy import strategy_for

log = logging.getLogger("liteheart.server")


@dataclass
class ServerOptions:
    """Where a run keeps its state; not part of the science config."""

    run_dir: Path = Path("runs")
    db_url: str = ""  # empty: runs/registry.sqlite
    run_id: str = ""  # empty: a new id
    resume: bool = False
    name: str = ""
    on_round: Callable[[int, dict], None] | None = None  # progress hook (CLI)
    on_teacher_epoch: Callable[[int, int, dict], None] | None = None  # (epoch, epochs, validation entry)
    on_evaluate: Callable[[int], None] | None = None  # before the global student is scored (round 0: initial)
    partition_table: list[dict] | None = None  # what each simulated client holds (None in deployment)
    result: dict = field(default_factory=dict)  # filled with run_id and rounds for the caller
    # simulation: the nodes share the server's dataset and are told where it is; deployed nodes name their own
    # (node config), and the server's path never leaves it
    share_data: bool = True


def _log_epoch(epoch: int, total: int, entry: dict) -> None:
    if epoch:  # epoch 0: training starts
        log.info("teacher epoch %d/%d: validation macro AUC %.3f", epoch, total, entry["val_macro_auc"])


def provide_teacher(
    cfg: FedConfig, data: PreparedData, on_epoch: Callable[[int, int, dict], None] | None = None
) -> tuple[Net, dict]:
    """The frozen teacher: the given checkpoint, or one trained on the server's labelled data (cached)."""
    if cfg.teacher:
        net, meta = load_checkpoint(Path(cfg.teacher))
        if meta["kind"] != "teacher":
            raise ValueError(f"{cfg.teacher} is a {meta['kind']} checkpoint, not a teacher")
        seen = set((meta.get("train_config") or {}).get("train_folds") or ()) & set(cfg.client_folds)
        if cfg.server_fold_tuple and seen:
            raise ValueError(
                f"{cfg.teacher} was trained on folds {sorted(seen)}, which the clients hold; with "
                f"server-folds {cfg.server_folds} the teacher must know the server's archive only"
            )
        return net, meta
    folds = cfg.server_fold_tuple or SPLITS["train"]
    key = hashlib.sha256(
        json.dumps(
            [data.fingerprint, cfg.task, cfg.teacher_epochs, cfg.seed]
            + ([list(folds)] if cfg.server_fold_tuple else [])
        ).encode()
    ).hexdigest()
    path = default_cache_dir() / "teachers" / f"teacher-{key[:16]}.pt"
    if path.is_file():
        log.info("teacher taken from cache %s", path)
        return load_checkpoint(path)
    log.info("training the 12-lead teacher on the server's data (%d epochs); cached at %s", cfg.teacher_epochs, path)
    tcfg = TrainConfig(
        method="teacher",
        task=cfg.task,
        epochs=cfg.teacher_epochs,
        lr=1e-3,
        seed=cfg.seed,
        device=cfg.device,
        patience=max(3, cfg.teacher_epochs),
        train_folds=tuple(folds),
    )
    on_epoch = on_epoch or _log_epoch
    on_epoch(0, cfg.teacher_epochs, {})  # the clock of the estimate starts here
    result = train(data, tcfg, progress=on_epoch)
    save_checkpoint(path, result.model, checkpoint_meta(data, tcfg, result))
    return load_checkpoint(path)


def provide_wearable_teacher(
    cfg: FedConfig, classes: list[str], data: PreparedData | None = None, teacher: Net | None = None
) -> tuple[Net, dict] | None:
    """The teacher shipped to wearables (``wearable-teacher``), checked to answer from lead I; None without one.

    A lead-I network (a teacher assistant) or a 12-lead teacher trained with lead dropout
    (shown lead I with the other leads zero) qualifies; a plain 12-lead teacher does not: on
    lead I alone its targets are off the distribution it learnt. ``assistant`` or
    ``lead-dropout`` instead of a path: the server trains one on its own ``data`` (its archive
    folds with ``server-folds``; the assistant distilled from ``teacher``), cached like the teacher.
    """
    if not cfg.wearable_teacher:
        return None
    if cfg.wearable_teacher in WEARABLE_TEACHER_KINDS:
        if data is None:
            raise ValueError(f"wearable-teacher {cfg.wearable_teacher}: the server needs its data to train one")
        return _trained_wearable_teacher(cfg, data, teacher)
    path = Path(cfg.wearable_teacher)
    net, meta = load_checkpoint(path)
    lead_i = list(meta.get("leads") or ()) == ["I"]
    dropout = meta["kind"] == "teacher" and float((meta.get("train_config") or {}).get("lead_dropout", 0.0)) > 0
    if not (lead_i or dropout):
        raise ValueError(
            f"wearable-teacher {path} does not answer from lead I: it is a {meta['kind']} of leads "
            f"{', '.join(meta.get('leads') or [])} trained without lead dropout; give a lead-I teacher "
            "assistant or a teacher trained with --lead-dropout"
        )
    if meta["classes"] != classes:
        raise ValueError(f"wearable-teacher {path} predicts {meta['classes']}, this run {classes}")
    seen = set((meta.get("train_config") or {}).get("train_folds") or ()) & set(cfg.client_folds)
    if cfg.server_fold_tuple and seen:
        raise ValueError(
            f"wearable-teacher {path} was trained on folds {sorted(seen)}, which the clients hold; with "
            f"server-folds {cfg.server_folds} it must know the server's archive only"
        )
    return net, meta


def _trained_wearable_teacher(cfg: FedConfig, data: PreparedData, teacher: Net | None) -> tuple[Net, dict]:
    folds = cfg.server_fold_tuple or SPLITS["train"]
    tcfg = wearable_teacher_config(
        cfg.wearable_teacher, tuple(folds), epochs=cfg.teacher_epochs, seed=cfg.seed, device=cfg.device, task=cfg.task
    )
    if tcfg.spec.needs_teacher and teacher is None:
        raise ValueError(f"wearable-teacher {cfg.wearable_teacher} is distilled from the run's teacher")
    teacher_hash = state_hash(teacher.state_dict()) if tcfg.spec.needs_teacher and teacher is not None else ""
    key = hashlib.sha256(
        json.dumps([data.fingerprint, cfg.wearable_teacher, tcfg.to_dict(), teacher_hash]).encode()
    ).hexdigest()
    path = default_cache_dir() / "teachers" / f"wearable-{cfg.wearable_teacher}-{key[:16]}.pt"
    if path.is_file():
        log.info("wearable teacher taken from cache %s", path)
        return load_checkpoint(path)
    log.info(
        "training the wearable teacher (%s) on the server's data (%d epochs); cached at %s",
        cfg.wearable_teacher,
        cfg.teacher_epochs,
        path,
    )
    result = train(
        data,
        tcfg,
        teacher=teacher if tcfg.spec.needs_teacher else None,
        progress=lambda epoch, total, entry: log.info(
            "wearable teacher epoch %d/%d: validation macro AUC %.3f", epoch, total, entry["val_macro_auc"]
        ),
    )
    save_checkpoint(path, result.model, checkpoint_meta(data, tcfg, result))
    return load_checkpoint(path)


def round_config(
    cfg: FedConfig,
    teacher_hash: str,
    student_net: dict,
    run_id: str = "",
    share_data: bool = True,
    wearable_teacher_hash: str = "",
) -> ConfigRecord:
    """What every client is told each round: settings only, never data (nor, unless shared, where it is).

    The keys and their parsing are :class:`liteheart_core.round_config.RoundConfig`'s; a client reads them
    back with ``RoundConfig.from_record``.
    """
    return ConfigRecord(
        RoundConfig.from_run(cfg, teacher_hash, student_net, run_id, share_data, wearable_teacher_hash).to_record()
    )


def run_federation(grid: Grid, cfg: FedConfig, opts: ServerOptions) -> dict:
    """Run (or resume) a federated LiteHeart run on a Flower grid; returns the registry's view of it."""
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(opts.db_url or Registry.default_url(opts.run_dir))
    try:
        return _run(grid, cfg, opts, registry)
    finally:
        registry.close()


def _run(grid: Grid, cfg: FedConfig, opts: ServerOptions, registry: Registry) -> dict:
    data = open_data(cfg.data, cfg.synth_records, cfg.seed)
    cfg, run_id, offset = _open_run(registry, cfg, opts, data)
    opts.result["run_id"] = run_id
    opts.result.setdefault("rounds", [])  # filled by the RoundRecorder as rounds are recorded
    (opts.run_dir / run_id / "checkpoints").mkdir(parents=True, exist_ok=True)
    try:
        teacher, tmeta = provide_teacher(cfg, data, opts.on_teacher_epoch)
        if tmeta["classes"] != data.tasks[cfg.task]:
            raise ValueError(f"teacher classes {tmeta['classes']} differ from the data's {data.tasks[cfg.task]}")
        student = _initial_student(cfg, data.tasks[cfg.task], registry, run_id, offset)
        if cfg.rounds - offset <= 0:
            registry.set_status(run_id, "completed")
            return registry.show_run(run_id)
        tstate = {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
        thash = state_hash(tstate)
        classes, student_net = list(data.tasks[cfg.task]), student.cfg.to_dict()
        shipped = _shipped_wearable_teacher(cfg, classes, data, teacher)
        strategy = SecAggFedAvg(cfg) if cfg.secagg else strategy_for(cfg)
        strategy.setup(
            ArrayRecord(tstate),
            thash,
            {k: tmeta[k] for k in TEACHER_META_KEYS},
            cfg.round_timeout,
            round_offset=offset,
            min_replies=cfg.min_replies,
            max_update_norm=cfg.max_update_norm,
            wearables=cfg.wearables,
            wearable_weight=cfg.wearable_weight,
            wearable_teacher=shipped,
            wearable_weighting=cfg.wearable_weighting,
            score=lambda arrays: validation_score(cfg, data, classes, student_net, arrays),
        )
        if cfg.dp != "none":
            check_no_buffers(student)  # noise on a running-statistics buffer turns it into NaN
        runner, account = dp.wrap(strategy, cfg)
        recorder = RoundRecorder(
            cfg,
            opts,
            data,
            tmeta,
            student_net,
            registry,
            run_id,
            offset,
            strategy,
            dp.RunPrivacy(cfg, runner, account, offset),
        )
        runner.start(
            grid=grid,
            initial_arrays=ArrayRecord({k: v.detach().cpu() for k, v in student.state_dict().items()}),
            num_rounds=cfg.rounds - offset,
            timeout=cfg.round_timeout,
            train_config=round_config(cfg, thash, student_net, run_id, opts.share_data, shipped[1] if shipped else ""),
            evaluate_fn=recorder,
        )
        last = registry.last_checkpoint(run_id)
        if last is not None:  # the final global student, scorable with `liteheart-sim evaluate`
            final = opts.run_dir / run_id / "global_student.pt"
            final.write_bytes(Path(last.path).read_bytes())
        opts.result["teacher_transfers"] = strategy.teacher_transfers
        registry.set_status(run_id, "completed")
    except BaseException as exc:
        # a deployed ServerApp is stopped by Flower's signal handler, which exits with SystemExit
        registry.set_status(
            run_id,
            "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed",
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    return registry.show_run(run_id)


# what the clients are told of the teacher when it is shipped (its weights travel beside)
TEACHER_META_KEYS = ("classes", "leads", "n_leads", "fs", "length", "net_config", "task")


def _open_run(
    registry: Registry, cfg: FedConfig, opts: ServerOptions, data: PreparedData
) -> tuple[FedConfig, str, int]:
    """A new run in the registry, or the resumed one with its own stored settings; (settings, run id, rounds done)."""
    if not opts.resume:
        run_id = registry.create_run(
            {"fed": cfg.to_dict(), "partition_table": opts.partition_table},
            data.fingerprint,
            run_id=opts.run_id or None,
            name=opts.name,
        )
        return cfg, run_id, 0
    run = registry.get_run(opts.run_id)
    if run is None:
        raise ValueError(f"run {opts.run_id} is not in the registry {opts.db_url or opts.run_dir}")
    registry.set_status(opts.run_id, "running")
    return FedConfig.from_dict(run["config"]["fed"]), opts.run_id, registry.last_round(opts.run_id)


def _initial_student(cfg: FedConfig, classes: list[str], registry: Registry, run_id: str, offset: int) -> Net:
    """A fresh global student (seeded), or a resumed run's last recorded one, its checkpoint's hash checked."""
    torch.manual_seed(cfg.seed)
    student = student_for(classes, cfg.student_lead)
    if not offset:
        return student
    last = registry.last_checkpoint(run_id)
    if last is None:
        raise ValueError(f"run {run_id} has {offset} rounds but no checkpoint to resume from")
    state = torch.load(last.path, map_location="cpu", weights_only=True)["state_dict"]
    if hashlib.sha256(Path(last.path).read_bytes()).hexdigest() != last.sha256:
        raise ValueError(f"checkpoint {last.path} does not match its recorded sha256")
    student.load_state_dict(state)
    log.info("resuming run %s after round %d from %s", run_id, offset, last.path)
    return student


@dataclass
class RoundRecorder:
    """The strategy's ``evaluate_fn``: scores each global student on the server's fold 9 and records the round.

    Round 0 is the initial student (scored, not recorded); round ``n`` is saved as a checkpoint and recorded
    in the registry as round ``n + offset`` with the clients' reports, then reported through ``opts.on_round``.
    """

    cfg: FedConfig
    opts: ServerOptions
    data: PreparedData
    tmeta: dict
    student_net: dict
    registry: Registry
    run_id: str
    offset: int
    strategy: Any
    privacy: dp.RunPrivacy
    started: float = field(default_factory=time.perf_counter)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.opts.on_evaluate:
            self.opts.on_evaluate(server_round + self.offset if server_round else 0)
        cfg, classes = self.cfg, self.data.tasks[self.cfg.task]
        net = student_for(classes, cfg.student_lead, self.student_net)
        net.load_state_dict(arrays.to_torch_state_dict())
        metrics, thresholds = global_evaluation(net, self.data, cfg.task, cfg.student_lead, cfg.device)
        if cfg.wearables:  # the same student on fold 9 as wearables record it (lead I, degraded)
            view = WearableView(degrade=cfg.wearable_degrade, native_rate=cfg.wearable_rate, seed=cfg.seed)
            worn, _ = global_evaluation(net, self.data, cfg.task, cfg.student_lead, cfg.device, view=view)
            metrics.update({f"wearable_{k}": v for k, v in worn.items()})
        if server_round == 0:
            log.info("initial global student: macro F1 %.3f, AUC %.3f", metrics["macro_f1"], metrics["macro_auc"])
        else:
            self._record(server_round + self.offset, net, metrics, thresholds)
        self.started = time.perf_counter()
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    def _record(self, number: int, net: Net, metrics: dict, thresholds: np.ndarray) -> None:
        cfg, strategy = self.cfg, self.strategy
        path = self.opts.run_dir / self.run_id / "checkpoints" / f"round-{number:04d}.pt"
        meta = federated_meta(cfg, self.data, self.tmeta, self.student_net, thresholds, metrics, self.run_id, number)
        sha = save_checkpoint(path, net.cpu(), meta)
        train_metrics = _aggregate_from_reports(strategy.reports)
        train_metrics["aggregated"] = float(strategy.aggregated)
        if getattr(strategy, "wearable_share", None) is not None:  # wearable-weighting validated: its choice
            train_metrics["wearable/share"] = float(strategy.wearable_share)
        if cfg.dp != "none":  # the run's epsilon replaces the clients' own (a mean of them would mislead)
            train_metrics = {k: v for k, v in train_metrics.items() if not k.startswith("dp-")}
            train_metrics.update(self.privacy.round_metrics(strategy.reports))
        participants = [r["node_id"] for r in strategy.reports if r["status"] == "ok"]
        duration = time.perf_counter() - self.started
        self.registry.record_round(
            self.run_id,
            number,
            train_metrics=train_metrics,
            central_metrics=metrics,
            participants=participants,
            duration_s=duration,
            client_reports=strategy.reports,
            checkpoint=CheckpointInfo(self.run_id, number, str(path), sha),
        )
        entry = {
            "round": number,
            "macro_f1": metrics["macro_f1"],
            "macro_auc": metrics["macro_auc"],
            "loss": train_metrics.get("total", float("nan")),
            "clients": len(participants),
            "failures": sum(r["status"] != "ok" for r in strategy.reports),
            "seconds": round(duration, 1),
        }
        if "epsilon" in train_metrics:
            entry["epsilon"] = train_metrics["epsilon"]
        self.opts.result["rounds"].append(entry)
        if self.opts.on_round:
            self.opts.on_round(number, entry)


def _shipped_wearable_teacher(
    cfg: FedConfig, classes: list[str], data: PreparedData, teacher: Net
) -> tuple[ArrayRecord, str, dict] | None:
    """The wearable teacher as the strategy ships it: (weights, content hash, what the wearables are told of it)."""
    wearable_teacher = provide_wearable_teacher(cfg, classes, data, teacher)
    if wearable_teacher is None:
        return None
    wstate = {k: v.detach().cpu() for k, v in wearable_teacher[0].state_dict().items()}
    return ArrayRecord(wstate), state_hash(wstate), {k: wearable_teacher[1][k] for k in TEACHER_META_KEYS}


def validation_score(
    cfg: FedConfig, data: PreparedData, classes: list[str], student_net: dict, arrays: ArrayRecord
) -> float:
    """A candidate global student's macro AUC on the server's validation fold: the mean of clean lead I and
    lead I as wearables record it (what ``wearable-weighting = validated`` maximises)."""
    net = student_for(classes, cfg.student_lead, student_net)
    net.load_state_dict(arrays.to_torch_state_dict())
    clean, _ = global_evaluation(net, data, cfg.task, cfg.student_lead, cfg.device)
    view = WearableView(degrade=cfg.wearable_degrade, native_rate=cfg.wearable_rate, seed=cfg.seed)
    worn, _ = global_evaluation(net, data, cfg.task, cfg.student_lead, cfg.device, view=view)
    return (clean["macro_auc"] + worn["macro_auc"]) / 2


def _aggregate_from_reports(reports: list[dict]) -> dict[str, float]:
    """Example-weighted mean of every client metric over the successful replies, overall and per client kind.

    Per kind (when wearables take part): ``<kind>/<metric>`` means over that kind's
    clients, and ``<kind>/clients`` / ``<kind>/failures`` counts.
    """
    out = _weighted_mean([r for r in reports if r["status"] == "ok" and r["num_examples"] > 0])
    kinds = {_kind(r) for r in reports}
    if "wearable" in kinds:
        for kind in sorted(k for k in kinds if k is not None):
            mine = [r for r in reports if _kind(r) == kind]
            ok = [r for r in mine if r["status"] == "ok" and r["num_examples"] > 0]
            out.update({f"{kind}/{k}": v for k, v in _weighted_mean(ok).items() if k != "wearable"})
            for k in ("num-examples", "labelled-examples"):  # counts add up; means of them mean little
                out[f"{kind}/{k}"] = float(sum(r["metrics"].get(k, 0.0) for r in ok))
            out[f"{kind}/clients"] = float(len(ok))
            out[f"{kind}/failures"] = float(sum(r["status"] != "ok" for r in mine))
    return out


def _kind(report: dict) -> str | None:
    flag = report.get("metrics", {}).get("wearable")
    return None if flag is None else ("wearable" if flag else "paired")


def _weighted_mean(ok: list[dict]) -> dict[str, float]:
    if not ok:
        return {}
    weights = np.array([r["num_examples"] for r in ok], dtype=float)
    keys = set.intersection(*(set(r["metrics"]) for r in ok))
    return {k: float(np.average([r["metrics"][k] for r in ok], weights=weights)) for k in sorted(keys)}


def federated_meta(
    cfg: FedConfig,
    data: PreparedData,
    tmeta: dict,
    student_net: dict,
    thresholds: np.ndarray,
    metrics: dict,
    run_id: str,
    number: int,
) -> dict:
    """Checkpoint metadata of a global student, scorable like a centralised one."""
    from liteheart_core.data.signal import lead_indices

    return {
        "kind": "student",
        "method": f"federated-{cfg.method}",
        "task": cfg.task,
        "classes": tmeta["classes"],
        "leads": [data.meta["leads"][i] for i in lead_indices(cfg.student_lead)],
        "n_leads": 1,
        "fs": data.fs,
        "length": int(data.meta["length"]),
        "prep_settings": data.meta["settings"],
        "net_config": student_net,
        "thresholds": [float(t) for t in thresholds],
        "val_metrics": {k: float(v) for k, v in metrics.items()},
        "data_fingerprint": data.fingerprint,
        "run_id": run_id,
        "round": number,
        "fed_config": cfg.to_dict(),
        "train_folds": list(SPLITS["train"]),
    }
