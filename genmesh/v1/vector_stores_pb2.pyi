from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChunkingStrategyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHUNKING_STRATEGY_TYPE_UNSPECIFIED: _ClassVar[ChunkingStrategyType]
    CHUNKING_STRATEGY_TYPE_AUTO: _ClassVar[ChunkingStrategyType]
    CHUNKING_STRATEGY_TYPE_STATIC: _ClassVar[ChunkingStrategyType]

class ExpiresAfterAnchor(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPIRES_AFTER_ANCHOR_UNSPECIFIED: _ClassVar[ExpiresAfterAnchor]
    EXPIRES_AFTER_ANCHOR_LAST_ACTIVE_AT: _ClassVar[ExpiresAfterAnchor]

class VectorStoreStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VECTOR_STORE_STATUS_UNSPECIFIED: _ClassVar[VectorStoreStatus]
    VECTOR_STORE_STATUS_IN_PROGRESS: _ClassVar[VectorStoreStatus]
    VECTOR_STORE_STATUS_COMPLETED: _ClassVar[VectorStoreStatus]
    VECTOR_STORE_STATUS_EXPIRED: _ClassVar[VectorStoreStatus]

class LastErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAST_ERROR_CODE_UNSPECIFIED: _ClassVar[LastErrorCode]
    LAST_ERROR_CODE_SERVER_ERROR: _ClassVar[LastErrorCode]
    LAST_ERROR_CODE_UNSUPPORTED_FILE: _ClassVar[LastErrorCode]
    LAST_ERROR_CODE_INVALID_FILE: _ClassVar[LastErrorCode]

class VectorStoreFileStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VECTOR_STORE_FILE_STATUS_UNSPECIFIED: _ClassVar[VectorStoreFileStatus]
    VECTOR_STORE_FILE_STATUS_IN_PROGRESS: _ClassVar[VectorStoreFileStatus]
    VECTOR_STORE_FILE_STATUS_COMPLETED: _ClassVar[VectorStoreFileStatus]
    VECTOR_STORE_FILE_STATUS_FAILED: _ClassVar[VectorStoreFileStatus]
    VECTOR_STORE_FILE_STATUS_CANCELLED: _ClassVar[VectorStoreFileStatus]

class ListOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIST_ORDER_UNSPECIFIED: _ClassVar[ListOrder]
    LIST_ORDER_ASC: _ClassVar[ListOrder]
    LIST_ORDER_DESC: _ClassVar[ListOrder]

class ComparisonFilterType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPARISON_FILTER_TYPE_UNSPECIFIED: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_EQ: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_NE: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_GT: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_GTE: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_LT: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_LTE: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_IN: _ClassVar[ComparisonFilterType]
    COMPARISON_FILTER_TYPE_NIN: _ClassVar[ComparisonFilterType]

class CompoundFilterType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPOUND_FILTER_TYPE_UNSPECIFIED: _ClassVar[CompoundFilterType]
    COMPOUND_FILTER_TYPE_AND: _ClassVar[CompoundFilterType]
    COMPOUND_FILTER_TYPE_OR: _ClassVar[CompoundFilterType]

class Ranker(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RANKER_UNSPECIFIED: _ClassVar[Ranker]
    RANKER_NONE: _ClassVar[Ranker]
    RANKER_AUTO: _ClassVar[Ranker]
    RANKER_DEFAULT_2024_11_15: _ClassVar[Ranker]
CHUNKING_STRATEGY_TYPE_UNSPECIFIED: ChunkingStrategyType
CHUNKING_STRATEGY_TYPE_AUTO: ChunkingStrategyType
CHUNKING_STRATEGY_TYPE_STATIC: ChunkingStrategyType
EXPIRES_AFTER_ANCHOR_UNSPECIFIED: ExpiresAfterAnchor
EXPIRES_AFTER_ANCHOR_LAST_ACTIVE_AT: ExpiresAfterAnchor
VECTOR_STORE_STATUS_UNSPECIFIED: VectorStoreStatus
VECTOR_STORE_STATUS_IN_PROGRESS: VectorStoreStatus
VECTOR_STORE_STATUS_COMPLETED: VectorStoreStatus
VECTOR_STORE_STATUS_EXPIRED: VectorStoreStatus
LAST_ERROR_CODE_UNSPECIFIED: LastErrorCode
LAST_ERROR_CODE_SERVER_ERROR: LastErrorCode
LAST_ERROR_CODE_UNSUPPORTED_FILE: LastErrorCode
LAST_ERROR_CODE_INVALID_FILE: LastErrorCode
VECTOR_STORE_FILE_STATUS_UNSPECIFIED: VectorStoreFileStatus
VECTOR_STORE_FILE_STATUS_IN_PROGRESS: VectorStoreFileStatus
VECTOR_STORE_FILE_STATUS_COMPLETED: VectorStoreFileStatus
VECTOR_STORE_FILE_STATUS_FAILED: VectorStoreFileStatus
VECTOR_STORE_FILE_STATUS_CANCELLED: VectorStoreFileStatus
LIST_ORDER_UNSPECIFIED: ListOrder
LIST_ORDER_ASC: ListOrder
LIST_ORDER_DESC: ListOrder
COMPARISON_FILTER_TYPE_UNSPECIFIED: ComparisonFilterType
COMPARISON_FILTER_TYPE_EQ: ComparisonFilterType
COMPARISON_FILTER_TYPE_NE: ComparisonFilterType
COMPARISON_FILTER_TYPE_GT: ComparisonFilterType
COMPARISON_FILTER_TYPE_GTE: ComparisonFilterType
COMPARISON_FILTER_TYPE_LT: ComparisonFilterType
COMPARISON_FILTER_TYPE_LTE: ComparisonFilterType
COMPARISON_FILTER_TYPE_IN: ComparisonFilterType
COMPARISON_FILTER_TYPE_NIN: ComparisonFilterType
COMPOUND_FILTER_TYPE_UNSPECIFIED: CompoundFilterType
COMPOUND_FILTER_TYPE_AND: CompoundFilterType
COMPOUND_FILTER_TYPE_OR: CompoundFilterType
RANKER_UNSPECIFIED: Ranker
RANKER_NONE: Ranker
RANKER_AUTO: Ranker
RANKER_DEFAULT_2024_11_15: Ranker

class ChunkingStrategy(_message.Message):
    __slots__ = ("type", "max_chunk_size_tokens", "chunk_overlap_tokens")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_SIZE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    type: ChunkingStrategyType
    max_chunk_size_tokens: int
    chunk_overlap_tokens: int
    def __init__(self, type: _Optional[_Union[ChunkingStrategyType, str]] = ..., max_chunk_size_tokens: _Optional[int] = ..., chunk_overlap_tokens: _Optional[int] = ...) -> None: ...

class ExpiresAfter(_message.Message):
    __slots__ = ("anchor", "days")
    ANCHOR_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    anchor: ExpiresAfterAnchor
    days: int
    def __init__(self, anchor: _Optional[_Union[ExpiresAfterAnchor, str]] = ..., days: _Optional[int] = ...) -> None: ...

class FileCounts(_message.Message):
    __slots__ = ("in_progress", "completed", "failed", "cancelled", "total")
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    total: int
    def __init__(self, in_progress: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class VectorStore(_message.Message):
    __slots__ = ("id", "name", "metadata", "created_at", "last_active_at", "expires_at", "expires_after", "file_counts", "usage_bytes", "subject", "chunking_strategy", "embedding_model", "description", "status")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    metadata: _containers.ScalarMap[str, str]
    created_at: int
    last_active_at: int
    expires_at: int
    expires_after: ExpiresAfter
    file_counts: FileCounts
    usage_bytes: int
    subject: str
    chunking_strategy: ChunkingStrategy
    embedding_model: str
    description: str
    status: VectorStoreStatus
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[int] = ..., last_active_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., expires_after: _Optional[_Union[ExpiresAfter, _Mapping]] = ..., file_counts: _Optional[_Union[FileCounts, _Mapping]] = ..., usage_bytes: _Optional[int] = ..., subject: _Optional[str] = ..., chunking_strategy: _Optional[_Union[ChunkingStrategy, _Mapping]] = ..., embedding_model: _Optional[str] = ..., description: _Optional[str] = ..., status: _Optional[_Union[VectorStoreStatus, str]] = ...) -> None: ...

class LastError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: LastErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[LastErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class VectorStoreFile(_message.Message):
    __slots__ = ("id", "vector_store_id", "created_at", "status", "last_error", "attributes", "usage_bytes", "chunking_strategy", "filename")
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector_store_id: str
    created_at: int
    status: VectorStoreFileStatus
    last_error: LastError
    attributes: _struct_pb2.Struct
    usage_bytes: int
    chunking_strategy: ChunkingStrategy
    filename: str
    def __init__(self, id: _Optional[str] = ..., vector_store_id: _Optional[str] = ..., created_at: _Optional[int] = ..., status: _Optional[_Union[VectorStoreFileStatus, str]] = ..., last_error: _Optional[_Union[LastError, _Mapping]] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., usage_bytes: _Optional[int] = ..., chunking_strategy: _Optional[_Union[ChunkingStrategy, _Mapping]] = ..., filename: _Optional[str] = ...) -> None: ...

class FileDocument(_message.Message):
    __slots__ = ("file_id", "filename", "content_type", "content")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    filename: str
    content_type: str
    content: bytes
    def __init__(self, file_id: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class CreateVectorStoreRequest(_message.Message):
    __slots__ = ("name", "metadata", "chunking_strategy", "expires_after", "files", "follow_subject", "subject", "description")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    metadata: _containers.ScalarMap[str, str]
    chunking_strategy: ChunkingStrategy
    expires_after: ExpiresAfter
    files: _containers.RepeatedCompositeFieldContainer[FileDocument]
    follow_subject: bool
    subject: str
    description: str
    def __init__(self, name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., chunking_strategy: _Optional[_Union[ChunkingStrategy, _Mapping]] = ..., expires_after: _Optional[_Union[ExpiresAfter, _Mapping]] = ..., files: _Optional[_Iterable[_Union[FileDocument, _Mapping]]] = ..., follow_subject: _Optional[bool] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class CreateVectorStoreResponse(_message.Message):
    __slots__ = ("vector_store",)
    VECTOR_STORE_FIELD_NUMBER: _ClassVar[int]
    vector_store: VectorStore
    def __init__(self, vector_store: _Optional[_Union[VectorStore, _Mapping]] = ...) -> None: ...

class ListVectorStoresRequest(_message.Message):
    __slots__ = ("limit", "order", "after", "before")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    limit: int
    order: ListOrder
    after: str
    before: str
    def __init__(self, limit: _Optional[int] = ..., order: _Optional[_Union[ListOrder, str]] = ..., after: _Optional[str] = ..., before: _Optional[str] = ...) -> None: ...

class ListVectorStoresResponse(_message.Message):
    __slots__ = ("data", "has_more")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[VectorStore]
    has_more: bool
    def __init__(self, data: _Optional[_Iterable[_Union[VectorStore, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetVectorStoreRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetVectorStoreResponse(_message.Message):
    __slots__ = ("vector_store",)
    VECTOR_STORE_FIELD_NUMBER: _ClassVar[int]
    vector_store: VectorStore
    def __init__(self, vector_store: _Optional[_Union[VectorStore, _Mapping]] = ...) -> None: ...

class ModifyVectorStoreRequest(_message.Message):
    __slots__ = ("id", "name", "metadata", "replace_metadata", "expires_after", "clear_expires_after")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPLACE_METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_FIELD_NUMBER: _ClassVar[int]
    CLEAR_EXPIRES_AFTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    metadata: _containers.ScalarMap[str, str]
    replace_metadata: bool
    expires_after: ExpiresAfter
    clear_expires_after: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., replace_metadata: _Optional[bool] = ..., expires_after: _Optional[_Union[ExpiresAfter, _Mapping]] = ..., clear_expires_after: _Optional[bool] = ...) -> None: ...

class ModifyVectorStoreResponse(_message.Message):
    __slots__ = ("vector_store",)
    VECTOR_STORE_FIELD_NUMBER: _ClassVar[int]
    vector_store: VectorStore
    def __init__(self, vector_store: _Optional[_Union[VectorStore, _Mapping]] = ...) -> None: ...

class DeleteVectorStoreRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteVectorStoreResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class AttachFileRequest(_message.Message):
    __slots__ = ("vector_store_id", "file", "attributes", "chunking_strategy", "wait_seconds")
    VECTOR_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    vector_store_id: str
    file: FileDocument
    attributes: _struct_pb2.Struct
    chunking_strategy: ChunkingStrategy
    wait_seconds: float
    def __init__(self, vector_store_id: _Optional[str] = ..., file: _Optional[_Union[FileDocument, _Mapping]] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., chunking_strategy: _Optional[_Union[ChunkingStrategy, _Mapping]] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class AttachFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: VectorStoreFile
    def __init__(self, file: _Optional[_Union[VectorStoreFile, _Mapping]] = ...) -> None: ...

class ListFilesRequest(_message.Message):
    __slots__ = ("vector_store_id", "limit", "order", "after", "before", "filter")
    VECTOR_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    vector_store_id: str
    limit: int
    order: ListOrder
    after: str
    before: str
    filter: VectorStoreFileStatus
    def __init__(self, vector_store_id: _Optional[str] = ..., limit: _Optional[int] = ..., order: _Optional[_Union[ListOrder, str]] = ..., after: _Optional[str] = ..., before: _Optional[str] = ..., filter: _Optional[_Union[VectorStoreFileStatus, str]] = ...) -> None: ...

class ListFilesResponse(_message.Message):
    __slots__ = ("data", "has_more")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[VectorStoreFile]
    has_more: bool
    def __init__(self, data: _Optional[_Iterable[_Union[VectorStoreFile, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetFileRequest(_message.Message):
    __slots__ = ("vector_store_id", "file_id")
    VECTOR_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    vector_store_id: str
    file_id: str
    def __init__(self, vector_store_id: _Optional[str] = ..., file_id: _Optional[str] = ...) -> None: ...

class GetFileResponse(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: VectorStoreFile
    def __init__(self, file: _Optional[_Union[VectorStoreFile, _Mapping]] = ...) -> None: ...

class DeleteFileRequest(_message.Message):
    __slots__ = ("vector_store_id", "file_id")
    VECTOR_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    vector_store_id: str
    file_id: str
    def __init__(self, vector_store_id: _Optional[str] = ..., file_id: _Optional[str] = ...) -> None: ...

class DeleteFileResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class FilterValue(_message.Message):
    __slots__ = ("string_value", "number_value", "bool_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    number_value: float
    bool_value: bool
    def __init__(self, string_value: _Optional[str] = ..., number_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class ComparisonFilter(_message.Message):
    __slots__ = ("type", "key", "value", "values")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    type: ComparisonFilterType
    key: str
    value: FilterValue
    values: _containers.RepeatedCompositeFieldContainer[FilterValue]
    def __init__(self, type: _Optional[_Union[ComparisonFilterType, str]] = ..., key: _Optional[str] = ..., value: _Optional[_Union[FilterValue, _Mapping]] = ..., values: _Optional[_Iterable[_Union[FilterValue, _Mapping]]] = ...) -> None: ...

class CompoundFilter(_message.Message):
    __slots__ = ("type", "filters")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    type: CompoundFilterType
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, type: _Optional[_Union[CompoundFilterType, str]] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("comparison", "compound")
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    COMPOUND_FIELD_NUMBER: _ClassVar[int]
    comparison: ComparisonFilter
    compound: CompoundFilter
    def __init__(self, comparison: _Optional[_Union[ComparisonFilter, _Mapping]] = ..., compound: _Optional[_Union[CompoundFilter, _Mapping]] = ...) -> None: ...

class SearchVectorStoreRequest(_message.Message):
    __slots__ = ("vector_store_ids", "queries", "max_num_results", "filters", "score_threshold", "rewrite_query", "ranker")
    VECTOR_STORE_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REWRITE_QUERY_FIELD_NUMBER: _ClassVar[int]
    RANKER_FIELD_NUMBER: _ClassVar[int]
    vector_store_ids: _containers.RepeatedScalarFieldContainer[str]
    queries: _containers.RepeatedScalarFieldContainer[str]
    max_num_results: int
    filters: Filter
    score_threshold: float
    rewrite_query: bool
    ranker: Ranker
    def __init__(self, vector_store_ids: _Optional[_Iterable[str]] = ..., queries: _Optional[_Iterable[str]] = ..., max_num_results: _Optional[int] = ..., filters: _Optional[_Union[Filter, _Mapping]] = ..., score_threshold: _Optional[float] = ..., rewrite_query: _Optional[bool] = ..., ranker: _Optional[_Union[Ranker, str]] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("file_id", "filename", "score", "attributes", "content", "vector_store_id")
    FILE_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    file_id: str
    filename: str
    score: float
    attributes: _struct_pb2.Struct
    content: _containers.RepeatedScalarFieldContainer[str]
    vector_store_id: str
    def __init__(self, file_id: _Optional[str] = ..., filename: _Optional[str] = ..., score: _Optional[float] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., content: _Optional[_Iterable[str]] = ..., vector_store_id: _Optional[str] = ...) -> None: ...

class SearchVectorStoreResponse(_message.Message):
    __slots__ = ("data", "search_query")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SEARCH_QUERY_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[SearchResult]
    search_query: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, data: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., search_query: _Optional[_Iterable[str]] = ...) -> None: ...
