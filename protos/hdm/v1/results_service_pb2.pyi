import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.hdm.v1 import results_pb2 as _results_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResultFilter(_message.Message):
    __slots__ = ("line_id", "camera_id", "product", "captured_after", "captured_before", "verdict", "min_score")
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    line_id: str
    camera_id: str
    product: str
    captured_after: _timestamp_pb2.Timestamp
    captured_before: _timestamp_pb2.Timestamp
    verdict: _results_pb2.Verdict
    min_score: float
    def __init__(self, line_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., product: _Optional[str] = ..., captured_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., captured_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verdict: _Optional[_Union[_results_pb2.Verdict, str]] = ..., min_score: _Optional[float] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("frame_id", "include_images")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    frame_id: str
    include_images: bool
    def __init__(self, frame_id: _Optional[str] = ..., include_images: _Optional[bool] = ...) -> None: ...

class QueryResultsRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token", "include_images")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    filter: ResultFilter
    page_size: int
    page_token: str
    include_images: bool
    def __init__(self, filter: _Optional[_Union[ResultFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_images: _Optional[bool] = ...) -> None: ...

class QueryResultsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_results_pb2.InspectionResult]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[_results_pb2.InspectionResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamResultsRequest(_message.Message):
    __slots__ = ("filter", "cursor", "include_images")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    filter: ResultFilter
    cursor: str
    include_images: bool
    def __init__(self, filter: _Optional[_Union[ResultFilter, _Mapping]] = ..., cursor: _Optional[str] = ..., include_images: _Optional[bool] = ...) -> None: ...

class StreamedResult(_message.Message):
    __slots__ = ("result", "cursor")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    result: _results_pb2.InspectionResult
    cursor: str
    def __init__(self, result: _Optional[_Union[_results_pb2.InspectionResult, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class GetHeatmapRequest(_message.Message):
    __slots__ = ("frame_id",)
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    frame_id: str
    def __init__(self, frame_id: _Optional[str] = ...) -> None: ...

class Heatmap(_message.Message):
    __slots__ = ("frame_id", "heatmap_png", "overlay_png", "pixel_threshold")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PNG_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    PIXEL_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    frame_id: str
    heatmap_png: bytes
    overlay_png: bytes
    pixel_threshold: float
    def __init__(self, frame_id: _Optional[str] = ..., heatmap_png: _Optional[bytes] = ..., overlay_png: _Optional[bytes] = ..., pixel_threshold: _Optional[float] = ...) -> None: ...

class GetLineStatsRequest(_message.Message):
    __slots__ = ("line_id", "window")
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    line_id: str
    window: _duration_pb2.Duration
    def __init__(self, line_id: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LatencyPercentiles(_message.Message):
    __slots__ = ("p50_ms", "p95_ms", "p99_ms")
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    def __init__(self, p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class LineStats(_message.Message):
    __slots__ = ("line_id", "window_start", "window_end", "frames", "anomalies", "anomaly_rate", "latency", "model_versions")
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    line_id: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    frames: int
    anomalies: int
    anomaly_rate: float
    latency: LatencyPercentiles
    model_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, line_id: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., frames: _Optional[int] = ..., anomalies: _Optional[int] = ..., anomaly_rate: _Optional[float] = ..., latency: _Optional[_Union[LatencyPercentiles, _Mapping]] = ..., model_versions: _Optional[_Iterable[str]] = ...) -> None: ...
