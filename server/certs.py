"""``liteheart-server certs``: the certificates and node keys of a pilot (``liteheart_core/cli/tls.py`` reads them back).

One folder holds everything the coordinating site makes::

    ca.crt, ca.key          the pilot's own certificate authority (ca.key never leaves this machine)
    server.crt, server.key  the SuperLink's TLS certificate (SAN 127.0.0.1, localhost, --hostname ...)
    auth-keys/NAME.pub      each node's public key: what `liteheart-server start --auth-keys` registers
    sites/NAME/             what to copy to site NAME: ca.crt and NAME.key (its private key)
    manifest.json           what was written, with fingerprints and expiry dates

Node keys are EC P-384 in OpenSSH format, the form Flower 1.42 reads for SuperNode
authentication (``flwr supernode register`` takes the ``.pub``, ``flower-supernode
--auth-supernode-private-key`` the private key). Private keys are written mode 0600,
through a temporary file, so an interrupted run leaves no half-written key.

The checks that read these files back before a ``start`` live in ``liteheart_core/cli/tls.py``:
a site's node code uses them too, and must not depend on the server's package.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from liteheart_core.cli.console import err, fail
from liteheart_core.cli.console import out as console
from liteheart_core.cli.tls import (  # the reading half, which a site's `start` uses too
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CertError,
    check_server_tls,
    fingerprint,
    load_cert,
    load_pem_key,
    load_public_key,
    now_utc,
    same_key,
    san_names,
)

AUTH_KEYS, SITES, MANIFEST = "auth-keys", "sites", "manifest.json"
CA_DAYS = 3650  # the CA outlives many server certificates: a new server certificate needs no new files at the sites
DEFAULT_DAYS = 365
LOOPBACK_NAMES = ("127.0.0.1", "localhost")  # the SuperExec and the flwr CLI reach the SuperLink on loopback
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURVE = ec.SECP384R1  # a NIST curve, as `flwr supernode register` demands


# --- making -------------------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LiteHeart pilot"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(days: int = CA_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(CURVE())
    now = now_utc()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("LiteHeart pilot CA"))
        .issuer_name(_name("LiteHeart pilot CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return cert, key


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_server_cert(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str], days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for ``names`` (IP addresses or DNS names), signed by the CA."""
    key = ec.generate_private_key(CURVE())
    now = now_utc()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return cert, key


def make_node_key() -> tuple[bytes, bytes]:
    """(OpenSSH private key, OpenSSH public key line) of a new node key."""
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public


