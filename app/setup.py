"""The setup pages `conductor serve` shows while the GitHub App's credentials are missing.

Credentials reach the env file (`CONDUCTOR_ENV_FILE`) in one of two ways: register a new App
from `app.yml` through GitHub's manifest flow, or paste an existing App's ID, private key and
webhook secret. Either way `conductor serve` must then be restarted to pick them up.

Who may use these pages: a browser on this machine, or one that opened the setup link from
the server log. The app has no users, yet it writes the App's private key; anyone else who
reached the port could register an App of their own into this server or overwrite the
credentials, and any web page open in the operator's browser could try to post to it. So:

* Setup link. The app draws a random access token and logs, at startup, a link carrying it
  (event `setup.open_link`, as Jupyter does). Opening the link sets an HttpOnly, SameSite=Lax
  cookie and redirects to the bare page; the pages then open in that browser. Without the
  cookie they open only for a request that is plainly local: CONDUCTOR_PUBLIC_URL unset (once
  it is set the operator has said the port is reachable from outside, perhaps through a tunnel
  or proxy that connects from loopback), the client a loopback address, the Host header a
  loopback name (which defeats DNS rebinding: a rebound page sends its own host name), and no
  forwarding headers.
* CSRF token. Forms that post back here carry a random token in a hidden field, and the POST
  is refused without it. A cross-site page cannot read the token, so it cannot post the form,
  even to a local server that trusts every local request.
* Manifest state. Each render of the register form draws a `state`, kept in memory for an hour
  and accepted by the callback once. The callback needs nothing else: GitHub sends the browser
  back to the public URL, which may be another host than the one the page was opened on, and
  only someone allowed to see the page can have a state.

Secrets are never shown on a page or logged: forms do not echo them back, and errors name the
field, not its value.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import ipaddress
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import yaml
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from app.constants import DASHBOARD_CALLBACK_PATH, WEBHOOK_PATH
from app.envfile import EnvFileError, check_entry, update_env_file
from app.logs import get_logger
from app.paths import MANIFEST_PATH
from app.render import render
from app.settings import Settings, pem_problem

log = get_logger(__name__)

CALLBACK_PATH = "/setup/callback"
CREDENTIALS_PATH = "/setup/credentials"
COOKIE_NAME = "conductor_setup"
# GitHub's manifest code is valid for an hour; a state outliving it would be of no use.
STATE_TTL_SECONDS = 3600.0
MAX_PENDING_STATES = 64
CONVERSION_TIMEOUT_SECONDS = 10.0
GITHUB_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "conductor-setup",
}
SETUP_MODE_ERROR = "Conductor is in setup mode: register or configure the GitHub App first"
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
def missing_settings(settings: Settings) -> list[str]:
    missing = []
    if settings.github_app_id is None:
        missing.append("GITHUB_APP_ID")
    if settings.github_private_key is None:
        missing.append("GITHUB_PRIVATE_KEY (or GITHUB_PRIVATE_KEY_PATH)")
    if settings.github_webhook_secret is None:
        missing.append("GITHUB_WEBHOOK_SECRET")
    return missing


@dataclass
class SetupState:
    """The setup app's secrets and the manifest states it has handed out, in memory only."""

    trust_local: bool
    clock: Callable[[], float] = time.monotonic
    access_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    pending: dict[str, float] = field(default_factory=dict)

    def issue_state(self) -> str:
        now = self.clock()
        self.pending = {s: expiry for s, expiry in self.pending.items() if expiry > now}
        while len(self.pending) >= MAX_PENDING_STATES:
            del self.pending[next(iter(self.pending))]
        state = secrets.token_urlsafe(32)
        self.pending[state] = now + STATE_TTL_SECONDS
        return state

    def redeem_state(self, state: str) -> bool:
        """True once for a state issued less than an hour ago; it is forgotten either way."""
        expiry = self.pending.pop(state, None)
        return expiry is not None and expiry > self.clock()

    def has_access(self, request: Request) -> bool:
        if _same(request.cookies.get(COOKIE_NAME, ""), self.access_token):
            return True
        return self.trust_local and _plainly_local(request)

    def csrf_ok(self, form: FormData) -> bool:
        return _same(_text(form, "csrf_token"), self.csrf_token)


_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


