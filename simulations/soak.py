"""Soak: a long real deployment with random client churn; memory and open files measured over time.

``python -m simulations.soak [--rounds 100] [--clients 3] [--out results/soak]`` starts
``liteheart-server start`` and ``--clients`` ``liteheart-client start`` processes, each on a
test host of its own (network namespaces, ``simulations.netns``; on loopback with
``--loopback`` or when namespaces cannot be created), on tiny synthetic data and a tiny
teacher so that a round takes seconds. While the run goes on, after each recorded round a
seeded coin decides whether one SuperNode (its whole process group) is SIGKILLed, and it
is restarted a random 0-``--max-down`` seconds later (at most one down at a time). Every
``--every`` seconds the RSS and open file descriptors of the long-lived processes (server
CLI, SuperLink, SuperExec, ServerApp, each SuperNode and its CLI) are read from /proc.

The report (``OUT.md`` + ``OUT.json``): rounds completed and recorded exactly once,
rounds lost, faults injected, client failures recorded, and per process role the series
and a least-squares slope (MiB and FDs per 100 rounds) over the run after its first
10 rounds (warm-up: imports, caches, the teacher). ClientApp processes live one message
each and are not sampled.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from liteheart_core.cli.processes import LOOPBACK, descendants, free_port
from simulations import netns
from simulations.netns import Service, clean_env, wait_until

app = typer.Typer(add_completion=False)
WARMUP_ROUNDS = 10
ROLES = {
    "flower-superlink": "superlink",
    "flower-superexec": "superexec",
    "flwr-serverapp": "serverapp",
    "flower-supernode": "supernode",
}


def proc_sample(pid: int) -> tuple[str, float, int] | None:
    """(program, RSS in MiB, open FDs) of a live process; None when it is gone or a zombie."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip().startswith("Z") or "VmRSS" not in fields:
        return None
    rss = int(fields["VmRSS"].split()[0]) / 1024
    names = [Path(a).name for a in argv[:3]]
    program = next((ROLES[n] for n in names if n in ROLES), "")
    if not program and "flwr-clientapp" in names:
        return None  # one message each: not a leak candidate
    return program or "cli", rss, fds


def sample_tree(label: str, service: Service) -> dict[str, dict]:
    """RSS and FDs of a CLI and its long-lived descendants, keyed by ``label/role``."""
    found: dict[str, dict] = {}
    for pid in [service.proc.pid] + [p for p, _ in descendants(service.proc.pid)]:
        got = proc_sample(pid)
        if got is None:
            continue
        role, rss, fds = got
        key = f"{label}/{role}"
        entry = found.setdefault(key, {"rss_mib": 0.0, "fds": 0, "pids": []})
        entry["rss_mib"] += rss
        entry["fds"] += fds
        entry["pids"].append(pid)
    return found


def slope_per_100(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or max(xs) == min(xs):
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0] * 100)


def prepare_inputs(work: Path, records: int) -> tuple[Path, Path]:
    """Synthetic records prepared once, and a tiny 12-lead teacher trained on them (both cached in ``work``)."""
    from liteheart_core.checkpoint import save_checkpoint
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.data.synth import write_synth_ptbxl
    from liteheart_core.train import TrainConfig, checkpoint_meta, train

    raw = work / f"synth-{records}"
    if not raw.is_dir():
        write_synth_ptbxl(raw, n=records, seed=1)
    data = resolve_data(raw, cache_dir=work / "prepared")
    teacher = work / "teacher.pt"
    if not teacher.is_file():
        tiny = {
            "kind": "xresnet1d",
            "widths": [8, 16, 16, 16],
            "depths": [1, 1, 1, 1],
            "kernel_size": 5,
            "stem_width": 8,
            "norm": "batch",
            "dropout": 0.0,
            "block": "basic",
            "stem_convs": 1,
        }
        cfg = TrainConfig(method="teacher", epochs=3, batch_size=32, lr=3e-3, device="cpu", net=tiny)
        result = train(data, cfg)
        save_checkpoint(teacher, result.model, checkpoint_meta(data, cfg, result))
    return Path(data.root), teacher


