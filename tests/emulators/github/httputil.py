"""Request and response helpers shared by the route modules."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from .access import Principal, can_see
from .errors import ApiError, custom_error, invalid_field, not_found, validation_failed
from .records import Repo

if TYPE_CHECKING:
    from .state import GitHubState

JSON_TYPE = "application/json; charset=utf-8"
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status_code=status, media_type=JSON_TYPE, headers=headers)


def no_content() -> Response:
    return Response(status_code=204)


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status, error.headers)


def state_of(request: Request) -> GitHubState:
    return request.app.state.github  # type: ignore[no-any-return]


def principal_of(request: Request) -> Principal:
    """The caller, resolved once per request from the ``Authorization`` header."""
    scope_state = request.scope.setdefault("state", {})
    cached = scope_state.get("principal")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    principal = state_of(request).principal_from_header(request.headers.get("authorization"))
    scope_state["principal"] = principal
    scope_state["login"] = principal.login
    scope_state["auth"] = principal.kind
    return principal


def endpoint(handler: Handler) -> Handler:
    """Turn :class:`ApiError` raised anywhere in ``handler`` into GitHub's error response."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error)

    return wrapper


async def read_any_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "Problems parsing JSON") from exc


async def read_json(request: Request) -> dict[str, Any]:
    data = await read_any_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "Problems parsing JSON")
    return data


def repo_of(request: Request) -> Repo:
    """The ``{owner}/{repo}`` of the path; 404 unless the caller can see it."""
    state = state_of(request)
    principal = principal_of(request)
    repo = state.find_repo(request.path_params["owner"], request.path_params["repo"])
    if repo is None or not can_see(state, principal, repo):
        raise not_found()
    return repo


def int_param(request: Request, name: str) -> int:
    try:
        return int(request.path_params[name])
    except (KeyError, ValueError) as exc:
        raise not_found() from exc


def require_str(body: dict[str, Any], key: str, resource: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise validation_failed(invalid_field(resource, key, "missing_field"))
    return value


# GitHub refuses an issue's, pull request's or comment's body longer than this.
MAX_BODY_CHARS = 65_536


def body_text(body: dict[str, Any], resource: str, *, required: bool = False) -> Any:
    """The request's `body` field, refused as GitHub refuses one that is too long."""
    value = require_str(body, "body", resource) if required else body.get("body")
    if isinstance(value, str) and len(value) > MAX_BODY_CHARS:
        raise validation_failed(custom_error(
            resource, f"body is too long (maximum is {MAX_BODY_CHARS} characters)", "body"))
    return value


def query_int(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        value = default
    value = max(value, 1)
    return min(value, maximum) if maximum else value


def paginate(request: Request, items: Sequence[T]) -> tuple[list[T], dict[str, str]]:
    """One page of ``items`` (``per_page``, default 30, max 100; ``page`` from 1) and the
    ``Link`` header GitHub sends with it."""
    per_page = query_int(request, "per_page", 30, 100)
    page = query_int(request, "page", 1)
    last = max(1, -(-len(items) // per_page))
    chunk = list(items[(page - 1) * per_page : page * per_page])
    links = []
    base = str(request.url.replace(query=""))
    params = dict(request.query_params)

    def url(number: int) -> str:
        return f"{base}?{urlencode({**params, 'per_page': per_page, 'page': number})}"

    if page < last:
        links.append(f'<{url(page + 1)}>; rel="next"')
        links.append(f'<{url(last)}>; rel="last"')
    if page > 1:
        links.insert(0, f'<{url(min(page - 1, last))}>; rel="prev"')
        links.insert(1, f'<{url(1)}>; rel="first"')
    return chunk, ({"Link": ", ".join(links)} if links else {})


def paged_json(request: Request, items: Sequence[Any], render: Callable[[Any], Any]) -> Response:
    chunk, headers = paginate(request, items)
    return json_response([render(item) for item in chunk], headers=headers)


def paged_wrapped(
    request: Request,
    items: Sequence[Any],
    key: str,
    render: Callable[[Any], Any],
    extra: dict[str, Any] | None = None,
) -> Response:
    """``{"total_count": n, key: [...]}`` pages, as the Checks and Actions APIs answer."""
    chunk, headers = paginate(request, items)
    body = {"total_count": len(items), **(extra or {}), key: [render(i) for i in chunk]}
    return json_response(body, headers=headers)


def bool_param(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
