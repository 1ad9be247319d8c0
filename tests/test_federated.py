"""Federated pieces: client handlers called directly, reply checks, and a real simulation run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client.app import query, train
from liteheart_core.checkpoint import load_checkpoint
from liteheart_core.config import FedConfig
from liteheart_core.federated import state_hash, student_for
from server.orchestrate import _aggregate_from_reports, round_config
from server.strategy import check_update


@pytest.fixture(autouse=True)
def server_identity():
    """Messages built outside a running ServerApp need the identity Flower gives its processes."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None


def node_context(tmp_path: Path, data: Path, partition: tuple[int, int] | None = None) -> Context:
    node = {"cache-dir": str(tmp_path / "cache")}
    if partition is None:
        node.update({"data-path": str(data), "labelled-fraction": 0.5})
    else:
        node.update({"partition-id": partition[0], "num-partitions": partition[1]})
    return Context(run_id=1, node_id=7, node_config=node, state=RecordDict(), run_config={})


def install_teacher(ctx: Context, teacher_path: Path) -> str:
    teacher, meta = load_checkpoint(teacher_path)
    state = {k: v.detach() for k, v in teacher.state_dict().items()}
    digest = state_hash(state)
    small = {k: meta[k] for k in ("classes", "leads", "n_leads", "fs", "length", "net_config", "task")}
    msg = Message(
        RecordDict(
            {
                "config": ConfigRecord(
                    {"action": "teacher-install", "teacher-hash": digest, "teacher-meta": json.dumps(small)}
                ),
                "teacher": ArrayRecord(state),
            }
        ),
        dst_node_id=7,
        message_type="query",
    )
    query(msg, ctx)
    return digest


def check(ctx: Context, digest: str) -> int:
    msg = Message(
        RecordDict({"config": ConfigRecord({"action": "teacher-check", "teacher-hash": digest})}),
        dst_node_id=7,
        message_type="query",
    )
    return int(query(msg, ctx).content["status"]["has-teacher"])


def test_teacher_is_cached_by_hash_and_verified(tmp_path: Path, synth_data, tiny_teacher: Path) -> None:
    ctx = node_context(tmp_path, synth_data.root)
    teacher, _ = load_checkpoint(tiny_teacher)
    digest = state_hash(teacher.state_dict())

    before = check(ctx, digest)
    install_teacher(ctx, tiny_teacher)
    after = check(ctx, digest)
    bad = Message(
        RecordDict(
            {
                "config": ConfigRecord({"action": "teacher-install", "teacher-hash": "0" * 64, "teacher-meta": "{}"}),
                "teacher": ArrayRecord(teacher.state_dict()),
            }
        ),
        dst_node_id=7,
        message_type="query",
    )

    assert (before, after) == (0, 1)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{digest}.pt"]
    with pytest.raises(ValueError, match="corrupted"):
        query(bad, ctx)


@pytest.mark.parametrize("partition", [None, (1, 3)])
def test_train_handler_returns_weights_and_every_metric(
    partition, tmp_path: Path, synth_data, tiny_teacher: Path
) -> None:
    ctx = node_context(tmp_path, synth_data.root, partition)
    digest = install_teacher(ctx, tiny_teacher)
    cfg = FedConfig(data=str(synth_data.root), local_epochs=1, batch_size=16, device="cpu", clients=3)
    torch.manual_seed(0)
    student = student_for(synth_data.tasks["superdiagnostic"])
    config = round_config(cfg, digest, student.cfg.to_dict())
    config["server-round"] = 1
    msg = Message(
        RecordDict({"arrays": ArrayRecord(student.state_dict()), "config": config}), dst_node_id=7, message_type="train"
    )

    reply = train(msg, ctx)

    state = reply.content["arrays"].to_torch_state_dict()
    metrics = dict(reply.content["metrics"])
    assert set(state) == set(student.state_dict())
    assert any(not torch.equal(state[k], v) for k, v in student.state_dict().items())  # it trained
    assert metrics["num-examples"] > 0 and all(np.isfinite(v) for v in metrics.values())
    assert {"bce", "kd", "crd", "waves", "local-val-f1"} <= set(metrics)  # LiteHeart v2, the default method
    assert "distiller" in ctx.state  # local distillation heads stay on the node for the next round


