"""A run's token and cost budget, and its ledger of model calls, in Redis.

Keys:

    conductor:run:{id}:usage   hash of counters, "<scope>|<counter>"; scope is "all",
                               "role:<role>" or "model:<model id>"; counters are calls, errors,
                               input_tokens, output_tokens, cache_creation_input_tokens,
                               cache_read_input_tokens and cost_micro_usd (integer micro-dollars)
    conductor:run:{id}:calls   list of `ModelCall` JSON, in the order the calls finished

Counters only ever grow by HINCRBY inside one MULTI, so workers on different machines recording
at once add up exactly. Tokens counted against `limits.max_tokens_per_run` are every token the
model processed: uncached input, cache writes, cache reads and output.

`check` runs before each call and refuses one whose worst case (the prompt estimated locally at
~3.5 characters per token, all of it priced as a cache write, plus `max_tokens` of output) would
pass a limit. Parallel steps check independently, so a run can overshoot by at most one call
per step running at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from app.limits import Limits
from app.models import ModelCall
from app.pricing import worst_case_cost
from app.runs import CALLS_KEY, USAGE_KEY

if TYPE_CHECKING:
    from app.models import ModelRequest

ALL = "all"
# Spending recorded when the allowance was last renewed (`/agent retry`): limits count from here.
ALLOWANCE = "allowance"
CONFIG_HINT = "in .github/conductor.yml (or the server's default limits)"


class BudgetExceeded(Exception):
    """The next model call could pass the run's token or cost limit; nothing was sent."""

    def __init__(self, message: str, *, kind: str, limit: float, spent: float,
                 needed: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.limit = limit
        self.spent = spent
        self.needed = needed


@dataclass
class UsageTotal:
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_micro_usd: int = 0

    @property
    def tokens(self) -> int:
        return (self.input_tokens + self.output_tokens + self.cache_creation_input_tokens
                + self.cache_read_input_tokens)

    @property
    def cost_usd(self) -> float:
        return self.cost_micro_usd / 1_000_000


COUNTERS = tuple(f.name for f in fields(UsageTotal))


@dataclass
class UsageTotals:
    overall: UsageTotal = field(default_factory=UsageTotal)
    by_role: dict[str, UsageTotal] = field(default_factory=dict)
    by_model: dict[str, UsageTotal] = field(default_factory=dict)


def micro_usd(usd: float) -> int:
    return round(usd * 1_000_000)


async def usage_totals(redis: Redis, run_id: str) -> UsageTotals:
    """A run's usage overall, by role and by model (for the PR body and tracking comment)."""
    client: Any = redis  # redis-py's stubs type commands as "Awaitable | value"
    raw: dict[Any, Any] = await client.hgetall(USAGE_KEY.format(run_id=run_id))
    totals = UsageTotals()
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        scope, _, counter = name.rpartition("|")
        if counter not in COUNTERS:
            continue
        if scope == ALL:
            target = totals.overall
        elif scope.startswith("role:"):
            target = totals.by_role.setdefault(scope.removeprefix("role:"), UsageTotal())
        elif scope.startswith("model:"):
            target = totals.by_model.setdefault(scope.removeprefix("model:"), UsageTotal())
        else:
            continue
        setattr(target, counter, int(value))
    return totals


async def model_calls(redis: Redis, run_id: str, start: int = 0, end: int = -1) -> list[ModelCall]:
    """The run's recorded model calls, oldest first."""
    client: Any = redis
    raw: list[Any] = await client.lrange(CALLS_KEY.format(run_id=run_id), start, end)
    return [ModelCall.from_json(item) for item in raw]


class Budget:
    def __init__(self, redis: Redis, run_id: str, limits: Limits) -> None:
        self.redis: Any = redis  # redis-py's stubs type commands as "Awaitable | value"
        self.run_id = run_id
        self.limits = limits
        self.usage_key = USAGE_KEY.format(run_id=run_id)
        self.calls_key = CALLS_KEY.format(run_id=run_id)

    async def spent(self) -> tuple[int, float]:
        """Tokens and USD counted against the limits (since the allowance was last renewed)."""
        names = [f"{ALL}|{c}" for c in COUNTERS] + [f"{ALLOWANCE}|tokens", f"{ALLOWANCE}|cost"]
        values = [int(v or 0) for v in await self.redis.hmget(self.usage_key, names)]
        total = UsageTotal(**dict(zip(COUNTERS, values[: len(COUNTERS)], strict=True)))
        base_tokens, base_cost = values[len(COUNTERS):]
        return total.tokens - base_tokens, (total.cost_micro_usd - base_cost) / 1_000_000

    async def check(self, model: str, request: ModelRequest) -> None:
        """Raise `BudgetExceeded` if this call's worst case would pass a limit."""
        estimated_input = request.estimated_input_tokens()
        worst_tokens = estimated_input + request.max_tokens
        worst_cost = worst_case_cost(model, estimated_input, request.max_tokens,
                                     request.cache_ttl)
        tokens, usd = await self.spent()
        token_limit = self.limits.max_tokens_per_run
        cost_limit = self.limits.max_cost_usd_per_run
        if tokens + worst_tokens > token_limit:
            raise BudgetExceeded(
                f"token budget reached: this run has used {tokens:,} of its {token_limit:,} "
                f"tokens and the next {model} call could use up to {worst_tokens:,} more. "
                f"Raise limits.max_tokens_per_run {CONFIG_HINT} to allow more",
                kind="tokens", limit=token_limit, spent=tokens, needed=worst_tokens,
            )
        if usd + worst_cost > cost_limit:
            raise BudgetExceeded(
                f"cost budget reached: this run has spent ${usd:.2f} of its "
                f"${cost_limit:.2f} and the next {model} call could cost up to "
                f"${worst_cost:.2f} more. Raise limits.max_cost_usd_per_run {CONFIG_HINT} "
                "to allow more",
                kind="cost", limit=cost_limit, spent=usd, needed=worst_cost,
            )

    async def record(self, call: ModelCall) -> None:
        """Add the call's usage to the run's counters and append it to the ledger."""
        amounts = {
            "calls": 1,
            "input_tokens": call.input_tokens,
            "output_tokens": call.output_tokens,
            "cache_creation_input_tokens": call.cache_creation_input_tokens,
            "cache_read_input_tokens": call.cache_read_input_tokens,
            "cost_micro_usd": micro_usd(call.cost_usd),
        } if call.error is None else {"errors": 1}
        async with self.redis.pipeline(transaction=True) as pipe:
            for scope in (ALL, f"role:{call.role}", f"model:{call.model}"):
                for counter, amount in amounts.items():
                    if amount:
                        pipe.hincrby(self.usage_key, f"{scope}|{counter}", amount)
            pipe.rpush(self.calls_key, call.to_json())
            await pipe.execute()

    async def totals(self) -> UsageTotals:
        return await usage_totals(self.redis, self.run_id)

    async def renew(self) -> None:
        """Give the run a fresh allowance (`/agent retry`): limits count spending from now on;
        totals keep counting everything."""
        spent = (await self.totals()).overall
        await self.redis.hset(self.usage_key, mapping={
            f"{ALLOWANCE}|tokens": spent.tokens, f"{ALLOWANCE}|cost": spent.cost_micro_usd,
        })
