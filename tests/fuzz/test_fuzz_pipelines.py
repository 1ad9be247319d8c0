"""Fuzzing the two paths that take many records: batch preparation and the device ingest.

A bad record among good ones must be skipped (preparation) or stored as unusable (ingest) with its id and
a reason that is not a bare ``unexpected error``; the good ones must come through untouched.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.ingest import ingest
from client.store import RecordStore
from liteheart_core.data.incoming import LabelBook, task_classes
from liteheart_core.data.prepare import PreparationError, PrepSettings, prepare
from tests.fuzz.conftest import (
    base_record,
    fuzz_settings,
    memory_limit,
    mutated_record,
    scratch_dir,
    time_limit,
    write_files,
    write_ptbxl,
)

SETTINGS = PrepSettings(regions=False, min_seconds=1.0)
TWELVE_LEAD = ("fmt16", "fmt212", "fmt80")


@fuzz_settings(25)
@given(bad=st.lists(mutated_record(TWELVE_LEAD), min_size=1, max_size=3), strict=st.booleans())
def test_preparation_skips_bad_records_with_their_id_and_keeps_the_good(bad, strict: bool) -> None:
    # Prepare: two good records, then the mutated ones
    good = [base_record("fmt16")[1], base_record("fmt212")[1]]
    folder = scratch_dir()
    try:
        ids = write_ptbxl(folder / "db", good + [files for _, _, files in bad])

        # Execute
        try:
            with memory_limit(), time_limit(60):
                summary = prepare(
                    folder / "db", folder / "out", kind="ptbxl", settings=SETTINGS, strict=strict, workers=1
                )
        except PreparationError as exc:
            # Assert (strict): the error names one of the mutated records
            assert strict and any(f"record {rid}:" in str(exc) for rid in ids[2:]), str(exc)
            return

        # Assert: every record is prepared or skipped with a reason, never both, never an unexpected error
        index = pd.read_csv(f"{summary['path']}/index.csv")
        kept = set(index["record"].astype(str))
        skipped = {s["record"]: s["reason"] for s in summary["skipped_records"]}
        assert {"1", "2"} <= kept
        assert kept | set(skipped) == set(ids) and not kept & set(skipped)
        assert not strict or not skipped
        for rid, reason in skipped.items():
            assert reason.strip() and not reason.startswith("unexpected error"), f"record {rid}: {reason}"
        signals = np.load(f"{summary['path']}/signals.npy")
        assert signals.shape == (len(index), 12, SETTINGS.length) and np.isfinite(signals).all()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def book() -> LabelBook:
    return LabelBook.create("superdiagnostic", task_classes("superdiagnostic"))


@fuzz_settings(30)
@given(rec=mutated_record())
def test_ingest_stores_a_bad_recording_as_unusable_with_its_reason(rec, book: LabelBook) -> None:
    # Prepare
    kind, name, files = rec
    folder = scratch_dir()
    store = RecordStore("sqlite://", task="superdiagnostic")
    try:
        write_files(folder / "in" / "bad", files)
        good_files = dict(base_record("fmt16")[1])
        good_files["rec.hea"] += b"# the good one\n"  # its own content hash: not a duplicate of the other
        write_files(folder / "in" / "good", good_files)

        # Execute
        with memory_limit(), time_limit(60):
            summary = ingest(store, folder / "in", book, settings=SETTINGS)

        # Assert: both stored once; the good one usable; an unusable one says why
        rows = {r["source_path"]: r for r in store.rows()}
        assert summary.added == 2 and len(rows) == 2
        good = rows[str(folder / "in" / "good" / "rec")]
        assert good["usable"] and good["n_leads"] == 12
        bad = rows[str(folder / "in" / "bad" / name)]
        problems = {p["record"]: p["reason"] for p in summary.problems}
        if not bad["usable"]:
            assert problems.get(name, "").strip(), summary.problems
        for row in rows.values():
            if row["usable"]:
                x = store.load([row["id"]]).x
                assert np.isfinite(x).all() and x.shape[1:] == (row["n_leads"], SETTINGS.length)
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)
