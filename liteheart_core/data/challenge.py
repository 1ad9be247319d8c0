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


def parse_dx(comments: list[str]) -> list[str]:
    """SNOMED codes from a header's comment lines (``#Dx: a,b`` or ``# Dx: a, b``)."""
    for line in comments:
        key, _, value = line.partition(":")
        if key.strip().lstrip("#").strip().lower() == "dx":
            return [c.strip() for c in value.split(",") if c.strip()]
    return []


def _header_meta(hea: Path) -> dict[str, str]:
    """Read the comment lines of a header without parsing the signal lines (cheap, robust)."""
    meta: dict[str, str] = {}
    for line in hea.read_text(errors="replace").splitlines():
        if line.startswith("#"):
            key, _, value = line.lstrip("#").partition(":")
            meta[key.strip().lower()] = value.strip()
    return meta


def read_challenge_records(root: Path) -> tuple[list[RecordMeta], list[dict[str, str]]]:
    """List the records of a Challenge folder (searched recursively).

    Returns
    -------
    records, problems
        Usable records, and ``{"record", "reason"}`` for those skipped at listing
        time (unknown source, no Dx line). Codes unknown to the Challenge tables
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
        age_text = meta.get("age", "")
        try:
            age = float(age_text)
        except ValueError:
            age = float("nan")
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
