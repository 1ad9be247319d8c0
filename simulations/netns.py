"""Test hosts on this machine: Linux network namespaces joined by veth pairs to a bridge.

The fault suite (``tests/faults``) and the soak (``python -m simulations.soak``) place the
SuperLink and each SuperNode on a host of their own, so that a link can be cut, restored
or impaired without touching anything else. Everything lives in namespaces named
``lh<pid>-<tag>-...``: the bridge sits in a switch namespace of its own, each host holds
one end of a veth pair (``eth0``, an address in the testbed's own 10.x.y.0/24) and the
bridge the other, so nothing is created in the machine's own namespace and its interfaces
and routes are never touched. Only loopback and these namespaces are ever addressed.

``close()`` deletes what a testbed created (it also runs at exit), and ``sweep_stale()``
deletes the namespaces of earlier sessions whose process is gone (a SIGKILLed pytest).

``tc netem`` gives delay and random loss where the kernel has it (``sch_netem``). Some
kernels lack it (this Firecracker VM does: only htb and tbf are built in); there
``impair`` falls back to a tbf shaper — a slow link with a short queue, hence queueing
delay and tail drops — and says so in what it returns, so results name what was applied.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

PREFIX = "lh"
IP_TIMEOUT_S = 15.0
TBF_FALLBACK = "rate 2mbit burst 10kb limit 20kb"  # ~80 ms of queue at 2 Mbit/s, then tail drops
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be created here (no ``ip``, no CAP_NET_ADMIN, ...); the message says why."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=IP_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def namespaces() -> list[str]:
    done = _run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Delete ``lh<pid>-...`` namespaces whose creating process is gone; returns their names."""
    gone = []
    for name in namespaces():
        match = re.fullmatch(rf"{PREFIX}(\d+)-.*", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _run("ip", "netns", "del", name, check=False)
            gone.append(name)
    return gone


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when a probe namespace was created and deleted."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the `ip` and `tc` programs (iproute2) are not installed"
    probe = f"{PREFIX}{os.getpid()}-probe"
    done = _run("ip", "netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace (needs root or CAP_NET_ADMIN): {done.stderr.strip()}"
    try:
        link = _run("ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False)
        if link.returncode != 0:
            return f"cannot create a veth pair inside a namespace: {link.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One test host: its namespace, its address on the bridge, and the bridge's port facing it."""

    name: str
    netns: str
    address: str
    port: str  # the veth end in the switch namespace: cutting it unplugs the host

    def argv(self, cmd: list[str]) -> list[str]:
        """``cmd`` run inside this host."""
        return ["ip", "netns", "exec", self.netns, *cmd]


class Testbed:
    """A switch namespace with a bridge and up to 250 hosts on a /24 of its own; ``close`` removes all of it."""

    def __init__(self, tag: str) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,8}", tag):
            raise ValueError(f"testbed tag {tag!r}: 1-8 lowercase letters or digits")
        self.prefix = f"{PREFIX}{os.getpid()}-{tag}"
        # a private /24 per testbed, seen only inside its namespaces; distinct across testbeds because
        # `start` finds a crashed SuperLink's leftovers by address in any process's arguments
        digest = zlib.crc32(self.prefix.encode())
        self.subnet = f"10.{100 + digest % 128}.{(digest >> 8) % 256}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._netem: bool | None = None
        self._closed = False
        self._lock = threading.Lock()  # sites add hosts from their own threads
        atexit.register(self.close)
        _run("ip", "netns", "add", self.switch)
        try:
            _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        except Exception:
            self.close()
            raise

    def add_host(self, name: str) -> Host:
        with self._lock:
            if not re.fullmatch(r"[a-z0-9]{1,10}", name) or name in self.hosts:
                raise ValueError(f"host name {name!r}: 1-10 lowercase letters or digits, unique")
            index = len(self.hosts) + 1
            if index > 250:
                raise ValueError("a testbed holds at most 250 hosts")
            host = Host(name, f"{self.prefix}-{name}", f"{self.subnet}.{index}", f"p{index}")
            _run("ip", "netns", "add", host.netns)
            self.hosts[name] = host
        # both ends are created where they live: nothing passes through the machine's own namespace
        _run(
            "ip",
            "-n",
            self.switch,
            "link",
            "add",
            host.port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.netns,
        )
        _run("ip", "-n", self.switch, "link", "set", host.port, "master", "br0")
        _run("ip", "-n", self.switch, "link", "set", host.port, "up")
        _run("ip", "-n", host.netns, "link", "set", "lo", "up")  # the SuperNode's Runtime API is on loopback
        _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        return host

    # --- faults -----------------------------------------------------------------------------

    def cut(self, host: Host) -> None:
        """Unplug the host: its switch port goes down, so nothing passes either way."""
        _run("ip", "-n", self.switch, "link", "set", host.port, "down")

    def restore(self, host: Host) -> None:
        _run("ip", "-n", self.switch, "link", "set", host.port, "up")

    def has_netem(self) -> bool:
        """Whether this kernel has ``sch_netem`` (tried once on a bridge port of no host)."""
        if self._netem is None:
            _run("ip", "-n", self.switch, "link", "add", "nq0", "type", "veth", "peer", "name", "nq1")
            try:
                done = _run(
                    "tc", "-n", self.switch, "qdisc", "add", "dev", "nq0", "root", "netem", "delay", "1ms", check=False
                )
                self._netem = done.returncode == 0
            finally:
                _run("ip", "-n", self.switch, "link", "del", "nq0", check=False)
        return self._netem

    def impair(self, host: Host, delay_ms: int, jitter_ms: int, loss_pct: float) -> str:
        """Delay and loss on the host's link, both directions; returns what was applied (tc's words)."""
        if self.has_netem():
            spec = f"netem delay {delay_ms}ms {jitter_ms}ms loss {loss_pct:g}%"
        else:
            spec = f"tbf {TBF_FALLBACK}"
        for netns, dev in ((host.netns, "eth0"), (self.switch, host.port)):
            _run("tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", *spec.split())
        return spec

    def clear(self, host: Host) -> None:
        for netns, dev in ((host.netns, "eth0"), (self.switch, host.port)):
            _run("tc", "-n", netns, "qdisc", "del", "dev", dev, "root", check=False)

    def link_stats(self, host: Host) -> dict[str, int]:
        """Packets sent and dropped by the root qdiscs of the host's link (both directions summed)."""
        total = {"sent_packets": 0, "sent_bytes": 0, "dropped": 0}
        for netns, dev in ((host.netns, "eth0"), (self.switch, host.port)):
            text = _run("tc", "-s", "-n", netns, "qdisc", "show", "dev", dev, "root", check=False).stdout
            match = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+)", text)
            if match:
                total["sent_bytes"] += int(match.group(1))
                total["sent_packets"] += int(match.group(2))
                total["dropped"] += int(match.group(3))
        return total

    # --- clean-up ---------------------------------------------------------------------------

    def close(self) -> None:
        """Delete every namespace of this testbed (the veths and the bridge go with them)."""
        if self._closed:
            return
        self._closed = True
        self.kill_inside()
        for host in self.hosts.values():
            _run("ip", "netns", "del", host.netns, check=False)
        _run("ip", "netns", "del", self.switch, check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def kill_inside(self) -> list[int]:
        """SIGKILL every process still running in this testbed's namespaces (only we start any there)."""
        killed = []
        for netns in [h.netns for h in self.hosts.values()] + [self.switch]:
            for pid in _run("ip", "netns", "pids", netns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
        return killed

    def leftovers(self) -> list[str]:
        return [name for name in namespaces() if name.startswith(f"{self.prefix}-")]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without proxies (a proxy cannot reach the namespaces), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update({"PYTHONUNBUFFERED": "1", **(extra or {})})
    return env


class Service:
    """One command in a process group of its own (optionally inside a host); output in log files."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path, host: Host | None = None) -> None:
        self.name, self.host = name, host
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen(
                host.argv(argv) if host else argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        self.pgid = self.proc.pid  # `ip netns exec` execs the command: same pid, same group

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the command (ours stop their children), then SIGKILL to whatever is left of the group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        self.kill_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def wait_until(check, timeout: float, every: float = 0.5):
    """``check()`` until it returns something true (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    return None
