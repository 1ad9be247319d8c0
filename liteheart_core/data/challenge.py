"""PhysioNet/CinC Challenge 2020/2021 layout: folders of ``.hea`` + ``.mat`` (or ``.dat``).

Diagnoses are SNOMED-CT codes on the header's ``# Dx:`` line. They map to the
Challenge 2021 scored classes with its equivalent classes merged (the table
ships in ``resources/challenge2021_dx.csv``, BSD-2 licence of the Challenge).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from liteheart_core.data.ptbxl import LayoutError, RecordMeta

TASK = "challenge2021"

# Name prefix -> source site. Chapman-Shaoxing and Ningbo share "JS"; the
# Challenge 2021 release numbers Chapman-Shaoxing JS00001-JS10646.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("HR", "PTB-XL"),
    ("JS", "JS"),
    ("A", "CPSC2018"),
    ("Q", "CPSC-Extra"),
    ("S", "PTB"),
    ("E", "Georgia"),
    ("I", "INCART"),
)
_CHAPMAN_LAST = 10646
_SNOMED = re.compile(r"[0-9]{1,18}")  # SNOMED-CT identifiers: 6-18 digits; shorter ones are unknown, not malformed
MAX_AGE = 150.0


@dataclass(frozen=True)
class DxTable:
    """SNOMED code tables of the Challenge 2021."""

    classes: tuple[str, ...]  # scored class codes (merged), in table order
    abbreviations: tuple[str, ...]
    to_class: dict[str, str]  # any scored code -> its merged class code
    known: frozenset[str]  # scored and unscored codes


@lru_cache(maxsize=1)
def dx_table() -> DxTable:
    """Load the shipped Challenge 2021 code table."""
    text = resources.files("liteheart_core.data").joinpath("resources/challenge2021_dx.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    classes: list[str] = []
    abbrevs: list[str] = []
    to_class: dict[str, str] = {}
    for row in rows:
        if row["scored"] != "1":
            continue
        to_class[row["snomed"]] = row["scored_class"]
        if row["snomed"] == row["scored_class"]:
            classes.append(row["snomed"])
            abbrevs.append(row["abbreviation"])
    return DxTable(tuple(classes), tuple(abbrevs), to_class, frozenset(r["snomed"] for r in rows))


def source_of(name: str) -> str:
    """The Challenge source site of a record from its name prefix.

    Raises
    ------
    ValueError
        If the prefix is none of the Challenge's.
    """
    for prefix, source in _PREFIXES:
        if name.startswith(prefix):
            if source != "JS":
                return source
            digits = re.sub(r"\D", "", name[2:])
            if not digits:
                raise ValueError(f"record {name}: JS name without a number")
            return "Chapman-Shaoxing" if int(digits) <= _CHAPMAN_LAST else "Ningbo"
    raise ValueError(f"record {name}: name prefix matches no Challenge source")


def header_comments(lines: list[str]) -> dict[str, str]:
    """``# key: value`` comment lines of a header, keys lower-cased; the first line of a key wins.

    Only lines starting with ``#`` count, so a signal line whose description holds a colon is no comment.
    Listing (batch preparation) and the device's label book both read headers through this, so that
    they agree on a header with a repeated key.
    """
    meta: dict[str, str] = {}
    for line in lines:
        if line.startswith("#"):
            key, sep, value = line.lstrip("#").partition(":")
            if sep:
                meta.setdefault(key.strip().lower(), value.strip())
    return meta


def parse_dx(lines: list[str]) -> list[str]:
    """SNOMED codes from a header's lines (``#Dx: a,b`` or ``# Dx: a, b``; the first Dx line)."""
    return [c.strip() for c in header_comments(lines).get("dx", "").split(",") if c.strip()]


def malformed_codes(codes: list[str] | tuple[str, ...]) -> list[str]:
    """Codes that are not SNOMED-CT identifiers (ASCII digits only): typos, other separators, text."""
    return [c for c in codes if not _SNOMED.fullmatch(c)]


def _age(text: str) -> float:
    """An age in years, or NaN when absent, unparsable or implausible (the Challenge writes ``NaN``)."""
    try:
        age = float(text)
    except ValueError:
        return float("nan")
    return age if 0 <= age <= MAX_AGE else float("nan")


def _header_meta(hea: Path) -> dict[str, str]:
    """Read the comment lines of a header without parsing the signal lines (cheap, robust)."""
    return header_comments(hea.read_text(errors="replace").splitlines())


def read_challenge_records(root: Path) -> tuple[list[RecordMeta], list[dict[str, str]]]:
    """List the records of a Challenge folder (searched recursively).

    Returns
    -------
    records, problems
        Usable records, and ``{"record", "reason"}`` for those skipped at listing
        time (unknown source, no Dx line, malformed codes). Codes unknown to the Challenge tables
        are left in ``codes``; :func:`challenge_labels` reports them.
    """
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder")
    headers = sorted(root.rglob("*.hea"))
    if not headers:
        raise LayoutError(f"{root} holds no WFDB header (.hea) files")
    records: list[RecordMeta] = []
    problems: list[dict[str, str]] = []
    for hea in headers:
        name = hea.stem
        try:
            source = source_of(name)
        except ValueError as exc:
            problems.append({"record": name, "reason": str(exc)})
            continue
        meta = _header_meta(hea)
        codes = [c.strip() for c in meta.get("dx", "").split(",") if c.strip()]
        if not codes:
            problems.append({"record": name, "reason": "header has no '# Dx:' diagnosis line"})
            continue
        bad = malformed_codes(codes)
        if bad:
            problems.append(
                {
                    "record": name,
                    "reason": "malformed SNOMED codes on the '# Dx:' line: " + ", ".join(repr(c) for c in bad),
                }
            )
            continue
        age = _age(meta.get("age", ""))
        records.append(
            RecordMeta(
                record=name,
                path=hea.with_suffix(""),
                patient=name,
                site=source,
                age=age,
                sex=meta.get("sex", ""),
                codes=tuple(codes),
            )
        )
    return records, problems


def unknown_codes(codes: tuple[str, ...]) -> list[str]:
    """Codes that appear in neither the scored nor the unscored Challenge table."""
    known = dx_table().known
    return [c for c in codes if c not in known]


def challenge_labels(codes: list[tuple[str, ...]]) -> tuple[list[str], np.ndarray]:
    """Multi-hot labels over the 26 merged scored classes; columns named by abbreviation."""
    table = dx_table()
    col = {c: i for i, c in enumerate(table.classes)}
    y = np.zeros((len(codes), len(table.classes)), dtype=np.uint8)
    for i, rec in enumerate(codes):
        for code in rec:
            merged = table.to_class.get(code)
            if merged is not None:
                y[i, col[merged]] = 1
    return list(table.abbreviations), y
