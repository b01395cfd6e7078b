"""The OpenAI wire protocol at the edge: request bodies as Pydantic models (validation naming the
field, and the request schemas in /openapi.json). No serving logic lives here (as in vLLM's
`entrypoints/openai/protocol.py`).

Top-level bodies forbid unknown fields (a misspelt parameter is a 400 naming it, never ignored);
OpenAI parameters that change nothing here (`user`, `store`, `metadata`, ...) are accepted.
Nested message objects ignore extra keys, so a client may replay an assistant message it got back.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from genmesh.limits import INT32_MAX, INT64_MAX, INT64_MIN, MAX_LEGACY_LOGPROBS

MAX_IMAGES = 10
MAX_SPEECH_CHARS = 4096
TokenId = Annotated[int, Field(ge=0, le=INT32_MAX)]
# What the protos can carry (an int32 or int64 field refuses more with a ValueError). Sampling
# ranges are not checked here: the router checks them once, against genmesh/limits.py.
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


class _Body(BaseModel):
    # NaN and infinities pass no range check a number could mean, and proto doubles take them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- chat -----------------------------------------------------------------------------------------

class ImageURL(_Part):
    url: str = Field(min_length=1, description="A data: URI or a URL from this mesh's file uploads.")
    detail: Optional[Literal["auto", "low", "high"]] = None


class TextContentPart(_Part):
    type: Literal["text"]
    text: str


class ImageContentPart(_Part):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextContentPart, ImageContentPart], Field(discriminator="type")]


class FunctionCallParam(_Part):
    name: str
    arguments: str = Field(description="The call's arguments: a JSON object, as a string.")


class ToolCallParam(_Part):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallParam


class ChatMessageParam(_Part):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCallParam]] = None
    tool_call_id: Optional[str] = None


class FunctionDefinitionParam(_Part):
    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class ToolParam(_Part):
    type: Literal["function"] = "function"
    function: FunctionDefinitionParam


class NamedFunction(_Part):
    name: str


class NamedToolChoice(_Part):
    type: Literal["function"] = "function"
    function: NamedFunction


class JSONSchemaFormat(_Part):
    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ResponseFormatParam(_Part):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None


class StreamOptions(_Part):
    include_usage: Optional[bool] = None


class _Sampling(_Body):
    """Sampling parameters shared by chat and completions (genmesh adds top_k, min_p and
    repetition_penalty, as vLLM does)."""

    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[Int32] = None
    min_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[Int64] = None
    stop: Union[str, list[str], None] = None
    max_tokens: Optional[Int32] = None
    n: Optional[Int32] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    logit_bias: Optional[dict[str, float]] = None
    # vLLM's sampling extensions (`vllm bench serve` sends ignore_eos) and OpenAI's newer fields.
    ignore_eos: Optional[bool] = None
    min_tokens: Optional[Int32] = None
    stop_token_ids: Optional[list[Int32]] = None
    safety_identifier: Optional[str] = Field(default=None, max_length=256)
    prompt_cache_key: Optional[str] = Field(default=None, max_length=1024)

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: Optional[dict[str, float]]) -> Optional[dict[str, float]]:
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    model: str = Field(min_length=1)
    messages: list[ChatMessageParam]
    max_completion_tokens: Optional[Int32] = None
    logprobs: Optional[bool] = False
    top_logprobs: Optional[Int32] = None
    response_format: Optional[ResponseFormatParam] = None
    tools: Optional[list[ToolParam]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    # Accepted for compatibility; they change nothing here.
    store: Optional[bool] = None
    metadata: Optional[dict[str, str]] = None
    service_tier: Optional[str] = None
    modalities: Optional[list[Literal["text"]]] = None
    # xAI: queue the completion and answer a request_id (GET /v1/chat/deferred-completion/{id}).
    deferred: Optional[bool] = None


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    model: str = Field(min_length=1)
    prompt: Union[str, list[str]] = Field(description="Text, or a list of texts (one run each).")
    echo: Optional[bool] = False
    # The legacy API's own limit (its top-logprobs count); the router's is chat's 20.
    logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_LEGACY_LOGPROBS)
    best_of: Optional[Int32] = None
    suffix: Optional[str] = None


# --- embeddings, images, audio ------------------------------------------------------------------

class EmbeddingRequest(_Body):
    """POST /v1/embeddings."""

    model: str = Field(min_length=1)
    input: Union[str, list[str], list[TokenId], list[list[TokenId]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    user: Optional[str] = None


class ImageGenerationRequest(_Body):
    """POST /v1/images/generations."""

    prompt: str = Field(min_length=1, max_length=32000)
    model: str = Field(default="dall-e-2", min_length=1)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: Optional[str] = Field(default=None, description='"WIDTHxHEIGHT" or "auto"')
    response_format: Optional[Literal["url", "b64_json"]] = None
    output_format: Optional[Literal["png", "jpeg", "webp"]] = None
    quality: Optional[str] = None
    style: Optional[str] = None
    background: Optional[str] = None
    moderation: Optional[str] = None
    output_compression: Optional[int] = Field(default=None, ge=0, le=100)
    user: Optional[str] = None


class VoiceId(_Part):
    id: str


class SpeechRequest(_Body):
    """POST /v1/audio/speech."""

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS)
    voice: Union[str, VoiceId]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: Optional[float] = Field(default=None, ge=0.25, le=4.0)
    instructions: Optional[str] = None
    stream_format: Optional[Literal["audio"]] = None


TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


class TranscriptionForm(BaseModel):
    """POST /v1/audio/transcriptions and /v1/audio/translations (multipart/form-data)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    language: Optional[str] = None
    prompt: Optional[str] = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: Optional[float] = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default_factory=list, alias="timestamp_granularities[]")
    stream: Optional[bool] = None


# The multipart schema shown in /openapi.json (the handler parses the form itself so that
# repeated `timestamp_granularities[]` fields and the body-size cap behave exactly).
TRANSCRIPTION_OPENAPI = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "model"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string"},
        "language": {"type": "string", "description": "ISO-639-1"},
        "prompt": {"type": "string"},
        "response_format": {"type": "string", "enum": list(TRANSCRIPTION_FORMATS)},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
    }}}}}}

# --- files and batches --------------------------------------------------------------------------

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")

FILE_UPLOAD_OPENAPI = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": list(FILE_PURPOSES)}}}}}}}

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


class BatchCreateRequest(_Body):
    """POST /v1/batches."""

    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: Optional[dict[str, str]] = None


class BatchRequestLine(_Body):
    """One line of a batch input file."""

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: str
    body: dict[str, Any]
