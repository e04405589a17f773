"""A run's token and cost budget, and its ledger of model calls, in Redis.

Keys:

    conductor:run:{id}:usage   hash of counters, "<scope>|<counter>"; scope is "all",
                               "role:<role>" or "model:<model id>"; counters are calls, errors,
                               input_tokens, output_tokens, cache_creation_input_tokens,
                               cache_read_input_tokens and cost_micro_usd (integer micro-dollars)
    conductor:run:{id}:calls   list of `ModelCall` JSON, in the order the calls finished
    conductor:run:{id}:holds   hash of reservations by calls in progress: hold id ->
                               "<tokens> <micro-USD> <lapses at, epoch seconds by Redis's clock>"

Counters only ever grow by HINCRBY inside one MULTI, so workers on different machines recording
at once add up exactly. Tokens counted against `limits.max_tokens_per_run` are every token the
model processed: uncached input, cache writes, cache reads and output.

`check` runs before each call and refuses one whose worst case (the prompt estimated locally at
~3.5 characters per token, all of it priced as a cache write, plus `max_tokens` of output) would
pass a limit. Otherwise it reserves that worst case, in the same Lua script, so that parallel
steps cannot together spend past a limit: each check counts what the calls still in progress
may spend. `record` frees the call's reservation in the MULTI that adds its real usage, and
`release` frees that of a call cancelled without an answer.

A reservation is a lease: it lapses `HOLD_SECONDS` after it was made unless its call, still
waiting for the model, renews it (`keep`, every third of that). So the reservation of a call
whose worker was killed, which nothing will free, stops counting `HOLD_SECONDS` (rounded up
to the second) after the kill, and the next check drops it; a live call's is never dropped,
unless its worker cannot reach Redis for that long. arq runs a killed job again only once the
job's in-progress key has lapsed, at least 10 s after the job's time ran out (which ends its
calls), so the re-run does not find its predecessor's reservations. Leases are read on
Redis's clock, so workers whose clocks disagree agree on them. `renew` (a fresh allowance)
drops every reservation.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.limits import Limits
from app.logs import get_logger
from app.models import ModelCall
from app.pricing import worst_case_cost
from app.runs import CALLS_KEY, HOLDS_KEY, USAGE_KEY

if TYPE_CHECKING:
    from app.models import ModelRequest

ALL = "all"
# Spending recorded when the allowance was last renewed (`/agent retry`): limits count from here.
ALLOWANCE = "allowance"
CONFIG_HINT = "in .github/conductor.yml (or the server's default limits)"
# How long a reservation counts without being renewed by its call: under the 10 s by which
# arq's re-run of a killed job trails the job's timeout (see above), even rounded up; long
# enough that two renewals in a row may fail (Redis slow or restarting) before it lapses.
HOLD_SECONDS = 8

log = get_logger(__name__)

# Seconds now by Redis's clock (TIME: seconds and microseconds), for the scripts below.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

# KEYS: usage, holds. ARGV: hold id, tokens, micro-USD, token limit, micro-USD limit, lease
# seconds. Returns {verdict, spent tokens, reserved tokens, spent micro-USD, reserved
# micro-USD}; the verdict is "ok" (and the hold is kept), "tokens" or "cost".
_RESERVE = _NOW + """
local u = redis.call('HMGET', KEYS[1], 'all|input_tokens', 'all|output_tokens',
  'all|cache_creation_input_tokens', 'all|cache_read_input_tokens', 'all|cost_micro_usd',
  'allowance|tokens', 'allowance|cost')
local n = {}
for i = 1, 7 do n[i] = tonumber(u[i]) or 0 end
local tokens = n[1] + n[2] + n[3] + n[4] - n[6]
local micro = n[5] - n[7]
local held_tokens, held_micro = 0, 0
local holds = redis.call('HGETALL', KEYS[2])
for i = 1, #holds, 2 do
  local t, c, expires = string.match(holds[i + 1], '^(%d+) (%d+) (%d+)$')
  if t == nil or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[2], holds[i])
  else
    held_tokens = held_tokens + tonumber(t)
    held_micro = held_micro + tonumber(c)
  end
end
local verdict = 'ok'
if tokens + held_tokens + tonumber(ARGV[2]) > tonumber(ARGV[4]) then
  verdict = 'tokens'
elseif micro + held_micro + tonumber(ARGV[3]) > tonumber(ARGV[5]) then
  verdict = 'cost'