def write_file(path: Path, data: bytes, private: bool) -> None:
    """Write through a temporary file in the same folder; a private file is 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def node_names(nodes: int | None, names: list[str]) -> list[str]:
    """``--nodes N`` (node-1..node-N) and ``--node NAME`` together, checked: file-safe and distinct."""
    if nodes is not None and nodes < 0:
        raise CertError(f"--nodes must be 0 or more, got {nodes}")
    wanted = [f"node-{i}" for i in range(1, (nodes or 0) + 1)] + list(names)
    for name in wanted:
        if not NAME_RE.match(name):
            raise CertError(
                f"node name {name!r}: use letters, digits, '-', '_' and '.' (at most 64, "
                "starting with a letter or digit)"
            )
    twice = sorted({n for n in wanted if wanted.count(n) > 1})
    if twice:
        raise CertError(f"node name(s) given twice: {', '.join(twice)}")
    return wanted


def _current_names(path: Path) -> list[str]:
    """The names of an existing server certificate, expired or not: a re-issued one keeps them."""
    try:
        return san_names(x509.load_pem_x509_certificate(path.read_bytes()))
    except (OSError, ValueError):
        return []


def _ca_from(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca = load_cert(folder / CA_CERT, "CA certificate")
    key = load_pem_key(folder / CA_KEY, "CA private key")
    if not same_key(ca.public_key(), key.public_key()):
        raise CertError(f"CA certificate {folder / CA_CERT} does not match its key {folder / CA_KEY}")
    return ca, key


def generate(
    out: Path, nodes: list[str], days: int = DEFAULT_DAYS, hostnames: tuple[str, ...] = (), force: bool = False
) -> dict[str, Any]:
    """Make (or extend) a pilot's folder; returns the manifest, also written to ``manifest.json``.

    An existing CA is reused, so that adding a site later leaves every other site's files
    valid. The server certificate is made when missing, and re-made (from the same CA)
    with ``force`` or when it lacks a requested host name. An existing node key is an
    error unless ``force``. Everything is checked and made in memory before the first write.
    """
    if days < 1:
        raise CertError(f"--days must be at least 1, got {days}")
    for name in hostnames:
        if not name or any(c.isspace() or c in "/:*" for c in name):
            raise CertError(f"--hostname {name!r} is not a host name or IP address")
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CertError(f"--out {out} exists and is not a folder")
    names = list(dict.fromkeys([*LOOPBACK_NAMES, *_current_names(out / SERVER_CERT), *hostnames]))
    have_ca = (out / CA_CERT).exists() or (out / CA_KEY).exists()
    if have_ca:
        ca, ca_key = _ca_from(out)
        made_ca = False
    else:
        ca, ca_key = make_ca()
        made_ca = True
    if now_utc() + dt.timedelta(days=days) > ca.not_valid_after_utc:
        raise CertError(
            f"--days {days}: the server certificate would outlive the CA {out / CA_CERT} "
            f"(valid until {ca.not_valid_after_utc:%Y-%m-%d})"
        )
    existing = [n for n in nodes if (out / SITES / n / f"{n}.key").exists() or (out / AUTH_KEYS / f"{n}.pub").exists()]
    if existing and not force:
        raise CertError(
            f"node key(s) already in {out}: {', '.join(existing)}; choose new names, or --force "
            "to replace them (the old keys then stop working)"
        )
    new_server = force or made_ca or not (out / SERVER_CERT).exists()
    if not new_server:
        try:
            current = check_server_tls(out)
        except CertError as exc:
            raise CertError(f"{exc}; re-issue it with --force") from None
        missing = [n for n in names if n not in current.names]
        if missing:
            raise CertError(
                f"server certificate {out / SERVER_CERT} lacks host name(s) {', '.join(missing)}; "
                "re-issue it with --force (the sites keep their files)"
            )
    node_keys = {name: make_node_key() for name in nodes}
    server = make_server_cert(ca, ca_key, names, days) if new_server else None

    if made_ca:
        write_file(out / CA_KEY, _pem_key(ca_key), private=True)
        write_file(out / CA_CERT, ca.public_bytes(serialization.Encoding.PEM), private=False)
    if server is not None:
        write_file(out / SERVER_KEY, _pem_key(server[1]), private=True)
        write_file(out / SERVER_CERT, server[0].public_bytes(serialization.Encoding.PEM), private=False)
    for name, (private, public) in node_keys.items():
        write_file(out / SITES / name / f"{name}.key", private, private=True)
        write_file(out / SITES / name / CA_CERT, ca.public_bytes(serialization.Encoding.PEM), private=False)
        write_file(out / AUTH_KEYS / f"{name}.pub", public + f" liteheart-{name}\n".encode(), private=False)
    manifest = _manifest(out, ca)
    manifest["written"] = sorted(
        ([CA_CERT, CA_KEY] if made_ca else [])
        + ([SERVER_CERT, SERVER_KEY] if server is not None else [])
        + [f"{SITES}/{n}/{n}.key" for n in nodes]
        + [f"{SITES}/{n}/{CA_CERT}" for n in nodes]
        + [f"{AUTH_KEYS}/{n}.pub" for n in nodes]
    )
    write_file(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), private=False)
    return manifest


def _manifest(out: Path, ca: x509.Certificate) -> dict[str, Any]:
    """What the folder holds now (all nodes, not only this call's)."""
    tls = check_server_tls(out)
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    nodes = []
    for pub in sorted((out / AUTH_KEYS).glob("*.pub")):
        name = pub.stem
        private = out / SITES / name / f"{name}.key"
        nodes.append(
            {
                "name": name,
                "public_key": str(pub.relative_to(out)),
                "private_key": str(private.relative_to(out)) if private.exists() else None,
                "site_folder": f"{SITES}/{name}",
                "fingerprint": fingerprint(load_public_key(pub)),
            }
        )
    return {
        "folder": str(out),
        "created_utc": now_utc().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ca": {
            "certificate": CA_CERT,
            "private_key": CA_KEY,
            "not_after": ca.not_valid_after_utc.isoformat(),
            "sha256": ca.fingerprint(hashes.SHA256()).hex(),
        },
        "server": {
            "certificate": SERVER_CERT,
            "private_key": SERVER_KEY,
            "names": list(tls.names),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        },
        "nodes": nodes,
    }


# --- the command --------------------------------------------------------------------------------


def certs_cmd(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for the CA, the server certificate and the node keys (created; an existing CA in it is reused).",
        ),
    ],
    nodes: Annotated[int | None, typer.Option("--nodes", help="Make keys for N nodes named node-1 .. node-N.")] = None,
    node: Annotated[
        list[str] | None,
        typer.Option("--node", help="Make a key for a node of this name (repeatable), e.g. --node hospital-a."),
    ] = None,
    days: Annotated[int, typer.Option(help="Days the server certificate is valid (the CA: 10 years).")] = DEFAULT_DAYS,
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            help="A DNS name or IP address the sites use to reach the server (repeatable); 127.0.0.1 and localhost are always in.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace existing node keys of the names given and re-issue the server certificate (the CA is kept).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Make a pilot's TLS certificates and node authentication keys (see the README's deployment section)."""
    try:
        wanted = node_names(nodes, node or [])
        manifest = generate(out, wanted, days, tuple(hostname or ()), force)
    except CertError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}")
    if as_json:
        print(json.dumps(manifest, indent=2))
        return
    folder = Path(manifest["folder"])
    for name in manifest["written"]:
        console.print(f"wrote {folder / name}")
    console.print(
        f"server certificate for {', '.join(manifest['server']['names'])}, valid until "
        f"{manifest['server']['not_after'][:10]}; manifest {folder / MANIFEST}"
    )
    for entry in manifest["nodes"]:
        if f"{AUTH_KEYS}/{entry['name']}.pub" in manifest["written"]:
            console.print(
                f"node {entry['name']} ({entry['fingerprint']}): copy {folder / entry['site_folder']}/ to that site"
            )
    if not manifest["written"]:
        err.print("nothing new to write (give --node NAME to add a site)")
    err.print(f"[yellow]keep {folder / CA_KEY} and {folder / SERVER_KEY} on this machine only[/]")
