"""Where results live: one SQLAlchemy Core code path over SQLite (embedded) and PostgreSQL (clusters).

Each result is one row of `inspection_results`, keyed by frame_id (a duplicate
delivery inserts nothing) and numbered by `seq`, the order in which rows became
visible, which stream cursors follow. The columns that queries filter and sort
on are real columns with indexes; the full message is kept as its serialized
protobuf (`payload`) so a reader gets back exactly what the scorer published,
including fields added to the contract later. Heatmap and overlay PNGs sit in
their own table, so scans of the main table stay narrow, and are kept only as
the retention policy says.

Times are integer microseconds since the epoch, UTC, on both backends: exact,
sortable and free of time-zone handling differences between the drivers.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    and_,
    case,
    create_engine,
    event,
    func,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from protos.hdm.v1 import results_pb2
from services.config import ConfigError
from services.results.tokens import PageKey

SCHEMA_VERSION = 1
ANOMALOUS = results_pb2.VERDICT_ANOMALOUS
# Arbitrary but fixed keys for PostgreSQL advisory locks ("hdm-res" in ASCII-ish).
_WRITE_LOCK_KEY = 0x68646D_726573
_MIGRATE_LOCK_KEY = 0x68646D_6D6967

metadata = MetaData()

results_table = Table(
    "inspection_results",
    metadata,
    # INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (a rowid alias, never reused),
    # BIGSERIAL on PostgreSQL.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("frame_id", Text, nullable=False),
    Column("line_id", Text, nullable=False),
    Column("camera_id", Text, nullable=False),
    Column("product", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("captured_at_us", BigInteger, nullable=False),
    Column("scored_at_us", BigInteger, nullable=False),
    Column("stored_at_us", BigInteger, nullable=False),
    Column("image_score", Float, nullable=False),
    Column("anomaly_probability", Float, nullable=False),
    Column("verdict", SmallInteger, nullable=False),
    Column("total_ms", Float, nullable=False),
    Column("has_images", Boolean, nullable=False),
    Column("trace_context", Text, nullable=True),  # W3C traceparent/tracestate as JSON
    Column("payload", LargeBinary, nullable=False),  # InspectionResult without the PNGs
    sqlite_autoincrement=True,
)
Index("ux_results_frame_id", results_table.c.frame_id, unique=True)
# One index per query pattern: every QueryResults filter on an equality column
# is followed by the keyset, so a page is a range scan; "anomalies on line X",
# the MES's everyday question, has its own; GetLineStats uses the line index.
_KEYSET = (results_table.c.captured_at_us, results_table.c.frame_id)
Index("ix_results_time", *_KEYSET)
for _cols in (("line_id",), ("camera_id",), ("product",), ("verdict",), ("line_id", "verdict")):
    Index(f"ix_results_{'_'.join(_cols)}_time", *(results_table.c[c] for c in _cols), *_KEYSET)

images_table = Table(
    "result_images",
    metadata,
    Column("frame_id", Text, primary_key=True),
    Column("heatmap_png", LargeBinary, nullable=False),
    Column("overlay_png", LargeBinary, nullable=False),
)

# Records that could not be stored as results (undecodable, missing frame_id ...):
# kept with the reason instead of dropped, and idempotent by their Kafka position.
rejected_table = Table(
    "rejected_records",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", LargeBinary, nullable=True),
    Column("received_at_us", BigInteger, nullable=False),
)
Index("ux_rejected_position", rejected_table.c.topic, rejected_table.c.partition, rejected_table.c.offset, unique=True)

version_table = Table("schema_version", metadata, Column("version", Integer, nullable=False))


def _migrate_v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[results_table, images_table, rejected_table])
    if conn.dialect.name == "postgresql":
        # A camera belongs to one line. Without being told, PostgreSQL takes the two
        # filters as independent, underestimates their matches, and answers "line X,
        # camera Y" by combining both indexes and sorting every match (30x slower at
        # 200k rows, and growing with history) instead of walking one index in order.
        conn.execute(text("CREATE STATISTICS stx_results_line_camera (dependencies) ON line_id, camera_id FROM inspection_results"))


# Step i brings the schema from version i to i + 1. Append; never edit a released step.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_migrate_v1,)
assert len(MIGRATIONS) == SCHEMA_VERSION


class StoreError(RuntimeError):
    """The database cannot be used by this service (wrong URL, newer schema)."""


@dataclass(frozen=True)
class ResultQuery:
    """A validated filter; None matches everything. Times in UTC microseconds."""

    line_id: str | None = None
    camera_id: str | None = None
    product: str | None = None
    captured_after_us: int | None = None   # inclusive
    captured_before_us: int | None = None  # exclusive
    verdict: int | None = None
    min_score: float | None = None

    def conditions(self) -> list:
        """The filter as SQL, for QueryResults."""
        t = results_table.c
        out = [t[name] == value for name, value in self._equalities() if value is not None]
        if self.captured_after_us is not None:
            out.append(t.captured_at_us >= self.captured_after_us)
        if self.captured_before_us is not None:
            out.append(t.captured_at_us < self.captured_before_us)
        if self.min_score is not None:
            out.append(t.image_score >= self.min_score)
        return out

    def matches(self, r: results_pb2.InspectionResult) -> bool:
        """The same filter in Python, for the live feed (tests check both agree)."""
        if any(value is not None and getattr(r, name) != value for name, value in self._equalities()):
            return False
        at = r.captured_at.ToMicroseconds()
        if self.captured_after_us is not None and at < self.captured_after_us:
            return False
        if self.captured_before_us is not None and at >= self.captured_before_us:
            return False
        return self.min_score is None or r.image_score >= self.min_score

    def _equalities(self) -> list[tuple[str, object]]:
        return [("line_id", self.line_id), ("camera_id", self.camera_id), ("product", self.product), ("verdict", self.verdict)]


@dataclass(frozen=True)
class StoredResult:
    seq: int
    result: results_pb2.InspectionResult   # without images unless asked for
    has_images: bool
    trace_context: dict[str, str] | None

    @property
    def page_key(self) -> PageKey:
        return PageKey(self.result.captured_at.ToMicroseconds(), self.result.frame_id)


@dataclass(frozen=True)
class IncomingResult:
    """A decoded result on its way into the store, with the trace context it arrived with."""

    result: results_pb2.InspectionResult
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True)
class Rejected:
    topic: str
    partition: int
    offset: int
    reason: str
    raw: bytes | None


@dataclass(frozen=True)
class InsertOutcome:
    inserted: list[str]   # frame_ids that were new
    duplicates: int       # results that were already stored (or repeated within the batch)


@dataclass(frozen=True)
class LineStatsRow:
    frames: int
    anomalies: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    model_versions: list[str]


class Store:
    """The results database. Thread-safe: every call takes a pooled connection."""

    def __init__(self, url: str, heatmap_retention: str = "anomalous", pool_size: int = 8, max_overflow: int = 32):
        self.url = _normalize_url(url)
        self.heatmap_retention = heatmap_retention
        self.engine = _make_engine(self.url, pool_size, max_overflow)
        self.dialect = self.engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    # --- schema ----------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in place."""
        with self._write_transaction(_MIGRATE_LOCK_KEY) as conn:  # replicas starting together migrate in turn
            version_table.create(conn, checkfirst=True)
            current = conn.scalar(select(func.max(version_table.c.version))) or 0
            if current > SCHEMA_VERSION:
                raise StoreError(f"database schema version {current} is newer than this service's ({SCHEMA_VERSION}); upgrade the service")
            for step in MIGRATIONS[current:]:
                step(conn)
            if current < SCHEMA_VERSION:
                conn.execute(version_table.delete())
                conn.execute(version_table.insert().values(version=SCHEMA_VERSION))
        return SCHEMA_VERSION

    def analyze(self) -> None:
        """Refresh the planner's statistics (autovacuum does it in time; a bulk load wants it now)."""
        with self._write_transaction() as conn:
            conn.execute(text("ANALYZE"))

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.max(version_table.c.version))) or 0

    def dispose(self) -> None:
        self.engine.dispose()

    # --- writing ---------------------------------------------------------

    def insert(self, incoming: Sequence[IncomingResult], rejected: Sequence[Rejected] = ()) -> InsertOutcome:
        """Store a batch in one transaction; results already stored are left exactly as they were."""
        rows, images, seen = [], [], set()
        now_us = int(time.time() * 1_000_000)
        for item in incoming:
            if item.result.frame_id in seen:
                continue
            seen.add(item.result.frame_id)
            keep = self._keeps_images(item.result)
            rows.append(row_values(item, keep, now_us))
            if keep:
                images.append({"frame_id": item.result.frame_id, "heatmap_png": item.result.heatmap_png, "overlay_png": item.result.overlay_png})
        seq = results_table.c.seq
        with self._write_transaction() as conn:
            # Writers take turns (see _write_transaction), so the rows above the
            # highest seq seen now are exactly the ones this transaction adds. That
            # spares RETURNING, which would force a slow multi-VALUES statement on
            # psycopg instead of its pipelined executemany.
            before = conn.scalar(select(func.coalesce(func.max(seq), 0)))
            if rows:
                conn.execute(self._insert(results_table).on_conflict_do_nothing(index_elements=["frame_id"]), rows)
            inserted = list(conn.execute(select(results_table.c.frame_id).where(seq > before).order_by(seq)).scalars())
            new = set(inserted)
            fresh_images = [img for img in images if img["frame_id"] in new]
            if fresh_images:
                conn.execute(self._insert(images_table).on_conflict_do_nothing(index_elements=["frame_id"]), fresh_images)
            if rejected:
                stmt = self._insert(rejected_table).on_conflict_do_nothing(index_elements=["topic", "partition", "offset"])
                conn.execute(stmt, [dict(vars(r), received_at_us=now_us) for r in rejected])
        return InsertOutcome(inserted=inserted, duplicates=len(incoming) - len(inserted))

    @contextlib.contextmanager
    def _write_transaction(self, lock_key: int = _WRITE_LOCK_KEY) -> Iterator[Connection]:
        """A transaction that no other writer runs beside.

        Streams read "seq > cursor", which is only gap-free if rows become
        visible in seq order. PostgreSQL hands out seq at INSERT but makes rows
        visible at COMMIT, so two replicas writing at once could commit seq 11
        before seq 10, and a stream already past 11 would never see 10. A
        transaction-level advisory lock makes writers take turns (it is released
        at commit, after the rows are visible), so commit order equals seq order;
        it costs one lock per batch of hundreds of rows. The sequence's CACHE
        must stay 1 (the default) for the same reason. On SQLite the transaction
        starts with BEGIN IMMEDIATE, which takes the database's single write lock.
        """
        with self.engine.connect().execution_options(hdm_write=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
            yield conn

    def _keeps_images(self, r: results_pb2.InspectionResult) -> bool:
        if not (r.heatmap_png and r.overlay_png) or self.heatmap_retention == "none":
            return False
        return self.heatmap_retention == "all" or r.verdict == ANOMALOUS

    # --- reading ---------------------------------------------------------

    def get(self, frame_id: str, include_images: bool = False) -> StoredResult | None:
        rows = self._select(results_table.c.frame_id == frame_id, order=(), limit=1, include_images=include_images)
        return rows[0] if rows else None

    def query(self, q: ResultQuery, after: PageKey | None, limit: int, include_images: bool = False) -> list[StoredResult]:
        """Up to `limit` results matching q, ordered by (captured_at, frame_id), after the keyset `after`."""
        conds = q.conditions()
        if after is not None:
            conds.append(tuple_(*_KEYSET) > tuple_(after.captured_at_us, after.frame_id))
        return self._select(and_(true(), *conds), order=_KEYSET, limit=limit, include_images=include_images)

    def after_seq(self, seq: int, limit: int) -> list[StoredResult]:
        """Every result with a sequence number above seq, in seq order (the live feed's source)."""
        return self._select(results_table.c.seq > seq, order=(results_table.c.seq,), limit=limit, include_images=False)

    def max_seq(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.max(results_table.c.seq))) or 0

    def images(self, frame_id: str) -> tuple[bytes, bytes] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(images_table.c.heatmap_png, images_table.c.overlay_png).where(images_table.c.frame_id == frame_id)
            ).first()
        return (row[0], row[1]) if row else None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(results_table)) or 0

    def rejected(self) -> list[Rejected]:
        cols = rejected_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(cols.topic, cols.partition, cols.offset, cols.reason, cols.raw).order_by(cols.id)).all()
        return [Rejected(*row) for row in rows]

    def line_stats(self, line_id: str, start_us: int, end_us: int) -> LineStatsRow:
        t = results_table.c
        window = and_(t.line_id == line_id, t.captured_at_us >= start_us, t.captured_at_us < end_us)
        with self.engine.connect() as conn:
            frames, anomalies = conn.execute(
                select(func.count(), func.coalesce(func.sum(case((t.verdict == ANOMALOUS, 1), else_=0)), 0)).where(window)
            ).one()
            # Percentiles in Python keep one code path (SQLite has no percentile_cont);
            # the window is a range scan of the line index, one float a row.
            totals = np.fromiter(conn.execute(select(t.total_ms).where(window)).scalars(), dtype=np.float64)
            versions = list(conn.execute(select(t.model_version).where(window).distinct().order_by(t.model_version)).scalars())
        p50, p95, p99 = np.percentile(totals, [50, 95, 99]) if totals.size else (0.0, 0.0, 0.0)
        return LineStatsRow(int(frames), int(anomalies), float(p50), float(p95), float(p99), versions)

    def _select(self, where, order: Iterable, limit: int, include_images: bool) -> list[StoredResult]:
        t = results_table.c
        cols = [t.seq, t.payload, t.has_images, t.trace_context]
        source = results_table
        if include_images:
            cols += [images_table.c.heatmap_png, images_table.c.overlay_png]
            source = results_table.outerjoin(images_table, images_table.c.frame_id == t.frame_id)
        stmt = select(*cols).select_from(source).where(where).order_by(*order).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_stored(row, include_images) for row in rows]


