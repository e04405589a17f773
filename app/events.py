"""What the worker does with an accepted webhook: dispatch on the route's kind.

Every accepted delivery is appended to a capped event log in Redis (newest first) with the
handler's outcome, so that an operator can see what arrived and what became of it.

The signature covers the body only, so a captured delivery stays valid: sent again with a new
`X-GitHub-Delivery` it would pass the ingress's dedupe (a `/agent retry` run twice, a label
event starting another run). GitHub's own redeliveries keep their delivery id, and two real
events never carry the same payload (ids and timestamps differ), so a payload seen before
under another delivery id is ignored as a replay, for as long as delivery ids are kept.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.constants import DELIVERY_TTL_SECONDS, EVENT_LOG_KEY, PAYLOAD_KEY
from app.logs import get_logger
from app.runs import REPO_ID_KEY, RUN_RETENTION, repo_key

log = get_logger(__name__)

EVENT_LOG_LENGTH = 1000


@dataclass(frozen=True)
class Event:
    delivery_id: str
    name: str
    kind: str
    payload: dict[str, Any]

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None

    @property
    def installation_id(self) -> int | None:
        installation = self.payload.get("installation")
        return installation.get("id") if isinstance(installation, dict) else None

    @property
    def sender(self) -> str | None:
        """The login of whoever caused the event, None when the payload names nobody."""
        sender = self.payload.get("sender")
        login = sender.get("login") if isinstance(sender, dict) else None
        return login if isinstance(login, str) and login else None

    @property
    def repo_full_name(self) -> str | None:
        repository = self.payload.get("repository")
        return repository.get("full_name") if isinstance(repository, dict) else None

    @property
    def repo_id(self) -> int | None:
        repository = self.payload.get("repository")
        repo_id = repository.get("id") if isinstance(repository, dict) else None
        return repo_id if isinstance(repo_id, int) and not isinstance(repo_id, bool) else None

    @property
    def repo_key(self) -> str | None:
        """What the repository's runs are found by (`app.runs.repo_key`), None without one."""
        name = self.repo_full_name
        return repo_key(self.repo_id, name) if isinstance(name, str) else None


Handler = Callable[[dict[str, Any], Event], Awaitable[str]]


async def record(redis: Any, event: Event, outcome: str) -> None:
    entry = json.dumps(
        {
            "delivery": event.delivery_id,
            "event": event.name,
            "action": event.action,
            "kind": event.kind,
            "repo": event.repo_full_name,
            "installation": event.installation_id,
            "outcome": outcome,
            "at": time.time(),
        }
    )
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(EVENT_LOG_KEY, entry)
        pipe.ltrim(EVENT_LOG_KEY, 0, EVENT_LOG_LENGTH - 1)
        if event.repo_id and event.repo_full_name:  # a renamed repository's new name
            pipe.set(REPO_ID_KEY.format(name=event.repo_full_name.lower()), event.repo_id,
                     ex=RUN_RETENTION)
        await pipe.execute()


async def recent_events(redis: Any, count: int = 50) -> list[dict[str, Any]]:
    raw = await redis.lrange(EVENT_LOG_KEY, 0, count - 1)
    return [json.loads(item) for item in raw]


async def first_delivery(redis: Any, event: Event) -> str:
    """The delivery id that first brought this event's payload: its own, unless replayed."""
    try:
        body = orjson.dumps(event.payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits (orjson.JSONEncodeError is a TypeError)
        body = json.dumps(event.payload, sort_keys=True).encode()
    key = PAYLOAD_KEY.format(digest=hashlib.sha256(event.name.encode() + b"\0" + body)
                             .hexdigest())
    if await redis.set(key, event.delivery_id, nx=True, ex=DELIVERY_TTL_SECONDS):
        return event.delivery_id
    first = await redis.get(key)
    return first.decode() if isinstance(first, bytes) else str(first or event.delivery_id)


async def dispatch(ctx: dict[str, Any], event: Event) -> str:
    handlers: dict[str, Handler] = ctx.get("handlers", {})
    handler = handlers.get(event.kind)
    bound = log.bind(delivery=event.delivery_id, github_event=event.name, action=event.action,
                     installation=event.installation_id, repo=event.repo_full_name)
    first = await first_delivery(ctx["redis"], event)
    if first != event.delivery_id:  # the same job run again keeps its delivery id
        outcome = f"ignored: the payload of delivery {first} again, under a new delivery id"
        await record(ctx["redis"], event, outcome)
        bound.warning("webhook replayed", first_delivery=first)
        return outcome
    if handler is None:
        outcome = f"no handler for {event.kind}"
    else:
        outcome = await handler(ctx, event)
    await record(ctx["redis"], event, outcome)
    if handler is None:
        bound.warning("event not handled", kind=event.kind)
    else:
        bound.info("event handled", kind=event.kind, outcome=outcome)
    return outcome
