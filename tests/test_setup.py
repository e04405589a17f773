"""The setup pages, driven through the test client against a local stand-in for GitHub's
manifest conversion endpoint (a real HTTP server on loopback)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import stat
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from app.settings import Settings
from app.setup import COOKIE_NAME, SETUP_MODE_ERROR, create_setup_app
from tests.test_envfile import clear_settings_env
from tests.test_manifest import EVENTS, PERMISSIONS

WEBHOOK_SECRET = "6fba8f2fc8a7e8f2cca5577eddd82ca7586b3b6b"
CLIENT_SECRET = "1d4b2097ac622ba702d19de498f005747a8b21d3"
CLIENT_ID = "Iv1.25b5d1e65ffc4022"


# --- a stand-in for GitHub's `POST /app-manifests/{code}/conversions` ----------------------


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ManifestConversions:
    """As GitHub documents it: a code GitHub issued converts once into the App's credentials
    (201); an unknown or used code is 404. `script` replaces the answer for one code."""

    prefix: str = ""
    url: str = ""
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, code: str, pem: str, app_id: int = 4242) -> dict[str, Any]:
        app = {
            "id": app_id,
            "slug": "conductor-test",
            "node_id": "MDExOkludGVncmF0aW9uMQ==",
            "owner": {"login": "octocat", "id": 1, "type": "User"},
            "name": "Conductor Test",
            "description": "",
            "external_url": "https://conductor.test",
            "html_url": "https://github.com/apps/conductor-test",
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
            "permissions": PERMISSIONS,
            "events": sorted(EVENTS),
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "webhook_secret": WEBHOOK_SECRET,
            "pem": pem,
        }
        self.codes[code] = app
        return app

    def answer(self, method: str, raw_path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        with self.lock:
            self.calls.append(Call(method, raw_path, headers))
            match = re.fullmatch(re.escape(self.prefix) + r"/app-manifests/([^/]+)/conversions",
                                 raw_path)
            if method != "POST" or match is None:
                return 404, _not_found()
            code = unquote(match.group(1))
            if code in self.script:
                return self.script.pop(code)
            app = self.codes.pop(code, None)
            if app is None:
                return 404, _not_found()
            return 201, json.dumps(app).encode()

    def conversions(self) -> list[Call]:
        return [call for call in self.calls if call.method == "POST"]


def _not_found() -> bytes:
    return json.dumps({
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest/apps/apps#create-a-github-app-from-a-manifest",
    }).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _StandIn

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        status, body = self.server.github.answer(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
        )
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _StandIn(ThreadingHTTPServer):
    github: ManifestConversions


@pytest.fixture
def github() -> Iterator[ManifestConversions]:
    yield from _serve(ManifestConversions())


@pytest.fixture
def ghes() -> Iterator[ManifestConversions]:
    """GitHub Enterprise Server: the API lives under /api/v3."""
    yield from _serve(ManifestConversions(prefix="/api/v3"))


def _serve(github: ManifestConversions) -> Iterator[ManifestConversions]:
    server = _StandIn(("127.0.0.1", 0), _Handler)
    server.github = github
    # A short poll interval only makes shutdown() return sooner.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    github.url = f"http://127.0.0.1:{server.server_address[1]}{github.prefix}"
    try:
        yield github
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clear_settings_env(monkeypatch)
    monkeypatch.chdir(tmp_path)  # no stray .env is read either


def make_settings(tmp_path: Path, api_url: str, **values: Any) -> Settings:
    base: dict[str, Any] = {"github_api_url": api_url, "conductor_env_file": tmp_path / ".env"}
    return Settings(_env_file=None, **{**base, **values})


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.forms.append(Form(attributes.get("action") or "",
                                   (attributes.get("method") or "get").lower(), {}))
        elif tag in ("input", "textarea") and self.forms and attributes.get("name"):
            self.forms[-1].fields[attributes["name"] or ""] = attributes.get("value") or ""


def forms(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


@contextlib.contextmanager
def unlocked(
    app: Starlette, **client: Any
) -> Iterator[tuple[TestClient, list[MutableMapping[str, Any]]]]:
    """A browser that opened the setup link from the log; yields it and the captured log."""
    with capture_logs() as logs, TestClient(app, **client) as browser:
        (event,) = [e for e in logs if e["event"] == "setup.open_link"]
        link = urlsplit(event["url"])
        assert browser.get(f"{link.path}?{link.query}").status_code == 200
        yield browser, logs


def register_form(browser: TestClient) -> tuple[str, dict[str, Any], str]:
    """The register form's action, its manifest and the state in the action."""
    page = browser.get("/")
    assert page.status_code == 200, page.text
    (form,) = [f for f in forms(page.text) if "manifest" in f.fields]
    assert form.method == "post"
    (state,) = parse_qs(urlsplit(form.action).query)["state"]
    return form.action, json.loads(form.fields["manifest"]), state


