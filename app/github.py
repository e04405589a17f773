"""All GitHub HTTP goes through here: App and installation clients, tokens, and retry policy.

Installation tokens live only in this process's memory (never Redis, which persists to disk)
and are refreshed five minutes before GitHub expires them. A rate limit is not slept through
inside a job: short waits are retried once in place, longer ones surface as `RateLimited` so
that the job is deferred and the worker slot freed. Given Redis, each installation's writes are
kept within GitHub's secondary limits by every worker together (`app.pacing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import certifi
import httpx
from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.exception import GitHubException, RateLimitExceeded, RequestError, RequestFailed
from githubkit.retry import RetryOption
from githubkit.throttling import BaseThrottler
from redis.asyncio import Redis

from app.pacing import WriteBudget
from app.settings import Settings

TOKEN_REFRESH_MARGIN = timedelta(minutes=5)
USER_AGENT = "conductor-github-app"
WARM_NAMESPACES = ("apps", "issues", "reactions", "repos", "pulls", "checks", "actions", "git")
WARM_MODELS = ("InstallationToken", "IssueComment", "Issue", "Reaction", "PullRequest",
               "PullRequestSimple", "GitRef", "CheckRun", "CheckSuite", "BasicError",
               "ValidationError", "RepositoryCollaboratorPermission", "WorkflowRun", "Job")


# GitHub: without `retry-after` or a reset time, wait at least a minute after a secondary
# rate limit. githubkit recognises one only by those headers, not by the message alone.
SECONDARY_LIMIT_WAIT = timedelta(minutes=1)


class RateLimited(Exception):
    """GitHub asked us to wait longer than is worth holding a worker slot for."""

    def __init__(self, retry_after: timedelta, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# GitHub's answers for an issue that can no longer be written on: locked to the App (403),
# deleted (404 or 410) or transferred away. Trying again would not help.
UNWRITABLE = frozenset({403, 404, 410})


class InstallationUnavailable(Exception):
    """GitHub would not give the App a token for the installation: it was suspended or
    uninstalled, or the App's own credentials are wrong. Retrying does not help."""


class RepositoryUnavailable(InstallationUnavailable):
    """GitHub would not make a token for one repository: the installation no longer has it
    (removed from the installation, deleted, or moved to another account)."""


@dataclass(frozen=True)
class RetryPolicy:
    """githubkit retry decision: brief waits in place, longer ones raise (the job defers)."""

    max_inline_wait: timedelta = timedelta(seconds=5)
    server_error_retries: int = 2
    server_error_backoff: float = 0.5

    def __call__(self, exc: GitHubException, retry_count: int) -> RetryOption:
        if isinstance(exc, RateLimitExceeded):
            if retry_count == 0 and exc.retry_after <= self.max_inline_wait:
                return RetryOption(True, exc.retry_after)
            return RetryOption(False)
        if (
            isinstance(exc, RequestFailed)
            and exc.response.status_code >= 500
            and retry_count < self.server_error_retries
            and not _creates(exc.response.raw_request)
        ):
            return RetryOption(True, timedelta(seconds=self.server_error_backoff * 2**retry_count))
        return RetryOption(False)


def _creates(request: httpx.Request) -> bool:
    """Whether sending `request` again could make a second thing (a comment, a check run, a
    pull request). GitHub sometimes answers 5xx for a write it did; such a request is not
    repeated in place. The job that sent it runs again instead, and finds what the first
    try made before it makes anything. GraphQL queries, and the mutations this App sends,
    are safe to repeat."""
    return request.method == "POST" and not request.url.path.endswith("/graphql")


WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


# Short waits for a write slot, taken one after another while other workers' writes go first
# (a burst under the one-a-second spacing), are waited in place up to this much in all. Each
# is a second or less, and deferring the job would not get its write out sooner; past this,
# the job is deferred like any other rate limit.
MAX_PACED_WAIT = 60.0


