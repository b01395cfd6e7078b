"""The Anthropic Messages and OpenAI Responses mappings onto the LLM chat proto, and their stream
folders' event order, without a network."""
from __future__ import annotations

import json

from genmesh.services.edge import anthropic_convert, responses_convert
from genmesh.services.edge.anthropic_protocol import MessagesRequest
from genmesh.services.edge.responses_protocol import ResponsesRequest
from genmesh.jsonpb import enum_short_name
from genmesh.v1 import llm_pb2


def role(message: llm_pb2.ChatMessage) -> str:
    return enum_short_name(llm_pb2.Role, message.role)


def no_urls(_url: str) -> bool:
    return False


def test_anthropic_tool_results_follow_the_assistant_turn_that_called_them() -> None:
    body = MessagesRequest.model_validate({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "S"}],
        "tool_choice": {"type": "any"}, "tools": [{"name": "f", "input_schema": {"type": "object"}}], "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "let me"},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                                     {"type": "text", "text": "thanks"}]}]})
    req = anthropic_convert.chat_request(body, "m", no_urls)
    assert [role(m) for m in req.messages] == ["system", "user", "assistant", "tool", "user"]
    assert req.messages[2].content == "let me" and json.loads(req.messages[2].tool_calls[0].function.arguments) == {"a": 1}
    assert req.messages[3].tool_call_id == "t1" and req.messages[3].content == "42"
    assert req.tool_choice.mode == llm_pb2.TOOL_CHOICE_MODE_REQUIRED and req.sampling.max_tokens == 5


def test_anthropic_stream_events_come_in_order_with_one_block_each() -> None:
    state = anthropic_convert.MessageStream(model="m", message_id="msg_1")
    events = state.start()
    events += state.on_chunk(llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(content="Hi")]))
    events += state.on_chunk(llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(tool_calls=[
        llm_pb2.ToolCallDelta(id="c", name="f"), llm_pb2.ToolCallDelta(arguments='{"a":')])]))
    events += state.on_chunk(llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(tool_calls=[
        llm_pb2.ToolCallDelta(arguments="1}")], finish_reason=llm_pb2.FINISH_REASON_TOOL_CALLS)]))
    events += state.on_result(llm_pb2.ChatCompleteResult(usage=llm_pb2.TokenUsage(prompt_tokens=3, completion_tokens=4),
                                                         choices=[llm_pb2.ChatChoice(finish_reason=llm_pb2.FINISH_REASON_TOOL_CALLS)]))
    names = [n for n, _ in events]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    assert [d["index"] for n, d in events if n == "content_block_start"] == [0, 1]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {"input_tokens": 3, "output_tokens": 4}


def test_previous_output_and_tool_calls_join_the_next_conversation() -> None:
    first = ResponsesRequest.model_validate({"model": "m", "input": "weather?", "instructions": "be brief"})
    items = responses_convert.input_items(first, no_urls)
    result = llm_pb2.ChatCompleteResult(choices=[llm_pb2.ChatChoice(finish_reason=llm_pb2.FINISH_REASON_TOOL_CALLS, message=llm_pb2.ChatMessage(
        role=llm_pb2.ROLE_ASSISTANT, tool_calls=[llm_pb2.ToolCall(id="call_1", function=llm_pb2.FunctionCall(
            name="w", arguments='{"city":"Paris"}'))]))])
    output = responses_convert.output_items(result, "resp_" + "a" * 48)
    assert [o["type"] for o in output] == ["function_call"] and output[0]["call_id"] == "call_1"
    follow = ResponsesRequest.model_validate({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]})
    history = [*items, *output]
    messages = responses_convert.chat_messages([*history, *responses_convert.input_items(follow, no_urls)], None)
    assert [role(m) for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].tool_calls[0].function.name == "w" and messages[2].tool_call_id == "call_1"
    assert responses_convert.chat_messages(items, "be brief")[0].role == llm_pb2.ROLE_SYSTEM


def test_responses_stream_numbers_every_event_and_ends_with_the_stored_response() -> None:
    body = ResponsesRequest.model_validate({"model": "m", "input": "hi"})
    response = responses_convert.response_json(body, response_id="resp_" + "b" * 48, model="m", status="in_progress")
    state = responses_convert.ResponseStream(response)
    events = state.start()
    events += state.on_chunk(llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(content="Hel")]))
    events += state.on_chunk(llm_pb2.ChatCompleteChunk(choices=[llm_pb2.ChoiceDelta(content="lo")]))
    closing, final = state.on_result(llm_pb2.ChatCompleteResult(
        usage=llm_pb2.TokenUsage(prompt_tokens=2, completion_tokens=2),
        choices=[llm_pb2.ChatChoice(finish_reason=llm_pb2.FINISH_REASON_STOP, message=llm_pb2.ChatMessage(content="Hello"))]))
    events += closing + [state.end(final)]
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello"
    assert final["output"] == responses_convert.finish(response, llm_pb2.ChatCompleteResult(choices=[
        llm_pb2.ChatChoice(finish_reason=llm_pb2.FINISH_REASON_STOP, message=llm_pb2.ChatMessage(content="Hello"))]))["output"]
