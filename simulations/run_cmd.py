"""``liteheart-sim run``: a federated LiteHeart run on Flower's Simulation Engine."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from liteheart_core.cli.console import err, fail, out
from liteheart_core.cli.summary import finish_summary
from liteheart_core.methods import METHOD_HELP


def flower_env(run_dir: Path) -> None:
    """Keep Flower's state in the run folder, quiet, and never installing dependencies at run time."""
    os.environ.setdefault("FLWR_HOME", str((run_dir / ".flwr").resolve()))
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


# Library messages about how LiteHeart itself calls the library, which a user of `liteheart-sim run` can do
# nothing about: kept off the terminal (each with the reason), every other warning still shows.
UNACTIONABLE = (
    # run_simulation is kept on purpose: README, "Federated simulation" (measured against `flwr run`)
    "DEPRECATED FEATURE: The `run_simulation` function is deprecated",
    # the global student is scored on the server's validation fold; the clients' evaluate round is off by design
    "fraction_evaluate is set to 0.0",
)


class _Unactionable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in UNACTIONABLE)


class _ConsoleHandler(logging.Handler):
    """LiteHeart's log lines through the rich console, so that they appear above the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        err.print(f"{level}{record.getMessage()}", markup=False, highlight=False)


def quiet_flower(verbose: bool) -> None:
    """Flower logs every message at INFO; a user wants our round lines and real warnings."""
    import warnings

    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(f, _Unactionable) for f in flwr_log.filters):
        flwr_log.addFilter(_Unactionable())
    # Ray's notice that a future Ray will stop hiding GPUs from actors that asked for none: that future default
    # is what its text asks us to opt into; LiteHeart keeps today's (a CPU client never sees a GPU)
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
    ours = logging.getLogger("liteheart")
    if not any(isinstance(h, _ConsoleHandler) for h in ours.handlers):
        ours.addHandler(_ConsoleHandler())
    ours.setLevel(logging.INFO)
    ours.propagate = False


def partition_text(rows: list[dict], width: int = 80) -> str:
    """The partition table as plain text no wider than ``width``: per-class columns while they fit."""
    if not rows:
        return "no clients"
    short = {"client": "#", "records": "records", "labelled": "labelled", "patients": "patients", "local val": "val"}
    fixed = [
        c for c in ("client", "name", "kind", "records", "labelled", "patients", "train", "local val") if c in rows[0]
    ]
    classes = [c for c in rows[0] if c not in fixed]
    total = {c: sum(r[c] for r in rows) for c in rows[0] if all(isinstance(r[c], (int, float)) for r in rows)}
    total.update({"client": "", "name": "total", "kind": ""})

    def cell(col: str, row: dict) -> str:
        return str(row.get(col, ""))

    def col_width(col: str) -> int:
        return max(len(short.get(col, col)), *(len(cell(col, r)) for r in [*rows, total]))

    columns = list(fixed)
    for name in classes:  # class counts after the fixed columns, while the line stays within `width`
        if sum(col_width(c) + 2 for c in [*columns, name]) - 2 > width:
            break
        columns.insert(columns.index("train") if "train" in columns else len(columns), name)
    widths = {c: col_width(c) for c in columns}

    def line(row: dict | None) -> str:
        texts = [short.get(c, c) if row is None else cell(c, row) for c in columns]
        return "  ".join(
            t.ljust(widths[c]) if c in ("name", "kind") else t.rjust(widths[c]) for c, t in zip(columns, texts)
        ).rstrip()

    body = [line(None), "-" * len(line(None))] + [line(r) for r in rows] + ["-" * len(line(None)), line(total)]
    left_out = [c for c in classes if c not in columns]
    if left_out:
        body.append(f"(records per class of {len(left_out)} more classes: `liteheart-server runs show RUN_ID`)")
    return "\n".join(body)


def print_partitions(cfg) -> list[dict]:
    """The table of what each simulated client holds, printed before round 1 (and returned for the registry)."""
    from liteheart_core.cli.progress import prepare_run_data
    from liteheart_core.federated import partition_rows

    prepare_run_data(cfg.data, cfg.synth_records, cfg.seed)  # with a bar; open_data then finds the cache
    table = partition_rows(cfg)
    shown = table if len(table) <= 40 else table[:20]  # 1,000 rows help nobody; the registry keeps them all
    err.print(partition_text(shown, width=min(err.width, 80) if err.is_terminal else 80), markup=False, highlight=False)
    if len(table) > len(shown):
        err.print(f"... and {len(table) - len(shown)} more clients (all {len(table)} are in the registry)")
    return table


def backend_config(
    clients: int,
    ray_address: str = "",
    client_cpus: float = 1.0,
    client_gpus: float = 0.0,
    temp_dir: Path | None = None,
    log_to_driver: bool = False,
) -> dict:
    """Flower's Ray backend settings: a local Ray sized to this machine, or an existing cluster at ``ray_address``.

    Each simulated client runs in a Ray actor holding ``client_cpus`` CPUs and ``client_gpus`` of a GPU
    (fractions share a GPU); Flower starts as many actors as the cluster's nodes hold. The actors' own
    output (Flower's "Manually terminating ClientAppActor" at the end) reaches this terminal only with
    ``log_to_driver`` (``--verbose``): a client's error reaches the server as its reply, and the registry
    keeps it with the reason.
    """
    resources = {"num_cpus": client_cpus, "num_gpus": client_gpus}
    if ray_address:  # the cluster's own resources decide; Ray refuses num_cpus when it joins a cluster
        return {
            "client_resources": resources,
            "init_args": {"address": ray_address, "include_dashboard": False, "log_to_driver": log_to_driver},
        }
    cpus = max(1, min(os.cpu_count() or 1, math.ceil(clients * client_cpus)))
    return {
        "client_resources": resources,
        "init_args": {
            "num_cpus": cpus,
            "include_dashboard": False,
            "log_to_driver": log_to_driver,
            **({"_temp_dir": str(temp_dir)} if temp_dir else {}),
        },
    }


def simulate(
    cfg,
    opts,
    verbose: bool = False,
    client_app=None,
    ray_address: str = "",
    client_cpus: float = 1.0,
    client_gpus: float = 0.0,
) -> dict:
    """Run the Simulation Engine with ``cfg.clients`` virtual SuperNodes; returns the server's result dict.

    ``client_app`` defaults to the run's own: the Message API client, or the legacy SecAgg+ client when
    ``cfg.secagg`` (Flower 1.42 has SecAgg+ only on the legacy stack). ``ray_address``: attach to that
    running Ray cluster (``ray start --head``) instead of starting one on this machine.
    """
    from flwr.simulation import run_simulation

    from server.app import make_server_app

    if client_app is None:
        if cfg.secagg:
            from client.secagg_app import app as client_app
        else:
            from client.app import app as client_app

    flower_env(opts.run_dir)
    ray_tmp = Path(tempfile.mkdtemp(prefix="lh-ray-"))  # short path: Ray's socket names must stay < 108 bytes
    try:
        run_simulation(
            server_app=make_server_app(cfg, opts),
            client_app=client_app,
            num_supernodes=cfg.clients,
            backend_config=backend_config(
                cfg.clients, ray_address, client_cpus, client_gpus, ray_tmp, log_to_driver=verbose
            ),
            verbose_logging=verbose,
        )
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()  # for a cluster: this driver leaves it, the cluster keeps running
        except ImportError:
            pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return opts.result


def run_cmd(
    scenario: Annotated[Path | None, typer.Option(help="A scenario TOML file; the options below override it.")] = None,
    clients: Annotated[int | None, typer.Option(help="Number of simulated clients.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    partition: Annotated[str | None, typer.Option(help="iid, site or dirichlet.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Dirichlet concentration (smaller: more label skew).")] = None,
    labelled_fraction: Annotated[
        float | None, typer.Option(help="Fraction of each client's records with labels.")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="'synth' (embedded synthetic ECGs) or a PTB-XL/Challenge folder.")
    ] = None,
    method: Annotated[str | None, typer.Option(help=METHOD_HELP)] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(help="fedavg, fedprox, fedmedian, trimmed-mean or krum (robust ones: see the README)."),
    ] = None,
    proximal_mu: Annotated[float | None, typer.Option(help="FedProx mu.")] = None,
    wearables: Annotated[
        int | None,
        typer.Option(
            help="How many of the clients are lead-I wearables (no 12-lead teacher; --wearable-teacher gives them a lead-I one)."
        ),
    ] = None,
    wearable_weight: Annotated[
        float | None, typer.Option(help="A wearable's aggregation weight per example, relative to a 12-lead site's.")
    ] = None,
    wearable_teacher: Annotated[
        Path | None,
        typer.Option(
            help="A teacher that answers from lead I, shipped once to every wearable, which distils from it: a checkpoint (`liteheart-server teacher assistant`, or `teacher train --lead-dropout`), or 'assistant' / 'lead-dropout' to train one on the server's data (cached)."
        ),
    ] = None,
    wearable_weighting: Annotated[
        str | None,
        typer.Option(
            help="examples (FedAvg x --wearable-weight) or validated (the wearables' share that scores best on the server's validation fold, each round)."
        ),
    ] = None,
    secagg: Annotated[
        bool | None,
        typer.Option(
            "--secagg/--no-secagg",
            help="SecAgg+ secure aggregation: the server sees only the sum of the updates (fedavg/fedprox; secagg-* keys in a scenario).",
        ),
    ] = None,
    dp: Annotated[
        str | None,
        typer.Option(
            help="Differential privacy: none, client, server (client-level) or dp-sgd (record-level); dp-* keys in a scenario."
        ),
    ] = None,
    dp_epsilon: Annotated[
        float | None, typer.Option(help="Target epsilon after all rounds (the noise is derived from it).")
    ] = None,
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint (default: trained on the data and cached).")
    ] = None,
    server_folds: Annotated[
        str | None,
        typer.Option(
            help="Training folds that are the server's own archive (e.g. '1,2'): no client holds them, the teacher learns from them alone."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="Registry URL (default: sqlite file in the run folder).")
    ] = None,
    run_dir: Annotated[Path, typer.Option(help="Folder for the registry, checkpoints and Flower state.")] = Path(
        "runs"
    ),
    resume: Annotated[str | None, typer.Option(help="Continue this run id from its last completed round.")] = None,
    ray_address: Annotated[
        str,
        typer.Option(
            help="Attach to this running Ray cluster (e.g. 10.0.0.5:6379, from `ray start --head`) instead of starting Ray here."
        ),
    ] = "",
    client_cpus: Annotated[
        float, typer.Option(min=0.01, help="CPUs each simulated client holds while it trains (Ray actor resources).")
    ] = 1.0,
    client_gpus: Annotated[
        float, typer.Option(min=0.0, help="GPUs each simulated client holds (a fraction shares one GPU; 0: CPU only).")
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a final JSON summary.")] = False,
    verbose: Annotated[bool, typer.Option(help="Flower's verbose logging.")] = False,
) -> None:
    """Run federated LiteHeart in simulation. With no options: the embedded synthetic data, 4 clients, 8 rounds."""
    from liteheart_core.cli.progress import RunProgress
    from liteheart_core.config import FedConfig, checked_run_config
    from server.orchestrate import ServerOptions

    overrides = {
        k: v
        for k, v in {
            "clients": clients,
            "rounds": rounds,
            "partition": partition,
            "alpha": alpha,
            "labelled-fraction": labelled_fraction,
            "data": data,
            "method": method,
            "local-epochs": local_epochs,
            "strategy": strategy,
            "proximal-mu": proximal_mu,
            "teacher": str(teacher) if teacher else None,
            "seed": seed,
            "device": device,
            "wearables": wearables,
            "wearable-weight": wearable_weight,
            "secagg": secagg,
            "dp": dp,
            "wearable-teacher": str(wearable_teacher) if wearable_teacher else None,
            "wearable-weighting": wearable_weighting,
            "dp-epsilon": dp_epsilon,
            "server-folds": server_folds,
        }.items()
        if v is not None
    }
    try:
        cfg = checked_run_config(FedConfig.from_toml(scenario, overrides).to_dict() if scenario else overrides)
    except ValueError as exc:
        fail(str(exc))
    quiet_flower(verbose)
    progress = RunProgress(cfg.rounds)

    def on_round(number: int, entry: dict) -> None:
        line = (
            f"round {number:3d}/{cfg.rounds}: global macro F1 {entry['macro_f1']:.3f}  AUC "
            f"{entry['macro_auc']:.3f}  loss {entry['loss']:.3f}  clients {entry['clients']}"
            f"  failures {entry['failures']}  {entry['seconds']} s"
            + (f"  epsilon {entry['epsilon']:.3g}" if "epsilon" in entry else "")
        )
        progress.round_done(number, entry, line)

    opts = ServerOptions(
        run_dir=run_dir,
        db_url=db or "",
        run_id=resume or "",
        resume=resume is not None,
        on_round=on_round,
        on_teacher_epoch=progress.teacher_epoch,
        on_evaluate=progress.evaluating,
    )
    if not as_json or err.is_terminal:
        err.print(
            f"[bold]LiteHeart simulation[/]: data {cfg.data}, {cfg.clients} clients, {cfg.rounds} rounds, "
            f"{cfg.partition} partition, {cfg.labelled_fraction:.0%} labelled, method {cfg.method}"
            + (f", Ray cluster {ray_address}" if ray_address else "")
        )
    try:
        if not opts.resume:
            opts.partition_table = print_partitions(cfg)
        with progress:
            result = simulate(
                cfg, opts, verbose, ray_address=ray_address, client_cpus=client_cpus, client_gpus=client_gpus
            )
    except ValueError as exc:
        fail(str(exc))
    summary = finish_summary(opts.run_dir, opts.db_url, result)
    if summary.get("status") != "completed":
        fail(f"run {summary.get('run_id')} ended {summary.get('status')}: {summary.get('error')}", code=1)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_closing(summary, opts)


def print_closing(summary: dict, opts) -> None:
    """What a user needs after a run: its id, its scores, where everything is, and what to do next."""
    from liteheart_core.storage import Registry

    final, run_id = summary["final"], summary["run_id"]
    db = "the --db URL given" if opts.db_url else Registry.default_url(opts.run_dir)  # a URL may hold a password
    db_opt = ("" if opts.run_dir == Path("runs") else f" --run-dir {opts.run_dir}") + (
        " --db URL" if opts.db_url else ""
    )
    out.print(
        f"run {run_id} completed: global student macro F1 {final.get('macro_f1', float('nan')):.3f}, "
        f"AUC {final.get('macro_auc', float('nan')):.3f} after round {final.get('round')} "
        "(validation fold)",
        highlight=False,
        soft_wrap=True,
    )
    if "epsilon" in final:  # differential privacy: what the whole run spent
        out.print(
            f"privacy spent: epsilon {final['epsilon']:.3g} at delta {final['delta']:.3g} "
            f"({summary['dp']}, after {final['round']} rounds)",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"  registry     {db}", highlight=False, markup=False, soft_wrap=True)
    out.print(
        f"  checkpoints  {opts.run_dir / run_id / 'checkpoints'} (one per round)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    out.print(f"  student      {summary['global_student']}", highlight=False, markup=False, soft_wrap=True)
    out.print("next:", highlight=False)
    out.print(
        f"  liteheart-server runs report {run_id} --out report-{run_id}{db_opt}   # figures, per-class table",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"  liteheart-server export {run_id} --format onnx --out export-{run_id}{db_opt}   # for a wearable",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"  liteheart-sim evaluate --model {summary['global_student']} --data DATA --split test",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
