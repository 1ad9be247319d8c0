"""``liteheart-sim``: data, simulations and benchmarks."""

from __future__ import annotations

import typer

from simulations.data_cmd import data_app

app = typer.Typer(help="LiteHeart simulations: data preparation, training and federated simulation.",
                  no_args_is_help=True)
app.add_typer(data_app, name="data")

if __name__ == "__main__":
    app()
