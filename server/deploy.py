"""``liteheart-server start``: a real deployment on this machine, owned from start to end.

It starts a SuperLink (Flower 1.42 serves the Fleet, Control and Runtime APIs over HTTP on
ONE port). A run that faces a network (``--tls``, or a ``--host`` that is not loopback)
gets the SuperLink on 127.0.0.1 only and nginx on the public address, forwarding the Fleet
API and ``/health`` alone (``server/front.py``): the Control API — list, stop and submit
runs, register node keys — is then reachable from this machine only, and the coordinator's
own ``flwr`` calls go to the loopback address. It writes a Flower app project whose run config carries this
run's settings (``<run-dir>/fab/``), submits it with ``flwr run``, prints the rounds as
the ServerApp records them in the registry, and stops everything it started when the
run ends, on Ctrl-C or on SIGTERM. The SuperLink keeps its state in
``<run-dir>/.flwr/superlink-<port>.db``, so SuperNodes reconnect to a restarted
SuperLink on the same port without being restarted (``--resume`` after a crash).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from liteheart_core.cli.console import err, fail, out
from liteheart_core.cli.processes import (
    LOOPBACK,
    child_env,
    port_free,
    sigterm_as_interrupt,
    stop_tree,
    tail,
)
from liteheart_core.cli.summary import finish_summary
from liteheart_core.methods import METHOD_HELP
from server import front as front_proxy
from server.bundle import write_connection, write_fab, write_server_settings
from server.plan import Plan, check_host, check_security, plan_run
from server.settings import SETTINGS_ENV, split_settings
from server.superlink import (
    DeployError,
    Deployment,
    check_alive,
    end_leftovers,
    flwr_json,
    link_port_for,
    register_node_keys,
    save_serverapp_log,
    start_superlink,
    stop_stale_runs,
    submit,
    wait_for_nodes,
    wait_healthy,
)

DEFAULT_PORT = 9092


STATUS_EVERY_S = 10.0  # each `flwr list` is a Python start (~1 s of CPU): the registry is polled instead


def print_round(entry: dict, total: int) -> None:
    """One line per round, from the registry's record of it."""
    central, train = entry["central_metrics"], entry["train_metrics"]
    failed = [r for r in entry["client_reports"] if r["status"] != "ok"]
    line = (
        f"round {entry['number']:3d}/{total}: global macro F1 {central.get('macro_f1', float('nan')):.3f}  "
        f"AUC {central.get('macro_auc', float('nan')):.3f}  loss {train.get('total', float('nan')):.3f}  "
        f"clients {len(entry['participants'])}  failures {len(failed)}  {entry['duration_s']:.1f} s"
    )
    err.print(line)
    for report in failed:
        err.print(f"    [yellow]node {report['node_id']}[/]: {report['reason']}")


def print_new_rounds(registry: Any, run_id: str, printed: int, total: int) -> int:
    """Print the rounds after ``printed`` that the registry holds; returns the last one printed."""
    if registry.last_round(run_id) > printed:
        for entry in registry.show_run(run_id)["rounds"]:
            if entry["number"] > printed:
                print_round(entry, total)
                printed = entry["number"]
    return printed


def follow(
    dep: Deployment,
    env: dict[str, str],
    proc: subprocess.Popen,
    flwr_run: str,
    registry_url: str,
    run_id: str,
    total: int,
    already: int,
) -> dict[str, Any]:
    """Print each new round from the registry until Flower reports the run finished; returns Flower's row.

    The registry is cheap to read and is polled often; Flower's status costs a ``flwr``
    process, so it is asked rarely, and every second once the registry says the run ended.
    """
    from liteheart_core.storage import Registry, RegistryError
    from liteheart_core.storage.models import TERMINAL_STATUSES

    printed, failures, seen_running = already, 0, False
    next_status = time.monotonic() + STATUS_EVERY_S
    registry = Registry(registry_url)
    try:
        while True:
            check_alive(dep, proc)
            try:
                run = registry.get_run(run_id)
                printed = print_new_rounds(registry, run_id, printed, total)
            except RegistryError:
                run = None  # busy: the next poll will tell
            status = run["status"] if run else None
            seen_running = seen_running or status == "running"
            if seen_running and status in TERMINAL_STATUSES:
                next_status = min(next_status, time.monotonic())
            if time.monotonic() >= next_status:
                try:
                    runs = flwr_json(dep, env, "list", dep.connection, "--run-id", flwr_run).get("runs", [])
                    failures = 0
                except DeployError:
                    failures += 1
                    if failures >= 5:
                        raise
                    runs = []
                if runs and str(runs[0].get("status", "")).startswith("finished"):
                    with contextlib.suppress(RegistryError):  # the last round may have landed during `flwr list`
                        print_new_rounds(registry, run_id, printed, total)
                    return runs[0]
                ended = seen_running and status in TERMINAL_STATUSES
                next_status = time.monotonic() + (1.0 if ended else STATUS_EVERY_S)
            time.sleep(0.5)
    finally:
        registry.close()


