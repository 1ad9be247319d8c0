"""Rich progress bars on stderr for the long steps of the command-line programs.

Library code reports progress through plain callbacks (``progress(done, total)``);
these helpers turn such a callback into a bar, shown only once something
actually happens (a cached preparation shows nothing) and removed when done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from liteheart_core.cli.console import err


@contextmanager
def step_progress(label: str, console: Console | None = None,
                  disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback that draws a transient bar from its first call on.

    Parameters
    ----------
    label
        What is being done ("preparing the run's data").
    disable
        Draw nothing (e.g. ``--json`` output to a pipe).
    """
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console or err, transient=True, disable=disable)
    state: dict = {}

    def update(done: int, total: int) -> None:
        if "task" not in state:
            bar.start()
            state["task"] = bar.add_task(label, total=total)
        bar.update(state["task"], completed=done, total=total)

    try:
        yield update
    finally:
        if "task" in state:
            bar.stop()


@contextmanager
def job_progress(label: str, total: int, console: Console | None = None,
                 disable: bool = False) -> Iterator[Callable[[str], None]]:
    """A bar over ``total`` jobs; the yielded ``done(description)`` advances it by one.

    Lines printed through the same console while it runs appear above the bar.
    """
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"), console=console or err, disable=disable)
    task = bar.add_task("", total=total)

    def done(description: str = "") -> None:
        bar.update(task, advance=1, description=description)

    with bar:
        yield done


def prepare_run_data(data: str, synth_records: int = 600, seed: int = 0, disable: bool = False) -> None:
    """Prepare a run's data (``"synth"`` or a folder) into the cache with a bar, so ``open_data`` finds it there."""
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.federated import synth_data_path

    path = synth_data_path(synth_records, seed) if data == "synth" else Path(data)
    with step_progress("preparing the data", disable=disable) as progress:
        resolve_data(path, progress=progress)
