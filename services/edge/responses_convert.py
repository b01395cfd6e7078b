"""OpenAI Responses JSON <-> genmesh's LLM chat protos: plain functions and a stream folder, no I/O.

A response's conversation is a list of items (messages, function calls, their outputs) kept in
their stored form; `previous_response_id` prepends the earlier response's whole conversation and
output, tool calls included. Items become the same `ChatCompleteRequest` an OpenAI chat does.
Output item ids derive from the response id, so the same result always renders the same response
(two replicas finishing one background response write the same thing).
"""
from __future__ import annotations

import secrets
import time
from typing import Any, Callable, Iterable

from genmesh.errors import InvalidArgument
from genmesh.v1 import llm_pb2
from genmesh.services.edge.openai_convert import TOOL_CHOICE_MODES, role
from genmesh.services.edge.result_replay import ResultReplay
from genmesh.services.edge.responses_protocol import (FileSearchCallItem, FunctionCallItem,
                                                      FunctionCallOutputItem, FunctionToolParam, InputImage,
                                                      InputText, MessageItem, NamedFunction, Refusal,
                                                      ResponsesRequest)


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")[:24]


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# --- input items ----------------------------------------------------------------------------------

def input_items(body: ResponsesRequest, is_accepted_url: Callable[[str], bool]) -> list[dict[str, Any]]:
    """This request's input in stored form (what `input_items` lists): each item with an id."""
    if isinstance(body.input, str):
        return [{"id": _item_id("msg"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": body.input}]}]
    out = []
    for i, item in enumerate(body.input):
        field = f"input[{i}]"
        if isinstance(item, MessageItem):
            out.append(_message_item(item, field, is_accepted_url))
        elif isinstance(item, FunctionCallItem):
            out.append({"id": item.id or _item_id("fc"), "type": "function_call", "call_id": item.call_id,
                        "name": item.name, "arguments": item.arguments, "status": "completed"})
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else "".join(p.text for p in item.output)
            out.append({"id": item.id or _item_id("fco"), "type": "function_call_output", "call_id": item.call_id,
                        "output": output, "status": "completed"})
        elif isinstance(item, FileSearchCallItem):
            continue  # its results are in the message that answered it
    if not out:
        raise InvalidArgument("must hold at least one message or function call output", field="input")
    return out


def _message_item(item: MessageItem, field: str, is_accepted_url: Callable[[str], bool]) -> dict[str, Any]:
    assistant = item.role == "assistant"
    text_type = "output_text" if assistant else "input_text"
    parts: list[dict[str, Any]] = []
    if isinstance(item.content, str):
        parts.append({"type": text_type, "text": item.content})
    else:
        for j, part in enumerate(item.content):
            where = f"{field}.content[{j}]"
            if isinstance(part, InputText):
                parts.append({"type": text_type, "text": part.text})
            elif isinstance(part, Refusal):
                parts.append({"type": "refusal", "refusal": part.refusal})
            elif isinstance(part, InputImage):
                if assistant:
                    raise InvalidArgument("images belong in user messages", field=where)
                url = part.image_url or ""
                if part.file_id or not url:
                    raise InvalidArgument("send the image as image_url (a data: URI or this mesh's file URL)",
                                          field=f"{where}.image_url")
                if not (url.startswith("data:") or is_accepted_url(url)):
                    raise InvalidArgument("only data: URIs and this mesh's file URLs are accepted",
                                          field=f"{where}.image_url")
                parts.append({"type": "input_image", "image_url": url, "detail": part.detail or "auto"})
    if assistant:
        for p in parts:
            if p["type"] == "output_text":
                p["annotations"] = []
    return {"id": item.id or _item_id("msg"), "type": "message", "role": item.role, "status": "completed",
            "content": parts}


def chat_messages(items: Iterable[dict[str, Any]], instructions: str | None) -> list[llm_pb2.ChatMessage]:
    """A conversation of stored items as chat messages: calls join the assistant turn before them."""
    out: list[llm_pb2.ChatMessage] = []
    if instructions:
        out.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=instructions))
    for item in items:
        kind = item.get("type")
        if kind == "message":
            msg = llm_pb2.ChatMessage(role=role(item["role"]))
            parts = item.get("content") or []
            if all(p.get("type") in ("input_text", "output_text", "refusal") for p in parts):
                msg.content = "".join(p.get("text") or p.get("refusal") or "" for p in parts)
            else:
                for p in parts:
                    if p.get("type") == "input_image":
                        msg.parts.add(type="image_url", image_url=p["image_url"])
                    elif p.get("text"):
                        msg.parts.add(type="text", text=p["text"])
            out.append(msg)
        elif kind == "function_call":
            call = llm_pb2.ToolCall(id=item["call_id"], type="function", function=llm_pb2.FunctionCall(
                name=item["name"], arguments=item.get("arguments") or "{}"))
            if out and out[-1].role == llm_pb2.ROLE_ASSISTANT:
                out[-1].tool_calls.append(call)
            else:
                out.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, tool_calls=[call]))
        elif kind == "function_call_output":
            out.append(llm_pb2.ChatMessage(role=llm_pb2.ROLE_TOOL, tool_call_id=item["call_id"],
                                           content=item.get("output", "")))
    return out


