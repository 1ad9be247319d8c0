"""A wearable teacher: a teacher that answers from lead I, shipped once by hash to wearables, which distil from it;
and the server's validated mixing of the sites' and the wearables' updates."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict

from client.app import query, train
from liteheart_core.checkpoint import load_checkpoint
from liteheart_core.config import FedConfig
from liteheart_core.federated import simulated_client_data, state_hash, student_for, wearable_local_round
from liteheart_core.train import TrainConfig
from liteheart_core.views import build_view_bank, teacher_view
from liteheart_core.wearable import WearableView, wearable_teacher_config
from server.orchestrate import provide_wearable_teacher, round_config
from server.strategy import LiteHeartFedAvg


@pytest.fixture(autouse=True)
def server_identity():
    """Messages built outside a running ServerApp need the identity Flower gives its processes."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None


def wearable_records(synth_data):
    return simulated_client_data(
        str(synth_data.root), 600, "superdiagnostic", 3, 4, "iid", 0.5, 0.3, 0, WearableView(seed=3), 0.2
    )


def test_lead_one_records_reach_a_twelve_lead_teacher_in_their_place(synth_data, tiny_wearable_teacher) -> None:
    teacher, _ = load_checkpoint(tiny_wearable_teacher)
    one = torch.as_tensor(synth_data.x(np.arange(12), leads="I"), dtype=torch.float32)
    padded = torch.zeros(12, 12, one.shape[-1])
    padded[:, 0] = one[:, 0]

    shown = teacher_view(one, 12, [0])
    bank = build_view_bank(teacher, one, None, [0], n_views=2, mix_views=0, augment=False, teacher_leads=[0])

    assert torch.equal(shown, padded)
    with torch.no_grad():
        assert torch.allclose(bank.logits[0], teacher(padded), atol=1e-5)  # the teacher saw lead I, the rest zero
    assert bank.x.shape == (2, 12, 1, one.shape[-1])  # the student's input: lead I only
    with pytest.raises(ValueError, match="say where they go"):
        teacher_view(one, 12, None)


def test_a_wearable_distils_from_its_teacher_on_its_own_lead_one(synth_data, tiny_wearable_teacher) -> None:
    local = wearable_records(synth_data)
    teacher, _ = load_checkpoint(tiny_wearable_teacher)
    cfg = TrainConfig(method="liteheart-v2", device="cpu", batch_size=8)
    torch.manual_seed(0)
    student = student_for(local.classes)
    before = {k: v.clone() for k, v in student.state_dict().items()}

    state, metrics, heads = wearable_local_round(student, local, cfg, 1, 1, teacher)
    _, plain, none = wearable_local_round(student_for(local.classes), local, cfg, 1, 1)

    assert local.x.shape[1] == 1  # nothing but lead I on the device
    assert metrics["kd"] > 0 and metrics["crd"] > 0 and metrics["waves"] > 0  # soft targets, embeddings, P/QRS/T
    assert any(not torch.equal(state[k], before[k]) for k in before)
    assert heads and none == {}  # the contrastive head stays on the device between rounds
    assert "kd" not in plain and plain["consistency"] >= 0  # without a teacher: mean-teacher consistency


def node(cache: Path, partition: int, kind: str, data: str) -> Context:
    return Context(
        run_id=1,
        node_id=7 + partition,
        state=RecordDict(),
        run_config={},
        node_config={
            "client-kind": kind,
            "partition-id": partition,
            "num-partitions": 4,
            "data": data,
            "cache-dir": str(cache),
        },
    )


