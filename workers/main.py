"""The arq worker: `WorkerSettings` and the job functions. Thin: the work lives in app/."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from arq import Retry, cron
from githubkit.exception import GitHubException, RequestError, RequestFailed

from app import routing, tracking, verify
from app.commands import handle_command
from app.constants import QUEUE_NAME
from app.events import Event, dispatch
from app.finalize import finalize_run as _finalize_run
from app.git import REPOSITORY_GONE, GitError, repository_gone
from app.github import GitHubApp, RateLimited, describe
from app.installations import handle_installation
from app.issue_events import handle_issue
from app.logs import configure_logging, get_logger, redactor
from app.models import ModelClient, ModelUnavailable
from app.planning import plan_run as _plan_run
from app.pr_events import handle_pull_request
from app.runs import RunStore
from app.scheduling import reconcile as _reconcile
from app.scheduling import schedule_run as _schedule_run
from app.services import Services
from app.settings import load_settings
from app.stepper import fail_step
from app.stepper import run_step as _run_step
from app.stopping import give_up_run
from app.trigger import report_failed_event, start_run
from app.workspace import sweep_worktrees

log = get_logger(__name__)


TRANSIENT_TRIES = 6
GONE_TRIES = 2
# A model API that asks for a longer wait (a rate limit hours away) stops the run with the
# wait in its reason, rather than parking it where nobody sees why nothing happens.
MAX_MODEL_DEFER = 900.0
# Seconds before arq's job timeout at which a run's job stops itself to report why.
JOB_TIMEOUT_MARGIN = 60.0


def _backoff(ctx: dict[str, Any], exc: BaseException) -> Retry:
    """A transient failure (GitHub or the network): run the job again, waiting longer each
    time. arq retries only on `Retry`; anything else would fail the job and lose the work."""
    tries = int(ctx.get("job_try", 1))
    if isinstance(exc, RateLimited):
        seconds = exc.retry_after.total_seconds()
    elif isinstance(exc, ModelUnavailable) and exc.retry_after:
        seconds = exc.retry_after
    else:
        seconds = min(120.0, 2.0 ** tries)
    seconds = max(1.0, seconds)
    log.warning("job deferred", job=ctx.get("job_id"), reason=f"{type(exc).__name__}: {exc}",
                try_=tries, seconds=seconds)
    return Retry(defer=seconds)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, RateLimited | ModelUnavailable | httpx.TransportError | GitError):
        return True
    if isinstance(exc, RequestFailed):
        # 401: the installation token expired or was revoked; it is forgotten, and the next
        # try gets a new one.
        return exc.response.status_code >= 500 or exc.response.status_code == 401
    # githubkit wraps a reset connection or a timeout (httpx's errors) in RequestError.
    return isinstance(exc, RequestError)


def _tries_for(exc: BaseException) -> int:
    # A repository git cannot find is tried once more (GitHub's replicas can lag a moment
    # behind a new repository or token), not for minutes: access is gone, and a person must
    # give it back.
    if isinstance(exc, GitError) and repository_gone(exc.output):
        return GONE_TRIES
    return TRANSIENT_TRIES


def _too_long(exc: BaseException) -> bool:
    return isinstance(exc, ModelUnavailable) and (exc.retry_after or 0.0) > MAX_MODEL_DEFER


async def _guarded(ctx: dict[str, Any], work: Awaitable[str]) -> str:
    try:
        return await work
    except Exception as exc:
        if (_transient(exc) and not _too_long(exc)
                and int(ctx.get("job_try", 1)) < _tries_for(exc)):
            raise _backoff(ctx, exc) from exc
        raise


async def handle_event(
    ctx: dict[str, Any], delivery_id: str, event: str, kind: str, payload: dict[str, Any]
) -> str:
    item = Event(delivery_id=delivery_id, name=event, kind=kind, payload=payload)
    try:
        return await _guarded(ctx, dispatch(ctx, item))
    except Retry:
        raise
    except Exception as exc:
        # Failed for good: on the event log, and the person who asked is told.
        await report_failed_event(ctx, item, _describe(exc, _data_dir(ctx)))
        raise


async def plan_run(ctx: dict[str, Any], run_id: str) -> str:
    return await _or_give_up(ctx, run_id, "planning", _plan_run(ctx, run_id))


async def schedule_run(ctx: dict[str, Any], run_id: str, trigger: str) -> str:
    return await _guarded(ctx, _schedule_run(ctx, run_id, trigger))


async def run_step(ctx: dict[str, Any], run_id: str, step_id: str, attempt: int) -> str:
    # Never leave the step "running" behind a failed job: the run would wait forever.
    return await _or_else(ctx, _run_step(ctx, run_id, step_id, attempt), lambda why: fail_step(
        ctx["services"], run_id, step_id, attempt, f"the step's job failed: {why}"))


DISK_FULL = ("the worker's disk is full (no space left in CONDUCTOR_DATA_DIR, where the "
             "clones and worktrees are): free space there, then `/agent retry`")


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, GitError) and "no space left on device" in exc.output.lower()


def _describe(exc: BaseException, data_dir: Path | None = None) -> str:
    """What failed, for a person: no paths of this machine's disk."""
    if _disk_full(exc):
        return DISK_FULL
    if isinstance(exc, GitError) and repository_gone(exc.output):
        return REPOSITORY_GONE
    text = describe(exc) if isinstance(exc, GitHubException) else f"{type(exc).__name__}: {exc}"
    if data_dir is not None:
        text = text.replace(str(data_dir.resolve()), "$CONDUCTOR_DATA_DIR")
    if isinstance(exc, ModelUnavailable) and _too_long(exc):
        assert exc.retry_after is not None
        text = (f"the Anthropic API asked to wait {_duration(exc.retry_after)} before another "
                f"call: retry after that ({text})")
    text = redactor.scrub(text)
    return text if len(text) <= 300 else text[:299] + "…"


