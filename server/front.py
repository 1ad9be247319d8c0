"""The front that faces the sites: nginx forwarding the Fleet API and ``/health`` alone.

Flower 1.42 serves every API of the SuperLink on its one ``--host/--port``: the Fleet API
(``/v1/fleet/...``, what SuperNodes use, node-authenticated), the Control API
(``/v1/control/...``: list, stop and submit runs, register node keys — no account
authentication in open-source Flower) and the Runtime API (``/v1/runtime/...``, what the
SuperExec and the ServerApp use). Whoever reaches that port with the CA certificate could
therefore run code on the coordinator. So when a run faces a network (``--tls``, or a
``--host`` that is not loopback) the SuperLink listens on 127.0.0.1 only, and nginx —
a well-kept part from Debian's packages, not code of ours — listens on the public address
and forwards a fixed list of (method, path) pairs to it; every other request is answered
403 before it reaches Flower. The list is compared with the exact request line as the
site sent it (``$request_uri``, not a normalised path), so ``/v1/fleet/../control/...``,
percent-encoded dots or doubled slashes are refused, and what the SuperLink receives is
byte for byte one of the allowed paths.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from liteheart_core.cli.processes import descendants, end_processes

# The Fleet API of Flower 1.42 (flwr/superlink/routers/fleet/router.py); tests/deploy/test_front.py
# compares this list with Flower's router, so an upgrade that adds a route is noticed, not forwarded blindly.
FLEET_ROUTES = (
    "register-node",
    "activate-node",
    "deactivate-node",
    "unregister-node",
    "send-node-heartbeat",
    "pull-messages",
    "push-messages",
    "get-run",
    "get-fab",
    "push-object",
    "pull-object",
    "confirm-message-received",
)
ALLOWED = (("GET", "/health"), *(("POST", f"/v1/fleet/{route}") for route in FLEET_ROUTES))
# A Fleet request carries at most one 5 MiB array chunk (Flower's object size) plus framing;
# a larger body is refused at the front instead of streamed into the SuperLink.
MAX_BODY = "64m"
REFUSED_STATUS = 403


class FrontError(RuntimeError):
    """The front cannot be started; the message says why."""


def nginx_exe() -> str:
    """nginx from PATH or Debian's /usr/sbin (not on a normal user's PATH)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise FrontError(
            "nginx is not installed: a run that faces a network (--tls, or a --host that is not "
            "loopback) puts nginx in front of the SuperLink (Debian/Ubuntu: `apt-get install nginx`)"
        )
    return found


@dataclass(frozen=True)
class Front:
    """One nginx in front of one SuperLink: where it listens, where it forwards, where it keeps its files."""

    folder: Path  # nginx's prefix: config, pid file, logs, temp folders
    host: str  # the public address the sites reach
    port: int
    link_port: int  # the SuperLink on 127.0.0.1
    tls: tuple[Path, Path, Path] | None = None  # (ca, cert, key): TLS towards the sites and to the SuperLink

    @property
    def config(self) -> Path:
        return self.folder / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.folder / "nginx.pid"

    @property
    def access_log(self) -> Path:
        return self.folder / "access.log"

    @property
    def error_log(self) -> Path:
        return self.folder / "error.log"


def _quoted(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"\\;{}$\n'):
        raise FrontError(
            f"nginx cannot be given the path {text!r} (quote, backslash, ';', braces or '$' in it): "
            "use a --run-dir / --tls folder without them"
        )
    return f'"{text}"'


def render_config(front: Front) -> str:
    """nginx.conf for ``front``: the allow-list as a map, everything else 403."""
    listen = f"[{front.host}]:{front.port}" if ":" in front.host else f"{front.host}:{front.port}"
    scheme = "https" if front.tls else "http"
    # "~^...$": a case-sensitive regex (nginx compares plain map strings ignoring case); no pattern holds a regex
    # character beyond the anchors
    allowed = "\n".join(f'        "~^{method} {path}$" 1;' for method, path in ALLOWED)
    temp = {name: _quoted(front.folder / "tmp" / name) for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    tls_server, tls_upstream = "", ""
    if front.tls:
        ca, cert, key = front.tls
        tls_server = (
            f"        ssl_certificate {_quoted(cert)};\n        ssl_certificate_key {_quoted(key)};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            # a plain-HTTP request on the TLS port: close the connection, answer nothing
            "        error_page 497 = @plain;\n        location @plain { return 444; }\n"
        )
        # the SuperLink keeps its TLS (Flower authenticates nodes only over TLS); its certificate always names
        # localhost, and the front checks it against the pilot's CA like any client
        tls_upstream = (
            f"            proxy_ssl_trusted_certificate {_quoted(ca)};\n"
            "            proxy_ssl_verify on;\n            proxy_ssl_name localhost;\n"
            "            proxy_ssl_session_reuse on;\n"
        )
    user = "user nobody nogroup;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    return f"""# written by `liteheart-server start`; regenerated at each start
{user}daemon off;
worker_processes 1;
pid {_quoted(front.pid_file)};
error_log {_quoted(front.error_log)} warn;
events {{ worker_connections 512; }}
http {{
    access_log {_quoted(front.access_log)};
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server_tokens off;
    map "$request_method $request_uri" $liteheart_fleet {{
        default 0;
{allowed}
    }}
    upstream superlink {{
        server 127.0.0.1:{front.link_port};
        keepalive 8;
    }}
    server {{
        listen {listen}{" ssl" if front.tls else ""};
{tls_server}        client_max_body_size {MAX_BODY};
        location / {{
            if ($liteheart_fleet = 0) {{
                return {REFUSED_STATUS} "refused: only the Fleet API is served on this address\\n";
            }}
            proxy_pass {scheme}://superlink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
{tls_upstream}        }}
    }}
}}
"""


def end_leftover(front: Front) -> None:
    """Stop an nginx an earlier ``start`` of this run folder left behind (it was killed before it could)."""
    try:
        pid = int(front.pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return
    if str(front.config) in argv:  # that pid is still our nginx, not a process that reused the number
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)


def start(front: Front, env: dict[str, str]) -> subprocess.Popen:
    """Write the config, check it with ``nginx -t`` and start nginx in the foreground (our child)."""
    exe = nginx_exe()
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (front.folder / "tmp" / name).mkdir(parents=True, exist_ok=True)
    end_leftover(front)
    front.config.write_text(render_config(front))
    command = [exe, "-p", str(front.folder), "-c", str(front.config), "-e", str(front.error_log)]
    checked = subprocess.run(
        [*command, "-t"], capture_output=True, text=True, env=env, check=False, stdin=subprocess.DEVNULL, timeout=30
    )
    if checked.returncode != 0:
        raise FrontError(f"nginx refused its configuration {front.config}: {checked.stderr.strip()}")
    log = (front.folder / "nginx.out").open("ab")
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """nginx's graceful stop (SIGQUIT: finish the requests in flight), then SIGKILL."""
    workers = descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    end_processes(workers, patience=2.0)  # a worker outlives a killed master
