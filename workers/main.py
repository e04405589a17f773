"""The arq worker: `WorkerSettings` and the job functions. Thin: the work lives in app/."""

from __future__ import annotations

from typing import Any

from app import routing
from app.constants import QUEUE_NAME, Job
from app.events import Event, dispatch
from app.installations import handle_installation
from app.logs import configure_logging
from app.settings import load_settings


async def handle_event(
    ctx: dict[str, Any], delivery_id: str, event: str, kind: str, payload: dict[str, Any]
) -> str:
    return await dispatch(ctx, Event(delivery_id=delivery_id, name=event, kind=kind,
                                     payload=payload))


async def startup(ctx: dict[str, Any]) -> None:
    if "settings" not in ctx:  # started by plain `arq`, not by `conductor`
        ctx["settings"] = load_settings()
        configure_logging(ctx["settings"].log_level, ctx["settings"].secret_values())
    ctx.setdefault("handlers", {routing.INSTALLATION: handle_installation})


async def shutdown(ctx: dict[str, Any]) -> None:
    return None


handle_event.__name__ = Job.HANDLE_EVENT


class WorkerSettings:
    functions: list[Any] = [handle_event]
    queue_name = QUEUE_NAME
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 8
    job_timeout = 600
    keep_result = 3600
    allow_abort_jobs = True
