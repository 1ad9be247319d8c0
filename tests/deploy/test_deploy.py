"""Real deployments on 127.0.0.1: `liteheart-server start` and `liteheart-client start` as processes.

Each process starts in a process group of its own and every one is killed in teardown;
each wait is bounded. A message costs ~10-15 s in Flower 1.42 (a fresh `flwr-clientapp`
process per message, SuperNode and Grid polling every 3 s) while the CPU mostly idles,
so the three deployments run side by side: each scenario drives its processes in a
thread of the ``deployments`` fixture, and its test asserts on what it left behind.
Only the scenarios of the selected tests are started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from liteheart_core.cli.processes import free_port
from liteheart_core.storage import Registry
from tests.conftest import prepared_synth_site

LOOPBACK = "127.0.0.1"
RUN_LIMIT_S = 360  # one deployment, start to end: 100-200 s here, more when the three share 2 cores
FLOWER_NAMES = ("flower-superlink", "flower-superexec", "flwr-serverapp", "flower-supernode", "flwr-clientapp")
SCENARIO_TOML = 'batch-size = 16\ndevice = "cpu"\nmin-replies = 1\nseed = 0\n'
# the scenarios share one fixture: its bounded waits (two RUN_LIMIT_S stages for the crash-resume) come first
pytestmark = pytest.mark.timeout(3 * RUN_LIMIT_S)


@pytest.fixture(scope="module")
def site_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic records written and prepared through `liteheart-sim data`."""
    return prepared_synth_site(tmp_path_factory.mktemp("deploy-data"))


# --- processes --------------------------------------------------------------------------------


class Service:
    """One CLI process in a process group of its own; stdout and stderr in files."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout:.0f} s:\n{self.text()[-4000:]}")

    def stop(self) -> None:
        """SIGTERM to the CLI (it stops its children), then SIGKILL to whatever is left of the group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        self.kill_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def flower_processes(port: int) -> list[tuple[int, str]]:
    """Live Flower processes serving or reaching 127.0.0.1:port (pid, argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(Path(a).name in FLOWER_NAMES for a in argv[:2]):
            continue
        text = " ".join(argv)
        if f"{LOOPBACK}:{port}" in text or re.search(rf"--port {port}\b", text):
            found.append((int(entry.name), text))
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rfind(")") + 2 :].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def server_side_left(port: int) -> list[tuple[int, str]]:
    """SuperLink, SuperExec and ServerApp processes of a port (the SuperNodes reaching it excluded)."""
    return [(pid, argv) for pid, argv in flower_processes(port) if "flower-supernode" not in argv]


def wait_for(what: str, check: Callable[[], object], timeout: float, services: tuple[Service, ...] = ()) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for s in services:
            if s.proc.poll() is not None:
                pytest.fail(f"{s.name} exited ({s.proc.returncode}) while waiting for {what}:\n{s.text()[-4000:]}")
        time.sleep(0.5)
    logs = "\n".join(f"--- {s.name}\n{s.text()[-3000:]}" for s in services)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def file_state_hash(checkpoint: Path) -> str:
    """The content hash a node files a teacher checkpoint under."""
    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.federated import state_hash

    return state_hash({k: v.detach() for k, v in load_checkpoint(checkpoint)[0].state_dict().items()})


def healthy(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Deployment:
    """One scenario's folder, SuperLink port, processes and inputs; ``close`` kills all it started."""

    def __init__(self, root: Path, data: Path, teacher: Path, port: int, wearable_teacher: Path | None = None) -> None:
        self.root, self.data, self.teacher, self.wearable_teacher = root, data, teacher, wearable_teacher
        self.port, self.run_dir = port, root / "runs"
        self.scenario = root / "scenario.toml"
        self.services: list[Service] = []
        (root / "logs").mkdir(parents=True)
        self.scenario.write_text(SCENARIO_TOML)
        self.env = {**os.environ, "LITEHEART_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1"}

    def _start(self, name: str, module: str, args: list[object]) -> Service:
        service = Service(name, [sys.executable, "-m", module, "start", *map(str, args)], self.env, self.root / "logs")
        self.services.append(service)
        return service

    def server(self, name: str, *args: object) -> Service:
        server = self._start(name, "server.cli", ["--port", self.port, "--run-dir", self.run_dir, "--json", *args])
        wait_for(f"the SuperLink's /health ({name})", lambda: healthy(self.port), 150, services=(server,))
        return server

    def new_run(self, name: str, rounds: int, *args: object) -> Service:
        return self.server(
            name,
            "--data",
            self.data,
            "--rounds",
            rounds,
            "--local-epochs",
            1,
            "--teacher",
            self.teacher,
            "--scenario",
            self.scenario,
            *args,
        )

    def clients(self, n: int, kinds: tuple[str, ...] = ()) -> list[Service]:
        kinds = kinds or ("paired",) * n
        return [
            self._start(
                f"client{i}",
                "client.cli",
                [
                    "--server",
                    f"{LOOPBACK}:{self.port}",
                    "--data",
                    self.data,
                    "--partition-id",
                    i,
                    "--num-partitions",
                    n,
                    "--kind",
                    kinds[i],
                    "--cache-dir",
                    self.node_cache(i),
                ],
            )
            for i in range(n)
        ]

    def node_cache(self, i: int) -> Path:
        return self.root / f"node{i}"

    def registry(self) -> Registry:
        return Registry(Registry.default_url(self.run_dir))

    def only_run(self) -> dict:
        with self.registry() as registry:
            runs = registry.list_runs()
            assert len(runs) == 1, runs
            return registry.show_run(runs[0]["id"])

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        for pid, _ in flower_processes(self.port):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- the scenarios (each runs in its own thread) ----------------------------------------------


