"""The run registry: what the federated server did, round by round, in any SQL database.

One interface over any SQLAlchemy URL — a SQLite file beside the run (the default), SQLite in
memory for tests, PostgreSQL for a shared server. Every round is written in one transaction
(its row, its client reports, its checkpoint), so a crash leaves either the whole round or
nothing of it, and a round number is recorded at most once per run.

Malformed arguments (an unknown status, a report without a node id, a bad SHA-256) raise
``ValueError``; problems with the database or its contents (unknown run, duplicate round,
unreachable server) raise ``RegistryError``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, create_engine, func, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, aliased, sessionmaker
from sqlalchemy.pool import StaticPool

from liteheart_core.storage._checks import check_duration, check_node_id, check_reports, isoformat, plain_json
from liteheart_core.storage._sqlite import configure_sqlite, transaction
from liteheart_core.storage.models import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    Base,
    CheckpointRow,
    ClientReportRow,
    RoundRow,
    RunRow,
)

EXPORT_FORMAT = 1
PG_CONNECT_TIMEOUT_S = 10
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RegistryError(RuntimeError):
    """The registry cannot be opened or refuses an operation (unknown run, duplicate round, ...)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Where the global model after a round was saved, and the SHA-256 of that file."""

    run_id: str
    round: int
    path: str
    sha256: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (also for strings that do not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _reason(exc: BaseException, password: str | None) -> str:
    """A one-line, password-free account of a database error."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    if password:
        text = text.replace(password, "***")
    return text


