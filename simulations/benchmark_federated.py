"""Federated LiteHeart on real PTB-XL with a server archive disjoint from the clients' records.

Trains the server's teacher on its own archive folds (``--server-folds``, all their
labels), runs ``liteheart-sim run`` with the clients holding the other training folds,
scores the final global student once on fold 8, and trains the same method centrally on
the clients' records with the same teacher for comparison. Writes
``results/federated_benchmark.{md,json}``::

    python -m simulations.benchmark_federated --data ../shared/data/ptbxl --partition site --clients 8 \\
        --rounds 20 --labelled-fraction 0.1 --server-folds 1,2

Not part of the test suite (about 30 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulations.benchmark_central import machine


def run_with_progress(cmd: list[str], rounds: int) -> tuple[int, str, str]:
    """Run ``liteheart-sim run`` with a bar that advances on each of its ``round N/R:`` lines."""
    from liteheart_core.cli.progress import job_progress

    lines = []
    with tempfile.TemporaryFile("w+") as stdout, job_progress("federated rounds", rounds) as done:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
        if proc.stderr is None:  # stderr=PIPE above: never
            raise RuntimeError("no stderr pipe to read the rounds from")
        for line in proc.stderr:  # the JSON summary goes to a file, so this pipe is the only one to drain
            lines.append(line)
            if re.match(r"round\s+\d+/\d+:", line):
                done(line.split(":", 1)[1].strip()[:70])
        code = proc.wait()
        stdout.seek(0)
        return code, stdout.read(), "".join(lines)


def train_archive_teacher(data_path: str, server_folds: tuple[int, ...], out: Path, epochs: int) -> Path:
    """The server's teacher, trained on its own archive folds only (all their labels); reused when present."""
    from liteheart_core.checkpoint import save_checkpoint
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.train import TrainConfig, checkpoint_meta, train

    if out.is_file():
        return out
    data = resolve_data(Path(data_path))
    cfg = TrainConfig(method="teacher", epochs=epochs, lr=1e-3, train_folds=server_folds)
    result = train(data, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, result.model, checkpoint_meta(data, cfg, result))
    return out


