"""Privacy-utility benchmark: the federated student's fold-9 macro F1 and AUC at several privacy budgets.

Every setting is one federation through the real server (``run_federation``: strategy, DP wrappers,
registry) and the real ClientApp handlers on an in-process grid (``simulations/local_grid.py``: messages
serialised as on the wire, no Ray), with the same data, clients, rounds, seed and teacher; only the
``dp*`` keys change.
Record-level DP-SGD at each target epsilon, no DP, and client-level DP (server-side clipping) at the
``--client-epsilons``. Writes ``results/privacy_utility.{md,json}`` with epsilon per round::

    nice -n 10 python -m simulations.benchmark_privacy --data ../shared/data/ptbxl \\
        --teacher runs/teacher_ptbxl.pt

Not part of the test suite (about half an hour on 2 busy CPU cores with the defaults).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from liteheart_core.methods import STUDENT_METHODS
from simulations.benchmark_central import machine


def settings(args: argparse.Namespace) -> list[dict]:
    """One dict of run-config keys per row of the table."""
    rows = [{"label": "no DP", "dp": "none"}]
    for eps in args.epsilons:
        rows.append(
            {
                "label": f"DP-SGD, epsilon {eps:g}",
                "dp": "dp-sgd",
                "dp-epsilon": eps,
                "dp-max-grad-norm": args.max_grad_norm,
            }
        )
    for eps in args.client_epsilons:
        rows.append(
            {
                "label": f"client-level (server-side clipping), epsilon {eps:g}",
                "dp": "server",
                "dp-epsilon": eps,
                "dp-clip-norm": args.clip_norm,
            }
        )
    return rows


def scenario(args: argparse.Namespace, row: dict) -> dict:
    keys = {
        "data": args.data,
        "teacher": args.teacher,
        "partition": args.partition,
        "clients": args.clients,
        "rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "labelled-fraction": args.labelled_fraction,
        "batch-size": args.batch_size,
        "seed": args.seed,
        "device": "cpu",
        "method": args.method,
    }
    keys.update({k: v for k, v in row.items() if k != "label"})
    return keys


def run_one(args: argparse.Namespace, row: dict, index: int) -> dict:
    """One federation through the real server and client code (``run_federation``, the ClientApp's handlers)
    on an in-process grid; the registry's view of it."""
    import torch

    from client.app import app as client_app
    from liteheart_core.config import FedConfig
    from liteheart_core.storage import Registry
    from server.orchestrate import ServerOptions, run_federation
    from simulations.local_grid import LocalGrid, server_identity

    torch.set_num_threads(1)
    run_dir = Path(args.run_dir) / f"setting-{index}"
    keys = scenario(args, row)
    cfg = FedConfig.from_dict({**keys, "min-clients": args.clients})
    print(f"[{index}] {row['label']}: {keys}", file=sys.stderr, flush=True)
    grid = LocalGrid(client_app, node_ids=[1000 + i for i in range(args.clients)], cache_root=run_dir / "nodes")
    t0 = time.perf_counter()
    with server_identity():
        shown = run_federation(grid, cfg, ServerOptions(run_dir=run_dir, name=row["label"]))
    seconds = time.perf_counter() - t0
    grid.traffic.clear()
    if shown["run"]["status"] != "completed" or len(shown["rounds"]) != args.rounds:
        raise SystemExit(f"{row['label']}: run {shown['run']['id']} ended {shown['run']['status']}")
    rounds = [
        {
            "round": r["number"],
            "macro_f1": r["central_metrics"]["macro_f1"],
            "macro_auc": r["central_metrics"]["macro_auc"],
            **{k: r["train_metrics"][k] for k in ("epsilon", "delta", "noise-multiplier") if k in r["train_metrics"]},
            "clients": len(r["participants"]),
            "failures": r["n_failures"],
        }
        for r in shown["rounds"]
    ]
    final = rounds[-1]
    result = {
        **row,
        "run_id": shown["run"]["id"],
        "registry": Registry.default_url(run_dir),
        "scenario": keys,
        "seconds": round(seconds, 1),
        "rounds": rounds,
        "final_macro_f1": final["macro_f1"],
        "final_macro_auc": final["macro_auc"],
        "epsilon_spent": final.get("epsilon"),
        "delta": final.get("delta"),
        "noise_multiplier": final.get("noise-multiplier"),
    }
    print(
        f"[{index}] F1 {final['macro_f1']:.3f} AUC {final['macro_auc']:.3f} epsilon {final.get('epsilon')} "
        f"({seconds:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def _run_batch(args: argparse.Namespace, batch: list[tuple[int, dict]]) -> list[dict]:
    return [run_one(args, row, i) for i, row in batch]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# Privacy-utility trade-off of federated LiteHeart on real PTB-XL",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']} (`{report['uname']}`)",
        "",
        f"Setting: PTB-XL at `{s['data']}` ({report['records']}), {s['clients']} clients "
        f"(`{s['partition']}` partition), {s['rounds']} rounds of {s['local_epochs']} local epoch(s), "
        f"{s['labelled_fraction']:.0%} of each client's training records labelled, method `{s['method']}`, "
        f"batch {s['batch_size']} (DP-SGD: expected Poisson batch), seed {s['seed']}, teacher `{s['teacher']}`. "
        "Every row is one federation through `run_federation` and the ClientApp's handlers on the in-process grid "
        "of `simulations/local_grid.py` (no Ray: the machine was shared by several other jobs), with these keys "
        "and its `dp*` keys; the score is the server's "
        "global lead-I student after the last round on all of fold 9 (thresholds tuned on fold 9, as in "
        "`results/federated_benchmark.md`). One seed per row.",
        "",
        "| setting | target epsilon | epsilon spent | delta | noise multiplier | macro F1 | macro AUC | "
        "best-round F1 | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        best = max(x["macro_f1"] for x in r["rounds"])
        lines.append(
            f"| {r['label']} | {_fmt(r.get('dp-epsilon'), 'g')} | {_fmt(r['epsilon_spent'], '.3g')} | "
            f"{_fmt(r['delta'], 'g')} | {_fmt(r['noise_multiplier'], '.3g')} | {r['final_macro_f1']:.3f} | "
            f"{r['final_macro_auc']:.3f} | {best:.3f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "Epsilon spent after each round (the registry's round metrics):",
        "",
        "| setting | " + " | ".join(f"round {i + 1}" for i in range(s["rounds"])) + " |",
        "| --- | " + " | ".join("---" for _ in range(s["rounds"])) + " |",
    ]
    for r in report["results"]:
        if r["epsilon_spent"] is not None:
            lines.append(
                f"| {r['label']} | " + " | ".join(f"{x.get('epsilon', float('nan')):.3g}" for x in r["rounds"]) + " |"
            )
    lines += ["", "What the guarantees mean here:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


NOTES = [
    "DP-SGD (record level): each client clips every record's gradient (student and distillation adapters) to "
    "dp-max-grad-norm and adds Gaussian noise each step; records are Poisson-sampled with rate batch / records; the "
    "noise multiplier is derived per client from the target epsilon over the planned rounds x local epochs, so "
    "each client has spent at most the target after the last round. Epsilon is the largest any client reports "
    "(Opacus RDP accountant, delta 1e-5). The cross-layer mutual-information term is off under DP-SGD (InfoNCE "
    "couples the records of a batch); the other LiteHeart terms stay. Losses and local validation scores do not "
    "leave a DP-SGD client.",
    "Client level (server-side clipping): each client's update is clipped to dp-clip-norm on the server and "
    "Gaussian noise of standard deviation z x clip / n is added to the unweighted mean (n updates averaged); "
    "every client takes part in every round (sampling rate 1, no amplification). It protects a whole client "
    "(hospital) and trusts the server; with only a handful of clients the noise on the mean is large.",
    "The teacher is fixed before federated training (trained on the server's data) and is not covered by "
    "either guarantee; neither is the server's own fold-9 scoring.",
    "The noise multiplier column is the smallest any client used (DP-SGD: each client derives its own from its "
    "record count); the epsilon column is what the registry recorded after the last round.",
    "Not done: more than one seed, more rounds, and any tuning for DP (learning rate, batch size, clipping "
    "bound: the rows use the no-DP settings). The site clients hold 155, 230, 327 and 1,051 training records "
    "(5, 8, 11 and 33 noisy steps per round at an expected batch of 32) and DP-SGD updates 276k parameters "
    "(student 78k, distillation adapters 198k): the noise on a step's mean gradient has norm about "
    "multiplier x bound x sqrt(276k) / 32, 10 to 60 here, against at most the bound (1) for the clipped signal. "
    "These rows measure that regime, not the best DP-SGD can do on more data or with larger batches.",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl")
    parser.add_argument("--teacher", default="runs/teacher_ptbxl.pt")
    parser.add_argument("--partition", default="site")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--labelled-fraction", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--method", default="liteheart", choices=STUDENT_METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilons", type=float, nargs="*", default=[1.0, 3.0, 8.0])
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--client-epsilons", type=float, nargs="*", default=[8.0])
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--run-dir", default="runs/privacy_benchmark")
    parser.add_argument("--workers", type=int, default=2, help="processes running the settings side by side")
    parser.add_argument("--out", default="results")
    parser.add_argument("--render", default=None, help="only rewrite the markdown (and notes) of this JSON report")
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(Path(args.render).read_text())
        report["notes"] = NOTES + report.get("observed", [])
        Path(args.render).write_text(json.dumps(report, indent=2))
        Path(args.render).with_suffix(".md").write_text(render_markdown(report))
        return
    if not Path(args.teacher).is_file():
        raise SystemExit(f"teacher checkpoint {args.teacher} does not exist")

    import platform

    t0 = time.perf_counter()
    rows = list(enumerate(settings(args)))
    # rows split over worker processes (each keeps its clients' teacher targets across its rows)
    batches = [rows[w :: args.workers] for w in range(args.workers)]
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = [r for batch in pool.map(_run_batch, [args] * len(batches), batches) for r in batch]
    results = sorted(done, key=lambda r: [i for i, row in rows if row["label"] == r["label"]][0])
    from liteheart_core.federated import open_data

    data = open_data(args.data)
    report = {
        "command": "python -m simulations.benchmark_privacy " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "uname": " ".join(platform.uname()),
        "records": f"{len(data.index)} records, fingerprint {data.fingerprint[:12]}",
        "settings": {k.replace("-", "_"): v for k, v in vars(args).items()},
        "total_seconds": round(time.perf_counter() - t0, 1),
        "results": results,
        "notes": NOTES,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy_utility.json").write_text(json.dumps(report, indent=2))
    (out / "privacy_utility.md").write_text(render_markdown(report))
    print(f"wrote {out / 'privacy_utility.md'} and .json ({report['total_seconds']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
