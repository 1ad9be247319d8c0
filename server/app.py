"""LiteHeart ServerApp: reads the run config and hands over to ``server.orchestrate``.

Deployment (``flwr run``): settings come from the run config (``[tool.flwr.app.config]``
of the FAB written by ``liteheart-server start``). Simulation: ``make_server_app``
bakes them in, because ``run_simulation`` leaves the run config empty.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from liteheart_core.config import FedConfig
from server.orchestrate import ServerOptions, run_federation

# keys of the run config that are about where state lives, not about the science
OPTION_KEYS = ("run-dir", "db-url", "run-id", "resume", "run-name")


def options_from_run_config(run_config: dict) -> tuple[FedConfig, ServerOptions]:
    cfg = FedConfig.from_dict({k: v for k, v in run_config.items() if k not in OPTION_KEYS})
    opts = ServerOptions(run_dir=Path(str(run_config.get("run-dir", "runs"))), db_url=str(run_config.get("db-url", "")),
                         run_id=str(run_config.get("run-id", "")), resume=bool(run_config.get("resume", False)),
                         name=str(run_config.get("run-name", "")))
    return cfg, opts


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg, opts = options_from_run_config(dict(context.run_config))
    run_federation(grid, cfg, opts)


def make_server_app(cfg: FedConfig, opts: ServerOptions) -> ServerApp:
    """A ServerApp with the settings baked in (for the Simulation Engine)."""
    sim_app = ServerApp()

    @sim_app.main()
    def sim_main(grid: Grid, context: Context) -> None:
        run_federation(grid, cfg, opts)

    return sim_app
