"""Files at the edge: signed blob-store URLs (`GET /files/<key>`), FAL's upload flows (CDN-style
`POST /files/upload` with a token from `storage/auth/token`, and `storage/upload/initiate` +
signed `PUT`), and OpenAI's /v1/files. Every key lives under the caller's key id."""
from __future__ import annotations

import mimetypes
import secrets
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from genmesh import blobstore
from genmesh import tokens
from genmesh.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from genmesh.services.edge.documents import FILES_KIND, OpenAIFiles, public_file
from genmesh.services.edge.openai_protocol import FILE_PURPOSES, FILE_UPLOAD_OPENAPI
from genmesh.services.edge.responses import JSON, json_body

router = APIRouter()
CDN_TOKEN_TTL_S = 3600
UPLOAD_URL_TTL_S = 3600


def base_url(request: Request) -> str:
    return (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")


def signer(request: Request) -> blobstore.Signer:
    state = request.app.state
    if not hasattr(state, "upload_signer"):
        state.upload_signer = blobstore.Signer(blobstore.signing_secret(state.settings))
    return state.upload_signer


async def owner(request: Request) -> str:
    """The caller's key id: from a CDN upload token (while its key is live), or by
    authenticating the key."""
    header = request.headers.get("authorization", "")
    _, _, value = header.partition(" ")
    if tokens.is_token(value.strip()):
        kid = request.app.state.tokens.open(tokens.CDN_UPLOAD, value.strip()).get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("invalid token")
        return (await request.app.state.identities.live(kid)).key_id
    return (await request.app.state.identities.identify(request)).key_id


# Served inline only: media a browser cannot run as a page. Everything else, and whatever a user
# uploaded, is an attachment, so an uploaded text/html (or SVG) never renders on this origin.
INLINE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "audio/", "video/")
USER_CONTENT_KINDS = frozenset({"uploads", FILES_KIND})


def download_headers(key: str, content_type: str) -> dict[str, str]:
    headers = {"x-content-type-options": "nosniff", "content-security-policy": "sandbox"}
    parts = key.split("/")
    kind = parts[1] if len(parts) > 2 else ""
    if kind in USER_CONTENT_KINDS or not content_type.lower().startswith(INLINE_TYPES):
        name = "".join(c for c in parts[-1] if c.isalnum() or c in "._-")[:120] or "file"
        headers["content-disposition"] = f'attachment; filename="{name}"'
    return headers


# --- signed blob-store URLs -----------------------------------------------------------------------

@router.get("/files/{key:path}", tags=["files"], summary="Download a file by its signed URL (expires, sig)")
@router.head("/files/{key:path}", include_in_schema=False)
async def signed_file(key: str, request: Request, expires: int = Query(0), sig: str = Query("")) -> Response:
    store = request.app.state.blobs
    verify = getattr(getattr(store, "signer", None), "verify", None)
    if verify is None or not sig or not verify(key, expires, sig):
        raise NotFound("no such file, or its link has expired")
    blob = await store.get(key)
    headers = {"cache-control": "private, max-age=3600", "content-length": str(len(blob.data)),
               **download_headers(key, blob.content_type)}
    body = b"" if request.method == "HEAD" else blob.data
    return Response(body, media_type=blob.content_type, headers=headers)


# --- FAL uploads ----------------------------------------------------------------------------------

@router.post("/storage/auth/token", tags=["fal"], summary="A short-lived token for CDN uploads")
async def cdn_token(request: Request) -> JSON:
    identity = await request.app.state.identities.identify(request)
    token, expires = request.app.state.tokens.seal(tokens.CDN_UPLOAD, {"kid": identity.key_id}, CDN_TOKEN_TTL_S)
    return JSON({"token": token, "token_type": "Bearer", "base_url": base_url(request),
                 "expires_at": datetime.fromtimestamp(expires, timezone.utc).isoformat()})


@router.post("/files/upload", tags=["fal"], summary="Upload a file (raw body); answers its access_url")
async def cdn_upload(request: Request) -> JSON:
    who = await owner(request)
    data = await request.body()
    if not data:
        raise InvalidArgument("is empty", field="body")
    content_type = request.headers.get("content-type") or "application/octet-stream"
    name = request.headers.get("x-fal-file-name") or None
    store = request.app.state.blobs
    key = blobstore.new_key(who, "uploads", content_type, name=name)
    await store.put(key, data, content_type)
    return JSON({"access_url": store.url(key), "content_type": content_type,
                 "file_name": key.rsplit("/", 1)[-1], "file_size": len(data)})


@router.post("/storage/upload/initiate", tags=["fal"],
             summary="Start an upload: answers a signed upload_url (PUT the bytes) and the file_url")
async def upload_initiate(request: Request) -> JSON:
    identity = await request.app.state.identities.identify(request)
    payload = await json_body(request) or {}
    if not isinstance(payload, dict):
        raise InvalidArgument("must be a JSON object", field="body")
    content_type = payload.get("content_type") or "application/octet-stream"
    name = payload.get("file_name") or None
    if not isinstance(content_type, str) or not (name is None or isinstance(name, str)):
        raise InvalidArgument("file_name and content_type must be strings", field="content_type")
    if len(content_type) > 255 or not content_type.isascii() or not content_type.isprintable():
        raise InvalidArgument("must be a MIME type (printable ASCII, at most 255 characters)",
                              field="content_type")
    key = blobstore.new_key(identity.key_id, "uploads", content_type, name=name)
    expires = int(time.time()) + UPLOAD_URL_TTL_S
    query = urlencode({"expires": expires, "sig": signer(request).sign(_put_scope(key, content_type), expires),
                       "content_type": content_type})
    return JSON({"upload_url": f"{base_url(request)}/storage/upload/{quote(key)}?{query}",
                 "file_url": request.app.state.blobs.url(key)})


