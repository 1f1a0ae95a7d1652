import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_OK: _ClassVar[Verdict]
    VERDICT_ANOMALOUS: _ClassVar[Verdict]
VERDICT_UNSPECIFIED: Verdict
VERDICT_OK: Verdict
VERDICT_ANOMALOUS: Verdict

class LatencyBreakdown(_message.Message):
    __slots__ = ("ingest_ms", "queue_ms", "score_ms", "post_ms", "total_ms")
    INGEST_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_MS_FIELD_NUMBER: _ClassVar[int]
    POST_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    ingest_ms: float
    queue_ms: float
    score_ms: float
    post_ms: float
    total_ms: float
    def __init__(self, ingest_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., score_ms: _Optional[float] = ..., post_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class InspectionResult(_message.Message):
    __slots__ = ("frame_id", "line_id", "camera_id", "product", "captured_at", "scored_at", "model_version", "image_score", "anomaly_probability", "verdict", "threshold", "pixel_threshold", "anomalous_area", "heatmap_png", "overlay_png", "latency", "batch_size", "scorer_replica")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    SCORED_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SCORE_FIELD_NUMBER: _ClassVar[int]
    ANOMALY_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PIXEL_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ANOMALOUS_AREA_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_PNG_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCORER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    frame_id: str
    line_id: str
    camera_id: str
    product: str
    captured_at: _timestamp_pb2.Timestamp
    scored_at: _timestamp_pb2.Timestamp
    model_version: str
    image_score: float
    anomaly_probability: float
    verdict: Verdict
    threshold: float
    pixel_threshold: float
    anomalous_area: float
    heatmap_png: bytes
    overlay_png: bytes
    latency: LatencyBreakdown
    batch_size: int
    scorer_replica: str
    def __init__(self, frame_id: _Optional[str] = ..., line_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., product: _Optional[str] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_version: _Optional[str] = ..., image_score: _Optional[float] = ..., anomaly_probability: _Optional[float] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., threshold: _Optional[float] = ..., pixel_threshold: _Optional[float] = ..., anomalous_area: _Optional[float] = ..., heatmap_png: _Optional[bytes] = ..., overlay_png: _Optional[bytes] = ..., latency: _Optional[_Union[LatencyBreakdown, _Mapping]] = ..., batch_size: _Optional[int] = ..., scorer_replica: _Optional[str] = ...) -> None: ...
