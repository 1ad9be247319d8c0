"""``data`` commands shared by the three CLIs: prepare, synth, download, info."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from liteheart_core.cli.console import err, fail, out
from liteheart_core.data.dataset import default_cache_dir

data_app = typer.Typer(help="Prepare, generate and download ECG data.", no_args_is_help=True)


class Kind(str, Enum):
    ptbxl = "ptbxl"
    challenge = "challenge"
    files = "files"
    auto = "auto"


class LongRecords(str, Enum):
    crop = "crop"
    windows = "windows"


class UnknownCodes(str, Enum):
    warn = "warn"
    skip = "skip"


def _progress(label: str, quiet: bool):
    """A rich progress bar on stderr (silent with --json when stderr is not a terminal)."""
    if quiet and not sys.stderr.isatty():
        return None, None
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err)
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def _print_summary(summary: dict) -> None:
    took = "reused cache" if summary["cached"] else f"{summary['seconds']} s"
    out.print(f"[bold]{summary['source']}[/] prepared at {summary['path']} ({took})")
    out.print(
        f"records {summary['records']}, windows {summary['windows']}, skipped {summary['skipped']},"
        f" {summary['fs']} Hz x {summary['length']} samples"
    )
    for task, counts in summary["label_counts"].items():
        if task not in ("superdiagnostic", "challenge2021"):
            continue
        table = Table(title=f"labels: {task}")
        table.add_column("class")
        table.add_column("records", justify="right")
        for name, count in counts.items():
            table.add_row(name, str(count))
        out.print(table)
    if summary.get("formats"):
        out.print("formats: " + ", ".join(f"{k} {v}" for k, v in summary["formats"].items()))
    if summary.get("sources") and summary["source"] == "challenge":
        out.print("sources: " + ", ".join(f"{k} {v}" for k, v in summary["sources"].items()))
    for item in summary["skipped_records"][:20]:
        out.print(f"[yellow]skipped[/] {item['record']}: {item['reason']}")
    if summary["skipped"] > 20:
        out.print(f"... {summary['skipped'] - 20} more in {summary['path']}/report.json")


@data_app.command("prepare")
def prepare_cmd(
    kind: Annotated[
        Kind,
        typer.Argument(help="Layout of the folder: ptbxl, challenge, files (ECG files of any format, mixed), or auto."),
    ],
    path: Annotated[
        Path,
        typer.Argument(
            help="The dataset folder: PTB-XL, PhysioNet Challenge, or ECG files (WFDB, DICOM, HL7 aECG, GE MUSE/Philips XML, EDF, Apple Health CSV; recognised by content)."
        ),
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where prepared arrays go (default: $LITEHEART_CACHE or ~/.cache/liteheart)."),
    ] = None,
    fs: Annotated[int, typer.Option(help="Target sampling rate in Hz.")] = 100,
    window: Annotated[float, typer.Option(help="Window length in seconds.")] = 10.0,
    long_records: Annotated[
        LongRecords, typer.Option(help="Longer records: one centred crop, or consecutive windows.")
    ] = LongRecords.crop,
    min_seconds: Annotated[
        float, typer.Option(help="Records shorter than this are skipped; others are zero-padded.")
    ] = 2.0,
    band: Annotated[str, typer.Option(help="Band-pass 'LOW,HIGH' in Hz, or 'none'.")] = "0.5,40",
    source_rate: Annotated[int, typer.Option(help="PTB-XL files to read: 100 (records100) or 500 (records500).")] = 100,
    regions: Annotated[bool, typer.Option(help="Detect beats and cache P/QRS/T regions.")] = True,
    unknown_codes: Annotated[
        UnknownCodes, typer.Option(help="Challenge codes in no table: warn and keep, or skip the record.")
    ] = UnknownCodes.warn,
    strict: Annotated[bool, typer.Option(help="Fail on the first bad record instead of skipping it.")] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Prepare ECG records once into arrays for training (reused when nothing changed)."""
    from liteheart_core.data.prepare import PreparationError, PrepSettings, prepare
    from liteheart_core.data.ptbxl import LayoutError

    try:
        bp = None if band.strip().lower() == "none" else tuple(float(v) for v in band.split(","))
        if bp is not None and len(bp) != 2:
            raise ValueError(f"--band needs LOW,HIGH, got {band!r}")
        settings = PrepSettings(
            fs=fs,
            window_s=window,
            long_records=long_records.value,
            min_seconds=min_seconds,
            bandpass=bp,
            source_rate=source_rate,
            regions=regions,
            unknown_codes=unknown_codes.value,
        )
    except ValueError as exc:
        fail(str(exc))
    bar, callback = _progress("preparing", as_json)
    try:
        if bar:
            bar.start()
        summary = prepare(
            path,
            out_dir or default_cache_dir(),
            kind=None if kind == Kind.auto else kind.value,
            settings=settings,
            strict=strict,
            workers=workers,
            progress=callback,
        )
    except (LayoutError, PreparationError, ValueError) as exc:
        fail(str(exc))
    finally:
        if bar:
            bar.stop()
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


