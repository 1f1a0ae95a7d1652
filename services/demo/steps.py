"""One function per demo stage, each using the project's real components."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import yaml
from tqdm import tqdm

from services.config import KafkaConfig, TelemetryConfig
from services.demo.config import DemoConfig
from services.demo.report import contact_sheet, summarize, write_overlays

# Tansu waits this long for every consumer-group join: short, as DESIGN.md advises.
EMBEDDED_POLL_MS = 5000


def prepare_data(cfg: DemoConfig, folder: Path) -> Path:
    from hdm.data.mvtec import MVTecCategory
    from hdm.data.synthetic import write_dataset

    if cfg.data:
        MVTecCategory(cfg.data)  # one-line error for a wrong layout
        return Path(cfg.data).resolve()
    return write_dataset(folder / cfg.product_name, size=cfg.image_size, seed=cfg.seed, n_train=cfg.train_images,
                         n_test_good=30, n_test_defect=40, progress=True)


def prepare_model(cfg: DemoConfig, data_dir: Path, out: Path, say: Callable[[str], None]):
    """The model to serve, published to the demo's registry; and its test-set quality, when measurable."""
    from hdm.data.mvtec import MVTecCategory
    from hdm.evaluation import evaluate_run
    from services.registry import ModelRegistry

    run_dir = Path(cfg.model).resolve() if cfg.model else _train(cfg, data_dir, out / "run")
    quality = ""
    if MVTecCategory(data_dir).test_samples:
        metrics = evaluate_run(run_dir, data_dir, device="cpu", progress=False)
        quality = f"image AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f}"
    return ModelRegistry(out / "models").publish(cfg.product_name, run_dir), quality


def _train(cfg: DemoConfig, data_dir: Path, run_dir: Path) -> Path:
    from hdm.config import HDMConfig
    from hdm.training import train

    budget: dict[str, Any] = {"seed": cfg.seed, "max_minutes": None if cfg.train_steps else cfg.train_minutes}
    if cfg.train_steps:
        budget["max_steps"] = cfg.train_steps
    hdm_cfg = HDMConfig.cpu(cfg.image_size).with_overrides({"train": budget})
    train(hdm_cfg, data_dir, run_dir, device="cpu")
    return run_dir


def start_broker(logs: Path):
    from services.broker import BrokerConfig, TansuBroker, free_port

    logs.mkdir(parents=True, exist_ok=True)
    return TansuBroker(BrokerConfig(port=free_port(), partitions=4, log_path=str(logs / "tansu.log"))).start()


def embedded(kafka: KafkaConfig) -> KafkaConfig:
    return dataclasses.replace(kafka, max_poll_interval_ms=EMBEDDED_POLL_MS, session_timeout_ms=10_000, heartbeat_interval_ms=2_000)


def start_results(kafka: KafkaConfig, database: Path, token: str):
    from services.results.config import AuthConfig, ResultsConfig
    from services.results.service import ResultsService

    cfg = ResultsConfig(listen="127.0.0.1:0", database_url=f"sqlite:///{database}", kafka=embedded(kafka),
                        auth=AuthConfig(tokens=[token]), stream_poll_interval_s=0.5)
    service = ResultsService(cfg)
    service.start()
    if not service.consumer.wait_assigned(60):
        service.stop()
        raise RuntimeError("the results consumer got no partitions within 60s")
    return service


def write_serve_config(cfg: DemoConfig, kafka: KafkaConfig, out: Path) -> Path:
    """The demo's Ray Serve config file, in the same format as config/serve.yaml."""
    from services.registry import RegistryConfig
    from services.scoring.app import IMPORT_PATH
    from services.scoring.config import ScorerConfig, ScoringConfig

    scoring = ScoringConfig(
        kafka=embedded(kafka),
        registry=RegistryConfig(root=str(out / "models")),
        # One replica with one torch thread leaves the other core to the ingress, broker and results service.
        scorer=ScorerConfig(max_batch_size=16, batch_wait_timeout_s=0.1, torch_threads=1, min_replicas=1, max_replicas=1),
        telemetry=TelemetryConfig(traces="file", path=str(out / "traces.jsonl")),
    )
    app = {"name": "inspection", "route_prefix": None, "import_path": IMPORT_PATH, "args": scoring.to_args()}
    path = out / "serve.yaml"
    path.write_text(yaml.safe_dump({"proxy_location": "Disabled", "applications": [app]}, sort_keys=False))
    return path


def start_scoring(serve_file: Path, ray_cpus: int | None, say: Callable[[str], None]) -> Callable[[], None]:
    """Deploy the application on a local Ray; returns what stops it cleanly."""
    from services.scoring.deploy import (
        connect_ray,
        delete,
        deploy,
        disconnect_ray,
        drain,
        load_serve_config,
        wait_until_consuming,
        wait_until_running,
    )

    schema = load_serve_config(serve_file)
    names = [app.name for app in schema.applications]
    started = connect_ray(ray_cpus or max(2, os.cpu_count() or 2))
    try:
        deploy(schema)
        wait_until_running(names, timeout_s=300, report=lambda line: say(f"      {line}"))
        wait_until_consuming(names, timeout_s=120)
    except BaseException:
        disconnect_ray(started)
        raise

    def stop() -> None:
        try:
            drain(names, timeout_s=60)  # in-flight frames finish and their offsets are committed
            delete(names)
        finally:
            disconnect_ray(started)

    return stop


