"""Steps at once per installation, over all its runs: a run past the limit waits, is told why
on its timeline, and starts when a step of another run frees a slot. Real Redis, the real
scheduling jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.redis import RedisProcess
from app.runs import Run
from app.scheduler import StepState
from app.scheduling import schedule_run
from app.services import Services
from app.slots import SLOTS_KEY
from app.stepper import _finish
from app.stopping import abort_steps
from tests.conftest import services_for
from tests.test_concurrent_runs import queued_jobs, running_run

LIMIT = 2


@pytest.fixture
async def svc(redis: Any, redis_server: RedisProcess,
              settings_factory: Any) -> AsyncIterator[Services]:
    settings = settings_factory(conductor_installation_concurrency=LIMIT)
    async with services_for(settings, redis_server.url) as services:
        yield services


async def schedule(svc: Services, *runs: Run) -> None:
    for run in runs:
        await schedule_run({"services": svc}, run.id, "plan")


async def state(svc: Services, run: Run, step: str = "edit") -> str:
    record = await svc.store.step(run.id, step)
    assert record is not None
    return record.state


async def waits(svc: Services, run: Run) -> list[str]:
    return [e["message"] for e in await svc.store.timeline(run.id) if e["kind"] == "wait"]


async def finish(svc: Services, run: Run, step: str = "edit") -> None:
    record = await svc.store.step(run.id, step)
    assert record is not None
    await _finish(svc, run, record, StepState.DONE)


async def woken(svc: Services, run: Run) -> bool:
    return any(job.startswith(f"schedule:{run.id}:slot:") for job in await queued_jobs(svc))


async def test_a_run_past_the_installations_limit_waits_and_says_why(svc: Services) -> None:
    busy = await running_run(svc, "acme/widgets", 1, ["a.py"], ["b.py"])
    waiting = await running_run(svc, "acme/gadgets", 2, ["c.py"])
    elsewhere = await running_run(svc, "other/tools", 3, ["d.py"], installation_id=2)
    await schedule(svc, busy, waiting, elsewhere)

    assert [await state(svc, busy), await state(svc, busy, "edit2")] == ["running", "running"]
    assert await state(svc, waiting) == "pending"
    assert await state(svc, elsewhere) == "running"  # another installation's slots are its own
    (message,) = await waits(svc, waiting)
    assert "2 steps of this installation's runs are running at once" in message
    assert "CONDUCTOR_INSTALLATION_CONCURRENCY" in message

    # Nudged again while nothing freed (the periodic reconcile): one wait on the timeline.
    await schedule(svc, waiting, waiting)
    assert await state(svc, waiting) == "pending"
    assert len(await waits(svc, waiting)) == 1


async def test_a_finished_step_wakes_the_waiting_run_which_then_starts(svc: Services) -> None:
    busy = await running_run(svc, "acme/widgets", 1, ["a.py"], ["b.py"])
    waiting = await running_run(svc, "acme/gadgets", 2, ["c.py"])
    await schedule(svc, busy, waiting)
    assert not await woken(svc, waiting)

    await finish(svc, busy, "edit")

    assert await woken(svc, waiting)
    await schedule(svc, waiting)  # the job the wake-up queued
    assert await state(svc, waiting) == "running"
    assert await svc.redis.zcard(SLOTS_KEY.format(installation=1)) == LIMIT


async def test_the_run_that_waited_longest_is_woken_first(svc: Services) -> None:
    busy = await running_run(svc, "acme/widgets", 1, ["a.py"], ["b.py"])
    first = await running_run(svc, "acme/gadgets", 2, ["c.py"])
    second = await running_run(svc, "acme/gizmos", 3, ["d.py"])
    await schedule(svc, busy, first, second)

    await finish(svc, busy, "edit")

    assert await woken(svc, first)
    assert not await woken(svc, second)
    await finish(svc, busy, "edit2")
    assert await woken(svc, second)


async def test_cancelling_a_run_frees_its_slots_for_the_waiting_run(svc: Services) -> None:
    cancelled = await running_run(svc, "acme/widgets", 1, ["a.py"], ["b.py"])
    waiting = await running_run(svc, "acme/gadgets", 2, ["c.py"])
    await schedule(svc, cancelled, waiting)

    assert await abort_steps(svc, cancelled) == 2

    assert await woken(svc, waiting)
    await schedule(svc, waiting)
    assert await state(svc, waiting) == "running"


async def test_a_slot_a_dead_worker_never_gave_back_lapses(svc: Services) -> None:
    busy = await running_run(svc, "acme/widgets", 1, ["a.py"], ["b.py"])
    waiting = await running_run(svc, "acme/gadgets", 2, ["c.py"])
    await schedule(svc, busy, waiting)
    # The lease of one of busy's slots ran out (its worker died an hour ago, say).
    await svc.redis.zadd(SLOTS_KEY.format(installation=1), {f"{busy.id}:edit": 1})

    await schedule(svc, waiting)

    assert await state(svc, waiting) == "running"


async def test_a_step_run_again_keeps_its_own_slot(svc: Services) -> None:
    # arq runs a job at least once: the same step scheduled again after a worker died holds
    # one slot, not two.
    run = await running_run(svc, "acme/widgets", 1, ["a.py"])
    await schedule(svc, run)
    record = await svc.store.step(run.id, "edit")
    assert record is not None
    record.state = StepState.PENDING.value  # as if its start were taken again
    await svc.store.save_step(run.id, record)
    await schedule(svc, run)
    assert await svc.redis.zcard(SLOTS_KEY.format(installation=1)) == 1
