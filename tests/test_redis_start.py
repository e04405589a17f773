"""Starting a throwaway Redis on a TCP port, as the test suite and the benches do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import app.redis as redis_module
from app.redis import RedisProcess, RedisStartError, start_redis, start_redis_on_free_port


@pytest.fixture
def first(tmp_path: Path) -> Iterator[RedisProcess]:
    server = start_redis_on_free_port(tmp_path / "first", appendonly=False)
    yield server
    server.stop()


def _port(server: RedisProcess) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


def test_a_port_another_redis_holds_is_refused_not_mistaken_for_ours(
    first: RedisProcess, tmp_path: Path
) -> None:
    # The other server answers PING on that port; start_redis must not take it for its own.
    with pytest.raises(RedisStartError, match="Failed listening on port"):
        start_redis(tmp_path / "second", port=_port(first), appendonly=False)


def test_a_port_taken_meanwhile_is_swapped_for_another(
    first: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picks = iter([_port(first)])
    real = redis_module.free_port
    monkeypatch.setattr(redis_module, "free_port", lambda: next(picks, None) or real())

    second = start_redis_on_free_port(tmp_path / "second", appendonly=False)
    try:
        assert _port(second) != _port(first)
        client = redis.Redis.from_url(second.url)
        assert client.info("server")["process_id"] == second.process.pid
        client.close()
    finally:
        second.stop()


def test_free_ports_avoid_the_range_outgoing_connections_use() -> None:
    low, high = redis_module._ephemeral_range()
    ports = {redis_module.free_port() for _ in range(50)}
    assert all(not low <= port <= high for port in ports)
    assert len(ports) > 1  # picked at random, so parallel test processes rarely agree
