"""Exported global students (ONNX, TorchScript) compute what the checkpoint computes, and carry a full model card."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from liteheart_core.methods import DEFAULT_METHOD
from tests.report.conftest import RealRun

runner = CliRunner()
N_RECORDS = 6


@pytest.fixture(scope="module")
def server_app() -> typer.Typer:
    """``liteheart-server`` itself, which must offer ``export``."""
    from server.cli import app

    if "export" not in {c.name for c in app.registered_commands}:
        pytest.fail("liteheart-server has no `export` command: register server.export.export_cmd in server/cli.py")
    return app


def fold9_inputs(run: RealRun, meta: dict) -> np.ndarray:
    """A handful of raw fold-9 PTB-XL records prepared with the checkpoint's own settings: [N, leads, T]."""
    from liteheart_core.data.record import prepare_record
    from liteheart_core.data.signal import lead_indices

    index = run.data.index
    records = index.loc[index["fold"] == 9, "record"].head(N_RECORDS)
    paths = [next(run.raw.glob(f"records100/*/{int(r):05d}_lr.hea")) for r in records]
    windows = [prepare_record(p, meta["prep_settings"], meta["length"]).window for p in paths]
    return np.stack(windows)[:, lead_indices(meta["leads"])].astype(np.float32)


def export(app: typer.Typer, run: RealRun, fmt: str, out: Path) -> dict:
    done = runner.invoke(
        app,
        ["export", run.run_id, "--format", fmt, "--out", str(out), "--run-dir", str(run.run_dir), "--bootstrap", "200"],
    )
    assert done.exit_code == 0, done.output
    return json.loads((out / "model_card.json").read_text())


def check_card(card: dict, out: Path, run: RealRun) -> None:
    """Every field the model card must hold, and the Markdown twin saying the same."""
    exported = out / card["file"]["name"]
    assert card["file"]["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert card["classes"] == ["NORM", "MI", "STTC", "CD", "HYP"]
    assert set(card["thresholds"]) == set(card["classes"])
    assert card["input"]["sampling_rate_hz"] == 100 and card["input"]["window_s"] == 10
    assert card["input"]["leads"] == ["I"] and card["input"]["shape"] == ["batch", 1, 1000]
    steps = " ".join(card["input_normalisation"]["steps"])
    assert "band-pass 0.5-40 Hz" in steps and "per-record, per-lead standardisation" in steps
    metrics = card["metrics"]
    assert metrics["recomputed"] and metrics["records"] > 50
    assert all(len(m["ci95"]) == 2 and m["ci95"][0] <= m["value"] <= m["ci95"][1] for m in metrics["macro"].values())
    assert all(pc["f1_ci"] is not None for pc in metrics["per_class"].values())
    data = card["training_data"]
    assert data["name"] == "PTB-XL" and data["licence"] == "CC BY 4.0" and "Wagner" in data["citation"]
    fed = card["federated"]
    assert (fed["clients"], fed["rounds_completed"], fed["partition"], fed["method"]) == (2, 2, "iid", DEFAULT_METHOD)
    assert fed["labelled_fraction"] == 0.3
    assert card["privacy"]["differential_privacy"] == "none" and card["privacy"]["secure_aggregation"] == "none"
    assert "Not a medical device" in card["intended_use"] and "research use only" in card["intended_use"]
    assert any("Lead I only" in x and "10-s windows at 100 Hz" in x for x in card["limitations"])
    assert card["source_checkpoint"]["matches_registry"] and card["model"]["run_id"] == run.run_id
    markdown = (out / "model_card.md").read_text()
    for text in (
        card["file"]["sha256"],
        "CC BY 4.0",
        "Not a medical device",
        "95% interval",
        "differential privacy: none",
    ):
        assert text in markdown


def test_onnx_export_matches_pytorch_on_real_records(
    server_app: typer.Typer, real_run: RealRun, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    from liteheart_core.checkpoint import load_checkpoint

    # Prepare
    net, meta = load_checkpoint(real_run.run_dir / real_run.run_id / "global_student.pt")
    x = fold9_inputs(real_run, meta)

    # Execute
    card = export(server_app, real_run, "onnx", tmp_path / "onnx")
    path = tmp_path / "onnx" / card["file"]["name"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = session.run(["logits"], {"ecg": x})[0]
    single = session.run(["logits"], {"ecg": x[:1]})[0]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()

    # Assert
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    assert batch.shape == (N_RECORDS, 5) and single.shape == (1, 5)
    assert np.abs(batch - expected).max() < 1e-4 and np.abs(single - expected[:1]).max() < 1e-4
    assert card["file"]["opset"] >= 17 and card["verification"]["checked"]
    assert card["verification"]["max_abs_logit_diff"] < 1e-4
    check_card(card, tmp_path / "onnx", real_run)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is deprecated in torch 2.13
def test_torchscript_export_matches_pytorch_on_real_records(
    server_app: typer.Typer, real_run: RealRun, tmp_path: Path
) -> None:
    from liteheart_core.checkpoint import load_checkpoint

    net, meta = load_checkpoint(real_run.run_dir / real_run.run_id / "global_student.pt")
    x = torch.from_numpy(fold9_inputs(real_run, meta))

    card = export(server_app, real_run, "torchscript", tmp_path / "ts")
    scripted = torch.jit.load(str(tmp_path / "ts" / card["file"]["name"]))
    with torch.no_grad():
        got, expected = scripted(x).numpy(), net(x).numpy()

    assert np.abs(got - expected).max() < 1e-4
    check_card(card, tmp_path / "ts", real_run)


def test_export_refuses_unknown_runs_and_checkpoints_the_registry_did_not_record(
    server_app: typer.Typer, real_run: RealRun, tmp_path: Path
) -> None:
    # Prepare: a copy of the run folder whose global student was altered after the run
    run_dir = tmp_path / "runs"
    shutil.copytree(real_run.run_dir, run_dir, ignore=shutil.ignore_patterns(".flwr"))
    final = run_dir / real_run.run_id / "global_student.pt"
    final.write_bytes(final.read_bytes() + b"\0")

    # Execute
    unknown = runner.invoke(
        server_app,
        ["export", "nope", "--format", "onnx", "--out", str(tmp_path / "a"), "--run-dir", str(real_run.run_dir)],
    )
    altered = runner.invoke(
        server_app,
        ["export", real_run.run_id, "--format", "torchscript", "--out", str(tmp_path / "b"), "--run-dir", str(run_dir)],
    )

    # Assert
    assert unknown.exit_code == 2 and "no run 'nope'" in unknown.output
    assert altered.exit_code == 2 and "does not match the sha256" in altered.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
