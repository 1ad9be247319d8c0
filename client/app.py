"""LiteHeart ClientApp: unpack the message, call ``liteheart_core.federated``, pack the reply.

Node config keys
----------------
``client-kind``        ``paired`` (12-lead, the 12-lead teacher on the node) or ``wearable`` (lead I only;
                       the run's wearable teacher when it has one); see ``client/local.py``
``data-path``          a PTB-XL/Challenge/prepared folder on this node (deployment)
``store``              a wearable's device record store (``liteheart-client ingest``)
``labelled-fraction``  fraction of the local training records whose labels are used (deployment)
``partition-id`` / ``num-partitions``  this partition of a dataset (set by the simulation engine, or by
                       ``liteheart-client start --partition-id``); the scheme comes from the round config
``data``               with partition ids: this node's copy of the dataset (default: the round config's)
``cache-dir``          where the teacher is cached by content hash (default: the LiteHeart cache)

Only weights and scalar metrics leave the node; the teacher (a site's 12-lead one, a
wearable's lead-I one) arrives once and is cached by its content hash.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.typing import MetricRecordValues
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.local import client_kind, local_data
from liteheart_core.config import as_bool
from liteheart_core.data.dataset import default_cache_dir
from liteheart_core.federated import LocalData, local_round, state_hash, train_config, wearable_local_round
from liteheart_core.methods import LossWeights
from liteheart_core.models import Net, NetConfig, build_net
from liteheart_core.privacy import DPSGDConfig, Ledger, dp_sgd_local_round
from liteheart_core.round_config import RoundConfig

# wfdb calls a pandas API that pandas 3 deprecates; nothing for a node operator to act on
warnings.filterwarnings("ignore", message="The inplace keyword")

app = ClientApp()


def teacher_cache_dir(context: Context) -> Path:
    return Path(str(context.node_config.get("cache-dir", default_cache_dir() / "teachers")))


def _teacher_file(context: Context, digest: str) -> Path:
    if not digest or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"bad teacher hash {digest!r}")
    return teacher_cache_dir(context) / f"{digest}.pt"


@lru_cache(maxsize=2)
def _load_teacher(path: str) -> Net:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    net = build_net(int(meta["n_leads"]), len(meta["classes"]), NetConfig.from_dict(meta["net_config"]))
    net.load_state_dict(blob["state_dict"])
    net.content_hash = Path(path).stem  # type: ignore[assignment]  # keys the per-client cache of teacher targets (nn.Module's __setattr__ is typed for tensors and modules)
    return net.eval()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Teacher shipping: ``teacher-check`` (do you hold this hash?) and ``teacher-install``."""
    cfg = msg.content.config_records["config"]
    action = str(cfg["action"])
    if action == "teacher-check":
        # a site asks for the 12-lead teacher; a wearable for the run's wearable teacher, or for none
        # (without one it learns against the global student): it says so, and the server stops asking
        wearable = client_kind(context, int(str(cfg.get("wearables", 0)))) == "wearable"
        digest = str(cfg.get("wearable-teacher-hash", "")) if wearable else str(cfg["teacher-hash"])
        has = bool(digest) and _teacher_file(context, digest).is_file()
        status: dict[str, MetricRecordValues] = {
            "has-teacher": int(has),
            "needs-teacher": int(bool(digest)),
            "wearable": int(wearable),
        }
        return Message(RecordDict({"status": MetricRecord(status)}), reply_to=msg)
    if action != "teacher-install":
        raise ValueError(f"unknown query action {action!r}")
    digest = str(cfg["teacher-hash"])
    path = _teacher_file(context, digest)
    state = msg.content.array_records["teacher"].to_torch_state_dict()
    got = state_hash(state)
    if got != digest:
        raise ValueError(f"teacher arrived corrupted: hash {got[:12]} != announced {digest[:12]}")
    meta = json.loads(str(cfg["teacher-meta"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save({"meta": meta, "state_dict": state}, tmp)
    os.replace(tmp, path)
    return Message(RecordDict({"status": MetricRecord({"has-teacher": 1})}), reply_to=msg)


def dp_clipping_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``fixedclipping_mod`` when the run asks for it, a pass-through otherwise.

    Mods are fixed when the ClientApp is built, before any run config is known; with
    ``dp = client`` the server's ``DifferentialPrivacyClientSideFixedClipping`` puts
    the clipping norm in every train message, and that is what switches clipping on.
    """
    config = msg.content.config_records.get("config", ConfigRecord())
    if KEY_CLIPPING_NORM in config:
        reply = call_next(msg, context)
        if reply.has_error() or "arrays" not in reply.content:
            return reply
        sent = msg.content.array_records["arrays"].to_numpy_ndarrays()
        if not any(np.any(a != b) for a, b in zip(reply.content.array_records["arrays"].to_numpy_ndarrays(), sent)):
            return reply  # an unchanged model: nothing to clip (Flower's clipping would divide by its zero norm)
        return fixedclipping_mod(msg, context, lambda m, c: reply)
    if config.get("dp") == "client":  # every round config names its dp mode (RoundConfig)
        raise ValueError(
            "dp = client, but the server sent no clipping norm: it must run DifferentialPrivacyClientSideFixedClipping"
        )
    return call_next(msg, context)


def round_config_of(msg: Message) -> RoundConfig:
    """The train message's round config, parsed once (Flower's client-side clipping adds its own key to it)."""
    return RoundConfig.from_record(dict(msg.content["config"]), ignore=(KEY_CLIPPING_NORM,))


@app.train(mods=[dp_clipping_mod])
def train(msg: Message, context: Context) -> Message:
    """One local round: the global student in, the locally trained student and metrics out."""
    rc = round_config_of(msg)
    run = rc.run
    torch.set_num_threads(rc.client_threads)
    student_state = msg.content.array_records["arrays"].to_torch_state_dict()
    kind = client_kind(context, run.wearables)
    data = local_data(context, rc, kind)
    tcfg = train_config(run)
    student = build_net(1, len(data.classes), NetConfig.from_dict(rc.student_net))
    student.load_state_dict(student_state)
    if kind == "wearable":
        if run.dp == "dp-sgd":
            raise ValueError("dp-sgd runs in the 12-lead clients' round; this node is a wearable")
        digest = rc.wearable_teacher_hash
        teacher = _installed_teacher(context, digest) if digest and tcfg.spec.needs_teacher else None
        dstate = _load_distiller(context, rc) if teacher is not None else None
        state, metrics, dstate = wearable_local_round(
            student, data, tcfg, run.local_epochs, rc.server_round, teacher, dstate
        )
        _keep_distiller(context, rc, dstate)
        return _reply(msg, state, metrics, kind)
    teacher = _installed_teacher(context, rc.teacher_hash) if tcfg.spec.needs_teacher else None
    dstate = _load_distiller(context, rc)
    if run.dp == "dp-sgd":
        return _dp_sgd_round(msg, context, rc, student, teacher, data, dstate)
    state, metrics, dstate = local_round(
        student, teacher, data, tcfg, run.local_epochs, rc.server_round, run.proximal_mu, dstate
    )
    _keep_distiller(context, rc, dstate)
    return _reply(msg, state, metrics, kind)


def _installed_teacher(context: Context, digest: str) -> Net:
    path = _teacher_file(context, digest)
    if not path.is_file():
        raise ValueError(f"the teacher has not been installed on this node (hash {digest[:12]})")
    return _load_teacher(str(path))


def _distiller_file(context: Context, rc: RoundConfig, number: int) -> Path | None:
    """Where a deployed node keeps its distillation heads after round ``number`` of a registry run.

    Flower's ``Context.state`` lasts one Flower run; a run resumed after a server crash is a
    new Flower run, so a node that kept its heads only there would start them afresh and
    the resumed run would drift from an uninterrupted one. ``liteheart-client start`` sets
    ``persist-state``; simulated nodes (thousands, sharing one cache) keep them in memory only.
    """
    run_id = rc.run_id
    if not run_id or not as_bool(context.node_config.get("persist-state", False)) or number < 1:
        return None
    if not all(c.isalnum() or c in "-_" for c in run_id):
        raise ValueError(f"bad run id {run_id!r} in the round config")
    return teacher_cache_dir(context) / "distillers" / f"{run_id}-{context.node_id}-r{number:04d}.pt"


def _load_distiller(context: Context, rc: RoundConfig) -> dict | None:
    """The heads as they were after the previous round: from disk on a deployed node, else from the context."""
    path = _distiller_file(context, rc, rc.server_round - 1)
    if path is not None and path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    distiller = context.state.get("distiller")
    return distiller.to_torch_state_dict() if isinstance(distiller, ArrayRecord) else None


def _keep_distiller(context: Context, rc: RoundConfig, dstate: dict | None) -> None:
    """Keep this round's heads; on disk the previous round's stay too (a crashed round is trained again)."""
    if not dstate:
        return
    context.state["distiller"] = ArrayRecord(dstate)
    number = rc.server_round
    path = _distiller_file(context, rc, number)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(dstate, tmp)
    os.replace(tmp, path)
    for old in path.parent.glob(f"{path.name.rsplit('-r', 1)[0]}-r*.pt"):
        if int(old.stem.rsplit("-r", 1)[1]) < number - 1:
            old.unlink(missing_ok=True)


def _dp_sgd_round(
    msg: Message,
    context: Context,
    rc: RoundConfig,
    student: Net,
    teacher: Net | None,
    data: LocalData,
    dstate: dict | None,
) -> Message:
    """Record-level DP-SGD; the node keeps its privacy ledger across rounds in ``context.state``.

    Only the noised weights, record counts and the privacy spent leave the node: the
    loss terms and local validation scores are computed from records outside the
    guarantee, so they stay here.
    """
    kept = context.state.get("dp-sgd-ledger")
    ledger = Ledger.from_lists(dict(kept) if isinstance(kept, ConfigRecord) else None)
    state, metrics, dstate, ledger = dp_sgd_local_round(
        student,
        teacher,
        data,
        train_config(rc.run),
        rc.run.local_epochs,
        rc.server_round,
        DPSGDConfig.from_run(rc.run),
        ledger,
        rc.run.proximal_mu,
        dstate,
    )
    context.state["dp-sgd-ledger"] = ConfigRecord(dict(ledger.to_lists()))
    _keep_distiller(context, rc, dstate)
    keys = (
        "num-examples",
        "labelled-examples",
        "train-seconds",
        "dp-epsilon",
        "dp-delta",
        "dp-noise-multiplier",
        "dp-steps",
    )
    clean: dict[str, MetricRecordValues] = {**{k: float(metrics[k]) for k in keys}, "wearable": 0.0}
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(clean)}), reply_to=msg)


# FedAvg needs the same metric keys from every client: a fixed set, missing terms as 0
# (every loss term of the one table of terms, liteheart_core/methods.py's LossWeights)
METRIC_KEYS = (
    "num-examples",
    "labelled-examples",
    "total",
    *(f.name for f in fields(LossWeights)),
    "local-val-f1",
    "local-val-auc",
    "train-seconds",
)


def _reply(msg: Message, state: dict, metrics: dict, kind: str) -> Message:
    values = {k: float(metrics.get(k, 0.0)) for k in METRIC_KEYS}
    clean: dict[str, MetricRecordValues] = {k: (0.0 if v != v else v) for k, v in values.items()}  # NaN -> 0
    clean["wearable"] = float(kind == "wearable")  # the client's kind, for per-kind weighting and reports
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord(clean)}), reply_to=msg)
