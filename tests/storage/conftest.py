"""Backends for the registry suite: every test taking ``registry`` runs on each of them.

* ``sqlite-memory`` — ``sqlite://``, one shared connection;
* ``sqlite-file`` — a file in ``tmp_path``;
* ``postgresql`` — a fresh schema per test in the database of ``$LITEHEART_PG_URL``
  (``source .ci/postgres.sh`` starts one), dropped afterwards. Without that variable the case
  is skipped — unless ``$CI`` is set, where it fails, so CI cannot lose PostgreSQL coverage
  without anyone noticing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from liteheart_core.storage import Registry, mask_url

ALL_BACKENDS = ("sqlite-memory", "sqlite-file", "postgresql")
SHARED_BACKENDS = ("sqlite-file", "postgresql")  # where a second connection sees the same data


def pg_base_url() -> str:
    """``$LITEHEART_PG_URL``; skips the test when unset (fails it when ``$CI`` is set)."""
    url = os.environ.get("LITEHEART_PG_URL", "")
    if not url:
        message = "LITEHEART_PG_URL is not set; `source .ci/postgres.sh` to test the PostgreSQL backend"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: PostgreSQL coverage is required there)", pytrace=False)
        pytest.skip(message)
    return url


def _pg_schema_url(request: pytest.FixtureRequest) -> str:
    """A URL whose connections see only a new, empty schema; the schema goes at teardown."""
    base = pg_base_url()
    schema = f"liteheart_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {mask_url(base)} is not usable: {exc}", pytrace=False)

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    request.addfinalizer(drop)
    # libpq's `options` sets search_path per connection, so the registry creates its tables there.
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def _url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite-memory":
        return "sqlite://"
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    return _pg_schema_url(request)


@pytest.fixture(params=ALL_BACKENDS)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty registry on each backend."""
    return _url_for(request.param, request, tmp_path)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like ``registry_url``, for backends that several connections can share."""
    return _url_for(request.param, request, tmp_path)


@pytest.fixture
def pg_url() -> str:
    """``$LITEHEART_PG_URL`` itself, for PostgreSQL-only tests (skip/fail as above)."""
    return pg_base_url()


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    """An open, empty registry on each backend; closed afterwards."""
    reg = Registry(registry_url)
    yield reg
    reg.close()
