"""``liteheart-client start``: a SuperNode of this site, in the foreground, owned until it ends.

The node's data never leave it: ``--data`` is checked (and a raw WFDB folder prepared
once) here, before anything connects, and reaches the ClientApp through the node
config. The SuperNode's log is this command's log. On exit, Ctrl-C or SIGTERM the
SuperNode and everything it started (SuperExec, ClientApp processes) are stopped.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import tomli_w
import typer

from simulations.data_cmd import err, fail
from simulations.processes import (
    LOOPBACK,
    flower_env,
    flower_exe,
    free_port,
    port_free,
    sigterm_as_interrupt,
    stop_tree,
)

# How often the node's SuperExec asks for a ClientApp task (Flower's default is 1 s): a
# message waits for this before its ClientApp process starts.
TASK_POLL_INTERVAL_S = "0.5"


def parse_server(server: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) into its parts, with a clear error."""
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--server {server!r}: expected HOST:PORT, e.g. {LOOPBACK}:9092")
    return host, int(port)


def node_data(data: str, partitioned: bool) -> str:
    """The folder the ClientApp will read: a prepared dataset (a raw folder is prepared here, once)."""
    from liteheart_core.data.dataset import resolve_data
    from liteheart_core.data.prepare import PreparationError
    from liteheart_core.data.ptbxl import LayoutError

    if data == "synth":
        if not partitioned:
            raise ValueError("--data synth needs --partition-id and --num-partitions (a share of the synthetic set)")
        return data
    path = Path(data).expanduser()
    if not path.exists():
        raise ValueError(f"data folder {path} does not exist")
    if not (path / "meta.json").is_file():
        err.print(f"preparing {path} for training (once: the arrays are cached)")
    try:
        prepared = resolve_data(path)
    except (LayoutError, PreparationError, ValueError) as exc:
        raise ValueError(f"data folder {path}: {exc}") from None
    return str(prepared.root.resolve())


def node_config(data: str, partition: tuple[int, int] | None, labelled_fraction: float | None,
                cache_dir: Path | None) -> dict[str, Any]:
    """What ``client.app`` reads from the node config (see its docstring)."""
    config: dict[str, Any] = {}
    if partition is None:
        config["data-path"] = data
    else:
        config.update({"data": data, "partition-id": partition[0], "num-partitions": partition[1]})
    if labelled_fraction is not None:
        config["labelled-fraction"] = float(labelled_fraction)
    if cache_dir is not None:
        config["cache-dir"] = str(cache_dir)
    return config


def start_cmd(
    server: Annotated[str, typer.Option(help="The SuperLink's address, HOST:PORT (e.g. 127.0.0.1:9092).")],
    data: Annotated[str, typer.Option(help="This site's ECGs: a PTB-XL/Challenge/prepared folder; with --partition-id also 'synth'.")],
    partition_id: Annotated[Optional[int], typer.Option(help="Use only this partition of --data (with --num-partitions).")] = None,
    num_partitions: Annotated[Optional[int], typer.Option(help="Number of partitions --data is split into.")] = None,
    labelled_fraction: Annotated[Optional[float], typer.Option(help="Fraction of local training records whose labels are used (default: the server's).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where the teacher is cached by content hash (default: $LITEHEART_CACHE/teachers).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port of this node's Runtime API on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Join a federation: a SuperNode in the foreground that trains the student on this site's data."""
    try:
        parse_server(server)
        partition = check_partition(partition_id, num_partitions)
        if labelled_fraction is not None and not 0 <= labelled_fraction <= 1:
            raise ValueError(f"--labelled-fraction must be in [0, 1], got {labelled_fraction}")
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"--port must be in 1..65535, got {port}")
        if port is not None and not port_free(port):
            raise ValueError(f"port {port} is in use; choose another with --port")
        folder = node_data(data, partition is not None)
        exe = flower_exe("flower-supernode")
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    port = port or free_port()
    cache = cache_dir.expanduser().resolve() if cache_dir else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="liteheart-node-"))  # Flower's per-node state: apps, config
    config_file = home / "node-config.toml"  # a file, so paths with spaces or quotes survive
    config_file.write_text(tomli_w.dumps(node_config(folder, partition, labelled_fraction, cache)))
    where = f"partition {partition[0]}/{partition[1]} of {folder}" if partition else folder
    err.print(f"[bold]LiteHeart client[/]: data {where}; connecting to {server} (runtime API on {LOOPBACK}:{port})")
    code = run_supernode([exe, "--insecure", "--superlink", server, "--host", LOOPBACK, "--port", str(port),
                          "--node-config", str(config_file)], home)
    if code not in (0, 130):
        fail(f"the SuperNode exited with code {code} (see its log above)", code=1)
    raise typer.Exit(code)


def check_partition(partition_id: Optional[int], num_partitions: Optional[int]) -> tuple[int, int] | None:
    if (partition_id is None) != (num_partitions is None):
        raise ValueError("--partition-id and --num-partitions go together")
    if partition_id is None or num_partitions is None:
        return None
    if num_partitions < 1 or not 0 <= partition_id < num_partitions:
        raise ValueError(f"--partition-id {partition_id} is outside 0..{num_partitions - 1}")
    return partition_id, num_partitions


def run_supernode(cmd: list[str], home: Path) -> int:
    """Run the SuperNode until it ends or we are stopped; its whole tree goes with us. Returns the exit code."""
    node: subprocess.Popen | None = None
    with sigterm_as_interrupt():
        try:
            # the SuperNode writes straight to our stdout/stderr: its log is this command's log
            node = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=flower_env(
                home, {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": TASK_POLL_INTERVAL_S}))
            return node.wait()
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/] stopping the SuperNode")
            return 130
        finally:
            if node is not None:
                stop_tree(node)
            shutil.rmtree(home, ignore_errors=True)
