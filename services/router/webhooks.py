"""Webhook delivery: the final status and payload POSTed to the submitter's URL, signed, retried
with exponential backoff for a bounded number of attempts, every attempt recorded.

Targets pass the outbound URL policy (genmesh/outbound.py) at submit and again on every attempt,
and each POST goes to the address that was checked; redirects are never followed. A record tells
the submitter only what its own receiver answered, or "target not allowed" / "delivery failed":
never which address, port or connection error (that would make webhooks a port scanner).

Signature headers (HMAC-SHA256 with the mesh's signing secret):
  X-Genmesh-Request-Id, X-Genmesh-Timestamp,
  X-Genmesh-Signature = hex(hmac(secret, f"{request_id}.{timestamp}.{sha256(body).hex()}"))
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from genmesh.outbound import (NOT_ALLOWED, OutboundPolicy, Target, TargetRefused, TargetUnresolved,
                              pinned_request)
from genmesh.retry import Backoff
from genmesh.services.router.jobs import Job, JobStore

log = logging.getLogger("genmesh.router.webhooks")


def signature(secret: str, request_id: str, timestamp: str, body: bytes) -> str:
    message = f"{request_id}.{timestamp}.{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, headers: dict[str, str], body: bytes, max_age_s: float = 300) -> bool:
    """What a receiver runs: the signature matches and the timestamp is fresh."""
    h = {k.lower(): v for k, v in headers.items()}
    ts = h.get("x-genmesh-timestamp", "")
    try:
        fresh = abs(time.time() - float(ts)) <= max_age_s
    except ValueError:
        return False
    expected = signature(secret, h.get("x-genmesh-request-id", ""), ts, body)
    return fresh and hmac.compare_digest(expected, h.get("x-genmesh-signature", ""))


def payload(job: Job) -> dict[str, Any]:
    """FAL's webhook body: request_id, status OK|ERROR, payload, error."""
    ok = job.status == "COMPLETED"
    return {"request_id": job.id, "gateway_request_id": job.id, "status": "OK" if ok else "ERROR",
            "payload": job.output_json() if ok else None,
            "error": None if ok else (job.error or job.status.lower()),
            "error_type": None if ok else job.error_type, "payload_error": None}


DELIVERY_FAILED = "delivery failed"


class WebhookSender:
    def __init__(self, store: JobStore, secret: str, max_attempts: int, backoff_s: float,
                 policy: OutboundPolicy | None = None) -> None:
        self.store = store
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.policy = policy or OutboundPolicy()
        # No proxies from the environment (they would connect to what was not checked), no
        # redirects (their targets were not checked either).
        self.client = httpx.AsyncClient(timeout=10.0, follow_redirects=False, trust_env=False)
        self._tasks: set[asyncio.Task[None]] = set()

    async def check_target(self, url: str, field: str) -> None:
        """At submit: InvalidArgument naming `field` for a URL that can never be delivered to."""
        await self.policy.check_submitted(url, field)

    def deliver_soon(self, job: Job) -> None:
        task = asyncio.create_task(self.deliver(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, job: Job) -> bool:
        assert job.webhook_url
        body = json.dumps(payload(job)).encode()
        backoff = Backoff(self.backoff_s)
        for attempt in range(1, self.max_attempts + 1):
            ts = f"{time.time():.3f}"
            headers = {"content-type": "application/json", "x-genmesh-request-id": job.id,
                       "x-genmesh-timestamp": ts,
                       "x-genmesh-signature": signature(self.secret, job.id, ts, body)}
            started = time.perf_counter()
            status, error, detail = 0, None, ""
            target: Target | None
            try:
                target = await self.policy.resolve(job.webhook_url)
            except TargetUnresolved as exc:
                target, error, detail = None, DELIVERY_FAILED, str(exc)
            except TargetRefused as exc:
                # Refused now is refused on every attempt: record it once and stop.
                log.warning("webhook target refused", extra={"request_id": job.id, "error": str(exc)})
                await self.store.record_delivery(job.id, attempt, job.webhook_url, 0, NOT_ALLOWED,
                                                 time.perf_counter() - started)
                return False
            if target is not None:
                url, pinned_headers, extensions = pinned_request(target)
                try:
                    resp = await self.client.post(url, content=body, headers={**headers, **pinned_headers},
                                                  extensions=extensions)
                    status = resp.status_code
                    if status >= 300:
                        # A redirect is not followed: its target was never checked.
                        error = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error, detail = DELIVERY_FAILED, f"{type(exc).__name__}: {exc}"
            await self.store.record_delivery(job.id, attempt, job.webhook_url, status, error,
                                             time.perf_counter() - started)
            if error is None:
                return True
            log.info("webhook attempt failed", extra={"request_id": job.id, "attempt": attempt,
                                                      "error": detail or error})
            if attempt < self.max_attempts:
                await backoff.sleep()
        return False

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self.client.aclose()
