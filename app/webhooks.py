"""`POST /api/github/webhooks`: verify, dedupe, route, enqueue, answer. No GitHub or model I/O.

The order matters: the body is read with a cap, then the signature is checked on the raw bytes
before anything in the request is believed. An accepted delivery costs at most one Redis round
trip, shared with the deliveries that arrive meanwhile (see `app.enqueue`), and one log call.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from app.constants import MAX_WEBHOOK_BYTES
from app.enqueue import delivery_queue
from app.logs import get_logger
from app.routing import Identity, route

log = get_logger(__name__)

# Seconds a delivery waits for Redis to store it before the answer is 503 (GitHub waits 10).
QUEUE_WAIT = 5.0


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


def parse_json(body: bytes) -> tuple[Any, bool]:
    """The JSON value in `body`, and whether orjson read it; ValueError if it is not JSON.

    orjson reads what GitHub sends several times faster than the standard library, but is
    stricter: it refuses escaped lone surrogates (`"\\ud800"`, which a truncated emoji
    leaves), `NaN`/`Infinity`, numbers beyond a double, byte-order marks and UTF-16/32. Those
    bodies go to the standard library, so that everything accepted before is still accepted, and
    read the same way. One difference remains: orjson reads an integer beyond 64 bits as a
    float, where the standard library keeps it exact; GitHub's ids and counts are far smaller.
    """
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body), False  # its errors, UnicodeDecodeError too, are ValueErrors
    except RecursionError as exc:  # absurdly deep nesting
        raise ValueError(str(exc)) from None


class WebhookAnswer(JSONResponse):
    """A JSON answer that any value from a payload can go into.

    Rendered by orjson (a tenth of the standard library's time); what orjson refuses (a lone
    surrogate in a label name, an integer beyond 64 bits) is written by the standard library
    with non-ASCII escaped, where Starlette's `JSONResponse` would fail to encode it: a 500.
    """

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # orjson.JSONEncodeError is one
            return json.dumps(content, separators=(",", ":")).encode()


def _answer(status: int, **body: Any) -> WebhookAnswer:
    return WebhookAnswer(body, status_code=status)


async def receive_webhook(request: Request) -> WebhookAnswer:
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
        payload, strict = parse_json(body)
    except ValueError:
        return _answer(400, error="body is not JSON", delivery=delivery)
    if not isinstance(payload, dict):
        return _answer(400, error="body is not a JSON object", delivery=delivery)

    installation = payload.get("installation")
    repository = payload.get("repository")
    # One log call per outcome, with every field (binding first costs a logger per request).
    # "event" is structlog's key for the message, so the GitHub event goes under github_event.
    fields: dict[str, Any] = {
        "delivery": delivery,
        "github_event": event,
        "action": payload.get("action"),
        "installation": installation.get("id") if isinstance(installation, dict) else None,
        "repo": repository.get("full_name") if isinstance(repository, dict) else None,
    }

    if event == "ping":
        log.info("webhook ping", **fields)
        return _answer(200, ok=True, delivery=delivery, zen=payload.get("zen"))

    decision = route(event, payload, identity)
    if decision.kind is None:
        log.info("webhook ignored", reason=decision.ignored, **fields)
        return _answer(202, ignored=decision.ignored, delivery=delivery)

    try:
        # A Redis that stopped answering (stalled, or its host gone) must not hold the request
        # past GitHub's 10 s: a 503 says to redeliver. Should the delivery have been stored
        # after all, the redelivery is answered as a duplicate of it.
        async with asyncio.timeout(QUEUE_WAIT):
            # The job carries the body itself when orjson reads it as `payload` (cheaper).
            accepted = await delivery_queue(request.state.redis).accept(
                delivery, event, decision.kind, payload, body=body if strict else None
            )
    except (RedisError, TimeoutError) as exc:
        log.error("webhook not queued", error=str(exc) or "Redis did not answer in time",
                  **fields)
        return _answer(503, error="queue unavailable; redeliver this webhook later",
                       delivery=delivery)
    if not accepted:
        log.info("webhook duplicate", **fields)
        return _answer(202, duplicate=True, delivery=delivery)

    log.info("webhook accepted", kind=decision.kind, **fields)
    return _answer(202, accepted=True, delivery=delivery, kind=decision.kind)
