"""``liteheart-client ingest`` and ``liteheart-client store info``: feed and inspect the record store.

Also runnable on its own: ``python -m client.ingest_cmd ingest PATH ...``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from client.ingest import IngestSummary
from client.ingest import ingest as ingest_path
from client.ingest import watch as watch_folder
from client.store import RecordStore, StoreError, default_store_url
from liteheart_core.data.incoming import LabelBook
from liteheart_core.data.prepare import PrepSettings

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

store_app = typer.Typer(help="The on-device record store.", no_args_is_help=True)

STORE_HELP = (
    "Store URL (any SQLAlchemy URL) or SQLite file path; default $LITEHEART_STORE or ~/.liteheart/store.sqlite."
)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, so the loop ends after the recording in flight."""
    stop = threading.Event()
    previous = {}

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: leave at once (the transaction in flight rolls back)
            raise KeyboardInterrupt
        stop.set()
        # plain stderr, not rich: the signal may land while rich is half-way through a lazy import, and a
        # handler that re-enters it fails there (seen as a flaky SIGTERM test)
        sys.stderr.write(f"{signal.Signals(signum).name}: stopping after the recording in flight\n")
        sys.stderr.flush()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _open(store: str | None, task: str | None = None, create: bool = True) -> RecordStore:
    try:
        return RecordStore(store, task=task, prep=asdict(PrepSettings()) if create else None)
    except StoreError as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers calm


def _print_summary(summary: IngestSummary, stopped: bool) -> None:
    out.print(
        f"added {summary.added}, already stored {summary.duplicates}, unusable {summary.unusable}, "
        f"evicted {summary.evicted}"
        + (f", vanished {summary.vanished}" if summary.vanished else "")
        + (" [yellow](stopped early)[/]" if stopped else "")
    )
    for p in summary.problems[:20]:
        out.print(f"[yellow]unusable[/] {p['record']}: {p['reason']}")
    if len(summary.problems) > 20:
        out.print(f"... {len(summary.problems) - 20} more (liteheart-client store info)")


def ingest(
    path: Annotated[
        Path,
        typer.Argument(
            help="A recording (WFDB record, DICOM, HL7 aECG, MUSE/Philips XML, EDF, Apple Health CSV) or a folder of them, formats mixed."
        ),
    ],
    store: Annotated[str | None, typer.Option("--store", help=STORE_HELP)] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="CSV: 'record' plus 'labels' (e.g. MI|STTC) or one 0/1 column per class."),
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Label task of a new store (default superdiagnostic).")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep polling the folder and ingest new recordings as they settle.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.01, help="Seconds between polls with --watch.")] = 5.0,
    max_polls: Annotated[
        int | None, typer.Option("--max-polls", min=1, help="Stop --watch after this many polls.")
    ] = None,
    max_records: Annotated[
        int | None,
        typer.Option("--max-records", min=1, help="Retention: keep at most this many recordings' signals."),
    ] = None,
    max_age_days: Annotated[
        float | None, typer.Option("--max-age-days", min=0.0, help="Retention: evict recordings older than this.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Add ECG recordings (WFDB, DICOM, aECG, MUSE/Philips XML, EDF, Apple Health CSV) to the device's record store (quality-gated, prepared once, idempotent)."""
    if not path.exists():
        _fail(f"{path} does not exist")
    if watch and not path.is_dir():
        _fail(f"--watch needs a folder; {path} is not one")
    rs = _open(store, task)
    try:
        try:
            book = LabelBook.create(rs.task, rs.classes, labels)
        except ValueError as exc:
            _fail(str(exc))
        if max_records is not None or max_age_days is not None:
            age = timedelta(days=max_age_days) if max_age_days else None
            evicted = rs.set_retention(max_records, age)
            if evicted and not json_out:
                out.print(f"retention: evicted {len(evicted)} recordings")
        with _stop_on_signals() as stop:
            try:
                if watch:

                    def polled(n: int, part: IngestSummary) -> None:
                        if part.added and not json_out:
                            out.print(f"poll {n}: added {part.added} (unusable {part.unusable})")

                    summary = watch_folder(
                        rs, path, book, interval=interval, max_polls=max_polls, stop=stop, on_poll=polled
                    )
                else:
                    summary = ingest_path(rs, path, book, stop=stop)
            except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
                _fail(str(exc))
            stopped = stop.is_set()
        if json_out:
            out.print_json(json.dumps({**summary.to_dict(), "stopped": stopped, "store": rs.info()}))
        else:
            _print_summary(summary, stopped)
    except StoreError as exc:
        _fail(str(exc))
    finally:
        rs.close()


@store_app.command("info")
def info(
    store: Annotated[str | None, typer.Option("--store", help=STORE_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """What the record store holds: counts, quality flags, labels, usage, size, retention."""
    url = store if store is not None else default_store_url()
    if "://" not in url and not Path(url).expanduser().is_file():
        _fail(f"no store at {url}")
    rs = _open(store, create=False)
    try:
        summary = rs.info()
    except StoreError as exc:
        _fail(str(exc))
    finally:
        rs.close()
    if json_out:
        out.print_json(json.dumps(summary))
        return
    out.print(f"[bold]{summary['store']}[/] task {summary['task']}")
    table = Table(show_header=False)
    for key in (
        "recordings",
        "held",
        "usable",
        "unusable_held",
        "unreadable",
        "evicted",
        "labelled_held",
        "never_used",
        "uses",
        "signal_bytes",
        "first_arrival",
        "last_arrival",
    ):
        table.add_row(key.replace("_", " "), str(summary[key]))
    r = summary["retention"]
    table.add_row(
        "retention",
        f"max records {r['max_records'] or '-'}, max age "
        f"{(str(round(r['max_age_s'] / 86400, 2)) + ' days') if r['max_age_s'] else '-'}",
    )
    out.print(table)
    if summary["flags"]:
        out.print("flags: " + ", ".join(f"{k} {v}" for k, v in summary["flags"].items()))
    out.print("labels: " + ", ".join(f"{k} {v}" for k, v in summary["label_counts"].items()))


app = typer.Typer(
    help="Record-store commands (also available as liteheart-client ingest / store).", no_args_is_help=True
)
app.command("ingest")(ingest)
app.add_typer(store_app, name="store")

if __name__ == "__main__":
    app()