def central_runs(
    data_path: str,
    teacher: Path,
    method: str,
    client_folds: tuple[int, ...],
    fraction: float,
    seeds: list[int],
    epochs: int,
    work: Path,
) -> list[dict]:
    """The same method trained centrally on the records the clients hold, with the same teacher, scored on fold 8."""
    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.scoring import score
    from liteheart_core.train import TrainConfig, checkpoint_meta, train

    data = resolve_data(Path(data_path))
    net_t, _ = load_checkpoint(teacher)
    rows = []
    for seed in seeds:
        cfg = TrainConfig(
            method=method, labelled_fraction=fraction, seed=seed, epochs=epochs, patience=15, train_folds=client_folds
        )
        result = train(data, cfg, teacher=net_t, bank_cache=work / "banks")
        meta = checkpoint_meta(data, cfg, result)
        test = score(result.model, meta, data, "test", device="cpu", n_bootstrap=0)
        rows.append(
            {
                "seed": seed,
                "val_macro_auc": result.val_metrics["macro_auc"],
                "test": {k: test[k] for k in ("macro_f1", "macro_auc", "macro_ap")},
                "epochs": len(result.history),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl")
    parser.add_argument("--partition", default="site")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--labelled-fraction", type=float, default=0.1)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--method", default="")
    parser.add_argument(
        "--server-folds",
        default="1,2",
        help="the server's own archive (its teacher learns from these folds alone; no client holds "
        "them); empty: the teacher is --teacher and clients hold every training fold",
    )
    parser.add_argument(
        "--teacher",
        default="",
        help="teacher checkpoint (default with --server-folds: trained on those folds and kept in --run-dir)",
    )
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--central-seeds", default="0,1,2", help="seeds of the centralised comparison")
    parser.add_argument("--central-epochs", type=int, default=60)
    parser.add_argument("--run-dir", default="runs/federated_benchmark")
    parser.add_argument("--out", default="results")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    args = parser.parse_args(argv)

    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.config import FedConfig
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.scoring import score

    fed = FedConfig.from_dict({"server-folds": args.server_folds, **({"method": args.method} if args.method else {})})
    method = fed.method
    run_dir = Path(args.run_dir)
    t0 = time.time()
    teacher = Path(args.teacher) if args.teacher else None
    if teacher is None:
        if not fed.server_fold_tuple:
            sys.exit("give --teacher, or --server-folds for a teacher trained on the server's own archive")
        teacher = train_archive_teacher(
            args.data, fed.server_fold_tuple, run_dir / "archive_teacher.pt", args.teacher_epochs
        )
    teacher_seconds = time.time() - t0
    _, tmeta = load_checkpoint(teacher)
    run_cmd = [
        "liteheart-sim",
        "run",
        "--data",
        args.data,
        "--partition",
        args.partition,
        "--clients",
        str(args.clients),
        "--rounds",
        str(args.rounds),
        "--labelled-fraction",
        str(args.labelled_fraction),
        "--local-epochs",
        str(args.local_epochs),
        "--run-dir",
        args.run_dir,
        "--json",
        "--method",
        method,
        "--teacher",
        str(teacher),
    ]
    if args.server_folds:
        run_cmd += ["--server-folds", args.server_folds]
    t1 = time.time()
    code, stdout, stderr = run_with_progress(run_cmd, args.rounds)
    if code != 0:
        sys.exit(f"the federated run failed:\n{stderr[-2000:]}")
    summary = json.loads(stdout)
    seconds = time.time() - t1
    data = resolve_data(Path(args.data))
    net, meta = load_checkpoint(Path(summary["global_student"]))
    test = score(net, meta, data, "test", device="cpu", n_bootstrap=1000)
    t2 = time.time()
    central = central_runs(
        args.data,
        teacher,
        method,
        fed.client_folds,
        args.labelled_fraction,
        [int(s) for s in args.central_seeds.split(",") if s],
        args.central_epochs,
        run_dir,
    )
    central_seconds = time.time() - t2
    c_auc = [r["test"]["macro_auc"] for r in central]
    c_f1 = [r["test"]["macro_f1"] for r in central]
    sd = lambda v: float(statistics.stdev(v)) if len(v) > 1 else 0.0  # noqa: E731
    report = {
        "command": "python -m simulations.benchmark_federated "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "run_command": " ".join(shlex.quote(a) for a in run_cmd),
        "machine": machine(),
        "seconds": {"teacher": round(teacher_seconds), "federated": round(seconds), "central": round(central_seconds)},
        "run_id": summary["run_id"],
        "method": method,
        "server_folds": list(fed.server_fold_tuple),
        "client_folds": list(fed.client_folds),
        "teacher": {
            "path": str(teacher),
            "train_folds": tmeta["train_config"]["train_folds"],
            "labelled_fraction": tmeta["train_config"]["labelled_fraction"],
            "val_macro_auc": tmeta["val_metrics"]["macro_auc"],
        },
        "rounds": summary["rounds"],
        "final_fold9": summary["final"],
        "final_test": {k: test[k] for k in ("macro_f1", "macro_auc", "macro_ap", "ci")},
        "central": {
            "runs": central,
            "macro_auc": [statistics.mean(c_auc), sd(c_auc)],
            "macro_f1": [statistics.mean(c_f1), sd(c_f1)],
        },
        "gap_auc": test["macro_auc"] - statistics.mean(c_auc),
        "gap_f1": test["macro_f1"] - statistics.mean(c_f1),
        "notes": args.note,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "federated_benchmark.json").write_text(json.dumps(report, indent=2))
    archive = (
        f"the server's own archive, folds {report['server_folds']} (all their labels; no client holds a record of them)"
        if report["server_folds"]
        else f"given ({teacher}), trained on folds {report['teacher']['train_folds']}"
    )
    lines = [
        "# Federated LiteHeart on real PTB-XL (protocol v2, disjoint server archive)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Federated run: `{report['run_command']}` (run {summary['run_id']}, {seconds:.0f} s)",
        "",
        f"Machine: {report['machine']}",
        "",
        f"Setting: method `{method}`, {args.clients} clients, `{args.partition}` partition of PTB-XL folds "
        f"{report['client_folds']} and 9 by patient (each client trains on its records of folds "
        f"{report['client_folds']} and validates on its fold-9 ones), {args.labelled_fraction:.0%} of each "
        f"client's training records labelled, {args.local_epochs} local epochs, FedAvg weighted by examples, "
        f"{args.rounds} rounds. Teacher: {archive}; fold-9 macro AUC "
        f"{report['teacher']['val_macro_auc']:.3f}. The server scores the global lead-I student on fold 9 "
        "each round (selection); the final global student is scored once on fold 8 with its fold-9 "
        "thresholds.",
        "",
        "| round | fold-9 macro F1 | fold-9 macro AUC | train loss | clients | failures |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["rounds"]:
        lines.append(
            f"| {r['round']} | {r['macro_f1']:.3f} | {r['macro_auc']:.3f} | {r['loss']:.3f} | "
            f"{r['participants']} | {r['failures']} |"
        )
    lines += [
        "",
        "## Fold 8, beside the same method trained centrally on the clients' records",
        "",
        "| model | macro F1 | macro AUC |",
        "| --- | --- | --- |",
        f"| federated `{method}`, final round | {test['macro_f1']:.3f} | {test['macro_auc']:.3f} "
        f"[{test['ci']['macro_auc'][0]:.3f}, {test['ci']['macro_auc'][1]:.3f}] |",
        f"| centralised `{method}` on folds {report['client_folds']}, same teacher and labelled fraction "
        f"({len(central)} seeds) | {report['central']['macro_f1'][0]:.3f} ± {report['central']['macro_f1'][1]:.3f}"
        f" | {report['central']['macro_auc'][0]:.3f} ± {report['central']['macro_auc'][1]:.3f} |",
        "",
        f"Federated - centralised: macro AUC {report['gap_auc']:+.3f}, macro F1 {report['gap_f1']:+.3f} "
        f"(one federated seed against the centralised mean; goal: within 0.02 AUC).",
    ]
    lines += [""] + [f"Note: {n}" for n in args.note]
    (out / "federated_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
