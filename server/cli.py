"""``liteheart-server``: the coordinating server of a LiteHeart federation."""

from __future__ import annotations

import typer

from simulations.data_cmd import data_app

app = typer.Typer(help="LiteHeart server: holds the teacher and the global student.", no_args_is_help=True)
app.add_typer(data_app, name="data")

if __name__ == "__main__":
    app()
