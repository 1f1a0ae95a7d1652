"""Streaming benchmark: broker -> Ray Serve -> results topic against the model alone.

    python -m bench.stream [--image-size 128] [--preset cpu] [--batch 16] [--seconds 20]

Same model and image size everywhere: by default the CPU preset at 128 px, the model
`hdm train` makes on a CPU. (At 64 px the model costs about 4 ms of CPU a frame and the
camera, broker and ingress on the same 2 cores about twice that, so "50% of the model's
capacity" is all of the machine; `--image-size 64` shows that case.) Measures, on this machine:
  1. in-process Detector throughput at batch size B and at 1, and one full batch's time,
     measured before, between and after the phases below (the machine's speed drifts);
  2. end-to-end frames/s through Tansu, the `inspection` app and the results topic,
     with dynamic batching (max_batch_size B) and without (max_batch_size 1);
     frames are loaded into the topic first, so the camera does not compete for CPU;
     the e2e / in-process ratio comes from alternating rounds of the two (paired_rounds),
     because the machine's speed drifts more within a minute than the gap measured;
  3. latency (capture -> result ready, p50/p95/p99) at 10%, 50% and 90% of the in-process
     capacity, with the camera publishing at that rate on two lines.
Writes bench/results/stream.json and prints progress. Targets (issue 3): e2e >= 85% of
in-process, batching >= 1.5x unbatched, p99 at 50% load < 3x one full batch's time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from services.broker import BrokerConfig, TansuBroker, free_port
from services.config import KafkaConfig, TelemetryConfig, TopicsConfig
from services.ingest.camera import CameraConfig, CameraSimulator, build_pool, make_source
from services.kafka_io import ensure_topics, make_producer
from services.registry import ModelRegistry
from services.scoring.topic_reader import TopicReader
from services.telemetry import setup_telemetry

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "stream.json"
PRODUCT = "bench"


def log(message: str) -> None:
    print(f"[bench.stream {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_model(workdir: Path, preset: str, size: int) -> Path:
    import torch

    from hdm.checkpoint import save_checkpoint
    from hdm.config import HDMConfig
    from hdm.models import HDMModel

    torch.manual_seed(0)
    cfg = getattr(HDMConfig, preset)(size)
    return save_checkpoint(workdir / "run", HDMModel(cfg), cfg, meta={"bench": True})


def frames(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    from hdm.data.synthetic import ProductGenerator

    generator, rng = ProductGenerator(size, seed), np.random.default_rng(seed)
    return [generator.normal(rng) for _ in range(count)]


class InProcess:
    """The Detector alone, fed uint8 frames as the Scorer is, with the Scorer's TorchScript choice and threads."""

    def __init__(self, run_dir: Path, batch: int, threads: int, torchscript: str) -> None:
        import torch

        from hdm.inference import Detector

        torch.set_num_threads(threads)
        self.detector = Detector.load(run_dir, "cpu", torchscript)  # type: ignore[arg-type]
        self.batch = batch
        self.images = frames(self.detector.image_size, batch)

    def rate(self, size: int, seconds: float) -> tuple[float, float]:
        """(frames/s, seconds a batch) at batch `size`."""
        self.detector.predict(self.images[:size])  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.detector.predict(self.images[:size])
            done += size
        elapsed = time.perf_counter() - started
        return done / elapsed, elapsed / (done / size)

    def measure(self, seconds: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for size, key in ((self.batch, "batch"), (1, "single")):
            out[f"{key}_fps"], out[f"{key}_seconds"] = self.rate(size, seconds)
            log(f"in-process batch {size}: {out[f'{key}_fps']:.1f} frames/s, {1000 * out[f'{key}_seconds']:.1f} ms a batch")
        return out


def phase_kafka(bootstrap: str, name: str) -> KafkaConfig:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    cfg = KafkaConfig(
        bootstrap_servers=bootstrap,
        topics=TopicsConfig(frames=f"{tag}.frames", dlq=f"{tag}.dlq", results=f"{tag}.results", models=f"{tag}.models"),
        max_poll_interval_ms=5000, session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    ensure_topics(cfg, partitions=4)
    return cfg


def serve_schema(kafka: KafkaConfig, registry: Path, batch: int, args: argparse.Namespace):
    from services.scoring.deploy import load_serve_config

    config = yaml.safe_load((REPO / "config" / "serve.yaml").read_text())
    app = config["applications"][0]["args"]
    app["kafka"] = dataclasses.asdict(kafka)
    app["registry"]["root"] = str(registry)
    app["ingress"].update(
        group_id=f"bench-{uuid.uuid4().hex[:6]}", max_in_flight=max(64, 8 * batch), drain_timeout_s=10.0,
        max_frames_per_call=min(args.frames_per_call, batch), call_linger_ms=args.call_linger_ms,
        call_linger_when_idle=args.linger_when_idle, fetch_max_wait_ms=args.fetch_max_wait_ms,
    )
    app["scorer"].update(
        max_batch_size=batch, batch_wait_timeout_s=args.batch_wait, paced_batching=not args.unpaced, torch_threads=args.threads,
        min_replicas=1, max_replicas=1, max_ongoing_requests=max(64, 8 * batch), device="cpu", torchscript=args.torchscript,
    )
    path = Path(tempfile.mkstemp(suffix=".yaml")[1])
    path.write_text(yaml.safe_dump(config))
    return load_serve_config(path)


@contextlib.contextmanager
def running_app(schema) -> Iterator[None]:
    from services.scoring.deploy import delete, deploy, drain, wait_until_running

    deploy(schema)
    wait_until_running(["inspection"], 300, report=lambda line: log(line))
    try:
        yield
    finally:
        drain(["inspection"], 60)
        delete(["inspection"])


def produce(kafka: KafkaConfig, size: int, lines: int, per_line: int, fps: float, seed: int) -> list[str]:
    cfg = CameraConfig(lines=lines, fps=fps, frames=per_line, defect_rate=0.0, product=PRODUCT, image_size=size, seed=seed, pool=16)
    simulator = CameraSimulator(cfg, *build_pool(make_source(cfg), cfg))
    producer = make_producer(kafka)
    telemetry = setup_telemetry(TelemetryConfig(), "bench.camera")
    try:
        return [f.frame_id for f in simulator.run(producer, kafka.topics.frames, telemetry.tracer("bench"), progress=False).sent]
    finally:
        producer.close()


def collect(kafka: KafkaConfig, frame_ids: list[str], timeout_s: float) -> list[Any]:
    from protos.hdm.v1 import results_pb2

    wanted, results = set(frame_ids), {}
    deadline = time.monotonic() + timeout_s
    last_report = time.monotonic()
    with TopicReader(kafka, kafka.topics.results) as reader:
        while len(results) < len(wanted) and time.monotonic() < deadline:
            for record in reader.poll(500):
                message = results_pb2.InspectionResult()
                message.ParseFromString(record.value)
                if message.frame_id in wanted:
                    results.setdefault(message.frame_id, message)
            if time.monotonic() - last_report > 5:
                log(f"  {len(results)}/{len(wanted)} results")
                last_report = time.monotonic()
    if len(results) < len(wanted):
        raise RuntimeError(f"only {len(results)} of {len(wanted)} results within {timeout_s:.0f}s")
    return list(results.values())


def throughput(bootstrap: str, registry: Path, batch: int, count: int, args: argparse.Namespace) -> dict[str, float]:
    """Frames loaded first, then scored as fast as the app goes; rate between the first and last results."""
    kafka = phase_kafka(bootstrap, f"tput{batch}")
    log(f"loading {count} frames for the max_batch_size={batch} run")
    ids = produce(kafka, args.image_size, lines=2, per_line=count // 2, fps=1000.0, seed=1)
    with running_app(serve_schema(kafka, registry, batch, args)):
        results = collect(kafka, ids, timeout_s=30 + 20 * count / max(args.expected_fps, 0.5))
    scored = sorted(r.scored_at.ToNanoseconds() / 1e9 for r in results)
    warm = min(2 * batch, len(scored) // 4)  # the model loads with the first batch
    fps = (len(scored) - 1 - warm) / (scored[-1] - scored[warm])
    sizes = [r.batch_size for r in results]
    log(f"end to end, max_batch_size={batch}: {fps:.1f} frames/s (mean batch {np.mean(sizes):.1f})")
    return {"fps": fps, "frames": len(results), "mean_batch_size": float(np.mean(sizes))}


def paired_rounds(bootstrap: str, registry: Path, model: InProcess, args: argparse.Namespace) -> dict[str, Any]:
    """End to end against in process in alternating rounds, so both see the machine at the same speed.

    This machine's speed drifts by 10-30% within a minute, more than the gap being
    measured. Each round runs the model alone for a few seconds (the app deployed and
    idle), then loads a few seconds' worth of frames into the app; the round's end-to-end
    rate counts only results scored after the last frame was published, so the camera
    does not compete with the app.
    """
    kafka = phase_kafka(bootstrap, "paired")
    rounds = []
    with running_app(serve_schema(kafka, registry, model.batch, args)):
        for r in range(args.rounds):
            reference, _ = model.rate(model.batch, args.round_seconds)
            count = max(int(reference * args.round_seconds * 1.3), 8 * model.batch)
            ids = produce(kafka, args.image_size, lines=2, per_line=count // 2, fps=1000.0, seed=10 + r)
            loaded = time.time()
            results = collect(kafka, ids, timeout_s=30 + 20 * count / max(reference, 0.5))
            scored = sorted(t for t in (res.scored_at.ToNanoseconds() / 1e9 for res in results) if t > loaded)
            e2e = (len(scored) - 1) / (scored[-1] - scored[0]) if len(scored) > 2 * model.batch else float("nan")
            rounds.append({"in_process_fps": reference, "e2e_fps": e2e, "results_counted": len(scored)})
            log(f"round {r + 1}/{args.rounds}: in process {reference:.1f} frames/s, end to end {e2e:.1f} ({e2e / reference:.2f})")
    counted = [x for x in rounds if x["e2e_fps"] == x["e2e_fps"]]
    return {
        "rounds": rounds,
        "e2e_fps": float(np.mean([x["e2e_fps"] for x in counted])),
        "in_process_fps": float(np.mean([x["in_process_fps"] for x in counted])),
        "median_round_ratio": float(np.median([x["e2e_fps"] / x["in_process_fps"] for x in counted])),
    }


def latency(bootstrap: str, registry: Path, batch: int, rate: float, args: argparse.Namespace) -> dict[str, float]:
    """The camera at `rate` frames/s over two lines; latency from capture to the result."""
    kafka = phase_kafka(bootstrap, f"lat{int(rate)}")
    with running_app(serve_schema(kafka, registry, batch, args)):
        collect(kafka, produce(kafka, args.image_size, lines=2, per_line=batch, fps=50.0, seed=2), timeout_s=120)  # load the model
        per_line = max(int(rate * args.seconds / 2), batch)
        log(f"camera at {rate:.1f} frames/s for {per_line * 2 / rate:.0f}s")
        ids = produce(kafka, args.image_size, lines=2, per_line=per_line, fps=rate / 2, seed=3)
        results = collect(kafka, ids, timeout_s=120 + 10 * len(ids) / max(rate, 0.5))
    total = np.array([r.latency.total_ms for r in results])
    out = {f"p{q}_ms": float(np.percentile(total, q)) for q in (50, 95, 99)}
    out.update(rate_fps=rate, frames=len(results), mean_batch_size=float(np.mean([r.batch_size for r in results])))
    for stage in ("ingest_ms", "queue_ms", "score_ms", "post_ms"):
        out[f"mean_{stage}"] = float(np.mean([getattr(r.latency, stage) for r in results]))
    log(f"latency at {rate:.1f} frames/s: p50 {out['p50_ms']:.0f} ms, p95 {out['p95_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--preset", choices=("small", "cpu"), default="cpu", help="HDMConfig preset of the (untrained) model")
    parser.add_argument("--batch", type=int, default=16, help="max_batch_size, and the in-process batch size")
    parser.add_argument("--batch-wait", type=float, default=None, help="batch_wait_timeout_s, used only with --unpaced (default: half of one full batch's in-process time)")
    parser.add_argument("--call-linger-ms", type=float, default=None, help="ingress.call_linger_ms (default: half of one full batch's in-process time)")
    parser.add_argument("--linger-when-idle", action="store_true", help="ingress.call_linger_when_idle: linger even with no call at the Scorer")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=25, help="ingress.fetch_max_wait_ms (Tansu answers an empty fetch at this timeout)")
    parser.add_argument("--unpaced", action="store_true", help="scorer.paced_batching off: Serve closes batches on its timer")
    parser.add_argument("--frames-per-call", type=int, default=8, help="ingress.max_frames_per_call (capped at the batch size)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the Scorer (more than the free cores collapses)")
    parser.add_argument("--torchscript", choices=("auto", "on", "off"), default="auto", help="the Scorer's (and in-process) TorchScript choice")
    parser.add_argument("--seconds", type=float, default=20.0, help="rough length of each measured phase")
    parser.add_argument("--rounds", type=int, default=4, help="alternating in-process / end-to-end rounds for the e2e ratio")
    parser.add_argument("--round-seconds", type=float, default=5.0, help="length of each half of a round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def set_waits(args: argparse.Namespace, in_process: dict[str, float]) -> None:
    """A frame waits at most about one full batch's time for its batch: half of it in the
    ingress, gathering frames into calls (fewer calls leave the CPU to the model), half in
    Serve's @serve.batch, which forms the next batch while one runs."""
    args.expected_fps = in_process["batch_fps"]
    if args.call_linger_ms is None:
        args.call_linger_ms = round(1000 * in_process["batch_seconds"] / 2)
    if args.batch_wait is None:
        args.batch_wait = round(in_process["batch_seconds"] / 2, 3)
    log(f"ingress call_linger_ms = {args.call_linger_ms}, batch_wait_timeout_s = {args.batch_wait}")


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase of the module docstring, in-process runs bracketing the end-to-end ones."""
    import ray
    from ray import serve

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        workdir = Path(tmp)
        log(f"model: HDMConfig.{args.preset}({args.image_size}), untrained (speed does not depend on the weights)")
        run_dir = make_model(workdir, args.preset, args.image_size)
        registry = ModelRegistry(workdir / "models")
        registry.publish(PRODUCT, run_dir)
        model = InProcess(run_dir, args.batch, args.threads, args.torchscript)
        measure = functools.partial(model.measure, min(args.seconds / 2, 10.0))
        phases: dict[str, Any] = {"before": measure()}
        set_waits(args, phases["before"])
        with TansuBroker(BrokerConfig(port=free_port(), partitions=4)) as broker:
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="serve")
            try:
                count = max(int(phases["before"]["batch_fps"] * args.seconds), 6 * args.batch)
                phases["batched"] = throughput(broker.bootstrap, registry.root, args.batch, count, args)
                phases["paired"] = paired_rounds(broker.bootstrap, registry.root, model, args)
                log("in-process again (the app is deleted; Ray idles): the machine's speed drifts by 10-30% here")
                phases["between"] = measure()
                unbatched_count = max(int(phases["before"]["single_fps"] * args.seconds), 4 * args.batch)
                phases["unbatched"] = throughput(broker.bootstrap, registry.root, 1, unbatched_count, args)
                capacity = (phases["before"]["batch_fps"] + phases["between"]["batch_fps"]) / 2
                phases["loads"] = {f"{int(100 * f)}%": latency(broker.bootstrap, registry.root, args.batch, f * capacity, args) for f in (0.1, 0.5, 0.9)}
            finally:
                serve.shutdown()
                ray.shutdown()
        log("in-process once more")
        phases["after"] = measure()
    return phases


def build_report(args: argparse.Namespace, phases: dict[str, Any], load_before: tuple[float, float, float]) -> dict[str, Any]:
    """The JSON report; the machine is shared and its speed drifts, so the latency phases are
    compared with the in-process runs that bracket them (between/after), and
    batched_vs_bracketing_in_process keeps the older, bracketed e2e ratio for comparison
    with earlier runs."""
    reference_fps = (phases["before"]["batch_fps"] + phases["between"]["batch_fps"]) / 2
    batch_seconds = (phases["between"]["batch_seconds"] + phases["after"]["batch_seconds"]) / 2
    ratios = {
        "e2e_vs_in_process": (phases["paired"]["e2e_fps"] / phases["paired"]["in_process_fps"], ">= 0.85", lambda v: v >= 0.85),
        "batched_vs_unbatched": (phases["batched"]["fps"] / phases["unbatched"]["fps"], ">= 1.5", lambda v: v >= 1.5),
        "p99_at_50pct_vs_full_batch": (phases["loads"]["50%"]["p99_ms"] / (1000 * batch_seconds), "< 3", lambda v: v < 3),
    }
    return {
        "setup": {
            "model": f"HDMConfig.{args.preset}({args.image_size})", "batch": args.batch, "paced_batching": not args.unpaced, "batch_wait_timeout_s": args.batch_wait,
            "call_linger_ms": args.call_linger_ms, "call_linger_when_idle": args.linger_when_idle, "fetch_max_wait_ms": args.fetch_max_wait_ms, "frames_per_call": args.frames_per_call, "torchscript": args.torchscript,
            "torch_threads": args.threads, "cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        },
        "in_process": {"before": phases["before"], "between": phases["between"], "after": phases["after"], "reference_fps": reference_fps, "full_batch_seconds": batch_seconds},
        "end_to_end": {"batched": phases["batched"], "unbatched": phases["unbatched"], "paired_rounds": phases["paired"],
                       "batched_vs_bracketing_in_process": phases["batched"]["fps"] / reference_fps},
        "latency": phases["loads"],
        "targets": {name: {"value": value, "target": text, "met": check(value)} for name, (value, text, check) in ratios.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    report = build_report(args, measure_all(args), load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, target in report["targets"].items():
        log(f"{name}: {target['value']:.2f} (target {target['target']}) {'met' if target['met'] else 'NOT met'}")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
