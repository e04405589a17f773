"""Helpers for tests that need a running emulator with a typical setup.

Use from a fixture::

    @pytest.fixture
    def gh(tmp_path):
        with running_emulator(tmp_path) as env:
            yield env
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from githubkit import AppAuthStrategy, GitHub, TokenAuthStrategy

from .records import Installation, Repo
from .server import GitHubServer
from .state import GitHubState

T = TypeVar("T")

SAMPLE_FILES = {
    "README.md": "# Widgets\n",
    "src/widgets/__init__.py": "VERSION = '1.0'\n",
    "src/widgets/core.py": "def add(a, b):\n    return a + b\n",
    ".github/workflows/ci.yml": (
        "name: CI\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
    ),
}


def fast(options: dict[str, Any]) -> dict[str, Any]:
    """githubkit options for a plain-HTTP loopback server: building a TLS context and an
    HTTP cache for every request costs ~20 ms and buys nothing here."""
    return {"ssl_verify": False, "http_cache": False, **options}


@dataclass
class Env:
    """A running emulator with ``acme/widgets``, the App installed on ``acme``, and users
    ``alice`` (write), ``tina`` (triage), ``rita`` (read) and ``mallory`` (none)."""

    state: GitHubState
    server: GitHubServer
    repo: Repo
    installation: Installation

    @property
    def url(self) -> str:
        return self.server.url

    def app_client(self, **options: Any) -> GitHub[Any]:
        return GitHub(
            AppAuthStrategy(self.state.app_id, self.state.private_key()),
            base_url=self.url,
            **fast(options),
        )

    def installation_client(
        self, installation_id: int | None = None, **options: Any
    ) -> GitHub[Any]:
        app = self.app_client(**options)
        return app.with_auth(app.auth.as_installation(installation_id or self.installation.id))

    def user_client(self, login: str, **options: Any) -> GitHub[Any]:
        return GitHub(
            TokenAuthStrategy(self.state.user_token(login)), base_url=self.url, **fast(options)
        )


@contextlib.contextmanager
def running_emulator(
    workdir: Path,
    *,
    permissions: dict[str, str] | None = None,
    files: dict[str, str | bytes] | None = None,
    **state_options: Any,
) -> Iterator[Env]:
    state = GitHubState(workdir / "github", **state_options)
    repo = state.create_repo("acme/widgets", files=files or SAMPLE_FILES)
    installation = state.install_app("acme", permissions=permissions)
    for login, role in (
        ("alice", "write"),
        ("tina", "triage"),
        ("rita", "read"),
        ("mallory", "none"),
    ):
        state.create_user(login, repos={"acme/widgets": role})
    with GitHubServer(state) as server:
        yield Env(state=state, server=server, repo=repo, installation=installation)


def wait_for(predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
