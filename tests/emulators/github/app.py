"""``create_app(state)``: the emulator as a Starlette application."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import (
    admin,
    ci,
    delivery,
    git_http,
    graphql,
    routes_actions,
    routes_apps,
    routes_checks,
    routes_git,
    routes_issues,
    routes_oauth,
    routes_pulls,
    routes_repos,
    routes_users,
)
from .errors import ApiError
from .faults import FaultMiddleware
from .httputil import error_response
from .moved import MovedMiddleware
from .ratelimit import RateLimitMiddleware
from .state import GitHubState


class EmulatorApp(Starlette):
    """Starlette, plus the server's own ``send`` kept in the scope so that a ``drop`` fault
    can close the connection without answering."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["emulator.raw_send"] = send
        await super().__call__(scope, receive, send)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "Not Found" if exc.status_code == 404 else (exc.detail or "Error")
    return error_response(ApiError(exc.status_code, message))


def create_app(state: GitHubState) -> Starlette:
    routes = [
        *admin.ROUTES,
        *delivery.ROUTES,
        *ci.ROUTES,
        *routes_apps.ROUTES,
        *routes_oauth.ROUTES,
        *routes_users.ROUTES,
        *graphql.ROUTES,
        *routes_checks.ROUTES,  # before /commits/{ref:path}
        *routes_repos.ROUTES,
        *routes_repos.LATE_ROUTES,
        *routes_git.ROUTES,
        *routes_issues.ROUTES,
        *routes_pulls.ROUTES,
        *routes_actions.ROUTES,
        *git_http.ROUTES,
    ]
    app = EmulatorApp(
        routes=routes,
        middleware=[
            Middleware(RateLimitMiddleware, state=state),
            Middleware(FaultMiddleware, state=state),
            Middleware(MovedMiddleware, state=state),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.github = state
    return app