def two_clients(dep: Deployment) -> dict:
    """One server, a 12-lead site and a wearable (given the run's wearable teacher), two rounds; then a client CLI
    alone gets SIGTERM."""
    server = dep.new_run(
        "server", 2, "--min-clients", 2, "--round-timeout", 120, "--wearable-teacher", dep.wearable_teacher
    )
    clients = dep.clients(2, kinds=("paired", "wearable"))
    code = server.wait(RUN_LIMIT_S)
    left = server_side_left(dep.port)
    clients[0].proc.terminate()  # the CLI only, as a service manager would: it must stop its SuperNode
    client_code = clients[0].wait(60)
    return {
        "code": code,
        "server": server,
        "clients": clients,
        "left": left,
        "client_code": client_code,
        "client_left": group_members(clients[0].proc.pid),
    }


def crash_and_resume(dep: Deployment) -> dict:
    """Four rounds; the server's process group SIGKILLed once round 2 is recorded, then `--resume`."""
    first = dep.new_run("server", 4, "--min-clients", 2, "--round-timeout", 120)
    clients = dep.clients(2)

    def two_rounds() -> str | None:
        if not (dep.run_dir / "registry.sqlite").is_file():
            return None
        with dep.registry() as registry:
            runs = registry.list_runs()
            return runs[0]["id"] if runs and runs[0]["rounds"] >= 2 else None

    run_id = wait_for("round 2 in the registry", two_rounds, RUN_LIMIT_S, services=(first, *clients))
    first.kill_group(signal.SIGKILL)  # a crash: none of our clean-up runs
    first.wait(10)
    # at once: the detached SuperExec and ServerApp of the killed SuperLink may still be exiting
    second = dep.server("resumed", "--resume", run_id)
    code = second.wait(RUN_LIMIT_S)
    return {
        "code": code,
        "server": second,
        "run_id": run_id,
        "left": server_side_left(dep.port),
        "clients_alive": [c.proc.poll() is None for c in clients],
    }


def client_killed(dep: Deployment) -> dict:
    """Three clients, one SIGKILLed as its train message arrives; min-replies 1."""
    # the SuperLink marks a silent node offline after 2 missed 30-s heartbeats and answers for it ("node
    # unavailable"), which ends the round within ~60 s; the round-timeout (100 s) is only the backstop: at 45 s
    # a healthy reply on a loaded 2-core machine was cut off
    server = dep.new_run("server", 1, "--min-clients", 2, "--clients-expected", 3, "--round-timeout", 100)
    clients = dep.clients(3)
    victim = clients[2]
    wait_for(
        "client2's train message",
        lambda: "Receiving: train message" in victim.text(),
        RUN_LIMIT_S,
        services=(server, *clients),
    )
    victim.kill_group(signal.SIGKILL)
    node_id = re.search(r"SuperNode ID: (\d+)", victim.text()).group(1)
    code = server.wait(RUN_LIMIT_S)
    return {"code": code, "server": server, "node_id": node_id}


