"""Preparation: real PTB-XL and Challenge data, lead order, rates, windows, bad input, cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from liteheart_core.data.dataset import PreparedData, resolve_data
from liteheart_core.data.prepare import PreparationError, PrepSettings, prepare
from liteheart_core.data.signal import STANDARD_LEADS, RecordError, read_wfdb
from tests.conftest import ecg_like

PTB_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
FAST = PrepSettings(regions=False)


def write_record(folder: Path, name: str, sig: np.ndarray, fs: float, leads: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * sig.shape[1],
        sig_name=leads or PTB_LEADS[: sig.shape[1]],
        p_signal=sig,
        fmt=["16"] * sig.shape[1],
        adc_gain=[1000.0] * sig.shape[1],
        baseline=[0] * sig.shape[1],
        write_dir=str(folder),
    )
    return folder / name


def mini_ptbxl(root: Path, n: int = 6, fs: int = 100) -> Path:
    """A PTB-XL-layout folder of ``n`` good records with known labels."""
    rows = []
    codes = ["{'NORM': 100.0, 'SR': 0.0}", "{'IMI': 50.0}", "{'NDT': -1.0, 'LVH': 0.0}", "{'SR': 0.0}"]
    for i in range(1, n + 1):
        rel = f"records100/00000/{i:05d}_lr"
        write_record(root / "records100/00000", f"{i:05d}_lr", ecg_like(12, 10 * fs, fs, seed=i), fs)
        rows.append(
            {
                "ecg_id": i,
                "patient_id": 100 + i,
                "age": 50,
                "sex": 0,
                "site": i % 2,
                "strat_fold": 1 + i % 10,
                "scp_codes": codes[i % len(codes)],
                "filename_lr": rel,
                "filename_hr": rel.replace("100", "500").replace("_lr", "_hr"),
            }
        )
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    stmts = pd.DataFrame(
        {
            "description": ["normal", "inferior MI", "non-diag T", "LVH", "sinus rhythm"],
            "diagnostic": [1, 1, 1, 1, None],
            "form": [None, None, 1, None, None],
            "rhythm": [None, None, None, None, 1],
            "diagnostic_class": ["NORM", "MI", "STTC", "HYP", None],
            "diagnostic_subclass": ["NORM", "IMI", "STTC", "LVH", None],
        },
        index=["NORM", "IMI", "NDT", "LVH", "SR"],
    )
    stmts.to_csv(root / "scp_statements.csv")
    return root


@pytest.fixture(scope="module")
def prepared_ptbxl(ptbxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("prep")
    return prepare(ptbxl_dir, out), out


@pytest.mark.realdata
def test_real_ptbxl_counts_and_cache(prepared_ptbxl: tuple[dict, Path], ptbxl_dir: Path) -> None:
    summary, out = prepared_ptbxl

    again = prepare(ptbxl_dir, out)

    assert summary["records"] == 2020 and summary["skipped"] == 0 and not summary["cached"]
    assert summary["label_counts"]["superdiagnostic"] == {"NORM": 1119, "STTC": 531, "CD": 465, "MI": 287, "HYP": 202}
    assert summary["task_records"]["superdiagnostic"] == 2011
    assert again["cached"] and again["path"] == summary["path"]
    assert summary["prepare_seconds"] < 60


@pytest.mark.realdata
def test_real_ptbxl_arrays(prepared_ptbxl: tuple[dict, Path]) -> None:
    data = PreparedData.open(Path(prepared_ptbxl[0]["path"]))

    x = data.x(data.rows("superdiagnostic", folds=[9])[:50])
    classes, y = data.labels("superdiagnostic")

    assert data.signals.shape == (2020, 12, 1000) and data.signals.dtype == np.float32
    assert classes == ["NORM", "MI", "STTC", "CD", "HYP"] and y.shape == (2020, 5)
    # Standardised per record and lead: both signal_source groups end up on one scale.
    assert np.allclose(x.mean(axis=-1), 0, atol=1e-3) and np.allclose(x.std(axis=-1), 1, atol=1e-2)
    assert set(data.index.loc[data.rows(folds=[9]), "fold"]) == {9}
    assert data.regions is not None and data.regions.shape == (2020, 1000)


@pytest.mark.realdata
def test_real_challenge(challenge_dir: Path, tmp_path: Path) -> None:
    summary = prepare(challenge_dir, tmp_path, settings=FAST)

    assert summary["records"] == 221 and summary["n_sources"] == 7
    assert summary["sources"]["Ningbo"] == 66 and summary["sources"]["Chapman-Shaoxing"] == 19
    assert summary["label_counts"]["challenge2021"]["NSR"] == 64
    assert any(w["record"] == "JS20006" and "251238007" in w["reason"] for w in summary["warnings"])


@pytest.mark.realdata
def test_challenge_windows_mode_cuts_long_records(challenge_dir: Path, tmp_path: Path) -> None:
    summary = prepare(challenge_dir, tmp_path, settings=PrepSettings(regions=False, long_records="windows"))
    data = PreparedData.open(Path(summary["path"]))

    per_record = data.index.groupby("record")["window"].count()

    assert summary["records"] == 221 and summary["windows"] > 221
    seconds = pd.read_csv(challenge_dir / "labels.csv", index_col="record")["seconds"]
    assert per_record["A0001"] >= int(seconds["A0001"] // 10)  # 15 s -> 2 windows (second one padded)


def test_leads_reordered_whatever_order_or_case(tmp_path: Path) -> None:
    sig = ecg_like(12, 1000, 100, seed=3)
    shuffled = [5, 0, 11, 2, 7, 1, 3, 4, 6, 8, 9, 10]
    names = [STANDARD_LEADS[i].lower() for i in shuffled]
    path = write_record(tmp_path, "rec", sig[:, shuffled], 100, names)

    raw = read_wfdb(path)

    assert np.allclose(raw.signal, sig.T, atol=2e-3)


def test_resampling_keeps_frequency(tmp_path: Path) -> None:
    fs = 500
    t = np.arange(10 * fs) / fs
    sig = np.tile(np.sin(2 * np.pi * 5 * t)[:, None], (1, 12))
    folder = mini_ptbxl(tmp_path / "db", n=1)
    write_record(folder / "records100/00000", "00001_lr", sig, fs)

    summary = prepare(folder, tmp_path / "out", settings=FAST)
    x = PreparedData.open(Path(summary["path"])).signals[0, 0]

    spectrum = np.abs(np.fft.rfft(x))
    assert x.shape == (1000,)
    assert np.argmax(spectrum) == 50  # 5 Hz over 10 s


def test_bad_records_are_skipped_with_reasons(tmp_path: Path) -> None:
    root = mini_ptbxl(tmp_path / "db", n=8)
    rec = root / "records100/00000"
    (rec / "00001_lr.hea").unlink()  # missing header
    (rec / "00002_lr.dat").unlink()  # missing signal
    dat = rec / "00003_lr.dat"
    dat.write_bytes(dat.read_bytes()[:5000])  # truncated
    (rec / "00004_lr.hea").write_text("garbage that is no header\n")  # corrupt header
    nan = ecg_like(12, 1000, 100)
    nan[100:200, 4] = np.nan
    write_record(rec, "00005_lr", nan, 100)
    write_record(rec, "00006_lr", np.zeros((1000, 12)), 100)  # flat line
    write_record(rec, "00007_lr", ecg_like(11, 1000, 100), 100, PTB_LEADS[:11])  # no V6

    summary = prepare(root, tmp_path / "out", settings=FAST)

    reasons = {s["record"]: s["reason"] for s in summary["skipped_records"]}
    assert summary["records"] == 1 and set(reasons) == {"1", "2", "3", "4", "5", "6", "7"}
    assert "header" in reasons["1"] and "missing" in reasons["1"]
    assert "signal file" in reasons["2"]
    assert "truncated" in reasons["3"]
    assert "header" in reasons["4"]
    assert "NaN" in reasons["5"] and "AVL" in reasons["5"].upper()
    assert "flat" in reasons["6"]
    assert "V6" in reasons["7"]
    report = json.loads((Path(summary["path"]) / "report.json").read_text())
    assert len(report["skipped"]) == 7


def test_strict_mode_names_the_record_and_writes_no_cache(tmp_path: Path) -> None:
    root = mini_ptbxl(tmp_path / "db", n=3)
    (root / "records100/00000/00002_lr.dat").unlink()

    with pytest.raises(PreparationError, match="record 2"):
        prepare(root, tmp_path / "out", settings=FAST, strict=True)

    assert not any((tmp_path / "out").glob("ptbxl-*")) if (tmp_path / "out").exists() else True


def test_unknown_sampling_rate(tmp_path: Path) -> None:
    path = write_record(tmp_path, "r", ecg_like(12, 1000, 100), 100)
    head = path.with_suffix(".hea")
    head.write_text(head.read_text().replace("r 12 100 1000", "r 12 0 1000", 1))

    with pytest.raises(RecordError, match="sampling rate|header"):
        read_wfdb(path)


def test_short_record_padded_and_regions_masked(tmp_path: Path) -> None:
    root = mini_ptbxl(tmp_path / "db", n=1)
    write_record(root / "records100/00000", "00001_lr", ecg_like(12, 600, 100), 100)

    summary = prepare(root, tmp_path / "out")
    data = PreparedData.open(Path(summary["path"]))

    assert data.index.loc[0, "valid"] == 600
    assert np.all(data.signals[0, :, 600:] == 0)
    assert np.all(data.regions[0, 600:] == -1) and np.any(data.regions[0, :600] == 2)


def test_challenge_bad_codes_and_sources(tmp_path: Path, challenge_dir: Path) -> None:
    root = tmp_path / "ch"
    root.mkdir()
    for name in ("A0001", "E00001", "HR00001"):
        for ext in (".hea", ".mat"):
            if (challenge_dir / f"{name}{ext}").exists():
                shutil.copy(challenge_dir / f"{name}{ext}", root / f"{name}{ext}")
    hea = root / "E00001.hea"
    hea.write_text(hea.read_text().replace("#Dx: 426783006", "#Dx: 999999999"))

    summary = prepare(root, tmp_path / "out", settings=FAST)

    reasons = {s["record"]: s["reason"] for s in summary["skipped_records"]}
    assert "999999999" in reasons.get("E00001", "")
    assert summary["records"] == len(list(root.glob("*.hea"))) - 1


def test_cache_key_follows_settings_and_content(tmp_path: Path) -> None:
    root = mini_ptbxl(tmp_path / "db", n=2)
    a = prepare(root, tmp_path / "out", settings=FAST)
    b = prepare(root, tmp_path / "out", settings=PrepSettings(regions=False, fs=50))
    write_record(root / "records100/00000", "00001_lr", ecg_like(12, 1000, 100, seed=99), 100)
    c = prepare(root, tmp_path / "out", settings=FAST)

    assert len({a["path"], b["path"], c["path"]}) == 3 and not c["cached"]
    assert resolve_data(Path(c["path"])).fingerprint == c["fingerprint"]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="long_records"):
        PrepSettings(long_records="stretch")
    with pytest.raises(ValueError, match="unknown preparation settings: colour"):
        PrepSettings.from_dict({"colour": 1})
