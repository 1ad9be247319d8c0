"""Centralised benchmark under protocol v2: teacher, labels-only, KD, FitNets, LiteHeart v1 and v2 (+ ablations).

Follows ``../shared/notes/benchmark-protocol.md`` (v2): PTB-XL superdiagnostic, 100 Hz,
10-s windows; folds 1-7 train, fold 9 selects (early stopping, thresholds, every choice),
fold 8 is scored once with fold-9 thresholds. Labelled fractions of the training records
(patient-disjoint, label-stratified) keep their labels, the rest are used without.
Tables:

- ``archive``: the teacher is trained on all training labels;
- ``same-labels``: the teacher is trained on the students' labelled subset (same fraction and seed).

Every student gets the same budget (``--epochs``, early stopping with ``--patience`` on
fold-9 macro AUC, the same weak augmentation on its labelled path) and every run's
curves are kept. ``--no-test`` runs a selection experiment: fold 8 is never touched.

Resumes from its runs file (``<out>/<name>_runs.jsonl``): a run already there is not run
again, so a cut job loses nothing and a later call adds rows (other methods, tables,
fractions, seeds) to the same tables. ``--aggregate`` only rebuilds the tables.

    python -m simulations.benchmark_central --data ../shared/data/ptbxl --tables archive,same-labels \\
        --fractions 0.1 --seeds 0,1,2,3,4 --methods supervised,kd,liteheart,liteheart-v2 --workers 2

Not part of the test suite: on 2 CPU cores a table takes hours; on one GPU minutes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from liteheart_core.methods import CORE_METHODS

COMPARISONS = (("liteheart-v2", "kd"), ("liteheart-v2", "supervised"), ("liteheart", "kd"), ("kd", "supervised"))
TABLES = ("archive", "same-labels")


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _score(model, data, folds: tuple[int, ...], leads: list[int], thresholds, device) -> tuple[dict, list]:
    from liteheart_core.metrics import summarise
    from liteheart_core.train import load_split, predict

    split = load_split(data, "superdiagnostic", folds)
    probs = predict(model.to(device), split.x[:, leads], device)
    return summarise(split.y.numpy(), probs, thresholds), probs.tolist()


def _job(job: dict) -> dict:
    """One training run in its own process; returns fold-9 metrics, fold-8 metrics and probabilities, curves."""
    import torch

    torch.set_num_threads(job["threads"])
    from liteheart_core.checkpoint import load_checkpoint, save_checkpoint
    from liteheart_core.data.dataset import PreparedData
    from liteheart_core.data.signal import lead_indices
    from liteheart_core.train import TrainConfig, checkpoint_meta, resolve_device, train

    data = PreparedData.open(Path(job["data"]))
    cfg = TrainConfig.from_dict({k: v for k, v in job["cfg"].items() if k != "tag"} | job.get("overrides", {}))
    teacher = load_checkpoint(Path(job["teacher"]))[0] if job.get("teacher") else None
    result = train(data, cfg, teacher=teacher, bank_cache=Path(job["work"]) / "banks")
    ckpt = Path(job["work"]) / f"{job['name']}.pt"
    save_checkpoint(ckpt, result.model, checkpoint_meta(data, cfg, result))
    leads = list(range(12)) if not cfg.spec.student else lead_indices(cfg.student_lead)
    device = resolve_device(cfg.device)
    row = {
        "name": job["name"],
        "table": job["table"],
        "method": cfg.method + (f"+{job['tag']}" if job.get("tag") else ""),
        "tag": job.get("tag", ""),
        "overrides": job.get("overrides", {}),
        "fraction": cfg.labelled_fraction,
        "seed": cfg.seed,
        "teacher": job.get("teacher_name"),
        "checkpoint": str(ckpt),
        "val": {k: result.val_metrics[k] for k in ("macro_f1", "macro_auc", "macro_ap")},
        "thresholds": result.thresholds.tolist(),
        "epochs": len(result.history),
        "best_epoch": int(np.argmax([h["val_macro_auc"] for h in result.history])) + 1,
        "seconds": round(result.seconds, 1),
        "setup_seconds": round(result.setup_seconds, 1),
        "train_windows_per_s": round(result.windows_per_second, 1),
        "labelled": result.labelled,
        "threads": job["threads"],
        "curve": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in result.history],
    }
    if job["test"]:
        metrics, probs = _score(result.model, data, cfg.test_folds, leads, result.thresholds, device)
        from liteheart_core.metrics import f1_scores

        f1 = f1_scores(_labels(data, cfg.test_folds), np.asarray(probs) >= result.thresholds[None, :])
        row.update(
            test=metrics,
            test_probs=probs,
            test_per_class_f1={c: float(v) for c, v in zip(data.tasks["superdiagnostic"], f1)},
        )
    return row


def _adopt(name: str, path: Path, data, folds: dict, test: bool) -> dict:
    """A runs-file row for a teacher checkpoint trained earlier; refuses one trained on other folds."""
    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.metrics import f1_scores
    from liteheart_core.train import resolve_device

    net, meta = load_checkpoint(path)
    tc = meta["train_config"]
    if (
        meta["kind"] != "teacher"
        or tuple(tc["train_folds"]) != folds["train"]
        or tuple(tc["val_folds"]) != folds["val"]
        or meta["data_fingerprint"] != data.fingerprint
    ):
        raise SystemExit(f"{path}: not a teacher trained on folds {folds['train']} / {folds['val']} of this data")
    thresholds = np.asarray(meta["thresholds"])
    row = {
        "name": name,
        "table": "archive" if tc["labelled_fraction"] == 1.0 else "same-labels",
        "method": "teacher",
        "fraction": tc["labelled_fraction"],
        "seed": tc["seed"],
        "teacher": None,
        "checkpoint": str(path),
        "adopted": True,
        "val": {k: meta["val_metrics"][k] for k in ("macro_f1", "macro_auc", "macro_ap")},
        "thresholds": thresholds.tolist(),
        "epochs": meta["epochs_run"],
        "best_epoch": int(np.argmax([h["val_macro_auc"] for h in meta["history"]])) + 1,
        "seconds": meta["train_seconds"],
        "setup_seconds": 0.0,
        "train_windows_per_s": 0.0,
        "labelled": meta["labelled_records"],
        "threads": None,
        "curve": meta["history"],
    }
    if test:
        metrics, probs = _score(net, data, folds["test"], list(range(12)), thresholds, resolve_device("auto"))
        f1 = f1_scores(_labels(data, folds["test"]), np.asarray(probs) >= thresholds[None, :])
        row.update(
            test=metrics,
            test_probs=probs,
            test_per_class_f1={c: float(v) for c, v in zip(data.tasks["superdiagnostic"], f1)},
        )
    return row


def _score_imported(row: dict, data, folds: dict) -> dict:
    """A selection run's row with its saved checkpoint scored once on the test folds (fold-9 thresholds)."""
    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.data.signal import lead_indices
    from liteheart_core.metrics import f1_scores
    from liteheart_core.train import resolve_device

    net, meta = load_checkpoint(Path(row["checkpoint"]))
    if tuple(meta["train_config"]["val_folds"]) != folds["val"] or set(folds["test"]) & set(
        meta["train_config"]["train_folds"]
    ):
        raise SystemExit(f"{row['checkpoint']}: trained on other folds than {folds}")
    leads = list(range(12)) if meta["kind"] == "teacher" else lead_indices(meta["train_config"]["student_lead"])
    thresholds = np.asarray(row["thresholds"])
    metrics, probs = _score(net, data, folds["test"], leads, thresholds, resolve_device("auto"))
    f1 = f1_scores(_labels(data, folds["test"]), np.asarray(probs) >= thresholds[None, :])
    return {
        **row,
        "imported": True,
        "test": metrics,
        "test_probs": probs,
        "test_per_class_f1": {c: float(v) for c, v in zip(data.tasks["superdiagnostic"], f1)},
    }