SCENARIOS: dict[str, Callable[[Deployment], dict]] = {
    "test_two_clients_complete_two_rounds": two_clients,
    "test_a_killed_server_resumes_where_it_stopped": crash_and_resume,
    "test_a_killed_client_is_recorded_and_the_run_completes": client_killed,
}


@pytest.fixture(scope="module")
def deployments(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    site_data: Path,
    tiny_teacher: Path,
    tiny_wearable_teacher: Path,
) -> Iterator[dict[str, tuple[Deployment, Future]]]:
    """The selected scenarios, started together; each test waits for its own."""
    selected = [name for name in SCENARIOS if any(item.name == name for item in request.session.items)]
    root = tmp_path_factory.mktemp("deployments")
    ports: set[int] = set()
    while len(ports) < len(selected):  # distinct, though none is bound yet
        ports.add(free_port())
    deps = {
        name: Deployment(root / name, site_data, tiny_teacher, port, tiny_wearable_teacher)
        for name, port in zip(selected, ports)
    }
    pool = ThreadPoolExecutor(max_workers=max(1, len(selected)), thread_name_prefix="deployment")
    running = {name: (dep, pool.submit(SCENARIOS[name], dep)) for name, dep in deps.items()}
    try:
        yield running
    finally:
        for dep in deps.values():
            dep.close()  # a scenario still waiting sees its processes die and ends
        pool.shutdown(wait=True)


def outcome(deployments: dict, name: str) -> tuple[Deployment, dict]:
    dep, future = deployments[name]
    return dep, future.result(timeout=3 * RUN_LIMIT_S)


# --- real deployments -------------------------------------------------------------------------


def test_two_clients_complete_two_rounds(deployments) -> None:
    dep, done = outcome(deployments, "test_two_clients_complete_two_rounds")

    assert done["code"] == 0, done["server"].text()[-4000:]
    summary = json.loads(done["server"].out.read_text())
    shown = dep.only_run()
    assert summary["status"] == shown["run"]["status"] == "completed"
    assert [r["number"] for r in shown["rounds"]] == [1, 2]
    for entry in shown["rounds"]:
        assert [r["status"] for r in entry["client_reports"]] == ["ok", "ok"]
        assert sorted(r["metrics"]["wearable"] for r in entry["client_reports"]) == [0.0, 1.0]  # both kinds
        assert entry["train_metrics"]["paired/clients"] == entry["train_metrics"]["wearable/clients"] == 1
        # both distil: the site from the 12-lead teacher, the wearable from the wearable teacher
        assert entry["train_metrics"]["wearable/kd"] > 0 and entry["train_metrics"]["paired/kd"] > 0
        ckpt = entry["checkpoint"]
        assert hashlib.sha256(Path(ckpt["path"]).read_bytes()).hexdigest() == ckpt["sha256"]
    paired, wearable = (client.text() for client in done["clients"])
    teachers = [p for p in dep.node_cache(0).iterdir() if p.is_file()]
    assert [p.name for p in teachers] == [f"{file_state_hash(dep.teacher)}.pt"]
    # the site keeps its distillation heads per round on disk (a resumed run continues them); the last two stay
    kept = sorted(p.name.rsplit("-", 1)[1] for p in (dep.node_cache(0) / "distillers").iterdir())
    assert kept == ["r0001.pt", "r0002.pt"]
    # each node: the teacher check and its install in round 1, nothing in round 2 (shipped once per node, by
    # hash); the wearable holds the wearable teacher only, never the 12-lead one
    assert paired.count("Receiving: query message") == 2, paired[-3000:]
    assert wearable.count("Receiving: query message") == 2, wearable[-3000:]
    worn = [p.name for p in dep.node_cache(1).iterdir() if p.is_file()]
    assert worn == [f"{file_state_hash(dep.wearable_teacher)}.pt"]
    assert paired.count("Receiving: train message") == wearable.count("Receiving: train message") == 2
    assert (dep.run_dir / shown["run"]["id"] / "serverapp.log").is_file()
    assert done["left"] == []  # the SuperLink, SuperExec and ServerApp went with the CLI
    assert done["client_code"] == 130 and done["client_left"] == []  # SuperNode, SuperExec: gone too


