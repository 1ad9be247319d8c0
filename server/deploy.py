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
import os
import secrets
import socket
import ssl
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import tomli_w
import typer

from server import front as front_proxy
from server.settings import PRIVATE_KEYS, SETTINGS_ENV, split_settings
from server.certs import CertError, ServerTls, auth_public_keys, check_server_tls, fingerprint, load_public_key
from simulations.data_cmd import err, fail, out
from simulations.processes import (
    LOOPBACK,
    end_processes,
    find_processes,
    flower_env,
    flower_exe,
    free_port,
    port_free,
    sigterm_as_interrupt,
    stop_tree,
    tail,
)

DEFAULT_PORT = 9092
HEALTH_TIMEOUT_S = 60.0
STATUS_EVERY_S = 10.0  # each `flwr list` is a Python start (~1 s of CPU): the registry is polled instead
FLWR_CALL_TIMEOUT_S = 60.0
LEFTOVER_PATIENCE_S = 3.0  # orphans of a dead SuperLink can only exit; Flower's own monitors take 5-30 s


class DeployError(RuntimeError):
    """The deployment cannot go on; the message says why and where the log is."""


@dataclass(frozen=True)
class Deployment:
    """Where one SuperLink of a run folder keeps its state, and how the Flower CLI reaches it."""

    run_dir: Path  # absolute
    port: int
    host: str = LOOPBACK  # the SuperLink's bind address (a test host's own address in tests/faults)
    tls: ServerTls | None = None  # None: plaintext (loopback trials only)
    auth_keys: tuple[Path, ...] = ()  # node public keys to register; non-empty turns node authentication on
    link_port: int = 0  # >0: the SuperLink listens on 127.0.0.1:link_port behind nginx on host:port

    @property
    def home(self) -> Path:
        return self.run_dir / ".flwr"

    @property
    def address(self) -> str:
        """Where the sites connect (nginx's address when fronted)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def fronted(self) -> bool:
        return self.link_port > 0

    @property
    def link_host(self) -> str:
        return LOOPBACK if self.fronted else self.host

    @property
    def link_address(self) -> str:
        """Where the SuperLink itself listens: what this machine's ``flwr`` calls and the SuperExec use."""
        return f"{LOOPBACK}:{self.link_port}" if self.fronted else self.address

    @property
    def front(self) -> front_proxy.Front:
        tls = (self.tls.ca, self.tls.cert, self.tls.key) if self.tls else None
        return front_proxy.Front(self.home / f"front-{self.port}", self.host, self.port, self.link_port, tls)

    @property
    def link_record(self) -> Path:
        """The loopback port the last SuperLink of this run folder and public port used (for its leftovers)."""
        return self.home / f"link-{self.port}.json"

    @property
    def connection(self) -> str:
        return f"liteheart-{self.port}"

    @property
    def database(self) -> Path:
        return self.home / f"superlink-{self.port}.db"

    @property
    def log_path(self) -> Path:
        return self.home / f"superlink-{self.port}.log"

    @property
    def fab_dir(self) -> Path:
        return self.run_dir / "fab"

    @property
    def registered_keys(self) -> Path:
        """Which node key got which node id here, so that a key taken out of --auth-keys is unregistered."""
        return self.home / f"node-keys-{self.port}.json"


# --- the Flower app project and the connection -------------------------------------------------


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
        "project": {"name": "liteheart-deployment", "version": "0.1.0", "license": "Apache-2.0",
                    "description": "A LiteHeart run written by `liteheart-server start`.", "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": "liteheart",
                                  "components": {"serverapp": "server.app:app", "clientapp": client_app},
                                  "config": run_config}}},
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


# --- the SuperLink and the Flower CLI -----------------------------------------------------------