def chat_request(body: ResponsesRequest, model_id: str, messages: list[llm_pb2.ChatMessage],
                 extra_tools: Iterable[FunctionToolParam] = ()) -> llm_pb2.ChatCompleteRequest:
    req = llm_pb2.ChatCompleteRequest(model_id=model_id, messages=messages, user=body.user or "")
    if body.max_output_tokens is not None:
        req.sampling.max_tokens = body.max_output_tokens
    for name in ("temperature", "top_p"):
        value = getattr(body, name)
        if value is not None:
            setattr(req.sampling, name, value)
    names = []
    tools = [t for t in body.tools or () if isinstance(t, FunctionToolParam)] + list(extra_tools)
    for tool in tools:
        t = req.tools.add(type="function", function=llm_pb2.FunctionDefinition(
            name=tool.name, description=tool.description or "", strict=bool(tool.strict)))
        t.function.parameters.update(tool.parameters or {"type": "object", "properties": {}})
        names.append(tool.name)
    choice = body.tool_choice
    if isinstance(choice, NamedFunction):
        if choice.name not in names:
            raise InvalidArgument(f"names '{choice.name}', which is not in tools", field="tool_choice.name")
        req.tool_choice.CopyFrom(llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_FUNCTION,
                                                    function_name=choice.name))
    elif choice is not None and names:
        req.tool_choice.mode = TOOL_CHOICE_MODES[choice]
    if body.parallel_tool_calls is not None:
        req.parallel_tool_calls = body.parallel_tool_calls
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.type != "text":
        req.response_format.type = fmt.type
        if fmt.type == "json_schema":
            if not fmt.name or fmt.schema_ is None:
                raise InvalidArgument("needs name and schema with type json_schema", field="text.format")
            req.response_format.name = fmt.name
            req.response_format.strict = bool(fmt.strict)
            req.response_format.json_schema.update(fmt.schema_)
    return req


# --- the response object --------------------------------------------------------------------------

def tools_json(body: ResponsesRequest) -> list[dict[str, Any]]:
    out = []
    for tool in body.tools or ():
        if isinstance(tool, FunctionToolParam):
            out.append({"type": "function", "name": tool.name, "description": tool.description,
                        "parameters": tool.parameters or {"type": "object", "properties": {}},
                        "strict": bool(tool.strict)})
        else:
            out.append({"type": "file_search", "vector_store_ids": tool.vector_store_ids,
                        "max_num_results": tool.max_num_results, "filters": tool.filters})
    return out


def _format_json(body: ResponsesRequest) -> dict[str, Any]:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type != "json_schema":
        return {"type": fmt.type if fmt else "text"}
    return {"type": "json_schema", "name": fmt.name, "schema": fmt.schema_, "strict": bool(fmt.strict),
            "description": fmt.description}


def response_json(body: ResponsesRequest, *, response_id: str, model: str, status: str,
                  output: list[dict[str, Any]] | None = None, usage: dict[str, Any] | None = None,
                  created_at: float | None = None) -> dict[str, Any]:
    choice = body.tool_choice
    return {"id": response_id, "object": "response", "created_at": int(created_at or time.time()),
            "status": status, "background": bool(body.background), "error": None, "incomplete_details": None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": model,
            "output": output or [], "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id, "temperature": body.temperature,
            "top_p": body.top_p, "tool_choice": choice.model_dump() if isinstance(choice, NamedFunction)
            else (choice or "auto"), "tools": tools_json(body), "text": {"format": _format_json(body)},
            "truncation": body.truncation or "disabled", "usage": usage, "metadata": body.metadata or {},
            "store": body.store is not False, "user": body.user}


def usage_json(usage: llm_pb2.TokenUsage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status != "in_progress" else []}


