"""A PTB-XL database's ``scp_codes`` cell is outside input: one bad cell costs that record, never the folder.

Batch preparation (``liteheart-sim data prepare``) skips the record, naming it and the reason, as
it does with a bad signal (``--strict`` keeps it an error); ingest (``liteheart-client ingest``,
the same parser) takes the recording without a label. The parser is fuzzed through both.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from liteheart_core.data import incoming, ptbxl
from liteheart_core.data.incoming import LabelBook, task_classes
from tests.fuzz.conftest import NUMBERS, base_record, fuzz_settings, scratch_dir, time_limit, write_ptbxl

runner = CliRunner()
# cells a table edited by hand or by another tool could hold: a number, a list, an unclosed dict, a dict of
# non-numbers, code, nesting deep enough to hit the parser's recursion limit
BAD_CELLS = [
    "5",
    "[1, 2]",
    "{'NORM': 100.0",
    "{'NORM': 'x'}",
    "__import__('os')",
    "{1: [2]}",
    "None",
    "",
    "(" * 200 + ")" * 200,
    "{'NORM': {'a': 1}}",
]
CELL = st.one_of(
    st.sampled_from(BAD_CELLS + ["{'NORM': 100.0}", "{'NORM': 80, 'IMI': 15.0}", "{}"]),
    NUMBERS.map(str),
    st.text(max_size=40),
)


def ptbxl_folder(root: Path, cells: dict[int, str]) -> Path:
    """Three good WFDB records in the PTB-XL layout; ``cells`` replaces the scp_codes of rows (0-based)."""
    write_ptbxl(root, [base_record(k)[1] for k in ("fmt16", "fmt212", "fmt80")])
    table = pd.read_csv(root / "ptbxl_database.csv", dtype=str, keep_default_na=False)
    for row, value in cells.items():
        table.loc[row, "scp_codes"] = value
    buf = io.StringIO()
    table.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
    (root / "ptbxl_database.csv").write_text(buf.getvalue())
    return root


def prepare_cli(folder: Path, out: Path, *extra: str):
    from simulations.cli import app

    return runner.invoke(
        app,
        [
            "data",
            "prepare",
            "ptbxl",
            str(folder),
            "--out",
            str(out),
            "--no-regions",
            "--workers",
            "1",
            "--json",
            *extra,
        ],
    )


@pytest.mark.parametrize("cell", ["5", "{'NORM': 100.0"])
def test_a_malformed_scp_codes_cell_skips_that_record_and_names_it(tmp_path: Path, cell: str) -> None:
    folder = ptbxl_folder(tmp_path / "db", {1: cell})  # ecg_id 2

    lenient = prepare_cli(folder, tmp_path / "out")
    strict = prepare_cli(folder, tmp_path / "out-strict", "--strict")

    assert lenient.exit_code == 0, lenient.output
    summary = json.loads(lenient.stdout)
    assert summary["records"] == 2 and summary["skipped"] == 1
    (skipped,) = summary["skipped_records"]
    assert skipped["record"] == "2" and "scp_codes" in skipped["reason"] and repr(cell) in skipped["reason"]
    assert strict.exit_code == 2 and "record 2:" in strict.output and "strict mode" in strict.output
    assert "Traceback" not in strict.output


def test_what_still_breaks_the_table_stays_an_error(tmp_path: Path) -> None:
    folder = ptbxl_folder(tmp_path / "db", {})
    table = pd.read_csv(folder / "ptbxl_database.csv", dtype=str, keep_default_na=False)
    table.loc[2, "ecg_id"] = "1"  # a repeated id cannot name the record it would skip
    table.to_csv(folder / "ptbxl_database.csv", index=False)

    result = prepare_cli(folder, tmp_path / "out")

    assert result.exit_code == 2 and "ecg_id 1 appears twice" in " ".join(result.output.split())


def test_ingest_takes_a_record_with_a_bad_scp_codes_cell_without_a_label(tmp_path: Path) -> None:
    from client.ingest_cmd import app

    folder = ptbxl_folder(tmp_path / "db", {1: "5", 2: "{'NORM': 'x'}"})
    store = str(tmp_path / "store.sqlite")

    result = runner.invoke(app, ["ingest", str(folder), "--store", store])
    info = runner.invoke(app, ["store", "info", "--store", store, "--json"])

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    data = json.loads(info.output)
    assert data["recordings"] == 3
    assert data["label_counts"]["NORM"] == 1  # ecg_id 1 keeps its label; the two bad cells give none


@fuzz_settings(60)
@given(cell=CELL)
def test_the_ingest_label_parser_never_raises_and_agrees_with_batch_preparation(cell: str) -> None:
    folder = scratch_dir()
    try:
        root = ptbxl_folder(folder / "db", {0: cell})
        record = root / "records100" / "00001" / "rec"
        book = LabelBook.create("superdiagnostic", task_classes("superdiagnostic"))
        incoming._ptbxl_codes.cache_clear()  # the cache is keyed by the file's mtime and size

        with time_limit(30):
            y, source = book.label("00001", record)
            records, problems = ptbxl.read_ptbxl_table(root)

        batch = {r.record: r.codes for r in records}
        if "1" in batch:  # batch preparation read the cell: ingest labels the record the same way
            classes, expected = ptbxl.task_labels([batch["1"]], ptbxl.read_statements(root), "superdiagnostic")
            if expected[0].any():
                assert source == "ptbxl" and np.array_equal(y, expected[0]), (cell, y, expected)
            else:
                assert (y, source) == (None, None)
        else:  # it skipped the record, with the reason; ingest has no label for it
            assert [p["record"] for p in problems] == ["1"] and "scp_codes" in problems[0]["reason"]
            assert (y, source) == (None, None), cell
    finally:
        shutil.rmtree(folder, ignore_errors=True)