def _plainly_local(request: Request) -> bool:
    client = request.client.host if request.client else ""
    host = request.url.hostname or ""
    return (
        _is_loopback(client)
        and (host == "localhost" or _is_loopback(host))
        and not any(name in request.headers for name in _FORWARDING_HEADERS)
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


# --- the manifest -------------------------------------------------------------------------


def load_manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{MANIFEST_PATH.name}: expected a mapping at the top level")
    return data


def build_manifest(template: Mapping[str, Any], public_url: str) -> dict[str, Any]:
    """`app.yml` with its URLs pointing at this server."""
    manifest = copy.deepcopy(dict(template))
    manifest["url"] = public_url
    manifest["hook_attributes"] = {
        "active": True,
        **manifest.get("hook_attributes", {}),
        "url": public_url + WEBHOOK_PATH,
    }
    manifest["redirect_url"] = public_url + CALLBACK_PATH
    manifest["callback_urls"] = [public_url + DASHBOARD_CALLBACK_PATH]
    if manifest.get("setup_url"):
        manifest["setup_url"] = public_url + urlsplit(manifest["setup_url"]).path
    return manifest


def public_url(settings: Settings, request: Request) -> str:
    if settings.conductor_public_url is not None:
        return str(settings.conductor_public_url).rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


def registration_url(settings: Settings, state: str) -> str:
    base = str(settings.github_url).rstrip("/")
    if settings.github_org:
        path = f"/organizations/{quote(settings.github_org, safe='')}/settings/apps/new"
    else:
        path = "/settings/apps/new"
    return f"{base}{path}?{urlencode({'state': state})}"


def setup_link(settings: Settings, access_token: str) -> str:
    """The link logged at startup; opening it unlocks the setup pages in that browser."""
    if settings.conductor_public_url is not None:
        base = str(settings.conductor_public_url).rstrip("/")
    else:
        host = settings.host
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
            if address.is_unspecified:
                host = "127.0.0.1" if address.version == 4 else "::1"
            if address.version == 6:
                host = f"[{host}]"
        base = f"http://{host}:{settings.port}"
    return f"{base}/?{urlencode({'token': access_token})}"


def _unreachable(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.endswith(".localhost") or _is_loopback(host)


# --- the conversion: code -> the App's credentials ----------------------------------------


class SetupFailure(Exception):
    """Something the operator must act on; `problem` says what happened, `fix` what to do."""

    def __init__(self, status: int, problem: str, fix: str, app_url: str | None = None) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem
        self.fix = fix
        self.app_url = app_url


@dataclass(frozen=True)
class RegisteredApp:
    id: int
    slug: str
    name: str
    html_url: str
    pem: str
    webhook_secret: str
    client_id: str | None
    client_secret: str | None

    def env(self) -> dict[str, str]:
        values = {
            "GITHUB_APP_ID": str(self.id),
            "GITHUB_APP_SLUG": self.slug,
            "GITHUB_PRIVATE_KEY": self.pem,
            "GITHUB_WEBHOOK_SECRET": self.webhook_secret,
        }
        if self.client_id:
            values["GITHUB_CLIENT_ID"] = self.client_id
        if self.client_secret:
            values["GITHUB_CLIENT_SECRET"] = self.client_secret
        return values


START_AGAIN = "Open the setup page again and register the App from there."
THEN_START_AGAIN = "then open the setup page again and register the App from there."


async def convert_manifest_code(http: httpx.AsyncClient, code: str) -> RegisteredApp:
    """`POST /app-manifests/{code}/conversions`; a failure raises `SetupFailure` (502)."""
    path = f"app-manifests/{quote(code, safe='')}/conversions"
    try:
        response = await http.post(path)
    except httpx.HTTPError as exc:
        raise SetupFailure(
            502,
            f"Could not reach GitHub's API at {http.base_url} ({type(exc).__name__}).",
            "Check GITHUB_API_URL and this server's network access, " + THEN_START_AGAIN,
        ) from None
    if response.status_code == 404:
        raise SetupFailure(
            502,
            "GitHub does not know this registration code: it was already used, more than an "
            "hour has passed, or GITHUB_API_URL points at another GitHub.",
            "The App may already exist on GitHub: delete it there and register again from the "
            "setup page, or generate a private key in its settings and enter it on the "
            "paste-credentials page.",
        )
    if response.status_code == 422:
        raise SetupFailure(
            502,
            f"GitHub refused to hand over the App's credentials: {_github_message(response)}.",
            START_AGAIN,
        )
    if response.status_code != 201:
        raise SetupFailure(
            502,
            f"GitHub answered {response.status_code} instead of the App's credentials.",
            "GitHub may be having trouble; wait a minute, " + THEN_START_AGAIN,
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    return _registered_app(body)


def _github_message(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])[:200]
    return "no reason given"


def _registered_app(body: Any) -> RegisteredApp:
    data: dict[str, Any] = body if isinstance(body, dict) else {}
    html_url = data.get("html_url")
    app_url = None
    if isinstance(html_url, str) and urlsplit(html_url).scheme in ("http", "https"):
        app_url = html_url.rstrip("/")
    app_id, slug, pem, secret = (data.get(k) for k in ("id", "slug", "pem", "webhook_secret"))
    if (
        app_url is None
        or not isinstance(app_id, int)
        or isinstance(app_id, bool)
        or app_id <= 0
        or not isinstance(slug, str)
        or not isinstance(pem, str)
        or pem_problem(pem) is not None
        or not isinstance(secret, str)
        or not secret.strip()
    ):
        raise SetupFailure(
            502,
            "GitHub's answer did not carry the App's ID, private key and webhook secret.",
            "If the App was created, open its settings on GitHub, generate a private key and "
            "set a webhook secret, then enter them on the paste-credentials page.",
            app_url=app_url,
        )
    client_id, client_secret = data.get("client_id"), data.get("client_secret")
    return RegisteredApp(
        id=app_id,
        slug=slug,
        name=str(data.get("name") or slug),
        html_url=app_url,
        pem=pem,
        webhook_secret=secret,
        client_id=client_id if isinstance(client_id, str) else None,
        client_secret=client_secret if isinstance(client_secret, str) else None,
    )


async def _save(settings: Settings, values: dict[str, str], app_url: str | None) -> None:
    path = settings.conductor_env_file
    try:
        await asyncio.to_thread(update_env_file, path, values)
    except (OSError, EnvFileError) as exc:
        log.error("setup.env_write_failed", path=str(path), error=type(exc).__name__)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SetupFailure(
            500,
            f"Could not write {path}: {reason}.",
            "Make the file (and its directory) writable by this server, or set "
            "CONDUCTOR_ENV_FILE to a writable path, then enter the credentials on the "
            "paste-credentials page (a new private key and webhook secret can be made in the "
            "App's settings on GitHub).",
            app_url=app_url,
        ) from None


# --- pasted credentials -------------------------------------------------------------------


def check_credentials(form: FormData) -> tuple[dict[str, str], dict[str, str]]:
    """The env values from the paste form, and an error per field that is wrong."""
    errors: dict[str, str] = {}
    app_id = _text(form, "app_id").strip()
    if not (app_id.isascii() and app_id.isdigit() and int(app_id) > 0):
        errors["app_id"] = "App ID: enter the App's numeric ID from its settings page."
    pem = _text(form, "private_key").replace("\r\n", "\n").strip()
    problem = pem_problem(pem)
    if problem:
        errors["private_key"] = f"Private key: {problem}"
    secret = _text(form, "webhook_secret").strip()
    if not secret:
        errors["webhook_secret"] = "Webhook secret: enter the one set on the App's webhook."  # noqa: S105
    else:
        try:
            check_entry("GITHUB_WEBHOOK_SECRET", secret)
        except EnvFileError:
            errors["webhook_secret"] = "Webhook secret: it cannot contain ${...}."  # noqa: S105
    slug = _text(form, "slug").strip()
    if not slug:
        # Without it the bot's own pushes and comments would look like a person's.
        errors["slug"] = ("App slug: enter the name in the App's URL (github.com/apps/<slug>); "
                          "Conductor tells its own events from people's by it.")
    elif not _SLUG.fullmatch(slug):
        errors["slug"] = "App slug: use the App's URL name, lowercase letters, digits and dashes."
    values = {
        "GITHUB_APP_ID": app_id,
        "GITHUB_PRIVATE_KEY": pem + "\n",
        "GITHUB_WEBHOOK_SECRET": secret,
    }
    if slug:
        values["GITHUB_APP_SLUG"] = slug
    return values, errors


# --- pages --------------------------------------------------------------------------------


def _page(name: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(render(f"setup/{name}.html.j2", **context), status, headers=headers)


def _failure(failure: SetupFailure) -> HTMLResponse:
    return _page(
        "error",
        failure.status,
        problem=failure.problem,
        fix=failure.fix,
        app_url=failure.app_url,
    )


def _locked() -> HTMLResponse:
    return _page("locked", 403)


EXPIRED = (
    "This registration link has expired, was already used, or did not come from this server. "
    "Nothing was saved."
)


async def index(request: Request) -> Response:
    settings: Settings = request.state.settings
    setup: SetupState = request.state.setup
    token = request.query_params.get("token")
    if token is not None:
        if not _same(token, setup.access_token):
            return _locked()
        # Move the token from the address bar (and history) into a cookie.
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            setup.access_token,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response
    if not setup.has_access(request):
        return _locked()
    public = public_url(settings, request)
    manifest = build_manifest(request.state.manifest, public)
    return _page(
        "index",
        missing=missing_settings(settings),
        env_file=str(settings.conductor_env_file),
        public_url=public,
        unreachable=_unreachable(public),
        org=settings.github_org,
        action=registration_url(settings, setup.issue_state()),
        manifest=manifest,
        manifest_json=json.dumps(manifest),
    )


async def callback(request: Request) -> Response:
    settings: Settings = request.state.settings
    setup: SetupState = request.state.setup
    state = request.query_params.get("state", "")
    if not state or not setup.redeem_state(state):
        log.warning("setup.state_refused")
        return _page("error", 400, problem=EXPIRED, fix=START_AGAIN, app_url=None)
    code = request.query_params.get("code", "")
    if not code:
        return _page(
            "error",
            400,
            problem="GitHub sent the browser back without a registration code. Nothing was saved.",
            fix=START_AGAIN,
            app_url=None,
        )
    try:
        registered = await convert_manifest_code(request.state.http, code)
        await _save(settings, registered.env(), registered.html_url)
    except SetupFailure as failure:
        log.warning("setup.registration_failed", status=failure.status, problem=failure.problem)
        return _failure(failure)
    log.info("setup.app_registered", app_id=registered.id, slug=registered.slug)
    return _page(
        "done",
        app_id=registered.id,
        app_name=registered.name,
        install_url=f"{registered.html_url}/installations/new",
        env_file=str(settings.conductor_env_file),
    )


async def credentials(request: Request) -> Response:
    settings: Settings = request.state.settings
    setup: SetupState = request.state.setup
    if not setup.has_access(request):
        return _locked()
    form_page = {"csrf_token": setup.csrf_token, "env_file": str(settings.conductor_env_file)}
    if request.method == "GET":
        return _page("credentials", errors={}, app_id="", slug="", **form_page)
    async with request.form() as form:
        if not setup.csrf_ok(form):
            return _page(
                "error",
                403,
                problem="This form did not come from this server's setup page. Nothing was saved.",
                fix="Open the paste-credentials page again and submit it from there.",
                app_url=None,
            )
        values, errors = check_credentials(form)
    if errors:
        # Secrets are never sent back: the key and webhook secret fields stay empty.
        return _page(
            "credentials",
            400,
            errors=errors,
            app_id=values["GITHUB_APP_ID"],
            slug=values.get("GITHUB_APP_SLUG", ""),
            **form_page,
        )
    try:
        await _save(settings, values, None)
    except SetupFailure as failure:
        return _failure(failure)
    slug = values.get("GITHUB_APP_SLUG")
    log.info("setup.credentials_saved", app_id=int(values["GITHUB_APP_ID"]))
    return _page(
        "done",
        app_id=int(values["GITHUB_APP_ID"]),
        app_name=slug or "the App",
        install_url=_install_url(settings, slug),
        env_file=str(settings.conductor_env_file),
    )


def _install_url(settings: Settings, slug: str | None) -> str | None:
    # github.com serves Apps under /apps/<slug>; GitHub Enterprise Server under
    # /github-apps/<slug>. Without a slug the App's settings page has the install button.
    if not slug:
        return None
    base = str(settings.github_url).rstrip("/")
    prefix = "apps" if urlsplit(base).hostname == "github.com" else "github-apps"
    return f"{base}/{prefix}/{slug}/installations/new"


async def webhook_unavailable(request: Request) -> JSONResponse:
    return JSONResponse({"error": SETUP_MODE_ERROR}, status_code=503)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "mode": "setup"})


def create_setup_app(
    settings: Settings, *, clock: Callable[[], float] = time.monotonic
) -> Starlette:
    """The web app `conductor serve` runs without App credentials; see the module docstring."""
    manifest = load_manifest()
    setup = SetupState(trust_local=settings.conductor_public_url is None, clock=clock)
    api = str(settings.github_api_url).rstrip("/")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with httpx.AsyncClient(
            base_url=api, headers=GITHUB_HEADERS, timeout=CONVERSION_TIMEOUT_SECONDS
        ) as http:
            log.warning(
                "setup.open_link",
                message="Conductor is in setup mode; open this link to register or configure "
                "the GitHub App",
                url=setup_link(settings, setup.access_token),
                missing=missing_settings(settings),
            )
            yield {"settings": settings, "setup": setup, "manifest": manifest, "http": http}

    app = Starlette(
        routes=[
            Route("/", index),
            Route(CALLBACK_PATH, callback),
            Route(CREDENTIALS_PATH, credentials, methods=["GET", "POST"]),
            Route(WEBHOOK_PATH, webhook_unavailable, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )
    app.state.setup = setup
    return app
