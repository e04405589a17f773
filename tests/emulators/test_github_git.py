"""Real git over smart HTTP: clone, fetch, push, authentication and the push hooks."""

from __future__ import annotations

import base64
import gzip
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from githubkit.exception import RequestFailed

from tests.emulators.github import ZERO_SHA, PushRejected
from tests.emulators.github.gitrepo import git_env
from tests.emulators.github.testing import Env, running_emulator

NO_WORKFLOWS = {
    "metadata": "read",
    "contents": "write",
    "pull_requests": "write",
    "issues": "write",
}


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


def git(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=git_env(cwd or Path.cwd()),
        check=False,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc


def token_url(env: Env, token: str) -> str:
    return env.url.replace("http://", f"http://x-access-token:{token}@") + "/acme/widgets.git"


def test_clone_push_fetch_with_installation_token(gh: Env, tmp_path: Path) -> None:
    pushes: list[tuple[str, str, str, str, str]] = []
    gh.state.on_push(
        lambda repo, ref, before, after, pusher: pushes.append(
            (repo.full_name, ref, before, after, pusher)
        )
    )
    token = gh.state.create_installation_token(gh.installation.id).token
    work = tmp_path / "clone"
    git("clone", "--quiet", token_url(gh, token), str(work))
    assert (work / "src/widgets/core.py").read_text().startswith("def add")

    git("checkout", "-q", "-b", "conductor/issue-1", cwd=work)
    (work / "NOTES.md").write_text("notes\n")
    git("add", "NOTES.md", cwd=work)
    git("commit", "-q", "-m", "Add notes", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    git("push", "-q", "origin", "conductor/issue-1", cwd=work)

    assert pushes == [
        ("acme/widgets", "refs/heads/conductor/issue-1", ZERO_SHA, sha, gh.state.app.bot_login)
    ]
    [event] = gh.state.events_named("push")
    assert event["after"] == sha and event["created"] is True
    assert [c["message"] for c in event["commits"]] == ["Add notes"]
    assert event["commits"][0]["added"] == ["NOTES.md"]
    assert event["installation"]["id"] == gh.installation.id

    client = gh.installation_client()
    ref = client.rest.git.get_ref("acme", "widgets", "heads/conductor/issue-1").parsed_data
    assert ref.object_.sha == sha
    commit = client.rest.git.get_commit("acme", "widgets", sha).parsed_data
    assert commit.message == "Add notes"

    # Someone else moves main; fetch sees it.
    new_main = gh.state.commit_files("acme/widgets", "main", {"CHANGELOG": "1.1\n"}, "Bump")
    git("fetch", "-q", "origin", cwd=work)
    assert git("rev-parse", "origin/main", cwd=work).stdout.strip() == new_main


def test_clone_with_extra_header(gh: Env, tmp_path: Path) -> None:
    token = gh.state.create_installation_token(gh.installation.id).token
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    work = tmp_path / "clone"
    git(
        "-c",
        f"http.extraHeader=Authorization: Basic {basic}",
        "clone",
        "--quiet",
        f"{gh.url}/acme/widgets.git",
        str(work),
    )
    assert (work / "README.md").exists()


def test_clone_refused_without_valid_token(gh: Env, tmp_path: Path) -> None:
    anonymous = git(
        "clone", "--quiet", f"{gh.url}/acme/widgets.git", str(tmp_path / "a"), check=False
    )
    assert anonymous.returncode != 0
    response = httpx.get(f"{gh.url}/acme/widgets.git/info/refs?service=git-upload-pack")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="GitHub"'
    bad = git("clone", "--quiet", token_url(gh, "ghs_wrong"), str(tmp_path / "b"), check=False)
    assert bad.returncode != 0
    gh.state.advance_clock(7200)
    expired = gh.state.create_installation_token(gh.installation.id, ttl=-1).token
    late = git("clone", "--quiet", token_url(gh, expired), str(tmp_path / "c"), check=False)
    assert late.returncode != 0


def test_read_only_user_cannot_push(gh: Env) -> None:
    with pytest.raises(PushRejected) as info:
        gh.state.as_user("rita").push("acme/widgets", "rita-branch", {"a.txt": "a"})
    assert "403" in info.value.stderr or "denied" in info.value.stderr
    assert gh.state.branch_sha("acme/widgets", "rita-branch") is None
    sha = gh.state.as_user("alice").push("acme/widgets", "alice-branch", {"a.txt": "a"})
    assert gh.state.branch_sha("acme/widgets", "alice-branch") == sha


def test_installation_without_contents_write_cannot_push(tmp_path: Path) -> None:
    with running_emulator(tmp_path, permissions={"metadata": "read", "contents": "read"}) as env:
        token = env.state.create_installation_token(env.installation.id).token
        work = tmp_path / "clone"
        git("clone", "--quiet", token_url(env, token), str(work))
        (work / "x.txt").write_text("x")
        git("add", "x.txt", cwd=work)
        git("commit", "-q", "-m", "x", cwd=work)
        result = git("push", "origin", "HEAD:refs/heads/x", cwd=work, check=False)
        assert result.returncode != 0
        assert "403" in result.stderr or "denied" in result.stderr


def test_workflow_push_needs_workflows_permission(tmp_path: Path) -> None:
    with running_emulator(tmp_path, permissions=NO_WORKFLOWS) as env:
        token = env.state.create_installation_token(env.installation.id).token
        work = tmp_path / "clone"
        git("clone", "--quiet", token_url(env, token), str(work))
        git("checkout", "-q", "-b", "ci-change", cwd=work)
        (work / ".github/workflows/ci.yml").write_text("name: Changed\n")
        git("commit", "-q", "-am", "Change CI", cwd=work)
        result = git("push", "origin", "ci-change", cwd=work, check=False)
        assert result.returncode != 0
        assert (
            "refusing to allow a GitHub App to create or update workflow "
            "`.github/workflows/ci.yml` without `workflows` permission"
        ) in result.stderr
        assert env.state.branch_sha("acme/widgets", "ci-change") is None
        assert env.state.events_named("push") == []

        # Ordinary files still push; and a user may change workflows.
        git("reset", "-q", "--hard", "origin/main", cwd=work)
        (work / "docs.md").write_text("docs\n")
        git("add", "docs.md", cwd=work)
        git("commit", "-q", "-m", "Docs", cwd=work)
        git("push", "-q", "origin", "ci-change", cwd=work)
        env.state.as_user("alice").push(
            "acme/widgets", "alice-ci", {".github/workflows/ci.yml": "name: New\n"}
        )

        # The same rule applies to moving a ref through REST.
        alice_sha = env.state.branch_sha("acme/widgets", "alice-ci")
        client = env.installation_client()
        with pytest.raises(RequestFailed) as info:
            client.rest.git.update_ref(
                "acme", "widgets", "heads/ci-change", sha=alice_sha, force=True
            )
        assert info.value.response.status_code == 403
        assert "without `workflows` permission" in info.value.response.json()["message"]


def test_push_to_pull_request_branch_synchronizes(gh: Env) -> None:
    alice = gh.state.as_user("alice")
    first = alice.push("acme/widgets", "feature", {"feature.txt": "1\n"}, "First")
    pull = alice.open_pull("acme/widgets", title="Feature", head="feature")
    assert pull.head_sha == first
    second = alice.push("acme/widgets", "feature", {"feature.txt": "2\n"}, "Second")
    [sync] = gh.state.events_named("pull_request", "synchronize")
    assert (sync["before"], sync["after"]) == (first, second)
    assert sync["pull_request"]["head"]["sha"] == second
    assert sync["sender"]["login"] == "alice"


def test_gzip_encoded_upload_pack_request(gh: Env) -> None:
    token = gh.state.create_installation_token(gh.installation.id).token
    head = gh.state.branch_sha("acme/widgets", "main")
    want = f"want {head}\n".encode()
    body = b"%04x" % (len(want) + 4) + want + b"0000" + b"0009done\n"
    response = httpx.post(
        f"{gh.url}/acme/widgets.git/git-upload-pack",
        content=gzip.compress(body),
        headers={
            "Authorization": "Basic " + base64.b64encode(f"x:{token}".encode()).decode(),
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-git-upload-pack-result"
    assert response.content.startswith(b"0008NAK\n")
    assert b"PACK" in response.content
