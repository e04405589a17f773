"""Running the parts: web server, arq worker, and (for `serve`) an embedded Redis.

Signals are handled here, once: the first Ctrl-C or SIGTERM stops the web server from taking
new requests and the worker from taking new jobs, then everything closes in order (web, worker,
Redis) so that the append-only file is flushed and queued jobs are found again on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator
from typing import Any, cast

import uvicorn
from arq.cron import cron
from arq.typing import WorkerSettingsType
from arq.worker import Worker, create_worker
from starlette.applications import Starlette

from app.constants import QUEUE_NAME
from app.logs import get_logger
from app.redis import arq_settings, embedded_redis
from app.settings import Settings

log = get_logger(__name__)

# Young objects the collector lets pile up before it looks at them (CPython's default is 700).
YOUNG_GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep the cycle collector off the request path; call once, after start-up imports.

    The count that triggers a young collection is objects allocated minus objects freed, so
    with CPython's default of 700 the payloads of a few dozen requests in flight set one off
    every request or two (about 100 µs each), and what survives it soon triggers a full
    collection of the whole heap: 18 ms measured, the server's p99 latency under load. Freezing
    what start-up made (modules, settings, the web app) takes it out of every later collection,
    and a higher young threshold leaves collections to garbage that really accumulates, which
    refcounting frees otherwise. Measured with bench/webhooks.py: p99 23 ms -> 9 ms at the
    maximum rate, about 10% more requests a second.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


class _Server(uvicorn.Server):
    # The serve loop below owns the signal handlers; uvicorn must not re-raise them at exit.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(app: Starlette, settings: Settings) -> uvicorn.Server:
    from importlib.util import find_spec

    # httptools parses HTTP/1.1 in C, several times faster per request than h11. `loop` only
    # counts when uvicorn makes the loop (`Server.run`); `run` below serves in the caller's.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="httptools" if find_spec("httptools") else "h11",
        loop="uvloop" if find_spec("uvloop") else "asyncio",
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return _Server(config)


def build_worker(settings: Settings, redis_url: str, **overrides: Any) -> Worker:
    from workers.main import WorkerSettings, reconcile

    every = settings.conductor_reconcile_seconds
    options: dict[str, Any] = {
        "cron_jobs": [cron(reconcile, second=set(range(0, 60, every)), run_at_startup=False)],
        "redis_settings": arq_settings(redis_url),
        "queue_name": QUEUE_NAME,
        "handle_signals": False,
        "max_jobs": settings.conductor_worker_concurrency,
        "job_timeout": settings.conductor_job_timeout,
        "poll_delay": settings.conductor_poll_delay,
        "ctx": {"settings": settings},
    }
    options.update(overrides)
    # arq types its settings as a Protocol that a plain class does not satisfy for mypy.
    return create_worker(cast("WorkerSettingsType", WorkerSettings), **options)


async def drain_worker(worker: Worker, grace: float) -> None:
    """Stop taking jobs, let running ones finish for `grace` seconds, cancel the rest, close.

    A job cancelled here is not lost: arq runs it again once its in-progress key expires, and
    every job is idempotent.
    """
    worker.allow_pick_jobs = False
    running = [task for task in worker.tasks.values() if not task.done()]
    if running:
        _, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if late:
            log.warning("jobs cancelled at shutdown; they will run again", count=len(late))
    # close() gathers these tasks and would re-raise a cancellation; they are settled now.
    worker.tasks.clear()
    await worker.close()


def _on_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run(
    settings: Settings,
    *,
    app: Starlette | None,
    redis_url: str | None,
    with_worker: bool,
    stop: asyncio.Event | None = None,
) -> list[str]:
    """Run the web server and/or a worker until `stop` is set (or a stop signal arrives).
    Returns the errors that stopped a component ("worker: ConnectionError(...)"): empty after
    a clean stop, so that the command can exit non-zero and a supervisor restart it."""
    stop = stop or asyncio.Event()
    _on_stop_signals(stop)
    tasks: list[asyncio.Task[None]] = []
    server = build_server(app, settings) if app is not None else None
    worker = build_worker(settings, redis_url) if with_worker and redis_url else None
    if server is not None:
        tasks.append(asyncio.create_task(server.serve(), name="web"))
    if worker is not None:
        tasks.append(asyncio.create_task(worker.async_run(), name="worker"))
    stopper = asyncio.create_task(stop.wait(), name="stop")
    failures: list[str] = []
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                log.error("component stopped", component=task.get_name(),
                          error=repr(task.exception()))
                failures.append(f"{task.get_name()}: {task.exception()!r}")
    finally:
        log.info("shutting down")
        if server is not None:
            server.should_exit = True
        if worker is not None:
            try:
                await drain_worker(worker, grace=settings.conductor_shutdown_grace)
            except Exception as exc:  # Redis gone, say: the web server must still stop
                log.error("worker did not shut down cleanly", error=repr(exc))
        stopper.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            ):
                log.error("component failed", component=task.get_name(), error=repr(result))
    return failures


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[tuple[str, str]]:
    """The Redis to use and a description of it: `REDIS_URL`, or an embedded one."""
    if settings.redis_url:
        yield settings.redis_url, "Redis at REDIS_URL"
        return
    data = settings.conductor_data_dir / "redis"
    with embedded_redis(data) as url:
        yield url, f"embedded Redis (data in {data}, append-only file on)"
