"""The contract: committed stubs match the protos, and the protos follow genmesh's rules."""
from __future__ import annotations

import filecmp
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import EnumDescriptor, FileDescriptor

from genmesh import protogen

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos" / "genmesh" / "v1"
REQUIRED = {"common", "router", "imagegen", "videogen", "audio", "llm", "billing", "apps"}


def proto_modules() -> list[str]:
    return sorted(p.stem for p in PROTO_DIR.glob("*.proto"))


def file_descriptor(stem: str) -> FileDescriptor:
    return importlib.import_module(f"genmesh.v1.{stem}_pb2").DESCRIPTOR


def test_every_required_proto_file_exists() -> None:
    assert REQUIRED <= set(proto_modules())


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    generated = protogen.generate(tmp_path)
    assert generated, "protoc produced nothing"
    for path in generated:
        committed = ROOT / "genmesh" / "v1" / path.name
        assert committed.exists(), f"{path.name} is not committed; run python -m genmesh.protogen"
        assert filecmp.cmp(path, committed, shallow=False), (
            f"genmesh/v1/{path.name} drifted from protos/; run python -m genmesh.protogen")


@pytest.mark.parametrize("stem", proto_modules())
def test_package_is_versioned(stem: str) -> None:
    assert file_descriptor(stem).package == "genmesh.v1"


def _enums(fd: FileDescriptor) -> list[EnumDescriptor]:
    enums = list(fd.enum_types_by_name.values())
    stack = list(fd.message_types_by_name.values())
    while stack:
        m = stack.pop()
        enums.extend(m.enum_types)
        stack.extend(m.nested_types)
    return enums


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


@pytest.mark.parametrize("stem", proto_modules())
def test_enums_start_with_prefixed_unspecified_zero(stem: str) -> None:
    for enum in _enums(file_descriptor(stem)):
        prefix = _upper_snake(enum.name)
        zero = enum.values_by_number[0]
        assert zero.name == f"{prefix}_UNSPECIFIED", f"{enum.full_name}: zero value must be {prefix}_UNSPECIFIED"
        for value in enum.values:
            assert value.name.startswith(prefix + "_"), f"{value.name} must start with {prefix}_"


@pytest.mark.parametrize("stem", proto_modules())
def test_fields_are_snake_case_and_messages_pascal_case(stem: str) -> None:
    fd = file_descriptor(stem)
    stack = list(fd.message_types_by_name.values())
    while stack:
        m = stack.pop()
        if not m.GetOptions().map_entry:
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", m.name), m.full_name
        for f in m.fields:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", f.name), f"{m.full_name}.{f.name}"
        stack.extend(m.nested_types)


@pytest.mark.parametrize("stem", proto_modules())
def test_rpcs_take_requests_named_after_them(stem: str) -> None:
    for service in file_descriptor(stem).services_by_name.values():
        for method in service.methods:
            assert method.input_type.name == f"{method.name}Request", (
                f"{service.name}.{method.name} takes {method.input_type.name}")


def test_every_streaming_event_has_the_conventional_oneof() -> None:
    from genmesh.tasks import TASKS

    for task in TASKS.values():
        if not task.streaming:
            continue
        desc = task.response_cls.DESCRIPTOR
        assert "event" in desc.oneofs_by_name, desc.full_name
        cases = {f.name for f in desc.oneofs_by_name["event"].fields}
        assert {"progress", "log", "usage", "result"} <= cases, f"{desc.full_name}: {cases}"


def test_protos_pass_buf_lint() -> None:
    """buf's STANDARD rules, less the two buf.yaml documents (service names are gRPC paths; a
    stream returns `*Event`s). buf comes from the buf-bin wheel in the dev extras."""
    buf = Path(sys.executable).parent / "buf"
    if not buf.exists():
        buf = Path(shutil.which("buf") or "")
    assert buf.is_file(), "buf is missing: pip install -e '.[dev]' (buf-bin)"
    run = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_removed_field_numbers_are_reserved() -> None:
    """A field moved into `Sampling` (or retyped as an enum or Duration) keeps its old number reserved."""
    from genmesh.v1 import llm_pb2, router_pb2

    def reserved(descriptor: Any) -> set[int]:
        proto = descriptor_pb2.DescriptorProto()
        descriptor.CopyToProto(proto)
        return {n for r in proto.reserved_range for n in range(r.start, r.end)}

    assert set(range(3, 16)) | {20, 21, 22} <= reserved(llm_pb2.ChatCompleteRequest.DESCRIPTOR)
    assert set(range(3, 16)) | {18, 19, 20} <= reserved(llm_pb2.CompleteRequest.DESCRIPTOR)
    assert {1} <= reserved(llm_pb2.ToolChoice.DESCRIPTOR)
    assert {6, 7} <= reserved(router_pb2.SubmitRequest.DESCRIPTOR)
    assert {3} <= reserved(router_pb2.RunRequest.DESCRIPTOR) & reserved(router_pb2.StreamRequest.DESCRIPTOR)


def test_a_queued_job_asks_for_no_previews() -> None:
    """The queue switches previews off (nobody streams a queued job); requests without them are untouched."""
    from genmesh.tasks import without_partials
    from genmesh.v1 import imagegen_pb2, llm_pb2, videogen_pb2

    image = imagegen_pb2.GenerateImageRequest(prompt="a cat", preview_every=1)
    video = videogen_pb2.GenerateVideoRequest(prompt="a cat")
    chat = llm_pb2.ChatCompleteRequest(model_id="m")
    for request in (image, video, chat):
        without_partials(request)
    assert image.HasField("preview_every") and image.preview_every == 0
    assert video.HasField("preview_every") and video.preview_every == 0
    assert chat == llm_pb2.ChatCompleteRequest(model_id="m")