def row_values(item: IncomingResult, keep_images: bool, now_us: int) -> dict:
    """The column values of one result (the PNGs go to images_table)."""
    r = item.result
    bare = results_pb2.InspectionResult()
    bare.CopyFrom(r)
    bare.ClearField("heatmap_png")
    bare.ClearField("overlay_png")
    return {
        "frame_id": r.frame_id,
        "line_id": r.line_id,
        "camera_id": r.camera_id,
        "product": r.product,
        "model_version": r.model_version,
        "captured_at_us": r.captured_at.ToMicroseconds(),
        "scored_at_us": r.scored_at.ToMicroseconds(),
        "stored_at_us": now_us,
        "image_score": r.image_score,
        "anomaly_probability": r.anomaly_probability,
        "verdict": r.verdict,
        "total_ms": r.latency.total_ms,
        "has_images": keep_images,
        "trace_context": json.dumps(item.trace_context, sort_keys=True) if item.trace_context else None,
        "payload": bare.SerializeToString(deterministic=True),
    }


def _stored(row, include_images: bool) -> StoredResult:
    result = results_pb2.InspectionResult.FromString(row.payload)
    if include_images and row.heatmap_png is not None:
        result.heatmap_png = row.heatmap_png
        result.overlay_png = row.overlay_png
    context = json.loads(row.trace_context) if row.trace_context else None
    return StoredResult(seq=row.seq, result=result, has_images=bool(row.has_images), trace_context=context)


