"""``liteheart-server certs``: the certificates and node keys of a pilot, and the checks that read them back.

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

The ``check_*`` functions validate what ``start`` is given before any process starts,
and raise ``CertError`` naming the file and the reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
AUTH_KEYS, SITES, MANIFEST = "auth-keys", "sites", "manifest.json"
CA_DAYS = 3650  # the CA outlives many server certificates: a new server certificate needs no new files at the sites
DEFAULT_DAYS = 365
LOOPBACK_NAMES = ("127.0.0.1", "localhost")  # the SuperExec and the flwr CLI reach the SuperLink on loopback
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURVE = ec.SECP384R1  # a NIST curve, as `flwr supernode register` demands


class CertError(ValueError):
    """A certificate or key cannot be made or used; the message names the file and the reason."""


# --- reading and checking ---------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    if not path.exists():
        raise CertError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CertError(f"{what} {path} is not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load_cert(path: Path, what: str = "certificate") -> x509.Certificate:
    """A PEM certificate that is valid now."""
    data = _read(path, what)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertError(f"{what} {path} is not a PEM certificate") from None
    now = _now()
    if cert.not_valid_after_utc <= now:
        raise CertError(f"{what} {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        raise CertError(f"{what} {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return cert


def load_pem_key(path: Path, what: str) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM EC private key (the TLS keys)."""
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertError(f"{what} {path} is encrypted; the SuperLink needs it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertError(f"{what} {path} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{what} {path} is a {type(key).__name__}, expected an EC private key")
    return key


def check_node_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A node's private key as Flower's SuperNode reads it: OpenSSH format, EC, unencrypted."""
    data = _read(path, "node private key")
    if b"OPENSSH PRIVATE KEY" not in data:
        raise CertError(f"node private key {path} is not an OpenSSH private key "
                        "(expected '-----BEGIN OPENSSH PRIVATE KEY-----'; make one with `liteheart-server certs`)")
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        raise CertError(f"node private key {path} is protected by a passphrase; Flower cannot read it") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertError(f"node private key {path} cannot be parsed: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"node private key {path} is a {type(key).__name__}, expected an EC (ECDSA) key")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A node's OpenSSH public key, EC on a NIST curve (what ``flwr supernode register`` accepts)."""
    data = _read(path, "node public key")
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, UnsupportedAlgorithm):
        raise CertError(f"node public key {path} is not an OpenSSH public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertError(f"node public key {path} is a {type(key).__name__}, expected an EC (ECDSA) key")
    if not isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
        raise CertError(f"node public key {path} uses curve {key.curve.name}, not a NIST curve Flower accepts")
    return key


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """The key's SHA256 fingerprint as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(key.public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _same_key(a: Any, b: Any) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


@dataclass(frozen=True)
class ServerTls:
    """The three files the SuperLink is started with, checked."""

    ca: Path
    cert: Path
    key: Path
    names: tuple[str, ...]  # the server certificate's subject alternative names


def check_server_tls(folder: Path) -> ServerTls:
    """``ca.crt``, ``server.crt`` and ``server.key`` of a ``certs`` folder: readable, current, matching, signed."""
    folder = folder.expanduser()
    if not folder.is_dir():
        raise CertError(f"--tls {folder} is not a folder (expected the --out folder of `liteheart-server certs`)")
    ca_path, cert_path, key_path = ((folder / n).resolve() for n in (CA_CERT, SERVER_CERT, SERVER_KEY))
    ca = load_cert(ca_path, "CA certificate")
    cert = load_cert(cert_path, "server certificate")
    key = load_pem_key(key_path, "server private key")
    if not _same_key(cert.public_key(), key.public_key()):
        raise CertError(f"server certificate {cert_path} does not match its private key {key_path}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertError(f"server certificate {cert_path} was not issued by the CA {ca_path}") from None
    return ServerTls(ca_path, cert_path, key_path, tuple(_san_names(cert)))


def auth_public_keys(folder: Path) -> list[Path]:
    """Every ``*.pub`` of an ``--auth-keys`` folder, each a usable node key, none twice."""
    folder = folder.expanduser()
    if not folder.is_dir():
        raise CertError(f"--auth-keys {folder} is not a folder")
    paths = sorted(p.resolve() for p in folder.glob("*.pub"))
    if not paths:
        raise CertError(f"--auth-keys {folder} holds no .pub files: no node could join "
                        "(make node keys with `liteheart-server certs --out DIR --node NAME`)")
    seen: dict[str, Path] = {}
    for path in paths:
        key_print = fingerprint(load_public_key(path))
        if key_print in seen:
            raise CertError(f"node public keys {seen[key_print]} and {path} are the same key")
        seen[key_print] = path
    return paths


def _san_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)


# --- making -------------------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LiteHeart pilot"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(days: int = CA_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(CURVE())
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(_name("LiteHeart pilot CA")).issuer_name(_name("LiteHeart pilot CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    return cert, key


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_server_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str],
                     days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for ``names`` (IP addresses or DNS names), signed by the CA."""
    key = ec.generate_private_key(CURVE())
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return cert, key


def make_node_key() -> tuple[bytes, bytes]:
    """(OpenSSH private key, OpenSSH public key line) of a new node key."""
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
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


def node_names(nodes: Optional[int], names: list[str]) -> list[str]:
    """``--nodes N`` (node-1..node-N) and ``--node NAME`` together, checked: file-safe and distinct."""
    if nodes is not None and nodes < 0:
        raise CertError(f"--nodes must be 0 or more, got {nodes}")
    wanted = [f"node-{i}" for i in range(1, (nodes or 0) + 1)] + list(names)
    for name in wanted:
        if not NAME_RE.match(name):
            raise CertError(f"node name {name!r}: use letters, digits, '-', '_' and '.' (at most 64, "
                            "starting with a letter or digit)")
    twice = sorted({n for n in wanted if wanted.count(n) > 1})
    if twice:
        raise CertError(f"node name(s) given twice: {', '.join(twice)}")
    return wanted


def _current_names(path: Path) -> list[str]:
    """The names of an existing server certificate, expired or not: a re-issued one keeps them."""
    try:
        return _san_names(x509.load_pem_x509_certificate(path.read_bytes()))
    except (OSError, ValueError):
        return []


def _ca_from(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca = load_cert(folder / CA_CERT, "CA certificate")
    key = load_pem_key(folder / CA_KEY, "CA private key")
    if not _same_key(ca.public_key(), key.public_key()):
        raise CertError(f"CA certificate {folder / CA_CERT} does not match its key {folder / CA_KEY}")
    return ca, key


def generate(out: Path, nodes: list[str], days: int = DEFAULT_DAYS, hostnames: tuple[str, ...] = (),
             force: bool = False) -> dict[str, Any]:
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
    if _now() + dt.timedelta(days=days) > ca.not_valid_after_utc:
        raise CertError(f"--days {days}: the server certificate would outlive the CA {out / CA_CERT} "
                        f"(valid until {ca.not_valid_after_utc:%Y-%m-%d})")
    existing = [n for n in nodes if (out / SITES / n / f"{n}.key").exists() or (out / AUTH_KEYS / f"{n}.pub").exists()]
    if existing and not force:
        raise CertError(f"node key(s) already in {out}: {', '.join(existing)}; choose new names, or --force "
                        "to replace them (the old keys then stop working)")
    new_server = force or made_ca or not (out / SERVER_CERT).exists()
    if not new_server:
        try:
            current = check_server_tls(out)
        except CertError as exc:
            raise CertError(f"{exc}; re-issue it with --force") from None
        missing = [n for n in names if n not in current.names]
        if missing:
            raise CertError(f"server certificate {out / SERVER_CERT} lacks host name(s) {', '.join(missing)}; "
                            "re-issue it with --force (the sites keep their files)")
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
        ([CA_CERT, CA_KEY] if made_ca else []) + ([SERVER_CERT, SERVER_KEY] if server is not None else [])
        + [f"{SITES}/{n}/{n}.key" for n in nodes] + [f"{SITES}/{n}/{CA_CERT}" for n in nodes]
        + [f"{AUTH_KEYS}/{n}.pub" for n in nodes])
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
        nodes.append({"name": name, "public_key": str(pub.relative_to(out)),
                      "private_key": str(private.relative_to(out)) if private.exists() else None,
                      "site_folder": f"{SITES}/{name}", "fingerprint": fingerprint(load_public_key(pub))})
    return {
        "folder": str(out),
        "created_utc": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ca": {"certificate": CA_CERT, "private_key": CA_KEY, "not_after": ca.not_valid_after_utc.isoformat(),
               "sha256": ca.fingerprint(hashes.SHA256()).hex()},
        "server": {"certificate": SERVER_CERT, "private_key": SERVER_KEY, "names": list(tls.names),
                   "not_after": cert.not_valid_after_utc.isoformat(),
                   "sha256": cert.fingerprint(hashes.SHA256()).hex()},
        "nodes": nodes,
    }