def test_a_wearable_gets_its_teacher_once_by_hash_and_trains_with_it(
    synth_data, tiny_teacher, tiny_wearable_teacher, tmp_path
) -> None:
    worn_net, worn_meta = load_checkpoint(tiny_wearable_teacher)
    worn_state = {k: v.detach() for k, v in worn_net.state_dict().items()}
    worn_hash = state_hash(worn_state)
    site_hash = state_hash({k: v.detach() for k, v in load_checkpoint(tiny_teacher)[0].state_dict().items()})
    cfg = FedConfig(
        data=str(synth_data.root),
        clients=4,
        device="cpu",
        batch_size=8,
        local_epochs=1,
        wearable_teacher=str(tiny_wearable_teacher),
    )
    student = student_for(synth_data.tasks["superdiagnostic"])
    rc = round_config(cfg, site_hash, student.cfg.to_dict(), run_id="r1", wearable_teacher_hash=worn_hash)
    device, site = (
        node(tmp_path / "watch", 3, "wearable", str(synth_data.root)),
        node(tmp_path / "site", 0, "paired", str(synth_data.root)),
    )
    ask = ConfigRecord({"action": "teacher-check", "teacher-hash": site_hash, "wearable-teacher-hash": worn_hash})

    def check(ctx: Context) -> dict:
        reply = query(Message(RecordDict({"config": ask}), dst_node_id=ctx.node_id, message_type="query"), ctx)
        return {k: int(v) for k, v in reply.content["status"].items()}

    first, site_status = check(device), check(site)
    install = ConfigRecord(
        {
            "action": "teacher-install",
            "teacher-hash": worn_hash,
            "teacher-meta": json.dumps(
                {k: worn_meta[k] for k in ("classes", "leads", "n_leads", "fs", "length", "net_config", "task")}
            ),
        }
    )
    query(
        Message(
            RecordDict({"config": install, "teacher": ArrayRecord(worn_state)}), dst_node_id=10, message_type="query"
        ),
        device,
    )
    second = check(device)
    msg = Message(
        RecordDict(
            {"arrays": ArrayRecord(student.state_dict()), "config": ConfigRecord({**dict(rc), "server-round": 1})}
        ),
        dst_node_id=10,
        message_type="train",
    )
    metrics = train(msg, device).content["metrics"]

    assert first == {"has-teacher": 0, "needs-teacher": 1, "wearable": 1}  # asks for the wearable teacher
    assert site_status == {"has-teacher": 0, "needs-teacher": 1, "wearable": 0}  # a site for the 12-lead one
    assert second["has-teacher"] == 1  # installed: not sent again
    assert [p.name for p in (tmp_path / "watch").glob("*.pt")] == [f"{worn_hash}.pt"]
    assert metrics["wearable"] == 1.0 and metrics["kd"] > 0  # distilled from the wearable teacher
    with pytest.raises(ValueError, match="corrupted"):  # the hash names the bytes: a swapped teacher is refused
        forged = ConfigRecord({**dict(install), "teacher-hash": "0" * 64})
        query(
            Message(
                RecordDict({"config": forged, "teacher": ArrayRecord(worn_state)}), dst_node_id=10, message_type="query"
            ),
            device,
        )


def test_only_a_teacher_that_answers_from_lead_one_is_shipped_to_wearables(
    tiny_teacher, tiny_wearable_teacher, synth_data
) -> None:
    classes = list(synth_data.tasks["superdiagnostic"])
    ok = provide_wearable_teacher(FedConfig(wearable_teacher=str(tiny_wearable_teacher)), classes)

    assert ok is not None and ok[1]["train_config"]["lead_dropout"] == 0.5
    assert provide_wearable_teacher(FedConfig(), classes) is None
    with pytest.raises(ValueError, match="does not answer from lead I"):
        provide_wearable_teacher(FedConfig(wearable_teacher=str(tiny_teacher)), classes)
    with pytest.raises(ValueError, match="predicts"):
        provide_wearable_teacher(FedConfig(wearable_teacher=str(tiny_wearable_teacher)), classes[:3])
    # a server archive of folds 1-2: a wearable teacher that learnt from the clients' folds is refused
    with pytest.raises(ValueError, match="which the clients hold"):
        provide_wearable_teacher(FedConfig(wearable_teacher=str(tiny_wearable_teacher), server_folds="1,2"), classes)
    with pytest.raises(ValueError, match="uses no teacher"):
        FedConfig(wearable_teacher="w.pt", method="supervised")
    with pytest.raises(ValueError, match="wearable-weighting"):
        FedConfig(wearable_weighting="best")
    with pytest.raises(ValueError, match="fedavg or fedprox"):
        FedConfig(wearable_weighting="validated", strategy="fedmedian")
    with pytest.raises(ValueError, match="unknown wearable teacher kind"):
        wearable_teacher_config("bigger", (1, 2))


def _reply(node: int, value: float, examples: int, wearable: bool) -> Message:
    metrics = MetricRecord({"num-examples": float(examples), "total": value, "wearable": float(wearable)})
    meta = Metadata(
        run_id=1,
        message_id=f"r{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=f"m{node}",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    return Message(
        RecordDict({"arrays": ArrayRecord({"w": torch.full((2, 2), value)}), "metrics": metrics}), metadata=meta
    )


def validated(score) -> LiteHeartFedAvg:
    strategy = LiteHeartFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1)
    strategy.setup(
        ArrayRecord({"w": torch.zeros(2, 2)}),
        "a" * 64,
        {},
        10.0,
        wearables=2,
        wearable_weighting="validated",
        score=score,
    )
    strategy.reference = {"w": np.zeros((2, 2), dtype=np.float32)}
    strategy.sampled, strategy.sent = [11, 12, 13], []
    return strategy


