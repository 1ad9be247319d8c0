"""Ingest: ECG files (WFDB, DICOM, HL7 aECG, MUSE/Philips XML, EDF, Apple Health CSV) -> quality gate
-> preparation -> the record store, one transaction each.

A recording is identified by its file name (the record name, e.g. ``00001_lr``) and the
SHA-256 of its files. Known recordings are skipped before any reading or filtering, so
re-running an interrupted ingest costs one hash per file already stored. A recording that
cannot be read, or that the quality gate flags, is still stored, with its reason, and never
trains.

:func:`watch` polls a folder and ingests recordings once they have settled: every file the
header names must be there, and all of them must look the same (size, mtime) on two
consecutive polls or be older than one polling interval, so a recording still being copied
is not taken half-written (a header whose signal file never comes is left alone by the
watch; a one-shot ingest stores it as unreadable).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from client.store import AddResult, NewRecording, RecordStore
from liteheart_core.data.incoming import (
    LabelBook,
    content_hash,
    file_signature,
    find_recordings,
    prepare_recording,
    read_recording,
)
from liteheart_core.data.prepare import PrepSettings
from liteheart_core.data.signal import STANDARD_LEADS, RecordError
from liteheart_core.quality import assess_quality


@dataclass
class IngestSummary:
    """What an ingest did, and why each unusable recording is unusable."""

    added: int = 0
    duplicates: int = 0
    unusable: int = 0  # added, but flagged by the gate or unreadable
    evicted: int = 0
    vanished: int = 0  # listed, then gone before it could be read
    problems: list[dict[str, str]] = field(default_factory=list)  # {"record", "reason"} of unusable ones

    def merge(self, other: IngestSummary) -> None:
        self.added += other.added
        self.duplicates += other.duplicates
        self.unusable += other.unusable
        self.evicted += other.evicted
        self.vanished += other.vanished
        self.problems += other.problems

    def to_dict(self) -> dict:
        return asdict(self)


def store_settings(store: RecordStore) -> PrepSettings:
    """The preparation settings a store was created with (defaults for a store made without any)."""
    return PrepSettings.from_dict(store.prep) if store.prep else PrepSettings()


def examine(path: Path, book: LabelBook, settings: PrepSettings, digest: str | None = None) -> NewRecording:
    """Read, judge, prepare and label one recording; a recording that fails carries its reason.

    Raises
    ------
    OSError
        The header vanished or cannot be read at all (nothing to store).
    """
    rid = path.name
    digest = digest or content_hash(path)
    label, source = book.label(rid, path)
    try:
        raw = read_recording(path, rid)
        if label is None and raw.codes:  # a DICOM/aECG/Apple file's own coded statements
            label, source = book.from_codes(raw.codes)
        leads = STANDARD_LEADS if raw.signal.shape[0] == 12 else ("I",)
        quality = assess_quality(raw.signal, raw.fs, raw.units, leads, rid)
        prepared = prepare_recording(raw, settings)
    except RecordError as exc:
        return NewRecording(rid, digest, str(path), None, None, error=exc.reason, label=label, label_source=source)
    except ValueError as exc:  # the gate refuses a signal it cannot judge (too short, too slow a rate)
        reason = str(exc).removeprefix(f"record {rid}: ")
        return NewRecording(rid, digest, str(path), None, None, error=reason, label=label, label_source=source)
    return NewRecording(rid, digest, str(path), quality, prepared, label=label, label_source=source)


def ingest_one(
    store: RecordStore, path: Path, book: LabelBook, settings: PrepSettings
) -> tuple[AddResult | None, NewRecording | None]:
    """Ingest one recording unless it is known; returns the store's answer and what was stored."""
    try:
        digest = content_hash(path)
    except FileNotFoundError:
        return None, None
    known = store.key_of(path.name, digest)
    if known is not None:
        return AddResult("duplicate", known), None
    rec = examine(path, book, settings, digest)
    return store.add(rec), rec


def ingest_paths(
    store: RecordStore,
    paths: Iterable[Path],
    book: LabelBook,
    settings: PrepSettings | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[Path, AddResult | None, NewRecording | None], None] | None = None,
) -> IngestSummary:
    """Ingest recordings one transaction at a time; stops early (between recordings) when ``stop`` is set."""
    settings = settings or store_settings(store)
    summary = IngestSummary()
    for path in paths:
        if stop is not None and stop.is_set():
            break
        result, rec = ingest_one(store, Path(path), book, settings)
        if result is None:
            summary.vanished += 1
        elif result.status == "duplicate":
            summary.duplicates += 1
        else:
            summary.added += 1
            summary.evicted += len(result.evicted)
            if rec is not None and (rec.quality is None or not rec.quality.usable):
                summary.unusable += 1
                summary.problems.append(
                    {"record": rec.record_id, "reason": str(rec.error) if rec.quality is None else rec.quality.reason}
                )
        if progress is not None:
            progress(Path(path), result, rec)
    return summary


def ingest(
    store: RecordStore,
    path: Path,
    book: LabelBook,
    settings: PrepSettings | None = None,
    stop: threading.Event | None = None,
    progress=None,
) -> IngestSummary:
    """Ingest a recording (WFDB record or ECG file of any supported format) or every one under a folder."""
    return ingest_paths(store, find_recordings(Path(path)), book, settings, stop, progress)


def watch(
    store: RecordStore,
    folder: Path,
    book: LabelBook,
    interval: float = 5.0,
    max_polls: int | None = None,
    stop: threading.Event | None = None,
    settings: PrepSettings | None = None,
    on_poll: Callable[[int, IngestSummary], None] | None = None,
) -> IngestSummary:
    """Poll ``folder`` every ``interval`` seconds and ingest recordings that have settled.

    Stops after ``max_polls`` polls, or as soon as ``stop`` is set (the recording being
    stored is finished first: each is one transaction).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"--watch needs a folder; {folder} is not one")
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    stop = stop or threading.Event()
    settings = settings or store_settings(store)
    total = IngestSummary()
    seen: dict[Path, tuple] = {}  # signature at the previous poll of records not yet ingested
    done: dict[Path, tuple] = {}  # signature of records already handled in this watch
    polls = 0
    while not stop.is_set() and (max_polls is None or polls < max_polls):
        polls += 1
        now_ns = time.time_ns()
        ready = []
        for rec in find_recordings(folder):
            sig = file_signature(rec)
            if done.get(rec) == sig:
                continue
            if any(size < 0 for _, size, _ in sig):  # a signal file has not arrived yet
                seen[rec] = sig
                continue
            old_enough = all(now_ns - m >= interval * 1e9 for _, _, m in sig)
            if seen.get(rec) == sig or old_enough:
                ready.append((rec, sig))
            else:
                seen[rec] = sig
        part = ingest_paths(store, [r for r, _ in ready], book, settings, stop)
        for rec, sig in ready:
            done[rec] = sig
            seen.pop(rec, None)
        total.merge(part)
        if on_poll is not None:
            on_poll(polls, part)
        if max_polls is not None and polls >= max_polls:
            break
        stop.wait(interval)
    return total
