"""Deployments on test hosts (``simulations.netns``) and the faults the suite injects into them.

A ``Site`` is one federation: a SuperLink host and a host per client on a shared testbed,
its own run folder, registry and logs. The processes are the real ``liteheart-server
start`` / ``liteheart-client start`` (run with ``ip netns exec``), so what is tested is
what a site operator runs; the test reads the registry the ServerApp writes.
"""

from __future__ import annotations

import re
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from liteheart_core.storage import Registry
from simulations.netns import Host, Service, Testbed, clean_env, wait_until

PORT = 9092  # every host has a port space of its own
RUN_LIMIT_S = 900.0  # one deployment, start to end: a 3-round run took 7-8 min at load 25 on 2 cores
# Far longer than a healthy reply under heavy load (50-60 s seen at load 20 on 2 cores): a silent node
# is then ended by Flower's heartbeat expiry (30-60 s after its last heartbeat), which the SuperLink
# answers with a 'Node Unavailable' error reply that the strategy charges to the node
ROUND_TIMEOUT_S = 120
SCENARIO_TOML = 'batch-size = 16\ndevice = "cpu"\nmin-replies = 1\nseed = 0\n'


class Site:
    """One SuperLink and its clients, each on a host of its own; ``close`` stops every process it started."""

    def __init__(
        self,
        testbed: Testbed,
        name: str,
        root: Path,
        data: Path,
        teacher: Path,
        n_clients: int,
        rounds: int,
        method: str = "liteheart",
    ) -> None:
        self.testbed, self.name, self.root, self.data, self.teacher = testbed, name, root, data, teacher
        self.rounds = rounds
        self.run_dir, self.logs = root / "runs", root / "logs"
        self.scenario = root / "scenario.toml"
        root.mkdir(parents=True)
        self.scenario.write_text(f'{SCENARIO_TOML}method = "{method}"\n')
        self.env = clean_env({"LITEHEART_CACHE": str(root / "cache")})
        self.server_host = testbed.add_host(f"{name}s")
        self.client_hosts: list[Host] = []
        self.services: list[Service] = []
        self.n_clients = n_clients

    @property
    def address(self) -> str:
        return f"{self.server_host.address}:{PORT}"

    def _start(self, label: str, host: Host, module: str, args: list[object]) -> Service:
        service = Service(label, [sys.executable, "-m", module, "start", *map(str, args)], self.env, self.logs, host)
        self.services.append(service)
        return service

    def server(self, label: str, *args: object) -> Service:
        """``liteheart-server start`` on the server host; returns once its SuperLink answered /health."""
        server = self._start(
            label,
            self.server_host,
            "server.cli",
            [
                "--host",
                self.server_host.address,
                "--port",
                PORT,
                "--run-dir",
                self.run_dir,
                "--json",
                "--clients-expected",
                self.n_clients,
                *args,
            ],
        )
        # `start` prints this line only after GET /health answered 200 inside the host
        self.wait(f"{label}'s SuperLink", lambda: "waiting for clients" in server.text(), 150, server)
        return server

    def new_run(self, rounds: int, *args: object) -> Service:
        return self.server(
            "server",
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
            "--min-clients",
            2,
            "--round-timeout",
            ROUND_TIMEOUT_S,
            *args,
        )

    def client(self, i: int, label: str | None = None, partitions: int = 2) -> Service:
        """Client ``i`` on host ``c<i>`` (created on first use), holding partition ``i % partitions``."""
        while len(self.client_hosts) <= i:
            self.client_hosts.append(self.testbed.add_host(f"{self.name}c{len(self.client_hosts)}"))
        return self._start(
            label or f"client{i}",
            self.client_hosts[i],
            "client.cli",
            [
                "--server",
                self.address,
                "--data",
                self.data,
                "--partition-id",
                i % partitions,
                "--num-partitions",
                partitions,
                "--cache-dir",
                self.root / f"node{i}",
            ],
        )

    def wait(self, what: str, check, timeout: float, *watch: Service):
        """``check()`` until true; fails with the logs when it times out or a watched process exits."""

        def step():
            for s in watch:
                if not s.alive():
                    pytest.fail(
                        f"{self.name}: {s.name} exited ({s.proc.returncode}) while waiting for {what}:\n"
                        f"{s.text()[-4000:]}"
                    )
            return check()

        value = wait_until(step, timeout)
        if not value:
            logs = "\n".join(f"--- {s.name}\n{s.text()[-2500:]}" for s in self.services)
            pytest.fail(f"{self.name}: timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        return value

    def finish(self, server: Service) -> int:
        try:
            return server.proc.wait(timeout=RUN_LIMIT_S)
        except Exception:  # noqa: BLE001 - the logs say more than the timeout
            pytest.fail(f"{self.name}: the server did not finish within {RUN_LIMIT_S:.0f} s:\n{server.text()[-4000:]}")

    # --- the registry ---------------------------------------------------------------------------

    def registry(self) -> Registry:
        return Registry(Registry.default_url(self.run_dir))

    def rounds_done(self) -> int:
        if not (self.run_dir / "registry.sqlite").is_file():
            return 0
        with self.registry() as registry:
            runs = registry.list_runs()
            return int(runs[0]["rounds"]) if runs else 0

    def run_id(self) -> str:
        with self.registry() as registry:
            return registry.list_runs()[0]["id"]

    def only_run(self) -> dict:
        with self.registry() as registry:
            runs = registry.list_runs()
            assert len(runs) == 1, runs
            return registry.show_run(runs[0]["id"])

    def close(self) -> None:
        """Stop every process this site started, side by side (each gets SIGTERM, then SIGKILL)."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.services))) as pool:
            list(pool.map(lambda service: service.stop(grace=10), self.services))


def node_id(client: Service, timeout: float = 120) -> str:
    found = wait_until(lambda: re.search(r"SuperNode ID: (\d+)", client.text()), timeout)
    assert found, f"{client.name} never registered:\n{client.text()[-3000:]}"
    return found.group(1)


def trains_received(client: Service) -> int:
    return client.text().count("Receiving: train message")


def kill(service: Service) -> None:
    """A crash: SIGKILL to the whole process group, none of our clean-up runs."""
    service.kill_group(signal.SIGKILL)
    service.proc.wait(timeout=10)


def weights(checkpoint: dict | None) -> dict[str, np.ndarray]:
    assert checkpoint is not None
    state = torch.load(checkpoint["path"], map_location="cpu", weights_only=True)["state_dict"]
    return {k: v.numpy().astype(np.float64) for k, v in state.items() if v.is_floating_point()}


def distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a)))


def compare(faulted: dict, reference: dict) -> dict:
    """The faulted run's final model beside the fault-free one's, per round and at the end.

    ``identical_rounds``: rounds whose checkpoints are bit-equal. ``relative_distance``:
    |w_fault - w_ref| / |w_ref(last) - w_ref(first)|, the gap in units of how far the
    reference itself moved after round 1.
    """
    f_rounds = {r["number"]: r for r in faulted["rounds"]}
    r_rounds = {r["number"]: r for r in reference["rounds"]}
    common = sorted(set(f_rounds) & set(r_rounds))
    identical = [
        n for n in common if distance(weights(f_rounds[n]["checkpoint"]), weights(r_rounds[n]["checkpoint"])) == 0.0
    ]
    last = common[-1]
    w_f, w_r = weights(f_rounds[last]["checkpoint"]), weights(r_rounds[last]["checkpoint"])
    movement = distance(w_r, weights(r_rounds[common[0]]["checkpoint"]))
    finite = all(np.isfinite(v).all() for v in w_f.values())
    auc_f, auc_r = f_rounds[last]["central_metrics"]["macro_auc"], r_rounds[last]["central_metrics"]["macro_auc"]
    return {
        "identical_rounds": identical,
        "final_distance": distance(w_f, w_r),
        "reference_movement": movement,
        "relative_distance": distance(w_f, w_r) / movement if movement else float("inf"),
        "finite": finite,
        "final_macro_auc": auc_f,
        "reference_macro_auc": auc_r,
        "auc_gap": abs(auc_f - auc_r),
    }


def round_summary(shown: dict) -> list[dict]:
    return [
        {
            "round": r["number"],
            "participants": len(r["participants"]),
            "failures": [
                {"node_id": c["node_id"], "reason": c["reason"]} for c in r["client_reports"] if c["status"] != "ok"
            ],
        }
        for r in shown["rounds"]
    ]
