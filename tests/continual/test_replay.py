"""Replay: the class-balanced reservoir, round planning, and a continual round on a real store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from client.ingest import ingest_paths
from client.store import RecordStore
from liteheart_core.continual import (
    Candidate,
    ClassBalancedReservoir,
    TeacherTargets,
    continual_round,
    plan_round,
)
from liteheart_core.data.incoming import LabelBook
from liteheart_core.data.synth import CLASSES, generate_record
from liteheart_core.federated import student_for
from liteheart_core.models import Net, build_net
from liteheart_core.train import TrainConfig, make_trainable
from tests.conftest import TINY_STUDENT, TINY_TEACHER, ecg_like
from tests.continual.conftest import fake_recording, write_wfdb

C = 5


def _stream(n: int, seed: int) -> list[tuple[int, np.ndarray | None]]:
    """Imbalanced multi-label stream: class 0 common, class 4 rare, some unlabelled."""
    rng = np.random.default_rng(seed)
    out = []
    for key in range(n):
        if rng.random() < 0.1:
            out.append((key, None))
            continue
        y = (rng.random(C) < np.array([0.6, 0.2, 0.15, 0.1, 0.005])).astype(np.uint8)
        if not y.any():
            y[0] = 1
        out.append((key, y))
    return out


def _fill(buf: ClassBalancedReservoir, stream) -> ClassBalancedReservoir:
    for key, y in stream:
        buf.offer(key, y)
    return buf


def test_reservoir_holds_an_equal_share_of_every_class_and_all_of_a_rare_one() -> None:
    # Prepare
    stream = _stream(3000, seed=1)
    labels = {k: y for k, y in stream}
    rare_seen = sum(1 for _, y in stream if y is not None and y[4])

    # Execute
    buf = _fill(ClassBalancedReservoir(120, C, seed=0), stream)

    # Assert: quota 120 // 6 = 20 per class (and for unlabelled); the rare class keeps all it saw
    members = buf.class_members()
    assert buf.quota == 20 and len(buf) <= 120
    assert [len(m) for m in members] == [20, 20, 20, 20, min(20, rare_seen), 20]
    for c in range(C):
        assert all(labels[k] is not None and labels[k][c] for k in members[c])
    assert all(labels[k] is None for k in members[C])
    in_buffer = np.array([labels[k] for k in buf.keys() if labels[k] is not None])  # noqa: SIM118  (a reservoir)
    in_stream = np.array([y for _, y in stream if y is not None])
    assert in_buffer[:, 4].mean() > 5 * in_stream[:, 4].mean()  # rebalanced


def test_reservoir_is_deterministic_and_resumes_from_its_state() -> None:
    stream = _stream(600, seed=2)

    a = _fill(ClassBalancedReservoir(60, C, seed=7), stream)
    b = _fill(ClassBalancedReservoir(60, C, seed=7), stream)
    c = _fill(ClassBalancedReservoir(60, C, seed=8), stream)
    half = _fill(ClassBalancedReservoir(60, C, seed=7), stream[:300])
    resumed = _fill(ClassBalancedReservoir.from_state(half.state()), stream[300:])

    assert a.class_members() == b.class_members() == resumed.class_members()
    assert a.keys() != c.keys()


def test_reservoir_keeps_each_record_of_a_class_with_equal_probability() -> None:
    # 100 records of one class through a quota-10 reservoir, 400 seeds: each is kept with p = 0.1
    kept = np.zeros(100)
    for seed in range(400):
        buf = ClassBalancedReservoir(10, 1, seed=seed, keep_unlabelled=False)
        for key in range(100):
            buf.offer(key, np.array([1], dtype=np.uint8))
        kept[buf.keys()] += 1
    rate = kept / 400
    assert rate[:50].mean() == pytest.approx(0.1, abs=0.015)
    assert rate[50:].mean() == pytest.approx(0.1, abs=0.015)


def test_replay_sample_is_class_balanced_distinct_and_skips_excluded() -> None:
    buf = _fill(ClassBalancedReservoir(60, C, seed=0), _stream(1000, seed=3))
    rng = np.random.default_rng(0)
    members = buf.class_members()

    sample = buf.sample(12, rng, exclude=members[0][:5])

    assert len(sample) == len(set(sample)) == 12
    assert not set(sample) & set(members[0][:5])
    for m in members:  # 12 draws over 6 non-empty reservoirs: each reservoir is drawn from
        if m:
            assert set(sample) & set(m)


def test_plan_is_new_records_plus_replay_and_drops_evicted_keys_from_the_buffer() -> None:
    # Prepare: 30 records already used once (in the buffer), 8 new ones
    buf = ClassBalancedReservoir(12, C, seed=0)
    old = [Candidate(k, np.eye(C, dtype=np.uint8)[k % C], 1) for k in range(30)]
    for c in old:
        buf.offer(c.key, c.label)
    new = [Candidate(100 + k, None, 0) for k in range(8)]
    evicted = set(buf.keys()[:3])
    candidates = [c for c in old if c.key not in evicted] + new

    # Execute
    plan = plan_round(candidates, buf, np.random.default_rng(0), replay_ratio=0.5)
    capped = plan_round(candidates, buf, np.random.default_rng(0), replay_ratio=10.0, replay_max=5)
    nothing_new = plan_round(old, buf, np.random.default_rng(0))

    # Assert
    assert plan.new == tuple(100 + k for k in range(8)) and len(plan.replay) == math.ceil(0.5 * 8)
    assert set(plan.replay) <= {c.key for c in old} - evicted
    assert not set(buf.keys()) & evicted
    assert len(capped.replay) == 5
    assert nothing_new.keys == []


def test_unusable_records_never_enter_a_training_set(tmp_path: Path) -> None:
    # Prepare: a store with usable and unusable recordings over several "arrivals"
    store = RecordStore(tmp_path / "s.sqlite")
    buf = ClassBalancedReservoir(20, C, seed=0)
    rng = np.random.default_rng(0)
    unusable: set[int] = set()
    for wave in range(5):
        for i in range(10):
            usable = rng.random() > 0.4
            label = list(np.eye(C, dtype=int)[rng.integers(C)]) if rng.random() > 0.3 else None
            key = store.add(fake_recording(f"w{wave}-{i}", usable=usable, label=label, seed=wave * 10 + i)).key
            if not usable:
                unusable.add(key)

        # Execute
        cands = store.candidates()
        plan = plan_round(cands, buf, rng)
        store.mark_used(plan.keys, wave + 1)
        for c in cands:
            if c.times_used == 0:
                buf.offer(c.key, c.label)

        # Assert
        assert plan.new and not set(plan.keys) & unusable
        assert not set(buf.keys()) & unusable
    used = {r["id"]: r["times_used"] for r in store.rows()}
    assert unusable and all(used[k] == 0 for k in unusable)
    store.close()


@pytest.fixture
def arrivals(tmp_path: Path) -> tuple[list[Path], Path]:
    """32 synthetic 12-lead recordings (WFDB) and a labels CSV naming their classes."""
    paths, rows = [], []
    for i in range(32):
        labels = (CLASSES[i % len(CLASSES)],)
        rec = generate_record(np.random.default_rng(i), labels, fs=100)
        paths.append(write_wfdb(tmp_path / "in", f"s{i:02d}", rec.signal.astype(np.float64)))
        rows.append({"record": f"s{i:02d}", "labels": "|".join(labels)})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return paths, tmp_path / "labels.csv"


def _tiny_teacher(n_classes: int) -> Net:
    torch.manual_seed(1)  # an untrained teacher: its targets are as good as any for bookkeeping
    return build_net(12, n_classes, TINY_TEACHER).eval()


def test_a_round_trains_on_new_plus_replay_and_counts_every_use(arrivals, tmp_path: Path) -> None:
    # Prepare: 24 recordings arrive, plus one flat one; a tiny kd student and teacher
    paths, labels_csv = arrivals
    store = RecordStore(tmp_path / "s.sqlite")
    book = LabelBook.create(store.task, store.classes, labels_csv)
    flat = write_wfdb(tmp_path / "bad", "flat", np.zeros((1000, 12)))
    first = ingest_paths(store, paths[:24] + [flat], book)
    teacher = _tiny_teacher(len(store.classes))
    cfg = TrainConfig(method="kd", batch_size=16, device="cpu", seed=0)
    torch.manual_seed(0)
    student = student_for(store.classes, net=TINY_STUDENT)
    buf = ClassBalancedReservoir(12, len(store.classes), seed=0)
    targets = TeacherTargets(teacher, student, cfg)

    # Execute: round 1 (everything new), then 8 more arrive and round 2 replays
    r1 = continual_round(store, buf, student, teacher, cfg, 1, targets=targets)
    second = ingest_paths(store, paths[24:32], book)
    r2 = continual_round(store, buf, student, teacher, cfg, 2, targets=targets)
    r3 = continual_round(store, buf, student, teacher, cfg, 3, targets=targets)

    # Assert
    uses = {c.key: c.times_used for c in store.candidates()}
    rows = {r["id"]: r for r in store.rows()}
    flat_key = next(k for k, r in rows.items() if r["record_id"] == "flat")
    assert first.added == 25 and first.unusable == 1 and second.added == 8
    assert len(r1.plan.new) == 24 and r1.plan.replay == ()
    assert len(r2.plan.new) == 8 and len(r2.plan.replay) == 8 and not set(r2.plan.new) & set(r2.plan.replay)
    assert set(r2.plan.replay) <= set(r1.plan.new)
    assert r2.metrics["num-examples"] == 16 and r2.metrics["replay-records"] == 8
    assert r3 is None  # nothing new arrived
    assert all(rows[k]["label_source"] == "csv" for k in r1.plan.new)
    for key in r2.plan.new:
        assert uses[key] == 1
    for key in r1.plan.new:
        assert uses[key] == (2 if key in r2.plan.replay else 1)
    assert flat_key not in uses and rows[flat_key]["times_used"] == 0
    assert len(targets) == 32  # the teacher ran once per record, replays reused
    store.close()


def test_teacher_targets_cache_matches_what_training_computes() -> None:
    teacher = _tiny_teacher(5)
    cfg = TrainConfig(method="liteheart", device="cpu")
    student = student_for(list("ABCDE"), net=TINY_STUDENT)
    x = torch.as_tensor(np.stack([ecg_like(12, 1000, 100, seed=i).T for i in range(10)]), dtype=torch.float32)
    keys = list(range(100, 110))
    targets = TeacherTargets(teacher, student, cfg)

    targets.fill(keys[:6], x[:6].numpy())
    targets.fill(keys, x.numpy())
    logits, feats = targets.get(keys)
    tr = make_trainable(student, cfg, x, torch.zeros(10, 5), np.ones(10, bool), None, torch.device("cpu"), teacher)

    assert len(targets) == 10 and len(targets.stages) > 1
    torch.testing.assert_close(logits, tr.t_logits)
    for s in targets.stages:
        torch.testing.assert_close(feats[s].float(), tr.t_feats[s].float())
