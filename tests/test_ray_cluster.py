"""`liteheart-sim run --ray-address`: a federation on a running two-node Ray cluster, clients on both nodes.

The cluster is started on loopback with Ray's own CLI, as an operator would on two machines: a head
(`ray start --head`) and a second node that joins it (`ray start --address`), each with one CPU and a
custom resource that names it. Every port and the temp folder are this test's own, and teardown stops
exactly the processes of this cluster (by the temp folder in their command line): plain `ray stop` would
stop every Ray on the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from liteheart_core.cli.processes import free_port

RAY = Path(sys.executable).with_name("ray")


def _ours(marker: str) -> list[int]:
    """Processes whose command line names this cluster's temp folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _stop(marker: str) -> None:
    for sig, patience in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        for pid in _ours(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + patience
        while _ours(marker) and time.monotonic() < deadline:
            time.sleep(0.2)


def _ports(*names: str) -> list[str]:
    return [arg for name in names for arg in (f"--{name}", str(free_port()))]


@pytest.fixture
def two_node_cluster():
    """A head and a second node on 127.0.0.1, one CPU each; yields (address, {node name: resource})."""
    temp = tempfile.mkdtemp(prefix="lhray", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    gcs = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = [
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "1",
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(100 * 2**20),
        "--disable-usage-stats",
        *_ports(
            "node-manager-port",
            "object-manager-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        ),
    ]
    low = free_port()
    try:
        head = subprocess.run(
            [
                str(RAY),
                "start",
                "--head",
                "--port",
                str(gcs),
                "--temp-dir",
                temp,
                "--include-dashboard",
                "false",
                "--ray-client-server-port",
                str(free_port()),
                "--resources",
                json.dumps({"lh-head": 1}),
                "--min-worker-port",
                str(low),
                "--max-worker-port",
                str(low + 40),
                *common,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        common = [
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "1",
            "--num-gpus",
            "0",
            "--object-store-memory",
            str(100 * 2**20),
            "--disable-usage-stats",
            *_ports(
                "node-manager-port",
                "object-manager-port",
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "runtime-env-agent-port",
                "metrics-export-port",
            ),
        ]
        second = subprocess.run(
            [
                str(RAY),
                "start",
                "--address",
                f"127.0.0.1:{gcs}",
                "--temp-dir",
                temp,
                "--resources",
                json.dumps({"lh-second": 1}),
                "--min-worker-port",
                str(low + 41),
                "--max-worker-port",
                str(low + 80),
                *common,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
        yield f"127.0.0.1:{gcs}", temp
    finally:
        _stop(temp)
        shutil.rmtree(temp, ignore_errors=True)


PLACEMENT = """
import json, sys
import ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
names = {n["NodeID"]: next(k for k in n["Resources"] if k.startswith("lh-")) for n in ray.nodes() if n["Alive"]}
actors = [a for a in state.actors().values() if a["ActorClassName"].endswith("ClientAppActor")]
print(json.dumps({"nodes": sorted(names.values()), "actors": [names.get(a["Address"]["NodeID"]) for a in actors]}))
"""


# a real federation: ~1-2 min on an idle 2-core machine, ~10 min on one shared with other jobs (the first
# round starts the client actors, each importing torch); the fixtures' setup counts against the limit too
@pytest.mark.timeout(1500)
def test_a_federation_on_a_two_node_ray_cluster_places_clients_on_both_nodes(
    two_node_cluster, tmp_path: Path, synth_data, tiny_teacher: Path
) -> None:
    # Prepare: the cluster is up; the clients' data and teacher are on storage both nodes see (one machine)
    address, _ = two_node_cluster
    env = {**os.environ, "LITEHEART_CACHE": str(tmp_path / "cache"), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "run",
        "--ray-address",
        address,
        "--client-cpus",
        "1",
        "--data",
        str(synth_data.root),
        "--teacher",
        str(tiny_teacher),
        "--method",
        "kd",
        "--clients",
        "2",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--device",
        "cpu",
        "--run-dir",
        str(tmp_path / "runs"),
        "--json",
    ]

    # Execute
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    placed = subprocess.run(
        [sys.executable, "-c", PLACEMENT, address], capture_output=True, text=True, env=env, timeout=120
    )

    # Assert: the run completed with both clients each round, and Ray put a client actor on each node
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and [r["participants"] for r in summary["rounds"]] == [2, 2]
    assert placed.returncode == 0, placed.stderr[-2000:]
    where = json.loads(placed.stdout.strip().splitlines()[-1])
    assert where["nodes"] == ["lh-head", "lh-second"]
    assert sorted(where["actors"]) == ["lh-head", "lh-second"], where
    assert "Started a local Ray instance" not in done.stderr  # it joined the cluster, it did not start its own
