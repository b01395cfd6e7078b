"""What the edge keeps, it keeps in the blob store under the caller's key id: OpenAI file objects
(bytes plus a JSON sidecar) and batch documents. Any edge replica reads the same state; keys of
one API key are invisible to every other key because every lookup is under the caller's prefix.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from genmesh.blobstore import Blob, BlobStore, LocalBlobStore, S3BlobStore
from genmesh.errors import NotFound

log = logging.getLogger("genmesh.edge.documents")
FILES_KIND = "openai-files"
BATCHES_KIND = "openai-batches"
_SIDECAR_SUFFIXES = (".ct", ".tmp")


async def list_keys(store: BlobStore, prefix: str) -> list[str]:
    """Keys directly under `prefix` (which ends with '/'); the BlobStore protocol has no listing."""
    if isinstance(store, LocalBlobStore):
        def walk() -> list[str]:
            folder = store.root / prefix
            if not folder.is_dir():
                return []
            return [prefix + p.name for p in folder.iterdir()
                    if p.is_file() and not p.name.endswith(_SIDECAR_SUFFIXES) and ".tmp" not in p.suffixes]
        return await asyncio.to_thread(walk)
    if isinstance(store, S3BlobStore):
        def s3() -> list[str]:
            out: list[str] = []
            pages = store.client.get_paginator("list_objects_v2").paginate(
                Bucket=store.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                out.extend(obj["Key"] for obj in page.get("Contents", ()))
            return out
        return await asyncio.to_thread(s3)
    log.warning("blob store cannot list keys", extra={"store": type(store).__name__})
    return []


async def get_json(store: BlobStore, key: str) -> dict[str, Any] | None:
    try:
        blob = await store.get(key)
    except NotFound:
        return None
    return json.loads(blob.data)


async def put_json(store: BlobStore, key: str, doc: dict[str, Any]) -> None:
    await store.put(key, json.dumps(doc, separators=(",", ":")).encode(), "application/json")


class OpenAIFiles:
    """OpenAI's /v1/files objects: `<owner>/openai-files/<id>.json` (the object) and `.data`."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    @staticmethod
    def _meta_key(owner: str, file_id: str) -> str:
        return f"{owner}/{FILES_KIND}/{file_id}.json"

    @staticmethod
    def _data_key(owner: str, file_id: str) -> str:
        return f"{owner}/{FILES_KIND}/{file_id}.data"

    @staticmethod
    def valid_id(file_id: str) -> bool:
        return file_id.startswith("file-") and all(c.isalnum() or c in "-_" for c in file_id)

    async def create(self, owner: str, file_id: str, data: bytes, *, filename: str, purpose: str,
                     content_type: str) -> dict[str, Any]:
        obj = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": Path(filename or "file").name, "purpose": purpose, "status": "processed",
               "status_details": None, "expires_at": None, "content_type": content_type}
        await self.store.put(self._data_key(owner, file_id), data, content_type)
        await put_json(self.store, self._meta_key(owner, file_id), obj)
        return obj

    async def get(self, owner: str, file_id: str) -> dict[str, Any]:
        obj = await get_json(self.store, self._meta_key(owner, file_id)) if self.valid_id(file_id) else None
        if obj is None:
            raise NotFound(f"No such File object: {file_id}", field="file_id")
        return obj

    async def content(self, owner: str, file_id: str) -> Blob:
        await self.get(owner, file_id)
        return await self.store.get(self._data_key(owner, file_id))

    async def delete(self, owner: str, file_id: str) -> None:
        await self.get(owner, file_id)
        await self.store.delete(self._meta_key(owner, file_id))
        await self.store.delete(self._data_key(owner, file_id))

    async def list(self, owner: str) -> list[dict[str, Any]]:
        keys = [k for k in await list_keys(self.store, f"{owner}/{FILES_KIND}/") if k.endswith(".json")]
        docs = await asyncio.gather(*(get_json(self.store, k) for k in keys))
        return [d for d in docs if d is not None]


def public_file(obj: dict[str, Any]) -> dict[str, Any]:
    """The file object as OpenAI shows it (without genmesh's bookkeeping fields)."""
    return {k: v for k, v in obj.items() if k != "content_type"}


class BatchDocuments:
    """Batch documents: `<owner>/openai-batches/<id>.json`."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    @staticmethod
    def _key(owner: str, batch_id: str) -> str:
        return f"{owner}/{BATCHES_KIND}/{batch_id}.json"

    async def get(self, owner: str, batch_id: str) -> dict[str, Any]:
        ok = batch_id.startswith("batch_") and all(c.isalnum() or c in "-_" for c in batch_id)
        doc = await get_json(self.store, self._key(owner, batch_id)) if ok else None
        if doc is None:
            raise NotFound(f"No such Batch object: {batch_id}", field="batch_id")
        return doc

    async def put(self, owner: str, doc: dict[str, Any]) -> None:
        await put_json(self.store, self._key(owner, doc["id"]), doc)

    async def list(self, owner: str) -> list[dict[str, Any]]:
        keys = [k for k in await list_keys(self.store, f"{owner}/{BATCHES_KIND}/") if k.endswith(".json")]
        docs = await asyncio.gather(*(get_json(self.store, k) for k in keys))
        return [d for d in docs if d is not None]
