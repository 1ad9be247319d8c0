"""Tests for liteheart_core.data.download against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from liteheart_core.data.download import (
    DownloadError,
    download_dataset,
    download_ptbxl,
    parse_checksums,
    ptbxl_selector,
)

SHARED_PTBXL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ptbxl"
RECORDS = [f"records100/00000/{n:05d}_lr" for n in range(1, 6)]
HR_FILE = "records500/00000/00001_hr.dat"
DAT = "records100/00000/00003_lr.dat"
FAST = {"retries": 0, "timeout": 5.0, "backoff": 0.0, "workers": 3}


@dataclass
class Site:
    """State shared by the test server's handler threads and the test."""

    root: Path
    url: str = ""
    range_support: bool = True
    overrides: dict[str, bytes] = field(default_factory=dict)
    truncate_once: set[str] = field(default_factory=set)
    drop: set[str] = field(default_factory=set)
    log: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, rel: str) -> list[str | None]:
        """Range headers of every GET for ``rel`` (None when the request had none)."""
        with self.lock:
            return [rng for path, rng in self.log if path == rel]

    def data_requests(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.log if path != "SHA256SUMS.txt"]

    def body(self, rel: str) -> bytes | None:
        if rel in self.overrides:
            return self.overrides[rel]
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path.read_bytes()


