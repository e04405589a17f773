"""Each model call's whole request, kept in parts in Redis so that `conductor replay` can
send it again.

The trace records a call's request sanitised and clipped (the last message, hashes of the
system blocks): enough to read, not to send. So the whole request is kept as well: every
system block, the tool definitions and every message is one Redis value, named by the
SHA-256 of its JSON and compressed (LZ4). A step's conversation repeats its earlier messages
in every call; stored by content, each is kept once. The call's ledger entry names its parts
(`request["parts"]`). Parts expire after `CONDUCTOR_REPLAY_DAYS` (14; 0 keeps none), and every
string in them has passed the redactor first, as the trace's have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lz4.block
import orjson
from redis.asyncio import Redis

from app.logs import redactor

if TYPE_CHECKING:
    from app.models import ModelRequest

PART_KEY = "conductor:request-part:{digest}"


def _part(value: Any) -> tuple[str, bytes]:
    data = orjson.dumps(redactor.scrub_value(value), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest(), lz4.block.compress(data)


async def keep_request(redis: Redis, request: ModelRequest, days: int) -> dict[str, Any] | None:
    """Store `request` in parts for `days`; what the call's record names them by (None when
    nothing is kept)."""
    if days <= 0:
        return None
    ttl = days * 24 * 3600
    system = [_part(block) for block in request.system_blocks()]
    tools = _part(list(request.tools)) if request.tools else None
    messages = [_part(message) for message in request.messages]
    parts = {PART_KEY.format(digest=digest): data
             for digest, data in [*system, *([tools] if tools else []), *messages]}
    # Parts kept already (the conversation's earlier messages, the role's system prompt) only
    # have their time extended; only the new ones are sent.
    async with redis.pipeline(transaction=False) as pipe:
        for key in parts:
            pipe.expire(key, ttl)
        extended = await pipe.execute()
    missing = [key for key, found in zip(parts, extended, strict=True) if not found]
    if missing:
        async with redis.pipeline(transaction=False) as pipe:
            for key in missing:
                pipe.set(key, parts[key], ex=ttl)
            await pipe.execute()
    return {
        "system": [digest for digest, _ in system],
        "tools": tools[0] if tools else None,
        "messages": [digest for digest, _ in messages],
        "tool_choice": dict(request.tool_choice) if request.tool_choice else None,
        "stable_system_blocks": request.stable_system_blocks,
        "cache": request.cache,
        "cache_ttl": request.cache_ttl,
    }


async def restore_request(redis: Redis, recorded: Mapping[str, Any]) -> dict[str, Any] | None:
    """`ModelRequest` arguments for the call whose sanitised request is `recorded`; None if
    its request was not kept or has expired."""
    parts = recorded.get("parts")
    if not isinstance(parts, dict):
        return None
    digests = [*parts["system"], *([parts["tools"]] if parts.get("tools") else []),
               *parts["messages"]]
    raw = await redis.mget([PART_KEY.format(digest=d) for d in digests]) if digests else []
    if any(value is None for value in raw):
        return None
    values = [orjson.loads(lz4.block.decompress(value)) for value in raw]
    system = values[:len(parts["system"])]
    rest = values[len(parts["system"]):]
    tools = rest.pop(0) if parts.get("tools") else []
    return {"model": recorded["model"], "messages": rest,
            "max_tokens": int(recorded["max_tokens"]), "system": system, "tools": tools,
            "tool_choice": parts.get("tool_choice"),
            "stable_system_blocks": parts.get("stable_system_blocks"),
            "cache": bool(parts.get("cache", True)), "cache_ttl": parts.get("cache_ttl") or "5m"}
