"""Hospital sites and wearables in one federation: hospital-only vs wearable-only vs mixed, on real PTB-XL.

The training records of folds 1-9 are split into ``hospitals + wearables`` partitions
(Dirichlet over labels, patient-disjoint). The first ``hospitals`` partitions are 12-lead
sites (teacher on site, full LiteHeart objective), the rest are wearables (lead I only,
degraded as a wearable records it, no teacher: mean-teacher consistency and
pseudo-labels plus their few labels). Three federations share those partitions, the
rounds and the seeds, and differ only in who takes part:

- ``hospital-only``: the sites alone;
- ``wearable-only``: the wearables alone;
- ``mixed``: everyone, aggregated with FedAvg (a wearable's examples weighted by ``--wearable-weight``).

Each run is the real server (``server.orchestrate.run_federation``: strategy, reply
checks, registry, per-round global evaluation) talking to the real ClientApp handlers
through an in-process grid (messages serialised and parsed as on the wire), one client
after another: the Simulation Engine's Ray workers would add nothing but overhead on 2
cores. The global student is scored on fold 9 twice: clean lead I (as a 12-lead site's
lead I) and lead I degraded as wearables record it. Thresholds are tuned on fold 9 and
scored on it (the developers' table): F1 is optimistic, equally for all three.

    python -m simulations.benchmark_wearables --data ../shared/data/ptbxl --teacher runs/teacher_ptbxl.pt

Not part of the test suite (tens of minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from liteheart_core.methods import STUDENT_METHODS
from simulations.benchmark_central import machine

FEDERATIONS = ("hospital-only", "wearable-only", "mixed")


def members(federation: str, hospitals: int, wearables: int) -> list[int]:
    """Partition ids taking part in a federation."""
    sites, worn = list(range(hospitals)), list(range(hospitals, hospitals + wearables))
    return {"hospital-only": sites, "wearable-only": worn, "mixed": sites + worn}[federation]


def run_one(args: argparse.Namespace, federation: str, seed: int, run_dir: Path) -> dict:
    """One federation with one seed through the real server and client code; the registry's view of it."""
    from client.app import app as client_app
    from liteheart_core.config import FedConfig
    from server.orchestrate import ServerOptions, run_federation
    from simulations.local_grid import LocalGrid, server_identity

    total = args.hospitals + args.wearables
    ids = members(federation, args.hospitals, args.wearables)
    cfg = FedConfig(data=args.data, task="superdiagnostic", clients=total, wearables=args.wearables,
                    rounds=args.rounds, partition=args.partition, alpha=args.alpha,
                    labelled_fraction=args.labelled_fraction,
                    wearable_labelled_fraction=args.wearable_labelled_fraction,
                    wearable_weight=args.wearable_weight, method=args.method, local_epochs=args.local_epochs,
                    teacher=args.teacher, seed=seed, device="cpu", min_clients=len(ids), fraction_train=1.0)
    grid = LocalGrid(client_app, node_ids=[1000 + i for i in ids], cache_root=run_dir / "nodes",
                     node_configs={1000 + i: {"partition-id": i, "num-partitions": total} for i in ids})
    opts = ServerOptions(run_dir=run_dir, name=f"{federation}-s{seed}")
    t0 = time.perf_counter()
    with server_identity():
        shown = run_federation(grid, cfg, opts)
    seconds = time.perf_counter() - t0
    rounds = [{"round": r["number"], **{k: r["central_metrics"][k] for k in
                                         ("macro_f1", "macro_auc", "wearable_macro_f1", "wearable_macro_auc")},
               "participants": len(r["participants"]), "failures": r["n_failures"],
               "paired_clients": r["train_metrics"].get("paired/clients", 0.0 if federation == "wearable-only"
                                                          else len(r["participants"])),
               "wearable_clients": r["train_metrics"].get("wearable/clients", 0.0 if federation == "hospital-only"
                                                            else len(r["participants"]))}
              for r in shown["rounds"]]
    if shown["run"]["status"] != "completed" or len(rounds) != args.rounds:
        raise RuntimeError(f"{federation} seed {seed}: run {shown['run']['id']} ended {shown['run']['status']} "
                           f"after {len(rounds)} rounds: {shown['run'].get('error')}")
    label = federation if federation != "mixed" or args.wearable_weight == 1.0 else \
        f"mixed, wearable weight {args.wearable_weight:g}"
    return {"federation": federation, "label": label, "wearable_weight": args.wearable_weight, "seed": seed,
            "run_id": shown["run"]["id"], "seconds": round(seconds, 1),
            "clients": len(ids), "final": rounds[-1], "best_f1": max(r["macro_f1"] for r in rounds),
            "rounds": rounds}


