"""OpenAI-compatible routes (/v1): models, chat, completions, embeddings, images and audio,
each translated to its typed modality RPC through the router. Handlers only translate and
delegate: request/response shapes live in openai_protocol.py and openai_convert.py."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any, AsyncIterator

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response, StreamingResponse

from genmesh import blobstore
from genmesh.errors import GenmeshError, Internal, InvalidArgument
from genmesh.v1 import audio_pb2, imagegen_pb2, router_pb2
from genmesh.services.edge import openai_convert as convert
from genmesh.services.edge.auth import authorization
from genmesh.services.edge.catalog_view import (CatalogView, availability_json, fal_models_json,
                                                wants_fal_models)
from genmesh.services.edge.errors import invalid_argument
from genmesh.services.edge.openai_protocol import (TRANSCRIPTION_OPENAPI, ChatCompletionRequest,
                                                   CompletionRequest, EmbeddingRequest,
                                                   ImageGenerationRequest, NamedToolChoice,
                                                   SpeechRequest, TranscriptionForm)
from genmesh.services.edge.responses import JSON

log = logging.getLogger("genmesh.edge.openai")
router = APIRouter(prefix="/v1", tags=["openai"])
MODEL_CREATED = 1735689600  # catalog models have no creation date; a fixed one keeps lists stable
SSE_HEADERS = {"cache-control": "no-cache"}
# Frames end in a blank line of "\n", as OpenAI's and Anthropic's own servers send them (and
# their SDKs parse); sse-starlette's default is "\r\n".
SSE_SEP = "\n"
MAX_AUDIO_BYTES = 25 * 1024 * 1024


def mesh(request: Request) -> Any:
    return request.app.state.mesh


def catalog(request: Request) -> CatalogView:
    return request.app.state.catalog


def accepted_url(request: Request) -> Any:
    store = request.app.state.blobs
    return lambda url: store.key_from_url(url) is not None


def sse(data: Any) -> ServerSentEvent:
    return ServerSentEvent(orjson.dumps(data).decode(), sep=SSE_SEP)


DONE = ServerSentEvent("[DONE]", sep=SSE_SEP)


async def prime(events: AsyncIterator[Any], output_cases: tuple[str, ...]) -> list[Any]:
    """Events up to the first that carries output, read before the answer starts, so errors that
    come before any output keep their HTTP status instead of becoming a stream event."""
    seen = []
    async for event in events:
        seen.append(event)
        if event.WhichOneof("event") in output_cases:
            break
    return seen


class ClientGone(Exception):
    """The HTTP client disconnected before the answer started."""


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects. The body is already read, so the next ASGI message
    can only be the disconnect."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def prime_watched(request: Request, events: AsyncIterator[Any], output_cases: tuple[str, ...]) -> list[Any]:
    """`prime`, abandoned as soon as the client leaves (a queued or loading request included):
    closing `events` cancels the router call, which cancels the worker's."""
    primed = asyncio.ensure_future(prime(events, output_cases))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((primed, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if primed.done():
        return primed.result()
    primed.cancel()
    with contextlib.suppress(BaseException):
        await primed
    await events.aclose()  # type: ignore[attr-defined]
    raise ClientGone()


async def replay(first: list[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    for event in first:
        yield event
    async for event in rest:
        yield event


async def folded(stream: AsyncIterator[Any], state: Any) -> AsyncIterator[Any]:
    """What a wire format's stream state (`on_chunk`, `on_result`) makes of each chunk and of the
    result event, in order; INTERNAL when the stream ends without a result."""
    ended = False
    async for event in stream:
        case = event.WhichOneof("event")
        if case == "chunk":
            out = state.on_chunk(event.chunk)
        elif case == "result":
            out, ended = state.on_result(event.result), True
        else:
            continue
        for item in out:
            yield item
    if not ended:
        raise Internal("the model ended without a result")


async def final_result(events: AsyncIterator[Any]) -> Any:
    result = None
    async for event in events:
        if event.WhichOneof("event") == "result":
            result = event.result
    if result is None:
        raise Internal("the model ended without a result")
    return result


def stream_error(exc: BaseException) -> ServerSentEvent:
    if isinstance(exc, GenmeshError):
        return sse(exc.openai_body())
    log.error("stream failed", exc_info=exc)
    return sse(Internal("internal error").openai_body())


def event_stream(chunks: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    """An SSE response through sse-starlette (its keep-alive pings are comments, which the SDKs
    skip; it ends the stream when the client disconnects)."""
    return EventSourceResponse(chunks, sep=SSE_SEP, headers=SSE_HEADERS)


# --- models ---------------------------------------------------------------------------------------

def model_json(m: router_pb2.Model) -> dict[str, Any]:
    return {"id": m.id, "object": "model", "created": MODEL_CREATED, "owned_by": m.id.split("/")[0],
            "task": m.task, "max_model_len": m.max_context or None, "root": m.id, "parent": None,
            **availability_json(m)}


def alias_json(alias: str, m: router_pb2.Model) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": MODEL_CREATED, "owned_by": "genmesh",
            "task": m.task, "max_model_len": m.max_context or None, "root": m.id, "parent": m.id,
            **availability_json(m)}


@router.get("/models", summary="List models (catalog models and their OpenAI aliases; FAL's "
                                "model search with a `Key` token or its filters)")
async def list_models(request: Request) -> JSON:
    view = catalog(request)
    models = await view.models(authorization(request), fresh=True)
    if wants_fal_models(dict(request.query_params), request.headers.get("authorization", "")):
        query: dict[str, Any] = dict(request.query_params)
        query["endpoint_id"] = request.query_params.getlist("endpoint_id")
        return JSON(fal_models_json(list(models.values()), query))
    data = [model_json(m) for m in models.values()]
    data += [alias_json(alias, models[target]) for alias, target in sorted(view.aliases.items())
             if target in models and alias not in models]
    return JSON({"object": "list", "data": data})


@router.get("/models/{model_id:path}", summary="Retrieve a model (or an alias)")
async def retrieve_model(model_id: str, request: Request) -> JSON:
    found = await catalog(request).resolve(model_id, authorization(request))
    if found.model.id == model_id:
        return JSON(model_json(found.model))
    return JSON(alias_json(model_id, found.model))


# --- chat -----------------------------------------------------------------------------------------

@router.post("/chat/completions", summary="Create a chat completion (streamed with stream: true)")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, ("chat",), auth, route="/v1/chat/completions")
    req = convert.chat_request(body, found.model.id, accepted_url(request))
    if body.deferred:
        from genmesh.services.edge import deferred

        return await deferred.submit(request, body, req, auth)
    named = isinstance(body.tool_choice, NamedToolChoice)
    created = int(time.time())
    client = mesh(request)
    events = client.stream(client.llm.ChatComplete, req, auth)
    if not body.stream:
        result = await final_result(events)
        return JSON(convert.chat_completion_json(result, model=found.model.id, created=created,
                                                 logprobs=bool(body.logprobs), named_tool=named))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    state = convert.ChatStream(model=found.model.id, created=created, n=req.sampling.n or 1,
                               logprobs=bool(body.logprobs), named_tool=named, include_usage=include_usage)
    try:
        first = await prime_watched(request, events, ("chunk", "result"))
    except ClientGone:
        return Response(status_code=499)

    async def chunks() -> AsyncIterator[ServerSentEvent]:
        try:
            async for chunk in folded(replay(first, events), state):
                yield sse(chunk)
            yield DONE
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band
            yield stream_error(exc)
        finally:
            await events.aclose()  # a client that went away cancels the model's run

    return event_stream(chunks())


# --- completions ----------------------------------------------------------------------------------

@router.post("/completions", summary="Create a text completion (streamed with stream: true)")
async def completions(body: CompletionRequest, request: Request) -> Response:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, ("completion",), auth, route="/v1/completions")
    prompts = convert.completion_prompts(body)
    reqs = [convert.completion_request(body, p, found.model.id) for p in prompts]
    created = int(time.time())
    client = mesh(request)
    n = body.n or 1
    logprobs = body.logprobs is not None
    if not body.stream:
        results = await asyncio.gather(*(final_result(client.stream(client.llm.Complete, r, auth))
                                         for r in reqs))
        return JSON(convert.completion_json(list(results), model=found.model.id, created=created, n=n,
                                            logprobs=logprobs))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    state = convert.CompletionStream(model=found.model.id, created=created, n=n, logprobs=logprobs)
    events = client.stream(client.llm.Complete, reqs[0], auth)
    try:
        first = await prime_watched(request, events, ("chunk", "result"))
    except ClientGone:
        return Response(status_code=499)

    async def one(stream: Any) -> AsyncIterator[ServerSentEvent]:
        try:
            async for chunk in folded(stream, state):
                yield sse(chunk)
        finally:
            await stream.aclose()

    async def chunks() -> AsyncIterator[ServerSentEvent]:
        try:
            async for item in one(replay(first, events)):
                yield item
            for r in reqs[1:]:
                async for item in one(client.stream(client.llm.Complete, r, auth)):
                    yield item
            if include_usage:
                yield sse(state.usage_chunk())
            yield DONE
        except Exception as exc:  # noqa: BLE001
            yield stream_error(exc)
        finally:
            await events.aclose()

    return event_stream(chunks())


# --- embeddings -----------------------------------------------------------------------------------

@router.post("/embeddings", summary="Create embeddings (float or base64 little-endian float32)")
async def embeddings(body: EmbeddingRequest, request: Request) -> JSON:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, ("embeddings",), auth, route="/v1/embeddings")
    client = mesh(request)
    resp = await client.unary(client.llm.Embed, convert.embed_request(body, found.model.id), auth)
    return JSON(convert.embedding_json(resp, model=found.model.id, encoding_format=body.encoding_format))


# --- images ---------------------------------------------------------------------------------------

@router.post("/images/generations", summary="Generate images")
async def image_generations(body: ImageGenerationRequest, request: Request) -> JSON:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, ("text-to-image",), auth, route="/v1/images/generations")
    width, height = convert.image_size(body.size)
    fmt = body.response_format or "url"
    req = imagegen_pb2.GenerateImageRequest(
        model_id=found.model.id, prompt=body.prompt, width=width, height=height, num_images=body.n,
        output_format=body.output_format or "", inline=fmt == "b64_json")
    req.preview_every = 0
    client = mesh(request)
    try:
        result = await final_result(client.stream(client.imagegen.GenerateImage, req, auth))
    except InvalidArgument as exc:
        raise as_openai_param(exc, IMAGE_PARAMS) from None
    store = request.app.state.blobs
    data = []
    for media in result.images:
        if fmt == "b64_json":
            raw = media.data or await _fetch(store, media.url)
            data.append({"b64_json": base64.b64encode(raw).decode(), "revised_prompt": None})
        else:
            url = media.url or await _store(request, media.data, media.content_type or "image/png")
            data.append({"url": url, "revised_prompt": None})
    out: dict[str, Any] = {"created": int(time.time()), "data": data}
    if width and height:
        out["size"] = f"{width}x{height}"
    if result.images and result.images[0].content_type.startswith("image/"):
        out["output_format"] = result.images[0].content_type.split("/", 1)[1]
    return JSON(out)


