"""Runs one request on the mesh: resolve the model, validate its input, place it, stream events,
retry on a lost worker where that is safe, and account usage. Shared by sync, stream, typed-proxy
and queued requests."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from genmesh import jsonpb
from genmesh.apps import spec as app_spec
from genmesh.catalog import Catalog, ModelSpec
from genmesh.errors import GenmeshError, InvalidArgument
from genmesh.tasks import Task, without_partials
from genmesh.v1 import common_pb2, worker_pb2
from genmesh.services.router.convert import case_of
from genmesh.services.router.dispatch import Dispatcher, retryable

log = logging.getLogger("genmesh.router.runner")


@dataclass
class Prepared:
    spec: ModelSpec
    task: Task
    # The validated request; None for a queued job run from its stored bytes (`encoded`).
    request: Message | None
    model_id: str  # as the caller named it (apps keep their sub-path)
    # The request already encoded (a queued job's stored bytes): sent to the worker as they are.
    encoded: bytes | None = None

    @property
    def stores_json(self) -> bool:
        """An app job keeps its JSON body: it is checked against the schema of the app version
        that runs it, which a redeploy between submit and run may change."""
        return self.spec.task == "app"

    def stored_input(self) -> dict[str, Any]:
        """The JSON input a queued app job keeps (`stores_json`); `prepare_json` of it rebuilds
        this request. Every other job keeps its typed request (`stored_request`)."""
        assert self.request is not None
        return app_spec.stored_input(self.request)  # type: ignore[arg-type]

    def stored_request(self) -> tuple[str, bytes]:
        """(message type, bytes) a queued job keeps: the validated request with what only a
        streaming caller would see switched off (nobody streams a queued job)."""
        assert self.request is not None
        without_partials(self.request)
        return self.request.DESCRIPTOR.full_name, self.request.SerializeToString()

    def wire(self) -> Message | bytes:
        """What goes to the worker: the stored bytes when there are some, else the request."""
        if self.encoded is not None:
            return self.encoded
        assert self.request is not None
        return self.request


@dataclass
class Outcome:
    """What one run produced, for usage records and job results."""

    usage: common_pb2.Usage
    result: Message | None = None
    # The tokens of an LLM stream so far (its chunks' usage_so_far): what a stream cut short by
    # its caller is billed, as it never reaches its usage event.
    tokens_so_far: Message | None = None
    started: float = 0.0
    finished: float = 0.0
    error: GenmeshError | None = None


class Runner:
    def __init__(self, catalog: Catalog, dispatcher: Dispatcher, *, max_attempts: int,
                 default_wait_s: float = 30.0) -> None:
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.max_attempts = max_attempts
        self.default_wait_s = default_wait_s

    def prepare_json(self, model_id: str, data: dict[str, Any] | struct_pb2.Struct) -> Prepared:
        if not model_id:
            raise InvalidArgument("is required", field="model_id")
        spec = self.catalog.get(model_id)
        task = spec.task_spec
        if spec.task == "app":
            # An app's body is its endpoint's own input, checked against the schema it exported.
            request: Message = app_spec.app_request(spec, model_id, data)
        else:
            request = jsonpb.parse_input(data, task.request_cls)
        return self._finish(spec, task, request, model_id)

    def prepare_stored(self, model_id: str, request_type: str, data: bytes) -> Prepared:
        """A queued job's request, validated at submit and stored as its message's bytes: it is
        neither parsed nor validated again, only checked to still be the model's request type."""
        spec = self.catalog.get(model_id)
        task = spec.task_spec
        expected = task.request_cls.DESCRIPTOR.full_name
        if request_type != expected:
            raise InvalidArgument(f"the job's stored request is a {request_type}, but model "
                                  f"'{model_id}' now takes a {expected}", field="model_id")
        return Prepared(spec, task, None, model_id, encoded=data)

    def prepare_typed(self, task: Task, request: Message) -> Prepared:
        model_id = getattr(request, "model_id", "")
        if not model_id:
            raise InvalidArgument("is required", field="model_id")
        spec = self.catalog.get(model_id)
        if spec.task_spec.service != task.service:
            raise InvalidArgument(f"model '{model_id}' is a {spec.task} model, not served by "
                                  f"{task.grpc_service}", field="model_id")
        # Token counting and (de)tokenizing read any of the service's text models, whatever its task.
        if task.name not in ("count-tokens", "tokenize", "detokenize") and spec.task_spec.path != task.path:
            raise InvalidArgument(f"model '{model_id}' does {spec.task}; call "
                                  f"{spec.task_spec.grpc_service}.{spec.task_spec.method}",
                                  field="model_id")
        return self._finish(spec, task, request, model_id)

    def _finish(self, spec: ModelSpec, task: Task, request: Message, model_id: str) -> Prepared:
        # Workers know models by catalog id (aliases resolved); apps keep the endpoint path.
        request.model_id = model_id if spec.task == "app" else spec.id
        task.validate(request)
        return Prepared(spec, task, request, model_id)

    async def events(self, prep: Prepared, *, request_id: str, outcome: Outcome,
                     wait_s: float | None = None, timeout_s: float | None = None,
                     safe_to_retry_after_output: bool = False, key_id: str = "",
                     whole_events: bool = False,
                     result_only: bool = False) -> AsyncIterator[tuple[str, Message]]:
        """(case, payload) of each event (or (case, event) with `whole_events`); re-places on a lost
        worker while that is safe. With `result_only` (the caller reads the usage and the result,
        nothing else) the worker may be asked for just those, as one unary call."""
        assert not (result_only and whole_events), "a result-only run has no whole events"
        attempt = 0
        emitted_output = False
        while True:
            attempt += 1
            try:
                outcome.started = outcome.started or time.time()
                async for event in self.dispatcher.call(
                        prep.spec, prep.task, prep.wire(), request_id=request_id,
                        wait_s=self.default_wait_s if wait_s is None else wait_s, timeout_s=timeout_s,
                        key_id=key_id, result_only=result_only):
                    for case, payload in cases_of(event):
                        if case == "usage":
                            outcome.usage.MergeFrom(payload)
                        elif case == "result":
                            outcome.result = payload
                        elif case not in ("progress", "log"):
                            emitted_output = True
                            so_far = getattr(payload, "usage_so_far", None)
                            if so_far is not None:
                                outcome.tokens_so_far = so_far
                        yield case, event if whole_events else payload
                if outcome.result is not None and not outcome.usage.items:
                    outcome.usage.CopyFrom(usage_of_unary(outcome.result))
                outcome.finished = time.time()
                return
            except GenmeshError as exc:
                can_retry = retryable(exc) and attempt < self.max_attempts and (
                    safe_to_retry_after_output or not emitted_output)
                if not can_retry:
                    outcome.error = exc
                    outcome.finished = time.time()
                    raise
                log.warning("worker lost; re-placing", extra={"request_id": request_id,
                                                              "model_id": prep.spec.id, "attempt": attempt})
                outcome.usage.Clear()
                outcome.tokens_so_far = None


def cases_of(event: Message) -> list[tuple[str, Message]]:
    """(case, payload) of a worker's typed event; a RunTask answer gives what its stream would
    have ended with: its usage, then its result (none where the stream ended without one)."""
    if not isinstance(event, worker_pb2.RunTaskResponse):
        return [case_of(event)]
    cases: list[tuple[str, Message]] = []
    if event.usage.items:
        cases.append(("usage", event.usage))
    result = event.WhichOneof("result")
    if result is not None:
        cases.append(("result", getattr(event, result)))
    return cases


def usage_of_unary(result: Message) -> common_pb2.Usage:
    """Unary RPCs (embeddings) carry no usage event; their token counts are in the response."""
    usage = common_pb2.Usage()
    tokens = getattr(result, "usage", None)
    if tokens is not None and hasattr(tokens, "prompt_tokens"):
        usage.items.add(unit="input_tokens", quantity=tokens.prompt_tokens)
        if tokens.completion_tokens:
            usage.items.add(unit="output_tokens", quantity=tokens.completion_tokens)
    return usage
