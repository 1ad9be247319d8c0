"""Reading WFDB records and turning them into fixed, standardised windows.

The read contract follows torch_ecg: ``wfdb.rdrecord(..., physical=True)`` gives
channel-first float32 in the record's units; leads are put in the standard order
whatever the file's order or letter case; resampling is polyphase.
Every problem with a record raises :class:`RecordError`, which names the record
and the reason, so that preparation can skip it and report why.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal as sps

STANDARD_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
_CANONICAL = {name.upper(): name for name in STANDARD_LEADS}
MIN_FS, MAX_FS = 1.0, 100_000.0  # sampling rates a record may have (ECGs: 100-10,000 Hz)
_BITS = {
    "8": 8,
    "16": 16,
    "24": 24,
    "32": 32,
    "61": 16,
    "80": 8,
    "160": 16,
    "212": 12,
    "310": 32 / 3,
    "311": 32 / 3,
    "508": 8,
    "516": 16,
    "524": 24,
}  # bits per sample of each WFDB format


class RecordError(ValueError):
    """A record that cannot be used, with its id and the reason."""

    def __init__(self, record: str, reason: str) -> None:
        super().__init__(f"record {record}: {reason}")
        self.record = record
        self.reason = reason


@dataclass(frozen=True)
class RawRecord:
    """One record's signal in standard lead order, channel-first."""

    record: str
    signal: np.ndarray  # float32 [12, T], or [1, T] for a lead-I recording
    fs: float
    units: tuple[str, ...]
    # What a file carries beside the signal (WFDB: nothing; DICOM, aECG, ...: see liteheart_core.data.formats)
    patient: str = ""  # the patient id the file names
    source_id: str = ""  # the recording's own id in the file (DICOM SOP instance UID, aECG id, ...)
    codes: tuple[str, ...] = ()  # coded statements as "SCHEME:code" (SCP:NORM, SNOMED:426783006)
    fmt: str = "wfdb"


def canonical_lead(name: str) -> str:
    """Map a lead name in any letter case ("AVR", "avr", "aVR") to its standard spelling.

    Raises
    ------
    ValueError
        If the name is not one of the 12 standard leads.
    """
    key = name.strip().upper()
    if key not in _CANONICAL:
        raise ValueError(f"unknown lead name {name!r}; expected one of {', '.join(STANDARD_LEADS)}")
    return _CANONICAL[key]


def lead_indices(leads: str | list[str] | tuple[str, ...]) -> list[int]:
    """Indices into :data:`STANDARD_LEADS` of a lead list (``"I"`` or ``"I,II"`` or a list)."""
    if isinstance(leads, str):
        leads = [x for x in leads.split(",") if x.strip()]
    if not leads:
        raise ValueError("at least one lead is needed")
    return [STANDARD_LEADS.index(canonical_lead(x)) for x in leads]