def _put_scope(key: str, content_type: str) -> str:
    # Distinct from download signatures, so a download link never allows an overwrite; the
    # content type is signed, so the URL uploads only what it was issued for.
    return f"put:{key}\ncontent-type:{content_type}"


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


@router.put("/storage/upload/{key:path}", tags=["fal"], summary="Upload the bytes to a signed upload_url")
async def upload_put(key: str, request: Request, expires: int = Query(0), sig: str = Query(""),
                     content_type: str = Query("")) -> JSON:
    if not sig or not signer(request).verify(_put_scope(key, content_type), expires, sig):
        raise Unauthenticated("invalid or expired upload URL; start again with /storage/upload/initiate")
    sent = request.headers.get("content-type")
    if sent and _media_type(sent) != _media_type(content_type):
        raise PermissionDenied(f"this upload URL was signed for {content_type!r}, not {sent[:100]!r}",
                               field="content_type")
    # The URL's key starts with the key id it was issued to: it works while that key is live.
    await request.app.state.identities.live(key.split("/", 1)[0])
    data = await request.body()
    await request.app.state.blobs.put(key, data, content_type)
    return JSON({"file_url": request.app.state.blobs.url(key), "file_size": len(data)})


# --- OpenAI /v1/files -----------------------------------------------------------------------------

def openai_files(request: Request) -> OpenAIFiles:
    return OpenAIFiles(request.app.state.blobs)


MAX_FILE_ID_CHARS = 128


def checked_file_id(file_id: str) -> str:
    """A file id as this edge makes them (`file-` and URL-safe characters), else 400: a long
    one would otherwise reach the blob store as a path component longer than a file name."""
    if len(file_id) > MAX_FILE_ID_CHARS or not OpenAIFiles.valid_id(file_id):
        raise InvalidArgument(f"must be a file id ('file-...', at most {MAX_FILE_ID_CHARS} characters)",
                              field="file_id")
    return file_id


@router.post("/v1/files", tags=["openai"], summary="Upload a file (multipart: file, purpose)",
             openapi_extra=FILE_UPLOAD_OPENAPI)
async def create_file(request: Request) -> JSON:
    identity = await request.app.state.identities.identify(request)
    form = await request.form(max_files=1, max_fields=16)
    try:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidArgument("is required (multipart field 'file')", field="file")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidArgument("is required", field="purpose")
        if purpose not in FILE_PURPOSES:
            raise InvalidArgument(f"must be one of {', '.join(FILE_PURPOSES)}", field="purpose")
        data = await upload.read()
        filename = upload.filename or "file"
        content_type = upload.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    finally:
        await form.close()
    obj = await openai_files(request).create(identity.key_id, "file-" + secrets.token_hex(12), data,
                                             filename=filename, purpose=purpose, content_type=content_type)
    return JSON(public_file(obj))


@router.get("/v1/files", tags=["openai"], summary="List files")
async def list_files(request: Request, purpose: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                     order: str = Query("desc", pattern="^(asc|desc)$"), after: str | None = None) -> JSON:
    identity = await request.app.state.identities.identify(request)
    objs = [o for o in await openai_files(request).list(identity.key_id) if not purpose or o["purpose"] == purpose]
    return JSON(page([public_file(o) for o in objs], limit=limit, order=order, after=after))


def page(items: list[dict[str, Any]], *, limit: int, order: str, after: str | None) -> dict[str, Any]:
    """A cursor page (OpenAI's list shape) ordered by created_at, then id."""
    items = sorted(items, key=lambda o: (o["created_at"], o["id"]), reverse=order == "desc")
    if after:
        ids = [o["id"] for o in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    chunk = items[:limit]
    return {"object": "list", "data": chunk, "first_id": chunk[0]["id"] if chunk else None,
            "last_id": chunk[-1]["id"] if chunk else None, "has_more": len(items) > limit}


@router.get("/v1/files/{file_id}", tags=["openai"], summary="Retrieve a file object")
async def retrieve_file(file_id: str, request: Request) -> JSON:
    checked_file_id(file_id)
    identity = await request.app.state.identities.identify(request)
    return JSON(public_file(await openai_files(request).get(identity.key_id, file_id)))


@router.delete("/v1/files/{file_id}", tags=["openai"], summary="Delete a file")
async def delete_file(file_id: str, request: Request) -> JSON:
    checked_file_id(file_id)
    identity = await request.app.state.identities.identify(request)
    await openai_files(request).delete(identity.key_id, file_id)
    return JSON({"id": file_id, "object": "file", "deleted": True})


@router.get("/v1/files/{file_id}/content", tags=["openai"], summary="Download a file's content")
async def file_content(file_id: str, request: Request) -> Response:
    checked_file_id(file_id)
    identity = await request.app.state.identities.identify(request)
    blob = await openai_files(request).content(identity.key_id, file_id)
    return Response(blob.data, media_type=blob.content_type, headers=download_headers(blob.key, blob.content_type))