def summarise(runs: list[dict]) -> dict:
    """Mean and std over seeds of the final-round scores, per federation."""
    table = {}
    for fed in dict.fromkeys(r.get("label", r["federation"]) for r in runs):
        mine = [r for r in runs if r.get("label", r["federation"]) == fed]
        row = {"seeds": len(mine), "clients": mine[0]["clients"], "seconds": float(np.mean([r["seconds"] for r in mine]))}
        for key in ("macro_f1", "macro_auc", "wearable_macro_f1", "wearable_macro_auc"):
            values = [r["final"][key] for r in mine]
            row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
        table[fed] = row
    return table


def render(report: dict) -> str:
    a = report["settings"]
    lines = [
        "# Wearables in the federation: hospital-only vs wearable-only vs mixed",
        "",
        "Commands: " + "; then ".join(f"`{c}`" for c in ([report["command"]] if isinstance(report["command"], str)
                                                         else report["command"])),
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpus']} cores, {report['machine']['platform']}, "
        f"torch {report['machine']['torch']}. Measured {report['date']}; total {report['total_seconds'] / 60:.1f} min.",
        "",
        f"Data: `{a['data']}` (PTB-XL, superdiagnostic: NORM, MI, STTC, CD, HYP; 100 Hz, 10-s windows). Folds 1-9 "
        f"split into {a['hospitals'] + a['wearables']} patient-disjoint partitions ({a['partition']}"
        f"{', alpha ' + str(a['alpha']) if a['partition'] == 'dirichlet' else ''}, seed = run seed); each client "
        "trains on its fold 1-8 records and validates locally on its fold-9 ones; the server scores the global "
        "student on all of fold 9.",
        "",
        f"- **Hospital sites** (partitions 0-{a['hospitals'] - 1}): 12-lead records, the archive teacher "
        f"(`{a['teacher']}`, 12-lead, trained on all fold 1-8 labels) on site, method `{a['method']}`, "
        f"{a['labelled_fraction']:.0%} of their records labelled.",
        f"- **Wearables** (partitions {a['hospitals']}-{a['hospitals'] + a['wearables'] - 1}): lead I only, degraded "
        "(250 Hz native rate, electrode noise, motion artefacts; seeded per device), no teacher; mean-teacher "
        f"consistency and pseudo-labels, {a['wearable_labelled_fraction']:.0%} of their records labelled.",
        f"- Same partitions, {a['rounds']} rounds, {a['local_epochs']} local epochs, FedAvg weighted by examples "
        f"(a wearable's examples count 1x unless the row says otherwise), seeds {a['seeds']}, for every federation.",
        "",
        "Final-round global student on fold 9 (mean ± std over seeds). *Clean lead I*: fold 9's lead I as "
        "prepared from the 12-lead records. *Wearable lead I*: the same records degraded as a wearable records "
        "them. Thresholds tuned on fold 9 and scored on it (optimistic, the same for all rows).",
        "",
        "| federation | clients | macro F1 (clean lead I) | macro AUC (clean) | macro F1 (wearable lead I) | "
        "macro AUC (wearable) | minutes per run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fed, row in report["table"].items():
        cells = [f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in
                 ("macro_f1", "macro_auc", "wearable_macro_f1", "wearable_macro_auc")]
        lines.append(f"| {fed} | {row['clients']} | " + " | ".join(cells) + f" | {row['seconds'] / 60:.1f} |")
    lines += ["", "Per run (final round; best round's clean F1 in brackets):", ""]
    for r in report["runs"]:
        f = r["final"]
        lines.append(f"- {r.get('label', r['federation'])}, seed {r['seed']} (run {r['run_id']}): F1 {f['macro_f1']:.3f} "
                     f"[{r['best_f1']:.3f}], AUC {f['macro_auc']:.3f}; wearable-view F1 {f['wearable_macro_f1']:.3f}, "
                     f"AUC {f['wearable_macro_auc']:.3f}; {r['seconds'] / 60:.1f} min")
    if not report["complete"]:
        lines += ["", "**Incomplete**: the runs above are all that finished; the table covers only them."]
    lines += ["", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl")
    parser.add_argument("--teacher", default="runs/teacher_ptbxl.pt")
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--wearables", type=int, default=12)
    parser.add_argument("--partition", default="dirichlet")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--labelled-fraction", type=float, default=0.3, help="hospitals' labelled fraction")
    parser.add_argument("--wearable-labelled-fraction", type=float, default=0.1)
    parser.add_argument("--wearable-weight", type=float, default=1.0)
    parser.add_argument("--method", default="liteheart", choices=STUDENT_METHODS)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--federations", default=",".join(FEDERATIONS))
    parser.add_argument("--out", default="results")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    parser.add_argument("--append", action="store_true",
                        help="add these runs to the existing report (same data, partitions, rounds and seeds)")
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        sys.exit(f"data folder {args.data} does not exist")
    if not Path(args.teacher).is_file():
        sys.exit(f"teacher checkpoint {args.teacher} does not exist (liteheart-server teacher train ...)")
    seeds = [int(s) for s in args.seeds.split(",")]
    federations = [f for f in args.federations.split(",") if f]
    unknown = set(federations) - set(FEDERATIONS)
    if unknown:
        sys.exit(f"unknown federations {sorted(unknown)}; choose from {', '.join(FEDERATIONS)}")

    from simulations.run_cmd import quiet_flower

    quiet_flower(False)
    t0 = time.perf_counter()
    runs, notes, commands = [], list(args.note), []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.append:
        old = json.loads((out / "wearable_benchmark.json").read_text())
        same = ("data", "teacher", "hospitals", "wearables", "partition", "alpha", "rounds", "local_epochs",
                "labelled_fraction", "wearable_labelled_fraction", "method")
        differ = [k for k in same if old["settings"][k] != vars(args)[k]] + \
            (["seeds"] if old["settings"]["seeds"] != seeds else [])
        if differ:
            sys.exit(f"--append: settings differ from the existing report's: {', '.join(differ)}")
        runs, notes = old["runs"], old["notes"] + notes
        commands = [old["command"]] if isinstance(old["command"], str) else old["command"]
        t0 -= old["total_seconds"]
    expected = len(runs) + len(seeds) * len(federations)
    with tempfile.TemporaryDirectory(prefix="lh-wearables-") as tmp:
        for seed in seeds:
            for fed in federations:
                result = run_one(args, fed, seed, Path(tmp) / f"{fed}-{seed}")
                print(f"{fed} seed {seed}: F1 {result['final']['macro_f1']:.3f} AUC {result['final']['macro_auc']:.3f}"
                      f" (wearable view F1 {result['final']['wearable_macro_f1']:.3f}) in {result['seconds']:.0f} s",
                      flush=True)
                runs.append(result)
                # written after every run: what finished is kept if the rest is cut short
                command = "python -m simulations.benchmark_wearables " + shlex.join(argv or sys.argv[1:])
                report = {"command": commands + [command] if commands else command,
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                          "settings": {**vars(args), "seeds": seeds}, "total_seconds": time.perf_counter() - t0,
                          "complete": len(runs) == expected, "table": summarise(runs), "runs": runs,
                          "notes": notes}
                (out / "wearable_benchmark.json").write_text(json.dumps(report, indent=2))
                (out / "wearable_benchmark.md").write_text(render(report))
    print(f"wrote {out / 'wearable_benchmark.md'}")


if __name__ == "__main__":
    main()
