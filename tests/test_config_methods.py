"""A run config names a method of the one table (liteheart_core.train); anything else is refused when it is read.

Before, ``method = "bogus"`` passed: the server trained a teacher, then every client failed every round.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from liteheart_core.config import FedConfig
from liteheart_core.train import METHODS

runner = CliRunner()


@pytest.mark.parametrize("method", [m for m in METHODS if m != "teacher"])
def test_every_student_method_of_the_table_is_accepted(method: str) -> None:
    assert FedConfig.from_dict({"method": method}).method == method


@pytest.mark.parametrize("method", ["bogus", "teacher", "LiteHeart", "liteheart ", ""])
def test_a_method_outside_the_table_is_refused_with_the_known_ones(method: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"method {method!r} is not a method a client can train; expected one of "
        r"supervised, kd, .*liteheart",
    ):
        FedConfig.from_dict({"method": method})


def test_server_start_and_a_scenario_refuse_an_unknown_method_before_anything_starts(tmp_path: Path) -> None:
    from server.cli import app as server_app
    from simulations.cli import app as sim_app

    scenario = tmp_path / "bogus.toml"
    scenario.write_text('method = "bogus"\nclients = 2\nrounds = 1\n')

    start = runner.invoke(
        server_app,
        ["start", "--data", "synth", "--method", "bogus", "--run-dir", str(tmp_path / "runs"), "--port", "1"],
    )
    sim = runner.invoke(sim_app, ["run", "--scenario", str(scenario), "--run-dir", str(tmp_path / "sim")])

    for result in (start, sim):
        assert result.exit_code == 2, result.output
        assert "method 'bogus' is not a method a client can train" in " ".join(result.output.split())
    assert not (tmp_path / "runs" / ".flwr").exists() and not (tmp_path / "sim").exists()


def test_sim_run_with_a_bogus_method_fails_at_once_listing_the_methods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: an empty cache, where a teacher trained (or a dataset prepared) for the run would land
    from liteheart_core.methods import STUDENT_METHODS
    from simulations.cli import app as sim_app

    cache = tmp_path / "cache"
    monkeypatch.setenv("LITEHEART_CACHE", str(cache))

    # Execute: the command line
    result = runner.invoke(sim_app, ["run", "--method", "bogus", "--run-dir", str(tmp_path / "runs")])

    # Assert: refused with every method a client can train, before anything was prepared, trained or recorded
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"expected one of {', '.join(STUDENT_METHODS)}" in said
    assert not cache.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["liteheart-sim", "run"], ["liteheart-sim", "train"], ["liteheart-server", "start"]])
def test_every_method_option_lists_the_table(argv: list[str]) -> None:
    from liteheart_core.methods import DEFAULT_METHOD, STUDENT_METHODS
    from server.cli import app as server_app
    from simulations.cli import app as sim_app

    app = sim_app if argv[0] == "liteheart-sim" else server_app
    result = runner.invoke(app, [argv[1], "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})

    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"default {DEFAULT_METHOD}" in said and all(m in said for m in STUDENT_METHODS), said
