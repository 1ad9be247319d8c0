"""``liteheart-client start``: a SuperNode of this site, in the foreground, owned until it ends.

The node's data never leave it: ``--data`` is checked (and a raw WFDB folder prepared
once) here, before anything connects, and reaches the ClientApp through the node
config. The SuperNode's log is this command's log. On exit, Ctrl-C or SIGTERM the
SuperNode and everything it started (SuperExec, ClientApp processes) are stopped.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Annotated, Any

import tomli_w
import typer

from liteheart_core.cli.console import err, fail
from liteheart_core.cli.processes import (
    LOOPBACK,
    child_env,
    flower_exe,
    free_port,
    port_free,
    sigterm_as_interrupt,
    stop_tree,
)
from liteheart_core.cli.tls import check_node_key, load_cert

# How often the node's SuperExec asks for a ClientApp task (Flower's default is 1 s): a
# message waits for this before its ClientApp process starts.
TASK_POLL_INTERVAL_S = "0.5"

# What Flower 1.42's SuperNode prints when the SuperLink refuses it, and what it means here
REJECTIONS = {
    "[code: 2001]": "the server admits only registered nodes and this node has no key: add --key with the "
    "NAME.key the coordinating site gave you",
    "[code: 2004]": "the server refused this node's key: it is not registered there (the coordinating site puts "
    "NAME.pub in its --auth-keys folder and restarts `liteheart-server start`)",
    "CERTIFICATE_VERIFY_FAILED": "the server's TLS certificate failed the check against --tls: it was not issued by "
    "that CA, or does not name the host given in --server",
}


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


def check_security(tls: Path | None, key: Path | None) -> list[str]:
    """The SuperNode's TLS and authentication flags from ``--tls`` and ``--key``, checked before it starts."""
    if key is not None and tls is None:
        raise ValueError("--key needs --tls: Flower authenticates nodes only over TLS")
    if tls is None:
        return ["--insecure"]
    tls = tls.expanduser().resolve()
    load_cert(tls, "CA certificate (--tls)")
    flags = ["--root-certificates", str(tls)]
    if key is None:
        return flags
    key = key.expanduser().resolve()
    check_node_key(key)
    if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        err.print(
            f"[yellow]warning:[/] the node private key {key} can be read by other users of this machine "
            f"(chmod 600 {key})"
        )
    return [*flags, "--auth-supernode-private-key", str(key)]


def check_store(store: str) -> str:
    """A wearable's device store: it must exist and hold recordings it can train on (lead I)."""
    from client.store import RecordStore, StoreError, store_url

    if "://" not in store and not Path(store).expanduser().is_file():
        raise ValueError(f"store {store} does not exist (fill it with `liteheart-client ingest`)")
    url = store_url(store)
    try:
        with RecordStore(url) as opened:
            usable = len(opened.candidates(n_leads=1)) + len(opened.candidates(n_leads=12))
    except StoreError as exc:
        raise ValueError(f"store {store}: {exc}") from None
    if usable == 0:
        raise ValueError(f"store {store} holds no usable recording to train on")
    return url