def assert_secret_free(text: str, pem: str) -> None:
    for secret in (WEBHOOK_SECRET, CLIENT_SECRET, *pem.strip().splitlines()[1:-1]):
        assert secret not in text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def rsa_pem(encrypted: bool = False) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(b"passphrase") if encrypted
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL, encryption).decode()


# --- who may open the pages ---------------------------------------------------------------


def test_pages_open_only_through_the_link_in_the_log(
    tmp_path: Path, github: ManifestConversions
) -> None:
    app = create_setup_app(make_settings(tmp_path, github.url))
    with capture_logs() as logs, TestClient(app) as browser:
        for path in ("/", "/setup/credentials", "/?token=guessed"):
            page = browser.get(path)
            assert page.status_code == 403
            assert "setup link" in page.text
        refused = browser.post("/setup/credentials", data={"app_id": "1"})
        assert refused.status_code == 403

        (event,) = [e for e in logs if e["event"] == "setup.open_link"]
        assert event["log_level"] == "warning"
        assert event["missing"] == [
            "GITHUB_APP_ID", "GITHUB_PRIVATE_KEY (or GITHUB_PRIVATE_KEY_PATH)",
            "GITHUB_WEBHOOK_SECRET",
        ]
        link = urlsplit(event["url"])
        assert link.netloc == "127.0.0.1:3000"  # HOST and PORT from the settings
        opened = browser.get(f"{link.path}?{link.query}", follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and COOKIE_NAME in cookie

        page = browser.get("/")
        assert page.status_code == 200
        assert "Register GitHub App" in page.text
        for name in ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET"):
            assert name in page.text
        assert browser.get("/setup/credentials").status_code == 200


@pytest.mark.parametrize(
    ("client", "headers", "public_url", "allowed"),
    [
        (("127.0.0.1", 50000), {}, None, True),
        (("::1", 50000), {"host": "localhost:3000"}, None, True),
        (("192.0.2.10", 50000), {}, None, False),  # from another machine
        (("127.0.0.1", 50000), {"host": "rebound.example:3000"}, None, False),  # DNS rebinding
        (("127.0.0.1", 50000), {"x-forwarded-for": "192.0.2.10"}, None, False),  # via a proxy
        (("127.0.0.1", 50000), {}, "https://conductor.example.net", False),  # published
    ],
)
def test_a_plainly_local_browser_needs_no_link(
    tmp_path: Path,
    github: ManifestConversions,
    client: tuple[str, int],
    headers: dict[str, str],
    public_url: str | None,
    allowed: bool,
) -> None:
    settings = make_settings(tmp_path, github.url, conductor_public_url=public_url)
    app = create_setup_app(settings)
    with TestClient(app, base_url="http://127.0.0.1:3000", client=client) as browser:
        page = browser.get("/", headers=headers)
        assert page.status_code == (200 if allowed else 403)
        assert ("Register GitHub App" in page.text) is allowed


def test_health_and_webhooks_answer_without_the_link(
    tmp_path: Path, github: ManifestConversions
) -> None:
    app = create_setup_app(make_settings(tmp_path, github.url))
    with TestClient(app) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"ok": True, "mode": "setup"}
        hook = client.post("/api/github/webhooks", content=b"{}",
                           headers={"x-github-event": "ping", "content-type": "application/json"})
        assert hook.status_code == 503
        assert hook.json() == {"error": SETUP_MODE_ERROR}
        assert SETUP_MODE_ERROR == (
            "Conductor is in setup mode: register or configure the GitHub App first"
        )


# --- the register form --------------------------------------------------------------------


def test_register_form_posts_the_manifest_to_github(
    tmp_path: Path, github: ManifestConversions
) -> None:
    app = create_setup_app(make_settings(tmp_path, github.url))
    with unlocked(app) as (browser, _):
        action, manifest, state = register_form(browser)
        assert action == f"https://github.com/settings/apps/new?state={state}"
        assert manifest["url"] == "http://testserver"
        assert manifest["hook_attributes"] == {
            "url": "http://testserver/api/github/webhooks", "active": True,
        }
        assert manifest["redirect_url"] == "http://testserver/setup/callback"
        assert manifest["default_permissions"] == PERMISSIONS
        assert sorted(manifest["default_events"]) == sorted(EVENTS)
        assert manifest["public"] is False
        assert len(state) >= 32
        # Each page view hands out a fresh state.
        assert register_form(browser)[2] != state
        assert github.calls == []