@app.command()
def main(
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 100,
    clients: Annotated[int, typer.Option(help="SuperNodes (at least 2 stay connected: min-clients 2).")] = 3,
    churn: Annotated[
        float, typer.Option(help="Chance, after each recorded round, that one SuperNode is killed.")
    ] = 0.25,
    max_down: Annotated[float, typer.Option(help="A killed SuperNode is restarted after 0..this many seconds.")] = 20.0,
    round_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds the server waits for replies in a round (a killed node is answered for by Flower's heartbeat expiry within 60 s)."
        ),
    ] = 120.0,
    every: Annotated[float, typer.Option(help="Seconds between memory/FD samples.")] = 5.0,
    records: Annotated[int, typer.Option(help="Synthetic records (the server's and the clients' data).")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the churn.")] = 0,
    loopback: Annotated[
        bool, typer.Option("--loopback", help="Run on 127.0.0.1 instead of network namespaces.")
    ] = False,
    work: Annotated[Path, typer.Option(help="Working folder (run folder, logs, data, teacher).")] = Path("runs/soak"),
    out: Annotated[Path, typer.Option(help="Report path without suffix: OUT.md and OUT.json.")] = Path("results/soak"),
    limit: Annotated[
        float | None, typer.Option(help="Stop the run after this many seconds (report what was done).")
    ] = None,
) -> None:
    """Run the soak and write its report."""
    if rounds < 1 or clients < 2 or not 0 <= churn <= 1 or every <= 0:
        raise typer.BadParameter("need --rounds >= 1, --clients >= 2, --churn in [0, 1], --every > 0")
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "simulations.soak", *sys.argv[1:]])
    work = work.expanduser().resolve()
    run_dir = work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    data, teacher = prepare_inputs(work, records)

    bed, mode = None, "loopback"
    if not loopback:
        reason = netns.unavailable_reason()
        if reason:
            print(f"network namespaces unavailable ({reason}); running on loopback", file=sys.stderr)
        else:
            netns.sweep_stale()
            bed, mode = netns.Testbed("soak"), "network namespaces"
    server_host = bed.add_host("server") if bed else None
    host_addr = server_host.address if server_host else LOOPBACK
    port = 9092 if bed else free_port()
    client_hosts = [bed.add_host(f"c{i}") if bed else None for i in range(clients)]
    env = clean_env({"LITEHEART_CACHE": str(work / "cache")})
    logs = run_dir / "logs"
    scenario = run_dir / "scenario.toml"
    scenario.write_text('batch-size = 16\ndevice = "cpu"\nmin-replies = 1\nseed = 0\nlocal-epochs = 1\n')

    def start_client(i: int, generation: int) -> Service:
        return Service(
            f"client{i}-{generation}",
            [
                sys.executable,
                "-m",
                "client.cli",
                "start",
                "--server",
                f"{host_addr}:{port}",
                "--data",
                str(data),
                "--partition-id",
                str(i),
                "--num-partitions",
                str(clients),
                "--cache-dir",
                str(run_dir / f"node{i}"),
            ],
            env,
            logs,
            client_hosts[i],
        )

    rng = random.Random(seed)
    services: list[Service] = []
    samples: list[dict] = []
    faults: list[dict] = []
    t0 = time.monotonic()
    server = Service(
        "server",
        [
            sys.executable,
            "-m",
            "server.cli",
            "start",
            "--host",
            host_addr,
            "--port",
            str(port),
            "--run-dir",
            str(run_dir),
            "--json",
            "--data",
            str(data),
            "--teacher",
            str(teacher),
            "--scenario",
            str(scenario),
            "--rounds",
            str(rounds),
            "--min-clients",
            "2",
            "--clients-expected",
            str(clients),
            "--round-timeout",
            str(round_timeout),
        ],
        env,
        logs,
        server_host,
    )
    services.append(server)
    nodes: dict[int, Service] = {}
    generation = dict.fromkeys(range(clients), 0)
    down: tuple[int, float] | None = None  # (client, restart time)
    registry_file = run_dir / "registry.sqlite"
    recorded, next_sample, stopped_early = 0, 0.0, None
    try:
        if (
            not wait_until(lambda: "waiting for clients" in server.text() or not server.alive(), 150)
            or not server.alive()
        ):
            raise RuntimeError(f"the server did not start:\n{server.text()[-3000:]}")
        for i in range(clients):
            nodes[i] = start_client(i, 0)
            services.append(nodes[i])
        while server.alive():
            now = time.monotonic() - t0
            if limit is not None and now > limit:
                stopped_early = f"--limit {limit:.0f} s reached"
                break
            done = rounds_recorded(registry_file)
            if done > recorded:
                recorded = done
                print(f"[{now:7.0f} s] round {done}/{rounds} recorded", file=sys.stderr, flush=True)
                if down is None and done < rounds and rng.random() < churn:
                    victim = rng.randrange(clients)
                    nodes[victim].kill_group(signal.SIGKILL)
                    nodes[victim].proc.wait(timeout=10)
                    wait_s = rng.uniform(0, max_down)
                    down = (victim, time.monotonic() + wait_s)
                    faults.append(
                        {
                            "kind": "SuperNode SIGKILL",
                            "client": victim,
                            "after_round": done,
                            "t_s": round(now, 1),
                            "restart_after_s": round(wait_s, 1),
                        }
                    )
            if down is not None and time.monotonic() >= down[1]:
                victim = down[0]
                generation[victim] += 1
                nodes[victim] = start_client(victim, generation[victim])
                services.append(nodes[victim])
                faults[-1]["restarted_t_s"] = round(time.monotonic() - t0, 1)
                down = None
            if time.monotonic() >= next_sample:
                snap = sample_tree("server", server)
                for i, node in nodes.items():
                    if node.alive():
                        snap.update(sample_tree(f"client{i}-{generation[i]}", node))
                samples.append(
                    {
                        "t_s": round(time.monotonic() - t0, 1),
                        "round": recorded,
                        "procs": {k: {"rss_mib": round(v["rss_mib"], 2), "fds": v["fds"]} for k, v in snap.items()},
                    }
                )
                next_sample = time.monotonic() + every
            time.sleep(0.5)
        code = server.proc.wait(timeout=60) if stopped_early is None else None
    finally:
        for service in reversed(services):
            service.stop(grace=15)
        if bed is not None:
            bed.close()
    wall = time.monotonic() - t0
    report = build_report(
        run_dir,
        rounds,
        samples,
        faults,
        code,
        wall,
        mode,
        command,
        stopped_early,
        clients,
        churn,
        round_timeout,
        server,
    )
    write_report(report, out)
    print(json.dumps({k: report[k] for k in ("rounds_completed", "rounds_lost", "faults_injected", "run_status")}))


