"""The Anthropic Messages API stand-in, driven by the real `anthropic` SDK over loopback."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx
import pytest
from anthropic import Omit
from anthropic.types import (
    CacheControlEphemeralParam,
    Message,
    MessageParam,
    TextBlock,
    TextBlockParam,
    ToolParam,
    ToolUseBlock,
)

from tests.emulators.anthropic_api import (
    MODELS,
    Answer,
    AnthropicServer,
    AnthropicStandIn,
    Match,
    Rule,
    ScriptRequest,
    ToolUse,
    fault,
    input_tokens,
    reply,
    use_tool,
)

API_KEY = "sk-ant-stand-in-test-key"
MODEL = "claude-sonnet-5-5"
HI: list[MessageParam] = [{"role": "user", "content": "Hello"}]
LONG_SYSTEM = "You are Conductor's planner. Follow the house rules carefully. " * 80  # ~1280 tok
READ_FILE: ToolParam = {
    "name": "read_file",
    "description": "Read a file from the repository.",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer(AnthropicStandIn(api_key=API_KEY)) as running:
        yield running


@pytest.fixture
def stand_in(server: AnthropicServer) -> AnthropicStandIn:
    server.stand_in.reset()
    return server.stand_in


@pytest.fixture(scope="module")
def shared_client(server: AnthropicServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def client(shared_client: anthropic.Anthropic, stand_in: AnthropicStandIn) -> anthropic.Anthropic:
    return shared_client


@pytest.fixture
async def aclient(
    server: AnthropicServer, stand_in: AnthropicStandIn
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": HI}
    body.update(overrides)
    return body


def _cached_system(
    text: str = LONG_SYSTEM, ttl: Literal["5m", "1h"] | None = None
) -> list[TextBlockParam]:
    marker: CacheControlEphemeralParam = {"type": "ephemeral"}
    if ttl:
        marker["ttl"] = ttl
    return [{"type": "text", "text": text, "cache_control": marker}]


# -- plain answers -------------------------------------------------------------------------


def test_text_answer_is_a_message_with_usage(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("Plan: fix the bug.")])

    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=256, messages=HI)
    message = raw.parse()

    assert raw.headers["request-id"].startswith("req_01")
    assert isinstance(message, Message)
    assert message.id.startswith("msg_01")
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.content == [TextBlock(type="text", text="Plan: fix the bug.")]
    assert message.usage.input_tokens == input_tokens(_body())
    assert message.usage.output_tokens == math.ceil(len("Plan: fix the bug.") / 4)
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    [exchange] = stand_in.requests
    assert (exchange.status, exchange.rule, exchange.body["messages"]) == (200, "rules.0", HI)


async def test_async_client_gets_the_scripted_answer(
    aclient: anthropic.AsyncAnthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("async hello", name="greeting")])

    message = await aclient.messages.create(model="claude-haiku-5-5", max_tokens=50, messages=HI)

    assert message.content[0] == TextBlock(type="text", text="async hello")
    assert stand_in.requests[0].rule == "greeting"


def test_request_log_redacts_the_key(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])

    client.messages.create(model=MODEL, max_tokens=10, messages=HI)

    [exchange] = stand_in.requests
    assert exchange.headers["authorization"] == "Bearer <redacted>"
    assert API_KEY not in json.dumps(exchange.to_json())


def test_x_api_key_header_is_accepted(server: AnthropicServer, stand_in: AnthropicStandIn) -> None:
    stand_in.script([reply("ok")])
    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}

    response = httpx.post(f"{server.url}/v1/messages", headers=headers, json=_body())

    assert response.status_code == 200
    assert Message.model_validate(response.json()).content[0] == TextBlock(type="text", text="ok")
    assert stand_in.requests[0].headers["x-api-key"] == "<redacted>"


def test_auth_token_client_is_accepted(server: AnthropicServer, stand_in: AnthropicStandIn) -> None:
    stand_in.script([reply("ok")])

    with anthropic.Anthropic(base_url=server.url, auth_token=API_KEY, max_retries=0) as sdk:
        message = sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert message.stop_reason == "end_turn"


# -- tools ---------------------------------------------------------------------------------


async def test_tool_use_round_trips_through_a_tool_result(
    aclient: anthropic.AsyncAnthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script(
        [
            use_tool("read_file", {"path": "README.md"}, match=Match(user="Summarise"), times=1),
            reply("The README is short.", match=Match(user="# Conductor")),
        ]
    )
    question: MessageParam = {"role": "user", "content": "Summarise the README"}

    first = await aclient.messages.create(
        model=MODEL, max_tokens=256, tools=[READ_FILE], messages=[question]
    )
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert isinstance(call, ToolUseBlock)
    assert call.id.startswith("toolu_01")
    assert (call.name, call.input) == ("read_file", {"path": "README.md"})

    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "# Conductor"}],
    }
    second = await aclient.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[READ_FILE],
        messages=[question, first.to_param(), result],
    )

    assert second.content == [TextBlock(type="text", text="The README is short.")]
    assert [exchange.rule for exchange in stand_in.requests] == ["rules.0", "rules.1"]


def test_consecutive_same_role_messages_are_allowed(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("merged", match=Match(user="second part"))])
    messages: list[MessageParam] = [
        {"role": "user", "content": "first part"},
        {"role": "user", "content": "second part"},
    ]

    message = client.messages.create(model=MODEL, max_tokens=10, messages=messages)

    assert message.content[0] == TextBlock(type="text", text="merged")


def test_scripted_tool_the_request_does_not_offer_fails_loudly(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([use_tool("delete_repo", {})])

    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, tools=[READ_FILE], messages=HI)

    assert "delete_repo" in str(caught.value.api_message)


# -- rejections ----------------------------------------------------------------------------

_TOOL_USE_TURN: MessageParam = {
    "role": "assistant",
    "content": [{"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {}}],
}

REJECTED_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "missing max_tokens": ({"model": MODEL, "messages": HI}, "max_tokens: Field required"),
    "max_tokens above the model limit": (
        _body(model="claude-opus-5-5", max_tokens=MODELS["claude-opus-5-5"].max_output_tokens + 1),
        "maximum allowed number of output tokens",
    ),
    "empty messages": (_body(messages=[]), "at least one message"),
    "first message not user": (
        _body(messages=[{"role": "assistant", "content": "Hi"}, *HI]),
        'first message must use the "user" role',
    ),
    "unknown top-level field": (_body(temperature=0.2), "temperature: Extra inputs"),
    "tool_use without tool_result": (
        _body(
            tools=[READ_FILE],
            messages=[*HI, _TOOL_USE_TURN, {"role": "user", "content": "go on"}],
        ),
        "without `tool_result` blocks immediately after: toolu_01A",
    ),
    "tool_result without tool_use": (
        _body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01Z", "content": "x"}
                    ],
                }
            ]
        ),
        "unexpected `tool_use_id` found in `tool_result` blocks: toolu_01Z",
    ),
    "tool_result answering another id": (
        _body(
            tools=[READ_FILE],
            messages=[
                *HI,
                _TOOL_USE_TURN,
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a"},
                        {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "b"},
                    ],
                },
            ],
        ),
        "toolu_01B",
    ),
    "text before the tool_result": (
        _body(
            tools=[READ_FILE],
            messages=[
                *HI,
                _TOOL_USE_TURN,
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Here is the file."},
                        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a"},
                    ],
                },
            ],
        ),
        "Did not find 1 tool_result block(s) at the beginning of this message",
    ),
    "two tool_results for one tool_use": (
        _body(
            tools=[READ_FILE],
            messages=[
                *HI,
                _TOOL_USE_TURN,
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a"},
                        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "b"},
                    ],
                },
            ],
        ),
        "each tool_use must have a single result",
    ),
    "five cache breakpoints": (
        _body(
            system=[
                {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
                for i in range(5)
            ]
        ),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    "1h breakpoint after a 5m one": (
        _body(
            system=[
                {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            ]
        ),
        "ttl='1h'",
    ),
    "input_schema not an object schema": (
        _body(tools=[{**READ_FILE, "input_schema": {"type": "array"}}]),
        "tools.0.custom.input_schema.type: Input should be 'object'",
    ),
    "input_schema with a bad type name": (
        _body(
            tools=[
                {
                    **READ_FILE,
                    "input_schema": {"type": "object", "properties": {"p": {"type": "strnig"}}},
                }
            ]
        ),
        "JSON schema is invalid",
    ),
    "input_schema with required not a list": (
        _body(tools=[{**READ_FILE, "input_schema": {"type": "object", "required": "path"}}]),
        "JSON schema is invalid",
    ),
    "tool_choice naming an unknown tool": (
        _body(tools=[READ_FILE], tool_choice={"type": "tool", "name": "write_file"}),
        "Tool 'write_file' not found",
    ),
    "duplicate tool names": (_body(tools=[READ_FILE, READ_FILE]), "Tool names must be unique"),
}


@pytest.mark.parametrize("case", sorted(REJECTED_BODIES))
def test_invalid_requests_are_rejected_like_the_api(
    case: str, client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    body, expected = REJECTED_BODIES[case]
    stand_in.script([reply("should not be reached")])

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages", cast_to=Message, body=body, options={"timeout": 30})

    error = caught.value
    assert error.type == "invalid_request_error"
    assert expected in str(error.api_message)
    assert error.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": error.api_message},
        "request_id": error.request_id,
    }
    assert stand_in.calls == 0  # rejected before the script was consulted
    assert stand_in.requests[0].error_type == "invalid_request_error"


def test_sdk_create_with_too_many_max_tokens_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="32001 > 32000"):
        client.messages.create(model="claude-opus-5-5", max_tokens=32_001, messages=HI, timeout=30)


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-nonexistent-9", max_tokens=10, messages=HI)

    assert caught.value.type == "not_found_error"
    assert caught.value.api_message == "model: claude-nonexistent-9"


def test_wrong_api_key_is_an_authentication_error(server: AnthropicServer) -> None:
    with (
        anthropic.Anthropic(base_url=server.url, api_key="sk-wrong", max_retries=0) as sdk,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert caught.value.type == "authentication_error"


def test_missing_api_key_is_an_authentication_error(server: AnthropicServer) -> None:
    with (
        anthropic.Anthropic(base_url=server.url, max_retries=0) as sdk,
        pytest.raises(anthropic.AuthenticationError, match="x-api-key header is required"),
    ):
        sdk.messages.create(
            model=MODEL, max_tokens=10, messages=HI, extra_headers={"Authorization": Omit()}
        )


def test_missing_version_header_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="anthropic-version: header is required"):
        client.messages.create(
            model=MODEL, max_tokens=10, messages=HI, extra_headers={"anthropic-version": Omit()}
        )


def test_unmatched_request_fails_loudly_without_retries(
    server: AnthropicServer, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("only for planners", match=Match(system="planner"))])

    with (
        anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=2) as sdk,
        pytest.raises(anthropic.InternalServerError, match="no script rule matched") as caught,
    ):
        sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert caught.value.type == "api_error"
    assert "'Hello'" in str(caught.value.api_message)
    assert [(exchange.status, exchange.rule) for exchange in stand_in.requests] == [(500, None)]


# -- faults, retries, delays ---------------------------------------------------------------


def test_sdk_retries_overloaded_twice_then_succeeds(
    server: AnthropicServer, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([fault("overloaded", retry_after=0.01, times=2), reply("third time lucky")])

    with anthropic.Anthropic(base_url=server.url, api_key=API_KEY, max_retries=2) as sdk:
        message = sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert message.content[0] == TextBlock(type="text", text="third time lucky")
    log = stand_in.message_requests()
    assert [exchange.status for exchange in log] == [529, 529, 200]
    assert [exchange.error_type for exchange in log] == [
        "overloaded_error",
        "overloaded_error",
        None,
    ]
    assert [exchange.headers["x-stainless-retry-count"] for exchange in log] == ["0", "1", "2"]


async def test_overloaded_beyond_max_retries_raises(
    aclient: anthropic.AsyncAnthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([fault("overloaded")])

    with pytest.raises(anthropic.OverloadedError) as caught:
        await aclient.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert caught.value.type == "overloaded_error"
    assert len(stand_in.requests) == 1


async def test_rate_limit_retry_after_is_honoured(
    server: AnthropicServer, stand_in: AnthropicStandIn
) -> None:
    # The SDK's own backoff for a first retry is at most 0.5 s; a longer wait proves it
    # followed the retry-after header.
    stand_in.script([fault("rate_limit", retry_after=0.8, times=1), reply("after the wait")])

    async with anthropic.AsyncAnthropic(base_url=server.url, api_key=API_KEY, max_retries=1) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert message.content[0] == TextBlock(type="text", text="after the wait")
    first, second = stand_in.requests
    assert (first.status, first.error_type) == (429, "rate_limit_error")
    assert first.response_headers["retry-after"] == "0.8"
    assert second.at - first.at >= 0.8


def test_rate_limit_without_retries_exposes_retry_after(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([fault("rate_limit", retry_after=30)])

    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=HI)

    assert caught.value.response.headers["retry-after"] == "30"


async def test_delay_is_applied_before_answering(
    server: AnthropicServer, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("slow", delay=0.5)])

    async with anthropic.AsyncAnthropic(
        base_url=server.url, api_key=API_KEY, max_retries=0, timeout=0.1
    ) as sdk:
        with pytest.raises(anthropic.APITimeoutError):
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=HI)

    [exchange] = stand_in.requests
    assert (exchange.status, exchange.delay) == (200, 0.5)


async def test_concurrent_requests_are_all_recorded(
    aclient: anthropic.AsyncAnthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([lambda request: f"call {request.call}"])

    answers = await asyncio.gather(
        *(aclient.messages.create(model=MODEL, max_tokens=10, messages=HI) for _ in range(8))
    )

    texts = sorted(
        block.text for answer in answers for block in answer.content if block.type == "text"
    )
    assert texts == sorted(f"call {n}" for n in range(1, 9))
    assert len(stand_in.requests) == 8


# -- scripts -------------------------------------------------------------------------------


def test_rules_match_on_system_tool_model_and_call_number(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script(
        [
            reply("reviewer", match=Match(system_regex=r"^You review")),
            reply("tool user", match=Match(tool="read_file")),
            reply("haiku", match=Match(model="claude-haiku-5-5")),
            reply("fourth", match=Match(call=4)),
            reply("anything else"),
        ]
    )

    def ask(**extra: Any) -> str:
        params: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": HI, **extra}
        block = client.messages.create(**params).content[0]
        assert isinstance(block, TextBlock)
        return block.text

    assert ask(system="You review diffs.") == "reviewer"
    assert ask(tools=[READ_FILE]) == "tool user"
    assert ask(model="claude-haiku-5-5") == "haiku"
    assert ask() == "fourth"
    assert ask() == "anything else"


def test_callable_rule_can_pass_and_answer(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    def only_odd_calls(request: ScriptRequest) -> Answer | None:
        return Answer(text=f"odd {request.call}") if request.call % 2 else None

    stand_in.script([only_odd_calls, Rule(Answer(text="even"))])

    texts = []
    for _ in range(3):
        block = client.messages.create(model=MODEL, max_tokens=10, messages=HI).content[0]
        assert isinstance(block, TextBlock)
        texts.append(block.text)

    assert texts == ["odd 1", "even", "odd 3"]
    assert [exchange.rule for exchange in stand_in.requests] == [
        "only_odd_calls",
        "rules.1",
        "only_odd_calls",
    ]


def test_script_loads_from_a_yaml_file(
    tmp_path: Path, client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(
        "rules:\n"
        "  - name: flaky\n"
        "    times: 1\n"
        "    answer: {fault: api_error}\n"
        "  - name: plan\n"
        "    match: {tool: read_file}\n"
        "    answer:\n"
        "      text: Let me look.\n"
        "      tool_use: {name: read_file, input: {path: app.yml}}\n",
        encoding="utf-8",
    )
    stand_in.load_script(script)

    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=100, tools=[READ_FILE], messages=HI)
    message = client.messages.create(model=MODEL, max_tokens=100, tools=[READ_FILE], messages=HI)

    assert message.stop_reason == "tool_use"
    text, call = message.content
    assert text == TextBlock(type="text", text="Let me look.")
    assert isinstance(call, ToolUseBlock)
    assert call.input == {"path": "app.yml"}


def test_stop_reason_and_usage_overrides(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    answer = Answer(text="partial", stop_reason="max_tokens", usage={"output_tokens": 99})
    stand_in.script([Rule(answer)])

    message = client.messages.create(model=MODEL, max_tokens=100, messages=HI)

    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 99)


def test_long_answers_are_cut_at_max_tokens_and_stop_sequences(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("0123456789" * 10)])

    cut = client.messages.create(model=MODEL, max_tokens=5, messages=HI)
    stopped = client.messages.create(
        model=MODEL, max_tokens=100, messages=HI, stop_sequences=["45"]
    )

    assert cut.stop_reason == "max_tokens"
    assert cut.content == [TextBlock(type="text", text="0123456789" * 2)]
    assert cut.usage.output_tokens == 5
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "45")
    assert stopped.content == [TextBlock(type="text", text="0123")]


# -- streaming -----------------------------------------------------------------------------


async def test_streaming_delivers_the_same_message(
    aclient: anthropic.AsyncAnthropic, stand_in: AnthropicStandIn
) -> None:
    tool_input = {"path": "docs/architecture.md", "why": "x" * 60}
    stand_in.script(
        [
            Rule(
                Answer(
                    text="Reading the docs first. " * 3,
                    tool_uses=(ToolUse("read_file", tool_input),),
                )
            )
        ]
    )

    async with aclient.messages.stream(
        model=MODEL, max_tokens=500, tools=[READ_FILE], messages=HI
    ) as stream:
        event_types = [event.type async for event in stream]
        final = await stream.get_final_message()

    assert event_types[0] == "message_start"
    assert event_types[-1] == "message_stop"
    assert "content_block_delta" in event_types
    assert final.stop_reason == "tool_use"
    text, call = final.content
    assert isinstance(text, TextBlock)
    assert text.text == "Reading the docs first. " * 3
    assert isinstance(call, ToolUseBlock)
    assert call.input == tool_input
    [exchange] = stand_in.requests
    assert exchange.streamed
    assert exchange.response["id"] == final.id
    assert final.usage.output_tokens == exchange.response["usage"]["output_tokens"]


# -- prompt caching ------------------------------------------------------------------------


def test_long_prefix_is_written_then_read(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    system = _cached_system()

    first = client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI).usage
    second = client.messages.create(
        model=MODEL, max_tokens=10, system=system, messages=[{"role": "user", "content": "Other"}]
    ).usage

    assert first.cache_creation_input_tokens is not None
    assert first.cache_creation_input_tokens >= MODELS[MODEL].min_cacheable_tokens
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    total = input_tokens(_body(system=system))
    assert first.input_tokens + first.cache_creation_input_tokens == total
    assert second.input_tokens > 0


def test_prefix_below_the_minimum_is_not_cached(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    system = _cached_system("Short system prompt.")

    usages = [
        client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI).usage
        for _ in range(2)
    ]

    assert [(u.cache_creation_input_tokens, u.cache_read_input_tokens) for u in usages] == [
        (0, 0),
        (0, 0),
    ]
    assert len(stand_in.cache) == 0


def test_minimum_cacheable_length_depends_on_the_model(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    system = _cached_system()  # above sonnet's 1024-token minimum, below haiku's 2048

    sonnet = client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI)
    haiku = client.messages.create(
        model="claude-haiku-5-5", max_tokens=10, system=system, messages=HI
    )

    assert sonnet.usage.cache_creation_input_tokens
    assert haiku.usage.cache_creation_input_tokens == 0
    assert haiku.usage.cache_read_input_tokens == 0  # caches are per model


def test_cache_entries_expire_after_their_ttl(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    short_lived = _cached_system()
    long_lived = _cached_system(LONG_SYSTEM.upper(), ttl="1h")

    for system in (short_lived, long_lived):
        client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI)
    stand_in.advance_time(301)
    expired = client.messages.create(model=MODEL, max_tokens=10, system=short_lived, messages=HI)
    kept = client.messages.create(model=MODEL, max_tokens=10, system=long_lived, messages=HI)

    assert expired.usage.cache_read_input_tokens == 0
    assert expired.usage.cache_creation_input_tokens
    assert kept.usage.cache_read_input_tokens
    assert kept.usage.cache_creation_input_tokens == 0


def test_one_hour_writes_are_reported_separately(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])

    usage = client.messages.create(
        model=MODEL, max_tokens=10, system=_cached_system(ttl="1h"), messages=HI
    ).usage

    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_1h_input_tokens == usage.cache_creation_input_tokens
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0


def test_conversation_with_a_moving_breakpoint_reads_the_previous_turn(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("noted")])
    marker: CacheControlEphemeralParam = {"type": "ephemeral"}
    turn_one: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Context: " + "x" * 5000, "cache_control": marker}
            ],
        },
    ]
    first = client.messages.create(model=MODEL, max_tokens=10, messages=turn_one)
    turn_two: list[MessageParam] = [
        {"role": "user", "content": [{"type": "text", "text": "Context: " + "x" * 5000}]},
        {"role": "assistant", "content": "noted"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "And now?", "cache_control": marker}],
        },
    ]
    second = client.messages.create(model=MODEL, max_tokens=10, messages=turn_two)

    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens
    assert second.usage.input_tokens == 0


def test_changed_prefix_misses_the_cache(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    client.messages.create(model=MODEL, max_tokens=10, system=_cached_system(), messages=HI)

    changed = client.messages.create(
        model=MODEL, max_tokens=10, system=_cached_system(LONG_SYSTEM + "!"), messages=HI
    )

    assert changed.usage.cache_read_input_tokens == 0
    assert changed.usage.cache_creation_input_tokens


def test_top_level_cache_control_caches_the_whole_prompt(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    params: dict[str, Any] = _body(system=LONG_SYSTEM, cache_control={"type": "ephemeral"})

    first = client.messages.create(**params).usage
    second = client.messages.create(**params).usage

    assert first.cache_creation_input_tokens == input_tokens(params)
    assert second.cache_read_input_tokens == input_tokens(params)
    assert second.input_tokens == 0


def test_faults_do_not_touch_the_cache(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([fault("overloaded", times=1), reply("ok")])
    system = _cached_system()

    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI)
    usage = client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI).usage

    assert usage.cache_read_input_tokens == 0
    assert usage.cache_creation_input_tokens


# -- count_tokens --------------------------------------------------------------------------


def test_count_tokens_matches_message_input_tokens(
    client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    messages: list[MessageParam] = [
        {"role": "user", "content": "Read the README"},
        _TOOL_USE_TURN,
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "# Hi"}],
        },
    ]
    params: dict[str, Any] = {
        "model": MODEL,
        "system": "You are terse.",
        "tools": [READ_FILE],
        "messages": messages,
    }

    counted = client.messages.count_tokens(**params)
    usage = client.messages.create(max_tokens=10, **params).usage

    assert counted.input_tokens == usage.input_tokens == input_tokens(params)
    assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0


def test_count_tokens_validates_like_messages(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: Extra inputs"):
        client.messages.count_tokens(model=MODEL, messages=HI, extra_body={"max_tokens": 5})
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-unknown", messages=HI)


# -- admin API -----------------------------------------------------------------------------


def test_admin_api_loads_a_script_and_lists_requests(
    server: AnthropicServer, client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    script = {
        "rules": [
            {"name": "busy", "times": 1, "answer": {"fault": "overloaded", "retry_after": 0.01}},
            {"name": "review", "match": {"user": "Hello"}, "answer": {"text": "LGTM"}},
        ]
    }
    with httpx.Client(base_url=server.url) as admin:
        loaded = admin.post("/_admin/script", json=script)
        assert loaded.json() == {"rules": 2}

        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model=MODEL, max_tokens=10, messages=HI)
        message = client.messages.create(model=MODEL, max_tokens=10, messages=HI)
        assert message.content[0] == TextBlock(type="text", text="LGTM")

        logged = admin.get("/_admin/requests").json()["requests"]
        assert [(entry["rule"], entry["status"]) for entry in logged] == [
            ("busy", 529),
            ("review", 200),
        ]
        assert logged[1]["response"]["id"] == message.id

        assert admin.post("/_admin/reset").json() == {"ok": True}
        assert admin.get("/_admin/requests").json() == {"requests": []}
        assert admin.get("/_admin/script").json() == {"rules": []}


def test_admin_api_rejects_a_malformed_script(
    server: AnthropicServer, stand_in: AnthropicStandIn
) -> None:
    bad = {"rules": [{"answer": {"text": "hi"}, "match": {"color": "red"}}]}

    response = httpx.post(f"{server.url}/_admin/script", json=bad)

    assert response.status_code == 400
    assert "color" in response.json()["error"]
    assert stand_in.rules == []


def test_admin_api_advances_the_cache_clock(
    server: AnthropicServer, client: anthropic.Anthropic, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    system = _cached_system()
    client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI)

    httpx.post(f"{server.url}/_admin/advance_time", json={"seconds": 600})
    usage = client.messages.create(model=MODEL, max_tokens=10, system=system, messages=HI).usage

    assert usage.cache_read_input_tokens == 0


def test_server_context_manager_serves_and_stops() -> None:
    with AnthropicServer() as running:
        url = running.url
        assert httpx.get(f"{url}/_admin/health").json() == {"ok": True, "calls": 0}
        started = time.monotonic()

    assert time.monotonic() - started < 5
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_admin/health")
