import datetime

from genmesh.v1 import common_pb2 as _common_pb2
from genmesh.v1 import router_pb2 as _router_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApiKeyScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    API_KEY_SCOPE_UNSPECIFIED: _ClassVar[ApiKeyScope]
    API_KEY_SCOPE_USER: _ClassVar[ApiKeyScope]
    API_KEY_SCOPE_ADMIN: _ClassVar[ApiKeyScope]
    API_KEY_SCOPE_DEPLOY: _ClassVar[ApiKeyScope]

class BucketSize(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUCKET_SIZE_UNSPECIFIED: _ClassVar[BucketSize]
    BUCKET_SIZE_HOUR: _ClassVar[BucketSize]
    BUCKET_SIZE_DAY: _ClassVar[BucketSize]
API_KEY_SCOPE_UNSPECIFIED: ApiKeyScope
API_KEY_SCOPE_USER: ApiKeyScope
API_KEY_SCOPE_ADMIN: ApiKeyScope
API_KEY_SCOPE_DEPLOY: ApiKeyScope
BUCKET_SIZE_UNSPECIFIED: BucketSize
BUCKET_SIZE_HOUR: BucketSize
BUCKET_SIZE_DAY: BucketSize

class UsageRecord(_message.Message):
    __slots__ = ("request_id", "model_id", "api_key_id", "status", "usage", "error", "error_type", "created_at", "started_at", "finished_at", "queue_time_seconds", "run_time_seconds", "machine_type", "mode")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_id: str
    api_key_id: str
    status: _common_pb2.JobStatus
    usage: _common_pb2.Usage
    error: str
    error_type: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    queue_time_seconds: float
    run_time_seconds: float
    machine_type: str
    mode: str
    def __init__(self, request_id: _Optional[str] = ..., model_id: _Optional[str] = ..., api_key_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queue_time_seconds: _Optional[float] = ..., run_time_seconds: _Optional[float] = ..., machine_type: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class UsageBatch(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "name", "scope", "prefix", "created_at", "revoked_at", "spend_limit", "rate_limit_per_minute", "spent")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEND_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    scope: ApiKeyScope
    prefix: str
    created_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    spend_limit: float
    rate_limit_per_minute: float
    spent: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., scope: _Optional[_Union[ApiKeyScope, str]] = ..., prefix: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spend_limit: _Optional[float] = ..., rate_limit_per_minute: _Optional[float] = ..., spent: _Optional[float] = ...) -> None: ...

class UsageLine(_message.Message):
    __slots__ = ("model_id", "api_key_id", "unit", "quantity", "unit_price", "cost", "currency", "requests", "per")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PER_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    api_key_id: str
    unit: str
    quantity: float
    unit_price: float
    cost: float
    currency: str
    requests: int
    per: float
    def __init__(self, model_id: _Optional[str] = ..., api_key_id: _Optional[str] = ..., unit: _Optional[str] = ..., quantity: _Optional[float] = ..., unit_price: _Optional[float] = ..., cost: _Optional[float] = ..., currency: _Optional[str] = ..., requests: _Optional[int] = ..., per: _Optional[float] = ...) -> None: ...

class UsageBucket(_message.Message):
    __slots__ = ("bucket", "lines")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    bucket: _timestamp_pb2.Timestamp
    lines: _containers.RepeatedCompositeFieldContainer[UsageLine]
    def __init__(self, bucket: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[UsageLine, _Mapping]]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("start", "end", "bucket_size", "model_ids", "api_key_id")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    bucket_size: BucketSize
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    api_key_id: str
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_size: _Optional[_Union[BucketSize, str]] = ..., model_ids: _Optional[_Iterable[str]] = ..., api_key_id: _Optional[str] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("buckets", "total_cost", "currency")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[UsageBucket]
    total_cost: float
    currency: str
    def __init__(self, buckets: _Optional[_Iterable[_Union[UsageBucket, _Mapping]]] = ..., total_cost: _Optional[float] = ..., currency: _Optional[str] = ...) -> None: ...

class PlannedUsage(_message.Message):
    __slots__ = ("model_id", "items", "calls", "machine_type")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.UsageItem]
    calls: int
    machine_type: str
    def __init__(self, model_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.UsageItem, _Mapping]]] = ..., calls: _Optional[int] = ..., machine_type: _Optional[str] = ...) -> None: ...

class EstimateCostRequest(_message.Message):
    __slots__ = ("planned",)
    PLANNED_FIELD_NUMBER: _ClassVar[int]
    planned: _containers.RepeatedCompositeFieldContainer[PlannedUsage]
    def __init__(self, planned: _Optional[_Iterable[_Union[PlannedUsage, _Mapping]]] = ...) -> None: ...

