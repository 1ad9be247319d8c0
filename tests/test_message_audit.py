"""Every message of a deployed run, both directions, holds model arrays, scalar metrics and settings only.

The run is the real server (``run_federation``, with the settings a deployed ServerApp gets:
``start``'s public app-bundle config joined with the server's own settings file) and the real
ClientApp over the in-process grid, which serialises each message as the SuperLink would and
keeps what the other side parsed; nothing here trusts the code that builds the messages. Two
12-lead (paired) nodes and one wearable take part, each naming its data in its node config as
a deployed node does, so both kinds of client are audited. Nothing is exempt: no server path
(data, teacher, run folder) and no registry URL in any message, not even in the serialised bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.serde import message_to_proto

from client.app import app
from liteheart_core.checkpoint import load_checkpoint
from liteheart_core.config import FedConfig
from liteheart_core.federated import state_hash, student_for
from server.app import options_from_run_config
from server.bundle import write_server_settings
from server.orchestrate import run_federation
from server.settings import SETTINGS_ENV, server_settings, split_settings
from server.superlink import Deployment
from simulations.local_grid import LocalGrid, server_identity

NODES = [201, 202, 203]


@pytest.fixture(autouse=True)
def identity():
    """Messages built outside a running ServerApp need the identity Flower gives its processes."""
    with server_identity():
        yield


def shapes(state: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(np.asarray(v).dtype)) for k, v in state.items()}


def strings(msg: Message) -> list[str]:
    """Every piece of text a message carries: record names, keys, setting values, error reasons."""
    out = [msg.metadata.message_type, msg.metadata.group_id]
    if msg.has_error():
        return out + [str(msg.error.reason)]
    for name, record in msg.content.items():
        out.append(name)
        for key, value in record.items():
            out.append(key)
            if isinstance(value, str):
                out.append(value)
    return out


@pytest.mark.parametrize("wearable_teacher", [False, True], ids=["no-wearable-teacher", "wearable-teacher"])
def test_only_model_arrays_metrics_and_settings_travel(
    synth_data, tiny_teacher: Path, tiny_wearable_teacher: Path, tmp_path: Path, wearable_teacher: bool
) -> None:
    given = FedConfig(
        data=str(synth_data.root),
        teacher=str(tiny_teacher),
        clients=len(NODES),
        rounds=2,
        local_epochs=1,
        batch_size=16,
        labelled_fraction=0.5,
        device="cpu",
        method="liteheart-v2" if wearable_teacher else "liteheart",
        wearables=1,
        wearable_teacher=str(tiny_wearable_teacher) if wearable_teacher else "",
    )
    run_dir, db_url = tmp_path / "runs", f"sqlite:///{tmp_path / 'registry-s3cret.sqlite'}"
    public, private = split_settings(
        {
            **given.to_dict(),
            "run-dir": str(run_dir),
            "db-url": db_url,
            "run-id": "audit1",
            "resume": False,
            "run-name": "",
        }
    )
    settings = write_server_settings(Deployment(run_dir=run_dir, port=9092), private)
    cfg, opts = options_from_run_config(server_settings(public, {SETTINGS_ENV: str(settings)}))
    teacher, _ = load_checkpoint(tiny_teacher)
    tstate = {k: v.detach() for k, v in teacher.state_dict().items()}
    worn = {k: v.detach() for k, v in load_checkpoint(tiny_wearable_teacher)[0].state_dict().items()}
    student = student_for(synth_data.tasks[cfg.task], cfg.student_lead)
    # deployed nodes: each names its own copy of the data (here the same folder, so any echo of it would show)
    nodes = {
        node: {"data": str(synth_data.root), "partition-id": i, "num-partitions": len(NODES)}
        for i, node in enumerate(NODES)
    }
    grid = LocalGrid(app, NODES, tmp_path / "nodes", node_configs=nodes)

    shown = run_federation(grid, cfg, opts)

    assert shown["run"]["status"] == "completed"
    student_shapes, teacher_shapes = shapes(student.state_dict()), shapes(tstate)
    installed: dict[int, str] = {}  # node -> hash of the teacher it was sent
    window = int(synth_data.meta["length"])
    kinds: dict[tuple[str, str], int] = {}
    action_of: dict[str, str] = {}
    blob = bytearray()
    for direction, msg in grid.traffic:
        assert not msg.has_error(), msg.error.reason
        content, mtype = msg.content, msg.metadata.message_type
        if direction == "down":  # a reply answers the action of the message it replies to
            action_of[msg.metadata.message_id] = str(content["config"]["action"]) if mtype == "query" else mtype
        action = action_of[msg.metadata.message_id if direction == "down" else msg.metadata.reply_to_message_id]
        kinds[(direction, action)] = kinds.get((direction, action), 0) + 1
        expected = {
            ("down", "train"): {"arrays", "config"},
            ("up", "train"): {"arrays", "metrics"},
            ("down", "teacher-check"): {"config"},
            ("up", "teacher-check"): {"status"},
            ("down", "teacher-install"): {"config", "teacher"},
            ("up", "teacher-install"): {"status"},
        }
        assert set(content) == expected[(direction, action)], (direction, action, set(content))
        for name, record in content.items():
            if isinstance(record, ArrayRecord):
                arrays = {k: v.numpy() for k, v in record.items()}
                # the student's weights, or a teacher's in its own install message: nothing else
                allowed = teacher_shapes if name == "teacher" else student_shapes
                assert shapes(arrays) == allowed, (direction, action, name)
                if name == "teacher":
                    installed[msg.metadata.dst_node_id] = state_hash(record.to_torch_state_dict())
                # no signal window ([*, T], [12 or 1, T]) and no label matrix (uint8 multi-hot) among them
                assert all(window not in a.shape and a.dtype != np.uint8 for a in arrays.values())
                for a in arrays.values():
                    blob += a.tobytes()
            elif isinstance(record, MetricRecord):
                assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in record.values()), name
            else:
                assert isinstance(record, ConfigRecord), type(record)
                assert all(isinstance(v, (int, float, str, bool)) for v in record.values()), name
    # every message kind was seen: teacher shipping to the paired nodes (the wearable never gets the teacher)
    # and both rounds of training on every node
    assert kinds[("up", "train")] == len(NODES) * cfg.rounds
    # each node is sent its teacher once: the sites the 12-lead one, the wearable (last node) the wearable one
    # when the run has one, else none
    sites = {n: state_hash(tstate) for n in NODES[:-1]}
    assert installed == ({**sites, NODES[-1]: state_hash(worn)} if wearable_teacher else sites)
    assert kinds[("down", "teacher-install")] == len(installed)
    if wearable_teacher:  # and the wearable distilled from it
        wearable_kd = [r["train_metrics"]["wearable/kd"] for r in shown["rounds"]]
        assert min(wearable_kd) > 0, wearable_kd

    # no record's samples hidden in any array, whatever its shape: 8 consecutive float32 samples of each
    # record's lead I and V2 (per-record standardised, so never the zeros of a fresh bias) are searched for
    rows = np.arange(len(synth_data.index))
    x = np.asarray(synth_data.x(rows), dtype=np.float32)
    probes = [x[i, lead, window // 2 : window // 2 + 8].tobytes() for i in range(len(x)) for lead in (0, 7)]
    assert not any(p in blob for p in probes if p.count(0) < len(p))

    # no record id as a file name or path, no file of the prepared data, no patient folder in any text; no
    # server path or registry URL anywhere in a message's bytes
    names = [f"{int(r):05d}_lr" for r in synth_data.index["record"]] + [
        "records100",
        "records500",
        "signals.npy",
        "labels_",
        "regions.npy",
        "index.csv",
    ]
    server_only = [
        str(synth_data.root),
        synth_data.root.name,
        str(tiny_teacher),
        tiny_teacher.name,
        str(tiny_wearable_teacher),
        tiny_wearable_teacher.name,
        str(run_dir),
        str(tmp_path),
        "s3cret",
        "sqlite:",
    ]
    for direction, msg in grid.traffic:
        texts = strings(msg)
        assert not [t for t in texts for n in names if n in t], direction
        wire = message_to_proto(msg).SerializeToString()
        assert not [s for s in server_only if s.encode() in wire], (direction, msg.metadata.message_type)
