"""Worker.RunTask's contract: which tasks a sync run sends unary, how their requests are wrapped,
and that every modality's servicer gets a route without code of its own."""
from __future__ import annotations

import grpc
import pytest

from genmesh.tasks import TASKS, run_task_request
from genmesh.v1 import (apps_pb2, apps_pb2_grpc, audio_pb2_grpc, echo_pb2, echo_pb2_grpc,
                        imagegen_pb2, imagegen_pb2_grpc, llm_pb2_grpc, videogen_pb2_grpc, worker_pb2)
from genmesh.worker.unary import HandlerTap, TaskRoutes

MODALITY_SERVICERS = [
    (echo_pb2_grpc.add_EchoServicer_to_server, echo_pb2_grpc.EchoServicer),
    (imagegen_pb2_grpc.add_ImageGenServicer_to_server, imagegen_pb2_grpc.ImageGenServicer),
    (videogen_pb2_grpc.add_VideoGenServicer_to_server, videogen_pb2_grpc.VideoGenServicer),
    (audio_pb2_grpc.add_AudioServicer_to_server, audio_pb2_grpc.AudioServicer),
    (llm_pb2_grpc.add_LLMServicer_to_server, llm_pb2_grpc.LLMServicer),
    (apps_pb2_grpc.add_AppRunnerServicer_to_server, apps_pb2_grpc.AppRunnerServicer),
]


@pytest.mark.parametrize("request_message,case", [
    (echo_pb2.EchoRequest(model_id="genmesh/echo", prompt="é" * 200, num_events=3), "echo"),
    (imagegen_pb2.GenerateImageRequest(model_id="m", prompt="a cat", num_inference_steps=4), "generate_image"),
    (apps_pb2.InvokeRequest(model_id="me/app/run"), "invoke"),
    (echo_pb2.EchoRequest(), "echo"),  # an empty request is zero bytes, still the case
])
def test_a_serialized_request_is_wrapped_as_its_case_without_reparsing(request_message, case: str) -> None:
    task = next(t for t in TASKS.values() if t.request_cls is type(request_message))
    assert task.run_task_field is not None and task.run_task_field.name == case
    wrapped = worker_pb2.RunTaskRequest.FromString(
        run_task_request(task.run_task_field, request_message.SerializeToString()))
    assert wrapped.WhichOneof("request") == case
    assert getattr(wrapped, case) == request_message


def test_sync_runs_go_unary_except_token_streams_billed_from_their_chunks() -> None:
    unary = {name for name, t in TASKS.items() if t.run_task_field is not None}
    assert unary == {"echo", "text-to-image", "image-to-image", "text-to-video", "image-to-video",
                     "speech-to-text", "text-to-speech", "app"}
    assert TASKS["embeddings"].run_task_field is None  # already a unary RPC


async def test_every_modality_servicer_gets_a_route_for_each_of_its_streaming_tasks() -> None:
    server = grpc.aio.server()
    tap = HandlerTap(server)
    for add, servicer in MODALITY_SERVICERS:
        add(servicer(), tap)
    routes = TaskRoutes(tap.handlers)
    assert routes.cases == sorted(f.name for f in
                                  worker_pb2.RunTaskRequest.DESCRIPTOR.oneofs_by_name["request"].fields)
    assert TaskRoutes().cases == []  # a worker without servicers answers UNIMPLEMENTED
