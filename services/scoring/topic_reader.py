"""Read a whole topic from its start, outside any consumer group: for checks, benchmarks and demos.

`TopicReader` assigns every partition and keeps its position, so a caller can read
what has arrived, wait for more, and read again without seeing a record twice.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from kafka import TopicPartition

from services.config import KafkaConfig
from services.kafka_io import make_consumer


class TopicReader:
    def __init__(self, cfg: KafkaConfig, topic: str):
        self.topic = topic
        self.records: list[Any] = []
        self._consumer = make_consumer(cfg, None)
        partitions = self._consumer.partitions_for_topic(topic) or set()
        if not partitions:
            self._consumer.close()
            raise ValueError(f"topic {topic} does not exist on {cfg.bootstrap_servers}")
        self._consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])

    def poll(self, timeout_ms: int = 200) -> list[Any]:
        """Records that arrived since the last call."""
        fresh = [record for batch in self._consumer.poll(timeout_ms=timeout_ms).values() for record in batch]
        self.records.extend(fresh)
        return fresh

    def read_until(self, done: Callable[[list[Any]], bool], timeout_s: float) -> bool:
        """Poll until `done(all records so far)` holds (True) or the time is up (False)."""
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                return False
            self.poll()
        return True

    def read_to_end(self, timeout_s: float = 30.0) -> list[Any]:
        """Everything written to the topic before this call."""
        partitions = self._consumer.assignment()
        end = self._consumer.end_offsets(list(partitions))
        deadline = time.monotonic() + timeout_s
        while any(self._consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic} not read to its end within {timeout_s:.0f}s")
            self.poll()
        return self.records

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def __enter__(self) -> "TopicReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
