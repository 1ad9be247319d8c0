"""Fuzzing the WFDB reader: mutated headers and signal files end in a record or in a RecordError.

Contract of :func:`liteheart_core.data.signal.read_wfdb` under hostile input: it returns a finite float32
array of the shape the header states ([12, sig_len], or [1, sig_len] for a lead-I recording when allowed),
or it raises :class:`RecordError` naming the record. Any other exception, a hang, NaN/Inf in the result
or a wrong shape fails the test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import wfdb
from hypothesis import event, given
from hypothesis import strategies as st

from liteheart_core.data.signal import RecordError, read_wfdb
from tests.fuzz.conftest import (
    base_record,
    ecg_signal,
    fuzz_settings,
    memory_limit,
    mutated_record,
    scratch_dir,
    time_limit,
    write_files,
)

TIME_LIMIT_S = 20.0  # a 12 x 300 record reads in milliseconds; anything near this is a hang


def read_checked(path: Path, rid: str, allow_single_lead: bool, reject_flat: bool):
    """``read_wfdb`` under time and memory limits, with the contract asserted; None when it refused."""
    try:
        with memory_limit(), time_limit(TIME_LIMIT_S):
            raw = read_wfdb(path, rid, allow_single_lead=allow_single_lead, reject_flat=reject_flat)
    except RecordError as exc:
        event("refused: " + " ".join(exc.reason.split()[:3]))
        assert exc.record == rid and str(exc).startswith(f"record {rid}: ")
        assert exc.reason.strip(), "a RecordError without a reason"
        return None
    event("read")
    x = raw.signal
    assert raw.record == rid
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2
    assert x.shape[0] == 12 or (allow_single_lead and x.shape[0] == 1), x.shape
    assert x.shape[1] > 0 and np.isfinite(x).all()
    assert np.isfinite(raw.fs) and raw.fs > 0
    assert len(raw.units) == x.shape[0]
    head = wfdb.rdheader(str(path))
    if head.sig_len:
        assert x.shape[1] == head.sig_len, f"header states {head.sig_len} samples, got {x.shape[1]}"
    return raw


@fuzz_settings(200)
@given(rec=mutated_record(), allow_single_lead=st.booleans(), reject_flat=st.booleans())
def test_mutated_records_are_read_or_refused_with_the_record_named(
    rec, allow_single_lead: bool, reject_flat: bool
) -> None:
    # Prepare
    kind, name, files = rec
    folder = scratch_dir()
    try:
        write_files(folder, files)

        # Execute
        raw = read_checked(folder / name, f"fz-{kind}", allow_single_lead, reject_flat)

        # Assert: an untouched record still reads, to the values it was written with
        if files == base_record(kind)[1] and (kind != "lead1" or allow_single_lead):
            n_leads = 1 if kind == "lead1" else 12
            assert raw is not None, "a valid record was refused"
            assert np.allclose(raw.signal, ecg_signal(n_leads, 300, 100).T, atol=0.011)  # fmt 80: 1/50 mV steps
    finally:
        shutil.rmtree(folder, ignore_errors=True)
