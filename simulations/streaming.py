"""Streaming scenario: clients receive their PTB-XL records over time and learn continually.

Each client gets one partition of PTB-XL folds 1-8 (by site, patient-disjoint), ordered by
``ecg_id`` (a proxy for recording time) and cut into ``--chunks`` consecutive chunks. One
patient in five of each client is held out for scoring and never trains. At each chunk the
client's records of that chunk arrive: every WFDB file goes through the real ingest path
(quality gate, preparation, one transaction into the client's own SQLite record store).
Then ``--rounds-per-chunk`` federated rounds run; in each, every client trains the global
lead-I student for one local epoch on its new records plus a class-balanced replay sample
(:func:`liteheart_core.continual.continual_round`, usage counts written to its store), and
the server averages the students (FedAvg weighted by training examples).

The federated loop runs in-process over the Flower-free functions (no Flower simulation
engine), to fit the time budget on 2 CPU cores. The frozen teacher's targets for a record are
computed the first time the record trains and reused by every later round and run (the same
values: the teacher is frozen and in eval mode).

After each chunk the global student is scored on fold 9 (thresholds tuned there) and on the
held-out records of every chunk (fold-9 thresholds), giving R[i][j] = score on chunk j after
learning chunk i. Forgetting of chunk j = R[j][j] - R[last][j]; forward transfer to chunk j
= R[j-1][j] - R[init][j], where "init" is the untrained student of the same seed (the
random-initialisation baseline of Lopez-Paz & Ranzato, GEM, 2017).

    python -m simulations.streaming --data ../shared/data/ptbxl --partition site --clients 4 --chunks 4 \\
        --rounds-per-chunk 2 --replay 0,200 --teacher runs/teacher_ptbxl.pt --seeds 0,1

Writes ``results/streaming.{md,json}``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HOLDOUT_SEED = 0


def _fedavg(states: list[dict], weights: list[float]) -> dict:
    import torch

    total = float(sum(weights))
    out = {}
    for key, ref in states[0].items():
        if torch.is_floating_point(ref):
            out[key] = sum(s[key] * (w / total) for s, w in zip(states, weights))
        else:
            out[key] = ref.clone()
    return out


def _score(model, x: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    import torch

    from liteheart_core.metrics import summarise
    from liteheart_core.train import predict

    if len(x) == 0:
        return {"macro_f1": float("nan"), "macro_auc": float("nan"), "n": 0}
    probs = predict(model, x, torch.device("cpu"))
    s = summarise(y, probs, thresholds)
    return {"macro_f1": s["macro_f1"], "macro_auc": s["macro_auc"], "n": int(len(x))}


def _client_streams(
    data, task: str, n_clients: int, scheme: str, n_chunks: int, holdout: float, limit: int = 0
) -> list[dict]:
    """Each client's rows in ecg_id order, cut into chunks, with held-out patients' rows apart."""
    from liteheart_core.data.partition import partition
    from liteheart_core.data.splits import SPLITS

    _, y = data.labels(task)
    rows = data.rows(task, folds=list(SPLITS["train"]))
    parts = partition(data.index, y, rows, n_clients, scheme, seed=HOLDOUT_SEED)
    rng = np.random.default_rng(HOLDOUT_SEED)
    clients = []
    for part in parts:
        order = np.argsort(data.index.loc[part.rows, "record"].astype(int).to_numpy(), kind="stable")
        ordered = part.rows[order][:limit] if limit > 0 else part.rows[order]
        patients = data.index.loc[ordered, "patient"].astype(str).to_numpy()
        unique = np.unique(patients)
        held = set(rng.choice(unique, size=max(1, int(round(holdout * len(unique)))), replace=False))
        is_held = np.array([p in held for p in patients])
        chunks = []
        for idx in np.array_split(np.arange(len(ordered)), n_chunks):
            chunks.append({"train": ordered[idx][~is_held[idx]], "eval": ordered[idx][is_held[idx]]})
        clients.append({"name": part.name, "chunks": chunks})
    return clients


def _examine_all(data_root: Path, data, clients: list[dict], task: str) -> tuple[dict[int, Any], float]:
    """Ingest-pipeline output (read, gate, prepare, label) for every training row, computed once."""
    import pandas as pd

    from client.ingest import examine
    from liteheart_core.data.incoming import LabelBook, task_classes
    from liteheart_core.data.prepare import PrepSettings

    db = pd.read_csv(data_root / "ptbxl_database.csv", usecols=["ecg_id", "filename_lr"]).set_index("ecg_id")
    book = LabelBook.create(task, task_classes(task))
    settings = PrepSettings.from_dict(data.meta["settings"])
    t0 = time.perf_counter()
    out = {}
    for client in clients:
        for chunk in client["chunks"]:
            for row in chunk["train"]:
                ecg = int(data.index.loc[row, "record"])
                out[int(row)] = examine(data_root / db.loc[ecg, "filename_lr"], book, settings)
    return out, time.perf_counter() - t0


def run_one(
    data,
    clients,
    examined,
    teacher,
    targets_of,
    target_rows,
    cfg_dict: dict,
    seed: int,
    replay: int,
    rounds_per_chunk: int,
    local_epochs: int,
    workdir: Path,
) -> dict:
    """One streaming run (one seed, one replay size); returns its scores and bookkeeping."""
    import torch

    from client.store import RecordStore
    from liteheart_core.config import FedConfig
    from liteheart_core.continual import (
        ClassBalancedReservoir,
        TeacherTargets,
        continual_round,
    )
    from liteheart_core.federated import (
        global_evaluation,
        student_for,
        train_config,
    )

    task = cfg_dict["task"]
    classes, y = data.labels(task)
    cfg = train_config(FedConfig.from_dict({**cfg_dict, "seed": seed}))
    torch.manual_seed(seed)
    global_model = student_for(classes)
    stores = [
        RecordStore(workdir / f"client{k}-seed{seed}-replay{replay}.sqlite", task=task, prep=data.meta["settings"])
        for k in range(len(clients))
    ]
    buffers = [
        ClassBalancedReservoir(replay, len(classes), seed=seed * 1000 + k) if replay > 0 else None
        for k in range(len(clients))
    ]
    key_of: list[dict[int, int]] = [{} for _ in clients]  # store key -> dataset row
    n_chunks = len(clients[0]["chunks"])
    eval_rows = [np.concatenate([c["chunks"][j]["eval"] for c in clients]) for j in range(n_chunks)]
    train_rows = [np.concatenate([c["chunks"][j]["train"] for c in clients]) for j in range(n_chunks)]

    def evaluate(model) -> dict:
        model.eval()
        g, thr = global_evaluation(model, data, task, lead=cfg.student_lead, device="cpu")
        held = [_score(model, data.x(r, leads=cfg.student_lead), y[r], thr) for r in eval_rows]
        seen = [_score(model, data.x(r, leads=cfg.student_lead), y[r], thr) for r in train_rows]
        return {
            "fold9": {"macro_f1": g["macro_f1"], "macro_auc": g["macro_auc"]},
            "held_out": held,
            "train_records": seen,
        }

    t0 = time.perf_counter()
    evals = {"init": evaluate(global_model)}
    rounds = []
    server_round = 0
    flagged = 0
    for j in range(n_chunks):
        for k, client in enumerate(clients):
            for row in client["chunks"][j]["train"]:
                result = stores[k].add(examined[int(row)])
                key_of[k][result.key] = int(row)
                rec = examined[int(row)]
                flagged += int(rec.quality is None or not rec.quality.usable)
        for _ in range(rounds_per_chunk):
            server_round += 1
            states, weights, reports = [], [], []
            for k, client in enumerate(clients):
                student = copy.deepcopy(global_model)
                targets = targets_of[k]
                if targets is None:
                    targets = targets_of[k] = TeacherTargets(teacher, student, cfg)
                _check_keys(target_rows[k], key_of[k])
                out = continual_round(
                    stores[k],
                    buffers[k],
                    student,
                    teacher,
                    cfg,
                    server_round,
                    epochs=local_epochs,
                    new_uses=rounds_per_chunk,
                    replay_ratio=1.0,
                    replay_max=replay,
                    name=client["name"],
                    targets=targets,
                )
                if out is None:
                    continue
                states.append(out.state)
                weights.append(out.metrics["num-examples"])
                reports.append(
                    {
                        "client": k,
                        "new": len(out.plan.new),
                        "replay": len(out.plan.replay),
                        "loss": out.metrics.get("total", float("nan")),
                        "seconds": out.metrics["train-seconds"],
                    }
                )
            global_model.load_state_dict(_fedavg(states, weights))
            rounds.append({"round": server_round, "chunk": j, "clients": reports})
        evals[f"after_chunk_{j}"] = evaluate(global_model)
        print(
            f"  seed {seed} replay {replay}: chunk {j + 1}/{n_chunks} fold-9 F1 "
            f"{evals[f'after_chunk_{j}']['fold9']['macro_f1']:.3f} AUC "
            f"{evals[f'after_chunk_{j}']['fold9']['macro_auc']:.3f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    for k, buf in enumerate(buffers):
        if buf is not None:
            stores[k].set_state("replay", buf.state())
    infos = [s.info() for s in stores]
    for s in stores:
        s.close()
    return {
        "seed": seed,
        "replay": replay,
        "evals": evals,
        "rounds": rounds,
        "flagged_records": flagged,
        "buffer_sizes": [len(b) if b is not None else 0 for b in buffers],
        "store_uses": [i["uses"] for i in infos],
        "store_usable": [i["usable"] for i in infos],
        "seconds": time.perf_counter() - t0,
        **_continual_metrics(evals, n_chunks),
    }


def _check_keys(seen: dict[int, int], key_of: dict[int, int]) -> None:
    """Shared teacher targets are keyed by store key: every run must give a row the same key."""
    for key, row in key_of.items():
        if seen.setdefault(key, row) != row:
            raise RuntimeError(
                f"store key {key} is dataset row {row} in this run but {seen[key]} before; "
                "teacher targets cannot be shared"
            )


def _continual_metrics(evals: dict, n: int) -> dict:
    """R matrices, forgetting and forward transfer, on held-out records and on the chunks' own training records."""
    out: dict = {}
    for part in ("held_out", "train_records"):
        for metric in ("macro_f1", "macro_auc"):
            r = np.array([[evals[f"after_chunk_{i}"][part][j][metric] for j in range(n)] for i in range(n)])
            init = np.array([evals["init"][part][j][metric] for j in range(n)])
            forgetting = [float(r[j, j] - r[n - 1, j]) for j in range(n - 1)]
            max_forgetting = [float(np.max(r[j : n - 1, j]) - r[n - 1, j]) for j in range(n - 1)]
            forward = [float(r[j - 1, j] - init[j]) for j in range(1, n)]
            key = metric if part == "held_out" else f"{part}_{metric}"
            out[key] = {
                "R": r.tolist(),
                "init": init.tolist(),
                "forgetting": forgetting,
                "mean_forgetting": float(np.mean(forgetting)) if forgetting else float("nan"),
                "max_forgetting": max_forgetting,
                "forward_transfer": forward,
                "mean_forward_transfer": float(np.mean(forward)) if forward else float("nan"),
                "final_mean_over_chunks": float(np.mean(r[n - 1])),
            }
    return out