def _labels(data, folds) -> np.ndarray:
    from liteheart_core.train import load_split

    return load_split(data, "superdiagnostic", tuple(folds)).y.numpy()


def _run_all(jobs: list[dict], workers: int, log, label: str) -> list[dict]:
    from liteheart_core.cli.progress import job_progress

    results = []
    with job_progress(label, len(jobs)) as done:
        if workers <= 1:
            for job in jobs:
                results.append(_job(job))
                log(results[-1])
                done(results[-1]["name"])
            return results
        # spawn: a forked child must not inherit an initialised CUDA context
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_job, job) for job in jobs]
            for fut in as_completed(futures):
                results.append(fut.result())
                log(results[-1])
                done(results[-1]["name"])
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def paired_bootstrap(y: np.ndarray, a: list[dict], b: list[dict], n: int = 2000, seed: int = 0) -> dict:
    """Protocol v2: per seed, a paired bootstrap of A - B over test records; the n resampled
    differences are then averaged over seeds (resample i of every seed averaged together).

    Returns the mean difference, its 95% interval and each seed's point difference (its sign).
    """
    from liteheart_core.metrics import summarise

    pa = {r["seed"]: (np.asarray(r["test_probs"]), np.asarray(r["thresholds"])) for r in a}
    pb = {r["seed"]: (np.asarray(r["test_probs"]), np.asarray(r["thresholds"])) for r in b}
    seeds = sorted(set(pa) & set(pb))
    if not seeds:
        return {}
    keys = ("macro_f1", "macro_auc")
    diffs = {k: np.zeros((len(seeds), n)) for k in keys}
    point: dict[str, list[float]] = {k: [] for k in keys}
    for si, s in enumerate(seeds):
        rng = np.random.default_rng(seed + s)
        full_a, full_b = summarise(y, *pa[s]), summarise(y, *pb[s])
        for k in keys:
            point[k].append(full_a[k] - full_b[k])
        for i in range(n):
            idx = rng.integers(0, len(y), len(y))
            sa, sb = summarise(y[idx], pa[s][0][idx], pa[s][1]), summarise(y[idx], pb[s][0][idx], pb[s][1])
            for k in keys:
                diffs[k][si, i] = sa[k] - sb[k]
    out = {"seeds": seeds, "resamples": n}
    for k in keys:
        avg = diffs[k].mean(0)
        out[k] = {
            "mean": float(np.mean(point[k])),
            "ci95": [float(np.percentile(avg, 2.5)), float(np.percentile(avg, 97.5))],
            "per_seed": [round(float(v), 4) for v in point[k]],
            "positive_seeds": int(sum(v > 0 for v in point[k])),
        }
    return out