class Registry:
    """Runs, rounds, client reports and checkpoints of the federated server.

    Parameters
    ----------
    url
        Any SQLAlchemy URL: ``sqlite:///path/registry.sqlite``, ``sqlite://`` (in memory, one
        shared connection), ``postgresql+psycopg://user:pass@host:5432/db``. Tables are created
        when missing.
    echo
        Log every SQL statement (SQLAlchemy's ``echo``).

    Raises
    ------
    RegistryError
        The URL does not parse, names an unknown backend or a missing driver, a SQLite file's
        folder does not exist, or the server cannot be reached. The message names the URL with
        its password masked, and the reason.

    Notes
    -----
    SQLite files are opened in WAL mode with foreign keys on and a busy timeout, so another
    process can read (e.g. ``liteheart-server runs show``) while the server writes. Each
    ``session()`` is one real SQLite transaction (the driver's implicit transactions are
    replaced by explicit ``BEGIN``), so reads see one consistent snapshot.
    """

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = mask_url(url)
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError, TypeError) as exc:
            raise RegistryError(f"cannot open registry {self.url}: not a database URL ({exc})") from None
        self._password = parsed.password if isinstance(parsed.password, str) else None
        self._engine = self._make_engine(parsed, echo)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        try:
            self._create_missing_tables()
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise RegistryError(f"cannot open registry {self.url}: {_reason(exc, self._password)}") from exc

    def _make_engine(self, url: URL, echo: bool) -> Engine:
        kwargs: dict[str, Any] = {"echo": echo}
        backend = url.get_backend_name()
        if backend == "sqlite":
            database = url.database or ""
            if database in ("", ":memory:") or url.query.get("mode") == "memory":
                # One connection shared by every session; otherwise each would see its own empty DB.
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            elif not url.query.get("uri"):
                folder = Path(database).expanduser().resolve().parent
                if not folder.is_dir():
                    raise RegistryError(f"cannot open registry {self.url}: folder {folder} does not exist")
        else:
            # A server connection can die between rounds (restart, idle timeout); test it first.
            kwargs["pool_pre_ping"] = True
            if backend == "postgresql" and "connect_timeout" not in url.query:
                kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        try:
            engine = create_engine(url, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            hint = " (pip install 'psycopg[binary]')" if backend == "postgresql" else ""
            raise RegistryError(f"cannot open registry {self.url}: no driver for it{hint}: {exc}") from None
        except (ArgumentError, TypeError, ValueError) as exc:
            raise RegistryError(f"cannot open registry {self.url}: {_reason(exc, self._password)}") from None
        if backend == "sqlite":
            configure_sqlite(engine)
        return engine

    def _create_missing_tables(self) -> None:
        with self._engine.connect() as conn:
            existing = set(inspect(conn).get_table_names())
        if {table.name for table in Base.metadata.sorted_tables} <= existing:
            return  # the common case: no write lock, so opening never waits for a writer
        # Under SQLite's write lock, so two processes creating a new registry cannot collide.
        with self._engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                Base.metadata.create_all(conn)

    @staticmethod
    def default_url(run_dir: Path) -> str:
        """The URL of the SQLite file ``registry.sqlite`` in ``run_dir``."""
        return f"sqlite:///{(Path(run_dir).expanduser().resolve() / 'registry.sqlite').as_posix()}"

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection; the registry is unusable afterwards."""
        self._engine.dispose()

    def session(self, *, write: bool = False) -> AbstractContextManager[Session]:
        """A session that commits when the block succeeds and rolls back when it raises.

        Parameters
        ----------
        write
            On SQLite, take the write lock at the start (``BEGIN IMMEDIATE``) so that a
            read-then-write transaction waits for another writer instead of failing half-way.

        Raises
        ------
        RegistryError
            For any database error, with the reason; the transaction is rolled back.
        """
        return transaction(
            self._sessions, write, lambda exc: RegistryError(f"registry {self.url}: {_reason(exc, self._password)}")
        )

    # --- runs -------------------------------------------------------------------------------

    def create_run(
        self, config: Mapping[str, Any], data_fingerprint: str, run_id: str | None = None, name: str = ""
    ) -> str:
        """Register a new run with status ``running`` and return its id.

        Parameters
        ----------
        config
            The run's configuration (JSON-serialisable; non-finite floats are stored as null).
        data_fingerprint
            Fingerprint of the prepared data the run trains on.
        run_id
            The id to use (letters, digits, ``._-``, at most 64); a short random one when None.
        name
            A human-readable label.

        Raises
        ------
        RegistryError
            ``run_id`` is already taken.
        """
        if run_id is not None and not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
            raise ValueError(f"run id {run_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(data_fingerprint, str):
            raise ValueError(f"data_fingerprint must be a string, not {type(data_fingerprint).__name__}")
        if not isinstance(name, str) or len(name) > 200:
            raise ValueError("name must be a string of at most 200 characters")
        config_json = plain_json(dict(config), "config")
        with self.session(write=True) as session:
            if run_id is None:
                run_id = secrets.token_hex(4)
                while session.get(RunRow, run_id) is not None:
                    run_id = secrets.token_hex(4)
            elif session.get(RunRow, run_id) is not None:
                raise RegistryError(f"run {run_id!r} already exists in {self.url}")
            now = _utcnow()
            session.add(
                RunRow(
                    id=run_id,
                    name=name,
                    status="running",
                    config=config_json,
                    data_fingerprint=data_fingerprint,
                    created_at=now,
                    updated_at=now,
                )
            )
        return run_id

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's fields as a dict, or None when there is no such run."""
        with self.session() as session:
            run = session.get(RunRow, run_id)
            return None if run is None else _run_dict(run)

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """Move a run to ``status``.

        Terminal states (completed, failed, interrupted) set ``finished_at``; going back to
        ``running`` (a resumed run) clears ``finished_at`` and ``error``.

        Raises
        ------
        ValueError
            ``status`` is not one of running, completed, failed, interrupted.
        RegistryError
            No such run.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"status {status!r}: expected one of {', '.join(RUN_STATUSES)}")
        if error is not None and not isinstance(error, str):
            raise ValueError(f"error must be a string or None, not {type(error).__name__}")
        with self.session(write=True) as session:
            run = self._run_or_raise(session, run_id)
            now = _utcnow()
            run.status = status
            run.updated_at = now
            run.finished_at = now if status in TERMINAL_STATUSES else None
            run.error = error

    # --- rounds -----------------------------------------------------------------------------

    def record_round(
        self,
        run_id: str,
        number: int,
        *,
        train_metrics: Mapping[str, Any],
        central_metrics: Mapping[str, Any],
        participants: Sequence[str | int],
        duration_s: float,
        client_reports: Sequence[Mapping[str, Any]],
        checkpoint: CheckpointInfo | None,
        started_at: datetime | None = None,
    ) -> None:
        """Record one completed round — its row, client reports and checkpoint — in one transaction.

        Parameters
        ----------
        run_id, number
            The run (must be ``running``) and the round number (1, 2, ...).
        train_metrics, central_metrics
            Aggregated client training metrics and the server-side evaluation.
        participants
            Node ids of the clients sampled in the round.
        duration_s
            Wall time of the round.
        client_reports
            One dict per client: ``node_id``, ``status`` ("ok" or "failed"), ``num_examples``
            (default 0), ``metrics`` (default {}), ``reason`` (why it failed; default None).
        checkpoint
            The global model saved after this round, or None.
        started_at
            When the round began (timezone-aware); ``now - duration_s`` when None.

        Raises
        ------
        ValueError
            A malformed argument; nothing is written.
        RegistryError
            Unknown run, run not running, round already recorded, or a database error. Nothing
            of the round is kept.
        """
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"round number must be an integer >= 1, not {number!r}")
        duration = check_duration(duration_s)
        if started_at is not None and started_at.tzinfo is None:
            raise ValueError("started_at must be timezone-aware")
        reports = check_reports(client_reports)
        if isinstance(participants, (str, bytes)):
            raise ValueError("participants must be a list of node ids, not a string")
        nodes = [check_node_id(p, "participants") for p in participants]
        round_row = RoundRow(
            run_id=run_id,
            number=number,
            duration_s=duration,
            train_metrics=plain_json(dict(train_metrics), "train_metrics"),
            central_metrics=plain_json(dict(central_metrics), "central_metrics"),
            participants=nodes,
            n_failures=sum(r["status"] == "failed" for r in reports),
        )
        checkpoint_row = None if checkpoint is None else _checkpoint_row(checkpoint, run_id, number)

        with self.session(write=True) as session:
            run = self._run_or_raise(session, run_id)
            if run.status != "running":
                raise RegistryError(f"run {run_id!r} is {run.status}: set it running before recording rounds")
            taken = session.scalar(select(RoundRow.id).where(RoundRow.run_id == run_id, RoundRow.number == number))
            if taken is not None:
                raise RegistryError(f"round {number} of run {run_id!r} is already recorded")
            now = _utcnow()
            round_row.started_at = started_at or now - timedelta(seconds=duration)
            session.add(round_row)
            _flush(session, run_id, number)  # the round first: reports and checkpoint point at it
            session.add_all(ClientReportRow(run_id=run_id, round=number, **r) for r in reports)
            _flush(session, run_id, number)
            if checkpoint_row is not None:
                checkpoint_row.created_at = now
                session.add(checkpoint_row)
            run.updated_at = now
            _flush(session, run_id, number)

    def last_round(self, run_id: str) -> int:
        """The highest recorded round number of the run; 0 when none (or no such run)."""
        with self.session() as session:
            last = session.scalar(select(func.max(RoundRow.number)).where(RoundRow.run_id == run_id))
        return int(last or 0)

    def last_checkpoint(self, run_id: str) -> CheckpointInfo | None:
        """The checkpoint of the latest round that has one, or None."""
        with self.session() as session:
            row = session.scalars(
                select(CheckpointRow)
                .where(CheckpointRow.run_id == run_id)
                .order_by(CheckpointRow.round.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            return CheckpointInfo(run_id=row.run_id, round=row.round, path=row.path, sha256=row.sha256)

    # --- reading ----------------------------------------------------------------------------

    def list_runs(self) -> list[dict[str, Any]]:
        """All runs, newest first: id, name, status, created_at, finished_at, rounds, macro_f1.

        ``rounds`` counts the recorded rounds; ``macro_f1`` is ``central_metrics["macro_f1"]``
        of the latest round (None when absent).
        """
        stats = (
            select(RoundRow.run_id, func.count().label("n"), func.max(RoundRow.number).label("last"))
            .group_by(RoundRow.run_id)
            .subquery()
        )
        last = aliased(RoundRow)
        query = (
            select(RunRow, stats.c.n, last.central_metrics)
            .outerjoin(stats, stats.c.run_id == RunRow.id)
            .outerjoin(last, and_(last.run_id == RunRow.id, last.number == stats.c.last))
            .order_by(RunRow.created_at.desc(), RunRow.id.desc())
        )
        with self.session() as session:
            rows = session.execute(query).all()
        return [
            {
                "id": run.id,
                "name": run.name,
                "status": run.status,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "rounds": int(n or 0),
                "macro_f1": (metrics or {}).get("macro_f1"),
            }
            for run, n, metrics in rows
        ]

    def show_run(self, run_id: str) -> dict[str, Any]:
        """The run with every round (metrics, client reports, checkpoint), read in one snapshot.

        Returns
        -------
        dict
            ``{"run": {...}, "rounds": [{..., "client_reports": [...], "checkpoint": {...} | None}],
            "checkpoints": [...]}``, rounds in order.

        Raises
        ------
        RegistryError
            No such run.
        """
        with self.session() as session:
            run = self._run_or_raise(session, run_id)
            rounds = session.scalars(select(RoundRow).where(RoundRow.run_id == run_id).order_by(RoundRow.number)).all()
            reports = session.scalars(
                select(ClientReportRow)
                .where(ClientReportRow.run_id == run_id)
                .order_by(ClientReportRow.round, ClientReportRow.id)
            ).all()
            checkpoints = session.scalars(
                select(CheckpointRow).where(CheckpointRow.run_id == run_id).order_by(CheckpointRow.round)
            ).all()
            by_round: dict[int, list[dict[str, Any]]] = {}
            for rep in reports:
                by_round.setdefault(rep.round, []).append(
                    {
                        "node_id": rep.node_id,
                        "status": rep.status,
                        "num_examples": rep.num_examples,
                        "metrics": rep.metrics,
                        "reason": rep.reason,
                    }
                )
            ckpts = {
                c.round: {"round": c.round, "path": c.path, "sha256": c.sha256, "created_at": c.created_at}
                for c in checkpoints
            }
            return {
                "run": _run_dict(run),
                "rounds": [
                    {
                        "number": r.number,
                        "started_at": r.started_at,
                        "duration_s": r.duration_s,
                        "train_metrics": r.train_metrics,
                        "central_metrics": r.central_metrics,
                        "participants": r.participants,
                        "n_failures": r.n_failures,
                        "client_reports": by_round.get(r.number, []),
                        "checkpoint": ckpts.get(r.number),
                    }
                    for r in rounds
                ],
                "checkpoints": list(ckpts.values()),
            }

    def export_run(self, run_id: str) -> dict[str, Any]:
        """Everything ``show_run`` returns, JSON-serialisable (timestamps as ISO 8601 strings)."""
        shown = self.show_run(run_id)
        exported: dict[str, Any] = isoformat({"format": EXPORT_FORMAT, "exported_at": _utcnow(), **shown})
        return exported

    def _run_or_raise(self, session: Session, run_id: str) -> RunRow:
        run = session.get(RunRow, run_id)
        if run is None:
            known = session.scalars(select(RunRow.id).order_by(RunRow.created_at.desc()).limit(5)).all()
            hint = f"latest: {', '.join(known)}" if known else "it has no runs"
            raise RegistryError(f"no run {run_id!r} in {self.url} ({hint})")
        return run


# --- helpers ---------------------------------------------------------------------------------


def _flush(session: Session, run_id: str, number: int) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise RegistryError(
            f"round {number} of run {run_id!r} breaks a constraint, nothing of it was kept: {_reason(exc, None)}"
        ) from exc


def _run_dict(run: RunRow) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "config": run.config,
        "data_fingerprint": run.data_fingerprint,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "error": run.error,
    }


def _checkpoint_row(info: CheckpointInfo, run_id: str, number: int) -> CheckpointRow:
    if not isinstance(info, CheckpointInfo):
        raise ValueError(f"checkpoint must be a CheckpointInfo, not {type(info).__name__}")
    if info.run_id != run_id or info.round != number:
        raise ValueError(
            f"checkpoint belongs to run {info.run_id!r} round {info.round}, not run {run_id!r} round {number}"
        )
    if not isinstance(info.sha256, str) or not _SHA256.fullmatch(info.sha256):
        raise ValueError(f"checkpoint sha256 {info.sha256!r} is not 64 lowercase hex digits")
    if not isinstance(info.path, str) or not info.path:
        raise ValueError("checkpoint path must be a non-empty string")
    return CheckpointRow(run_id=run_id, round=number, path=info.path, sha256=info.sha256)
