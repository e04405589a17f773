"""``GitHubState``: the whole emulated GitHub, on disk under one work dir."""

from __future__ import annotations

from pathlib import Path

from .accounts import DEFAULT_EVENTS, AccountsMixin
from .actions import ActionsMixin
from .auth import AuthMixin
from .checks import GITHUB_ACTIONS_APP_ID, GITHUB_ACTIONS_BOT_ID
from .faults import FaultsMixin
from .ids import random_hex
from .oauth import OAuthMixin
from .ratelimit import ContentLimiter, RateLimiter
from .records import AppRecord

DEFAULT_APP_PERMISSIONS = {
    "metadata": "read",
    "contents": "write",
    "issues": "write",
    "pull_requests": "write",
    "checks": "write",
    "statuses": "write",
    "actions": "write",
    "workflows": "write",
}

GITHUB_ACTIONS_PERMISSIONS = {
    "actions": "write",
    "checks": "write",
    "contents": "write",
    "metadata": "read",
    "pull_requests": "write",
    "statuses": "write",
}


class GitHubState(OAuthMixin, AccountsMixin, FaultsMixin, ActionsMixin, AuthMixin):
    """The emulated GitHub: one App (``app``), the ``github-actions`` App, accounts,
    repositories (bare git repos under ``workdir/git``), issues, pull requests, checks,
    statuses, workflow runs, faults; saved to ``workdir/state.json`` after every change and
    loaded again when a state is created on the same work dir.

    Events: :meth:`subscribe` (``callback(event_name, payload)``), :meth:`on_push`
    (``callback(repo, ref, before, after, pusher)``), :meth:`on_rerun`; all recorded in
    :attr:`events`.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        app_slug: str = "conductor-emulated",
        app_name: str | None = None,
        app_owner: str = "conductor-dev",
        app_permissions: dict[str, str] | None = None,
        app_events: list[str] | None = None,
        webhook_secret: str | None = None,
        app_callback_urls: list[str] | None = None,
        token_ttl: float = 3600.0,
        persist: bool = True,
    ) -> None:
        super().__init__(workdir, persist=persist)
        self.rate_limiter = RateLimiter()
        self.content_limiter = ContentLimiter()
        with self.transaction():
            if GITHUB_ACTIONS_APP_ID not in self.apps:
                self.ensure_account("github", "Organization")
                self._new_app(
                    slug="github-actions",
                    name="GitHub Actions",
                    owner="github",
                    permissions=GITHUB_ACTIONS_PERMISSIONS,
                    events=["check_run", "check_suite", "push", "workflow_dispatch"],
                    webhook_secret=None,
                    app_id=GITHUB_ACTIONS_APP_ID,
                    bot_id=GITHUB_ACTIONS_BOT_ID,
                    with_key=False,
                    description="Automate your workflow from idea to production",
                    external_url="https://help.github.com/en/actions",
                )
            if not self.app_id:
                self.token_ttl = token_ttl
                self.ensure_account(app_owner, "Organization")
                app = self._new_app(
                    slug=app_slug,
                    name=app_name or app_slug,
                    owner=app_owner,
                    permissions=dict(app_permissions or DEFAULT_APP_PERMISSIONS),
                    events=list(app_events or DEFAULT_EVENTS),
                    webhook_secret=webhook_secret or random_hex(32),
                    callback_urls=app_callback_urls,
                )
                self.app_id = app.id

    @property
    def github_actions(self) -> AppRecord:
        return self.apps[GITHUB_ACTIONS_APP_ID]

    @property
    def webhook_secret(self) -> str:
        return self.app.webhook_secret or ""
