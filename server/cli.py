"""``liteheart-server``: the coordinating server of a LiteHeart federation."""

from __future__ import annotations

import typer

from liteheart_core.cli.data_cmd import data_app
from liteheart_core.cli.train_cmd import teacher_assistant_cmd, teacher_train_cmd
from server.certs import certs_cmd
from server.deploy import start_cmd
from server.export import export_cmd
from server.runs_cmd import runs_app

app = typer.Typer(help="LiteHeart server: holds the teacher and the global student.", no_args_is_help=True)
app.add_typer(data_app, name="data")
teacher_app = typer.Typer(help="The frozen 12-lead teacher.", no_args_is_help=True)
teacher_app.command("train")(teacher_train_cmd)
teacher_app.command("assistant")(teacher_assistant_cmd)
app.add_typer(teacher_app, name="teacher")
app.add_typer(runs_app, name="runs")
app.command("start")(start_cmd)
app.command("certs")(certs_cmd)
app.command("export")(export_cmd)

if __name__ == "__main__":
    app()