# Typed-request fields the mesh may name in an error -> the OpenAI parameter they came from.
IMAGE_PARAMS = {"width": "size", "height": "size", "num_images": "n", "model_id": "model"}


def as_openai_param(exc: InvalidArgument, names: dict[str, str]) -> InvalidArgument:
    if exc.field not in names:
        return exc
    detail = exc.message.removeprefix(f"{exc.field}: ")
    return InvalidArgument(f"{exc.field} {detail}", field=names[exc.field], code=exc.code)


async def _fetch(store: Any, url: str) -> bytes:
    key = store.key_from_url(url) if url else None
    if key is None:
        raise Internal("the worker returned neither image bytes nor a file of this mesh")
    return (await store.get(key)).data


async def _store(request: Request, data: bytes, content_type: str) -> str:
    identity = await request.app.state.identities.identify(request)
    store = request.app.state.blobs
    key = blobstore.new_key(identity.key_id, "outputs", content_type)
    await store.put(key, data, content_type)
    return store.url(key)


# --- audio ----------------------------------------------------------------------------------------

IGNORED_FORM_FIELDS = ("include[]", "chunking_strategy", "user")


async def transcription_form(request: Request, *, translate: bool) -> tuple[TranscriptionForm, bytes, str]:
    form = await request.form(max_files=1, max_fields=64)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidArgument("is required: an audio file (multipart field 'file')", field="file")
        data = await upload.read()
        if not data:
            raise InvalidArgument("is empty", field="file")
        if len(data) > MAX_AUDIO_BYTES:
            raise InvalidArgument(f"is {len(data)} bytes; the limit is {MAX_AUDIO_BYTES}", field="file")
        fields: dict[str, Any] = {}
        for key in form.keys():
            if key in ("file", *IGNORED_FORM_FIELDS):
                continue
            values = [v for v in form.getlist(key) if isinstance(v, str)]
            if key == "timestamp_granularities[]" or key == "timestamp_granularities":
                fields["timestamp_granularities[]"] = values
            elif translate and key == "language":
                raise InvalidArgument("is not a translation parameter", field=key)
            else:
                fields[key] = values[-1] if values else None
        try:
            params = TranscriptionForm.model_validate(fields)
        except ValidationError as exc:
            raise invalid_argument(exc.errors()) from None
        if params.stream:
            raise InvalidArgument("streamed transcriptions are not supported; leave stream unset",
                                  field="stream")
        return params, data, upload.content_type or ""
    finally:
        await form.close()