def test_org_and_public_url_variant(tmp_path: Path, github: ManifestConversions) -> None:
    settings = make_settings(
        tmp_path, github.url, github_org="acme corp", github_url="https://ghe.example.com",
        conductor_public_url="https://conductor.example.net/",
    )
    with unlocked(create_setup_app(settings)) as (browser, _):
        action, manifest, state = register_form(browser)
        assert action == (
            f"https://ghe.example.com/organizations/acme%20corp/settings/apps/new?state={state}"
        )
        assert manifest["url"] == "https://conductor.example.net"
        assert manifest["hook_attributes"]["url"] == (
            "https://conductor.example.net/api/github/webhooks"
        )
        assert manifest["redirect_url"] == "https://conductor.example.net/setup/callback"
        assert "acme corp" in browser.get("/").text


def test_a_loopback_public_url_is_flagged(tmp_path: Path, github: ManifestConversions) -> None:
    app = create_setup_app(make_settings(tmp_path, github.url))
    with TestClient(app, base_url="http://localhost:3000", client=("127.0.0.1", 1)) as browser:
        _, manifest, _ = register_form(browser)
        assert manifest["hook_attributes"]["url"] == "http://localhost:3000/api/github/webhooks"
        assert "GitHub cannot deliver webhooks" in browser.get("/").text


# --- the callback -------------------------------------------------------------------------


def test_full_round_trip_writes_the_env_file(
    tmp_path: Path, github: ManifestConversions, private_key_pem: str
) -> None:
    env = tmp_path / ".env"
    env.write_text("# my settings\nREDIS_URL=redis://localhost:6379/1\n"
                   "GITHUB_WEBHOOK_SECRET=old-secret\n")
    github.issue("c0de", private_key_pem)
    app = create_setup_app(make_settings(tmp_path, github.url))
    with unlocked(app) as (browser, logs):
        _, _, state = register_form(browser)
        done = browser.get(f"/setup/callback?code=c0de&state={state}")
        assert done.status_code == 200, done.text
        assert "https://github.com/apps/conductor-test/installations/new" in done.text
        assert "Restart <code>conductor serve</code>" in done.text
        assert_secret_free(done.text, private_key_pem)

        (call,) = github.conversions()
        assert call.path == "/app-manifests/c0de/conversions"
        assert call.headers["accept"] == "application/vnd.github+json"
        assert call.headers["x-github-api-version"] == "2022-11-28"

        assert mode(env) == 0o600
        text = env.read_text()
        assert text.startswith("# my settings\nREDIS_URL=redis://localhost:6379/1\n")
        assert "old-secret" not in text
        saved = Settings(_env_file=env)
        assert saved.has_app_credentials
        assert saved.github_app_id == 4242
        assert saved.github_app_slug == "conductor-test"
        assert saved.github_private_key is not None
        assert saved.github_private_key.get_secret_value() == private_key_pem
        assert saved.github_webhook_secret is not None
        assert saved.github_webhook_secret.get_secret_value() == WEBHOOK_SECRET
        assert saved.github_client_id == CLIENT_ID
        assert saved.github_client_secret is not None
        assert saved.github_client_secret.get_secret_value() == CLIENT_SECRET
        assert saved.redis_url == "redis://localhost:6379/1"

        # The state works once: replaying the callback is refused before GitHub is asked.
        github.issue("c0de", private_key_pem)
        replay = browser.get(f"/setup/callback?code=c0de&state={state}")
        assert replay.status_code == 400
        assert "expired" in replay.text
        assert len(github.conversions()) == 1
        assert env.read_text() == text
    assert_secret_free(repr(logs), private_key_pem)
    assert any(e["event"] == "setup.app_registered" and e["app_id"] == 4242 for e in logs)


@pytest.mark.parametrize(
    "query",
    ["code=c0de&state=forged", "code=c0de", "code=c0de&state=", "state={state}"],
)
def test_callback_without_a_good_state_and_code_writes_nothing(
    tmp_path: Path, github: ManifestConversions, private_key_pem: str, query: str
) -> None:
    github.issue("c0de", private_key_pem)
    app = create_setup_app(make_settings(tmp_path, github.url))
    with unlocked(app) as (browser, _):
        _, _, state = register_form(browser)
        page = browser.get("/setup/callback?" + query.format(state=state))
        assert page.status_code == 400
        assert "Nothing was saved" in page.text
    assert github.conversions() == []
    assert not (tmp_path / ".env").exists()


