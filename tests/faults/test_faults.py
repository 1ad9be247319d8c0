"""Faults injected into real deployments, each process on a test host of its own (network namespaces).

The SuperLink and every SuperNode run in their own namespace, joined by veth pairs to a
bridge (``simulations.netns``); links are cut and restored, impaired, and processes
killed, while ``liteheart-server start`` drives the run. After each run: it completed,
the registry holds every round exactly once with the failures (node id and reason), and
the final model is compared with a fault-free run of the same seeds, started beside it:
rounds with the same participants must give bit-equal checkpoints, and the final model
must stay close where a fault changed who took part.

The short suite runs by default (in CI); the tests marked ``faults_long`` (deselected by
default) add a link outage and recovery, a SuperNode killed and restarted, the server
killed and resumed from the registry (bit-equal to an uninterrupted run, with method kd and with
liteheart, whose nodes keep their distillation heads on disk across the resume), and a client that
joins late. Run everything
with ``python -m pytest tests/faults -m faults`` (``LITEHEART_FAULTS_REPORT=results/faults``
writes the figures; ``LITEHEART_FAULT_WORKERS`` federations run side by side, default 2).
Without CAP_NET_ADMIN (or without iproute2) every test here is skipped with the reason.

Flower's heartbeat (30 s, two missed before a node is offline) is a constant in
``flwr.common.constant``, not a flag or an environment variable: a round with a silent
node ends 30-60 s after its last heartbeat, when the SuperLink answers for it ("Node
Unavailable"); the round timeout (``ROUND_TIMEOUT_S``) is set far above that, so that a
slow but healthy reply on a loaded machine is never cut off.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_harness import (
    ROUND_TIMEOUT_S,
    RUN_LIMIT_S,
    Site,
    compare,
    kill,
    node_id,
    round_summary,
    trains_received,
)
from typer.testing import CliRunner

from simulations import netns
from tests.conftest import prepared_synth_site

SHORT_ROUNDS = 2  # the CI scenario: round 1 with a brief outage, round 2 with a whole-round one
ROUNDS = 3  # the long scenarios and the fault-free reference when they run
# a fault that changes who takes part must not move the final model further from the
# fault-free one than the fault-free run itself moved after round 1, nor its AUC by more than this
MAX_RELATIVE_DISTANCE = 1.0
# what the strategy records for a node that went silent: the SuperLink's reply for it, or the round timeout
SILENT = re.compile(rf"Node Unavailable|no reply within {ROUND_TIMEOUT_S} s")
MAX_AUC_GAP = 0.2  # the synthetic validation fold holds ~12 records: AUC moves by ~0.1 on noise alone
# the module's deployments run in fixtures bounded by their own waits (up to 4 x RUN_LIMIT_S side by side)
pytestmark = pytest.mark.timeout(4 * RUN_LIMIT_S + 600)


@pytest.fixture(scope="module")
def testbed() -> Iterator[netns.Testbed]:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"fault tests need network namespaces: {reason}")
    netns.sweep_stale()
    bed = netns.Testbed("f")
    try:
        yield bed
    finally:
        bed.close()
        assert bed.leftovers() == [], bed.leftovers()


@pytest.fixture(scope="module")
def site_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic records written and prepared through `liteheart-sim data`."""
    return prepared_synth_site(tmp_path_factory.mktemp("fault-data"))


# --- the scenarios (each runs in a thread of the ``sites`` fixture) ----------------------------


def reference(site: Site) -> dict:
    """The fault-free run every faulted one is compared with: 2 clients, same seeds, same data."""
    server = site.new_run(site.rounds)
    site.client(0), site.client(1)
    return {"code": site.finish(server), "server": server}


