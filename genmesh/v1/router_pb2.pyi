import datetime

from genmesh.v1 import apps_pb2 as _apps_pb2
from genmesh.v1 import common_pb2 as _common_pb2
from genmesh.v1 import worker_pb2 as _worker_pb2
from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResultView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_VIEW_UNSPECIFIED: _ClassVar[ResultView]
    RESULT_VIEW_JSON: _ClassVar[ResultView]
    RESULT_VIEW_TYPED: _ClassVar[ResultView]

class CancelOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCEL_OUTCOME_UNSPECIFIED: _ClassVar[CancelOutcome]
    CANCEL_OUTCOME_CANCELLATION_REQUESTED: _ClassVar[CancelOutcome]
    CANCEL_OUTCOME_ALREADY_COMPLETED: _ClassVar[CancelOutcome]
    CANCEL_OUTCOME_NOT_FOUND: _ClassVar[CancelOutcome]
RESULT_VIEW_UNSPECIFIED: ResultView
RESULT_VIEW_JSON: ResultView
RESULT_VIEW_TYPED: ResultView
CANCEL_OUTCOME_UNSPECIFIED: CancelOutcome
CANCEL_OUTCOME_CANCELLATION_REQUESTED: CancelOutcome
CANCEL_OUTCOME_ALREADY_COMPLETED: CancelOutcome
CANCEL_OUTCOME_NOT_FOUND: CancelOutcome

