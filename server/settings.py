"""Which of a deployed run's settings travel in the app bundle, and which stay on the server.

The app bundle (``fab/pyproject.toml`` written by ``liteheart-server start``) is what every
site downloads with the run; the ServerApp reads the rest from a file on the coordinator named
by ``$LITEHEART_SERVER_SETTINGS``. Kept free of torch and Flower so the CLI starts quickly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from liteheart_core.config import SERVER_PATHS

# keys of the run config that are about where state lives, not about the science
OPTION_KEYS = ("run-dir", "db-url", "run-id", "resume", "run-name")
# what stays on the server: paths of this machine and the registry URL (a PostgreSQL URL holds a password)
PRIVATE_KEYS = (*SERVER_PATHS, "run-dir", "db-url", "resume", "run-name")
SETTINGS_ENV = "LITEHEART_SERVER_SETTINGS"


def split_settings(settings: Mapping[str, object]) -> tuple[dict, dict]:
    """(what the app bundle may carry to every site, what stays in the server's file); both keep ``run-id``."""
    public = {k: v for k, v in settings.items() if k not in PRIVATE_KEYS}
    private = {k: v for k, v in settings.items() if k in PRIVATE_KEYS or k == "run-id"}
    return public, private


def server_settings(run_config: Mapping[str, object], environ: Mapping[str, str]) -> dict:
    """The bundle's run config joined with the server's own file.

    ValueError when a bundle written by ``start`` comes without that file, or with another run's.
    """
    path = environ.get(SETTINGS_ENV)
    if not path:
        if "run-id" in run_config:  # written by `start`, which always names the file: never fall back to defaults
            raise ValueError(
                f"${SETTINGS_ENV} is not set: this ServerApp was not started by `liteheart-server "
                "start`, so it does not know where the server's data, teacher and registry are"
            )
        return dict(run_config)
    try:
        private = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the server's settings {path} (${SETTINGS_ENV}): {exc}") from None
    if not isinstance(private, dict):
        raise ValueError(f"the server's settings {path} (${SETTINGS_ENV}) are not a JSON object")
    if str(private.get("run-id")) != str(run_config.get("run-id")):
        raise ValueError(
            f"the server's settings {path} are for run {private.get('run-id')}, the submitted app is "
            f"run {run_config.get('run-id')}: refusing to mix them"
        )
    unexpected = sorted(set(private) - set(PRIVATE_KEYS) - {"run-id"})
    if unexpected:
        raise ValueError(f"the server's settings {path} hold keys that are not its to set: {', '.join(unexpected)}")
    return {**run_config, **private}
