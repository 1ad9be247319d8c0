"""Hospital sites and wearables in one federation, protocol v2: do the wearables make the global student better?

The server holds a labelled 12-lead archive (``--server-folds``, PTB-XL folds 1-2 by
default): its 12-lead teacher learns from it alone, and so does each candidate *wearable
teacher* (a teacher that answers from lead I, ``liteheart_core.wearable``):

- ``lead-dropout``: the teacher's network trained with lead dropout, shown lead I with the
  other leads zero;
- ``assistant``: a lead-I network of the teacher's size distilled from the 12-lead teacher.

The candidate whose fold-9 macro AUC on lead I (mean of clean and wearable-degraded) is
highest is the one shipped to wearables; each candidate's device cost is measured (bytes
shipped, inference per 10-s window on one core, peak memory and compute of a local round in
a fresh process).

The clients hold folds 3-7 (training) and 9 (local validation), split into ``hospitals +
wearables`` patient-disjoint partitions (Dirichlet over labels). The first ``hospitals`` are
12-lead sites (the 12-lead teacher on site, ``--method``), the rest are wearables (lead I
only, degraded as a device records it). Federations share those partitions, rounds and seeds:

- ``hospital-only``, ``wearable-only`` and ``mixed``: as before, wearables without a teacher
  (mean-teacher consistency and pseudo-labels against the global student);
- ``wearable-only+teacher``, ``mixed+teacher``: every wearable distils from the wearable
  teacher's soft targets on its own recordings with the run's method;
- ``mixed+teacher+validated``: the same, aggregated with ``wearable-weighting = validated``
  (each round the server mixes the sites' and the wearables' averages at the wearables' share
  that scores best on its validation fold 9).

Each run is the real server (``server.orchestrate.run_federation``) talking to the real
ClientApp handlers through an in-process grid (messages serialised as on the wire). The
final-round global student is scored once on fold 8 (the test fold; thresholds tuned on fold
9), on clean lead I and on lead I degraded as wearables record it; differences against
``hospital-only`` are paired bootstraps over the fold-8 records per seed (2,000 resamples).
Runs are appended to ``<work>/runs.jsonl`` as they finish, so an interrupted benchmark resumes.

    python -m simulations.benchmark_wearables --data ../shared/data/ptbxl --seeds 0,1,2 --jobs 2

Not part of the test suite (about an hour on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from liteheart_core.methods import DEFAULT_METHOD, STUDENT_METHODS
from simulations.benchmark_central import machine, paired_bootstrap

# each federation: who takes part, whether wearables get the wearable teacher, how kinds are weighed
FEDERATIONS = {
    "hospital-only": ("sites", False, "examples"),
    "wearable-only": ("wearables", False, "examples"),
    "wearable-only+teacher": ("wearables", True, "examples"),
    "mixed": ("all", False, "examples"),
    "mixed+teacher": ("all", True, "examples"),
    "mixed+teacher+validated": ("all", True, "validated"),
}
DEFAULT_FEDERATIONS = ("hospital-only", "wearable-only", "mixed", "mixed+teacher", "mixed+teacher+validated")
BASELINE = "hospital-only"


def members(federation: str, hospitals: int, wearables: int) -> list[int]:
    """Partition ids taking part in a federation."""
    sites, worn = list(range(hospitals)), list(range(hospitals, hospitals + wearables))
    return {"sites": sites, "wearables": worn, "all": sites + worn}[FEDERATIONS[federation][0]]


# --- teachers ---------------------------------------------------------------------------------


def _train_to(path: Path, data, cfg, teacher=None) -> Path:
    from liteheart_core.checkpoint import save_checkpoint
    from liteheart_core.train import checkpoint_meta, train

    result = train(
        data,
        cfg,
        teacher=teacher,
        progress=lambda e, n, entry: print(
            f"  {path.stem} epoch {e}/{n}: fold-9 macro AUC {entry['val_macro_auc']:.3f}", flush=True
        ),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, result.model, checkpoint_meta(data, cfg, result))
    return path


def _same_config(path: Path, cfg) -> bool:
    """A checkpoint already trained with ``cfg`` (the device it ran on aside) is reused, anything else retrained."""
    import torch

    stored = dict(torch.load(path, map_location="cpu", weights_only=False)["meta"]["train_config"])
    wanted = json.loads(json.dumps(cfg.to_dict()))  # tuples as the stored lists
    return {k: v for k, v in stored.items() if k != "device"} == {k: v for k, v in wanted.items() if k != "device"}


def lead_one_scores(net, data, folds: tuple[int, ...], view_seed: int) -> dict:
    """Macro AUC/F1 of a network on lead I (clean and wearable-degraded), other leads zero for a 12-lead one."""
    import torch

    from liteheart_core.metrics import summarise, tune_thresholds
    from liteheart_core.train import predict
    from liteheart_core.views import teacher_view
    from liteheart_core.wearable import WearableView, wearable_signals

    rows = data.rows("superdiagnostic", folds=list(folds))
    y = data.labels("superdiagnostic")[1][rows]
    one = data.x(rows, leads="I")
    out = {}
    for name, x in (("clean", one), ("wearable", wearable_signals(one, data.fs, WearableView(seed=view_seed)))):
        x = teacher_view(torch.as_tensor(x, dtype=torch.float32), net.n_leads, [0])
        probs = predict(net, x, torch.device("cpu"))
        out[name] = summarise(y, probs, tune_thresholds(y, probs))
    if net.n_leads == 12:
        probs = predict(net, torch.as_tensor(data.x(rows), dtype=torch.float32), torch.device("cpu"))
        out["twelve_leads"] = summarise(y, probs, tune_thresholds(y, probs))
    return out


def prepare_teachers(args, data, work: Path) -> dict:
    """The archive teacher and every wearable-teacher candidate (trained on the server folds when absent),
    their fold-9 scores on lead I, and the chosen candidate."""
    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.train import TrainConfig
    from liteheart_core.wearable import wearable_teacher_config

    folds = tuple(int(f) for f in args.server_folds.split(","))
    archive = Path(args.teacher) if args.teacher else work / "teachers" / "archive.pt"
    if not archive.is_file():
        print(f"training the 12-lead archive teacher on folds {folds} -> {archive}", flush=True)
        _train_to(
            archive,
            data,
            TrainConfig(method="teacher", epochs=args.teacher_epochs, lr=1e-3, train_folds=folds, device="cpu"),
        )
    teacher, meta = load_checkpoint(archive)
    seen = set(meta["train_config"]["train_folds"])
    if not seen <= set(folds):
        sys.exit(f"{archive} was trained on folds {sorted(seen)}; the server's archive is {list(folds)}")
    info: dict[str, Any] = {
        "archive": {
            "path": str(archive),
            "train_folds": sorted(seen),
            "lead_one": lead_one_scores(teacher, data, (9,), 0),
        },
        "candidates": {},
    }
    for kind in args.wearable_teachers.split(","):
        path = work / "teachers" / f"{kind}.pt"
        cfg = wearable_teacher_config(kind, folds, epochs=args.teacher_epochs, device="cpu")
        if not (path.is_file() and _same_config(path, cfg)):
            print(f"training the wearable teacher candidate {kind} on folds {folds} -> {path}", flush=True)
            _train_to(path, data, cfg, teacher if cfg.spec.needs_teacher else None)
        net, cmeta = load_checkpoint(path)
        scores = lead_one_scores(net, data, (9,), 0)
        info["candidates"][kind] = {
            "path": str(path),
            "train_folds": cmeta["train_config"]["train_folds"],
            "epochs_run": cmeta["epochs_run"],
            "train_seconds": cmeta["train_seconds"],
            "lead_one": scores,
            "selection_auc": (scores["clean"]["macro_auc"] + scores["wearable"]["macro_auc"]) / 2,
        }
    info["chosen"] = max(info["candidates"], key=lambda k: info["candidates"][k]["selection_auc"])
    return info


# --- device cost ------------------------------------------------------------------------------

_ROUND_PROBE = r"""
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from liteheart_core.checkpoint import load_checkpoint
from liteheart_core.federated import LocalData, student_for, wearable_local_round
from liteheart_core.train import TrainConfig


