"""What `liteheart-sim run` shows a user: progress lines off a terminal, no library warnings, a closing summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from liteheart_core.cli.progress import RunProgress
from simulations.run_cmd import backend_config, partition_text


# a real federation: ~1-2 min on an idle 2-core machine, ~10 min on one shared with other jobs (the first
# round starts the client actors, each importing torch); the fixtures' setup counts against the limit too
@pytest.mark.timeout(1500)
def test_the_main_job_explains_itself_without_library_warnings(tmp_path: Path) -> None:
    # Prepare: the main job's command, made small (a 2-epoch teacher trained here, 2 clients, 2 rounds)
    scenario = tmp_path / "small.toml"
    scenario.write_text('synth-records = 60\nteacher-epochs = 2\nlocal-epochs = 1\nmethod = "kd"\n')
    env = {**os.environ, "LITEHEART_CACHE": str(tmp_path / "cache")}  # an empty cache: the teacher is trained
    exe = Path(sys.executable).with_name("liteheart-sim")
    cmd = ([str(exe)] if exe.is_file() else [sys.executable, "-m", "simulations.cli"]) + [
        "run",
        "--scenario",
        str(scenario),
        "--clients",
        "2",
        "--rounds",
        "2",
        "--device",
        "cpu",
    ]

    # Execute: output to pipes, as in CI or a log file
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)

    # Assert
    assert done.returncode == 0, done.stderr[-3000:]
    both = done.stdout + done.stderr
    for noise in ("warning", "deprecat", "fraction_evaluate", "traceback", "ClientAppActor"):
        assert noise not in both.lower(), f"{noise!r} reached the terminal:\n{both[-3000:]}"
    lines = done.stderr.splitlines()
    for epoch in (1, 2):  # one line per teacher epoch, and an estimate of what is left until the last
        assert any(line.startswith(f"teacher epoch {epoch}/2: validation macro AUC") for line in lines), lines
    assert any("teacher epoch 1/2" in line and "left)" in line for line in lines)
    for number in (1, 2):
        assert any(re.match(rf"round +{number}/2: global macro F1 \d\.\d{{3}}", line) for line in lines), lines
    assert any(line.startswith("evaluating the initial student") for line in lines)
    start = lines.index(next(line for line in lines if line.startswith("#  name")))
    table = lines[start : lines.index(next(line for line in lines[start:] if line.split()[:1] == ["total"])) + 1]
    assert len(table) == 6 and all(len(line) <= 80 for line in table), table
    assert table[0].split() == [
        "#",
        "name",
        "records",
        "labelled",
        "patients",
        "NORM",
        "MI",
        "STTC",
        "CD",
        "HYP",
        "train",
        "val",
    ]
    run_id = re.search(
        r"^run (\w+) completed: global student macro F1 \d\.\d{3}, AUC \d\.\d{3}", done.stdout, re.MULTILINE
    ).group(1)
    assert re.search(r"^  registry     sqlite:///\S*runs/registry\.sqlite$", done.stdout, re.MULTILINE), done.stdout
    assert f"checkpoints  runs/{run_id}/checkpoints" in done.stdout
    assert f"liteheart-server runs report {run_id} --out report-{run_id}" in done.stdout
    assert f"liteheart-server export {run_id} --format onnx" in done.stdout
    assert (tmp_path / "runs" / run_id / "checkpoints" / "round-0002.pt").is_file()


def test_the_partition_table_fits_80_columns_and_says_what_it_left_out() -> None:
    # Prepare: 12 wearable sites with 26 classes (the Challenge's), and 4 sites with PTB-XL's 5 superclasses
    many = [
        {
            "client": i,
            "name": f"site Ningbo-{i}",
            "kind": "wearable",
            "records": 12345,
            "labelled": 3400,
            "patients": 10500,
            **{f"C{j:02d}": 1000 + j for j in range(26)},
            "train": 11000,
            "local val": 1345,
        }
        for i in range(12)
    ]
    few = [
        {
            "client": i,
            "name": f"iid {i}",
            "records": 123,
            "labelled": 34,
            "patients": 105,
            **dict(zip(["NORM", "MI", "STTC", "CD", "HYP"], [52, 24, 38, 27, 18])),
            "train": 109,
            "local val": 14,
        }
        for i in range(4)
    ]

    # Execute
    wide, narrow = partition_text(many).splitlines(), partition_text(few).splitlines()

    # Assert: within 80 columns; classes in order while they fit, the rest named as left out
    assert all(len(line) <= 80 for line in wide + narrow)
    shown = [c for c in wide[0].split() if c.startswith("C")]
    assert shown == [f"C{j:02d}" for j in range(len(shown))] and 0 < len(shown) < 26
    assert wide[-1] == f"(records per class of {26 - len(shown)} more classes: `liteheart-server runs show RUN_ID`)"
    assert wide[0].split()[-2:] == ["train", "val"] and wide[-2].split()[:2] == ["total", "148140"]
    assert narrow[0].split()[5:10] == ["NORM", "MI", "STTC", "CD", "HYP"] and narrow[-1].split()[:2] == ["total", "492"]


def test_progress_lines_count_down(capsys) -> None:
    from rich.console import Console

    console = Console(file=sys.stderr, width=200)
    with RunProgress(rounds=3, console=console, live=False) as progress:
        for epoch in (0, 1, 2):
            progress.teacher_epoch(epoch, 2, {"val_macro_auc": 0.5})
        progress.evaluating(0)
        for number in (1, 2, 3):
            progress.evaluating(number)
            progress.round_done(number, {}, f"round {number}/3")

    lines = capsys.readouterr().err.splitlines()

    assert lines[0].startswith("teacher epoch 1/2") and "left)" in lines[0] and "left" not in lines[1]
    assert lines[0].endswith("(about 0 s left)")  # as long as epoch 1 took (no time here)
    assert [line.split("  (")[0] for line in lines if line.startswith("round ") and "/3" in line] == [
        "round 1/3",
        "round 2/3",
        "round 3/3",
    ]
    assert "left)" in next(line for line in lines if line.startswith("round 2/3"))


def test_backend_config_joins_a_cluster_without_sizing_it() -> None:
    local = backend_config(clients=8, client_cpus=1.0)
    joined = backend_config(clients=8, ray_address="10.0.0.5:6379", client_cpus=2.0, client_gpus=0.25)

    assert local["init_args"]["num_cpus"] == min(os.cpu_count() or 1, 8)
    assert joined["init_args"]["address"] == "10.0.0.5:6379" and "num_cpus" not in joined["init_args"]
    assert joined["client_resources"] == {"num_cpus": 2.0, "num_gpus": 0.25}
