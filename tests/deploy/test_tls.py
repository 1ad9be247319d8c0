"""TLS and node authentication: `liteheart-server certs`, `start --tls/--auth-keys`, `client start --tls/--key`.

One pilot on 127.0.0.1 serves the process tests (the ``pilot`` fixture): a SuperLink
with TLS and node authentication behind its nginx front, one registered node that takes
part in one round through the public address, one node whose key is not registered, one
that connects in plaintext, one that trusts another CA, and a stranger who holds the
pilot's CA certificate (which every site gets) and uses Flower's own CLI against the
public address: list runs, register a key, submit an app of its own, stop the pilot's run.
The other tests check certificates, keys and every refusal without starting a process.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

from liteheart_core.cli import tls as tls_files
from liteheart_core.cli.processes import child_env, flower_exe, free_port
from server import certs
from tests.deploy.test_deploy import (
    LOOPBACK,
    RUN_LIMIT_S,
    Deployment,
    healthy,
    wait_for,
)
from tests.deploy.test_front import need_nginx

# the pilot fixture's bounded waits (a run of RUN_LIMIT_S plus start-up and refusals) come first
pytestmark = pytest.mark.timeout(RUN_LIMIT_S + 900)

# --- one TLS + authenticated pilot, shared -----------------------------------------------------


def tls_healthy(port: int, ca: Path) -> bool:
    """``GET /health`` over TLS, the server checked against the pilot's CA."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname=LOOPBACK) as sock,
        ):
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


def tls_status(port: int, ca: Path, method: str, path: str) -> int | None:
    """The HTTP status a TLS request line gets from 127.0.0.1:port (None: no answer)."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=LOOPBACK) as sock,
        ):
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/protobuf\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            head = sock.recv(64).split(b" ")
            return int(head[1]) if len(head) > 1 and head[1].isdigit() else None
    except (OSError, ssl.SSLError):
        return None


# what a stranger's app would do on the coordinator (its ServerApp) and on every site (its ClientApp)
STRANGER_APP = """
from pathlib import Path
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid, context):
    Path({marker!r}).write_text("the stranger's code ran on the coordinator")
"""
STRANGER_PROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "stranger-app"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "stranger"

[tool.flwr.app.components]
serverapp = "stranger_app:server"
clientapp = "stranger_app:client"

[tool.flwr.app.config]
"""


