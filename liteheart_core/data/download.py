"""Verified, resumable downloads of PhysioNet datasets (PTB-XL first).

PhysioNet publishes a ``SHA256SUMS.txt`` next to every dataset version; it is the
single source of truth here: it lists the files to fetch and the hash each must
have. Files already present and verified are skipped, interrupted files resume
from their ``.part`` with an HTTP ``Range`` request, and nothing lands under its
final name before its hash has been checked. Standard library only, so the
download works before the heavy dependencies are installed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

PTBXL_URL = "https://physionet.org/files/ptb-xl/1.0.3/"
CHECKSUM_FILE = "SHA256SUMS.txt"
PTBXL_RATES = (100, 500)

ProgressCallback = Callable[[str, int, int], None]
_T = TypeVar("_T")

_CHUNK = 1 << 16
_MAX_CHECKSUM_BYTES = 64 << 20  # PTB-XL's list is ~4 MB; refuse a runaway body
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_NETWORK_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
)
_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64})[ \t]+\*?(.+?)[ \t]*")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_USER_AGENT = "liteheart-download/0.1 (python-urllib)"


class DownloadError(RuntimeError):
    """A dataset file could not be fetched or verified; the message names file and reason."""


@dataclass
class DownloadReport:
    """What one download run did.

    Attributes
    ----------
    files_total : int
        Files selected from the checksum list.
    files_downloaded : int
        Files fetched (fully or by resuming) and verified in this run.
    files_skipped : int
        Files already present with the expected sha256; no request was made for them.
    bytes_downloaded : int
        Body bytes received for data files, including bytes later discarded by a
        failed hash check.
    resumed : list[str]
        Relative paths whose transfer continued an existing ``.part`` file.
    dest : str
        Destination directory.
    """

    files_total: int
    files_downloaded: int
    files_skipped: int
    bytes_downloaded: int
    resumed: list[str]
    dest: str


@dataclass(frozen=True)
class ChecksumEntry:
    """One line of a ``SHA256SUMS.txt``: a safe relative POSIX path and its digest."""

    path: str
    sha256: str


@dataclass
class _Context:
    dest: Path
    base_url: str
    retries: int
    timeout: float
    backoff: float
    progress: ProgressCallback | None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, path: str, done: int, total: int) -> None:
        # Serialised so a progress bar never sees two worker threads at once.
        if self.progress is not None:
            with self.lock:
                self.progress(path, done, total)


@dataclass(frozen=True)
class _Outcome:
    path: str
    skipped: bool
    received: int = 0
    resumed: bool = False


class _AttemptFailed(Exception):
    """One attempt failed; ``final`` means retrying cannot help (e.g. HTTP 404)."""

    def __init__(self, reason: str, network: bool, final: bool = False) -> None:
        super().__init__(reason)
        self.network = network
        self.final = final


class _FileFailed(Exception):
    """A file failed for good; ``fatal`` stops scheduling further files."""

    def __init__(self, path: str, reason: str, fatal: bool) -> None:
        super().__init__(f"{path}: {reason}")
        self.fatal = fatal


class _Stopped(Exception):
    """The run is being stopped; the ``.part`` is kept for the next run."""


def parse_checksums(text: str, source: str = CHECKSUM_FILE) -> list[ChecksumEntry]:
    """Parse ``<sha256> <relative path>`` lines, rejecting anything unsafe.

    Parameters
    ----------
    text : str
        Contents of a ``SHA256SUMS.txt`` (``sha256sum`` layout; ``*`` binary marker allowed).
    source : str
        Name used in error messages.

    Returns
    -------
    list[ChecksumEntry]
        Entries in file order, without duplicates and without the list itself.

    Raises
    ------
    DownloadError
        On a malformed line, a path escaping the destination, or conflicting duplicates.
    """
    entries: dict[str, ChecksumEntry] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _SUMS_LINE.fullmatch(line)
        if match is None:
            raise DownloadError(f"{source}: malformed line {number}: {line[:80]!r}")
        path = _safe_relative_path(match.group(2), source, number)
        entry = ChecksumEntry(path=path, sha256=match.group(1).lower())
        previous = entries.get(path)
        if previous is not None and previous.sha256 != entry.sha256:
            raise DownloadError(f"{source}: line {number}: {path} listed twice with different hashes")
        if path != CHECKSUM_FILE:  # the list cannot vouch for itself
            entries[path] = entry
    return list(entries.values())


def _safe_relative_path(raw: str, source: str, number: int) -> str:
    """Return ``raw`` normalised, or raise if it could write outside the destination."""
    reason = None
    pure = PurePosixPath(raw)
    if "\\" in raw or "\x00" in raw:
        reason = "backslash or NUL in path"
    elif pure.is_absolute():
        reason = "absolute path"
    elif ".." in pure.parts:
        reason = "'..' in path"
    elif not pure.parts or ":" in pure.parts[0]:
        reason = "empty path or drive letter"
    elif pure.name.endswith(".part"):
        reason = "'.part' names are reserved for partial downloads"
    if reason is not None:
        raise DownloadError(f"{source}: line {number}: refusing {raw!r}: {reason}")
    return pure.as_posix()


def ptbxl_selector(rate: int | None) -> Callable[[str], bool]:
    """Select PTB-XL files: top-level files plus ``records{rate}/``, or all for ``None``.

    Raises
    ------
    ValueError
        If ``rate`` is not 100, 500 or None.
    """
    if rate is None:
        return lambda path: True
    if rate not in PTBXL_RATES:
        raise ValueError(f"PTB-XL rate must be one of {PTBXL_RATES} or None, got {rate!r}")
    prefix = f"records{rate}/"
    return lambda path: "/" not in path or path.startswith(prefix)


def download_ptbxl(
    dest: Path,
    base_url: str = PTBXL_URL,
    rate: int | None = 100,
    workers: int = 4,
    retries: int = 3,
    timeout: float = 60.0,
    progress: ProgressCallback | None = None,
    backoff: float = 0.5,
) -> DownloadReport:
    """Download PTB-XL into ``dest`` at 100 Hz, 500 Hz or both (``rate=None``).

    See :func:`download_dataset` for parameters, behaviour and errors.
    """
    return download_dataset(
        dest,
        base_url,
        ptbxl_selector(rate),
        workers=workers,
        retries=retries,
        timeout=timeout,
        progress=progress,
        backoff=backoff,
    )


def download_dataset(
    dest: Path,
    base_url: str,
    select: Callable[[str], bool],
    *,
    workers: int = 4,
    retries: int = 3,
    timeout: float = 60.0,
    progress: ProgressCallback | None = None,
    backoff: float = 0.5,
) -> DownloadReport:
    """Download the files of a PhysioNet-style dataset listed in its ``SHA256SUMS.txt``.

    Parameters
    ----------
    dest : Path
        Destination directory, created if missing. Nothing is written outside it.
    base_url : str
        http(s) URL of the dataset version; ``SHA256SUMS.txt`` and the files live under it.
    select : Callable[[str], bool]
        Keeps the relative paths to fetch.
    workers : int
        Parallel downloads.
    retries : int
        Extra attempts per file (and for the checksum list) after a network error or
        hash mismatch; each file gets ``retries + 1`` attempts at most.
    timeout : float
        Socket timeout in seconds for connecting and for each read.
    progress : Callable[[str, int, int], None] or None
        Called as ``progress(path, bytes_done, bytes_total)`` (``bytes_total`` is 0 when the
        server does not say). Calls come from worker threads but never overlap.
    backoff : float
        First retry delay in seconds; doubles on each further retry.

    Returns
    -------
    DownloadReport
        Counts of selected, downloaded and skipped files. The checksum list is saved as
        ``dest/SHA256SUMS.txt`` once every selected file verifies.

    Raises
    ------
    ValueError
        On invalid arguments.
    DownloadError
        If the checksum list is unusable or any file fails; files that did verify stay in
        place and interrupted ones keep their ``.part``, so running again resumes. A file
        whose network errors outlast its retries stops the run early (the server or the
        network is likely gone); a bad hash or HTTP 404 fails only that file.
    """
    base = _check_arguments(base_url, workers, retries, timeout, backoff)
    ctx = _Context(Path(dest), base, retries, timeout, backoff, progress)
    sums_url = base + CHECKSUM_FILE
    sums_text = _fetch_checksum_text(sums_url, ctx)
    entries = [entry for entry in parse_checksums(sums_text, sums_url) if select(entry.path)]
    try:
        ctx.dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{ctx.dest}: cannot create destination: {exc}") from exc
    outcomes, failures = _run_all(entries, ctx, workers)
    if failures:
        raise DownloadError(_failure_message(failures, ctx, len(entries) - len(outcomes)))
    _write_atomically(ctx.dest / CHECKSUM_FILE, sums_text.encode("utf-8"))
    return DownloadReport(
        files_total=len(entries),
        files_downloaded=sum(not o.skipped for o in outcomes),
        files_skipped=sum(o.skipped for o in outcomes),
        bytes_downloaded=sum(o.received for o in outcomes),
        resumed=sorted(o.path for o in outcomes if o.resumed),
        dest=str(ctx.dest),
    )


def _check_arguments(base_url: str, workers: int, retries: int, timeout: float, backoff: float) -> str:
    """Validate the knobs and return the base URL with a trailing slash."""
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if timeout <= 0 or backoff < 0:
        raise ValueError(f"timeout must be > 0 and backoff >= 0, got {timeout} and {backoff}")
    return base_url if base_url.endswith("/") else base_url + "/"


def _run_all(entries: list[ChecksumEntry], ctx: _Context, workers: int) -> tuple[list[_Outcome], list[_FileFailed]]:
    """Download ``entries`` in a thread pool; collect outcomes and per-file failures."""
    outcomes: list[_Outcome] = []
    failures: list[_FileFailed] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
        futures = [pool.submit(_download_file, entry, ctx) for entry in entries]
        try:
            for future in as_completed(futures):
                _collect(future, outcomes, failures, ctx)
                if ctx.stop.is_set():
                    _cancel(futures)
        except BaseException:
            # Ctrl-C or a failing progress callback: let workers stop between chunks.
            ctx.stop.set()
            _cancel(futures)
            raise
    return outcomes, failures


def _collect(future: Future[_Outcome], outcomes: list[_Outcome], failures: list[_FileFailed], ctx: _Context) -> None:
    """File one finished future under outcomes or failures; a fatal failure stops the run."""
    if future.cancelled():
        return
    try:
        outcomes.append(future.result())
    except _FileFailed as failure:
        failures.append(failure)
        if failure.fatal:
            ctx.stop.set()
    except _Stopped:
        pass


def _cancel(futures: list[Future[_Outcome]]) -> None:
    for future in futures:
        future.cancel()


def _failure_message(failures: list[_FileFailed], ctx: _Context, not_done: int) -> str:
    lines = [str(failure) for failure in failures]
    if len(lines) == 1:
        message = lines[0]
    else:
        shown = "\n  ".join(lines[:10])
        more = f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""
        message = f"{len(lines)} files failed to download into {ctx.dest}:\n  {shown}{more}"
    if ctx.stop.is_set() and not_done > len(failures):
        message += f"\nstopped early with {not_done - len(failures)} files not fetched; run again to resume"
    return message


def _fetch_checksum_text(url: str, ctx: _Context) -> str:
    """Fetch and decode the checksum list, retrying network errors."""

    def attempt() -> bytes:
        with _network_errors(), _urlopen(url, ctx.timeout) as response:
            body = response.read(_MAX_CHECKSUM_BYTES + 1)
        if len(body) > _MAX_CHECKSUM_BYTES:
            raise _FileFailed(CHECKSUM_FILE, f"larger than {_MAX_CHECKSUM_BYTES} bytes at {url}", fatal=True)
        return body

    try:
        body = _with_retries(CHECKSUM_FILE, attempt, ctx)
    except _FileFailed as failure:
        raise DownloadError(f"{failure} ({url})") from failure
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DownloadError(f"{url}: checksum list is not UTF-8 text: {exc}") from exc


def _download_file(entry: ChecksumEntry, ctx: _Context) -> _Outcome:
    """Skip, resume or fetch one file, verify it and move it into place."""
    if ctx.stop.is_set():
        raise _Stopped
    final = ctx.dest / entry.path
    part = final.with_name(final.name + ".part")
    received, resumed = 0, False

    def attempt() -> None:
        nonlocal received, resumed
        got, continued = _transfer(entry, part, ctx)
        received += got
        resumed = resumed or continued
        _verify_part(entry, part)

    try:
        if final.is_file() and _sha256_file(final) == entry.sha256:
            part.unlink(missing_ok=True)
            size = final.stat().st_size
            ctx.report(entry.path, size, size)
            return _Outcome(entry.path, skipped=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        _with_retries(entry.path, attempt, ctx)
        os.replace(part, final)
    except OSError as exc:  # network errors were turned into _AttemptFailed; this is the local disk
        raise _FileFailed(entry.path, f"local file error: {exc}", fatal=True) from exc
    return _Outcome(entry.path, skipped=False, received=received, resumed=resumed)


def _with_retries(path: str, attempt: Callable[[], _T], ctx: _Context) -> _T:
    """Run ``attempt`` up to ``ctx.retries + 1`` times with exponential backoff."""
    attempts = ctx.retries + 1
    last = _AttemptFailed("no attempt made", network=True)
    for number in range(attempts):
        if number and ctx.stop.wait(ctx.backoff * 2 ** (number - 1)):
            raise _Stopped
        try:
            return attempt()
        except _AttemptFailed as exc:
            if exc.final:
                raise _FileFailed(path, str(exc), fatal=False) from exc
            last = exc
    plural = "s" if attempts > 1 else ""
    reason = f"{last} (gave up after {attempts} attempt{plural})"
    raise _FileFailed(path, reason, fatal=last.network) from last


@contextmanager
def _network_errors() -> Iterator[None]:
    """Turn network exceptions into retryable or permanent failures."""
    try:
        yield
    except urllib.error.HTTPError as exc:
        exc.close()
        reason = f"HTTP {exc.code} {exc.reason}"
        raise _AttemptFailed(reason, network=True, final=exc.code not in _RETRY_STATUS) from exc
    except urllib.error.URLError as exc:
        raise _AttemptFailed(f"network error: {exc.reason}", network=True) from exc
    except _NETWORK_ERRORS as exc:
        raise _AttemptFailed(f"network error: {type(exc).__name__}: {exc}", network=True) from exc


def _urlopen(url: str, timeout: float, start: int = 0) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked


def _transfer(entry: ChecksumEntry, part: Path, ctx: _Context) -> tuple[int, bool]:
    """One attempt at bringing ``part`` to the full file; returns (bytes received, resumed)."""
    url = ctx.base_url + urllib.parse.quote(entry.path)
    offset = part.stat().st_size if part.exists() else 0
    with _network_errors():
        response, start, total = _open_from(url, offset, ctx.timeout)
        with response:
            received = _stream(response, part, start, total, entry.path, ctx)
    if total and start + received < total:
        raise _AttemptFailed(f"connection closed after {start + received} of {total} bytes", network=True)
    return received, start > 0


def _open_from(url: str, offset: int, timeout: float) -> tuple[http.client.HTTPResponse, int, int]:
    """Open ``url`` resuming at ``offset`` when the server allows; return (response, start, total)."""
    if offset:
        try:
            response = _urlopen(url, timeout, start=offset)
        except urllib.error.HTTPError as exc:
            if exc.code != 416:  # 416: the .part is not a prefix we can extend
                raise
            exc.close()
        else:
            span = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if response.status == 206 and span is not None and int(span.group(1)) == offset:
                total = int(span.group(3)) if span.group(3) != "*" else 0
                return response, offset, total
            if response.status != 206:  # Range ignored: the body is the whole file
                return response, 0, _content_length(response)
            response.close()  # a 206 for some other range: start over
    response = _urlopen(url, timeout)
    return response, 0, _content_length(response)


def _content_length(response: http.client.HTTPResponse) -> int:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else 0


def _stream(response: http.client.HTTPResponse, part: Path, start: int, total: int, path: str, ctx: _Context) -> int:
    """Write the body to ``part`` (appending after ``start`` bytes); return bytes received."""
    received = 0
    with part.open("ab" if start else "wb") as sink:
        ctx.report(path, start, total)
        while chunk := response.read(_CHUNK):
            if ctx.stop.is_set():
                raise _Stopped
            sink.write(chunk)
            received += len(chunk)
            ctx.report(path, start + received, total)
    return received


def _verify_part(entry: ChecksumEntry, part: Path) -> None:
    actual = _sha256_file(part)
    if actual != entry.sha256:
        part.unlink()
        raise _AttemptFailed(f"sha256 mismatch: expected {entry.sha256}, got {actual}", network=False)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".part")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise DownloadError(f"{path}: cannot write: {exc}") from exc