def test_a_killed_server_resumes_where_it_stopped(deployments) -> None:
    dep, done = outcome(deployments, "test_a_killed_server_resumes_where_it_stopped")

    assert done["code"] == 0, done["server"].text()[-4000:]
    shown = dep.only_run()
    assert shown["run"]["id"] == done["run_id"] and shown["run"]["status"] == "completed"
    assert [r["number"] for r in shown["rounds"]] == [1, 2, 3, 4]
    assert all(r["checkpoint"] is not None for r in shown["rounds"])
    assert all(done["clients_alive"])  # the SuperNodes reconnected to the new SuperLink by themselves
    assert done["left"] == []


def test_a_killed_client_is_recorded_and_the_run_completes(deployments) -> None:
    dep, done = outcome(deployments, "test_a_killed_client_is_recorded_and_the_run_completes")

    assert done["code"] == 0, done["server"].text()[-4000:]
    shown = dep.only_run()
    assert shown["run"]["status"] == "completed"
    (entry,) = shown["rounds"]
    reports = {r["node_id"]: r for r in entry["client_reports"]}
    assert len(reports) == 3 and reports[done["node_id"]]["status"] == "failed"
    assert re.search(r"no reply|unavailable", reports[done["node_id"]]["reason"], re.IGNORECASE)
    assert sorted(r["status"] for node, r in reports.items() if node != done["node_id"]) == ["ok", "ok"]
    assert entry["n_failures"] == 1 and entry["checkpoint"] is not None


# --- clear errors, without starting anything --------------------------------------------------


def test_server_start_errors_are_one_clear_line(tmp_path: Path, site_data: Path) -> None:
    from server.cli import app

    runner = CliRunner()
    base = ["start", "--rounds", "1", "--min-clients", "1", "--run-dir", str(tmp_path / "runs")]
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        taken = busy.getsockname()[1]

        no_data = runner.invoke(app, [*base, "--data", str(tmp_path / "nowhere")])
        not_data = runner.invoke(app, [*base, "--data", str(tmp_path)])
        no_teacher = runner.invoke(app, [*base, "--data", str(site_data), "--teacher", str(tmp_path / "t.pt")])
        in_use = runner.invoke(app, [*base, "--data", str(site_data), "--port", str(taken)])
        no_run = runner.invoke(app, ["start", "--resume", "abc", "--run-dir", str(tmp_path / "runs")])

    assert no_data.exit_code == 2 and f"data folder {tmp_path / 'nowhere'} does not exist" in no_data.output
    assert not_data.exit_code == 2 and "neither a PTB-XL folder" in not_data.output
    assert no_teacher.exit_code == 2 and "teacher checkpoint" in no_teacher.output
    assert in_use.exit_code == 2 and f"port {taken} is in use; choose another with --port" in in_use.output
    assert no_run.exit_code == 2 and "cannot resume abc" in no_run.output
    for result in (no_data, not_data, no_teacher, in_use, no_run):
        assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / ".flwr").exists()  # nothing was started


def test_client_start_errors_are_one_clear_line(tmp_path: Path, site_data: Path) -> None:
    from client.cli import app

    runner = CliRunner()
    server = ["start", "--server", f"{LOOPBACK}:9"]
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        taken = busy.getsockname()[1]

        no_data = runner.invoke(app, [*server, "--data", str(tmp_path / "nowhere")])
        bad_server = runner.invoke(app, ["start", "--server", "localhost", "--data", str(site_data)])
        bad_part = runner.invoke(app, [*server, "--data", "synth", "--partition-id", "3", "--num-partitions", "3"])
        half_part = runner.invoke(app, [*server, "--data", "synth", "--partition-id", "0"])
        in_use = runner.invoke(app, [*server, "--data", str(site_data), "--port", str(taken)])

    assert no_data.exit_code == 2 and f"data folder {tmp_path / 'nowhere'} does not exist" in no_data.output
    assert bad_server.exit_code == 2 and "expected HOST:PORT" in bad_server.output
    assert bad_part.exit_code == 2 and "outside 0..2" in bad_part.output
    assert half_part.exit_code == 2 and "go together" in half_part.output
    assert in_use.exit_code == 2 and f"port {taken} is in use; choose another with --port" in in_use.output