# --- the command --------------------------------------------------------------------------------


def certs_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the CA, the server certificate and the node keys (created; an existing CA in it is reused).")],
    nodes: Annotated[Optional[int], typer.Option("--nodes", help="Make keys for N nodes named node-1 .. node-N.")] = None,
    node: Annotated[Optional[list[str]], typer.Option("--node", help="Make a key for a node of this name (repeatable), e.g. --node hospital-a.")] = None,
    days: Annotated[int, typer.Option(help="Days the server certificate is valid (the CA: 10 years).")] = DEFAULT_DAYS,
    hostname: Annotated[Optional[list[str]], typer.Option("--hostname", help="A DNS name or IP address the sites use to reach the server (repeatable); 127.0.0.1 and localhost are always in.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing node keys of the names given and re-issue the server certificate (the CA is kept).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Make a pilot's TLS certificates and node authentication keys (see the README's deployment section)."""
    from simulations.data_cmd import err, fail
    from simulations.data_cmd import out as console

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
    console.print(f"server certificate for {', '.join(manifest['server']['names'])}, valid until "
                  f"{manifest['server']['not_after'][:10]}; manifest {folder / MANIFEST}")
    for entry in manifest["nodes"]:
        if f"{AUTH_KEYS}/{entry['name']}.pub" in manifest["written"]:
            console.print(f"node {entry['name']} ({entry['fingerprint']}): copy {folder / entry['site_folder']}/ "
                          "to that site")
    if not manifest["written"]:
        err.print("nothing new to write (give --node NAME to add a site)")
    err.print(f"[yellow]keep {folder / CA_KEY} and {folder / SERVER_KEY} on this machine only[/]")
