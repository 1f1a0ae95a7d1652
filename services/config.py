"""Typed configuration shared by every service, loaded from YAML with env overrides.

Each service owns a dataclass of its own (see services/*/config.py); the pieces
here (Kafka, topics, telemetry) are embedded in those. `load_dataclass` fills a
dataclass tree from a mapping and rejects unknown keys, so a typo in a config
file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says which."""


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
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return load_dataclass(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        coerced = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(coerced) if origin is tuple else coerced
    if hint in (int, float, str, bool):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


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
