"""The run registry, one suite for every backend (see conftest.py): SQLite in memory, SQLite
file, PostgreSQL. Tests that need a second connection run on the shared backends; the crash
tests kill a writer process and so use a SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from liteheart_core.storage import CheckpointInfo, Registry, RegistryError, mask_url
from liteheart_core.storage import registry as registry_module
from liteheart_core.storage._sqlite import BUSY_TIMEOUT_MS
from liteheart_core.storage.models import CheckpointRow, ClientReportRow, RoundRow

REPO = Path(__file__).resolve().parents[2]


def sha(n: int) -> str:
    return f"{n:064x}"


def reports_for(number: int, n_clients: int = 3, failed: int = 0) -> list[dict[str, Any]]:
    ok = [
        {
            "node_id": f"node{i}",
            "status": "ok",
            "num_examples": 10 * (i + 1),
            "metrics": {"loss": round(1.0 / number + i, 3)},
            "reason": None,
        }
        for i in range(n_clients - failed)
    ]
    bad = [
        {"node_id": f"node{i}", "status": "failed", "num_examples": 0, "metrics": {}, "reason": "timeout"}
        for i in range(n_clients - failed, n_clients)
    ]
    return ok + bad


def record(
    reg: Registry,
    run_id: str,
    number: int,
    *,
    checkpoint: bool = True,
    macro_f1: float = 0.5,
    n_clients: int = 3,
    failed: int = 0,
) -> None:
    reg.record_round(
        run_id,
        number,
        train_metrics={"loss": 1.0 / number},
        central_metrics={"macro_f1": macro_f1, "auc": 0.8},
        participants=[f"node{i}" for i in range(n_clients)],
        duration_s=2.5,
        client_reports=reports_for(number, n_clients, failed),
        checkpoint=CheckpointInfo(run_id, number, f"ckpt/round{number}.pt", sha(number)) if checkpoint else None,
    )


def assert_no_trace_of_round(reg: Registry, run_id: str, number: int) -> None:
    with reg.session() as session:
        assert session.scalars(select(RoundRow).where(RoundRow.run_id == run_id, RoundRow.number == number)).all() == []
        assert (
            session.scalars(
                select(ClientReportRow).where(ClientReportRow.run_id == run_id, ClientReportRow.round == number)
            ).all()
            == []
        )
    assert reg.last_checkpoint(run_id) is None or reg.last_checkpoint(run_id).round != number


def recent(moment: datetime) -> bool:
    return moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


# --- runs ------------------------------------------------------------------------------------


def test_create_and_get_run_round_trip(registry: Registry) -> None:
    # Prepare
    config = {"rounds": 5, "student": {"width": 16, "leads": ["I"]}, "lr": 1e-3, "tag": "héllo"}

    # Execute
    run_id = registry.create_run(config, "sha256:abc", run_id="exp-1", name="first")
    run = registry.get_run(run_id)

    # Assert
    assert run_id == "exp-1"
    assert run is not None
    assert run["config"] == config and run["data_fingerprint"] == "sha256:abc" and run["name"] == "first"
    assert run["status"] == "running" and run["finished_at"] is None and run["error"] is None
    assert recent(run["created_at"]) and run["created_at"].utcoffset() == timedelta(0)
    assert registry.get_run("nope") is None


def test_generated_run_ids_are_short_and_unique(registry: Registry) -> None:
    ids = [registry.create_run({"i": i}, "fp") for i in range(25)]

    assert len(set(ids)) == 25
    assert all(1 <= len(i) <= 16 for i in ids)
    assert [registry.get_run(i)["config"]["i"] for i in ids] == list(range(25))


def test_taken_or_malformed_run_id_is_refused(registry: Registry) -> None:
    registry.create_run({"v": 1}, "fp", run_id="r1")

    with pytest.raises(RegistryError, match="already exists"):
        registry.create_run({"v": 2}, "fp", run_id="r1")
    with pytest.raises(ValueError, match="run id"):
        registry.create_run({}, "fp", run_id="../etc")
    assert registry.get_run("r1")["config"] == {"v": 1}
    assert [r["id"] for r in registry.list_runs()] == ["r1"]


def test_status_transitions_set_and_clear_finished_at(registry: Registry) -> None:
    run_id = registry.create_run({}, "fp")

    registry.set_status(run_id, "interrupted", error="SIGTERM")
    interrupted = registry.get_run(run_id)
    registry.set_status(run_id, "running")  # resumed
    resumed = registry.get_run(run_id)
    registry.set_status(run_id, "failed", error="client pool empty")
    failed = registry.get_run(run_id)

    assert interrupted["status"] == "interrupted" and recent(interrupted["finished_at"])
    assert interrupted["error"] == "SIGTERM"
    assert resumed["status"] == "running" and resumed["finished_at"] is None and resumed["error"] is None
    assert failed["status"] == "failed" and failed["error"] == "client pool empty"
    assert failed["finished_at"] >= interrupted["finished_at"]
    assert failed["updated_at"] >= failed["created_at"]
    with pytest.raises(ValueError, match="expected one of"):
        registry.set_status(run_id, "done")
    with pytest.raises(RegistryError, match="no run 'ghost'"):
        registry.set_status("ghost", "completed")
    assert registry.get_run(run_id)["status"] == "failed"


def test_list_runs_newest_first_with_progress(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a controlled clock, so the order cannot depend on timer resolution
    clock = iter(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=m) for m in range(100))
    monkeypatch.setattr(registry_module, "_utcnow", lambda: next(clock))
    old = registry.create_run({}, "fp", name="old")
    mid = registry.create_run({}, "fp", name="mid")
    new = registry.create_run({}, "fp", name="new")
    record(registry, old, 1, macro_f1=0.41)
    record(registry, old, 2, macro_f1=0.63)
    record(registry, mid, 1, macro_f1=0.2)
    registry.set_status(old, "completed")

    # Execute
    runs = registry.list_runs()

    # Assert
    assert [r["id"] for r in runs] == [new, mid, old]
    by_id = {r["id"]: r for r in runs}
    assert (by_id[old]["rounds"], by_id[old]["macro_f1"], by_id[old]["status"]) == (2, 0.63, "completed")
    assert by_id[old]["finished_at"] is not None and by_id[new]["finished_at"] is None
    assert (by_id[mid]["rounds"], by_id[mid]["macro_f1"]) == (1, 0.2)
    assert (by_id[new]["rounds"], by_id[new]["macro_f1"]) == (0, None)
    assert by_id[new]["created_at"] == datetime(2025, 1, 1, 0, 2, tzinfo=UTC)


# --- rounds ----------------------------------------------------------------------------------


def test_show_and_export_round_trip(registry: Registry) -> None:
    # Prepare
    run_id = registry.create_run({"rounds": 2}, "fp", name="show")
    record(registry, run_id, 1, macro_f1=0.3, failed=1)
    record(registry, run_id, 2, macro_f1=0.6, checkpoint=False)

    # Execute
    shown = registry.show_run(run_id)
    exported = json.loads(json.dumps(registry.export_run(run_id)))

    # Assert
    assert shown["run"]["id"] == run_id
    assert [r["number"] for r in shown["rounds"]] == [1, 2]
    first, second = shown["rounds"]
    assert first["client_reports"] == reports_for(1, failed=1)
    assert first["n_failures"] == 1 and second["n_failures"] == 0
    assert first["participants"] == ["node0", "node1", "node2"]
    assert first["central_metrics"] == {"macro_f1": 0.3, "auc": 0.8} and first["duration_s"] == 2.5
    assert first["checkpoint"]["sha256"] == sha(1) and second["checkpoint"] is None
    assert [c["round"] for c in shown["checkpoints"]] == [1]
    assert exported["run"]["config"] == {"rounds": 2}
    assert datetime.fromisoformat(exported["run"]["created_at"]) == shown["run"]["created_at"]
    assert datetime.fromisoformat(exported["rounds"][0]["started_at"]) == first["started_at"]
    assert exported["rounds"][0]["client_reports"] == first["client_reports"]
    assert exported["format"] == 1


def test_round_is_written_whole_or_not_at_all(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: round 1 is fine; for round 2 the database fails at the last flush, when the
    # round row, its reports and its checkpoint are all in the open transaction
    run_id = registry.create_run({}, "fp")
    record(registry, run_id, 1)
    original_flush = registry_module._flush
    flushes: list[int] = []
    inside: list[tuple[int, int, int]] = []

    def failing_flush(session: Session, run: str, number: int) -> None:
        original_flush(session, run, number)
        flushes.append(number)
        if number == 2 and flushes.count(2) == 3:
            inside.append(
                tuple(
                    len(session.scalars(select(table).where(table.run_id == run_id, column == 2)).all())
                    for table, column in (
                        (RoundRow, RoundRow.number),
                        (ClientReportRow, ClientReportRow.round),
                        (CheckpointRow, CheckpointRow.round),
                    )
                )
            )
            raise OperationalError("INSERT ...", {}, Exception("disk I/O error (simulated)"))

    monkeypatch.setattr(registry_module, "_flush", failing_flush)

    # Execute
    with pytest.raises(RegistryError, match="simulated"):
        record(registry, run_id, 2)
    monkeypatch.undo()

    # Assert: the failure came with all of round 2 written, and none of it survived
    assert inside == [(1, 3, 1)]
    assert registry.last_round(run_id) == 1
    assert_no_trace_of_round(registry, run_id, 2)
    assert registry.last_checkpoint(run_id).round == 1
    record(registry, run_id, 2)  # and the round can then be recorded for real
    assert [len(r["client_reports"]) for r in registry.show_run(run_id)["rounds"]] == [3, 3]


def test_database_constraint_failure_mid_round_leaves_nothing(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: skip the Python checks so the database itself refuses the second report for a
    # node, after the round row is already flushed
    run_id = registry.create_run({}, "fp")
    monkeypatch.setattr(registry_module, "check_reports", lambda reports: [dict(r) for r in reports])
    twice = [{"node_id": "a", "status": "ok", "num_examples": 1, "metrics": {}, "reason": None}] * 2

    # Execute
    with pytest.raises(RegistryError, match="round 1 of run .* breaks a constraint"):
        registry.record_round(
            run_id,
            1,
            train_metrics={},
            central_metrics={},
            participants=["a"],
            duration_s=1.0,
            client_reports=twice,
            checkpoint=CheckpointInfo(run_id, 1, "c.pt", sha(1)),
        )

    # Assert
    assert registry.last_round(run_id) == 0
    assert_no_trace_of_round(registry, run_id, 1)
    assert registry.last_checkpoint(run_id) is None


def test_duplicate_round_is_refused_and_the_first_kept(registry: Registry) -> None:
    run_id = registry.create_run({}, "fp")
    record(registry, run_id, 1, macro_f1=0.25)

    with pytest.raises(RegistryError, match="round 1 of run .* already recorded"):
        record(registry, run_id, 1, macro_f1=0.99, n_clients=5)

    rounds = registry.show_run(run_id)["rounds"]
    assert len(rounds) == 1
    assert rounds[0]["central_metrics"]["macro_f1"] == 0.25 and len(rounds[0]["client_reports"]) == 3


def test_last_round_and_last_checkpoint(registry: Registry) -> None:
    # Prepare
    run_id = registry.create_run({}, "fp")
    other = registry.create_run({}, "fp")
    empty = (registry.last_round(run_id), registry.last_checkpoint(run_id))

    # Execute: checkpoints after rounds 1, 2 and 4, none after 3
    for number in (1, 2, 3, 4):
        record(registry, run_id, number, checkpoint=number != 3)
    record(registry, other, 1)

    # Assert
    assert empty == (0, None)
    assert registry.last_round(run_id) == 4 and registry.last_round(other) == 1
    assert registry.last_checkpoint(run_id) == CheckpointInfo(run_id, 4, "ckpt/round4.pt", sha(4))
    assert registry.last_checkpoint(other).round == 1
    assert registry.last_round("ghost") == 0


def test_rounds_need_a_running_run(registry: Registry) -> None:
    run_id = registry.create_run({}, "fp")
    registry.set_status(run_id, "completed")

    with pytest.raises(RegistryError, match="is completed"):
        record(registry, run_id, 1)
    with pytest.raises(RegistryError, match="no run 'ghost'"):
        record(registry, "ghost", 1)
    registry.set_status(run_id, "running")
    record(registry, run_id, 1)
    assert registry.last_round(run_id) == 1


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"status": "ok"}, "node_id and status are required"),
        ({"node_id": "a", "status": "maybe"}, "status 'maybe'"),
        ({"node_id": "a", "status": "ok", "num_examples": -1}, "num_examples"),
        ({"node_id": "a", "status": "ok", "num_examples": "12"}, "num_examples"),
        ({"node_id": "a", "status": "ok", "metrics": [1, 2]}, "metrics must be a dict"),
        ({"node_id": "a", "status": "ok", "loss": 0.1}, "unknown keys"),
        ({"node_id": "", "status": "ok"}, "node id"),
    ],
)
def test_malformed_reports_are_refused_before_writing(registry: Registry, report: dict[str, Any], message: str) -> None:
    run_id = registry.create_run({}, "fp")
    good = {"node_id": "z", "status": "ok", "num_examples": 3}

    with pytest.raises(ValueError, match=message):
        registry.record_round(
            run_id,
            1,
            train_metrics={},
            central_metrics={},
            participants=["a", "z"],
            duration_s=1.0,
            client_reports=[good, report],
            checkpoint=None,
        )
    assert registry.last_round(run_id) == 0


def test_malformed_checkpoint_is_refused(registry: Registry) -> None:
    run_id = registry.create_run({}, "fp")

    of_round_2 = CheckpointInfo(run_id, 2, "c.pt", sha(1))

    with pytest.raises(ValueError, match="not run"):
        registry.record_round(
            run_id,
            1,
            train_metrics={},
            central_metrics={},
            participants=[],
            duration_s=1.0,
            client_reports=[],
            checkpoint=of_round_2,
        )
    with pytest.raises(ValueError, match="sha256"):
        registry.record_round(
            run_id,
            1,
            train_metrics={},
            central_metrics={},
            participants=[],
            duration_s=1.0,
            client_reports=[],
            checkpoint=CheckpointInfo(run_id, 1, "c.pt", "ABC"),
        )
    assert registry.last_round(run_id) == 0


def test_non_finite_metrics_are_stored_as_null(registry: Registry) -> None:
    # PostgreSQL's json type rejects NaN; an undefined metric must not lose the round
    run_id = registry.create_run({}, "fp")

    registry.record_round(
        run_id,
        1,
        train_metrics={"loss": float("inf")},
        central_metrics={"macro_f1": 0.5, "auc": {"AFIB": float("nan"), "NORM": 0.9}},
        participants=[7, 8],
        duration_s=0.5,
        client_reports=[{"node_id": 7, "status": "ok", "metrics": {"x": float("nan")}}],
        checkpoint=None,
    )

    rnd = registry.show_run(run_id)["rounds"][0]
    assert rnd["train_metrics"] == {"loss": None}
    assert rnd["central_metrics"]["auc"] == {"AFIB": None, "NORM": 0.9}
    assert rnd["participants"] == ["7", "8"] and rnd["client_reports"][0]["node_id"] == "7"
    assert rnd["client_reports"][0]["metrics"] == {"x": None}


def test_session_commits_or_rolls_back(registry: Registry) -> None:
    run_id = registry.create_run({}, "fp", name="before")

    with pytest.raises(KeyError), registry.session() as session:
        session.get(registry_module.RunRow, run_id).name = "changed"
        session.flush()
        raise KeyError("boom")
    with registry.session() as session:
        session.get(registry_module.RunRow, run_id).name = "after"

    assert registry.get_run(run_id)["name"] == "after"


# --- reading, errors -------------------------------------------------------------------------


def test_unknown_run_error_names_it_and_hides_the_password(registry: Registry, registry_url: str) -> None:
    registry.create_run({}, "fp", run_id="known")

    with pytest.raises(RegistryError) as info:
        registry.show_run("unknown")

    message = str(info.value)
    assert "'unknown'" in message and "latest: known" in message
    password = registry_module.make_url(registry_url).password
    if password:
        assert password not in message and "***" in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("not a url", "not a database URL"),
        ("nosuchdb://user:s3cret@host/db", "no driver"),
        ("sqlite:////nonexistent-liteheart/dir/registry.sqlite", "does not exist"),
        ("postgresql+psycopg://user:s3cret@127.0.0.1:1/db", "refused|failed"),
    ],
)
def test_bad_url_is_a_registry_error_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(RegistryError, match=reason) as info:
        Registry(url)

    message = str(info.value)
    assert "s3cret" not in message
    assert mask_url(url) in message


def test_wrong_postgres_password_is_masked(pg_url: str) -> None:
    url = registry_module.make_url(pg_url).set(password="wr0ng-secret")

    with pytest.raises(RegistryError, match="password authentication failed") as info:
        Registry(url.render_as_string(hide_password=False))

    assert "wr0ng-secret" not in str(info.value) and "***" in str(info.value)


def test_default_url_is_a_sqlite_file_in_the_run_folder(tmp_path: Path) -> None:
    with Registry(Registry.default_url(tmp_path)) as reg:
        run_id = reg.create_run({}, "fp")

    assert (tmp_path / "registry.sqlite").is_file()
    with Registry(Registry.default_url(tmp_path)) as again:
        assert again.get_run(run_id) is not None


# --- several connections, crashes ------------------------------------------------------------


def test_second_connection_neither_waits_for_nor_sees_an_open_round(shared_url: str) -> None:
    # Prepare
    writer, reader = Registry(shared_url), Registry(shared_url)
    run_id = writer.create_run({}, "fp")
    try:
        with writer.session(write=True) as session:
            session.add(
                RoundRow(
                    run_id=run_id,
                    number=1,
                    started_at=datetime.now(UTC),
                    duration_s=1.0,
                    train_metrics={},
                    central_metrics={},
                    participants=[],
                    n_failures=0,
                )
            )
            session.flush()

            # Execute: read while the write transaction is open
            start = time.monotonic()
            during = reader.last_round(run_id), reader.get_run(run_id)["status"]
            waited = time.monotonic() - start

        after = reader.last_round(run_id)
    finally:
        writer.close()
        reader.close()

    # Assert
    assert during == (0, "running")
    assert waited < 2.0  # busy timeout is 10 s: a blocked reader would show
    assert after == 1


def test_processes_opening_a_new_registry_at_once_do_not_collide(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    start = threading.Barrier(6)
    outcomes: list[object] = []

    def open_and_create(i: int) -> None:
        start.wait()
        try:
            with Registry(url) as reg:
                outcomes.append(reg.create_run({"i": i}, "fp"))
        except BaseException as exc:  # collected for the assertion
            outcomes.append(exc)

    threads = [threading.Thread(target=open_and_create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(isinstance(o, str) for o in outcomes), outcomes
    with Registry(url) as reg:
        assert len(reg.list_runs()) == 6


def test_sqlite_file_uses_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    with Registry(f"sqlite:///{tmp_path / 'r.sqlite'}") as reg, reg.session() as session:
        pragmas = [
            session.connection().exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "foreign_keys", "busy_timeout")
        ]

    assert pragmas == ["wal", 1, BUSY_TIMEOUT_MS]


def test_reader_sees_only_whole_rounds_while_another_thread_writes(shared_url: str) -> None:
    # Prepare
    writer, reader = Registry(shared_url), Registry(shared_url)
    run_id = writer.create_run({}, "fp")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for number in range(1, 31):
                record(writer, run_id, number, n_clients=20)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=write)

    # Execute
    thread.start()
    snapshots = []
    try:
        while thread.is_alive():
            snapshots.append(reader.show_run(run_id)["rounds"])
        thread.join()
        snapshots.append(reader.show_run(run_id)["rounds"])
    finally:
        writer.close()
        reader.close()

    # Assert
    assert errors == []
    assert len(snapshots[-1]) == 30
    for rounds in snapshots:
        assert [r["number"] for r in rounds] == list(range(1, len(rounds) + 1))
        assert all(len(r["client_reports"]) == 20 and r["checkpoint"] is not None for r in rounds)


WRITER = """
import sys, time
from liteheart_core.storage import CheckpointInfo, Registry
from liteheart_core.storage import registry as module

