"""`conductor` as a user runs it: a real process, a real port, signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from arq.connections import create_pool

from app.constants import QUEUE_NAME, event_job_id
from app.events import recent_events
from app.redis import RedisProcess, arq_settings, free_port
from app.settings import Settings
from tests.conftest import WEBHOOK_SECRET, load_fixture, signed_headers

CONDUCTOR = str(Path(sys.executable).parent / "conductor")


def clean_env(**values: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "ANTHROPIC_", "CONDUCTOR_", "REDIS_"))
        and k not in ("PORT", "HOST")
    }
    env.update(values)
    return env


class Proc:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def wait_for(self, text: str, timeout: float = 20) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"exited before printing {text!r}: {self.lines}")
                line = raw.decode()
                self.lines.append(line)
                if text in line:
                    return line

    async def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(20):
            out, _ = await self.process.communicate()
        self.lines.extend(out.decode().splitlines(keepends=True))
        assert self.process.returncode is not None
        return self.process.returncode


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[object]:
    started: list[Proc] = []

    async def launch(*args: str, **env: str) -> Proc:
        process = await asyncio.create_subprocess_exec(
            CONDUCTOR, *args, cwd=tmp_path, env=clean_env(**env),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        proc = Proc(process)
        started.append(proc)
        return proc

    yield launch
    for proc in started:
        if proc.process.returncode is None:
            proc.process.kill()
            await proc.process.wait()
    for server in _redis_servers_of(tmp_path):  # left by a test that failed half-way
        with contextlib.suppress(OSError):
            os.kill(int(server.name), signal.SIGKILL)


# uvicorn says "Application startup complete" before it binds the port, and this after.
LISTENING = "Uvicorn running on"

async def test_serve_without_configuration_starts_in_setup_mode(start: object) -> None:
    port = free_port()
    proc = await start("serve", PORT=str(port))  # type: ignore[operator]
    line = await proc.wait_for("setup mode")
    assert f"http://127.0.0.1:{port}/" in line
    await proc.wait_for(LISTENING)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).json() == {"ok": True, "mode": "setup"}
        page = await client.get("/")
        assert page.status_code == 200 and "Register GitHub App" in page.text
    assert await proc.stop() == 0


async def test_serve_with_credentials_runs_the_bot_on_embedded_redis(
    start: object, tmp_path: Path, private_key_pem: str
) -> None:
    port = free_port()
    env = {"PORT": str(port), "GITHUB_APP_ID": "7", "GITHUB_PRIVATE_KEY": private_key_pem,
           "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET, "GITHUB_APP_SLUG": "conductor-test"}
    proc = await start("serve", **env)  # type: ignore[operator]
    line = await proc.wait_for("bot mode")
    assert "embedded Redis" in line
    assert "GITHUB_CLIENT_ID" in await proc.wait_for("Dashboard: off")  # says what to set
    await proc.wait_for(LISTENING)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        body = json.dumps(load_fixture("ping.0.json")).encode()
        ping = await client.post("/api/github/webhooks", content=body,
                                 headers=signed_headers(body, "ping", "ping-1"))
        assert ping.status_code == 200
        installation = json.dumps(load_fixture("installation.created.0.json")).encode()
        accepted = await client.post(
            "/api/github/webhooks", content=installation,
            headers=signed_headers(installation, "installation", "inst-cli"),
        )
        assert accepted.status_code == 202 and accepted.json()["accepted"]
        await proc.wait_for('"event handled"')  # the in-process worker ran it

    assert await proc.stop(signal.SIGINT) == 0
    output = "".join(proc.lines)
    assert private_key_pem.splitlines()[1] not in output and WEBHOOK_SECRET not in output
    assert (tmp_path / ".conductor" / "redis" / "appendonly.aof").exists()
    assert not [p for p in Path("/proc").glob("[0-9]*") if _is_redis_of(p, tmp_path)]


def _is_redis_of(proc_dir: Path, data: Path) -> bool:
    # Redis rewrites its command line (no --dir left in it), but it runs in its data directory.
    try:
        name = (proc_dir / "comm").read_text().strip()
        state = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cwd = Path(os.readlink(proc_dir / "cwd"))
    except OSError:
        return False
    return name == "redis-server" and cwd.is_relative_to(data) and state != "Z"


def _redis_servers_of(data: Path) -> list[Path]:
    return [p for p in Path("/proc").glob("[0-9]*") if _is_redis_of(p, data)]


def bot_env(private_key_pem: str, **values: str) -> dict[str, str]:
    return {"PORT": str(free_port()), "GITHUB_APP_ID": "7",
            "GITHUB_PRIVATE_KEY": private_key_pem, "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GITHUB_APP_SLUG": "conductor-test", **values}


async def test_serve_killed_outright_leaves_no_second_redis_on_its_data(
    start: object, tmp_path: Path, private_key_pem: str
) -> None:
    env = bot_env(private_key_pem)
    first = await start("serve", **env)  # type: ignore[operator]
    await first.wait_for(LISTENING)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['PORT']}") as client:
        body = json.dumps(load_fixture("installation.created.0.json")).encode()
        headers = signed_headers(body, "installation", "before-the-crash")
        assert (await client.post("/api/github/webhooks", content=body,
                                  headers=headers)).json()["accepted"]
        await first.wait_for('"event handled"')
    first.process.kill()  # kill -9: nothing reaches the embedded redis-server
    await first.process.wait()
    assert len(_redis_servers_of(tmp_path)) == 1  # left running, with the data

    again = await start("serve", **env)  # type: ignore[operator]
    await again.wait_for(LISTENING)
    # One server appends to the data directory's append-only file, not two.
    assert len(_redis_servers_of(tmp_path)) == 1
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['PORT']}") as client:
        redelivered = await client.post("/api/github/webhooks", content=body, headers=headers)
        assert redelivered.json()["duplicate"]  # what the first one stored is still there
    assert await again.stop(signal.SIGTERM) == 0
    assert _redis_servers_of(tmp_path) == []


async def test_a_second_serve_on_the_same_data_directory_is_refused(
    start: object, tmp_path: Path, private_key_pem: str
) -> None:
    first = await start("serve", **bot_env(private_key_pem))  # type: ignore[operator]
    await first.wait_for(LISTENING)
    second = await start("serve", **bot_env(private_key_pem))  # type: ignore[operator]
    out, _ = await second.process.communicate()
    assert second.process.returncode == 2
    [line] = out.decode().strip().splitlines()[-1:]
    assert line.startswith("conductor: ") and "in use by another conductor process" in line
    assert f"pid {first.process.pid}" in line and "CONDUCTOR_DATA_DIR" in line
    assert len(_redis_servers_of(tmp_path)) == 1
    assert await first.stop() == 0


async def test_a_damaged_append_only_file_stops_start_up_naming_the_fix(
    start: object, tmp_path: Path, private_key_pem: str
) -> None:
    data = tmp_path / ".conductor" / "redis"
    data.mkdir(parents=True)
    (data / "appendonly.aof").write_bytes(
        b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\ngarbage left by a crash\r\n")
    proc = await start("serve", **bot_env(private_key_pem))  # type: ignore[operator]
    out, _ = await proc.process.communicate()
    text = out.decode()
    assert proc.process.returncode == 2, text
    assert "Traceback" not in text
    line = text.strip().splitlines()[-1]
    assert line.startswith("conductor: the embedded Redis could not load its append-only file")
    assert f"redis-check-aof --fix {data / 'appendonly.aof'}" in line


async def test_worker_process_runs_queued_jobs(
    start: object, redis_server: RedisProcess, redis: aioredis.Redis
) -> None:
    pool = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    payload = load_fixture("installation.created.1.json")
    await pool.enqueue_job("handle_event", "w-1", "installation", "installation", payload,
                           _job_id=event_job_id("w-1"))
    await pool.aclose()

    proc = await start("worker", REDIS_URL=redis_server.url)  # type: ignore[operator]
    await proc.wait_for("worker started")
    await proc.wait_for('"event handled"')
    assert [e["delivery"] for e in await recent_events(redis)] == ["w-1"], proc.lines
    assert await proc.stop(signal.SIGTERM) == 0, proc.lines[-6:]


@pytest.mark.parametrize("command", ["web", "worker"])
async def test_web_and_worker_need_redis_url(start: object, command: str) -> None:
    proc = await start(command)  # type: ignore[operator]
    out, _ = await proc.process.communicate()
    assert proc.process.returncode == 2
    assert out.decode().startswith(f"conductor: REDIS_URL: required by `conductor {command}`")


async def test_a_worker_that_loses_its_redis_exits_non_zero(start: object) -> None:
    # A supervisor that restarts on failure (systemd's Restart=on-failure) must see one.
    proc = await start("worker", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # type: ignore[operator]
    async with asyncio.timeout(60):
        out, _ = await proc.process.communicate()
    assert proc.process.returncode != 0
    last = out.decode().strip().splitlines()[-1]
    assert last.startswith("conductor: stopped: worker: ") and "Connect" in last


async def test_a_data_directory_that_cannot_be_used_is_one_line(
    start: object, tmp_path: Path, private_key_pem: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    proc = await start("serve", **bot_env(private_key_pem,  # type: ignore[operator]
                                          CONDUCTOR_DATA_DIR="a-file/data"))
    out, _ = await proc.process.communicate()
    assert proc.process.returncode == 2
    assert out.decode().strip().splitlines() == [
        "conductor: CONDUCTOR_DATA_DIR: cannot use a-file/data: Not a directory; set it to a "
        "directory this user can write to"]


async def test_a_bad_setting_stops_start_up_with_one_line(start: object) -> None:
    proc = await start("serve", PORT="eighty")  # type: ignore[operator]
    out, _ = await proc.process.communicate()
    assert proc.process.returncode == 2
    assert out.decode().strip().splitlines() == [
        "conductor: PORT: Input should be a valid integer, unable to parse string as an "
        "integer; set it to a TCP port number between 1 and 65535"
    ]


def test_the_dashboard_line_points_at_the_public_url_once_sign_in_is_set() -> None:
    from app.cli import _dashboard_line

    settings = Settings(_env_file=None, github_client_id="Iv1.abc",
                        github_client_secret="s" * 40,
                        conductor_public_url="https://conductor.example.test/")
    assert _dashboard_line(settings, "http://127.0.0.1:3000") == (
        "Dashboard: https://conductor.example.test/dashboard (sign in with GitHub)")
    local = settings.model_copy(update={"conductor_public_url": None})
    assert _dashboard_line(local, "http://127.0.0.1:3000").startswith(
        "Dashboard: http://127.0.0.1:3000/dashboard")


async def test_ctrl_c_with_a_job_in_flight_stops_redis_only_after_the_worker(
    tmp_path: Path, private_key_pem: str
) -> None:
    # A GitHub that accepts connections and never answers: the job waits on it.
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    github = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    api = f"http://127.0.0.1:{github.sockets[0].getsockname()[1]}"
    env = bot_env(private_key_pem, GITHUB_API_URL=api, CONDUCTOR_SHUTDOWN_GRACE="1",
                  CONDUCTOR_TRIGGER_LABEL="bug")
    # Ctrl-C in a terminal signals the whole foreground process group, children included.
    process = await asyncio.create_subprocess_exec(
        CONDUCTOR, "serve", cwd=tmp_path, env=clean_env(**env), start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    proc = Proc(process)
    try:
        await proc.wait_for(LISTENING)
        payload = load_fixture("issues.labeled.0.json")
        payload["label"]["name"] = "bug"
        payload["installation"] = {"id": 1}
        body = json.dumps(payload).encode()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['PORT']}") as client:
            answer = await client.post("/api/github/webhooks", content=body,
                                       headers=signed_headers(body, "issues", "in-flight"))
        assert answer.json()["accepted"]
        await proc.wait_for(":handle_event(")  # arq's line: the job has started
        os.killpg(process.pid, signal.SIGINT)
        async with asyncio.timeout(30):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        for writer in held:
            writer.close()
        github.close()
        await github.wait_closed()
    output = "".join(proc.lines) + out.decode()
    assert process.returncode == 0, output
    assert "Traceback" not in output and "did not shut down cleanly" not in output
    assert "they will run again" in output, output  # told Redis, which was still there
    log = (tmp_path / ".conductor" / "redis" / "redis.log").read_text()
    assert "Received SIGINT" not in log and "Received SIGTERM" in log
    assert _redis_servers_of(tmp_path) == []
