"""Jobs enqueued by the web process run in a real arq worker and reach their handler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from arq.connections import create_pool
from arq.jobs import Job, JobStatus

from app.constants import QUEUE_NAME, event_job_id
from app.events import Event, dispatch, recent_events
from app.installations import get_installation
from app.processes import build_worker
from app.redis import RedisProcess, arq_settings, embedded_redis
from tests.conftest import load_fixture


async def _enqueue(url: str, delivery: str, event: str, kind: str, payload: dict[str, Any]) -> None:
    pool = await create_pool(arq_settings(url), default_queue_name=QUEUE_NAME)
    try:
        job = await pool.enqueue_job("handle_event", delivery, event, kind, payload,
                                     _job_id=event_job_id(delivery))
        assert job is not None
    finally:
        await pool.aclose()


async def test_installation_event_runs_in_a_worker_and_is_recorded(
    redis_server: RedisProcess, redis: aioredis.Redis, settings_factory: Any
) -> None:
    payload = load_fixture("installation.created.0.json")
    await _enqueue(redis_server.url, "inst-1", "installation", "installation", payload)

    worker = build_worker(settings_factory(), redis_server.url, burst=True, poll_delay=0.01)
    await worker.main()
    await worker.close()

    assert worker.jobs_failed == 0
    pool = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    info = await Job(event_job_id("inst-1"), pool, _queue_name=QUEUE_NAME).result_info()
    await pool.aclose()
    assert info is not None and info.success
    record = await get_installation(redis, payload["installation"]["id"])
    assert record is not None
    assert record["account"] == payload["installation"]["account"]["login"]
    assert record["repositories"] == sorted(r["full_name"] for r in payload["repositories"])
    [logged] = await recent_events(redis)
    assert logged["delivery"] == "inst-1"
    assert logged["outcome"].startswith(f"installation {payload['installation']['id']} created")


async def test_an_event_without_a_handler_is_recorded_not_dropped(
    redis_server: RedisProcess, redis: aioredis.Redis, settings_factory: Any
) -> None:
    # A kind this worker does not know (a newer web process during a rolling deploy).
    await _enqueue(redis_server.url, "ci-1", "status", "from_the_future",
                   load_fixture("status.0.json"))
    worker = build_worker(settings_factory(), redis_server.url, burst=True, poll_delay=0.01)
    await worker.main()
    await worker.close()

    pool = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    info = await Job(event_job_id("ci-1"), pool, _queue_name=QUEUE_NAME).result_info()
    await pool.aclose()
    assert info is not None and info.success and info.result == "no handler for from_the_future"
    [logged] = await recent_events(redis)
    assert logged["outcome"] == "no handler for from_the_future"


async def test_queued_jobs_survive_an_embedded_redis_restart(
    tmp_path: Path, settings_factory: Any
) -> None:
    payload = load_fixture("installation.created.1.json")
    data = tmp_path / "redis"
    with embedded_redis(data) as url:
        await _enqueue(url, "survives", "installation", "installation", payload)
    assert (data / "appendonly.aof").exists() or (data / "appendonlydir").exists()

    with embedded_redis(data) as url:
        pool = await create_pool(arq_settings(url), default_queue_name=QUEUE_NAME)
        job = Job(event_job_id("survives"), pool, _queue_name=QUEUE_NAME)
        assert await job.status() == JobStatus.queued
        worker = build_worker(settings_factory(), url, burst=True, poll_delay=0.01)
        await worker.main()
        await worker.close()
        assert await job.status() == JobStatus.complete
        events = [json.loads(e) for e in await pool.lrange("conductor:events", 0, -1)]
        await pool.aclose()
    assert [e["delivery"] for e in events] == ["survives"]


def test_a_full_disk_is_named_and_no_path_of_this_machine_reaches_a_person(
    tmp_path: Path,
) -> None:
    import errno

    from app.git import GitError
    from workers.main import DISK_FULL, _describe

    clone = tmp_path / "data" / "workspaces" / "acme__widgets" / "clone.partial"
    # What git printed when CONDUCTOR_DATA_DIR's filesystem filled up during a clone.
    full = GitError(("clone", "--no-checkout", "--", "https://github.com/acme/widgets.git",
                     str(clone)), 128,
                    f"Cloning into '{clone}'...\nerror: copy-fd: write returned: No space left "
                    "on device\nfatal: cannot copy '/usr/share/git-core/templates/hooks/"
                    "pre-push.sample'\n")
    assert _describe(full, tmp_path / "data") == DISK_FULL
    assert _describe(OSError(errno.ENOSPC, "No space left on device")) == DISK_FULL
    assert "CONDUCTOR_DATA_DIR" in DISK_FULL and "/agent retry" in DISK_FULL

    other = GitError(("fetch",), 128, f"fatal: not a git repository: '{clone}'\n")
    said = _describe(other, tmp_path / "data")
    assert str(tmp_path) not in said
    assert "$CONDUCTOR_DATA_DIR/workspaces/acme__widgets/clone.partial" in said


async def test_a_captured_delivery_sent_again_under_a_new_id_is_ignored_as_a_replay(
    redis_server: RedisProcess, redis: aioredis.Redis, settings_factory: Any
) -> None:
    # The signature covers the body only: a copy of a delivery (from a proxy log, say) with a
    # fresh X-GitHub-Delivery passes the ingress. GitHub's own redeliveries keep their id.
    payload = load_fixture("installation.created.0.json")
    other = {**payload, "action": "deleted"}  # another event of the same installation
    # One at a time, so which of the two copies came first is certain (jobs queued in the same
    # millisecond, or run side by side, would leave it to chance).
    for delivery, body in (("inst-real", payload), ("inst-copy", payload), ("inst-gone", other)):
        await _enqueue(redis_server.url, delivery, "installation", "installation", body)
        worker = build_worker(settings_factory(), redis_server.url, burst=True, poll_delay=0.01)
        await worker.main()
        await worker.close()

    outcomes = {e["delivery"]: e["outcome"] for e in await recent_events(redis)}
    assert outcomes["inst-real"].startswith("installation")
    assert outcomes["inst-copy"] == (
        "ignored: the payload of delivery inst-real again, under a new delivery id")
    assert not outcomes["inst-gone"].startswith("ignored")


async def test_the_same_delivery_handled_again_is_not_a_replay(redis: aioredis.Redis) -> None:
    # arq runs a job at least once: a worker that died mid-job runs it again, same delivery.
    handled: list[str] = []

    async def handler(ctx: dict[str, Any], event: Event) -> str:
        handled.append(event.delivery_id)
        return "done"

    ctx = {"redis": redis, "handlers": {"installation": handler}}
    payload = load_fixture("installation.created.0.json")
    event = Event("d-1", "installation", "installation", payload)
    assert [await dispatch(ctx, event), await dispatch(ctx, event)] == ["done", "done"]
    assert handled == ["d-1", "d-1"]
    # The same payload as another kind of event is another event.
    renamed = Event("d-2", "installation_target", "installation", event.payload)
    assert await dispatch(ctx, renamed) == "done"
