"""Centralised benchmark: teacher, labels-only student, KD, FitNets, LiteHeart and its ablations.

Follows ``../shared/notes/benchmark-protocol.md``: PTB-XL superdiagnostic, 100 Hz,
10-s windows, folds 1-8 train, fold 9 validation (thresholds) and scoring;
labelled fractions of the training records (patient-disjoint, label-stratified),
the rest used without labels. Tables:

- ``archive``: the teacher is trained on all training labels;
- ``same``: the teacher is trained on the same labelled subset as the students.

Run (writes ``results/central_benchmark.{md,json}``)::

    python -m simulations.benchmark_central --data ../shared/data/ptbxl --seeds 0,1,2 --workers 2

Not part of the test suite: on 2 CPU cores a full run takes hours; on one GPU minutes.
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

import numpy as np

STUDENT_METHODS = ("supervised", "kd", "fitnets", "liteheart", "liteheart-no-region", "liteheart-no-mi",
                   "liteheart-no-semi")
LABELS = {"teacher": "12-lead teacher", "naive": "naive (class prior)", "supervised": "lead-I student, labels only",
          "kd": "vanilla KD", "fitnets": "FitNets feature KD", "liteheart": "LiteHeart",
          "liteheart-no-region": "LiteHeart w/o region-aware", "liteheart-no-mi": "LiteHeart w/o mutual information",
          "liteheart-no-semi": "LiteHeart w/o semi-supervision"}


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _job(kind: str, data_path: str, cfg: dict, teacher_path: str | None, out_dir: str, threads: int) -> dict:
    """One training run in its own process; returns metrics and fold-9 probabilities."""
    import torch

    torch.set_num_threads(threads)
    from liteheart_core.checkpoint import load_checkpoint, save_checkpoint
    from liteheart_core.data.dataset import PreparedData
    from liteheart_core.train import TrainConfig, checkpoint_meta, load_split, predict, resolve_device, train

    data = PreparedData.open(Path(data_path))
    tcfg = TrainConfig.from_dict(cfg)
    teacher = load_checkpoint(Path(teacher_path))[0] if teacher_path else None
    result = train(data, tcfg, teacher=teacher)
    name = f"{kind}-{cfg['method']}-f{cfg['labelled_fraction']}-s{cfg['seed']}"
    ckpt = Path(out_dir) / f"{name}.pt"
    save_checkpoint(ckpt, result.model, checkpoint_meta(data, tcfg, result))
    va = load_split(data, tcfg.task, tcfg.val_folds)
    from liteheart_core.data.signal import lead_indices

    leads = list(range(12)) if tcfg.method == "teacher" else lead_indices(tcfg.student_lead)
    device = resolve_device(tcfg.device)
    probs = predict(result.model.to(device), va.x[:, leads], device)
    return {"name": name, "kind": kind, "method": cfg["method"], "fraction": cfg["labelled_fraction"],
            "seed": cfg["seed"], "checkpoint": str(ckpt), "metrics": {k: result.val_metrics[k] for k in
                                                                       ("macro_f1", "macro_auc", "macro_ap")},
            "per_class_f1": {c: v["f1"] for c, v in result.val_metrics["per_class"].items()},
            "thresholds": result.thresholds.tolist(), "probs": probs.tolist(), "epochs": len(result.history),
            "seconds": round(result.seconds, 1), "labelled": result.labelled,
            "last_log": result.history[-1] if result.history else {}}


def _run_all(jobs: list[tuple], workers: int, log, label: str = "runs") -> list[dict]:
    from simulations.progress import job_progress

    results = []
    with job_progress(label, len(jobs)) as done:
        if workers <= 1:
            for job in jobs:
                results.append(_job(*job))
                log(results[-1])
                done(results[-1]["name"])
            return results
        # spawn: a forked child must not inherit an initialised CUDA context
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_job, *job) for job in jobs]
            for fut in as_completed(futures):
                results.append(fut.result())
                log(results[-1])
                done(results[-1]["name"])
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def paired_seed_bootstrap(y: np.ndarray, a: list[dict], b: list[dict], n: int = 1000, seed: int = 0) -> dict:
    """Interval of mean-over-seeds(A) - mean-over-seeds(B), resampling the same fold-9 records for all."""
    from liteheart_core.metrics import summarise

    rng = np.random.default_rng(seed)
    pa = {r["seed"]: (np.asarray(r["probs"]), np.asarray(r["thresholds"])) for r in a}
    pb = {r["seed"]: (np.asarray(r["probs"]), np.asarray(r["thresholds"])) for r in b}
    seeds = sorted(set(pa) & set(pb))
    if not seeds:
        return {}
    diffs = {"macro_f1": [], "macro_auc": []}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        for key in diffs:
            da = np.mean([summarise(y[idx], pa[s][0][idx], pa[s][1])[key] for s in seeds])
            db = np.mean([summarise(y[idx], pb[s][0][idx], pb[s][1])[key] for s in seeds])
            diffs[key].append(da - db)
    return {k: {"mean": float(np.mean(v)), "ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]}
            for k, v in diffs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ptbxl", help="PTB-XL folder or prepared dataset")
    parser.add_argument("--fractions", default="0.1,0.3,1.0")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(STUDENT_METHODS))
    parser.add_argument("--tables", default="archive", help="archive, same, or archive,same")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=1, help="training runs in parallel (processes)")
    parser.add_argument("--out", default="results", help="folder for the .md and .json")
    parser.add_argument("--name", default="central_benchmark")
    parser.add_argument("--work", default="runs/benchmark_central", help="folder for checkpoints")
    parser.add_argument("--aggregate", default=None,
                        help="only build the tables from a runs .jsonl written by an earlier (possibly cut) run")
    parser.add_argument("--run-command", default=None, help="with --aggregate: the command that produced the runs")
    parser.add_argument("--run-machine", default=None, help="with --aggregate: the machine the runs were trained on")
    parser.add_argument("--run-seconds", type=float, default=None, help="with --aggregate: wall time of the runs")
    parser.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    args = parser.parse_args(argv)

    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.metrics import summarise, tune_thresholds

    t0 = time.time()
    data = resolve_data(Path(args.data))
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    tables = [t for t in args.tables.split(",") if t]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.workers))
    common = {"task": "superdiagnostic", "device": args.device}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / f"{args.name}_runs.jsonl"

    def log(r: dict) -> None:
        with runs_file.open("a") as fh:  # every finished run is kept, even if the whole job is cut short
            fh.write(json.dumps(r) + "\n")
        m = r["metrics"]
        print(f"[{time.time() - t0:7.1f}s] {r['name']}: F1 {m['macro_f1']:.3f} AUC {m['macro_auc']:.3f} "
              f"({r['epochs']} ep, {r['seconds']} s)", flush=True)

    teacher_jobs = []
    for seed in seeds:
        if "archive" in tables:
            teacher_jobs.append(("archive", str(data.root), {**common, "method": "teacher", "labelled_fraction": 1.0,
                                 "seed": seed, "epochs": args.teacher_epochs, "lr": 1e-3}, None, str(work), threads))
        if "same" in tables:
            for f in fractions:
                if f < 1.0 or "archive" not in tables:
                    teacher_jobs.append(("same", str(data.root), {**common, "method": "teacher",
                                         "labelled_fraction": f, "seed": seed, "epochs": args.teacher_epochs,
                                         "lr": 1e-3}, None, str(work), threads))
    previous = [json.loads(line) for line in Path(args.aggregate).read_text().splitlines()] if args.aggregate else None
    teachers = ([r for r in previous if r["method"] == "teacher"] if previous
                else _run_all(teacher_jobs, args.workers, log, "teachers"))

    def teacher_for(table: str, fraction: float, seed: int) -> dict | None:
        want = 1.0 if table == "archive" or fraction == 1.0 else fraction
        kinds = ("archive", "same") if want == 1.0 else ("same",)
        return next((t for t in teachers if t["seed"] == seed and t["fraction"] == want and t["kind"] in kinds), None)

    student_jobs = []
    for table in tables:
        for f in fractions:
            if table == "same" and f == 1.0 and "archive" in tables:
                continue  # identical to the archive table at 100% labels
            for seed in seeds:
                for method in methods:
                    t = teacher_for(table, f, seed)
                    if t is None and method != "supervised":
                        continue
                    student_jobs.append((table, str(data.root), {**common, "method": method, "labelled_fraction": f,
                                         "seed": seed, "epochs": args.epochs},
                                         None if method == "supervised" else t["checkpoint"], str(work), threads))
    # The labels-only student does not depend on the teacher: train it once per (fraction, seed).
    seen, unique_jobs = set(), []
    for job in student_jobs:
        key = (job[2]["method"], job[2]["labelled_fraction"], job[2]["seed"]) if job[2]["method"] == "supervised" \
            else (job[0], job[2]["method"], job[2]["labelled_fraction"], job[2]["seed"])
        if key not in seen:
            seen.add(key)
            unique_jobs.append(job)
    if previous:
        students = [r for r in previous if r["method"] != "teacher"]
    else:
        students = _run_all(unique_jobs, args.workers, log, "students")

    from liteheart_core.train import load_split

    va = load_split(data, "superdiagnostic", (9,))
    y = va.y.numpy()
    prior = np.tile(data.labels("superdiagnostic")[1][data.rows("superdiagnostic", list(range(1, 9)))].mean(0),
                    (len(y), 1)) + np.random.default_rng(0).normal(0, 1e-9, y.shape)
    naive = summarise(y, prior, tune_thresholds(y, prior))

    this_command = "python -m simulations.benchmark_central " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    report = {"command": args.run_command or this_command,
              "aggregated_by": this_command if args.aggregate else None,
              "data": {"path": data.meta["source_root"], "fingerprint": data.fingerprint,
                       "records": data.meta["records"], "train_records": int(len(data.rows("superdiagnostic",
                                                                                           list(range(1, 9))))),
                       "val_records": int(len(y)), "task": "superdiagnostic", "fs": data.fs,
                       "window_s": data.meta["settings"]["window_s"]},
              "machine": args.run_machine or machine(),
              "seconds": args.run_seconds if args.run_seconds is not None else round(time.time() - t0, 1),
              "seeds": seeds, "notes": args.note,
              "epochs": args.epochs, "teacher_epochs": args.teacher_epochs, "naive": naive, "tables": {}}
    for table in tables:
        rows = {}
        for f in fractions:
            def runs(method: str) -> list[dict]:
                if method == "teacher":
                    return [t for t in (teacher_for(table, f, s) for s in seeds) if t is not None]
                kinds = {table, "archive"} if (table == "same" and f == 1.0) else {table}
                if method == "supervised":
                    return [r for r in students if r["method"] == method and r["fraction"] == f]
                return [r for r in students if r["method"] == method and r["fraction"] == f and r["kind"] in kinds]

            entry = {}
            for method in ["teacher"] + methods:
                rs = runs(method)
                if not rs:
                    continue
                entry[method] = {k: _mean_std([r["metrics"][k] for r in rs]) for k in
                                 ("macro_f1", "macro_auc", "macro_ap")}
                entry[method]["per_class_f1"] = {c: _mean_std([r["per_class_f1"][c] for r in rs])[0]
                                                 for c in rs[0]["per_class_f1"]}
                entry[method]["n_seeds"] = len(rs)
                entry[method]["labelled"] = rs[0]["labelled"]
            sup, tea = entry.get("supervised"), entry.get("teacher")
            if sup and tea:
                gap = tea["macro_f1"][0] - sup["macro_f1"][0]
                for method, e in entry.items():
                    e["gap_closed_f1"] = (e["macro_f1"][0] - sup["macro_f1"][0]) / gap if abs(gap) > 1e-9 else None
            comparisons = {}
            for a, b in (("liteheart", "kd"), ("liteheart", "supervised"), ("kd", "supervised")):
                if a in entry and b in entry:
                    comp = paired_seed_bootstrap(y, runs(a), runs(b), n=300)
                    if comp:
                        comparisons[f"{a}-vs-{b}"] = comp
            rows[str(f)] = {"methods": entry, "paired_bootstrap": comparisons}
        report["tables"][table] = rows
    report["runs"] = [{k: v for k, v in r.items() if k != "probs"} for r in teachers + students]
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    (out / f"{args.name}.md").write_text(render_markdown(report))
    print(f"wrote {out / args.name}.md and .json in {time.time() - t0:.0f} s")


def render_markdown(report: dict) -> str:
    """The tables of a benchmark report as markdown."""
    lines = ["# Centralised benchmark: 12-lead teacher -> lead-I student", "",
             f"Command: `{report['command']}`", ""]
    if report.get("aggregated_by"):
        lines += [f"Tables built from the runs file by: `{report['aggregated_by']}`", ""]
    lines += [
             f"Data: {report['data']['path']} (PTB-XL, {report['data']['records']} records, fingerprint "
             f"`{report['data']['fingerprint'][:16]}`), task superdiagnostic, {report['data']['fs']} Hz, "
             f"{report['data']['window_s']:.0f}-s windows; folds 1-8 train ({report['data']['train_records']} "
             f"labelled-task records), fold 9 for thresholds and scoring ({report['data']['val_records']} records).",
             "",
             f"Machine: {report['machine']}. Wall time {report['seconds']:.0f} s. Seeds {report['seeds']}, "
             f"students up to {report['epochs']} epochs, teachers up to {report['teacher_epochs']} "
             "(early stopping on fold-9 macro AUC).", "",
             "Thresholds are tuned on fold 9 and applied to fold 9 (the protocol's developers' table; fold 10 is "
             "kept for independent scoring), so F1 values are optimistic in absolute terms; the comparisons "
             "between rows use identical procedures.", "",
             f"Naive floor (class prior): macro F1 {report['naive']['macro_f1']:.3f}, AUC "
             f"{report['naive']['macro_auc']:.3f}.", ""]
    lines += [f"Note: {n}" for n in report.get("notes", [])] + ([""] if report.get("notes") else [])
    titles = {"archive": "Archive teacher (teacher trained on all training labels)",
              "same": "Same labels (teacher trained on the students' labelled subset)"}
    for table, rows in report["tables"].items():
        lines += [f"## {titles.get(table, table)}", ""]
        for f, content in rows.items():
            lines += [f"### {float(f) * 100:.0f}% labelled", "",
                      "| method | macro F1 | macro AUC | macro AP | gap closed (F1) | seeds |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for method, e in content["methods"].items():
                gap = e.get("gap_closed_f1")
                lines.append(f"| {LABELS.get(method, method)} | {e['macro_f1'][0]:.3f} ± {e['macro_f1'][1]:.3f} | "
                             f"{e['macro_auc'][0]:.3f} ± {e['macro_auc'][1]:.3f} | "
                             f"{e['macro_ap'][0]:.3f} ± {e['macro_ap'][1]:.3f} | "
                             f"{'' if gap is None else f'{gap:.2f}'} | {e['n_seeds']} |")
            lines.append("")
            lh, kd = content["methods"].get("liteheart"), content["methods"].get("kd")
            if lh and kd and lh.get("gap_closed_f1") is not None:
                met = lh["gap_closed_f1"] >= 0.5 and lh["macro_f1"][0] - kd["macro_f1"][0] >= 0.03
                lines.append(f"- Goal check: LiteHeart closes {lh['gap_closed_f1']:.2f} of the teacher-student macro-F1 "
                             f"gap (goal >= 0.50) and leads vanilla KD by "
                             f"{100 * (lh['macro_f1'][0] - kd['macro_f1'][0]):+.1f} F1 points (goal >= +3.0): "
                             f"{'met' if met else 'NOT met'}.")
            for name, comp in content["paired_bootstrap"].items():
                f1, auc = comp["macro_f1"], comp["macro_auc"]
                lines.append(f"- {name}: ΔF1 {f1['mean']:+.3f} [{f1['ci95'][0]:+.3f}, {f1['ci95'][1]:+.3f}], "
                             f"ΔAUC {auc['mean']:+.3f} [{auc['ci95'][0]:+.3f}, {auc['ci95'][1]:+.3f}] "
                             "(paired bootstrap over fold-9 records, mean over seeds)")
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