def end_leftovers(dep: Deployment, patience: float = LEFTOVER_PATIENCE_S) -> None:
    """Stop the SuperExec and ServerApp left by an earlier SuperLink on this port that was killed.

    Flower's parent monitors end them, but only after 5-30 s (more on a busy machine), and
    until then the crashed run's ServerApp could still write to the registry.
    """
    addresses = {dep.link_address}
    with contextlib.suppress(OSError, ValueError, KeyError):
        addresses.add(f"{LOOPBACK}:{int(json.loads(dep.link_record.read_text())['link_port'])}")
    left = sorted({p for address in addresses for p in find_processes(("flower-superexec", "flwr-serverapp"), address)})
    if left:
        err.print(f"stopping {len(left)} Flower process(es) left by an earlier SuperLink on {dep.address} "
                  f"(pids {', '.join(str(pid) for pid, _ in left)})")
        end_processes(left, patience)


def start_superlink(dep: Deployment, env: dict[str, str]) -> subprocess.Popen:
    """``flower-superlink`` on ``dep.link_host`` (loopback when fronted), in our process group, logging to the run folder."""
    dep.home.mkdir(parents=True, exist_ok=True)
    if dep.fronted:
        dep.link_record.write_text(json.dumps({"link_port": dep.link_port}))
    log = dep.log_path.open("ab")
    try:
        return subprocess.Popen(
            [flower_exe("flower-superlink"), *superlink_security(dep), "--disable-runtime-dependency-installation",
             "--host", dep.link_host, "--port", str(dep.link_port or dep.port), "--database", str(dep.database)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=dep.run_dir)
    finally:
        log.close()


def superlink_security(dep: Deployment) -> list[str]:
    """The SuperLink's TLS and node-authentication flags (Flower allows authentication only with TLS)."""
    if dep.tls is None:
        return ["--insecure"]
    flags = ["--ssl-ca-certfile", str(dep.tls.ca), "--ssl-certfile", str(dep.tls.cert),
             "--ssl-keyfile", str(dep.tls.key)]
    return flags + (["--enable-supernode-auth"] if dep.auth_keys else [])


def wait_healthy(dep: Deployment, proc: subprocess.Popen, timeout: float = HEALTH_TIMEOUT_S,
                 address: str | None = None, what: str = "the SuperLink") -> None:
    """Until ``GET /health`` on ``address`` (the SuperLink's) answers 200 (from ours, not whoever else holds the port)."""
    address = address or dep.link_address
    log_path = dep.log_path if what == "the SuperLink" else dep.front.error_log
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never via a proxy
    if dep.tls is not None:  # and with TLS, the pilot's CA vouches for the SuperLink
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(dep.tls.ca))))
    opener = urllib.request.build_opener(*handlers)
    scheme = "https" if dep.tls is not None else "http"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(f"{what} exited at start (code {proc.returncode}); its log "
                              f"{log_path}:\n{tail(log_path)}")
        try:
            with opener.open(f"{scheme}://{address}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise DeployError(f"{what} did not become healthy within {timeout:.0f} s; its log {log_path}")


def flwr_json(dep: Deployment, env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run one ``flwr ... --format json`` command against this SuperLink and return its JSON."""
    cmd = [flower_exe("flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=dep.run_dir,
                              timeout=FLWR_CALL_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise DeployError(f"`{' '.join(cmd)}` did not answer within {FLWR_CALL_TIMEOUT_S:.0f} s") from None
    text = done.stdout.strip()
    start = text.find("{")
    try:
        result = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        result = {}
    if done.returncode != 0 or not result.get("success", False):
        reason = result.get("error-message") or (done.stderr.strip() or text or f"exit code {done.returncode}")
        raise DeployError(f"`{' '.join(cmd)}` failed: {' '.join(str(reason).split())}")
    return result


def stop_stale_runs(dep: Deployment, env: dict[str, str]) -> list[str]:
    """Stop runs a previous SuperLink on this database left unfinished (a crash): nodes then ignore them."""
    stale = [r["run-id"] for r in flwr_json(dep, env, "list", dep.connection).get("runs", [])
             if not str(r.get("status", "")).startswith("finished")]
    for run in stale:
        try:
            flwr_json(dep, env, "stop", run, dep.connection)
        except DeployError as exc:
            err.print(f"[yellow]warning:[/] could not stop stale Flower run {run}: {exc}")
    return stale


def register_node_keys(dep: Deployment, env: dict[str, str]) -> None:
    """Register every key of ``--auth-keys`` with the SuperLink; unregister the ones taken out since last time.

    Flower's CLI lists node ids but not their keys, so the id each key got is kept in
    ``registered_keys``. A key already registered (a restart on the same database) is fine.
    """
    try:
        known: dict[str, dict[str, Any]] = json.loads(dep.registered_keys.read_text())
    except (OSError, ValueError):
        known = {}
    current = {fingerprint(load_public_key(path)): path for path in dep.auth_keys}
    for key_print in [k for k in known if k not in current]:
        entry = known.pop(key_print)
        try:
            flwr_json(dep, env, "supernode", "unregister", str(entry["node_id"]), dep.connection)
            err.print(f"unregistered node {entry['node_id']} ({entry['name']}, {key_print}): "
                      "its key is no longer in --auth-keys")
        except DeployError as exc:
            err.print(f"[yellow]warning:[/] could not unregister node {entry['node_id']} ({entry['name']}): {exc}")
    registered, already = [], []
    for key_print, path in current.items():
        try:
            result = flwr_json(dep, env, "supernode", "register", str(path), dep.connection, "--name", path.stem)
        except DeployError as exc:
            if "already in use" not in str(exc):
                raise DeployError(f"could not register node key {path}: {exc}") from None
            already.append(f"{path.stem} ({key_print})")
            continue
        known[key_print] = {"node_id": str(result.get("node-id")), "name": path.stem, "path": str(path)}
        registered.append(f"{path.stem} ({key_print}) as node {result.get('node-id')}")
    dep.home.mkdir(parents=True, exist_ok=True)
    dep.registered_keys.write_text(json.dumps(known, indent=2))
    for line in registered:
        err.print(f"registered node key {line}")
    if already:
        err.print(f"already registered: {', '.join(already)}")
    err.print(f"node authentication on: {len(current)} key(s) from {dep.auth_keys[0].parent} may join; any other "
              "node is refused")


def online_nodes(dep: Deployment, env: dict[str, str]) -> int:
    nodes = flwr_json(dep, env, "supernode", "list", dep.connection).get("nodes", [])
    return sum(str(n.get("status")) == "online" for n in nodes)


def wait_for_nodes(dep: Deployment, env: dict[str, str], proc: subprocess.Popen, expected: int) -> None:
    """Submit only when ``expected`` SuperNodes are online, so that all of them take part in round 1."""
    seen = -1
    while True:
        _check_alive(dep, proc)
        count = online_nodes(dep, env)
        if count != seen:
            err.print(f"waiting for clients: {count}/{expected} connected to {dep.address}")
            seen = count
        if count >= expected:
            return
        time.sleep(2.0)


def submit(dep: Deployment, env: dict[str, str]) -> str:
    """``flwr run <fab> <connection>``; returns Flower's run id."""
    result = flwr_json(dep, env, "run", str(dep.fab_dir), dep.connection)
    run = result.get("run-id")
    if not run:
        raise DeployError(f"flwr run returned no run id: {result}")
    return str(run)


def _check_alive(dep: Deployment, proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        raise DeployError(f"the SuperLink exited unexpectedly (code {proc.returncode}); its log "
                          f"{dep.log_path}:\n{tail(dep.log_path)}")


# --- following the run --------------------------------------------------------------------------


def print_round(entry: dict, total: int) -> None:
    """One line per round, from the registry's record of it."""
    central, train = entry["central_metrics"], entry["train_metrics"]
    failed = [r for r in entry["client_reports"] if r["status"] != "ok"]
    line = (f"round {entry['number']:3d}/{total}: global macro F1 {central.get('macro_f1', float('nan')):.3f}  "
            f"AUC {central.get('macro_auc', float('nan')):.3f}  loss {train.get('total', float('nan')):.3f}  "
            f"clients {len(entry['participants'])}  failures {len(failed)}  {entry['duration_s']:.1f} s")
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


def follow(dep: Deployment, env: dict[str, str], proc: subprocess.Popen, flwr_run: str, registry_url: str,
           run_id: str, total: int, already: int) -> dict[str, Any]:
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
            _check_alive(dep, proc)
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


def save_serverapp_log(dep: Deployment, env: dict[str, str], flwr_run: str, path: Path) -> Path | None:
    """The ServerApp's log as the SuperLink kept it (``flwr log --show``), into the run folder."""
    try:
        done = subprocess.run([flower_exe("flwr"), "log", flwr_run, dep.connection, "--show"], capture_output=True,
                              text=True, env=env, cwd=dep.run_dir, timeout=FLWR_CALL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(done.stdout + done.stderr)
    return path


# --- the command --------------------------------------------------------------------------------


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


def check_security(tls: Optional[Path], auth_keys: Optional[Path],
                   host: str) -> tuple[ServerTls | None, tuple[Path, ...]]:
    """``--tls`` and ``--auth-keys`` checked before anything starts; ValueError (CertError) says what is wrong."""
    if auth_keys is not None and tls is None:
        raise ValueError("--auth-keys needs --tls: Flower authenticates nodes only over TLS")
    if tls is None:
        return None, ()
    server_tls = check_server_tls(tls)
    if host not in server_tls.names:
        raise CertError(f"--host {host} is not among the names of the server certificate {server_tls.cert} "
                        f"({', '.join(server_tls.names)}): re-issue it with `liteheart-server certs --out {tls} "
                        f"--hostname {host} --force`")
    keys = tuple(auth_public_keys(auth_keys)) if auth_keys is not None else ()
    return server_tls, keys


def _absolute(value: str) -> str:
    return value if value in ("", "synth") else str(Path(value).expanduser().resolve())


def _new_config(scenario: Optional[Path], overrides: dict[str, Any]):
    from liteheart_core.config import WEARABLE_TEACHER_KINDS, FedConfig

    cfg = FedConfig.from_toml(scenario, overrides) if scenario else FedConfig.from_dict(overrides)
    return FedConfig.from_dict({**cfg.to_dict(), "data": _absolute(cfg.data), "teacher": _absolute(cfg.teacher),
                                "wearable-teacher": cfg.wearable_teacher if cfg.wearable_teacher in WEARABLE_TEACHER_KINDS
                                else _absolute(cfg.wearable_teacher)})


def _stored_config(registry_url: str, run_id: str, run_dir: Path, db: Optional[str]):
    """The settings a run was started with, from the registry (a resumed run keeps them)."""
    from liteheart_core.config import FedConfig
    from liteheart_core.storage import Registry, RegistryError

    if not db and not (run_dir / "registry.sqlite").is_file():
        raise ValueError(f"cannot resume {run_id}: no registry at {run_dir / 'registry.sqlite'} "
                         "(pass the --run-dir of the run, or --db)")
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


def plan_run(registry_url: str, run_dir: Path, db: Optional[str], resume: Optional[str],
             scenario: Optional[Path], overrides: dict[str, Any], clients_expected: Optional[int]) -> Plan:
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
    if plan.cfg.wearable_teacher and plan.cfg.wearable_teacher not in WEARABLE_TEACHER_KINDS and \
            not Path(plan.cfg.wearable_teacher).is_file():
        raise ValueError(f"wearable teacher checkpoint {plan.cfg.wearable_teacher} does not exist")
    return plan


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
            err.print(f"facing the sites: nginx on {dep.address} forwards the Fleet API and /health only "
                      f"(log {dep.front.access_log}); the SuperLink and its Control API listen on "
                      f"{dep.link_address} only")
        if had_state:
            for stale in stop_stale_runs(dep, env):
                err.print(f"stopped Flower run {stale}, left unfinished by an earlier SuperLink")
        if dep.auth_keys:
            register_node_keys(dep, env)  # before any node is awaited: until then every node is refused
        if plan.expected:
            wait_for_nodes(dep, env, superlink, plan.expected)
        flwr_run = submit(dep, env)
        security = " --tls ca.crt" + (" --key NAME.key" if dep.auth_keys else "") if dep.tls else ""
        err.print(f"submitted: Flower run {flwr_run} (LiteHeart run {plan.run_id}); clients join with "
                  f"`liteheart-client start --server {dep.address}{security} --data DIR`")
        row = follow(dep, env, superlink, flwr_run, registry_url, plan.run_id, plan.cfg.rounds, plan.already)
        return row, flwr_run, save_serverapp_log(dep, env, flwr_run, dep.run_dir / plan.run_id / "serverapp.log")
    finally:
        if front is not None:
            front_proxy.stop(front)
        if superlink is not None:
            stop_tree(superlink)


def start_cmd(
    data: Annotated[Optional[str], typer.Option(help="The server's own data: 'synth' or a PTB-XL/Challenge/prepared folder (validation fold 9; trains the teacher when no --teacher).")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Federated rounds.")] = None,
    min_clients: Annotated[Optional[int], typer.Option(help="Clients that must be connected before a round starts.")] = None,
    port: Annotated[int, typer.Option(help="Port the sites connect to on --host (with --tls or a non-loopback --host: nginx, passing the Fleet API only; the SuperLink then listens on loopback).")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address the sites connect to: an IP address of this machine (default loopback; clients elsewhere need a reachable one).")] = LOOPBACK,
    db: Annotated[Optional[str], typer.Option("--db", help="Registry URL (default: sqlite file in the run folder).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue this run id after its last completed round (fresh SuperLink).")] = None,
    run_dir: Annotated[Path, typer.Option(help="Folder for the registry, checkpoints, the app project and Flower state.")] = Path("runs"),
    clients_expected: Annotated[Optional[int], typer.Option(help="Submit the run once this many clients are connected (default: --min-clients).")] = None,
    method: Annotated[Optional[str], typer.Option(help="Client objective: liteheart, kd, fitnets, supervised, ...")] = None,
    labelled_fraction: Annotated[Optional[float], typer.Option(help="Fraction of each client's records with labels.")] = None,
    local_epochs: Annotated[Optional[int], typer.Option(help="Local epochs per round.")] = None,
    teacher: Annotated[Optional[Path], typer.Option(help="Teacher checkpoint (default: trained on --data and cached).")] = None,
    wearable_teacher: Annotated[Optional[Path], typer.Option(help="A teacher that answers from lead I, shipped once to every wearable node: a checkpoint (`liteheart-server teacher assistant`, or `teacher train --lead-dropout`), or 'assistant' / 'lead-dropout' to train one on --data (cached).")] = None,
    scenario: Annotated[Optional[Path], typer.Option(help="A scenario TOML file; the options above override it.")] = None,
    round_timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for the clients' replies in a round.")] = None,
    tls: Annotated[Optional[Path], typer.Option("--tls", help="Serve over TLS with ca.crt, server.crt and server.key of this folder (made by `liteheart-server certs`).")] = None,
    auth_keys: Annotated[Optional[Path], typer.Option("--auth-keys", help="Admit only nodes whose OpenSSH public key (*.pub) is in this folder (needs --tls).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a final JSON summary.")] = False,
) -> None:
    """Run a federation for real: a SuperLink on --host, the run submitted with `flwr run`, followed to its end."""
    from liteheart_core.storage import Registry, RegistryError

    run_dir = run_dir.expanduser().resolve()
    registry_url = db or Registry.default_url(run_dir)
    overrides = {k: v for k, v in {"data": data, "rounds": rounds, "min-clients": min_clients, "method": method,
                                    "labelled-fraction": labelled_fraction, "local-epochs": local_epochs,
                                    "teacher": str(teacher) if teacher else None,
                                    "wearable-teacher": str(wearable_teacher) if wearable_teacher else None,
                                    "round-timeout": round_timeout}.items() if v is not None}
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
        link_port = _link_port(run_dir, port)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        Registry(registry_url).close()  # the tables exist before two processes could race to create them
    except (OSError, RegistryError) as exc:
        fail(str(exc))

    dep = Deployment(run_dir=run_dir, port=port, host=host, tls=server_tls, auth_keys=keys, link_port=link_port)
    options = {"run-dir": str(run_dir), "db-url": db or "", "run-id": plan.run_id, "resume": plan.resume,
               "run-name": ""}
    public, private = split_settings({**plan.cfg.to_dict(), **options})
    write_fab(dep, public)
    settings_file = write_server_settings(dep, private)
    write_connection(dep)
    if not as_json or err.is_terminal:
        what = f"resuming run {plan.run_id} after round {plan.already}" if plan.resume else f"run {plan.run_id}"
        err.print(f"[bold]LiteHeart deployment[/]: {what}; data {plan.cfg.data}, {plan.cfg.rounds} rounds, "
                  f"min {plan.cfg.min_clients} clients, method {plan.cfg.method}; SuperLink on {dep.address} "
                  f"(log {dep.log_path})")
    if server_tls is None:
        err.print("[yellow]warning:[/] plaintext SuperLink that admits any node: for trials on this machine, not "
                  "for real networks (see --tls and --auth-keys)")
    elif not keys:
        err.print("[yellow]warning:[/] TLS without --auth-keys: any node that trusts the CA may join")
    with sigterm_as_interrupt():
        try:
            row, flwr_run, log_path = deploy(dep, plan, flower_env(dep.home, {SETTINGS_ENV: str(settings_file)}),
                                             registry_url)
        except (DeployError, FileNotFoundError) as exc:
            fail(str(exc), code=1)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/] the SuperLink and the ServerApp were stopped")
            raise typer.Exit(130) from None
    finish(dep, plan.run_id, db, row, flwr_run, log_path, as_json)


def _link_port(run_dir: Path, port: int) -> int:
    """The SuperLink's loopback port behind the front: the last one of this run folder when free, else a new one."""
    record = Deployment(run_dir=run_dir, port=port).home / f"link-{port}.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        last = int(json.loads(record.read_text())["link_port"])
        if last != port and port_free(last, LOOPBACK):
            return last
    while True:
        candidate = free_port(LOOPBACK)
        if candidate != port:
            return candidate


def finish(dep: Deployment, run_id: str, db: Optional[str], row: dict, flwr_run: str, log_path: Path | None,
           as_json: bool) -> None:
    """Exit 0 with a summary when Flower and the registry both say completed; a clear error otherwise."""
    from server.orchestrate import ServerOptions
    from simulations.run_cmd import finish_summary

    opts = ServerOptions(run_dir=dep.run_dir, db_url=db or "")
    try:
        summary = finish_summary(opts, {"run_id": run_id})
    except Exception as exc:  # noqa: BLE001 - the registry may not hold the run when the ServerApp died early
        summary = {"run_id": run_id, "status": "unknown", "error": str(exc), "rounds": [], "final": {}}
    summary.update({"flower_run_id": flwr_run, "flower_status": row.get("status"),
                    "serverapp_log": str(log_path) if log_path else None})
    if row.get("status") != "finished:completed" or summary.get("status") != "completed":
        reason = summary.get("error") or row.get("status-details") or "no reason recorded"
        if log_path is not None:
            err.print(f"[dim]last lines of the ServerApp log {log_path}:[/]\n{tail(log_path)}")
        fail(f"run {run_id} ended {row.get('status')} (registry: {summary.get('status')}): {reason}", code=1)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    final = summary["final"]
    out.print(f"run {run_id} completed: global student macro F1 {final.get('macro_f1', float('nan')):.3f}, "
              f"AUC {final.get('macro_auc', float('nan')):.3f}; checkpoint {summary['global_student']}")
