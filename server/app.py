"""LiteHeart ServerApp: reads the run's settings and hands over to ``server.orchestrate``.

Deployment (``flwr run``): the science settings come from the run config (``[tool.flwr.app.config]``
of the app bundle written by ``liteheart-server start``), which every site receives with the
bundle. Where the server's data, teacher, registry and run folder are never goes there: ``start``
writes them to a file of its own (mode 0600) and names it in ``$LITEHEART_SERVER_SETTINGS``,
which the SuperLink hands down to the ServerApp on this machine. Simulation: ``make_server_app``
bakes the settings in, because ``run_simulation`` leaves the run config empty.
The checkout itself (``flwr run .``): the run config is ``[tool.flwr.app.config]`` of the
repository's ``pyproject.toml`` with ``--run-config`` overrides, checked as ``liteheart-sim run``
checks its options; the simulated nodes share the server's dataset, as under ``liteheart-sim run``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from liteheart_core.config import FedConfig, as_bool, checked_run_config
from liteheart_core.federated import partition_rows
from server.orchestrate import ServerOptions, run_federation
from server.project import PROJECT_OPTIONS
from server.settings import OPTION_KEYS, PRIVATE_KEYS, SETTINGS_ENV, server_settings, split_settings

__all__ = [
    "OPTION_KEYS",
    "PRIVATE_KEYS",
    "SETTINGS_ENV",
    "app",
    "make_server_app",
    "options_from_project_config",
    "options_from_run_config",
    "server_settings",
    "simulated_nodes",
    "split_settings",
]


def options_from_run_config(run_config: dict) -> tuple[FedConfig, ServerOptions]:
    """A deployed run's settings: deployed nodes read their own data, so the server's data setting stays here."""
    cfg = FedConfig.from_dict({k: v for k, v in run_config.items() if k not in OPTION_KEYS})
    opts = ServerOptions(
        run_dir=Path(str(run_config.get("run-dir", "runs"))),
        db_url=str(run_config.get("db-url", "")),
        run_id=str(run_config.get("run-id", "")),
        resume=as_bool(run_config.get("resume", False)),
        name=str(run_config.get("run-name", "")),
        share_data=False,
    )
    return cfg, opts


def options_from_project_config(run_config: dict) -> tuple[FedConfig, ServerOptions]:
    """``flwr run .`` in the checkout: the project's table (and overrides), with ``liteheart-sim run``'s checks."""
    cfg = checked_run_config({k: v for k, v in run_config.items() if k not in PROJECT_OPTIONS})
    resume = str(run_config.get("resume", ""))
    opts = ServerOptions(
        run_dir=Path(str(run_config.get("run-dir", "runs"))),
        db_url=str(run_config.get("db-url", "")),
        run_id=resume,
        resume=bool(resume),
        share_data=True,
    )
    return cfg, opts


def simulated_nodes(grid: Grid, patience: float = 30.0) -> int | None:
    """How many virtual SuperNodes a simulation runs (None when this is no simulation).

    The simulation runtime registers its nodes all at once, on a thread started next to this ServerApp's.
    """
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if not isinstance(grid, InMemoryGrid):
        return None
    deadline = time.monotonic() + patience
    while not grid.get_node_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    return len(list(grid.get_node_ids()))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    if SETTINGS_ENV in os.environ or "run-id" in run_config:  # a run written by `liteheart-server start`
        cfg, opts = options_from_run_config(server_settings(run_config, os.environ))
    else:
        cfg, opts = options_from_project_config(run_config)
        nodes = simulated_nodes(grid)
        if nodes is not None and nodes != cfg.clients:  # the partitions are cut by the simulated nodes' count
            raise ValueError(
                f"clients = {cfg.clients} but the simulation runs {nodes} SuperNodes: run "
                f"`flwr run . --run-config 'clients={nodes}'` or `flwr run . --federation-config "
                f"'num-supernodes={cfg.clients}'`"
            )
        if not opts.resume:
            opts.partition_table = partition_rows(cfg)
    run_federation(grid, cfg, opts)


def make_server_app(cfg: FedConfig, opts: ServerOptions) -> ServerApp:
    """A ServerApp with the settings baked in (for the Simulation Engine)."""
    sim_app = ServerApp()

    @sim_app.main()
    def sim_main(grid: Grid, context: Context) -> None:
        run_federation(grid, cfg, opts)

    return sim_app