def link_faults(site: Site) -> dict:
    """Client 1's link shaped (netem delay + loss, or tbf) all along; client 0 unplugged twice.

    Round 1: client 0 unplugged for 8 s while it trains, then plugged back: its reply gets
    through before the round timeout, so participation is unchanged. Round 2: unplugged as
    its train message arrives and left so until the server has recorded the round: the
    reply is missed and recorded as a failure. (A node back after a long outage needs
    10-60 s to reconnect, deliver its stale reply and pull the next message: see
    ``link_outage`` in the long suite.)
    """
    bed = site.testbed
    server = site.new_run(SHORT_ROUNDS)
    c0, c1 = site.client(0), site.client(1)
    impairment = bed.impair(site.client_hosts[1], delay_ms=80, jitter_ms=20, loss_pct=3)
    victim = node_id(c0)
    site.wait("client0's first train message", lambda: trains_received(c0) >= 1, RUN_LIMIT_S, server, c0, c1)
    bed.cut(site.client_hosts[0])
    time.sleep(8)
    bed.restore(site.client_hosts[0])
    site.wait("client0's second train message", lambda: trains_received(c0) >= 2, RUN_LIMIT_S, server, c0, c1)
    bed.cut(site.client_hosts[0])
    cut_at = time.monotonic()
    site.wait("round 2 in the registry", lambda: site.rounds_done() >= 2, RUN_LIMIT_S, server, c0, c1)
    bed.restore(site.client_hosts[0])
    outage = time.monotonic() - cut_at
    code = site.finish(server)
    return {
        "code": code,
        "server": server,
        "victim": victim,
        "impairment": impairment,
        "outage_s": outage,
        "shaped_link": bed.link_stats(site.client_hosts[1]),
        "clients_alive": [c0.alive(), c1.alive()],
        "faults": ["link cut 8 s (round 1)", f"link cut {outage:.0f} s (round 2)", f"{impairment} on client 1"],
    }


def link_outage(site: Site) -> dict:
    """Client 0 unplugged as round 1's train message arrives, plugged back once round 1 is recorded."""
    bed = site.testbed
    server = site.new_run(site.rounds)
    c0, c1 = site.client(0), site.client(1)
    victim = node_id(c0)
    site.wait("client0's first train message", lambda: trains_received(c0) >= 1, RUN_LIMIT_S, server, c0, c1)
    bed.cut(site.client_hosts[0])
    cut_at = time.monotonic()
    site.wait("round 1 in the registry", lambda: site.rounds_done() >= 1, RUN_LIMIT_S, server, c0, c1)
    bed.restore(site.client_hosts[0])
    outage = time.monotonic() - cut_at
    return {
        "code": site.finish(server),
        "server": server,
        "victim": victim,
        "outage_s": outage,
        "clients_alive": [c0.alive(), c1.alive()],
        "faults": [f"link cut {outage:.0f} s (round 1)"],
    }


def node_restart(site: Site) -> dict:
    """Client 0's SuperNode (its whole process group) SIGKILLed as round 2's train message arrives, then restarted."""
    server = site.new_run(site.rounds)
    c0, c1 = site.client(0), site.client(1)
    victim = node_id(c0)
    site.wait("client0's second train message", lambda: trains_received(c0) >= 2, RUN_LIMIT_S, server, c1)
    kill(c0)
    again = site.client(0, label="client0-restarted")
    return {
        "code": site.finish(server),
        "server": server,
        "victim": victim,
        "restarted": node_id(again),
        "faults": ["SuperNode SIGKILL + restart (round 2)"],
    }


def server_resume(site: Site) -> dict:
    """The server's process group SIGKILLed once round 1 is recorded; `start --resume` on the same host."""
    first = site.new_run(site.rounds)
    c0, c1 = site.client(0), site.client(1)
    site.wait("round 1 in the registry", lambda: site.rounds_done() >= 1, RUN_LIMIT_S, first, c0, c1)
    run_id = site.run_id()
    kill(first)
    second = site.server("resumed", "--resume", run_id)
    return {
        "code": site.finish(second),
        "server": second,
        "run_id": run_id,
        "clients_alive": [c0.alive(), c1.alive()],
        "faults": ["server SIGKILL + --resume (after round 1)"],
    }


def late_join(site: Site) -> dict:
    """A third client (a second copy of partition 0's site) starts once round 1 is recorded."""
    server = site.new_run(site.rounds)
    c0, c1 = site.client(0), site.client(1)
    site.wait("round 1 in the registry", lambda: site.rounds_done() >= 1, RUN_LIMIT_S, server, c0, c1)
    late = site.client(2, label="client2-late")
    return {
        "code": site.finish(server),
        "server": server,
        "late": node_id(late),
        "faults": ["client joins after round 1"],
    }