def test_a_resumed_run_continues_the_nodes_distillation_heads(tmp_path: Path, synth_data, tiny_teacher: Path) -> None:
    """A server resumed after a crash starts a new Flower run (a fresh Context.state): a deployed node picks its
    distillation heads up from disk, so round 2 after the resume equals round 2 of the uninterrupted run."""
    cfg = FedConfig(data=str(synth_data.root), local_epochs=1, batch_size=16, device="cpu", clients=3)
    torch.manual_seed(0)
    student = student_for(synth_data.tasks["superdiagnostic"])

    def node(state: RecordDict) -> Context:
        ctx = node_context(tmp_path, synth_data.root, (1, 3))
        ctx.node_config["persist-state"] = True
        return Context(run_id=ctx.run_id, node_id=7, node_config=ctx.node_config, state=state, run_config={})

    def round_of(ctx: Context, number: int, arrays: dict) -> dict:
        config = round_config(cfg, digest, student.cfg.to_dict(), run_id="abc123")
        config["server-round"] = number
        msg = Message(
            RecordDict({"arrays": ArrayRecord(arrays), "config": config}), dst_node_id=7, message_type="train"
        )
        return train(msg, ctx).content["arrays"].to_torch_state_dict()

    first = node(RecordDict())
    digest = install_teacher(first, tiny_teacher)
    after_one = round_of(first, 1, student.state_dict())
    uninterrupted = round_of(first, 2, after_one)
    resumed = round_of(node(RecordDict()), 2, after_one)  # the new Flower run's context knows nothing
    forgetful = node(RecordDict())
    forgetful.node_config["persist-state"] = False  # a simulated node: heads in memory only
    fresh = round_of(forgetful, 2, after_one)

    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
    assert any(not torch.equal(uninterrupted[k], fresh[k]) for k in uninterrupted)  # the heads do matter
    kept = sorted(p.name for p in (tmp_path / "cache" / "distillers").iterdir())
    assert kept == ["abc123-7-r0001.pt", "abc123-7-r0002.pt"]


def test_train_handler_refuses_without_teacher(tmp_path: Path, synth_data) -> None:
    ctx = node_context(tmp_path, synth_data.root)
    student = student_for(synth_data.tasks["superdiagnostic"])
    config = round_config(FedConfig(data=str(synth_data.root), device="cpu"), "a" * 64, student.cfg.to_dict())
    config["server-round"] = 1
    msg = Message(
        RecordDict({"arrays": ArrayRecord(student.state_dict()), "config": config}), dst_node_id=7, message_type="train"
    )

    with pytest.raises(ValueError, match="teacher has not been installed"):
        train(msg, ctx)


def test_hostile_updates_are_rejected_with_reasons() -> None:
    ref = {"w": np.zeros((3, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}
    ok = ArrayRecord({"w": torch.full((3, 2), 0.1), "b": torch.zeros(2)})
    nan = ArrayRecord({"w": torch.full((3, 2), float("nan")), "b": torch.zeros(2)})
    shape = ArrayRecord({"w": torch.zeros(2, 3), "b": torch.zeros(2)})
    huge = ArrayRecord({"w": torch.full((3, 2), 1e6), "b": torch.zeros(2)})
    missing = ArrayRecord({"w": torch.zeros(3, 2)})

    assert check_update(ok, ref, max_norm=10) is None
    assert "NaN" in check_update(nan, ref, 10)
    assert "shape" in check_update(shape, ref, 10)
    assert "norm" in check_update(huge, ref, 10)
    assert "missing" in check_update(missing, ref, 10)


def test_round_metrics_are_example_weighted_over_successful_clients() -> None:
    reports = [
        {"status": "ok", "num_examples": 30, "metrics": {"total": 1.0, "kd": 2.0}},
        {"status": "ok", "num_examples": 10, "metrics": {"total": 3.0, "kd": 4.0}},
        {"status": "failed", "num_examples": 0, "metrics": {}, "reason": "x"},
    ]

    agg = _aggregate_from_reports(reports)

    assert agg == {"kd": pytest.approx(2.5), "total": pytest.approx(1.5)}


def test_run_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text("clients = 3\nrounds = 2\npartition = 'dirichlet'\nalpha = 0.3\n")

    cfg = FedConfig.from_toml(tmp_path / "s.toml", {"rounds": 4})

    assert (cfg.clients, cfg.rounds, cfg.partition, cfg.alpha) == (3, 4, "dirichlet", 0.3)
    with pytest.raises(ValueError, match="unknown run config key 'colour'"):
        FedConfig.from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="partition must be"):
        FedConfig.from_dict({"partition": "random"})
    with pytest.raises(ValueError, match="rounds = 'many'"):
        FedConfig.from_dict({"rounds": "many"})


def test_simulation_cli_end_to_end(tmp_path: Path, synth_data, tiny_teacher: Path) -> None:
    env = {**os.environ, "LITEHEART_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "run",
        "--data",
        str(synth_data.root),
        "--teacher",
        str(tiny_teacher),
        "--clients",
        "3",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--device",
        "cpu",
        "--run-dir",
        str(tmp_path / "runs"),
        "--json",
    ]

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    listed = subprocess.run(
        [sys.executable, "-m", "server.cli", "runs", "list", "--run-dir", str(tmp_path / "runs"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and [r["round"] for r in summary["rounds"]] == [1, 2]
    assert all(r["participants"] == 3 and r["failures"] == 0 for r in summary["rounds"])
    assert summary["teacher_transfers"] <= 3  # once per node at most, never per round
    runs = json.loads(listed.stdout)
    assert [r["id"] for r in runs] == [summary["run_id"]] and runs[0]["rounds"] == 2
    net, meta = load_checkpoint(Path(summary["global_student"]))
    assert meta["round"] == 2 and meta["kind"] == "student"
    assert "Traceback" not in done.stderr
