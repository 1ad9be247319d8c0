"""Prepare an ECG dataset once into arrays that training reads by memmap.

WFDB files (or DICOM, HL7 aECG, MUSE/Philips XML, EDF, Apple Health CSV: kind ``files``) -> band-pass -> polyphase resample -> per-record, per-lead
standardisation -> fixed windows -> ``signals.npy`` float32 [N, 12, T]
+ ``labels_<task>.npy`` + ``regions.npy`` (P/QRS/T codes) + ``index.csv``
+ ``meta.json`` + ``report.json``.

The output folder is named by a key over the source's content fingerprint and
the settings, and is written to a temporary folder first and renamed into
place, so a second run reuses it and a killed run leaves no half cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from liteheart_core.data import challenge, ptbxl
from liteheart_core.data.formats import find_ecg_files, is_wfdb, read_ecg, recording_id
from liteheart_core.data.formats.labels import code_tasks
from liteheart_core.data.ptbxl import LayoutError, RecordMeta
from liteheart_core.data.signal import (
    STANDARD_LEADS,
    RawRecord,
    RecordError,
    bandpass,
    fit_windows,
    read_wfdb,
    resample,
    standardise,
)
from liteheart_core.fields import coerce, typed_values

MAX_FS = 100_000  # Hz: no ECG is sampled faster; also bounds the arrays a setting can ask for
MAX_WINDOW_S = 3600.0  # s: one hour per window at most
PREP_VERSION = 2  # bump whenever the output for the same data and settings changes
KINDS = ("ptbxl", "challenge", "files")


@dataclass(frozen=True)
class PrepSettings:
    """How records become windows. Every field is part of the cache key."""

    fs: int = 100
    window_s: float = 10.0
    long_records: str = "crop"  # "crop": one centred window; "windows": consecutive windows
    min_seconds: float = 2.0  # shorter records are skipped; longer-but-short ones are zero-padded
    bandpass: tuple[float, float] | None = (0.5, 40.0)
    standardise: bool = True
    source_rate: int = 100  # PTB-XL: read records100 (100) or records500 (500)
    regions: bool = True  # detect beats and cache P/QRS/T region codes
    unknown_codes: str = "warn"  # Challenge codes in no table: "warn" keeps the record, "skip" drops it

    def __post_init__(self) -> None:
        if not 1 <= self.fs <= MAX_FS:
            raise ValueError(f"fs must be in 1..{MAX_FS} Hz, got {self.fs}")
        if not 0 < self.window_s <= MAX_WINDOW_S:
            raise ValueError(f"window_s must be in (0, {MAX_WINDOW_S}] s, got {self.window_s}")
        if not 0 <= self.min_seconds <= MAX_WINDOW_S:
            raise ValueError(f"min_seconds must be in [0, {MAX_WINDOW_S}] s, got {self.min_seconds}")
        if self.source_rate not in (100, 500):
            raise ValueError(f"source_rate must be 100 or 500 (PTB-XL's records100/records500), got {self.source_rate}")
        if self.long_records not in ("crop", "windows"):
            raise ValueError(f"long_records must be 'crop' or 'windows', got {self.long_records!r}")
        if self.unknown_codes not in ("warn", "skip"):
            raise ValueError(f"unknown_codes must be 'warn' or 'skip', got {self.unknown_codes!r}")
        if self.bandpass is not None:
            low, high = _band(self.bandpass)
            if not 0 < low < high < MAX_FS:
                raise ValueError(f"bandpass must be (low, high) with 0 < low < high, got {self.bandpass}")
            object.__setattr__(self, "bandpass", (float(low), float(high)))

    @property
    def length(self) -> int:
        return int(round(self.fs * self.window_s))

    @classmethod
    def from_dict(cls, data: dict) -> PrepSettings:
        """Settings from a dict (a checkpoint's ``prep_settings``, a store's); bad keys and values name the key."""
        data = typed_values(cls, data, "preparation settings")
        if data.get("bandpass") is not None:
            data["bandpass"] = _band(data["bandpass"])
        return cls(**data)


def _band(value: object) -> tuple[float, float]:
    """A (low, high) band-pass in Hz, both finite numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"bandpass must be (low, high) in Hz or None, got {value!r}")
    low, high = (coerce(v, 0.0, "bandpass", "preparation settings") for v in value)
    return low, high


class PreparationError(RuntimeError):
    """Preparation refused to finish (strict mode, or nothing usable)."""