class HardwareConstraints(_message.Message):
    __slots__ = ("min_device_memory_bytes", "gpu_required", "gpu_classes", "num_gpus", "machine_type")
    MIN_DEVICE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASSES_FIELD_NUMBER: _ClassVar[int]
    NUM_GPUS_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    min_device_memory_bytes: int
    gpu_required: bool
    gpu_classes: _containers.RepeatedScalarFieldContainer[str]
    num_gpus: int
    machine_type: str
    def __init__(self, min_device_memory_bytes: _Optional[int] = ..., gpu_required: _Optional[bool] = ..., gpu_classes: _Optional[_Iterable[str]] = ..., num_gpus: _Optional[int] = ..., machine_type: _Optional[str] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("unit", "unit_price", "per", "currency")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    PER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    unit: str
    unit_price: float
    per: float
    currency: str
    def __init__(self, unit: _Optional[str] = ..., unit_price: _Optional[float] = ..., per: _Optional[float] = ..., currency: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "task", "service", "description", "weights", "memory_bytes", "hardware", "prices", "input_schema", "request_type", "max_context", "available", "defaults", "endpoints", "unavailable_reason", "weights_source")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: str
    service: str
    description: str
    weights: str
    memory_bytes: int
    hardware: HardwareConstraints
    prices: _containers.RepeatedCompositeFieldContainer[Price]
    input_schema: _struct_pb2.Struct
    request_type: str
    max_context: int
    available: bool
    defaults: _struct_pb2.Struct
    endpoints: _containers.RepeatedCompositeFieldContainer[_apps_pb2.AppEndpoint]
    unavailable_reason: str
    weights_source: str
    def __init__(self, id: _Optional[str] = ..., task: _Optional[str] = ..., service: _Optional[str] = ..., description: _Optional[str] = ..., weights: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., hardware: _Optional[_Union[HardwareConstraints, _Mapping]] = ..., prices: _Optional[_Iterable[_Union[Price, _Mapping]]] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_type: _Optional[str] = ..., max_context: _Optional[int] = ..., available: _Optional[bool] = ..., defaults: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., endpoints: _Optional[_Iterable[_Union[_apps_pb2.AppEndpoint, _Mapping]]] = ..., unavailable_reason: _Optional[str] = ..., weights_source: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("task", "service")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    task: str
    service: str
    def __init__(self, task: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("model_id", "input", "timeout")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _struct_pb2.Struct
    timeout: _duration_pb2.Duration
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("request_id", "output", "usage", "inference_time_seconds")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    output: _struct_pb2.Struct
    usage: _common_pb2.Usage
    inference_time_seconds: float
    def __init__(self, request_id: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., inference_time_seconds: _Optional[float] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("model_id", "input", "timeout")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _struct_pb2.Struct
    timeout: _duration_pb2.Duration
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("request_id", "progress", "log", "partial", "usage", "result")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    progress: _common_pb2.Progress
    log: _common_pb2.LogEntry
    partial: _common_pb2.PartialOutput
    usage: _common_pb2.Usage
    result: _common_pb2.FinalResult
    def __init__(self, request_id: _Optional[str] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., log: _Optional[_Union[_common_pb2.LogEntry, _Mapping]] = ..., partial: _Optional[_Union[_common_pb2.PartialOutput, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., result: _Optional[_Union[_common_pb2.FinalResult, _Mapping]] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("model_id", "input", "priority", "webhook_url", "idempotency_key", "start_timeout", "run_timeout")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    START_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _struct_pb2.Struct
    priority: _common_pb2.Priority
    webhook_url: str
    idempotency_key: str
    start_timeout: _duration_pb2.Duration
    run_timeout: _duration_pb2.Duration
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., webhook_url: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., start_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., run_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("request_id", "queue_position", "status")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    queue_position: int
    status: _common_pb2.JobStatus
    def __init__(self, request_id: _Optional[str] = ..., queue_position: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ...) -> None: ...

class JobState(_message.Message):
    __slots__ = ("request_id", "model_id", "status", "queue_position", "progress", "logs", "error", "error_type", "queue_time_seconds", "inference_time_seconds", "created_at", "started_at", "finished_at", "attempts")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_id: str
    status: _common_pb2.JobStatus
    queue_position: int
    progress: _common_pb2.Progress
    logs: _containers.RepeatedCompositeFieldContainer[_common_pb2.LogEntry]
    error: str
    error_type: str
    queue_time_seconds: float
    inference_time_seconds: float
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempts: int
    def __init__(self, request_id: _Optional[str] = ..., model_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., queue_position: _Optional[int] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., logs: _Optional[_Iterable[_Union[_common_pb2.LogEntry, _Mapping]]] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., queue_time_seconds: _Optional[float] = ..., inference_time_seconds: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("request_id", "logs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    logs: bool
    def __init__(self, request_id: _Optional[str] = ..., logs: _Optional[bool] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobState
    def __init__(self, job: _Optional[_Union[JobState, _Mapping]] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("request_id", "logs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    logs: bool
    def __init__(self, request_id: _Optional[str] = ..., logs: _Optional[bool] = ...) -> None: ...

class WatchStatusResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobState
    def __init__(self, job: _Optional[_Union[JobState, _Mapping]] = ...) -> None: ...

class ResultRequest(_message.Message):
    __slots__ = ("request_id", "view")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    view: ResultView
    def __init__(self, request_id: _Optional[str] = ..., view: _Optional[_Union[ResultView, str]] = ...) -> None: ...

class ResultResponse(_message.Message):
    __slots__ = ("job", "output", "usage", "result")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job: JobState
    output: _struct_pb2.Struct
    usage: _common_pb2.Usage
    result: _any_pb2.Any
    def __init__(self, job: _Optional[_Union[JobState, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., result: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("outcome",)
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: CancelOutcome
    def __init__(self, outcome: _Optional[_Union[CancelOutcome, str]] = ...) -> None: ...

class WebhookDelivery(_message.Message):
    __slots__ = ("attempt", "url", "status_code", "error", "attempted_at", "duration_seconds")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    url: str
    status_code: int
    error: str
    attempted_at: _timestamp_pb2.Timestamp
    duration_seconds: float
    def __init__(self, attempt: _Optional[int] = ..., url: _Optional[str] = ..., status_code: _Optional[int] = ..., error: _Optional[str] = ..., attempted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class ListWebhookDeliveriesRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class ListWebhookDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[WebhookDelivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[WebhookDelivery, _Mapping]]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[_worker_pb2.WorkerState]
    def __init__(self, workers: _Optional[_Iterable[_Union[_worker_pb2.WorkerState, _Mapping]]] = ...) -> None: ...

class StoredResponse(_message.Message):
    __slots__ = ("id", "response", "context", "job_id", "created_at", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: _struct_pb2.Struct
    context: _struct_pb2.Struct
    job_id: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., job_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PutResponseRequest(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: StoredResponse
    def __init__(self, response: _Optional[_Union[StoredResponse, _Mapping]] = ...) -> None: ...

class PutResponseResponse(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: StoredResponse
    def __init__(self, response: _Optional[_Union[StoredResponse, _Mapping]] = ...) -> None: ...

class GetResponseRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetResponseResponse(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: StoredResponse
    def __init__(self, response: _Optional[_Union[StoredResponse, _Mapping]] = ...) -> None: ...

class DeleteResponseRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteResponseResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