def test_the_app_project_carries_the_public_settings_and_the_server_keeps_its_own(tmp_path: Path) -> None:
    import stat
    import tomllib

    from liteheart_core.config import FedConfig
    from server.app import OPTION_KEYS, options_from_run_config
    from server.bundle import write_connection, write_fab, write_server_settings
    from server.settings import PRIVATE_KEYS, SETTINGS_ENV, server_settings, split_settings
    from server.superlink import Deployment

    dep = Deployment(run_dir=tmp_path, port=9092)
    teacher = tmp_path / "teachers" / "t.pt"
    cfg = FedConfig(rounds=3, min_clients=2, data=str(tmp_path / "server-data"), teacher=str(teacher))
    db = "postgresql+psycopg://liteheart:s3cret-pw@db.internal:5432/registry"
    options = {"run-dir": str(tmp_path), "db-url": db, "run-id": "r1", "resume": True, "run-name": ""}
    public, private = split_settings({**cfg.to_dict(), **options})

    write_fab(dep, public)
    settings = write_server_settings(dep, private)
    write_connection(dep)

    bundle = (dep.fab_dir / "pyproject.toml").read_text()
    app = tomllib.loads(bundle)["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "server.app:app", "clientapp": "client.app:app"}
    assert set(app["config"]) == (set(cfg.to_dict()) | set(OPTION_KEYS)) - set(PRIVATE_KEYS)
    for secret in ("s3cret-pw", "db.internal", str(tmp_path), "server-data", "t.pt"):
        assert secret not in bundle, secret
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    # the ServerApp joins them back only with the file of the same run
    back, opts = options_from_run_config(server_settings(app["config"], {SETTINGS_ENV: str(settings)}))
    assert back == cfg and opts.run_id == "r1" and opts.resume and opts.run_dir == tmp_path and opts.db_url == db
    assert not opts.share_data  # deployed nodes are never told where the server's data are
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**private, "run-id": "r2"}))
    with pytest.raises(ValueError, match="for run r2, the submitted app is run r1"):
        server_settings(app["config"], {SETTINGS_ENV: str(other)})
    with pytest.raises(ValueError, match=f"{SETTINGS_ENV} is not set"):
        server_settings(app["config"], {})
    with pytest.raises(
        ValueError, match="keep data, db-url, resume, run-dir, run-name, teacher, wearable-teacher on the server"
    ):
        write_fab(dep, {**cfg.to_dict(), **options})
    links = tomllib.loads((tmp_path / ".flwr" / "config.toml").read_text())["superlink"]
    assert links["default"] == "liteheart-9092"
    assert links["liteheart-9092"] == {"address": "127.0.0.1:9092", "insecure": True}


def test_node_unavailable_replies_are_charged_to_the_node_that_died() -> None:
    import torch
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
    from flwr.supercore.task_identity import TaskIdentity

    from server.strategy import LiteHeartFedAvg

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # as inside a ServerApp
    try:
        weights = {"w": torch.zeros(3)}
        strategy = LiteHeartFedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
        strategy.setup(ArrayRecord(weights), "ab", {}, timeout=5.0)
        sent = [
            Message(RecordDict({"arrays": ArrayRecord(weights)}), dst_node_id=n, message_type="train") for n in (41, 42)
        ]
        for message in sent:  # what the Grid does when it pushes them
            message.metadata.__dict__["_message_id"] = message.object_id
        strategy.sampled, strategy.sent = [41, 42], sent
        strategy.reference = {k: v.numpy() for k, v in weights.items()}
        ok = Message(
            RecordDict({"arrays": ArrayRecord(weights), "metrics": MetricRecord({"num-examples": 3})}), reply_to=sent[0]
        )
        # the SuperLink answers for a node that missed its heartbeats, as node 1
        dead = create_message_error_unavailable_res_message(sent[1].metadata, "node_unavail")

        strategy.aggregate_train(1, [ok, dead])
    finally:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None

    assert dead.metadata.src_node_id == 1
    assert [(r["node_id"], r["status"]) for r in strategy.reports] == [("41", "ok"), ("42", "failed")]
    assert "Node Unavailable" in strategy.reports[1]["reason"]
