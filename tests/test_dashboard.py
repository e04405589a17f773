"""The dashboard, as a team member uses it: signed in with GitHub through the App's OAuth web
flow (the GitHub emulator plays github.com), runs shown to those who may read their
repository, the pages served by the real web app on uvicorn with a real Redis."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from app import dashboard
from app.dashboard import SESSION_COOKIE, _safe_next, outcome_metrics
from app.redis import RedisProcess
from app.runs import Run, RunStatus, RunStore
from app.settings import Settings
from app.web import create_app
from tests.conftest import LiveServer
from tests.emulators.github.testing import Env, running_emulator
from tests.test_trace import record_run


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as running:
        running.state.create_repo("acme/secret", files={"README.md": "hush\n"})
        yield running


def dashboard_settings(env: Env, tmp_path: Path, **values: Any) -> Settings:
    app = env.state.app
    base: dict[str, Any] = {
        "github_app_id": env.state.app_id, "github_app_slug": app.slug,
        "github_private_key": env.state.private_key(),
        "github_webhook_secret": "secret-0123456789",
        "github_api_url": env.url, "github_url": env.url,
        "github_client_id": app.client_id, "github_client_secret": app.client_secret,
        "conductor_data_dir": tmp_path / "data", "conductor_env_file": tmp_path / ".env",
    }
    base.update(values)
    return Settings(_env_file=None, **base)


@pytest.fixture
def live(env: Env, tmp_path: Path, redis_server: RedisProcess,
         redis: aioredis.Redis) -> Iterator[LiveServer]:
    with LiveServer(create_app(dashboard_settings(env, tmp_path),
                               redis_url=redis_server.url)) as server:
        env.state.set_callback_urls([f"{server.url}/dashboard/callback"])
        yield server


@pytest.fixture
def browser(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


async def recorded(redis: aioredis.Redis, env: Env, repo: str = "acme/widgets",
                   **fields: Any) -> Run:
    """A recorded run in `repo`, with the repository's id as runs keep it (`repo_id=None`: a
    run recorded before they did)."""
    fields.setdefault("repo_id", env.state.resolve_repo(repo).id)
    run = await record_run(redis)
    store = RunStore(redis)
    if repo != run.repo:
        base = await store.set_fields(run.id, installation_id=env.installation.id)
        assert base is not None
        other = Run(**{**base.__dict__, **fields, "id": f"secret-1-1-{run.id[-6:]}",
                       "repo": repo})
        await store.create(other)
        return other
    changed = await store.set_fields(run.id, installation_id=env.installation.id, **fields)
    assert changed is not None
    return changed


def github_signs_in(env: Env, authorize: str, login: str) -> httpx.Response:
    """The person's browser on GitHub's authorize page, signed in as `login`, approving."""
    return httpx.get(authorize, headers={"Authorization": f"token {env.state.user_token(login)}"})


def sign_in(browser: httpx.Client, env: Env, login: str, start: str = "/dashboard") -> str:
    """Follows the sign-in from a dashboard page as a browser would; the page it ends on."""
    to_login = browser.get(start)
    assert to_login.status_code == 303, to_login.text
    to_github = browser.get(to_login.headers["location"])
    assert to_github.status_code == 303
    back = github_signs_in(env, to_github.headers["location"], login)
    assert back.status_code == 302, back.text
    landed = browser.get(back.headers["location"])
    assert landed.status_code == 303, landed.text
    return landed.headers["location"]


def run_page(browser: httpx.Client, run: Run) -> httpx.Response:
    return browser.get(f"/dashboard/runs/{run.id}")


async def test_a_reader_signs_in_with_github_and_sees_why_the_run_did_what_it_did(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    run = await recorded(redis, env)
    assert sign_in(browser, env, "rita", f"/dashboard/runs/{run.id}") == (
        f"/dashboard/runs/{run.id}")  # back where they started

    page = run_page(browser, run)
    assert page.status_code == 200
    text = page.text
    assert "acme/widgets#7" in text and "Add sub" in text and "verifying" in text
    for shown in ("impl: the issue asks for it", "test: the issue asks for it",  # rationale
                  "Looks right.", "3 checks passed", "plan accepted: 2 steps",
                  "pushed 3333333", "claude-opus-5-5", "req_implementer", "You are the reviewer.",
                  "$0.0515", "conductor trace widgets-7-1-abc123"):
        assert shown in text, shown
    assert f"{env.url}/acme/widgets/commit/{'3' * 40}" in text  # each step's diff
    assert 'class="gantt"' in text
    # The step summary's terminal escape (from a model) is shown, not passed on.
    assert "Added sub(a, b).\\x1b]0;owned\\x07" in text and "\x1b" not in text


async def test_the_list_shows_only_runs_in_repositories_the_person_may_read(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    widgets = await recorded(redis, env)
    secret = await recorded(redis, env, repo="acme/secret")
    sign_in(browser, env, "rita")  # reads acme/widgets; not a collaborator on acme/secret

    listing = browser.get("/dashboard")
    assert listing.status_code == 200
    assert widgets.id in listing.text and "acme/widgets" in listing.text
    assert secret.id not in listing.text and "acme/secret" not in listing.text
    assert run_page(browser, secret).status_code == 404
    missing = browser.get("/dashboard/runs/no-such-run")
    assert missing.status_code == 404
    # A run one may not see reads exactly like one that does not exist.
    assert run_page(browser, secret).text == missing.text


async def test_a_new_repository_given_a_renamed_ones_name_does_not_show_its_runs(
    env: Env, live: LiveServer, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    old = env.state.resolve_repo("acme/secret")
    env.state.set_collaborator(old, "alice", "read")
    secret = await recorded(redis, env, repo="acme/secret", head_sha="4" * 40, pr_number=3,
                            pr_url=f"{env.url}/acme/secret/pull/3")
    assert secret.repo_id == old.id
    sign_in(browser, env, "rita")  # no access to acme/secret
    assert run_page(browser, secret).status_code == 404
    missing = browser.get("/dashboard/runs/no-such-run").text

    # The private repository is renamed, and a new one takes its name, where rita may read.
    env.state.rename_repo("acme/secret", "secret-legacy")
    new = env.state.create_repo("acme/secret", files={"README.md": "new\n"})
    env.state.set_collaborator(new, "rita", "read")
    for cached in (True, False):  # the answer cached a minute ago, then GitHub's answer now
        if not cached:
            await redis.delete(*[key async for key in redis.scan_iter("conductor:perm:*")])
        page = run_page(browser, secret)
        assert page.status_code == 404 and page.text == missing
        listing = browser.get("/dashboard")
        assert listing.status_code == 200 and secret.id not in listing.text
        assert "secret-legacy" not in listing.text
        only = browser.get("/dashboard", params={"repo": "acme/secret"})
        assert secret.id not in only.text

    # Alice reads the renamed repository: she still sees the run, under its name now.
    with httpx.Client(base_url=live.url, timeout=10) as alice:
        sign_in(alice, env, "alice")
        page = run_page(alice, secret)
        assert page.status_code == 200
        assert "acme/secret-legacy#7" in page.text
        assert "Started in acme/secret, since renamed acme/secret-legacy." in page.text
        assert f"{env.url}/acme/secret-legacy/commit/{'4' * 40}" in page.text
        assert f"{env.url}/acme/secret-legacy/pull/3" in page.text
        assert f"{env.url}/acme/secret/" not in page.text  # no link into the new repository
        listing = alice.get("/dashboard")
        assert secret.id in listing.text and "acme/secret-legacy#7" in listing.text
        only = alice.get("/dashboard", params={"repo": "acme/secret-legacy"})
        assert secret.id in only.text
        assert secret.id not in alice.get("/dashboard", params={"repo": "acme/secret"}).text


async def test_a_run_whose_repository_github_no_longer_shows_the_app_is_not_shown(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    run = await recorded(redis, env)
    gone = await recorded(redis, env, repo="acme/secret", repo_id=987654321)  # no such id
    env.state.set_collaborator("acme/secret", "alice", "read")
    sign_in(browser, env, "alice")
    assert run_page(browser, run).status_code == 200
    assert run_page(browser, gone).status_code == 404
    # Taken out of the App's installation: its id no longer resolves for the App either.
    env.state.remove_repositories(env.installation.id, ["acme/widgets"])
    await redis.delete(*[key async for key in redis.scan_iter("conductor:perm:*")])
    assert run_page(browser, run).status_code == 404
    listing = browser.get("/dashboard")
    assert listing.status_code == 200
    assert run.id not in listing.text and gone.id not in listing.text


async def test_runs_recorded_before_ids_were_kept_are_checked_by_name(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    legacy = await recorded(redis, env, repo_id=None)
    secret = await recorded(redis, env, repo="acme/secret", repo_id=None)
    sign_in(browser, env, "rita")
    assert run_page(browser, legacy).status_code == 200
    assert run_page(browser, secret).status_code == 404
    assert [key async for key in redis.scan_iter("conductor:perm:id:*")] == []


async def test_many_runs_of_one_repository_cost_one_check_a_minute(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    store = RunStore(redis)
    for number in range(30):
        await store.create(Run(id=f"run-{number:02d}", repo="acme/widgets",
                               repo_id=env.repo.id, installation_id=env.installation.id,
                               issue_number=100 + number, issue_title=f"issue {number}",
                               triggered_by="alice", trigger_delivery=f"d-{number}",
                               attempt=1, branch="b", created_at=1796000000.0 - number))
    sign_in(browser, env, "rita")

    def checks() -> list[str]:
        return [f"{r.method} {r.path}" for r in env.state.requests if r.auth == "installation"
                and ("/repositories/" in r.path or r.path.endswith("/permission"))]

    assert browser.get("/dashboard").text.count(">run-") == 30
    assert checks() == [f"GET /repositories/{env.repo.id}",
                        "GET /repos/acme/widgets/collaborators/rita/permission"]
    assert browser.get("/dashboard").text.count(">run-") == 30
    assert browser.get("/dashboard/runs/run-07").status_code == 200
    assert len(checks()) == 2  # cached by the repository's id


async def test_someone_without_access_sees_no_run(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    run = await recorded(redis, env)
    sign_in(browser, env, "mallory")
    assert run.id not in browser.get("/dashboard").text
    assert run_page(browser, run).status_code == 404


async def test_outcome_metrics_count_what_the_runs_came_to(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    await recorded(redis, env, status=RunStatus.DONE,
                   outcome={"merged": True, "by": "alice", "lead_time_s": 5400})
    sign_in(browser, env, "alice")
    text = browser.get("/dashboard").text
    assert "100%" in text and "1.5 h" in text  # merge rate; median label to merge
    assert "$0.05" in text  # model cost, and per merged PR
    # In the metrics themselves, not only the run's row ($0.0515).
    assert "<b>$0.05</b>model cost" in text and "<b>$0.05</b>cost per merged PR" in text


def test_outcome_metrics() -> None:
    def run(number: int, **fields: Any) -> Run:
        return Run(id=f"r{number}", repo="acme/widgets", installation_id=1,
                   issue_number=number, issue_title="t", triggered_by="alice",
                   trigger_delivery="d", attempt=1, branch="b", **fields)

    runs = [run(1, status=RunStatus.DONE, pr_number=11,
                outcome={"merged": True, "lead_time_s": 600}),
            run(2, status=RunStatus.DONE, pr_number=12,
                outcome={"merged": True, "lead_time_s": 1800}),
            run(3, status=RunStatus.NEEDS_HUMAN, pr_number=13,
                outcome={"merged": False, "lead_time_s": 99}),
            run(4, status=RunStatus.FAILED)]
    metrics = outcome_metrics(runs, {"r1": 1.0, "r2": 2.0, "r3": 0.5, "r4": 0.5})
    assert metrics["runs"] == 4 and metrics["pull_requests"] == 3
    assert (metrics["merged"], metrics["closed"]) == (2, 1)
    assert metrics["merge_rate"] == pytest.approx(2 / 3)
    assert metrics["median_lead_time_s"] == 1200
    assert metrics["cost_usd"] == 4.0 and metrics["cost_per_merge_usd"] == 2.0
    assert dict(metrics["by_status"]) == {"done": 2, "needs_human": 1, "failed": 1}
    empty = outcome_metrics([], {})
    assert empty["merge_rate"] is None and empty["cost_per_run_usd"] is None


async def test_runs_past_a_page_are_reached_by_older_links_and_hidden_ones_never_shown(
    env: Env, browser: httpx.Client, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "RECENT_RUNS", 4)  # the page in the web app reads it
    monkeypatch.setattr(dashboard, "SCAN_RUNS", 12)
    store = RunStore(redis)
    # Newest first: seven widgets runs with a stretch of fourteen secret ones among them.
    repos = ["acme/widgets"] * 5 + ["acme/secret"] * 14 + ["acme/widgets"] * 2
    for age, repo in enumerate(repos):
        await store.create(Run(id=f"run-{age:02d}", repo=repo, installation_id=env.installation.id,
                               issue_number=100 + age, issue_title=f"issue {age}",
                               triggered_by="alice", trigger_delivery=f"d-{age}", attempt=1,
                               branch="b", created_at=1796000000.0 - age * 60))
    sign_in(browser, env, "rita")  # reads acme/widgets, not acme/secret

    def shown(page: httpx.Response) -> list[str]:
        assert page.status_code == 200, page.text
        assert "acme/secret" not in page.text
        return re.findall(r">(run-\d\d)</a>", page.text)

    def older(page: httpx.Response) -> str | None:
        match = re.search(r'<a href="([^"]+)">Older runs</a>', page.text)
        return html.unescape(match[1]) if match else None

    first = browser.get("/dashboard")
    assert shown(first) == ["run-00", "run-01", "run-02", "run-03"]
    assert "Latest runs" not in first.text
    second = browser.get(older(first) or "")
    assert shown(second) == ["run-04"]  # then twelve secret runs read, the page offers more
    assert "Latest runs" in second.text
    third = browser.get(older(second) or "")
    assert shown(third) == ["run-19", "run-20"] and older(third) is None

    # The repository filter pages the same way.
    only = browser.get("/dashboard", params={"repo": "acme/widgets"})
    assert shown(only) == ["run-00", "run-01", "run-02", "run-03"]
    assert "repo=acme%2Fwidgets" in (older(only) or "")

    for bad in ("soon", "nan", "-5", "inf"):
        refused = browser.get("/dashboard", params={"before": bad})
        assert refused.status_code == 400 and "Latest runs" in refused.text


async def test_text_from_issues_and_models_is_shown_not_run(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    run = await recorded(redis, env, issue_title='<script>alert("hi")</script>',
                         stop_reason='<img src=x onerror="alert(1)">')
    sign_in(browser, env, "rita")
    for page in (run_page(browser, run), browser.get("/dashboard")):
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert" in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"


def test_pages_send_a_stranger_to_sign_in(browser: httpx.Client) -> None:
    for path in ("/dashboard", "/dashboard/runs/widgets-7-1-abc123"):
        answer = browser.get(path)
        assert answer.status_code == 303
        assert parse_qs(urlsplit(answer.headers["location"]).query)["next"] == [path]


def test_sign_in_goes_to_github_with_a_state_bound_to_this_browser(
    env: Env, browser: httpx.Client, live: LiveServer
) -> None:
    answer = browser.get("/dashboard/login")
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{env.url}/login/oauth/authorize"
    query = parse_qs(target.query)
    assert query["client_id"] == [env.state.app.client_id]
    assert query["redirect_uri"] == [f"{live.url}/dashboard/callback"]
    cookie = next(c for c in browser.cookies.jar if c.name == "conductor_sign_in")
    assert cookie.value.split(".")[0] == query["state"][0] and len(query["state"][0]) >= 32
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/dashboard"


async def test_a_callback_not_started_in_this_browser_is_refused(
    env: Env, live: LiveServer, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    # Login CSRF: an attacker starts a sign-in and sends the victim the link back from GitHub.
    with httpx.Client(base_url=live.url, timeout=10) as attacker:
        to_github = attacker.get("/dashboard/login")
        back = github_signs_in(env, to_github.headers["location"], "mallory")
    refused = browser.get(back.headers["location"])
    assert refused.status_code == 400 and "expired" in refused.text
    assert SESSION_COOKIE not in browser.cookies
    assert [key async for key in redis.scan_iter("conductor:dashboard:session:*")] == []


def test_a_link_back_from_github_works_once(env: Env, browser: httpx.Client) -> None:
    to_github = browser.get("/dashboard/login")
    pending = next(c.value for c in browser.cookies.jar if c.name == "conductor_sign_in")
    back = github_signs_in(env, to_github.headers["location"], "rita")
    assert browser.get(back.headers["location"]).status_code == 303
    again = browser.get(back.headers["location"])  # the sign-in's cookie is gone
    assert again.status_code == 400
    browser.cookies.set("conductor_sign_in", pending, path="/dashboard")  # kept a copy
    replayed = browser.get(back.headers["location"])
    assert replayed.status_code == 502 and "incorrect or expired" in replayed.text


async def test_asking_for_sign_in_stores_nothing(
    browser: httpx.Client, redis: aioredis.Redis
) -> None:
    for _ in range(5):
        assert browser.get("/dashboard/login").status_code == 303
    assert [key async for key in redis.scan_iter("conductor:dashboard:*")] == []


def test_githubs_refusal_of_the_code_is_a_clear_page(env: Env, browser: httpx.Client) -> None:
    to_github = browser.get("/dashboard/login")
    back = github_signs_in(env, to_github.headers["location"], "rita")
    forged = back.headers["location"].replace("code=", "code=0")
    answer = browser.get(forged)
    assert answer.status_code == 502
    assert "GitHub refused the sign-in" in answer.text and "incorrect or expired" in answer.text
    assert SESSION_COOKIE not in browser.cookies


def test_declining_on_github_is_a_clear_page(browser: httpx.Client) -> None:
    answer = browser.get("/dashboard/callback?error=access_denied&error_description="
                         "The+user+has+denied+your+application+access.&state=x")
    assert answer.status_code == 400 and "denied your application access" in answer.text


async def test_the_session_is_a_cookie_only_this_site_reads_and_redis_keeps_no_copy(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    sign_in(browser, env, "rita")
    cookie = next(c for c in browser.cookies.jar if c.name == SESSION_COOKIE)
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/dashboard"
    assert cookie.get_nonstandard_attr("SameSite", "").lower() == "lax"
    keys = [key async for key in redis.scan_iter("conductor:dashboard:*")]
    assert len(keys) == 1 and cookie.value.encode() not in keys[0]
    stored = await redis.get(keys[0])
    assert stored is not None and cookie.value.encode() not in stored and b"rita" in stored
    assert b"ghu_" not in stored  # GitHub's user token is not kept
    assert 8 * 3600 - 60 <= await redis.ttl(keys[0]) <= 8 * 3600


async def test_signing_out_ends_the_session(
    env: Env, live: LiveServer, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    sign_in(browser, env, "rita")
    session = browser.cookies[SESSION_COOKIE]
    other_site = browser.post("/dashboard/logout", headers={"Origin": "https://evil.test"})
    assert other_site.status_code == 403
    assert browser.get("/dashboard").status_code == 200

    out = browser.post("/dashboard/logout", headers={"Origin": live.url})
    assert out.status_code == 200 and "signed out" in out.text
    assert [key async for key in redis.scan_iter("conductor:dashboard:session:*")] == []
    browser.cookies.set(SESSION_COOKIE, session, path="/dashboard")  # a copy kept is no use
    assert browser.get("/dashboard").status_code == 303


async def test_github_unreachable_for_the_access_check_is_said_not_a_500(
    env: Env, browser: httpx.Client, redis: aioredis.Redis
) -> None:
    run = await recorded(redis, env)
    sign_in(browser, env, "rita")
    env.state.add_fault("status", path="/repos/*/*/collaborators/*/permission", status=502,
                        count=None)
    page = run_page(browser, run)
    assert page.status_code == 503 and "GitHub could not be asked" in page.text
    listing = browser.get("/dashboard")
    assert listing.status_code == 200 and run.id not in listing.text
    assert "could not say whether you may read" in listing.text and "502" in listing.text


def test_without_the_apps_client_credentials_sign_in_says_what_to_set(
    env: Env, tmp_path: Path, redis_server: RedisProcess
) -> None:
    settings = dashboard_settings(env, tmp_path, github_client_id=None,
                                  github_client_secret=None)
    with LiveServer(create_app(settings, redis_url=redis_server.url)) as server:
        answer = httpx.get(f"{server.url}/dashboard/login")
    assert answer.status_code == 503
    assert "GITHUB_CLIENT_ID" in answer.text and "GITHUB_CLIENT_SECRET" in answer.text
    assert f"{server.url}/dashboard/callback" in answer.text


@pytest.mark.parametrize("given", [
    None, "", "https://evil.test/dashboard", "//evil.test/dashboard", "/\\evil.test",
    "/setup", "/dashboard\r\nSet-Cookie: x=1", "/dashboard//evil.test",
])
def test_after_signing_in_only_dashboard_pages_are_gone_to(given: str | None) -> None:
    assert _safe_next(given) == "/dashboard"


def test_a_dashboard_path_is_kept() -> None:
    assert _safe_next("/dashboard/runs/abc?x=1") == "/dashboard/runs/abc?x=1"


async def test_the_dashboard_can_be_kept_to_those_who_may_steer_runs(
    env: Env, tmp_path: Path, redis_server: RedisProcess, redis: aioredis.Redis
) -> None:
    # On a public repository everyone reads; a team can show runs to writers only.
    run = await recorded(redis, env)
    settings = dashboard_settings(env, tmp_path, conductor_dashboard_permission="write")
    with LiveServer(create_app(settings, redis_url=redis_server.url)) as server:
        env.state.set_callback_urls([f"{server.url}/dashboard/callback"])
        for login, shown in (("rita", False), ("alice", True)):
            with httpx.Client(base_url=server.url, timeout=10) as browser:
                sign_in(browser, env, login)
                assert (run.id in browser.get("/dashboard").text) is shown, login
                assert run_page(browser, run).status_code == (200 if shown else 404)
