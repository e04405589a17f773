"""The webhook endpoint against a real uvicorn server and a real Redis."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from arq.jobs import deserialize_job

from app.constants import DELIVERY_KEY, QUEUE_NAME, event_job_id
from app.logs import configure_logging
from app.redis import RedisProcess
from app.web import create_app
from app.webhooks import parse_json
from tests.conftest import (
    LiveServer,
    fixture_names,
    load_fixture,
    make_settings,
    signed_headers,
)

PATH = "/api/github/webhooks"


@pytest.fixture(scope="module")
def live(
    private_key_pem: str, redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = make_settings(private_key_pem, tmp_path_factory.mktemp("web"))
    app = create_app(settings, redis_url=redis_server.url)
    with LiveServer(app) as server:
        yield server


@pytest.fixture
async def client(live: LiveServer, redis: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        yield c


def _with_installation(payload: dict[str, Any]) -> dict[str, Any]:
    payload.setdefault("installation", {"id": 99, "node_id": "MDIzOkludGVncmF0aW9uOTk="})
    return payload


async def post(
    client: httpx.AsyncClient, event: str, payload: Any, delivery: str | None = None,
    **header_overrides: str,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = signed_headers(body, event, delivery or str(uuid.uuid4()))
    headers.update(header_overrides)
    return await client.post(PATH, content=body, headers=headers)


async def queued(redis: aioredis.Redis) -> int:
    return int(await redis.zcard(QUEUE_NAME))


def _labeled(label: str = "agent:implement") -> dict[str, Any]:
    payload = _with_installation(load_fixture("issues.labeled.0.json"))
    payload["label"]["name"] = label
    payload["issue"]["state"] = "open"
    payload["issue"].pop("pull_request", None)
    return payload


@pytest.mark.parametrize("name", fixture_names())
async def test_every_real_payload_is_accepted_or_ignored_when_signed(
    client: httpx.AsyncClient, name: str
) -> None:
    event = name.split(".")[0]
    response = await post(client, event, _with_installation(load_fixture(name)))
    assert response.status_code == (200 if event == "ping" else 202), response.text
    body = response.json()
    if event != "ping":
        assert ("accepted" in body) != ("ignored" in body), body


@pytest.mark.parametrize("name", fixture_names())
async def test_every_real_payload_is_refused_unsigned(
    client: httpx.AsyncClient, redis: aioredis.Redis, name: str
) -> None:
    body = json.dumps(load_fixture(name)).encode()
    response = await client.post(
        PATH, content=body,
        headers={"x-github-event": name.split(".")[0], "x-github-delivery": "d-unsigned"},
    )
    assert response.status_code == 401
    assert "GITHUB_WEBHOOK_SECRET" in response.json()["error"]
    assert await queued(redis) == 0


async def test_labeled_issue_is_queued_once_with_a_job_id_from_the_delivery(
    client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    response = await post(client, "issues", _labeled(), delivery="delivery-1")
    assert response.status_code == 202
    assert response.json() == {"accepted": True, "delivery": "delivery-1", "kind": "start_run"}
    jobs = await redis.zrange(QUEUE_NAME, 0, -1)
    assert [j.decode() for j in jobs] == [event_job_id("delivery-1")]
    assert await redis.ttl(DELIVERY_KEY.format(delivery_id="delivery-1")) > 3 * 24 * 3600


async def test_other_labels_are_ignored_with_the_reason(
    client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    response = await post(client, "issues", _labeled("bug"))
    assert response.status_code == 202
    assert response.json()["ignored"] == "label 'bug' is not the trigger label 'agent:implement'"
    assert await queued(redis) == 0


async def test_unknown_event_is_ignored(client: httpx.AsyncClient, redis: aioredis.Redis) -> None:
    response = await post(client, "star", {"action": "created"})
    assert response.status_code == 202
    assert response.json()["ignored"] == "event 'star' is not handled"
    assert await queued(redis) == 0


async def test_ping_answers_200(client: httpx.AsyncClient) -> None:
    response = await post(client, "ping", load_fixture("ping.0.json"))
    assert response.status_code == 200
    assert response.json()["ok"] is True


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing"),
        ("sha256=" + "0" * 64, "wrong digest"),
        ("sha1=abc", "wrong algorithm"),
        ("", "empty"),
    ],
)
async def test_bad_signatures_are_401(
    client: httpx.AsyncClient, redis: aioredis.Redis, signature: str | None, reason: str
) -> None:
    body = json.dumps(_labeled()).encode()
    headers = signed_headers(body, "issues", "d-bad")
    if signature is None:
        del headers["x-hub-signature-256"]
    else:
        headers["x-hub-signature-256"] = signature
    response = await client.post(PATH, content=body, headers=headers)
    assert response.status_code == 401, reason
    assert await queued(redis) == 0


async def test_signature_over_other_bytes_is_401(client: httpx.AsyncClient) -> None:
    body = json.dumps(_labeled()).encode()
    headers = signed_headers(body, "issues", "d-tamper")
    response = await client.post(PATH, content=body.replace(b"agent", b"agenT"), headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("missing", ["x-github-event", "x-github-delivery"])
async def test_missing_event_headers_are_400(client: httpx.AsyncClient, missing: str) -> None:
    body = json.dumps(_labeled()).encode()
    headers = signed_headers(body, "issues", "d-headers")
    del headers[missing]
    response = await client.post(PATH, content=body, headers=headers)
    assert response.status_code == 400
    assert "X-GitHub-Event and X-GitHub-Delivery" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "body is not JSON"),
        (b"", "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b'"text"', "body is not a JSON object"),
        (b"null", "body is not a JSON object"),
    ],
)
async def test_malformed_bodies_are_400(
    client: httpx.AsyncClient, redis: aioredis.Redis, body: bytes, error: str
) -> None:
    response = await post(client, "issues", body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert await queued(redis) == 0


def test_bodies_orjson_refuses_are_read_as_the_standard_library_reads_them() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x"]}') == ({"a": [1, 2.5, "x"]}, True)
    lone = parse_json(b'{"body": "broken \\ud83d emoji"}')
    assert lone == ({"body": "broken \ud83d emoji"}, False)
    assert parse_json(b'{"big": 1e400}') == ({"big": float("inf")}, False)
    # The one difference from the standard library: beyond 64 bits an integer becomes a float.
    assert parse_json(b'{"id": 18446744073709551615}') == ({"id": 2**64 - 1}, True)
    assert parse_json(b'{"id": 18446744073709551616}') == ({"id": float(2**64)}, True)
    assert parse_json(b'\xef\xbb\xbf{"bom": true}') == ({"bom": True}, False)
    value, strict = parse_json(b'{"x": NaN}')
    assert not strict and value["x"] != value["x"]
    for not_json in (b"not json", b"", b"\xff\xfe\x00", b"{", b"[" * 100_000):
        with pytest.raises(ValueError):
            parse_json(not_json)


async def test_a_command_with_a_lone_surrogate_is_queued_not_refused(
    client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    comment = _with_installation(load_fixture("issue_comment.created.0.json"))
    comment["comment"]["body"] = "/agent retry \ud83d"  # half an emoji, as a truncation leaves
    response = await post(client, "issue_comment", comment, delivery="lone-surrogate")
    assert response.json()["accepted"] is True
    raw = await redis.get("arq:job:" + event_job_id("lone-surrogate"))
    assert deserialize_job(raw).args[3] == comment


async def test_an_answer_quoting_a_lone_surrogate_is_written_not_500(
    client: httpx.AsyncClient,
) -> None:
    # The ignore reason quotes the label, the ping answer the zen: neither encodes as UTF-8.
    response = await post(client, "issues", _labeled("agent:\ud83d"))
    assert response.status_code == 202
    assert response.json()["ignored"].startswith("label 'agent:\ud83d' is not the trigger")
    ping = load_fixture("ping.0.json")
    ping["zen"] = "half an emoji \ud83d"
    response = await post(client, "ping", ping)
    assert response.status_code == 200 and response.json()["zen"] == ping["zen"]


async def test_absurdly_deep_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await post(client, "issues", b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
    assert response.json()["error"] == "body is not JSON"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    yield stream
    root.handlers, root.level = handlers, level


async def test_each_delivery_is_logged_once_with_all_its_fields(
    client: httpx.AsyncClient, log_lines: io.StringIO
) -> None:
    payload = _labeled()
    await post(client, "issues", payload, delivery="logged-1")
    await post(client, "issues", payload, delivery="logged-1")
    await post(client, "issues", _labeled("bug"), delivery="logged-2")
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    mine = [line for line in lines if line.get("delivery", "").startswith("logged-")]
    assert [(line["event"], line["delivery"]) for line in mine] == [
        ("webhook accepted", "logged-1"), ("webhook duplicate", "logged-1"),
        ("webhook ignored", "logged-2")]
    assert mine[0] | {"timestamp": None} == {
        "event": "webhook accepted", "level": "info", "logger": "app.webhooks",
        "timestamp": None, "delivery": "logged-1", "github_event": "issues",
        "action": "labeled", "installation": payload["installation"]["id"],
        "repo": payload["repository"]["full_name"], "kind": "start_run"}
    assert mine[2]["reason"] == "label 'bug' is not the trigger label 'agent:implement'"


async def test_nothing_below_the_level_is_logged(
    client: httpx.AsyncClient, log_lines: io.StringIO
) -> None:
    logging.getLogger().setLevel("WARNING")
    await post(client, "issues", _labeled(), delivery="quiet-1")
    assert "quiet-1" not in log_lines.getvalue()


async def test_payload_over_the_cap_is_413_without_reading_it_all(
    client: httpx.AsyncClient,
) -> None:
    big = b'{"a": "' + b"x" * (25 * 1024 * 1024) + b'"}'
    response = await post(client, "issues", big)
    assert response.status_code == 413


async def test_chunked_payload_over_the_cap_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(27):
            yield b"x" * (1024 * 1024)

    headers = {"x-github-event": "issues", "x-github-delivery": "d-chunked",
               "x-hub-signature-256": "sha256=00"}
    response = await client.post(PATH, content=chunks(), headers=headers)
    assert response.status_code == 413


async def test_wrong_shapes_inside_a_valid_object_never_500(
    client: httpx.AsyncClient,
) -> None:
    odd_payloads: list[dict[str, Any]] = [
        {},
        {"action": None},
        {"action": "labeled", "label": "agent:implement", "issue": []},
        {"action": "labeled", "label": {"name": ["x"]}, "sender": "me"},
        {"action": "created", "comment": {"body": None}},
        {"action": "created", "comment": {"body": 7}, "installation": "x", "repository": 5},
        {"action": "completed", "check_run": {"app": None}},
        {"action": "closed", "pull_request": {"head": {"ref": 12}}},
        {"state": ["pending"]},
    ]
    events = ["issues", "issue_comment", "check_run", "check_suite", "workflow_run", "status",
              "pull_request", "pull_request_review", "installation"]
    for event in events:
        for payload in odd_payloads:
            response = await post(client, event, payload)
            assert response.status_code in (200, 202), (event, payload, response.text)


async def test_fifty_concurrent_redeliveries_enqueue_once(
    client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    payload = _labeled()
    responses = await asyncio.gather(
        *(post(client, "issues", payload, delivery="same-delivery") for _ in range(50))
    )
    assert all(r.status_code == 202 for r in responses)
    accepted = [r for r in responses if r.json().get("accepted")]
    duplicates = [r for r in responses if r.json().get("duplicate")]
    assert len(accepted) == 1
    assert len(duplicates) == 49
    assert await queued(redis) == 1


async def test_redelivery_after_the_job_finished_is_still_a_duplicate(
    client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    assert (await post(client, "issues", _labeled(), delivery="done-1")).json()["accepted"]
    await redis.delete(QUEUE_NAME)  # as if a worker had taken and finished the job
    response = await post(client, "issues", _labeled(), delivery="done-1")
    assert response.json() == {"duplicate": True, "delivery": "done-1"}
    assert await queued(redis) == 0


async def test_events_from_this_apps_bot_are_ignored(
    client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    payload = _labeled()
    payload["sender"]["login"] = "conductor-test[bot]"
    payload["sender"]["type"] = "Bot"
    response = await post(client, "issues", payload)
    assert response.json()["ignored"] == "sent by this app"

    comment = _with_installation(load_fixture("issue_comment.created.0.json"))
    comment["comment"]["body"] = "/agent retry"
    comment["comment"]["performed_via_github_app"] = {"id": 4242, "slug": "conductor-test"}
    response = await post(client, "issue_comment", comment)
    assert response.json()["ignored"] == "sent by this app"
    assert await queued(redis) == 0


async def test_a_command_comment_from_a_person_is_accepted(
    client: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    comment = _with_installation(load_fixture("issue_comment.created.0.json"))
    comment["comment"]["body"] = "/Agent retry please use a dict"
    response = await post(client, "issue_comment", comment)
    assert response.json()["kind"] == "command"
    assert await queued(redis) == 1


async def test_healthz_checks_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "mode": "bot", "redis": "ok"}


async def test_a_redis_that_stops_answering_is_503_within_githubs_wait(
    settings_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from app import webhooks
    from app.redis import start_redis_on_free_port

    monkeypatch.setattr(webhooks, "QUEUE_WAIT", 0.5)
    server = start_redis_on_free_port(tmp_path / "r", appendonly=False)
    app = create_app(settings_factory(), redis_url=server.url)
    try:
        with LiveServer(app) as live:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                assert (await post(c, "issues", _labeled(), delivery="before")).status_code == 202
                os.kill(server.process.pid, signal.SIGSTOP)  # alive, connected, silent
                try:
                    response = await post(c, "issues", _labeled(), delivery="while-stalled")
                finally:
                    os.kill(server.process.pid, signal.SIGCONT)
                assert response.status_code == 503
                assert "redeliver" in response.json()["error"]
                # Redis is back: the redelivery is taken (once, whatever the first try left).
                again = await post(c, "issues", _labeled(), delivery="while-stalled")
                assert again.status_code == 202
    finally:
        server.stop()


async def test_redis_down_is_503_and_the_delivery_can_be_redelivered(
    settings_factory: Any, tmp_path: Any
) -> None:
    from app.redis import start_redis_on_free_port

    server = start_redis_on_free_port(tmp_path / "r", appendonly=False)
    app = create_app(settings_factory(), redis_url=server.url)
    with LiveServer(app) as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
            server.stop()
            response = await post(c, "issues", _labeled(), delivery="while-down")
            assert response.status_code == 503
            assert "redeliver" in response.json()["error"]
            health = await c.get("/healthz")
            assert health.status_code == 503