def node_config(
    data: str | None,
    partition: tuple[int, int] | None,
    labelled_fraction: float | None,
    cache_dir: Path | None,
    kind: str = "paired",
    store: str | None = None,
) -> dict[str, Any]:
    """What ``client.app`` reads from the node config (see its docstring and ``client/local.py``)."""
    # persist-state: keep what the node carries between rounds on disk, so a resumed run continues it
    config: dict[str, Any] = {"client-kind": kind, "persist-state": True}
    if store is not None:
        config["store"] = store
    elif partition is None:
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
    data: Annotated[
        str | None,
        typer.Option(help="This site's ECGs: a PTB-XL/Challenge/prepared folder; with --partition-id also 'synth'."),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="paired (12-lead records, the teacher on site) or wearable (lead I only, never the teacher)."
        ),
    ] = "paired",
    store: Annotated[
        str | None,
        typer.Option(
            help="A wearable's device record store (path or URL, filled by `liteheart-client ingest`), instead of --data."
        ),
    ] = None,
    partition_id: Annotated[
        int | None, typer.Option(help="Use only this partition of --data (with --num-partitions).")
    ] = None,
    num_partitions: Annotated[int | None, typer.Option(help="Number of partitions --data is split into.")] = None,
    labelled_fraction: Annotated[
        float | None,
        typer.Option(
            help="Fraction of local training records whose labels are used (default: the run's labelled-fraction, sent by the server; 1 uses every label)."
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where the teacher is cached by content hash (default: $LITEHEART_CACHE/teachers)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of this node's Runtime API on 127.0.0.1 (default: a free one).")
    ] = None,
    tls: Annotated[
        Path | None,
        typer.Option(
            "--tls", help="The pilot's CA certificate (ca.crt): connect over TLS and check the server against it."
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="This node's private key (NAME.key, OpenSSH EC) for node authentication; needs --tls."
        ),
    ] = None,
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
        security = check_security(tls, key)
        if kind not in ("paired", "wearable"):
            raise ValueError(f"--kind must be paired or wearable, got {kind!r}")
        if (data is None) == (store is None):
            raise ValueError("give this node's records with exactly one of --data and --store")
        if store is not None and kind != "wearable":
            raise ValueError("--store is a wearable's device store: add --kind wearable (a 12-lead site gives --data)")
        if store is not None and partition is not None:
            raise ValueError("--partition-id splits --data; a store is this device's own records")
        folder = node_data(data, partition is not None) if data is not None else None
        store_url = check_store(store) if store is not None else None
        exe = flower_exe("flower-supernode")
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    port = port or free_port()
    cache = cache_dir.expanduser().resolve() if cache_dir else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="liteheart-node-"))  # Flower's per-node state: apps, config
    config_file = home / "node-config.toml"  # a file, so paths with spaces or quotes survive
    config_file.write_text(tomli_w.dumps(node_config(folder, partition, labelled_fraction, cache, kind, store_url)))
    where = (
        f"store {store}" if store else f"partition {partition[0]}/{partition[1]} of {folder}" if partition else folder
    )
    err.print(
        f"[bold]LiteHeart client[/] ({kind}): data {where}; connecting to {server} (runtime API on {LOOPBACK}:{port})"
    )
    if tls is None:
        err.print(
            "[yellow]warning:[/] plaintext connection without node authentication: for trials on this "
            "machine, not for real networks (see --tls and --key)"
        )
    code, rejected = run_supernode(
        [
            exe,
            *security,
            "--superlink",
            server,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--node-config",
            str(config_file),
        ],
        home,
    )
    if rejected:
        fail(rejected, code=1)
    if code not in (0, 130):
        fail(f"the SuperNode exited with code {code} (see its log above)", code=1)
    raise typer.Exit(code)


def check_partition(partition_id: int | None, num_partitions: int | None) -> tuple[int, int] | None:
    if (partition_id is None) != (num_partitions is None):
        raise ValueError("--partition-id and --num-partitions go together")
    if partition_id is None or num_partitions is None:
        return None
    if num_partitions < 1 or not 0 <= partition_id < num_partitions:
        raise ValueError(f"--partition-id {partition_id} is outside 0..{num_partitions - 1}")
    return partition_id, num_partitions


def _relay(stream: IO[bytes], rejected: list[str]) -> None:
    """Copy the SuperNode's output to ours; note the first refusal by the SuperLink."""
    for line in stream:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        text = line.decode(errors="replace")
        if not rejected:
            rejected.extend(why for code, why in REJECTIONS.items() if code in text)


def run_supernode(cmd: list[str], home: Path) -> tuple[int, str]:
    """Run the SuperNode until it ends or we are stopped; its whole tree goes with us.

    Returns the exit code and, when the SuperLink refused the node, why (else '').
    """
    node: subprocess.Popen | None = None
    rejected: list[str] = []
    with sigterm_as_interrupt():
        try:
            # the SuperNode's log is this command's log, relayed line by line to spot a refusal
            node = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_env(home, {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": TASK_POLL_INTERVAL_S}),
            )
            relay = threading.Thread(target=_relay, args=(node.stdout, rejected), daemon=True)
            relay.start()
            code = node.wait()
            relay.join(timeout=5.0)  # its SuperExec may hold the pipe a little longer
            return code, rejected[0] if rejected else ""
        except KeyboardInterrupt:
            err.print("[yellow]interrupted:[/] stopping the SuperNode")
            return 130, rejected[0] if rejected else ""
        finally:
            if node is not None:
                stop_tree(node)
            shutil.rmtree(home, ignore_errors=True)
