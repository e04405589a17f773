"""The emulator's stored objects: flat dataclasses that serialise to JSON as they are.

Objects refer to each other by id or login, never by reference, so the whole state can be
written to ``state.json`` with :func:`dataclasses.asdict` and read back with ``Cls(**d)``.
Timestamps are epoch seconds on the emulator's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("none", "read", "triage", "write", "maintain", "admin")


def role_rank(role: str | None) -> int:
    return ROLES.index(role) if role in ROLES else 0


@dataclass
class AppRecord:
    id: int
    slug: str
    name: str
    node_id: str
    owner: str
    client_id: str
    client_secret: str
    webhook_secret: str | None
    permissions: dict[str, str]
    events: list[str]
    created_at: float
    bot_id: int
    pem_path: str | None = None  # relative to the work dir; None for apps without a key
    description: str | None = None
    external_url: str = ""
    # "Callback URL"s of the App's registration (the manifest's ``callback_urls``): where the
    # OAuth web flow may send a signed-in user back with a code; the first is the default.
    callback_urls: list[str] = field(default_factory=list)

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


@dataclass
class Account:
    login: str
    id: int
    node_id: str
    type: str  # "User" | "Organization" | "Bot"
    name: str | None = None
    email: str | None = None
    token: str | None = None  # a user's personal token (``ghp_...``)
    created_at: float = 0.0


@dataclass
class Installation:
    id: int
    app_id: int
    account: str
    permissions: dict[str, str]
    repository_selection: str  # "all" | "selected"
    repository_ids: list[int]
    events: list[str]
    created_at: float
    updated_at: float
    suspended_at: float | None = None


@dataclass
class Token:
    token: str
    kind: str  # "installation" | "user"
    expires_at: float | None
    permissions: dict[str, str]
    installation_id: int | None = None
    user: str | None = None
    repository_ids: list[int] | None = None  # down-scoped repositories; None = all it can see
    app_id: int | None = None  # the App a user access token (``ghu_``) was issued through


@dataclass
class Repo:
    id: int
    node_id: str
    owner: str
    name: str
    default_branch: str
    private: bool
    created_at: float
    updated_at: float
    pushed_at: float
    description: str | None = None
    collaborators: dict[str, str] = field(default_factory=dict)  # login -> role
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class BranchProtection:
    """Protection of one branch (by exact name); only required status checks are emulated."""

    id: int
    repo_id: int
    branch: str
    created_at: float
    updated_at: float
    contexts: list[str] = field(default_factory=list)  # required status check contexts
    strict: bool = False  # the branch must be up to date with the base before merging


@dataclass
class Label:
    id: int
    node_id: str
    repo_id: int
    name: str
    color: str
    description: str | None = None
    default: bool = False


@dataclass
class Issue:
    """An issue, or the issue half of a pull request (``is_pull``): title, body, labels, state."""

    id: int
    node_id: str
    repo_id: int
    number: int
    title: str
    body: str | None
    user: str
    created_at: float
    updated_at: float
    state: str = "open"
    state_reason: str | None = None
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    locked: bool = False
    closed_at: float | None = None
    closed_by: str | None = None
    app_id: int | None = None  # performed_via_github_app
    is_pull: bool = False


@dataclass
class Comment:
    id: int
    node_id: str
    repo_id: int
    issue_number: int
    body: str
    user: str
    created_at: float
    updated_at: float
    app_id: int | None = None


@dataclass
class Reaction:
    id: int
    node_id: str
    repo_id: int
    subject: str  # "issue" | "comment"
    subject_id: int
    content: str
    user: str
    created_at: float


@dataclass
class PullRequest:
    id: int
    node_id: str
    repo_id: int
    number: int
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    draft: bool = False
    merged: bool = False
    merged_at: float | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    requested_reviewers: list[str] = field(default_factory=list)
    maintainer_can_modify: bool = False


@dataclass
class CheckSuite:
    id: int
    node_id: str
    repo_id: int
    head_sha: str
    head_branch: str | None
    app_id: int
    created_at: float
    updated_at: float
    status: str = "queued"
    conclusion: str | None = None
    before: str | None = None
    after: str | None = None


@dataclass
class CheckRun:
    id: int
    node_id: str
    repo_id: int
    check_suite_id: int
    app_id: int
    name: str
    head_sha: str
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    external_id: str | None = None
    details_url: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CommitStatus:
    id: int
    node_id: str
    repo_id: int
    sha: str
    state: str
    context: str
    creator: str
    created_at: float
    updated_at: float
    description: str | None = None
    target_url: str | None = None


@dataclass
class Workflow:
    id: int
    node_id: str
    repo_id: int
    name: str
    path: str
    created_at: float
    state: str = "active"


@dataclass
class WorkflowRun:
    id: int
    node_id: str
    repo_id: int
    workflow_id: int
    name: str
    head_sha: str
    head_branch: str | None
    event: str
    run_number: int
    check_suite_id: int
    actor: str
    created_at: float
    updated_at: float
    run_started_at: float
    display_title: str
    status: str = "queued"
    conclusion: str | None = None
    run_attempt: int = 1


@dataclass
class Job:
    id: int
    node_id: str
    repo_id: int
    run_id: int
    run_attempt: int
    name: str
    created_at: float
    check_run_id: int
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=lambda: ["ubuntu-latest"])
    runner_name: str | None = None
    log_key: str = ""  # the secret in the job's log download URL


@dataclass
class Fault:
    """Misbehave on requests matching ``method`` and the ``path`` glob, ``count`` times."""

    id: int
    kind: str  # "status" | "secondary_rate_limit" | "primary_rate_limit" | "validation"
    #           | "graphql_error" | "delay" | "drop"
    method: str = "*"
    path: str = "*"
    count: int | None = 1  # None = until cleared
    status: int | None = None
    delay: float = 0.0
    retry_after: int | None = 60  # secondary_rate_limit: None sends no retry-after
    message: str | None = None
    hits: int = 0


@dataclass
class ManifestCode:
    code: str
    manifest: dict[str, Any]
    owner: str
    used: bool = False


@dataclass
class OAuthCode:
    """A code the OAuth web flow put on a redirect: single use, short-lived, and good only
    for the App, user and redirect URI it was issued for."""

    code: str
    client_id: str
    user: str
    redirect_uri: str
    expires_at: float
    used: bool = False


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    status: int  # 0 when the connection was dropped
    login: str | None
    at: float
    fault: str | None = None
    auth: str | None = None  # the caller's kind: installation, user, app, anonymous
