"""`hdm camera`: simulate cameras on several production lines publishing frames to Kafka."""

from __future__ import annotations

import argparse
import dataclasses
import os

from hdm.cli_support import CliError, fraction, positive_float, positive_int, print_json
from services.config import KafkaConfig, TelemetryConfig, TopicsConfig
from services.telemetry import EXPORTERS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("camera", help="publish simulated camera frames for several lines to Kafka")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)")
    p.add_argument("--topic", default=TopicsConfig.frames, help="frames topic (default %(default)s)")
    p.add_argument("--lines", type=positive_int, default=2, help="production lines, one camera each (key = line id)")
    p.add_argument("--fps", type=positive_float, default=5.0, help="frames per second on each line")
    p.add_argument("--frames", type=positive_int, default=100, help="frames per line")
    p.add_argument("--data", default="generated", help="'generated' (synthetic products) or an MVTec-layout category folder")
    p.add_argument("--defect-rate", type=fraction, default=0.1, help="share of defective frames")
    p.add_argument("--product", default=None, help="product name the frames carry (default: the folder name, or 'synthetic')")
    p.add_argument("--encoding", choices=("png", "jpeg", "raw"), default="png")
    p.add_argument("--image-size", type=positive_int, default=128, help="frame width and height in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=positive_int, default=64, help="distinct images per class, encoded once and reused")
    p.add_argument("--traces", choices=EXPORTERS, default="none", help="span exporter for the produce spans")
    p.add_argument("--traces-path", default=None, help="file for --traces file")
    p.add_argument("--otlp-endpoint", default=TelemetryConfig.otlp_endpoint)
    p.add_argument("--json", action="store_true", help="print one JSON summary instead of progress")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from services.ingest.camera import CameraConfig, CameraSimulator, build_pool, make_source
    from services.kafka_io import ensure_topics, make_producer
    from services.telemetry import setup_telemetry

    if args.data != "generated" and not os.path.isdir(args.data):
        raise CliError(f"--data: not a directory (or 'generated'): {args.data}")
    if args.traces == "file" and not args.traces_path:
        raise CliError("--traces file needs --traces-path")
    cfg = CameraConfig(
        lines=args.lines, fps=args.fps, frames=args.frames, data=args.data, defect_rate=args.defect_rate,
        product=args.product, encoding=args.encoding, image_size=args.image_size, seed=args.seed, pool=args.pool,
    )
    kafka = KafkaConfig().with_env()
    kafka = dataclasses.replace(kafka, bootstrap_servers=args.bootstrap or kafka.bootstrap_servers, topics=TopicsConfig(frames=args.topic))
    try:
        source = make_source(cfg)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    normal, defective = build_pool(source, cfg)
    try:
        ensure_topics(kafka, partitions=4, topics=[args.topic], timeout_s=15)
    except Exception as exc:  # kafka-python raises several error types for an absent broker
        raise CliError(f"no Kafka broker at {kafka.bootstrap_servers}: {exc}") from None
    telemetry = setup_telemetry(
        TelemetryConfig(traces=args.traces, path=args.traces_path, otlp_endpoint=args.otlp_endpoint), "ingest.camera"
    )
    producer = make_producer(kafka)
    try:
        simulator = CameraSimulator(cfg, normal, defective)
        report = simulator.run(producer, args.topic, telemetry.tracer("hdm.ingest.camera"), progress=not args.json)
    finally:
        producer.close()
        telemetry.shutdown()
    summary = dict(report.summary(), product=cfg.product_name, lines=cfg.lines, topic=args.topic)
    if args.json:
        print_json(summary)
    else:
        print(
            f"sent {summary['frames']} frames ({summary['defective']} defective) on {cfg.lines} lines in "
            f"{summary['seconds']:.1f}s ({summary['fps']:.1f} frames/s); acknowledged {summary['acknowledged']}, failed {summary['failed']}"
        )
    return 0 if report.failed == 0 and report.acknowledged == len(report.sent) else 1
