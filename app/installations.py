"""Remembering which installations exist and which repositories they cover.

Kept in Redis from `installation` and `installation_repositories` events, so that periodic
work (reconciling runs, rate-limit budgets) knows where to look without asking GitHub.
"""

from __future__ import annotations

import json
from typing import Any

from app.events import Event

INSTALLATION_KEY = "conductor:installation:{id}"
INSTALLATIONS_SET = "conductor:installations"


async def handle_installation(ctx: dict[str, Any], event: Event) -> str:
    installation = event.payload.get("installation")
    if not isinstance(installation, dict) or not isinstance(installation.get("id"), int):
        return "ignored: no installation id"
    redis = ctx["redis"]
    installation_id = installation["id"]
    key = INSTALLATION_KEY.format(id=installation_id)
    action = event.action
    if event.name == "installation" and action == "deleted":
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(INSTALLATIONS_SET, installation_id)
            await pipe.execute()
        return f"installation {installation_id} removed"

    current = await get_installation(redis, installation_id) or {"repositories": []}
    repos = set(current.get("repositories", []))
    if event.name == "installation":
        repos |= _names(event.payload.get("repositories"))
    else:
        repos |= _names(event.payload.get("repositories_added"))
        repos -= _names(event.payload.get("repositories_removed"))
    account = installation.get("account") if isinstance(installation.get("account"), dict) else {}
    record = {
        "id": installation_id,
        "account": (account or {}).get("login"),
        "suspended": action == "suspend" or (current.get("suspended") and action != "unsuspend"),
        "repositories": sorted(repos),
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, json.dumps(record))
        pipe.sadd(INSTALLATIONS_SET, installation_id)
        await pipe.execute()
    return f"installation {installation_id} {action or 'updated'}: {len(repos)} repositories"


def _names(items: Any) -> set[str]:
    if not isinstance(items, list):
        return set()
    return {r["full_name"] for r in items if isinstance(r, dict) and "full_name" in r}


async def get_installation(redis: Any, installation_id: int) -> dict[str, Any] | None:
    raw = await redis.get(INSTALLATION_KEY.format(id=installation_id))
    return json.loads(raw) if raw else None