def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20


a = json.loads(sys.argv[1])
held = torch.load(a["records"], weights_only=False)  # only what the device holds: its lead-I records
local = LocalData(**held)
teacher = load_checkpoint(Path(a["teacher"]))[0] if a["teacher"] else None
student = student_for(local.classes)
cfg = TrainConfig(method=a["method"], device="cpu", batch_size=32)
before = rss_mb()
t0 = time.process_time()
_, first, heads = wearable_local_round(student, local, cfg, a["epochs"], 1, teacher, None)
first_cpu = time.process_time() - t0
t0 = time.process_time()
wearable_local_round(student, local, cfg, a["epochs"], 2, teacher, heads)
later_cpu = time.process_time() - t0
print(json.dumps({"records": len(local.x), "before_rss_mb": before,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "first_round_cpu_s": first_cpu, "later_round_cpu_s": later_cpu}))
"""


def device_cost(args, teachers: dict, partition: int) -> dict:
    """What each wearable-teacher option costs a device, measured on one CPU core.

    Bytes shipped (the float32 state_dict as it travels), inference per 10-s window (batch 1,
    median of 50 after 5 warm-up), and a local round in a fresh process on wearable
    ``partition``'s records (the process holds those records only, as the device would):
    peak resident memory (the whole process's, Python and torch included, and its resident
    size just before the round), CPU seconds per 10-s window of training (the first round
    builds the view bank; later rounds reuse it). The mean-teacher wearable (no teacher) is
    measured the same way.
    """
    from dataclasses import fields

    import torch

    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.federated import simulated_client_data
    from liteheart_core.views import teacher_view
    from liteheart_core.wearable import WearableView

    torch.set_num_threads(1)
    local = simulated_client_data(
        args.data,
        600,
        "superdiagnostic",
        partition,
        args.hospitals + args.wearables,
        args.partition,
        args.alpha,
        args.labelled_fraction,
        0,
        WearableView(seed=partition),
        args.wearable_labelled_fraction,
        tuple(int(f) for f in args.server_folds.split(",")),
    )
    records = Path(tempfile.mkdtemp(prefix="lh-device-")) / "records.pt"
    torch.save({f.name: getattr(local, f.name) for f in fields(local) if f.name != "teacher_cache"}, records)
    out = {}
    options = {"none (mean teacher)": ""} | {k: c["path"] for k, c in teachers["candidates"].items()}
    for name, path in options.items():
        row: dict = {}
        if path:
            net, _ = load_checkpoint(Path(path))
            buf = io.BytesIO()
            torch.save({k: v.float() for k, v in net.state_dict().items()}, buf)
            row["bytes"] = buf.getbuffer().nbytes
            row["parameters"] = sum(p.numel() for p in net.parameters())
            x = teacher_view(torch.randn(1, 1, 1000), net.n_leads, [0])
            times = []
            with torch.no_grad():
                for i in range(55):
                    t0 = time.process_time()  # CPU time: what the core spends, whatever else runs
                    net(x)
                    if i >= 5:
                        times.append(time.process_time() - t0)
            row["inference_ms_per_window"] = 1000 * float(np.median(times))
        probe = {
            "records": str(records),
            "teacher": path,
            "method": args.method if path else DEFAULT_METHOD,
            "epochs": args.local_epochs,
        }
        done = subprocess.run(
            [sys.executable, "-c", _ROUND_PROBE, json.dumps(probe)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if done.returncode:
            raise RuntimeError(f"device-cost probe for {name} failed: {done.stderr[-2000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        windows = r["records"] * args.local_epochs
        row.update(
            {
                "records": r["records"],
                "local_epochs": args.local_epochs,
                "baseline_rss_mb": round(r["before_rss_mb"], 1),
                "peak_rss_mb": round(r["peak_rss_mb"], 1),
                "round_rss_mb": round(r["peak_rss_mb"] - r["before_rss_mb"], 1),
                "first_round_s_per_window": r["first_round_cpu_s"] / windows,
                "later_round_s_per_window": r["later_round_cpu_s"] / windows,
            }
        )
        out[name] = row
        print(f"  device cost {name}: {row}", flush=True)
    return out


# --- runs -------------------------------------------------------------------------------------


def run_one(job: dict) -> dict:
    """One federation with one seed through the real server and client code, scored once on fold 8."""
    os.environ["LITEHEART_CLIENT_CACHE"] = "64"  # every client's data and teacher targets kept across rounds
    import torch

    torch.set_num_threads(1)
    from client.app import app as client_app
    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.config import FedConfig
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.metrics import summarise, tune_thresholds
    from liteheart_core.train import predict
    from liteheart_core.wearable import WearableView, wearable_signals
    from server.orchestrate import ServerOptions, run_federation
    from simulations.local_grid import LocalGrid, server_identity
    from simulations.run_cmd import quiet_flower

    quiet_flower(False)
    a, fed, seed = job["args"], job["federation"], job["seed"]
    total = a["hospitals"] + a["wearables"]
    ids = members(fed, a["hospitals"], a["wearables"])
    _, with_teacher, weighting = FEDERATIONS[fed]
    cfg = FedConfig(
        data=a["data"],
        task="superdiagnostic",
        clients=total,
        wearables=a["wearables"],
        rounds=a["rounds"],
        partition=a["partition"],
        alpha=a["alpha"],
        labelled_fraction=a["labelled_fraction"],
        wearable_labelled_fraction=a["wearable_labelled_fraction"],
        method=a["method"],
        local_epochs=a["local_epochs"],
        teacher=job["teacher"],
        seed=seed,
        device="cpu",
        min_clients=len(ids),
        fraction_train=1.0,
        server_folds=a["server_folds"],
        wearable_teacher=job["wearable_teacher"] if with_teacher else "",
        wearable_weighting=weighting,
    )
    with tempfile.TemporaryDirectory(prefix="lh-wearables-") as tmp:
        grid = LocalGrid(
            client_app,
            node_ids=[1000 + i for i in ids],
            cache_root=Path(tmp) / "nodes",
            node_configs={1000 + i: {"partition-id": i, "num-partitions": total} for i in ids},
        )
        grid.traffic = _NoTraffic()  # an hour of messages is not kept (the audit test keeps them)
        opts = ServerOptions(run_dir=Path(tmp) / "runs", name=f"{fed}-s{seed}")
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        with server_identity():
            shown = run_federation(grid, cfg, opts)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if shown["run"]["status"] != "completed" or len(shown["rounds"]) != a["rounds"]:
            raise RuntimeError(
                f"{fed} seed {seed}: run {shown['run']['id']} ended {shown['run']['status']} after "
                f"{len(shown['rounds'])} rounds: {shown['run'].get('error')}"
            )
        model, meta = load_checkpoint(opts.run_dir / shown["run"]["id"] / "global_student.pt")
    data = resolve_data(Path(a["data"]))
    _, y = data.labels("superdiagnostic")
    test, val = data.rows("superdiagnostic", folds=[8]), data.rows("superdiagnostic", folds=[9])
    cpu_dev = torch.device("cpu")
    clean_thr = np.asarray(meta["thresholds"])  # tuned by the server on fold 9, clean lead I
    test_probs = predict(model, data.x(test, leads="I"), cpu_dev)
    # wearable-degraded lead I: thresholds tuned on fold 9 as wearables record it, the same view for every federation
    worn_val = predict(model, wearable_signals(data.x(val, leads="I"), data.fs, WearableView(seed=seed)), cpu_dev)
    worn_thr = tune_thresholds(y[val], worn_val)
    worn_probs = predict(
        model, wearable_signals(data.x(test, leads="I"), data.fs, WearableView(seed=10_000 + seed)), cpu_dev
    )
    rounds = [
        {
            "round": r["number"],
            **{
                k: r["central_metrics"][k] for k in ("macro_f1", "macro_auc", "wearable_macro_f1", "wearable_macro_auc")
            },
            "participants": len(r["participants"]),
            "failures": r["n_failures"],
            "wearable_share": r["train_metrics"].get("wearable/share"),
            "wearable_kd": r["train_metrics"].get("wearable/kd"),
        }
        for r in shown["rounds"]
    ]
    return {
        "federation": fed,
        "seed": seed,
        "run_id": shown["run"]["id"],
        "clients": len(ids),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "wearable_teacher": job["wearable_teacher"] if with_teacher else "",
        "fold9_final": rounds[-1],
        "rounds": rounds,
        "test": summarise(y[test], test_probs, clean_thr),
        "test_wearable": summarise(y[test], worn_probs, worn_thr),
        "test_probs": test_probs.round(5).tolist(),
        "thresholds": clean_thr.tolist(),
        "worn_probs": worn_probs.round(5).tolist(),
        "worn_thresholds": worn_thr.tolist(),
    }


class _NoTraffic(list):
    def append(self, item) -> None:  # noqa: D401 - a list that keeps nothing
        return None


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(row) + "\n")


def _load_runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# --- report -----------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "values": [round(float(v), 4) for v in arr],
    }


def build_report(
    runs: list[dict], data, teachers: dict, cost: dict | None, settings: dict, commands: list[str], notes: list[str]
) -> dict:
    rows = sorted({r["federation"] for r in runs}, key=list(FEDERATIONS).index)
    _, y = data.labels("superdiagnostic")
    y_test = y[data.rows("superdiagnostic", folds=[8])]
    table, deltas = {}, {}
    for fed in rows:
        mine = sorted((r for r in runs if r["federation"] == fed), key=lambda r: r["seed"])
        table[fed] = {
            "seeds": [r["seed"] for r in mine],
            "clients": mine[0]["clients"],
            "minutes": float(np.mean([r["seconds"] for r in mine])) / 60,
            **{
                f"{view}_{k}": _mean_std([r[field][k] for r in mine])
                for view, field in (("clean", "test"), ("wearable", "test_wearable"))
                for k in ("macro_auc", "macro_f1")
            },
        }
    base = [r for r in runs if r["federation"] == BASELINE]
    for fed in rows:
        if fed == BASELINE or not base:
            continue
        mine = [r for r in runs if r["federation"] == fed]
        deltas[fed] = {
            "clean": paired_bootstrap(y_test, mine, base),
            "wearable": paired_bootstrap(
                y_test,
                [{"seed": r["seed"], "test_probs": r["worn_probs"], "thresholds": r["worn_thresholds"]} for r in mine],
                [{"seed": r["seed"], "test_probs": r["worn_probs"], "thresholds": r["worn_thresholds"]} for r in base],
            ),
        }
    slim = [
        {k: v for k, v in r.items() if k not in ("test_probs", "worn_probs", "thresholds", "worn_thresholds")}
        for r in runs
    ]
    return {
        "commands": commands,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "test_records": int(len(y_test)),
        "settings": settings,
        "teachers": teachers,
        "device_cost": cost,
        "table": table,
        "vs_hospital_only": deltas,
        "runs": slim,
        "notes": notes,
    }


def _fmt(cell: dict) -> str:
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def _delta(d: dict, key: str) -> str:
    if not d:
        return "–"
    c = d[key]
    return f"{c['mean']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] ({c['positive_seeds']}/{len(c['per_seed'])})"


def render(report: dict) -> str:
    s, t = report["settings"], report["teachers"]
    m = report["machine"]
    lines = [
        "# Wearables in the federation (protocol v2): hospital-only vs wearable-only vs mixed, with and without a "
        "wearable teacher",
        "",
        "Commands (in order): " + "; ".join(f"`{c}`" for c in report["commands"]),
        "",
        f"Machine: {m['cpu']}, {m['cpus']} cores, {m['platform']}, torch {m['torch']}; shared with other jobs "
        f"(wall times vary). Report written {report['date']}.",
        "",
        f"Data: `{s['data']}` (PTB-XL superdiagnostic: NORM, MI, STTC, CD, HYP; 100 Hz, 10-s windows).",
        f"- **Server archive**: folds {s['server_folds']} (all labels). The 12-lead teacher "
        f"(`{t['archive']['path']}`) and every wearable-teacher candidate learn from them alone; no client holds "
        "a record of them.",
        f"- **Clients**: folds 3-7 train and fold 9 validates locally, split into {s['hospitals'] + s['wearables']} "
        f"patient-disjoint partitions ({s['partition']}, alpha {s['alpha']}, seed = run seed). Partitions "
        f"0-{s['hospitals'] - 1} are 12-lead **hospital sites** (the 12-lead teacher on site, method "
        f"`{s['method']}`, {s['labelled_fraction']:.0%} of records labelled); partitions {s['hospitals']}-"
        f"{s['hospitals'] + s['wearables'] - 1} are **wearables** (lead I only, degraded: 250 Hz native rate, "
        f"electrode noise, motion artefacts, seeded per device; {s['wearable_labelled_fraction']:.0%} labelled; "
        "P/QRS/T regions delineated on their own lead I).",
        f"- {s['rounds']} rounds, {s['local_epochs']} local epochs, FedAvg by examples unless the row says "
        "otherwise; the same partitions, rounds and seeds for every federation.",
        f"- **Scoring**: the final-round global student, once, on fold 8 (the test fold, {report['test_records']} "
        "records), with "
        "per-class thresholds tuned on fold 9. *Clean*: fold 8's lead I as prepared from the 12-lead records. "
        "*Wearable*: the same records degraded as a wearable records them (thresholds tuned on degraded fold 9). "
        "Mean ± sample std (ddof = 1) over seeds. Δ vs hospital-only: paired bootstrap over the fold-8 records "
        "per seed (2,000 resamples, averaged over seeds), 95% interval, and in how many seeds the difference "
        "was positive.",
        "",
        "## Wearable teacher: candidates (fold 9, selection only)",
        "",
        "| teacher | trained on folds | macro AUC, clean lead I | macro AUC, wearable lead I | macro AUC, 12 leads |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    a = t["archive"]["lead_one"]
    lines.append(
        f"| 12-lead archive teacher (no lead dropout), other leads zero | {t['archive']['train_folds']} | "
        f"{a['clean']['macro_auc']:.3f} | {a['wearable']['macro_auc']:.3f} | "
        f"{a['twelve_leads']['macro_auc']:.3f} |"
    )
    for kind, c in t["candidates"].items():
        twelve = f"{c['lead_one']['twelve_leads']['macro_auc']:.3f}" if "twelve_leads" in c["lead_one"] else "–"
        mark = " **(chosen)**" if kind == t["chosen"] else ""
        lines.append(
            f"| `{kind}`{mark} | {c['train_folds']} | {c['lead_one']['clean']['macro_auc']:.3f} | "
            f"{c['lead_one']['wearable']['macro_auc']:.3f} | {twelve} |"
        )
    lines += [
        "",
        f"Chosen by the mean of the two lead-I AUCs on fold 9: `{t['chosen']}`. The `+teacher` rows ship "
        "it to every wearable.",
        "",
    ]
    if report.get("device_cost"):
        lines += [
            "## Device cost of each wearable-teacher option (one CPU core)",
            "",
            "| option | bytes shipped (once) | parameters | inference per 10-s window | local round: peak RSS "
            "(of which before the round) | CPU per 10-s window of training, first round / later rounds |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in report["device_cost"].items():
            shipped = f"{r['bytes'] / 2**20:.1f} MiB" if "bytes" in r else "0"
            params = f"{r['parameters'] / 1e6:.2f} M" if "parameters" in r else "–"
            infer = f"{r['inference_ms_per_window']:.1f} ms" if "inference_ms_per_window" in r else "–"
            lines.append(
                f"| {name} | {shipped} | {params} | {infer} | {r['peak_rss_mb']:.0f} MB "
                f"({r['baseline_rss_mb']:.0f} MB; round +{r['round_rss_mb']:.0f} MB) | "
                f"{1000 * r['first_round_s_per_window']:.1f} ms / {1000 * r['later_round_s_per_window']:.1f} ms |"
            )
        any_row = next(iter(report["device_cost"].values()))
        lines += [
            "",
            f"Local round: one wearable's records ({any_row['records']} windows, {any_row['local_epochs']} "
            "local epochs, the run's method), in a fresh Python process that holds only those records, the "
            "teacher and the student, torch on one thread. RSS is the whole process's (the Python + torch "
            "runtime included; a phone would run an inference/training runtime of its own), its size just "
            "before the round in brackets. Times are CPU seconds (inference: batch 1, median of 50). The "
            "first round includes the view bank (the teacher on 8 views of every record), later rounds reuse "
            "it.",
            "",
        ]
    lines += [
        "## Federations (fold 8, final round)",
        "",
        "| federation | clients | macro AUC, clean lead I | Δ AUC clean vs hospital-only | macro AUC, "
        "wearable lead I | Δ AUC wearable | macro F1 clean | macro F1 wearable | min/run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for fed, row in report["table"].items():
        d = report["vs_hospital_only"].get(fed, {})
        lines.append(
            f"| {fed} | {row['clients']} | {_fmt(row['clean_macro_auc'])} | "
            f"{_delta(d.get('clean', {}), 'macro_auc')} | {_fmt(row['wearable_macro_auc'])} | "
            f"{_delta(d.get('wearable', {}), 'macro_auc')} | {_fmt(row['clean_macro_f1'])} | "
            f"{_fmt(row['wearable_macro_f1'])} | {row['minutes']:.1f} |"
        )
    lines += ["", "Δ F1 vs hospital-only (clean / wearable lead I):", ""]
    for fed, d in report["vs_hospital_only"].items():
        lines.append(f"- {fed}: {_delta(d['clean'], 'macro_f1')} / {_delta(d['wearable'], 'macro_f1')}")
    lines += [
        "",
        "Per run (fold 8 final round; fold-9 final in brackets; the wearables' share per round where "
        "the server chose it):",
        "",
    ]
    for r in sorted(report["runs"], key=lambda r: (list(FEDERATIONS).index(r["federation"]), r["seed"])):
        f9 = r["fold9_final"]
        shares = [x["wearable_share"] for x in r["rounds"] if x.get("wearable_share") is not None]
        share = (
            (" shares " + ",".join(f"{v:.2f}" for v in shares))
            if FEDERATIONS[r["federation"]][2] == "validated"
            else ""
        )
        lines.append(
            f"- {r['federation']}, seed {r['seed']} (run {r['run_id']}): AUC {r['test']['macro_auc']:.3f} "
            f"clean / {r['test_wearable']['macro_auc']:.3f} wearable, F1 {r['test']['macro_f1']:.3f} / "
            f"{r['test_wearable']['macro_f1']:.3f} [fold 9 AUC {f9['macro_auc']:.3f}]; "
            f"{r['seconds'] / 60:.1f} min{share}"
        )
    lines += ["", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl")
    parser.add_argument("--server-folds", default="1,2")
    parser.add_argument("--teacher", default="", help="the 12-lead archive teacher (default: trained into --work)")
    parser.add_argument(
        "--wearable-teachers",
        default="lead-dropout,assistant",
        help="candidates (liteheart_core.wearable.WEARABLE_TEACHER_KINDS), trained into --work",
    )
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--wearables", type=int, default=12)
    parser.add_argument("--partition", default="dirichlet")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--labelled-fraction", type=float, default=0.3, help="the sites' labelled fraction")
    parser.add_argument("--wearable-labelled-fraction", type=float, default=0.1)
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=STUDENT_METHODS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--federations", default=",".join(DEFAULT_FEDERATIONS))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each on one thread)")
    parser.add_argument("--work", default="runs/wearable_benchmark", help="teachers, runs file, device cost")
    parser.add_argument("--out", default="results")
    parser.add_argument("--no-device-cost", action="store_true")
    parser.add_argument("--redo-device-cost", action="store_true", help="measure the device cost again")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the runs file")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        sys.exit(f"data folder {args.data} does not exist")
    federations = [f for f in args.federations.split(",") if f]
    unknown = set(federations) - set(FEDERATIONS)
    if unknown:
        sys.exit(f"unknown federations {sorted(unknown)}; choose from {', '.join(FEDERATIONS)}")
    seeds = [int(s) for s in args.seeds.split(",")]

    import torch

    from liteheart_core.data.dataset import resolve_data

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = resolve_data(Path(args.data))
    settings = {
        k: v
        for k, v in vars(args).items()
        if k not in ("jobs", "out", "note", "report_only", "seeds", "federations", "no_device_cost", "redo_device_cost")
    }
    state_path = work / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("settings") and state["settings"] != settings:
        differ = [k for k in settings if state["settings"].get(k) != settings[k]]
        sys.exit(f"{work} holds runs with other settings ({', '.join(differ)}); use another --work")
    command = "python -m simulations.benchmark_wearables " + shlex.join(argv if argv is not None else sys.argv[1:])
    state.setdefault("commands", [])
    if command not in state["commands"]:
        state["commands"].append(command)
    state["settings"] = settings
    state["notes"] = list(dict.fromkeys(state.get("notes", []) + args.note))
    if "teachers" not in state:
        state["teachers"] = prepare_teachers(args, data, work)
        state_path.write_text(json.dumps(state, indent=2))
    teachers = state["teachers"]
    print(f"wearable teacher: {teachers['chosen']} ({teachers['candidates'][teachers['chosen']]['path']})", flush=True)
    runs_path, cost_path = work / "runs.jsonl", work / "device_cost.json"
    if args.redo_device_cost and args.report_only:
        cost_path.write_text(json.dumps(device_cost(args, teachers, partition=args.hospitals), indent=2))
    if not args.report_only:
        if not args.no_device_cost and (args.redo_device_cost or not cost_path.is_file()):
            cost_path.write_text(json.dumps(device_cost(args, teachers, partition=args.hospitals), indent=2))
        done = {(r["federation"], r["seed"]) for r in _load_runs(runs_path)}
        jobs = [
            {
                "args": vars(args),
                "federation": fed,
                "seed": seed,
                "teacher": teachers["archive"]["path"],
                "wearable_teacher": teachers["candidates"][teachers["chosen"]]["path"],
            }
            for seed in seeds
            for fed in federations
            if (fed, seed) not in done
        ]
        print(f"{len(jobs)} runs to do ({len(done)} already in {runs_path})", flush=True)
        import multiprocessing

        with ProcessPoolExecutor(
            max_workers=max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = {pool.submit(run_one, job): job for job in jobs}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:  # one failed run is reported; the others go on
                    print(f"FAILED {job['federation']} seed {job['seed']}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                _append(runs_path, row)
                print(
                    f"{row['federation']} seed {row['seed']}: fold-8 AUC {row['test']['macro_auc']:.3f} clean, "
                    f"{row['test_wearable']['macro_auc']:.3f} wearable ({row['seconds'] / 60:.1f} min)",
                    flush=True,
                )
        state_path.write_text(json.dumps(state, indent=2))
    runs = _load_runs(runs_path)
    if not runs:
        sys.exit("no runs yet")
    cost = json.loads(cost_path.read_text()) if cost_path.is_file() else None
    report = build_report(runs, data, teachers, cost, settings, state["commands"], state["notes"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wearable_benchmark.json").write_text(json.dumps(report, indent=2))
    (out / "wearable_benchmark.md").write_text(render(report))
    print(f"wrote {out / 'wearable_benchmark.md'}", flush=True)


if __name__ == "__main__":
    main()