def test_validated_weighting_mixes_kinds_at_the_share_that_validates_best() -> None:
    # sites average to 1, wearables to 3 (two of them, 300 examples against the site's 100: FedAvg gives them 3/4)
    replies = [_reply(11, 1.0, 100, False), _reply(12, 2.0, 100, True), _reply(13, 3.5, 200, True)]
    wearables_avg = (2.0 * 100 + 3.5 * 200) / 300
    target = 1.0 + 0.25 * (wearables_avg - 1.0)  # what the server's validation prefers: a quarter wearables
    strategy = validated(lambda arrays: -abs(float(arrays["w"].numpy().mean()) - target))

    arrays, _ = strategy.aggregate_train(1, replies)

    assert strategy.wearable_share == 0.25
    assert np.allclose(arrays["w"].numpy(), target)
    assert set(strategy.share_scores) == {0.0, 0.125, 0.25, 0.5, 0.75}  # FedAvg's own share (0.75) among them
    # the reports keep the true counts, and plain FedAvg's choice wins when validation prefers it
    assert [r["num_examples"] for r in strategy.reports] == [100, 100, 200]
    fedavg = (1.0 * 100 + 2.0 * 100 + 3.5 * 200) / 400
    strategy = validated(lambda arrays: -abs(float(arrays["w"].numpy().mean()) - fedavg))
    arrays, _ = strategy.aggregate_train(
        1, [_reply(11, 1.0, 100, False), _reply(12, 2.0, 100, True), _reply(13, 3.5, 200, True)]
    )
    assert strategy.wearable_share == 0.75 and np.allclose(arrays["w"].numpy(), fedavg)


def test_validated_weighting_leaves_a_round_of_one_kind_alone() -> None:
    calls = []
    strategy = validated(lambda arrays: calls.append(1) or 0.0)

    arrays, _ = strategy.aggregate_train(1, [_reply(11, 1.0, 100, False), _reply(12, 3.0, 100, False)])

    assert np.allclose(arrays["w"].numpy(), 2.0) and calls == [] and strategy.wearable_share == 0.0


def test_the_server_cli_distils_a_lead_one_assistant_that_a_run_accepts(synth_data, tiny_teacher, tmp_path) -> None:
    from typer.testing import CliRunner

    from server.cli import app

    out = tmp_path / "assistant.pt"
    result = CliRunner().invoke(
        app,
        [
            "teacher",
            "assistant",
            "--data",
            str(synth_data.root),
            "--teacher",
            str(tiny_teacher),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--train-folds",
            "1,2",
            "--device",
            "cpu",
            "--json",
        ],
    )
    bad = CliRunner().invoke(
        app,
        [
            "teacher",
            "assistant",
            "--data",
            str(synth_data.root),
            "--teacher",
            str(tiny_teacher),
            "--out",
            str(tmp_path / "x.pt"),
            "--train-folds",
            "one",
        ],
    )

    assert result.exit_code == 0, result.output
    net, meta = load_checkpoint(out)
    assert meta["leads"] == ["I"] and net.n_leads == 1 and meta["method"] == "kd"
    assert meta["train_config"]["train_folds"] == [1, 2]
    # a run whose server archive is folds 1-2 ships it to its wearables
    assert (
        provide_wearable_teacher(
            FedConfig(wearable_teacher=str(out), server_folds="1,2"), list(synth_data.tasks["superdiagnostic"])
        )
        is not None
    )
    assert bad.exit_code != 0 and "--train-folds 'one'" in bad.output


def test_the_server_trains_a_lead_dropout_teacher_once_when_asked_by_kind(synth_data, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LITEHEART_CACHE", str(tmp_path))
    cfg = FedConfig(wearable_teacher="lead-dropout", teacher_epochs=1, device="cpu")
    classes = list(synth_data.tasks["superdiagnostic"])

    net, meta = provide_wearable_teacher(cfg, classes, synth_data)
    cached = list((tmp_path / "teachers").glob("wearable-lead-dropout-*.pt"))
    stamp = cached[0].stat().st_mtime_ns
    again, _ = provide_wearable_teacher(cfg, classes, synth_data)

    assert meta["train_config"]["lead_dropout"] == 0.5 and meta["epochs_run"] == 1 and net.n_leads == 12
    assert len(cached) == 1 and cached[0].stat().st_mtime_ns == stamp  # trained once, then taken from the cache
    assert state_hash(again.state_dict()) == state_hash(net.state_dict())
    with pytest.raises(ValueError, match="needs its data"):
        provide_wearable_teacher(cfg, classes)
