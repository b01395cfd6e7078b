"""The job store: every queued job's state in Postgres, from submit to its end.

State changes are conditional updates, so that two routers (or one restarted) never move a job
twice: a job is claimed only while queued or while its previous claimant's lease has expired,
and it is finished only by its current claimant.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from genmesh import results
from genmesh.v1 import common_pb2, router_pb2

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
STATUS_ENUM = {
    "IN_QUEUE": common_pb2.JOB_STATUS_IN_QUEUE,
    "IN_PROGRESS": common_pb2.JOB_STATUS_IN_PROGRESS,
    "COMPLETED": common_pb2.JOB_STATUS_COMPLETED,
    "FAILED": common_pb2.JOB_STATUS_FAILED,
    "CANCELLED": common_pb2.JOB_STATUS_CANCELLED,
}
LEVELS = {"debug": common_pb2.LOG_LEVEL_DEBUG, "info": common_pb2.LOG_LEVEL_INFO,
          "warning": common_pb2.LOG_LEVEL_WARNING, "error": common_pb2.LOG_LEVEL_ERROR}


@dataclass
class Job:
    id: str
    model_id: str
    service: str
    api_key_id: str
    status: str
    priority: str
    # The JSON input: an app job's body, or any job stored before typed requests (migration 0009).
    input: dict[str, Any] | None
    # The JSON output of a job that ended before typed results (migration 0010); see `result`.
    output: dict[str, Any] | None
    usage: list[dict[str, Any]] | None
    error: str | None
    error_type: str | None
    webhook_url: str | None
    start_timeout_s: float | None
    run_timeout_s: float | None
    attempts: int
    progress: dict[str, Any] | None
    logs: list[dict[str, Any]]
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    claimed_by: str | None = None
    lease_until: dt.datetime | None = None
    # The validated request as its typed message's bytes, and that message's full name.
    request: bytes | None = None
    request_type: str | None = None
    # The worker's typed result (e.g. genmesh.v1.EchoResult) as its bytes, and that message's name.
    result: bytes | None = None
    result_type: str | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> "Job":
        fields = cls.__dataclass_fields__
        return cls(**{k: row[k] for k in row.keys() if k in fields})

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_state(self, *, logs: bool, queue_position: int = 0) -> router_pb2.JobState:
        state = router_pb2.JobState(
            request_id=self.id, model_id=self.model_id, status=STATUS_ENUM[self.status],
            queue_position=queue_position, error=self.error or "", error_type=self.error_type or "",
            attempts=self.attempts, created_at=_ts(self.created_at))
        if self.started_at:
            state.started_at.CopyFrom(_ts(self.started_at))
            state.queue_time_seconds = (self.started_at - self.created_at).total_seconds()
        if self.finished_at:
            state.finished_at.CopyFrom(_ts(self.finished_at))
            if self.started_at:
                state.inference_time_seconds = (self.finished_at - self.started_at).total_seconds()
        if self.progress:
            state.progress.CopyFrom(common_pb2.Progress(**self.progress))
        if logs:
            for entry in self.logs:
                state.logs.append(log_entry(entry))
        return state

    def output_json(self) -> dict[str, Any] | None:
        """The output as the generic API's JSON, rendered once here from the typed result; a job
        that ended before results were stored typed has only the JSON it stored then."""
        if self.result is not None and self.result_type:
            return results.result_json(results.decoded(self.result_type, self.result))
        return self.output

    def result_response(self, view: int) -> router_pb2.ResultResponse:
        """The Router's Result: with RESULT_VIEW_TYPED the stored result passed on unparsed, for a
        reader that renders its own format from it; else (older clients) the JSON output."""
        response = router_pb2.ResultResponse(job=self.to_state(logs=True))
        if view == router_pb2.RESULT_VIEW_TYPED and self.result is not None and self.result_type:
            response.result.CopyFrom(results.packed(self.result_type, self.result))
        else:
            output = self.output_json()
            if output is not None:
                response.output.update(output)
        for item in self.usage or []:
            response.usage.items.append(common_pb2.UsageItem(**item))
        return response


def log_entry(entry: dict[str, Any]) -> common_pb2.LogEntry:
    out = common_pb2.LogEntry(message=entry.get("message", ""), source=entry.get("source", ""),
                              level=LEVELS.get(entry.get("level", "info"), common_pb2.LOG_LEVEL_INFO))
    out.timestamp.FromJsonString(entry["timestamp"]) if entry.get("timestamp") else None
    return out


def _ts(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class JobStore:
    def __init__(self, pool: asyncpg.Pool, retention_days: int) -> None:
        self.pool = pool
        self.retention = dt.timedelta(days=retention_days)

    async def create(self, *, request_id: str, model_id: str, service: str, api_key_id: str,
                     priority: str, webhook_url: str | None, idempotency_key: str | None,
                     start_timeout_s: float | None, run_timeout_s: float | None,
                     input: dict[str, Any] | None = None, request: bytes | None = None,
                     request_type: str | None = None) -> tuple[Job, bool]:
        """Inserts a queued job (its typed `request` bytes, or its JSON `input`); with an
        idempotency key already used, returns that job instead."""
        if input is None and (request is None or not request_type):
            raise ValueError("a job needs its typed request (and its type) or its JSON input")
        row = await self.pool.fetchrow(
            "INSERT INTO jobs(id, model_id, service, api_key_id, status, priority, input, request,"
            " request_type, webhook_url, idempotency_key, start_timeout_s, run_timeout_s, expires_at)"
            " VALUES ($1,$2,$3,$4,'IN_QUEUE',$5,$6,$7,$8,$9,$10,$11,$12, now() + $13::interval)"
            " ON CONFLICT (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
            " RETURNING *",
            request_id, model_id, service, api_key_id, priority, input, request, request_type,
            webhook_url, idempotency_key, start_timeout_s, run_timeout_s, self.retention)
        if row is not None:
            return Job.from_row(row), True
        existing = await self.pool.fetchrow(
            "SELECT * FROM jobs WHERE api_key_id=$1 AND idempotency_key=$2", api_key_id, idempotency_key)
        return Job.from_row(existing), False

    async def delete(self, request_id: str) -> None:
        await self.pool.execute("DELETE FROM jobs WHERE id=$1 AND status='IN_QUEUE'", request_id)

    async def get(self, request_id: str) -> Job | None:
        row = await self.pool.fetchrow("SELECT * FROM jobs WHERE id=$1", request_id)
        return Job.from_row(row) if row else None

    async def queue_position(self, job: Job) -> int:
        if job.status != "IN_QUEUE":
            return 0
        return int(await self.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE status='IN_QUEUE' AND service=$1 AND created_at < $2",
            job.service, job.created_at))

    async def claim(self, request_id: str, router_id: str, lease_s: float) -> Job | None:
        row = await self.pool.fetchrow(
            "UPDATE jobs SET status='IN_PROGRESS', claimed_by=$2, attempts=attempts+1,"
            " lease_until=now() + make_interval(secs => $3), started_at=COALESCE(started_at, now())"
            " WHERE id=$1 AND NOT cancel_requested AND (status='IN_QUEUE' OR"
            " (status='IN_PROGRESS' AND lease_until < now())) RETURNING *",
            request_id, router_id, lease_s)
        return Job.from_row(row) if row else None

    async def renew(self, request_id: str, router_id: str, lease_s: float) -> bool:
        """Extends a claimed job's lease; False when `router_id` no longer holds it."""
        status = await self.pool.execute(
            "UPDATE jobs SET lease_until=now() + make_interval(secs => $3) WHERE id=$1 AND claimed_by=$2"
            " AND status='IN_PROGRESS'", request_id, router_id, lease_s)
        return status == "UPDATE 1"

    async def set_progress(self, request_id: str, progress: dict[str, Any]) -> None:
        await self.pool.execute("UPDATE jobs SET progress=$2 WHERE id=$1", request_id, progress)

    async def append_log(self, request_id: str, entry: dict[str, Any]) -> None:
        await self.pool.execute("UPDATE jobs SET logs = logs || $2::jsonb WHERE id=$1",
                                request_id, json.dumps([entry]))

    async def finish(self, request_id: str, *, status: str, result: Message | None = None,
                     usage: list[dict[str, Any]] | None = None, error: str | None = None,
                     error_type: str | None = None, router_id: str | None = None) -> Job | None:
        """Moves a job to its end state once, keeping its typed `result` as the message's bytes;
        None when it had already ended."""
        result_type, data = results.encoded(result) if result is not None else (None, None)
        row = await self.pool.fetchrow(
            "UPDATE jobs SET status=$2, result=$3, result_type=$4, usage=$5, error=$6, error_type=$7,"
            " finished_at=now(), started_at=COALESCE(started_at, now()), lease_until=NULL"
            " WHERE id=$1 AND status NOT IN ('COMPLETED','FAILED','CANCELLED')"
            " AND ($8::text IS NULL OR claimed_by=$8 OR status='IN_QUEUE') RETURNING *",
            request_id, status, data, result_type, usage, error, error_type, router_id)
        return Job.from_row(row) if row else None

    async def request_cancel(self, request_id: str) -> Job | None:
        row = await self.pool.fetchrow(
            "UPDATE jobs SET cancel_requested=true WHERE id=$1 RETURNING *", request_id)
        return Job.from_row(row) if row else None

    async def expire(self) -> int:
        """Drops results past their retention; returns how many."""
        result = await self.pool.execute(
            "DELETE FROM jobs WHERE expires_at < now() AND status IN ('COMPLETED','FAILED','CANCELLED')")
        return int(result.split()[-1])

    async def record_delivery(self, request_id: str, attempt: int, url: str, status_code: int,
                              error: str | None, duration_s: float) -> None:
        await self.pool.execute(
            "INSERT INTO webhook_deliveries(request_id, attempt, url, status_code, error, duration_s)"
            " VALUES ($1,$2,$3,$4,$5,$6)", request_id, attempt, url, status_code, error, duration_s)

    async def deliveries(self, request_id: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM webhook_deliveries WHERE request_id=$1 ORDER BY attempt", request_id)
