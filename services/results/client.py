"""A small typed client for `hdm.v1.ResultsService`, used by `hdm query` and the demo.

    with ResultsClient("127.0.0.1:50051", token="dev-token") as client:
        for result in client.iter_query(result_filter(line_id="line-1", verdict="anomalous")):
            ...
        stream = client.stream(result_filter(line_id="line-1"))
        for item in stream:          # StreamedResult; stream.cursor resumes after a disconnect
            ...
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.hdm.v1 import results_pb2, results_service_pb2, results_service_pb2_grpc
from services.results.tokens import CURSOR_METADATA

VERDICTS = {"ok": results_pb2.VERDICT_OK, "anomalous": results_pb2.VERDICT_ANOMALOUS}


def result_filter(
    line_id: str = "",
    camera_id: str = "",
    product: str = "",
    captured_after: datetime | None = None,
    captured_before: datetime | None = None,
    verdict: str | int = 0,
    min_score: float = 0.0,
) -> results_service_pb2.ResultFilter:
    """A ResultFilter from plain values; naive datetimes are taken as UTC."""
    f = results_service_pb2.ResultFilter(line_id=line_id, camera_id=camera_id, product=product, min_score=min_score)
    f.verdict = VERDICTS[verdict] if isinstance(verdict, str) else verdict
    if captured_after is not None:
        f.captured_after.FromDatetime(_utc(captured_after))
    if captured_before is not None:
        f.captured_before.FromDatetime(_utc(captured_before))
    return f


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class ResultStream:
    """A live StreamResults call: iterate for StreamedResult; `cursor` is where to resume."""

    def __init__(self, call):
        self._call = call
        self.cursor = ""

    def start_cursor(self) -> str:
        """Where the server started this stream; blocks until the server has accepted the call."""
        return dict(self._call.initial_metadata() or ()).get(CURSOR_METADATA, "")

    def __iter__(self) -> Iterator[results_service_pb2.StreamedResult]:
        if not self.cursor:  # the starting point, in case the stream breaks before its first result
            self.cursor = self.start_cursor()
        for item in self._call:
            self.cursor = item.cursor
            yield item

    def cancel(self) -> None:
        self._call.cancel()


class ResultsClient:
    def __init__(
        self,
        target: str,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
        timeout_s: float = 10.0,
    ):
        """TLS is on when ca_file is given (cert_file/key_file add a client certificate)."""
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        if ca_file or cert_file:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file), private_key=_read(key_file), certificate_chain=_read(cert_file)
            )
            self._channel = grpc.secure_channel(target, credentials, options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self.target = target
        self._stub = results_service_pb2_grpc.ResultsServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ResultsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the channel connects; grpc.FutureTimeoutError if it does not."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def health(self, service: str = "") -> str:
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self._timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def get_result(self, frame_id: str, include_images: bool = False) -> results_pb2.InspectionResult:
        request = results_service_pb2.GetResultRequest(frame_id=frame_id, include_images=include_images)
        return self._stub.GetResult(request, metadata=self._metadata, timeout=self._timeout_s)

    def query(
        self,
        filter: results_service_pb2.ResultFilter | None = None,
        page_size: int = 0,
        page_token: str = "",
        include_images: bool = False,
    ) -> results_service_pb2.QueryResultsResponse:
        request = results_service_pb2.QueryResultsRequest(
            filter=filter, page_size=page_size, page_token=page_token, include_images=include_images
        )
        return self._stub.QueryResults(request, metadata=self._metadata, timeout=self._timeout_s)

    def iter_query(
        self,
        filter: results_service_pb2.ResultFilter | None = None,
        page_size: int = 0,
        include_images: bool = False,
        limit: int | None = None,
    ) -> Iterator[results_pb2.InspectionResult]:
        """Every matching result (or the first `limit`), page after page."""
        token, count = "", 0
        while True:
            page = self.query(filter, page_size, token, include_images)
            for result in page.results:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield result
            token = page.next_page_token
            if not token:
                return

    def stream(
        self,
        filter: results_service_pb2.ResultFilter | None = None,
        cursor: str = "",
        include_images: bool = False,
        timeout_s: float | None = None,
    ) -> ResultStream:
        """A live stream (no deadline unless timeout_s); resume with a previous stream's `cursor`."""
        request = results_service_pb2.StreamResultsRequest(filter=filter, cursor=cursor, include_images=include_images)
        stream = ResultStream(self._stub.StreamResults(request, metadata=self._metadata, timeout=timeout_s))
        stream.cursor = cursor
        return stream

    def heatmap(self, frame_id: str) -> results_service_pb2.Heatmap:
        request = results_service_pb2.GetHeatmapRequest(frame_id=frame_id)
        return self._stub.GetHeatmap(request, metadata=self._metadata, timeout=self._timeout_s)

    def line_stats(self, line_id: str, window_s: float = 0.0) -> results_service_pb2.LineStats:
        request = results_service_pb2.GetLineStatsRequest(line_id=line_id)
        request.window.FromMicroseconds(int(window_s * 1_000_000))
        return self._stub.GetLineStats(request, metadata=self._metadata, timeout=self._timeout_s)


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None
