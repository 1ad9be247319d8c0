"""The format readers: a real shipped DICOM ECG, and a real PTB-XL record written by independent writers
(pydicom, ElementTree, pyedflib, csv, an XLI encoder) read back to the WFDB original's samples; units,
rates and lead orders; detection by content; the mixed folder prepared like its WFDB original."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly

from liteheart_core.data.formats import detect_format, find_ecg_files, read_ecg
from liteheart_core.data.incoming import prepare_recording, read_recording
from liteheart_core.data.prepare import PrepSettings, prepare, prepare_signal
from liteheart_core.data.signal import STANDARD_LEADS, RecordError, read_wfdb
from tests.data.formats import writers as W

UV = 1e-3  # mV: PTB-XL's and every writer's quantisation step
SETTINGS = PrepSettings(regions=False)
RECORD = "records100/00000/00001_lr"  # PTB-XL ecg_id 1: raw (mV), NORM + SR, patient 15709


@pytest.fixture(scope="module")
def original(ptbxl_dir: Path):
    """The WFDB original: its record and the path of its files."""
    return read_wfdb(ptbxl_dir / RECORD), ptbxl_dir / RECORD


# --- a real file shipped by a package ---------------------------------------------------------------


def test_pydicom_shipped_12_lead_ecg_is_read_in_millivolts_with_its_rhythm_group() -> None:
    # Prepare: pydicom's own test file (an Italian 12-lead ECG: rhythm + median beat groups, 1.25 µV steps)
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's test files are not installed")

    # Execute
    rec = read_ecg(Path(path))

    # Assert: the rhythm group (not the 1.2-s median beat), in mV, leads by their SCPECG codes
    expected = dcmread(path).waveform_array(0).T / 1000.0  # µV in the file, already in standard order
    assert detect_format(Path(path)) == "dicom" and rec.fmt == "dicom"
    assert rec.signal.shape == (12, 10000) and rec.fs == 1000.0 and rec.units == ("mV",) * 12
    np.testing.assert_allclose(rec.signal, expected, atol=1e-6)
    assert rec.patient == "642341" and rec.source_id.startswith("1.3.6.1.4.1.20029")
    # Einthoven holds within the file's own rounding: III = II - I
    assert np.abs(rec.signal[2] - (rec.signal[1] - rec.signal[0])).max() < 0.01


# --- a real PTB-XL record through each format -------------------------------------------------------


def _write(fmt: str, path: Path, x: np.ndarray, fs: float) -> Path:
    writers = {
        "dicom": lambda: W.write_dicom(path / "r.dcm", x, fs, patient="15709", codes=("NORM", "SR")),
        "aecg": lambda: W.write_aecg(path / "r.xml", x, fs, patient="15709", codes=("NORM", "SR")),
        "muse": lambda: W.write_muse(path / "r.xml", x, fs, patient="15709"),
        "philips": lambda: W.write_philips(path / "r.xml", x, int(fs), patient="15709"),
        "edf": lambda: W.write_edf(path / "r.edf", x, fs, patient="15709"),
        "apple": lambda: W.write_apple(path / "r.csv", x[0], fs),
    }
    return writers[fmt]()


@pytest.mark.realdata
@pytest.mark.parametrize("fmt", ["dicom", "aecg", "muse", "philips", "edf", "apple"])
def test_ptbxl_record_written_by_an_independent_writer_reads_back_to_the_same_samples(
    fmt: str, original, tmp_path: Path
) -> None:
    # Prepare
    raw, _ = original
    path = _write(fmt, tmp_path, raw.signal, raw.fs)

    # Execute
    rec = read_ecg(path, allow_single_lead=True)

    # Assert
    assert detect_format(path) == fmt and rec.fmt == fmt and rec.fs == raw.fs
    if fmt == "apple":  # a watch: lead I only
        assert rec.signal.shape == (1, raw.signal.shape[1]) and rec.codes == ("SNOMED:426783006",)
        np.testing.assert_allclose(rec.signal[0], raw.signal[0], atol=UV / 2 + 1e-6)
        return
    assert rec.signal.shape == raw.signal.shape and rec.units == ("mV",) * 12 and rec.patient == "15709"
    stored = [0, 1, 6, 7, 8, 9, 10, 11] if fmt == "muse" else list(range(12))  # MUSE keeps I, II, V1-V6
    np.testing.assert_allclose(rec.signal[stored], raw.signal[stored], atol=UV / 2 + 1e-6)
    if fmt == "muse":  # III, aVR, aVL, aVF derived: PTB-XL's own limb leads agree to a few µV
        np.testing.assert_allclose(rec.signal, raw.signal, atol=4 * UV)
    if fmt in ("dicom", "aecg"):
        assert rec.codes == ("SCP:NORM", "SCP:SR")


@pytest.mark.realdata
@pytest.mark.parametrize(
    "variant",
    [
        "dicom-mV",
        "aecg-mV-ms",
        "edf-mV",
        "dicom-512Hz",
        "edf-250Hz",
        "aecg-512Hz",
        "dicom-shuffled",
        "aecg-shuffled",
        "edf-shuffled",
    ],
)
def test_units_rates_and_lead_orders_prepare_like_the_wfdb_original_of_the_same_signal(
    variant: str, original, tmp_path: Path
) -> None:
    # Prepare: the same signal as a WFDB record (mV, standard order) and as the variant (the writers take
    # the signal in standard order and write the leads in the order given)
    raw, _ = original
    fmt, twist = variant.split("-", 1)
    x, fs = raw.signal.astype(np.float64), raw.fs
    if twist.endswith("Hz"):
        fs = float(twist[:-2])
        x = resample_poly(x, *{512.0: (128, 25), 250.0: (5, 2)}[fs], axis=-1)
    x = np.round(x * 1000) / 1000  # the signal in whole µV, as both files hold it
    wfdb.wrsamp(
        "orig",
        fs=fs,
        units=["mV"] * 12,
        sig_name=list(STANDARD_LEADS),
        p_signal=x.T,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp_path),
    )
    order = list(np.random.default_rng(3).permutation(12)) if twist == "shuffled" else list(range(12))
    leads = [STANDARD_LEADS[i] for i in order]
    y = x[order]  # DICOM and aECG writers take the channels as they are to be written
    if fmt == "dicom":
        path = W.write_dicom(tmp_path / "v.dcm", y, fs, leads=leads, unit="mV" if twist == "mV" else "uV")
    elif fmt == "aecg":
        path = W.write_aecg(
            tmp_path / "v.xml",
            y,
            fs,
            leads=leads,
            unit="mV" if twist.startswith("mV") else "uV",
            increment_unit="ms" if twist.endswith("ms") else "s",
        )
    else:
        path = W.write_edf(tmp_path / "v.edf", x, fs, leads=leads, unit="mV" if twist == "mV" else "uV")

    # Execute
    rec = read_ecg(path)
    ref = read_wfdb(tmp_path / "orig")

    # Assert: same rate, same samples in the same order (within one 1-µV step: pyedflib rounds mV to its
    # digital steps its own way), same prepared window (before standardisation, in mV: within 2 µV)
    assert rec.fs == pytest.approx(fs)
    np.testing.assert_allclose(rec.signal, ref.signal, atol=UV + 1e-6)
    in_mv = PrepSettings(regions=False, standardise=False)
    np.testing.assert_allclose(prepare_signal(rec, in_mv)[0][0], prepare_signal(ref, in_mv)[0][0], atol=2 * UV)


# --- detection by content ---------------------------------------------------------------------------


@pytest.mark.realdata
def test_formats_are_detected_by_content_whatever_the_name(original, tmp_path: Path) -> None:
    # Prepare: misleading or missing extensions, plus files that are no ECG
    raw, _ = original
    x = raw.signal
    W.write_dicom(tmp_path / "export.bin", x, 100)
    W.write_aecg(tmp_path / "aecg.txt", x, 100)
    W.write_edf(tmp_path / "holter", x, 100)
    W.write_muse(tmp_path / "muse.dat", x, 100)
    W.write_apple(tmp_path / "watch.txt", x[0], 512)
    (tmp_path / "labels.csv").write_text("record,labels\nx,NORM\n")
    (tmp_path / "notes.xml").write_text("<notes>hello</notes>")
    (tmp_path / "broken.dcm").write_bytes(b"not a dicom file")

    # Execute
    found = {p.name: detect_format(p) for p in find_ecg_files(tmp_path)}

    # Assert: content decides; an ECG extension without ECG content is listed, to be refused with a reason
    assert found == {
        "export.bin": "dicom",
        "aecg.txt": "aecg",
        "holter": "edf",
        "muse.dat": "muse",
        "watch.txt": "apple",
        "broken.dcm": "dicom",
    }
    with pytest.raises(RecordError, match="not a readable DICOM file"):
        read_ecg(tmp_path / "broken.dcm")


# --- a mixed folder, prepared --------------------------------------------------------------------------


@pytest.mark.realdata
def test_mixed_folder_prepares_to_the_arrays_of_its_wfdb_original(original, tmp_path: Path) -> None:
    # Prepare: the same PTB-XL record as WFDB, DICOM, aECG, EDF, GE MUSE, Philips XML and Apple Health CSV
    raw, wfdb_path = original
    folder = tmp_path / "mixed"
    folder.mkdir()
    for ext in (".hea", ".dat"):
        shutil.copy(wfdb_path.with_suffix(ext), folder)
    x = raw.signal
    W.write_dicom(folder / "ecg.dcm", x, 100, patient="15709", codes=("NORM", "SR"))
    W.write_aecg(folder / "ecg_aecg.xml", x, 100, patient="15709", codes=("NORM", "SR"))
    W.write_edf(folder / "ecg.edf", x, 100, patient="15709")
    W.write_muse(folder / "ecg_muse.xml", x, 100, patient="15709")
    W.write_philips(folder / "ecg_philips.xml", x, 100, patient="15709")
    W.write_apple(folder / "ecg_watch.csv", x[0], 100)
    (folder / "README.txt").write_text("exported from the ECG management system")

    # Execute
    summary = prepare(folder, tmp_path / "out", settings=SETTINGS)
    again = prepare(folder, tmp_path / "out", settings=SETTINGS)

    # Assert: one record per 12-lead file, equal to the WFDB original's window within quantisation
    out = Path(summary["path"])
    index = pd.read_csv(out / "index.csv")
    signals = np.load(out / "signals.npy")
    assert summary["source"] == "files" and again["cached"]
    assert summary["formats"] == {"wfdb": 1, "dicom": 1, "aecg": 1, "edf": 1, "muse": 1, "philips": 1}
    ref = signals[index["record"].tolist().index("00001_lr")]
    for row, record in enumerate(index["record"]):
        tol = 0.2 if record == "ecg_muse.xml" else 1e-3  # MUSE: 4 limb leads derived from I and II
        assert np.abs(signals[row] - ref).max() < tol, record
        assert np.abs(signals[row][[0, 1, 6, 7, 8, 9, 10, 11]] - ref[[0, 1, 6, 7, 8, 9, 10, 11]]).max() < 1e-3
    # the watch's lead I is no 12-lead record: refused here with the reason, ingested by a device store
    skipped = {s["record"]: s["reason"] for s in summary["skipped_records"]}
    assert list(skipped) == ["ecg_watch.csv"] and "missing leads II" in skipped["ecg_watch.csv"]
    watch = prepare_recording(read_recording(folder / "ecg_watch.csv"), SETTINGS)
    assert np.abs(watch.windows[0, 0] - ref[0]).max() < 1e-3
    # labels from the files' own SCP-ECG statements, as PTB-XL labels the original (NORM)
    labels = pd.DataFrame(
        np.load(out / "labels_superdiagnostic.npy"), index=index["record"], columns=summary["tasks"]["superdiagnostic"]
    )
    assert labels.loc["ecg.dcm", "NORM"] == 1 and labels.loc["ecg_aecg.xml", "NORM"] == 1
    assert str(index.set_index("record").loc["ecg.dcm", "patient"]) == "15709"
    assert index.set_index("record").loc["ecg_aecg.xml", "source_id"] == "rec-1"  # the file's own id


def test_uncompressed_philips_waveforms_are_refused_naming_sierraecg(tmp_path: Path) -> None:
    # Prepare: a Philips file whose waveforms are stored uncompressed (sierraecg 0.4 fails on these)
    import base64
    import re

    x = np.random.default_rng(0).standard_normal((12, 300)) * 0.3
    text = W.write_philips(tmp_path / "p.xml", x, 100).read_text()
    samples = b"".join(W.microvolts(x[i]).astype("<i2").tobytes() for i in range(12))
    text = text.replace('compression="XLI"', 'compression="Uncompressed"')
    text = re.sub(
        r"(<parsedwaveforms[^>]*>)[^<]*<", lambda m: m.group(1) + base64.b64encode(samples).decode() + "<", text
    )
    (tmp_path / "p.xml").write_text(text)

    # Execute / Assert: refused with the reason, never a crash
    with pytest.raises(RecordError, match="sierraecg"):
        read_ecg(tmp_path / "p.xml")


def test_pyedflibs_shipped_edf_reads_as_lead_i_once_a_signal_is_named_so_and_is_refused_before(tmp_path: Path) -> None:
    # Prepare: pyedflib's own test recording (200 Hz signals in uV: squarewave, ramp, ... no ECG)
    import pyedflib

    shipped = Path(pyedflib.__file__).parent / "data" / "test_generator.edf"
    if not shipped.is_file():
        pytest.skip("pyedflib's test files are not installed")
    relabelled = tmp_path / "relabelled.edf"
    blob = shipped.read_bytes()
    relabelled.write_bytes(blob[:256] + b"ECG I".ljust(16) + blob[272:])  # signal 1's label: 'squarewave' -> 'ECG I'
    with pyedflib.EdfReader(str(shipped)) as reader:  # the other library's reading of the same samples
        expected = reader.readSignal(0) / 1000.0

    # Execute / Assert: no ECG lead in the original, named and said so
    with pytest.raises(RecordError, match="no ECG lead among the EDF signals.*squarewave"):
        read_ecg(shipped, allow_single_lead=True)
    rec = read_ecg(relabelled, allow_single_lead=True)
    assert rec.signal.shape == (1, expected.size) and rec.fs == 200.0 and rec.units == ("mV",)
    np.testing.assert_allclose(rec.signal[0], expected, atol=1e-6)
    with pytest.raises(RecordError, match="missing leads II"):  # lead I alone is no 12-lead record
        read_ecg(relabelled)


def test_statements_in_other_vocabularies_label_as_their_scp_ecg_statement(tmp_path: Path) -> None:
    # Prepare: an aECG with MDC rhythm/beat codes, a DICOM with SNOMED RT (SRT) codes — the cross-references
    # of PTB-XL's statement table — and a SNOMED CT code for the Challenge classes
    from liteheart_core.data.formats.labels import code_label

    x = np.random.default_rng(1).standard_normal((12, 300)) * 0.2
    aecg = W.write_aecg(
        tmp_path / "a.xml", x, 100, mdc=("MDC_ECG_RHY_ATR_FIB", "MDC_ECG_BEAT_N"), snomed=("164889003",)
    )
    dicom = W.write_dicom(tmp_path / "d.dcm", x, 100, codes=("F-000B7",), scheme="SRT")

    # Execute
    a, d = read_ecg(aecg), read_ecg(dicom)

    # Assert
    assert a.codes == ("MDC:MDC_ECG_RHY_ATR_FIB", "MDC:MDC_ECG_BEAT_N", "SNOMED:164889003")
    assert d.codes == ("SRT:F-000B7",)
    rhythm = ["AFIB", "SR"]
    assert code_label(a.codes, "rhythm", rhythm).tolist() == [1, 0]
    assert code_label(a.codes, "challenge2021", ["AF", "SNR"]).tolist() == [1, 0]
    assert code_label(d.codes, "superdiagnostic", ["NORM", "MI", "STTC", "CD", "HYP"]).tolist() == [1, 0, 0, 0, 0]
    assert code_label(("MDC:MDC_ECG_BEAT_N",), "superdiagnostic", ["NORM"]) is None  # no cross-reference: no label


def test_a_utf16_muse_export_is_detected_and_read(tmp_path: Path) -> None:
    # Prepare: the same MUSE file as UTF-8 and re-encoded as UTF-16 (with its byte-order mark)
    x = np.random.default_rng(2).standard_normal((12, 300)) * 0.2
    utf8 = W.write_muse(tmp_path / "m8.xml", x, 100)
    text = utf8.read_text(encoding="latin-1").replace("ISO-8859-1", "UTF-16")
    (tmp_path / "m16.xml").write_bytes(text.encode("utf-16"))

    # Execute / Assert
    assert detect_format(tmp_path / "m16.xml") == "muse"
    np.testing.assert_array_equal(read_ecg(tmp_path / "m16.xml").signal, read_ecg(utf8).signal)