def test_a_state_expires_after_an_hour(
    tmp_path: Path, github: ManifestConversions, private_key_pem: str
) -> None:
    now = [1000.0]
    app = create_setup_app(make_settings(tmp_path, github.url), clock=lambda: now[0])
    github.issue("c0de", private_key_pem)
    with unlocked(app) as (browser, _):
        _, _, stale = register_form(browser)
        _, _, fresh = register_form(browser)
        now[0] += 3601
        assert browser.get(f"/setup/callback?code=c0de&state={stale}").status_code == 400
        assert github.conversions() == []
        _, _, recent = register_form(browser)
        now[0] += 3599
        assert browser.get(f"/setup/callback?code=c0de&state={recent}").status_code == 200
        assert browser.get(f"/setup/callback?code=c0de&state={fresh}").status_code == 400
    assert len(github.conversions()) == 1


UNPROCESSABLE = json.dumps({
    "message": "Validation Failed",
    "errors": [{"resource": "Integration", "code": "custom", "message": "Name is taken"}],
    "documentation_url": "https://docs.github.com/rest/apps/apps#create-a-github-app-from-a-manifest",
}).encode()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (None, "already used"),  # an unknown code: GitHub answers 404
        ((422, UNPROCESSABLE), "Validation Failed"),
        ((500, b'{"message": "Server Error"}'), "GitHub answered 500"),
        ((503, b"<html>unavailable</html>"), "GitHub answered 503"),
        ((201, b"{not json"), "did not carry the App"),
        ((201, json.dumps({"id": 1, "html_url": "https://github.com/apps/x"}).encode()),
         "did not carry the App"),
    ],
)
def test_conversion_failures_are_explained_and_write_nothing(
    tmp_path: Path,
    github: ManifestConversions,
    answer: tuple[int, bytes] | None,
    expected: str,
) -> None:
    if answer is not None:
        github.script["c0de"] = answer
    app = create_setup_app(make_settings(tmp_path, github.url))
    with unlocked(app) as (browser, _):
        _, _, state = register_form(browser)
        page = browser.get(f"/setup/callback?code=c0de&state={state}")
        assert page.status_code == 502
        assert expected in page.text
        assert "What to do" in page.text
    assert len(github.conversions()) == 1
    assert not (tmp_path / ".env").exists()


