"""Readers for the files hospitals and wearables export, all into one :class:`RawRecord`.

=========  ==============================================  ==============================
format     files                                           read with
=========  ==============================================  ==============================
wfdb       ``.hea`` + ``.dat``/``.mat`` (PhysioNet)        wfdb
dicom      DICOM 12-lead / General / Ambulatory ECG        pydicom
aecg       HL7 v3 annotated ECG XML (``AnnotatedECG``)     defusedxml (own reader)
muse       GE MUSE XML (``RestingECG``)                    defusedxml (own reader)
philips    Philips XML (``restingecgdata``), XLI           sierraecg
edf        EDF, EDF+, BDF (Holter, patch)                  edfio
apple      Apple Health ECG CSV (watch, lead I)            csv (own reader)
=========  ==============================================  ==============================

Every reader returns channel-first float32 in standard lead order (the 12 leads, or lead I alone where
the caller allows a lead-I recording), its rate, and what the file says of the patient, the recording
and its coded statements; every problem is a :class:`~liteheart_core.data.signal.RecordError` naming
the record and the reason. Formats are recognised by content (:mod:`.detect`), not by extension.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from liteheart_core.data.formats import aecg, apple, dicom, edf, muse, philips
from liteheart_core.data.formats.detect import FORMATS, detect_format
from liteheart_core.data.signal import RawRecord, RecordError, read_wfdb

__all__ = ["FORMATS", "detect_format", "find_ecg_files", "read_ecg", "recording_id", "is_wfdb"]

_READERS: dict[str, Callable[..., RawRecord]] = {
    "dicom": dicom.read,
    "aecg": aecg.read,
    "muse": muse.read,
    "philips": philips.read,
    "edf": edf.read,
    "apple": apple.read,
}
WFDB_SIGNAL_SUFFIXES = (".dat", ".mat")


def is_wfdb(path: Path) -> bool:
    """True for a WFDB record path (without extension, or its header)."""
    path = Path(path)
    return path.suffix.lower() == ".hea" or (not path.is_file() and path.with_name(path.name + ".hea").is_file())


def read_ecg(
    path: Path,
    record: str | None = None,
    *,
    allow_single_lead: bool = False,
    reject_flat: bool = True,
    fmt: str | None = None,
) -> RawRecord:
    """Read one recording of any supported format.

    Parameters
    ----------
    path
        A WFDB record path (without extension, or its ``.hea``) or a file of another format.
    record
        Id used in messages (default: the file name).
    fmt
        The format, when already known (default: detected from the content).

    Raises
    ------
    RecordError
        The file is of no known ECG format, or its reader refuses it (with the reason).
    """
    path = Path(path)
    if is_wfdb(path):
        base = path.with_suffix("") if path.suffix.lower() == ".hea" else path
        return read_wfdb(base, record or base.name, allow_single_lead=allow_single_lead, reject_flat=reject_flat)
    rid = record or path.name
    if not path.is_file():
        raise RecordError(rid, f"file {path} is missing")
    fmt = fmt or detect_format(path)
    if fmt not in _READERS:
        raise RecordError(
            rid,
            "not an ECG file of a known format (WFDB, DICOM, HL7 aECG, GE MUSE XML, "
            "Philips XML, EDF/BDF, Apple Health CSV)",
        )
    try:
        return _READERS[fmt](path, rid, allow_single_lead=allow_single_lead, reject_flat=reject_flat)
    except RecordError:
        raise
    except MemoryError:
        raise RecordError(rid, f"{fmt} file states sizes too large to read") from None
    except Exception as exc:  # a library's own error on a hostile file: refuse the file, never crash the folder
        raise RecordError(rid, f"{fmt} file cannot be read: {type(exc).__name__}: {exc}") from None


def find_ecg_files(path: Path) -> list[Path]:
    """The recordings at ``path``: WFDB records (paths without extension) and ECG files of other formats.

    A folder is searched recursively; a WFDB record's signal files are part of it, hidden files and
    files of no ECG format (notes, label tables) are left out.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``, or a single file that is no ECG recording.
    """
    path = Path(path)
    if path.is_dir():
        out: list[Path] = []
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in file.relative_to(path).parts):
                continue
            suffix = file.suffix.lower()
            if suffix == ".hea":
                out.append(file.with_suffix(""))
            elif suffix in WFDB_SIGNAL_SUFFIXES and file.with_suffix(".hea").is_file():
                continue
            elif detect_format(file) not in (None, "wfdb"):
                out.append(file)
        return sorted(out)
    if is_wfdb(path):
        return [path.with_suffix("") if path.suffix.lower() == ".hea" else path]
    if path.is_file():
        header = path.with_suffix(".hea")
        if path.suffix.lower() in WFDB_SIGNAL_SUFFIXES and header.is_file():
            return [header.with_suffix("")]
        if detect_format(path) is not None:
            return [path]
        raise FileNotFoundError(
            f"{path}: not an ECG recording of a known format (WFDB, DICOM, HL7 aECG, GE MUSE "
            f"XML, Philips XML, EDF/BDF, Apple Health CSV)"
        )
    header = path.with_suffix(".hea") if path.suffix else path.with_name(path.name + ".hea")
    raise FileNotFoundError(f"{path}: no WFDB record (no header {header.name}), no ECG file and not a folder")


def recording_id(path: Path, root: Path | None = None) -> str:
    """A recording's id: its path below ``root`` (names stay unique when formats share a stem), else its name."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.name
