"""The Anthropic Messages wire protocol at the edge: request bodies as Pydantic models, validated
once, with errors naming the field. No serving logic lives here (see anthropic_api.py).

Top-level bodies forbid unknown fields; content blocks ignore extra keys (`cache_control`,
`citations`), so a client may replay an assistant turn it got back.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Block(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class Base64Source(_Block):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class URLSource(_Block):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Union[Base64Source, URLSource], Field(discriminator="type")]


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: Union[str, list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]], None] = None
    is_error: Optional[bool] = None


ContentBlock = Annotated[Union[TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock],
                         Field(discriminator="type")]


class MessageParam(_Block):
    role: Literal["user", "assistant"]
    content: Union[str, list[ContentBlock]]


class ToolParam(_Block):
    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    input_schema: dict[str, Any]
    type: Optional[Literal["custom"]] = None


class ToolChoice(_Block):
    type: Literal["auto", "any", "tool", "none"]
    name: Optional[str] = None
    disable_parallel_tool_use: Optional[bool] = None


class Metadata(_Block):
    user_id: Optional[str] = None


class _Conversation(_Body):
    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: Union[str, list[TextBlock], None] = None
    tools: Optional[list[ToolParam]] = None
    tool_choice: Optional[ToolChoice] = None


class MessagesRequest(_Conversation):
    """POST /v1/messages."""

    max_tokens: int = Field(ge=1)
    stop_sequences: Optional[list[str]] = Field(default=None, max_length=4)
    stream: Optional[bool] = False
    # Recent SDKs no longer send sampling parameters; older ones and raw clients do.
    temperature: Optional[float] = Field(default=None, ge=0, le=1)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    top_k: Optional[int] = Field(default=None, ge=0)
    metadata: Optional[Metadata] = None
    service_tier: Optional[Literal["auto", "standard_only"]] = None


class CountTokensRequest(_Conversation):
    """POST /v1/messages/count_tokens."""