async def _transcribe(request: Request, translate: bool) -> Response:
    auth = authorization(request)
    params, data, _content_type = await transcription_form(request, translate=translate)
    found = await catalog(request).for_task(params.model, ("speech-to-text",), auth,
                                            route=request.url.path)
    req = audio_pb2.TranscribeRequest(
        model_id=found.model.id, audio=data, language=params.language or "", prompt=params.prompt or "",
        task="translate" if translate else "transcribe", response_format=params.response_format,
        timestamp_granularities=params.timestamp_granularities)
    if params.temperature is not None:
        req.temperature = params.temperature
    client = mesh(request)
    try:
        result = await final_result(client.stream(client.audio.Transcribe, req, auth))
    except InvalidArgument as exc:
        raise as_openai_param(exc, {"audio": "file", "audio_url": "file", "model_id": "model"}) from None
    body, content_type = convert.transcription_body(result, params.response_format,
                                                    params.timestamp_granularities, req.task)
    if isinstance(body, str):
        return Response(body, media_type=content_type)
    return JSON(body)


@router.post("/audio/transcriptions", summary="Transcribe audio (multipart/form-data)",
             openapi_extra=TRANSCRIPTION_OPENAPI)
async def transcriptions(request: Request) -> Response:
    return await _transcribe(request, translate=False)


