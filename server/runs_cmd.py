"""``liteheart-server runs list|show|export``: read the run registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from liteheart_core.cli.console import err, fail, out
from liteheart_core.cli.progress import step_progress

runs_app = typer.Typer(help="Read the run registry (runs, rounds, client reports, checkpoints).", no_args_is_help=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="Registry URL (default: sqlite file in --run-dir).")]
RunDirOpt = Annotated[Path, typer.Option(help="Run folder holding registry.sqlite.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _registry(db: str | None, run_dir: Path):
    from liteheart_core.storage import Registry, RegistryError

    url = db or Registry.default_url(run_dir)
    if not db and not (run_dir / "registry.sqlite").is_file():
        fail(f"no registry at {run_dir / 'registry.sqlite'}: pass --run-dir of a run folder or --db URL")
    try:
        return Registry(url)
    except RegistryError as exc:
        fail(str(exc))


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))


@runs_app.command("list")
def list_cmd(db: DbOpt = None, run_dir: RunDirOpt = Path("runs"), as_json: JsonOpt = False) -> None:
    """Every run, newest first."""
    registry = _registry(db, run_dir)
    try:
        runs = registry.list_runs()
    finally:
        registry.close()
    if as_json:
        print(json.dumps(runs, indent=2, default=str))
        return
    table = Table(title="LiteHeart runs")
    for col in ("id", "name", "status", "created_at", "rounds", "macro_f1"):
        table.add_column(col)
    for r in runs:
        table.add_row(*[_fmt(r.get(c)) for c in ("id", "name", "status", "created_at", "rounds", "macro_f1")])
    out.print(table)


@runs_app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    db: DbOpt = None,
    run_dir: RunDirOpt = Path("runs"),
    as_json: JsonOpt = False,
) -> None:
    """One run: config, every round's metrics and the client reports (failures with reasons)."""
    from liteheart_core.storage import RegistryError

    registry = _registry(db, run_dir)
    try:
        shown = registry.export_run(run_id)
    except RegistryError as exc:
        fail(str(exc))
    finally:
        registry.close()
    if as_json:
        print(json.dumps(shown, indent=2, default=str))
        return
    run = shown["run"]
    out.print(
        f"[bold]run {run['id']}[/] {run['status']}  created {run['created_at']}  data {run['data_fingerprint'][:12]}"
    )
    if run.get("error"):
        out.print(f"[red]error:[/] {run['error']}")
    table = Table(title="rounds")
    for col in ("round", "macro F1", "macro AUC", "loss", "clients", "failures", "seconds"):
        table.add_column(col, justify="right")
    for r in shown["rounds"]:
        table.add_row(
            str(r["number"]),
            _fmt(r["central_metrics"].get("macro_f1")),
            _fmt(r["central_metrics"].get("macro_auc")),
            _fmt(r["train_metrics"].get("total")),
            str(len(r["participants"])),
            str(r["n_failures"]),
            _fmt(r["duration_s"]),
        )
    out.print(table)
    spent = [r for r in shown["rounds"] if "epsilon" in r["train_metrics"]]
    if spent:  # differential privacy: epsilon after each round is in its train metrics
        last = spent[-1]["train_metrics"]
        out.print(
            f"privacy spent (dp = {(run.get('config') or {}).get('fed', {}).get('dp', '?')}): epsilon "
            f"{last['epsilon']:.3g} at delta {last.get('delta', float('nan')):.3g} after round "
            f"{spent[-1]['number']}; per round: {', '.join(_fmt(r['train_metrics']['epsilon']) for r in spent)}"
        )
    for r in shown["rounds"]:
        for rep in r["client_reports"]:
            if rep["status"] != "ok":
                out.print(f"round {r['number']}: node {rep['node_id']} failed: {rep['reason']}")


@runs_app.command("export")
def export_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    to: Annotated[Path | None, typer.Option("--out", help="Write the JSON here (default: stdout).")] = None,
    db: DbOpt = None,
    run_dir: RunDirOpt = Path("runs"),
    as_json: JsonOpt = True,
) -> None:
    """Everything about a run as one JSON document."""
    from liteheart_core.storage import RegistryError

    registry = _registry(db, run_dir)
    try:
        doc = registry.export_run(run_id)
    except RegistryError as exc:
        fail(str(exc))
    finally:
        registry.close()
    text = json.dumps(doc, indent=2, default=str)
    if to:
        to.write_text(text)
        out.print(f"wrote {to}")
    else:
        print(text)


@runs_app.command("report")
def report_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    to: Annotated[Path, typer.Option("--out", help="Folder for report.html, report.md and figures/.")],
    db: DbOpt = None,
    run_dir: RunDirOpt = Path("runs"),
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the 95% intervals.")] = 1000,
) -> None:
    """A run report (HTML + Markdown + PNGs): config, partition, rounds, per-class scores and calibration."""
    from server.artifacts import ArtifactError, load_run
    from server.report import build_report

    try:
        shown = load_run(run_id, run_dir, db)
        with step_progress("preparing the run's data") as progress:
            made = build_report(shown, run_dir, to, n_bootstrap=bootstrap, progress=progress)
    except ArtifactError as exc:
        fail(str(exc))
    for warning in made["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}")
    out.print(f"wrote {made['html']} and {made['markdown']} ({len(made['figures'])} figures)")