def deploy(dep: Deployment, plan: Plan, env: dict[str, str], registry_url: str) -> tuple[dict, str, Path | None]:
    """SuperLink up, stale runs stopped, clients awaited, run submitted and followed; the SuperLink tree stopped.

    Returns Flower's final row of the run, its Flower run id and the saved ServerApp log.
    """
    superlink: subprocess.Popen | None = None
    front: subprocess.Popen | None = None
    had_state = dep.database.is_file()
    try:
        end_leftovers(dep)
        superlink = start_superlink(dep, env)
        wait_healthy(dep, superlink)
        if dep.fronted:
            front = front_proxy.start(dep.front, env)
            wait_healthy(dep, front, address=dep.address, what="nginx (the front)")
            err.print(
                f"facing the sites: nginx on {dep.address} forwards the Fleet API and /health only "
                f"(log {dep.front.access_log}); the SuperLink and its Control API listen on "
                f"{dep.link_address} only"
            )
        if had_state:
            for stale in stop_stale_runs(dep, env):
                err.print(f"stopped Flower run {stale}, left unfinished by an earlier SuperLink")
        if dep.auth_keys:
            register_node_keys(dep, env)  # before any node is awaited: until then every node is refused
        if plan.expected:
            wait_for_nodes(dep, env, superlink, plan.expected)
        flwr_run = submit(dep, env)
        security = " --tls ca.crt" + (" --key NAME.key" if dep.auth_keys else "") if dep.tls else ""
        err.print(
            f"submitted: Flower run {flwr_run} (LiteHeart run {plan.run_id}); clients join with "
            f"`liteheart-client start --server {dep.address}{security} --data DIR`"
        )
        row = follow(dep, env, superlink, flwr_run, registry_url, plan.run_id, plan.cfg.rounds, plan.already)
        return row, flwr_run, save_serverapp_log(dep, env, flwr_run, dep.run_dir / plan.run_id / "serverapp.log")
    finally:
        if front is not None:
            front_proxy.stop(front)
        if superlink is not None:
            stop_tree(superlink)


