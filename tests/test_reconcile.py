"""The periodic reconcile reaches every run that has not ended, however many came after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.jobs import Job as ArqJob
from arq.jobs import JobStatus

from app.constants import QUEUE_NAME
from app.redis import RedisProcess
from app.runs import RUN_KEY, Run, RunStatus
from app.scheduling import reconcile
from app.services import Services
from tests.conftest import services_for

HEAD = "c0ffee" * 6 + "abcd"


@pytest.fixture
async def svc(redis: Any, redis_server: RedisProcess,
              settings_factory: Any) -> AsyncIterator[Services]:
    async with services_for(settings_factory(), redis_server.url) as services:
        yield services


def make_run(run_id: str, number: int, created_at: float, status: RunStatus) -> Run:
    return Run(id=run_id, repo="acme/shop", installation_id=1, issue_number=number,
               issue_title="t", triggered_by="alice", trigger_delivery=f"d-{run_id}",
               attempt=1, branch=f"conductor/issue-{number}-t", created_at=created_at,
               status=status, head_sha=HEAD if status is RunStatus.VERIFYING else None)


async def test_a_run_waiting_on_ci_is_reconciled_after_hundreds_of_newer_runs(
    svc: Services,
) -> None:
    # Weeks on many repositories: one run waits on CI (a stuck check that sends no more
    # webhooks) while 300 later runs come and go. Only the reconcile can time its CI out.
    waiting = make_run("old-1-1-aaaaaa", 1, 1_000.0, RunStatus.VERIFYING)
    await svc.store.create(waiting)
    for i in range(300):
        run = make_run(f"new-{i}-1-bbbbbb", 100 + i, 2_000.0 + i, RunStatus.RUNNING)
        await svc.store.create(run)
        await svc.store.set_fields(run.id, status=RunStatus.DONE)

    outcome = await reconcile({"services": svc})

    assert outcome == "nudged 1 runs"
    queued = [k.decode() for k in await svc.redis.zrange(QUEUE_NAME, 0, -1)]
    [job_id] = [k for k in queued if k.startswith(f"ci:{waiting.id}:")]
    assert await ArqJob(job_id, svc.redis, _queue_name=QUEUE_NAME).status() is JobStatus.queued


async def test_a_run_leaves_the_active_index_when_it_ends_and_returns_on_retry(
    svc: Services,
) -> None:
    run = make_run("r-1-1-cccccc", 1, 1_000.0, RunStatus.RUNNING)
    await svc.store.create(run)
    assert [r.id for r in await svc.store.active()] == [run.id]
    await svc.store.set_fields(run.id, status=RunStatus.NEEDS_HUMAN)
    assert await svc.store.active() == []
    await svc.store.set_fields(run.id, status=RunStatus.RUNNING)  # `/agent retry`
    assert [r.id for r in await svc.store.active()] == [run.id]


@pytest.mark.parametrize(("status", "job"), [
    (RunStatus.PLANNING, "plan"), (RunStatus.FINALIZING, "finalize"), (RunStatus.FIXING, "ci-fix"),
])
async def test_a_run_no_job_carries_on_is_started_again_but_not_while_one_does(
    svc: Services, status: RunStatus, job: str
) -> None:
    # A worker died between saving the run's new status and queueing the job for it.
    run = make_run("stuck-1-1-dddddd", 1, 1_000.0, status)
    run.head_sha = HEAD
    await svc.store.create(run)
    assert await reconcile({"services": svc}) == "nudged 0 runs"  # a job may still be coming

    # Longer ago than any job can run (saving the record as it is, not through the store,
    # which would stamp it now).
    stored = await svc.store.get(run.id)
    assert stored is not None
    stored.updated_at -= svc.settings.conductor_job_timeout + 61
    await svc.redis.set(RUN_KEY.format(run_id=run.id), stored.to_json())
    # A job of the run waiting its turn (deferred after a rate limit, say): nothing to do.
    await svc.redis.enqueue_job("refresh_tracking", run.id, _job_id=f"tracking:{run.id}:1",
                                _defer_by=600)
    assert await reconcile({"services": svc}) == "nudged 0 runs"

    await svc.redis.delete(f"arq:job:tracking:{run.id}:1")
    await svc.redis.zrem(QUEUE_NAME, f"tracking:{run.id}:1")
    assert await reconcile({"services": svc}) == "nudged 1 runs"
    queued = [k.decode() for k in await svc.redis.zrange(QUEUE_NAME, 0, -1)]
    assert [k for k in queued if k.startswith(f"{job}:{run.id}:reconcile-")]
    # The job it queued carries the run on now: the next tick leaves it be.
    assert await reconcile({"services": svc}) == "nudged 0 runs"
    notes = [e["message"] for e in await svc.store.timeline(run.id)]
    assert any("no job was carrying the run on" in n for n in notes)
