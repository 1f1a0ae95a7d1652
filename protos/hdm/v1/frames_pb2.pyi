import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW: _ClassVar[ImageEncoding]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
IMAGE_ENCODING_RAW: ImageEncoding

class FrameMessage(_message.Message):
    __slots__ = ("frame_id", "line_id", "camera_id", "product", "captured_at", "encoding", "width", "height", "channels", "data")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    frame_id: str
    line_id: str
    camera_id: str
    product: str
    captured_at: _timestamp_pb2.Timestamp
    encoding: ImageEncoding
    width: int
    height: int
    channels: int
    data: bytes
    def __init__(self, frame_id: _Optional[str] = ..., line_id: _Optional[str] = ..., camera_id: _Optional[str] = ..., product: _Optional[str] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("reason", "detail", "source_topic", "source_partition", "source_offset", "failed_at")
    class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REASON_UNSPECIFIED: _ClassVar[DeadLetter.Reason]
        REASON_UNPARSABLE: _ClassVar[DeadLetter.Reason]
        REASON_MISSING_FIELD: _ClassVar[DeadLetter.Reason]
        REASON_UNSUPPORTED_ENCODING: _ClassVar[DeadLetter.Reason]
        REASON_CORRUPT_IMAGE: _ClassVar[DeadLetter.Reason]
        REASON_SIZE_MISMATCH: _ClassVar[DeadLetter.Reason]
        REASON_OVERSIZED: _ClassVar[DeadLetter.Reason]
        REASON_UNKNOWN_PRODUCT: _ClassVar[DeadLetter.Reason]
        REASON_SCORING_FAILED: _ClassVar[DeadLetter.Reason]
    REASON_UNSPECIFIED: DeadLetter.Reason
    REASON_UNPARSABLE: DeadLetter.Reason
    REASON_MISSING_FIELD: DeadLetter.Reason
    REASON_UNSUPPORTED_ENCODING: DeadLetter.Reason
    REASON_CORRUPT_IMAGE: DeadLetter.Reason
    REASON_SIZE_MISMATCH: DeadLetter.Reason
    REASON_OVERSIZED: DeadLetter.Reason
    REASON_UNKNOWN_PRODUCT: DeadLetter.Reason
    REASON_SCORING_FAILED: DeadLetter.Reason
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    reason: DeadLetter.Reason
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: _timestamp_pb2.Timestamp
    def __init__(self, reason: _Optional[_Union[DeadLetter.Reason, str]] = ..., detail: _Optional[str] = ..., source_topic: _Optional[str] = ..., source_partition: _Optional[int] = ..., source_offset: _Optional[int] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
