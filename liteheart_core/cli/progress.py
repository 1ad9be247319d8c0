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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from liteheart_core.cli.console import err


@contextmanager
def step_progress(
    label: str, console: Console | None = None, disable: bool = False
) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback that draws a transient bar from its first call on.

    Parameters
    ----------
    label
        What is being done ("preparing the run's data").
    disable
        Draw nothing (e.g. ``--json`` output to a pipe).
    """
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console or err,
        transient=True,
        disable=disable,
    )
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
def job_progress(
    label: str, total: int, console: Console | None = None, disable: bool = False
) -> Iterator[Callable[[str], None]]:
    """A bar over ``total`` jobs; the yielded ``done(description)`` advances it by one.

    Lines printed through the same console while it runs appear above the bar.
    """
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console or err,
        disable=disable,
    )
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


def _eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class RunProgress:
    """Where a federated run is: the teacher's epochs, the rounds, the global evaluation.

    On a terminal, two rich bars with an estimate of the time left (lines printed through the
    same console appear above them); otherwise one plain line per step, with the estimate in it,
    so a log file or CI shows the same steps.
    """

    def __init__(self, rounds: int, console: Console | None = None, live: bool | None = None) -> None:
        self.console = console or err
        self.rounds = rounds
        self.live = self.console.is_terminal if live is None else live
        self.bar = Progress(
            TextColumn("{task.fields[what]:<8}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            disable=not self.live,
        )
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, float] = {}
        self.ends: list[float] = []

    def __enter__(self) -> RunProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def _task(self, what: str, total: int) -> TaskID:
        import time

        if what not in self.tasks:
            self.tasks[what] = self.bar.add_task("", total=total, what=what)
            self.started[what] = time.perf_counter()
        return self.tasks[what]

    def _left(self, what: str, done: int, total: int) -> str:
        import time

        spent = time.perf_counter() - self.started[what]
        return _eta(spent / done * (total - done)) if done else "?"

    def teacher_epoch(self, epoch: int, total: int, entry: dict) -> None:
        """After each epoch of the 12-lead teacher (trained once, then cached); epoch 0 as training starts."""
        task = self._task("teacher", total)
        if not epoch:
            return
        text = f"epoch {epoch}/{total}: validation macro AUC {entry.get('val_macro_auc', float('nan')):.3f}"
        self.bar.update(task, completed=epoch, description=text)
        if not self.live:
            left = f"  (about {self._left('teacher', epoch, total)} left)" if epoch < total else ""
            self.console.print(f"teacher {text}{left}", highlight=False)

    def evaluating(self, server_round: int) -> None:
        """Before the global student is scored on the validation fold (round 0: the initial student)."""
        task = self._task("rounds", self.rounds)
        text = "evaluating the initial student" if server_round == 0 else f"round {server_round}: evaluating"
        self.bar.update(task, description=text)
        if not self.live:
            self.console.print(f"{text} on the validation fold", highlight=False)

    def round_done(self, number: int, entry: dict, line: str) -> None:
        """After round ``number`` is recorded; ``line`` is the round's summary."""
        import time

        task = self._task("rounds", self.rounds)
        self.bar.update(task, completed=min(number, self.rounds), description=f"round {number} done")
        now = time.perf_counter()
        self.ends.append(now)
        # a round's pace from the rounds after the first: the first also starts the client actors (each
        # importing torch), which later rounds do not pay again. A resumed run counts the rounds run here.
        spans = [b - a for a, b in zip([self.started["rounds"], *self.ends], self.ends)]
        pace = sum(spans[1:]) / len(spans[1:]) if len(spans) > 1 else spans[0]
        left = _eta(pace * (self.rounds - number))
        self.console.print(
            line + ("" if self.live or number >= self.rounds else f"  (about {left} left)"), highlight=False
        )
