"""What the worker does with an accepted webhook: dispatch on the route's kind.

Every accepted delivery is appended to a capped event log in Redis (newest first) with the
handler's outcome, so that an operator can see what arrived and what became of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.constants import EVENT_LOG_KEY
from app.logs import get_logger

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
    def repo_full_name(self) -> str | None:
        repository = self.payload.get("repository")
        return repository.get("full_name") if isinstance(repository, dict) else None


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
        await pipe.execute()


async def recent_events(redis: Any, count: int = 50) -> list[dict[str, Any]]:
    raw = await redis.lrange(EVENT_LOG_KEY, 0, count - 1)
    return [json.loads(item) for item in raw]


async def dispatch(ctx: dict[str, Any], event: Event) -> str:
    handlers: dict[str, Handler] = ctx.get("handlers", {})
    handler = handlers.get(event.kind)
    bound = log.bind(delivery=event.delivery_id, github_event=event.name, action=event.action,
                     installation=event.installation_id, repo=event.repo_full_name)
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
