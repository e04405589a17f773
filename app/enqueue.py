"""Accepting a delivery in one Redis round trip: remember its id and queue its job, atomically.

The webhook endpoint used to make four round trips per delivery (a `SET NX` for the delivery
id, then arq's `enqueue_job`: `WATCH`, `EXISTS`, `MULTI`/`PSETEX`/`ZADD`/`EXEC`). Here one Lua
script (`ACCEPT_SCRIPT`) does the same inside Redis:

1. `SET conductor:delivery:<id> <event> NX EX <ttl>`; if the id was already there, the delivery
   is a duplicate and nothing else happens (answer 0).
2. Unless arq already holds the job or its result (`arq:job:<job id>`, `arq:result:<job id>`),
   put it on the queue (`ZADD`, scored by its enqueue time) and store the job (`PSETEX`, expiring
   `expires_extra_ms` later), as `ArqRedis.enqueue_job` does (answer 1).

The script runs atomically and undoes its `SET` if the `ZADD` fails, so an error leaves either
everything or nothing: a delivery is never remembered without its job, and can always be
redelivered after an error.

The job is the one `enqueue_job(Job.HANDLE_EVENT, delivery, event, kind, payload,
_job_id=event_job_id(delivery))` would store (`arq.jobs.serialize_job`, same keys, expiry and
score), so the unchanged arq worker runs it. The one difference is inside the pickle: given the
request body, the payload is stored as that JSON, LZ4-compressed, rather than as a pickle of
the parsed dict (`JsonBody`), and unpickling inflates and parses it back into an equal dict.

Deliveries that arrive while another round trip is under way share the next one: see
`DeliveryQueue`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import lz4.block
import orjson
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from app.constants import (
    DELIVERY_KEY,
    DELIVERY_TTL_SECONDS,
    QUEUE_NAME,
    Job,
    event_job_id,
)

# KEYS: delivery key, job key, result key, queue.
# ARGV: event, delivery ttl (s), job expiry (ms), job bytes, score (enqueue ms), job id.
# Redis does not roll back a script that fails half-way, so the one write that can fail (ZADD,
# on a queue key of the wrong type) comes first after the SET, which it then undoes.
ACCEPT_SCRIPT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  local queued = redis.pcall('ZADD', KEYS[4], ARGV[5], ARGV[6])
  if type(queued) == 'table' and queued.err then
    redis.call('DEL', KEYS[1])
    return queued
  end
  redis.call('PSETEX', KEYS[2], ARGV[3], ARGV[4])
end
return 1
"""

# `enqueue_job(Job.HANDLE_EVENT, ...)` pickles the enum member, a reference to app.constants.Job;
# the plain string unpickles equal to it (it is a StrEnum) without importing anything.
_HANDLE_EVENT = str(Job.HANDLE_EVENT)

# A delivery waiting for its batch: the script's keys and arguments, and where its answer goes.
_Pending = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


def inflate_json(data: bytes) -> Any:
    """The value of LZ4-compressed JSON: what a `JsonBody` unpickles as."""
    return orjson.loads(lz4.block.decompress(data))


class JsonBody:
    """JSON bytes that pickle, compressed, as a call to `inflate_json` on them.

    Pickling a parsed 15 KB payload costs more than parsing it; pickling this costs one LZ4
    pass (about 8 µs), and what Redis stores, copies into its append-only file and keeps in
    memory until a worker takes the job shrinks about fivefold (a 13 KB comment event stores
    as 2.5 KB): for Redis, the bytes of the job are most of the cost of accepting a delivery.
    Unpickling (arq's `pickle.loads` in the worker) inflates and parses them, so the job
    function gets the same dict it would have got from a pickle of the parsed payload.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return inflate_json, (lz4.block.compress(self.data),)


def _command(*parts: str | int | bytes) -> bytes:
    """One Redis command in the protocol's wire format (RESP), as redis-py would send it."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else (
            part.encode() if isinstance(part, str) else b"%d" % part)
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


