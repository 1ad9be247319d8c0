"""What a federated client and server do, without Flower: local data, local rounds, global evaluation.

The Flower apps in ``client/`` and ``server/`` only unpack messages, call these
functions and pack the replies. ECG signals stay inside these functions; what
leaves is a state_dict and a dict of scalar metrics.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from liteheart_core.config import FedConfig
from liteheart_core.data.dataset import PreparedData, default_cache_dir, resolve_data
from liteheart_core.data.signal import lead_indices
from liteheart_core.data.splits import SPLITS, labelled_subset
from liteheart_core.metrics import summarise, tune_thresholds
from liteheart_core.models import Net, build_net, student_config
from liteheart_core.regions import compute_regions
from liteheart_core.train import TrainConfig, make_trainable, predict, resolve_device, run_epoch
from liteheart_core.wearable import WearableView, wearable_round, wearable_signals

LOCAL_VAL_FOLD = 9


def synth_data_path(n_records: int, seed: int, cache_dir: Path | None = None) -> Path:
    """The embedded synthetic PTB-XL-layout dataset, generated once into the cache."""
    from liteheart_core.data.synth import write_synth_ptbxl

    root = (cache_dir or default_cache_dir()) / f"synth-n{n_records}-s{seed}"
    raw = root / "raw"
    if not (raw / "ptbxl_database.csv").is_file():
        tmp = root / f".tmp-{os.getpid()}"
        write_synth_ptbxl(tmp, n=n_records, seed=seed)
        raw.parent.mkdir(parents=True, exist_ok=True)
        if not (raw / "ptbxl_database.csv").is_file():
            os.replace(tmp, raw)
    return raw


@lru_cache(maxsize=4)
def open_data(data: str, synth_records: int = 600, seed: int = 0) -> PreparedData:
    """A data argument ("synth" or a path) as a prepared dataset, prepared once and cached per process."""
    path = synth_data_path(synth_records, seed) if data == "synth" else Path(data)
    return resolve_data(path)


@dataclass
class LocalData:
    """A client's local records: training rows (some labelled) and local validation rows."""

    x: torch.Tensor  # [N, 12, T] float32
    y: torch.Tensor  # [N, C] float32
    labelled: np.ndarray  # bool [N]
    regions: torch.Tensor | None
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: list[str]
    fs: float
    name: str
    teacher_cache: dict = field(default_factory=dict)  # teacher targets per (teacher, method), reused across rounds

    @property
    def n_train(self) -> int:
        return len(self.x)


def _local(
    data: PreparedData,
    task: str,
    rows: np.ndarray,
    labelled: np.ndarray,
    val_rows: np.ndarray,
    name: str,
    view: WearableView | None = None,
) -> LocalData:
    """A client's arrays; with a wearable ``view`` only lead I is read, degraded as the device records it."""
    classes, y = data.labels(task)
    if view is None:
        x, val_x = data.x(rows), data.x(val_rows)
        regions = None if data.regions is None else torch.as_tensor(np.asarray(data.regions[rows]), dtype=torch.int64)
    else:  # a wearable: lead I only, degraded; its P/QRS/T regions delineated on that lead on the device
        x = wearable_signals(data.x(rows, leads="I"), data.fs, view)
        val_x = wearable_signals(data.x(val_rows, leads="I"), data.fs, replace(view, seed=view.seed + 1))
        regions = torch.as_tensor(compute_regions(x, data.fs), dtype=torch.int64) if len(x) else None
    return LocalData(
        x=torch.as_tensor(x, dtype=torch.float32),
        y=torch.as_tensor(y[rows], dtype=torch.float32),
        labelled=labelled,
        regions=regions,
        val_x=torch.as_tensor(val_x, dtype=torch.float32),
        val_y=torch.as_tensor(y[val_rows], dtype=torch.float32),
        classes=classes,
        fs=float(data.fs),
        name=name,
    )


def client_folds(server_folds: tuple[int, ...] = ()) -> list[int]:
    """Folds the clients share: the training folds but the server's archive, and the local validation fold."""
    return [f for f in SPLITS["train"] if f not in server_folds] + [LOCAL_VAL_FOLD]


