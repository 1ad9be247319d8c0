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
    with pytest.raises(ValueError, match=rf"method {method!r} is not a method a client can train; expected one of "
                                         r"supervised, kd, .*liteheart"):
        FedConfig.from_dict({"method": method})


def test_server_start_and_a_scenario_refuse_an_unknown_method_before_anything_starts(tmp_path: Path) -> None:
    from server.cli import app as server_app
    from simulations.cli import app as sim_app

    scenario = tmp_path / "bogus.toml"
    scenario.write_text('method = "bogus"\nclients = 2\nrounds = 1\n')

    start = runner.invoke(server_app, ["start", "--data", "synth", "--method", "bogus", "--run-dir",
                                       str(tmp_path / "runs"), "--port", "1"])
    sim = runner.invoke(sim_app, ["run", "--scenario", str(scenario), "--run-dir", str(tmp_path / "sim")])

    for result in (start, sim):
        assert result.exit_code == 2, result.output
        assert "method 'bogus' is not a method a client can train" in " ".join(result.output.split())
    assert not (tmp_path / "runs" / ".flwr").exists() and not (tmp_path / "sim").exists()