SCENARIOS: dict[str, tuple[Callable[[Site], dict], int]] = {  # name: (scenario, rounds)
    "reference": (reference, 0),  # as many rounds as the longest selected scenario
    "reference-kd": (reference, ROUNDS),  # method kd: no client-side state across rounds
    "test_link_cut_and_impaired_link": (link_faults, SHORT_ROUNDS),
    "test_link_outage_and_recovery": (link_outage, ROUNDS),
    "test_supernode_killed_and_restarted": (node_restart, ROUNDS),
    "test_server_killed_and_resumed": (server_resume, ROUNDS),
    "test_client_joins_late": (late_join, ROUNDS),
    "test_a_resumed_kd_run_equals_an_uninterrupted_one": (server_resume, ROUNDS),
}
SHARES = {"test_a_resumed_run_equals_an_uninterrupted_one": "test_server_killed_and_resumed"}  # test: its scenario
KD = {"reference-kd", "test_a_resumed_kd_run_equals_an_uninterrupted_one"}


@pytest.fixture(scope="module")
def sites(
    request: pytest.FixtureRequest,
    testbed: netns.Testbed,
    tmp_path_factory: pytest.TempPathFactory,
    site_data: Path,
    tiny_teacher: Path,
) -> Iterator[dict[str, tuple[Site, Future]]]:
    """The reference and the selected scenarios; two at a time (the machine has 2 cores)."""
    wanted = {SHARES.get(item.name, item.name) for item in request.session.items}
    if "test_a_resumed_kd_run_equals_an_uninterrupted_one" in wanted:
        wanted.add("reference-kd")
    selected = ["reference"] + [n for n in SCENARIOS if n in wanted]
    root = tmp_path_factory.mktemp("faults")
    made = {
        name: Site(
            testbed,
            f"s{i}",
            root / name,
            site_data,
            tiny_teacher,
            n_clients=2,
            rounds=SCENARIOS[name][1] or max(SCENARIOS[n][1] for n in selected),
            method="kd" if name in KD else "liteheart",
        )
        for i, name in enumerate(selected)
    }
    pool = ThreadPoolExecutor(
        max_workers=int(os.environ.get("LITEHEART_FAULT_WORKERS", "2")), thread_name_prefix="site"
    )
    running = {name: (site, pool.submit(SCENARIOS[name][0], site)) for name, site in made.items()}
    try:
        yield running
    finally:
        with ThreadPoolExecutor(max_workers=len(made)) as closing:
            list(closing.map(Site.close, made.values()))  # a scenario still waiting sees its processes die and ends
        pool.shutdown(wait=True)
        testbed.kill_inside()


def outcome(sites: dict, name: str) -> tuple[Site, dict]:
    site, future = sites[name]
    return site, future.result(timeout=4 * RUN_LIMIT_S)


def completed(site: Site, done: dict) -> dict:
    """The run ended with exit 0 and 'completed', every round recorded exactly once, in order."""
    assert done["code"] == 0, done["server"].text()[-4000:]
    shown = site.only_run()
    assert shown["run"]["status"] == "completed"
    assert [r["number"] for r in shown["rounds"]] == list(range(1, site.rounds + 1))
    assert all(r["checkpoint"] is not None for r in shown["rounds"])
    return shown


ROWS: list[dict] = []


def record(name: str, site: Site, shown: dict, done: dict, cmp: dict) -> None:
    """A scenario's figures, written to results/faults.* when ``LITEHEART_FAULTS_REPORT=PREFIX`` is set."""
    failures = [f for r in round_summary(shown) for f in r["failures"]]
    ROWS.append(
        {
            "scenario": name,
            "rounds_completed": len(shown["rounds"]),
            "rounds_expected": site.rounds,
            "rounds_lost": site.rounds - len(shown["rounds"]),
            "faults": done["faults"],
            "failures_recorded": len(failures),
            "rounds": round_summary(shown),
            "comparison": cmp,
            **{k: done[k] for k in ("impairment", "shaped_link", "outage_s") if k in done},
        }
    )


