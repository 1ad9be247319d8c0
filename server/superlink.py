"""The SuperLink of a deployment and the ``flwr`` CLI calls that drive it: start, health, node keys, submit.

What ``liteheart-server start`` (``server/deploy.py``) runs, one step each: a ``flower-superlink`` in the
run folder (its state in ``<run-dir>/.flwr/superlink-<port>.db``, so nodes reconnect to a restarted one),
the leftovers of a killed one cleared first, node keys registered, the run submitted with ``flwr run``.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liteheart_core.cli.console import err
from liteheart_core.cli.processes import (
    LOOPBACK,
    end_processes,
    find_processes,
    flower_exe,
    free_port,
    port_free,
    tail,
)
from liteheart_core.cli.tls import (
    ServerTls,
    fingerprint,
    load_public_key,
)
from server import front as front_proxy

HEALTH_TIMEOUT_S = 60.0


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
        err.print(
            f"stopping {len(left)} Flower process(es) left by an earlier SuperLink on {dep.address} "
            f"(pids {', '.join(str(pid) for pid, _ in left)})"
        )
        end_processes(left, patience)


def start_superlink(dep: Deployment, env: dict[str, str]) -> subprocess.Popen:
    """``flower-superlink`` on ``dep.link_host`` (loopback when fronted), in our process group, logging to the run folder."""
    dep.home.mkdir(parents=True, exist_ok=True)
    if dep.fronted:
        dep.link_record.write_text(json.dumps({"link_port": dep.link_port}))
    log = dep.log_path.open("ab")
    try:
        return subprocess.Popen(
            [
                flower_exe("flower-superlink"),
                *superlink_security(dep),
                "--disable-runtime-dependency-installation",
                "--host",
                dep.link_host,
                "--port",
                str(dep.link_port or dep.port),
                "--database",
                str(dep.database),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=dep.run_dir,
        )
    finally:
        log.close()


def superlink_security(dep: Deployment) -> list[str]:
    """The SuperLink's TLS and node-authentication flags (Flower allows authentication only with TLS)."""
    if dep.tls is None:
        return ["--insecure"]
    flags = [
        "--ssl-ca-certfile",
        str(dep.tls.ca),
        "--ssl-certfile",
        str(dep.tls.cert),
        "--ssl-keyfile",
        str(dep.tls.key),
    ]
    return flags + (["--enable-supernode-auth"] if dep.auth_keys else [])


def wait_healthy(
    dep: Deployment,
    proc: subprocess.Popen,
    timeout: float = HEALTH_TIMEOUT_S,
    address: str | None = None,
    what: str = "the SuperLink",
) -> None:
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
            raise DeployError(f"{what} exited at start (code {proc.returncode}); its log {log_path}:\n{tail(log_path)}")
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
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            cwd=dep.run_dir,
            timeout=FLWR_CALL_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
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
    stale = [
        r["run-id"]
        for r in flwr_json(dep, env, "list", dep.connection).get("runs", [])
        if not str(r.get("status", "")).startswith("finished")
    ]
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
            err.print(
                f"unregistered node {entry['node_id']} ({entry['name']}, {key_print}): "
                "its key is no longer in --auth-keys"
            )
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
    err.print(
        f"node authentication on: {len(current)} key(s) from {dep.auth_keys[0].parent} may join; any other "
        "node is refused"
    )


def online_nodes(dep: Deployment, env: dict[str, str]) -> int:
    nodes = flwr_json(dep, env, "supernode", "list", dep.connection).get("nodes", [])
    return sum(str(n.get("status")) == "online" for n in nodes)


def wait_for_nodes(dep: Deployment, env: dict[str, str], proc: subprocess.Popen, expected: int) -> None:
    """Submit only when ``expected`` SuperNodes are online, so that all of them take part in round 1."""
    seen = -1
    while True:
        check_alive(dep, proc)
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


def check_alive(dep: Deployment, proc: subprocess.Popen) -> None:
    """Raise DeployError with the tail of its log when the SuperLink has exited."""
    if proc.poll() is not None:
        raise DeployError(
            f"the SuperLink exited unexpectedly (code {proc.returncode}); its log {dep.log_path}:\n{tail(dep.log_path)}"
        )


def save_serverapp_log(dep: Deployment, env: dict[str, str], flwr_run: str, path: Path) -> Path | None:
    """The ServerApp's log as the SuperLink kept it (``flwr log --show``), into the run folder."""
    try:
        done = subprocess.run(
            [flower_exe("flwr"), "log", flwr_run, dep.connection, "--show"],
            capture_output=True,
            text=True,
            env=env,
            cwd=dep.run_dir,
            timeout=FLWR_CALL_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(done.stdout + done.stderr)
    return path


def link_port_for(run_dir: Path, port: int) -> int:
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
