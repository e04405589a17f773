"""`conductor replay`: a run's model calls, kept whole as they are made, sent again to the
same or another model and compared. The real model client through the SDK against the
Messages API stand-in, a real Redis, and the CLI as a user runs it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from app import replay
from app.budget import Budget, model_calls, usage_totals
from app.limits import Limits
from app.logs import redactor
from app.models import ModelCall, ModelClient, ModelRequest
from app.redis import RedisProcess
from app.request_parts import PART_KEY, restore_request
from app.runs import Run, RunStatus, RunStore
from app.settings import Settings
from tests import test_models
from tests.emulators.anthropic_api import AnthropicServer, AnthropicStandIn, Match, reply, use_tool
from tests.test_models import READ_FILE, ROLE_PROMPT, WRITE_FILE
from tests.test_trace import conductor

API_KEY = test_models.API_KEY
RUN_ID = "widgets-9-1-feed00"
SONNET, HAIKU = "claude-sonnet-5-5", "claude-haiku-5-5"


server, stand_in = test_models.server, test_models.stand_in  # the same fixtures


def model_settings(server: AnthropicServer, **values: Any) -> Settings:
    return Settings(_env_file=None, anthropic_api_key=API_KEY, anthropic_base_url=server.url,
                    **values)


@pytest.fixture
async def client(server: AnthropicServer) -> AsyncIterator[ModelClient]:
    models = ModelClient(model_settings(server), backoff=0.001, max_backoff=0.01)
    yield models
    await models.aclose()


async def record_step(client: ModelClient, stand_in: AnthropicStandIn,
                      redis: aioredis.Redis) -> list[dict[str, Any]]:
    """An implementer's step as the bot makes it: it reads a file, then writes one; two calls
    of one conversation, in the run's ledger. The bodies the API received, in order."""
    await RunStore(redis).create(Run(
        id=RUN_ID, repo="acme/widgets", installation_id=1, issue_number=9,
        issue_title="Add sub", triggered_by="alice", trigger_delivery="d-9", attempt=1,
        branch="conductor/issue-9-add-sub", status=RunStatus.VERIFYING))
    stand_in.script([use_tool("read_file", {"path": "widgets/ops.py"}, times=1),
                     use_tool("write_file", {"path": "widgets/sub.py", "text": "def sub(): ..."},
                              text="Writing it.", times=1)])
    budget = Budget(redis, RUN_ID, Limits())
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Add sub() to widgets. Token ghp_" + "b" * 36}]
    trace = {"run": RUN_ID, "step": "impl"}
    first = await client.call(ModelRequest(
        model=SONNET, max_tokens=2000, system=[ROLE_PROMPT, "Step: impl"], tools=[
            READ_FILE, WRITE_FILE], messages=messages, stable_system_blocks=1),
        budget=budget, role="implementer", trace=trace)
    messages += [{"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result",
                                               "tool_use_id": first.tool_uses[0]["id"],
                                               "content": "def add(a, b):\n    return a + b\n"}]}]
    await client.call(ModelRequest(
        model=SONNET, max_tokens=2000, system=[ROLE_PROMPT, "Step: impl"], tools=[
            READ_FILE, WRITE_FILE], messages=messages, stable_system_blocks=1),
        budget=budget, role="implementer", trace=trace)
    return [exchange.body for exchange in stand_in.message_requests()]


async def test_each_call_keeps_its_whole_request_once_per_part(
    client: ModelClient, stand_in: AnthropicStandIn, redis: aioredis.Redis
) -> None:
    sent = await record_step(client, stand_in, redis)
    calls = await model_calls(redis, RUN_ID)
    assert len(calls) == 2
    for call, body in zip(calls, sent, strict=True):
        kept = await restore_request(redis, call.request)
        assert kept is not None
        # Rebuilt, it is the very request the API received, with the token scrubbed.
        resent = json.dumps(ModelRequest(**kept).payload(), sort_keys=True)
        assert "ghp_" not in resent
        assert resent == redactor.scrub(json.dumps(body, sort_keys=True))
    keys = [key async for key in redis.scan_iter(PART_KEY.format(digest="*"))]
    # Two system blocks, the tools, and three messages: the first call's message is kept once.
    assert len(keys) == 6
    for key in keys:  # each expires with CONDUCTOR_REPLAY_DAYS (14)
        assert 14 * 86400 - 60 <= await redis.ttl(key) <= 14 * 86400
    for key in keys:
        assert b"ghp_bbbb" not in (await redis.get(key) or b"")


