"""Renamed repositories: the old name redirects, as GitHub's does.

The REST API answers a request under a repository's old name with ``301 Moved Permanently``
(GET and HEAD) or ``307 Temporary Redirect`` (any other method, which the client repeats with
its body) to the same path under ``/repositories/{id}``, which is served like the repository's
current ``/repos/{owner}/{name}``. Git's smart HTTP redirects ``/{old}.git/...`` to the new
URL (git follows the redirect of its first request and then talks to the new one). A caller
who may not see the repository gets no redirect, so the old name of a private repository
reveals nothing; the request goes on to its ``404``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from .access import can_see
from .errors import ApiError
from .records import Repo

if TYPE_CHECKING:
    from .state import GitHubState

API_PATH = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$")
BY_ID = re.compile(r"^/repositories/(?P<id>\d+)(?P<rest>/.*)?$")
GIT_PATH = re.compile(r"^/(?P<owner>[^/]+)/(?P<name>[^/]+)\.git(?P<rest>/.*)$")
DOCS = "https://docs.github.com/rest/guides/best-practices-for-using-the-rest-api#follow-redirects"


class MovedMiddleware:
    """Redirects from old repository names and serves ``/repositories/{id}/...``."""

    def __init__(self, app: ASGIApp, state: GitHubState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        by_id = BY_ID.match(path)
        if by_id:
            repo = self.state.repos.get(int(by_id["id"]))
            if repo is not None:
                inner = f"/repos/{repo.full_name}{by_id['rest'] or ''}"
                scope = {**scope, "path": inner, "raw_path": inner.encode()}
        elif self.state.moved:
            for pattern, git in ((API_PATH, False), (GIT_PATH, True)):
                match = pattern.match(path)
                repo = self.state.find_moved(match["owner"], match["name"]) if match else None
                if match and repo is not None and self._visible(scope, repo):
                    await self._redirect(scope, send, repo, match["rest"] or "", git)
                    return
        await self.app(scope, receive, send)

    def _visible(self, scope: Scope, repo: Repo) -> bool:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        try:
            principal = self.state.principal_from_header(
                authorization.decode() if authorization else None)
        except ApiError:
            return False  # a bad token: the request goes on to its 401
        return can_see(self.state, principal, repo)

    async def _redirect(self, scope: Scope, send: Send, repo: Repo, rest: str, git: bool) -> None:
        query = scope.get("query_string", b"").decode()
        target = (f"{self.state.base_url}/{repo.full_name}.git{rest}" if git
                  else self.state.api(f"/repositories/{repo.id}{rest}"))
        if query:
            target += f"?{query}"
        permanent = scope["method"] in ("GET", "HEAD")
        message = "Moved Permanently" if permanent else "Temporary Redirect"
        body = (f"{message}\n".encode() if git else
                json.dumps({"message": message, "url": target, "documentation_url": DOCS}).encode())
        await send({
            "type": "http.response.start",
            "status": 301 if permanent else 307,
            "headers": [
                (b"location", target.encode()),
                (b"content-type", b"text/plain" if git else b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        })
        await send({"type": "http.response.body", "body": body})
