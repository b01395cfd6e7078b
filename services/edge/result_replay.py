"""What the Anthropic and Responses stream converters share: replaying a worker's final result
as the format's own text and tool-call events when nothing of it was streamed."""
from __future__ import annotations

from typing import Any

from genmesh.v1 import llm_pb2


class ResultReplay:
    """Mixed into a stream converter that has `streamed` (whether any delta came) and makes its
    format's events from text (`_text`) and from a tool call (`_tool`)."""

    streamed: bool

    def _text(self, text: str) -> list[Any]:
        raise NotImplementedError

    def _tool(self, call: llm_pb2.ToolCallDelta) -> list[Any]:
        raise NotImplementedError

    def replay_result(self, result: llm_pb2.ChatCompleteResult) -> tuple[llm_pb2.ChatChoice, list[Any]]:
        """The result's first choice, and the events of what only the result carries."""
        choice = result.choices[0] if result.choices else llm_pb2.ChatChoice()
        if self.streamed:
            return choice, []
        out = self._text(choice.message.content)
        for call in choice.message.tool_calls:
            out += self._tool(llm_pb2.ToolCallDelta(id=call.id, name=call.function.name,
                                                    arguments=call.function.arguments))
        return choice, out