class Stranger:
    """Someone with the pilot's CA certificate and Flower's CLI, on a machine of their own (an FLWR_HOME)."""

    def __init__(self, root: Path, ca: Path, addresses: dict[str, str]) -> None:
        self.root, self.marker = root, root / "owned"
        self.app = root / "app"
        self.app.mkdir(parents=True)
        (self.app / "pyproject.toml").write_text(STRANGER_PROJECT)
        (self.app / "stranger_app.py").write_text(STRANGER_APP.format(marker=str(self.marker)))
        links = "".join(
            f'[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{ca}"\n\n'
            for name, address in addresses.items()
        )
        (root / "home").mkdir()
        (root / "home" / "config.toml").write_text(f'[superlink]\ndefault = "{next(iter(addresses))}"\n\n{links}')
        self.env = child_env(root / "home")

    def flwr(self, *args: object) -> dict:
        """One ``flwr ... --format json``: its exit code and JSON (``success`` false when there is none)."""
        done = subprocess.run(
            [flower_exe("flwr"), *map(str, args), "--format", "json"],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        text = done.stdout.strip()
        try:
            answer = json.loads(text[text.find("{") :]) if "{" in text else {}
        except json.JSONDecodeError:
            answer = {}
        return {
            "code": done.returncode,
            "success": bool(answer.get("success")),
            "answer": answer,
            "output": text + done.stderr,
        }


# (method, path) a stranger tries on the public address: the Control and Runtime APIs, Flower's API
# documentation, and Fleet-looking paths that a path normaliser would turn into Control paths
PROBES = (
    ("POST", "/v1/control/list-runs"),
    ("POST", "/v1/control/register-node"),
    ("POST", "/v1/control/stop-run"),
    ("POST", "/v1/control/start-run"),
    ("POST", "/v1/runtime/acquire-task"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/fleet/../control/list-runs"),
    ("POST", "/v1/fleet/%2e%2e/control/list-runs"),
    ("POST", "//v1/control/list-runs"),
    ("POST", "/v1/fleet//../../v1/control/list-runs"),
    ("POST", "/v1/control/list-runs?x=/v1/fleet/get-run"),
    ("GET", "/v1/fleet/pull-messages"),
)


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory, synth_data, tiny_teacher: Path) -> Iterator[dict]:
    """A TLS server with node auth (1 round); a registered node, an unregistered, a plaintext and a foreign-CA one."""
    need_nginx()  # --tls puts nginx in front of the SuperLink
    root = tmp_path_factory.mktemp("tls-pilot")
    folder = root / "certs"
    certs.generate(folder, ["site-a"])
    certs.generate(root / "elsewhere", ["rogue"])  # a well-formed key the server never registered
    dep = Deployment(root / "pilot", synth_data.root, tiny_teacher, free_port())
    ca = folder / certs.CA_CERT
    try:
        server = dep._start(
            "server",
            "server.cli",
            [
                "--port",
                dep.port,
                "--run-dir",
                dep.run_dir,
                "--json",
                "--data",
                dep.data,
                "--rounds",
                1,
                "--local-epochs",
                1,
                "--teacher",
                dep.teacher,
                "--scenario",
                dep.scenario,
                "--min-clients",
                1,
                "--round-timeout",
                120,
                "--tls",
                folder,
                "--auth-keys",
                folder / certs.AUTH_KEYS,
            ],
        )
        wait_for("the SuperLink's /health over TLS", lambda: tls_healthy(dep.port, ca), 150, services=(server,))
        plaintext_health = healthy(dep.port)  # the same request without TLS
        # until the keys are registered every node is refused, the good one too
        wait_for("the node keys registered", lambda: "node authentication on" in server.text(), 60, (server,))
        # the stranger, before any site joins: list, register the rogue's key (the rogue tries right after),
        # submit an app; then the same list on the SuperLink's loopback address, which only this machine reaches
        link_port = json.loads((dep.run_dir / ".flwr" / f"link-{dep.port}.json").read_text())["link_port"]
        outsider = Stranger(
            root / "stranger", ca, {"pilot": f"{LOOPBACK}:{dep.port}", "inside": f"{LOOPBACK}:{link_port}"}
        )
        rogue_pub = root / "elsewhere" / certs.AUTH_KEYS / "rogue.pub"
        attempts = {
            "list": outsider.flwr("list", "pilot"),
            "register": outsider.flwr("supernode", "register", rogue_pub, "pilot"),
            "run": outsider.flwr("run", outsider.app, "pilot"),
            "inside-list": outsider.flwr("list", "inside"),
        }
        probes = {f"{method} {path}": tls_status(dep.port, ca, method, path) for method, path in PROBES}
        inside_docs = tls_status(link_port, ca, "GET", "/docs")
        common = ["--server", f"{LOOPBACK}:{dep.port}", "--data", dep.data, "--partition-id", 0, "--num-partitions", 1]
        good = dep._start(
            "site-a",
            "client.cli",
            [
                *common,
                "--cache-dir",
                dep.node_cache(0),
                "--tls",
                ca,
                "--key",
                folder / certs.SITES / "site-a" / "site-a.key",
            ],
        )
        rogue = dep._start(
            "rogue",
            "client.cli",
            [
                *common,
                "--cache-dir",
                dep.node_cache(1),
                "--tls",
                ca,
                "--key",
                root / "elsewhere" / certs.SITES / "rogue" / "rogue.key",
            ],
        )
        plain = dep._start("plain", "client.cli", [*common, "--cache-dir", dep.node_cache(2)])
        stranger = dep._start(
            "stranger",
            "client.cli",
            [*common, "--cache-dir", dep.node_cache(3), "--tls", root / "elsewhere" / certs.CA_CERT],
        )
        rogue_code, stranger_code = rogue.wait(120), stranger.wait(120)  # each exits as soon as it is refused
        submitted = wait_for(
            "the pilot's run submitted",
            lambda: re.search(r"submitted: Flower run (\d+)", server.text()),
            300,
            (server,),
        )
        attempts["stop"] = outsider.flwr("stop", submitted.group(1), "pilot")
        nodes_inside = outsider.flwr("supernode", "list", "inside")  # what the SuperLink holds, seen from inside
        wait_for(
            "the plaintext node's failed attempts",
            lambda: "Connection attempt failed" in plain.text(),
            120,
            services=(server, plain),
        )
        code = server.wait(RUN_LIMIT_S)
        plain_still_trying = plain.proc.poll() is None
        yield {
            "dep": dep,
            "code": code,
            "server": server,
            "good": good,
            "rogue": rogue,
            "rogue_code": rogue_code,
            "plain": plain,
            "plain_still_trying": plain_still_trying,
            "plaintext_health": plaintext_health,
            "stranger": stranger,
            "stranger_code": stranger_code,
            "outsider": outsider,
            "attempts": attempts,
            "probes": probes,
            "inside_docs": inside_docs,
            "link_port": link_port,
            "nodes_inside": nodes_inside,
        }
    finally:
        dep.close()


def node_id(log: str) -> str | None:
    found = re.search(r"SuperNode ID: (\d+)", log)
    return found.group(1) if found else None


def test_an_authenticated_tls_node_completes_a_round(pilot: dict) -> None:
    assert pilot["code"] == 0, pilot["server"].text()[-4000:]
    summary = json.loads(pilot["server"].out.read_text())
    shown = pilot["dep"].only_run()
    assert summary["status"] == shown["run"]["status"] == "completed"
    (entry,) = shown["rounds"]
    good = node_id(pilot["good"].text())
    assert good is not None and entry["participants"] == [good]
    assert [r["status"] for r in entry["client_reports"]] == ["ok"]
    server_log = pilot["server"].text()
    assert re.search(r"registered node key site-a \(SHA256:\S+\) as node \d+", server_log), server_log[-3000:]
    assert re.search(r"round +1/1: global macro F1", server_log)
    assert "Receiving: train message" in pilot["good"].text()


def test_a_stranger_with_the_ca_certificate_cannot_use_the_control_api(pilot: dict) -> None:
    attempts, dep = pilot["attempts"], pilot["dep"]
    access = (dep.run_dir / ".flwr" / f"front-{dep.port}" / "access.log").read_text()

    # the stranger's list works where the Control API really is (loopback, this machine only), so the
    # refusals below are the front's doing, not a broken command
    assert attempts["inside-list"]["success"], attempts["inside-list"]["output"][-2000:]
    for action in ("list", "register", "run", "stop"):
        # (flwr's --format json exits 0 and says success false)
        assert not attempts[action]["success"] and "403" in attempts[action]["output"], (action, attempts[action])
    for path in ("list-runs", "register-node", "start-run", "stop-run"):
        assert re.search(rf'"POST /v1/control/{path} HTTP/1.1" 403 ', access), (path, access[-3000:])
    assert not re.search(r'"\S+ /v1/control/\S* HTTP/1.1" (?!403)\d{3} ', access), access[-3000:]
    assert not pilot["outsider"].marker.exists()  # its ServerApp never ran
    # its key was not registered: the rogue that holds the private key was still refused, and the
    # SuperLink knows one node, site-a's
    assert pilot["rogue_code"] == 1
    nodes = pilot["nodes_inside"]["answer"].get("nodes", [])
    assert pilot["nodes_inside"]["success"] and [str(n.get("node-id")) for n in nodes] == [
        node_id(pilot["good"].text())
    ], pilot["nodes_inside"]
    # and the pilot's run it tried to stop completed
    assert pilot["code"] == 0 and pilot["dep"].only_run()["run"]["status"] == "completed"


def test_the_public_address_answers_the_fleet_api_and_health_only(pilot: dict) -> None:
    refused = {probe: status for probe, status in pilot["probes"].items() if status != 403}

    assert not refused, refused
    assert pilot["inside_docs"] == 200  # the SuperLink serves them on loopback: the front is what refuses
    assert pilot["link_port"] != pilot["dep"].port
    # the registered site took part through the public address (test_an_authenticated_tls_node_completes_a_round)
    access = (pilot["dep"].run_dir / ".flwr" / f"front-{pilot['dep'].port}" / "access.log").read_text()
    assert re.search(r'"POST /v1/fleet/push-messages HTTP/1.1" 200 ', access)


def test_a_node_whose_key_is_not_registered_is_rejected(pilot: dict) -> None:
    log = pilot["rogue"].text()

    assert pilot["rogue_code"] == 1, log[-3000:]
    assert "the server refused this node's key: it is not registered there" in log
    assert node_id(log) is None  # never admitted, so never sampled
    (entry,) = pilot["dep"].only_run()["rounds"]
    assert len(entry["client_reports"]) == 1


def test_a_plaintext_connection_to_the_tls_server_fails(pilot: dict) -> None:
    log = pilot["plain"].text()

    assert pilot["plaintext_health"] is False
    assert "plaintext connection without node authentication" in log
    assert "Connection attempt failed" in log and node_id(log) is None
    assert pilot["plain_still_trying"]  # it kept retrying and never joined the round


def test_a_node_that_does_not_trust_the_server_certificate_stops(pilot: dict) -> None:
    log = pilot["stranger"].text()

    assert pilot["stranger_code"] == 1, log[-3000:]
    assert "the server's TLS certificate failed the check against --tls" in " ".join(log.split())
    assert node_id(log) is None


# --- certificates and keys ----------------------------------------------------------------------


def test_certs_make_a_pilot_folder_flower_can_use(tmp_path: Path) -> None:
    from server.cli import app

    result = CliRunner().invoke(
        app,
        [
            "certs",
            "--out",
            str(tmp_path / "c"),
            "--nodes",
            "2",
            "--node",
            "hospital-a",
            "--hostname",
            "ecg.example.org",
            "--hostname",
            "192.0.2.7",
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    folder = tmp_path / "c"
    assert json.loads((folder / certs.MANIFEST).read_text())["nodes"] == manifest["nodes"]
    assert [n["name"] for n in manifest["nodes"]] == ["hospital-a", "node-1", "node-2"]
    tls = tls_files.check_server_tls(folder)
    assert set(tls.names) == {"127.0.0.1", "localhost", "ecg.example.org", "192.0.2.7"}
    for private in (folder / certs.CA_KEY, folder / certs.SERVER_KEY, *folder.glob("sites/*/*.key")):
        assert private.stat().st_mode & 0o777 == 0o600, private
    for entry in manifest["nodes"]:
        key = tls_files.check_node_key(folder / entry["private_key"])
        public = tls_files.load_public_key(folder / entry["public_key"])
        assert tls_files.fingerprint(key.public_key()) == tls_files.fingerprint(public) == entry["fingerprint"]
        assert isinstance(public.curve, ec.SECP384R1)
        assert (folder / entry["site_folder"] / certs.CA_CERT).read_bytes() == (folder / certs.CA_CERT).read_bytes()
    assert len(tls_files.auth_public_keys(folder / certs.AUTH_KEYS)) == 3


def test_certs_add_a_site_without_touching_the_others_and_overwrite_only_with_force(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    certs.generate(folder, ["a"])
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != certs.MANIFEST}

    certs.generate(folder, ["b"])  # a new site later
    with pytest.raises(certs.CertError, match=r"node key\(s\) already in .*: a; .*--force"):
        certs.generate(folder, ["a"])
    with pytest.raises(certs.CertError, match="lacks host name"):
        certs.generate(folder, [], hostnames=("new.example.org",))
    unchanged = all(p.read_bytes() == data for p, data in before.items())
    certs.generate(folder, ["a"], hostnames=("new.example.org",), force=True)
    certs.generate(folder, [], force=True)  # a renewal keeps the names

    assert unchanged
    assert (folder / "sites" / "a" / "a.key").read_bytes() != before[folder / "sites" / "a" / "a.key"]
    assert (folder / certs.CA_CERT).read_bytes() == before[folder / certs.CA_CERT]  # the sites' CA stays valid
    assert "new.example.org" in tls_files.check_server_tls(folder).names
    assert [n["name"] for n in json.loads((folder / certs.MANIFEST).read_text())["nodes"]] == ["a", "b"]


def test_certs_refuse_bad_names_and_days(tmp_path: Path) -> None:
    from server.cli import app

    runner = CliRunner()
    bad_name = runner.invoke(app, ["certs", "--out", str(tmp_path / "c"), "--node", "../etc"])
    twice = runner.invoke(app, ["certs", "--out", str(tmp_path / "c"), "--nodes", "1", "--node", "node-1"])
    days = runner.invoke(app, ["certs", "--out", str(tmp_path / "c"), "--nodes", "1", "--days", "0"])
    too_long = runner.invoke(app, ["certs", "--out", str(tmp_path / "c"), "--nodes", "1", "--days", "5000"])

    assert bad_name.exit_code == 2 and "node name '../etc'" in bad_name.output
    assert twice.exit_code == 2 and "given twice: node-1" in twice.output
    assert days.exit_code == 2 and "--days must be at least 1" in days.output
    assert too_long.exit_code == 2 and "would outlive the CA" in too_long.output
    assert not (tmp_path / "c").exists()  # every check comes before the first write


# --- refusals before anything starts --------------------------------------------------------------


@pytest.fixture(scope="module")
def two_pilots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tls-folders")
    certs.generate(root / "one", ["a"])
    certs.generate(root / "two", ["b"])
    return root / "one", root / "two"


def broken_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_server_start_refuses_bad_tls_and_auth_settings(
    tmp_path: Path, two_pilots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.cli import app

    one, two = two_pilots
    no_key = broken_copy(one, tmp_path / "no-key")
    (no_key / certs.SERVER_KEY).unlink()
    dir_key = broken_copy(one, tmp_path / "dir-key")
    (dir_key / certs.SERVER_KEY).unlink()
    (dir_key / certs.SERVER_KEY).mkdir()
    garbage = broken_copy(one, tmp_path / "garbage")
    (garbage / certs.SERVER_KEY).write_text("not a key\n")
    mismatch = broken_copy(one, tmp_path / "mismatch")
    shutil.copy(two / certs.SERVER_KEY, mismatch / certs.SERVER_KEY)
    foreign = broken_copy(one, tmp_path / "foreign")
    shutil.copy(two / certs.CA_CERT, foreign / certs.CA_CERT)
    empty = tmp_path / "no-pubs"
    empty.mkdir()
    runner = CliRunner()
    base = [
        "start",
        "--data",
        "synth",
        "--rounds",
        "1",
        "--min-clients",
        "1",
        "--run-dir",
        str(tmp_path / "runs"),
        "--port",
        str(free_port()),
    ]

    def start(*args: object) -> tuple[int, str]:
        result = runner.invoke(app, [*base, *map(str, args)])
        return result.exit_code, " ".join(result.output.split())  # rich wraps long lines

    outcomes = {
        "auth without tls": start("--auth-keys", one / certs.AUTH_KEYS),
        "no folder": start("--tls", tmp_path / "nowhere"),
        "missing key": start("--tls", no_key),
        "key is a folder": start("--tls", dir_key),
        "garbage key": start("--tls", garbage),
        "mismatch": start("--tls", mismatch),
        "foreign ca": start("--tls", foreign),
        "no pubs": start("--tls", one, "--auth-keys", empty),
    }
    monkeypatch.setattr(tls_files, "now_utc", lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=400))
    outcomes["expired"] = start("--tls", one)

    expected = {
        "auth without tls": "--auth-keys needs --tls",
        "no folder": f"--tls {tmp_path / 'nowhere'} is not a folder",
        "missing key": f"server private key {no_key / certs.SERVER_KEY} does not exist",
        "key is a folder": f"server private key {dir_key / certs.SERVER_KEY} is not a file",
        "garbage key": f"server private key {garbage / certs.SERVER_KEY} is not a PEM private key",
        "mismatch": f"server certificate {mismatch / certs.SERVER_CERT} does not match its private key",
        "foreign ca": f"server certificate {foreign / certs.SERVER_CERT} was not issued by the CA",
        "no pubs": "holds no .pub files",
        "expired": f"server certificate {one / certs.SERVER_CERT} expired on",
    }
    for case, (code, output) in outcomes.items():
        assert code == 2 and expected[case] in output and "Traceback" not in output, (case, output)
    assert not (tmp_path / "runs" / ".flwr").exists()  # nothing was started


def passphrase_protected(key: ec.EllipticCurvePrivateKey) -> bytes:
    """An OpenSSH key whose header says aes256-ctr + bcrypt, as `ssh-keygen -N ...` writes (bcrypt not needed).

    Only the header matters: a reader without the passphrase stops there.
    """
    body = base64.b64decode(
        b"".join(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ).splitlines()[1:-1]
        )
    )
    magic = b"openssh-key-v1\0"
    rest = body[len(magic) + 3 * 4 + len(b"none") * 2 :]  # after cipher 'none', kdf 'none', empty kdf options

    def field(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    header = field(b"aes256-ctr") + field(b"bcrypt") + field(field(bytes(16)) + struct.pack(">I", 16))
    return (
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
        + base64.encodebytes(magic + header + rest)
        + b"-----END OPENSSH PRIVATE KEY-----\n"
    )


def test_client_start_refuses_bad_tls_and_key_settings(tmp_path: Path, two_pilots: tuple[Path, Path]) -> None:
    from client.cli import app

    one, _two = two_pilots
    ca, good_key = one / certs.CA_CERT, one / "sites" / "a" / "a.key"
    pem_key = one / certs.SERVER_KEY  # a PEM key, not OpenSSH
    ed_key = tmp_path / "ed.key"
    ed_key.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    locked = tmp_path / "locked.key"
    locked.write_bytes(passphrase_protected(ec.generate_private_key(ec.SECP384R1())))
    runner = CliRunner()
    base = ["start", "--server", f"{LOOPBACK}:9", "--data", "synth", "--partition-id", "0", "--num-partitions", "1"]

    def start(*args: object) -> tuple[int, str]:
        result = runner.invoke(app, [*base, *map(str, args)])
        return result.exit_code, " ".join(result.output.split())

    outcomes = {
        "key without tls": start("--key", good_key),
        "missing ca": start("--tls", tmp_path / "ca.crt", "--key", good_key),
        "ca not a cert": start("--tls", good_key, "--key", good_key),
        "missing key": start("--tls", ca, "--key", tmp_path / "none.key"),
        "pem key": start("--tls", ca, "--key", pem_key),
        "ed25519 key": start("--tls", ca, "--key", ed_key),
        "encrypted key": start("--tls", ca, "--key", locked),
    }

    expected = {
        "key without tls": "--key needs --tls",
        "missing ca": f"CA certificate (--tls) {tmp_path / 'ca.crt'} does not exist",
        "ca not a cert": f"CA certificate (--tls) {good_key} is not a PEM certificate",
        "missing key": f"node private key {tmp_path / 'none.key'} does not exist",
        "pem key": f"node private key {pem_key} is not an OpenSSH private key",
        "ed25519 key": "expected an EC (ECDSA) key",
        "encrypted key": "protected by a passphrase",
    }
    for case, (code, output) in outcomes.items():
        assert code == 2 and expected[case] in output and "Traceback" not in output, (case, output)


def test_the_flwr_connection_uses_the_pilot_ca(tmp_path: Path, two_pilots: tuple[Path, Path]) -> None:
    import tomllib

    from server.bundle import write_connection
    from server.plan import check_security
    from server.superlink import Deployment as ServerDeployment
    from server.superlink import superlink_security

    one, _ = two_pilots
    tls, keys = check_security(one, one / certs.AUTH_KEYS, LOOPBACK)
    dep = ServerDeployment(run_dir=tmp_path, port=9092, tls=tls, auth_keys=keys)

    write_connection(dep)

    link = tomllib.loads((tmp_path / ".flwr" / "config.toml").read_text())["superlink"]["liteheart-9092"]
    assert link == {"address": "127.0.0.1:9092", "root-certificates": str(one.resolve() / certs.CA_CERT)}
    flags = superlink_security(dep)
    assert "--insecure" not in flags and "--enable-supernode-auth" in flags
    assert flags[flags.index("--ssl-keyfile") + 1] == str(one.resolve() / certs.SERVER_KEY)
    assert superlink_security(ServerDeployment(run_dir=tmp_path, port=9092)) == ["--insecure"]


def test_a_key_taken_out_of_auth_keys_is_unregistered_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.superlink as deploy  # the SuperLink's side of `start`

    folder = tmp_path / "c"
    certs.generate(folder, ["a", "b"])
    calls: list[tuple[str, ...]] = []
    registered: dict[str, str] = {}

    def fake_flwr(dep, env, *args: str) -> dict:  # what the Control API answers, without a SuperLink
        calls.append(args)
        if args[:2] == ("supernode", "register"):
            if args[2] in registered:
                raise deploy.DeployError("`flwr supernode register` failed: [code: 23] Public key already in use.")
            registered[args[2]] = str(100 + len(registered))
            return {"success": True, "node-id": int(registered[args[2]])}
        return {"success": True}

    monkeypatch.setattr(deploy, "flwr_json", fake_flwr)
    tls = tls_files.check_server_tls(folder)
    auth = folder / certs.AUTH_KEYS

    deploy.register_node_keys(
        deploy.Deployment(tmp_path, 9092, tls=tls, auth_keys=tuple(tls_files.auth_public_keys(auth))), {}
    )
    (auth / "b.pub").unlink()
    calls.clear()
    deploy.register_node_keys(
        deploy.Deployment(tmp_path, 9092, tls=tls, auth_keys=tuple(tls_files.auth_public_keys(auth))), {}
    )

    b_id = registered[str((auth / "b.pub").resolve())]
    assert ("supernode", "unregister", b_id, "liteheart-9092") in calls
    assert [c[2] for c in calls if c[1] == "register"] == [str((auth / "a.pub").resolve())]
    kept = json.loads((tmp_path / ".flwr" / "node-keys-9092.json").read_text())
    assert [entry["name"] for entry in kept.values()] == ["a"]


def test_the_app_bundle_every_site_receives_holds_no_server_path(pilot: dict) -> None:
    import tomllib

    dep = pilot["dep"]
    bundle = (dep.run_dir / "fab" / "pyproject.toml").read_text()  # what `flwr run` packed and sites download
    settings = json.loads((dep.run_dir / ".flwr" / f"server-settings-{dep.port}.json").read_text())

    config = tomllib.loads(bundle)["tool"]["flwr"]["app"]["config"]
    assert pilot["code"] == 0  # the ServerApp found its data, teacher and registry without them
    assert not {"data", "teacher", "run-dir", "db-url"} & set(config)
    for secret in (
        str(dep.run_dir),
        str(Path(dep.data).resolve()),
        str(Path(dep.teacher).resolve()),
        Path(dep.teacher).name,
        "registry.sqlite",
    ):
        assert secret not in bundle, secret
    assert settings["data"] == str(Path(dep.data).resolve()) and settings["run-id"] == config["run-id"]
