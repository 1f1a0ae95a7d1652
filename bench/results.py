"""Results-service benchmark: ingest, query latency at a million rows, 50 live subscribers.

    python -m bench.results [--rows 1000000] [--backends sqlite postgresql] [--subscribers 50]

For each backend (SQLite file, PostgreSQL at $HDM_BENCH_PG):
  1. ingest rate into the store: batches of 500 (the consumer's batch) through Store.insert;
  2. ingest rate through Kafka: results loaded into a Tansu topic first, then the service's
     consumer drains them (decode, one transaction per batch, offset commit);
  3. QueryResults (and GetResult, GetLineStats) latency over gRPC with --rows stored results,
     bulk-loaded through the same insert path in batches of 5,000; p50/p95/p99 per query kind;
  4. --subscribers concurrent StreamResults clients (in a separate process, one channel each)
     while results are published to Kafka at --rate per second: every subscriber must receive
     every result exactly once; delivery latency is capture -> received.
Writes bench/results/results_bench.json and prints progress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import numpy as np
from tqdm import tqdm

from protos.hdm.v1 import results_pb2, results_service_pb2, results_service_pb2_grpc
from services.broker import BrokerConfig, TansuBroker, free_port
from services.config import KafkaConfig, TopicsConfig
from services.kafka_io import ensure_topics, make_producer
from services.results.client import ResultsClient, result_filter
from services.results.config import AuthConfig, ResultsConfig
from services.results.service import ResultsService
from services.results.store import IncomingResult, Store

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "results_bench.json"
PG_ADMIN_DSN = os.environ.get("HDM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TOKEN = "bench-token"
LINES = [f"line-{i:02d}" for i in range(20)]
PRODUCTS = ["tile", "gear", "panel"]


def log(message: str) -> None:
    print(f"[bench.results {time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentiles(values_ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99]) if values_ms else (0.0, 0.0, 0.0)
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3), "n": len(values_ms)}


# --- synthetic results ----------------------------------------------------------


def camera_of(line: int, k: int) -> str:
    """Each line has two cameras of its own."""
    return f"cam-{line:02d}-{k}"


def make_result(i: int, captured_us: int, rng: random.Random, tag: str = "b") -> results_pb2.InspectionResult:
    """A result as the scorer publishes it: ~5% anomalous, PNGs only on anomalies (what retention keeps)."""
    anomalous = rng.random() < 0.05
    r = results_pb2.InspectionResult(
        frame_id=f"{tag}-{i:08d}",
        line_id=LINES[i % len(LINES)],
        camera_id=camera_of(i % len(LINES), (i // len(LINES)) % 2),
        product=PRODUCTS[(i // len(LINES)) % len(PRODUCTS)],
        model_version="v3" if i % 10 else "v2",
        image_score=rng.uniform(0.6, 1.0) if anomalous else rng.uniform(0.0, 0.5),
        anomaly_probability=0.99 if anomalous else 0.2,
        verdict=results_pb2.VERDICT_ANOMALOUS if anomalous else results_pb2.VERDICT_OK,
        threshold=0.55,
        pixel_threshold=0.5,
        batch_size=16,
        scorer_replica="scorer-0",
    )
    r.captured_at.FromMicroseconds(captured_us)
    r.scored_at.FromMicroseconds(captured_us + 40_000)
    r.latency.total_ms = rng.uniform(20, 120)
    if anomalous:
        r.heatmap_png, r.overlay_png = b"\x89PNG" + bytes(600), b"\x89PNG" + bytes(1800)
    return r


def batches(n: int, size: int, end_us: int, spacing_us: int, tag: str) -> Iterator[list[results_pb2.InspectionResult]]:
    rng = random.Random(0)
    start = end_us - n * spacing_us
    for lo in range(0, n, size):
        yield [make_result(i, start + i * spacing_us, rng, tag) for i in range(lo, min(n, lo + size))]


# --- backends -------------------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database; dropped (PostgreSQL) or deleted with workdir afterwards."""
    if backend == "sqlite":
        path = workdir / f"results-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite:///{path}"
        return
    import psycopg

    name = f"hdm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def service_config(url: str, kafka: KafkaConfig | None = None, **overrides: Any) -> ResultsConfig:
    return ResultsConfig(
        listen="127.0.0.1:0",
        database_url=url,
        kafka=kafka or KafkaConfig(),
        consume=kafka is not None,
        consumer_group=f"bench-{uuid.uuid4().hex[:8]}",
        auth=AuthConfig(tokens=[TOKEN]),
        **overrides,
    )