url, run_id, pause_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
flush = module._flush
def pausing_flush(session, run, number):
    flush(session, run, number)
    # second flush of a round: the round row and all its reports are in the open transaction
    if number == pause_at and getattr(session, "_liteheart_flushes", 0) == 1:
        print("paused", number, flush=True)
        time.sleep(60)
    session._liteheart_flushes = getattr(session, "_liteheart_flushes", 0) + 1
module._flush = pausing_flush

reg = Registry(url)
for number in range(1, 100_000):
    reports = [{"node_id": f"n{i}", "status": "ok", "num_examples": i, "metrics": {"loss": i / 7}}
               for i in range(100)]
    reg.record_round(run_id, number, train_metrics={"loss": 1 / number}, central_metrics={"macro_f1": 0.5},
                     participants=[f"n{i}" for i in range(100)], duration_s=0.1, client_reports=reports,
                     checkpoint=CheckpointInfo(run_id, number, f"c{number}.pt", f"{number:064x}"))
    print("recorded", number, flush=True)
"""


def kill_writer(url: str, run_id: str, *, pause_at: int, kill_after: int, delay_s: float) -> None:
    """Start WRITER, SIGKILL it once it prints ``paused`` or has recorded ``kill_after`` rounds."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, run_id, str(pause_at)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(30, child.kill)  # a hung writer must not hang the suite
    watchdog.start()
    try:
        for line in child.stdout:
            if line.startswith("paused") or line == f"recorded {kill_after}\n":
                break
        else:
            pytest.fail(f"writer stopped early: {child.stderr.read()}")
        time.sleep(delay_s)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def assert_whole_rounds(url: str, run_id: str) -> list[int]:
    with Registry(url) as reg:
        with reg.session() as session:
            assert session.connection().exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            orphans = session.connection().exec_driver_sql("PRAGMA foreign_key_check").all()
        rounds = reg.show_run(run_id)["rounds"]
        numbers = [r["number"] for r in rounds]
        assert numbers == list(range(1, len(numbers) + 1))
        for r in rounds:
            assert len(r["client_reports"]) == 100 and r["checkpoint"]["sha256"] == f"{r['number']:064x}"
        assert reg.last_round(run_id) == len(numbers)
    assert orphans == []
    return numbers


def test_killed_mid_round_leaves_only_whole_rounds(tmp_path: Path) -> None:
    # Prepare
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with Registry(url) as reg:
        run_id = reg.create_run({}, "fp")

    # Execute: SIGKILL while round 4's row and reports are written but not committed
    kill_writer(url, run_id, pause_at=4, kill_after=10**6, delay_s=0.0)

    # Assert
    assert assert_whole_rounds(url, run_id) == [1, 2, 3]
    with Registry(url) as reg:  # the run goes on where it stopped
        record(reg, run_id, 4)
        assert reg.last_round(run_id) == 4


def test_killed_at_a_random_moment_leaves_only_whole_rounds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with Registry(url) as reg:
        run_id = reg.create_run({}, "fp")

    kill_writer(url, run_id, pause_at=0, kill_after=3, delay_s=0.05 + (time.time_ns() % 50) / 1000)

    assert len(assert_whole_rounds(url, run_id)) >= 3
