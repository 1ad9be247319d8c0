"""ORM tables of the run registry (SQLAlchemy 2.0 typed models).

Four tables: ``runs``; ``rounds``, one row per completed federated round, unique per
``(run_id, number)``; ``client_reports``, one row per client and round; ``checkpoints``, at most
one per round. Reports and checkpoints point at their round through a composite foreign key, so
neither can exist without the round it belongs to. JSON columns use SQLAlchemy's portable
``JSON`` type (TEXT on SQLite, ``json`` on PostgreSQL).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

RUN_STATUSES = ("running", "completed", "failed", "interrupted")
TERMINAL_STATUSES = ("completed", "failed", "interrupted")
REPORT_STATUSES = ("ok", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no timezone-aware type and hands back naive datetimes; storing UTC and
    re-attaching UTC on the way out gives the same aware values SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: registry timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the registry tables."""

    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class RunRow(Base):
    """One training run: its configuration, the data it saw and where it stands."""

    __tablename__ = "runs"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="ck_runs_status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    data_fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    rounds: Mapped[list[RoundRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True, order_by="RoundRow.number"
    )


class RoundRow(Base):
    """One completed federated round of a run; recorded exactly once."""

    __tablename__ = "rounds"
    __table_args__ = (
        UniqueConstraint("run_id", "number", name="uq_rounds_run_number"),
        CheckConstraint("number >= 1", name="ck_rounds_number"),
        CheckConstraint("n_failures >= 0", name="ck_rounds_failures"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.id", ondelete="CASCADE"))
    number: Mapped[int]
    started_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    train_metrics: Mapped[dict[str, Any]]
    central_metrics: Mapped[dict[str, Any]]
    participants: Mapped[list[Any]]
    n_failures: Mapped[int] = mapped_column(default=0)

    run: Mapped[RunRow] = relationship(back_populates="rounds")


class ClientReportRow(Base):
    """What one client reported (or why it failed) in one round."""

    __tablename__ = "client_reports"
    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "round"], ["rounds.run_id", "rounds.number"], ondelete="CASCADE", name="fk_client_reports_round"
        ),
        UniqueConstraint("run_id", "round", "node_id", name="uq_client_reports_node"),
        CheckConstraint(_in("status", REPORT_STATUSES), name="ck_client_reports_status"),
        CheckConstraint("num_examples >= 0", name="ck_client_reports_examples"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    round: Mapped[int]
    node_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    num_examples: Mapped[int] = mapped_column(default=0)
    metrics: Mapped[dict[str, Any]]
    reason: Mapped[str | None] = mapped_column(Text)


class CheckpointRow(Base):
    """The global model saved after a round: where it lies and its SHA-256."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "round"], ["rounds.run_id", "rounds.number"], ondelete="CASCADE", name="fk_checkpoints_round"
        ),
        UniqueConstraint("run_id", "round", name="uq_checkpoints_round"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64))
    round: Mapped[int]
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
