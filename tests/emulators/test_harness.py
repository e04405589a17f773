"""The end-to-end harness: it starts the real processes, wires them, and cleans up."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.emulators.harness import MODEL_KEY, REPO, Stack, manifest

ALLOWED_ENV = {
    "PATH", "HOME", "LANG", "GITHUB_APP_ID", "GITHUB_PRIVATE_KEY_PATH", "GITHUB_WEBHOOK_SECRET",
    "GITHUB_APP_SLUG", "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET", "GITHUB_API_URL", "GITHUB_URL",
    "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
    "REDIS_URL", "CONDUCTOR_DATA_DIR", "PORT", "HOST", "LOG_LEVEL", "CONDUCTOR_JOB_TIMEOUT",
    "CONDUCTOR_WORKER_CONCURRENCY", "CONDUCTOR_RUN_CONCURRENCY", "CONDUCTOR_GITHUB_WRITE_INTERVAL",
}


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)


def test_the_stack_runs_conductor_against_the_stand_ins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fromthehost0000000000")
    monkeypatch.setenv("GITHUB_APP_ID", "1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fromthehost-000000")
    stack = Stack(tmp_path, job_timeout=15, worker_concurrency=3).start()
    try:
        state = stack.state
        assert httpx.get(stack.web_url + "/healthz").json()["ok"] is True

        wanted = manifest()
        assert stack.installation.permissions == wanted["default_permissions"]
        assert "workflows" not in stack.installation.permissions
        assert sorted(state.app.events) == sorted(wanted["default_events"])
        roles = stack.repo.collaborators
        assert {u: roles[u] for u in ("alice", "maggie", "rita", "tina")} == {
            "alice": "write", "maggie": "maintain", "rita": "read", "tina": "triage",
        }

        assert stack.web is not None
        env = process_env(stack.web.pid)
        assert set(env) <= ALLOWED_ENV
        assert env["GITHUB_APP_ID"] == str(state.app_id) and env["ANTHROPIC_API_KEY"] == MODEL_KEY
        assert env["GITHUB_API_URL"] == env["GITHUB_URL"] == stack.github.url
        assert env["CONDUCTOR_JOB_TIMEOUT"] == "15"
        assert process_env(stack.workers[0].pid)["CONDUCTOR_WORKER_CONCURRENCY"] == "3"

        # A signed delivery reaches the web process, which answers it.
        state.as_user("rita").open_issue(REPO, "Just a question")
        opened = stack.hooks.wait_for(lambda d: d.event == "issues", 15)
        assert opened.status_code == 202 and "ignored" in opened.response_json()

        client = stack.redis_client()
        assert client.ping() and client.config_get("appendonly") == {"appendonly": "yes"}

        worker = stack.add_worker()
        assert worker.alive and len(stack.workers) == 2
        assert stack.kill_worker(1, signal.SIGKILL) == -signal.SIGKILL
        assert "Starting worker for" in stack.worker_logs(1)

        with pytest.raises(AssertionError, match="webhook deliveries") as failure:
            stack.wait_for(lambda: False, 0.2, "something that never happens")
        assert "conductor web (running)" in str(failure.value)
        assert "issues.opened delivered 202" in str(failure.value)
    finally:
        stack.stop()
    assert stack.web is not None and not stack.web.alive
    assert not any(w.alive for w in stack.workers)
    assert stack.redis.process.poll() is not None
    assert "Uvicorn running" in stack.final_logs["web"]


def test_a_process_that_cannot_start_fails_the_stack_with_its_output(tmp_path: Path) -> None:
    stack = Stack(tmp_path, env={"REDIS_URL": ""}, startup_timeout=20)
    with pytest.raises(RuntimeError, match="REDIS_URL: required by `conductor web`"):
        stack.start()
    assert stack.web is not None and not stack.web.alive
    assert not any(w.alive for w in stack.workers)
    assert stack.redis.process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(stack.github.url + "/_admin/app", timeout=2)


def test_a_web_port_taken_before_conductor_binds_it_is_swapped_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another test process listening on the port the harness picked: uvicorn exits with
    # "address already in use", and the stack starts conductor web again on another port.
    import socket

    import tests.emulators.harness as harness

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    picks = iter([taken_port])
    real = harness.free_port
    monkeypatch.setattr(harness, "free_port", lambda: next(picks, None) or real())
    stack = Stack(tmp_path, workers=0, startup_timeout=30)
    try:
        stack.start()
        assert stack.web_port != taken_port
        assert "address already in use" in stack.web_log.read_text()
        assert httpx.get(stack.web_url + "/healthz").json()["ok"] is True
    finally:
        stack.stop()
        taken.close()
