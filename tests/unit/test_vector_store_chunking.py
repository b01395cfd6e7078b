"""Chunking for vector stores: OpenAI's auto (800/400) and static strategies, token windows with
overlap, chunks that keep the document's own text, and embedding windows within the model's."""
from __future__ import annotations

import pytest

from genmesh.errors import InvalidArgument
from genmesh.catalog import Catalog
from genmesh.services.router.chunking import Chunking, ChunkTokenizer, parse_chunking, tokenizer_dir, windows
from genmesh.services.router.collections import checked_admin_subject, parse_message
from genmesh.errors import PermissionDenied
from genmesh.settings import Settings
from genmesh.v1 import vector_stores_pb2 as pb


def static(size: int, overlap: int) -> pb.ChunkingStrategy:
    return pb.ChunkingStrategy(type=pb.CHUNKING_STRATEGY_TYPE_STATIC, max_chunk_size_tokens=size,
                               chunk_overlap_tokens=overlap)


def test_auto_is_openais_800_and_400() -> None:
    c = parse_chunking(pb.ChunkingStrategy(type=pb.CHUNKING_STRATEGY_TYPE_AUTO))
    assert (c.max_tokens, c.overlap) == (800, 400)
    assert parse_chunking(pb.ChunkingStrategy()) == c  # unspecified is auto
    assert c.to_json() == {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}
    assert c.to_proto() == static(800, 400)  # as a store or file shows it
    assert Chunking.from_json(c.to_json()) == c


def test_an_unknown_type_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_chunking(pb.ChunkingStrategy(type=9))  # a gRPC client's number the enum does not have
    assert info.value.field == "chunking_strategy.type"


@pytest.mark.parametrize("size, overlap, field", [
    (99, 0, "chunking_strategy.static.max_chunk_size_tokens"),
    (4097, 0, "chunking_strategy.static.max_chunk_size_tokens"),
    (200, 101, "chunking_strategy.static.chunk_overlap_tokens"),
    (200, -1, "chunking_strategy.static.chunk_overlap_tokens"),
])
def test_static_limits_name_the_field(size: int, overlap: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_chunking(static(size, overlap))
    assert info.value.field == field


def test_windows_overlap_and_cover_every_token() -> None:
    assert windows(0, Chunking(100, 50)) == []
    assert windows(80, Chunking(100, 50)) == [(0, 80)]
    assert windows(250, Chunking(100, 50)) == [(0, 100), (50, 150), (100, 200), (150, 250)]
    assert windows(250, Chunking(100, 0)) == [(0, 100), (100, 200), (200, 250)]


@pytest.fixture(scope="module")
def tokenizer() -> ChunkTokenizer:
    spec = Catalog.load().get("sentence-transformers/all-MiniLM-L6-v2")
    return ChunkTokenizer(tokenizer_dir(spec, Settings().resolved_models_dir()))


def test_chunks_keep_the_documents_text_and_fit_the_embedding_window(tokenizer: ChunkTokenizer) -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(300))
    chunks = tokenizer.chunks(text, Chunking(400, 100))
    assert len(chunks) > 3
    assert all(c.text in text for c in chunks)
    assert chunks[0].text.startswith("Sentence number 0") and chunks[-1].text.endswith("topic 5.")
    assert tokenizer.window == 254  # MiniLM: 256 positions less [CLS] and [SEP]
    assert all(0 < len(c.token_ids) <= tokenizer.window for c in chunks)


def test_live_messages_are_text_or_json_with_attributes_and_id() -> None:
    doc = parse_message(b"plain words", "genmesh.collections.vs_x", "msg_1")
    assert (doc.file_id, doc.text, doc.attributes) == ("msg_1", "plain words", {})
    doc = parse_message(b'{"text": "hi", "attributes": {"src": "x", "n": 2}, "id": "post-7"}', "s", "msg_2")
    assert (doc.file_id, doc.text, doc.attributes) == ("post-7", "hi", {"src": "x", "n": 2})
    assert parse_message(b'{"no_text": 1}', "s", "m").text == '{"no_text": 1}'
    for bad in (b"   ", b'{"text": ""}', b'{"text": "a", "id": "bad id"}', b"\xff\xfe"):
        with pytest.raises(ValueError):
            parse_message(bad, "s", "m")


@pytest.mark.parametrize("subject", ["genmesh.usage.>", "genmesh.workers.heartbeat", "genmesh.jobs.*.events",
                                     "$JS.API.>", "_INBOX.x", ">", "*.usage"])
def test_admin_subjects_never_reach_the_meshs_own(subject: str) -> None:
    with pytest.raises(PermissionDenied):
        checked_admin_subject(subject)


def test_admin_subjects_are_nats_subjects() -> None:
    assert checked_admin_subject("news.sports.>") == "news.sports.>"
    for bad in ("a..b", "a b", "a.>.b", ""):
        with pytest.raises(InvalidArgument):
            checked_admin_subject(bad)
