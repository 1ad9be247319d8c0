"""Ingest: crash safety under SIGKILL, idempotence, clean stop on SIGTERM, labels, --watch, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from client.ingest import ingest, watch
from client.ingest_cmd import app
from client.store import RecordStore
from liteheart_core.data.dataset import PreparedData
from liteheart_core.data.incoming import LabelBook, content_hash, task_classes
from liteheart_core.data.prepare import prepare
from tests.conftest import REPO, ecg_like
from tests.continual.conftest import write_wfdb

runner = CliRunner()


def _folder_of_records(folder: Path, n: int, seconds: int = 10) -> list[Path]:
    return [write_wfdb(folder, f"rec{i:03d}", ecg_like(12, seconds * 100, 100, seed=i)) for i in range(n)]


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _book() -> LabelBook:
    return LabelBook.create("superdiagnostic", task_classes("superdiagnostic"))


def test_ingest_killed_midway_keeps_what_it_committed_and_finishes_without_duplicates(tmp_path: Path) -> None:
    # Prepare
    paths = _folder_of_records(tmp_path / "in", 40, seconds=30)
    db = tmp_path / "store.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "client.ingest_cmd", "ingest", str(tmp_path / "in"), "--store", str(db)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    # Execute: SIGKILL as soon as a few recordings are committed
    deadline = time.monotonic() + 120
    while _count(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    committed = _count(db)
    store = RecordStore(db)
    rows = store.rows()
    batch = store.load([r["id"] for r in rows])
    summary = ingest(store, tmp_path / "in", _book())
    final = store.rows()
    store.close()

    # Assert: killed mid-way, every committed row complete, then the rest added once
    assert proc.returncode == -signal.SIGKILL
    assert 3 <= committed < 40, f"the kill landed after {committed} of 40 recordings"
    for row in rows:
        source = Path(row["source_path"])
        assert row["record_id"] == source.name and row["content_hash"] == content_hash(source)
        assert row["held"] and row["usable"] and row["n_windows"] == 1 and row["n_leads"] == 12
    assert batch.x.shape == (len(rows), 12, 1000) and np.isfinite(batch.x).all()
    assert batch.regions is not None and batch.regions.shape == (len(rows), 1000)
    assert summary.added == 40 - committed and summary.duplicates == committed
    assert len(final) == 40 == len(paths)
    assert len({(r["record_id"], r["content_hash"]) for r in final}) == 40


def test_reingesting_a_folder_adds_nothing_and_a_changed_file_is_new(tmp_path: Path) -> None:
    # Prepare
    _folder_of_records(tmp_path / "in", 6)
    store = RecordStore(tmp_path / "s.sqlite")

    # Execute
    first = ingest(store, tmp_path / "in", _book())
    second = ingest(store, tmp_path / "in", _book())
    write_wfdb(tmp_path / "in", "rec002", ecg_like(12, 1000, 100, seed=99))  # same name, new content
    third = ingest(store, tmp_path / "in", _book())

    # Assert
    assert (first.added, second.added, second.duplicates) == (6, 0, 6)
    assert (third.added, third.duplicates) == (1, 5)
    assert [r["record_id"] for r in store.rows()].count("rec002") == 2
    store.close()


def test_sigterm_stops_a_watch_cleanly_after_the_recording_in_flight(tmp_path: Path) -> None:
    # Prepare
    _folder_of_records(tmp_path / "in", 3)
    db = tmp_path / "store.sqlite"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "client.ingest_cmd",
            "ingest",
            str(tmp_path / "in"),
            "--store",
            str(db),
            "--watch",
            "--interval",
            "0.1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while _count(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)

    # Execute
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)

    # Assert
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "stopped early" in out and "added 3" in out
    assert _count(db) == 3


def test_watch_takes_a_recording_only_once_all_its_files_have_arrived(tmp_path: Path) -> None:
    # Prepare: one recording already there; another arrives header first, signal file a poll later
    folder = tmp_path / "in"
    write_wfdb(folder, "old", ecg_like(12, 1000, 100, seed=1))
    past = time.time() - 3600
    for f in folder.iterdir():
        os.utime(f, (past, past))
    staged = write_wfdb(tmp_path / "staging", "new", ecg_like(12, 1000, 100, seed=2))
    store = RecordStore(tmp_path / "s.sqlite")
    per_poll: list[int] = []

    def on_poll(n: int, part) -> None:
        per_poll.append(part.added)
        if n == 1:
            shutil.copy(staged.with_suffix(".hea"), folder / "new.hea")
        if n == 2:
            shutil.copy(staged.with_suffix(".dat"), folder / "new.dat")

    # Execute
    total = watch(store, folder, _book(), interval=0.2, max_polls=4, stop=threading.Event(), on_poll=on_poll)

    # Assert: nothing taken while new.dat was missing; then stored whole and usable
    assert per_poll[:2] == [1, 0] and sum(per_poll) == 2 == total.added
    rows = {r["record_id"]: r for r in store.rows()}
    assert sorted(rows) == ["new", "old"] and rows["new"]["usable"]
    store.close()


def test_cli_ingest_with_labels_csv_and_store_info(tmp_path: Path) -> None:
    # Prepare: 4 good records, one flat, one unreadable; labels for three of them
    _folder_of_records(tmp_path / "in", 4)
    write_wfdb(tmp_path / "in", "flat", np.zeros((1000, 12)))
    (tmp_path / "in" / "broken.hea").write_text("not a header\n")
    pd.DataFrame({"record": ["rec000", "rec001", "flat"], "labels": ["NORM", "MI|CD", "STTC"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    store = str(tmp_path / "s.sqlite")

    # Execute
    result = runner.invoke(
        app, ["ingest", str(tmp_path / "in"), "--store", store, "--labels", str(tmp_path / "labels.csv")]
    )
    info = runner.invoke(app, ["store", "info", "--store", store, "--json"])

    # Assert
    assert result.exit_code == 0, result.output
    assert "added 6" in result.output and "unusable 2" in result.output
    assert "unusable flat: flat: lead I flat" in result.output and "unusable broken: corrupt header" in result.output
    data = json.loads(info.output)
    assert data["recordings"] == 6 and data["usable"] == 4 and data["unreadable"] == 1
    assert data["flags"]["flat"] == 1 and data["flags"]["unreadable"] == 1
    assert data["label_counts"] == {"NORM": 1, "MI": 1, "STTC": 1, "CD": 1, "HYP": 0}


def test_cli_refuses_a_labels_csv_with_an_unknown_class(tmp_path: Path) -> None:
    _folder_of_records(tmp_path / "in", 1)
    pd.DataFrame({"record": ["rec000"], "labels": ["NORM|AFIB"]}).to_csv(tmp_path / "labels.csv", index=False)

    result = runner.invoke(
        app,
        [
            "ingest",
            str(tmp_path / "in"),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--labels",
            str(tmp_path / "labels.csv"),
        ],
    )

    assert result.exit_code == 2
    assert "record rec000: unknown class 'AFIB'" in result.output


def test_cli_watch_with_max_polls_and_retention(tmp_path: Path) -> None:
    _folder_of_records(tmp_path / "in", 5)
    past = time.time() - 3600
    for f in (tmp_path / "in").iterdir():
        os.utime(f, (past, past))
    store = str(tmp_path / "s.sqlite")

    result = runner.invoke(
        app,
        [
            "ingest",
            str(tmp_path / "in"),
            "--store",
            store,
            "--watch",
            "--interval",
            "0.05",
            "--max-polls",
            "2",
            "--max-records",
            "3",
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["added"] == 5 and data["evicted"] == 2 and not data["stopped"]
    assert data["store"]["held"] == 3 and data["store"]["retention"]["max_records"] == 3


def test_one_lead_wearable_recording_is_stored_as_one_lead(tmp_path: Path) -> None:
    write_wfdb(tmp_path / "in", "watch1", ecg_like(1, 3000, 300, seed=5), fs=300, leads=["I"])
    write_wfdb(tmp_path / "in", "holter3", ecg_like(3, 1000, 100, seed=5), leads=["I", "II", "III"])
    write_wfdb(tmp_path / "in", "nolead1", ecg_like(2, 1000, 100, seed=5), leads=["II", "III"])
    store = RecordStore(tmp_path / "s.sqlite")

    summary = ingest(store, tmp_path / "in", _book())

    rows = {r["record_id"]: r for r in store.rows()}
    assert rows["watch1"]["n_leads"] == 1 and rows["watch1"]["usable"]
    assert store.load([rows["watch1"]["id"]]).x.shape == (1, 1, 1000)
    assert store.candidates() == []  # a round trains 12-lead records (the teacher needs them)
    # a 3-lead Holter holds lead I: a lead-I recording; without lead I a recording is refused
    assert rows["holter3"]["n_leads"] == 1 and rows["holter3"]["usable"]
    assert "missing leads I, aVR" in rows["nolead1"]["quality_flags"]["unreadable"]
    assert summary.unusable == 1
    store.close()


@pytest.mark.realdata
def test_ptbxl_records_ingest_exactly_as_batch_preparation_with_database_labels(
    ptbxl_dir: Path, tmp_path: Path
) -> None:
    # Prepare: a PTB-XL folder with 4 real records (database rows, statements, files)
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv").iloc[[0, 40, 400, 1200]]
    mini = tmp_path / "ptbxl"
    for rel in db["filename_lr"]:
        (mini / rel).parent.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(ptbxl_dir / (rel + ext), mini / (rel + ext))
    db.to_csv(mini / "ptbxl_database.csv", index=False)
    shutil.copy(ptbxl_dir / "scp_statements.csv", mini / "scp_statements.csv")
    prepared = PreparedData.open(Path(prepare(mini, tmp_path / "prep")["path"]))
    classes, y = prepared.labels("superdiagnostic")
    store = RecordStore(tmp_path / "s.sqlite", prep=prepared.meta["settings"])

    # Execute
    ingest(store, mini / "records100", _book())

    # Assert
    rows = {r["record_id"]: r for r in store.rows()}
    for i, rec in enumerate(prepared.index["record"]):
        row = rows[f"{int(rec):05d}_lr"]
        batch = store.load([row["id"]])
        np.testing.assert_array_equal(batch.x[0], prepared.signals[i])
        np.testing.assert_array_equal(batch.regions[0], prepared.regions[i])
        expected = y[i] if y[i].any() else None
        assert (row["label"] is None and expected is None) or row["label"] == expected.tolist()
        assert row["label_source"] == ("ptbxl" if expected is not None else None)
    store.close()
