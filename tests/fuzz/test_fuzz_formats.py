"""Hostile ECG files of every format: refused with the record and the reason, the rest of the folder kept.

Named variants (truncated, wrong declared length, unknown unit, missing rate, NaN, duplicate leads) of
DICOM, HL7 aECG, GE MUSE, Philips, EDF and Apple Health files must each be refused with a reason that
says what is wrong; random byte mutations of valid files (Hypothesis, few derandomised examples in CI)
must end in a record or a RecordError naming the record, never another exception, a hang or NaN.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from client.ingest import ingest
from client.store import RecordStore
from liteheart_core.data.formats import read_ecg
from liteheart_core.data.incoming import LabelBook, task_classes
from liteheart_core.data.prepare import PrepSettings, prepare
from liteheart_core.data.signal import RecordError
from tests.fuzz.conftest import fuzz_settings, memory_limit, scratch_dir, time_limit
from tests.fuzz.formats_hostile import EXPECTED, NAMES, VARIANTS, valid, variant_bytes

FORMATS = tuple(NAMES)
CASES = [(fmt, v) for fmt in FORMATS for v in VARIANTS]
TIME_LIMIT_S = 20.0


def _name(fmt: str, variant: str) -> str:
    return f"{variant}_{NAMES[fmt]}"


@pytest.mark.parametrize(("fmt", "variant"), CASES, ids=[f"{f}-{v}" for f, v in CASES])
def test_hostile_variant_is_refused_with_its_record_and_reason(fmt: str, variant: str, tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / _name(fmt, variant)
    path.write_bytes(variant_bytes(fmt, variant))

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RecordError) as info:
            read_ecg(path, "hostile-1", allow_single_lead=True)

    # Assert
    assert info.value.record == "hostile-1"
    assert re.search(EXPECTED[(fmt, variant)], info.value.reason), info.value.reason


def _hostile_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:
        (folder / NAMES[fmt]).write_bytes(valid(fmt))
        for variant in VARIANTS:
            (folder / _name(fmt, variant)).write_bytes(variant_bytes(fmt, variant))


def test_prepare_refuses_every_hostile_file_by_name_and_prepares_the_rest(tmp_path: Path) -> None:
    # Prepare: a valid file of each format and its 6 hostile variants, in one folder
    _hostile_folder(tmp_path / "in")

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = prepare(tmp_path / "in", tmp_path / "out", settings=PrepSettings(regions=False))

    # Assert: the five valid 12-lead files prepared; every hostile file skipped with its reason
    skipped = {s["record"]: s["reason"] for s in summary["skipped_records"]}
    assert summary["records"] == 5 and summary["formats"] == {f: 1 for f in FORMATS if f != "apple"}
    for fmt, variant in CASES:
        # a 12-lead array refuses any one-lead Apple file for its missing leads, hostile or not
        expected = EXPECTED[(fmt, variant)] + ("|missing leads II" if fmt == "apple" else "")
        assert re.search(expected, skipped.pop(_name(fmt, variant))), (fmt, variant)
    assert list(skipped) == [NAMES["apple"]]  # lead I alone: a device store's, not a 12-lead array's
    signals = np.load(Path(summary["path"]) / "signals.npy")
    # one signal in 5 formats (compared on I, II, V1-V6: MUSE derives the other four, and this synthetic
    # signal's leads are not Einthoven-consistent)
    stored = [0, 1, 6, 7, 8, 9, 10, 11]
    assert np.isfinite(signals).all() and np.abs(signals[1:, stored] - signals[0, stored]).max() < 0.01  # 1 µV


def test_ingest_stores_every_hostile_file_as_unusable_with_its_reason(tmp_path: Path) -> None:
    # Prepare
    _hostile_folder(tmp_path / "in")
    store = RecordStore(tmp_path / "s.sqlite")

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = ingest(store, tmp_path / "in", LabelBook.create("superdiagnostic", task_classes("superdiagnostic")))

    # Assert
    problems = {p["record"]: p["reason"] for p in summary.problems}
    assert summary.added == len(FORMATS) * (1 + len(VARIANTS)) and len(problems) == len(CASES)
    for fmt, variant in CASES:
        assert re.search(EXPECTED[(fmt, variant)], problems[_name(fmt, variant)]), (fmt, variant)
    rows = {r["record_id"]: r for r in store.rows()}
    assert all(rows[NAMES[f]]["usable"] for f in FORMATS)
    assert rows[NAMES["apple"]]["n_leads"] == 1
    store.close()


@st.composite
def mutated_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid or named-hostile file of some format with a few random byte edits."""
    fmt = draw(st.sampled_from(FORMATS))
    base = draw(st.sampled_from(("valid",) + VARIANTS))
    blob = bytearray(valid(fmt) if base == "valid" else variant_bytes(fmt, base))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        k = draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[k] = draw(st.integers(0, 255))
        elif op == "cut":
            del blob[k:]
        elif op == "insert":
            blob[k:k] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del blob[k : k + draw(st.integers(1, 64))]
    return fmt, bytes(blob)


@fuzz_settings(60)
@given(case=mutated_file(), allow_single_lead=st.booleans())
def test_mutated_files_are_read_or_refused_with_the_record_named(
    case: tuple[str, bytes], allow_single_lead: bool
) -> None:
    # Prepare
    fmt, blob = case
    folder = scratch_dir()
    path = folder / NAMES[fmt]
    path.write_bytes(blob)

    # Execute
    try:
        with memory_limit(), time_limit(TIME_LIMIT_S), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = read_ecg(path, "fz", allow_single_lead=allow_single_lead)
    except RecordError as exc:
        event(f"{fmt} refused: " + " ".join(exc.reason.split()[:3]))
        assert exc.record == "fz" and exc.reason.strip()
        return

    # Assert: a usable record
    event(f"{fmt} read")
    x = raw.signal
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] > 0 and np.isfinite(x).all()
    assert x.shape[0] == 12 or (allow_single_lead and x.shape[0] == 1)
    assert np.isfinite(raw.fs) and raw.fs > 0 and raw.units == ("mV",) * x.shape[0]
