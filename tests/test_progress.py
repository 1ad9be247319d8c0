"""Progress bars of the long steps: drawn only when something happens, and the benchmark's round bar."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console


def test_step_progress_draws_only_once_work_is_reported() -> None:
    from liteheart_core.cli.progress import step_progress

    quiet, busy = io.StringIO(), io.StringIO()

    with step_progress("preparing", console=Console(file=quiet, force_terminal=True)):
        pass  # a cache hit: no callback
    with step_progress("preparing", console=Console(file=busy, force_terminal=True, width=80)) as progress:
        for done in range(1, 5):
            progress(done, 4)

    assert quiet.getvalue() == ""
    assert "preparing" in busy.getvalue() and "4/4" in busy.getvalue()


def test_federated_benchmark_follows_the_round_lines_of_a_run(tmp_path: Path) -> None:
    from simulations.benchmark_federated import run_with_progress

    script = tmp_path / "fake_run.py"
    script.write_text(
        "import sys\n"
        "for i in (1, 2):\n"
        "    print(f'round {i:3d}/2: global macro F1 0.5', file=sys.stderr)\n"
        'print(\'{"run_id": "x"}\')\n'
    )

    code, stdout, stderr = run_with_progress([sys.executable, str(script)], 2)

    assert code == 0 and stdout.strip() == '{"run_id": "x"}'
    assert stderr.count("global macro F1") == 2
