"""The device's record store: every recording it received, prepared once, in one SQL database.

One SQLite file per device by default (``~/.liteheart/store.sqlite``, or ``$LITEHEART_STORE``),
any SQLAlchemy URL otherwise. Each row keeps a recording's id, content hash, arrival time,
source path, signal-quality score and flags, the prepared float32 windows ``[W, 12 or 1, T]``
(so training never re-reads WFDB), their P/QRS/T region codes, a multi-hot label over the
store's task classes when one was given, and how often and when it was used in training.

Crash safety: a recording is added in one transaction (``BEGIN IMMEDIATE`` on SQLite, WAL
journal), keyed by ``(record_id, content_hash)``. A process killed mid-ingest leaves every
committed recording complete and nothing of the one in flight; running the ingest again
skips what is there and adds the rest. The same file under the same name is never added
twice; a file whose bytes changed is a new recording.

Retention (``max_records`` and/or ``max_age``), applied in the same transaction as every
addition, so the bound holds at every commit:

1. every recording that arrived more than ``max_age`` ago is evicted;
2. while more than ``max_records`` recordings hold a signal, evict, in this order:
   unusable (quality-flagged) recordings; then unlabelled ones; then labelled ones; within
   each group the least recently *touched* first (last used in training, or arrival when
   never used), ties by arrival order.

Eviction drops the signal and regions but keeps the row (about 0.3 kB) as a tombstone, so
ingesting the same folder again does not bring an evicted recording back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    Select,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from liteheart_core.continual import Candidate, StoredBatch
from liteheart_core.data.incoming import PreparedRecording, task_classes
from liteheart_core.quality import QualityReport
from liteheart_core.storage import mask_url
from liteheart_core.storage._sqlite import configure_sqlite, transaction
from liteheart_core.storage.models import UTCDateTime

STORE_FORMAT = 1
UNREADABLE = "unreadable"  # the flag of a recording that could not be read or prepared


class StoreError(RuntimeError):
    """The store cannot be opened or refuses an operation; the message says which store and why."""


class StoreBase(DeclarativeBase):
    """Declarative base of the record-store tables."""

    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class StoreInfoRow(StoreBase):
    """The store's one settings row: task, classes, preparation settings, retention."""

    __tablename__ = "store_info"
    __table_args__ = (CheckConstraint("id = 1", name="ck_store_info_single"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    format: Mapped[int]
    task: Mapped[str] = mapped_column(String(64))
    classes: Mapped[list[Any]]
    prep: Mapped[dict[str, Any]]
    max_records: Mapped[int | None]
    max_age_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime]


def _settings(s: Session) -> StoreInfoRow:
    """The store's settings row, which every store has from its creation on."""
    info = s.get(StoreInfoRow, 1)
    if info is None:
        raise StoreError("the store has no settings row: it is not a LiteHeart record store")
    return info


def _count(s: Session, query: Select[Any]) -> int:
    """A ``count(*)`` query's number (a count is never NULL; 0 keeps the type checker and the reader sure)."""
    return int(s.scalar(query) or 0)


class RecordRow(StoreBase):
    """One received recording (a tombstone once evicted: no signal, ``evicted_at`` set)."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("record_id", "content_hash", name="uq_records_key"),
        CheckConstraint("n_leads IS NULL OR n_leads IN (1, 12)", name="ck_records_leads"),
        CheckConstraint("times_used >= 0", name="ck_records_used"),
        # A usable recording always has its signal, unless it was evicted.
        CheckConstraint("NOT usable OR signal IS NOT NULL OR evicted_at IS NOT NULL", name="ck_records_usable"),
        Index("ix_records_held", "evicted_at", "usable"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    arrived_at: Mapped[datetime] = mapped_column(index=True)
    source_path: Mapped[str] = mapped_column(Text)
    n_leads: Mapped[int | None]
    n_windows: Mapped[int | None]
    length: Mapped[int | None]
    fs: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    signal: Mapped[bytes | None] = mapped_column(LargeBinary)
    regions: Mapped[bytes | None] = mapped_column(LargeBinary)
    usable: Mapped[bool] = mapped_column(Boolean)
    quality_score: Mapped[float] = mapped_column(Float)
    quality_flags: Mapped[dict[str, Any]]
    heart_rate: Mapped[float | None] = mapped_column(Float)
    label: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    label_source: Mapped[str | None] = mapped_column(String(16))
    times_used: Mapped[int] = mapped_column(default=0)
    last_used_at: Mapped[datetime | None]
    last_used_round: Mapped[int | None]
    evicted_at: Mapped[datetime | None]


class StateRow(StoreBase):
    """Named client state kept beside the records (e.g. the replay buffer)."""

    __tablename__ = "client_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


@dataclass(frozen=True)
class NewRecording:
    """A recording ready to be stored: what the ingest pipeline learnt about one file.

    ``prepared`` and ``quality`` are None when the file could not be read or prepared;
    ``error`` then says why, and the recording is stored as unusable with that reason.
    """

    record_id: str
    content_hash: str
    source_path: str
    quality: QualityReport | None
    prepared: PreparedRecording | None
    error: str | None = None
    label: np.ndarray | None = None
    label_source: str | None = None

    def __post_init__(self) -> None:
        if not self.record_id or len(self.record_id) > 200:
            raise ValueError(f"record id {self.record_id!r} must be 1-200 characters")
        if len(self.content_hash) != 64:
            raise ValueError(f"record {self.record_id}: content hash must be 64 hex characters")
        if (self.prepared is None) != (self.error is not None and self.quality is None):
            raise ValueError(f"record {self.record_id}: give either prepared windows and a quality report, or an error")


@dataclass(frozen=True)
class AddResult:
    """Outcome of :meth:`RecordStore.add`."""

    status: str  # "added" or "duplicate"
    key: int
    evicted: tuple[int, ...] = ()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_store_url() -> str:
    """``$LITEHEART_STORE`` (a URL or a file path), else ``~/.liteheart/store.sqlite``."""
    env = os.environ.get("LITEHEART_STORE", "")
    return store_url(env) if env else store_url(Path.home() / ".liteheart" / "store.sqlite")


def store_url(value: str | Path) -> str:
    """A URL as given, or a file path turned into a SQLite URL."""
    text = str(value)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve().as_posix()}"


class RecordStore:
    """The record store of one device.

    Parameters
    ----------
    url
        Any SQLAlchemy URL, or a file path (a SQLite file); None: :func:`default_store_url`.
    task, classes
        The label task; a new store takes ``task`` (default ``superdiagnostic``) and its
        classes, an existing one must agree with a task given here.
    prep
        Preparation settings recorded with a new store (PrepSettings fields as a dict).

    Raises
    ------
    StoreError
        The URL does not parse or has no driver, the folder of a SQLite file is missing and
        cannot be created, the database cannot be reached, or the task disagrees.
    """

    def __init__(
        self,
        url: str | Path | None = None,
        task: str | None = None,
        classes: list[str] | None = None,
        prep: dict[str, Any] | None = None,
        echo: bool = False,
    ) -> None:
        raw = store_url(url) if url is not None else default_store_url()
        self.url = mask_url(raw)
        try:
            parsed = make_url(raw)
        except (ArgumentError, ValueError) as exc:
            raise StoreError(f"cannot open store {self.url}: not a database URL ({exc})") from None
        self._engine = self._make_engine(parsed, echo, default=url is None)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        try:
            self._create_tables()
            self._info = self._init_info(task, classes, prep)
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise StoreError(f"cannot open store {self.url}: {_reason(exc)}") from exc
        except StoreError:
            self._engine.dispose()
            raise

    # --- set-up -----------------------------------------------------------------------------

    def _make_engine(self, url: URL, echo: bool, default: bool) -> Engine:
        kwargs: dict[str, Any] = {"echo": echo}
        backend = url.get_backend_name()
        if backend == "sqlite":
            database = url.database or ""
            if database in ("", ":memory:") or url.query.get("mode") == "memory":
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            elif not url.query.get("uri"):
                folder = Path(database).expanduser().resolve().parent
                if default:
                    folder.mkdir(parents=True, exist_ok=True)
                if not folder.is_dir():
                    raise StoreError(f"cannot open store {self.url}: folder {folder} does not exist")
        else:
            kwargs["pool_pre_ping"] = True
        try:
            engine = create_engine(url, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            raise StoreError(f"cannot open store {self.url}: no driver for it: {exc}") from None
        except (ArgumentError, TypeError, ValueError) as exc:
            raise StoreError(f"cannot open store {self.url}: {exc}") from None
        if backend == "sqlite":
            configure_sqlite(engine)
        return engine

    def _create_tables(self) -> None:
        with self._engine.connect() as conn:
            existing = set(inspect(conn).get_table_names())
        if {t.name for t in StoreBase.metadata.sorted_tables} <= existing:
            return
        with self._engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                StoreBase.metadata.create_all(conn)

    def _init_info(self, task: str | None, classes: list[str] | None, prep: dict[str, Any] | None) -> dict[str, Any]:
        with self.session(write=True) as s:
            info = s.get(StoreInfoRow, 1)
            if info is None:
                task = task or "superdiagnostic"
                classes = list(classes) if classes is not None else task_classes(task)
                if not classes or len(set(classes)) != len(classes):
                    raise StoreError(f"store {self.url}: classes must be distinct and non-empty, got {classes}")
                info = StoreInfoRow(
                    id=1,
                    format=STORE_FORMAT,
                    task=task,
                    classes=classes,
                    prep=dict(prep or {}),
                    max_records=None,
                    max_age_s=None,
                    created_at=_utcnow(),
                )
                s.add(info)
            else:
                if info.format != STORE_FORMAT:
                    raise StoreError(f"store {self.url} has format {info.format}; this version reads {STORE_FORMAT}")
                if task is not None and task != info.task:
                    raise StoreError(f"store {self.url} holds {info.task!r} labels, not {task!r}")
                if classes is not None and list(classes) != list(info.classes):
                    raise StoreError(f"store {self.url} has classes {info.classes}, not {list(classes)}")
            return {"task": info.task, "classes": list(info.classes), "prep": dict(info.prep)}

    def __repr__(self) -> str:
        return f"RecordStore({self.url!r})"

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the store is unusable afterwards."""
        self._engine.dispose()

    @property
    def task(self) -> str:
        return str(self._info["task"])

    @property
    def classes(self) -> list[str]:
        return list(self._info["classes"])

    @property
    def prep(self) -> dict[str, Any]:
        """The preparation settings (PrepSettings fields) the store was created with."""
        return dict(self._info["prep"])

    def session(self, *, write: bool = False) -> AbstractContextManager[Session]:
        """A session that commits when the block succeeds and rolls back when it raises.

        ``write`` takes SQLite's write lock at the start (``BEGIN IMMEDIATE``), so a
        read-then-write transaction waits for another writer instead of failing half-way.
        Database errors become :class:`StoreError` naming the store and the reason.
        """
        return transaction(self._sessions, write, lambda exc: StoreError(f"store {self.url}: {_reason(exc)}"))

    # --- ingest -----------------------------------------------------------------------------

    def key_of(self, record_id: str, content_hash: str) -> int | None:
        """The key of this exact recording (same id, same bytes), or None (tombstones count as stored)."""
        with self.session() as s:
            key = s.scalar(
                select(RecordRow.id).where(RecordRow.record_id == record_id, RecordRow.content_hash == content_hash)
            )
        return None if key is None else int(key)

    def add(self, rec: NewRecording, now: datetime | None = None) -> AddResult:
        """Store one recording and apply retention, in one transaction; a known one is a duplicate.

        Raises
        ------
        ValueError
            The prepared windows do not fit this store (lead count, a label of the wrong length).
        StoreError
            A database error; nothing of the recording is stored.
        """
        now = now or _utcnow()
        row = self._row(rec, now)
        with self.session(write=True) as s:
            known = s.scalar(
                select(RecordRow.id).where(
                    RecordRow.record_id == rec.record_id, RecordRow.content_hash == rec.content_hash
                )
            )
            if known is not None:
                return AddResult("duplicate", int(known))
            s.add(row)
            try:
                s.flush()
            except IntegrityError:  # another process added it between our check and insert
                s.rollback()
                known = s.scalar(
                    select(RecordRow.id).where(
                        RecordRow.record_id == rec.record_id, RecordRow.content_hash == rec.content_hash
                    )
                )
                return AddResult("duplicate", int(known or 0))  # the row the other process added
            evicted = self._enforce(s, now)
            return AddResult("added", int(row.id), tuple(evicted))

    def _row(self, rec: NewRecording, now: datetime) -> RecordRow:
        label = None
        if rec.label is not None:
            y = np.asarray(rec.label)
            if y.shape != (len(self.classes),) or not np.isin(y, (0, 1)).all():
                raise ValueError(
                    f"record {rec.record_id}: label must be 0/1 over {len(self.classes)} classes "
                    f"({', '.join(self.classes)}), got {y.tolist()}"
                )
            label = [int(v) for v in y] if y.any() else None
        if rec.prepared is None:
            return RecordRow(
                record_id=rec.record_id,
                content_hash=rec.content_hash,
                arrived_at=now,
                source_path=rec.source_path,
                usable=False,
                quality_score=0.0,
                quality_flags={UNREADABLE: rec.error},
                label=label,
                label_source=rec.label_source if label else None,
                times_used=0,
            )
        w = np.ascontiguousarray(rec.prepared.windows, dtype=np.float32)
        if w.ndim != 3 or w.shape[1] not in (1, 12):
            raise ValueError(f"record {rec.record_id}: windows must be [W, 12 or 1, T], got {w.shape}")
        regions = None
        if rec.prepared.regions is not None:
            r = np.ascontiguousarray(rec.prepared.regions, dtype=np.int8)
            if r.shape != (w.shape[0], w.shape[2]):
                raise ValueError(f"record {rec.record_id}: regions {r.shape} do not match windows {w.shape}")
            regions = r.tobytes()
        q = rec.quality
        hr = q.heart_rate if q is not None and np.isfinite(q.heart_rate) else None
        return RecordRow(
            record_id=rec.record_id,
            content_hash=rec.content_hash,
            arrived_at=now,
            source_path=rec.source_path,
            n_leads=int(w.shape[1]),
            n_windows=int(w.shape[0]),
            length=int(w.shape[2]),
            fs=float(self._info["prep"].get("fs", 100)),
            seconds=q.seconds if q is not None else None,
            signal=w.tobytes(),
            regions=regions,
            usable=bool(q is not None and q.usable),
            quality_score=float(q.score if q else 0.0),
            quality_flags=dict(q.flags) if q is not None else {},
            heart_rate=hr,
            label=label,
            label_source=rec.label_source if label else None,
            times_used=0,
        )

    # --- retention --------------------------------------------------------------------------

    def set_retention(
        self, max_records: int | None = None, max_age: timedelta | None = None, now: datetime | None = None
    ) -> list[int]:
        """Set the retention bound (None: no bound) and apply it at once; returns the evicted keys."""
        if max_records is not None and max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if max_age is not None and max_age.total_seconds() <= 0:
            raise ValueError(f"max_age must be positive, got {max_age}")
        with self.session(write=True) as s:
            info = _settings(s)
            info.max_records = max_records
            info.max_age_s = max_age.total_seconds() if max_age is not None else None
            s.flush()
            return self._enforce(s, now or _utcnow())

    def enforce_retention(self, now: datetime | None = None) -> list[int]:
        """Apply the stored retention bound now; returns the evicted keys."""
        with self.session(write=True) as s:
            return self._enforce(s, now or _utcnow())

    def _enforce(self, s: Session, now: datetime) -> list[int]:
        info = _settings(s)
        held = (RecordRow.evicted_at.is_(None)) & (RecordRow.signal.is_not(None))
        victims: list[int] = []
        if info.max_age_s is not None:
            cutoff = now - timedelta(seconds=info.max_age_s)
            victims += list(s.scalars(select(RecordRow.id).where(held, RecordRow.arrived_at < cutoff)))
        if info.max_records is not None:
            count = _count(s, select(func.count()).select_from(RecordRow).where(held)) - len(victims)
            excess = count - info.max_records
            if excess > 0:
                group = case((RecordRow.usable.is_(False), 0), (RecordRow.label.is_(None), 1), else_=2)
                touched = func.coalesce(RecordRow.last_used_at, RecordRow.arrived_at)
                query = select(RecordRow.id).where(held)
                if victims:
                    query = query.where(RecordRow.id.not_in(victims))
                victims += list(s.scalars(query.order_by(group, touched, RecordRow.id).limit(excess)))
        if victims:
            s.execute(
                update(RecordRow).where(RecordRow.id.in_(victims)).values(signal=None, regions=None, evicted_at=now)
            )
        return [int(v) for v in victims]

    # --- training ---------------------------------------------------------------------------

    def candidates(self, n_leads: int = 12) -> list[Candidate]:
        """Usable recordings holding a signal with ``n_leads`` leads, in arrival order."""
        with self.session() as s:
            rows = s.execute(
                select(RecordRow.id, RecordRow.label, RecordRow.times_used)
                .where(
                    RecordRow.usable.is_(True),
                    RecordRow.evicted_at.is_(None),
                    RecordRow.signal.is_not(None),
                    RecordRow.n_leads == n_leads,
                )
                .order_by(RecordRow.id)
            ).all()
        return [
            Candidate(int(k), None if lab is None else np.asarray(lab, dtype=np.uint8), int(used))
            for k, lab, used in rows
        ]

    def load(self, keys: Sequence[int]) -> StoredBatch:
        """The windows, labels and regions of ``keys`` (one row per window, in the order given).

        Raises
        ------
        ValueError
            A key is unknown, evicted or unusable (the message names the record and why),
            or the recordings differ in leads or length.
        """
        keys = [int(k) for k in keys]
        with self.session() as s:
            rows = {r.id: r for r in s.scalars(select(RecordRow).where(RecordRow.id.in_(keys)))}
        xs, ys, lab, regs, of = [], [], [], [], []
        shape = None
        for k in keys:
            r = rows.get(k)
            if r is None:
                raise ValueError(f"store {self.url}: no recording with key {k}")
            if not r.usable:
                reasons = "; ".join(f"{f}: {why}" for f, why in r.quality_flags.items())
                raise ValueError(f"record {r.record_id} (key {k}) is unusable and never trains: {reasons}")
            if r.signal is None:
                raise ValueError(f"record {r.record_id} (key {k}) was evicted at {r.evicted_at}")
            if r.n_windows is None or r.n_leads is None or r.length is None:  # the check constraints forbid it
                raise StoreError(f"record {r.record_id} (key {k}) holds a signal without its shape")
            this = (r.n_leads, r.length)
            if shape is not None and this != shape:
                raise ValueError(
                    f"record {r.record_id}: {r.n_leads} leads x {r.length} samples, unlike the others "
                    f"({shape[0]} x {shape[1]})"
                )
            shape = this
            w = np.frombuffer(r.signal, dtype=np.float32).reshape(r.n_windows, r.n_leads, r.length)
            xs.append(w)
            y = np.zeros(len(self.classes), dtype=np.uint8) if r.label is None else np.asarray(r.label, np.uint8)
            ys.append(np.repeat(y[None], r.n_windows, axis=0))
            lab += [r.label is not None] * r.n_windows
            regs.append(
                None if r.regions is None else np.frombuffer(r.regions, dtype=np.int8).reshape(r.n_windows, r.length)
            )
            of += [k] * r.n_windows
        if not xs:
            raise ValueError(f"store {self.url}: no keys to load")
        regions = None if any(g is None for g in regs) else np.concatenate([g for g in regs if g is not None])
        return StoredBatch(
            keys=np.asarray(of, dtype=np.int64),
            x=np.concatenate(xs),
            y=np.concatenate(ys),
            labelled=np.asarray(lab, dtype=bool),
            regions=regions,
            fs=float(self._info["prep"].get("fs", 100)),
        )

    def mark_used(self, keys: Sequence[int], round_number: int, now: datetime | None = None) -> None:
        """Count one more training use of each key (all in one transaction)."""
        keys = sorted({int(k) for k in keys})
        if not keys:
            return
        now = now or _utcnow()
        with self.session(write=True) as s:
            found = _count(s, select(func.count()).select_from(RecordRow).where(RecordRow.id.in_(keys)))
            if found != len(keys):
                raise ValueError(f"store {self.url}: {len(keys) - found} of the keys are unknown")
            s.execute(
                update(RecordRow)
                .where(RecordRow.id.in_(keys))
                .values(times_used=RecordRow.times_used + 1, last_used_at=now, last_used_round=round_number)
            )

    # --- state and summaries ----------------------------------------------------------------

    def get_state(self, name: str) -> dict[str, Any] | None:
        with self.session() as s:
            row = s.get(StateRow, name)
            return None if row is None else dict(row.value)

    def set_state(self, name: str, value: dict[str, Any]) -> None:
        with self.session(write=True) as s:
            row = s.get(StateRow, name)
            if row is None:
                s.add(StateRow(name=name, value=value, updated_at=_utcnow()))
            else:
                row.value, row.updated_at = value, _utcnow()

    def rows(self) -> list[dict[str, Any]]:
        """Every recording's metadata (no signals), in arrival order."""
        cols = [c for c in RecordRow.__table__.columns if c.name not in ("signal", "regions")]
        with self.session() as s:
            result = (
                s.execute(select(*cols, (RecordRow.signal.is_not(None)).label("held")).order_by(RecordRow.id))
                .mappings()
                .all()
            )
        return [dict(r) for r in result]

    def info(self) -> dict[str, Any]:
        """Counts, flags, labels, usage, storage and the retention bound."""
        held = (RecordRow.evicted_at.is_(None)) & (RecordRow.signal.is_not(None))
        with self.session() as s:
            inf = _settings(s)
            total = _count(s, select(func.count()).select_from(RecordRow))
            n_held = _count(s, select(func.count()).select_from(RecordRow).where(held))
            usable = _count(s, select(func.count()).select_from(RecordRow).where(held, RecordRow.usable.is_(True)))
            evicted = _count(s, select(func.count()).select_from(RecordRow).where(RecordRow.evicted_at.is_not(None)))
            nbytes = s.scalar(select(func.coalesce(func.sum(func.length(RecordRow.signal)), 0)))
            first, last = s.execute(select(func.min(RecordRow.arrived_at), func.max(RecordRow.arrived_at))).one()
            meta = s.execute(
                select(RecordRow.quality_flags, RecordRow.label, RecordRow.times_used, RecordRow.n_leads).where(held)
            ).all()
            retention = {"max_records": inf.max_records, "max_age_s": inf.max_age_s}
        flags: dict[str, int] = {}
        label_counts = np.zeros(len(self.classes), dtype=np.int64)
        labelled = 0
        used = []
        leads: dict[str, int] = {}
        for qf, lab, times, nl in meta:
            for f in qf:
                flags[f] = flags.get(f, 0) + 1
            if lab is not None:
                labelled += 1
                label_counts += np.asarray(lab, dtype=np.int64)
            used.append(times)
            leads[str(nl)] = leads.get(str(nl), 0) + 1
        unreadable = total - n_held - evicted
        if unreadable:
            flags[UNREADABLE] = flags.get(UNREADABLE, 0) + unreadable
        return {
            "store": self.url,
            "task": self.task,
            "classes": self.classes,
            "recordings": int(total),
            "held": int(n_held),
            "usable": int(usable),
            "unusable_held": int(n_held - usable),
            "unreadable": int(unreadable),
            "evicted": int(evicted),
            "labelled_held": labelled,
            "label_counts": {c: int(n) for c, n in zip(self.classes, label_counts)},
            "leads": leads,
            "flags": dict(sorted(flags.items())),
            "signal_bytes": int(nbytes or 0),
            "never_used": int(sum(1 for u in used if u == 0)),
            "uses": int(sum(used)),
            "first_arrival": first.isoformat() if first else None,
            "last_arrival": last.isoformat() if last else None,
            "retention": retention,
            "prep": self._info["prep"],
        }


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return " ".join(str(cause).split()) or type(cause).__name__
