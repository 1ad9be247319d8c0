"""``liteheart-sim run``: a federated LiteHeart run on Flower's Simulation Engine."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

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


def quiet_flower(verbose: bool) -> None:
    """Flower logs every message at INFO; a user wants our round lines and real warnings."""
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.WARNING)
    ours = logging.getLogger("liteheart")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False


def print_partitions(cfg) -> list[dict]:
    """The table of what each simulated client holds, printed before round 1 (and returned for the registry)."""
    from liteheart_core.cli.progress import prepare_run_data
    from liteheart_core.data.partition import partition, partition_table
    from liteheart_core.federated import LOCAL_VAL_FOLD, _labelled, client_folds, open_data
    from simulations.partition_table import render_partition_table

    prepare_run_data(cfg.data, cfg.synth_records, cfg.seed)  # with a bar; open_data then finds the cache
    data = open_data(cfg.data, cfg.synth_records, cfg.seed)
    classes, y = data.labels(cfg.task)
    rows = data.rows(cfg.task, folds=client_folds(cfg.server_fold_tuple))
    parts = partition(data.index, y, rows, cfg.clients, cfg.partition, alpha=cfg.alpha,
                      labelled_fraction=cfg.labelled_fraction, seed=cfg.seed)
    table = partition_table(parts, y, classes)
    for i, (row, part) in enumerate(zip(table, parts)):  # what the client trains on vs. validates on locally
        train = data.index.loc[part.rows, "fold"].to_numpy() != LOCAL_VAL_FOLD
        labelled = part.labelled[train]
        if cfg.wearables:  # the last `wearables` partitions are lead-I wearables (client/local.py)
            row["kind"] = "wearable" if i >= cfg.clients - cfg.wearables else "paired"
            if row["kind"] == "wearable" and cfg.wearable_labelled_fraction >= 0:
                labelled = _labelled(data, y, part.rows[train], cfg.wearable_labelled_fraction, cfg.seed + i)
        row["labelled"] = int(labelled.sum())
        row["train"], row["local val"] = int(train.sum()), int((~train).sum())
    shown = table if len(table) <= 40 else table[:20]  # 1,000 rows help nobody; the registry keeps them all
    err.print(render_partition_table(shown))
    if len(table) > len(shown):
        err.print(f"... and {len(table) - len(shown)} more clients (all {len(table)} are in the registry)")
    return table


def simulate(cfg, opts, verbose: bool = False, client_app=None) -> dict:
    """Run the Simulation Engine with ``cfg.clients`` virtual SuperNodes; returns the server's result dict.

    ``client_app`` defaults to the run's own: the Message API client, or the legacy SecAgg+ client when
    ``cfg.secagg`` (Flower 1.42 has SecAgg+ only on the legacy stack).
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
        run_simulation(server_app=make_server_app(cfg, opts), client_app=client_app, num_supernodes=cfg.clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": min(os.cpu_count() or 1, cfg.clients),
                                                     "_temp_dir": str(ray_tmp), "include_dashboard": False}},
                       verbose_logging=verbose)
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return opts.result


