"""Fuzzing the three command-line programs with random options and values.

Each example runs one command with random values for its options, plus inputs that surely fail (a
missing data folder, an out-of-range port), so nothing trains, serves or downloads. Contract: a refusal
exits non-zero with a message, never a Python traceback (``result.exception`` is a ``SystemExit``), and
within seconds.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer.main
from hypothesis import event, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from client.cli import app as client_app
from server.cli import app as server_app
from simulations.cli import app as sim_app
from tests.fuzz.conftest import fuzz_settings, time_limit

MISSING = "/nonexistent-liteheart-fuzz/x"
DB = "sqlite:///registry-fuzz.sqlite"  # relative: inside the test's working folder

# Inputs that make each command fail validation whatever the random options say (kept out of the fuzzing).
FORCED: dict[tuple[str, ...], list[str]] = {
    ("sim", "train"): ["--data", MISSING, "--out", "student.pt"],
    ("sim", "evaluate"): ["--model", MISSING, "--data", MISSING],
    ("sim", "run"): ["--data", MISSING],
    ("sim", "plot-record"): [MISSING, "--model", MISSING],
    ("sim", "data", "prepare"): ["auto", MISSING],
    ("sim", "data", "synth"): ["--out", "synth", "--fs", "7"],
    ("sim", "data", "download"): ["not-a-dataset", "--to", "download"],
    ("sim", "data", "info"): [MISSING],
    ("server", "start"): ["--data", MISSING, "--port", "70000", "--db", DB],
    ("server", "export"): ["no-such-run", "onnx", "--out", "export", "--db", DB],
    ("server", "teacher", "train"): ["--data", MISSING, "--out", "teacher.pt"],
    ("server", "runs", "list"): ["--db", DB],
    ("server", "runs", "show"): ["--db", DB],
    ("server", "runs", "export"): ["--db", DB],
    ("server", "runs", "report"): ["--db", DB],
    ("client", "start"): ["--server", "no-port-here", "--data", MISSING, "--port", "70000"],
    ("client", "ingest"): [MISSING],
    ("client", "store", "info"): ["--store", MISSING],
}
MAY_SUCCEED = {("server", "runs", "list")}  # an empty registry lists no run
APPS = {"sim": sim_app, "server": server_app, "client": client_app}


def _commands() -> dict[tuple[str, ...], click.Command]:
    out = {}
    for prog, app in APPS.items():

        def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
            if isinstance(cmd, click.Group):
                for name, sub in cmd.commands.items():
                    walk(sub, path + (name,))
            elif path in FORCED:
                out[path] = cmd

        walk(typer.main.get_command(app), (prog,))
    return out


COMMANDS = _commands()
NUMBER_TEXT = st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "2",
        "3",
        "1e3",
        "nan",
        "inf",
        "-inf",
        "1e309",
        "0.5",
        "-0.5",
        "99999999999999999999",
        "abc",
        "",
        " ",
        "1,2",
        "0x1f",
        "٣",
    ]
)
# No NUL: a real argv cannot hold one (C strings), and click's Path type would raise on it inside click.
TEXT = st.one_of(
    st.text(st.characters(blacklist_characters="\x00"), max_size=12).filter(lambda s: not s.startswith("-")),
    NUMBER_TEXT,
    st.sampled_from(["synth", "cpu", "cuda", "auto", "I", "fedavg", "liteheart", "iid", MISSING]),
)


def value_for(param: click.Parameter) -> st.SearchStrategy[list[str]]:
    """Argument tokens for one parameter: a flag, or the option and a value (valid or not)."""
    opt = param.opts[0] if isinstance(param, click.Option) else None
    if isinstance(param, click.Option) and param.is_flag:
        return st.sampled_from([[o] for o in param.opts + param.secondary_opts])
    if isinstance(param.type, click.Choice):
        values = st.one_of(st.sampled_from([str(c) for c in param.type.choices]), TEXT)
    elif isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
        values = NUMBER_TEXT
    else:
        values = TEXT
    return values.map(lambda v: [opt, v] if opt else [v])


@st.composite
def invocation(draw: st.DrawFn) -> tuple[tuple[str, ...], list[str]]:
    path = draw(st.sampled_from(sorted(COMMANDS)))
    cmd = COMMANDS[path]
    forced = FORCED[path]
    args = list(path[1:]) + list(forced)
    for param in cmd.params:
        if param.name == "help" or any(o in forced for o in getattr(param, "opts", [])):
            continue
        if isinstance(param, click.Argument):
            if param.required and sum(not a.startswith("-") for a in forced) < 2:
                args += draw(value_for(param)) if draw(st.booleans()) else []
            continue
        if draw(st.integers(0, 3)) == 0:
            args += draw(value_for(param))
    if draw(st.integers(0, 9)) == 0:
        args.insert(draw(st.integers(1, len(args))), draw(st.sampled_from(["--no-such-option", "stray", "--", "-x"])))
    return path, args


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Commands write (if at all) into a scratch folder, never into the repository or the home cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LITEHEART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LITEHEART_STORE", str(tmp_path / "store.sqlite"))
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


@fuzz_settings(80)
@given(inv=invocation())
def test_cli_refuses_bad_arguments_with_a_message_and_no_traceback(inv, sandbox: Path) -> None:
    path, args = inv
    runner = CliRunner()

    with time_limit(60):
        result = runner.invoke(APPS[path[0]], args)

    event(f"{' '.join(path[:2])}: exit {result.exit_code}")
    shown = f"{' '.join(path)} {args!r} -> exit {result.exit_code}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{shown}\n{type(result.exception).__name__}: {result.exception}"
    )
    assert "Traceback" not in result.output, shown
    if result.exit_code != 0:
        assert result.output.strip(), f"non-zero exit without a message: {shown}"
    else:
        assert path in MAY_SUCCEED, f"a command meant to fail ran: {shown}"
