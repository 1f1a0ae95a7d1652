"""The streaming path end to end: Tansu -> `hdm serve` (real Ray Serve) -> results topic.

One Ray cluster and one `hdm serve` process (started from a copy of config/serve.yaml)
serve the whole module; tests tell their frames apart by frame id. The last test
stops `hdm serve` with SIGTERM, so it must stay last in the file.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from protos.hdm.v1 import frames_pb2, results_pb2
from services.config import KafkaConfig, TelemetryConfig, TopicsConfig
from services.ingest.camera import CameraConfig, CameraSimulator, build_pool, make_source
from services.kafka_io import DLQ_REASON_HEADER, GROUND_TRUTH_HEADER, ensure_topics, header, make_producer
from services.registry import ModelRegistry, announce
from services.scoring.topic_reader import TopicReader
from services.telemetry import read_spans, setup_telemetry

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
MAX_FRAME_BYTES = 100_000
MAX_BATCH = 4
MAX_IN_FLIGHT = 16
STAGES = {"produce", "ingest", "batch", "score", "publish"}


def tiny_checkpoint(path: Path, seed: int, image_threshold: float = 1.0) -> Path:
    """An untrained 32 px model (scores lie in [0, 1]): threshold 0 flags every frame, 1 none."""
    import torch

    from hdm.calibration import Calibration
    from hdm.checkpoint import save_checkpoint
    from hdm.config import HDMConfig
    from hdm.models import HDMModel

    torch.manual_seed(seed)
    cfg = HDMConfig.small(SIZE)
    calibration = Calibration(image_threshold=image_threshold, pixel_threshold=0.5)
    save_checkpoint(path, HDMModel(cfg), cfg, calibration=calibration, meta={"seed": seed})
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stream")


@pytest.fixture(scope="module")
def kafka(broker) -> KafkaConfig:
    tag = uuid.uuid4().hex[:8]
    cfg = KafkaConfig(
        bootstrap_servers=broker.bootstrap,
        topics=TopicsConfig(frames=f"frames-{tag}", dlq=f"dlq-{tag}", results=f"results-{tag}", models=f"models-{tag}"),
        max_poll_interval_ms=3000, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    ensure_topics(cfg, partitions=4)
    return cfg


@pytest.fixture(scope="module")
def registry(workdir) -> ModelRegistry:
    registry = ModelRegistry(workdir / "models")
    registry.publish("tile", tiny_checkpoint(workdir / "tile-run", seed=0, image_threshold=0.0))
    registry.publish("swap", tiny_checkpoint(workdir / "swap-run-1", seed=1))
    # Valid files, but weights that do not fit the config: the scorer cannot load it.
    from hdm.config import HDMConfig

    broken = tiny_checkpoint(workdir / "broken-run", seed=0)
    (broken / "config.json").write_text(json.dumps(HDMConfig.cpu(SIZE).to_dict()))
    registry.publish("broken", broken)
    return registry


@pytest.fixture(scope="module")
def ray_address():
    import ray
    from ray import serve

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def serve_process(workdir, kafka, registry, ray_address):
    """`hdm serve --config` on a copy of config/serve.yaml pointed at the test broker, registry and span file."""
    config = yaml.safe_load((REPO / "config" / "serve.yaml").read_text())
    args = config["applications"][0]["args"]
    args["kafka"] = {
        "bootstrap_servers": kafka.bootstrap_servers, "topics": vars(kafka.topics),
        "max_poll_interval_ms": 3000, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
    }
    args["registry"]["root"] = str(registry.root)
    args["ingress"].update(max_in_flight=MAX_IN_FLIGHT, max_frames_per_call=2, max_frame_bytes=MAX_FRAME_BYTES, drain_timeout_s=15.0, registry_refresh_s=0.5)
    # 4, not the decorator's 16: batch sizes show that user_config reached the replicas
    args["scorer"].update(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.05, min_replicas=1, max_replicas=1, torch_threads=1, heatmaps="anomalous")
    args["telemetry"] = {"traces": "file", "metrics": "file", "path": str(workdir / "spans.jsonl"), "metric_interval_s": 1.0}
    path = workdir / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(workdir / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--config", str(path)],
        env=dict(os.environ, RAY_ADDRESS=ray_address), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 180
    while "hdm serve: ready" not in (workdir / "serve.log").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, (workdir / "serve.log").read_text()[-3000:]
        time.sleep(0.5)
    yield proc, workdir / "serve.log"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    log.close()


def camera(kafka: KafkaConfig, product: str, lines: int, frames: int, fps: float, seed: int, tracer=None) -> list:
    cfg = CameraConfig(lines=lines, fps=fps, frames=frames, defect_rate=0.3, product=product, image_size=SIZE, seed=seed, pool=8)
    simulator = CameraSimulator(cfg, *build_pool(make_source(cfg), cfg))
    producer = make_producer(kafka)
    telemetry = None
    if tracer is None:
        telemetry = setup_telemetry(TelemetryConfig(), "test")
        tracer = telemetry.tracer("test")
    try:
        return simulator.run(producer, kafka.topics.frames, tracer, progress=False).sent
    finally:
        producer.close()


def results_by_frame(records) -> dict[str, list[results_pb2.InspectionResult]]:
    found = defaultdict(list)
    for record in records:
        result = results_pb2.InspectionResult()
        result.ParseFromString(record.value)
        found[result.frame_id].append(result)
    return found


def wait_for_results(kafka: KafkaConfig, frame_ids: set[str], timeout_s: float):
    with TopicReader(kafka, kafka.topics.results) as reader:
        reader.read_until(lambda records: frame_ids <= set(results_by_frame(records)), timeout_s)
        return results_by_frame(reader.records), reader.records


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def corrupt_frames() -> list[tuple[str, bytes]]:
    """(expected DeadLetter reason, record value) for every kind of bad frame."""
    image = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)

    def frame(**fields) -> bytes:
        base = dict(frame_id=uuid.uuid4().hex, line_id="line-1", camera_id="cam-line-1", product="tile",
                    encoding=frames_pb2.IMAGE_ENCODING_PNG, width=SIZE, height=SIZE, channels=3, data=png_bytes(image))
        base.update(fields)
        return frames_pb2.FrameMessage(**base).SerializeToString()

    big = np.random.default_rng(6).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    return [
        ("REASON_UNPARSABLE", b"\xff\xfe this is not a frame"),
        ("REASON_CORRUPT_IMAGE", frame(data=png_bytes(image)[:150])),
        ("REASON_OVERSIZED", frame(encoding=frames_pb2.IMAGE_ENCODING_RAW, width=200, height=200, data=big.tobytes())),
        ("REASON_UNKNOWN_PRODUCT", frame(product="gearbox")),
        ("REASON_SIZE_MISMATCH", frame(width=SIZE + 1)),
    ]


@pytest.fixture(scope="module")
def first_stream(serve_process, kafka, workdir):
    """40 good frames on 2 lines with 5 corrupt ones mixed in; their results and dead letters."""
    telemetry = setup_telemetry(TelemetryConfig(traces="file", path=str(workdir / "spans.jsonl")), "test.camera")
    bad = corrupt_frames()
    producer = make_producer(kafka)
    for _, value in bad[:2]:
        producer.send(kafka.topics.frames, key=b"line-1", value=value).get(10)
    sent = camera(kafka, "tile", lines=2, frames=20, fps=40, seed=1, tracer=telemetry.tracer("test.camera"))
    for _, value in bad[2:]:
        producer.send(kafka.topics.frames, key=b"line-2", value=value).get(10)
    producer.close()
    telemetry.shutdown()
    results, records = wait_for_results(kafka, {f.frame_id for f in sent}, timeout_s=90)
    with TopicReader(kafka, kafka.topics.dlq) as dlq:
        dlq.read_until(lambda records: len(records) >= len(bad), timeout_s=30)
        letters = dlq.records
    return sent, results, records, bad, letters


def test_every_good_frame_gets_exactly_one_result(first_stream):
    sent, results, records, _, _ = first_stream
    missing = {f.frame_id for f in sent} - set(results)
    assert not missing, f"{len(missing)} of {len(sent)} frames without a result"
    assert set(results) == {f.frame_id for f in sent}, "no result for anything but the good frames"
    for copies in results.values():
        # at least once: a rebalance may score a frame again, but deduplicated by frame_id it is one verdict
        assert len({(c.image_score, c.verdict, c.model_version) for c in copies}) == 1
    truth = {f.frame_id: f for f in sent}
    for frame_id, result in ((f.frame_id, results[f.frame_id][0]) for f in sent):
        assert (result.line_id, result.product, result.model_version) == (truth[frame_id].line_id, "tile", "v1")
        assert result.verdict == results_pb2.VERDICT_ANOMALOUS, "the tile model's threshold of 0 flags every frame"
        assert 1 <= result.batch_size <= MAX_BATCH and result.scorer_replica
        assert result.latency.total_ms >= result.latency.score_ms > 0
        # anomalous frames carry the heatmap and the overlay, at model resolution
        assert Image.open(io.BytesIO(result.heatmap_png)).size == (SIZE, SIZE)
        overlay = Image.open(io.BytesIO(result.overlay_png))
        assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"
    # the camera's ground truth travels on with the result, keyed by frame id
    record = next(r for r in records if r.key.decode() == sent[0].frame_id)
    assert json.loads(header(record.headers, GROUND_TRUTH_HEADER))["label"] == sent[0].label
    assert max(r.batch_size for rs in results.values() for r in rs) > 1, "frames arriving together are batched"


def test_every_corrupt_frame_is_in_the_dlq_with_its_reason_and_original_bytes(first_stream):
    _, _, _, bad, letters = first_stream
    by_value = {record.value: record for record in letters}
    for reason, value in bad:
        assert value in by_value, f"{reason} frame not in the DLQ"
        letter = frames_pb2.DeadLetter()
        letter.ParseFromString(header(by_value[value].headers, DLQ_REASON_HEADER))
        assert frames_pb2.DeadLetter.Reason.Name(letter.reason) == reason
        assert letter.detail and letter.source_offset >= 0


def test_spans_of_one_frame_share_one_trace_across_all_stages(first_stream, workdir):
    sent, results, _, _, _ = first_stream
    wanted = {f.frame_id for f in sent[:10]}
    deadline = time.monotonic() + 15
    while True:  # replicas write their spans as they end; the file is shared by all processes
        spans = read_spans(str(workdir / "spans.jsonl"))
        traces = defaultdict(set)
        frame_trace = {}
        for span in spans:
            traces[span["context"]["trace_id"]].add(span["name"])
            if span["attributes"].get("hdm.frame_id") in wanted and span["name"] == "produce":
                frame_trace[span["attributes"]["hdm.frame_id"]] = span["context"]["trace_id"]
        if len(frame_trace) == len(wanted) and all(traces[t] == STAGES for t in frame_trace.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(frame_trace) == wanted
    for frame_id, trace_id in frame_trace.items():
        assert traces[trace_id] == STAGES, f"frame {frame_id}: stages {traces[trace_id]}"
    assert len(set(frame_trace.values())) == len(wanted), "one trace per frame"
    scored = [s for s in spans if s["name"] == "score" and s["attributes"]["hdm.frame_id"] in wanted]
    assert all(s["attributes"]["hdm.batch.size"] >= 1 for s in scored)


def test_metrics_count_dead_letters_by_reason_and_batch_sizes(first_stream, workdir):
    _, _, _, bad, _ = first_stream
    path = Path(f"{workdir / 'spans.jsonl'}.metrics")
    wanted = {"hdm.scorer.batch_size", "hdm.ingress.latency", "hdm.ingress.anomaly_rate", "hdm.ingress.results"}
    deadline = time.monotonic() + 20
    while True:  # each replica exports every second
        dlq = _latest_sums(path, "hdm.ingress.dead_letters", "reason")
        names = _metric_names(path)
        if (sum(dlq.values()) >= len(bad) and wanted <= names) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert dlq == {reason: 1 for reason, _ in bad}
    assert wanted <= names


def _metric_lines(path: Path):
    if path.exists():
        for line in path.read_text().splitlines():
            for resource in json.loads(line).get("resource_metrics", []):
                for scope in resource["scope_metrics"]:
                    yield from scope["metrics"]


def _metric_names(path: Path) -> set[str]:
    return {metric["name"] for metric in _metric_lines(path)}


def _latest_sums(path: Path, name: str, key: str) -> dict[str, float]:
    """The last exported value of a counter, by one attribute (JSON lines of the console exporter)."""
    latest: dict[str, float] = {}
    for metric in _metric_lines(path):
        if metric["name"] == name:
            for point in metric["data"]["data_points"]:
                latest[point["attributes"][key]] = point["value"]
    return latest


def test_a_frame_the_scorer_cannot_score_goes_to_the_dlq_and_the_stream_goes_on(serve_process, kafka):
    sent = camera(kafka, "broken", lines=1, frames=2, fps=500, seed=7) + camera(kafka, "tile", lines=1, frames=3, fps=20, seed=8)
    broken = {f.frame_id for f in sent[:2]}
    results, _ = wait_for_results(kafka, {f.frame_id for f in sent[2:]}, timeout_s=60)
    assert not broken & set(results)
    with TopicReader(kafka, kafka.topics.dlq) as dlq:
        dlq.read_until(lambda records: broken <= {_frame_id(r.value) for r in records}, timeout_s=60)
        letters = {_frame_id(r.value): r for r in dlq.records if _frame_id(r.value) in broken}
    assert set(letters) == broken
    for record in letters.values():
        letter = frames_pb2.DeadLetter()
        letter.ParseFromString(header(record.headers, DLQ_REASON_HEADER))
        assert letter.reason == frames_pb2.DeadLetter.REASON_SCORING_FAILED and "does not match config" in letter.detail


def test_a_scorer_replica_loads_and_runs_every_usable_model_before_it_takes_frames(serve_process, registry):
    from ray import serve

    scorer = serve.get_deployment_handle("Scorer", app_name="inspection")
    warmed = scorer.warmed_models.remote().result(timeout_s=30)
    # "broken" cannot be loaded: it is skipped with a warning, and the replica serves the rest.
    assert sorted(warmed) == sorted(registry.latest(p).model_id for p in ("tile", "swap"))


def _replica_actor(deployment: str):
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]
    assert names, f"no {deployment} replica"
    return ray.get_actor(names[0], namespace="serve")


def test_killed_scorer_and_restarted_ingress_lose_no_frame(serve_process, kafka):
    import ray
    from ray import serve

    sent: list = []
    streaming = threading.Thread(target=lambda: sent.extend(camera(kafka, "tile", lines=2, frames=60, fps=12, seed=2)))
    streaming.start()
    time.sleep(1.5)
    ray.kill(_replica_actor("Scorer"), no_restart=True)      # frames on it fail; Serve starts another
    time.sleep(1.5)
    # No scorer for a while: the ingress holds at most MAX_IN_FLIGHT frames and pauses the rest in Kafka.
    stats = serve.get_app_handle("inspection").stats.remote().result(timeout_s=30)
    assert stats["paused"] and stats["in_flight"] == MAX_IN_FLIGHT, stats
    ray.kill(_replica_actor("FrameIngress"), no_restart=True)  # uncommitted frames are read again by its successor
    streaming.join()
    results, _ = wait_for_results(kafka, {f.frame_id for f in sent}, timeout_s=150)
    missing = {f.frame_id for f in sent} - set(results)
    assert len(sent) == 120 and not missing, f"{len(missing)} of {len(sent)} frames lost"
    replicas = {r.scorer_replica for f in sent for r in results[f.frame_id]}
    assert len(replicas) >= 2, "the frames after the kill were scored by a new replica"
    sizes = [r.batch_size for f in sent for r in results[f.frame_id]]
    assert max(sizes) == MAX_BATCH, "the backlog after the restarts is scored in full batches of max_batch_size"


def test_a_new_model_version_announced_mid_stream_is_used_for_later_frames(serve_process, kafka, registry, workdir):
    from ray import serve

    ingress = serve.get_app_handle("inspection")
    sent: list = []
    streaming = threading.Thread(target=lambda: sent.extend(camera(kafka, "swap", lines=2, frames=40, fps=10, seed=3)))
    streaming.start()
    time.sleep(1.5)
    new = registry.publish("swap", tiny_checkpoint(workdir / "swap-run-2", seed=2))
    producer = make_producer(kafka)
    announce(producer, kafka.topics.models, new, {"image_auroc": 0.5})
    producer.close()
    deadline = time.monotonic() + 20
    while ingress.model_versions.remote().result(timeout_s=10).get("swap") != "v2":
        assert time.monotonic() < deadline, "the ingress never switched to v2"
        time.sleep(0.1)
    switched_at = time.time()
    streaming.join()
    results, _ = wait_for_results(kafka, {f.frame_id for f in sent}, timeout_s=90)
    by_line = defaultdict(list)
    for frame in sent:
        (result,) = results[frame.frame_id][:1]
        by_line[frame.line_id].append((result.captured_at.ToNanoseconds() / 1e9, result.model_version))
    for line, versions in by_line.items():
        sequence = [version for _, version in sorted(versions)]
        assert sequence == sorted(sequence, key=lambda v: int(v[1:])), f"{line} went back to an old version"
        assert all(version == "v2" for captured, version in versions if captured > switched_at + 0.05)
    counts = Counter(version for versions in by_line.values() for _, version in versions)
    assert counts["v1"] > 0 and counts["v2"] > 0, counts
    # the swap models flag nothing, and by default only anomalous frames keep pictures
    swapped = [r for frame in sent for r in results[frame.frame_id]]
    assert all(r.verdict == results_pb2.VERDICT_OK and not r.heatmap_png and not r.overlay_png for r in swapped)


def test_sigterm_drains_commits_and_exits(serve_process, kafka):
    """Runs last: it stops the module's `hdm serve` while frames are arriving."""
    from kafka import KafkaAdminClient

    proc, log = serve_process
    sent: list = []
    streaming = threading.Thread(target=lambda: sent.extend(camera(kafka, "tile", lines=2, frames=30, fps=15, seed=4)))
    streaming.start()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    streaming.join()
    text = log.read_text()
    assert "hdm serve: drained" in text and "released=0" in text and text.rstrip().endswith("hdm serve: stopped")

    admin = KafkaAdminClient(**kafka.client_kwargs())
    try:
        offsets = admin.list_group_offsets("hdm-scoring")["hdm-scoring"]
    finally:
        admin.close()
    committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == kafka.topics.frames}
    with TopicReader(kafka, kafka.topics.frames) as frames, TopicReader(kafka, kafka.topics.results) as results, TopicReader(kafka, kafka.topics.dlq) as dlq:
        frame_records, have_result = frames.read_to_end(), set(results_by_frame(results.read_to_end()))
        dead = {record.value for record in dlq.read_to_end()}
    below = {_frame_id(r.value) for r in frame_records if r.offset < committed.get(r.partition, 0)}
    unaccounted = [r.offset for r in frame_records if r.offset < committed.get(r.partition, 0) and r.value not in dead and _frame_id(r.value) not in have_result]
    assert not unaccounted, f"committed frames without a result or dead letter at offsets {unaccounted}"
    ours = {f.frame_id for f in sent}
    finished = ours & have_result
    assert finished, "frames that arrived before SIGTERM were scored"
    assert finished <= below, "the drain committed every frame it finished"
    assert ours - have_result, "frames sent after the stop stay uncommitted for the next start"


def _frame_id(value: bytes) -> str:
    message = frames_pb2.FrameMessage()
    try:
        message.ParseFromString(value)
    except Exception:  # noqa: BLE001 - a corrupt frame
        return ""
    return message.frame_id
