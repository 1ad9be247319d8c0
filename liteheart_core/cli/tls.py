"""Reading and checking a pilot's certificates and keys, for the server's ``start`` and a site's ``start``.

The files are made by ``liteheart-server certs`` (``server/certs.py``); both sides read them
back here before any process starts, so a site's node code does not depend on the server's
package. Every ``load_*``/``check_*`` raises ``CertError`` naming the file and the reason.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"


class CertError(ValueError):
    """A certificate or key cannot be made or used; the message names the file and the reason."""


def _read(path: Path, what: str) -> bytes:
    if not path.exists():
        raise CertError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CertError(f"{what} {path} is not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def now_utc() -> dt.datetime:
    """The clock certificates are checked against (tests move it)."""
    return dt.datetime.now(dt.UTC)


def load_cert(path: Path, what: str = "certificate") -> x509.Certificate:
    """A PEM certificate that is valid now."""
    data = _read(path, what)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertError(f"{what} {path} is not a PEM certificate") from None
    now = now_utc()
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
        raise CertError(
            f"node private key {path} is not an OpenSSH private key "
            "(expected '-----BEGIN OPENSSH PRIVATE KEY-----'; make one with `liteheart-server certs`)"
        )
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
    blob = base64.b64decode(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def same_key(a: Any, b: Any) -> bool:
    """Whether two public keys are the same key."""
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
    if not same_key(cert.public_key(), key.public_key()):
        raise CertError(f"server certificate {cert_path} does not match its private key {key_path}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertError(f"server certificate {cert_path} was not issued by the CA {ca_path}") from None
    return ServerTls(ca_path, cert_path, key_path, tuple(san_names(cert)))


def auth_public_keys(folder: Path) -> list[Path]:
    """Every ``*.pub`` of an ``--auth-keys`` folder, each a usable node key, none twice."""
    folder = folder.expanduser()
    if not folder.is_dir():
        raise CertError(f"--auth-keys {folder} is not a folder")
    paths = sorted(p.resolve() for p in folder.glob("*.pub"))
    if not paths:
        raise CertError(
            f"--auth-keys {folder} holds no .pub files: no node could join "
            "(make node keys with `liteheart-server certs --out DIR --node NAME`)"
        )
    seen: dict[str, Path] = {}
    for path in paths:
        key_print = fingerprint(load_public_key(path))
        if key_print in seen:
            raise CertError(f"node public keys {seen[key_print]} and {path} are the same key")
        seen[key_print] = path
    return paths


def san_names(cert: x509.Certificate) -> list[str]:
    """The IP addresses and DNS names a certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)
