"""Fuzzing the PTB-XL database table: a bad cell ends in a LayoutError that names the record or the column.

``ptbxl_database.csv`` comes with the data, so it is outside input like the WFDB files it points to.
"""

from __future__ import annotations

import csv
import io
import shutil

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from liteheart_core.data.prepare import PreparationError, PrepSettings, prepare
from liteheart_core.data.ptbxl import LayoutError
from tests.fuzz.conftest import NUMBERS, base_record, fuzz_settings, scratch_dir, time_limit, write_ptbxl

COLUMNS = ["ecg_id", "patient_id", "age", "sex", "site", "strat_fold", "scp_codes", "filename_lr", "filename_hr"]
CELL = st.one_of(
    NUMBERS,
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "nan",
            "{}",
            "{'NORM': 100.0}",
            "{'NORM': 'x'}",
            "[1, 2]",
            "{1: 2}",
            "__import__('os')",
            "{'A': 1e999}",
            "records100/00001/rec",
            "../../etc/passwd",
            "records100/00001",
            "1.5",
            "-3",
            "11",
        ]
    ),
)


@fuzz_settings(30)
@given(
    edits=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(COLUMNS), CELL), min_size=1, max_size=3),
    drop=st.one_of(st.none(), st.sampled_from(COLUMNS)),
)
def test_bad_database_cells_are_named(edits, drop) -> None:
    # Prepare: three good records, then cells of the table replaced (or a column dropped)
    folder = scratch_dir()
    try:
        root = folder / "db"
        ids = write_ptbxl(root, [base_record(k)[1] for k in ("fmt16", "fmt212", "fmt80")])
        table = pd.read_csv(root / "ptbxl_database.csv", dtype=str, keep_default_na=False)
        for row, column, value in edits:
            table.loc[row, column] = value
        if drop:
            table = table.drop(columns=[drop])
        buf = io.StringIO()
        table.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
        (root / "ptbxl_database.csv").write_text(buf.getvalue())

        # Execute
        try:
            with time_limit(60):
                summary = prepare(root, folder / "out", kind="ptbxl", settings=PrepSettings(regions=False), workers=1)
        except (LayoutError, PreparationError) as exc:
            # Assert: the message names a record, a column or the table
            named = [f"ecg_id {v}" for v in table.get("ecg_id", [])] + [f"record {i}" for i in ids] + COLUMNS
            assert any(n in str(exc) for n in named) or "ptbxl_database.csv" in str(exc), str(exc)
            return
        for s in summary["skipped_records"]:
            assert not s["reason"].startswith("unexpected error"), s
    finally:
        shutil.rmtree(folder, ignore_errors=True)
