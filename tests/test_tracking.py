"""The tracking comment's debounce and the run record's atomic updates, on a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from arq import create_pool

from app import tracking
from app.constants import QUEUE_NAME
from app.redis import arq_settings
from app.runs import Run, RunStore


def _run(run_id: str = "widgets-1-abc") -> Run:
    return Run(id=run_id, repo="acme/widgets", installation_id=1, issue_number=1,
               issue_title="t", triggered_by="alice", trigger_delivery="d", attempt=1,
               branch="conductor/issue-1-t")


class _Services:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.store = RunStore(redis)


async def test_many_refresh_requests_make_one_deferred_edit(redis: Any, redis_server: Any) -> None:
    pool = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    try:
        svc: Any = _Services(pool)
        await asyncio.gather(*(tracking.soon(svc, "widgets-1-abc") for _ in range(20)))
        queued = await pool.zrange(QUEUE_NAME, 0, -1, withscores=True)
        assert len(queued) == 1
        job_id, score = queued[0]
        assert job_id.decode().startswith("tracking:widgets-1-abc:")
        # Deferred, not immediate: the edits of the next second are coalesced into it.
        now_ms = (await pool.time())[0] * 1000
        assert score >= now_ms + 0.5 * tracking.DEBOUNCE * 1000
        # Once the job has started (it clears the flag), the next request schedules anew.
        await pool.delete(tracking.DUE_KEY.format(run_id="widgets-1-abc"))
        await tracking.soon(svc, "widgets-1-abc")
        assert await pool.zcard(QUEUE_NAME) == 2
    finally:
        await pool.aclose()


async def test_concurrent_field_updates_keep_every_field(redis: Any, redis_server: Any) -> None:
    pool = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    try:
        store = RunStore(pool)
        await store.create(_run())
        await asyncio.gather(
            store.set_fields("widgets-1-abc", tracking_comment_id=42),
            store.set_fields("widgets-1-abc", head_sha="a" * 40),
            store.set_fields("widgets-1-abc", pr_number=7),
            *(store.update("widgets-1-abc", lambda r: r.risk_flags.append("x"))
              for _ in range(10)),
        )
        run = await store.get("widgets-1-abc")
        assert run is not None
        assert (run.tracking_comment_id, run.head_sha, run.pr_number) == (42, "a" * 40, 7)
        assert run.risk_flags == ["x"] * 10
        assert await store.set_fields("no-such-run", pr_number=1) is None
    finally:
        await pool.aclose()
