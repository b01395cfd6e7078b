"""The contract: committed stubs match the protos, and the protos follow genmesh's rules."""
from __future__ import annotations

import filecmp
import importlib
import re
from pathlib import Path

import pytest
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
