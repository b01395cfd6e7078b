"""genmesh's error hierarchy: each error knows its gRPC code, HTTP status and OpenAI/FAL shape.

Errors are defined once here and mapped once: servicers abort with `error.grpc_code`, the edge
answers `error.http_status` with `error.openai_body()` or `error.fal_body()`.
"""
from __future__ import annotations

from typing import Any

import grpc


class GenmeshError(Exception):
    """Base class; subclasses fix the code, status and error type."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500
    error_type: str = "internal_error"
    openai_type: str = "server_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
        self.retry_after = retry_after

    def openai_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.openai_type,
                          "param": self.field, "code": self.code or self.error_type}}

    def fal_body(self) -> dict[str, Any]:
        return {"detail": self.message, "error_type": self.error_type}

    def grpc_details(self) -> str:
        return self.message


class InvalidArgument(GenmeshError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    error_type = "invalid_argument"
    openai_type = "invalid_request_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        # Messages always lead with the field so a client reading only the text still knows it.
        if field and not message.startswith(field):
            message = f"{field}: {message}"
        super().__init__(message, field=field, code=code)


class Unauthenticated(GenmeshError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    error_type = "unauthenticated"
    openai_type = "authentication_error"


class PermissionDenied(GenmeshError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    error_type = "permission_denied"
    openai_type = "permission_error"


class NotFound(GenmeshError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    error_type = "not_found"
    openai_type = "not_found_error"


class AlreadyExists(GenmeshError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409
    error_type = "already_exists"
    openai_type = "invalid_request_error"


class RateLimited(GenmeshError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    error_type = "rate_limited"
    openai_type = "rate_limit_error"


class BudgetExceeded(GenmeshError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 402
    error_type = "budget_exceeded"
    openai_type = "insufficient_quota"


class ResourceExhausted(GenmeshError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 503
    error_type = "resource_exhausted"
    openai_type = "server_error"


class Unavailable(GenmeshError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    error_type = "unavailable"
    openai_type = "server_error"


class DeadlineExceeded(GenmeshError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    error_type = "timeout"
    openai_type = "timeout"


class Cancelled(GenmeshError):
    grpc_code = grpc.StatusCode.CANCELLED
    http_status = 499
    error_type = "cancelled"
    openai_type = "cancelled"


class FailedPrecondition(GenmeshError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 400
    error_type = "failed_precondition"
    openai_type = "invalid_request_error"


class ModelUnavailable(FailedPrecondition):
    """The model is in the catalog but its weights (or engine) are not on this machine."""

    error_type = "model_unavailable"


class Internal(GenmeshError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[GenmeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}

# Trailing metadata keys that carry what a status code alone cannot (the field, the exact type).
FIELD_KEY = "genmesh-field"
TYPE_KEY = "genmesh-error-type"
RETRY_AFTER_KEY = "genmesh-retry-after"


def trailing_metadata(error: GenmeshError) -> tuple[tuple[str, str], ...]:
    md = [(TYPE_KEY, error.error_type)]
    if error.field:
        md.append((FIELD_KEY, error.field))
    if error.retry_after is not None:
        md.append((RETRY_AFTER_KEY, f"{error.retry_after:.3f}"))
    return tuple(md)


_BY_TYPE: dict[str, type[GenmeshError]] = {}


def _index_types() -> None:
    stack: list[type[GenmeshError]] = [GenmeshError]
    while stack:
        cls = stack.pop()
        _BY_TYPE.setdefault(cls.error_type, cls)
        stack.extend(cls.__subclasses__())


def from_rpc_error(err: grpc.RpcError) -> GenmeshError:
    """Rebuild the genmesh error a remote servicer raised (the edge's view of a router error)."""
    if not _BY_TYPE:
        _index_types()
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(code)
    md = {}
    try:
        md = {k: v for k, v in (err.trailing_metadata() or ())}
    except Exception:  # noqa: BLE001 - some RpcErrors carry no call
        md = {}
    cls = _BY_TYPE.get(md.get(TYPE_KEY, "")) or _BY_CODE.get(code, Internal)
    retry = md.get(RETRY_AFTER_KEY)
    if cls is InvalidArgument:
        error: GenmeshError = InvalidArgument(details, field=md.get(FIELD_KEY))
    else:
        error = cls(details, field=md.get(FIELD_KEY))
    error.retry_after = float(retry) if retry else None
    if cls is Internal and code == grpc.StatusCode.UNKNOWN:
        error.message = "internal error"
    return error


async def abort(context: Any, error: GenmeshError) -> None:
    """Abort a grpc.aio call with the error's code, message and trailing metadata."""
    context.set_trailing_metadata(trailing_metadata(error))
    await context.abort(error.grpc_code, error.grpc_details())
