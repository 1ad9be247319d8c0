"""Child processes of the ``start`` commands: ports, Flower's environment, and stopping whole process trees.

``liteheart-server start`` and ``liteheart-client start`` own what they launch. Flower's
SuperLink detaches its SuperExec into a session of its own (which then starts the
ServerApp), so a process-group kill alone does not reach them; ``stop_tree`` walks the
tree through ``/proc`` before it signals anything and sweeps whatever is left afterwards.
After a SIGKILL of the owner nothing can sweep: Flower's own ``--parent-pid`` monitors
then stop the detached processes, but only after 5-30 s, so ``find_processes`` and
``end_processes`` let the next ``start`` on that port clear them first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on ``host:port`` now (with SO_REUSEADDR, as uvicorn binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on (the kernel's choice; free when returned, not reserved)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def flower_exe(name: str) -> str:
    """A Flower executable of THIS environment (beside our Python), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH: is flwr installed?")
    return found


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a Flower child: its state in ``home``, quiet, never installing packages.

    Our Python's folder goes first on PATH: Flower starts its helpers (flower-superexec,
    flwr-serverapp, flwr-clientapp) by name.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc; None when it is gone (or no /proc)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> list[tuple[int, int]]:
    """Every process below ``pid`` as (pid, start time), found through the parent links in /proc."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    try:
        entries = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    for child in entries:
        info = _stat(child)
        if info is not None:
            children.setdefault(info[0], []).append(child)
            starts[child] = info[1]
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append((child, starts[child]))
            todo.append(child)
    return found


def find_processes(names: tuple[str, ...], arg: str) -> list[tuple[int, int]]:
    """Live processes running one of the programs ``names`` with ``arg`` among their arguments (pid, start)."""
    found = []
    try:
        entries = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        info = _stat(int(entry))
        if info is not None and arg in argv and any(Path(a).name in names for a in argv[:2]):
            found.append((int(entry), info[1]))
    return found


def end_processes(procs: list[tuple[int, int]], patience: float) -> None:
    """Give processes ``patience`` seconds to exit by themselves, then SIGTERM, then SIGKILL."""
    for sig, wait in ((None, patience), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig is not None:
            for pid, start in procs:
                _signal_if_same(pid, start, sig)
        deadline = time.monotonic() + wait
        while procs and time.monotonic() < deadline:
            procs = [(pid, start) for pid, start in procs if _running(pid, start)]
            time.sleep(0.2)
        if not procs:
            return


def _signal_if_same(pid: int, start: int, sig: int) -> bool:
    """Send ``sig`` unless the process is gone or its pid now belongs to another process."""
    info = _stat(pid)
    if info is None or info[1] != start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
        return True
    return False


def stop_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop ``proc`` and everything below it: SIGTERM, ``grace`` seconds, then SIGKILL for the rest."""
    tree = descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    # Flower's own shutdown stops most of the tree; give it a moment, then make sure
    alive = [(pid, start) for pid, start in tree if _signal_if_same(pid, start, signal.SIGTERM)]
    deadline = time.monotonic() + min(grace, 5.0)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [(pid, start) for pid, start in alive if _running(pid, start)]
    for pid, start in alive:
        _signal_if_same(pid, start, signal.SIGKILL)


def _running(pid: int, start: int) -> bool:
    """The same process is still there and not a zombie (a zombie only waits for its parent to reap it)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0] != "Z" and int(fields[19]) == start


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so the ``finally`` that stops children runs.

    Only the first one interrupts: a second SIGTERM must not cut that clean-up short.
    """
    signals = (signal.SIGTERM, signal.SIGHUP)

    def handler(signum: int, _frame: object) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
