"""One recording at a time, as a device receives it: find, hash, read, prepare, label.

Batch preparation (:mod:`liteheart_core.data.prepare`) turns a whole dataset into arrays;
a device instead meets its recordings one by one and keeps each in its record store. This
module gives it the same chain, record by record, with the same settings and the same
result: band-pass, polyphase resampling, per-lead standardisation, fixed windows, and the
P/QRS/T region codes of each window (:class:`~liteheart_core.data.prepare.PrepSettings`
defaults: 0.5-40 Hz, 100 Hz, 10-s windows).

Two differences from :func:`~liteheart_core.data.signal.read_wfdb`, on purpose:

* a flat or otherwise poor signal is *read*, not refused, so that the quality gate can store
  it with its reason (``read_wfdb`` rejects an all-flat record outright);
* a recording that holds lead I without the full 12 leads (a wearable's lead I, a 3-lead Holter's
  I, II, III) is accepted as lead I alone, ``[1, T]``. A lead set without lead I is refused, naming
  the missing leads.

Recordings come as WFDB records or as files of the other formats of :mod:`liteheart_core.data.formats`
(DICOM, HL7 aECG, GE MUSE and Philips XML, EDF/BDF, Apple Health CSV), recognised by content.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from liteheart_core.data import challenge, ptbxl
from liteheart_core.data.formats import find_ecg_files, is_wfdb, read_ecg
from liteheart_core.data.formats.labels import code_label
from liteheart_core.data.prepare import PrepSettings, prepare_signal
from liteheart_core.data.ptbxl import LayoutError
from liteheart_core.data.signal import RawRecord

_PTBXL_SEARCH_DEPTH = 4  # records100/00000/00001_lr.hea lies two folders below the database


def find_recordings(path: Path) -> list[Path]:
    """Recordings under ``path``, sorted: WFDB record paths (without extension) and ECG files of the other
    formats of :mod:`liteheart_core.data.formats` (DICOM, HL7 aECG, MUSE/Philips XML, EDF, Apple Health CSV),
    recognised by content.

    ``path`` may be a header file (``x.hea``), a record path without extension, another
    file of a record (``x.dat``), an ECG file or a folder (searched recursively).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``, or a file that is no recording.
    """
    return find_ecg_files(Path(path))


def _signal_files(header: Path) -> list[str]:
    """Signal file names a header refers to (read from its text, so a corrupt header still hashes)."""
    names: list[str] = []
    lines = [ln for ln in header.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines[1:]:
        name = line.split()[0]
        if name not in names and "/" not in name and name != "~":
            names.append(name)
    return names


def content_hash(record: Path) -> str:
    """SHA-256 over the header's and every signal file's name and bytes (absent files count as absent);
    for a one-file recording (DICOM, XML, EDF, CSV), over its name and bytes."""
    if Path(record).is_file() and not is_wfdb(record):
        return hashlib.sha256(Path(record).name.encode() + b"\0" + Path(record).read_bytes()).hexdigest()
    header = Path(record).with_name(Path(record).name + ".hea")
    digest = hashlib.sha256()
    digest.update(header.name.encode())
    digest.update(header.read_bytes())
    for name in sorted(_signal_files(header)):
        file = header.parent / name
        digest.update(name.encode())
        digest.update(file.read_bytes() if file.is_file() else b"<missing>")
    return digest.hexdigest()


def file_signature(record: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime_ns) of a record's files: unchanged between two looks means it is complete."""
    if record.is_file() and not is_wfdb(record):
        st = record.stat()
        return ((record.name, st.st_size, st.st_mtime_ns),)
    header = record.with_name(record.name + ".hea")
    files = [header] + ([header.parent / n for n in _signal_files(header)] if header.is_file() else [])
    out = []
    for f in files:
        try:
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((f.name, -1, -1))
    return tuple(out)


