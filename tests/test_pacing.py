"""GitHub writes stay within GitHub's secondary limits per installation, counted by every
worker together in Redis: a real Redis, the real client, and the GitHub emulator, which
refuses content creation past the limits as GitHub does."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from arq import Retry

from app.github import GitHubApp, RateLimited
from app.pacing import WriteBudget
from app.settings import Settings
from tests import test_triggers
from tests.emulators.github.testing import Env
from workers.main import _guarded

env = test_triggers.env  # the same fixture

REPO = "acme/widgets"
OWNER, NAME = REPO.split("/")
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)


def github_app(env: Env, tmp_path: Path, redis: Any | None, **values: Any) -> GitHubApp:
    """A worker's GitHub client; each call is another worker process's."""
    settings = Settings(_env_file=None, github_app_id=env.state.app_id,
                        github_private_key=env.state.private_key(),
                        github_webhook_secret="secret-0123456789", github_api_url=env.url,
                        conductor_data_dir=tmp_path / "data", **values)
    return GitHubApp(settings, redis=redis)


async def comment(github: GitHubApp, env: Env, number: int) -> int:
    async with github.installation(env.installation.id) as gh:
        response = await gh.rest.issues.async_create_comment(OWNER, NAME, number, body="hi")
        return response.status_code


async def read_issue(github: GitHubApp, env: Env, number: int) -> int:
    async with github.installation(env.installation.id) as gh:
        return (await gh.rest.issues.async_get(OWNER, NAME, number)).status_code


def comment_answers(env: Env, number: int) -> list[int]:
    path = f"/repos/{REPO}/issues/{number}/comments"
    return [r.status for r in env.state.requests if r.method == "POST" and r.path == path]


def open_issue(env: Env) -> int:
    return env.state.as_user("alice").open_issue(REPO, "Add sub", "Please.").number


async def test_an_unpaced_client_meets_githubs_refusal(env: Env, tmp_path: Path) -> None:
    # What the pacing is for: past the limit, GitHub (and its stand-in) refuses to create.
    env.state.content_per_minute = 2
    number = open_issue(env)
    unpaced = github_app(env, tmp_path, redis=None)
    assert [await comment(unpaced, env, number) for _ in range(2)] == [201, 201]
    with pytest.raises(RateLimited, match="secondary rate limit"):
        await comment(unpaced, env, number)
    assert comment_answers(env, number) == [201, 201, 403]


async def test_workers_together_stay_within_the_minute_limit_and_defer_the_rest(
    env: Env, tmp_path: Path, redis: Any
) -> None:
    env.state.content_per_minute = 3
    number = open_issue(env)
    one = github_app(env, tmp_path, redis, conductor_github_writes_per_minute=3)
    other = github_app(env, tmp_path, redis, conductor_github_writes_per_minute=3)
    assert [await comment(one, env, number), await comment(other, env, number),
            await comment(one, env, number)] == [201, 201, 201]

    began = time.monotonic()
    with pytest.raises(Retry) as info:  # the job is deferred until a slot frees
        await _guarded({"job_try": 1}, comment(other, env, number))
    assert time.monotonic() - began < 5  # not slept through in the job
    assert info.value.defer_score is not None
    assert 55 <= info.value.defer_score / 1000 <= 60
    assert comment_answers(env, number) == [201, 201, 201]  # the fourth never reached GitHub
    assert await read_issue(other, env, number) == 200  # reads are not paced


async def test_the_deferral_says_why(env: Env, tmp_path: Path, redis: Any) -> None:
    number = open_issue(env)
    paced = github_app(env, tmp_path, redis, conductor_github_writes_per_minute=1)
    await comment(paced, env, number)
    with pytest.raises(RateLimited) as info:
        await comment(paced, env, number)
    limits = "1 a minute, 500 an hour and one every 1 s"
    assert f"installation {env.installation.id}'s GitHub writes to {limits}" in str(info.value)
    assert 55 <= info.value.retry_after.total_seconds() <= 60


async def test_a_short_wait_is_waited_in_place(env: Env, tmp_path: Path, redis: Any) -> None:
    number = open_issue(env)
    paced = github_app(env, tmp_path, redis)
    paced.writes = WriteBudget(redis, [(1, timedelta(milliseconds=400))])
    assert [await comment(paced, env, number) for _ in range(3)] == [201, 201, 201]
    path = f"/repos/{REPO}/issues/{number}/comments"
    times = [r.at for r in env.state.requests if r.method == "POST" and r.path == path]
    # 0.4 s apart at their slots (unpaced, a few milliseconds); a loaded machine can delay one
    # arrival after its slot and not the next.
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(times))
    assert times[-1] - times[0] >= 0.8 - 0.3


async def test_the_hour_limit_counts_as_well_as_the_minute(redis: Any) -> None:
    budget = WriteBudget(redis, [(10, MINUTE), (2, HOUR)])
    assert [await budget.reserve(7) for _ in range(2)] == [0.0, 0.0]
    assert 3590 <= await budget.reserve(7) <= 3600


async def test_installations_are_counted_apart(redis: Any) -> None:
    budget = WriteBudget(redis, [(1, MINUTE)])
    assert await budget.reserve(1) == 0.0
    assert await budget.reserve(1) > 0
    assert await budget.reserve(2) == 0.0


async def test_a_refused_reservation_takes_no_slot(redis: Any) -> None:
    # Asking again and again while at the limit must not push the free slot further away.
    budget = WriteBudget(redis, [(1, timedelta(milliseconds=300))])
    assert await budget.reserve(1) == 0.0
    waits = [await budget.reserve(1) for _ in range(5)]
    assert all(0 < wait <= 0.3 for wait in waits)
    await asyncio.sleep(max(waits))
    assert await budget.reserve(1) == 0.0


async def test_the_count_expires_with_its_longest_window(redis: Any) -> None:
    budget = WriteBudget(redis, [(5, MINUTE), (50, HOUR)])
    await budget.reserve(3)
    (key,) = [k async for k in redis.scan_iter("conductor:github:writes:*")]
    assert 3590 <= await redis.ttl(key) <= 3600


async def test_zero_lifts_the_limits(env: Env, tmp_path: Path, redis: Any) -> None:
    # GitHub Enterprise Server has rate limits off unless its administrator turns them on.
    env.state.content_per_minute = env.state.content_per_hour = 0
    number = open_issue(env)
    unlimited = github_app(env, tmp_path, redis, conductor_github_writes_per_minute=0,
                           conductor_github_writes_per_hour=0, conductor_github_write_interval=0)
    assert unlimited.writes is not None and not unlimited.writes.enabled
    assert [await comment(unlimited, env, number) for _ in range(4)] == [201] * 4


def test_a_negative_limit_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="conductor_github_writes_per_minute"):
        Settings(_env_file=None, conductor_github_writes_per_minute=-1)
    for interval in (-1, 11):
        with pytest.raises(ValueError, match="conductor_github_write_interval"):
            Settings(_env_file=None, conductor_github_write_interval=interval)


async def test_writes_are_a_second_apart_across_workers_by_default(
    env: Env, tmp_path: Path, redis: Any
) -> None:
    # GitHub's advice for a client making many writes: wait at least a second between them.
    # Two workers commenting at once for one installation still reach GitHub a second apart;
    # reads are not held back.
    number = open_issue(env)
    one, other = github_app(env, tmp_path, redis), github_app(env, tmp_path, redis)
    answers = await asyncio.gather(*(comment(worker, env, number)
                                     for worker in (one, other, one, other)))
    assert answers == [201] * 4
    path = f"/repos/{REPO}/issues/{number}/comments"
    times = sorted(r.at for r in env.state.requests if r.method == "POST" and r.path == path)
    # Slots are a second apart (unpaced, the four arrive within a tenth of one); an arrival may
    # trail its slot by the request's own jitter, a few tenths on a machine busy with other
    # tests, the first of a connection most.
    assert all(later - earlier >= 0.5 for earlier, later in itertools.pairwise(times))
    assert times[-1] - times[0] >= 3 * 1.0 - 0.5

    # A write now waits for its second; a read asked after it goes out before it.
    waiting = asyncio.create_task(comment(one, env, number))
    assert await read_issue(other, env, number) == 200
    assert await waiting == 201
    issue = path.removesuffix("/comments")
    calls = [r.method for r in env.state.requests if r.path.startswith(issue)]
    assert calls[-2:] == ["GET", "POST"]


async def test_the_interval_is_per_installation(redis: Any) -> None:
    budget = WriteBudget(redis, Settings(_env_file=None).github_write_limits)
    assert await budget.reserve(1) == 0.0
    assert 0 < await budget.reserve(1) <= 1.0
    assert await budget.reserve(2) == 0.0


async def test_githubs_refusal_still_defers_when_pacing_is_off(
    env: Env, tmp_path: Path, redis: Any
) -> None:
    # Pacing set looser than the server's own limits (a GHES administrator's): GitHub's 403
    # is still a deferral, not a failure.
    env.state.content_per_minute = 1
    number = open_issue(env)
    loose = github_app(env, tmp_path, redis, conductor_github_writes_per_minute=10)
    await comment(loose, env, number)
    with pytest.raises(Retry):
        await _guarded({"job_try": 1}, comment(loose, env, number))
    assert comment_answers(env, number) == [201, 403]


async def test_a_burst_of_writes_from_many_workers_waits_its_turn_instead_of_failing(
    env: Env, tmp_path: Path, redis: Any
) -> None:
    # Twenty-four workers writing at once for one installation, 0.3 s apart: the last goes out
    # about seven seconds on. Each short wait is waited in place; none of the jobs is deferred
    # (a deferral does not get a write out sooner, and each counts against the job's tries).
    number = open_issue(env)
    workers = [github_app(env, tmp_path, redis, conductor_github_write_interval=0.3)
               for _ in range(24)]
    answers = await asyncio.gather(*(comment(worker, env, number) for worker in workers))
    assert answers == [201] * 24
    path = f"/repos/{REPO}/issues/{number}/comments"
    times = sorted(r.at for r in env.state.requests if r.method == "POST" and r.path == path)
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(times))
    # Slots are taken 0.3 s apart: 6.9 s from the first to the last, about three a second. A
    # request can reach GitHub later than its slot (the first of a connection does, and a
    # machine busy with other tests delays any of them by a few tenths), so the span may come
    # out shorter and two arrivals close together; what must never happen is a burst (without
    # pacing all 24 arrive within a second), more writes in some second than pacing allows.
    assert times[-1] - times[0] >= 23 * 0.3 - 1.0 and gaps[len(gaps) // 2] >= 0.25
    densest = max(bisect.bisect_right(times, start + 1.0) - i for i, start in enumerate(times))
    assert densest <= 5
