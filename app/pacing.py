"""GitHub write pacing, shared in Redis by every worker of every machine.

GitHub's secondary rate limits allow no more than 80 content-creating requests a minute and
500 an hour; past them it answers 403 and may keep refusing for a while. An installation with
several runs going, on several worker processes, could pass them without any one process
noticing. So each installation's writes (POST, PUT, PATCH, DELETE: comments, reactions,
labels, check runs, pull requests; GitHub does not say exactly which count, so all do) take a
slot in one Redis sorted set first (`GITHUB_WRITES_KEY`), scored by Redis's own clock:

- a slot free in every window: the write goes out at once (the common case: a run makes a few
  writes a minute);
- GitHub's advice of a second between one client's writes is one more window (one write in
  any second), so a burst (a plan's comment, labels, a check run) is spread out in place;
- none free for a few seconds: the write waits in place, then tries again;
- none free for longer: `RateLimited` with the wait, so that the job is deferred and its worker
  slot freed, as for GitHub's own rate limits (`workers.main._backoff`).

This module keeps the count; `app.github.PacedWrites` asks it before each write.

Reads are not paced. A write that fails after taking its slot still counts: GitHub may have
counted it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis

from app.constants import GITHUB_WRITES_KEY

# KEYS: the installation's sorted set of writes (member: a random id, score: Redis time in ms).
# ARGV: the number of windows, then for each its limit and its length in ms, then a member id.
# Answers 0 when the write took a slot, otherwise the milliseconds until one frees in every
# window (nothing is recorded then).
RESERVE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local windows = tonumber(ARGV[1])
local longest = 0
for i = 1, windows do
  longest = math.max(longest, tonumber(ARGV[2 * i + 1]))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local wait = 0
for i = 1, windows do
  local limit, span = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local taken = redis.call('ZCOUNT', KEYS[1], '(' .. (now - span), '+inf')
  if taken >= limit then
    -- The write whose leaving the window frees a slot.
    local leaving = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - span), '+inf',
                               'WITHSCORES', 'LIMIT', taken - limit, 1)
    wait = math.max(wait, tonumber(leaving[2]) + span - now, 1)
  end
end
if wait > 0 then
  return wait
end
redis.call('ZADD', KEYS[1], now, ARGV[2 * windows + 2])
redis.call('PEXPIRE', KEYS[1], longest)
return 0
"""


class WriteBudget:
    """Per-installation limits on GitHub writes: at most `limit` in any `window`, for each."""

    def __init__(self, redis: Redis, windows: Sequence[tuple[int, timedelta]]) -> None:
        self.redis = redis
        self.windows = [(limit, window) for limit, window in windows if limit > 0]
        self._script = redis.register_script(RESERVE_SCRIPT)

    @property
    def enabled(self) -> bool:
        return bool(self.windows)

    async def reserve(self, installation_id: int) -> float:
        """Take a write slot for the installation: 0.0, or else (nothing taken) the seconds
        until one frees."""
        args: list[Any] = [len(self.windows)]
        for limit, window in self.windows:
            args += [limit, int(window.total_seconds() * 1000)]
        args.append(uuid.uuid4().hex)
        wait_ms = await self._script(keys=[GITHUB_WRITES_KEY.format(installation=installation_id)],
                                     args=args)
        return int(wait_ms) / 1000

    def describe(self) -> str:
        """The limits in words: "80 a minute, 500 an hour and one every 1 s"."""
        parts = [_limit(limit, window) for limit, window in self.windows]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _limit(limit: int, window: timedelta) -> str:
    seconds = window.total_seconds()
    if seconds == 3600:
        return f"{limit} an hour"
    if seconds == 60:
        return f"{limit} a minute"
    if limit == 1:
        return f"one every {seconds:g} s"
    return f"{limit} per {seconds:g} s"