def _data_dir(ctx: dict[str, Any]) -> Path | None:
    settings = ctx.get("settings")
    return settings.conductor_data_dir if settings is not None else None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "") \
        if minutes >= 60 else f"{minutes} min"


async def finalize_run(ctx: dict[str, Any], run_id: str) -> str:
    return await _or_give_up(ctx, run_id, "opening the pull request",
                             _finalize_run(ctx, run_id))


async def evaluate_ci(ctx: dict[str, Any], run_id: str, sha: str) -> str:
    # The periodic reconcile would run a job that keeps failing every 30 s, unseen.
    return await _or_give_up(ctx, run_id, "reading the CI results",
                             verify.evaluate_ci(ctx, run_id, sha))


async def fix_ci(ctx: dict[str, Any], run_id: str, sha: str) -> str:
    return await _or_give_up(ctx, run_id, "handling the CI failure",
                             verify.fix_ci(ctx, run_id, sha))


async def _or_give_up(ctx: dict[str, Any], run_id: str, doing: str,
                      work: Awaitable[str]) -> str:
    """Run `work`; if it fails for good, stop the run with the reason rather than leave it
    waiting for a job that will never come back."""
    return await _or_else(ctx, work, lambda why: give_up_run(
        ctx["services"], run_id, f"{doing} failed: {why}"))


async def _or_else(ctx: dict[str, Any], work: Awaitable[str],
                   failed: Callable[[str], Awaitable[None]]) -> str:
    """Run `work` (retrying transient failures); on any other failure call `failed` with
    its description, then fail the job."""
    try:
        return await _guarded(ctx, _in_time(ctx, work))
    except Retry:
        raise
    except Exception as exc:
        await failed(_describe(exc, _data_dir(ctx)))
        raise


class JobTimedOut(Exception):
    """The job did not finish in the time a job is given (CONDUCTOR_JOB_TIMEOUT)."""


async def _in_time(ctx: dict[str, Any], work: Awaitable[str]) -> str:
    """`work`, stopped a little before arq's job timeout. arq cancels a job at the timeout
    and never runs it again, so `failed` could not say why and the run would wait forever:
    time out here first, with room left to record the reason."""
    settings = ctx.get("settings")
    if settings is None:
        return await work
    timeout = float(settings.conductor_job_timeout)
    limit = timeout - min(JOB_TIMEOUT_MARGIN, timeout / 4)
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await work
    except TimeoutError:
        if not scope.expired():
            raise
        raise JobTimedOut(
            f"the job did not finish within {limit:.0f} s, the time a job has "
            f"(CONDUCTOR_JOB_TIMEOUT={timeout:.0f} s); the model may be answering slowly: "
            "retry, or raise CONDUCTOR_JOB_TIMEOUT") from None


async def refresh_tracking(ctx: dict[str, Any], run_id: str) -> str:
    return await _guarded(ctx, tracking.refresh_job(ctx, run_id))


async def reconcile(ctx: dict[str, Any]) -> str:
    if "services" not in ctx:
        return "not configured"
    return await _guarded(ctx, _reconcile(ctx))


async def startup(ctx: dict[str, Any]) -> None:
    if "settings" not in ctx:  # started by plain `arq`, not by `conductor`
        ctx["settings"] = load_settings()
        configure_logging(ctx["settings"].log_level, ctx["settings"].secret_values())
    settings = ctx["settings"]
    # Worktrees a killed worker left behind (a job removes its own when it ends).
    await sweep_worktrees(settings.conductor_data_dir,
                          older_than=settings.conductor_job_timeout + 60)
    ctx.setdefault("handlers", {
        routing.INSTALLATION: handle_installation,
        routing.START_RUN: start_run,
        routing.COMMAND: handle_command,
        routing.CI_RESULT: verify.ci_event,
        routing.PULL_REQUEST: handle_pull_request,
        routing.ISSUE: handle_issue,
    })
    if "services" not in ctx and settings.has_app_credentials:
        github = GitHubApp(settings, redis=ctx["redis"])
        github.warm_up()
        ctx["services"] = Services(
            settings=settings,
            redis=ctx["redis"],
            store=RunStore(ctx["redis"]),
            github=github,
            models=ModelClient(settings),
        )


async def shutdown(ctx: dict[str, Any]) -> None:
    services = ctx.get("services")
    if services is not None and services.models is not None:
        await services.models.aclose()


class WorkerSettings:
    functions: list[Any] = [handle_event, plan_run, schedule_run, run_step, finalize_run,
                            refresh_tracking, evaluate_ci, fix_ci]
    queue_name = QUEUE_NAME
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 8
    job_timeout = 900
    keep_result = 3600
    max_tries = 20  # only `Retry` retries: transient failures and rate limits
    # Every 30 s (app.processes sets CONDUCTOR_RECONCILE_SECONDS); unique=True (the default)
    # makes one worker run it per tick.
    cron_jobs = [cron(reconcile, second={0, 30}, run_at_startup=False)]
    allow_abort_jobs = True