def start_cmd(
    data: Annotated[
        str | None,
        typer.Option(
            help="The server's own data: 'synth' or a PTB-XL/Challenge/prepared folder (validation fold 9; trains the teacher when no --teacher)."
        ),
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    min_clients: Annotated[
        int | None, typer.Option(help="Clients that must be connected before a round starts.")
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            help="Port the sites connect to on --host (with --tls or a non-loopback --host: nginx, passing the Fleet API only; the SuperLink then listens on loopback)."
        ),
    ] = DEFAULT_PORT,
    host: Annotated[
        str,
        typer.Option(
            help="Address the sites connect to: an IP address of this machine (default loopback; clients elsewhere need a reachable one)."
        ),
    ] = LOOPBACK,
    db: Annotated[
        str | None, typer.Option("--db", help="Registry URL (default: sqlite file in the run folder).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue this run id after its last completed round (fresh SuperLink).")
    ] = None,
    run_dir: Annotated[
        Path, typer.Option(help="Folder for the registry, checkpoints, the app project and Flower state.")
    ] = Path("runs"),
    clients_expected: Annotated[
        int | None,
        typer.Option(help="Submit the run once this many clients are connected (default: --min-clients)."),
    ] = None,
    method: Annotated[str | None, typer.Option(help=METHOD_HELP)] = None,
    labelled_fraction: Annotated[
        float | None, typer.Option(help="Fraction of each client's records with labels.")
    ] = None,
    local_epochs: Annotated[int | None, typer.Option(help="Local epochs per round.")] = None,
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint (default: trained on --data and cached).")
    ] = None,
    wearable_teacher: Annotated[
        Path | None,
        typer.Option(
            help="A teacher that answers from lead I, shipped once to every wearable node: a checkpoint (`liteheart-server teacher assistant`, or `teacher train --lead-dropout`), or 'assistant' / 'lead-dropout' to train one on --data (cached)."
        ),
    ] = None,
    scenario: Annotated[Path | None, typer.Option(help="A scenario TOML file; the options above override it.")] = None,
    round_timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for the clients' replies in a round.")
    ] = None,
    tls: Annotated[
        Path | None,
        typer.Option(
            "--tls",
            help="Serve over TLS with ca.crt, server.crt and server.key of this folder (made by `liteheart-server certs`).",
        ),
    ] = None,
    auth_keys: Annotated[
        Path | None,
        typer.Option(
            "--auth-keys", help="Admit only nodes whose OpenSSH public key (*.pub) is in this folder (needs --tls)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a final JSON summary.")] = False,
) -> None:
    """Run a federation for real: a SuperLink on --host, the run submitted with `flwr run`, followed to its end."""
    from liteheart_core.storage import Registry, RegistryError

    run_dir = run_dir.expanduser().resolve()
    registry_url = db or Registry.default_url(run_dir)
    overrides = {
        k: v
        for k, v in {
            "data": data,
            "rounds": rounds,
            "min-clients": min_clients,
            "method": method,
            "labelled-fraction": labelled_fraction,
            "local-epochs": local_epochs,
            "teacher": str(teacher) if teacher else None,
            "wearable-teacher": str(wearable_teacher) if wearable_teacher else None,
            "round-timeout": round_timeout,
        }.items()
        if v is not None
    }
    try:
        plan = plan_run(registry_url, run_dir, db, resume, scenario, overrides, clients_expected)
    except ValueError as exc:
        fail(str(exc))
    if plan.resume and plan.status == "completed" and plan.already >= plan.cfg.rounds:
        out.print(f"run {plan.run_id} is already completed ({plan.already} rounds)")
        return
    if not 1 <= port <= 65535:
        fail(f"--port must be in 1..65535, got {port}")
    try:
        check_host(host)
        server_tls, keys = check_security(tls, auth_keys, host)
    except ValueError as exc:
        fail(str(exc))
    if not port_free(port, host):
        fail(f"port {port} is in use; choose another with --port")
    link_port = 0
    if server_tls is not None or not ipaddress.ip_address(host).is_loopback:
        try:
            front_proxy.nginx_exe()
        except front_proxy.FrontError as exc:
            fail(str(exc))
        link_port = link_port_for(run_dir, port)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        Registry(registry_url).close()  # the tables exist before two processes could race to create them
    except (OSError, RegistryError) as exc:
        fail(str(exc))

    dep = Deployment(run_dir=run_dir, port=port, host=host, tls=server_tls, auth_keys=keys, link_port=link_port)
    options = {
        "run-dir": str(run_dir),
        "db-url": db or "",
        "run-id": plan.run_id,
        "resume": plan.resume,
        "run-name": "",
    }
    public, private = split_settings({**plan.cfg.to_dict(), **options})
    write_fab(dep, public)
    settings_file = write_server_settings(dep, private)
    write_connection(dep)
    if not as_json or err.is_terminal:
        what = f"resuming run {plan.run_id} after round {plan.already}" if plan.resume else f"run {plan.run_id}"
        err.print(
            f"[bold]LiteHeart deployment[/]: {what}; data {plan.cfg.data}, {plan.cfg.rounds} rounds, "
            f"min {plan.cfg.min_clients} clients, method {plan.cfg.method}; SuperLink on {dep.address} "
            f"(log {dep.log_path})"
        )
    if server_tls is None:
        err.print(
            "[yellow]warning:[/] plaintext SuperLink that admits any node: for trials on this machine, not "
            "for real networks (see --tls and --auth-keys)"
        )
    elif not keys:
        err.print("[yellow]warning:[/] TLS without --auth-keys: any node that trusts the CA may join")
    with sigterm_as_interrupt():
        try:
            row, flwr_run, log_path = deploy(
                dep, plan, child_env(dep.home, {SETTINGS_ENV: str(settings_file)}), registry_url
            )
        except (DeployError, FileNotFoundError) as exc:
            fail(str(exc), code=1)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/] the SuperLink and the ServerApp were stopped")
            raise typer.Exit(130) from None
    finish(dep, plan.run_id, db, row, flwr_run, log_path, as_json)


def finish(
    dep: Deployment, run_id: str, db: str | None, row: dict, flwr_run: str, log_path: Path | None, as_json: bool
) -> None:
    """Exit 0 with a summary when Flower and the registry both say completed; a clear error otherwise."""
    try:
        summary = finish_summary(dep.run_dir, db or "", {"run_id": run_id})
    except Exception as exc:  # noqa: BLE001 - the registry may not hold the run when the ServerApp died early
        summary = {"run_id": run_id, "status": "unknown", "error": str(exc), "rounds": [], "final": {}}
    summary.update(
        {
            "flower_run_id": flwr_run,
            "flower_status": row.get("status"),
            "serverapp_log": str(log_path) if log_path else None,
        }
    )
    if row.get("status") != "finished:completed" or summary.get("status") != "completed":
        reason = summary.get("error") or row.get("status-details") or "no reason recorded"
        if log_path is not None:
            err.print(f"[dim]last lines of the ServerApp log {log_path}:[/]\n{tail(log_path)}")
        fail(f"run {run_id} ended {row.get('status')} (registry: {summary.get('status')}): {reason}", code=1)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    final = summary["final"]
    out.print(
        f"run {run_id} completed: global student macro F1 {final.get('macro_f1', float('nan')):.3f}, "
        f"AUC {final.get('macro_auc', float('nan')):.3f}; checkpoint {summary['global_student']}"
    )
