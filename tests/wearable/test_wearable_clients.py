"""Wearables in a federation: a lead-I node with no teacher trains; the server takes rounds where both kinds reply."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from client.app import query, train
from client.ingest import ingest
from client.local import client_kind, local_data
from client.store import RecordStore
from liteheart_core.config import FedConfig
from liteheart_core.data.incoming import LabelBook, task_classes
from liteheart_core.federated import simulated_client_data, student_for
from liteheart_core.round_config import RoundConfig
from server.orchestrate import _aggregate_from_reports, round_config
from server.strategy import LiteHeartFedAvg
from tests.conftest import ecg_like
from tests.continual.conftest import write_wfdb

CLASSES = task_classes("superdiagnostic")


@pytest.fixture(autouse=True)
def server_identity():
    """Messages built outside a running ServerApp need the identity Flower gives its processes."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None


def wearable_store(folder: Path) -> str:
    """A device store holding only lead-I recordings (a watch at 300 Hz), three of them labelled."""
    for i in range(12):
        write_wfdb(folder / "in", f"watch{i:02d}", ecg_like(1, 3000, 300, seed=i, hr=60 + 4 * i), fs=300, leads=["I"])
    pd.DataFrame({"record": ["watch00", "watch01", "watch02"], "labels": ["NORM", "MI", "NORM|CD"]}).to_csv(
        folder / "labels.csv", index=False
    )
    url = str(folder / "store.sqlite")
    with RecordStore(url) as store:
        ingest(store, folder / "in", LabelBook.create("superdiagnostic", CLASSES, folder / "labels.csv"))
    return url