def fresh_topic(broker: TansuBroker, partitions: int = 4) -> KafkaConfig:
    tag = uuid.uuid4().hex[:8]
    cfg = KafkaConfig(
        bootstrap_servers=broker.bootstrap,
        topics=TopicsConfig(results=f"bench-results-{tag}"),
        max_poll_interval_ms=3000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    ensure_topics(cfg, partitions, [cfg.topics.results])
    return cfg


# --- 1. and 2. ingest -----------------------------------------------------------------


def bench_store_ingest(url: str, n: int) -> dict[str, Any]:
    store = Store(url)
    store.migrate()
    items = [IncomingResult(r) for batch in batches(n, n, int(time.time() * 1e6), 33_000, "s") for r in batch]
    start = time.perf_counter()
    for lo in range(0, n, 500):
        store.insert(items[lo : lo + 500])
    seconds = time.perf_counter() - start
    again = time.perf_counter()
    outcome = store.insert(items[:500])  # a re-delivered batch: all duplicates
    dup_ms = (time.perf_counter() - again) * 1000
    assert store.count() == n and outcome.inserted == []
    store.dispose()
    return {"results": n, "batch": 500, "seconds": round(seconds, 2), "results_per_s": round(n / seconds), "duplicate_batch_ms": round(dup_ms, 1)}


def bench_kafka_ingest(url: str, broker: TansuBroker, n: int) -> dict[str, Any]:
    kafka = fresh_topic(broker)
    producer = make_producer(kafka, linger_ms=20, batch_size=256 * 1024)
    for batch in batches(n, 1000, int(time.time() * 1e6), 33_000, "k"):
        for r in batch:
            producer.send(kafka.topics.results, key=r.frame_id.encode(), value=r.SerializeToString())
    producer.flush()
    producer.close()
    with ResultsService(service_config(url, kafka)) as service:
        assert service.consumer is not None
        if not service.consumer.wait_assigned(60):
            raise RuntimeError("the consumer never joined its group")
        start = time.perf_counter()
        with tqdm(total=n, desc="kafka ingest", unit="res", leave=False) as bar:
            while (count := service.store.count()) < n:
                bar.update(count - bar.n)
                time.sleep(0.1)
        seconds = time.perf_counter() - start
    return {"results": n, "partitions": 4, "seconds": round(seconds, 2), "results_per_s": round(n / seconds)}


# --- 3. queries at scale -----------------------------------------------------------------


def bulk_load(url: str, rows: int) -> dict[str, Any]:
    """rows results ending now, one every 600 ms (about a week), through Store.insert; then ANALYZE."""
    store = Store(url)
    store.migrate()
    start = time.perf_counter()
    with tqdm(total=rows, desc="bulk load", unit="res", mininterval=2) as bar:
        for batch in batches(rows, 5000, int(time.time() * 1e6), 600_000, "q"):
            store.insert([IncomingResult(r) for r in batch])
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    store.analyze()  # what autovacuum (PostgreSQL) would do shortly after such a load
    count = store.count()
    store.dispose()
    assert count == rows, f"{count} rows stored, expected {rows}"
    return {"results": rows, "batch": 5000, "seconds": round(seconds, 1), "results_per_s": round(rows / seconds)}


def query_kinds(rows: int, end_us: int) -> dict[str, Callable[[ResultsClient, random.Random], Any]]:
    start_us = end_us - rows * 600_000

    def window(rng: random.Random, hours: float):
        span = min(int(hours * 3.6e9), (end_us - start_us) // 2)
        after = rng.randrange(start_us, end_us - span)
        f = result_filter()
        f.captured_after.FromMicroseconds(after)
        f.captured_before.FromMicroseconds(after + span)
        return f

    def line_camera_product(rng: random.Random):
        line = rng.randrange(len(LINES))
        return result_filter(line_id=LINES[line], camera_id=camera_of(line, rng.randrange(2)), product=rng.choice(PRODUCTS))

    def next_page(client: ResultsClient, rng: random.Random):
        f = window(rng, 24)
        token = client.query(f, page_size=100).next_page_token
        return client.query(f, page_size=100, page_token=token)

    return {
        "first_page_all": lambda c, rng: c.query(page_size=100),
        "line": lambda c, rng: c.query(result_filter(line_id=rng.choice(LINES)), page_size=100),
        "line_anomalous": lambda c, rng: c.query(result_filter(line_id=rng.choice(LINES), verdict="anomalous"), page_size=100),
        "line_camera_product": lambda c, rng: c.query(line_camera_product(rng), page_size=100),
        "time_window_1h": lambda c, rng: c.query(window(rng, 1), page_size=100),
        "min_score_0.95": lambda c, rng: c.query(result_filter(min_score=0.95), page_size=100),
        "next_page_token": next_page,
        "get_result": lambda c, rng: c.get_result(f"q-{rng.randrange(rows):08d}"),
        "line_stats_1h": lambda c, rng: c.line_stats(rng.choice(LINES), 3600),
    }


def bench_queries(url: str, rows: int, per_kind: int) -> dict[str, Any]:
    end_us = int(time.time() * 1e6)  # the bulk load just ended "now"
    with ResultsService(service_config(url)) as service, ResultsClient(f"127.0.0.1:{service.port}", token=TOKEN) as client:
        rng = random.Random(1)
        kinds = query_kinds(rows, end_us)
        for call in kinds.values():  # warm the pools and the database cache a little
            call(client, rng)
        out, everything = {}, []
        for name, call in kinds.items():
            times = []
            for _ in range(per_kind):
                t = time.perf_counter()
                call(client, rng)
                times.append((time.perf_counter() - t) * 1000)
            out[name] = percentiles(times)
            everything += times
            log(f"  {name:22} p50 {out[name]['p50_ms']:7.2f} ms   p99 {out[name]['p99_ms']:7.2f} ms")
    return {"stored_results": rows, "page_size": 100, "per_kind": out, "all": percentiles(everything)}


# --- 4. live subscribers -------------------------------------------------------------------


def _subscriber_process(target: str, cursor: str, subscribers: int, expected: int, timeout_s: float, queue) -> None:
    """Runs in its own process: one grpc.aio channel per subscriber, like separate MES clients.
    asyncio keeps the client side cheap, so the figures describe the server, not 50 client threads."""
    asyncio.run(_subscribe_all(target, cursor, subscribers, expected, timeout_s, queue))


async def _subscribe_all(target: str, cursor: str, subscribers: int, expected: int, timeout_s: float, queue) -> None:
    channels = [grpc.aio.insecure_channel(target) for _ in range(subscribers)]
    calls = [
        results_service_pb2_grpc.ResultsServiceStub(channel).StreamResults(
            results_service_pb2.StreamResultsRequest(cursor=cursor), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=timeout_s
        )
        for channel in channels
    ]
    for call in calls:
        await call.initial_metadata()  # the server has accepted every stream
    queue.put("ready")

    async def follow(call) -> dict[str, Any]:
        ids: list[str] = []
        latencies: list[float] = []
        out: dict[str, Any] = {}
        try:
            async for item in call:
                latencies.append(time.time() * 1000 - item.result.captured_at.ToMicroseconds() / 1000)
                ids.append(item.result.frame_id)
                if len(ids) >= expected:
                    break
        except grpc.aio.AioRpcError as exc:
            out["error"] = exc.code().name
        call.cancel()
        return dict(out, received=len(ids), unique=len(set(ids)), in_order=ids == sorted(ids), latencies=latencies)

    results = await asyncio.gather(*(follow(call) for call in calls))
    for channel in channels:
        await channel.close()
    queue.put(results)


def bench_streams(url: str, broker: TansuBroker, subscribers: int, n: int, rate: float) -> dict[str, Any]:
    kafka = fresh_topic(broker, partitions=1)  # one partition: publication order is capture order
    with ResultsService(service_config(url, kafka, max_streams=max(64, subscribers))) as service:
        assert service.consumer is not None and service.consumer.wait_assigned(60)
        target = f"127.0.0.1:{service.port}"
        with ResultsClient(target, token=TOKEN) as client:
            probe = client.stream()
            cursor = probe.start_cursor()  # every subscriber starts here: none may miss the first result
            probe.cancel()
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_subscriber_process, args=(target, cursor, subscribers, n, n / rate + 120, queue))
        children_cpu_before = _children_cpu_s()  # earlier backends' subscriber processes are counted in there already
        proc.start()
        if _receive(queue, proc, 120) != "ready":
            raise RuntimeError("subscribers did not start")
        log(f"  {subscribers} subscribers connected; publishing {n} results at {rate:.0f}/s")
        cpu_start = time.process_time()
        start = time.perf_counter()
        publish_s = _publish_live(kafka, n, rate)
        per_subscriber = _receive(queue, proc, n / rate + 180)
        delivered_s = time.perf_counter() - start
        server_cpu_s = time.process_time() - cpu_start
        proc.join(30)
    timing = {"publish_s": publish_s, "delivered_s": delivered_s, "server_cpu_s": server_cpu_s,
              "subscribers_cpu_s": _children_cpu_s() - children_cpu_before}
    return _stream_report(per_subscriber, n, timing)


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished (joined) child processes, all of them so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _publish_live(kafka: KafkaConfig, n: int, rate: float) -> float:
    """Publish n results at `rate` per second, each captured as it is sent; returns the seconds it took."""
    producer = make_producer(kafka)
    rng = random.Random(2)
    start = time.perf_counter()
    for i in range(n):
        if (delay := start + i / rate - time.perf_counter()) > 0:
            time.sleep(delay)
        r = make_result(i, int(time.time() * 1e6), rng, "live")
        producer.send(kafka.topics.results, key=r.frame_id.encode(), value=r.SerializeToString())
    producer.flush()
    producer.close()
    return time.perf_counter() - start


def _stream_report(per_subscriber: list[dict[str, Any]], n: int, timing: dict[str, float]) -> dict[str, Any]:
    """What every subscriber received, and what delivering it cost."""
    subscribers = len(per_subscriber)
    latencies = [v for s in per_subscriber for v in s.pop("latencies")]
    complete = sum(s["received"] == n and s["unique"] == n and s["in_order"] and "error" not in s for s in per_subscriber)
    return {
        "subscribers": subscribers,
        "results": n,
        "publish_rate_per_s": round(n / timing["publish_s"], 1),
        "subscribers_with_every_result_once_in_order": complete,
        "all_complete": complete == subscribers,
        "min_received": min(s["received"] for s in per_subscriber),
        "errors": sorted({s["error"] for s in per_subscriber if "error" in s}),
        "deliveries_per_s": round(subscribers * n / timing["delivered_s"]),
        "wall_s": round(timing["delivered_s"], 2),
        # The service process also runs the producer and the consumer; the subscribers run on the same 2 cores.
        "service_process_cpu_s": round(timing["server_cpu_s"], 2),
        "service_cpu_us_per_delivery": round(timing["server_cpu_s"] / (subscribers * n) * 1e6, 1),
        "subscriber_process_cpu_s": round(timing["subscribers_cpu_s"], 2),
        "delivery_latency": percentiles(latencies),
    }


def _receive(queue, proc, timeout_s: float) -> Any:
    """The next message from the subscriber process, failing fast if it died."""
    import queue as queue_module

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=1.0)
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"the subscriber process exited with code {proc.exitcode}") from None
    raise TimeoutError("the subscribers did not finish in time")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--rows", type=int, default=1_000_000, help="stored results for the query benchmark")
    parser.add_argument("--ingest", type=int, default=20_000, help="results for the ingest benchmarks")
    parser.add_argument("--queries", type=int, default=200, help="requests per query kind")
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--stream-results", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0, help="results per second published during the stream test")
    parser.add_argument("--skip", nargs="*", choices=("ingest", "query", "streams"), default=[], help="parts to leave out")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="hdm-bench-results-") as tmp, TansuBroker(
        BrokerConfig(port=free_port(), partitions=4, log_path=str(Path(tmp) / "tansu.log"))
    ) as broker:
        for backend in args.backends:
            report["backends"][backend] = figures = {}
            bench_backend(backend, args, broker, Path(tmp), figures)
            report["machine"]["load_avg_at_end"] = os.getloadavg()
            _write(args.out, report)  # after each backend, so a long run leaves figures behind
    log(f"wrote {args.out}")
    return 0


