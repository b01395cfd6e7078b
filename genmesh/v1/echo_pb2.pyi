from genmesh.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("model_id", "prompt", "data", "num_events", "delay_ms", "fail_with")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NUM_EVENTS_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_WITH_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    prompt: str
    data: _struct_pb2.Struct
    num_events: int
    delay_ms: int
    fail_with: str
    def __init__(self, model_id: _Optional[str] = ..., prompt: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., num_events: _Optional[int] = ..., delay_ms: _Optional[int] = ..., fail_with: _Optional[str] = ...) -> None: ...

class EchoPartial(_message.Message):
    __slots__ = ("index", "prompt")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    index: int
    prompt: str
    def __init__(self, index: _Optional[int] = ..., prompt: _Optional[str] = ...) -> None: ...

class EchoResult(_message.Message):
    __slots__ = ("prompt", "data", "num_events")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NUM_EVENTS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    data: _struct_pb2.Struct
    num_events: int
    def __init__(self, prompt: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., num_events: _Optional[int] = ...) -> None: ...

class EchoEvent(_message.Message):
    __slots__ = ("progress", "log", "partial", "usage", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    log: _common_pb2.LogEntry
    partial: EchoPartial
    usage: _common_pb2.Usage
    result: EchoResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., log: _Optional[_Union[_common_pb2.LogEntry, _Mapping]] = ..., partial: _Optional[_Union[EchoPartial, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., result: _Optional[_Union[EchoResult, _Mapping]] = ...) -> None: ...