def read_recording(path: Path, record: str | None = None) -> RawRecord:
    """Read a 12-lead record (standard lead order) or lead I of a record holding it among fewer leads,
    from a WFDB record or an ECG file of any format of :mod:`liteheart_core.data.formats`.

    A flat recording is returned, not refused: the quality gate stores it with its reason.

    Raises
    ------
    RecordError
        Missing or corrupt file, truncated signal, unknown sampling rate or unit,
        an incomplete lead set without lead I, duplicate leads, or NaN/Inf samples.
    """
    return read_ecg(path, record, allow_single_lead=True, reject_flat=False)


@dataclass(frozen=True)
class PreparedRecording:
    """A recording as training reads it."""

    windows: np.ndarray  # float32 [W, leads, T]
    regions: np.ndarray | None  # int8 [W, T]; -1 on zero padding
    valid: tuple[int, ...]  # real samples per window


def prepare_recording(raw: RawRecord, settings: PrepSettings | None = None) -> PreparedRecording:
    """The same chain as batch preparation, for one record.

    Raises
    ------
    RecordError
        The record is shorter than ``settings.min_seconds``.
    """
    settings = settings or PrepSettings()
    wins, _, valid = prepare_signal(raw, settings)
    windows = np.stack(wins).astype(np.float32)
    regions = None
    if settings.regions:
        from liteheart_core.regions import region_codes

        regions = np.stack([region_codes(w, float(settings.fs)) for w in windows]).astype(np.int8)
        pad = np.arange(settings.length)[None, :] >= np.asarray(valid)[:, None]
        regions[pad] = -1  # padding is never a region, as in batch preparation
    return PreparedRecording(windows=windows, regions=regions, valid=tuple(int(v) for v in valid))


def task_classes(task: str) -> list[str]:
    """The fixed class list of a task a store can be created for without naming its classes."""
    if task == "superdiagnostic":
        return list(ptbxl.SUPERCLASSES)
    if task == challenge.TASK:
        return list(challenge.dx_table().abbreviations)
    raise ValueError(
        f"task {task!r} has no fixed class list; give the classes explicitly (fixed: superdiagnostic, {challenge.TASK})"
    )


def _split_names(text: str) -> list[str]:
    return [t for t in re.split(r"[|,;\s]+", text.strip()) if t]


@dataclass
class LabelBook:
    """Where a record's label comes from, in this order: a labels CSV, a PTB-XL database, a ``# Dx:`` line.

    A label is a multi-hot uint8 vector over ``classes``; a record none of the sources labels
    for this task (or labels with no class of the task) has no label.
    """

    task: str
    classes: list[str]
    from_csv: dict[str, np.ndarray]

    @classmethod
    def create(cls, task: str, classes: list[str], csv_path: Path | None = None) -> LabelBook:
        """A label book for ``task``; with ``csv_path``, a CSV of ``record`` plus either a
        ``labels`` column (class names separated by ``|``, ``,``, ``;`` or spaces) or one 0/1
        column per class.

        Raises
        ------
        ValueError
            The CSV lacks a ``record`` column or names a class the task does not have
            (the message names the record and the class).
        """
        return cls(task, list(classes), read_labels_csv(csv_path, classes) if csv_path else {})

    def label(self, record_id: str, path: Path) -> tuple[np.ndarray | None, str | None]:
        """The label of a record and its source (``"csv"``, ``"ptbxl"``, ``"dx"``), or ``(None, None)``."""
        if record_id in self.from_csv:
            return _nonempty(self.from_csv[record_id], "csv")
        if self.task in ptbxl.TASKS:
            root = _ptbxl_root(path)
            if root is not None:
                st = (root / "ptbxl_database.csv").stat()  # a watched folder's database may grow
                codes = _ptbxl_codes(root, (st.st_mtime_ns, st.st_size)).get(_relative_key(path, root))
                if codes is not None:
                    classes, y = ptbxl.task_labels([codes], _statements(root), self.task)
                    return _nonempty(_reorder(classes, y[0], self.classes), "ptbxl")
        if self.task == challenge.TASK:
            header = path.with_name(path.name + ".hea")
            dx = challenge.parse_dx(header.read_text(errors="replace").splitlines()) if header.is_file() else []
            if dx:
                classes, y = challenge.challenge_labels([tuple(dx)])
                return _nonempty(_reorder(classes, y[0], self.classes), "dx")
        return None, None

    def from_codes(self, codes: tuple[str, ...]) -> tuple[np.ndarray | None, str | None]:
        """The label the coded statements of a file give (DICOM, aECG, Apple Health), or ``(None, None)``."""
        y = code_label(tuple(codes), self.task, self.classes)
        return (None, None) if y is None else (y, "file")


