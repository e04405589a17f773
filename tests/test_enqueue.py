"""The one-round-trip accept script stores the job arq's `enqueue_job` would, atomically."""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from arq.connections import ArqRedis, create_pool
from arq.constants import expires_extra_ms
from arq.jobs import deserialize_job
from arq.utils import timestamp_ms
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app import routing
from app.constants import DELIVERY_KEY, QUEUE_NAME, Job, event_job_id
from app.enqueue import DeliveryQueue, JsonBody, delivery_queue
from app.events import Event
from app.processes import build_worker
from app.redis import RedisProcess, arq_settings, free_port
from tests.conftest import load_fixture

JOB_KEY = "arq:job:{}"


@pytest.fixture
async def pool(redis_server: RedisProcess, redis: aioredis.Redis) -> AsyncIterator[ArqRedis]:
    """The web process's pool (see app.web), on a flushed database."""
    arq = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    yield arq
    await arq.aclose()


def _comment() -> tuple[dict[str, Any], bytes]:
    payload = load_fixture("issue_comment.created.0.json")
    payload["comment"]["body"] = "/agent retry"
    payload["installation"] = {"id": 7}
    return payload, json.dumps(payload).encode()


async def _job(redis: aioredis.Redis, delivery: str) -> tuple[Any, int, float | None]:
    """(deserialized job, its key's ttl in ms, its score in the queue)."""
    job_id = event_job_id(delivery)
    raw = await redis.get(JOB_KEY.format(job_id))
    assert raw is not None, f"no job stored for {delivery}"
    return (deserialize_job(raw), await redis.pttl(JOB_KEY.format(job_id)),
            await redis.zscore(QUEUE_NAME, job_id))


@pytest.mark.parametrize("with_body", [True, False], ids=["json-body", "pickled-dict"])
async def test_the_job_is_the_one_arq_enqueue_job_stores(
    pool: ArqRedis, redis: aioredis.Redis, with_body: bool
) -> None:
    payload, body = _comment()
    await pool.enqueue_job(Job.HANDLE_EVENT, "d-1", "issue_comment", routing.COMMAND, payload,
                           _job_id=event_job_id("d-1"))
    expected, expected_ttl, _ = await _job(redis, "d-1")
    await redis.flushdb()

    before = timestamp_ms()
    accepted = await DeliveryQueue(pool).accept(
        "d-1", "issue_comment", routing.COMMAND, payload, body=body if with_body else None
    )
    assert accepted is True
    job, ttl, score = await _job(redis, "d-1")
    assert (job.function, job.args, job.kwargs, job.job_try) == (
        expected.function, expected.args, expected.kwargs, expected.job_try)
    assert job.function == Job.HANDLE_EVENT
    assert job.args == ("d-1", "issue_comment", routing.COMMAND, payload)
    # Same expiry (arq's default day) and a score that is the enqueue time, as arq sets them.
    assert expires_extra_ms - 5000 < ttl <= expires_extra_ms
    assert abs(ttl - expected_ttl) < 5000
    assert score is not None and before <= score <= timestamp_ms()
    assert int(job.enqueue_time.timestamp() * 1000) == score
    assert await redis.zrange(QUEUE_NAME, 0, -1) == [event_job_id("d-1").encode()]
    assert await redis.get(DELIVERY_KEY.format(delivery_id="d-1")) == b"issue_comment"
    assert await redis.ttl(DELIVERY_KEY.format(delivery_id="d-1")) > 3 * 24 * 3600


def test_a_json_body_pickles_as_the_payload_it_holds() -> None:
    payload, body = _comment()
    stored = pickle.dumps({"a": ("d", JsonBody(body))})
    assert pickle.loads(stored) == {"a": ("d", payload)}  # noqa: S301 (bytes made just above)
    # The body compressed (what Redis stores and logs to its append-only file) plus a reference
    # to the function that inflates and parses it.
    assert body not in stored and len(stored) < len(body) / 3


@pytest.mark.parametrize("with_body", [True, False], ids=["json-body", "pickled-dict"])
async def test_a_queued_delivery_runs_in_the_real_worker_with_its_arguments(
    redis_server: RedisProcess, pool: ArqRedis, settings_factory: Any, with_body: bool
) -> None:
    payload, body = _comment()
    queue = DeliveryQueue(pool)
    assert await queue.accept("run-1", "issue_comment", routing.COMMAND, payload,
                              body=body if with_body else None)

    seen: list[Event] = []

    async def command(ctx: dict[str, Any], event: Event) -> str:
        seen.append(event)
        return "recorded"

    settings = settings_factory()
    # No reconcile cron: a tick during the burst would be a second job (it was, once, in CI).
    worker = build_worker(settings, redis_server.url, burst=True, poll_delay=0.01,
                          cron_jobs=[],
                          ctx={"settings": settings, "handlers": {routing.COMMAND: command}})
    await worker.main()
    await worker.close()

    assert worker.jobs_complete == 1 and worker.jobs_failed == 0
    assert seen == [Event(delivery_id="run-1", name="issue_comment", kind=routing.COMMAND,
                          payload=payload)]


