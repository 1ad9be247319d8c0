"""Training and evaluation commands (``liteheart-sim train``/``evaluate``, ``liteheart-server teacher train``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from liteheart_core.cli.console import err, fail, out
from liteheart_core.cli.progress import step_progress
from liteheart_core.methods import DEFAULT_METHOD, METHOD_HELP, method_spec

DataOpt = Annotated[Path, typer.Option("--data", help="A PTB-XL or Challenge folder, or a prepared dataset folder.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
TrainFoldsOpt = Annotated[
    str | None,
    typer.Option(
        help="Training folds, e.g. '1,2' (the server's own archive of a federation with --server-folds); default 1-7."
    ),
]


def _open_data(path: Path, prep_settings: dict | None = None):
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.data.prepare import PreparationError, PrepSettings
    from liteheart_core.data.ptbxl import LayoutError

    try:
        settings = PrepSettings.from_dict(prep_settings) if prep_settings else None
        with step_progress("preparing the data") as progress:
            return resolve_data(path, settings=settings, progress=progress)
    except (LayoutError, PreparationError, ValueError) as exc:
        fail(str(exc))


def run_training(data_path: Path, cfg_dict: dict, out_path: Path, teacher_path: Path | None, as_json: bool) -> dict:
    """Train, save a checkpoint, print a summary; shared by the teacher and student commands."""
    from liteheart_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from liteheart_core.train import TrainConfig, checkpoint_meta, train

    try:
        cfg = TrainConfig.from_dict(cfg_dict)
    except (ValueError, TypeError) as exc:
        fail(str(exc))
    teacher = None
    prep = None
    if teacher_path is not None:
        try:
            teacher, tmeta = load_checkpoint(teacher_path)
        except CheckpointError as exc:
            fail(str(exc))
        if tmeta["kind"] != "teacher":
            fail(f"{teacher_path} is a {tmeta['kind']} checkpoint, not a teacher")
        prep = tmeta["prep_settings"]
    data = _open_data(data_path, prep)
    if cfg.task not in data.tasks:
        fail(f"task {cfg.task!r} is not available in {data_path}; it has {', '.join(data.tasks)}")
    if teacher is not None and tmeta["classes"] != data.tasks[cfg.task]:
        fail(f"teacher classes {tmeta['classes']} differ from the data's {cfg.task} classes")
    bar = Progress(
        TextColumn(f"{cfg.method}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        disable=as_json and not err.is_terminal,
    )
    task = bar.add_task("", total=cfg.epochs)

    def progress(epoch: int, total: int, entry: dict) -> None:
        bar.update(task, completed=epoch, description=f"val AUC {entry['val_macro_auc']:.3f}")

    try:
        with bar:
            result = train(data, cfg, teacher=teacher, progress=progress)
    except (ValueError, FloatingPointError) as exc:
        fail(str(exc))
    meta = checkpoint_meta(data, cfg, result)
    if teacher_path is not None:
        meta["teacher"] = {"path": str(teacher_path), "val_metrics": tmeta["val_metrics"]}
    sha = save_checkpoint(out_path, result.model, meta)
    vm = result.val_metrics
    summary = {
        "checkpoint": str(out_path),
        "sha256": sha,
        "method": cfg.method,
        "labelled_records": result.labelled,
        "epochs_run": len(result.history),
        "seconds": round(result.seconds, 1),
        "val": {k: vm[k] for k in ("macro_f1", "macro_auc", "macro_ap", "ci")},
    }
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        out.print(
            f"saved {out_path} ({cfg.method}, {result.labelled} labelled records, "
            f"{len(result.history)} epochs, {result.seconds:.0f} s)"
        )
        out.print(f"validation macro F1 {vm['macro_f1']:.3f}  AUC {vm['macro_auc']:.3f}  AP {vm['macro_ap']:.3f}")
    return summary


def train_cmd(
    data: DataOpt,
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the student checkpoint.")],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = DEFAULT_METHOD,
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint (every method but supervised needs one).")
    ] = None,
    task: Annotated[
        str, typer.Option(help="Label task (PTB-XL: superdiagnostic, ...; Challenge: challenge2021).")
    ] = "superdiagnostic",
    labelled_fraction: Annotated[
        float, typer.Option(help="Fraction of training records that keep their labels.")
    ] = 1.0,
    lead: Annotated[str, typer.Option(help="The student's lead.")] = "I",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation macro AUC).")] = 60,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation macro AUC before stopping.")] = 15,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: DeviceOpt = "auto",
    bf16: Annotated[bool, typer.Option(help="bf16 autocast on CUDA.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train a lead-I student centrally (thresholds tuned on validation are stored in the checkpoint)."""
    try:
        spec = method_spec(method)
    except ValueError as exc:
        fail(str(exc))
    if not spec.student:
        fail("train the teacher with 'liteheart-server teacher train'")
    if spec.needs_teacher and teacher is None:
        fail(f"--method {method} distils from a teacher: pass --teacher CKPT")
    run_training(
        data,
        {
            "method": method,
            "task": task,
            "labelled_fraction": labelled_fraction,
            "student_lead": lead,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "device": device,
            "bf16": bf16,
            "patience": patience,
        },
        out_path,
        teacher if spec.needs_teacher else None,
        as_json,
    )


