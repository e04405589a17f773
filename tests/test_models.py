"""The model client against the Messages API stand-in, through the real SDK over loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.budget import Budget, model_calls, usage_totals
from app.limits import Limits
from app.models import (
    ModelAuthFailed,
    ModelCall,
    ModelClient,
    ModelRateLimited,
    ModelRequest,
    ModelRequestRejected,
    ModelUnavailable,
    count_breakpoints,
)
from app.pricing import UnknownModelPrice, price_for
from app.redis import free_port
from app.settings import Settings
from tests.emulators.anthropic_api import AnthropicServer, AnthropicStandIn, fault, reply, use_tool

API_KEY = "sk-ant-test-models-0123456789"
MODEL = "claude-sonnet-5-5"
# Over the stand-in's 1024-token minimum (about 4 characters a token), so it caches.
ROLE_PROMPT = "You are Conductor's implementer. Follow the house rules with care. " * 70
READ_FILE = {
    "name": "read_file",
    "description": "Read a file from the repository.",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                     "required": ["path"]},
}
WRITE_FILE = {
    "name": "write_file",
    "description": "Write a file.",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"},
                                                      "text": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer(AnthropicStandIn(api_key=API_KEY)) as running:
        yield running


@pytest.fixture
def stand_in(server: AnthropicServer) -> AnthropicStandIn:
    server.stand_in.reset()
    return server.stand_in


def settings(url: str | None, key: str | None = API_KEY) -> Settings:
    return Settings(_env_file=None, anthropic_api_key=key, anthropic_base_url=url)


@pytest.fixture
async def client(server: AnthropicServer) -> Any:
    models = ModelClient(settings(server.url), backoff=0.001, max_backoff=0.01)
    yield models
    await models.aclose()


@pytest.fixture
def budget(redis: aioredis.Redis) -> Budget:
    return Budget(redis, "run-1", Limits())


def ask(text: str = "Hello", **fields: Any) -> ModelRequest:
    values: dict[str, Any] = {"model": MODEL, "max_tokens": 1000,
                              "messages": [{"role": "user", "content": text}]}
    values.update(fields)
    return ModelRequest(**values)


async def test_overloaded_twice_then_success_counts_usage_once(
    client: ModelClient, stand_in: AnthropicStandIn, budget: Budget, redis: aioredis.Redis
) -> None:
    stand_in.script([fault("overloaded", retry_after=0.01, times=2), reply("Hi there.")])
    response = await client.call(ask(), budget=budget, role="implementer",
                                 trace={"run": "run-1", "step": "s1"})
    assert response.text == "Hi there."
    assert [e.status for e in stand_in.message_requests()] == [529, 529, 200]
    assert response.call.retries == 2
    assert response.request_id == stand_in.message_requests()[-1].response_headers["request-id"]
    totals = await usage_totals(redis, "run-1")
    assert totals.overall.calls == 1
    assert totals.overall.input_tokens == response.usage.input_tokens
    assert totals.overall.output_tokens == response.usage.output_tokens
    [recorded] = await model_calls(redis, "run-1")
    assert (recorded.retries, recorded.role, recorded.run_id) == (2, "implementer", "run-1")
    assert recorded.trace == {"run": "run-1", "step": "s1"}


async def test_unavailable_after_the_retries(server: AnthropicServer,
                                             stand_in: AnthropicStandIn) -> None:
    stand_in.script([fault("overloaded", retry_after=0.01)])
    models = ModelClient(settings(server.url), max_retries=2)
    try:
        with pytest.raises(ModelUnavailable, match="529 overloaded_error") as caught:
            await models.call(ask(), budget=None, role="planner", trace={})
    finally:
        await models.aclose()
    assert len(stand_in.message_requests()) == 3
    assert caught.value.retries == 2
    assert "/agent retry" in str(caught.value)


async def test_long_retry_after_fails_at_once_for_the_job_to_defer(
    client: ModelClient, stand_in: AnthropicStandIn, budget: Budget, redis: aioredis.Redis
) -> None:
    stand_in.script([fault("rate_limit", retry_after=120)])
    with pytest.raises(ModelRateLimited, match="rate limit") as caught:
        await client.call(ask(), budget=budget, role="planner", trace={})
    assert caught.value.retry_after == 120
    assert len(stand_in.message_requests()) == 1  # not slept on, not retried
    totals = await usage_totals(redis, "run-1")
    assert (totals.overall.errors, totals.overall.calls) == (1, 0)
    [failed] = await model_calls(redis, "run-1")
    assert failed.error is not None and "429" in failed.error


async def test_server_says_do_not_retry(client: ModelClient, stand_in: AnthropicStandIn) -> None:
    stand_in.script([])  # nothing matches: a 500 with x-should-retry: false
    with pytest.raises(ModelUnavailable, match="no script rule matched"):
        await client.call(ask(), budget=None, role="planner", trace={})
    assert len(stand_in.message_requests()) == 1


async def test_unknown_model_is_rejected_with_the_api_message(
    client: ModelClient, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("never")])
    # Priced here, but not served by the API.
    with pytest.raises(ModelRequestRejected, match=r"404 not_found_error.*claude-opus-4-0") as c:
        await client.call(ask(model="claude-opus-4-0"), budget=None, role="planner", trace={})
    assert c.value.status == 404
    assert "conductor.yml" in str(c.value)
    assert len(stand_in.message_requests()) == 1


async def test_bad_request_is_not_retried(client: ModelClient, stand_in: AnthropicStandIn) -> None:
    stand_in.script([reply("never")])
    with pytest.raises(ModelRequestRejected, match="400 invalid_request_error") as caught:
        await client.call(ask(max_tokens=10**6), budget=None, role="planner", trace={})
    assert caught.value.status == 400
    assert len(stand_in.message_requests()) == 1


async def test_wrong_key_names_the_variable(server: AnthropicServer,
                                            stand_in: AnthropicStandIn) -> None:
    stand_in.script([reply("never")])
    models = ModelClient(settings(server.url, key="sk-ant-wrong-key-000000"))
    try:
        with pytest.raises(ModelAuthFailed, match="ANTHROPIC_API_KEY") as caught:
            await models.call(ask(), budget=None, role="planner", trace={})
    finally:
        await models.aclose()
    assert "sk-ant-wrong" not in str(caught.value)
    assert [e.status for e in stand_in.message_requests()] == [401]


async def test_missing_key_fails_without_a_request(server: AnthropicServer,
                                                   stand_in: AnthropicStandIn) -> None:
    models = ModelClient(settings(server.url, key=None))
    with pytest.raises(ModelAuthFailed, match="ANTHROPIC_API_KEY is not set"):
        await models.call(ask(), budget=None, role="planner", trace={})
    await models.aclose()
    assert stand_in.requests == []


async def test_unreachable_api_is_unavailable() -> None:
    models = ModelClient(settings(f"http://127.0.0.1:{free_port()}"), max_retries=1,
                         backoff=0.001)
    try:
        with pytest.raises(ModelUnavailable, match="could not reach") as caught:
            await models.call(ask(), budget=None, role="planner", trace={})
    finally:
        await models.aclose()
    assert caught.value.retries == 1


NOT_MESSAGES = {
    "an HTML page": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 27\r\n"
                    b"\r\n<html><h1>Welcome</h1></html>"[:-2],
    "cut JSON": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
                b"\r\n{\"id\": \"ms",
    "an empty object": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 2\r\n\r\n{}",
}


@pytest.mark.parametrize("answer", sorted(NOT_MESSAGES))
async def test_an_answer_that_is_not_a_message_is_an_unavailable_api(
    answer: str, budget: Budget, redis: aioredis.Redis
) -> None:
    # ANTHROPIC_BASE_URL pointing at some other web server, or a proxy answering for it.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(NOT_MESSAGES[answer])
        await writer.drain()
        writer.close()

    served = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{served.sockets[0].getsockname()[1]}"
    models = ModelClient(settings(url), max_retries=1, backoff=0.001)
    try:
        with pytest.raises(ModelUnavailable, match="not a Messages API answer") as caught:
            await models.call(ask(), budget=budget, role="planner", trace={})
    finally:
        await models.aclose()
        served.close()
    assert url in str(caught.value) and "ANTHROPIC_BASE_URL" in str(caught.value)
    assert caught.value.retries == 1
    totals = await usage_totals(redis, "run-1")
    assert (totals.overall.errors, totals.overall.calls) == (1, 0)


async def test_block_types_this_client_cannot_send_back_are_kept_out_of_the_turn(
    budget: Budget, redis: aioredis.Redis
) -> None:
    # A newer API: a block type and fields this SDK does not know, next to ones it does.
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "Read it first.", "signature": "c2ln"},
            {"type": "mind_map", "nodes": ["a", "b"]},
            {"type": "text", "text": "Reading.", "tone": "calm"},
            {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None, "pondering": {"depth": 3},
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "pondering_tokens": 5},
    }
    body = json.dumps(message).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(head.encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    served = await asyncio.start_server(handle, "127.0.0.1", 0)
    models = ModelClient(settings(f"http://127.0.0.1:{served.sockets[0].getsockname()[1]}"))
    try:
        response = await models.call(ask(), budget=budget, role="implementer", trace={})
    finally:
        await models.aclose()
        served.close()
    assert response.content == [
        {"type": "thinking", "thinking": "Read it first.", "signature": "c2ln"},
        {"type": "text", "text": "Reading."},
        {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}},
    ]
    assert response.cost_usd == pytest.approx((10 * 3 + 20 * 15) / 1_000_000)
    [recorded] = await model_calls(redis, "run-1")
    assert recorded.response is not None
    assert [b["type"] for b in recorded.response["content"]] == [
        "thinking", "mind_map", "text", "tool_use"]


async def test_unpriced_model_fails_before_sending(client: ModelClient,
                                                   stand_in: AnthropicStandIn) -> None:
    with pytest.raises(UnknownModelPrice):
        await client.call(ask(model="claude-unknown-1"), budget=None, role="planner", trace={})
    assert stand_in.requests == []


async def test_breakpoints_on_last_tool_stable_system_and_last_message(
    client: ModelClient, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("ok")])
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Read the README."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                           "name": "read_file", "input": {"path": "README"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "# Project"}]},
    ]
    before = json.dumps(messages)
    request = ModelRequest(model=MODEL, max_tokens=500, messages=messages,
                           system=[ROLE_PROMPT, "## Repository map\n...", "Attempt 2 of 3."],
                           stable_system_blocks=2, tools=[READ_FILE, WRITE_FILE])
    await client.call(request, budget=None, role="implementer", trace={})
    body = stand_in.message_requests()[0].body
    assert count_breakpoints(body) == 3
    assert [("cache_control" in t) for t in body["tools"]] == [False, True]
    assert [("cache_control" in b) for b in body["system"]] == [False, True, False]
    assert "cache_control" in body["messages"][-1]["content"][-1]
    assert all("cache_control" not in block for message in body["messages"][:-1]
               for block in message["content"] if isinstance(block, dict))
    assert json.dumps(messages) == before  # the caller's history is not marked


async def test_second_call_reads_the_cache_and_cost_comes_from_usage(
    client: ModelClient, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("first"), reply("second")])
    request = ask("Summarise.", system=[ROLE_PROMPT], tools=[READ_FILE])
    first = await client.call(request, budget=None, role="implementer", trace={})
    second = await client.call(request, budget=None, role="implementer", trace={})
    assert first.usage.cache_creation_input_tokens
    assert second.usage.cache_read_input_tokens
    price = price_for(MODEL)
    for response in (first, second):
        usage = response.usage
        expected = (usage.input_tokens * price.input + usage.output_tokens * price.output
                    + (usage.cache_creation_input_tokens or 0) * price.input * 1.25
                    + (usage.cache_read_input_tokens or 0) * price.input * 0.1) / 1e6
        assert response.cost_usd == pytest.approx(expected)
    assert second.cost_usd < first.cost_usd


def test_more_than_four_breakpoints_are_refused_before_sending() -> None:
    marked = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    request = ModelRequest(model=MODEL, max_tokens=10, system=[ROLE_PROMPT], tools=[READ_FILE],
                           messages=[{"role": "user", "content": [marked, dict(marked), {
                               "type": "text", "text": "last"}]}])
    with pytest.raises(ModelRequestRejected, match="at most 4"):
        request.payload()


def test_payload_without_cache_hints_or_empty_blocks() -> None:
    request = ModelRequest(model=MODEL, max_tokens=10, system=["", "rules"], cache=False,
                           messages=[{"role": "user", "content": "hi"}])
    payload = request.payload()
    assert payload["system"] == [{"type": "text", "text": "rules"}]
    assert count_breakpoints(payload) == 0
    hourly = ModelRequest(model=MODEL, max_tokens=10, system="rules", cache_ttl="1h",
                          messages=[{"role": "user", "content": "hi"}]).payload()
    assert hourly["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert hourly["messages"][0]["content"][0]["cache_control"]["ttl"] == "1h"


async def test_recorded_call_is_scrubbed_and_trimmed(
    client: ModelClient, stand_in: AnthropicStandIn, budget: Budget, redis: aioredis.Redis
) -> None:
    stand_in.script([use_tool("write_file", {"path": "a.txt", "text": "token ghp_" + "a" * 36})])
    huge = "log line\n" * 2_000
    request = ask("First turn.", system=[ROLE_PROMPT], tools=[READ_FILE, WRITE_FILE])
    request.messages.append({"role": "assistant", "content": "Reading."})
    request.messages.append({"role": "user", "content": huge + "key sk-ant-api03-abcdefghijkl"})
    await client.call(request, budget=budget, role="implementer", trace={"run": "run-1"})
    [call] = await model_calls(redis, "run-1")
    text = call.to_json()
    assert "sk-ant-api03" not in text and "ghp_aaaa" not in text
    assert ROLE_PROMPT[:60] not in text  # stable system text is kept as a digest
    assert call.request["system"][0]["stable"] is True
    assert call.request["messages"] == 3
    last = call.request["last_message"]["content"]
    assert len(last) < 4_200 and "characters cut" in last
    assert call.response is not None
    assert call.response["content"][0]["name"] == "write_file"
    assert ModelCall.from_json(text) == call


async def test_a_cancelled_call_frees_its_budget_reservation(
    client: ModelClient, stand_in: AnthropicStandIn, redis: aioredis.Redis
) -> None:
    # A job whose time runs out, or a cancelled run, cancels the call mid-flight: what the
    # call reserved must not keep counting against the run's budget.
    # Room for one call's worst case ($0.015 of output), not two.
    reserved = asyncio.Event()

    class Watched(Budget):
        async def check(self, model: str, request: ModelRequest) -> str:
            hold = await super().check(model, request)
            reserved.set()  # the call goes on to send without waiting on anything else first
            return hold

    budget = Watched(redis, "run-cancel", Limits(max_cost_usd_per_run=0.02))
    stand_in.script([reply("Too late.", delay=5.0, times=1), reply("Answered.")])
    call = asyncio.ensure_future(client.call(ask(max_tokens=1000), budget=budget,
                                             role="implementer", trace={"run": "run-cancel"}))
    await asyncio.wait_for(reserved.wait(), timeout=30)
    assert await redis.hlen("conductor:run:run-cancel:holds") == 1
    call.cancel()  # while it waits for the answer
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await redis.hlen("conductor:run:run-cancel:holds") == 0
    response = await client.call(ask(max_tokens=1000), budget=budget, role="implementer",
                                 trace={"run": "run-cancel"})  # refused if still held
    assert response.call.error is None


async def test_a_request_refused_before_sending_reserves_no_budget(
    client: ModelClient, stand_in: AnthropicStandIn, redis: aioredis.Redis
) -> None:
    marked = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    request = ModelRequest(model=MODEL, max_tokens=10, system=[ROLE_PROMPT], tools=[READ_FILE],
                           messages=[{"role": "user", "content": [marked, dict(marked), {
                               "type": "text", "text": "last"}]}])
    budget = Budget(redis, "run-refused", Limits())
    with pytest.raises(ModelRequestRejected, match="at most 4"):
        await client.call(request, budget=budget, role="implementer",
                          trace={"run": "run-refused"})
    assert await redis.exists("conductor:run:run-refused:holds") == 0
    assert stand_in.requests == []


def test_processes_that_never_call_the_model_do_not_load_the_sdk() -> None:
    # Importing the SDK costs seconds of CPU; the web process, the dashboard and
    # `conductor trace` start without it (a fresh interpreter, so nothing is loaded before).
    probe = ("import sys, app.cli, app.web, app.dashboard, app.trace; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'anthropic'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
