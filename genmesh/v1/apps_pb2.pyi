import datetime

from genmesh.v1 import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppEndpoint(_message.Message):
    __slots__ = ("path", "input_schema", "output_schema", "streaming")
    PATH_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    path: str
    input_schema: _struct_pb2.Struct
    output_schema: _struct_pb2.Struct
    streaming: bool
    def __init__(self, path: _Optional[str] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., streaming: _Optional[bool] = ...) -> None: ...

class App(_message.Message):
    __slots__ = ("id", "entrypoint", "code_url", "machine_type", "num_gpus", "requirements", "keep_alive_seconds", "min_concurrency", "max_concurrency", "endpoints", "version", "created_at", "runners", "owner_key_id", "updated_at", "busy_runners", "description", "trusted")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    CODE_URL_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_GPUS_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RUNNERS_FIELD_NUMBER: _ClassVar[int]
    OWNER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    BUSY_RUNNERS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    id: str
    entrypoint: str
    code_url: str
    machine_type: str
    num_gpus: int
    requirements: _containers.RepeatedScalarFieldContainer[str]
    keep_alive_seconds: float
    min_concurrency: int
    max_concurrency: int
    endpoints: _containers.RepeatedCompositeFieldContainer[AppEndpoint]
    version: int
    created_at: _timestamp_pb2.Timestamp
    runners: int
    owner_key_id: str
    updated_at: _timestamp_pb2.Timestamp
    busy_runners: int
    description: str
    trusted: bool
    def __init__(self, id: _Optional[str] = ..., entrypoint: _Optional[str] = ..., code_url: _Optional[str] = ..., machine_type: _Optional[str] = ..., num_gpus: _Optional[int] = ..., requirements: _Optional[_Iterable[str]] = ..., keep_alive_seconds: _Optional[float] = ..., min_concurrency: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[AppEndpoint, _Mapping]]] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runners: _Optional[int] = ..., owner_key_id: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., busy_runners: _Optional[int] = ..., description: _Optional[str] = ..., trusted: _Optional[bool] = ...) -> None: ...

class DeployAppRequest(_message.Message):
    __slots__ = ("name", "entrypoint", "code", "machine_type", "num_gpus", "requirements", "keep_alive_seconds", "min_concurrency", "max_concurrency", "endpoints", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_GPUS_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    entrypoint: str
    code: bytes
    machine_type: str
    num_gpus: int
    requirements: _containers.RepeatedScalarFieldContainer[str]
    keep_alive_seconds: float
    min_concurrency: int
    max_concurrency: int
    endpoints: _containers.RepeatedCompositeFieldContainer[AppEndpoint]
    description: str
    def __init__(self, name: _Optional[str] = ..., entrypoint: _Optional[str] = ..., code: _Optional[bytes] = ..., machine_type: _Optional[str] = ..., num_gpus: _Optional[int] = ..., requirements: _Optional[_Iterable[str]] = ..., keep_alive_seconds: _Optional[float] = ..., min_concurrency: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[AppEndpoint, _Mapping]]] = ..., description: _Optional[str] = ...) -> None: ...

class DeployAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class ListAppsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAppsResponse(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[App]
    def __init__(self, apps: _Optional[_Iterable[_Union[App, _Mapping]]] = ...) -> None: ...

class GetAppRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class ScaleAppRequest(_message.Message):
    __slots__ = ("id", "min_concurrency", "max_concurrency", "keep_alive_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    MIN_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    min_concurrency: int
    max_concurrency: int
    keep_alive_seconds: float
    def __init__(self, id: _Optional[str] = ..., min_concurrency: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., keep_alive_seconds: _Optional[float] = ...) -> None: ...

class ScaleAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class DeleteAppRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteAppResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamAppLogsRequest(_message.Message):
    __slots__ = ("id", "follow")
    ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    follow: bool
    def __init__(self, id: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class StreamAppLogsResponse(_message.Message):
    __slots__ = ("entry", "runner_id", "request_id", "version", "worker_id")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    RUNNER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    entry: _common_pb2.LogEntry
    runner_id: str
    request_id: str
    version: int
    worker_id: str
    def __init__(self, entry: _Optional[_Union[_common_pb2.LogEntry, _Mapping]] = ..., runner_id: _Optional[str] = ..., request_id: _Optional[str] = ..., version: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("model_id", "input", "version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _struct_pb2.Struct
    version: int
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class InvokeResult(_message.Message):
    __slots__ = ("output", "runner_seconds", "cold_start", "cold_start_seconds", "version")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RUNNER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    COLD_START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    output: _struct_pb2.Struct
    runner_seconds: float
    cold_start: bool
    cold_start_seconds: float
    version: int
    def __init__(self, output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., runner_seconds: _Optional[float] = ..., cold_start: _Optional[bool] = ..., cold_start_seconds: _Optional[float] = ..., version: _Optional[int] = ...) -> None: ...

class InvokeEvent(_message.Message):
    __slots__ = ("progress", "log", "partial", "usage", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    log: _common_pb2.LogEntry
    partial: _common_pb2.PartialOutput
    usage: _common_pb2.Usage
    result: InvokeResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., log: _Optional[_Union[_common_pb2.LogEntry, _Mapping]] = ..., partial: _Optional[_Union[_common_pb2.PartialOutput, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., result: _Optional[_Union[InvokeResult, _Mapping]] = ...) -> None: ...