def teacher_train_cmd(
    data: DataOpt,
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the teacher checkpoint.")],
    task: Annotated[str, typer.Option(help="Label task.")] = "superdiagnostic",
    labelled_fraction: Annotated[
        float, typer.Option(help="Fraction of training records with labels (1 = the whole archive).")
    ] = 1.0,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation macro AUC).")] = 30,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    lead_dropout: Annotated[
        float,
        typer.Option(
            help="Zero each lead but lead I with this probability per record (a teacher that also answers from lead I)."
        ),
    ] = 0.0,
    train_folds: TrainFoldsOpt = None,
    device: DeviceOpt = "auto",
    bf16: Annotated[bool, typer.Option(help="bf16 autocast on CUDA.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train the frozen 12-lead teacher (supervised, early stopping on validation macro AUC)."""
    run_training(
        data,
        {
            "method": "teacher",
            "task": task,
            "labelled_fraction": labelled_fraction,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "device": device,
            "bf16": bf16,
            "lead_dropout": lead_dropout,
            **_folds(train_folds),
        },
        out_path,
        None,
        as_json,
    )


def teacher_assistant_cmd(
    data: DataOpt,
    teacher: Annotated[Path, typer.Option(help="The 12-lead teacher to distil from.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the lead-I assistant's checkpoint.")],
    task: Annotated[str, typer.Option(help="Label task.")] = "superdiagnostic",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation macro AUC).")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    train_folds: TrainFoldsOpt = None,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Distil a lead-I teacher assistant (the teacher's size, lead I in) from the 12-lead teacher on the archive.

    What wearables distil from (`--wearable-teacher`): a 12-lead teacher cannot answer from the one lead a
    wearable records; results/wearable_benchmark.md compares it with a teacher trained with --lead-dropout.
    """
    from liteheart_core.wearable import wearable_teacher_config

    folds = tuple(_folds(train_folds).get("train_folds", ())) or None
    cfg = wearable_teacher_config("assistant", folds or (1, 2, 3, 4, 5, 6, 7), epochs, seed, device, task)
    cfg_dict = cfg.to_dict()
    if folds is None:
        cfg_dict.pop("train_folds")
    run_training(data, cfg_dict, out_path, teacher, as_json)


def _folds(text: str | None) -> dict:
    if not text:
        return {}
    try:
        return {"train_folds": [int(f) for f in text.split(",") if f.strip()]}
    except ValueError:
        fail(f"--train-folds {text!r}: folds are integers separated by commas, e.g. 1,2")


def evaluate_cmd(
    model: Annotated[Path, typer.Option("--model", help="A teacher or student checkpoint.")],
    data: DataOpt,
    split: Annotated[
        str,
        typer.Option(
            help="The checkpoint's own folds: train (protocol v2: 1-7), val (9), test "
            "(8 and 10: every fold no choice looked at) or all."
        ),
    ] = "test",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Score a checkpoint on a dataset folder with the thresholds stored in the checkpoint."""
    from liteheart_core.checkpoint import CheckpointError, load_checkpoint
    from liteheart_core.scoring import score

    try:
        net, meta = load_checkpoint(model)
    except CheckpointError as exc:
        fail(str(exc))
    dataset = _open_data(data, meta.get("prep_settings"))
    try:
        result = score(net, meta, dataset, split, device=device, n_bootstrap=bootstrap)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out.print(f"{model} on {data} ({split}, {result['n']} records)")
    out.print(
        f"macro F1 {result['macro_f1']:.3f} {result['ci']['macro_f1']}  macro AUC {result['macro_auc']:.3f}"
        f"  macro AP {result['macro_ap']:.3f}"
    )
    for name, row in result["per_class"].items():
        out.print(
            f"  {name:8s} F1 {row['f1']:.3f}  AUC {row['auc'] if row['auc'] is None else round(row['auc'], 3)}"
            f"  support {row['support']}"
        )