async def test_a_duplicate_returns_false_and_enqueues_nothing(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    payload, body = _comment()
    queue = DeliveryQueue(pool)
    assert await queue.accept("dup", "issue_comment", routing.COMMAND, payload, body=body)
    first = await redis.get(JOB_KEY.format(event_job_id("dup")))
    changed = {**payload, "action": "edited"}
    assert not await queue.accept("dup", "issue_comment", routing.COMMAND, changed)
    assert await redis.zcard(QUEUE_NAME) == 1
    assert await redis.get(JOB_KEY.format(event_job_id("dup"))) == first


async def test_fifty_concurrent_calls_with_one_delivery_id_enqueue_once(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    payload, body = _comment()
    queue = delivery_queue(pool)
    answers = await asyncio.gather(*(
        queue.accept("same", "issue_comment", routing.COMMAND, payload, body=body)
        for _ in range(50)
    ))
    assert answers.count(True) == 1 and answers.count(False) == 49
    assert await redis.zcard(QUEUE_NAME) == 1
    assert len([key async for key in redis.scan_iter("arq:job:*")]) == 1


async def test_concurrent_deliveries_share_round_trips_and_each_gets_its_answer(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    payload, body = _comment()
    queue = DeliveryQueue(pool)
    assert await queue.accept("b-3", "issue_comment", routing.COMMAND, payload, body=body)
    ids = [f"b-{i}" for i in range(20)]
    answers = await asyncio.gather(*(
        queue.accept(i, "issue_comment", routing.COMMAND, payload, body=body) for i in ids
    ))
    assert answers == [i != "b-3" for i in ids]
    assert await redis.zcard(QUEUE_NAME) == 20


async def test_deliveries_arriving_at_any_moment_are_all_answered(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    # Arrivals spread over several turns of the loop, so some come while a round trip is under
    # way and some just as the sender finishes: none may be left waiting.
    payload, body = _comment()
    queue = DeliveryQueue(pool)

    async def later(i: int) -> bool:
        for _ in range(i % 7):
            await asyncio.sleep(0)
        if i % 5 == 0:
            await asyncio.sleep(0.001 * (i % 3))
        return await queue.accept(f"t-{i}", "issue_comment", routing.COMMAND, payload, body=body)

    for round_ in range(3):
        async with asyncio.timeout(10):
            answers = await asyncio.gather(*(later(i) for i in range(60)))
        assert answers == [round_ == 0] * 60  # then every one is a redelivery
    assert await redis.zcard(QUEUE_NAME) == 60
    assert queue._sender is None


async def test_an_existing_job_or_result_is_left_alone(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    # As with enqueue_job: a job id arq already holds is not queued again.
    payload, _ = _comment()
    await redis.set("arq:result:" + event_job_id("old"), b"result")
    await redis.set(JOB_KEY.format(event_job_id("older")), b"job")
    queue = DeliveryQueue(pool)
    assert await queue.accept("old", "issue_comment", routing.COMMAND, payload)
    assert await queue.accept("older", "issue_comment", routing.COMMAND, payload)
    assert await redis.zcard(QUEUE_NAME) == 0
    assert await redis.exists(JOB_KEY.format(event_job_id("old"))) == 0
    assert await redis.get(JOB_KEY.format(event_job_id("older"))) == b"job"


async def test_a_failed_enqueue_writes_nothing_and_can_be_redelivered(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    payload, body = _comment()
    await redis.set(QUEUE_NAME, "not a sorted set")  # the ZADD fails inside the script
    queue = DeliveryQueue(pool)
    with pytest.raises(RedisError, match="WRONGTYPE"):
        await queue.accept("broken", "issue_comment", routing.COMMAND, payload, body=body)
    assert await redis.exists(DELIVERY_KEY.format(delivery_id="broken")) == 0
    assert await redis.exists(JOB_KEY.format(event_job_id("broken"))) == 0

    await redis.delete(QUEUE_NAME)
    assert await queue.accept("broken", "issue_comment", routing.COMMAND, payload, body=body)
    assert await redis.zcard(QUEUE_NAME) == 1


async def test_every_delivery_in_a_batch_gets_the_connection_error() -> None:
    down = ArqRedis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    queue = DeliveryQueue(down)
    payload, body = _comment()
    answers = await asyncio.gather(
        *(queue.accept(f"x-{i}", "issue_comment", routing.COMMAND, payload, body=body)
          for i in range(3)),
        return_exceptions=True,
    )
    await down.aclose()
    assert all(isinstance(a, RedisConnectionError) for a in answers), answers


async def test_the_script_is_loaded_again_after_redis_forgets_it(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    payload, body = _comment()
    queue = DeliveryQueue(pool)
    assert await queue.accept("s-1", "issue_comment", routing.COMMAND, payload, body=body)
    await redis.script_flush()
    assert await queue.accept("s-2", "issue_comment", routing.COMMAND, payload, body=body)
    assert await redis.zcard(QUEUE_NAME) == 2


async def test_a_payload_only_the_standard_library_reads_is_pickled_as_a_dict(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    # orjson refuses lone surrogates; such a payload must not be stored as JSON for orjson.
    body = b'{"action": "created", "comment": {"body": "/agent retry \\ud800"}}'
    payload = json.loads(body)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert await DeliveryQueue(pool).accept("sur", "issue_comment", routing.COMMAND, payload)
    job, _, _ = await _job(redis, "sur")
    assert job.args[3] == payload


async def test_a_connection_redis_closed_is_replaced_and_nothing_is_lost(
    pool: ArqRedis, redis: aioredis.Redis
) -> None:
    # The web process keeps its connection between deliveries; Redis may drop it meanwhile
    # (a restart, a timeout, CLIENT KILL). The next delivery must still be queued.
    payload, body = _comment()
    queue = DeliveryQueue(pool)
    assert await queue.accept("k-1", "issue_comment", routing.COMMAND, payload, body=body)
    assert await redis.client_kill_filter(_type="normal", skipme=True) >= 1
    assert await queue.accept("k-2", "issue_comment", routing.COMMAND, payload, body=body)
    job, _, _ = await _job(redis, "k-2")
    assert job.args == ("k-2", "issue_comment", routing.COMMAND, payload)
    assert await redis.zcard(QUEUE_NAME) == 2