def _nonempty(y: np.ndarray, source: str) -> tuple[np.ndarray | None, str | None]:
    return (y.astype(np.uint8), source) if y.any() else (None, None)


def _reorder(source_classes: list[str], y: np.ndarray, classes: list[str]) -> np.ndarray:
    col = {c: i for i, c in enumerate(source_classes)}
    return np.array([y[col[c]] if c in col else 0 for c in classes], dtype=np.uint8)


def read_labels_csv(path: Path, classes: list[str]) -> dict[str, np.ndarray]:
    """Labels from a CSV (see :meth:`LabelBook.create`), keyed by record id."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"labels file {path} does not exist")
    col = {c: i for i, c in enumerate(classes)}
    out: dict[str, np.ndarray] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "record" not in fields:
            raise ValueError(f"labels file {path}: needs a 'record' column (has {', '.join(fields) or 'none'})")
        class_columns = [f for f in fields if f in col]
        if "labels" not in fields and not class_columns:
            raise ValueError(
                f"labels file {path}: needs a 'labels' column or one column per class ({', '.join(classes)})"
            )
        for line, row in enumerate(reader, start=2):
            rid = (row.get("record") or "").strip()
            if not rid:
                raise ValueError(f"labels file {path}, line {line}: empty record id")
            y = np.zeros(len(classes), dtype=np.uint8)
            if "labels" in fields:
                for name in _split_names(row.get("labels") or ""):
                    if name not in col:
                        raise ValueError(
                            f"labels file {path}, record {rid}: unknown class {name!r} (expected {', '.join(classes)})"
                        )
                    y[col[name]] = 1
            else:
                for name in class_columns:
                    value = (row.get(name) or "0").strip()
                    if value not in ("0", "1", "0.0", "1.0", ""):
                        raise ValueError(
                            f"labels file {path}, record {rid}: column {name} must be 0 or 1, not {value!r}"
                        )
                    y[col[name]] = 1 if value.startswith("1") else 0
            out[rid] = y
    return out


def _ptbxl_root(path: Path) -> Path | None:
    folder = Path(path).resolve().parent
    for _ in range(_PTBXL_SEARCH_DEPTH):
        if ptbxl.is_ptbxl(folder):
            return folder
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def _relative_key(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(root).as_posix()


@lru_cache(maxsize=4)
def _statements(root: Path) -> pd.DataFrame:
    return ptbxl.read_statements(root)


@lru_cache(maxsize=4)
def _ptbxl_codes(root: Path, stamp: tuple[int, int]) -> dict[str, tuple[str, ...]]:
    """``filename_lr``/``filename_hr`` -> SCP codes of a PTB-XL database (read again when ``stamp`` changes)."""
    try:
        db = pd.read_csv(
            root / "ptbxl_database.csv",
            usecols=["ecg_id", "scp_codes", "filename_lr", "filename_hr"],
            dtype=str,
            keep_default_na=False,
        )
    except (ValueError, UnicodeDecodeError, OSError):  # pandas' parser errors are ValueErrors
        return {}  # a database that cannot be read labels nothing; `data prepare` names what is wrong with it
    out: dict[str, tuple[str, ...]] = {}
    for row in db.itertuples(index=False):
        try:
            codes = tuple(ptbxl.parse_scp_codes(row.scp_codes, str(row.ecg_id)))
        except LayoutError:
            continue  # batch preparation reports such rows; here the record simply has no label
        out[str(row.filename_lr)] = codes
        out[str(row.filename_hr)] = codes
    return out
