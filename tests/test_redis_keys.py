"""Weeks of runs and deliveries leave Redis bounded: every key a run or a delivery writes
expires (or is one bounded, shared key), and old runs leave the index."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from arq.connections import create_pool

from app.budget import Budget
from app.constants import QUEUE_NAME
from app.enqueue import delivery_queue
from app.events import recent_events
from app.limits import Limits
from app.models import ModelCall
from app.processes import build_worker
from app.redis import RedisProcess, arq_settings
from app.runs import RUN_RETENTION, RUNS_INDEX, Run, RunStatus, RunStore, StepRecord
from tests.conftest import load_fixture

# Keys that hold one bounded thing each, for the whole deployment (not per run or delivery).
BOUNDED = {
    "conductor:events",  # trimmed to the latest 1,000
    "conductor:metrics",  # trimmed to the latest 10,000
    "conductor:runs",  # trimmed to RUN_RETENTION (asserted below)
    "conductor:lock:fence",  # one counter
    "conductor:installations",  # one member per installation
}


def make_run(i: int, created_at: float) -> Run:
    return Run(id=f"shop-{i}-1-abcdef", repo="acme/shop", repo_id=900 + i % 3,
               installation_id=1, issue_number=i,
               issue_title="t", triggered_by="alice", trigger_delivery=f"d-{i}", attempt=1,
               branch=f"conductor/issue-{i}-t", created_at=created_at)


async def _a_run_from_start_to_end(store: RunStore, redis: Any, run: Run,
                                   end: RunStatus) -> None:
    await store.next_attempt(run.repo_key, run.issue_number)
    assert await store.claim_issue(run.repo_key, run.issue_number, run.id) == run.id
    await store.create(run)
    await store.set_fields(run.id, status=RunStatus.RUNNING)
    await store.init_steps(run.id, ["a", "b"])
    await store.save_step(run.id, StepRecord(id="a", state="done", commit="abc"))
    await store.log(run.id, "step", "started", step="a")
    await Budget(redis, run.id, Limits()).record(ModelCall(
        run_id=run.id, role="implementer", model="claude-sonnet-4-5", started_at=time.time(),
        latency_ms=10, input_tokens=100, output_tokens=10))
    token = await store.lock_run(run.id)
    assert token is not None
    await store.unlock_run(run.id, token)
    fence = await store.lock_paths(run.repo_key, run.branch, ["a.py"], f"{run.id}:a", 3600)
    assert fence is not None
    await store.unlock_paths(run.repo_key, run.branch, ["a.py"], f"{run.id}:a")
    await store.map_commit(run.repo_key, "f" * 40, run.id)
    await store.set_fields(run.id, status=end, stop_reason="test")
    await store.log(run.id, "stop", f"{end.value}: test")
    await store.release_issue(run.repo_key, run.issue_number, run.id)


async def test_runs_and_deliveries_leave_only_expiring_or_bounded_keys(
    redis: aioredis.Redis, redis_server: RedisProcess, settings_factory: Any
) -> None:
    store = RunStore(redis)
    ends = [RunStatus.DONE, RunStatus.NEEDS_HUMAN, RunStatus.CANCELLED, RunStatus.FAILED]
    long_ago = time.time() - RUN_RETENTION - 3600
    for i in range(40):  # runs from a quarter ago, then this week's
        await _a_run_from_start_to_end(store, redis, make_run(i, long_ago + i), ends[i % 4])
    for i in range(40, 80):
        await _a_run_from_start_to_end(store, redis, make_run(i, time.time()), ends[i % 4])

    pool = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    payload = load_fixture("installation.created.1.json")
    for i in range(20):
        assert await delivery_queue(pool).accept(f"delivery-{i}", "installation",
                                                 "installation", payload)
    worker = build_worker(settings_factory(), redis_server.url, burst=True, poll_delay=0.01)
    await worker.main()
    await worker.close()
    await pool.aclose()
    # Every delivery was handled (the reconcile cron may run too, if the burst spans :00/:30).
    assert worker.jobs_failed == 0
    handled = {e["delivery"] for e in await recent_events(redis, 100)}
    assert handled == {f"delivery-{i}" for i in range(20)}

    lasting = []
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        ttl = await redis.ttl(key)
        if ttl == -1 and key not in BOUNDED and not key.startswith("conductor:installation:"):
            lasting.append(key)
        assert ttl <= RUN_RETENTION, key
    assert lasting == []
    assert await redis.zcard(RUNS_INDEX) == 40  # the quarter-old runs left the index
