"""Fuzzing Challenge headers: random and mutated ``# Dx:``, ``# Age:``, ``# Sex:`` lines and record names.

Listing, labelling (batch preparation and the device's label book) must agree on a header's codes, never
raise on one bad header, and turn every header into either a record or a problem with its id and reason.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from liteheart_core.data import challenge
from liteheart_core.data.incoming import LabelBook
from liteheart_core.data.prepare import PrepSettings, prepare
from tests.fuzz.conftest import NUMBERS, base_record, fuzz_settings, memory_limit, scratch_dir, time_limit, write_files

KNOWN = sorted(challenge.dx_table().known)
SCORED = sorted(challenge.dx_table().to_class)
CODE = st.one_of(
    st.sampled_from(SCORED),
    st.sampled_from(KNOWN),
    st.integers(0, 10**18).map(str),
    st.text(max_size=12),
    st.sampled_from(["", " ", "NaN", "426783006|164889003", "1e9", "-1", "０", "426783006.0", "'426783006'", "٣"]),
)
SEPARATOR = st.sampled_from([",", ", ", " ,", ",,", ";", " ", "\t", "|"])
DX_VALUE = st.builds(lambda codes, sep: sep.join(codes), st.lists(CODE, max_size=5), SEPARATOR)
KEY = st.sampled_from(["Dx", "dx", "DX", " Dx ", "Dx ", "Age", "Sex", "age", "Rx", "Hx", "Sx", ""])
VALUE = st.one_of(
    DX_VALUE,
    NUMBERS,
    st.text(max_size=20),
    st.sampled_from(["Female", "Male", "F", "M", "Unknown", "NaN", "", "-5", "300", "1e308", "inf"]),
)
COMMENT = st.one_of(
    st.builds(
        lambda key, value, hash_, colon: f"{hash_}{key}{colon} {value}",
        KEY,
        VALUE,
        st.sampled_from(["#", "# ", "#  ", "", "##"]),
        st.sampled_from([":", "", "::", " :"]),
    ),
    st.builds(lambda value: f"# Dx: {value}", DX_VALUE),
    st.text(max_size=40).map(lambda t: "#" + t),
)
NAME = st.builds(
    lambda prefix, digits, tail: prefix + digits + tail,
    st.sampled_from(["A", "Q", "S", "HR", "E", "I", "JS", "X", "", "js", "a"]),
    st.integers(0, 10**7).map(str) | st.just(""),
    st.sampled_from(["", "_b", "x"]),
)


def header_text(name: str, comments: list[str]) -> str:
    text = base_record("fmt16")[1]["rec.hea"].decode()
    signal_lines = [ln for ln in text.splitlines()[1:] if not ln.startswith("#")]
    return "\n".join([f"{name} 12 100 300", *signal_lines, *comments]) + "\n"


def first_comment_value(text: str, key: str) -> str | None:
    """What a header's first ``# key:`` comment says (the reference the parsers must agree with)."""
    for line in text.splitlines():
        if line.startswith("#"):
            k, sep, value = line.lstrip("#").partition(":")
            if sep and k.strip().lower() == key:
                return value.strip()
    return None


def write_folder(root: Path, headers: list[tuple[str, list[str]]]) -> dict[str, str]:
    texts = {}
    for i, (name, comments) in enumerate(headers):
        text = header_text(name, comments)
        write_files(
            root / f"d{i}",
            {f"{name}.hea": text.encode("utf-8", "surrogatepass"), "rec.dat": base_record("fmt16")[1]["rec.dat"]},
        )
        texts[name] = text
    return texts


HEADERS = st.lists(
    st.tuples(NAME, st.lists(COMMENT, max_size=5)), min_size=1, max_size=4, unique_by=lambda h: h[0]
).filter(lambda hs: all(h[0] for h in hs))


@fuzz_settings(60)
@given(headers=HEADERS)
def test_listing_turns_every_header_into_a_record_or_a_reason(headers) -> None:
    # Prepare
    folder = scratch_dir()
    try:
        texts = write_folder(folder, headers)

        # Execute
        with time_limit(20):
            records, problems = challenge.read_challenge_records(folder)
            book = LabelBook.create(challenge.TASK, list(challenge.dx_table().abbreviations))
            labels = {r.record: book.label(r.record, r.path) for r in records}

        # Assert: one outcome per header; codes are the first '# Dx:' line's, well formed; ages plausible or NaN
        listed = [r.record for r in records] + [p["record"] for p in problems]
        assert sorted(listed) == sorted(texts)
        assert all(p["reason"].strip() for p in problems)
        for r in records:
            dx = first_comment_value(texts[r.record], "dx") or ""
            assert list(r.codes) == [c.strip() for c in dx.split(",") if c.strip()]
            assert r.codes and all(re.fullmatch(r"[0-9]+", c) for c in r.codes), r.codes
            assert math.isnan(r.age) or 0 <= r.age <= 150, r.age
            assert "\n" not in r.sex
            _, y = challenge.challenge_labels([r.codes])
            label, source = labels[r.record]
            assert (label is None and not y.any()) or (source == "dx" and np.array_equal(label, y[0]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@fuzz_settings(12)
@given(headers=HEADERS)
def test_preparation_labels_match_the_dx_lines(headers) -> None:
    # Prepare: one record that is surely good, beside the fuzzed ones
    folder = scratch_dir()
    try:
        headers = [h for h in headers if h[0] != "A9999999"] + [("A9999999", ["# Dx: 426783006", "# Age: 50"])]
        texts = write_folder(folder / "ch", headers)

        # Execute
        with memory_limit(), time_limit(60):
            summary = prepare(
                folder / "ch",
                folder / "out",
                kind="challenge",
                settings=PrepSettings(regions=False, min_seconds=1.0),
                workers=1,
            )

        # Assert
        index = pd.read_csv(Path(summary["path"]) / "index.csv", dtype={"record": str}, keep_default_na=False)
        y = np.load(Path(summary["path"]) / "labels_challenge2021.npy")
        skipped = {s["record"]: s["reason"] for s in summary["skipped_records"]}
        assert set(index["record"]) | set(skipped) == set(texts) and "A9999999" in set(index["record"])
        for reason in skipped.values():
            assert reason.strip() and not reason.startswith("unexpected error")
        for row, rid in enumerate(index["record"]):
            codes = [c.strip() for c in (first_comment_value(texts[rid], "dx") or "").split(",") if c.strip()]
            assert np.array_equal(y[row], challenge.challenge_labels([tuple(codes)])[1][0]), rid
    finally:
        shutil.rmtree(folder, ignore_errors=True)
