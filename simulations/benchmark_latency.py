"""Student and teacher CPU latency per 10-s window (batch 1), eager and TorchScript.

Run (writes ``results/latency.{md,json}``)::

    python -m simulations.benchmark_latency --threads 1 --repeats 300
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from liteheart_core.models import build_net, count_parameters, student_config, teacher_config
from server.model_files import export_torchscript, measure_latency
from simulations.benchmark_central import machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--length", type=int, default=1000, help="samples per window (10 s at 100 Hz)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    student = build_net(1, 5, student_config()).eval()
    teacher = build_net(12, 5, teacher_config()).eval()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        scripted = torch.jit.load(str(export_torchscript(student, Path(tmp) / "s.pt", torch.randn(1, 1, args.length))))
        scripted = torch.jit.freeze(scripted.eval()) if hasattr(scripted, "graph") else scripted
        for name, model, leads in (
            ("student (eager)", student, 1),
            ("student (TorchScript, frozen)", scripted, 1),
            ("teacher (eager)", teacher, 12),
        ):
            stats = measure_latency(
                model,
                leads,
                args.length,
                threads=args.threads,
                repeats=args.repeats if leads == 1 else max(20, args.repeats // 10),
            )
            rows[name] = stats
    report = {
        "command": "python -m simulations.benchmark_latency "
        + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": machine(),
        "threads": args.threads,
        "length": args.length,
        "params": {"student": count_parameters(student), "teacher": count_parameters(teacher)},
        "latency_ms": rows,
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# CPU latency per 10-s window (batch 1)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; torch threads {args.threads}; input {args.length} samples "
        "(10 s at 100 Hz). Random weights: latency does not depend on the values.",
        "",
        f"Parameters: student {report['params']['student']:,}, teacher {report['params']['teacher']:,} "
        f"({100 * report['params']['student'] / report['params']['teacher']:.1f}%).",
        "",
        "| model | median ms | p90 ms | min ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['median_ms']:.3f} | {s['p90_ms']:.3f} | {s['min_ms']:.3f} |")
    lines += [
        "",
        "Goal: student under 1 ms on one core: "
        + ("met" if rows["student (eager)"]["median_ms"] < 1 else "not met")
        + " (eager median).",
        "",
    ]
    (out / "latency.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
