"""Run state in a real Redis: one run per issue, fenced path locks, an append-only timeline."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.runs import Run, RunStatus, RunStore, StepRecord, new_run_id

BRANCH = "conductor/issue-1-x"


def make_run(run_id: str = "r-1") -> Run:
    return Run(id=run_id, repo="acme/shop", installation_id=1, issue_number=7,
               issue_title="Add health endpoint", triggered_by="alice",
               trigger_delivery="d-1", attempt=1, branch="conductor/issue-7-add-health")


async def test_only_one_run_claims_an_issue_even_when_many_race(redis: aioredis.Redis) -> None:
    store = RunStore(redis)
    holders = await asyncio.gather(
        *(store.claim_issue("acme/shop", 7, f"run-{i}") for i in range(20))
    )
    winners = {h for h in holders}
    assert len(winners) == 1
    winner = winners.pop()
    assert await store.active_run_id("acme/shop", 7) == winner

    await store.release_issue("acme/shop", 7, "someone-else")
    assert await store.active_run_id("acme/shop", 7) == winner
    await store.release_issue("acme/shop", 7, winner)
    assert await store.active_run_id("acme/shop", 7) is None
    assert await store.claim_issue("acme/shop", 7, "next") == "next"


async def test_run_and_steps_round_trip(redis: aioredis.Redis) -> None:
    store = RunStore(redis)
    run = make_run()
    await store.create(run)
    await store.create(make_run())  # a re-executed job does not overwrite
    run.status = RunStatus.RUNNING
    run.plan = {"summary": "s", "steps": []}
    await store.save(run)
    loaded = await store.get("r-1")
    assert loaded is not None and loaded.status is RunStatus.RUNNING and loaded.plan == run.plan
    assert [r.id for r in await store.recent()] == ["r-1"]

    await store.init_steps("r-1", ["a", "b"])
    await store.save_step("r-1", StepRecord(id="a", state="done", commit="abc"))
    await store.init_steps("r-1", ["a", "b"])  # idempotent: keeps progress
    steps = await store.steps("r-1")
    assert steps["a"].state == "done" and steps["a"].commit == "abc"
    assert steps["b"].state == "pending"


async def test_timeline_is_append_only_and_ordered(redis: aioredis.Redis) -> None:
    store = RunStore(redis)
    for i in range(5):
        await store.log("r-1", "step", f"event {i}", step="a", n=i)
    entries = await store.timeline("r-1")
    assert [e["message"] for e in entries] == [f"event {i}" for i in range(5)]
    assert all(entries[i]["at"] <= entries[i + 1]["at"] for i in range(4))
    assert entries[0]["data"] == {"n": 0} and entries[0]["step"] == "a"


async def test_path_locks_exclude_other_owners_and_fence_increases(
    redis: aioredis.Redis,
) -> None:
    store = RunStore(redis)
    first = await store.lock_paths("acme/shop", BRANCH, ["src/api/**", "tests/test_api.py"],
                                   "r:a", 60)
    assert first is not None
    assert await store.lock_paths("acme/shop", BRANCH, ["tests/test_api.py"], "r:b", 60) is None
    # the refused owner took nothing with it
    assert await store.lock_paths("acme/shop", BRANCH, ["docs/**"], "r:c", 60) is not None
    again = await store.lock_paths("acme/shop", BRANCH, ["src/api/**"], "r:a", 60)  # re-run of a
    assert again is not None and again > first

    await store.unlock_paths("acme/shop", BRANCH, ["tests/test_api.py"], "r:b")  # not the holder
    assert await store.lock_paths("acme/shop", BRANCH, ["tests/test_api.py"], "r:b", 60) is None
    await store.unlock_paths("acme/shop", BRANCH, ["src/api/**", "tests/test_api.py"], "r:a")
    assert await store.lock_paths("acme/shop", BRANCH, ["tests/test_api.py"], "r:b", 60) is not None


async def test_run_lock_is_exclusive_and_released_only_by_its_token(
    redis: aioredis.Redis,
) -> None:
    store = RunStore(redis)
    token = await store.lock_run("r-1")
    assert token is not None
    assert await store.lock_run("r-1") is None
    await store.unlock_run("r-1", "wrong")
    assert await store.lock_run("r-1") is None
    await store.unlock_run("r-1", token)
    assert await store.lock_run("r-1") is not None


def test_run_ids_name_the_repo_and_issue() -> None:
    run_id = new_run_id("acme/Shop", 7, 2)
    assert run_id.startswith("shop-7-2-")
