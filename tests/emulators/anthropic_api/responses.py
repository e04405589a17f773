"""Successful answers, built from the SDK's own types: a `Message`, or its SSE event stream."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from anthropic.types import (
    CacheCreation,
    InputJSONDelta,
    Message,
    MessageDeltaUsage,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
    Usage,
)
from anthropic.types.raw_message_delta_event import Delta
from pydantic import BaseModel

from .cache import CacheAccounting
from .ids import new_id
from .script import Answer
from .tokenizer import CHARS_PER_TOKEN, output_tokens

STREAM_CHUNK_CHARS = 24


def _content(answer: Answer) -> list[TextBlock | ToolUseBlock]:
    blocks: list[TextBlock | ToolUseBlock] = []
    if answer.text is not None:
        blocks.append(TextBlock(type="text", text=answer.text))
    for tool in answer.tool_uses:
        blocks.append(
            ToolUseBlock(
                type="tool_use",
                id=tool.id or new_id("toolu"),
                name=tool.name,
                input=dict(tool.input),
            )
        )
    return blocks


def _stop(
    answer: Answer, max_tokens: int, stop_sequences: Sequence[str]
) -> tuple[list[TextBlock | ToolUseBlock], str, str | None]:
    """Generated content after applying stop sequences and max_tokens, the stop reason and
    the stop sequence hit (if any)."""
    blocks = _content(answer)
    if answer.stop_reason is not None:
        return blocks, answer.stop_reason, None
    text = answer.text or ""
    hits = [(text.find(sequence), sequence) for sequence in stop_sequences if sequence in text]
    if hits:
        cut, sequence = min(hits)
        return [TextBlock(type="text", text=text[:cut])], "stop_sequence", sequence
    dumped = [block.model_dump() for block in blocks]
    if output_tokens(dumped) > max_tokens:
        kept = text[: max_tokens * CHARS_PER_TOKEN]
        return ([TextBlock(type="text", text=kept)] if kept else []), "max_tokens", None
    return blocks, ("tool_use" if answer.tool_uses else "end_turn"), None


def build_message(
    *,
    model: str,
    answer: Answer,
    max_tokens: int,
    stop_sequences: Sequence[str],
    accounting: CacheAccounting,
) -> Message:
    content, stop_reason, stop_sequence = _stop(answer, max_tokens, stop_sequences)
    usage = Usage(
        input_tokens=accounting.input_tokens,
        output_tokens=output_tokens(block.model_dump() for block in content),
        cache_creation_input_tokens=accounting.cache_creation_input_tokens,
        cache_read_input_tokens=accounting.cache_read_input_tokens,
        cache_creation=CacheCreation(
            ephemeral_5m_input_tokens=accounting.ephemeral_5m_input_tokens,
            ephemeral_1h_input_tokens=accounting.ephemeral_1h_input_tokens,
        ),
        service_tier="standard",
    )
    if answer.usage:
        usage = usage.model_copy(update=dict(answer.usage))
    return Message(
        id=new_id("msg"),
        type="message",
        role="assistant",
        model=model,
        content=list(content),
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=usage,
    )


def _sse(event: BaseModel | dict[str, Any], name: str) -> str:
    data = event if isinstance(event, dict) else event.model_dump(mode="json")
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _chunks(text: str) -> list[str]:
    return [text[i : i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]


def stream_events(message: Message) -> Iterator[str]:
    """The SSE events the real API sends for `message`, in order."""
    usage = message.usage
    start_usage = usage.model_copy(update={"output_tokens": min(usage.output_tokens, 1)})
    opening = message.model_copy(
        update={"content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    )
    yield _sse(RawMessageStartEvent(type="message_start", message=opening), "message_start")
    yield _sse({"type": "ping"}, "ping")
    for index, block in enumerate(message.content):
        if isinstance(block, TextBlock):
            first: TextBlock | ToolUseBlock = TextBlock(type="text", text="")
            deltas: list[TextDelta | InputJSONDelta] = [
                TextDelta(type="text_delta", text=piece) for piece in _chunks(block.text)
            ]
        elif isinstance(block, ToolUseBlock):
            first = ToolUseBlock(type="tool_use", id=block.id, name=block.name, input={})
            deltas = [InputJSONDelta(type="input_json_delta", partial_json="")]
            deltas += [
                InputJSONDelta(type="input_json_delta", partial_json=piece)
                for piece in _chunks(json.dumps(block.input))
            ]
        else:  # pragma: no cover - the stand-in only generates text and tool_use
            continue
        start = RawContentBlockStartEvent(
            type="content_block_start", index=index, content_block=first
        )
        yield _sse(start, "content_block_start")
        for delta in deltas:
            event = RawContentBlockDeltaEvent(type="content_block_delta", index=index, delta=delta)
            yield _sse(event, "content_block_delta")
        yield _sse(
            RawContentBlockStopEvent(type="content_block_stop", index=index), "content_block_stop"
        )
    closing = RawMessageDeltaEvent(
        type="message_delta",
        delta=Delta(stop_reason=message.stop_reason, stop_sequence=message.stop_sequence),
        usage=MessageDeltaUsage(
            output_tokens=usage.output_tokens,
            input_tokens=usage.input_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
        ),
    )
    yield _sse(closing, "message_delta")
    yield _sse(RawMessageStopEvent(type="message_stop"), "message_stop")
