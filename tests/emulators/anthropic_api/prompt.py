"""The prompt as the prompt cache sees it: an ordered list of units (tools, system, messages).

Each unit is one cacheable block with its token count and the hash of the whole prefix up to
and including it. A unit that carries a `cache_control` breakpoint records the breakpoint's TTL.
The body handed in has already been validated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .tokenizer import (
    REQUEST_OVERHEAD_TOKENS,
    TURN_OVERHEAD_TOKENS,
    block_tokens,
    canonical_json,
    tool_definition_tokens,
    without_cache_control,
)


@dataclass(frozen=True)
class PromptUnit:
    path: str
    """Where the block sits in the request, e.g. `tools.0`, `system.1`, `messages.2.content.0`."""
    tokens: int
    digest: str
    """Hash of the prefix up to and including this unit (model-independent)."""
    cache_ttl: str | None
    """`"5m"` or `"1h"` when this block carries a cache_control breakpoint, else None."""


def as_blocks(content: Any) -> list[dict[str, Any]]:
    """Message or system content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [dict(block) for block in content]


@dataclass
class Turn:
    """Consecutive messages of one role, merged as the real API merges them."""

    role: str
    blocks: list[tuple[str, dict[str, Any]]]
    """(path, block) pairs; the path names the block in the original request."""
    first_index: int


def merge_turns(messages: Sequence[Mapping[str, Any]]) -> list[Turn]:
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        role = str(message["role"])
        blocks = [
            (f"messages.{index}.content.{position}", block)
            for position, block in enumerate(as_blocks(message["content"]))
        ]
        if turns and turns[-1].role == role:
            turns[-1].blocks.extend(blocks)
        else:
            turns.append(Turn(role=role, blocks=blocks, first_index=index))
    return turns


def _ttl(block: Mapping[str, Any]) -> str | None:
    marker = block.get("cache_control")
    if not isinstance(marker, Mapping):
        return None
    return str(marker.get("ttl", "5m"))


def prompt_units(body: Mapping[str, Any]) -> list[PromptUnit]:
    """The request's prompt in cache order: tools, then system, then messages."""
    pending: list[tuple[str, int, str, str | None]] = []  # path, tokens, material, ttl

    for index, tool in enumerate(body.get("tools") or []):
        material = canonical_json(["tool", without_cache_control(tool)])
        pending.append((f"tools.{index}", tool_definition_tokens(tool), material, _ttl(tool)))

    system = body.get("system")
    if system:
        for index, block in enumerate(as_blocks(system)):
            material = canonical_json(["system", without_cache_control(block)])
            pending.append((f"system.{index}", block_tokens(block), material, _ttl(block)))

    # Changing tool_choice or thinking invalidates the cached messages (but not tools/system).
    settings = {"tool_choice": body.get("tool_choice"), "thinking": body.get("thinking")}
    first_message_unit = True
    for turn in merge_turns(body["messages"]):
        overhead = TURN_OVERHEAD_TOKENS
        for path, block in turn.blocks:
            head: list[Any] = [turn.role, overhead > 0]
            if first_message_unit:
                head.append(settings)
                first_message_unit = False
            material = canonical_json([*head, without_cache_control(block)])
            pending.append((path, overhead + block_tokens(block), material, _ttl(block)))
            overhead = 0

    automatic = body.get("cache_control")
    if isinstance(automatic, Mapping) and pending:
        path, tokens, material, ttl = pending[-1]
        pending[-1] = (path, tokens, material, ttl or str(automatic.get("ttl", "5m")))

    units: list[PromptUnit] = []
    running = hashlib.sha256(b"anthropic-prompt")
    for position, (path, tokens, material, ttl) in enumerate(pending):
        running.update(material.encode())
        running.update(b"\x00")
        extra = REQUEST_OVERHEAD_TOKENS if position == 0 else 0
        units.append(PromptUnit(path, tokens + extra, running.hexdigest(), ttl))
    return units


def input_tokens(body: Mapping[str, Any]) -> int:
    """Total prompt tokens, ignoring caching (what `count_tokens` answers)."""
    return sum(unit.tokens for unit in prompt_units(body))
