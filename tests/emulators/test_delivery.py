"""Webhook delivery: signed POSTs to a real receiver on loopback, in order, recorded."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.redis import free_port
from tests.emulators.github.delivery import WebhookDelivery
from tests.emulators.github.testing import Env, running_emulator


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> str:
        return self.headers["x-github-event"]

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """An HTTP server that records what it gets and answers ``status`` (once ``hold`` is set,
    when there is one: a slow receiver)."""

    status: int = 202
    hold: threading.Event | None = None
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, body)
                )
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(10)
                answer = json.dumps({"seen": self.headers["x-github-delivery"]}).encode()
                try:
                    self.send_response(receiver.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def events(self) -> list[tuple[str, str | None]]:
        return [(r.event, r.payload.get("action")) for r in self.received]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver, f"http://127.0.0.1:{server.server_address[1]}/api/github/webhooks"
    server.shutdown()
    server.server_close()


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


@pytest.fixture
def hooks(gh: Env, receiver: tuple[Receiver, str]) -> Iterator[WebhookDelivery]:
    with WebhookDelivery(gh.state, receiver[1]) as delivery:
        yield delivery


def sign(secret: str, body: bytes, digest: Any) -> str:
    return hmac.new(secret.encode(), body, digest).hexdigest()


def test_deliveries_arrive_signed_in_order_with_githubs_headers(
    gh: Env, hooks: WebhookDelivery, receiver: tuple[Receiver, str]
) -> None:
    got, _ = receiver
    alice = gh.state.as_user("alice")
    issue = alice.open_issue("acme/widgets", "Add subtraction", "please")
    alice.add_labels("acme/widgets", issue.number, "agent:implement")
    alice.comment("acme/widgets", issue.number, "thanks ✓")
    hooks.wait_idle(10)

    assert got.events() == [
        ("issues", "opened"),
        ("issues", "labeled"),
        ("issue_comment", "created"),
    ]
    secret = gh.state.webhook_secret
    guids = set()
    for item in got.received:
        headers = item.headers
        assert headers["x-hub-signature-256"] == "sha256=" + sign(secret, item.body, hashlib.sha256)
        assert headers["x-hub-signature"] == "sha1=" + sign(secret, item.body, hashlib.sha1)
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("GitHub-Hookshot/")
        assert headers["x-github-hook-id"] == str(hooks.hook_id)
        assert headers["x-github-hook-installation-target-type"] == "integration"
        assert headers["x-github-hook-installation-target-id"] == str(gh.state.app_id)
        guids.add(str(uuid.UUID(headers["x-github-delivery"])))
        assert item.payload["installation"]["id"] == gh.installation.id
    assert len(guids) == 3
    assert "✓" in got.received[2].body.decode()  # UTF-8, not \u escapes

    records = hooks.deliveries()
    assert [(r.event, r.action, r.status, r.status_code) for r in records] == [
        ("issues", "opened", "delivered", 202),
        ("issues", "labeled", "delivered", 202),
        ("issue_comment", "created", "delivered", 202),
    ]
    assert records[1].response_json() == {"seen": records[1].guid}
    assert records[1].payload["label"]["name"] == "agent:implement"
    assert all(r.duration is not None and r.duration < 5 for r in records)


def test_only_subscribed_events_for_installed_repositories_and_the_apps_own_too(
    gh: Env, hooks: WebhookDelivery, receiver: tuple[Receiver, str]
) -> None:
    got, _ = receiver
    state = gh.state
    state.create_repo("elsewhere/thing", files={"README.md": "hi\n"})
    state.create_user("bob", repos={"elsewhere/thing": "write"})
    state.as_user("bob").open_issue("elsewhere/thing", "not installed here")
    alice = state.as_user("alice")
    issue = alice.open_issue("acme/widgets", "Hello")
    alice.react("acme/widgets", issue=issue.number, content="+1")  # no such webhook on GitHub
    bot = gh.installation_client()
    bot.rest.issues.create_comment("acme", "widgets", issue.number, body="from the bot")
    hooks.wait_idle(10)

    assert got.events() == [("issues", "opened"), ("issue_comment", "created")]
    assert got.received[1].payload["sender"]["login"] == state.app.bot_login
    assert state.events_named("reaction") and state.events_named("issues", "opened")[0]


def test_redelivery_resends_the_same_body_with_the_same_delivery_id(
    gh: Env, hooks: WebhookDelivery, receiver: tuple[Receiver, str]
) -> None:
    got, _ = receiver
    gh.state.as_user("alice").open_issue("acme/widgets", "Again")
    hooks.wait_idle(10)
    first = hooks.deliveries()[0]

    again = hooks.redeliver(first.id)
    hooks.wait_idle(10)

    assert again.id != first.id and again.redelivery
    assert again.guid == first.guid and again.status == "delivered"
    assert [r.headers["x-github-delivery"] for r in got.received] == [first.guid] * 2
    assert got.received[0].body == got.received[1].body
    assert hooks.get(first.guid) is again  # the latest attempt for that delivery id


def test_drop_rule_records_without_sending_and_redelivery_recovers_it(
    gh: Env, hooks: WebhookDelivery, receiver: tuple[Receiver, str]
) -> None:
    got, _ = receiver
    alice = gh.state.as_user("alice")
    issue = alice.open_issue("acme/widgets", "Drop me")
    hooks.drop_next("issues", "labeled")
    alice.add_labels("acme/widgets", issue.number, "bug")
    alice.add_labels("acme/widgets", issue.number, "agent:implement")
    hooks.wait_idle(10)

    dropped = hooks.deliveries("issues", "labeled")[0]
    assert dropped.status == "dropped" and dropped.status_code is None
    assert got.events() == [("issues", "opened"), ("issues", "labeled")]
    assert got.received[1].payload["label"]["name"] == "agent:implement"
    assert hooks.drop_rules == []

    hooks.redeliver(dropped.guid)
    hooks.wait_idle(10)
    assert got.received[-1].payload["label"]["name"] == "bug"


def test_error_answers_are_recorded_and_not_retried(
    gh: Env, hooks: WebhookDelivery, receiver: tuple[Receiver, str]
) -> None:
    got, _ = receiver
    got.status = 500
    gh.state.as_user("alice").open_issue("acme/widgets", "Boom")
    hooks.wait_idle(10)

    (record,) = hooks.deliveries()
    assert record.status == "failed" and record.status_code == 500
    assert record.response_json() == {"seen": record.guid}
    assert len(got.received) == 1


def test_a_receiver_that_is_down_or_slow_does_not_block_the_emulator(
    gh: Env, receiver: tuple[Receiver, str]
) -> None:
    got, url = receiver
    alice = gh.state.as_user("alice")
    with WebhookDelivery(gh.state, f"http://127.0.0.1:{free_port()}/hook", timeout=0.5) as hooks:
        alice.open_issue("acme/widgets", "Nobody listens")
        hooks.wait_idle(10)
        (down,) = hooks.deliveries()
        assert down.status == "failed" and down.status_code is None
        assert down.error and "Connect" in down.error

        got.hold = threading.Event()
        hooks.set_url(url)
        started = time.monotonic()
        slow = alice.open_issue("acme/widgets", "Slow listener")
        alice.comment("acme/widgets", slow.number, "still here")
        assert time.monotonic() - started < 0.5  # the API call never waits for delivery
        assert got.arrived.wait(10)
        hooks.wait_idle(10)
        got.hold.set()

    records = hooks.deliveries()
    assert [(r.event, r.status) for r in records[1:]] == [
        ("issues", "failed"),
        ("issue_comment", "failed"),
    ]
    assert all(r.error and "timed out" in r.error for r in records[1:])


def test_admin_http_api(gh: Env, hooks: WebhookDelivery, receiver: tuple[Receiver, str]) -> None:
    got, url = receiver
    admin = httpx.Client(base_url=f"{gh.url}/_admin", timeout=10)
    with admin:
        assert admin.put("/hooks", json={"url": None}).json()["active"] is False
        gh.state.as_user("alice").open_issue("acme/widgets", "Unheard")  # no URL: skipped
        hook = admin.put("/hooks", json={"url": url}).json()
        assert hook == admin.get("/hooks").json()
        assert hook["url"] == url and hook["skipped"] == 1 and "issues" in hook["events"]
        assert admin.put("/hooks", json={"url": "ftp://x"}).status_code == 422

        rule = admin.post("/deliveries/drop", json={"event": "issues"})
        assert rule.status_code == 201
        gh.state.as_user("alice").open_issue("acme/widgets", "Dropped")
        gh.state.as_user("alice").open_issue("acme/widgets", "Heard")
        assert admin.post("/hooks/wait-idle", json={"timeout": 10}).json() == {"idle": True}

        listed = admin.get("/deliveries", params={"event": "issues"}).json()
        assert [(d["status"], d["payload"]["issue"]["title"]) for d in listed] == [
            ("dropped", "Dropped"),
            ("delivered", "Heard"),
        ]
        brief = admin.get("/deliveries", params={"payload": "false"}).json()
        assert "payload" not in brief[0]
        assert admin.get(f"/deliveries/{listed[1]['guid']}").json()["id"] == listed[1]["id"]
        assert admin.get("/deliveries/nope").status_code == 404

        answer = admin.post(f"/deliveries/{listed[0]['id']}/redeliver")
        assert answer.status_code == 202 and answer.json()["guid"] == listed[0]["guid"]
        admin.post("/hooks/wait-idle", json={"timeout": 10})
    assert [r.payload["issue"]["title"] for r in got.received] == ["Heard", "Dropped"]
