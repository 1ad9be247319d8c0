"""EDF, EDF+ and BDF (Holter and patch recorders, sleep labs), read with edfio.

edfio (maintained, numpy-based, pure Python) checks the header, handles EDF+C and BDF and returns each
signal in its physical dimension (digital samples mapped through the physical/digital ranges). From it:

* every signal whose label names a standard lead (``ECG I``, ``Lead II``, ``V1``...) at its own
  ``sampling_frequency`` (all leads read must share one rate) and ``physical_dimension`` (``uV``, ``mV``);
  other signals (annotations, respiration, accelerometer) are ignored;
* the patient code and the recording's start date-time and equipment as ids.
A file whose data records are fewer or more than the header states is refused (edfio reads what is there
and warns; here that is a truncated file or a wrong declared length).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from liteheart_core.data.formats.common import assemble, lead_name
from liteheart_core.data.signal import RawRecord, RecordError


def read(path: Path, rid: str, allow_single_lead: bool = False, reject_flat: bool = True) -> RawRecord:
    """Read the ECG leads of an EDF/EDF+/BDF file.

    Raises
    ------
    RecordError
        A header edfio refuses, a file shorter than its header states, leads at different rates, leads
        without a voltage unit, missing or duplicate leads, NaN samples.
    """
    import edfio

    _check_record_duration(path, rid)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            edf = edfio.read_edf(str(path))
    except (ValueError, OSError, EOFError, IndexError, UnicodeDecodeError) as exc:
        raise RecordError(rid, f"not a readable EDF file (corrupt header or truncated data): {exc}") from None
    for warning in caught:  # edfio reads what is there and says so; here that is a truncated recording
        text = str(warning.message)
        if "data record" in text.lower():
            raise RecordError(
                rid,
                f"EDF file and header disagree on its length (truncated or wrong declared "
                f"number of data records): {text}",
            )
    names, channels, units, rates = [], [], [], set()
    try:
        for sig in edf.signals:
            lead = lead_name(sig.label)
            if lead is None:
                continue
            names.append(lead)
            channels.append(sig.data)
            units.append(sig.physical_dimension or None)
            rates.add(float(sig.sampling_frequency))
        patient = edf.patient.code if edf.patient.code not in ("", "X") else ""
        source = " ".join(str(v) for v in (edf.startdate, edf.starttime) if v is not None)
    except (ValueError, IndexError, AttributeError) as exc:  # edfio parses signal data and fields lazily
        raise RecordError(rid, f"corrupt EDF signal data or header field: {exc}") from None
    if not names:
        labels = ", ".join(repr(s.label) for s in edf.signals) or "none"
        raise RecordError(
            rid, f"no ECG lead among the EDF signals (labels {labels}; a lead is named like 'ECG I', 'Lead II' or 'V1')"
        )
    if len(rates) > 1:
        raise RecordError(rid, f"ECG leads at different rates {sorted(rates)} Hz (one rate per record is read)")
    fs = next(iter(rates)) if rates else "none"
    return assemble(
        rid,
        names,
        channels,
        units,
        fs,
        fmt="edf",
        where_fs="the signal headers",
        allow_single_lead=allow_single_lead,
        reject_flat=reject_flat,
        patient=patient,
        source_id=source,
    )


def _check_record_duration(path: Path, rid: str) -> None:
    """The data-record duration (header bytes 244-252) gives the rate: it must be a positive number."""
    with open(path, "rb") as fh:
        head = fh.read(256)
    text = head[244:252].decode("ascii", "replace").strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if len(head) == 256 and not (np.isfinite(seconds) and seconds > 0):
        raise RecordError(
            rid,
            f"unknown sampling rate: the EDF data-record duration is {text!r} s "
            f"(samples per record / duration give the rate)",
        )
