"""Typed configuration shared by every service, loaded from YAML with env overrides.

Each service owns a dataclass of its own (see services/*/config.py); the pieces
here (Kafka, topics, telemetry) are embedded in those. `load_dataclass` fills a
dataclass tree from a mapping and rejects unknown keys, so a typo in a config
file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hdm.typed_config import ConfigError, from_mapping

T = TypeVar("T")

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


@dataclass
class TopicsConfig:
    frames: str = "inspection.frames"
    dlq: str = "inspection.frames.dlq"
    results: str = "inspection.results"
    models: str = "inspection.models"

    def all(self) -> list[str]:
        return [self.frames, self.dlq, self.results, self.models]


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    # Apache Kafka defaults are minutes; Tansu waits this long for every group
    # join, so embedded setups and tests lower it (see DESIGN.md).
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_message_bytes: int = 8 * 1024 * 1024
    security_protocol: str = "PLAINTEXT"  # or SSL / SASL_SSL in clusters
    ssl_cafile: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    def with_env(self) -> "KafkaConfig":
        """The environment wins over files, as Kubernetes injects it."""
        env = os.environ.get(BOOTSTRAP_ENV)
        return dataclasses.replace(self, bootstrap_servers=env) if env else self

    def client_kwargs(self) -> dict[str, Any]:
        """Connection settings common to kafka-python producers, consumers and admins."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.ssl_cafile:
            kwargs["ssl_cafile"] = self.ssl_cafile
        if self.sasl_mechanism:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return kwargs


@dataclass
class TelemetryConfig:
    service_name: str = "hdm-inspect"
    # none | console | file | otlp. `file` writes JSON lines to `path`, which
    # lets tests read spans written by other processes (Ray replicas).
    traces: str = "none"
    metrics: str = "none"
    path: str | None = None
    otlp_endpoint: str = "http://127.0.0.1:4317"
    metric_interval_s: float = 10.0


def load_dataclass(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build `cls` from a mapping, recursing into nested dataclasses."""
    return from_mapping(cls, data, where)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None) -> T:
    """The dataclass from a YAML file, or its defaults when no file is given."""
    return load_dataclass(cls, read_yaml(path) if path else {}, str(path or cls.__name__))
