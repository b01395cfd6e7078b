"""Tasks: for each kind of work, the typed RPC that performs it and its request/event messages.

The router uses this to validate JSON input against the typed request, to call the worker, and
to turn a typed event stream into the generic one. By convention every typed event has a oneof
`event` whose cases `progress`, `log`, `usage` and `result` mean the same everywhere; any other
case (preview, frame, segment, chunk, partial) is a partial output.

A call whose caller reads only its result can go as one unary `Worker.RunTask` instead (see
`Task.run_task_field`): its request rides in the RunTaskRequest case of the task's request type.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from genmesh.v1 import apps_pb2, audio_pb2, echo_pb2, imagegen_pb2, llm_pb2, videogen_pb2, worker_pb2

RUN_TASK_PATH = "/genmesh.v1.Worker/RunTask"


@dataclass(frozen=True)
class Task:
    name: str
    service: str          # worker kind that serves it
    grpc_service: str     # full proto service name
    method: str
    request_cls: type[Message]
    response_cls: type[Message]
    streaming: bool = True

    @property
    def path(self) -> str:
        return f"/{self.grpc_service}/{self.method}"

    @functools.cached_property
    def run_task_field(self) -> FieldDescriptor | None:
        """The RunTaskRequest case carrying this task's request, for a call whose caller reads
        only the result; None where there is none (a unary RPC already) or where the stream's
        partial outputs carry usage so far (LLM chunks): a call its caller leaves is billed from
        those, and a unary call that is cancelled brings back nothing."""
        if not self.streaming:
            return None
        event = self.response_cls.DESCRIPTOR
        if any(f.message_type is not None and "usage_so_far" in f.message_type.fields_by_name
               for f in event.oneofs_by_name["event"].fields):
            return None
        for field in worker_pb2.RunTaskRequest.DESCRIPTOR.oneofs_by_name["request"].fields:
            if field.message_type is self.request_cls.DESCRIPTOR:
                return field
        return None

    def validate(self, request: Message) -> None:
        """The modality's own request rules (ranges, choices), run by the router before
        queueing so a bad job is refused at submit rather than failing later."""
        check = _validator(self.service)
        if check is not None:
            check(request)


@functools.cache
def _validator(service: str) -> Callable[[Message], None] | None:
    """The service's validator, resolved once (it is on every request's path)."""
    target = VALIDATORS.get(service)
    if target is None:
        return None
    module_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return None
    return getattr(module, func)


def _t(name: str, service: str, grpc_service: str, method: str, req: type[Message],
       resp: type[Message], streaming: bool = True) -> Task:
    return Task(name, service, f"genmesh.v1.{grpc_service}", method, req, resp, streaming)


TASKS: dict[str, Task] = {t.name: t for t in [
    _t("echo", "echo", "Echo", "Echo", echo_pb2.EchoRequest, echo_pb2.EchoEvent),
    _t("text-to-image", "imagegen", "ImageGen", "GenerateImage",
       imagegen_pb2.GenerateImageRequest, imagegen_pb2.GenerateImageEvent),
    _t("image-to-image", "imagegen", "ImageGen", "GenerateImage",
       imagegen_pb2.GenerateImageRequest, imagegen_pb2.GenerateImageEvent),
    _t("text-to-video", "videogen", "VideoGen", "GenerateVideo",
       videogen_pb2.GenerateVideoRequest, videogen_pb2.GenerateVideoEvent),
    _t("image-to-video", "videogen", "VideoGen", "GenerateVideo",
       videogen_pb2.GenerateVideoRequest, videogen_pb2.GenerateVideoEvent),
    _t("speech-to-text", "audio", "Audio", "Transcribe",
       audio_pb2.TranscribeRequest, audio_pb2.TranscribeEvent),
    _t("text-to-speech", "audio", "Audio", "Synthesize",
       audio_pb2.SynthesizeRequest, audio_pb2.SynthesizeEvent),
    _t("chat", "llm", "LLM", "ChatComplete", llm_pb2.ChatCompleteRequest, llm_pb2.ChatCompleteEvent),
    _t("completion", "llm", "LLM", "Complete", llm_pb2.CompleteRequest, llm_pb2.CompleteEvent),
    _t("embeddings", "llm", "LLM", "Embed", llm_pb2.EmbedRequest, llm_pb2.EmbedResponse,
       streaming=False),
    _t("app", "apps", "AppRunner", "Invoke", apps_pb2.InvokeRequest, apps_pb2.InvokeEvent),
]}

# Torch-free validators, "module:function(request)"; each raises InvalidArgument naming the field.
VALIDATORS: dict[str, str] = {
    "echo": "genmesh.services.echo.params:validate",
    "imagegen": "genmesh.services.imagegen.params:validate_request",
    "videogen": "genmesh.services.videogen.params:validate_request",
    "audio": "genmesh.services.audio.params:validate_request",
    "llm": "genmesh.services.llm.params:validate_request",
}

SERVICES = sorted({t.service for t in TASKS.values()})

def run_task_request(field: FieldDescriptor, request: bytes) -> bytes:
    """A RunTaskRequest with `request` (already serialized, or a queued job's stored bytes) as
    its `field` case. A message field on the wire is its tag, its length, then the message's own
    bytes (the protobuf encoding), so the request is wrapped as it is, not parsed or copied into
    a new message first."""
    return _varint(field.number << 3 | 2) + _varint(len(request)) + request


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Request fields that only make a worker produce partial outputs (per-step previews).
PARTIALS_ONLY_FIELDS = ("preview_every",)


def without_partials(request: Message) -> None:
    """Switch off outputs nobody will see: a queued job's caller reads its result whole (status
    polls and webhooks carry progress, never previews), so rendering a preview PNG per step for
    the router to drop is wasted work."""
    fields = request.DESCRIPTOR.fields_by_name
    for name in PARTIALS_ONLY_FIELDS:
        if name in fields:
            setattr(request, name, 0)

# Typed methods the router proxies, keyed by RPC path: (task for placement, streaming).
PROXIED_METHODS: dict[str, Task] = {}
for _task in TASKS.values():
    PROXIED_METHODS.setdefault(_task.path, _task)
PROXIED_METHODS["/genmesh.v1.LLM/CountTokens"] = _t(
    "count-tokens", "llm", "LLM", "CountTokens", llm_pb2.CountTokensRequest,
    llm_pb2.CountTokensResponse, streaming=False)
PROXIED_METHODS["/genmesh.v1.LLM/Tokenize"] = _t(
    "tokenize", "llm", "LLM", "Tokenize", llm_pb2.TokenizeRequest, llm_pb2.TokenizeResponse, streaming=False)
PROXIED_METHODS["/genmesh.v1.LLM/Detokenize"] = _t(
    "detokenize", "llm", "LLM", "Detokenize", llm_pb2.DetokenizeRequest, llm_pb2.DetokenizeResponse,
    streaming=False)
