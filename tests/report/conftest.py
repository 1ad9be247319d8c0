"""A small federated run on real PTB-XL records, shared by the report and export tests, and headless Chromium.

The run is real in every part that matters to what users look at: 340 PTB-XL
records (30 per training fold, 100 of fold 9, drawn with a fixed seed so both
signal sources appear), prepared as usual, a tiny 12-lead teacher trained on
them for 2 epochs, and `liteheart-sim run` with 2 clients and 2 rounds in a
subprocess — about half a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY_TEACHER

TRAIN_PER_FOLD = 30
VAL_RECORDS = 100


@dataclass(frozen=True)
class RealRun:
    run_dir: Path
    run_id: str
    raw: Path  # the PTB-XL-layout folder of the records
    data: object  # PreparedData of ``raw``
    summary: dict


def small_ptbxl(source: Path, dest: Path, seed: int = 0) -> Path:
    """Copy a seeded sample of a PTB-XL folder (tables filtered, record files copied) into ``dest``."""
    db = pd.read_csv(source / "ptbxl_database.csv")
    picked = pd.concat(
        [
            group.sample(min(len(group), VAL_RECORDS if fold == 9 else TRAIN_PER_FOLD), random_state=seed)
            for fold, group in db.groupby("strat_fold")
            if 1 <= fold <= 9
        ]
    ).sort_values("ecg_id")
    dest.mkdir(parents=True)
    picked.to_csv(dest / "ptbxl_database.csv", index=False)
    shutil.copy(source / "scp_statements.csv", dest / "scp_statements.csv")
    for name in picked["filename_lr"]:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".hea", ".dat"):
            shutil.copy(source / (name + suffix), target.with_suffix(suffix))
    return dest


@pytest.fixture(scope="session")
def real_run(ptbxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """A completed 2-client, 2-round federated run on real PTB-XL records."""
    from liteheart_core.checkpoint import save_checkpoint
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.train import TrainConfig, checkpoint_meta, train

    root = tmp_path_factory.mktemp("real_run")
    raw = small_ptbxl(ptbxl_dir, root / "ptbxl")
    data = resolve_data(raw, cache_dir=root / "prepared")
    cfg = TrainConfig(method="teacher", epochs=2, batch_size=32, lr=3e-3, device="cpu", net=TINY_TEACHER)
    result = train(data, cfg)
    teacher = root / "teacher.pt"
    save_checkpoint(teacher, result.model, checkpoint_meta(data, cfg, result))
    env = {**os.environ, "LITEHEART_CACHE": str(root / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "simulations.cli",
        "run",
        "--data",
        str(data.root),
        "--teacher",
        str(teacher),
        "--clients",
        "2",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--device",
        "cpu",
        "--run-dir",
        str(root / "runs"),
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    return RealRun(run_dir=root / "runs", run_id=summary["run_id"], raw=raw, data=data, summary=summary)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium; a missing browser fails under CI (``$CI``) instead of skipping."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "headless Chromium is not installed (Debian: apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must install it")
    pytest.skip(message)
