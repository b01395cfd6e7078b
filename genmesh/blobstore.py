"""The blob store: local disk with HMAC-signed expiring URLs, or any S3 store through boto3.

Keys look like `<owner>/<kind>/<uuid>.<ext>`; the owner (an API key id) is part of the key so
listing and access checks are prefix checks. Signed local URLs are served by the edge at
`/files/<key>?expires=<unix>&sig=<hex>`.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import mimetypes
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode, urlparse, parse_qs, unquote

from genmesh.errors import InvalidArgument, NotFound
from genmesh.settings import Settings

DEFAULT_TTL_S = 7 * 86400
FILES_PREFIX = "/files/"


@dataclass(frozen=True)
class Blob:
    key: str
    data: bytes
    content_type: str


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> str: ...
    async def get(self, key: str) -> Blob: ...
    async def delete(self, key: str) -> None: ...
    def url(self, key: str, ttl_s: int = DEFAULT_TTL_S) -> str: ...
    def key_from_url(self, url: str) -> str | None: ...


def new_key(owner: str, kind: str, content_type: str, name: str | None = None) -> str:
    ext = (mimetypes.guess_extension(content_type) or ".bin") if content_type else ".bin"
    if name:
        safe = "".join(c for c in Path(name).name if c.isalnum() or c in "._-")[:80] or "file"
        return f"{owner}/{kind}/{uuid.uuid4().hex}/{safe}"
    return f"{owner}/{kind}/{uuid.uuid4().hex}{ext}"


def _check_key(key: str) -> str:
    parts = key.split("/")
    # 255 bytes is a file name's limit on common file systems; longer would fail as an OSError.
    if not key or key.startswith("/") or any(p in ("", ".", "..") or len(p.encode()) > 255 for p in parts):
        raise InvalidArgument("invalid blob key", field="key")
    return key


class Signer:
    """HMAC-SHA256 signatures over (key, expiry); shared by every service via the secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def sign(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def verify(self, key: str, expires: int, sig: str) -> bool:
        # Bytes, not str: compare_digest rejects non-ASCII strings, and a forged sig may be one.
        return expires >= time.time() and hmac.compare_digest(self.sign(key, expires).encode(), sig.encode())


class LocalBlobStore:
    def __init__(self, root: Path, signer: Signer, public_url: str) -> None:
        self.root = root
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            path.with_name(path.name + ".ct").write_text(content_type or "application/octet-stream")

        await asyncio.to_thread(write)
        return key

    async def get(self, key: str) -> Blob:
        path = self._path(key)

        def read() -> Blob:
            if not path.is_file():
                raise NotFound(f"no file {key}")
            ct_path = path.with_name(path.name + ".ct")
            ct = ct_path.read_text() if ct_path.exists() else "application/octet-stream"
            return Blob(key, path.read_bytes(), ct)

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> None:
        for p in (self._path(key), self._path(key).with_name(self._path(key).name + ".ct")):
            p.unlink(missing_ok=True)

    def url(self, key: str, ttl_s: int = DEFAULT_TTL_S) -> str:
        expires = int(time.time()) + ttl_s
        query = urlencode({"expires": expires, "sig": self.signer.sign(key, expires)})
        return f"{self.public_url}{FILES_PREFIX}{quote(key)}?{query}"

    def key_from_url(self, url: str) -> str | None:
        """The key of a signed URL this store issued, when the signature holds."""
        parsed = urlparse(url)
        if not parsed.path.startswith(FILES_PREFIX):
            return None
        key = unquote(parsed.path[len(FILES_PREFIX):])
        q = parse_qs(parsed.query)
        try:
            expires = int(q["expires"][0])
            sig = q["sig"][0]
        except (KeyError, ValueError, IndexError):
            return None
        return key if self.signer.verify(key, expires, sig) else None


class S3BlobStore:
    def __init__(self, settings: Settings) -> None:
        import boto3

        self.bucket = settings.s3_bucket
        self.client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=_check_key(key),
                                Body=data, ContentType=content_type or "application/octet-stream")
        return key

    async def get(self, key: str) -> Blob:
        try:
            obj = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=_check_key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound(f"no file {key}") from exc
        body = await asyncio.to_thread(obj["Body"].read)
        return Blob(key, body, obj.get("ContentType", "application/octet-stream"))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=_check_key(key))

    def url(self, key: str, ttl_s: int = DEFAULT_TTL_S) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl_s)

    def key_from_url(self, url: str) -> str | None:
        parsed = urlparse(url)
        endpoint = urlparse(self.client.meta.endpoint_url)
        if parsed.netloc != endpoint.netloc:
            return None
        path = unquote(parsed.path.lstrip("/"))
        prefix = f"{self.bucket}/"
        if path.startswith(prefix):
            return path[len(prefix):]
        return None


def signing_secret(settings: Settings) -> str:
    """The configured secret, or one generated once into the data directory."""
    if settings.signing_secret:
        return settings.signing_secret
    path = settings.data_dir / "signing-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # first writer wins, so every service shares one secret
        except FileExistsError:
            pass
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def public_url(settings: Settings) -> str:
    return settings.public_url or f"http://127.0.0.1:{settings.edge_port}"


def open_store(settings: Settings) -> BlobStore:
    if settings.s3_bucket:
        return S3BlobStore(settings)
    return LocalBlobStore(settings.blob_dir(), Signer(signing_secret(settings)), public_url(settings))