class _Server(ThreadingHTTPServer):
    site: Site


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        site = self.server.site
        # Served under /files/ like PhysioNet; the log keeps the part below it.
        rel = urllib.parse.unquote(self.path.split("?", 1)[0]).removeprefix("/files/")
        range_header = self.headers.get("Range")
        with site.lock:
            site.log.append((rel, range_header))
            truncate = rel in site.truncate_once
            site.truncate_once.discard(rel)
        body = site.body(rel)
        if rel in site.drop:
            self.close_connection = True  # no status line at all: the client sees a reset
        elif body is None:
            self.send_error(404)
        elif range_header and site.range_support:
            self._send_range(body, range_header)
        else:
            self._send(200, body, cut=len(body) // 2 if truncate else None)

    def _send_range(self, body: bytes, range_header: str) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", range_header)
        start = int(match.group(1)) if match else 0
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(206, body[start:], content_range=f"bytes {start}-{len(body) - 1}/{len(body)}")

    def _send(self, status: int, body: bytes, content_range: str | None = None, cut: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        # ``cut`` simulates a dropped connection: full length announced, half sent.
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep pytest output clean
        pass


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_sums(root: Path, extra_lines: list[str] | None = None) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS.txt")
    lines = [f"{_sha(p.read_bytes())} {p.relative_to(root).as_posix()}" for p in files]
    (root / "SHA256SUMS.txt").write_text("\n".join(lines + (extra_lines or [])) + "\n")


def _build_tree(root: Path) -> None:
    if not SHARED_PTBXL.is_dir():
        pytest.skip(f"PTB-XL sample data not found at {SHARED_PTBXL.resolve()}")
    root.mkdir()
    # Header + the 5 rows describing records 00001..00005.
    csv_lines = (SHARED_PTBXL / "ptbxl_database.csv").read_text().splitlines(keepends=True)
    (root / "ptbxl_database.csv").write_text("".join(csv_lines[:6]))
    (root / "scp_statements.csv").write_bytes((SHARED_PTBXL / "scp_statements.csv").read_bytes())
    for record in RECORDS:
        for suffix in (".hea", ".dat"):
            target = root / (record + suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((SHARED_PTBXL / (record + suffix)).read_bytes())
    hr = root / HR_FILE
    hr.parent.mkdir(parents=True)
    hr.write_bytes(b"fake 500 Hz signal" * 100)
    _write_sums(root)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    state = Site(root=tmp_path / "served")
    _build_tree(state.root)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.site = state
    state.url = f"http://127.0.0.1:{server.server_address[1]}/files/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _served(site: Site, rate: int | None = 100) -> dict[str, bytes]:
    """Relative path -> bytes of the files a download at ``rate`` must produce."""
    keep = ptbxl_selector(rate)
    files = {p.relative_to(site.root).as_posix(): p.read_bytes() for p in site.root.rglob("*") if p.is_file()}
    return {rel: data for rel, data in files.items() if rel != "SHA256SUMS.txt" and keep(rel)}


def _assert_tree(dest: Path, expected: dict[str, bytes]) -> None:
    for rel, data in expected.items():
        assert (dest / rel).read_bytes() == data, rel
    assert not list(dest.rglob("*.part"))


# --- pure parsing -----------------------------------------------------------


def test_parse_checksums_accepts_sha256sum_layouts() -> None:
    # Prepare
    digest = "ab" * 32
    lines = [f"{digest} a.csv", "", f"{digest.upper()}  *records100/x.dat", f"{digest}  ./b c.txt"]
    text = "\n".join([*lines, f"{digest} SHA256SUMS.txt"]) + "\n"
    # Execute
    entries = parse_checksums(text)
    # Assert
    assert [(e.path, e.sha256) for e in entries] == [
        ("a.csv", digest),
        ("records100/x.dat", digest),
        ("b c.txt", digest),
    ]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("nothex a.csv", "malformed line 2"),
        ("ab" * 32, "malformed line 2"),
        ("ab" * 32 + " ../evil", "'..'"),
        ("ab" * 32 + " records100/../../evil", "'..'"),
        ("ab" * 32 + " /etc/evil", "absolute"),
        ("ab" * 32 + " C:/evil", "drive"),
        ("cd" * 32 + " a.csv", "different hashes"),
    ],
)
def test_parse_checksums_rejects_bad_lines(line: str, needle: str) -> None:
    text = f"{'ab' * 32} a.csv\n{line}\n"
    with pytest.raises(DownloadError, match=re.escape(needle)):
        parse_checksums(text, "SUMS")


def test_ptbxl_selector_rates() -> None:
    paths = ["ptbxl_database.csv", "records100/00000/00001_lr.dat", "records500/00000/00001_hr.dat"]
    assert [p for p in paths if ptbxl_selector(100)(p)] == paths[:2]
    assert [p for p in paths if ptbxl_selector(500)(p)] == [paths[0], paths[2]]
    assert [p for p in paths if ptbxl_selector(None)(p)] == paths
    with pytest.raises(ValueError, match="rate"):
        ptbxl_selector(250)


# --- against the local server -----------------------------------------------


@pytest.mark.realdata
def test_full_download_fetches_selected_files_only(site: Site, tmp_path: Path) -> None:
    # Prepare
    dest = tmp_path / "out" / "ptbxl"
    expected = _served(site, rate=100)
    calls: list[tuple[str, int, int]] = []
    # Execute
    report = download_ptbxl(dest, site.url, rate=100, progress=lambda *c: calls.append(c), **FAST)
    # Assert
    _assert_tree(dest, expected)
    assert len(expected) == 2 + 2 * len(RECORDS)
    assert not (dest / HR_FILE).exists() and site.gets(HR_FILE) == []
    assert (report.files_total, report.files_downloaded, report.files_skipped) == (12, 12, 0)
    assert report.bytes_downloaded == sum(len(d) for d in expected.values())
    assert report.resumed == [] and report.dest == str(dest)
    assert (dest / "SHA256SUMS.txt").read_bytes() == (site.root / "SHA256SUMS.txt").read_bytes()
    last = {path: (done, total) for path, done, total in calls}
    assert last == {rel: (len(d), len(d)) for rel, d in expected.items()}


@pytest.mark.realdata
@pytest.mark.parametrize(("rate", "present", "absent"), [(500, HR_FILE, DAT), (None, HR_FILE, None)])
def test_rate_selection(site: Site, tmp_path: Path, rate: int | None, present: str, absent: str | None) -> None:
    report = download_ptbxl(tmp_path / "d", site.url, rate=rate, **FAST)
    _assert_tree(tmp_path / "d", _served(site, rate))
    assert (tmp_path / "d" / present).is_file()
    assert absent is None or site.gets(absent) == []
    assert report.files_total == len(_served(site, rate))


@pytest.mark.realdata
def test_second_run_downloads_nothing(site: Site, tmp_path: Path) -> None:
    # Prepare
    dest = tmp_path / "d"
    download_ptbxl(dest, site.url, **FAST)
    site.log.clear()
    # Execute
    report = download_ptbxl(dest, site.url, **FAST)
    # Assert
    assert site.data_requests() == []
    assert (report.files_total, report.files_downloaded, report.files_skipped) == (12, 0, 12)
    assert report.bytes_downloaded == 0


@pytest.mark.realdata
def test_damaged_local_file_is_fetched_again(site: Site, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    download_ptbxl(dest, site.url, **FAST)
    (dest / DAT).write_bytes(b"damaged")
    site.log.clear()
    report = download_ptbxl(dest, site.url, **FAST)
    assert site.data_requests() == [DAT]
    assert (report.files_downloaded, report.files_skipped) == (1, 11)
    _assert_tree(dest, _served(site))


@pytest.mark.realdata
def test_resume_from_part_uses_range(site: Site, tmp_path: Path) -> None:
    # Prepare
    dest = tmp_path / "d"
    data = (site.root / DAT).read_bytes()
    half = len(data) // 2
    (dest / DAT).parent.mkdir(parents=True)
    (dest / (DAT + ".part")).write_bytes(data[:half])
    # Execute
    report = download_ptbxl(dest, site.url, **FAST)
    # Assert
    assert site.gets(DAT) == [f"bytes={half}-"]
    assert report.resumed == [DAT]
    _assert_tree(dest, _served(site))
    assert report.bytes_downloaded == sum(len(d) for d in _served(site).values()) - half


@pytest.mark.realdata
def test_dropped_connection_resumes_on_retry(site: Site, tmp_path: Path) -> None:
    data = (site.root / DAT).read_bytes()
    site.truncate_once.add(DAT)
    report = download_ptbxl(tmp_path / "d", site.url, **{**FAST, "retries": 1})
    assert site.gets(DAT) == [None, f"bytes={len(data) // 2}-"]
    assert report.resumed == [DAT]
    _assert_tree(tmp_path / "d", _served(site))


@pytest.mark.realdata
def test_server_without_range_support_restarts_from_zero(site: Site, tmp_path: Path) -> None:
    # Prepare: a .part of wrong bytes, so appending to it could never verify (retries=0).
    site.range_support = False
    dest = tmp_path / "d"
    (dest / DAT).parent.mkdir(parents=True)
    (dest / (DAT + ".part")).write_bytes(b"x" * 1000)
    # Execute
    report = download_ptbxl(dest, site.url, **FAST)
    # Assert
    assert site.gets(DAT) == ["bytes=1000-"]  # asked, got a 200 with the whole file
    assert report.resumed == []
    _assert_tree(dest, _served(site))


@pytest.mark.realdata
def test_part_longer_than_file_gets_416_and_restarts(site: Site, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    data = (site.root / DAT).read_bytes()
    (dest / DAT).parent.mkdir(parents=True)
    (dest / (DAT + ".part")).write_bytes(data + b"junk")
    report = download_ptbxl(dest, site.url, **FAST)
    assert site.gets(DAT) == [f"bytes={len(data) + 4}-", None]
    assert report.resumed == []
    _assert_tree(dest, _served(site))


@pytest.mark.realdata
def test_checksum_mismatch_names_file_and_keeps_others(site: Site, tmp_path: Path) -> None:
    # Prepare
    dest = tmp_path / "d"
    good = (site.root / DAT).read_bytes()
    site.overrides[DAT] = b"\x00" + good[1:]
    # Execute
    with pytest.raises(DownloadError) as caught:
        download_ptbxl(dest, site.url, **{**FAST, "retries": 2})
    # Assert
    message = str(caught.value)
    assert DAT in message and _sha(good) in message and _sha(site.overrides[DAT]) in message
    assert len(site.gets(DAT)) == 3
    assert not (dest / DAT).exists() and not (dest / (DAT + ".part")).exists()
    others = {rel: data for rel, data in _served(site).items() if rel != DAT}
    _assert_tree(dest, others)
    assert not (dest / "SHA256SUMS.txt").exists()


@pytest.mark.realdata
def test_network_failure_stops_the_run_early(site: Site, tmp_path: Path) -> None:
    # Prepare: one worker, and the first data file in list order always drops the connection.
    first = "ptbxl_database.csv"
    site.drop.add(first)
    # Execute
    with pytest.raises(DownloadError) as caught:
        download_ptbxl(tmp_path / "d", site.url, **{**FAST, "workers": 1, "retries": 1})
    # Assert
    assert f"{first}: network error" in str(caught.value) and "stopped early" in str(caught.value)
    assert len(site.gets(first)) == 2
    assert len(site.data_requests()) < 2 + 12


@pytest.mark.realdata
def test_missing_file_reports_http_status(site: Site, tmp_path: Path) -> None:
    (site.root / DAT).unlink()
    with pytest.raises(DownloadError, match=rf"{re.escape(DAT)}: HTTP 404"):
        download_ptbxl(tmp_path / "d", site.url, **{**FAST, "retries": 3, "backoff": 5.0})
    assert len(site.gets(DAT)) == 1  # a 404 is not retried


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("not a checksum line", "malformed line 14"),
        (f"{'ab' * 32} ../evil", "../evil"),
        (f"{'ab' * 32} records100/../../evil", "evil"),
    ],
)
def test_hostile_checksum_list_writes_nothing(site: Site, tmp_path: Path, line: str, needle: str) -> None:
    # Prepare
    _write_sums(site.root, extra_lines=[line])
    site.overrides["evil"] = b"pwned"
    dest = tmp_path / "out" / "dest"
    # Execute
    with pytest.raises(DownloadError, match=re.escape(needle)):
        download_ptbxl(dest, site.url, **FAST)
    # Assert
    assert not dest.exists()
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()
    assert site.data_requests() == []


def test_unreachable_server_fails_fast_after_retries(tmp_path: Path) -> None:
    # Prepare: a port that was just free, so nothing listens there.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    # Execute
    with pytest.raises(DownloadError, match=r"SHA256SUMS\.txt.*gave up after 3 attempts"):
        download_dataset(
            tmp_path / "d", f"http://127.0.0.1:{port}/", lambda p: True, retries=2, timeout=1.0, backoff=0.01
        )
    # Assert
    assert time.monotonic() - started < 3.0
    assert not (tmp_path / "d").exists()


def test_invalid_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        download_dataset(tmp_path, "file:///etc/", lambda p: True)
    with pytest.raises(ValueError, match="workers"):
        download_dataset(tmp_path, "http://127.0.0.1:1/", lambda p: True, workers=0)
