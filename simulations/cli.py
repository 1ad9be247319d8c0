"""``liteheart-sim``: data, centralised training, evaluation and simulations."""

from __future__ import annotations

import typer

from liteheart_core.cli.data_cmd import data_app
from liteheart_core.cli.train_cmd import evaluate_cmd, train_cmd
from simulations.run_cmd import run_cmd

app = typer.Typer(
    help="LiteHeart simulations: data preparation, training, evaluation and federated simulation.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("run")(run_cmd)

from simulations.plot_record import plot_record_cmd  # noqa: E402  (kept last: one line per addition)

app.command("plot-record")(plot_record_cmd)

if __name__ == "__main__":
    app()
