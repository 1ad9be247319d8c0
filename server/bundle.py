"""What ``liteheart-server start`` writes for Flower: the app bundle every site receives, the settings that
stay on the server, and the ``flwr`` CLI's connection to this SuperLink."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from server.settings import PRIVATE_KEYS
from server.superlink import Deployment


def write_fab(dep: Deployment, run_config: dict[str, Any]) -> Path:
    """The Flower app project ``flwr run`` packs: our installed apps, this run's public settings.

    Only ``pyproject.toml``: the components name the installed ``server``/``client``
    packages, so the FAB carries settings and no code or weights. Every site receives it:
    the server's paths and registry URL are refused here (they go to ``write_server_settings``).
    """
    leaked = sorted(set(run_config) & set(PRIVATE_KEYS))
    if leaked:
        raise ValueError(f"the app bundle goes to every site; keep {', '.join(leaked)} on the server")
    # Flower 1.42 runs SecAgg+ only with a legacy client (client/secagg_app.py); the server side is chosen
    # by server.orchestrate from the same setting
    client_app = "client.secagg_app:app" if run_config.get("secagg") else "client.app:app"
    doc = {
        "project": {
            "name": "liteheart-deployment",
            "version": "0.1.0",
            "license": "Apache-2.0",
            "description": "A LiteHeart run written by `liteheart-server start`.",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "liteheart",
                    "components": {"serverapp": "server.app:app", "clientapp": client_app},
                    "config": run_config,
                }
            }
        },
    }
    dep.fab_dir.mkdir(parents=True, exist_ok=True)
    (dep.fab_dir / "pyproject.toml").write_text(tomli_w.dumps(doc))
    return dep.fab_dir


def write_server_settings(dep: Deployment, private: dict[str, Any]) -> Path:
    """The settings that stay on this machine (paths, registry URL), readable by its owner only."""
    dep.home.mkdir(parents=True, exist_ok=True)
    path = dep.home / f"server-settings-{dep.port}.json"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(private, handle, indent=2)
    os.chmod(tmp, 0o600)  # an existing file keeps its mode through O_CREAT
    os.replace(tmp, path)
    return path


def write_connection(dep: Deployment) -> None:
    """Add this SuperLink to ``$FLWR_HOME/config.toml`` (other ports' connections are kept)."""
    path = dep.home / "config.toml"
    doc: dict[str, Any] = {}
    if path.is_file():
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError:
            doc = {}
    links = doc.setdefault("superlink", {})
    links["default"] = dep.connection
    # with TLS the flwr CLI checks the SuperLink's certificate against the pilot's CA
    security = {"root-certificates": str(dep.tls.ca)} if dep.tls else {"insecure": True}
    links[dep.connection] = {"address": dep.link_address, **security}
    dep.home.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(doc))
