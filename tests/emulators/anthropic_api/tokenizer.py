"""A deterministic stand-in for the model tokenizer.

Roughly four characters per token: plain text counts its characters, every other block counts
the characters of its canonical JSON rendering (sorted keys, no spaces, `cache_control`
removed, since a breakpoint marker is not prompt content). Images count a flat amount. The same
functions price the prompt for `count_tokens`, for `usage` and for the prompt cache, so the
numbers always agree with each other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

CHARS_PER_TOKEN = 4
REQUEST_OVERHEAD_TOKENS = 3
"""Added once per request (the first prompt unit carries it)."""
TURN_OVERHEAD_TOKENS = 4
"""Added once per conversation turn (role markers); consecutive same-role messages are one turn."""
TOOL_RESULT_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 1600


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def without_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in block.items() if key != "cache_control"}


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def block_tokens(block: Mapping[str, Any]) -> int:
    """Tokens for one input content block (message content or system block)."""
    kind = block.get("type")
    if kind == "text":
        return text_tokens(str(block.get("text", "")))
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "tool_use":
        return text_tokens(canonical_json({"name": block.get("name"), "input": block.get("input")}))
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            inner = text_tokens(content)
        else:
            inner = sum(block_tokens(item) for item in content if isinstance(item, Mapping))
        return TOOL_RESULT_OVERHEAD_TOKENS + inner
    return text_tokens(canonical_json(without_cache_control(block)))


def tool_definition_tokens(tool: Mapping[str, Any]) -> int:
    return text_tokens(canonical_json(without_cache_control(tool)))


def output_tokens(blocks: Iterable[Mapping[str, Any]]) -> int:
    """Tokens for the generated content (text and tool_use blocks)."""
    return sum(block_tokens(block) for block in blocks)