def run_cmd(
    scenario: Annotated[Optional[Path], typer.Option(help="A scenario TOML file; the options below override it.")] = None,
    clients: Annotated[Optional[int], typer.Option(help="Number of simulated clients.")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Federated rounds.")] = None,
    partition: Annotated[Optional[str], typer.Option(help="iid, site or dirichlet.")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Dirichlet concentration (smaller: more label skew).")] = None,
    labelled_fraction: Annotated[Optional[float], typer.Option(help="Fraction of each client's records with labels.")] = None,
    data: Annotated[Optional[str], typer.Option(help="'synth' (embedded synthetic ECGs) or a PTB-XL/Challenge folder.")] = None,
    method: Annotated[Optional[str], typer.Option(help=METHOD_HELP)] = None,
    local_epochs: Annotated[Optional[int], typer.Option(help="Local epochs per round.")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="fedavg, fedprox, fedmedian, trimmed-mean or krum (robust ones: see the README).")] = None,
    proximal_mu: Annotated[Optional[float], typer.Option(help="FedProx mu.")] = None,
    wearables: Annotated[Optional[int], typer.Option(help="How many of the clients are lead-I wearables (no 12-lead teacher; --wearable-teacher gives them a lead-I one).")] = None,
    wearable_weight: Annotated[Optional[float], typer.Option(help="A wearable's aggregation weight per example, relative to a 12-lead site's.")] = None,
    wearable_teacher: Annotated[Optional[Path], typer.Option(help="A teacher that answers from lead I, shipped once to every wearable, which distils from it: a checkpoint (`liteheart-server teacher assistant`, or `teacher train --lead-dropout`), or 'assistant' / 'lead-dropout' to train one on the server's data (cached).")] = None,
    wearable_weighting: Annotated[Optional[str], typer.Option(help="examples (FedAvg x --wearable-weight) or validated (the wearables' share that scores best on the server's validation fold, each round).")] = None,
    secagg: Annotated[Optional[bool], typer.Option("--secagg/--no-secagg", help="SecAgg+ secure aggregation: the server sees only the sum of the updates (fedavg/fedprox; secagg-* keys in a scenario).")] = None,
    dp: Annotated[Optional[str], typer.Option(help="Differential privacy: none, client, server (client-level) or dp-sgd (record-level); dp-* keys in a scenario.")] = None,
    dp_epsilon: Annotated[Optional[float], typer.Option(help="Target epsilon after all rounds (the noise is derived from it).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(help="Teacher checkpoint (default: trained on the data and cached).")] = None,
    server_folds: Annotated[Optional[str], typer.Option(help="Training folds that are the server's own archive (e.g. '1,2'): no client holds them, the teacher learns from them alone.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Registry URL (default: sqlite file in the run folder).")] = None,
    run_dir: Annotated[Path, typer.Option(help="Folder for the registry, checkpoints and Flower state.")] = Path("runs"),
    resume: Annotated[Optional[str], typer.Option(help="Continue this run id from its last completed round.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a final JSON summary.")] = False,
    verbose: Annotated[bool, typer.Option(help="Flower's verbose logging.")] = False,
) -> None:
    """Run federated LiteHeart in simulation. With no options: the embedded synthetic data, 4 clients, 8 rounds."""
    from liteheart_core.config import WEARABLE_TEACHER_KINDS, FedConfig
    from server.orchestrate import ServerOptions

    overrides = {k: v for k, v in {"clients": clients, "rounds": rounds, "partition": partition, "alpha": alpha,
                                    "labelled-fraction": labelled_fraction, "data": data, "method": method,
                                    "local-epochs": local_epochs, "strategy": strategy, "proximal-mu": proximal_mu,
                                    "teacher": str(teacher) if teacher else None, "seed": seed,
                                    "device": device, "wearables": wearables,
                                    "wearable-weight": wearable_weight, "secagg": secagg, "dp": dp,
                                    "wearable-teacher": str(wearable_teacher) if wearable_teacher else None,
                                    "wearable-weighting": wearable_weighting,
                                    "dp-epsilon": dp_epsilon, "server-folds": server_folds}.items() if v is not None}
    try:
        cfg = FedConfig.from_toml(scenario, overrides) if scenario else FedConfig.from_dict(overrides)
        if cfg.data != "synth" and not Path(cfg.data).exists():
            raise ValueError(f"data folder {cfg.data} does not exist")
        if cfg.teacher and not Path(cfg.teacher).is_file():
            raise ValueError(f"teacher checkpoint {cfg.teacher} does not exist")
        if cfg.wearable_teacher and cfg.wearable_teacher not in WEARABLE_TEACHER_KINDS and \
                not Path(cfg.wearable_teacher).is_file():
            raise ValueError(f"wearable teacher checkpoint {cfg.wearable_teacher} does not exist")
        cfg = FedConfig.from_dict({**cfg.to_dict(), "min-clients": min(cfg.min_clients, cfg.clients)})
    except ValueError as exc:
        fail(str(exc))
    quiet_flower(verbose)

    def on_round(number: int, entry: dict) -> None:
        err.print(f"round {number:3d}/{cfg.rounds}: global macro F1 {entry['macro_f1']:.3f}  AUC "
                  f"{entry['macro_auc']:.3f}  loss {entry['loss']:.3f}  clients {entry['clients']}"
                  f"  failures {entry['failures']}  {entry['seconds']} s"
                  + (f"  epsilon {entry['epsilon']:.3g}" if "epsilon" in entry else ""))

    opts = ServerOptions(run_dir=run_dir, db_url=db or "", run_id=resume or "", resume=resume is not None,
                         on_round=on_round)
    if not as_json or err.is_terminal:
        err.print(f"[bold]LiteHeart simulation[/]: data {cfg.data}, {cfg.clients} clients, {cfg.rounds} rounds, "
                  f"{cfg.partition} partition, {cfg.labelled_fraction:.0%} labelled, method {cfg.method}")
    try:
        if not opts.resume:
            opts.partition_table = print_partitions(cfg)
        result = simulate(cfg, opts, verbose)
    except ValueError as exc:
        fail(str(exc))
    summary = finish_summary(opts.run_dir, opts.db_url, result)
    if summary.get("status") != "completed":
        fail(f"run {summary.get('run_id')} ended {summary.get('status')}: {summary.get('error')}", code=1)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        final = summary["final"]
        out.print(f"run {summary['run_id']} completed: global student macro F1 {final.get('macro_f1', float('nan')):.3f},"
                  f" AUC {final.get('macro_auc', float('nan')):.3f}; checkpoint {summary['global_student']}")
        if "epsilon" in final:  # differential privacy: what the whole run spent
            out.print(f"privacy spent: epsilon {final['epsilon']:.3g} at delta {final['delta']:.3g} "
                      f"({summary['dp']}, after {final['round']} rounds)")
