"""SQLite connection set-up: WAL, foreign keys, busy timeout and real transactions."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

BUSY_TIMEOUT_MS = 10_000


def configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys and a busy timeout on every connection; explicit transactions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module's implicit BEGIN (only before writes) would leave reads outside
        # any transaction; take over and emit BEGIN ourselves in the "begin" hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            enable_wal(cursor)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch to WAL (persistent in the file; stays "memory" for in-memory databases).

    The switch needs the file to itself, and SQLite reports "database is locked" at once
    rather than calling the busy handler, so processes opening a new registry together retry.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def transaction(
    sessions: Callable[[], Session], write: bool, wrap: Callable[[SQLAlchemyError], Exception]
) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises.

    ``write`` takes SQLite's write lock at the start (``BEGIN IMMEDIATE``) so a
    read-then-write transaction waits for another writer instead of failing half-way;
    ``wrap`` turns a database error into the caller's own error type (the cause is kept).
    """
    session = sessions()
    try:
        if write:
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise wrap(exc) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
