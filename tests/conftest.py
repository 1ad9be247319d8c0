"""Shared fixtures: where the read-only real ECG data lives, and tiny WFDB writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (or ``$LITEHEART_SHARED_DATA``)."""
    return Path(os.environ.get("LITEHEART_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    path = shared_data_dir() / "ptbxl"
    if not (path / "ptbxl_database.csv").is_file():
        pytest.skip(f"real PTB-XL data not found at {path} (tests on real data need ../shared/data)")
    return path


@pytest.fixture(scope="session")
def challenge_dir() -> Path:
    path = shared_data_dir() / "challenge"
    if not path.is_dir():
        pytest.skip(f"real Challenge data not found at {path} (tests on real data need ../shared/data)")
    return path


def ecg_like(n_leads: int, n: int, fs: float, seed: int = 0, hr: float = 70.0) -> np.ndarray:
    """A crude beating signal [n, n_leads] in mV: narrow R spikes plus a T bump, different per lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    beats = np.arange(0.3, n / fs, 60.0 / hr)
    sig = np.zeros((n, n_leads))
    for lead in range(n_leads):
        gain = 0.5 + rng.random()
        for b in beats:
            sig[:, lead] += gain * np.exp(-0.5 * ((t - b) / 0.012) ** 2)
            sig[:, lead] += 0.25 * gain * np.exp(-0.5 * ((t - b - 0.28) / 0.05) ** 2)
    return sig + 0.01 * rng.standard_normal((n, n_leads))


# Tiny networks keep CPU tests fast; the real configs are exercised by tests/models and the benchmarks.
TINY_TEACHER = {
    "kind": "xresnet1d",
    "widths": [8, 16, 16, 16],
    "depths": [1, 1, 1, 1],
    "kernel_size": 5,
    "stem_width": 8,
    "norm": "batch",
    "dropout": 0.0,
    "block": "basic",
    "stem_convs": 1,
}
TINY_STUDENT = {
    "kind": "student",
    "widths": [8, 8, 16, 16],
    "depths": [1, 1, 1, 1],
    "kernel_size": 5,
    "stem_width": 8,
    "norm": "group",
    "dropout": 0.0,
    "block": "separable",
    "stem_convs": 1,
    "norm_groups": 4,
}


def prepared_synth_site(root: Path, n: int = 120) -> Path:
    """``n`` synthetic records written and prepared through `liteheart-sim data`, as a site would: the prepared path."""
    import json

    from typer.testing import CliRunner

    from simulations.cli import app

    runner = CliRunner()
    synth = runner.invoke(app, ["data", "synth", "--out", str(root / "raw"), "--n", str(n)])
    prepared = runner.invoke(
        app, ["data", "prepare", "ptbxl", str(root / "raw"), "--out", str(root / "prep"), "--workers", "1", "--json"]
    )
    assert synth.exit_code == 0 and prepared.exit_code == 0, synth.output + prepared.output
    return Path(json.loads(prepared.stdout)["path"])


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory):
    """160 synthetic records in the PTB-XL layout, prepared (regions included)."""
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.data.synth import write_synth_ptbxl

    root = tmp_path_factory.mktemp("synth")
    write_synth_ptbxl(root / "raw", n=160, seed=1)
    return resolve_data(root / "raw", cache_dir=root / "prepared")


@pytest.fixture(scope="session")
def tiny_teacher(synth_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 12-lead teacher checkpoint trained for 3 epochs on ``synth_data``."""
    from liteheart_core.checkpoint import save_checkpoint
    from liteheart_core.train import TrainConfig, checkpoint_meta, train

    cfg = TrainConfig(method="teacher", epochs=3, batch_size=32, lr=3e-3, device="cpu", net=TINY_TEACHER)
    result = train(synth_data, cfg)
    path = tmp_path_factory.mktemp("ck") / "teacher.pt"
    save_checkpoint(path, result.model, checkpoint_meta(synth_data, cfg, result))
    return path


@pytest.fixture(scope="session")
def tiny_wearable_teacher(synth_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 12-lead teacher trained with lead dropout (so it answers from lead I alone), 3 epochs on ``synth_data``."""
    from liteheart_core.checkpoint import save_checkpoint
    from liteheart_core.train import TrainConfig, checkpoint_meta, train

    cfg = TrainConfig(
        method="teacher", epochs=3, batch_size=32, lr=3e-3, device="cpu", net=TINY_TEACHER, lead_dropout=0.5, seed=1
    )
    result = train(synth_data, cfg)
    path = tmp_path_factory.mktemp("ck") / "wearable_teacher.pt"
    save_checkpoint(path, result.model, checkpoint_meta(synth_data, cfg, result))
    return path