def _fmt(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{np.mean(vals):.3f} ({', '.join(f'{v:.3f}' for v in vals)})"


def _report(report: dict) -> str:
    runs = report["runs"]
    replays = sorted({r["replay"] for r in runs})
    n = report["settings"]["chunks"]
    lines = [
        "# Continual on-device learning: streaming PTB-XL with and without replay",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Data: {report['data']['path']} (PTB-XL, {report['data']['records']} records, fingerprint "
        f"`{report['data']['fingerprint'][:16]}`), task {report['settings']['task']}; streams from folds 1-8, "
        "fold 9 for thresholds and the global score.",
        "",
        f"Machine: {report['machine']}; torch threads {report['settings']['threads']}. "
        f"Wall time {report['seconds']:.0f} s (ingest-pipeline pass {report['timing']['examine_s']:.0f} s, "
        f"runs {report['timing']['runs_s']:.0f} s). The 2 cores were shared with other jobs during the run "
        f"(load average {report['timing']['load_avg']}).",
        "",
        f"Teacher: `{report['settings']['teacher']}` (12-lead, trained on real PTB-XL folds 1-8, its fold-9 "
        f"macro F1 {report['settings']['teacher_f1']:.3f}).",
        "",
        "## Setting",
        "",
        f"- {report['settings']['clients']} clients, `{report['settings']['partition']}` partition "
        f"(patient-disjoint): "
        + "; ".join(f"{c['name']}: {c['train']} training + {c['eval']} held-out records" for c in report["clients"])
        + ".",
        f"- Each client's records in `ecg_id` order (a proxy for time), cut into {n} chunks; one patient in "
        f"{round(1 / report['settings']['holdout'])} per client held out (never trains) to score the chunks.",
        f"- Every chunk's records enter each client's SQLite record store through the ingest pipeline (quality "
        f"gate, preparation, one transaction each); records flagged by the gate: "
        f"{runs[0]['flagged_records']} of {sum(c['train'] for c in report['clients'])}.",
        f"- {report['settings']['rounds_per_chunk']} rounds per chunk; per round each client trains "
        f"{report['settings']['local_epochs']} local epoch of method `{report['settings']['method']}` "
        "(all training records labelled) on its new records (a record is new for the rounds of its own chunk) "
        "plus, with replay, a class-balanced reservoir sample as large as the new set (at most the buffer "
        "size); FedAvg weighted by examples. Replay therefore also means more gradient steps per round.",
        "- Federated loop in-process over the Flower-free functions (`liteheart_core.continual`, "
        "`liteheart_core.federated.local_round`), not Flower's simulation engine.",
        f"- Seeds {report['settings']['seeds']} (student initialisation, batches, reservoir); the partition and "
        "hold-out are fixed (seed 0). Both replay settings use the same seeds.",
        "",
        "Definitions: R[i][j] is the global student's score on chunk j's held-out records after learning chunk i "
        "(F1 at thresholds tuned on fold 9). Forgetting of chunk j = R[j][j] - R[last][j] (positive = forgot). "
        "Forward transfer to chunk j = R[j-1][j] - R[init][j], with R[init] the untrained student of the same "
        "seed (GEM's random-initialisation baseline). Numbers are means over seeds, per-seed values in brackets.",
        "",
        "## Global fold-9 score after each chunk",
        "",
        "| after chunk | "
        + " | ".join(f"F1, replay {r}" for r in replays)
        + " | "
        + " | ".join(f"AUC, replay {r}" for r in replays)
        + " |",
        "| --- |" + " --- |" * (2 * len(replays)),
    ]
    keys = ["init"] + [f"after_chunk_{i}" for i in range(n)]
    for key in keys:
        label = "untrained" if key == "init" else str(int(key.rsplit("_", 1)[1]) + 1)
        cells = []
        for metric in ("macro_f1", "macro_auc"):
            for r in replays:
                cells.append(_fmt([x["evals"][key]["fold9"][metric] for x in runs if x["replay"] == r]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for metric, name in (("macro_auc", "macro AUC"), ("macro_f1", "macro F1")):
        lines += ["", f"## Held-out chunk scores ({name}): R[i][j]", ""]
        for r in replays:
            sel = [x for x in runs if x["replay"] == r]
            lines += [
                f"Replay {r}:",
                "",
                "| after chunk | " + " | ".join(f"chunk {j + 1}" for j in range(n)) + " |",
                "| --- |" + " --- |" * n,
            ]
            lines.append(
                "| untrained | " + " | ".join(_fmt([x[metric]["init"][j] for x in sel]) for j in range(n)) + " |"
            )
            for i in range(n):
                lines.append(
                    f"| {i + 1} | " + " | ".join(_fmt([x[metric]["R"][i][j] for x in sel]) for j in range(n)) + " |"
                )
            lines.append("")
    lines += [
        "## Forgetting and forward transfer",
        "",
        "| replay | metric | forgetting per chunk (1..n-1) | mean forgetting | forward transfer per chunk (2..n) "
        "| mean forward transfer | mean over chunks at the end |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in replays:
        sel = [x for x in runs if x["replay"] == r]
        for metric in ("macro_auc", "macro_f1"):
            f = " / ".join(_fmt([x[metric]["forgetting"][j] for x in sel]) for j in range(n - 1))
            t = " / ".join(_fmt([x[metric]["forward_transfer"][j] for x in sel]) for j in range(n - 1))
            lines.append(
                f"| {r} | {metric} | {f} | {_fmt([x[metric]['mean_forgetting'] for x in sel])} | {t} | "
                f"{_fmt([x[metric]['mean_forward_transfer'] for x in sel])} | "
                f"{_fmt([x[metric]['final_mean_over_chunks'] for x in sel])} |"
            )
    lines += [
        "",
        "The same on each chunk's own training records (what the clients trained on, scored by the global model):",
        "",
        "| replay | metric | mean forgetting | mean forward transfer | mean over chunks at the end |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in replays:
        sel = [x for x in runs if x["replay"] == r]
        for metric in ("macro_auc", "macro_f1"):
            key = f"train_records_{metric}"
            lines.append(
                f"| {r} | {metric} | {_fmt([x[key]['mean_forgetting'] for x in sel])} | "
                f"{_fmt([x[key]['mean_forward_transfer'] for x in sel])} | "
                f"{_fmt([x[key]['final_mean_over_chunks'] for x in sel])} |"
            )
    lines += ["", "## Bookkeeping", ""]
    for x in runs:
        lines.append(
            f"- seed {x['seed']}, replay {x['replay']}: {x['seconds']:.0f} s; store uses per client "
            f"{x['store_uses']}; replay buffer sizes {x['buffer_sizes']}"
        )
    lines += [""] + [f"Note: {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl", help="a raw PTB-XL folder")
    parser.add_argument("--partition", default="site", choices=("iid", "site", "dirichlet"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--rounds-per-chunk", type=int, default=2)
    parser.add_argument("--replay", default="0,200", help="replay buffer size per client; a comma list runs each")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--method", default="kd", choices=("kd", "liteheart", "supervised"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--task", default="superdiagnostic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results")
    parser.add_argument("--name", default="streaming")
    parser.add_argument("--limit", type=int, default=0, help="smoke test: only the first N records of each client")
    parser.add_argument("--note", action="append", default=[])
    args = parser.parse_args(argv)

    import torch

    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.data.dataset import resolve_data
    from simulations.benchmark_central import machine

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    root = Path(args.data).resolve()
    data = resolve_data(root)
    classes, _ = data.labels(args.task)
    teacher, meta = load_checkpoint(Path(args.teacher))
    if list(meta["classes"]) != list(classes):
        sys.exit(f"teacher classes {meta['classes']} differ from the task's {classes}")
    clients = _client_streams(data, args.task, args.clients, args.partition, args.chunks, args.holdout, args.limit)
    print(
        "clients: "
        + "; ".join(
            f"{c['name']} {sum(len(ch['train']) for ch in c['chunks'])}+{sum(len(ch['eval']) for ch in c['chunks'])}"
            for c in clients
        ),
        flush=True,
    )
    examined, examine_s = _examine_all(root, data, clients, args.task)
    print(f"ingest pipeline on {len(examined)} records: {examine_s:.0f} s", flush=True)
    _check_same_arrays(data, examined)
    cfg = {"method": args.method, "task": args.task, "device": "cpu"}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    replays = [int(r) for r in args.replay.split(",") if r.strip()]
    targets_of: list = [None] * len(clients)  # per client, shared by every run: a record's targets never change
    target_rows: list[dict[int, int]] = [{} for _ in clients]  # store key -> dataset row the targets belong to
    runs = []
    t_runs = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="liteheart-streaming-") as tmp:
        for seed in seeds:
            for replay in replays:
                runs.append(
                    run_one(
                        data,
                        clients,
                        examined,
                        teacher,
                        targets_of,
                        target_rows,
                        cfg,
                        seed,
                        replay,
                        args.rounds_per_chunk,
                        args.local_epochs,
                        Path(tmp),
                    )
                )
    runs_s = time.perf_counter() - t_runs
    command = "python -m simulations.streaming " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    report = {
        "command": command,
        "machine": machine(),
        "data": {"path": str(args.data), "records": int(data.meta["records"]), "fingerprint": data.fingerprint},
        "settings": {
            "partition": args.partition,
            "clients": args.clients,
            "chunks": args.chunks,
            "rounds_per_chunk": args.rounds_per_chunk,
            "replays": replays,
            "seeds": seeds,
            "method": args.method,
            "local_epochs": args.local_epochs,
            "holdout": args.holdout,
            "task": args.task,
            "threads": args.threads,
            "teacher": args.teacher,
            "teacher_f1": float(meta.get("val_metrics", {}).get("macro_f1", float("nan"))),
            "federated_loop": "in-process (Flower-free functions), FedAvg weighted by examples",
            "replay_rule": "sample ceil(1.0 * new) from the buffer, at most the buffer size",
            "new_rule": "a record is new while used fewer than rounds-per-chunk times",
        },
        "clients": [
            {
                "name": c["name"],
                "train": int(sum(len(ch["train"]) for ch in c["chunks"])),
                "eval": int(sum(len(ch["eval"]) for ch in c["chunks"])),
                "chunks": [{"train": int(len(ch["train"])), "eval": int(len(ch["eval"]))} for ch in c["chunks"]],
            }
            for c in clients
        ],
        "timing": {"examine_s": examine_s, "runs_s": runs_s, "load_avg": " ".join(f"{v:.1f}" for v in os.getloadavg())},
        "seconds": time.perf_counter() - t_start,
        "runs": runs,
        "notes": args.note,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    text = _report(report)
    (out / f"{args.name}.md").write_text(text)
    print(text)


def _check_same_arrays(data, examined: dict) -> None:
    """The ingest pipeline must prepare records exactly as batch preparation did (spot check)."""
    for row in list(examined)[:: max(1, len(examined) // 25)]:
        rec = examined[row]
        if rec.prepared is None:
            continue
        if not np.array_equal(rec.prepared.windows[0], np.asarray(data.signals[row])):
            raise RuntimeError(f"record {rec.record_id}: ingest and batch preparation disagree")


if __name__ == "__main__":
    main()