def rounds_recorded(registry_file: Path) -> int:
    from liteheart_core.storage import Registry, RegistryError

    if not registry_file.is_file():
        return 0
    try:
        with Registry(f"sqlite:///{registry_file}") as registry:
            runs = registry.list_runs()
            return int(runs[0]["rounds"]) if runs else 0
    except RegistryError:
        return 0


def build_report(
    run_dir: Path,
    rounds: int,
    samples: list[dict],
    faults: list[dict],
    code: int | None,
    wall: float,
    mode: str,
    command: str,
    stopped_early: str | None,
    clients: int,
    churn: float,
    round_timeout: float,
    server: Service,
) -> dict:
    from liteheart_core.storage import Registry

    with Registry(f"sqlite:///{run_dir / 'registry.sqlite'}") as registry:
        runs = registry.list_runs()
        shown: dict[str, Any] = registry.show_run(runs[0]["id"]) if runs else {"run": {"status": "none"}, "rounds": []}
    numbers = [r["number"] for r in shown["rounds"]]
    failures = [
        {"round": r["number"], "node_id": c["node_id"], "reason": c["reason"]}
        for r in shown["rounds"]
        for c in r["client_reports"]
        if c["status"] != "ok"
    ]
    series: dict[str, dict] = {}
    for s in samples:
        for key, v in s["procs"].items():
            entry = series.setdefault(key, {"t_s": [], "round": [], "rss_mib": [], "fds": []})
            entry["t_s"].append(s["t_s"])
            entry["round"].append(s["round"])
            entry["rss_mib"].append(v["rss_mib"])
            entry["fds"].append(v["fds"])
    trends = {}
    for key, e in series.items():
        keep = [i for i, r in enumerate(e["round"]) if r >= WARMUP_ROUNDS]
        xs = [e["round"][i] for i in keep]
        trends[key] = {
            "samples": len(e["round"]),
            "rounds_seen": [min(e["round"]), max(e["round"])],
            "rss_mib_first": e["rss_mib"][0],
            "rss_mib_last": e["rss_mib"][-1],
            "rss_mib_max": max(e["rss_mib"]),
            "fds_first": e["fds"][0],
            "fds_last": e["fds"][-1],
            "fds_max": max(e["fds"]),
            "rss_mib_per_100_rounds": slope_per_100(xs, [e["rss_mib"][i] for i in keep]),
            "fds_per_100_rounds": slope_per_100(xs, [e["fds"][i] for i in keep]),
        }
    uname = platform.uname()
    return {
        "command": command,
        "mode": mode,
        "machine": f"{uname.system} {uname.node} {uname.release} {uname.machine}",
        "cores": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "clients": clients,
        "churn": churn,
        "round_timeout_s": round_timeout,
        "rounds_requested": rounds,
        "rounds_completed": len(numbers),
        "rounds_each_once": numbers == list(range(1, len(numbers) + 1)),
        # a finished run must hold all its rounds; one stopped at --limit, every round up to its last
        "rounds_lost": (rounds if stopped_early is None else max(numbers, default=0)) - len(set(numbers)),
        "stopped_early": stopped_early,
        "run_status": shown["run"]["status"],
        "server_exit": code,
        "wall_s": round(wall, 1),
        "faults_injected": len(faults),
        "faults": faults,
        "client_failures_recorded": len(failures),
        "failures": failures,
        "rounds_aggregated": sum(1 for r in shown["rounds"] if r["train_metrics"].get("aggregated", 1.0) == 1.0),
        "trends": trends,
        "series": series,
        "run_dir": str(run_dir),
        "server_log_tail": server.text()[-1500:] if code not in (0, None) else "",
    }