def read_wfdb(
    path: Path, record: str | None = None, *, allow_single_lead: bool = False, reject_flat: bool = True
) -> RawRecord:
    """Read one WFDB record (``.hea`` plus ``.dat``/``.mat``) into standard lead order.

    Parameters
    ----------
    path
        Record path without extension.
    record
        Id used in error messages (defaults to the file stem).
    allow_single_lead
        Also accept a record holding lead I without the full 12 (a wearable's one lead, a 3-lead Holter's
        I, II, III); only lead I comes back, as [1, T].
    reject_flat
        Refuse a record that is flat in every lead (the ingest path leaves that to its quality gate).

    Raises
    ------
    RecordError
        Missing or corrupt header, missing or truncated signal file, unknown
        sampling rate, missing leads, NaN/Inf samples or a flat-line signal.
    """
    import wfdb  # imported here so that worker processes pay for it only when reading

    rid = record or path.name
    header = path.with_name(path.name + ".hea")  # not with_suffix: record names may contain dots
    if not header.is_file():
        raise RecordError(rid, f"header file {header} is missing")
    try:
        head = wfdb.rdheader(str(path))
    except Exception as exc:  # wfdb raises many types for a bad header
        raise RecordError(rid, f"corrupt header {header.name}: {exc}") from exc
    _check_header(head, rid, header.name)
    files = sorted(set(head.file_name))
    for name in files:
        if not (path.parent / name).is_file():
            raise RecordError(rid, f"signal file {name} is missing")
    _check_sizes(head, path.parent, rid)
    names = list(head.sig_name)
    positions: dict[str, int] = {}
    for i, n in enumerate(names):
        try:
            positions.setdefault(canonical_lead(n), i)
        except ValueError:
            continue  # extra non-ECG channels (respiration, markers) are ignored
    if all(lead in positions for lead in STANDARD_LEADS):
        leads = STANDARD_LEADS
    elif allow_single_lead and "I" in positions:
        leads = ("I",)  # a wearable, or a Holter's few leads: lead I is what a device store keeps
    else:
        missing = [lead for lead in STANDARD_LEADS if lead not in positions]
        needed = "the 12 standard leads, or lead I" if allow_single_lead else "the 12 standard leads"
        raise RecordError(
            rid, f"missing leads {', '.join(missing)} (file has {', '.join(names) or 'none'}; a record needs {needed})"
        )
    try:
        rec = wfdb.rdrecord(str(path), physical=True)
    except Exception as exc:
        raise RecordError(rid, f"corrupt or truncated signal file: {exc}") from exc
    data = rec.p_signal
    if data is None or data.ndim != 2 or data.shape[0] == 0:
        raise RecordError(rid, "signal file holds no samples")
    if head.sig_len and data.shape[0] < head.sig_len:
        raise RecordError(rid, f"truncated signal: {data.shape[0]} of {head.sig_len} samples")
    order = [positions[lead] for lead in leads]
    x = np.ascontiguousarray(data[:, order].T, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        bad = [leads[i] for i in range(len(leads)) if not np.all(np.isfinite(x[i]))]
        raise RecordError(rid, f"NaN or infinite samples in leads {', '.join(bad)}")
    if reject_flat and (np.ptp(x, axis=1) < 1e-6).all():
        raise RecordError(rid, "flat-line signal in every lead")
    units = tuple(str((rec.units or [""] * len(names))[i]) for i in order)
    return RawRecord(record=rid, signal=x, fs=float(head.fs), units=units)


def _check_header(head, rid: str, header: str) -> None:
    """Refuse header values that wfdb parses without complaint but cannot stand for a usable signal."""

    def bad(what: str) -> RecordError:
        return RecordError(rid, f"corrupt header {header}: {what}")

    try:
        fs = float(head.fs)
    except (TypeError, ValueError):
        fs = float("nan")
    if not np.isfinite(fs) or not MIN_FS <= fs <= MAX_FS:
        raise RecordError(
            rid, f"unknown sampling rate in {header}: {head.fs!r} (a usable rate lies in {MIN_FS:g}-{MAX_FS:g} Hz)"
        )
    n = head.n_sig
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise bad(f"{n!r} signals")
    for field in ("file_name", "sig_name", "fmt", "adc_gain", "baseline", "samps_per_frame"):
        values = getattr(head, field, None)
        if values is None or len(values) != n:
            found = "none" if values is None else len(values)
            raise bad(f"it announces {n} signals but has {found} values of {field} (a missing or extra signal line)")
    if head.sig_len is not None and (not isinstance(head.sig_len, (int, np.integer)) or head.sig_len < 0):
        raise bad(f"signal length {head.sig_len!r}")
    for i, (fname, name, fmt, gain, spf) in enumerate(
        zip(head.file_name, head.sig_name, head.fmt, head.adc_gain, head.samps_per_frame), start=1
    ):
        if not isinstance(fname, str) or not fname or fname == "~" or Path(fname).name != fname:
            raise bad(f"signal {i} names the signal file {fname!r} (a file beside the header is needed)")
        if not isinstance(name, str) or not name.strip():
            raise bad(f"signal {i} has no name")
        if fmt not in _BITS:
            raise bad(f"signal {i} ({name}) has unknown format {fmt!r}")
        if gain is None or not np.isfinite(gain):
            raise bad(f"signal {i} ({name}) has gain {gain!r}")
        if not isinstance(spf, (int, np.integer)) or not 1 <= spf <= 1000:
            raise bad(f"signal {i} ({name}) has {spf!r} samples per frame")


def _check_sizes(head, folder: Path, rid: str) -> None:
    """A header that announces more samples than its files hold is a truncated record (checked before
    reading, so that a corrupt length never makes wfdb allocate gigabytes)."""
    if not head.sig_len:
        return  # no length stated: wfdb reads what the file holds
    bits: dict[str, float] = {}
    offsets: dict[str, int] = {}
    for fname, fmt, spf, offset in zip(
        head.file_name, head.fmt, head.samps_per_frame, head.byte_offset or [None] * head.n_sig
    ):
        if fmt in ("508", "516", "524"):  # FLAC: compressed, size says nothing
            return
        bits[fname] = bits.get(fname, 0.0) + _BITS[fmt] * spf
        offsets[fname] = max(offsets.get(fname, 0), int(offset or 0))
    for fname, frame_bits in bits.items():
        need = offsets[fname] + int(np.ceil(head.sig_len * frame_bits / 8)) - 2  # 310/311 pack the last bytes short
        have = (folder / fname).stat().st_size
        if have < need:
            raise RecordError(
                rid,
                f"truncated signal file {fname}: the header announces {head.sig_len} samples "
                f"(about {need} bytes), the file holds {have} bytes",
            )


def bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis (high edge clipped below Nyquist)."""
    nyq = fs / 2.0
    high = min(high, 0.45 * fs)
    if not 0 < low < high < nyq:
        raise ValueError(f"band {low}-{high} Hz does not fit a {fs} Hz signal")
    sos = sps.butter(order, [low / nyq, high / nyq], btype="band", output="sos")
    padlen = min(x.shape[-1] - 1, 3 * (2 * len(sos) + 1) * 10)
    return sps.sosfiltfilt(sos, x, axis=-1, padlen=padlen).astype(np.float32)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis to ``fs_out``."""
    if abs(fs_in - fs_out) < 1e-9:
        return x.astype(np.float32, copy=False)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def standardise(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-lead zero mean, unit variance; a flat lead stays zero instead of exploding."""
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return ((x - mean) / np.maximum(std, eps)).astype(np.float32)


def fit_windows(x: np.ndarray, length: int, long_mode: str) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Cut a record into fixed windows.

    Longer records are centre-cropped (``long_mode="crop"``) or cut into
    non-overlapping windows (``"windows"``; a remainder shorter than half a
    window is dropped); shorter records are zero-padded at the end.

    Returns
    -------
    windows, starts, valid
        The windows [leads, length], their start samples and their number of
        real (non-padding) samples.
    """
    n = x.shape[-1]
    if n <= length:
        out = np.zeros((x.shape[0], length), dtype=np.float32)
        out[:, :n] = x
        return [out], [0], [n]
    if long_mode == "crop":
        start = (n - length) // 2
        return [x[:, start : start + length]], [start], [length]
    if long_mode != "windows":
        raise ValueError(f"long_mode must be 'crop' or 'windows', not {long_mode!r}")
    wins: list[np.ndarray] = []
    starts: list[int] = []
    valid: list[int] = []
    for start in range(0, n, length):
        seg = x[:, start : start + length]
        if seg.shape[-1] < length:
            if seg.shape[-1] < length // 2 and wins:
                break
            pad = np.zeros((x.shape[0], length), dtype=np.float32)
            pad[:, : seg.shape[-1]] = seg
            wins.append(pad)
            valid.append(seg.shape[-1])
        else:
            wins.append(seg)
            valid.append(length)
        starts.append(start)
    return wins, starts, valid
