"""Webhook delivery: what GitHub's "Hookshot" does with the App's events.

:class:`WebhookDelivery` subscribes to the state's events and POSTs each one the App would
receive (its installation covers the repository and it subscribes to the event; ``installation``
events always) to the App's webhook URL, signed with the App's webhook secret. Events the App
itself caused are delivered too, as on GitHub: the bot must recognise and ignore them.

Deliveries leave on one background thread, in order, each with a time limit (10 s, like
GitHub); the emulator only ever appends to a queue, so a receiver that is down or slow never
blocks it. Every delivery is recorded (request, answer, duration, error) and can be redelivered
with the same ``X-GitHub-Delivery``; a failed one is not retried by itself, as on GitHub. Drop
rules record a delivery as ``dropped`` without sending it, to test how the receiver copes with
lost webhooks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .admin import endpoint
from .errors import ApiError, not_found
from .httputil import json_response, read_json, state_of
from .ids import random_hex
from .state import GitHubState

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # GitHub gives a receiver ten seconds
MAX_RESPONSE_CHARS = 64 * 1024
# Sent to every App whatever it subscribes to.
ALWAYS_DELIVERED = ("installation", "installation_repositories", "github_app_authorization")


@dataclass
class Delivery:
    """One attempt to deliver an event (a redelivery is a new record with the same ``guid``).

    ``status``: ``pending`` (queued), ``delivered`` (a 2xx answer), ``failed`` (another answer,
    a timeout or a connection error), ``dropped`` (a drop rule kept it from being sent).
    """

    id: int
    guid: str
    event: str
    action: str | None
    installation_id: int | None
    repository: str | None
    payload: dict[str, Any]
    body: bytes = field(repr=False)
    request_headers: dict[str, str]
    url: str | None
    created_at: float
    redelivery: bool = False
    status: str = "pending"
    status_code: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None
    duration: float | None = None
    error: str | None = None
    delivered_at: float | None = None

    @property
    def done(self) -> bool:
        return self.status != "pending"

    @property
    def ok(self) -> bool:
        return self.status == "delivered"

    def response_json(self) -> Any:
        """The receiver's answer parsed as JSON (``None`` when it was not JSON)."""
        try:
            return json.loads(self.response_body or "")
        except ValueError:
            return None

    def to_json(self, payload: bool = True) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "body"}
        if not payload:
            data.pop("payload")
        return data


@dataclass
class DropRule:
    id: int
    event: str
    action: str | None = None
    count: int | None = 1  # None: until removed
    hits: int = 0

    def matches(self, event: str, action: str | None) -> bool:
        return event == self.event and (self.action is None or action == self.action)