async def test_replaying_with_the_same_model_sends_the_same_requests_and_writes_nothing(
    client: ModelClient, stand_in: AnthropicStandIn, redis: aioredis.Redis
) -> None:
    sent = await record_step(client, stand_in, redis)
    before = await usage_totals(redis, RUN_ID)
    stand_in.reset()
    stand_in.script([use_tool("read_file", {"path": "widgets/ops.py"}, times=1),
                     use_tool("write_file", {"path": "widgets/sub.py", "text": "def sub(): ..."},
                              text="Writing it.", times=1)])
    chosen = replay.select(await model_calls(redis, RUN_ID))
    result = await replay.replay(redis, client, RUN_ID, chosen, None)

    assert [c.verdict for c in result.calls] == ["same", "same"]
    again = [exchange.body for exchange in stand_in.message_requests()]
    assert [b["messages"][1:] for b in again] == [b["messages"][1:] for b in sent]
    assert [b["system"] for b in again] == [b["system"] for b in sent]
    assert [b["tools"] for b in again] == [b["tools"] for b in sent]
    assert all(c.replay_cost_usd > 0 for c in result.calls)
    # The run is as it was: no call added to its ledger, nothing to its spend.
    assert len(await model_calls(redis, RUN_ID)) == 2
    assert await usage_totals(redis, RUN_ID) == before
    assert "2 calls: 2 same" in replay.render(result)


async def test_another_model_that_decides_differently_is_shown_with_the_difference(
    client: ModelClient, stand_in: AnthropicStandIn, redis: aioredis.Redis
) -> None:
    await record_step(client, stand_in, redis)
    stand_in.reset()
    stand_in.script([
        use_tool("read_file", {"path": "widgets/ops.py"}, match=Match(model=HAIKU), times=1),
        use_tool("write_file", {"path": "widgets/minus.py", "text": "def sub(): ..."},
                 text="Writing it.", match=Match(model=HAIKU), times=1)])
    chosen = replay.select(await model_calls(redis, RUN_ID))
    result = await replay.replay(redis, client, RUN_ID, chosen, HAIKU)

    assert [c.verdict for c in result.calls] == ["same", "differs"]
    assert {exchange.body["model"] for exchange in stand_in.message_requests()} == {HAIKU}
    differs = result.calls[1]
    assert differs.recorded_tools == [
        'write_file({"path": "widgets/sub.py", "text": "def sub(): ..."})']
    assert differs.replay_tools == [
        'write_file({"path": "widgets/minus.py", "text": "def sub(): ..."})']
    assert any(line.startswith("-") and "widgets/sub.py" in line for line in differs.diff)
    assert any(line.startswith("+") and "widgets/minus.py" in line for line in differs.diff)
    text = replay.render(result)
    assert f"{SONNET} -> {HAIKU}: differs" in text and "1 same, 1 differs" in text


def test_same_tools_other_text_and_a_changed_stop_reason() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}}
    other_id = {**tool, "id": "toolu_2"}
    assert replay.compare([tool], "tool_use", [other_id], "tool_use") == ("same", [])
    verdict, diff = replay.compare([{"type": "text", "text": "Reading a."}, tool], "tool_use",
                                   [{"type": "text", "text": "Let me look."}, other_id],
                                   "tool_use")
    assert verdict == "same tools" and any("Let me look." in line for line in diff)
    assert replay.compare([tool], "tool_use", [tool], "max_tokens")[0] == "differs"


