"""Fixtures for real components: a Tansu broker, a PostgreSQL database, the real dataset."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAGNETIC_TILE = Path(os.environ.get("HDM_MAGNETIC_TILE", REPO.parent / "shared" / "data" / "magnetic_tile"))
PG_ADMIN_DSN = os.environ.get("HDM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A real Tansu broker with the inspection topics (4 partitions), for the whole session."""
    from services.broker import BrokerConfig, TansuBroker, free_port

    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with TansuBroker(BrokerConfig(port=free_port(), partitions=4, log_path=str(log))) as running:
        yield running


@pytest.fixture
def kafka_config(broker):
    """Kafka settings for the session broker with unique topic names per test, so tests never see each other's records."""
    from services.config import KafkaConfig, TopicsConfig
    from services.kafka_io import ensure_topics

    tag = uuid.uuid4().hex[:8]
    topics = TopicsConfig(
        frames=f"frames-{tag}", dlq=f"frames-dlq-{tag}", results=f"results-{tag}", models=f"models-{tag}"
    )
    cfg = KafkaConfig(
        bootstrap_servers=broker.bootstrap,
        topics=topics,
        max_poll_interval_ms=3000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    ensure_topics(cfg, partitions=4)
    return cfg


@contextlib.contextmanager
def _fresh_postgres_database():
    psycopg = pytest.importorskip("psycopg")
    name = f"hdm_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    with _fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def postgres_module_url():
    """Like postgres_url, but shared by the tests of one module (data loaded once)."""
    with _fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def magnetic_tile() -> Path:
    if not (MAGNETIC_TILE / "train" / "good").is_dir():
        pytest.skip(f"real dataset not found at {MAGNETIC_TILE}")
    return MAGNETIC_TILE