class EstimateCostResponse(_message.Message):
    __slots__ = ("total_cost", "currency", "lines")
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    total_cost: float
    currency: str
    lines: _containers.RepeatedCompositeFieldContainer[UsageLine]
    def __init__(self, total_cost: _Optional[float] = ..., currency: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[UsageLine, _Mapping]]] = ...) -> None: ...

class RequestLog(_message.Message):
    __slots__ = ("request_id", "model_id", "api_key_id", "status", "queue_time_seconds", "run_time_seconds", "error", "error_type", "cost", "currency", "created_at", "finished_at", "usage", "mode", "machine_type")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_id: str
    api_key_id: str
    status: _common_pb2.JobStatus
    queue_time_seconds: float
    run_time_seconds: float
    error: str
    error_type: str
    cost: float
    currency: str
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    usage: _common_pb2.Usage
    mode: str
    machine_type: str
    def __init__(self, request_id: _Optional[str] = ..., model_id: _Optional[str] = ..., api_key_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., queue_time_seconds: _Optional[float] = ..., run_time_seconds: _Optional[float] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., cost: _Optional[float] = ..., currency: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., mode: _Optional[str] = ..., machine_type: _Optional[str] = ...) -> None: ...

class ListRequestLogsRequest(_message.Message):
    __slots__ = ("model_ids", "status", "start", "end", "page_size", "cursor", "api_key_id")
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    status: _common_pb2.JobStatus
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    page_size: int
    cursor: str
    api_key_id: str
    def __init__(self, model_ids: _Optional[_Iterable[str]] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., cursor: _Optional[str] = ..., api_key_id: _Optional[str] = ...) -> None: ...

class ListRequestLogsResponse(_message.Message):
    __slots__ = ("logs", "next_cursor", "has_more")
    LOGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[RequestLog]
    next_cursor: str
    has_more: bool
    def __init__(self, logs: _Optional[_Iterable[_Union[RequestLog, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ModelMetrics(_message.Message):
    __slots__ = ("model_id", "requests", "errors", "error_rate", "p50_latency_seconds", "p95_latency_seconds", "p99_latency_seconds", "throughput_per_second")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    requests: int
    errors: int
    error_rate: float
    p50_latency_seconds: float
    p95_latency_seconds: float
    p99_latency_seconds: float
    throughput_per_second: float
    def __init__(self, model_id: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., p50_latency_seconds: _Optional[float] = ..., p95_latency_seconds: _Optional[float] = ..., p99_latency_seconds: _Optional[float] = ..., throughput_per_second: _Optional[float] = ...) -> None: ...

class GetModelMetricsRequest(_message.Message):
    __slots__ = ("start", "end", "model_ids", "api_key_id")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    api_key_id: str
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_ids: _Optional[_Iterable[str]] = ..., api_key_id: _Optional[str] = ...) -> None: ...

class GetModelMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[ModelMetrics]
    def __init__(self, metrics: _Optional[_Iterable[_Union[ModelMetrics, _Mapping]]] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("model_id", "price", "effective_from", "machine_type")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FROM_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    price: _router_pb2.Price
    effective_from: _timestamp_pb2.Timestamp
    machine_type: str
    def __init__(self, model_id: _Optional[str] = ..., price: _Optional[_Union[_router_pb2.Price, _Mapping]] = ..., effective_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., machine_type: _Optional[str] = ...) -> None: ...

class ListPricesRequest(_message.Message):
    __slots__ = ("model_ids", "include_history")
    MODEL_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    model_ids: _containers.RepeatedScalarFieldContainer[str]
    include_history: bool
    def __init__(self, model_ids: _Optional[_Iterable[str]] = ..., include_history: _Optional[bool] = ...) -> None: ...

class ListPricesResponse(_message.Message):
    __slots__ = ("prices",)
    PRICES_FIELD_NUMBER: _ClassVar[int]
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    def __init__(self, prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ...) -> None: ...

class SetPriceRequest(_message.Message):
    __slots__ = ("model_id", "price", "machine_type")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_TYPE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    price: _router_pb2.Price
    machine_type: str
    def __init__(self, model_id: _Optional[str] = ..., price: _Optional[_Union[_router_pb2.Price, _Mapping]] = ..., machine_type: _Optional[str] = ...) -> None: ...

class SetPriceResponse(_message.Message):
    __slots__ = ("price",)
    PRICE_FIELD_NUMBER: _ClassVar[int]
    price: ModelPrice
    def __init__(self, price: _Optional[_Union[ModelPrice, _Mapping]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "scope", "spend_limit", "rate_limit_per_minute")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SPEND_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    scope: ApiKeyScope
    spend_limit: float
    rate_limit_per_minute: float
    def __init__(self, name: _Optional[str] = ..., scope: _Optional[_Union[ApiKeyScope, str]] = ..., spend_limit: _Optional[float] = ..., rate_limit_per_minute: _Optional[float] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ("secret", "key_id")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    secret: str
    key_id: str
    def __init__(self, secret: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...
