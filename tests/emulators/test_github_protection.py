"""Branch protection (required status checks) and the commits of a pull request, through
githubkit, every answer parsed with its typed model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from githubkit.exception import RequestFailed
from githubkit_schemas.latest import models

from tests.emulators.github import GitHubState, routes_pulls
from tests.emulators.github.errors import ApiError
from tests.emulators.github.state import DEFAULT_APP_PERMISSIONS
from tests.emulators.github.testing import Env, running_emulator

OWNER, REPO = "acme", "widgets"
CONTEXTS = ["lint", "test"]


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


@pytest.fixture
def admin_gh(tmp_path: Path) -> Iterator[Env]:
    """The App installed with ``administration: read`` on top of its usual permissions."""
    permissions = {**DEFAULT_APP_PERMISSIONS, "administration": "read"}
    with running_emulator(tmp_path, permissions=permissions) as env:
        yield env


def failure(call: Any, *args: Any, **kwargs: Any) -> Any:
    """The error response (githubkit's) of a call that must fail."""
    with pytest.raises(RequestFailed) as info:
        call(*args, **kwargs)
    return info.value.response


def test_unprotected_branch_answers_as_before(gh: Env) -> None:
    client = gh.installation_client()
    branch = client.rest.repos.get_branch(OWNER, REPO, "main").parsed_data
    assert isinstance(branch, models.BranchWithProtection)
    assert branch.protected is False
    assert branch.protection.enabled is False
    checks = branch.protection.required_status_checks
    assert checks is not None
    assert (checks.enforcement_level, checks.contexts, checks.checks) == ("off", [], [])
    assert branch.protection_url == f"{gh.url}/repos/acme/widgets/branches/main/protection"


def test_protected_branch_reports_its_required_checks(gh: Env) -> None:
    rule = gh.state.protect_branch("acme/widgets", "main", contexts=CONTEXTS)
    assert (rule.branch, rule.contexts, rule.strict) == ("main", CONTEXTS, False)
    for client in (gh.installation_client(), gh.user_client("rita")):
        branch = client.rest.repos.get_branch(OWNER, REPO, "main").parsed_data
        assert isinstance(branch, models.BranchWithProtection)
        assert branch.protected is True
        assert branch.protection.enabled is True
        checks = branch.protection.required_status_checks
        assert checks is not None
        assert checks.enforcement_level == "non_admins"
        assert checks.contexts == CONTEXTS
        assert [(c.context, c.app_id) for c in checks.checks] == [("lint", None), ("test", None)]

    # Other branches are not affected; protecting again replaces; unprotecting restores.
    gh.state.commit_files("acme/widgets", "feature", {"f.txt": "f"}, "f")
    client = gh.installation_client()
    assert client.rest.repos.get_branch(OWNER, REPO, "feature").parsed_data.protected is False
    gh.state.protect_branch(gh.repo, "main", contexts=["ci"], strict=True)
    assert len(gh.state.branch_protections) == 1
    branch = client.rest.repos.get_branch(OWNER, REPO, "main").parsed_data
    assert branch.protection.required_status_checks is not None
    assert branch.protection.required_status_checks.contexts == ["ci"]
    assert gh.state.unprotect_branch("acme/widgets", "main") is True
    assert gh.state.unprotect_branch("acme/widgets", "main") is False
    assert client.rest.repos.get_branch(OWNER, REPO, "main").parsed_data.protected is False


def test_protection_is_persisted(tmp_path: Path) -> None:
    state = GitHubState(tmp_path / "github")
    state.create_repo("acme/widgets", files={"a.txt": "a"})
    state.protect_branch("acme/widgets", "main", ["test"], strict=True)
    again = GitHubState(tmp_path / "github")
    rule = again.find_branch_protection(again.resolve_repo("acme/widgets"), "main")
    assert rule is not None and (rule.contexts, rule.strict) == (["test"], True)
    with pytest.raises(ApiError, match="Branch not found"):
        again.protect_branch("acme/widgets", "nope", ["test"])


def test_required_status_checks_need_administration_read(gh: Env) -> None:
    gh.state.protect_branch("acme/widgets", "main", contexts=CONTEXTS)
    client = gh.installation_client()
    refused = failure(client.rest.repos.get_status_checks_protection, OWNER, REPO, "main")
    assert refused.status_code == 403
    assert refused.json()["message"] == "Resource not accessible by integration"
    # A user needs the admin role.
    alice = gh.user_client("alice")
    refused = failure(alice.rest.repos.get_status_checks_protection, OWNER, REPO, "main")
    assert refused.status_code == 403


def test_required_status_checks(admin_gh: Env) -> None:
    client = admin_gh.installation_client()
    missing = failure(client.rest.repos.get_status_checks_protection, OWNER, REPO, "main")
    assert missing.status_code == 404
    assert missing.json()["message"] == "Branch not protected"
    models.BasicError.model_validate(missing.json())
    nope = failure(client.rest.repos.get_status_checks_protection, OWNER, REPO, "nope")
    assert nope.status_code == 404 and nope.json()["message"] == "Branch not found"

    admin_gh.state.protect_branch("acme/widgets", "main", contexts=CONTEXTS, strict=True)
    policy = client.rest.repos.get_status_checks_protection(OWNER, REPO, "main").parsed_data
    assert isinstance(policy, models.StatusCheckPolicy)
    url = f"{admin_gh.url}/repos/acme/widgets/branches/main/protection/required_status_checks"
    assert policy.url == url and policy.contexts_url == f"{url}/contexts"
    assert policy.strict is True
    assert policy.contexts == CONTEXTS
    assert [(c.context, c.app_id) for c in policy.checks] == [("lint", None), ("test", None)]

    # The repository owner (an admin) may read it too; slashes in branch names work.
    admin_gh.state.commit_files("acme/widgets", "release/1.x", {"r.txt": "r"}, "r")
    admin_gh.state.protect_branch("acme/widgets", "release/1.x", contexts=["ci"])
    policy = client.rest.repos.get_status_checks_protection(OWNER, REPO, "release/1.x").parsed_data
    assert policy.contexts == ["ci"] and policy.strict is False
    branch = client.rest.repos.get_branch(OWNER, REPO, "release/1.x").parsed_data
    assert branch.name == "release/1.x" and branch.protected is True


def test_admin_protection_endpoints(gh: Env) -> None:
    with httpx.Client(base_url=gh.url + "/_admin", timeout=30) as admin:
        path = "/repos/acme/widgets/branches/main/protection"
        put = admin.put(path, json={"contexts": CONTEXTS, "strict": False})
        assert put.status_code == 200
        policy = models.StatusCheckPolicy.model_validate(put.json())
        assert policy.contexts == CONTEXTS and policy.strict is False
        client = gh.installation_client()
        branch = client.rest.repos.get_branch(OWNER, REPO, "main").parsed_data
        assert branch.protected is True
        assert branch.protection.required_status_checks is not None
        assert branch.protection.required_status_checks.contexts == CONTEXTS

        assert admin.put(path, json={"contexts": "lint"}).status_code == 422
        assert admin.put("/repos/acme/widgets/branches/nope/protection").status_code == 404
        assert admin.delete(path).status_code == 204
        assert admin.delete(path).status_code == 404
        assert client.rest.repos.get_branch(OWNER, REPO, "main").parsed_data.protected is False


def test_status_event_marks_protected_branches(gh: Env) -> None:
    gh.state.protect_branch("acme/widgets", "main", contexts=["ci"])
    head = gh.state.branch_sha("acme/widgets", "main")
    assert head is not None
    gh.state.create_status("acme/widgets", head, "success", "ci")
    [payload] = gh.state.events_named("status")
    assert [(b["name"], b["protected"]) for b in payload["branches"]] == [("main", True)]


def test_pull_request_commits(gh: Env) -> None:
    state = gh.state
    base = state.branch_sha("acme/widgets", "main")
    shas = [
        state.commit_files("acme/widgets", "feature", {f"f{n}.txt": f"{n}\n"}, f"Step {n}")
        for n in range(5)
    ]
    # A commit on main after the branch point is not part of the pull request.
    state.commit_files("acme/widgets", "main", {"main.txt": "m\n"}, "On main")
    client = gh.installation_client()
    pull = client.rest.pulls.create(
        OWNER, REPO, title="Steps", head="feature", base="main"
    ).parsed_data

    commits = client.rest.pulls.list_commits(OWNER, REPO, pull.number).parsed_data
    assert all(isinstance(c, models.Commit) for c in commits)
    assert [c.sha for c in commits] == shas
    assert [c.commit.message for c in commits] == [f"Step {n}" for n in range(5)]
    assert [p.sha for p in commits[0].parents] == [base]
    assert "files" not in client.rest.pulls.list_commits(OWNER, REPO, pull.number).json()[0]

    page = client.rest.pulls.list_commits(OWNER, REPO, pull.number, per_page=2, page=2)
    assert [c.sha for c in page.parsed_data] == shas[2:4]
    link = page.headers["link"]
    assert 'rel="next"' in link and 'rel="prev"' in link and "page=3" in link
    everything = list(
        client.rest.paginate(
            client.rest.pulls.list_commits,
            owner=OWNER,
            repo=REPO,
            pull_number=pull.number,
            per_page=2,
        )
    )
    assert [c.sha for c in everything] == shas

    # Read access suffices; no access is a 404; an unknown pull request is a 404.
    rita = gh.user_client("rita")
    listed = rita.rest.pulls.list_commits(OWNER, REPO, pull.number).parsed_data
    assert [c.sha for c in listed] == shas
    mallory = gh.user_client("mallory")
    assert failure(mallory.rest.pulls.list_commits, OWNER, REPO, pull.number).status_code == 404
    assert failure(client.rest.pulls.list_commits, OWNER, REPO, 999).status_code == 404

    # After a squash merge the pull request still lists its own commits.
    client.rest.pulls.merge(OWNER, REPO, pull.number, merge_method="squash")
    after = client.rest.pulls.list_commits(OWNER, REPO, pull.number).parsed_data
    assert [c.sha for c in after] == shas


def test_pull_request_commits_are_capped(gh: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # GitHub lists at most 250 commits, the oldest; a smaller cap keeps the test quick.
    monkeypatch.setattr(routes_pulls, "PULL_COMMITS_LIMIT", 3)
    shas = [
        gh.state.commit_files("acme/widgets", "long", {"n.txt": f"{n}\n"}, f"Step {n}")
        for n in range(5)
    ]
    client = gh.installation_client()
    pull = client.rest.pulls.create(OWNER, REPO, title="Long", head="long", base="main")
    listed = client.rest.pulls.list_commits(OWNER, REPO, pull.parsed_data.number, per_page=2)
    assert [c.sha for c in listed.parsed_data] == shas[:2]
    assert "page=2" in listed.headers["link"]
    rest = client.rest.pulls.list_commits(OWNER, REPO, pull.parsed_data.number, page=2, per_page=2)
    assert [c.sha for c in rest.parsed_data] == shas[2:3]
    # The pull request itself still counts all of them.
    assert client.rest.pulls.get(OWNER, REPO, pull.parsed_data.number).parsed_data.commits == 5
