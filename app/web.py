"""The web process: the webhook endpoint, health check and dashboard, or the setup pages.

Shared resources open in the lifespan and reach handlers through `request.state`; nothing is
opened at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from arq.connections import ArqRedis, create_pool
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from app import dashboard
from app.constants import QUEUE_NAME, WEBHOOK_PATH
from app.github import GitHubApp
from app.logs import get_logger
from app.redis import arq_settings
from app.routing import Identity
from app.settings import Settings
from app.webhooks import receive_webhook

log = get_logger(__name__)


async def healthz(request: Request) -> JSONResponse:
    redis: ArqRedis | None = getattr(request.state, "redis", None)
    if redis is None:
        return JSONResponse({"ok": True, "mode": "setup"})
    try:
        async with asyncio.timeout(1.0):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return JSONResponse({"ok": False, "redis": str(exc) or "timeout"}, status_code=503)
    return JSONResponse({"ok": True, "mode": "bot", "redis": "ok"})


async def index(request: Request) -> RedirectResponse | JSONResponse:
    return JSONResponse(
        {"app": "conductor", "webhook": WEBHOOK_PATH, "health": "/healthz",
         "dashboard": dashboard.PREFIX}
    )


def create_app(settings: Settings, *, redis_url: str | None = None) -> Starlette:
    """The bot's web app. Requires App credentials; see `create_setup_app` otherwise."""
    if settings.github_webhook_secret is None:
        raise ValueError("GITHUB_WEBHOOK_SECRET is required to receive webhooks")
    url = redis_url or settings.redis_url
    if url is None:
        raise ValueError("a Redis URL is required")
    identity = Identity(
        app_id=settings.github_app_id,
        bot_login=settings.bot_login,
        trigger_label=settings.conductor_trigger_label,
    )
    secret = settings.github_webhook_secret.get_secret_value().encode()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        redis = await create_pool(arq_settings(url), default_queue_name=QUEUE_NAME)
        # The dashboard's GitHub calls: who signed in, and what they may read. Only reads,
        # so the web process needs no write pacing.
        http = httpx.AsyncClient(timeout=10.0)
        try:
            yield {
                "settings": settings,
                "redis": redis,
                "identity": identity,
                "webhook_secret": secret,
                "dashboard": dashboard.Dashboard(
                    settings=settings, redis=redis, http=http,
                    github=GitHubApp(settings) if settings.has_app_credentials else None),
            }
        finally:
            await http.aclose()
            await redis.aclose()

    return Starlette(
        routes=[
            Route("/", index),
            Route(WEBHOOK_PATH, receive_webhook, methods=["POST"]),
            Route("/healthz", healthz),
            *dashboard.ROUTES,
        ],
        lifespan=lifespan,
    )
