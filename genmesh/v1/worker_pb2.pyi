import datetime

from genmesh.v1 import apps_pb2 as _apps_pb2
from genmesh.v1 import audio_pb2 as _audio_pb2
from genmesh.v1 import common_pb2 as _common_pb2
from genmesh.v1 import echo_pb2 as _echo_pb2
from genmesh.v1 import imagegen_pb2 as _imagegen_pb2
from genmesh.v1 import llm_pb2 as _llm_pb2
from genmesh.v1 import videogen_pb2 as _videogen_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_CPU: _ClassVar[DeviceKind]
    DEVICE_KIND_CUDA: _ClassVar[DeviceKind]
    DEVICE_KIND_MPS: _ClassVar[DeviceKind]
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_CPU: DeviceKind
DEVICE_KIND_CUDA: DeviceKind
DEVICE_KIND_MPS: DeviceKind

class Device(_message.Message):
    __slots__ = ("kind", "name", "gpu_class", "memory_total_bytes", "memory_free_bytes")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    kind: DeviceKind
    name: str
    gpu_class: str
    memory_total_bytes: int
    memory_free_bytes: int
    def __init__(self, kind: _Optional[_Union[DeviceKind, str]] = ..., name: _Optional[str] = ..., gpu_class: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ...) -> None: ...

class ResidentModel(_message.Message):
    __slots__ = ("model_id", "device", "memory_bytes", "last_used", "in_flight", "load_seconds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    device: str
    memory_bytes: int
    last_used: _timestamp_pb2.Timestamp
    in_flight: int
    load_seconds: float
    def __init__(self, model_id: _Optional[str] = ..., device: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., last_used: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., in_flight: _Optional[int] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class WorkerState(_message.Message):
    __slots__ = ("worker_id", "service", "address", "devices", "resident_models", "in_flight", "capacity", "labels", "models", "started_at", "cache_hits", "cache_misses", "draining", "running_requests", "unavailable")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class UnavailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    service: str
    address: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    resident_models: _containers.RepeatedCompositeFieldContainer[ResidentModel]
    in_flight: int
    capacity: int
    labels: _containers.ScalarMap[str, str]
    models: _containers.RepeatedScalarFieldContainer[str]
    started_at: _timestamp_pb2.Timestamp
    cache_hits: int
    cache_misses: int
    draining: bool
    running_requests: _containers.RepeatedScalarFieldContainer[str]
    unavailable: _containers.ScalarMap[str, str]
    def __init__(self, worker_id: _Optional[str] = ..., service: _Optional[str] = ..., address: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., resident_models: _Optional[_Iterable[_Union[ResidentModel, _Mapping]]] = ..., in_flight: _Optional[int] = ..., capacity: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., models: _Optional[_Iterable[str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ..., draining: _Optional[bool] = ..., running_requests: _Optional[_Iterable[str]] = ..., unavailable: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetWorkerStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetWorkerStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: WorkerState
    def __init__(self, state: _Optional[_Union[WorkerState, _Mapping]] = ...) -> None: ...

class EvictModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class EvictModelResponse(_message.Message):
    __slots__ = ("evicted",)
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    evicted: bool
    def __init__(self, evicted: _Optional[bool] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("load_seconds", "cache_hit")
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    load_seconds: float
    cache_hit: bool
    def __init__(self, load_seconds: _Optional[float] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class RunTaskRequest(_message.Message):
    __slots__ = ("echo", "generate_image", "generate_video", "transcribe", "synthesize", "chat_complete", "complete", "invoke")
    ECHO_FIELD_NUMBER: _ClassVar[int]
    GENERATE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    GENERATE_VIDEO_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SYNTHESIZE_FIELD_NUMBER: _ClassVar[int]
    CHAT_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    echo: _echo_pb2.EchoRequest
    generate_image: _imagegen_pb2.GenerateImageRequest
    generate_video: _videogen_pb2.GenerateVideoRequest
    transcribe: _audio_pb2.TranscribeRequest
    synthesize: _audio_pb2.SynthesizeRequest
    chat_complete: _llm_pb2.ChatCompleteRequest
    complete: _llm_pb2.CompleteRequest
    invoke: _apps_pb2.InvokeRequest
    def __init__(self, echo: _Optional[_Union[_echo_pb2.EchoRequest, _Mapping]] = ..., generate_image: _Optional[_Union[_imagegen_pb2.GenerateImageRequest, _Mapping]] = ..., generate_video: _Optional[_Union[_videogen_pb2.GenerateVideoRequest, _Mapping]] = ..., transcribe: _Optional[_Union[_audio_pb2.TranscribeRequest, _Mapping]] = ..., synthesize: _Optional[_Union[_audio_pb2.SynthesizeRequest, _Mapping]] = ..., chat_complete: _Optional[_Union[_llm_pb2.ChatCompleteRequest, _Mapping]] = ..., complete: _Optional[_Union[_llm_pb2.CompleteRequest, _Mapping]] = ..., invoke: _Optional[_Union[_apps_pb2.InvokeRequest, _Mapping]] = ...) -> None: ...

class RunTaskResponse(_message.Message):
    __slots__ = ("echo", "generate_image", "generate_video", "transcribe", "synthesize", "chat_complete", "complete", "invoke", "usage")
    ECHO_FIELD_NUMBER: _ClassVar[int]
    GENERATE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    GENERATE_VIDEO_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SYNTHESIZE_FIELD_NUMBER: _ClassVar[int]
    CHAT_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    echo: _echo_pb2.EchoResult
    generate_image: _imagegen_pb2.GenerateImageResult
    generate_video: _videogen_pb2.GenerateVideoResult
    transcribe: _audio_pb2.TranscribeResult
    synthesize: _audio_pb2.SynthesizeResult
    chat_complete: _llm_pb2.ChatCompleteResult
    complete: _llm_pb2.CompleteResult
    invoke: _apps_pb2.InvokeResult
    usage: _common_pb2.Usage
    def __init__(self, echo: _Optional[_Union[_echo_pb2.EchoResult, _Mapping]] = ..., generate_image: _Optional[_Union[_imagegen_pb2.GenerateImageResult, _Mapping]] = ..., generate_video: _Optional[_Union[_videogen_pb2.GenerateVideoResult, _Mapping]] = ..., transcribe: _Optional[_Union[_audio_pb2.TranscribeResult, _Mapping]] = ..., synthesize: _Optional[_Union[_audio_pb2.SynthesizeResult, _Mapping]] = ..., chat_complete: _Optional[_Union[_llm_pb2.ChatCompleteResult, _Mapping]] = ..., complete: _Optional[_Union[_llm_pb2.CompleteResult, _Mapping]] = ..., invoke: _Optional[_Union[_apps_pb2.InvokeResult, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...