async def test_a_request_not_kept_is_said_not_sent(
    server: AnthropicServer, stand_in: AnthropicStandIn, redis: aioredis.Redis
) -> None:
    models = ModelClient(model_settings(server, conductor_replay_days=0), backoff=0.001)
    try:
        await record_step(models, stand_in, redis)
        calls = await model_calls(redis, RUN_ID)
        assert all("parts" not in c.request for c in calls)
        assert [key async for key in redis.scan_iter(PART_KEY.format(digest="*"))] == []
        stand_in.reset()
        result = await replay.replay(redis, models, RUN_ID, replay.select(calls), None)
    finally:
        await models.aclose()
    assert [c.verdict for c in result.calls] == ["not kept", "not kept"]
    assert stand_in.message_requests() == []
    assert "its request was not kept" in replay.render(result)


def test_select_skips_failed_calls_and_filters_by_role_and_number() -> None:
    def call(role: str, error: str | None = None) -> ModelCall:
        return ModelCall(run_id="r", role=role, model=SONNET, started_at=0.0, latency_ms=1,
                         error=error, input_tokens=1_000_000, output_tokens=100_000)

    calls = [call("orchestrator"), call("implementer", "overloaded"), call("implementer"),
             call("reviewer")]
    assert [n for n, _ in replay.select(calls)] == [1, 3, 4]
    assert [n for n, _ in replay.select(calls, roles=["implementer"])] == [3]
    assert [n for n, _ in replay.select(calls, numbers=[1, 2, 4])] == [1, 4]
    # A million input and 100k output tokens: $3 + $1.5 at Sonnet's prices, $1 + $0.5 at Haiku's.
    chosen = replay.select(calls, numbers=[1])
    assert replay.estimate(chosen, None) == pytest.approx(4.5)
    assert replay.estimate(chosen, HAIKU) == pytest.approx(1.5)


async def test_the_command_replays_and_guards_the_spend(
    client: ModelClient, stand_in: AnthropicStandIn, redis: aioredis.Redis,
    redis_server: RedisProcess, server: AnthropicServer, tmp_path: Path
) -> None:
    await record_step(client, stand_in, redis)
    stand_in.reset()
    stand_in.script([reply("I would rather ask.", match=Match(model=HAIKU))])
    env = {"REDIS_URL": redis_server.url, "ANTHROPIC_API_KEY": API_KEY,
           "ANTHROPIC_BASE_URL": server.url}

    code, out, err = await conductor("replay", "acme/widgets#9", "--model", HAIKU,
                                     cwd=tmp_path, **env)
    assert code == 0, err
    assert f"replay of run {RUN_ID} with {HAIKU}" in out
    assert "2 calls: 2 differs" in out and "I would rather ask." in out
    assert API_KEY not in out + err

    # One call, to its recorded model, which answers as it did then.
    stand_in.script([use_tool("write_file", {"path": "widgets/sub.py", "text": "def sub(): ..."},
                              text="Writing it.", match=Match(model=SONNET))])
    code, out, _ = await conductor("replay", RUN_ID, "--call", "2", "--json", cwd=tmp_path, **env)
    assert code == 0
    answer = json.loads(out)
    assert [c["number"] for c in answer["calls"]] == [2] and answer["calls"][0]["verdict"]
    assert answer["calls"][0]["verdict"] == "same" and answer["counts"] == {"same": 1}
    assert answer["replay_cost_usd"] > 0 and answer["calls"][0]["replay_model"] == SONNET

    asked = len(stand_in.message_requests())
    code, _, err = await conductor("replay", RUN_ID, "--max-cost", "0", cwd=tmp_path, **env)
    assert code == 2 and "more than --max-cost $0.00" in err
    code, _, err = await conductor("replay", RUN_ID, "--model", "gpt-9", cwd=tmp_path, **env)
    assert code == 2 and "no price is known for model 'gpt-9'" in err
    code, _, err = await conductor("replay", "acme/widgets#404", cwd=tmp_path, **env)
    assert code == 2 and "no run 'acme/widgets#404'" in err
    code, _, err = await conductor("replay", RUN_ID, cwd=tmp_path,
                                   **{**env, "ANTHROPIC_API_KEY": ""})
    assert code == 2 and "ANTHROPIC_API_KEY is not set" in err
    assert len(stand_in.message_requests()) == asked  # none of the refusals sent anything
