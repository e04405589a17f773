"""The authenticated user: ``GET /user``, what an App asks first with a user access token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import not_accessible_by_integration, requires_authentication
from .httputil import endpoint, json_response, principal_of, state_of
from .shapes import private_user_json

USER_DOCS = "https://docs.github.com/rest/users/users#get-the-authenticated-user"


@endpoint
async def authenticated_user(request: Request) -> Response:
    """Only a user token (``ghp_`` or ``ghu_``) has a user behind it; an installation token
    or an App JWT gets GitHub's 403, nobody at all its 401."""
    principal = principal_of(request)
    if principal.kind == "anonymous":
        raise requires_authentication(USER_DOCS)
    if principal.kind != "user" or principal.login is None:
        raise not_accessible_by_integration(USER_DOCS)
    return json_response(private_user_json(state_of(request), principal.login))


ROUTES = [
    Route("/user", authenticated_user, methods=["GET"]),
]