def test_wearable_trains_with_lead_one_only_and_no_teacher(tmp_path: Path) -> None:
    # Prepare: a node whose only data are lead-I recordings, and an empty teacher cache
    url = wearable_store(tmp_path)
    cache = tmp_path / "teachers"
    ctx = Context(
        run_id=1,
        node_id=5,
        node_config={"client-kind": "wearable", "store": url, "cache-dir": str(cache)},
        state=RecordDict(),
        run_config={},
    )
    torch.manual_seed(0)
    student = student_for(CLASSES)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = round_config(FedConfig(device="cpu", batch_size=4, local_epochs=1), "a" * 64, student.cfg.to_dict())
    cfg["server-round"] = 1
    msg = Message(
        RecordDict({"arrays": ArrayRecord(student.state_dict()), "config": cfg}), dst_node_id=5, message_type="train"
    )
    check = Message(
        RecordDict({"config": ConfigRecord({"action": "teacher-check", "teacher-hash": "a" * 64})}),
        dst_node_id=5,
        message_type="query",
    )

    # Execute
    status = query(check, ctx).content["status"]
    reply = train(msg, ctx)

    # Assert: it asked for no teacher, trained, and said it is a wearable
    assert int(status["needs-teacher"]) == 0 and int(status["has-teacher"]) == 0
    state = reply.content["arrays"].to_torch_state_dict()
    metrics = reply.content["metrics"]
    assert any(not torch.equal(state[k], before[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in state.values())
    assert metrics["wearable"] == 1.0 and metrics["num-examples"] == 12 and metrics["labelled-examples"] == 3
    assert metrics["kd"] == 0.0 and metrics["feature"] == 0.0  # nothing distilled from a teacher
    assert not cache.exists() or not any(cache.iterdir())  # no teacher was ever written on the node


def test_simulated_wearable_reads_lead_one_only(synth_data, monkeypatch: pytest.MonkeyPatch) -> None:
    rc = RoundConfig.from_record(
        round_config(FedConfig(data=str(synth_data.root), clients=4, wearables=2, device="cpu"), "a" * 64, {})
    )
    node = {"partition-id": 3, "num-partitions": 4}
    ctx = Context(run_id=1, node_id=9, node_config=node, state=RecordDict(), run_config={})
    read = []
    original = type(synth_data).x
    monkeypatch.setattr(
        type(synth_data), "x", lambda self, rows, leads="all": read.append(leads) or original(self, rows, leads)
    )
    simulated_client_data.cache_clear()  # another test may have built this partition already: read it afresh

    kind = client_kind(ctx, rc.run.wearables)
    data = local_data(ctx, rc, kind)
    paired = client_kind(
        Context(run_id=1, node_id=8, node_config={**node, "partition-id": 1}, state=RecordDict(), run_config={}),
        rc.run.wearables,
    )

    assert kind == "wearable" and paired == "paired"
    assert data.x.shape[1] == 1 and data.val_x.shape[1] == 1
    # its P/QRS/T regions are delineated on its own (degraded) lead I
    assert data.regions.shape == (len(data.x), data.x.shape[-1]) and set(data.regions.unique().tolist()) >= {0, 2}
    assert read and set(read) == {"I"}  # never a 12-lead read
    with pytest.raises(ValueError, match="client-kind='watch'"):
        client_kind(
            Context(run_id=1, node_id=9, node_config={"client-kind": "watch"}, state=RecordDict(), run_config={}),
            rc.run.wearables,
        )


def _reply(node: int, value: float, examples: int, wearable: bool, msg_id: str) -> Message:
    metrics = MetricRecord({"num-examples": float(examples), "total": value, "wearable": float(wearable)})
    meta = Metadata(
        run_id=1,
        message_id=f"r{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=msg_id,
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    return Message(
        RecordDict({"arrays": ArrayRecord({"w": torch.full((2, 2), value)}), "metrics": metrics}), metadata=meta
    )


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_server_aggregates_a_round_of_both_kinds_with_kind_weights(weight: float) -> None:
    strategy = LiteHeartFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1)
    strategy.setup(ArrayRecord({"w": torch.zeros(2, 2)}), "a" * 64, {}, 10.0, wearables=1, wearable_weight=weight)
    strategy.reference = {"w": np.zeros((2, 2), dtype=np.float32)}
    strategy.sampled, strategy.sent = [11, 12, 13], []
    replies = [
        _reply(11, 1.0, 100, False, "m11"),
        _reply(12, 3.0, 100, True, "m12"),
        _reply(13, float("nan"), 50, True, "m13"),
    ]

    arrays, metrics = strategy.aggregate_train(1, replies)
    per_kind = _aggregate_from_reports(strategy.reports)

    expected = (100 * 1.0 + 100 * weight * 3.0) / (100 + 100 * weight)
    assert np.allclose(arrays["w"].numpy(), expected)
    kinds = {r["node_id"]: (r["status"], r["metrics"].get("wearable")) for r in strategy.reports}
    assert kinds == {"11": ("ok", 0.0), "12": ("ok", 1.0), "13": ("failed", None)}
    assert [r["num_examples"] for r in strategy.reports if r["status"] == "ok"] == [100, 100]  # true counts kept
    assert per_kind["paired/total"] == 1.0 and per_kind["wearable/total"] == 3.0
    assert per_kind["paired/clients"] == 1 and per_kind["wearable/clients"] == 1
    assert per_kind["paired/num-examples"] == 100 and per_kind["wearable/num-examples"] == 100


def test_kind_config_is_validated() -> None:
    with pytest.raises(ValueError, match="wearables must be in"):
        FedConfig(clients=2, wearables=3)
    with pytest.raises(ValueError, match="wearable-weight"):
        FedConfig.from_dict({"wearable-weight": -1})
    with pytest.raises(ValueError, match="nothing to aggregate"):
        FedConfig(clients=2, wearables=2, wearable_weight=0.0)
    with pytest.raises(ValueError, match="wearable-degrade"):
        FedConfig.from_dict({"wearable-degrade": "sometimes"})
    assert json.dumps(FedConfig(wearables=1).to_dict())  # travels as plain config
