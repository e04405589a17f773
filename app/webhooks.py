"""`POST /api/github/webhooks`: verify, dedupe, route, enqueue, answer. No GitHub or model I/O.

The order matters: the body is read with a cap, then the signature is checked on the raw bytes
before anything in the request is believed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from app.constants import (
    DELIVERY_KEY,
    DELIVERY_TTL_SECONDS,
    MAX_WEBHOOK_BYTES,
    Job,
    event_job_id,
)
from app.logs import get_logger
from app.routing import Identity, route

log = get_logger(__name__)


class BodyTooLarge(Exception):
    pass


def signature_for(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(signature_for(secret, body).encode(), header.strip().encode())


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status)


async def receive_webhook(request: Request) -> JSONResponse:
    secret: bytes = request.state.webhook_secret
    identity: Identity = request.state.identity
    limit: int = getattr(request.state, "max_webhook_bytes", MAX_WEBHOOK_BYTES)

    try:
        body = await read_body(request, limit)
    except BodyTooLarge:
        return _answer(413, error=f"payload larger than {limit} bytes")
    except ClientDisconnect:
        return _answer(400, error="client disconnected before sending the whole body")

    if not signature_matches(secret, body, request.headers.get("x-hub-signature-256")):
        log.warning("webhook signature mismatch", delivery=request.headers.get("x-github-delivery"))
        return _answer(
            401,
            error="X-Hub-Signature-256 is missing or does not match; check that "
            "GITHUB_WEBHOOK_SECRET is the webhook secret configured on the GitHub App",
        )

    event = request.headers.get("x-github-event", "").strip()
    delivery = request.headers.get("x-github-delivery", "").strip()
    if not event or not delivery:
        return _answer(400, error="X-GitHub-Event and X-GitHub-Delivery headers are required")
    if len(delivery) > 100 or not delivery.isprintable():
        return _answer(400, error="X-GitHub-Delivery is not a delivery id")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return _answer(400, error="body is not JSON", delivery=delivery)
    if not isinstance(payload, dict):
        return _answer(400, error="body is not a JSON object", delivery=delivery)

    bound = log.bind(
        delivery=delivery,
        event=event,
        action=payload.get("action"),
        installation=(payload.get("installation") or {}).get("id")
        if isinstance(payload.get("installation"), dict)
        else None,
        repo=(payload.get("repository") or {}).get("full_name")
        if isinstance(payload.get("repository"), dict)
        else None,
    )

    if event == "ping":
        bound.info("webhook ping")
        return _answer(200, ok=True, delivery=delivery, zen=payload.get("zen"))

    decision = route(event, payload, identity)
    if not decision.accepted:
        bound.info("webhook ignored", reason=decision.ignored)
        return _answer(202, ignored=decision.ignored, delivery=delivery)

    redis = request.state.redis
    key = DELIVERY_KEY.format(delivery_id=delivery)
    try:
        first = await redis.set(key, event, nx=True, ex=DELIVERY_TTL_SECONDS)
        if not first:
            bound.info("webhook duplicate")
            return _answer(202, duplicate=True, delivery=delivery)
        try:
            await redis.enqueue_job(
                Job.HANDLE_EVENT,
                delivery,
                event,
                decision.kind,
                payload,
                _job_id=event_job_id(delivery),
            )
        except BaseException:
            # Forget the delivery so that a redelivery is not mistaken for a duplicate.
            await redis.delete(key)
            raise
    except RedisError as exc:
        bound.error("webhook not queued", error=str(exc))
        return _answer(503, error="queue unavailable; redeliver this webhook later",
                       delivery=delivery)

    bound.info("webhook accepted", kind=decision.kind)
    return _answer(202, accepted=True, delivery=delivery, kind=decision.kind)
