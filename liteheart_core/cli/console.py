"""The consoles every command prints through, and ``fail``: one error line for a person, then a non-zero exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
out = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error for a person and exit non-zero."""
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
