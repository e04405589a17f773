"""The OAuth web flow's two github.com URLs, served on the emulator's single origin:
``GET /login/oauth/authorize`` (a browser page) and ``POST /login/oauth/access_token`` (the
App's server exchanging the code). Neither is REST: GitHub answers the first with HTML pages
and a 302, the second with HTTP 200 even for errors. The rules live in ``oauth.py``.

The signed-in browser user is, by an emulator-only convention, whoever the request's
``Authorization: token <user token>`` header names (no cookies, no login form).
"""

from __future__ import annotations

import html
import json
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .errors import ApiError
from .httputil import json_response, principal_of, state_of
from .oauth import AuthorizePageError, OAuthError, with_params

FORM_MEDIA = "application/x-www-form-urlencoded"
FORM_TYPE = f"{FORM_MEDIA}; charset=utf-8"


def page(status: int, title: str, message: str) -> Response:
    """A minimal github.com page: tests read the status and the text, not the markup."""
    body = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · GitHub</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></main>"
        "</body></html>\n"
    )
    return HTMLResponse(body, status_code=status)


def not_found_page() -> Response:
    return page(404, "Page not found", "This is not the web page you are looking for.")


def signed_in_user(request: Request) -> str | None:
    """The browser's user: a valid user token in ``Authorization``, else nobody (a browser
    with a stale session is simply signed out, not answered with an API 401)."""
    try:
        principal = principal_of(request)
    except ApiError:
        request.scope.setdefault("state", {})["auth"] = "anonymous"
        return None
    return principal.login if principal.kind == "user" else None


async def authorize(request: Request) -> Response:
    state = state_of(request)
    query = request.query_params
    app = state.find_app_by_client_id(query.get("client_id"))
    if app is None:
        return not_found_page()
    login = signed_in_user(request)
    if login is None:
        # GitHub sends the browser to /login and back; the emulator has no login form.
        return page(200, "Sign in to GitHub", f"Sign in to GitHub to continue to {app.name}.")
    try:
        code = state.authorize_oauth(app.client_id, login, query.get("redirect_uri") or None)
    except AuthorizePageError as exc:
        if exc.status == 404:
            return not_found_page()
        return page(exc.status, "Redirect URI mismatch", exc.message)
    params = {"code": code.code}
    if "state" in query:
        params["state"] = query["state"]
    return RedirectResponse(with_params(code.redirect_uri, params), status_code=302)


async def exchange_params(request: Request) -> dict[str, str]:
    """The exchange's parameters: GitHub reads them from the query string and from a
    form-encoded or JSON body (the body wins). Non-string JSON values count as absent."""
    params = dict(request.query_params)
    raw = await request.body()
    if not raw.strip():
        return params
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or (media != FORM_MEDIA and raw.lstrip().startswith(b"{")):
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            params.update({k: v for k, v in data.items() if isinstance(v, str)})
        return params
    params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    return params


async def access_token(request: Request) -> Response:
    state = state_of(request)
    params = await exchange_params(request)
    try:
        body: dict[str, object] = state.exchange_oauth_code(
            params.get("client_id"),
            params.get("client_secret"),
            params.get("code"),
            params.get("redirect_uri") or None,
            params.get("grant_type"),
        )
    except OAuthError as exc:
        body = dict(exc.body())
    if "json" in request.headers.get("accept", "").lower():
        return json_response(body)
    # Without Accept: application/json GitHub answers form-encoded text (XML on request:
    # not emulated).
    return Response(urlencode({k: str(v) for k, v in body.items()}), media_type=FORM_TYPE)


ROUTES = [
    Route("/login/oauth/authorize", authorize, methods=["GET"]),
    Route("/login/oauth/access_token", access_token, methods=["POST"]),
]