def plot_series(report: dict, keys: list[str], path: Path) -> None:
    """RSS and open FDs against the round number, one line per long-lived process."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5))
    FigureCanvasAgg(fig)
    rss, fds = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    for key in keys:
        e = report["series"][key]
        rss.plot(e["round"], e["rss_mib"], label=key, lw=1)
        fds.plot(e["round"], e["fds"], label=key, lw=1)
    for f in report["faults"]:
        for ax in (rss, fds):
            ax.axvline(f["after_round"], color="grey", lw=0.5, ls=":")
    rss.set_ylabel("RSS (MiB)")
    fds.set_ylabel("open file descriptors")
    fds.set_xlabel("rounds recorded (dotted: a SuperNode killed)")
    rss.legend(fontsize=7, ncol=3)
    rss.set_title(f"Soak: {report['rounds_completed']} rounds, {report['faults_injected']} SuperNode kills")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    long_lived = {k: v for k, v in report["trends"].items() if k.startswith("server/") or "-0/" in k}
    figure = out.with_name(out.name + "_memory.png")
    plot_series(report, sorted(long_lived), figure)
    lines = [
        "# Soak: a long deployment with random client churn",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, {report['cores']} cores (shared with other work), {report['date_utc']} UTC; "
        f"processes on {report['mode']}.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| rounds requested | {report['rounds_requested']} |",
        f"| rounds completed (recorded in the registry) | {report['rounds_completed']} |",
        f"| every round recorded exactly once, in order | {report['rounds_each_once']} |",
        f"| rounds lost{' (of those up to the last recorded)' if report['stopped_early'] else ''} | "
        f"{report['rounds_lost']} |",
        f"| stopped early | {report['stopped_early'] or 'no'} |",
        f"| run status / server exit code | {report['run_status']} / {report['server_exit']} |",
        f"| faults injected (SuperNode SIGKILL, then restart) | {report['faults_injected']} |",
        f"| client failures recorded (node, reason) | {report['client_failures_recorded']} |",
        f"| rounds aggregated (>= 1 usable reply) | {report['rounds_aggregated']} |",
        f"| wall time | {report['wall_s'] / 60:.1f} min |",
        "",
        f"Memory and open files per process role, sampled every few seconds; slopes are least-squares fits against "
        f"the round number over rounds >= {WARMUP_ROUNDS} (after warm-up), in units per 100 rounds. `client0-0` "
        "is the first SuperNode of client 0 (the one that lived longest unless churn hit it); every series is in "
        "`soak.json`.",
        "",
        "| process | samples | rounds | RSS first → last (max), MiB | RSS slope, MiB/100 rounds | FDs first → last "
        "(max) | FD slope /100 rounds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, t in sorted(long_lived.items()):
        rs = "n/a" if t["rss_mib_per_100_rounds"] is None else f"{t['rss_mib_per_100_rounds']:+.2f}"
        fs = "n/a" if t["fds_per_100_rounds"] is None else f"{t['fds_per_100_rounds']:+.2f}"
        lines.append(
            f"| {key} | {t['samples']} | {t['rounds_seen'][0]}–{t['rounds_seen'][1]} | "
            f"{t['rss_mib_first']:.1f} → {t['rss_mib_last']:.1f} ({t['rss_mib_max']:.1f}) | {rs} | "
            f"{t['fds_first']} → {t['fds_last']} ({t['fds_max']}) | {fs} |"
        )
    lines += ["", f"![RSS and open FDs over the run]({figure.name})", "", "Faults injected:", ""]
    lines += [
        f"- after round {f['after_round']}: client {f['client']} SIGKILLed at {f['t_s']} s, restarted "
        f"{f['restart_after_s']} s later"
        for f in report["faults"]
    ] or ["- none"]
    reasons: dict[str, int] = {}
    for f in report["failures"]:
        reason = f["reason"] or "?"
        reasons[reason] = reasons.get(reason, 0) + 1
    lines += ["", "Client failures recorded, by reason:", ""]
    lines += [f"- {n} × {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])] or ["- none"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    app()
