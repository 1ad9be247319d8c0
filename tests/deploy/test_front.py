"""The nginx front on its own: its allow-list against Flower's router, and what it passes, over plain HTTP.

The TLS pilot of ``test_tls.py`` runs it with a real SuperLink behind it; here a stub upstream that
answers 200 to everything stands in for the SuperLink, so a 200 means "forwarded" and a 403 "refused
by the front", with no Flower process and in a second or two.
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from liteheart_core.cli.processes import LOOPBACK, child_env, free_port
from server import front


def test_the_allow_list_is_flowers_fleet_api_and_nothing_else() -> None:
    from flwr.superlink.routers.fleet.router import router

    flower = {(method, route.path) for route in router.routes for method in route.methods}

    assert {entry for entry in front.ALLOWED if entry[0] == "POST"} == flower
    assert set(front.ALLOWED) - flower == {("GET", "/health")}
    # each entry becomes an anchored case-sensitive regex in nginx's map: no character of it may be special
    assert all(re.fullmatch(r"[a-z0-9/-]+", path) for _, path in front.ALLOWED)


def test_the_config_listens_on_the_public_address_and_forwards_to_loopback_only(tmp_path: Path) -> None:
    tls = (tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key")
    conf = front.render_config(front.Front(tmp_path / "front", "192.0.2.10", 9092, 40123, tls))

    assert "listen 192.0.2.10:9092 ssl;" in conf and conf.count("listen ") == 1
    assert "server 127.0.0.1:40123;" in conf and "proxy_pass https://superlink;" in conf
    assert "proxy_ssl_verify on;" in conf and f'proxy_ssl_trusted_certificate "{tmp_path / "ca.crt"}";' in conf
    assert "default 0;" in conf and '"POST /v1/control' not in conf
    with pytest.raises(front.FrontError, match="cannot be given the path"):
        front.render_config(front.Front(tmp_path / 'we"ird', "192.0.2.10", 9092, 40123))


class _Everything(http.server.BaseHTTPRequestHandler):
    """Answers 200 with the path it got to any method: what reaches it was forwarded."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def need_nginx() -> None:
    """Skip without nginx, except under CI (``.ci/run`` installs it): there its absence is a failure."""
    try:
        front.nginx_exe()
    except front.FrontError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
def plain_front(tmp_path: Path) -> Iterator[int]:
    need_nginx()
    upstream = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Everything)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    proc = front.start(front.Front(tmp_path / "front", LOOPBACK, port, upstream.server_address[1]), child_env(tmp_path))
    try:
        for _ in range(100):
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail((tmp_path / "front" / "error.log").read_text())
                threading.Event().wait(0.1)
        yield port
    finally:
        front.stop(proc)
        upstream.shutdown()
    assert proc.poll() is not None


def status(port: int, method: str, path: str) -> tuple[int, bytes]:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab".encode()
        )
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_the_front_forwards_the_fleet_api_verbatim_and_refuses_the_rest(plain_front: int) -> None:
    forwarded = {f"{m} {p}": status(plain_front, m, p) for m, p in front.ALLOWED}
    refused = {
        f"{m} {p}": status(plain_front, m, p)[0]
        for m, p in [
            ("POST", "/v1/control/list-runs"),
            ("POST", "/v1/runtime/pull-task-input"),
            ("GET", "/docs"),
            ("PUT", "/v1/fleet/push-messages"),
            ("POST", "/v1/fleet/push-messages/"),
            ("POST", "/v1/fleet/Push-Messages"),
            ("POST", "/v1/fleet/../control/stop-run"),
            ("POST", "/v1/fleet/%2e%2e/control/stop-run"),
            ("POST", "/v1//fleet/push-messages"),
            ("POST", "/v1/fleet/push-messages?x=1"),
            ("GET", "/health/"),
            ("POST", "/v1/fleet/push%2Dmessages"),
        ]
    }

    assert {k: (code, body.decode()) for k, (code, body) in forwarded.items()} == {
        f"{m} {p}": (200, p) for m, p in front.ALLOWED
    }  # what the SuperLink got is the path as allowed
    assert set(refused.values()) == {403}, refused