class DeliveryQueue:
    """Dedupes and enqueues accepted deliveries on one Redis client (usually the arq pool).

    One sender task sends the waiting deliveries as one pipeline (one script call each), waits
    for the answers, and repeats while more are waiting; it starts when the first delivery
    arrives and stops when none is left. An idle server so sends each delivery at once (on the
    next turn of the event loop), and a busy one sends everything that arrived during the last
    round trip in the next, so batches grow with the load. Each script still runs atomically on
    its own: batching only saves round trips, connection checkouts and system calls, which in
    redis-py cost several times what the script does.
    """

    def __init__(self, redis: Redis, *, queue_name: str = QUEUE_NAME) -> None:
        self.redis = redis
        self.queue_name = queue_name
        # An `ArqRedis` carries these; a plain client gets arq's defaults.
        self.serializer = getattr(redis, "job_serializer", None)
        self.expires_ms: int = getattr(redis, "expires_extra_ms", expires_extra_ms)
        self.script: AsyncScript = redis.register_script(ACCEPT_SCRIPT)
        self._pending: list[_Pending] = []
        self._sender: asyncio.Task[None] | None = None

    async def accept(
        self, delivery: str, event: str, kind: str, payload: Any, *, body: bytes | None = None
    ) -> bool:
        """Queue `handle_event(delivery, event, kind, payload)` unless the delivery was seen.

        `body`, if given, is JSON that `orjson.loads` reads as `payload` (the webhook's body):
        the job then stores those bytes rather than a pickle of the parsed payload, and the
        worker's unpickling parses them back (see `JsonBody`).

        True if the delivery is new (its job is queued, or arq still holds a job or result
        under its id), False for a duplicate. Raises `RedisError` with nothing written.
        """
        job_id = event_job_id(delivery)
        enqueue_ms = timestamp_ms()
        if body is not None and self.serializer is None:
            payload = JsonBody(body)
        job = serialize_job(_HANDLE_EVENT, (delivery, event, kind, payload), {}, None,
                            enqueue_ms, serializer=self.serializer)
        command = (
            DELIVERY_KEY.format(delivery_id=delivery), job_key_prefix + job_id,
            result_key_prefix + job_id, self.queue_name,
            event, DELIVERY_TTL_SECONDS, self.expires_ms, job, enqueue_ms, job_id,
        )
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, answer))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return bool(await answer)

    async def _send_all(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            # No await since the loop's last check: whoever comes after this starts a sender,
            # so no delivery is ever left waiting with no sender running.
            self._sender = None
            # Only if this task was cancelled (the loop is closing): nobody will send these.
            for _, answer in self._pending:
                answer.cancel()
            self._pending = []

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            results = await self._run(batch)
        except BaseException as exc:
            for _, answer in batch:
                if answer.done():
                    continue
                if isinstance(exc, Exception):
                    answer.set_exception(exc)
                else:
                    answer.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (_, answer), result in zip(batch, results, strict=True):
            if answer.done():  # its request was cancelled; the delivery is stored all the same
                continue
            if isinstance(result, Exception):
                answer.set_exception(result)
            else:
                answer.set_result(result)

    async def _run(self, batch: list[_Pending]) -> list[Any]:
        results = await self._pipeline(batch)
        redo = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if redo:
            # Redis does not know the script yet (first use, restart, SCRIPT FLUSH), so none of
            # these ran: load it and run them again.
            self.script.sha = await self.redis.script_load(ACCEPT_SCRIPT)
            again = await self._pipeline([batch[i] for i in redo])
            for i, result in zip(redo, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[_Pending]) -> list[Any]:
        """Send the batch's script calls in one write on one connection, read every answer.

        What `pipeline(transaction=False)` with `raise_on_error=False` does, with the same
        retries and disconnects on connection errors, but with the commands packed here:
        redis-py's general packing spent more on a 15 KB argument than the script does.
        """
        request = b"".join(_command("EVALSHA", self.script.sha, 4, *command)
                           for command, _ in batch)
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            results: list[Any] = await conn.retry.call_with_retry(
                lambda: self._exchange(conn, request, len(batch)),
                lambda error: self._failed(conn, error),
            )
            return results
        finally:
            await pool.release(conn)

    @staticmethod
    async def _exchange(conn: AbstractConnection, request: bytes, count: int) -> list[Any]:
        try:
            await conn.send_packed_command(request)
            results: list[Any] = []
            for _ in range(count):
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:  # this call's error; the others still answer
                    results.append(exc)
        except BaseException:
            # Answers may be left unread (a cancellation, a broken connection): never reuse it.
            await conn.disconnect(nowait=True)
            raise
        return results

    @staticmethod
    async def _failed(conn: AbstractConnection, error: RedisError) -> None:
        # As redis-py's pipeline: retry only the errors the connection is set to retry.
        await conn.disconnect()
        if not isinstance(error, tuple(conn.retry_on_error or ())):
            raise error


def delivery_queue(redis: Redis) -> DeliveryQueue:
    """The `DeliveryQueue` of this client, made (and its script registered) on first use.

    Kept on the client itself, so that the two go away together (a cache keyed by the client
    would keep it alive: the queue refers to it).
    """
    queue: DeliveryQueue | None = getattr(redis, "_conductor_delivery_queue", None)
    if queue is None:
        queue = DeliveryQueue(redis)
        setattr(redis, "_conductor_delivery_queue", queue)  # noqa: B010 (Redis does not declare it)
    return queue