@dataclass
class _Result:
    record: str
    windows: list[np.ndarray] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    valid: list[int] = field(default_factory=list)
    error: str | None = None
    codes: tuple[str, ...] = ()  # what the file itself says (kind "files"): coded statements, patient, format
    patient: str = ""
    fmt: str = ""
    source_id: str = ""


def prepare_signal(
    raw: RawRecord, settings: PrepSettings, length: int | None = None, long_records: str | None = None
) -> tuple[list[np.ndarray], list[int], list[int]]:
    """One record's signal -> windows, the same way for batch preparation, ingest and single-record plots.

    Raises
    ------
    RecordError
        The record is shorter than ``settings.min_seconds``, or its rate is too low for the band-pass.
    """
    x = raw.signal
    seconds = x.shape[-1] / raw.fs
    if seconds < settings.min_seconds:
        raise RecordError(raw.record, f"only {seconds:.1f} s long (minimum {settings.min_seconds} s)")
    if settings.bandpass is not None:
        low, high = settings.bandpass
        if not low < min(high, 0.45 * raw.fs):  # the filter's own limit: its high edge stays below Nyquist
            raise RecordError(
                raw.record,
                f"sampling rate {raw.fs:g} Hz is too low for the {low:g}-{high:g} Hz "
                f"band-pass (it needs more than {low / 0.45:.3g} Hz)",
            )
        x = bandpass(x, raw.fs, *settings.bandpass)
    x = resample(x, raw.fs, settings.fs)
    if settings.standardise:
        x = standardise(x)
    return fit_windows(x, length or settings.length, long_records or settings.long_records)


def _process(meta: RecordMeta, settings: PrepSettings) -> _Result:
    """One record -> windows; a bad record becomes a result carrying its reason."""
    try:
        if meta.path.is_file() and not is_wfdb(meta.path):  # one-file formats (DICOM, XML, EDF, CSV)
            raw = read_ecg(meta.path, meta.record)
        else:
            raw = read_wfdb(meta.path, meta.record)
        wins, starts, valid = prepare_signal(raw, settings)
        return _Result(
            meta.record, wins, starts, valid, codes=raw.codes, patient=raw.patient, fmt=raw.fmt, source_id=raw.source_id
        )
    except RecordError as exc:
        return _Result(meta.record, error=exc.reason)
    except Exception as exc:  # never die half-way on one odd file
        return _Result(meta.record, error=f"unexpected error: {type(exc).__name__}: {exc}")


def _process_many(args: tuple[list[RecordMeta], PrepSettings]) -> list[_Result]:
    metas, settings = args
    return [_process(m, settings) for m in metas]


def detect_kind(root: Path) -> str:
    """``"ptbxl"``, ``"challenge"`` or ``"files"`` from a folder's contents.

    ``files``: a folder holding ECG files of other formats than WFDB (DICOM, HL7 aECG, MUSE/Philips XML,
    EDF, Apple Health CSV), recognised by content, possibly mixed with WFDB records.
    """
    if ptbxl.is_ptbxl(root):
        return "ptbxl"
    if root.is_dir():
        found = find_ecg_files(root)
        if any(not is_wfdb(p) for p in found):
            return "files"
        if found:
            return "challenge"
    raise LayoutError(
        f"{root} is neither a PTB-XL folder (ptbxl_database.csv) nor a folder of WFDB records or "
        f"ECG files (DICOM, HL7 aECG, MUSE/Philips XML, EDF, Apple Health CSV)"
    )


def _list_files(root: Path) -> list[RecordMeta]:
    """Every recording of a mixed folder; ids are paths below ``root`` (``a/x.dcm``, ``b/x_lr``), so
    that the same recording in two formats stays two records. Codes and patients come from the files
    themselves once read (a WFDB header's ``# Dx:`` SNOMED codes are read here)."""
    metas = []
    for path in find_ecg_files(root):
        codes: tuple[str, ...] = ()
        if is_wfdb(path):
            header = path.with_name(path.name + ".hea")
            codes = tuple(f"SNOMED:{c}" for c in challenge.parse_dx(header.read_text(errors="replace").splitlines()))
        metas.append(RecordMeta(record=recording_id(path, root), path=path, codes=codes))
    return metas


def _list_records(kind: str, root: Path, settings: PrepSettings) -> tuple[list[RecordMeta], list[dict[str, str]]]:
    if kind == "ptbxl":
        return ptbxl.read_ptbxl_table(root, rate=settings.source_rate)
    if kind == "challenge":
        return challenge.read_challenge_records(root)
    if kind == "files":
        return _list_files(root), []
    raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(KINDS)}")