def bench_backend(backend: str, args: argparse.Namespace, broker: TansuBroker, workdir: Path, figures: dict[str, Any]) -> None:
    """The parts of the benchmark args asks for, on one backend, each on a fresh database; figures filled as they finish."""
    if "ingest" not in args.skip:
        log(f"{backend}: ingest through Store.insert ({args.ingest} results, batches of 500)")
        with database(backend, workdir) as url:
            figures["ingest_store"] = bench_store_ingest(url, args.ingest)
        log(f"  {figures['ingest_store']['results_per_s']} results/s")
        log(f"{backend}: ingest through Kafka and the consumer ({args.ingest} results)")
        with database(backend, workdir) as url:
            figures["ingest_kafka"] = bench_kafka_ingest(url, broker, args.ingest)
        log(f"  {figures['ingest_kafka']['results_per_s']} results/s")
    if "query" not in args.skip:
        with database(backend, workdir) as url:
            log(f"{backend}: bulk load of {args.rows} results")
            figures["bulk_load"] = bulk_load(url, args.rows)
            log(f"  {figures['bulk_load']['results_per_s']} results/s; QueryResults latency ({args.queries} per kind)")
            figures["query"] = bench_queries(url, args.rows, args.queries)
            log(f"  all kinds: p99 {figures['query']['all']['p99_ms']} ms")
    if "streams" not in args.skip:
        log(f"{backend}: {args.subscribers} live subscribers, {args.stream_results} results")
        with database(backend, workdir) as url:
            figures["streams"] = bench_streams(url, broker, args.subscribers, args.stream_results, args.rate)
        s = figures["streams"]
        log(f"  complete {s['subscribers_with_every_result_once_in_order']}/{s['subscribers']}, latency p99 {s['delivery_latency']['p99_ms']} ms")


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
