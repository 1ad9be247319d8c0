"""One WFDB record prepared exactly as a checkpoint's data were: what a user plots or a device feeds the model.

The steps are those of :mod:`liteheart_core.data.prepare` for one record —
read, band-pass, polyphase resample, per-record per-lead standardisation,
one window — with the settings stored in the checkpoint (``prep_settings``),
so a model sees the same kind of input at inference as in training. A record
longer than the window is centre-cropped (preparation's ``crop`` mode); a
shorter one is zero-padded at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liteheart_core.data.prepare import PrepSettings, prepare_signal
from liteheart_core.data.signal import read_wfdb

WFDB_SUFFIXES = (".hea", ".dat", ".mat")


@dataclass(frozen=True)
class PreparedRecord:
    """A record's model input window and where it came from."""

    record: str
    window: np.ndarray  # float32 [12, length], standard lead order
    fs: float  # the window's rate
    source_fs: float  # the file's rate
    source_seconds: float
    start: int  # first sample of the window in the resampled record
    valid: int  # real (non-padding) samples in the window
    units: tuple[str, ...]


def record_base(path: Path) -> Path:
    """The WFDB record path without extension (``rec``, ``rec.hea`` and ``rec.dat`` name the same record)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in WFDB_SUFFIXES else path


def prepare_record(path: Path, prep_settings: dict, length: int | None = None) -> PreparedRecord:
    """Read one WFDB record and turn it into one model window.

    Parameters
    ----------
    path
        The record, with or without its ``.hea``/``.dat``/``.mat`` extension.
    prep_settings
        A checkpoint's ``prep_settings`` (the fields of :class:`PrepSettings`).
    length
        Window length in samples (default: the settings' ``fs * window_s``).

    Raises
    ------
    RecordError
        The record is missing, corrupt, truncated, flat, lacks leads or is
        shorter than the settings' ``min_seconds``.
    ValueError
        The settings are not valid preparation settings.
    """
    settings = PrepSettings.from_dict(dict(prep_settings))
    length = int(length or settings.length)
    base = record_base(path)
    raw = read_wfdb(base)
    seconds = raw.signal.shape[-1] / raw.fs
    windows, starts, valid = prepare_signal(raw, settings, length=length, long_records="crop")
    return PreparedRecord(
        record=raw.record,
        window=np.ascontiguousarray(windows[0], dtype=np.float32),
        fs=float(settings.fs),
        source_fs=raw.fs,
        source_seconds=seconds,
        start=starts[0],
        valid=valid[0],
        units=raw.units,
    )
