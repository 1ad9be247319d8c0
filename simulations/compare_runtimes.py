"""``liteheart-sim run`` (``run_simulation``) against ``flwr run .`` (Flower's SuperLink simulation runtime).

Runs the same federation both ways, one after the other, and records for each the wall time (the
SuperLink's start-up included for ``flwr run``), the peak memory of all its processes together
(resident set sizes summed over the process tree, sampled every 0.25 s; the detached SuperLink and
its children included) and the final scores, which must agree. Writes ``results/runtimes.md`` and
``.json``. The teacher should be cached beforehand (``LITEHEART_CACHE``), so both measure the same work.

    python -m simulations.compare_runtimes --rounds 2 --clients 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from liteheart_core.cli.processes import flower_exe, free_port

REPO = Path(__file__).resolve().parents[1]


def _tree_rss(roots: list[int]) -> int:
    """Summed resident memory (bytes) of ``roots`` and all their descendants, read from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * page
        except (OSError, IndexError, ValueError):
            continue
    keep, frontier = set(roots), set(roots)
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - keep
        keep |= frontier
    return sum(rss.get(p, 0) for p in keep)


class Sampler:
    """Peak summed RSS of a set of process trees, sampled on a thread."""

    def __init__(self) -> None:
        self.roots: list[int] = []
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(list(self.roots)))
            time.sleep(0.25)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _scores(registry_dir: Path, env: dict) -> dict:
    listed = subprocess.run(
        [sys.executable, "-m", "server.cli", "runs", "list", "--run-dir", str(registry_dir), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    run = json.loads(listed.stdout)[0]
    shown = subprocess.run(
        [sys.executable, "-m", "server.cli", "runs", "show", run["id"], "--run-dir", str(registry_dir), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    last = json.loads(shown.stdout)["rounds"][-1]["central_metrics"]
    return {
        "run_id": run["id"],
        "status": run["status"],
        "rounds": run["rounds"],
        "macro_f1": round(last["macro_f1"], 4),
        "macro_auc": round(last["macro_auc"], 4),
    }


def run_sim(work: Path, args: argparse.Namespace, env: dict) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "run",
        "--clients",
        str(args.clients),
        "--rounds",
        str(args.rounds),
        "--device",
        "cpu",
        "--run-dir",
        str(work / "runs"),
        "--method",
        args.method,
        "--local-epochs",
        str(args.local_epochs),
        "--data",
        args.data,
    ] + (["--teacher", str(args.teacher)] if args.teacher else [])
    start = time.perf_counter()
    with Sampler() as sampler:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sampler.roots.append(proc.pid)
        _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"liteheart-sim run failed:\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(sampler.peak / 2**20), **_scores(work / "runs", env)}


def run_flwr(work: Path, args: argparse.Namespace, env: dict) -> dict:
    http, control = free_port(), free_port()
    env = {
        **env,
        "FLWR_HOME": str(work / "flwr-home"),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    home = work / "flwr-home" / "local-superlink"
    home.mkdir(parents=True)
    start = time.perf_counter()
    with Sampler() as sampler:
        # the SuperLink `flwr run` starts on first use (same command), started here to time and measure it
        link = subprocess.Popen(
            [
                flower_exe("flower-superlink"),
                "--insecure",
                "--simulation",
                "--isolation",
                "subprocess",
                "--control-api-address",
                f"127.0.0.1:{control}",
                "--host",
                "127.0.0.1",
                "--port",
                str(http),
                "--database",
                str(home / "state.db"),
            ],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sampler.roots.append(link.pid)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=1):
                        break
                except OSError:
                    time.sleep(0.2)
            ready = time.perf_counter() - start
            done = subprocess.run(
                [
                    flower_exe("flwr"),
                    "run",
                    str(REPO),
                    "--run-config",
                    f"clients={args.clients} rounds={args.rounds} device='cpu' method='{args.method}' "
                    f"local-epochs={args.local_epochs} data='{args.data}'"
                    + (f" teacher='{args.teacher}'" if args.teacher else ""),
                    "--federation-config",
                    f"num-supernodes={args.clients} client-resources-num-cpus=1 init-args-log-to-driver=false",
                    "--stream",
                ],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - start
        finally:
            link.terminate()
            link.wait(timeout=60)
    if done.returncode:
        raise RuntimeError(f"flwr run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return {
        "wall_s": round(wall, 1),
        "superlink_ready_s": round(ready, 1),
        "peak_rss_mb": round(sampler.peak / 2**20),
        **_scores(work / "runs", env),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--method", default="liteheart-v2")
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--data", default="synth", help="synth or a folder (as liteheart-sim run --data)")
    parser.add_argument("--teacher", type=Path, default=None, help="a teacher checkpoint (default: cached/trained)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "runtimes")
    args = parser.parse_args()
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lh-runtimes-") as tmp:
        (Path(tmp) / "sim").mkdir()
        (Path(tmp) / "flwr").mkdir()
        sim = run_sim(Path(tmp) / "sim", args, env)
        flwr = run_flwr(Path(tmp) / "flwr", args, env)
    doc = {
        "clients": args.clients,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "liteheart_sim_run": sim,
        "flwr_run": flwr,
    }
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = [
        ("", "liteheart-sim run", "flwr run ."),
        ("runtime", "run_simulation (in-process)", "local SuperLink, simulation mode"),
        ("wall time (s)", sim["wall_s"], flwr["wall_s"]),
        ("of which SuperLink start-up (s)", "-", flwr["superlink_ready_s"]),
        ("peak memory, all processes (MiB)", sim["peak_rss_mb"], flwr["peak_rss_mb"]),
        (
            "final macro F1 / AUC",
            f"{sim['macro_f1']} / {sim['macro_auc']}",
            f"{flwr['macro_f1']} / {flwr['macro_auc']}",
        ),
    ]
    table = (
        "\n".join(f"| {' | '.join(map(str, r))} |" for r in rows[:1])
        + "\n| --- | --- | --- |\n"
        + "\n".join(f"| {' | '.join(map(str, r))} |" for r in rows[1:])
    )
    args.out.with_suffix(".md").write_text(
        f"# `liteheart-sim run` vs `flwr run .`\n\nThe same federation ({args.clients} clients, {args.rounds} rounds, "
        f"method {args.method}, {args.local_epochs} local epochs, data {args.data}, teacher "
        f"{args.teacher or 'cached'}, CPU) run both ways, one after the other, on a {os.cpu_count()}-core "
        f"machine shared with other jobs (1-min load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after); "
        f"`python -m simulations.compare_runtimes {' '.join(sys.argv[1:])}`.\n\n{table}\n"
    )
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
