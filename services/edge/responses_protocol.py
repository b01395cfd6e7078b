"""The OpenAI Responses wire protocol at the edge (`/v1/responses`): request bodies as Pydantic
models, validated once, errors naming the field. Serving logic lives in responses_api.py.

Input items ignore extra keys (a client replays output items it got back, with their ids and
statuses); the top-level body forbids unknown fields.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from genmesh.limits import INT32_MAX, SAMPLING_RANGES

_TEMPERATURE, _TOP_P = SAMPLING_RANGES["temperature"], SAMPLING_RANGES["top_p"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputText(_Item):
    type: Literal["input_text", "output_text"]
    text: str


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: Optional[str] = None
    file_id: Optional[str] = None
    detail: Optional[Literal["auto", "low", "high"]] = None


class Refusal(_Item):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[Union[InputText, InputImage, Refusal], Field(discriminator="type")]


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Union[str, list[ContentPart]]
    id: Optional[str] = None


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: Optional[str] = None


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Union[str, list[InputText]]
    id: Optional[str] = None


class FileSearchCallItem(_Item):
    """A file_search call replayed from an earlier output: context only, its results are in the
    message that followed it."""

    type: Literal["file_search_call"]
    id: Optional[str] = None
    queries: Optional[list[str]] = None


def _typed(value: Any) -> Any:
    # EasyInputMessage: a {role, content} item may leave out `type`.
    if isinstance(value, dict) and "type" not in value and "role" in value:
        return {**value, "type": "message"}
    return value


InputItem = Annotated[Annotated[Union[MessageItem, FunctionCallItem, FunctionCallOutputItem, FileSearchCallItem],
                                Field(discriminator="type")], BeforeValidator(_typed)]


class FunctionToolParam(_Item):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class FileSearchToolParam(_Item):
    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1, max_length=4)
    max_num_results: Optional[int] = Field(default=None, ge=1, le=50)
    filters: Optional[dict[str, Any]] = None


ToolParam = Annotated[Union[FunctionToolParam, FileSearchToolParam], Field(discriminator="type")]


class NamedFunction(_Item):
    type: Literal["function"]
    name: str


class TextFormat(_Item):
    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = Field(default=None, min_length=1, max_length=64)
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    description: Optional[str] = None
    strict: Optional[bool] = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class TextConfig(_Item):
    format: Optional[TextFormat] = None
    verbosity: Optional[Literal["low", "medium", "high"]] = None


class ResponsesRequest(_Body):
    """POST /v1/responses."""

    model: str = Field(min_length=1)
    input: Union[str, list[InputItem]]
    instructions: Optional[str] = None
    previous_response_id: Optional[str] = None
    tools: Optional[list[ToolParam]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedFunction, None] = None
    text: Optional[TextConfig] = None
    # Checked here as well as by the router (the same genmesh/limits.py ranges): file_search runs
    # at the edge before the router sees the request, and a bad body should fail before that work.
    max_output_tokens: Optional[int] = Field(default=None, ge=1, le=INT32_MAX)
    temperature: Optional[float] = Field(default=None, ge=_TEMPERATURE.low, le=_TEMPERATURE.high)
    top_p: Optional[float] = Field(default=None, gt=_TOP_P.low, le=_TOP_P.high)
    stream: Optional[bool] = False
    background: Optional[bool] = False
    store: Optional[bool] = True
    metadata: Optional[dict[str, str]] = None
    parallel_tool_calls: Optional[bool] = None
    user: Optional[str] = None
    # Accepted for compatibility; they change nothing here.
    truncation: Optional[Literal["auto", "disabled"]] = None
    service_tier: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    include: Optional[list[str]] = None