@data_app.command("synth")
def synth_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the synthetic PTB-XL-layout dataset into.")],
    n: Annotated[int, typer.Option("--n", min=10, help="Number of records.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same records).")] = 0,
    fs: Annotated[int, typer.Option(help="Sampling rate of the written records (100 or 500 Hz).")] = 100,
    sites: Annotated[int, typer.Option(help="Number of simulated hospital sites.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write seeded synthetic 12-lead ECGs (NORM, MI, STTC, CD, HYP) as WFDB records in the PTB-XL layout."""
    from liteheart_core.data.synth import write_synth_ptbxl

    if fs not in (100, 500):
        fail(f"--fs must be 100 or 500, got {fs}")
    summary = write_synth_ptbxl(out_dir, n=n, seed=seed, fs=fs, n_sites=sites)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        out.print(f"wrote {summary['records']} synthetic records to {out_dir}")
        out.print(", ".join(f"{k} {v}" for k, v in summary["label_counts"].items()))


@data_app.command("download")
def download_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset to fetch: ptbxl.")],
    to: Annotated[Path, typer.Option("--to", help="Destination folder (partial downloads resume).")],
    rate: Annotated[str, typer.Option(help="Records to fetch: 100, 500 or all.")] = "100",
    base_url: Annotated[str | None, typer.Option(help="Mirror URL (default: PhysioNet).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel downloads.")] = 4,
) -> None:
    """Download PTB-XL from PhysioNet, verify SHA256SUMS.txt and resume partial files."""
    from liteheart_core.data.download import PTBXL_URL, DownloadError, download_ptbxl

    if dataset != "ptbxl":
        fail(f"unknown dataset {dataset!r}; only 'ptbxl' can be downloaded")
    if rate not in ("100", "500", "all"):
        fail(f"--rate must be 100, 500 or all, got {rate!r}")
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err)
    task = bar.add_task("files", total=None)
    seen: set[str] = set()

    def progress(name: str, done: int, total: int) -> None:
        if done >= total and name not in seen:
            seen.add(name)
            bar.update(task, completed=len(seen), description=f"files ({name})")

    try:
        with bar:
            report = download_ptbxl(
                to,
                base_url=base_url or PTBXL_URL,
                rate=None if rate == "all" else int(rate),
                workers=workers,
                progress=progress,
            )
    except DownloadError as exc:
        fail(str(exc))
    out.print(
        f"{report.files_total} files in {to}: {report.files_downloaded} downloaded, "
        f"{report.files_skipped} already verified, {len(report.resumed)} resumed"
    )


@data_app.command("info")
def info_cmd(
    path: Annotated[Path, typer.Argument(help="A prepared dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show what a prepared dataset holds."""
    from liteheart_core.data.dataset import PreparedData
    from liteheart_core.data.ptbxl import LayoutError

    try:
        data = PreparedData.open(path)
    except LayoutError as exc:
        fail(str(exc))
    summary = {**data.meta, "cached": True, "path": str(path), "seconds": 0}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
