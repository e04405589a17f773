"""A run stops once: two jobs stopping it, one after the other with a stale copy or at the same
time, make one notice, one reason and one timeline entry; a stop whose notice failed to post
is completed by the job's next try. The real stop against the GitHub emulator and a real
Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from githubkit.exception import RequestFailed

from app.runs import Run, RunStatus
from app.services import Services
from app.stopping import stop_run
from tests import test_triggers
from tests.emulators.github.testing import Env

env, svc = test_triggers.env, test_triggers.svc  # the same fixtures
started, bot_comments, comment = (test_triggers.started, test_triggers.bot_comments,
                                  test_triggers.comment)

BUDGET = "budget exhausted: the run's token budget (max_tokens_per_run 14500) is used up"
STEP_FAILED = "step b failed (step b: " + BUDGET + ")"


def notices(env: Env, run: Run) -> list[str]:
    return [b for b in bot_comments(env, run.issue_number) if "stopped run" in b]


async def stops(svc: Services, run: Run) -> list[str]:
    return [e["message"] for e in await svc.store.timeline(run.id) if e["kind"] == "stop"]


async def test_a_second_stop_with_a_stale_copy_neither_tells_nor_overwrites(
    env: Env, svc: Services
) -> None:
    run = await started(env, svc)
    stale = dataclasses.replace(run)  # read before the first stop: still active
    await stop_run(svc, run, RunStatus.NEEDS_HUMAN, BUDGET)
    await stop_run(svc, stale, RunStatus.NEEDS_HUMAN, STEP_FAILED)

    [notice] = notices(env, run)
    assert BUDGET in notice and "step b failed" not in notice
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.stop_reason == BUDGET
    assert await stops(svc, run) == [f"needs_human: {BUDGET}"]
    assert (stale.status, stale.stop_reason) == (RunStatus.NEEDS_HUMAN, BUDGET)


async def test_two_stops_at_once_make_one_notice_with_the_stop_that_claimed_first(
    env: Env, svc: Services
) -> None:
    run = await started(env, svc)
    await asyncio.gather(
        stop_run(svc, dataclasses.replace(run), RunStatus.NEEDS_HUMAN, BUDGET),
        stop_run(svc, dataclasses.replace(run), RunStatus.CANCELLED, "cancelled by @alice"))

    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.stop_reason in (BUDGET, "cancelled by @alice")
    [notice] = notices(env, run)
    assert str(fresh.stop_reason) in notice
    assert await stops(svc, run) == [f"{fresh.status.value}: {fresh.stop_reason}"]


async def test_a_notice_that_failed_to_post_is_posted_by_the_next_try(
    env: Env, svc: Services
) -> None:
    run = await started(env, svc)
    # A 502 (a POST is not repeated in place: the job's next try is what posts again).
    env.state.add_fault("status", method="POST",
                        path=f"/repos/*/issues/{run.issue_number}/comments", status=502,
                        count=1)
    with pytest.raises(RequestFailed):
        await stop_run(svc, dataclasses.replace(run), RunStatus.NEEDS_HUMAN, BUDGET)
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.status.active  # the job runs again

    assert notices(env, run) == []

    await stop_run(svc, dataclasses.replace(run), RunStatus.NEEDS_HUMAN, BUDGET)  # next try
    await stop_run(svc, dataclasses.replace(run), RunStatus.NEEDS_HUMAN, STEP_FAILED)
    [notice] = notices(env, run)
    assert BUDGET in notice
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.status is RunStatus.NEEDS_HUMAN
    assert fresh.stop_reason == BUDGET
    assert await stops(svc, run) == [f"needs_human: {BUDGET}"]


async def test_a_retried_run_that_stops_again_tells_again(env: Env, svc: Services) -> None:
    run = await started(env, svc)
    await stop_run(svc, run, RunStatus.NEEDS_HUMAN, BUDGET)
    assert (await comment(env, svc, run.issue_number, "/agent retry")).startswith("retry 1")
    retried = await svc.store.get(run.id)
    assert retried is not None and retried.status.active

    await stop_run(svc, retried, RunStatus.NEEDS_HUMAN, "the planner did not finish")
    said = notices(env, run)
    assert len(said) == 2 and "the planner did not finish" in said[1]
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.stop_reason == "the planner did not finish"


async def test_a_stop_that_failed_leaves_no_claim_on_the_next_stop(
    env: Env, svc: Services
) -> None:
    # The run may go on after a failed stop (someone pushes, say): what stops it later says
    # why it stops then.
    run = await started(env, svc)
    env.state.add_fault("status", method="POST",
                        path=f"/repos/*/issues/{run.issue_number}/labels", status=502, count=3)
    with pytest.raises(RequestFailed):
        await stop_run(svc, dataclasses.replace(run), RunStatus.NEEDS_HUMAN, BUDGET)

    await stop_run(svc, dataclasses.replace(run), RunStatus.CANCELLED, "the issue was closed")
    [notice] = notices(env, run)
    assert "the issue was closed" in notice and "budget" not in notice
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.status is RunStatus.CANCELLED
    assert await stops(svc, run) == ["cancelled: the issue was closed"]
