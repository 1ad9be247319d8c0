"""Ingest of what devices export: an Apple Health CSV and EDF files go into a device store as lead-I
recordings, labelled from the file's own statements; a mixed folder through the CLI and --watch."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly
from typer.testing import CliRunner

from client.cli import app
from client.ingest import watch
from client.local import store_data
from client.store import RecordStore
from liteheart_core.data.incoming import LabelBook, task_classes
from liteheart_core.data.signal import read_wfdb
from tests.conftest import ecg_like
from tests.data.formats import writers as W

runner = CliRunner()
RECORD = "records100/00000/00001_lr"


def _lead_i_at(ptbxl_dir: Path, fs: int) -> np.ndarray:
    """Lead I of a real PTB-XL record (mV) at a wearable's rate."""
    raw = read_wfdb(ptbxl_dir / RECORD)
    up, down = {512: (128, 25), 250: (5, 2)}[fs]
    return resample_poly(raw.signal.astype(np.float64), up, down, axis=-1)


@pytest.mark.realdata
def test_cli_ingest_puts_an_apple_health_csv_and_edf_files_into_the_store_as_lead_i(
    ptbxl_dir: Path, tmp_path: Path
) -> None:
    # Prepare: a watch's CSV (512 Hz, µV), a patch's one-lead EDF (250 Hz), a 3-lead Holter EDF (I, II, III),
    # an EDF without lead I, and the 12-lead DICOM of the same record
    x512, x250 = _lead_i_at(ptbxl_dir, 512), _lead_i_at(ptbxl_dir, 250)
    folder = tmp_path / "device"
    folder.mkdir()
    W.write_apple(folder / "ecg_2024-03-01.csv", x512[0], 512)
    W.write_edf(folder / "patch.edf", x250, 250, leads=("I",))
    W.write_edf(folder / "holter.edf", x250, 250, leads=("I", "II", "III"))
    W.write_edf(folder / "no_lead_i.edf", x250, 250, leads=("II", "III"))
    W.write_dicom(folder / "cart.dcm", read_wfdb(ptbxl_dir / RECORD).signal, 100, codes=("NORM",))
    store = tmp_path / "device.sqlite"

    # Execute
    result = runner.invoke(app, ["ingest", str(folder), "--store", str(store), "--json"])

    # Assert
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["added"] == 5 and summary["unusable"] == 1
    assert summary["problems"][0]["record"] == "no_lead_i.edf"
    assert "missing leads I," in summary["problems"][0]["reason"]
    with RecordStore(store) as rs:
        rows = {r["record_id"]: r for r in rs.rows()}
        lead_i = {r for r, row in rows.items() if row["n_leads"] == 1 and row["usable"]}
        assert lead_i == {"ecg_2024-03-01.csv", "patch.edf", "holter.edf"}
        assert rows["cart.dcm"]["n_leads"] == 12 and rows["cart.dcm"]["usable"]
        assert rows["cart.dcm"]["label_source"] == "file"  # NORM from the DICOM's SCP-ECG statement
        windows = rs.load([rows[r]["id"] for r in sorted(lead_i)]).x
    # the three are one signal at 512 and 250 Hz: after preparation (100 Hz, 10 s) they agree
    assert windows.shape == (3, 1, 1000)
    assert min(np.corrcoef(windows[:, 0])[np.triu_indices(3, 1)]) > 0.95
    # a wearable's training data from its store: lead I of each
    local = store_data(str(store), "superdiagnostic")
    assert tuple(local.x.shape) == (4, 1, 1000)

    # Execute again: nothing new
    again = json.loads(runner.invoke(app, ["ingest", str(folder), "--store", str(store), "--json"]).output)
    assert again["added"] == 0 and again["duplicates"] == 5


def test_apple_classification_labels_a_challenge_store(tmp_path: Path) -> None:
    # Prepare: the watch says atrial fibrillation; a store for the Challenge 2021 classes
    folder = tmp_path / "in"
    folder.mkdir()
    W.write_apple(
        folder / "af.csv", ecg_like(1, 512 * 30, 512, seed=2)[:, 0], 512, classification="Atrial Fibrillation"
    )
    W.write_apple(folder / "poor.csv", ecg_like(1, 512 * 30, 512, seed=3)[:, 0], 512, classification="Poor Recording")
    store = tmp_path / "s.sqlite"

    # Execute
    result = runner.invoke(app, ["ingest", str(folder), "--store", str(store), "--task", "challenge2021", "--json"])

    # Assert
    assert result.exit_code == 0, result.output
    with RecordStore(store) as rs:
        rows = {r["record_id"]: r for r in rs.rows()}
        classes = rs.classes
    assert rows["af.csv"]["label_source"] == "file" and rows["poor.csv"]["label_source"] is None
    assert classes[int(np.argmax(np.asarray(rows["af.csv"]["label"])))] == "AF"


def test_watch_ingests_a_csv_once_it_has_settled(tmp_path: Path) -> None:
    # Prepare
    folder = tmp_path / "in"
    folder.mkdir()
    path = W.write_apple(folder / "ecg.csv", ecg_like(1, 512 * 30, 512, seed=4)[:, 0], 512)
    past = time.time() - 60
    os.utime(path, (past, past))
    store = RecordStore(tmp_path / "s.sqlite")
    book = LabelBook.create("superdiagnostic", task_classes("superdiagnostic"))

    # Execute
    summary = watch(store, folder, book, interval=0.05, max_polls=2)

    # Assert
    assert summary.added == 1 and summary.unusable == 0
    assert [r["n_leads"] for r in store.rows()] == [1]
    store.close()
