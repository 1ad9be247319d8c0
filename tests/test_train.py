"""Centralised training end to end on a small synthetic PTB-XL-layout set, with tiny networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from liteheart_core.checkpoint import load_checkpoint, save_checkpoint
from liteheart_core.data.splits import labelled_subset
from liteheart_core.scoring import score
from liteheart_core.train import METHODS, TrainConfig, checkpoint_meta, train
from tests.conftest import TINY_STUDENT


def test_labelled_subset_is_patient_disjoint_and_stratified(synth_data) -> None:
    _, y = synth_data.labels()
    rows = synth_data.rows(folds=list(range(1, 9)))

    mask = labelled_subset(synth_data.index, y, rows, 0.3, seed=0)
    again = labelled_subset(synth_data.index, y, rows, 0.3, seed=0)

    patients = synth_data.index.loc[rows, "patient"].to_numpy()
    assert np.array_equal(mask, again)
    assert not set(patients[mask]) & set(patients[~mask])
    assert 0.2 < mask.mean() < 0.45
    assert np.all(y[rows][mask].sum(0) > 0)  # every class keeps some labels


def test_teacher_checkpoint_round_trip_scores_the_same(synth_data, tiny_teacher: Path) -> None:
    net, meta = load_checkpoint(tiny_teacher)

    result = score(net, meta, synth_data, split="val", device="cpu", n_bootstrap=20)

    assert meta["kind"] == "teacher" and meta["classes"] == ["NORM", "MI", "STTC", "CD", "HYP"]
    assert meta["data_fingerprint"] == synth_data.fingerprint and len(meta["thresholds"]) == 5
    assert result["macro_auc"] == pytest.approx(meta["val_metrics"]["macro_auc"], abs=1e-6)
    assert result["macro_f1"] == pytest.approx(meta["val_metrics"]["macro_f1"], abs=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "teacher"])
def test_every_student_method_trains_and_logs_its_terms(method: str, synth_data, tiny_teacher: Path) -> None:
    teacher, _ = load_checkpoint(tiny_teacher)
    cfg = TrainConfig(method=method, epochs=1, batch_size=32, labelled_fraction=0.3, device="cpu", net=TINY_STUDENT)

    result = train(synth_data, cfg, teacher=None if method == "supervised" else teacher)

    logged = set(result.history[0])
    expected = {
        "supervised": {"bce"},
        "kd": {"bce", "kd"},
        "fitnets": {"bce", "kd", "feature"},
        "liteheart": {"bce", "kd", "feature", "evidence", "mi", "pseudo", "consistency"},
        "liteheart-no-region": {"bce", "kd", "feature", "mi", "pseudo", "consistency"},
        "liteheart-no-mi": {"bce", "kd", "feature", "evidence", "pseudo", "consistency"},
        "liteheart-no-semi": {"bce", "kd", "feature", "evidence", "mi"},
        "liteheart-v2": {"bce", "kd", "crd", "waves"},
        "liteheart-v2-no-views": {"bce", "kd", "crd", "waves"},
        "liteheart-v2-no-mix": {"bce", "kd", "crd", "waves"},
        "liteheart-v2-no-crd": {"bce", "kd", "waves"},
        "liteheart-v2-no-region": {"bce", "kd", "crd"},
    }[method]
    terms = {"bce", "kd", "feature", "evidence", "mi", "pseudo", "consistency", "crd", "waves"}
    assert logged & terms == expected
    assert all(np.isfinite(v) for v in result.history[0].values())
    assert result.model.stage_channels and result.val_metrics["n"] > 0
    if "mi" in expected:
        assert any(k.startswith("mi_s") for k in logged)  # the InfoNCE bound per layer pair is logged


def test_distillation_needs_a_teacher(synth_data) -> None:
    with pytest.raises(ValueError, match="teacher"):
        train(synth_data, TrainConfig(method="kd", epochs=1, device="cpu", net=TINY_STUDENT))


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="magic")
    with pytest.raises(ValueError, match="labelled_fraction"):
        TrainConfig(labelled_fraction=0)
    with pytest.raises(ValueError, match="unknown training settings: speed"):
        TrainConfig.from_dict({"speed": 2})


def test_cli_evaluate_scores_a_student_checkpoint(synth_data, tiny_teacher: Path, tmp_path: Path) -> None:
    from simulations.cli import app

    teacher, _ = load_checkpoint(tiny_teacher)
    cfg = TrainConfig(method="kd", epochs=1, batch_size=32, device="cpu", net=TINY_STUDENT)
    result = train(synth_data, cfg, teacher=teacher)
    ckpt = tmp_path / "student.pt"
    save_checkpoint(ckpt, result.model, checkpoint_meta(synth_data, cfg, result))
    runner = CliRunner()

    ok = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(ckpt),
            "--data",
            str(synth_data.root),
            "--split",
            "val",
            "--bootstrap",
            "50",
            "--device",
            "cpu",
            "--json",
        ],
    )
    test = runner.invoke(
        app,
        [
            "evaluate",
            "--model",
            str(ckpt),
            "--data",
            str(synth_data.root),
            "--split",
            "test",
            "--bootstrap",
            "10",
            "--json",
        ],
    )
    bogus = runner.invoke(app, ["evaluate", "--model", str(ckpt), "--data", str(synth_data.root), "--split", "dev"])
    missing = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "nope.pt"), "--data", str(synth_data.root)])

    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert {"macro_f1", "macro_auc", "macro_ap", "per_class"} <= set(report)
    assert set(report["per_class"]) == {"NORM", "MI", "STTC", "CD", "HYP"}
    assert test.exit_code == 0 and json.loads(test.stdout)["n"] < report["n"] + 40  # fold 10 is scored separately
    assert bogus.exit_code == 2 and "unknown split" in bogus.output
    assert missing.exit_code == 2 and "does not exist" in missing.output