class PacedWrites(BaseThrottler):
    """githubkit's throttler for one installation's client: each write takes a slot in the
    installation's `WriteBudget` first. A wait longer than `max_inline_wait` (a minute or hour
    limit reached) raises `RateLimited` at once, so that the job is deferred; shorter waits are
    waited in place, up to `MAX_PACED_WAIT` in all. Reads go out at once."""

    def __init__(self, budget: WriteBudget, installation_id: int, *,
                 max_inline_wait: timedelta) -> None:
        self.budget = budget
        self.installation_id = installation_id
        self.max_inline_wait = max_inline_wait.total_seconds()

    @contextlib.asynccontextmanager
    async def async_acquire(self, request: httpx.Request) -> AsyncIterator[None]:
        if request.method in WRITE_METHODS:
            await self._take_slot()
        yield

    async def _take_slot(self) -> None:
        deadline = time.monotonic() + MAX_PACED_WAIT
        while (wait := await self.budget.reserve(self.installation_id)) > 0:
            if wait > self.max_inline_wait or time.monotonic() + wait > deadline:
                raise RateLimited(
                    timedelta(seconds=wait),
                    f"Conductor keeps installation {self.installation_id}'s GitHub writes to "
                    f"{self.budget.describe()} (GitHub's secondary rate limits); the next "
                    f"one may go in {wait:.0f} s",
                )
            await asyncio.sleep(wait)

    @contextlib.contextmanager
    def acquire(self, request: httpx.Request) -> Generator[None, Any, Any]:
        # The bot's GitHub calls are all asynchronous; a synchronous one cannot wait on Redis.
        raise RuntimeError("a paced GitHub client makes asynchronous calls only")
        yield  # pragma: no cover


@dataclass
class InstallationToken:
    token: str = field(repr=False)
    expires_at: datetime
    permissions: dict[str, str]

    def fresh(self, now: datetime) -> bool:
        return self.expires_at - TOKEN_REFRESH_MARGIN > now