def cost_table(
    data_path: str,
    teacher_path: str | None,
    methods: list[str],
    steps: int = 30,
    threads: int = 1,
    rounds: int = 3,
    bank_cache: Path | None = None,
) -> dict:
    """Windows/s of one training step of each method, measured side by side in one process.

    The methods take turns (``rounds`` rounds of ``steps`` steps each, the best round
    kept), so machine noise hits them alike; ratios are against vanilla KD. The one-off
    work a method does before its first step (teacher targets, the view bank) is timed apart
    (a view bank found in ``bank_cache`` is loaded, not rebuilt: its one-off time is then the load).
    """
    import torch

    torch.set_num_threads(threads)
    from liteheart_core.checkpoint import load_checkpoint
    from liteheart_core.data.dataset import PreparedData
    from liteheart_core.data.splits import labelled_subset
    from liteheart_core.models import build_net, student_config
    from liteheart_core.train import TrainConfig, load_split, make_trainable, run_epoch

    data = PreparedData.open(Path(data_path))
    teacher = load_checkpoint(Path(teacher_path))[0] if teacher_path else None
    device = torch.device("cpu")
    trainables = {}
    setup = {}
    for m in methods:
        cfg = TrainConfig(method=m, labelled_fraction=0.1, device="cpu")
        split = load_split(data, cfg.task, cfg.train_folds)
        lab = labelled_subset(data.index, data.labels(cfg.task)[1], split.rows, 0.1, 0)
        t0 = time.perf_counter()
        tr = make_trainable(
            build_net(1, 5, student_config()),
            cfg,
            split.x,
            split.y,
            lab,
            split.regions,
            device,
            teacher if cfg.spec.needs_teacher else None,
            bank_cache=bank_cache,
        )
        setup[m] = time.perf_counter() - t0
        opt = torch.optim.AdamW(tr.parameters(), lr=1e-3)
        trainables[m] = (tr, cfg, opt, np.random.default_rng(0), torch.Generator().manual_seed(0))
    best = {m: float("inf") for m in methods}
    for _ in range(rounds):
        for m, (tr, cfg, opt, rng, gen) in trainables.items():
            run_epoch(tr, cfg, opt, rng, gen, float(data.fs), 2)  # warm-up
            t0 = time.perf_counter()
            run_epoch(tr, cfg, opt, rng, gen, float(data.fs), steps)
            best[m] = min(best[m], time.perf_counter() - t0)
    batch = TrainConfig().batch_size
    wps = {m: steps * batch / best[m] for m in methods}
    base = wps.get("kd")
    return {
        "threads": threads,
        "steps": steps,
        "rounds": rounds,
        "batch": batch,
        "methods": {
            m: {
                "windows_per_s": round(wps[m], 1),
                "step_ms": round(1000 * best[m] / steps, 2),
                "cost_vs_kd": round(base / wps[m], 2) if base else None,
                "one_off_seconds": round(setup[m], 1),
            }
            for m in methods
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl", help="PTB-XL folder or prepared dataset")
    parser.add_argument("--fractions", default="0.1")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--methods", default=",".join(CORE_METHODS))
    parser.add_argument("--tables", default="archive", help="archive, same-labels, or both comma-separated")
    parser.add_argument("--epochs", type=int, default=60, help="every student's budget")
    parser.add_argument("--patience", type=int, default=15, help="early stopping on fold-9 macro AUC")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--teacher-patience", type=int, default=8)
    parser.add_argument(
        "--archive-teachers",
        choices=("shared", "per-seed"),
        default="shared",
        help="one archive teacher for every seed (seed 0), or one per seed",
    )
    parser.add_argument("--train-folds", default="1,2,3,4,5,6,7")
    parser.add_argument("--val-folds", default="9")
    parser.add_argument("--test-folds", default="8")
    parser.add_argument("--no-test", action="store_true", help="selection experiment: never score the test folds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=1, help="training runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cpus / workers)")
    parser.add_argument("--cost", action="store_true", help="also measure each method's step cost side by side")
    parser.add_argument("--out", default="results", help="folder for the .md, .json and runs file")
    parser.add_argument("--name", default="central_benchmark")
    parser.add_argument("--work", default="runs/benchmark_central", help="folder for checkpoints and view banks")
    parser.add_argument("--aggregate", action="store_true", help="only rebuild the tables from the runs file")
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples per seed")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting for every student of this call (e.g. views=32); needs --tag",
    )
    parser.add_argument(
        "--teacher-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting of this call's archive teacher (e.g. lead_dropout=0.5); the teacher "
        "is then named teacher-archive+KEY=VALUE and serves only this call's rows METHOD+TAG",
    )
    parser.add_argument("--tag", default="", help="names the variant that --set makes (rows 'METHOD+TAG')")
    parser.add_argument(
        "--import-runs",
        action="append",
        default=[],
        metavar="RUNS_JSONL",
        help="take the runs of a selection experiment (--no-test) into this runs file, each "
        "checkpoint scored once on the test folds",
    )
    parser.add_argument(
        "--adopt-teacher",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="use a teacher checkpoint trained earlier (same folds and settings) as teacher NAME, "
        "e.g. teacher-archive-s0=runs/teacher.pt; it is scored like a trained one",
    )
    args = parser.parse_args(argv)
    if bool(args.set or args.teacher_set) != bool(args.tag):
        parser.error("--set and --tag go together: a variant needs a name, and a name a change")

    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.train import method_spec

    t0 = time.time()
    data = resolve_data(Path(args.data))
    folds = {k: tuple(int(f) for f in getattr(args, f"{k}_folds").split(",")) for k in ("train", "val", "test")}
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    tables = [t for t in args.tables.split(",") if t]
    for m in methods:
        method_spec(m)
    for t in tables:
        if t not in TABLES:
            parser.error(f"unknown table {t!r}; expected {', '.join(TABLES)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.workers))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / f"{args.name}_runs.jsonl"
    done = {}
    if runs_file.exists():
        for line in runs_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["name"]] = r
    this_command = "python -m simulations.benchmark_central " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    def log(r: dict) -> None:
        with runs_file.open("a") as fh:  # every finished run is kept, even if the whole job is cut short
            fh.write(json.dumps({**r, "command": this_command, "machine": machine()}) + "\n")
        done[r["name"]] = r
        print(
            f"[{time.time() - t0:7.1f}s] {r['name']}: val AUC {r['val']['macro_auc']:.3f} "
            f"({r['epochs']} ep, best {r['best_epoch']}, {r['seconds']} s)",
            flush=True,
        )

    common = {
        "task": "superdiagnostic",
        "device": args.device,
        "train_folds": list(folds["train"]),
        "val_folds": list(folds["val"]),
        "test_folds": list(folds["test"]),
    }

    def parse_settings(items: list[str]) -> dict:
        out = {}
        for item in items:
            key, _, value = item.partition("=")
            out[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
        return out

    overrides, teacher_overrides = parse_settings(args.set), parse_settings(args.teacher_set)

    def job(table: str, name: str, cfg: dict, teacher: dict | None) -> dict:
        return {
            "name": name,
            "table": table,
            "data": str(data.root),
            "cfg": {**common, **cfg},
            "work": str(work),
            "threads": threads,
            "test": not args.no_test,
            "teacher": teacher["checkpoint"] if teacher else None,
            "teacher_name": teacher["name"] if teacher else None,
            "tag": cfg.get("tag", ""),
            "overrides": overrides if cfg["method"] != "teacher" else teacher_overrides,
        }

    def teacher_name(table: str, fraction: float, seed: int) -> str:
        if table == "archive" or fraction == 1.0:
            slug = ",".join(f"{k}={v}" for k, v in sorted(teacher_overrides.items()))
            return f"teacher-archive{'+' + slug if slug else ''}-s{0 if args.archive_teachers == 'shared' else seed}"
        return f"teacher-same-f{fraction}-s{seed}"

    for path in args.import_runs:
        for line in Path(path).read_text().splitlines():
            if line.strip() and (row := json.loads(line))["name"] not in done and not args.aggregate:
                log(_score_imported(row, data, folds) if not args.no_test else row)
    for item in args.adopt_teacher:
        name, _, path = item.partition("=")
        if name not in done and not args.aggregate:
            log(_adopt(name, Path(path), data, folds, not args.no_test))
    # Teachers first: every student of a table waits for its teacher.
    teacher_jobs = {}
    for table in tables:
        for f in fractions:
            for seed in seeds:
                name = teacher_name(table, f, seed)
                t_seed = int(name.rsplit("-s", 1)[1])
                t_frac = 1.0 if name.startswith("teacher-archive") else f
                if name not in done and name not in teacher_jobs:
                    teacher_jobs[name] = job(
                        "archive" if t_frac == 1.0 else "same-labels",
                        name,
                        {
                            "method": "teacher",
                            "labelled_fraction": t_frac,
                            "seed": t_seed,
                            "epochs": args.teacher_epochs,
                            "patience": args.teacher_patience,
                            "lr": 1e-3,
                        },
                        None,
                    )
    if teacher_jobs and not args.aggregate:
        _run_all(list(teacher_jobs.values()), args.workers, log, "teachers")

    student_jobs: list[dict] = []
    for f in fractions:
        for seed in seeds:
            for table in tables:
                for method in methods:
                    variant = method + (f"+{args.tag}" if args.tag else "")
                    if method_spec(method).needs_teacher:
                        name = f"{table}-{variant}-f{f}-s{seed}"
                        teacher = done.get(teacher_name(table, f, seed))
                    else:  # the labels-only student needs no teacher: one run serves both tables
                        name, teacher = f"{variant}-f{f}-s{seed}", None
                    if name not in done and name not in {j["name"] for j in student_jobs}:
                        if method_spec(method).needs_teacher and teacher is None:
                            continue
                        student_jobs.append(
                            job(
                                table,
                                name,
                                {
                                    "method": method,
                                    "labelled_fraction": f,
                                    "seed": seed,
                                    "epochs": args.epochs,
                                    "patience": args.patience,
                                    "tag": args.tag,
                                },
                                teacher,
                            )
                        )
    if student_jobs and not args.aggregate:
        _run_all(student_jobs, args.workers, log, "students")

    report_path = out / f"{args.name}.json"
    previous = json.loads(report_path.read_text()) if report_path.exists() else {}
    cost = previous.get("cost")
    if args.cost and not args.aggregate:
        cost_methods = list(CORE_METHODS)
        cost = cost_table(
            str(data.root), done[teacher_name("archive", 1.0, 0)]["checkpoint"], cost_methods, bank_cache=work / "banks"
        )
        cost["command"] = this_command
        cost["machine"] = machine()
    report = build_report(data, list(done.values()), folds, args, this_command, cost, previous)
    report_path.write_text(json.dumps(report, indent=2))
    (out / f"{args.name}.md").write_text(render_markdown(report))
    print(f"wrote {out / args.name}.md and .json in {time.time() - t0:.0f} s")


def build_report(data, rows: list[dict], folds: dict, args, command: str, cost: dict | None, previous: dict) -> dict:
    """Tables (mean ± sample SD over seeds), paired bootstraps and curves from every run in the runs file."""
    from liteheart_core.metrics import summarise, tune_thresholds
    from liteheart_core.train import METHOD_TABLE

    scored = "test" if not args.no_test else "val"
    y = _labels(data, folds["test"]) if scored == "test" else _labels(data, folds["val"])
    train_rows = data.rows("superdiagnostic", list(folds["train"]))
    prior = np.tile(data.labels("superdiagnostic")[1][train_rows].mean(0), (len(y), 1)) + np.random.default_rng(
        0
    ).normal(0, 1e-9, y.shape)
    commands = sorted({r.get("command", "") for r in rows if r.get("command")})
    report = {
        "protocol": "v2",
        "scored_on": scored,
        "command": command,
        "commands_in_runs_file": commands,
        "data": {
            "path": data.meta.get("source_root", str(data.root)),
            "fingerprint": data.fingerprint,
            "records": data.meta["records"],
            "train_records": int(len(train_rows)),
            "selection_records": int(len(_labels(data, folds["val"]))),
            "test_records": int(len(y)),
            "folds": {k: list(v) for k, v in folds.items()},
            "task": "superdiagnostic",
            "fs": data.fs,
            "window_s": data.meta["settings"]["window_s"],
        },
        "machine": machine(),
        "notes": args.note,
        "epochs": args.epochs,
        "patience": args.patience,
        "teacher_epochs": args.teacher_epochs,
        "archive_teachers": args.archive_teachers,
        "naive": summarise(
            y,
            prior,
            tune_thresholds(_labels(data, folds["val"]), prior[:1].repeat(len(_labels(data, folds["val"])), 0)),
        ),
        "cost": cost,
        "tables": {},
    }
    key = scored
    fractions = sorted({r["fraction"] for r in rows})
    for table in TABLES:
        out = {}
        for f in fractions:

            def runs(method: str, f: float = f, table: str = table) -> list[dict]:
                if not METHOD_TABLE[method.split("+")[0]].student:  # the teachers the table's students used
                    names = {r["teacher"] for r in rows if r["table"] == table and r["fraction"] == f and r["teacher"]}
                    return [r for r in rows if r["name"] in names and key in r]
                if not METHOD_TABLE[method.split("+")[0]].needs_teacher:  # no teacher: the same runs in every table
                    return [r for r in rows if r["method"] == method and r["fraction"] == f and key in r]
                return [
                    r for r in rows if r["method"] == method and r["fraction"] == f and r["table"] == table and key in r
                ]

            entry: dict[str, dict[str, Any]] = {}
            variants = sorted({r["method"] for r in rows if "+" in r["method"]})
            order = [m for m in METHOD_TABLE if m != "teacher"]
            for method in ["teacher"] + order + variants:
                rs = runs(method)
                spec = METHOD_TABLE[method.split("+")[0]]
                if not rs or (spec.student and spec.needs_teacher and not any(r["table"] == table for r in rs)):
                    continue
                entry[method] = {k: _mean_std([r[key][k] for r in rs]) for k in ("macro_f1", "macro_auc", "macro_ap")}
                entry[method]["per_seed_auc"] = {r["seed"]: round(r[key]["macro_auc"], 4) for r in rs}
                entry[method]["per_seed_f1"] = {r["seed"]: round(r[key]["macro_f1"], 4) for r in rs}
                if key == "test" and all("test_per_class_f1" in r for r in rs):
                    entry[method]["per_class_f1"] = {
                        c: _mean_std([r["test_per_class_f1"][c] for r in rs])[0] for c in rs[0]["test_per_class_f1"]
                    }
                entry[method]["n_seeds"] = len(rs)
                entry[method]["seeds"] = sorted(r["seed"] for r in rs)
                entry[method]["labelled"] = rs[0]["labelled"]
                entry[method]["epochs"] = [r["epochs"] for r in rs]
                entry[method]["best_epoch"] = [r["best_epoch"] for r in rs]
                entry[method]["train_windows_per_s"] = _mean_std([r["train_windows_per_s"] for r in rs])[0]
            if len(entry) <= 1:
                continue
            sup, tea = entry.get("supervised"), entry.get("teacher")
            if sup and tea:
                for e in entry.values():
                    for k in ("macro_f1", "macro_auc"):
                        gap = tea[k][0] - sup[k][0]
                        e[f"gap_closed_{k.split('_')[1]}"] = (e[k][0] - sup[k][0]) / gap if abs(gap) > 1e-9 else None
            comparisons = {}
            if key == "test":
                for a, b in COMPARISONS + tuple(
                    (m, "kd") for m in entry if m.startswith("liteheart-v2") and m != "liteheart-v2"
                ):
                    if a in entry and b in entry:
                        comp = paired_bootstrap(y, runs(a), runs(b), n=args.bootstrap)
                        if comp:
                            comparisons[f"{a}-vs-{b}"] = comp
            out[str(f)] = {"methods": entry, "paired_bootstrap": comparisons}
        if out:
            report["tables"][table] = out
    report["curves"] = {r["name"]: [(c["epoch"], c["val_macro_auc"]) for c in r["curve"]] for r in rows}
    report["runs"] = [{k: v for k, v in r.items() if k not in ("test_probs", "curve")} for r in rows]
    return report


def render_markdown(report: dict) -> str:
    """The tables of a benchmark report as markdown."""
    from liteheart_core.train import METHOD_TABLE

    d = report["data"]
    scored = report["scored_on"]
    settings = {r["method"]: r.get("overrides") for r in report["runs"] if r.get("overrides")}

    def label(method: str) -> str:
        base, _, tag = method.partition("+")
        return METHOD_TABLE[base].label + (f" + {tag} ({settings.get(method)})" if tag else "")

    lines = [
        "# Centralised benchmark (protocol v2): 12-lead teacher -> lead-I student",
        "",
        "Runs file commands (the tables hold every run of the runs file):",
        "",
    ]
    lines += [f"- `{c}`" for c in report["commands_in_runs_file"]] + ["", f"Tables built by: `{report['command']}`", ""]
    lines += [
        f"Data: {d['path']} (PTB-XL, {d['records']} records, fingerprint `{d['fingerprint'][:16]}`), task "
        f"superdiagnostic, {d['fs']} Hz, {d['window_s']:.0f}-s windows. Folds {d['folds']['train']} train "
        f"({d['train_records']} records), fold {d['folds']['val']} selects ({d['selection_records']} records: "
        f"early stopping, thresholds, every choice), fold {d['folds']['test']} "
        + ("is scored once" if scored == "test" else "was NOT touched (selection experiment)")
        + f" ({d['test_records'] if scored == 'test' else d['selection_records']} records in the tables below).",
        "",
        f"Machine: {report['machine']}.",
        "",
        f"Budget, the same for every student: up to {report['epochs']} epochs of 25 steps (batch 64), early "
        f"stopping after {report['patience']} epochs without a better fold-9 macro AUC, the same weak "
        f"augmentation (gain, noise, shift) on every labelled path. Teachers: up to {report['teacher_epochs']} "
        f"epochs; archive teachers {report['archive_teachers']}.",
        "",
        f"Naive floor (class prior): macro F1 {report['naive']['macro_f1']:.3f}, AUC "
        f"{report['naive']['macro_auc']:.3f}.",
        "",
    ]
    lines += [f"Note: {n}" for n in report.get("notes", [])] + ([""] if report.get("notes") else [])
    titles = {
        "archive": "Archive teacher (teacher trained on all training labels)",
        "same-labels": "Same labels (teacher trained on the students' labelled subset)",
    }
    cost = (report.get("cost") or {}).get("methods", {})
    for table, rows in report["tables"].items():
        lines += [f"## {titles.get(table, table)}", ""]
        for f, content in rows.items():
            lines += [
                f"### {float(f) * 100:.0f}% labelled (scored on fold {d['folds'][scored]})",
                "",
                "| method | macro F1 | macro AUC | macro AP | gap closed (AUC) | seeds | epochs (best) | "
                "step cost vs KD |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for method, e in content["methods"].items():
                gap = e.get("gap_closed_auc")
                c = cost.get(method, {}).get("cost_vs_kd")
                lines.append(
                    f"| {label(method)} | {e['macro_f1'][0]:.3f} ± {e['macro_f1'][1]:.3f} | "
                    f"{e['macro_auc'][0]:.3f} ± {e['macro_auc'][1]:.3f} | {e['macro_ap'][0]:.3f} ± "
                    f"{e['macro_ap'][1]:.3f} | {'' if gap is None else f'{gap:.2f}'} | {e['n_seeds']} | "
                    f"{np.mean(e['epochs']):.0f} ({np.mean(e['best_epoch']):.0f}) | "
                    f"{'' if c is None else f'{c:.2f}x'} |"
                )
            lines.append("")
            for name, comp in content["paired_bootstrap"].items():
                f1, auc = comp["macro_f1"], comp["macro_auc"]
                lines.append(
                    f"- {name}: ΔAUC {auc['mean']:+.4f} [{auc['ci95'][0]:+.4f}, {auc['ci95'][1]:+.4f}] "
                    f"(positive in {auc['positive_seeds']}/{len(comp['seeds'])} seeds: {auc['per_seed']}); "
                    f"ΔF1 {f1['mean']:+.4f} [{f1['ci95'][0]:+.4f}, {f1['ci95'][1]:+.4f}] "
                    f"(positive in {f1['positive_seeds']}/{len(comp['seeds'])} seeds)"
                )
            if content["paired_bootstrap"]:
                lines += [
                    "",
                    f"(paired bootstrap over fold-{d['folds'][scored]} records, "
                    f"{next(iter(content['paired_bootstrap'].values()))['resamples']} resamples per seed, "
                    "averaged over seeds; per-seed point differences)",
                ]
            lines.append("")
    if report.get("cost"):
        c = report["cost"]
        lines += [
            "## Cost of one training step (side by side, one process)",
            "",
            f"{c['rounds']} rounds of {c['steps']} steps per method, taking turns, best round kept; "
            f"{c['threads']} thread(s), batch {c['batch']}. One-off: the teacher's targets (and the view bank) "
            "computed before the first step.",
            "",
            "| method | windows/s | ms/step | cost vs KD | one-off s |",
            "| --- | --- | --- | --- | --- |",
        ]
        for m, v in c["methods"].items():
            lines.append(
                f"| {label(m)} | {v['windows_per_s']:.0f} | {v['step_ms']:.1f} | "
                f"{v['cost_vs_kd']:.2f}x | {v['one_off_seconds']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
