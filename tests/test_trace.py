"""`conductor trace`, run as a user runs it, against a run recorded in a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from app.budget import Budget
from app.limits import Limits
from app.models import ModelCall
from app.redis import RedisProcess, embedded_redis, free_port
from app.runs import Run, RunStatus, RunStore
from tests.test_cli import CONDUCTOR, _redis_servers_of, clean_env

PLAN = {"summary": "Add sub() and its test.", "rationale": "r", "steps": [
    {"id": "impl", "role": "implementer", "title": "Add sub", "description": "d",
     "files": ["widgets/sub.py"], "depends_on": [], "acceptance": [], "rationale": "r"},
    {"id": "test", "role": "test_engineer", "title": "Test sub", "description": "d",
     "files": ["tests/test_sub.py"], "depends_on": ["impl"], "acceptance": [],
     "rationale": "r"}]}


async def conductor(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CONDUCTOR, *args, cwd=cwd, env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def record_run(redis: aioredis.Redis) -> Run:
    """A run as the bot leaves it: two steps done, a PR, CI green, three model calls."""
    store = RunStore(redis)
    run = Run(id="widgets-7-1-abc123", repo="acme/widgets", installation_id=1, issue_number=7,
              issue_title="Add sub", triggered_by="alice", trigger_delivery="d-7", attempt=1,
              branch="conductor/issue-7-add-sub", status=RunStatus.VERIFYING,
              base_sha="1" * 40, head_sha="2" * 40, plan=PLAN, plan_template="generic",
              pr_number=8, pr_url="https://github.com/acme/widgets/pull/8",
              ci=[{"sha": "2" * 40, "started_at": 1796230000.0, "finished_at": 1796230060.0,
                   "verdict": "green", "detail": "3 checks passed"}])
    await store.create(run)
    await store.init_steps(run.id, ["impl", "test"])
    for step_id, commit, summary in (
            ("impl", "3" * 40, "Added sub(a, b).\x1b]0;owned\x07"),
            ("test", "2" * 40, "Tested sub.")):
        record = await store.step(run.id, step_id)
        assert record is not None
        record.state, record.commit, record.summary = "done", commit, summary
        record.rationale = f"{step_id}: the issue asks for it"
        record.started_at, record.finished_at = 1796229900.0, 1796229912.0
        record.files_changed, record.lines_changed = [f"{step_id}.py"], 4
        record.review = {"verdict": "accept", "comments": ["Looks right."],
                         "risk_flags": [], "risk_notes": ""}
        await store.save_step(run.id, record)
    await store.log(run.id, "plan", "plan accepted: 2 steps (template generic)")
    await store.log(run.id, "push", "pushed 3333333 to conductor/issue-7-add-sub", step="impl")
    budget = Budget(redis, run.id, Limits())
    for role, model, cost, step in (("orchestrator", "claude-opus-5-5", 0.0375, None),
                                    ("implementer", "claude-sonnet-5-5", 0.012, "impl"),
                                    ("reviewer", "claude-haiku-5-5", 0.002, "impl")):
        await budget.record(ModelCall(
            run_id=run.id, role=role, model=model, started_at=1796229890.0, latency_ms=1500,
            input_tokens=1000, output_tokens=200, cache_read_input_tokens=500, cost_usd=cost,
            stop_reason="tool_use", request_id=f"req_{role}", trace={"run": run.id, "step": step},
            request={"system": f"You are the {role}.", "messages": []},
            response={"content": [{"type": "text", "text": "done"}]}))
    return run


async def test_trace_shows_what_the_run_did_why_and_what_it_cost(
    redis: aioredis.Redis, redis_server: RedisProcess, tmp_path: Path
) -> None:
    run = await record_run(redis)

    code, out, err = await conductor("trace", run.id, cwd=tmp_path, REDIS_URL=redis_server.url)

    assert code == 0, err
    assert f"run {run.id}: acme/widgets#7 “Add sub”, verifying" in out
    assert "pull request #8 https://github.com/acme/widgets/pull/8" in out
    assert "cost $0.0515, 5,100 tokens" in out and "3 calls, 0 failed" in out
    assert "impl: the issue asks for it" in out
    assert "review: accept" in out and "comment: Looks right." in out
    assert "files: impl.py (4 lines changed)" in out
    assert "pushed 3333333 to conductor/issue-7-add-sub" in out
    assert "2222222 green" in out and "3 checks passed" in out
    calls = [line for line in out.splitlines() if "claude-" in line and " s  in " in line]
    assert len(calls) == 3 and "[impl]" in calls[1] and "req_implementer" in calls[1]
    # Text from a model cannot drive the terminal: the escape is shown, not sent.
    assert "\x1b" not in out and "\x07" not in out
    assert "Added sub(a, b).\\x1b]0;owned\\x07" in out


async def test_trace_json_has_everything_and_an_issue_names_its_latest_run(
    redis: aioredis.Redis, redis_server: RedisProcess, tmp_path: Path
) -> None:
    run = await record_run(redis)
    await redis.set("conductor:issue:acme/widgets#7:latest", run.id)

    code, out, err = await conductor("trace", "acme/widgets#7", "--json", cwd=tmp_path,
                                     REDIS_URL=redis_server.url)

    assert code == 0, err
    trace: dict[str, Any] = json.loads(out)
    assert trace["run"]["id"] == run.id
    assert [s["id"] for s in trace["steps"]] == ["impl", "test"]
    assert trace["steps"][0]["summary"] == "Added sub(a, b).\x1b]0;owned\x07"  # exact in JSON
    assert [c["role"] for c in trace["model_calls"]] == ["orchestrator", "implementer",
                                                         "reviewer"]
    assert trace["model_calls"][1]["request"]["system"] == "You are the implementer."
    assert trace["usage"]["overall"]["cost_micro_usd"] == 51_500
    assert [e["kind"] for e in trace["timeline"]] == ["plan", "push"]


async def test_trace_lists_the_latest_runs_and_names_an_unknown_one(
    redis: aioredis.Redis, redis_server: RedisProcess, tmp_path: Path
) -> None:
    run = await record_run(redis)

    code, out, _ = await conductor("trace", cwd=tmp_path, REDIS_URL=redis_server.url)
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith(run.id)]
    assert "acme/widgets#7" in row and "verifying" in row and "$0.0515" in row

    code, out, err = await conductor("trace", "nope-1-1-000000", cwd=tmp_path,
                                     REDIS_URL=redis_server.url)
    assert code == 2 and not out
    assert "no run 'nope-1-1-000000' in this Redis" in err

    code, out, err = await conductor("trace", cwd=tmp_path,
                                     REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert code == 2 and not out
    assert err.startswith("conductor: could not read Redis: ") and len(err.splitlines()) == 1


async def test_trace_piped_into_a_reader_that_stops_early_ends_quietly(
    redis: aioredis.Redis, redis_server: RedisProcess, tmp_path: Path
) -> None:
    run = await record_run(redis)
    for number in range(300):  # far more than a pipe holds
        await RunStore(redis).log(run.id, "note", f"event {number} " + "x" * 1000)
    read, write = os.pipe()
    process = await asyncio.create_subprocess_exec(
        CONDUCTOR, "trace", run.id, cwd=tmp_path, env=clean_env(REDIS_URL=redis_server.url),
        stdout=write, stderr=asyncio.subprocess.PIPE)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        first = reader.read(100)  # `| head -c 100`, then the reader goes away
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert first.startswith(f"run {run.id}".encode())
    assert process.returncode == 0 and not err


async def test_trace_reads_the_embedded_redis_running_or_not(tmp_path: Path) -> None:
    data = tmp_path / ".conductor" / "redis"
    code, _, err = await conductor("trace", cwd=tmp_path)
    assert code == 2 and f"no Redis data in {data}" in err  # nothing to start from

    with embedded_redis(data) as url:  # as `conductor serve` holds it
        client = aioredis.Redis.from_url(url)
        run = await record_run(client)
        await client.aclose()
        code, out, err = await conductor("trace", run.id, cwd=tmp_path)
        assert code == 0, err
        assert f"run {run.id}" in out

    # No server running: the data (its append-only file) is read by one started for the
    # moment, and stopped after.
    code, out, err = await conductor("trace", run.id, cwd=tmp_path)
    assert code == 0, err
    assert "impl: the issue asks for it" in out
    leftover = _redis_servers_of(tmp_path)
    for server in leftover:
        os.kill(int(server.name), signal.SIGKILL)
    assert not leftover
