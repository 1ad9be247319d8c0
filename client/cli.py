"""``liteheart-client``: a hospital site or wearable taking part in a LiteHeart federation."""

from __future__ import annotations

import typer

from client.deploy import start_cmd
from client.ingest_cmd import ingest, store_app
from liteheart_core.cli.data_cmd import data_app

app = typer.Typer(
    help="LiteHeart client: trains the student on local ECGs that never leave the node.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.command("start")(start_cmd)
app.command("ingest")(ingest)
app.add_typer(store_app, name="store")

if __name__ == "__main__":
    app()