def storable_problem(r: results_pb2.InspectionResult) -> str | None:
    """Why a decoded result cannot be stored, or None. Checked before the batch so
    that one bad record cannot make a whole transaction fail over and over."""
    if not r.frame_id:
        return "frame_id is empty"
    if not r.HasField("captured_at"):
        return "captured_at is missing"
    for name in ("frame_id", "line_id", "camera_id", "product", "model_version"):
        value = getattr(r, name)
        if len(value) > 256:
            return f"{name} is longer than 256 characters"
        if "\x00" in value:
            return f"{name} contains a NUL character"
    for name in ("image_score", "anomaly_probability"):
        if not math.isfinite(getattr(r, name)):
            return f"{name} is not a finite number"
    if not math.isfinite(r.latency.total_ms):
        return "latency.total_ms is not a finite number"
    if r.verdict not in results_pb2.Verdict.values():
        return f"verdict {r.verdict} is not a known Verdict"
    return None


def _normalize_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database_url is not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")  # the driver this project installs
    elif backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError("database_url: SQLite needs a file (sqlite:///path/results.db); an in-memory database is per connection")
    else:
        raise ConfigError(f"database_url: backend {backend!r} is not supported (sqlite or postgresql)")
    return parsed


def _make_engine(url: URL, pool_size: int, max_overflow: int) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)


def _sqlite_connect(dbapi_conn, _record) -> None:
    # SQLAlchemy's recipe for real SQLite transactions: the driver's own implicit
    # BEGIN (only before DML, never before SELECT) is switched off and _sqlite_begin
    # emits BEGIN itself, so a read sees one snapshot and a write holds its lock
    # from the first statement. WAL lets readers (queries, streams) run while the
    # consumer writes; synchronous=FULL puts a commit on disk before the consumer
    # commits its Kafka offsets.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("hdm_write") else "BEGIN")