@router.post("/audio/translations", summary="Translate audio into English text (multipart/form-data)",
             openapi_extra=TRANSCRIPTION_OPENAPI)
async def translations(request: Request) -> Response:
    return await _transcribe(request, translate=True)


@router.post("/audio/speech", summary="Synthesize speech (raw audio bytes, streamed as generated)",
             response_class=Response)
async def speech(body: SpeechRequest, request: Request) -> Response:
    auth = authorization(request)
    found = await catalog(request).for_task(body.model, ("text-to-speech",), auth, route="/v1/audio/speech")
    voice = body.voice if isinstance(body.voice, str) else body.voice.id
    req = audio_pb2.SynthesizeRequest(model_id=found.model.id, input=body.input, voice=voice,
                                      response_format=body.response_format)
    if body.speed is not None:
        req.speed = body.speed
    client = mesh(request)
    events = client.stream(client.audio.Synthesize, req, auth)
    first = await prime(events, ("chunk", "result"))
    store = request.app.state.blobs

    async def audio() -> AsyncIterator[bytes]:
        sent = False
        try:
            async for event in replay(first, events):
                case = event.WhichOneof("event")
                if case == "chunk" and event.chunk.data:
                    sent = True
                    yield event.chunk.data
                elif case == "result" and not sent:
                    media = event.result.audio
                    yield media.data or await _fetch(store, media.url)
        except Exception:  # noqa: BLE001 - bytes already sent: cut the body so the client sees it
            log.exception("speech stream failed")
            raise
        finally:
            await events.aclose()

    return StreamingResponse(audio(), media_type=convert.SPEECH_CONTENT_TYPES[body.response_format])