class WebhookDelivery:
    """``WebhookDelivery(state, url).start()``; ``stop()`` when done (or use ``with``)."""

    def __init__(
        self,
        state: GitHubState,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.state = state
        self.url = url
        self.timeout = timeout
        self.hook_id = 400_000_000 + state.app_id % 100_000_000
        self.user_agent = f"GitHub-Hookshot/{random_hex(7)}"
        self.skipped = 0  # events the App would get, while no URL was set
        self._records: list[Delivery] = []
        self._rules: list[DropRule] = []
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> WebhookDelivery:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self._thread.start()
        self._unsubscribe = self.state.subscribe(self._on_event)
        self.state.webhook_delivery = self
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking events; what is still queued after ``timeout`` is marked failed."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.state.webhook_delivery is self:
            self.state.webhook_delivery = None
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None
        with self._cond:
            for record in self._records:
                if record.status == "pending":
                    self._finish(record, "failed", error="the emulator stopped")

    def __enter__(self) -> WebhookDelivery:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_url(self, url: str | None) -> None:
        """Where deliveries go from now on (``None``: nowhere, like an inactive webhook)."""
        self.url = url or None

    # -- the subscriber ----------------------------------------------------------------------

    def wants(self, event: str, payload: dict[str, Any]) -> bool:
        """Whether GitHub would deliver this event to the App's webhook."""
        inst = payload.get("installation")
        inst_id = inst.get("id") if isinstance(inst, dict) else None
        if event in ALWAYS_DELIVERED:
            return True
        record = self.state.installations.get(inst_id) if isinstance(inst_id, int) else None
        if record is None or record.app_id != self.state.app_id or record.suspended_at:
            return False
        return event in record.events

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        # Runs in the thread that changed the state: only build the request and queue it.
        if not self.wants(event, payload):
            return
        if self.url is None:
            self.skipped += 1
            return
        record = self._new_record(event, payload, str(uuid.uuid4()))
        with self._cond:
            rule = next((r for r in self._rules if r.matches(event, record.action)), None)
            if rule is not None:
                rule.hits += 1
                if rule.count is not None and rule.hits >= rule.count:
                    self._rules.remove(rule)
                self._records.append(record)
                self._finish(record, "dropped", error=f"dropped by rule {rule.id}")
                return
        self._enqueue(record)

    def _new_record(self, event: str, payload: dict[str, Any], guid: str) -> Delivery:
        # Compact UTF-8 JSON, as GitHub sends; the signature covers exactly these bytes.
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        inst = payload.get("installation")
        repo = payload.get("repository")
        action = payload.get("action")
        return Delivery(
            id=next(self._ids),
            guid=guid,
            event=event,
            action=action if isinstance(action, str) else None,
            installation_id=inst.get("id") if isinstance(inst, dict) else None,
            repository=repo.get("full_name") if isinstance(repo, dict) else None,
            payload=payload,
            body=body,
            request_headers=self._headers(event, guid, body),
            url=self.url,
            created_at=time.time(),
        )

    def _headers(self, event: str, guid: str, body: bytes) -> dict[str, str]:
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            "X-GitHub-Delivery": guid,
            "X-GitHub-Event": event,
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-ID": str(self.state.app_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
        }
        secret = self.state.webhook_secret.encode()
        if secret:
            headers["X-Hub-Signature"] = "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature-256"] = (
                "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            )
        return headers

    def _enqueue(self, record: Delivery) -> None:
        with self._cond:
            if record not in self._records:
                self._records.append(record)
            self._pending += 1
        self._queue.put(record)

    # -- the sender --------------------------------------------------------------------------

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            while True:
                record = self._queue.get()
                if record is None:
                    return
                try:
                    self._send(client, record)
                except Exception as exc:  # never let one delivery kill the sender
                    log.exception("webhook delivery %s failed", record.guid)
                    with self._cond:
                        self._finish(record, "failed", error=repr(exc))
                finally:
                    with self._cond:
                        self._pending -= 1
                        self._cond.notify_all()

    def _send(self, client: httpx.Client, record: Delivery) -> None:
        if record.url is None:
            with self._cond:
                self._finish(record, "failed", error="no webhook URL configured")
            return
        started = time.monotonic()
        try:
            response = client.post(record.url, content=record.body, headers=record.request_headers)
        except httpx.TimeoutException:
            error = f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            with self._cond:
                record.status_code = response.status_code
                record.response_headers = dict(response.headers)
                record.response_body = response.text[:MAX_RESPONSE_CHARS]
                record.duration = time.monotonic() - started
                ok = 200 <= response.status_code < 300
                self._finish(record, "delivered" if ok else "failed")
            return
        with self._cond:
            record.duration = time.monotonic() - started
            self._finish(record, "failed", error=error)

    def _finish(self, record: Delivery, status: str, error: str | None = None) -> None:
        # Called with self._cond held.
        record.status = status
        record.error = error
        record.delivered_at = time.time()
        self._cond.notify_all()

    # -- inspection and control --------------------------------------------------------------

    def deliveries(self, event: str | None = None, action: str | None = None) -> list[Delivery]:
        with self._cond:
            return [
                d
                for d in self._records
                if (event is None or d.event == event) and (action is None or d.action == action)
            ]

    def get(self, delivery: int | str) -> Delivery:
        """A delivery by record id, or the latest attempt with that ``X-GitHub-Delivery``."""
        with self._cond:
            for record in reversed(self._records):
                if record.id == delivery or record.guid == delivery:
                    return record
                if isinstance(delivery, str) and delivery.isdigit() and record.id == int(delivery):
                    return record
        raise KeyError(delivery)

    def redeliver(self, delivery: int | str) -> Delivery:
        """Send a delivery's body again, with the same ``X-GitHub-Delivery``, to the current
        URL; returns the new (queued) record."""
        original = self.get(delivery)
        record = dataclasses.replace(
            original,
            id=next(self._ids),
            url=self.url,
            created_at=time.time(),
            redelivery=True,
            status="pending",
            status_code=None,
            response_headers={},
            response_body=None,
            duration=None,
            error=None,
            delivered_at=None,
        )
        self._enqueue(record)
        return record

    def drop_next(self, event: str, action: str | None = None, count: int | None = 1) -> DropRule:
        """Record the next ``count`` matching deliveries as dropped instead of sending them."""
        with self._cond:
            rule = DropRule(id=next(self._ids), event=event, action=action, count=count)
            self._rules.append(rule)
            return rule

    def clear_drops(self) -> None:
        with self._cond:
            self._rules.clear()

    @property
    def drop_rules(self) -> list[DropRule]:
        with self._cond:
            return list(self._rules)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every queued delivery has been sent; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._pending} webhook deliveries still queued")
                self._cond.wait(remaining)

    def wait_for(
        self, predicate: Callable[[Delivery], bool], timeout: float = 10.0
    ) -> Delivery:
        """The first finished delivery matching ``predicate``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self._records:
                    if record.done and predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching webhook delivery")
                self._cond.wait(remaining)


# -- admin HTTP API ----------------------------------------------------------------------------


def delivery_of(request: Request) -> WebhookDelivery:
    hooks = state_of(request).webhook_delivery
    if hooks is None:
        raise ApiError(404, "Webhook delivery is not running in this emulator")
    return hooks  # type: ignore[no-any-return]


def hook_json(hooks: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": hooks.hook_id,
        "url": hooks.url,
        "active": hooks.url is not None,
        "content_type": "json",
        "events": list(hooks.state.app.events),
        "timeout": hooks.timeout,
        "skipped": hooks.skipped,
    }


@endpoint
async def get_hook(request: Request) -> Response:
    return json_response(hook_json(delivery_of(request)))


@endpoint
async def set_hook(request: Request) -> Response:
    hooks = delivery_of(request)
    body = await read_json(request)
    url = body.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise ApiError(422, "url must be an http(s) URL or null")
    hooks.set_url(url)
    return json_response(hook_json(hooks))


@endpoint
async def list_deliveries(request: Request) -> Response:
    hooks = delivery_of(request)
    query = request.query_params
    since = int(query.get("since", 0))
    with_payload = query.get("payload", "true").lower() not in ("0", "false", "no")
    records = [
        d
        for d in hooks.deliveries(query.get("event"), query.get("action"))
        if d.id > since
    ]
    return json_response([d.to_json(with_payload) for d in records])


@endpoint
async def get_delivery(request: Request) -> Response:
    try:
        record = delivery_of(request).get(request.path_params["delivery"])
    except KeyError:
        raise not_found() from None
    return json_response(record.to_json())


@endpoint
async def redeliver(request: Request) -> Response:
    try:
        record = delivery_of(request).redeliver(request.path_params["delivery"])
    except KeyError:
        raise not_found() from None
    return json_response(record.to_json(payload=False), 202)


@endpoint
async def drop(request: Request) -> Response:
    body = await read_json(request)
    rule = delivery_of(request).drop_next(
        body["event"], body.get("action"), body.get("count", 1)
    )
    return json_response(dataclasses.asdict(rule), 201)


@endpoint
async def wait_idle(request: Request) -> Response:
    hooks = delivery_of(request)
    body = await read_json(request)
    try:
        await run_in_threadpool(hooks.wait_idle, float(body.get("timeout", 10.0)))
    except TimeoutError as exc:
        raise ApiError(504, str(exc)) from exc
    return json_response({"idle": True})


A = "/_admin"
ROUTES = [
    Route(f"{A}/hooks", get_hook, methods=["GET"]),
    Route(f"{A}/hooks", set_hook, methods=["PUT"]),
    Route(f"{A}/hooks/wait-idle", wait_idle, methods=["POST"]),
    Route(f"{A}/deliveries", list_deliveries, methods=["GET"]),
    Route(f"{A}/deliveries/drop", drop, methods=["POST"]),
    Route(f"{A}/deliveries/{{delivery}}", get_delivery, methods=["GET"]),
    Route(f"{A}/deliveries/{{delivery}}/redeliver", redeliver, methods=["POST"]),
]
