"""Coverage-guided fuzzing of the WFDB reader with atheris (libFuzzer), on demand — not part of CI.

    pip install -e ".[fuzz]"
    nice -n 10 python -m simulations.fuzz_wfdb -atheris_runs=200000 -timeout=20 -rss_limit_mb=3072 [CORPUS_DIR]

Each input is one record: 4 bytes (big-endian) giving the header's length, the header text, then the
signal file's bytes. The seed corpus (written into CORPUS_DIR, or a temporary folder, when it is empty)
holds valid 12-lead and lead-I records in formats 16, 212 and 80. The contract is the one of
``tests/fuzz/test_fuzz_wfdb.py``: ``read_wfdb`` returns a finite float32 [12|1, T] array or raises
``RecordError`` naming the record; any other exception is a crash that libFuzzer reports and saves.
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np
import pandas  # noqa: F401  (imported first: only wfdb and our reader are instrumented, or start-up takes minutes)
import scipy.signal  # noqa: F401

with atheris.instrument_imports(include=["wfdb", "liteheart_core"]):
    import wfdb  # noqa: F401  (instrumented: coverage guides the mutations through its parser)

    from liteheart_core.data.signal import RecordError, read_wfdb

from simulations.wfdb_seeds import BASES, base_record

RID = "fuzz"
WORK = Path(tempfile.mkdtemp(prefix="lh-atheris-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))


def encode(header: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(header)) + header + data


def seed_corpus(folder: Path) -> None:
    """Valid records to start from, so that mutations begin inside the format rather than at random bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in BASES:
        _, files = base_record(kind)
        (folder / f"seed-{kind}").write_bytes(encode(files["rec.hea"], files["rec.dat"]))


def test_one(blob: bytes) -> None:
    if len(blob) < 4:
        return
    (n,) = struct.unpack(">I", blob[:4])
    header, data = blob[4 : 4 + n], blob[4 + n :]
    (WORK / "rec.hea").write_bytes(header)
    (WORK / "rec.dat").write_bytes(data)
    try:
        raw = read_wfdb(WORK / "rec", RID, allow_single_lead=True, reject_flat=False)
    except RecordError as exc:
        if exc.record != RID or not exc.reason.strip():
            raise AssertionError(f"RecordError without the record or a reason: {exc!r}") from exc
        return
    x = raw.signal
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] not in (1, 12) or x.shape[1] == 0:
        raise AssertionError(f"wrong shape or type: {x.dtype} {x.shape}")
    if not np.isfinite(x).all() or not np.isfinite(raw.fs) or raw.fs <= 0:
        raise AssertionError("NaN/Inf in an accepted record")


def main() -> None:
    args = sys.argv
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:
        corpus_dir = Path(tempfile.mkdtemp(prefix="lh-atheris-corpus-"))
        args = args + [str(corpus_dir)]
        corpus = [str(corpus_dir)]
    if not any(Path(corpus[0]).glob("*")):
        seed_corpus(Path(corpus[0]))
    atheris.Setup(args, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