class GitHubApp:
    """Builds clients for the App and its installations; caches installation tokens."""

    def __init__(self, settings: Settings, *, redis: Redis | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30.0) -> None:
        if settings.github_app_id is None or settings.github_private_key is None:
            raise ValueError("GITHUB_APP_ID and GITHUB_PRIVATE_KEY are required")
        self.api_url = str(settings.github_api_url).rstrip("/")
        self._app_id = settings.github_app_id
        self._private_key = settings.github_private_key
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        # Building a TLS context loads the CA bundle (~20 ms); one per process is enough.
        self._ssl = ssl.create_default_context(cafile=certifi.where())
        # By (installation, repository): git gets a token for the run's repository only.
        self._tokens: dict[tuple[int, int | None], InstallationToken] = {}
        self._locks: dict[tuple[int, int | None], asyncio.Lock] = {}
        # Without Redis (the web process, some tests) writes are not paced.
        self.writes = None if redis is None else WriteBudget(redis, settings.github_write_limits)

    def _client(self, auth: Any, throttler: BaseThrottler | None = None) -> GitHub[Any]:
        return GitHub(
            auth,
            base_url=self.api_url,
            user_agent=USER_AGENT,
            timeout=self._timeout,
            ssl_verify=self._ssl,
            http_cache=False,
            throttler=throttler,
            auto_retry=self._retry,
        )

    def app_client(self) -> GitHub[AppAuthStrategy]:
        return self._client(AppAuthStrategy(self._app_id, self._private_key.get_secret_value()))

    async def installation_token(self, installation_id: int,
                                 repository_id: int | None = None) -> InstallationToken:
        """A token for the installation, or with `repository_id` for that one repository
        (what git is given: a token that leaks from a clone reaches no other repository)."""
        key = (installation_id, repository_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.fresh(datetime.now(UTC)):
                return cached
            narrowed = {} if repository_id is None else {"repository_ids": [repository_id]}
            try:
                async with self.app_client() as github:
                    response = await github.rest.apps.async_create_installation_access_token(
                        installation_id, **narrowed
                    )
            except RequestFailed as exc:
                limited = rate_limited(exc)
                if limited is not None:
                    raise limited from exc
                if exc.response.status_code >= 500:
                    raise
                if repository_id is not None and exc.response.status_code == 422:
                    raise RepositoryUnavailable(describe(exc)) from exc
                # Suspended or uninstalled: no token of the installation's works any more.
                self.forget_token(installation_id)
                raise InstallationUnavailable(_token_refusal(installation_id, exc)) from exc
            data = response.parsed_data
            permissions = data.permissions.model_dump(exclude_none=True) if data.permissions else {}
            token = InstallationToken(
                token=data.token,
                expires_at=_timestamp(data.expires_at),
                permissions={k: str(v) for k, v in permissions.items()},
            )
            self._tokens[key] = token
            return token

    def warm_up(self) -> None:
        """Import what githubkit and httpx load lazily on the first request (the HTTP
        transport, the REST namespaces and the response models: about 0.25 s), so that a
        worker's first job does not pay for it. Best effort: nothing here is required."""
        client = self._client(TokenAuthStrategy("warm-up"))
        models: Any = None
        for namespace in WARM_NAMESPACES:
            rest = getattr(client.rest, namespace)
            if models is None:
                with contextlib.suppress(ImportError):
                    models = importlib.import_module(
                        type(rest).__module__.rsplit(".rest", 1)[0] + ".models")
        for module in ("httpcore", "anyio", "anyio._backends._asyncio"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
        for name in WARM_MODELS:
            with contextlib.suppress(AttributeError):
                getattr(models, name)

    def forget_token(self, installation_id: int, repository_id: int | None = None) -> None:
        """Drop a cached token (after GitHub said 401) so the next call fetches a new one;
        without `repository_id`, all of the installation's."""
        for key in list(self._tokens):
            if key[0] == installation_id and repository_id in (None, key[1]):
                del self._tokens[key]

    async def replaced_token(self, installation_id: int,
                             repository_id: int | None = None) -> str:
        """A new token in place of one GitHub no longer accepts (revoked, or expired by
        GitHub's clock)."""
        self.forget_token(installation_id, repository_id)
        return (await self.installation_token(installation_id, repository_id)).token

    @contextlib.asynccontextmanager
    async def installation(self, installation_id: int) -> AsyncIterator[GitHub[Any]]:
        """An installation client with one HTTP connection pool for the block's calls."""
        token = await self.installation_token(installation_id)
        paced = None
        if self.writes is not None and self.writes.enabled:
            paced = PacedWrites(self.writes, installation_id,
                                max_inline_wait=self._retry.max_inline_wait)
        try:
            async with self._client(TokenAuthStrategy(token.token), paced) as github:
                yield github
        except RequestFailed as exc:
            limited = rate_limited(exc)
            if limited is not None:
                raise limited from exc
            if exc.response.status_code == 401:
                self.forget_token(installation_id)
            raise


def rate_limited(exc: RequestFailed) -> RateLimited | None:
    """`exc` as a `RateLimited` if it is GitHub's primary or secondary rate limit."""
    if isinstance(exc, RateLimitExceeded):
        return RateLimited(exc.retry_after, describe(exc))
    code = exc.response.status_code
    if code == 429 or (code == 403 and "secondary rate limit" in _message(exc).lower()):
        return RateLimited(SECONDARY_LIMIT_WAIT, describe(exc))
    return None


def _message(exc: RequestFailed) -> str:
    """GitHub's `message` (and the messages of its `errors`) from an error answer."""
    try:
        body = exc.response.raw_response.json()
    except ValueError:
        return exc.response.raw_response.text.strip()[:200]
    if not isinstance(body, dict):
        return ""
    message = str(body.get("message") or "")
    details = [str(e.get("message") or " ".join(str(e[k]) for k in ("field", "code") if k in e))
               if isinstance(e, dict) else str(e) for e in body.get("errors") or []]
    details = [d for d in details if d]
    return f"{message} ({'; '.join(details)})" if details else message


def describe(exc: GitHubException) -> str:
    """What GitHub answered, for a person: status, request and GitHub's own message."""
    if isinstance(exc, RequestFailed):
        request = exc.response.raw_request
        message = _message(exc) or exc.response.raw_response.reason_phrase
        if "<html" in message.lower():  # a proxy's error page: its text says nothing
            message = exc.response.raw_response.reason_phrase
        return (f"GitHub answered {exc.response.status_code} to {request.method} "
                f"{request.url.path}: {message}")
    if isinstance(exc, RequestError):
        return f"no answer from GitHub: {type(exc.exc).__name__}: {exc.exc}"
    return f"{type(exc).__name__}: {exc}"


def _token_refusal(installation_id: int, exc: RequestFailed) -> str:
    code = exc.response.status_code
    said = describe(exc)
    if code == 401:
        return (f"{said}. GitHub did not accept the App's credentials: check GITHUB_APP_ID, "
                "the private key and this machine's clock")
    return (f"{said}. The App cannot act on installation {installation_id}: it was "
            "suspended or uninstalled. Unsuspend or reinstall the App, then comment "
            "`/agent retry`")


def _timestamp(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def remove_label(gh: Any, owner: str, name: str, number: int, label: str) -> None:
    """Remove `label` from an issue or pull request; one it does not have is fine."""
    try:
        await gh.rest.issues.async_remove_label(owner, name, number, label)
    except RequestFailed as exc:
        if exc.response.status_code != 404:
            raise


def items(response: Any) -> list[Any]:
    """`parsed_data` of a list endpoint. githubkit annotates these as `list[...]` inside
    classes that also define a method named `list`, which mypy cannot resolve."""
    data = response.parsed_data
    return list(data)


# --- signing a person in (the dashboard) ----------------------------------------------------


class SignInFailed(Exception):
    """GitHub would not say who signed in; the message is for that person."""


async def signed_in_login(http: httpx.AsyncClient, settings: Settings, code: str,
                          redirect_uri: str) -> str:
    """Who authorized the App: the code from GitHub's OAuth web flow exchanged for a user
    token (`POST {GITHUB_URL}/login/oauth/access_token`), then `GET /user` with it. The
    token is used for that one call and not kept."""
    if not settings.has_oauth_client or settings.github_client_secret is None:
        raise SignInFailed("GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET are not set")
    web = str(settings.github_url).rstrip("/")
    try:
        answer = await http.post(f"{web}/login/oauth/access_token", headers={
            "Accept": "application/json", "User-Agent": USER_AGENT}, data={
            "client_id": settings.github_client_id,
            "client_secret": settings.github_client_secret.get_secret_value(),
            "code": code, "redirect_uri": redirect_uri})
        body = answer.json() if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise SignInFailed(f"GitHub could not be reached at {web} ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise SignInFailed(f"GitHub answered {answer.status_code} to the sign-in")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        # GitHub answers 200 with `error` and `error_description` (bad_verification_code...).
        said = body.get("error_description") or body.get("error") or "no access token"
        raise SignInFailed(f"GitHub refused the sign-in: {said}")
    api = str(settings.github_api_url).rstrip("/")
    try:
        user = await http.get(f"{api}/user", headers={
            "Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28", "User-Agent": USER_AGENT})
        login = user.json().get("login") if user.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        raise SignInFailed(f"GitHub could not be reached at {api} ({type(exc).__name__})") from None
    if not isinstance(login, str) or not login:
        raise SignInFailed(f"GitHub answered {user.status_code} when asked who signed in")
    return login
