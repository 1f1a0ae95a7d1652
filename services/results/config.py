"""Settings of the results service, loaded from YAML (`hdm results --config FILE`).

Defaults are the embedded setup: SQLite file, localhost, no TLS. Authentication
is on unless a config says otherwise explicitly: a service that silently runs
open because a token list came out empty is a security hole, not a default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from services.config import ConfigError, KafkaConfig, TelemetryConfig

DATABASE_URL_ENV = "HDM_RESULTS_DATABASE_URL"
HEATMAP_RETENTION = ("anomalous", "all", "none")


@dataclass
class TlsConfig:
    cert_file: str | None = None        # PEM server certificate (chain); TLS is on when set
    key_file: str | None = None         # PEM private key for cert_file
    client_ca_file: str | None = None   # PEM CA that signs client certificates
    require_client_cert: bool = False   # mutual TLS: refuse clients without a certificate

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls: cert_file and key_file go together")
        if self.require_client_cert and not self.client_ca_file:
            raise ValueError("tls: require_client_cert needs client_ca_file")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("tls: client_ca_file needs cert_file and key_file (client certificates need TLS)")

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass
class AuthConfig:
    tokens: list[str] = field(default_factory=list)
    tokens_file: str | None = None      # one token a line, '#' comments (a mounted Kubernetes secret)
    allow_unauthenticated: bool = False  # only with no tokens: serve anyone (trusted network only)

    def load_tokens(self) -> list[str]:
        """The configured tokens; raises ConfigError when none and open access was not asked for."""
        tokens = [t for t in self.tokens if t]
        if self.tokens_file:
            path = Path(self.tokens_file)
            if not path.is_file():
                raise ConfigError(f"auth.tokens_file not found: {path}")
            lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
            tokens += [line for line in lines if line and not line.startswith("#")]
        if not tokens and not self.allow_unauthenticated:
            raise ConfigError(
                "auth: no tokens configured; set auth.tokens or auth.tokens_file, "
                "or auth.allow_unauthenticated: true on a trusted network"
            )
        return tokens


@dataclass
class ResultsConfig:
    listen: str = "127.0.0.1:50051"     # host:port; port 0 picks a free one
    database_url: str = "sqlite:///hdm-results.db"  # or postgresql+psycopg://user@host/db
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    telemetry: TelemetryConfig = field(default_factory=lambda: TelemetryConfig(service_name="hdm-results"))
    consume: bool = True                # False: a query-only replica (no Kafka consumer)
    consumer_group: str = "hdm-results"
    consumer_poll_ms: int = 500         # longest wait of one Kafka poll
    ingest_batch_max: int = 500         # records per database transaction
    tls: TlsConfig = field(default_factory=TlsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    page_size_default: int = 100
    page_size_max: int = 1000
    heatmap_retention: str = "anomalous"  # anomalous | all | none
    stream_poll_interval_s: float = 1.0  # catches rows written by other replicas
    stream_batch: int = 500             # rows one stream reads from the database at a time
    max_streams: int = 128              # live StreamResults calls; more get RESOURCE_EXHAUSTED
    unary_workers: int = 16             # threads (and pooled connections) for database calls
    shutdown_grace_s: float = 5.0

    def __post_init__(self) -> None:
        _parse_listen(self.listen)
        if self.heatmap_retention not in HEATMAP_RETENTION:
            raise ValueError(f"heatmap_retention must be one of {', '.join(HEATMAP_RETENTION)}, got {self.heatmap_retention!r}")
        if not 0 < self.page_size_default <= self.page_size_max:
            raise ValueError("need 0 < page_size_default <= page_size_max")
        for name in ("consumer_poll_ms", "ingest_batch_max", "stream_batch", "max_streams", "unary_workers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.stream_poll_interval_s <= 0 or self.shutdown_grace_s < 0:
            raise ValueError("stream_poll_interval_s must be positive and shutdown_grace_s not negative")

    def with_env(self) -> "ResultsConfig":
        """Environment overrides, as Kubernetes injects them (bootstrap servers, database URL from a secret)."""
        url = os.environ.get(DATABASE_URL_ENV) or self.database_url
        return dataclasses.replace(self, database_url=url, kafka=self.kafka.with_env())

    @property
    def host_port(self) -> tuple[str, int]:
        return _parse_listen(self.listen)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be host:port, got {listen!r}")
    return host, int(port)
