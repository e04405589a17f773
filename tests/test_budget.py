"""The per-run budget and call ledger, on a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.budget import USAGE_KEY, Budget, BudgetExceeded, model_calls, usage_totals
from app.limits import Limits
from app.models import ModelCall, ModelClient, ModelRequest
from app.redis import RedisProcess
from app.settings import Settings
from tests.emulators.anthropic_api import AnthropicServer, AnthropicStandIn, reply

API_KEY = "sk-ant-test-budget-0123456789"
MODEL = "claude-sonnet-5-5"


@pytest.fixture(scope="module")
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer(AnthropicStandIn(api_key=API_KEY)) as running:
        yield running


@pytest.fixture
def stand_in(server: AnthropicServer) -> AnthropicStandIn:
    server.stand_in.reset()
    return server.stand_in


def call(role: str = "implementer", model: str = MODEL, *, input_tokens: int = 100,
         output_tokens: int = 10, cost_usd: float = 0.000123, **fields: Any) -> ModelCall:
    return ModelCall(run_id="run-1", role=role, model=model, started_at=time.time(),
                     latency_ms=5, input_tokens=input_tokens, output_tokens=output_tokens,
                     cost_usd=cost_usd, **fields)


def request(chars: int = 350, max_tokens: int = 1_000) -> ModelRequest:
    return ModelRequest(model=MODEL, max_tokens=max_tokens,
                        messages=[{"role": "user", "content": "x" * chars}])


async def test_concurrent_records_from_many_clients_add_up_exactly(
    redis: aioredis.Redis, redis_server: RedisProcess
) -> None:
    # Separate connections stand for workers on different machines.
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(4)]
    try:
        budgets = [Budget(c, "run-1", Limits()) for c in clients]
        roles = ["implementer", "reviewer"]
        await asyncio.gather(*(
            budgets[i % 4].record(call(roles[i % 2], input_tokens=100 + i, cost_usd=0.0001))
            for i in range(200)
        ))
    finally:
        for c in clients:
            await c.aclose()
    totals = await usage_totals(redis, "run-1")
    assert totals.overall.calls == 200
    assert totals.overall.input_tokens == sum(100 + i for i in range(200))
    assert totals.overall.output_tokens == 2_000
    assert totals.overall.cost_micro_usd == 200 * 100
    assert totals.overall.cost_usd == pytest.approx(0.02)
    assert {role: t.calls for role, t in totals.by_role.items()} == {
        "implementer": 100, "reviewer": 100}
    assert totals.by_model[MODEL].calls == 200
    assert len(await model_calls(redis, "run-1")) == 200


async def test_totals_by_role_and_model(redis: aioredis.Redis) -> None:
    budget = Budget(redis, "run-1", Limits())
    await budget.record(call("orchestrator", "claude-opus-5-5", cost_usd=0.5,
                             cache_read_input_tokens=1_000))
    await budget.record(call("implementer", MODEL, cost_usd=0.25,
                             cache_creation_input_tokens=2_000))
    await budget.record(call("implementer", MODEL, error="529 overloaded"))
    totals = await budget.totals()
    assert totals.overall.calls == 2 and totals.overall.errors == 1
    assert totals.overall.cost_usd == pytest.approx(0.75)
    assert totals.overall.tokens == 2 * 110 + 1_000 + 2_000
    assert totals.by_role["orchestrator"].cache_read_input_tokens == 1_000
    assert totals.by_model[MODEL].cache_creation_input_tokens == 2_000
    assert totals.by_role["implementer"].errors == 1
    assert [c.role for c in await model_calls(redis, "run-1")] == [
        "orchestrator", "implementer", "implementer"]


async def test_cost_limit_counts_the_worst_case_of_the_next_call(redis: aioredis.Redis) -> None:
    budget = Budget(redis, "run-1", Limits(max_cost_usd_per_run=1.0))
    await budget.record(call(cost_usd=0.95))
    await budget.check(MODEL, request(max_tokens=1_000))  # ≤ $0.016 more: fits
    with pytest.raises(BudgetExceeded) as caught:
        await budget.check(MODEL, request(max_tokens=10_000))  # up to $0.15 more
    message = str(caught.value)
    assert "cost budget" in message and "$0.95 of its $1.00" in message
    assert "limits.max_cost_usd_per_run" in message and ".github/conductor.yml" in message
    assert caught.value.kind == "cost"


async def test_token_limit(redis: aioredis.Redis) -> None:
    budget = Budget(redis, "run-1", Limits(max_tokens_per_run=5_000))
    await budget.record(call(input_tokens=3_000, output_tokens=500))
    with pytest.raises(BudgetExceeded, match=r"3,500 of its 5,000 tokens.*max_tokens_per_run"):
        await budget.check(MODEL, request(chars=3_500, max_tokens=1_000))


async def test_renewed_allowance_counts_from_now_but_totals_keep_everything(
    redis: aioredis.Redis,
) -> None:
    budget = Budget(redis, "run-1", Limits(max_cost_usd_per_run=1.0))
    await budget.record(call(cost_usd=0.99))
    with pytest.raises(BudgetExceeded):
        await budget.check(MODEL, request())
    await budget.renew()
    await budget.check(MODEL, request())
    assert await budget.spent() == (0, 0.0)
    await budget.record(call(cost_usd=0.5))
    assert (await budget.spent())[1] == pytest.approx(0.5)
    assert (await budget.totals()).overall.cost_usd == pytest.approx(1.49)
    assert set((await usage_totals(redis, "run-1")).by_role) == {"implementer"}
    assert await redis.hget(USAGE_KEY.format(run_id="run-1"), "allowance|cost") == b"990000"


async def test_exhausted_budget_refuses_before_any_request(
    redis: aioredis.Redis, server: AnthropicServer, stand_in: AnthropicStandIn
) -> None:
    stand_in.script([reply("never sent")])
    budget = Budget(redis, "run-1", Limits(max_cost_usd_per_run=0.5))
    await budget.record(call(cost_usd=0.5))
    models = ModelClient(Settings(_env_file=None, anthropic_api_key=API_KEY,
                                  anthropic_base_url=server.url))
    try:
        with pytest.raises(BudgetExceeded, match=r"\$0\.50 of its \$0\.50"):
            await models.call(request(), budget=budget, role="implementer",
                              trace={"run": "run-1"})
    finally:
        await models.aclose()
    assert stand_in.requests == []
    assert len(await model_calls(redis, "run-1")) == 1  # only the call recorded above


async def test_parallel_calls_cannot_together_pass_the_limit(redis: aioredis.Redis) -> None:
    # $0.05 left; each call could cost up to ~$0.03: one fits, two do not.
    budgets = [Budget(redis, "run-1", Limits(max_cost_usd_per_run=1.0)) for _ in range(2)]
    await budgets[0].record(call(cost_usd=0.95))
    outcomes = await asyncio.gather(*(b.check(MODEL, request(max_tokens=2_000))
                                      for b in budgets), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert len(refused) == 1
    assert "$0.03 is reserved by calls in progress" in str(refused[0])


async def test_recording_a_call_frees_what_its_check_reserved(redis: aioredis.Redis) -> None:
    budget = Budget(redis, "run-1", Limits(max_cost_usd_per_run=1.0))
    await budget.record(call(cost_usd=0.95))
    hold = await budget.check(MODEL, request(max_tokens=2_000))
    await budget.record(call(cost_usd=0.01), hold)
    failing = await budget.check(MODEL, request(max_tokens=2_000))
    await budget.record(call(error="529 overloaded"), failing)
    await budget.check(MODEL, request(max_tokens=2_000))  # $0.04 left, nothing reserved
    assert (await budget.spent())[1] == pytest.approx(0.96)


async def test_a_killed_workers_reservation_lapses_and_a_live_calls_stays(
    redis: aioredis.Redis,
) -> None:
    # Two steps' calls in progress; one worker is killed mid-call, so nothing frees its
    # reservation. Room for two calls' worst case (~1,120 tokens each), not three.
    limits = Limits(max_tokens_per_run=2_500)
    live, dead, rerun = (Budget(redis, "run-1", limits, hold_seconds=1) for _ in range(3))
    live_hold = await live.check(MODEL, request())
    keeper = live.keep(live_hold)  # as `ModelClient.call` does while it waits
    try:
        await dead.check(MODEL, request())  # then SIGKILL: no record, no release, no renewal
        with pytest.raises(BudgetExceeded, match="reserved by calls in progress"):
            await rerun.check(MODEL, request())  # within the lease both count
        # The killed step runs again: its call goes on once the dead reservation lapses.
        hold = await _first_reserved(rerun)
        assert set(await redis.hkeys("conductor:run:run-1:holds")) == {
            live_hold.encode(), hold.encode()}
        with pytest.raises(BudgetExceeded):
            await dead.check(MODEL, request())  # the live call's reservation still counts
        await rerun.record(call(input_tokens=900, output_tokens=100), hold)
    finally:
        keeper.cancel()
    await live.record(call(input_tokens=900, output_tokens=100), live_hold)
    assert await redis.exists("conductor:run:run-1:holds") == 0
    assert await live.spent() == (2_000, pytest.approx(0.000246))


async def _first_reserved(budget: Budget) -> str:
    """Check until the calls in progress leave room (a lease of 1 s lapses within 2 s)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return await budget.check(MODEL, request())
        except BudgetExceeded:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_call_renews_its_reservation_until_it_is_answered(
    redis: aioredis.Redis, server: AnthropicServer, stand_in: AnthropicStandIn
) -> None:
    # The answer takes three leases: the reservation must count all along, and be gone after.
    stand_in.script([reply("Slow answer.", delay=3.0)])
    limits = Limits(max_tokens_per_run=2_000)  # one call's worst case, not two
    budget = Budget(redis, "run-1", limits, hold_seconds=1)
    models = ModelClient(Settings(_env_file=None, anthropic_api_key=API_KEY,
                                  anthropic_base_url=server.url))
    try:
        answer = asyncio.ensure_future(models.call(request(), budget=budget,
                                                   role="implementer", trace={"run": "run-1"}))
        while not await redis.exists("conductor:run:run-1:holds"):
            await asyncio.sleep(0.01)
        await asyncio.sleep(2.2)  # past the lease the call was given when it was reserved
        with pytest.raises(BudgetExceeded, match="reserved by calls in progress"):
            await Budget(redis, "run-1", limits).check(MODEL, request())
        response = await answer
    finally:
        await models.aclose()
    assert response.text == "Slow answer."
    assert await redis.exists("conductor:run:run-1:holds") == 0
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("budget hold")] == []
