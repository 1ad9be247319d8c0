"""The repository as a Flower app: `flwr run .` on Flower's simulation runtime, and the table behind it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from liteheart_core.cli.processes import flower_exe, free_port
from liteheart_core.config import FedConfig
from server.app import options_from_project_config
from server.project import PROJECT_OPTIONS, config_table, project_run_config

REPO = Path(__file__).resolve().parents[1]


def test_the_pyproject_table_is_fedconfigs_defaults() -> None:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())

    app = doc["tool"]["flwr"]["app"]

    assert app["components"] == {"serverapp": "server.app:app", "clientapp": "client.app:app"}
    assert app["config"] == project_run_config(), (
        "[tool.flwr.app.config] of pyproject.toml disagrees with FedConfig's defaults: run `python -m server.project`"
    )
    assert config_table() in (REPO / "pyproject.toml").read_text()  # the generated text itself, byte for byte
    science = {k: v for k, v in app["config"].items() if k not in PROJECT_OPTIONS}
    assert FedConfig.from_dict(science) == FedConfig()


def test_flwr_run_overrides_get_the_same_checks_as_the_cli(tmp_path: Path) -> None:
    base = project_run_config()

    cfg, opts = options_from_project_config(
        {**base, "clients": 3, "rounds": 2, "min-clients": 5, "run-dir": str(tmp_path), "resume": "abc123"}
    )

    assert (cfg.clients, cfg.rounds, cfg.min_clients) == (3, 2, 3)  # min-clients capped, as liteheart-sim run does
    assert opts.run_dir == tmp_path and opts.resume and opts.run_id == "abc123" and opts.share_data
    for bad, message in [
        ({"clients": 0}, "clients must be >= 1"),
        ({"partition": "random"}, "partition must be"),
        ({"data": str(tmp_path / "nowhere")}, "does not exist"),
        ({"teacher": str(tmp_path / "t.pt")}, "does not exist"),
        ({"rounds": "many"}, "is not a int"),
    ]:
        with pytest.raises(ValueError, match=message):
            options_from_project_config({**base, **bad})


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc: no psutil here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _superlinks(port: int) -> list[int]:
    """The local SuperLink `flwr run` started (detached) on our own port, and nothing else."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(b"flower-superlink") for a in argv) and str(port).encode() in argv:
                found.append(int(entry.name))
    return found


def _stop_tree(pid: int) -> None:
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [c for p in frontier for c in _children(p)]
        tree += frontier
    for p in reversed(tree):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in tree):
        time.sleep(0.2)
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _wait_healthy(port: int, link: subprocess.Popen, patience: float = 180.0) -> None:
    import urllib.request

    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        assert link.poll() is None, f"the SuperLink exited with {link.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the local SuperLink did not answer on port {port} within {patience:.0f} s")


def fresh_checkout(dest: Path) -> Path:
    """The repository's tracked files only, as `git clone` would give them (no runs/, no caches)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


# a real federation: ~1-2 min on an idle 2-core machine, ~10 min on one shared with other jobs (the first
# round starts the client actors, each importing torch); the fixtures' setup counts against the limit too
@pytest.mark.timeout(1500)
def test_flwr_run_in_a_fresh_checkout_completes_a_federation_listed_by_the_registry(
    tmp_path: Path, synth_data, tiny_teacher: Path
) -> None:
    # Prepare: a checkout, Flower's home and the local SuperLink's ports of this test's own
    checkout = fresh_checkout(tmp_path / "checkout")
    work = tmp_path / "work"
    work.mkdir()
    http_port, control_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "LITEHEART_CACHE": str(tmp_path / "cache"),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    # the local SuperLink `flwr run` would start itself (same command), started here because Flower gives it
    # 15 s to answer, which a loaded 2-core CI machine can miss; `flwr run` finds it on its port and uses it
    home = tmp_path / "flwr-home" / "local-superlink"
    home.mkdir(parents=True)
    link = subprocess.Popen(
        [
            flower_exe("flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--control-api-address",
            f"127.0.0.1:{control_port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(http_port),
            "--database",
            str(home / "state.db"),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "superlink.log").open("w"),
    )
    overrides = (
        f"clients=2 rounds=2 local-epochs=1 method='kd' device='cpu' data='{synth_data.root}' teacher='{tiny_teacher}'"
    )
    flwr = flower_exe("flwr")

    # Execute: Flower's own CLI, as a Flower user types it, from a folder of its own (the runs land there)
    try:
        _wait_healthy(http_port, link)
        done = subprocess.run(
            [
                str(flwr),
                "run",
                str(checkout),
                "--run-config",
                overrides,
                "--federation-config",
                "num-supernodes=2 client-resources-num-cpus=1 init-args-log-to-driver=false",
                "--stream",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    finally:
        for pid in {link.pid, *_superlinks(http_port)}:
            _stop_tree(pid)
        link.wait(timeout=30)
    listed = subprocess.run(
        [sys.executable, "-m", "server.cli", "runs", "list", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert: the run is in the registry of the folder it was started from, completed, with both rounds
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert listed.returncode == 0, listed.stderr[-2000:]
    runs = json.loads(listed.stdout)
    assert len(runs) == 1 and runs[0]["status"] == "completed" and runs[0]["rounds"] == 2, runs
    shown = subprocess.run(
        [sys.executable, "-m", "server.cli", "runs", "show", runs[0]["id"], "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    detail = json.loads(shown.stdout)
    assert detail["run"]["config"]["fed"]["clients"] == 2 and detail["run"]["config"]["fed"]["method"] == "kd"
    assert all(len(r["participants"]) == 2 for r in detail["rounds"])
    assert (work / "runs" / runs[0]["id"] / "global_student.pt").is_file()
    assert not _superlinks(http_port)
