"""A renamed repository: same id, new name, and the old name redirects the way GitHub's does."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.emulators.github import GitHubState
from tests.emulators.github.gitrepo import git_env
from tests.emulators.github.testing import Env, running_emulator


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        env.state.rename_repo("acme/widgets", "gadgets", by="alice")
        yield env


def bearer(env: Env) -> dict[str, str]:
    token = env.state.create_installation_token(env.installation.id).token
    return {"Authorization": f"token {token}", "Accept": "application/vnd.github+json"}


def test_the_old_name_redirects_reads_permanently_and_writes_temporarily(gh: Env) -> None:
    repo_id = gh.repo.id
    with httpx.Client(base_url=gh.url, headers=bearer(gh)) as http:
        moved = http.get("/repos/acme/widgets/issues", params={"state": "all"})
        assert moved.status_code == 301
        target = f"{gh.url}/repositories/{repo_id}/issues?state=all"
        assert moved.headers["location"] == target
        assert moved.json()["message"] == "Moved Permanently"
        assert moved.json()["url"] == target

        write = http.post("/repos/acme/widgets/issues", json={"title": "Still here"})
        assert write.status_code == 307
        assert write.headers["location"] == f"{gh.url}/repositories/{repo_id}/issues"

        current = http.get("/repos/acme/gadgets")
        assert current.status_code == 200 and current.json()["full_name"] == "acme/gadgets"
        by_id = http.get(f"/repositories/{repo_id}")
        assert by_id.status_code == 200 and by_id.json()["id"] == repo_id


def test_githubkit_follows_the_redirects_with_method_and_body(gh: Env) -> None:
    client = gh.installation_client()
    repo = client.rest.repos.get("acme", "widgets").parsed_data
    assert (repo.id, repo.full_name) == (gh.repo.id, "acme/gadgets")
    issue = client.rest.issues.create("acme", "widgets", title="Filed under the old name")
    assert issue.status_code == 201
    [stored] = [i for i in gh.state.issues.values() if i.title == "Filed under the old name"]
    assert stored.repo_id == gh.repo.id
    assert issue.parsed_data.repository_url.endswith("/repos/acme/gadgets")


def test_a_caller_who_cannot_see_the_repository_gets_no_redirect(gh: Env) -> None:
    with httpx.Client(base_url=gh.url) as anonymous:
        assert anonymous.get("/repos/acme/widgets").status_code == 404
    mallory = {"Authorization": f"token {gh.state.user_token('mallory')}"}
    with httpx.Client(base_url=gh.url, headers=mallory) as http:
        assert http.get("/repos/acme/widgets").status_code == 404
    with httpx.Client(base_url=gh.url, headers={"Authorization": "token ghs_bad"}) as http:
        assert http.get("/repos/acme/widgets").status_code == 401


def test_git_clones_and_pushes_through_the_old_url(gh: Env, tmp_path: Path) -> None:
    alice = gh.state.as_user("alice")
    work = tmp_path / "clone"
    cloned = alice.git("clone", "--quiet", f"{gh.url}/acme/widgets.git", str(work))
    assert cloned.returncode == 0, cloned.stderr
    (work / "NOTES.md").write_text("notes\n")
    for args in (("add", "NOTES.md"), ("commit", "-q", "-m", "Add notes")):
        assert alice.git(*args, cwd=work).returncode == 0
    pushed = alice.git("push", "-q", "origin", "HEAD:refs/heads/notes", cwd=work)
    assert pushed.returncode == 0, pushed.stderr
    assert gh.state.branch_sha("acme/gadgets", "notes") is not None
    [event] = gh.state.events_named("push")
    assert event["repository"]["full_name"] == "acme/gadgets"

    stranger = subprocess.run(["git", "ls-remote", f"{gh.url}/acme/widgets.git"],
                              capture_output=True, text=True, env=git_env(tmp_path), check=False)
    assert stranger.returncode != 0  # private: no redirect, no hint of the new name
    assert "gadgets" not in stranger.stderr


def test_the_rename_is_announced_and_a_new_repository_can_take_the_old_name(
    gh: Env, tmp_path: Path
) -> None:
    [renamed] = gh.state.events_named("repository", "renamed")
    assert renamed["changes"] == {"repository": {"name": {"from": "widgets"}}}
    assert renamed["repository"]["full_name"] == "acme/gadgets"
    assert renamed["sender"]["login"] == "alice"

    reloaded = GitHubState(gh.state.workdir)
    assert reloaded.find_moved("acme", "widgets") is not None  # the redirect survives a restart

    newcomer = gh.state.create_repo("acme/widgets", files={"README.md": "# New\n"})
    with httpx.Client(base_url=gh.url, headers=bearer(gh)) as http:
        answer = http.get("/repos/acme/widgets")
        assert answer.status_code == 200 and answer.json()["id"] == newcomer.id


def test_a_repository_is_found_by_its_id_only_by_those_who_may_see_it(gh: Env) -> None:
    # GET /repositories/{id} answers as GET /repos/{owner}/{repo} does for its name now, and
    # as GitHub does for a private repository: 404 to a caller who cannot see it.
    secret = gh.state.create_repo("acme/secret", files={"README.md": "hush\n"})
    elsewhere = gh.state.create_repo("umbrella/tools", files={"README.md": "x\n"})
    with httpx.Client(base_url=gh.url, headers=bearer(gh)) as http:
        found = http.get(f"/repositories/{secret.id}")
        assert found.status_code == 200 and found.json()["full_name"] == "acme/secret"
        level = http.get(f"/repositories/{gh.repo.id}/collaborators/rita/permission")
        assert level.status_code == 200 and level.json()["permission"] == "read"
        for refused in (elsewhere.id, 987654321):  # not the installation's; no such id
            answer = http.get(f"/repositories/{refused}")
            assert answer.status_code == 404 and answer.json()["message"] == "Not Found"
    rita = {"Authorization": f"token {gh.state.user_token('rita')}"}
    with httpx.Client(base_url=gh.url, headers=rita) as http:
        assert http.get(f"/repositories/{gh.repo.id}").json()["full_name"] == "acme/gadgets"
        assert http.get(f"/repositories/{secret.id}").status_code == 404
    with httpx.Client(base_url=gh.url) as anonymous:
        assert anonymous.get(f"/repositories/{secret.id}").status_code == 404

    gh.state.remove_repositories(gh.installation.id, ["acme/secret"])
    with httpx.Client(base_url=gh.url, headers=bearer(gh)) as http:
        assert http.get(f"/repositories/{secret.id}").status_code == 404