def test_github_unreachable(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{closed_port()}"
    app = create_setup_app(make_settings(tmp_path, api))
    with unlocked(app) as (browser, _):
        _, _, state = register_form(browser)
        page = browser.get(f"/setup/callback?code=c0de&state={state}")
        assert page.status_code == 502
        assert "Could not reach GitHub" in page.text and "GITHUB_API_URL" in page.text
    assert not (tmp_path / ".env").exists()


def test_enterprise_api_path_and_an_odd_code_are_escaped(
    tmp_path: Path, ghes: ManifestConversions, private_key_pem: str
) -> None:
    code = "a/b c+d"
    ghes.issue(code, private_key_pem)
    app = create_setup_app(make_settings(tmp_path, ghes.url))
    with unlocked(app) as (browser, _):
        _, _, state = register_form(browser)
        page = browser.get("/setup/callback", params={"code": code, "state": state})
        assert page.status_code == 200, page.text
    (call,) = ghes.conversions()
    assert call.path == "/api/v3/app-manifests/a%2Fb%20c%2Bd/conversions"


def test_an_unwritable_env_file_is_explained(
    tmp_path: Path, github: ManifestConversions, private_key_pem: str
) -> None:
    github.issue("c0de", private_key_pem)
    settings = make_settings(tmp_path, github.url, conductor_env_file=tmp_path / "no" / ".env")
    with unlocked(create_setup_app(settings)) as (browser, logs):
        _, _, state = register_form(browser)
        page = browser.get(f"/setup/callback?code=c0de&state={state}")
        assert page.status_code == 500
        assert "Could not write" in page.text and "CONDUCTOR_ENV_FILE" in page.text
        assert "https://github.com/apps/conductor-test" in page.text
        assert_secret_free(page.text, private_key_pem)
    assert_secret_free(repr(logs), private_key_pem)


# --- pasting existing credentials ---------------------------------------------------------


def credentials_form(browser: TestClient) -> Form:
    page = browser.get("/setup/credentials")
    assert page.status_code == 200
    (form,) = [f for f in forms(page.text) if f.action == "/setup/credentials"]
    assert form.method == "post"
    return form


def test_pasted_credentials_are_saved(
    tmp_path: Path, github: ManifestConversions, private_key_pem: str
) -> None:
    env = tmp_path / ".env"
    env.write_text("OTHER=kept\n")
    app = create_setup_app(make_settings(tmp_path, github.url))
    with unlocked(app) as (browser, logs):
        form = credentials_form(browser)
        pasted = "\r\n" + private_key_pem.replace("\n", "\r\n") + "  \r\n"
        done = browser.post("/setup/credentials", data={
            **form.fields,
            "app_id": " 77 ",
            "private_key": pasted,
            "webhook_secret": WEBHOOK_SECRET,
            "slug": "conductor-test",
        })
        assert done.status_code == 200, done.text
        assert "https://github.com/apps/conductor-test/installations/new" in done.text
        assert_secret_free(done.text, private_key_pem)
    assert_secret_free(repr(logs), private_key_pem)
    assert mode(env) == 0o600
    assert env.read_text().startswith("OTHER=kept\n")
    saved = Settings(_env_file=env)
    assert saved.github_app_id == 77
    assert saved.github_app_slug == "conductor-test"
    assert saved.github_private_key is not None
    assert saved.github_private_key.get_secret_value() == private_key_pem
    assert saved.github_webhook_secret is not None
    assert saved.github_webhook_secret.get_secret_value() == WEBHOOK_SECRET


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


BROKEN_PEM = "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("field_name", "value", "message"),
    [
        ("app_id", "", "App ID: enter the App's numeric ID"),
        ("app_id", "0", "App ID: enter the App's numeric ID"),
        ("app_id", "-3", "App ID: enter the App's numeric ID"),
        ("app_id", "12a", "App ID: enter the App's numeric ID"),
        ("private_key", "", "Private key: paste the contents"),
        ("private_key", "ssh-rsa AAAAB3Nza", "Private key: this is not a PEM private key"),
        ("private_key", BROKEN_PEM, "Private key: this key could not be read"),
        ("private_key", "encrypted", "Private key: this key is encrypted"),
        ("private_key", "ec", "Private key: GitHub App keys are RSA keys"),
        ("webhook_secret", "   ", "Webhook secret: enter the one set"),
        ("webhook_secret", "pre${HOME}post", "Webhook secret: it cannot contain"),
        ("slug", "Not A Slug!", "App slug: use the App"),
        ("slug", "", "App slug: enter the name in the App's URL"),
    ],
)
def test_each_bad_field_is_named_and_nothing_is_saved(
    tmp_path: Path,
    github: ManifestConversions,
    private_key_pem: str,
    field_name: str,
    value: str,
    message: str,
) -> None:
    value = {"encrypted": rsa_pem(encrypted=True), "ec": _ec_pem()}.get(value, value)
    fields = {"app_id": "77", "private_key": private_key_pem, "webhook_secret": WEBHOOK_SECRET,
              "slug": "conductor-test", field_name: value}
    app = create_setup_app(make_settings(tmp_path, github.url))
    with unlocked(app) as (browser, _):
        form = credentials_form(browser)
        page = browser.post("/setup/credentials", data={**form.fields, **fields})
        assert page.status_code == 400
        assert message.replace("'", "&#39;") in page.text
        assert "Nothing was saved" in page.text
        # The form comes back for correction, without the key or the secret in it.
        (again,) = [f for f in forms(page.text) if f.action == "/setup/credentials"]
        assert again.fields["private_key"] == "" and again.fields["webhook_secret"] == ""
        assert_secret_free(page.text, private_key_pem)
    assert not (tmp_path / ".env").exists()


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_credentials_need_the_form_token_even_from_a_local_browser(
    tmp_path: Path, github: ManifestConversions, private_key_pem: str, token: str | None
) -> None:
    app = create_setup_app(make_settings(tmp_path, github.url))
    fields = {"app_id": "77", "private_key": private_key_pem, "webhook_secret": WEBHOOK_SECRET}
    if token is not None:
        fields["csrf_token"] = token
    # A page on another site can make a local browser post here, but cannot read the token.
    with TestClient(app, base_url="http://127.0.0.1:3000", client=("127.0.0.1", 1)) as browser:
        page = browser.post("/setup/credentials", data=fields,
                            headers={"origin": "https://attacker.example"})
        assert page.status_code == 403
        assert "Nothing was saved" in page.text
    assert not (tmp_path / ".env").exists()
