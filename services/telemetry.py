"""OpenTelemetry for every service: providers from config, trace context in Kafka headers.

Providers are returned, not installed globally, so several components (or
tests) in one process keep separate pipelines. Trace context crosses Kafka as
W3C `traceparent`/`tracestate` headers: one trace per frame, from the camera to
the gRPC publication.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import IO, Iterable, Sequence

from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanProcessor
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.config import ConfigError, TelemetryConfig

KafkaHeaders = Sequence[tuple[str, bytes]]
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset(_PROPAGATOR.fields)
EXPORTERS = ("none", "console", "file", "otlp")


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def tracer(self, name: str) -> Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> Meter:
        return self.meter_provider.get_meter(name)

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(cfg: TelemetryConfig, component: str, extra_readers: Iterable[MetricReader] = ()) -> Telemetry:
    """Tracer and meter providers for one component (e.g. "scoring.ingress")."""
    for kind in (cfg.traces, cfg.metrics):
        if kind not in EXPORTERS:
            raise ConfigError(f"telemetry exporter {kind!r} is not one of {', '.join(EXPORTERS)}")
    resource = Resource.create({"service.name": cfg.service_name, "service.component": component, "process.pid": os.getpid()})
    tracer_provider = TracerProvider(resource=resource)
    processor = _span_processor(cfg)
    if processor is not None:
        tracer_provider.add_span_processor(processor)
    readers = list(extra_readers)
    reader = _metric_reader(cfg)
    if reader is not None:
        readers.append(reader)
    return Telemetry(tracer_provider, MeterProvider(resource=resource, metric_readers=readers))


def _span_processor(cfg: TelemetryConfig) -> SpanProcessor | None:
    if cfg.traces == "none":
        return None
    if cfg.traces == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter(endpoint=cfg.otlp_endpoint))
    out = _open_sink(cfg, "traces")
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    # A file is read by tests and tools right after the work: write each span at once.
    return SimpleSpanProcessor(exporter) if cfg.traces == "file" else BatchSpanProcessor(exporter)


def _metric_reader(cfg: TelemetryConfig) -> MetricReader | None:
    if cfg.metrics == "none":
        return None
    interval_ms = int(cfg.metric_interval_s * 1000)
    if cfg.metrics == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=cfg.otlp_endpoint), interval_ms)
    out = _open_sink(cfg, "metrics")
    exporter = ConsoleMetricExporter(out=out, formatter=lambda data: data.to_json(indent=None) + "\n")
    return PeriodicExportingMetricReader(exporter, interval_ms)


def _open_sink(cfg: TelemetryConfig, kind: str) -> IO[str]:
    if getattr(cfg, kind) != "file":
        return sys.stdout
    if not cfg.path:
        raise ConfigError("telemetry exporter 'file' needs telemetry.path")
    path = cfg.path if kind == "traces" else f"{cfg.path}.metrics"
    # Line-buffered append: several processes share one file, one JSON object a line.
    return open(path, "a", buffering=1, encoding="utf-8")


def inject_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying the current (or given) trace context."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return [(k, v.encode()) for k, v in carrier.items()]


def extract_context(headers: KafkaHeaders | None) -> Context:
    """The trace context a Kafka record carries (empty context if none)."""
    carrier = {k: v.decode("latin-1") for k, v in (headers or ()) if k in _TRACE_HEADERS and v is not None}
    return _PROPAGATOR.extract(carrier)


def read_spans(path: str) -> list[dict]:
    """Spans a `file` exporter wrote (JSON lines), for tests and tools."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
