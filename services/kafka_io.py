"""kafka-python clients configured the same way everywhere, and topic setup."""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from services.config import KafkaConfig

# Header names shared by producers and consumers of frames and results.
GROUND_TRUTH_HEADER = "hdm-ground-truth"
DLQ_REASON_HEADER = "hdm-dlq-reason"


def make_producer(cfg: KafkaConfig, **overrides: Any) -> KafkaProducer:
    """A producer that only acknowledges what the broker has durably taken."""
    kwargs: dict[str, Any] = dict(
        cfg.client_kwargs(),
        acks="all",
        linger_ms=5,
        retries=5,
        max_request_size=cfg.max_message_bytes,
        max_in_flight_requests_per_connection=1,  # keeps per-key order across retries
    )
    kwargs.update(overrides)
    return KafkaProducer(**kwargs)


def make_consumer(cfg: KafkaConfig, group_id: str | None, topics: Sequence[str] = (), **overrides: Any) -> KafkaConsumer:
    """A consumer whose offsets are committed by the caller, never automatically."""
    kwargs: dict[str, Any] = dict(
        cfg.client_kwargs(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        fetch_max_bytes=max(cfg.max_message_bytes, 52_428_800),
        max_partition_fetch_bytes=cfg.max_message_bytes,
    )
    kwargs.update(overrides)
    consumer = KafkaConsumer(**kwargs)
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def ensure_topics(cfg: KafkaConfig, partitions: int, topics: Iterable[str] | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    wanted = list(topics if topics is not None else cfg.topics.all())
    admin = _admin(cfg, timeout_s)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing])
            except TopicAlreadyExistsError:
                pass  # another process won the race; the topic is what we wanted
        return missing
    finally:
        admin.close()


def wait_for_broker(cfg: KafkaConfig, timeout_s: float = 30.0) -> None:
    _admin(cfg, timeout_s).close()


def _admin(cfg: KafkaConfig, timeout_s: float) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(**cfg.client_kwargs(), request_timeout_ms=10_000, bootstrap_timeout_ms=2_000)
        except KafkaError:
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"no Kafka broker answered at {cfg.bootstrap_servers} within {timeout_s:.0f}s") from None
            time.sleep(0.25)


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None
