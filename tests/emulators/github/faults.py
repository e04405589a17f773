"""Faults on demand: per method + path glob, a number of times, misbehave like GitHub does.

Kinds: ``status`` (5xx, default 502), ``secondary_rate_limit`` (403 + ``retry-after``, or
with ``retry_after=None`` only the message, as GitHub sometimes answers), ``primary_rate_limit``
(403/429 + ``x-ratelimit-remaining: 0``), ``validation`` (422), ``graphql_error`` (200 with a
GraphQL ``errors`` list, type ``FORBIDDEN``), ``delay`` (answer normally after ``delay``
seconds), ``drop`` (close the connection without answering) and ``lost_answer`` (do the
request, then answer 5xx instead: GitHub sometimes reports a failure for a write it made).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .ids import random_hex
from .records import Fault
from .store import Store

FAULT_KINDS = (
    "status",
    "secondary_rate_limit",
    "primary_rate_limit",
    "validation",
    "graphql_error",
    "delay",
    "drop",
    "lost_answer",
)
RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
STATUS_MESSAGES = {
    500: "Server Error",
    502: "Server Error",
    503: "Service Unavailable",
    504: "We couldn't respond to your request in time. Sorry about that. Please try resubmitting"
    " your request and contact us if the problem persists.",
}


class ConnectionDropped(Exception):
    """Raised where a dropped connection cannot be emulated by closing the socket."""


class FaultsMixin(Store):
    def add_fault(
        self,
        kind: str,
        *,
        method: str = "*",
        path: str = "*",
        count: int | None = 1,
        status: int | None = None,
        delay: float = 0.0,
        retry_after: int | None = 60,
        message: str | None = None,
    ) -> Fault:
        """Misbehave on the next ``count`` requests (``None``: until cleared) whose method
        matches ``method`` (or ``"*"``) and whose path matches the glob ``path``, e.g.
        ``"/repos/*/issues/*/comments"``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        with self.transaction():
            fault = Fault(
                id=self.new_id(),
                kind=kind,
                method=method.upper(),
                path=path,
                count=count,
                status=status,
                delay=delay,
                retry_after=retry_after,
                message=message,
            )
            self.faults[fault.id] = fault
            return fault

    def remove_fault(self, fault_id: int) -> None:
        with self.transaction():
            self.faults.pop(fault_id, None)

    def clear_faults(self) -> None:
        with self.transaction():
            self.faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first fault matching this request, counted down (and dropped when used up)."""
        with self.transaction():
            for fault in list(self.faults.values()):
                if fault.method not in ("*", method.upper()):
                    continue
                if not fnmatch.fnmatchcase(path, fault.path):
                    continue
                fault.hits += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        del self.faults[fault.id]
                return fault
            return None


def fault_response(fault: Fault, now: float, limit: int) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body GitHub would send for ``fault``."""
    request_id = random_hex(8).upper()
    if fault.kind == "secondary_rate_limit":
        return (
            fault.status or 403,
            {} if fault.retry_after is None else {"retry-after": str(fault.retry_after)},
            {
                "message": fault.message
                or (
                    "You have exceeded a secondary rate limit. Please wait a few minutes "
                    "before you try again. If you reach out to GitHub Support for help, please "
                    f"include the request ID {request_id}."
                ),
                "documentation_url": f"{RATE_DOCS}#about-secondary-rate-limits",
                "status": str(fault.status or 403),
            },
        )
    if fault.kind == "primary_rate_limit":
        return (
            fault.status or 403,
            {
                "x-ratelimit-limit": str(limit),
                "x-ratelimit-remaining": "0",
                "x-ratelimit-used": str(limit),
                "x-ratelimit-reset": str(int(now + (fault.retry_after or 0))),
                "x-ratelimit-resource": "core",
            },
            {
                "message": fault.message or "API rate limit exceeded for installation.",
                "documentation_url": f"{RATE_DOCS}#exceeding-the-rate-limit",
                "status": str(fault.status or 403),
            },
        )
    if fault.kind == "graphql_error":
        # GraphQL reports a refused query or mutation with HTTP 200 and `errors`.
        return (
            fault.status or 200,
            {},
            {
                "data": None,
                "errors": [
                    {
                        "type": "FORBIDDEN",
                        "locations": [{"line": 2, "column": 3}],
                        "message": fault.message or "Resource not accessible by integration",
                    }
                ],
            },
        )
    if fault.kind == "validation":
        return (
            fault.status or 422,
            {},
            {
                "message": fault.message or "Validation Failed",
                "errors": [{"resource": "Emulator", "code": "custom", "message": "injected"}],
                "documentation_url": "https://docs.github.com/rest",
                "status": str(fault.status or 422),
            },
        )
    status = fault.status or 502
    return (
        status,
        {},
        {
            "message": fault.message or STATUS_MESSAGES.get(status, "Server Error"),
            "status": str(status),
        },
    )


async def drop_connection(scope: Scope) -> None:
    """Close the client's connection without an answer (uvicorn's h11 server), or raise."""
    raw_send = scope.get("emulator.raw_send")
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionDropped("fault: connection dropped")
    transport.abort()
    for _ in range(100):  # let the server see the connection go before the app returns
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0.001)


class FaultMiddleware:
    def __init__(self, app: ASGIApp, state: FaultsMixin) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"].startswith("/_admin")
            or not (self.state.faults)
        ):
            await self.app(scope, receive, send)
            return
        fault = self.state.take_fault(scope["method"], scope["path"])
        if fault is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["fault"] = fault.kind
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay)
            await self.app(scope, receive, send)
            return
        if fault.kind == "drop":
            await drop_connection(scope)
            return
        if fault.kind == "lost_answer":
            async def discard(message: Any) -> None:
                pass

            await self.app(scope, receive, discard)  # done; its answer never leaves
        status, headers, body = fault_response(fault, self.state.now(), self.state.rate_limit)
        raw = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"content-length", str(len(raw)).encode()),
                    *((k.encode(), v.encode()) for k, v in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})
