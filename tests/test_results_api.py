"""Every ResultsService RPC over a real gRPC socket, on SQLite and on PostgreSQL.

One server per backend is loaded with 300 results (module scope); the tests read
it through the project's client and check results, paging, filters, status codes,
authentication, health and reflection against what was loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from results_support import ANOMALOUS, BACKENDS, TOKEN, database_url, dataset, service_config

from protos.hdm.v1 import results_pb2, results_service_pb2
from services.results.client import ResultsClient, result_filter
from services.results.service import ResultsService
from services.results.store import IncomingResult

N = 300


@dataclass
class Served:
    service: ResultsService
    client: ResultsClient
    data: list[results_pb2.InspectionResult]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def ordered(self, keep=lambda r: True) -> list[str]:
        rows = sorted((r for r in self.data if keep(r)), key=lambda r: (r.captured_at.ToMicroseconds(), r.frame_id))
        return [r.frame_id for r in rows]


@pytest.fixture(scope="module", params=BACKENDS)
def served(request, tmp_path_factory):
    url = database_url(request.param, request, tmp_path_factory.mktemp("results-api"))
    data = dataset(N, seed=1)
    service = ResultsService(service_config(url))
    service.start()
    service.store.insert([IncomingResult(r) for r in data])
    client = ResultsClient(f"127.0.0.1:{service.port}", token=TOKEN)
    yield Served(service, client, data)
    client.close()
    service.stop()


def _without_images(r: results_pb2.InspectionResult) -> results_pb2.InspectionResult:
    bare = results_pb2.InspectionResult()
    bare.CopyFrom(r)
    bare.ClearField("heatmap_png")
    bare.ClearField("overlay_png")
    return bare


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


# --- GetResult ------------------------------------------------------------------


def test_get_result_returns_the_published_message_with_images_only_when_asked(served):
    anomalous = next(r for r in served.data if r.verdict == ANOMALOUS)
    assert served.client.get_result(anomalous.frame_id) == _without_images(anomalous)
    assert served.client.get_result(anomalous.frame_id, include_images=True) == anomalous
    normal = next(r for r in served.data if r.verdict != ANOMALOUS)
    # Retention "anomalous": the normal frame's PNGs were not kept, even when asked for.
    assert served.client.get_result(normal.frame_id, include_images=True) == _without_images(normal)


def test_get_result_of_unknown_frame_is_not_found(served):
    assert _code(lambda: served.client.get_result("no-such-frame")) == grpc.StatusCode.NOT_FOUND


# --- QueryResults ---------------------------------------------------------------


def test_paging_through_everything_yields_each_result_once_in_capture_order(served):
    seen, token, pages = [], "", 0
    while True:
        page = served.client.query(page_size=7, page_token=token)
        seen += [r.frame_id for r in page.results]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        assert len(page.results) == 7
    assert seen == served.ordered()  # ties on captured_at are broken by frame_id, so no gaps or repeats
    assert pages == -(-N // 7)


def test_default_page_size_applies_when_zero(served):
    page = served.client.query()
    assert len(page.results) == served.service.cfg.page_size_default and page.next_page_token


FILTERS = {
    "line": (dict(line_id="line-b"), lambda r: r.line_id == "line-b"),
    "camera": (dict(camera_id="cam-2"), lambda r: r.camera_id == "cam-2"),
    "product": (dict(product="gear"), lambda r: r.product == "gear"),
    "verdict": (dict(verdict="anomalous"), lambda r: r.verdict == ANOMALOUS),
    "min_score": (dict(min_score=0.45), lambda r: r.image_score >= np.float32(0.45)),
    "combined": (
        dict(line_id="line-a", product="tile", verdict="ok", min_score=0.2),
        lambda r: r.line_id == "line-a" and r.product == "tile" and r.verdict != ANOMALOUS and r.image_score >= np.float32(0.2),
    ),
}


@pytest.mark.parametrize("name", FILTERS)
def test_query_filters_return_exactly_the_matching_results(served, name):
    kwargs, keep = FILTERS[name]
    got = [r.frame_id for r in served.client.iter_query(result_filter(**kwargs), page_size=11)]
    expected = served.ordered(keep)
    assert got == expected and 0 < len(expected) < N


def test_time_range_is_inclusive_after_and_exclusive_before(served):
    times = sorted({r.captured_at.ToMicroseconds() for r in served.data})
    lo, hi = times[10], times[20]
    flt = results_service_pb2.ResultFilter()
    flt.captured_after.FromMicroseconds(lo)
    flt.captured_before.FromMicroseconds(hi)
    got = [r.frame_id for r in served.client.iter_query(flt)]
    assert got == served.ordered(lambda r: lo <= r.captured_at.ToMicroseconds() < hi)
    assert len(got) == 30  # ten capture times, three frames each


def test_a_page_token_only_continues_its_own_query(served):
    token = served.client.query(result_filter(line_id="line-a"), page_size=5).next_page_token
    assert _code(lambda: served.client.query(result_filter(line_id="line-b"), page_size=5, page_token=token)) == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_page_is_resource_exhausted(served):
    too_big = served.service.cfg.page_size_max + 1
    assert _code(lambda: served.client.query(page_size=too_big)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def _after_not_before() -> results_service_pb2.ResultFilter:
    f = results_service_pb2.ResultFilter()
    f.captured_after.FromMicroseconds(2_000_000)
    f.captured_before.FromMicroseconds(1_000_000)
    return f


MALFORMED = {
    "garbage page token": lambda c: c.query(page_token="not-a-token!"),
    "negative page size": lambda c: c.query(page_size=-1),
    "unknown verdict": lambda c: c.query(results_service_pb2.ResultFilter(verdict=7)),
    "empty time range": lambda c: c.query(_after_not_before()),
    "NaN min score": lambda c: c.query(results_service_pb2.ResultFilter(min_score=float("nan"))),
    "overlong line id": lambda c: c.query(result_filter(line_id="x" * 300)),
    "empty frame id": lambda c: c.get_result(""),
    "empty heatmap frame id": lambda c: c.heatmap(""),
    "empty stats line": lambda c: c.line_stats(""),
    "negative window": lambda c: c.line_stats("line-a", -5),
    "garbage cursor": lambda c: next(iter(c.stream(cursor="garbage"))),
    "page token as cursor": lambda c: next(iter(c.stream(cursor=c.query(page_size=1).next_page_token))),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_requests_are_invalid_argument(served, name):
    assert _code(lambda: MALFORMED[name](served.client)) == grpc.StatusCode.INVALID_ARGUMENT


# --- GetHeatmap -------------------------------------------------------------------


def test_heatmap_of_an_anomalous_frame_is_the_stored_png_pair(served):
    r = next(r for r in served.data if r.verdict == ANOMALOUS)
    heatmap = served.client.heatmap(r.frame_id)
    assert (heatmap.frame_id, heatmap.heatmap_png, heatmap.overlay_png) == (r.frame_id, r.heatmap_png, r.overlay_png)
    assert heatmap.pixel_threshold == pytest.approx(0.4)


def test_heatmap_not_kept_by_policy_or_unknown_frame_is_not_found(served):
    normal = next(r for r in served.data if r.verdict != ANOMALOUS)
    with pytest.raises(grpc.RpcError) as info:
        served.client.heatmap(normal.frame_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "retention" in info.value.details()
    assert _code(lambda: served.client.heatmap("no-such-frame")) == grpc.StatusCode.NOT_FOUND


# --- GetLineStats -----------------------------------------------------------------


@pytest.mark.parametrize("window_s", [0, 25 * 60])
def test_line_stats_match_the_results_in_the_window(served, window_s):
    stats = served.client.line_stats("line-c", window_s)
    start, end = stats.window_start.ToMicroseconds(), stats.window_end.ToMicroseconds()
    assert end - start == (window_s or 3600) * 1_000_000
    rows = [r for r in served.data if r.line_id == "line-c" and start <= r.captured_at.ToMicroseconds() < end]
    assert rows and stats.frames == len(rows)
    anomalies = sum(r.verdict == ANOMALOUS for r in rows)
    assert stats.anomalies == anomalies and stats.anomaly_rate == pytest.approx(anomalies / len(rows))
    p50, p95, p99 = np.percentile([r.latency.total_ms for r in rows], [50, 95, 99])
    assert (stats.latency.p50_ms, stats.latency.p95_ms, stats.latency.p99_ms) == pytest.approx((p50, p95, p99))
    assert list(stats.model_versions) == sorted({r.model_version for r in rows})


def test_line_stats_of_a_quiet_line_are_zero(served):
    stats = served.client.line_stats("line-a", 60)  # the data ends 20 minutes ago
    assert (stats.frames, stats.anomalies, stats.anomaly_rate, list(stats.model_versions)) == (0, 0, 0.0, [])


# --- authentication, health, reflection ----------------------------------------------

RPCS = {
    "GetResult": lambda c: c.get_result("x"),
    "QueryResults": lambda c: c.query(),
    "StreamResults": lambda c: next(iter(c.stream())),
    "GetHeatmap": lambda c: c.heatmap("x"),
    "GetLineStats": lambda c: c.line_stats("line-a"),
}


@pytest.mark.parametrize("token", [None, "wrong-token"])
@pytest.mark.parametrize("rpc", RPCS)
def test_every_rpc_needs_a_valid_bearer_token(served, rpc, token):
    with ResultsClient(served.target, token=token) as client:
        assert _code(lambda: RPCS[rpc](client)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_without_the_bearer_scheme_is_refused(served):
    with grpc.insecure_channel(served.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)  # open, proves the channel works
        assert stub.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        get = channel.unary_unary(
            "/hdm.v1.ResultsService/GetResult",
            request_serializer=results_service_pb2.GetResultRequest.SerializeToString,
            response_deserializer=results_pb2.InspectionResult.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            get(results_service_pb2.GetResultRequest(frame_id="x"), metadata=(("authorization", f"Basic {TOKEN}"),))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_open_and_serving(served):
    with ResultsClient(served.target) as client:  # no token: probes carry no secrets
        assert client.health() == "SERVING"
        assert client.health("hdm.v1.ResultsService") == "SERVING"


def _reflect(target: str, token: str | None) -> list[str]:
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata)
        return [s.name for response in responses for s in response.list_services_response.service]


def test_reflection_lists_the_service_to_authenticated_clients(served):
    assert "hdm.v1.ResultsService" in _reflect(served.target, TOKEN)
    with pytest.raises(grpc.RpcError) as info:
        _reflect(served.target, None)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
