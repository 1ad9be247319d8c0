"""Shared fuzzing tools: Hypothesis settings, a per-example time limit, and mutated WFDB records.

CI runs few, derandomised examples (the same inputs on every run; about 12 s for the whole folder on a
busy 2-core machine). A deeper run on demand::

    LITEHEART_FUZZ_EXAMPLES=20 nice -n 10 python -m pytest -q tests/fuzz

multiplies every test's examples by 20 and draws fresh random inputs (not the CI ones).
"""

from __future__ import annotations

import os
import resource
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from simulations.wfdb_seeds import BASES, base_record, ecg_signal  # noqa: F401  (the fuzz tests import them from here)

SCALE = max(1, int(os.environ.get("LITEHEART_FUZZ_EXAMPLES", "1") or 1))
DEEP = SCALE > 1

LEADS_12 = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def fuzz_settings(examples: int) -> settings:
    """``examples`` in CI (derandomised), ``examples * LITEHEART_FUZZ_EXAMPLES`` with fresh randomness when deep."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=not DEEP,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=True,
    )


class Hang(BaseException):
    """A parser ran past its time limit (a BaseException so that no ``except Exception`` can hide it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail an example that runs longer than ``seconds`` (SIGALRM; main thread only)."""

    def on_alarm(_signum: int, _frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def memory_limit(extra_bytes: int = 1 << 30) -> Iterator[None]:
    """Cap the address space at its current size + ``extra_bytes``, so that a header announcing a huge
    signal ends in MemoryError here instead of the OOM killer on a shared machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[0]) * resource.getpagesize()
    except OSError:
        yield
        return
    cap = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def scratch_dir() -> Path:
    """A fresh folder per example (``tmp_path`` is one folder per test, shared by all its examples)."""
    return Path(tempfile.mkdtemp(prefix="lh-fuzz-"))


# --- valid WFDB records to start from: simulations/wfdb_seeds.py (the atheris fuzzer seeds from them too)


# --- mutations -----------------------------------------------------------------------------------

FORMATS = ["8", "16", "24", "32", "61", "80", "160", "212", "310", "311", "508", "516", "524", "0", "-16", "999"]
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "1",
            "2",
            "50",
            "500",
            "100000",
            "100001",
            "0.5",
            "0",
            "-1",
            "1e400",
            "nan",
            "inf",
            "-inf",
            "1e-320",
            "0x10",
            "1_000",
            "",
            "12/",
            "/",
            "4294967296",
            "9223372036854775808",
            "1e9",
            "1000000000",
        ]
    ),
)
GAINS = st.one_of(
    NUMBERS,
    st.builds(lambda g, b, u: f"{g}({b})/{u}", NUMBERS, NUMBERS, st.sampled_from(["mV", "uV", "", "µV", "/"])),
)
NAMES = st.one_of(
    st.sampled_from(LEADS_12 + ["i", "avr", "aVR", "MLII", "RESP", "", "I I", "V7", "-"]),
    st.text(min_size=1, max_size=8).filter(lambda s: not any(c.isspace() for c in s)),
)
TOKENS = st.one_of(
    NUMBERS,
    GAINS,
    st.sampled_from(FORMATS),
    NAMES,
    st.text(max_size=12),
    st.sampled_from(["rec.dat", "rec", "other.dat", "~", "../rec.dat", "rec.hea", "/etc/hostname"]),
)


@st.composite
def header_mutation(draw: st.DrawFn, text: str) -> str:
    """One or a few edits of a header's text: fields, whole lines, bytes."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                [
                    "field",
                    "field",
                    "field",
                    "drop_line",
                    "dup_line",
                    "swap_lines",
                    "count",
                    "fs",
                    "sig_len",
                    "truncate",
                    "char",
                    "comment",
                    "blank_fields",
                ]
            )
        )
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        words = lines[i].split(" ")
        if op == "field":
            j = draw(st.integers(0, max(0, len(words) - 1)))
            words[j] = draw(TOKENS)
            lines[i] = " ".join(words)
        elif op == "drop_line":
            del lines[i]
        elif op == "dup_line":
            lines.insert(i, lines[i])
        elif op == "swap_lines":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op in ("count", "fs", "sig_len"):
            head = lines[0].split(" ")
            k = {"count": 1, "fs": 2, "sig_len": 3}[op]
            while len(head) <= k:
                head.append("")
            head[k] = draw(NUMBERS)
            lines[0] = " ".join(head)
        elif op == "truncate":
            joined = "\n".join(lines)
            lines = joined[: draw(st.integers(0, len(joined)))].split("\n")
        elif op == "char":
            joined = "\n".join(lines)
            k = draw(st.integers(0, max(0, len(joined) - 1)))
            joined = joined[:k] + draw(st.characters()) + joined[k + 1 :]
            lines = joined.split("\n")
        elif op == "comment":
            lines.append("#" + draw(st.text(max_size=30)))
        elif op == "blank_fields":
            lines[i] = " ".join(words[: draw(st.integers(0, len(words)))])
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))


@st.composite
def data_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncated, extended, overwritten or replaced signal bytes."""
    op = draw(st.sampled_from(["truncate", "overwrite", "append", "random", "empty", "nan_like"]))
    if op == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if op == "overwrite":
        k = draw(st.integers(0, len(data)))
        patch = draw(st.binary(min_size=1, max_size=64))
        return data[:k] + patch + data[k + len(patch) :]
    if op == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if op == "random":
        return draw(st.binary(max_size=2 * len(data)))
    if op == "nan_like":  # fmt 16's invalid-sample value -32768 everywhere in a stretch
        k = draw(st.integers(0, max(0, len(data) - 2)))
        n = draw(st.integers(1, 200))
        return data[:k] + b"\x00\x80" * n + data[k + 2 * n :]
    return b""


@st.composite
def mutated_record(draw: st.DrawFn, kinds: tuple[str, ...] = BASES) -> tuple[str, str, dict[str, bytes]]:
    """``(base kind, record name, files)`` of a valid record with its header and/or signal file mutated."""
    kind = draw(st.sampled_from(kinds))
    name, files = base_record(kind)
    files = dict(files)
    hea, dat = f"{name}.hea", f"{name}.dat"
    target = draw(st.sampled_from(["header", "data", "both", "none", "drop_data"]))
    if target in ("header", "both"):
        files[hea] = draw(header_mutation(files[hea].decode())).encode("utf-8", "surrogatepass")
    if target in ("data", "both"):
        files[dat] = draw(data_mutation(files[dat]))
    if target == "drop_data":
        del files[dat]
    return kind, name, files


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for fname, blob in files.items():
        (folder / fname).write_bytes(blob)


def write_ptbxl(root: Path, records: list[dict[str, bytes]]) -> list[str]:
    """A PTB-XL-layout folder holding ``records`` (each in its own folder); returns their ecg_ids."""
    rows = []
    for i, files in enumerate(records, start=1):
        write_files(root / "records100" / f"{i:05d}", files)
        name = next(f for f in files if f.endswith(".hea"))[: -len(".hea")]
        rel = f"records100/{i:05d}/{name}"
        rows.append(f"{i},{100 + i},61,0,{i % 2},{1 + i % 10},\"{{'NORM': 100.0}}\",{rel},{rel}")
    (root / "ptbxl_database.csv").write_text(
        "ecg_id,patient_id,age,sex,site,strat_fold,scp_codes,filename_lr,filename_hr\n" + "\n".join(rows) + "\n"
    )
    (root / "scp_statements.csv").write_text(
        ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\nNORM,normal,1,,,NORM,NORM\n"
    )
    return [str(i) for i in range(1, len(records) + 1)]
