"""LiteHeart's SecAgg+ ClientApp (legacy stack): a NumPyClient behind Flower's ``secaggplus_mod``.

Selected for a run with ``secagg = true`` (``server/secagg.py`` explains the
protocol). Flower 1.42 implements SecAgg+ for legacy clients only: ``fit`` gets
the global student as a list of arrays in the student's ``state_dict`` order and
returns the locally trained weights, which ``secaggplus_mod`` scales by
``num-examples``, quantises and masks before anything leaves the node.

The teacher's ``query`` messages (``teacher-check`` / ``teacher-install``) are
answered by the Message API client's own handler through ``teacher_query_mod``,
so a node caches the teacher by content hash exactly as in the main path. Node
config keys are those of ``client/app.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Scalar

from client.app import METRIC_KEYS, _load_teacher, _teacher_file, query
from client.local import client_kind, local_data
from liteheart_core.federated import local_round, train_config
from liteheart_core.models import NetConfig, build_net
from liteheart_core.round_config import RoundConfig


def teacher_query_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Answer the server's teacher queries; every other message goes on to SecAgg+ and ``fit``."""
    if msg.metadata.message_type == "query":
        return query(msg, context)
    return call_next(msg, context)


class SecAggClient(NumPyClient):
    """One local LiteHeart round per ``fit``; the weights go out only through ``secaggplus_mod``."""

    def __init__(self, node: Context) -> None:
        self.node = node

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        rc = RoundConfig.from_record(dict(config))
        run = rc.run
        torch.set_num_threads(rc.client_threads)
        kind = client_kind(self.node, run.wearables)
        if kind != "paired":
            raise ValueError(f"this node is a {kind}: the SecAgg+ client runs the 12-lead round only")
        data = local_data(self.node, rc, kind)
        tcfg = train_config(run)
        student = build_net(1, len(data.classes), NetConfig.from_dict(rc.student_net))
        keys = list(student.state_dict())
        if len(parameters) != len(keys):
            raise ValueError(f"received {len(parameters)} arrays, the student has {len(keys)}")
        student.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in zip(keys, parameters)})
        teacher = None
        if tcfg.spec.needs_teacher:
            path = _teacher_file(self.node, rc.teacher_hash)
            if not path.is_file():
                raise ValueError("the teacher has not been installed on this node")
            teacher = _load_teacher(str(path))
        distiller = self.node.state.get("distiller")
        dstate = dict(distiller.to_torch_state_dict()) if isinstance(distiller, ArrayRecord) else None
        state, metrics, dstate = local_round(
            student, teacher, data, tcfg, run.local_epochs, rc.server_round, run.proximal_mu, dstate
        )
        if dstate:
            self.node.state["distiller"] = ArrayRecord(dstate)
        arrays = [state[k].numpy() for k in keys]
        check_before_masking(arrays, data.n_train, run.secagg_max_weight, run.secagg_clipping_range)
        values = {k: float(metrics.get(k, 0.0)) for k in METRIC_KEYS}
        clean: dict[str, Scalar] = {k: (0.0 if math.isnan(v) else v) for k, v in values.items()}  # NaN -> 0
        return arrays, data.n_train, clean


def check_before_masking(arrays: list[np.ndarray], num_examples: int, max_weight: int, clipping_range: float) -> None:
    """Refuse an update that SecAgg+ would corrupt without anyone noticing.

    Once masked, the server cannot check one client's update (NaN, overflow), so the
    client does: its weight must not exceed ``secagg-max-weight`` and its weighted
    weights must lie inside the clipping range, or the mean would be silently wrong.
    A refusal makes this node a dropout of the round, recorded with the reason.
    """
    if num_examples > max_weight:
        raise ValueError(
            f"{num_examples} training examples exceed secagg-max-weight {max_weight}: "
            f"raise secagg-max-weight to at least {num_examples}"
        )
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("the local update holds NaN or infinite values; not sent")
    peak = max(float(np.max(np.abs(a))) for a in arrays if a.size) * num_examples / max_weight
    if peak > clipping_range:
        raise ValueError(
            f"a weighted weight reaches {peak:.3g}, beyond secagg-clipping-range {clipping_range:g}: "
            f"SecAgg+ would clip it; raise secagg-clipping-range"
        )


def client_fn(context: Context) -> Client:
    return SecAggClient(context).to_client()


# secaggplus_mod only acts on train messages; the teacher's queries pass it untouched
app = ClientApp(client_fn=client_fn, mods=[teacher_query_mod, secaggplus_mod])