def run_cameras(cfg: DemoConfig, kafka: KafkaConfig, data_dir: Path):
    """Frames from the simulated cameras, then a few corrupt ones; returns (sent frames, corrupt frame ids)."""
    from services.ingest.camera import CameraConfig, CameraSimulator, build_pool, make_source
    from services.kafka_io import make_producer
    from services.telemetry import setup_telemetry

    camera = CameraConfig(lines=cfg.lines, fps=cfg.fps, frames=cfg.frames, data=str(data_dir) if cfg.data else "generated",
                          defect_rate=cfg.defect_rate, product=cfg.product_name, image_size=cfg.image_size, seed=cfg.seed)
    normal, defective = build_pool(make_source(camera), camera)
    out = Path(cfg.out).resolve()
    telemetry = setup_telemetry(TelemetryConfig(traces="file", path=str(out / "traces.jsonl")), "ingest.camera")
    producer = make_producer(kafka)
    try:
        report = CameraSimulator(camera, normal, defective).run(producer, kafka.topics.frames, telemetry.tracer("hdm.camera"))
        corrupt = [_send_corrupt(producer, kafka.topics.frames, normal[0].data, cfg.product_name, i) for i in range(cfg.corrupt_frames)]
        producer.flush(30)
    finally:
        producer.close()
        telemetry.shutdown()
    if report.failed:
        raise RuntimeError(f"the broker refused {report.failed} of {len(report.sent)} frames")
    return report.sent, corrupt


def _send_corrupt(producer: Any, topic: str, png: bytes, product: str, i: int) -> str:
    """A frame whose PNG is cut in half, as a flaky camera link would deliver it."""
    from protos.hdm.v1 import frames_pb2

    frame_id = f"corrupt-{os.urandom(6).hex()}"
    message = frames_pb2.FrameMessage(frame_id=frame_id, line_id="line-1", camera_id="cam-line-1", product=product,
                                      encoding=frames_pb2.IMAGE_ENCODING_PNG, width=1, height=1, data=png[: len(png) // 2])
    message.captured_at.GetCurrentTime()
    producer.send(topic, key=b"line-1", value=message.SerializeToString())
    return frame_id


def results_client(address: str, token: str):
    from services.results.client import ResultsClient

    client = ResultsClient(address, token=token)
    client.wait_ready(30)
    return client


def wait_for_results(client: Any, product: str, expected: set[str], timeout_s: float) -> list[Any]:
    """Every expected frame's result, read over gRPC; fails naming how many are missing."""
    import time

    from services.results.client import result_filter

    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(expected), desc="results", unit="frame") as bar:
        while True:
            found = {r.frame_id: r for r in client.iter_query(result_filter(product=product), page_size=1000)}
            done = expected & found.keys()
            bar.update(len(done) - bar.n)
            if done == expected:
                return [found[frame_id] for frame_id in sorted(expected)]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(expected - done)} of {len(expected)} frames have no result after {timeout_s:.0f}s "
                                   "(Ray's logs: /tmp/ray/session_latest/logs/serve)")
            time.sleep(0.5)


def report(client: Any, verdicts: list[Any], sent: list[Any], corrupt: list[str], kafka: KafkaConfig, out: Path) -> dict[str, Any]:
    from protos.hdm.v1 import results_pb2

    dead = _dead_letters(kafka, len(corrupt))
    missing = set(corrupt) - set(dead)
    if missing:
        raise RuntimeError(f"{len(missing)} corrupt frames never reached the dead-letter queue")
    summary = summarize(verdicts, {f.frame_id: f.label for f in sent}, len(dead))
    summary["dead_letter_reasons"] = sorted(set(dead.values()))
    anomalous = [r for r in verdicts if r.verdict == results_pb2.VERDICT_ANOMALOUS]
    overlays = [(r, client.heatmap(r.frame_id).overlay_png) for r in anomalous]
    paths = write_overlays(overlays, out / "heatmaps")
    sheet = contact_sheet([png for _, png in overlays], out / "heatmaps" / "contact_sheet.png")
    summary["line_stats"] = {line: _line_stats(client, line) for line in summary["lines"]}
    summary["heatmaps"] = {"folder": str(out / "heatmaps"), "count": len(paths), "contact_sheet": str(sheet) if sheet else None}
    return summary


def _line_stats(client: Any, line: str) -> dict[str, Any]:
    stats = client.line_stats(line, window_s=3600)
    return {"frames": stats.frames, "anomalies": stats.anomalies, "anomaly_rate": round(stats.anomaly_rate, 4),
            "latency_p99_ms": round(stats.latency.p99_ms, 1), "model_versions": list(stats.model_versions)}


def _dead_letters(kafka: KafkaConfig, expected: int) -> dict[str, str]:
    """frame_id -> reason of every record on the dead-letter topic."""
    from google.protobuf.message import DecodeError

    from protos.hdm.v1 import frames_pb2
    from services.kafka_io import DLQ_REASON_HEADER, header
    from services.scoring.topic_reader import TopicReader

    with TopicReader(kafka, kafka.topics.dlq) as reader:
        reader.read_until(lambda records: len(records) >= expected, timeout_s=30)
        records = reader.records
    letters = {}
    for record in records:
        frame = frames_pb2.FrameMessage()
        try:
            frame.ParseFromString(record.value)
        except DecodeError:  # not even a FrameMessage: name it by its position
            frame.frame_id = f"{record.partition}:{record.offset}"
        reason = frames_pb2.DeadLetter()
        reason.ParseFromString(header(record.headers, DLQ_REASON_HEADER) or b"")
        letters[frame.frame_id] = frames_pb2.DeadLetter.Reason.Name(reason.reason)
    return letters
