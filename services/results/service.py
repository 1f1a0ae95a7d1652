"""The results service assembled: store, live feed, Kafka consumer and the gRPC server.

`ResultsService(cfg).start()` returns the bound port; `stop()` shuts down in
order: health goes NOT_SERVING, live streams end with UNAVAILABLE (clients
resume from their cursor, here or on another replica), the consumer finishes
its batch and commits, in-flight unary calls get `shutdown_grace_s` to finish.

Why grpc.aio: StreamResults fans every result out to many long-lived streams.
The synchronous server keeps a thread per stream and hands each message
through a condition variable to its single completion-queue thread. In a
micro-benchmark on the 2-core development machine (50 streams of 300-byte
messages, clients in another process) grpc.aio moved 1.5-2.3x more messages
per second than the synchronous server. The blocking parts (SQLAlchemy, kafka-python) stay
blocking: database calls go to a pool of `unary_workers` threads through
asyncio.to_thread, and the Kafka consumer keeps its one thread. The event loop
runs in a thread of its own so that callers (the CLI, the demo, tests) keep a
plain start()/stop() API.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Any, Coroutine

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.hdm.v1 import results_service_pb2, results_service_pb2_grpc
from services.results.auth import BearerTokenInterceptor
from services.results.config import ResultsConfig
from services.results.consumer import ResultsConsumer
from services.results.feed import LiveFeed
from services.results.server import ResultsServicer, Wakeup
from services.results.store import Store
from services.telemetry import Telemetry, setup_telemetry

log = logging.getLogger("hdm.results")
SERVICE_NAME = results_service_pb2.DESCRIPTOR.services_by_name["ResultsService"].full_name


class ResultsService:
    def __init__(self, cfg: ResultsConfig, telemetry: Telemetry | None = None):
        self.cfg = cfg
        self._tokens = cfg.auth.load_tokens()  # a config error surfaces before anything starts
        self._own_telemetry = telemetry is None
        self.telemetry = telemetry or setup_telemetry(cfg.telemetry, "results")
        # Connections: one per database thread, plus the consumer and the feed's refreshes.
        self.store = Store(cfg.database_url, cfg.heatmap_retention, pool_size=cfg.unary_workers, max_overflow=4)
        self.feed: LiveFeed | None = None
        self.consumer: ResultsConsumer | None = None
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._db_threads: futures.ThreadPoolExecutor | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.cfg.host_port[0]}:{self.port}"

    def start(self) -> int:
        """Migrate the schema, bind the port, start consuming; returns the bound port."""
        if self._loop is not None or self._stopped.is_set():
            raise RuntimeError("a ResultsService starts once; make a new one to start again")
        try:
            self.store.migrate()
            self.feed = LiveFeed(
                self.store,
                page=self.cfg.stream_batch,
                poll_interval_s=self.cfg.stream_poll_interval_s,
                tracer=self.telemetry.tracer("hdm.results.feed"),
            )
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, name="hdm-results-grpc", daemon=True)
            self._loop_thread.start()
            self.port = self._run(self._start_server())
            if self.cfg.consume:
                self.consumer = ResultsConsumer(self.cfg, self.store, self.feed, self.telemetry, on_failure=self._consumer_failed)
                self.consumer.start()
        except BaseException:
            self.stop()
            raise
        log.debug(self.summary)
        return self.port

    def stop(self, grace_s: float | None = None) -> None:
        """Stop everything that was started; safe to call twice or after a failed start."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._health is not None:
            self._run(self._health.enter_graceful_shutdown())
        if self.feed is not None:
            self.feed.close()  # live streams end with UNAVAILABLE
        if self.consumer is not None:
            self.consumer.stop()
        if self._server is not None:
            self._run(self._server.stop(self.cfg.shutdown_grace_s if grace_s is None else grace_s))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._loop_thread is not None
            self._loop_thread.join()
            self._loop.close()
        if self._db_threads is not None:
            self._db_threads.shutdown(wait=True)
        self.store.dispose()
        if self._own_telemetry:
            self.telemetry.shutdown()

    def __enter__(self) -> "ResultsService":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def summary(self) -> str:
        tls = "mutual" if self.cfg.tls.require_client_cert else ("on" if self.cfg.tls.enabled else "off")
        auth = f"{len(self._tokens)} token(s)" if self._tokens else "OFF (allow_unauthenticated)"
        return f"results service ready on {self.address} ({self.store.url.render_as_string()}, tls {tls}, auth {auth})"

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the server's loop from this thread and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _start_server(self) -> int:
        assert self._loop is not None and self.feed is not None
        self._db_threads = futures.ThreadPoolExecutor(max_workers=self.cfg.unary_workers, thread_name_prefix="hdm-results-db")
        self._loop.set_default_executor(self._db_threads)  # where asyncio.to_thread runs the store's calls
        interceptors = [BearerTokenInterceptor(self._tokens)] if self._tokens else []
        # so_reuseport off: a second server on a taken port must fail, not share it.
        self._server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        servicer = ResultsServicer(self.cfg, self.store, self.feed, self.telemetry, Wakeup(self._loop))
        results_service_pb2_grpc.add_ResultsServiceServicer_to_server(servicer, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server)
        port = self._bind(self._server)
        await self._server.start()
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        return port

    def _bind(self, server: grpc.aio.Server) -> int:
        tls = self.cfg.tls
        try:
            if not tls.enabled:
                return server.add_insecure_port(self.cfg.listen)
            client_ca = _read(tls.client_ca_file) if tls.client_ca_file else None
            credentials = grpc.ssl_server_credentials(
                [(_read(tls.key_file), _read(tls.cert_file))],
                root_certificates=client_ca,
                require_client_auth=tls.require_client_cert,
            )
            return server.add_secure_port(self.cfg.listen, credentials)
        except RuntimeError as exc:  # grpc raises this when the address cannot be bound
            raise OSError(f"cannot listen on {self.cfg.listen}: {exc}") from None

    def _consumer_failed(self) -> None:
        # Readiness probes take the replica out of rotation; it keeps serving reads.
        if self._loop is not None and self._health is not None and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING), self._loop)


def _read(path: str | None) -> bytes:
    assert path is not None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read TLS file {path}: {exc.strerror}") from None
