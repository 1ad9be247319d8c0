"""Federated LiteHeart on real PTB-XL beside the centralised numbers.

Runs ``liteheart-sim run`` (or reads the JSON summary of a run made with it), then
writes ``results/federated_benchmark.{md,json}`` with the global student's fold-9
scores per round and the federated-centralised gap at the same labelled fraction::

    python -m simulations.benchmark_federated --data ../shared/data/ptbxl --partition site --clients 8 \\
        --rounds 20 --labelled-fraction 0.1 --teacher runs/teacher_ptbxl.pt

Not part of the test suite (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulations.benchmark_central import machine


def run_with_progress(cmd: list[str], rounds: int) -> tuple[int, str, str]:
    """Run ``liteheart-sim run`` with a bar that advances on each of its ``round N/R:`` lines."""
    from simulations.progress import job_progress

    lines = []
    with tempfile.TemporaryFile("w+") as stdout, job_progress("federated rounds", rounds) as done:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:  # the JSON summary goes to a file, so this pipe is the only one to drain
            lines.append(line)
            if re.match(r"round\s+\d+/\d+:", line):
                done(line.split(":", 1)[1].strip()[:70])
        code = proc.wait()
        stdout.seek(0)
        return code, stdout.read(), "".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl")
    parser.add_argument("--partition", default="site")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--labelled-fraction", type=float, default=0.1)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--teacher", default="")
    parser.add_argument("--run-dir", default="runs/federated_benchmark")
    parser.add_argument("--central", default="results/central_benchmark.json")
    parser.add_argument("--summary", default=None, help="use this `liteheart-sim run --json` output instead of running")
    parser.add_argument("--run-seconds", type=float, default=None, help="with --summary: the run's wall time")
    parser.add_argument("--out", default="results")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    args = parser.parse_args(argv)

    run_cmd = ["liteheart-sim", "run", "--data", args.data, "--partition", args.partition, "--clients",
               str(args.clients), "--rounds", str(args.rounds), "--labelled-fraction", str(args.labelled_fraction),
               "--local-epochs", str(args.local_epochs), "--run-dir", args.run_dir, "--json"]
    if args.teacher:
        run_cmd += ["--teacher", args.teacher]
    t0 = time.time()
    if args.summary:
        summary = json.loads(Path(args.summary).read_text())
        seconds = args.run_seconds
    else:
        code, stdout, stderr = run_with_progress(run_cmd, args.rounds)
        if code != 0:
            sys.exit(f"the federated run failed:\n{stderr[-2000:]}")
        summary = json.loads(stdout)
        seconds = time.time() - t0

    central = json.loads(Path(args.central).read_text()) if Path(args.central).is_file() else None
    key = str(args.labelled_fraction)
    crow = central["tables"]["archive"].get(key, {}).get("methods", {}) if central else {}
    final = summary["final"]
    best = max(summary["rounds"], key=lambda r: r["macro_f1"])
    report = {"command": "python -m simulations.benchmark_federated " + " ".join(shlex.quote(a) for a in
                                                                                (argv or sys.argv[1:])),
              "run_command": " ".join(shlex.quote(a) for a in run_cmd), "machine": machine(),
              "seconds": seconds, "run_id": summary["run_id"], "rounds": summary["rounds"], "final": final,
              "best_round": best, "central": {m: crow[m] for m in ("teacher", "supervised", "kd", "liteheart")
                                              if m in crow}}
    if "liteheart" in crow:
        report["gap_f1_vs_central_liteheart"] = final["macro_f1"] - crow["liteheart"]["macro_f1"][0]
        report["gap_auc_vs_central_liteheart"] = final["macro_auc"] - crow["liteheart"]["macro_auc"][0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "federated_benchmark.json").write_text(json.dumps(report, indent=2))
    lines = ["# Federated LiteHeart on real PTB-XL", "", f"Command: `{report['command']}`", "",
             f"Federated run: `{report['run_command']}` (run {summary['run_id']}"
             + (f", {seconds:.0f} s" if seconds else "") + ")", "",
             f"Machine: {report['machine']}", "",
             f"Setting: {args.clients} clients, `{args.partition}` partition of PTB-XL folds 1-9 by patient (each client "
             f"trains on its fold 1-8 records and validates on its fold-9 ones), {args.labelled_fraction:.0%} of "
             f"each client's training records labelled, {args.local_epochs} local epochs, FedAvg weighted by "
             f"examples, {args.rounds} rounds. The server scores the global lead-I student on all of fold 9 "
             "(thresholds tuned on fold 9, as in the centralised table).", "",
             "| round | macro F1 | macro AUC | train loss | clients | failures |", "| --- | --- | --- | --- | --- | --- |"]
    for r in summary["rounds"]:
        lines.append(f"| {r['round']} | {r['macro_f1']:.3f} | {r['macro_auc']:.3f} | {r['loss']:.3f} | "
                     f"{r['participants']} | {r['failures']} |")
    lines += ["", "## Beside the centralised benchmark (archive teacher, same labelled fraction)", "",
              "| model | macro F1 | macro AUC |", "| --- | --- | --- |",
              f"| federated LiteHeart, final round | {final['macro_f1']:.3f} | {final['macro_auc']:.3f} |",
              f"| federated LiteHeart, best round ({best['round']}) | {best['macro_f1']:.3f} | "
              f"{best['macro_auc']:.3f} |"]
    names = {"teacher": "centralised 12-lead teacher", "supervised": "centralised lead-I, labels only",
             "kd": "centralised vanilla KD", "liteheart": "centralised LiteHeart"}
    for m, row in report["central"].items():
        lines.append(f"| {names[m]} (3 seeds) | {row['macro_f1'][0]:.3f} ± {row['macro_f1'][1]:.3f} | "
                     f"{row['macro_auc'][0]:.3f} ± {row['macro_auc'][1]:.3f} |")
    if "gap_f1_vs_central_liteheart" in report:
        lines += ["", f"Federated - centralised LiteHeart: macro F1 {report['gap_f1_vs_central_liteheart']:+.3f}, "
                      f"macro AUC {report['gap_auc_vs_central_liteheart']:+.3f} (final round; one federated seed "
                      "against the centralised mean of 3)."]
    lines += [""] + [f"Note: {n}" for n in args.note]
    report["notes"] = args.note
    (out / "federated_benchmark.json").write_text(json.dumps(report, indent=2))
    (out / "federated_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
