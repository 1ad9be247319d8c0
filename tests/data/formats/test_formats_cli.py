"""A hospital's mixed export through the programs: ``liteheart-sim data prepare auto``, a site's
``liteheart-client start --data`` folder (prepared and read as its local data), and ``liteheart-client
ingest`` once as a real subprocess."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from liteheart_core.data.signal import read_wfdb
from simulations.cli import app as sim_app
from tests.conftest import REPO
from tests.data.formats import writers as W

runner = CliRunner()
FORMATS = ("wfdb", "dicom", "aecg", "edf", "muse", "philips")


def _mixed_site(ptbxl_dir: Path, folder: Path, n: int = 12) -> pd.DataFrame:
    """``n`` real PTB-XL records (raw, one per patient), each exported in one format, SCP codes in DICOM/aECG."""
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    db = db[db["signal_source"] == "raw"].drop_duplicates("patient_id").head(n).reset_index(drop=True)
    folder.mkdir(parents=True)
    for i, row in db.iterrows():
        fmt = FORMATS[i % len(FORMATS)]
        src = ptbxl_dir / row["filename_lr"]
        x = read_wfdb(src).signal
        codes = tuple(ast.literal_eval(row["scp_codes"]))
        patient = str(int(row["patient_id"]))
        name = f"{int(row['ecg_id']):05d}"
        if fmt == "wfdb":
            for ext in (".hea", ".dat"):
                shutil.copy(src.with_suffix(ext), folder)
        elif fmt == "dicom":
            W.write_dicom(folder / f"{name}.dcm", x, 100, patient=patient, codes=codes)
        elif fmt == "aecg":
            W.write_aecg(folder / f"{name}.xml", x, 100, patient=patient, codes=codes)
        elif fmt == "edf":
            W.write_edf(folder / f"{name}.edf", x, 100, patient=patient)
        elif fmt == "muse":
            W.write_muse(folder / f"{name}_muse.xml", x, 100, patient=patient)
        else:
            W.write_philips(folder / f"{name}_philips.xml", x, 100, patient=patient)
    return db


@pytest.mark.realdata
def test_sim_data_prepare_auto_reads_a_mixed_export(ptbxl_dir: Path, tmp_path: Path) -> None:
    # Prepare
    _mixed_site(ptbxl_dir, tmp_path / "site")

    # Execute
    result = runner.invoke(
        sim_app,
        ["data", "prepare", "auto", str(tmp_path / "site"), "--out", str(tmp_path / "out"), "--no-regions", "--json"],
    )

    # Assert
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["source"] == "files" and summary["records"] == 12 and summary["skipped"] == 0
    assert summary["formats"] == {f: 2 for f in FORMATS}
    assert summary["task_records"]["superdiagnostic"] == 4  # the DICOM and aECG files carry SCP-ECG codes


@pytest.mark.realdata
def test_a_sites_mixed_data_folder_becomes_its_local_data(
    ptbxl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: what `liteheart-client start --data FOLDER` does with the folder (node_data -> resolve_data)
    from client.deploy import node_data
    from liteheart_core.federated import site_data

    monkeypatch.setenv("LITEHEART_CACHE", str(tmp_path / "cache"))
    _mixed_site(ptbxl_dir, tmp_path / "site")

    # Execute
    prepared = node_data(str(tmp_path / "site"), partitioned=False)
    local = site_data(prepared, "superdiagnostic", 1.0, seed=0)

    # Assert: the labelled records train, split by patient; the 12-lead windows are finite
    assert Path(prepared).is_relative_to(tmp_path / "cache")
    assert local.x.shape[1:] == (12, 1000) and len(local.x) + len(local.val_x) == 4
    assert np.isfinite(local.x.numpy()).all()


@pytest.mark.realdata
def test_liteheart_client_ingest_as_a_program_stores_a_watch_csv_and_an_edf_as_lead_i(
    ptbxl_dir: Path, tmp_path: Path
) -> None:
    # Prepare
    x = read_wfdb(ptbxl_dir / "records100/00000/00001_lr").signal
    folder = tmp_path / "phone"
    folder.mkdir()
    W.write_apple(folder / "ecg_2024-03-01.csv", x[0], 100)
    W.write_edf(folder / "patch.edf", x, 100, leads=("I",))
    store = tmp_path / "device.sqlite"

    # Execute
    proc = subprocess.run(
        [sys.executable, "-m", "client.cli", "ingest", str(folder), "--store", str(store), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    # Assert
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["added"] == 2 and summary["unusable"] == 0
    assert summary["store"]["usable"] == 2
