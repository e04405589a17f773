"""Primary rate limits (per token, per hour) with GitHub's headers, the secondary limit on
content creation (per installation: 80 writes a minute, 500 an hour), and the request log."""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jwt
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import AuthMixin
from .records import RecordedRequest

if TYPE_CHECKING:
    from .state import GitHubState

WINDOW = 3600.0
ANONYMOUS_LIMIT = 60
UNCOUNTED = ("/rate_limit",)
# github.com's own pages (the OAuth web flow), not api.github.com: no API rate limit there.
WEB_PREFIXES = ("/login/",)
# GitHub's secondary limits on content-creating requests. It does not list which requests
# count; here every API write does (git pushes do not).
WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
CONTENT_WINDOWS = (60.0, 3600.0)


@dataclass
class Window:
    reset: float
    used: int = 0


class RateLimiter:
    """Per caller and resource: a fixed one-hour window counting requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.windows: dict[tuple[str, str], Window] = {}

    def peek(self, key: str, resource: str, now: float) -> Window:
        with self._lock:
            window = self.windows.get((key, resource))
            if window is None or window.reset <= now:
                window = Window(reset=now + WINDOW)
                self.windows[(key, resource)] = window
            return window

    def hit(self, key: str, resource: str, now: float) -> Window:
        window = self.peek(key, resource, now)
        with self._lock:
            window.used += 1
        return window


class ContentLimiter:
    """Per installation (or other caller): the times of its writes in the last hour."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes: dict[str, collections.deque[float]] = {}

    def admit(self, key: str, limits: tuple[int, int], now: float) -> float:
        """Count a write and answer 0, or answer the seconds until one would be admitted."""
        with self._lock:
            times = self.writes.setdefault(key, collections.deque())
            while times and times[0] <= now - CONTENT_WINDOWS[-1]:
                times.popleft()
            wait = 0.0
            for limit, span in zip(limits, CONTENT_WINDOWS, strict=True):
                inside = [t for t in times if t > now - span]
                if limit and len(inside) >= limit:
                    wait = max(wait, inside[len(inside) - limit] + span - now)
            if wait == 0.0:
                times.append(now)
            return wait


def caller_key(authorization: str | None, client: str) -> tuple[str, bool]:
    """A stable key for whoever sent the request, and whether they authenticated."""
    if not authorization:
        return f"ip:{client}", False
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        return "basic:" + hashlib.sha256(value.encode()).hexdigest(), True
    if value.count(".") == 2:
        try:
            issuer = jwt.decode(value, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            issuer = None
        if issuer is not None:
            return f"app:{issuer}", True
    return "token:" + hashlib.sha256(value.encode()).hexdigest(), True


def limit_for(state: AuthMixin, authenticated: bool) -> int:
    return state.rate_limit if authenticated else ANONYMOUS_LIMIT


class RateLimitMiddleware:
    """Adds ``x-ratelimit-*`` headers to API answers, refuses callers over their limit with
    GitHub's 403, and records every API and git request in ``state.requests``."""

    def __init__(self, app: ASGIApp, state: GitHubState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(("/_admin", "/_logs")):
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        # Git and the web pages are github.com, not the API: not counted, no API headers.
        off_api = ".git/" in path or path.startswith(WEB_PREFIXES)
        resource = "graphql" if path == "/graphql" else "core"
        client = (scope.get("client") or ("local", 0))[0]
        key, authenticated = caller_key(headers.get("authorization"), client)
        limit = limit_for(self.state, authenticated)
        now = self.state.now()
        limiter = self.state.rate_limiter
        window = (
            limiter.peek(key, resource, now)
            if off_api or path in UNCOUNTED
            else limiter.hit(key, resource, now)
        )
        status = {"code": 0}
        rate_headers = [
            (b"x-ratelimit-limit", str(limit).encode()),
            (b"x-ratelimit-remaining", str(max(0, limit - window.used)).encode()),
            (b"x-ratelimit-reset", str(int(window.reset)).encode()),
            (b"x-ratelimit-used", str(min(window.used, limit)).encode()),
            (b"x-ratelimit-resource", resource.encode()),
        ]
        version = headers.get("x-github-api-version", "2022-11-28")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if not off_api:
                    present = {k.lower() for k, _ in message.get("headers", [])}
                    extra = [(k, v) for k, v in rate_headers if k not in present]
                    extra.append((b"x-github-api-version-selected", version.encode()))
                    extra.append((b"x-github-request-id", f"EMU:{id(scope):X}".encode()))
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            if not off_api and path not in UNCOUNTED and window.used > limit:
                await self._refuse(send_with_headers, limit, window)
            elif (not off_api and scope["method"] in WRITE_METHODS and authenticated
                  and not key.startswith("app:")  # an App's own calls (tokens) create nothing
                  and (wait := self.state.content_limiter.admit(
                      self._installation_key(headers.get("authorization"), key),
                      (self.state.content_per_minute, self.state.content_per_hour), now))):
                await self._refuse_content(send_with_headers, wait)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            scope_state = scope.get("state") or {}
            self.state.record_request(
                RecordedRequest(
                    method=scope["method"],
                    path=path,
                    query=scope.get("query_string", b"").decode(),
                    status=status["code"],
                    login=scope_state.get("login"),
                    at=now,
                    fault=scope_state.get("fault"),
                    auth=scope_state.get("auth"),
                )
            )

    def _installation_key(self, authorization: str | None, key: str) -> str:
        """GitHub counts an installation's writes together, whichever of its tokens sent them."""
        value = (authorization or "").strip().partition(" ")[2].strip()
        token = self.state.tokens.get(value)
        if token is not None and token.installation_id is not None:
            return f"installation:{token.installation_id}"
        return key

    @staticmethod
    async def _refuse_content(send: Send, wait: float) -> None:
        await _forbidden(
            send,
            "You have exceeded a secondary rate limit and have been temporarily blocked from "
            "content creation. Please retry your request again later.",
            "about-secondary-rate-limits",
            (b"retry-after", str(max(1, round(wait))).encode()),
        )

    @staticmethod
    async def _refuse(send: Send, limit: int, window: Window) -> None:
        await _forbidden(
            send,
            "API rate limit exceeded. Wait for the limit to reset "
            f"(x-ratelimit-reset: {int(window.reset)}).",
            "exceeding-the-rate-limit",
            (b"x-ratelimit-remaining", b"0"),
        )


async def _forbidden(send: Send, message: str, anchor: str, header: tuple[bytes, bytes]) -> None:
    """GitHub's 403 for a rate limit: its message, the docs section, and one telling header."""
    body = json.dumps(
        {
            "message": message,
            "documentation_url": "https://docs.github.com/rest/using-the-rest-api/"
            f"rate-limits-for-the-rest-api#{anchor}",
            "status": "403",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                header,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