def fingerprint(kind: str, root: Path, records: Iterable[RecordMeta]) -> str:
    """SHA-256 over the tables and every record file's bytes: same data, same key, wherever it lies."""
    digest = hashlib.sha256(kind.encode())
    for table in ("ptbxl_database.csv", "scp_statements.csv"):
        if (root / table).is_file():
            digest.update((root / table).read_bytes())
    for meta in records:
        digest.update(meta.record.encode())
        if meta.path.is_file() and not is_wfdb(meta.path):
            digest.update(meta.path.read_bytes())
            continue
        for path in sorted(meta.path.parent.glob(meta.path.name + ".*")):
            if path.suffix in (".hea", ".dat", ".mat"):
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(kind: str, data_fingerprint: str, settings: PrepSettings) -> str:
    blob = json.dumps(
        {"v": PREP_VERSION, "kind": kind, "data": data_fingerprint, "settings": asdict(settings)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _chunks(items: list, n: int) -> list[list]:
    size = max(1, min(64, len(items) // max(1, n * 4) or 1))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run_records(
    metas: list[RecordMeta], settings: PrepSettings, workers: int, progress: Callable[[int, int], None] | None
) -> list[_Result]:
    chunks = _chunks(metas, workers)
    results: list[_Result] = []
    done = 0
    if workers <= 1 or len(metas) < 64:
        mapped = (_process_many((c, settings)) for c in chunks)
        for part in mapped:
            results.extend(part)
            done += len(part)
            if progress:
                progress(done, len(metas))
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_process_many, [(c, settings) for c in chunks]):
            results.extend(part)
            done += len(part)
            if progress:
                progress(done, len(metas))
    return results


def _labels(kind: str, root: Path, codes: list[tuple[str, ...]]) -> dict[str, tuple[list[str], np.ndarray]]:
    if kind == "ptbxl":
        statements = ptbxl.read_statements(root)
        return {task: ptbxl.task_labels(codes, statements, task) for task in ptbxl.TASKS}
    if kind == "files":
        return code_tasks(codes)
    return {challenge.TASK: challenge.challenge_labels(codes)}


def _label_counts(labels: dict[str, tuple[list[str], np.ndarray]], first: np.ndarray) -> dict[str, dict[str, int]]:
    counts = {}
    for task, (classes, y) in labels.items():
        totals = y[first].sum(axis=0).astype(np.int64)
        counts[task] = {c: int(n) for c, n in sorted(zip(classes, totals), key=lambda t: -t[1])}
    return counts


def prepare(
    root: Path,
    out: Path,
    kind: str | None = None,
    settings: PrepSettings | None = None,
    strict: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Prepare a PTB-XL or Challenge folder into ``out/<kind>-<key>/``, or reuse it.

    Parameters
    ----------
    strict
        Make the first bad record an error instead of a skipped, reported record.

    Returns
    -------
    dict
        The summary (also stored in ``meta.json``) plus ``"cached"``: whether
        an existing preparation was reused.

    Raises
    ------
    LayoutError
        The folder is not a dataset of the expected layout.
    PreparationError
        Strict mode met a bad record, or no record was usable.
    """
    t0 = time.perf_counter()
    settings = settings or PrepSettings()
    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"data folder {root} does not exist")
    kind = kind or detect_kind(root)
    metas, problems = _list_records(kind, root, settings)
    if kind == "ptbxl" and metas and not metas[0].path.with_suffix(".hea").is_file():
        other = 500 if settings.source_rate == 100 else 100
        alt, alt_problems = ptbxl.read_ptbxl_table(root, rate=other)
        if alt and alt[0].path.with_suffix(".hea").is_file():  # e.g. a folder with records500 only
            settings = PrepSettings.from_dict({**asdict(settings), "source_rate": other})
            metas, problems = alt, alt_problems
    if kind == "challenge":
        kept = []
        for meta in metas:
            unknown = challenge.unknown_codes(meta.codes)
            if unknown and (settings.unknown_codes == "skip" or len(unknown) == len(meta.codes)):
                problems.append({"record": meta.record, "reason": f"unknown SNOMED codes {', '.join(unknown)}"})
            else:
                kept.append(meta)
        metas = kept
    if strict and problems:
        p = problems[0]
        raise PreparationError(f"record {p['record']}: {p['reason']} (strict mode)")

    data_fp = fingerprint(kind, root, metas)
    key = cache_key(kind, data_fp, settings)
    final = Path(out).resolve() / f"{kind}-{key}"
    if (final / "meta.json").is_file():
        summary = json.loads((final / "meta.json").read_text())
        summary.update(cached=True, path=str(final), seconds=round(time.perf_counter() - t0, 2))
        return summary

    workers = workers or min(2, os.cpu_count() or 1)
    results = _run_records(metas, settings, workers, progress)
    by_id = {m.record: m for m in metas}
    formats: dict[str, tuple[str, str]] = {}  # record -> (format, the file's own id)
    if kind == "files":  # what only reading the file tells: its statements, its patient, its format
        for r in results:
            if r.error is None:
                m = by_id[r.record]
                by_id[r.record] = replace(
                    m, codes=m.codes + tuple(c for c in r.codes if c not in m.codes), patient=r.patient or m.record
                )
                formats[r.record] = (r.fmt, r.source_id)
    skipped = problems + [{"record": r.record, "reason": r.error} for r in results if r.error]
    if strict and skipped:
        s = skipped[0]
        raise PreparationError(f"record {s['record']}: {s['reason']} (strict mode)")
    good = [r for r in results if r.error is None]
    if not good:
        raise PreparationError(
            f"no usable record in {root}: " + "; ".join(f"{s['record']}: {s['reason']}" for s in skipped[:5])
        )

    warnings = []
    if kind == "challenge":
        for r in good:
            unknown = challenge.unknown_codes(by_id[r.record].codes)
            if unknown:
                warnings.append({"record": r.record, "reason": f"ignored unknown SNOMED codes {', '.join(unknown)}"})

    rows = []
    for r in good:
        m = by_id[r.record]
        for w, (start, valid) in enumerate(zip(r.starts, r.valid)):
            row = {
                "record": m.record,
                "patient": m.patient,
                "fold": m.fold,
                "site": m.site,
                "age": m.age,
                "sex": m.sex,
                "window": w,
                "start": start,
                "valid": valid,
                "codes": "|".join(m.codes),
            }
            if formats:  # kind "files": what the file is and its own id (DICOM SOP instance, aECG id, ...)
                row["format"], row["source_id"] = formats[m.record]
            rows.append(row)
    index = pd.DataFrame(rows)
    labels = _labels(kind, root, [tuple(str(r["codes"]).split("|")) if r["codes"] else () for r in rows])

    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    signals = np.lib.format.open_memmap(
        tmp / "signals.npy", mode="w+", dtype=np.float32, shape=(len(rows), len(STANDARD_LEADS), settings.length)
    )
    i = 0
    for r in good:
        for win in r.windows:
            signals[i] = win
            i += 1
    signals.flush()
    if settings.regions:
        from liteheart_core.regions import compute_regions

        # one process: starting workers (scipy import) costs more than the detection itself
        codes = compute_regions(signals, float(settings.fs), workers=1)
        valid = index["valid"].to_numpy()
        pad = np.arange(settings.length)[None, :] >= valid[:, None]
        codes[pad] = -1  # padding is never a region, whatever the detector saw there
        np.save(tmp / "regions.npy", codes.astype(np.int8))
    del signals
    index.to_csv(tmp / "index.csv", index_label="row")
    for task, (_classes, y) in labels.items():
        np.save(tmp / f"labels_{task}.npy", y)

    first = (index["window"] == 0).to_numpy()
    summary = {
        "format": PREP_VERSION,
        "source": kind,
        "source_root": str(root),
        "fingerprint": data_fp,
        "key": key,
        "settings": asdict(settings),
        "leads": list(STANDARD_LEADS),
        "fs": settings.fs,
        "length": settings.length,
        "records": int(first.sum()),
        "windows": len(rows),
        "tasks": {task: classes for task, (classes, _) in labels.items()},
        "task_records": {task: int((y[first].sum(axis=1) > 0).sum()) for task, (_, y) in labels.items()},
        "label_counts": _label_counts(labels, first),
        "folds": {str(k): int(v) for k, v in sorted(index[first]["fold"].value_counts().items())},
        "sources": {str(k): int(v) for k, v in index[first]["site"].value_counts().items()},
        "formats": {str(k): int(v) for k, v in index[first]["format"].value_counts().items()} if formats else {},
        "skipped": len(skipped),
        "skipped_records": skipped,
        "warnings": warnings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    summary["n_sources"] = len(summary["sources"])
    summary["prepare_seconds"] = round(time.perf_counter() - t0, 2)
    (tmp / "report.json").write_text(json.dumps({"skipped": skipped, "warnings": warnings}, indent=2))
    (tmp / "meta.json").write_text(json.dumps(summary, indent=2))
    if final.exists():  # another process won the race; keep its (identical) result
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)
    summary.update(cached=False, path=str(final), seconds=summary["prepare_seconds"])
    return summary