@pytest.fixture(scope="module", autouse=True)
def faults_report() -> Iterator[None]:
    started = time.monotonic()
    yield
    prefix = os.environ.get("LITEHEART_FAULTS_REPORT")
    if not prefix or not ROWS:
        return
    import platform
    import sys

    out = Path(prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    uname = platform.uname()
    meta = {
        "command": f"LITEHEART_FAULTS_REPORT={prefix} {Path(sys.executable).name} -m pytest {' '.join(sys.argv[1:])}",
        "machine": f"{uname.system} {uname.release} {uname.machine}, {os.cpu_count()} cores",
        "load_average_at_end": os.getloadavg(),
        "wall_s": round(time.monotonic() - started, 1),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "rounds_per_run": {row["scenario"]: row["rounds_expected"] for row in ROWS},
        "round_timeout_s": ROUND_TIMEOUT_S,
    }
    out.with_suffix(".json").write_text(json.dumps({**meta, "scenarios": ROWS}, indent=1, default=str))
    lines = [
        "# Fault suite: faults injected into real deployments on network namespaces",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']} (shared; load average at the end {meta['load_average_at_end'][0]:.1f}), "
        f"{meta['date_utc']} UTC; wall {meta['wall_s'] / 60:.1f} min. Each scenario is a run of "
        "`liteheart-server start` with 2 clients (`liteheart-client start`), SuperLink and SuperNodes on hosts "
        "of their own, compared with a fault-free run of the same seeds and data started beside it.",
        "",
        "| scenario | faults injected | rounds completed | rounds lost | failures recorded | bit-equal rounds "
        "| distance to fault-free (rel.) | final AUC (fault-free) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        cmp = row["comparison"]
        lines.append(
            f"| {row['scenario']} | {'; '.join(row['faults'])} | {row['rounds_completed']}/"
            f"{row['rounds_expected']} | {row['rounds_lost']} | {row['failures_recorded']} | "
            f"{', '.join(map(str, cmp['identical_rounds'])) or 'none'} | {cmp['relative_distance']:.3f} | "
            f"{cmp['final_macro_auc']:.3f} ({cmp['reference_macro_auc']:.3f}) |"
        )
    lines += ["", "Failures recorded, per round (node id: reason):", ""]
    for row in ROWS:
        for r in row["rounds"]:
            for f in r["failures"]:
                lines.append(f"- {row['scenario']}, round {r['round']}: node {f['node_id']}: {f['reason']}")
    shaped = [row for row in ROWS if "impairment" in row]
    for row in shaped:
        lines += [
            "",
            f"Impaired link ({row['scenario']}): `tc qdisc {row['impairment']}` on both ends; "
            f"{row['shaped_link']['sent_packets']} packets sent through it, {row['shaped_link']['dropped']} "
            "dropped.",
        ]
    lines += [
        "",
        "Distance to fault-free: |w_fault - w_ref| / |w_ref(last) - w_ref(round 1)| of the final "
        "global students. AUC on the synthetic validation fold (~12 records) is noisy.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def close_to_reference(cmp: dict) -> None:
    assert cmp["finite"]
    assert cmp["relative_distance"] <= MAX_RELATIVE_DISTANCE, cmp
    assert cmp["auc_gap"] <= MAX_AUC_GAP, cmp


@pytest.fixture(scope="module")
def fault_free(sites) -> dict:
    site, done = outcome(sites, "reference")
    shown = completed(site, done)
    for entry in shown["rounds"]:
        assert [c["status"] for c in entry["client_reports"]] == ["ok", "ok"]
    return shown


# --- the short suite (CI) ---------------------------------------------------------------------


@pytest.mark.faults
def test_link_cut_and_impaired_link(sites, fault_free) -> None:
    site, done = outcome(sites, "test_link_cut_and_impaired_link")
    shown = completed(site, done)
    r1, r2 = shown["rounds"]
    # round 1: the 8-s outage ended before the round timeout, so both replies arrived
    assert sorted(c["status"] for c in r1["client_reports"]) == ["ok", "ok"]
    # round 2: the unplugged node is recorded as failed, with its id and the reason
    failed = [c for c in r2["client_reports"] if c["status"] != "ok"]
    assert [c["node_id"] for c in failed] == [done["victim"]]
    assert SILENT.search(failed[0]["reason"]), failed
    assert r2["n_failures"] == 1 and len(r2["participants"]) == 1
    assert all(done["clients_alive"])
    # the shaped link carried the other client's traffic
    assert done["shaped_link"]["sent_packets"] > 100, done["shaped_link"]

    cmp = compare(shown, fault_free)
    record("link cut (8 s in round 1; all of round 2) + impaired link", site, shown, done, cmp)
    # same participants and seeds in round 1: a bit-equal checkpoint, impaired link and outage notwithstanding
    assert cmp["identical_rounds"] == [1], cmp
    close_to_reference(cmp)


# --- the long suite (-m faults_long) ----------------------------------------------------------


@pytest.mark.faults
@pytest.mark.faults_long
def test_link_outage_and_recovery(sites, fault_free) -> None:
    site, done = outcome(sites, "test_link_outage_and_recovery")
    shown = completed(site, done)
    r1, _, r3 = shown["rounds"]
    failed = [c for c in r1["client_reports"] if c["status"] != "ok"]
    assert [c["node_id"] for c in failed] == [done["victim"]] and SILENT.search(failed[0]["reason"]), failed
    assert done["victim"] in r3["participants"] and len(r3["participants"]) == 2  # back after the outage
    assert all(done["clients_alive"])
    cmp = compare(shown, fault_free)
    record(f"link outage ({done['outage_s']:.0f} s from round 1's train message)", site, shown, done, cmp)
    close_to_reference(cmp)


@pytest.mark.faults
@pytest.mark.faults_long
def test_supernode_killed_and_restarted(sites, fault_free) -> None:
    site, done = outcome(sites, "test_supernode_killed_and_restarted")
    shown = completed(site, done)
    r1, r2, r3 = shown["rounds"]
    assert sorted(c["status"] for c in r1["client_reports"]) == ["ok", "ok"]
    dead = [c for c in r2["client_reports"] if c["node_id"] == done["victim"]]
    assert [c["status"] for c in dead] == ["failed"]
    assert SILENT.search(dead[0]["reason"]), dead
    assert done["restarted"] != done["victim"] and done["restarted"] in r3["participants"]
    cmp = compare(shown, fault_free)
    record("SuperNode killed and restarted", site, shown, done, cmp)
    assert cmp["identical_rounds"][:1] == [1], cmp
    close_to_reference(cmp)


@pytest.mark.faults
@pytest.mark.faults_long
def test_server_killed_and_resumed(sites, fault_free) -> None:
    site, done = outcome(sites, "test_server_killed_and_resumed")
    shown = completed(site, done)
    assert shown["run"]["id"] == done["run_id"]
    assert all(done["clients_alive"])  # the SuperNodes reconnected to the restarted SuperLink by themselves
    for entry in shown["rounds"]:
        assert sorted(c["status"] for c in entry["client_reports"]) == ["ok", "ok"]
    cmp = compare(shown, fault_free)
    record("server killed and resumed", site, shown, done, cmp)
    assert cmp["identical_rounds"][:1] == [1], cmp  # the checkpoint it resumed from
    assert cmp["finite"] and cmp["auc_gap"] <= MAX_AUC_GAP, cmp


@pytest.mark.faults
@pytest.mark.faults_long
def test_a_resumed_run_equals_an_uninterrupted_one(sites, fault_free) -> None:
    """The clients' distillation heads outlive Flower's per-run context (``persist-state``, keyed by the registry's
    run id), so the rounds after a resume are those of an uninterrupted run."""
    site, done = outcome(sites, "test_server_killed_and_resumed")
    shown = completed(site, done)
    # the same participants, seeds and data in every round: the issue asks for the same model
    assert compare(shown, fault_free)["identical_rounds"] == [1, 2, 3]


@pytest.mark.faults
@pytest.mark.faults_long
def test_a_resumed_kd_run_equals_an_uninterrupted_one(sites) -> None:
    """Method kd keeps nothing on the clients between rounds: killed and resumed, the run is bit-equal."""
    ref_site, ref_done = outcome(sites, "reference-kd")
    reference_kd = completed(ref_site, ref_done)
    site, done = outcome(sites, "test_a_resumed_kd_run_equals_an_uninterrupted_one")
    shown = completed(site, done)
    assert shown["run"]["id"] == done["run_id"] and all(done["clients_alive"])
    cmp = compare(shown, reference_kd)
    record("server killed and resumed (method kd)", site, shown, done, cmp)
    assert cmp["identical_rounds"] == [1, 2, 3], cmp


@pytest.mark.faults
@pytest.mark.faults_long
def test_client_joins_late(sites, fault_free) -> None:
    site, done = outcome(sites, "test_client_joins_late")
    shown = completed(site, done)
    r1, *later = shown["rounds"]
    assert len(r1["participants"]) == 2 and done["late"] not in r1["participants"]
    assert done["late"] in later[-1]["participants"] and len(later[-1]["participants"]) == 3
    assert all(c["status"] == "ok" for r in shown["rounds"] for c in r["client_reports"])
    cmp = compare(shown, fault_free)
    record("client joins late", site, shown, done, cmp)
    assert cmp["identical_rounds"][:1] == [1], cmp
    close_to_reference(cmp)


# --- the harness itself -----------------------------------------------------------------------


@pytest.mark.faults
def test_testbed_cuts_restores_impairs_and_cleans_up(testbed: netns.Testbed) -> None:
    """Two hosts on a fresh testbed: reachable, unreachable while cut, reachable again; all gone after close."""
    import subprocess
    import sys

    def own_links() -> list[str]:  # the interfaces of the machine's own namespace
        shown = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        return sorted(line.split(":")[1].strip() for line in shown.splitlines())

    before = own_links()
    bed = netns.Testbed("unit")
    try:
        a, b = bed.add_host("a"), bed.add_host("b")
        assert a.address != b.address and a.address.rsplit(".", 1)[0] == bed.subnet
        assert bed.subnet != testbed.subnet  # `start` tells SuperLinks apart by address
        listener = subprocess.Popen(
            b.argv(
                [
                    sys.executable,
                    "-c",
                    (
                        "import socket\ns = socket.create_server(('0.0.0.0', 7000))\n"
                        "while True:\n    c, _ = s.accept(); c.sendall(b'ok'); c.close()"
                    ),
                ]
            ),
            stdout=subprocess.DEVNULL,
        )

        def reach() -> bool:
            code = (
                f"import socket; s = socket.create_connection(('{b.address}', 7000), timeout=2); "
                "assert s.recv(2) == b'ok'"
            )
            return (
                subprocess.run(a.argv([sys.executable, "-c", code]), capture_output=True, check=False).returncode == 0
            )

        assert netns.wait_until(reach, 20, every=0.2)
        bed.cut(b)
        assert not reach()
        bed.restore(b)
        assert netns.wait_until(reach, 20, every=0.2)
        applied = bed.impair(b, delay_ms=50, jitter_ms=10, loss_pct=1)
        assert applied.startswith("netem" if bed.has_netem() else "tbf")
        assert netns.wait_until(reach, 20, every=0.2)
        assert bed.link_stats(b)["sent_packets"] > 0
        names = bed.leftovers()
        assert len(names) == 3 and all(n.startswith(bed.prefix) for n in names)
        assert own_links() == before  # nothing was created in the machine's own namespace
    finally:
        bed.close()
    listener.wait(timeout=10)  # it ran inside b: close() killed it
    assert bed.leftovers() == []


def test_server_host_must_be_an_address_of_this_machine(tmp_path: Path) -> None:
    """`start --host` (what puts the SuperLink on a test host) refuses names and foreign addresses up front."""
    from server.cli import app

    runner = CliRunner()
    base = ["start", "--data", "synth", "--rounds", "1", "--min-clients", "1", "--run-dir", str(tmp_path / "runs")]
    name = runner.invoke(app, [*base, "--host", "localhost"])
    foreign = runner.invoke(app, [*base, "--host", "192.0.2.77"])  # TEST-NET-1: never assigned to a machine

    assert name.exit_code == 2 and "--host 'localhost' is not an IP address" in name.output
    assert foreign.exit_code == 2 and "--host 192.0.2.77 is not an address of this machine" in foreign.output
    assert "Traceback" not in name.output + foreign.output
    assert not (tmp_path / "runs" / ".flwr").exists()  # nothing was started
