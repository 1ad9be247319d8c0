"""Everything ``liteheart-server start`` checks before a process starts: the run's settings (new, or a resumed
run's from the registry), its data and teacher, ``--host``, ``--tls`` and ``--auth-keys``."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liteheart_core.cli.console import err
from liteheart_core.cli.processes import (
    LOOPBACK,
)
from liteheart_core.cli.tls import (
    CertError,
    ServerTls,
    auth_public_keys,
    check_server_tls,
)


def _check_data(data: str) -> None:
    if data == "synth":
        return
    from liteheart_core.data.prepare import detect_kind
    from liteheart_core.data.ptbxl import LayoutError

    path = Path(data)
    if not path.exists():
        raise ValueError(f"data folder {data} does not exist")
    if not (path / "meta.json").is_file():
        try:
            detect_kind(path)
        except LayoutError as exc:
            raise ValueError(f"data folder {data}: {exc}") from None


def check_host(host: str) -> None:
    """``--host`` must be an IP address this machine holds (a name could resolve anywhere)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise ValueError(f"--host {host!r} is not an IP address (e.g. {LOOPBACK})") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            raise ValueError(f"--host {host} is not an address of this machine: {exc.strerror}") from None


def check_security(tls: Path | None, auth_keys: Path | None, host: str) -> tuple[ServerTls | None, tuple[Path, ...]]:
    """``--tls`` and ``--auth-keys`` checked before anything starts; ValueError (CertError) says what is wrong."""
    if auth_keys is not None and tls is None:
        raise ValueError("--auth-keys needs --tls: Flower authenticates nodes only over TLS")
    if tls is None:
        return None, ()
    server_tls = check_server_tls(tls)
    if host not in server_tls.names:
        raise CertError(
            f"--host {host} is not among the names of the server certificate {server_tls.cert} "
            f"({', '.join(server_tls.names)}): re-issue it with `liteheart-server certs --out {tls} "
            f"--hostname {host} --force`"
        )
    keys = tuple(auth_public_keys(auth_keys)) if auth_keys is not None else ()
    return server_tls, keys


def _absolute(value: str) -> str:
    return value if value in ("", "synth") else str(Path(value).expanduser().resolve())


def _new_config(scenario: Path | None, overrides: dict[str, Any]):
    from liteheart_core.config import WEARABLE_TEACHER_KINDS, FedConfig

    cfg = FedConfig.from_toml(scenario, overrides) if scenario else FedConfig.from_dict(overrides)
    worn = cfg.wearable_teacher  # a checkpoint path, or the kind of teacher the server trains itself
    return FedConfig.from_dict(
        {
            **cfg.to_dict(),
            "data": _absolute(cfg.data),
            "teacher": _absolute(cfg.teacher),
            "wearable-teacher": worn if worn in WEARABLE_TEACHER_KINDS else _absolute(worn),
        }
    )


def _stored_config(registry_url: str, run_id: str, run_dir: Path, db: str | None):
    """The settings a run was started with, from the registry (a resumed run keeps them)."""
    from liteheart_core.config import FedConfig
    from liteheart_core.storage import Registry, RegistryError

    if not db and not (run_dir / "registry.sqlite").is_file():
        raise ValueError(
            f"cannot resume {run_id}: no registry at {run_dir / 'registry.sqlite'} "
            "(pass the --run-dir of the run, or --db)"
        )
    try:
        with Registry(registry_url) as registry:
            run = registry.get_run(run_id)
            last = registry.last_round(run_id)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    if run is None:
        raise ValueError(f"cannot resume {run_id}: no such run in the registry {registry_url}")
    return FedConfig.from_dict(run["config"]["fed"]), run["status"], last


@dataclass(frozen=True)
class Plan:
    """What one ``start`` will submit: the settings, the run id, and how to start it."""

    cfg: Any  # FedConfig
    run_id: str
    resume: bool
    already: int  # rounds recorded before this start
    expected: int  # clients to wait for before submitting (0: let the strategy wait)
    status: str = ""  # the registry's status of a resumed run


def plan_run(
    registry_url: str,
    run_dir: Path,
    db: str | None,
    resume: str | None,
    scenario: Path | None,
    overrides: dict[str, Any],
    clients_expected: int | None,
) -> Plan:
    """Validate everything that can be checked before a process starts; ValueError says what is wrong."""
    if resume is not None:
        cfg, status, already = _stored_config(registry_url, resume, run_dir, db)
        if overrides or scenario:
            names = [f"--{k}" for k in overrides] + (["--scenario"] if scenario else [])
            err.print(f"[yellow]note:[/] a resumed run keeps its stored settings; ignoring {', '.join(names)}")
        plan = Plan(cfg, resume, True, already, clients_expected or 0, status)
    else:
        if "data" not in overrides:
            raise ValueError("--data is required: the server's own data ('synth' or a dataset folder)")
        cfg = _new_config(scenario, overrides)
        expected = clients_expected if clients_expected is not None else cfg.min_clients
        if expected < cfg.min_clients:
            raise ValueError(f"--clients-expected {expected} is below --min-clients {cfg.min_clients}")
        cfg = type(cfg).from_dict({**cfg.to_dict(), "clients": expected})
        plan = Plan(cfg, secrets.token_hex(4), False, 0, expected)
    from liteheart_core.config import WEARABLE_TEACHER_KINDS

    _check_data(plan.cfg.data)
    if plan.cfg.teacher and not Path(plan.cfg.teacher).is_file():
        raise ValueError(f"teacher checkpoint {plan.cfg.teacher} does not exist")
    if (
        plan.cfg.wearable_teacher
        and plan.cfg.wearable_teacher not in WEARABLE_TEACHER_KINDS
        and not Path(plan.cfg.wearable_teacher).is_file()
    ):
        raise ValueError(f"wearable teacher checkpoint {plan.cfg.wearable_teacher} does not exist")
    return plan
