"""LiteHeart ServerApp: reads the run's settings and hands over to ``server.orchestrate``.

Deployment (``flwr run``): the science settings come from the run config (``[tool.flwr.app.config]``
of the app bundle written by ``liteheart-server start``), which every site receives with the
bundle. Where the server's data, teacher, registry and run folder are never goes there: ``start``
writes them to a file of its own (mode 0600) and names it in ``$LITEHEART_SERVER_SETTINGS``,
which the SuperLink hands down to the ServerApp on this machine. Simulation: ``make_server_app``
bakes the settings in, because ``run_simulation`` leaves the run config empty.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from liteheart_core.config import FedConfig, as_bool
from server.orchestrate import ServerOptions, run_federation
from server.settings import OPTION_KEYS, PRIVATE_KEYS, SETTINGS_ENV, server_settings, split_settings

__all__ = ["OPTION_KEYS", "PRIVATE_KEYS", "SETTINGS_ENV", "app", "make_server_app", "options_from_run_config",
           "server_settings", "split_settings"]

def options_from_run_config(run_config: dict) -> tuple[FedConfig, ServerOptions]:
    """A deployed run's settings: deployed nodes read their own data, so the server's data setting stays here."""
    cfg = FedConfig.from_dict({k: v for k, v in run_config.items() if k not in OPTION_KEYS})
    opts = ServerOptions(run_dir=Path(str(run_config.get("run-dir", "runs"))), db_url=str(run_config.get("db-url", "")),
                         run_id=str(run_config.get("run-id", "")), resume=as_bool(run_config.get("resume", False)),
                         name=str(run_config.get("run-name", "")), share_data=False)
    return cfg, opts


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg, opts = options_from_run_config(server_settings(dict(context.run_config), os.environ))
    run_federation(grid, cfg, opts)


def make_server_app(cfg: FedConfig, opts: ServerOptions) -> ServerApp:
    """A ServerApp with the settings baked in (for the Simulation Engine)."""
    sim_app = ServerApp()

    @sim_app.main()
    def sim_main(grid: Grid, context: Context) -> None:
        run_federation(grid, cfg, opts)

    return sim_app