@lru_cache(maxsize=2)
def client_partitions(
    data: str,
    synth_records: int,
    task: str,
    num_partitions: int,
    scheme: str,
    alpha: float,
    labelled_fraction: float,
    seed: int,
    server_folds: tuple[int, ...] = (),
) -> tuple:
    """Every client's partition, computed once per process: with 1,000 clients, recomputing it for each
    sampled client dominated the round (see results/performance.md)."""
    from liteheart_core.data.partition import partition

    prepared = open_data(data, synth_records, seed)
    _, y = prepared.labels(task)
    rows = prepared.rows(task, folds=client_folds(server_folds))
    return tuple(
        partition(
            prepared.index, y, rows, num_partitions, scheme, alpha=alpha, labelled_fraction=labelled_fraction, seed=seed
        )
    )


# partitions a simulation process keeps in memory (with their teacher targets); a process that serves more
# clients than this rebuilds each one's data and targets every round
CLIENT_CACHE = int(os.environ.get("LITEHEART_CLIENT_CACHE", "8"))


@lru_cache(maxsize=CLIENT_CACHE)
def simulated_client_data(
    data: str,
    synth_records: int,
    task: str,
    partition_id: int,
    num_partitions: int,
    scheme: str,
    alpha: float,
    labelled_fraction: float,
    seed: int,
    view: WearableView | None = None,
    own_fraction: float = -1.0,
    server_folds: tuple[int, ...] = (),
) -> LocalData:
    """Partition ``partition_id`` of a dataset for a simulated client (cached per process across rounds).

    Folds 1-7 and 9 are partitioned by patient (fold 8 is the test fold); a client trains on its fold 1-7 records
    and validates locally on its fold-9 records (the server scores all of fold 9).
    A wearable (``view`` given) reads lead I only; ``own_fraction`` >= 0 gives it its
    own share of labelled records instead of the partition's. ``server_folds`` are the
    server's own archive: no client holds a record of them.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    prepared = open_data(data, synth_records, seed)
    if os.environ.get("LITEHEART_PARTITION_CACHE", "1") == "0":  # the 'before' of the benchmark's A/B
        client_partitions.cache_clear()
    part = client_partitions(
        data, synth_records, task, num_partitions, scheme, alpha, labelled_fraction, seed, tuple(server_folds)
    )[partition_id]
    train = prepared.index.loc[part.rows, "fold"].to_numpy() != LOCAL_VAL_FOLD
    train_rows, val_rows, labelled = part.rows[train], part.rows[~train], part.labelled[train]
    if own_fraction >= 0:
        labelled = _labelled(prepared, prepared.labels(task)[1], train_rows, own_fraction, seed + partition_id)
    return _local(prepared, task, train_rows, labelled, val_rows, part.name, view)


def _labelled(prepared: PreparedData, y: np.ndarray, rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    return labelled_subset(prepared.index, y, rows, fraction, seed)


@lru_cache(maxsize=2)
def site_data(
    data_path: str, task: str, labelled_fraction: float, seed: int, view: WearableView | None = None
) -> LocalData:
    """A site's own folder (deployment): folds 1-8 (or 80% of patients without folds) train, the rest validate.

    With a wearable ``view``, only lead I of the folder is read."""
    prepared = resolve_data(Path(data_path))
    if task not in prepared.tasks:
        raise ValueError(f"{data_path} has no {task!r} labels; it has {', '.join(prepared.tasks)}")
    _, y = prepared.labels(task)
    rows = prepared.rows(task)
    if len(rows) == 0:
        raise ValueError(f"{data_path} holds no record with a {task} label")
    folds = prepared.index.loc[rows, "fold"].to_numpy()
    if (folds > 0).any():
        val = np.isin(folds, [LOCAL_VAL_FOLD, 10])
    else:
        patients = prepared.index.loc[rows, "patient"].astype(str).to_numpy()
        unique = np.unique(patients)
        held = set(np.random.default_rng(seed).choice(unique, size=max(1, len(unique) // 5), replace=False))
        val = np.array([p in held for p in patients])
    train_rows, val_rows = rows[~val], rows[val]
    labelled = _labelled(prepared, y, train_rows, labelled_fraction, seed)
    return _local(prepared, task, train_rows, labelled, val_rows, Path(data_path).name, view)


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state_dict (names, shapes, bytes): how nodes key their teacher cache."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def student_for(classes: list[str], lead: str = "I", net: dict | None = None) -> Net:
    """A fresh global student (seeded by the caller)."""
    return build_net(len(lead_indices(lead)), len(classes), net or student_config())


def train_config(cfg: FedConfig) -> TrainConfig:
    """The centralised TrainConfig that a client's local round uses, from the run's settings."""
    return TrainConfig(
        method=cfg.method,
        task=cfg.task,
        student_lead=cfg.student_lead,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        device=cfg.device,
    )


def local_round(
    student: Net,
    teacher: Net | None,
    local: LocalData,
    cfg: TrainConfig,
    epochs: int,
    server_round: int,
    proximal_mu: float = 0.0,
    distiller_state: dict | None = None,
    cache_teacher: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, float], dict]:
    """Train the received global student on local data for ``epochs`` epochs.

    Returns
    -------
    state, metrics, distiller_state
        The new student weights, scalar metrics (every loss term, local validation
        macro F1/AUC, num-examples) and the local distillation heads (adapters,
        MI projections) that stay on the node between rounds.
    """
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    seed = cfg.seed * 100_003 + server_round
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    method = cfg.method
    if cfg.spec.needs_teacher and teacher is None:
        raise ValueError(f"method {method} needs the teacher, and this node has none")
    if cfg.spec.labelled_only and not local.labelled.any():
        raise ValueError(f"client {local.name} has no labelled record for supervised training")
    key = (getattr(teacher, "content_hash", id(teacher)), method)
    tr = make_trainable(
        student,
        cfg,
        local.x,
        local.y,
        local.labelled,
        local.regions,
        device,
        teacher if cfg.spec.needs_teacher else None,
        targets=local.teacher_cache.get(key) if cache_teacher else None,
    )
    if cache_teacher and (tr.t_logits is not None or tr.bank is not None):
        local.teacher_cache.clear()  # one teacher at a time: bounded memory
        local.teacher_cache[key] = (tr.t_logits, tr.t_feats, tr.bank)
    if tr.distiller is not None and distiller_state:
        tr.distiller.load_state_dict(distiller_state)
    anchor = [p.detach().clone() for p in student.parameters()] if proximal_mu > 0 else None
    opt = torch.optim.AdamW(tr.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, math.ceil(local.n_train / cfg.batch_size))
    logs = [
        run_epoch(tr, cfg, opt, rng, gen, local.fs, steps, anchor=anchor, proximal_mu=proximal_mu)
        for _ in range(epochs)
    ]
    metrics = {k: float(np.mean([log.get(k, 0.0) for log in logs])) for k in logs[-1]}
    metrics.update(local_validation(student, local, cfg.student_lead, device))
    metrics["num-examples"] = float(local.n_train)
    metrics["labelled-examples"] = float(local.labelled.sum())
    metrics["train-seconds"] = time.perf_counter() - t0
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    dstate = {k: v.detach().cpu() for k, v in tr.distiller.state_dict().items()} if tr.distiller else {}
    return state, metrics, dstate


def wearable_local_round(
    student: Net,
    local: LocalData,
    cfg: TrainConfig,
    epochs: int,
    server_round: int,
    teacher: Net | None = None,
    distiller_state: dict | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float], dict]:
    """A wearable's round on its lead-I records.

    With a wearable ``teacher`` (one that answers from lead I: a 12-lead teacher trained
    with lead dropout, shown lead I with the other leads zero, or a lead-I teacher
    assistant), the wearable runs the run's distillation objective against its soft
    targets, exactly as a site does with the 12-lead teacher. Without one, it learns by
    mean-teacher consistency and pseudo-labels against the global student, plus BCE
    on its labels. Either way no 12-lead record is involved, and the metrics carry the
    paired clients' keys where they apply, so both kinds aggregate together.

    Returns
    -------
    state, metrics, distiller_state
        As ``local_round`` (no distillation heads without a teacher).
    """
    if local.x.shape[1] != 1:
        raise ValueError(f"wearable {local.name} holds {local.x.shape[1]}-lead records; a wearable has lead I only")
    if cfg.student_lead != "I":
        raise ValueError(f"a wearable records lead I; this run's student reads lead {cfg.student_lead}")
    if teacher is not None:
        if teacher.n_leads not in (1, 12):
            raise ValueError(f"a wearable teacher reads lead I (1 lead) or 12 leads, this one {teacher.n_leads}")
        return local_round(student, teacher, local, cfg, epochs, server_round, distiller_state=distiller_state)
    state, metrics = wearable_round(student, local.x, local.y, local.labelled, cfg, epochs, server_round, fs=local.fs)
    student.load_state_dict(state)
    metrics.update(local_validation(student, local, "I", torch.device("cpu"), lead_index=0))
    return state, metrics, {}


def local_validation(
    student: Net, local: LocalData, lead: str = "I", device: torch.device | None = None, lead_index: int | None = None
) -> dict[str, float]:
    """Macro F1 (thresholds tuned on these records) and AUC of the student on the client's validation rows.

    ``lead_index`` picks the channel directly (a wearable's records hold lead I alone)."""
    if len(local.val_x) == 0:
        return {"local-val-f1": float("nan"), "local-val-auc": float("nan")}
    device = device or torch.device("cpu")
    channels = [lead_index] if lead_index is not None else lead_indices(lead)
    probs = predict(student, local.val_x[:, channels], device)
    y = local.val_y.numpy()
    s = summarise(y, probs, tune_thresholds(y, probs))
    return {"local-val-f1": s["macro_f1"], "local-val-auc": s["macro_auc"]}


def global_evaluation(
    student: Net,
    data: PreparedData,
    task: str,
    lead: str = "I",
    device: str = "auto",
    folds: tuple[int, ...] = (LOCAL_VAL_FOLD,),
    view: WearableView | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """The server's score of the global student on its validation fold; returns metrics and thresholds.

    With a wearable ``view``, the fold's lead I is degraded as a wearable records it."""
    rows = data.rows(task, folds=list(folds))
    if len(rows) == 0:
        raise ValueError(f"the server's data {data.root} hold no {task} record in folds {list(folds)}")
    _, y = data.labels(task)
    dev = resolve_device(device)
    x = data.x(rows, leads=lead)
    if view is not None:
        x = wearable_signals(x, data.fs, view)
    probs = predict(student.to(dev), x, dev)
    thresholds = tune_thresholds(y[rows], probs)
    return summarise(y[rows], probs, thresholds), thresholds


def partition_rows(cfg) -> list[dict]:
    """What each simulated client of a run config holds: one row per client (records, labels, classes, kind).

    The same partitions the simulated nodes cut for themselves; printed before round 1 by
    ``liteheart-sim run`` and kept in the registry by every simulated run.
    """
    from liteheart_core.data.partition import partition, partition_table

    data = open_data(cfg.data, cfg.synth_records, cfg.seed)
    classes, y = data.labels(cfg.task)
    rows = data.rows(cfg.task, folds=client_folds(cfg.server_fold_tuple))
    parts = partition(
        data.index,
        y,
        rows,
        cfg.clients,
        cfg.partition,
        alpha=cfg.alpha,
        labelled_fraction=cfg.labelled_fraction,
        seed=cfg.seed,
    )
    table = partition_table(parts, y, classes)
    for i, (row, part) in enumerate(zip(table, parts)):  # what the client trains on vs. validates on locally
        train = data.index.loc[part.rows, "fold"].to_numpy() != LOCAL_VAL_FOLD
        labelled = part.labelled[train]
        if cfg.wearables:  # the last `wearables` partitions are lead-I wearables (client/local.py)
            row["kind"] = "wearable" if i >= cfg.clients - cfg.wearables else "paired"
            if row["kind"] == "wearable" and cfg.wearable_labelled_fraction >= 0:
                labelled = _labelled(data, y, part.rows[train], cfg.wearable_labelled_fraction, cfg.seed + i)
        row["labelled"] = int(labelled.sum())
        row["train"], row["local val"] = int(train.sum()), int((~train).sum())
    return table
