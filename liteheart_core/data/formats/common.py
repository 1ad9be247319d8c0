"""What every format reader shares: lead names, units, rates and the checks that turn channels into a record.

A reader gets channels out of its file by whatever means the format needs (a library where one exists)
and hands them to :func:`assemble`, which applies the same rules to every format, so that a DICOM, an
aECG, an EDF and a WFDB file of the same signal give the same :class:`~liteheart_core.data.signal.RawRecord`:

* lead names in any spelling (``I``, ``Lead I``, ``Lead I (Einthoven)``, ``MDC_ECG_LEAD_I``, ``ECG AVR``)
  map to the 12 standard leads; channels that are no standard lead (respiration, markers) are ignored,
  a lead that appears twice is refused (which of the two is the lead cannot be known);
* the eight leads most carts store (I, II, V1-V6) are completed with III, aVR, aVL and aVF by
  Einthoven's and Goldberger's relations, as the carts themselves do;
* samples are converted to millivolts from the unit the file states; a file without a voltage unit is
  refused (an amplitude without a unit is not a measurement);
* the rate must be stated and lie in 1-100,000 Hz; NaN or infinite samples are refused;
* a record without all 12 leads but with lead I is a lead-I recording where the caller allows it
  (a wearable, a 3-lead Holter), else it is refused naming the missing leads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from liteheart_core.data.signal import MAX_FS, MIN_FS, STANDARD_LEADS, RawRecord, RecordError, canonical_lead

# Factors to millivolts of the voltage units files write (UCUM, EDF, MUSE, aECG spellings).
_TO_MV = {
    "mv": 1.0,
    "millivolt": 1.0,
    "millivolts": 1.0,
    "uv": 1e-3,
    "µv": 1e-3,
    "μv": 1e-3,
    "microvolt": 1e-3,
    "microvolts": 1e-3,
    "nv": 1e-6,
    "nanovolt": 1e-6,
    "nanovolts": 1e-6,
    "v": 1e3,
    "volt": 1e3,
    "volts": 1e3,
}
# Lead codes of SCP-ECG (DICOM's SCPECG scheme, "5.6.3-9-N") and of ISO/IEEE 11073 MDC ("2:N").
_SCP_LEADS = {
    "1": "I",
    "2": "II",
    "61": "III",
    "62": "aVR",
    "63": "aVL",
    "64": "aVF",
    "3": "V1",
    "4": "V2",
    "5": "V3",
    "6": "V4",
    "7": "V5",
    "8": "V6",
}
_MDC_LEADS = {
    "1": "I",
    "2": "II",
    "61": "III",
    "62": "aVR",
    "63": "aVL",
    "64": "aVF",
    "3": "V1",
    "4": "V2",
    "5": "V3",
    "6": "V4",
    "7": "V5",
    "8": "V6",
}
_PREFIX = re.compile(r"^(mdc_ecg_lead_|ecg[\s_-]*lead[\s_-]*|lead[\s_-]*|ecg[\s_-]*|ekg[\s_-]*)", re.I)
EIGHT = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def lead_name(name: str) -> str | None:
    """The standard lead a channel name stands for, or None for a channel that is no standard lead.

    >>> [lead_name(n) for n in ("Lead I (Einthoven)", "MDC_ECG_LEAD_AVR", "ECG V1", "avl", "Resp")]
    ['I', 'aVR', 'V1', 'aVL', None]
    """
    text = str(name).strip()
    text = re.sub(r"\s*\(.*\)\s*$", "", text)  # "Lead I (Einthoven)"
    text = _PREFIX.sub("", text).strip()
    if text.upper().startswith("MDC_ECG_LEAD_"):
        text = text[len("MDC_ECG_LEAD_") :]
    try:
        return canonical_lead(text)
    except ValueError:
        return None


def coded_lead(scheme: str, code: str) -> str | None:
    """The standard lead of a lead code (DICOM ``SCPECG`` ``5.6.3-9-1``, ``MDC`` ``2:1``), or None."""
    scheme, code = str(scheme).upper(), str(code).strip()
    if scheme.startswith("SCPECG") and code.startswith("5.6.3-9-"):
        return _SCP_LEADS.get(code.removeprefix("5.6.3-9-"))
    if scheme == "MDC" and code.startswith("2:"):
        return _MDC_LEADS.get(code.removeprefix("2:"))
    return None


def to_mv(unit: str | None) -> float | None:
    """The factor that turns samples in ``unit`` into millivolts, or None when it is no voltage unit."""
    if unit is None:
        return None
    key = str(unit).strip().lower().replace(" ", "")
    return _TO_MV.get(key)


def check_rate(rid: str, fs: object, where: str) -> float:
    """A usable sampling rate in Hz, or a RecordError naming what the file said."""
    try:
        rate = float(fs)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = float("nan")
    if not np.isfinite(rate) or not MIN_FS <= rate <= MAX_FS:
        raise RecordError(
            rid, f"unknown sampling rate: {where} gives {fs!r} (a usable rate lies in {MIN_FS:g}-{MAX_FS:g} Hz)"
        )
    return rate


def assemble(
    rid: str,
    names: Sequence[str | None],
    channels: list[np.ndarray],
    units: Sequence[str | None],
    fs: object,
    *,
    fmt: str,
    where_fs: str,
    allow_single_lead: bool = False,
    reject_flat: bool = True,
    patient: str = "",
    source_id: str = "",
    codes: tuple[str, ...] = (),
) -> RawRecord:
    """Channels of a file -> a record in standard lead order, in millivolts.

    Parameters
    ----------
    names
        Each channel's standard lead (from :func:`lead_name`/:func:`coded_lead`) or None for another channel.
    channels
        Each channel's samples in its own ``units``.
    fs, where_fs
        The rate the file states, and where it states it (for the refusal message).

    Raises
    ------
    RecordError
        Unknown rate, a lead twice, a lead without a voltage unit, leads of different lengths,
        missing leads, NaN/Inf samples, no samples, or (``reject_flat``) a flat line in every lead.
    """
    rate = check_rate(rid, fs, where_fs)
    found: dict[str, np.ndarray] = {}
    for name, data, unit in zip(names, channels, units):
        if name is None:
            continue
        if name in found:
            raise RecordError(rid, f"lead {name} appears twice in the file (which one is lead {name} is unknown)")
        factor = to_mv(unit)
        if factor is None:
            raise RecordError(
                rid, f"lead {name} has unit {unit!r}, which is no voltage unit (mV, uV, µV, nV or V are read)"
            )
        found[name] = np.asarray(data, dtype=np.float64).ravel() * factor
    lengths = {k: v.size for k, v in found.items()}
    if len(set(lengths.values())) > 1:
        raise RecordError(rid, "leads of different lengths: " + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    if all(lead in found for lead in EIGHT) and not all(lead in found for lead in STANDARD_LEADS):
        i, ii = found["I"], found["II"]
        derived = {"III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}
        for lead, values in derived.items():
            found.setdefault(lead, values)
    if all(lead in found for lead in STANDARD_LEADS):
        leads: tuple[str, ...] = STANDARD_LEADS
    elif allow_single_lead and "I" in found:
        leads = ("I",)
    else:
        missing = [lead for lead in STANDARD_LEADS if lead not in found]
        have = ", ".join(n for n in names if n) or "none of the standard leads"
        needed = (
            "the 12 standard leads (or I, II, V1-V6), or lead I"
            if allow_single_lead
            else "the 12 standard leads (or I, II, V1-V6)"
        )
        hint = "; lead I alone is a wearable's recording, for a device store" if "I" in found else ""
        raise RecordError(rid, f"missing leads {', '.join(missing)} (file has {have}; a record needs {needed}{hint})")
    x = np.stack([found[lead] for lead in leads]).astype(np.float32)
    if x.shape[1] == 0:
        raise RecordError(rid, "the file holds no samples")
    if not np.all(np.isfinite(x)):
        bad = [leads[i] for i in range(len(leads)) if not np.all(np.isfinite(x[i]))]
        raise RecordError(rid, f"NaN or infinite samples in leads {', '.join(bad)}")
    if reject_flat and (np.ptp(x, axis=1) < 1e-6).all():
        raise RecordError(rid, "flat-line signal in every lead")
    return RawRecord(
        record=rid,
        signal=np.ascontiguousarray(x),
        fs=rate,
        units=("mV",) * len(leads),
        patient=str(patient or ""),
        source_id=str(source_id or ""),
        codes=tuple(codes),
        fmt=fmt,
    )


def whole(rid: str, value: object, what: str, low: int = 0, high: int = 2**31) -> int:
    """A whole number a file states (counts, lengths), or a RecordError."""
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or not number.is_integer() or not low <= number <= high:
        raise RecordError(rid, f"{what} is {value!r}, not a whole number in {low}-{high}")
    return int(number)


def number(rid: str, value: object, what: str) -> float:
    """A finite number a file states (scales, offsets), or a RecordError."""
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        out = float("nan")
    if not np.isfinite(out):
        raise RecordError(rid, f"{what} is {value!r}, not a finite number")
    return out