def _call(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def output_items(result: llm_pb2.ChatCompleteResult, response_id: str) -> list[dict[str, Any]]:
    choice = result.choices[0] if result.choices else llm_pb2.ChatChoice()
    status = "incomplete" if choice.finish_reason == llm_pb2.FINISH_REASON_LENGTH else "completed"
    out: list[dict[str, Any]] = []
    suffix = _suffix(response_id)
    if choice.message.content or not choice.message.tool_calls:
        out.append(_message(f"msg_{suffix}_{len(out)}", choice.message.content, status))
    for call in choice.message.tool_calls:
        k = len(out)
        out.append(_call(f"fc_{suffix}_{k}", call.id or f"call_{suffix}_{k}", call.function.name,
                         call.function.arguments or "{}", "completed"))
    return out


def finish(response: dict[str, Any], result: llm_pb2.ChatCompleteResult,
           output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The response once its run ended: output, usage, and completed or incomplete."""
    choice = result.choices[0] if result.choices else llm_pb2.ChatChoice()
    done = dict(response)
    done["output"] = output if output is not None else output_items(result, response["id"])
    done["usage"] = usage_json(result.usage)
    if choice.finish_reason == llm_pb2.FINISH_REASON_LENGTH:
        done["status"], done["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
    else:
        done["status"] = "completed"
    return done


def failed(response: dict[str, Any], message: str, code: str = "server_error") -> dict[str, Any]:
    return {**response, "status": "failed", "error": {"code": code, "message": message}}


class ResponseStream(ResultReplay):
    """Folds LLM.ChatComplete events into Responses stream events (dicts with sequence numbers)."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.suffix = _suffix(response["id"])
        self.seq = 0
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.text = ""
        self.streamed = False

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        snapshot = {**self.response, "status": "in_progress"}
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def _index(self) -> int:
        return len(self.items)

    def finished_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Events for items done before the model runs (file_search calls), in OpenAI's order."""
        out: list[dict[str, Any]] = []
        for item in items:
            index = self._index()
            out.append(self._event("response.output_item.added", output_index=index,
                                   item={**item, "status": "in_progress", "results": None}))
            if item["type"] == "file_search_call":
                for phase in ("in_progress", "searching", "completed"):
                    out.append(self._event(f"response.file_search_call.{phase}", item_id=item["id"],
                                           output_index=index))
            self.items.append(item)
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        item, self.open = self.open, None
        if item is None:
            return []
        index = self._index()
        if item["type"] == "message":
            done = _message(item["id"], self.text, status)
            part = done["content"][0]
            out = [self._event("response.output_text.done", item_id=item["id"], output_index=index,
                               content_index=0, text=self.text, logprobs=[]),
                   self._event("response.content_part.done", item_id=item["id"], output_index=index,
                               content_index=0, part=part)]
        else:
            done = {**item, "status": "completed"}
            out = [self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               arguments=item["arguments"], name=item["name"])]
        self.items.append(done)
        return out + [self._event("response.output_item.done", output_index=index, item=done)]

    def _text(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        self.streamed = True
        out: list[dict[str, Any]] = []
        if self.open is None or self.open["type"] != "message":
            out += self._open_message()
        self.text += text
        out.append(self._event("response.output_text.delta", item_id=self.open["id"], output_index=self._index(),
                               content_index=0, delta=text, logprobs=[]))
        return out

    def _open_message(self) -> list[dict[str, Any]]:
        out = self._close()
        item = _message(f"msg_{self.suffix}_{self._index()}", "", "in_progress")
        self.open, self.text = item, ""
        out.append(self._event("response.output_item.added", output_index=self._index(), item=item))
        out.append(self._event("response.content_part.added", item_id=item["id"], output_index=self._index(),
                               content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        return out

    def _tool(self, call: llm_pb2.ToolCallDelta) -> list[dict[str, Any]]:
        self.streamed = True
        out: list[dict[str, Any]] = []
        if call.id or call.name or self.open is None or self.open["type"] != "function_call":
            out += self._close()
            k = self._index()
            self.open = _call(f"fc_{self.suffix}_{k}", call.id or f"call_{self.suffix}_{k}", call.name, "",
                              "in_progress")
            out.append(self._event("response.output_item.added", output_index=k, item=dict(self.open)))
        if call.arguments:
            self.open["arguments"] += call.arguments
            out.append(self._event("response.function_call_arguments.delta", item_id=self.open["id"],
                                   output_index=self._index(), delta=call.arguments))
        return out

    def on_chunk(self, chunk: llm_pb2.ChatCompleteChunk) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for d in chunk.choices:
            out += self._text(d.content)
            for call in d.tool_calls:
                out += self._tool(call)
        return out

    def on_result(self, result: llm_pb2.ChatCompleteResult) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The closing events and the final response (to be stored before the last event is sent)."""
        choice, replayed = self.replay_result(result)
        out: list[dict[str, Any]] = replayed
        if not self.items and self.open is None:
            out += self._open_message()  # an empty answer is still one (empty) message, as unstreamed
        out += self._close("incomplete" if choice.finish_reason == llm_pb2.FINISH_REASON_LENGTH else "completed")
        final = finish(self.response, result, output=self.items)
        return out, final

    def end(self, final: dict[str, Any]) -> dict[str, Any]:
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return self._event(kind, response=final)

    def fail(self, message: str) -> dict[str, Any]:
        return self._event("response.failed", response=failed(self.response, message))