else
  local lapses = math.ceil(now + tonumber(ARGV[6]))
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. lapses)
end
return {verdict, tokens, held_tokens, micro, held_micro}
"""

# KEYS: holds. ARGV: hold id, lease seconds. Moves the hold's lapse to a lease from now;
# returns 0 (and does nothing) when the hold is gone: freed, dropped by a check once it had
# lapsed, or dropped by `renew`.
_RENEW = _NOW + """
local hold = redis.call('HGET', KEYS[1], ARGV[1])
if not hold then return 0 end
local t, c = string.match(hold, '^(%d+) (%d+) ')
if t == nil then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], t .. ' ' .. c .. ' ' .. math.ceil(now + tonumber(ARGV[2])))
return 1
"""


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
    def __init__(self, redis: Redis, run_id: str, limits: Limits, *,
                 hold_seconds: int = HOLD_SECONDS) -> None:
        self.redis: Any = redis  # redis-py's stubs type commands as "Awaitable | value"
        self.run_id = run_id
        self.limits = limits
        self.hold_seconds = hold_seconds
        self.usage_key = USAGE_KEY.format(run_id=run_id)
        self.calls_key = CALLS_KEY.format(run_id=run_id)
        self.holds_key = HOLDS_KEY.format(run_id=run_id)

    async def spent(self) -> tuple[int, float]:
        """Tokens and USD counted against the limits (since the allowance was last renewed)."""
        names = [f"{ALL}|{c}" for c in COUNTERS] + [f"{ALLOWANCE}|tokens", f"{ALLOWANCE}|cost"]
        values = [int(v or 0) for v in await self.redis.hmget(self.usage_key, names)]
        total = UsageTotal(**dict(zip(COUNTERS, values[: len(COUNTERS)], strict=True)))
        base_tokens, base_cost = values[len(COUNTERS):]
        return total.tokens - base_tokens, (total.cost_micro_usd - base_cost) / 1_000_000

    async def check(self, model: str, request: ModelRequest) -> str:
        """Reserve this call's worst case and return the hold's id (for `record`), or raise
        `BudgetExceeded` if it could pass a limit together with the calls in progress."""
        estimated_input = request.estimated_input_tokens()
        worst_tokens = estimated_input + request.max_tokens
        worst_cost = worst_case_cost(model, estimated_input, request.max_tokens,
                                     request.cache_ttl)
        token_limit = self.limits.max_tokens_per_run
        cost_limit = self.limits.max_cost_usd_per_run
        hold = uuid.uuid4().hex
        verdict, tokens, held_tokens, micro, held_micro = await self.redis.eval(
            _RESERVE, 2, self.usage_key, self.holds_key, hold, worst_tokens,
            micro_usd(worst_cost), token_limit, micro_usd(cost_limit), self.hold_seconds)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        usd, held_usd = micro / 1_000_000, held_micro / 1_000_000
        if verdict == "tokens":
            held = f" ({held_tokens:,} are reserved by calls in progress)" if held_tokens else ""
            raise BudgetExceeded(
                f"token budget reached: this run has used {tokens:,} of its {token_limit:,} "
                f"tokens{held} and the next {model} call could use up to {worst_tokens:,} "
                f"more. Raise limits.max_tokens_per_run {CONFIG_HINT} to allow more",
                kind="tokens", limit=token_limit, spent=tokens + held_tokens,
                needed=worst_tokens,
            )
        if verdict == "cost":
            held = f" (${held_usd:.2f} is reserved by calls in progress)" if held_micro else ""
            raise BudgetExceeded(
                f"cost budget reached: this run has spent ${usd:.2f} of its "
                f"${cost_limit:.2f}{held} and the next {model} call could cost up to "
                f"${worst_cost:.2f} more. Raise limits.max_cost_usd_per_run {CONFIG_HINT} "
                "to allow more",
                kind="cost", limit=cost_limit, spent=usd + held_usd, needed=worst_cost,
            )
        return hold

    def keep(self, hold: str) -> asyncio.Task[None]:
        """Renew `hold` while its call is in progress; cancel the task when the call ends.
        A worker that dies stops renewing, and its reservation lapses `hold_seconds` later."""
        return asyncio.create_task(self._keep(hold), name=f"budget hold {hold}")

    async def _keep(self, hold: str) -> None:
        while True:
            await asyncio.sleep(self.hold_seconds / 3)
            try:
                kept = await self.redis.eval(_RENEW, 1, self.holds_key, hold, self.hold_seconds)
            except RedisError as exc:
                # The next renewal may still come before the hold lapses; the call goes on.
                log.warning("budget hold not renewed", run=self.run_id, error=str(exc))
                continue
            if not kept:
                # Dropped by a fresh allowance (`/agent retry`), or lapsed while this worker
                # could not reach Redis: the call goes on, its usage is recorded as ever.
                log.warning("budget hold gone before its call ended", run=self.run_id)
                return

    async def record(self, call: ModelCall, hold: str | None = None) -> None:
        """Add the call's usage to the run's counters, append it to the ledger and free the
        reservation `check` made for it."""
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
            if hold is not None:
                pipe.hdel(self.holds_key, hold)
            await pipe.execute()

    async def release(self, hold: str) -> None:
        """Free a reservation whose call ended without an answer (cancelled)."""
        await self.redis.hdel(self.holds_key, hold)

    async def totals(self) -> UsageTotals:
        return await usage_totals(self.redis, self.run_id)

    async def renew(self) -> None:
        """Give the run a fresh allowance (`/agent retry`): limits count spending from now on;
        totals keep counting everything. The run is stopped, so any reservation left is a dead
        worker's."""
        spent = (await self.totals()).overall
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.usage_key, mapping={
                f"{ALLOWANCE}|tokens": spent.tokens, f"{ALLOWANCE}|cost": spent.cost_micro_usd,
            })
            pipe.delete(self.holds_key)
            await pipe.execute()
