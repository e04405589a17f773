"""Steps at once per installation, over all its runs and every worker: slots held in Redis.

One team labelling twenty issues at once would otherwise get twenty runs of four steps each
working together: eighty model conversations billed at once, and the installation's GitHub
limits shared among them. A step takes one of its installation's
`CONDUCTOR_INSTALLATION_CONCURRENCY` slots before it starts and gives it back when it ends
(done, failed or aborted). A run that finds none free waits in a queue of the installation's
waiting runs, oldest first; each slot given back wakes the run that has waited longest, and
the periodic reconcile nudges every running run in any case.

A slot is a lease: a worker that dies without giving it back loses it an hour on (a step's
job times out long before).
"""

from __future__ import annotations

import time
from typing import Any

from app.constants import Job
from app.services import Services

SLOTS_KEY = "conductor:installation:{installation}:steps"  # zset: step owner -> lease end
WAITING_KEY = "conductor:installation:{installation}:waiting"  # zset: run id -> first wait
SLOT_LEASE_SECONDS = 3600
WAITING_TTL_SECONDS = 24 * 3600

# KEYS: slots, waiting. ARGV: owner, limit, lease (s), run id, waiting ttl (s).
# Answers 1 when the owner holds a slot (already, or now), 0 when the run was already
# waiting, -1 when it waits from now.
_TAKE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1])
    or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 1
end
local added = redis.call('ZADD', KEYS[2], 'NX', now, ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return -added
"""

# KEYS: slots, waiting. ARGV: owner. Answers the run to wake (the longest waiting), if any
# and if the owner held a slot.
_GIVE_BACK = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return false
end
local oldest = redis.call('ZPOPMIN', KEYS[2])
return oldest[1] or false
"""


def _keys(installation_id: int) -> list[str]:
    return [SLOTS_KEY.format(installation=installation_id),
            WAITING_KEY.format(installation=installation_id)]


async def take_slot(svc: Services, installation_id: int, owner: str, run_id: str) -> int:
    """1 when `owner` (a run's step) holds one of the installation's slots; otherwise the
    run is queued to be woken: 0 if it was already waiting, -1 if it waits from now."""
    limit = svc.settings.conductor_installation_concurrency
    answer: Any = await svc.redis.eval(_TAKE, 2, *_keys(installation_id), owner, limit,
                                       SLOT_LEASE_SECONDS, run_id, WAITING_TTL_SECONDS)
    return int(answer)


async def give_back_slot(svc: Services, installation_id: int, owner: str) -> None:
    """Free `owner`'s slot, if it held one, and wake the run that has waited longest."""
    woken: Any = await svc.redis.eval(_GIVE_BACK, 2, *_keys(installation_id), owner)
    if woken:
        run_id = woken.decode() if isinstance(woken, bytes) else str(woken)
        await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run_id, "slot",
                                    _job_id=f"schedule:{run_id}:slot:{time.time()}")
