"""REST fidelity: every route through githubkit, every answer parsed with its typed model."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from githubkit import GitHub
from githubkit.exception import RequestFailed
from githubkit_schemas.latest import models

from tests.emulators.github.testing import Env, running_emulator

OWNER, REPO = "acme", "widgets"


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


@pytest.fixture
def client(gh: Env) -> GitHub[Any]:
    return gh.installation_client()


def status_of(call: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(RequestFailed) as info:
        call(*args, **kwargs)
    return info.value.response.status_code


def test_repository_branch_and_contents(gh: Env, client: GitHub[Any]) -> None:
    repo = client.rest.repos.get(OWNER, REPO).parsed_data
    assert isinstance(repo, models.FullRepository)
    assert repo.default_branch == "main"
    assert repo.clone_url == f"{gh.url}/acme/widgets.git"

    branch = client.rest.repos.get_branch(OWNER, REPO, "main").parsed_data
    assert isinstance(branch, models.BranchWithProtection)
    head = gh.state.branch_sha("acme/widgets", "main")
    assert branch.commit.sha == head

    content = client.rest.repos.get_content(
        OWNER, REPO, "src/widgets/core.py", ref="main"
    ).parsed_data
    assert isinstance(content, models.ContentFile)
    assert base64.b64decode(content.content).decode().startswith("def add")
    listing = client.rest.repos.get_content(OWNER, REPO, "src/widgets").parsed_data
    assert isinstance(listing, list)
    assert sorted(item.name for item in listing) == ["__init__.py", "core.py"]
    assert status_of(client.rest.repos.get_content, OWNER, REPO, "missing.txt") == 404
    assert status_of(client.rest.repos.get_branch, OWNER, REPO, "nope") == 404


def test_commits_trees_blobs(gh: Env, client: GitHub[Any]) -> None:
    head = gh.state.branch_sha("acme/widgets", "main")
    assert head is not None
    commit = client.rest.repos.get_commit(OWNER, REPO, "main").parsed_data
    assert isinstance(commit, models.Commit)
    assert commit.sha == head
    assert commit.files and {f.filename for f in commit.files} >= {"README.md"}
    assert commit.files[0].status == "added"

    git_commit = client.rest.git.get_commit(OWNER, REPO, head).parsed_data
    assert isinstance(git_commit, models.GitCommit)
    assert git_commit.message == "Initial commit"
    assert git_commit.parents == []

    tree = client.rest.git.get_tree(OWNER, REPO, git_commit.tree.sha, recursive="1").parsed_data
    assert isinstance(tree, models.GitTree)
    paths = {item.path: item for item in tree.tree}
    assert "src/widgets/core.py" in paths and paths["src"].type == "tree"
    flat = client.rest.git.get_tree(OWNER, REPO, git_commit.tree.sha).parsed_data
    assert "src/widgets/core.py" not in {item.path for item in flat.tree}

    blob = client.rest.git.get_blob(OWNER, REPO, paths["README.md"].sha).parsed_data
    assert isinstance(blob, models.Blob)
    assert base64.b64decode(blob.content) == b"# Widgets\n"
    assert status_of(client.rest.git.get_blob, OWNER, REPO, "0" * 40) == 404
    assert status_of(client.rest.repos.get_commit, OWNER, REPO, "f" * 40) == 422

    created = client.rest.git.create_blob(
        OWNER, REPO, content="hello", encoding="utf-8"
    ).parsed_data
    assert isinstance(created, models.ShortBlob)


def test_git_refs_crud(gh: Env, client: GitHub[Any]) -> None:
    head = gh.state.branch_sha("acme/widgets", "main")
    assert head is not None
    ref = client.rest.git.get_ref(OWNER, REPO, "heads/main").parsed_data
    assert isinstance(ref, models.GitRef)
    assert ref.object_.sha == head

    created = client.rest.git.create_ref(OWNER, REPO, ref="refs/heads/topic", sha=head)
    assert created.status_code == 201 and created.parsed_data.ref == "refs/heads/topic"
    again = status_of(client.rest.git.create_ref, OWNER, REPO, ref="refs/heads/topic", sha=head)
    assert again == 422

    newer = gh.state.commit_files("acme/widgets", "other", {"x.txt": "x"}, "x")
    updated = client.rest.git.update_ref(OWNER, REPO, "heads/topic", sha=newer).parsed_data
    assert updated.object_.sha == newer
    assert status_of(client.rest.git.update_ref, OWNER, REPO, "heads/topic", sha=head) == 422
    forced = client.rest.git.update_ref(OWNER, REPO, "heads/topic", sha=head, force=True)
    assert forced.parsed_data.object_.sha == head

    assert client.rest.git.delete_ref(OWNER, REPO, "heads/topic").status_code == 204
    assert status_of(client.rest.git.get_ref, OWNER, REPO, "heads/topic") == 404
    pushes = [p for p in gh.state.events_named("push") if p["ref"] == "refs/heads/topic"]
    assert [p["created"] for p in pushes] == [True, False, False, False]
    assert pushes[-1]["deleted"] is True


def test_issues_comments_labels_reactions(gh: Env, client: GitHub[Any]) -> None:
    issue = client.rest.issues.create(
        OWNER, REPO, title="Broken", body="It broke", labels=["bug"]
    ).parsed_data
    assert isinstance(issue, models.Issue)
    assert issue.user is not None and issue.user.login == gh.state.app.bot_login
    assert issue.performed_via_github_app is not None

    fetched = client.rest.issues.get(OWNER, REPO, issue.number).parsed_data
    assert fetched.title == "Broken"
    listed = client.rest.issues.list_for_repo(OWNER, REPO, labels="bug").parsed_data
    assert [i.number for i in listed] == [issue.number]

    updated = client.rest.issues.update(OWNER, REPO, issue.number, title="Broken badly").parsed_data
    assert updated.title == "Broken badly"

    labels = client.rest.issues.add_labels(OWNER, REPO, issue.number, labels=["ready"]).parsed_data
    assert {label.name for label in labels} == {"bug", "ready"}
    assert all(isinstance(label, models.Label) for label in labels)
    left = client.rest.issues.remove_label(OWNER, REPO, issue.number, "bug").parsed_data
    assert [label.name for label in left] == ["ready"]
    assert status_of(client.rest.issues.remove_label, OWNER, REPO, issue.number, "bug") == 404
    on_issue = client.rest.issues.list_labels_on_issue(OWNER, REPO, issue.number).parsed_data
    assert [label.name for label in on_issue] == ["ready"]

    repo_labels = client.rest.issues.list_labels_for_repo(OWNER, REPO, per_page=100).parsed_data
    assert "ready" in {label.name for label in repo_labels}
    new_label = client.rest.issues.create_label(OWNER, REPO, name="needs plan", color="00ff00")
    assert new_label.status_code == 201 and new_label.parsed_data.color == "00ff00"
    assert status_of(client.rest.issues.create_label, OWNER, REPO, name="needs plan") == 422

    comment = client.rest.issues.create_comment(OWNER, REPO, issue.number, body="On it").parsed_data
    assert isinstance(comment, models.IssueComment)
    edited = client.rest.issues.update_comment(OWNER, REPO, comment.id, body="On it!").parsed_data
    assert edited.body == "On it!"
    assert client.rest.issues.get_comment(OWNER, REPO, comment.id).parsed_data.id == comment.id
    comments = client.rest.issues.list_comments(OWNER, REPO, issue.number).parsed_data
    assert [c.body for c in comments] == ["On it!"]
    assert len(client.rest.issues.list_comments_for_repo(OWNER, REPO).parsed_data) == 1

    reaction = client.rest.reactions.create_for_issue(OWNER, REPO, issue.number, content="eyes")
    assert reaction.status_code == 201
    assert isinstance(reaction.parsed_data, models.Reaction)
    again = client.rest.reactions.create_for_issue(OWNER, REPO, issue.number, content="eyes")
    assert again.status_code == 200 and again.parsed_data.id == reaction.parsed_data.id
    on_comment = client.rest.reactions.create_for_issue_comment(
        OWNER, REPO, comment.id, content="rocket"
    )
    assert on_comment.status_code == 201
    assert [
        r.content
        for r in client.rest.reactions.list_for_issue(OWNER, REPO, issue.number).parsed_data
    ] == ["eyes"]
    on_comments = client.rest.reactions.list_for_issue_comment(OWNER, REPO, comment.id)
    assert len(on_comments.parsed_data) == 1
    assert client.rest.issues.get(OWNER, REPO, issue.number).parsed_data.reactions.eyes == 1

    closed = client.rest.issues.update(OWNER, REPO, issue.number, state="closed").parsed_data
    assert closed.state == "closed" and closed.state_reason == "completed"
    assert client.rest.issues.list_for_repo(OWNER, REPO).parsed_data == []
    assert len(client.rest.issues.list_for_repo(OWNER, REPO, state="closed").parsed_data) == 1
    assert client.rest.issues.delete_comment(OWNER, REPO, comment.id).status_code == 204
    assert status_of(client.rest.issues.get, OWNER, REPO, 999) == 404


def test_pull_requests(gh: Env, client: GitHub[Any]) -> None:
    gh.state.commit_files(
        "acme/widgets",
        "feature",
        {"src/widgets/core.py": "def add(a, b):\n    return b + a\n"},
        "Swap operands",
        author="alice",
    )
    created = client.rest.pulls.create(
        OWNER, REPO, title="Swap", head="feature", base="main", body="Closes #9", draft=True
    )
    assert created.status_code == 201
    pull = created.parsed_data
    assert isinstance(pull, models.PullRequest)
    assert pull.draft and pull.node_id and pull.head.ref == "feature"
    assert pull.mergeable_state == "draft"

    got = client.rest.pulls.get(OWNER, REPO, pull.number).parsed_data
    assert got.commits == 1 and got.changed_files == 1 and got.additions == 1

    listed = client.rest.pulls.list(OWNER, REPO, head="acme:feature", base="main").parsed_data
    assert [p.number for p in listed] == [pull.number]
    assert all(isinstance(p, models.PullRequestSimple) for p in listed)
    assert client.rest.pulls.list(OWNER, REPO, head="acme:other").parsed_data == []
    assert client.rest.pulls.list(OWNER, REPO, state="closed").parsed_data == []

    files = client.rest.pulls.list_files(OWNER, REPO, pull.number).parsed_data
    assert [(f.filename, f.status) for f in files] == [("src/widgets/core.py", "modified")]
    assert files[0].patch and "+    return b + a" in files[0].patch

    reviewers = client.rest.pulls.request_reviewers(OWNER, REPO, pull.number, reviewers=["alice"])
    assert reviewers.status_code == 201
    assert [u.login for u in reviewers.parsed_data.requested_reviewers or []] == ["alice"]
    assert (
        status_of(
            client.rest.pulls.request_reviewers, OWNER, REPO, pull.number, reviewers=["nobody"]
        )
        == 422
    )

    edited = client.rest.pulls.update(OWNER, REPO, pull.number, title="Swap operands").parsed_data
    assert edited.title == "Swap operands"

    # A draft cannot be merged; GitHub answers 405.
    assert status_of(client.rest.pulls.merge, OWNER, REPO, pull.number) == 405
    gh.state.mark_ready_for_review(
        gh.state.principal_for_user("alice"), "acme/widgets", pull.number
    )
    merged = client.rest.pulls.merge(OWNER, REPO, pull.number, merge_method="squash").parsed_data
    assert isinstance(merged, models.PullRequestMergeResult)
    assert merged.merged
    assert gh.state.branch_sha("acme/widgets", "main") == merged.sha
    response = client.rest.pulls.get(OWNER, REPO, pull.number)
    after = response.parsed_data
    assert after.merged and after.state == "closed"
    assert response.json()["merge_commit_sha"] == merged.sha
    assert client.rest.pulls.check_if_merged(OWNER, REPO, pull.number).status_code == 204
    assert status_of(client.rest.pulls.merge, OWNER, REPO, pull.number) == 405


def test_pull_request_validation(gh: Env, client: GitHub[Any]) -> None:
    token = gh.state.create_installation_token(gh.installation.id).token
    response = httpx.post(
        f"{gh.url}/repos/acme/widgets/pulls",
        headers={"Authorization": f"token {token}"},
        json={"title": "x", "head": "no-such-branch", "base": "main"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["message"] == "Validation Failed"
    assert body["errors"] == [{"resource": "PullRequest", "field": "head", "code": "invalid"}]
    assert isinstance(models.ValidationError.model_validate(body), models.ValidationError)

    gh.state.commit_files("acme/widgets", "feature", {"new.txt": "n"}, "new")
    client.rest.pulls.create(OWNER, REPO, title="one", head="feature", base="main")
    with pytest.raises(RequestFailed) as info:
        client.rest.pulls.create(OWNER, REPO, title="two", head="feature", base="main")
    assert info.value.response.status_code == 422
    assert info.value.response.json()["errors"][0]["message"] == (
        "A pull request already exists for acme:feature."
    )
    gh.state.commit_files("acme/widgets", "empty", {}, "nothing", base="main")
    with pytest.raises(RequestFailed) as info:
        client.rest.pulls.create(OWNER, REPO, title="no", head="main", base="main")
    assert info.value.response.status_code == 422


def test_bodies_longer_than_github_takes_are_refused(gh: Env, client: GitHub[Any]) -> None:
    issue = client.rest.issues.create(OWNER, REPO, title="Long").parsed_data
    longest = "x" * 65_536
    comment = client.rest.issues.create_comment(OWNER, REPO, issue.number, body=longest)
    calls = [
        lambda body: client.rest.issues.create_comment(OWNER, REPO, issue.number, body=body),
        lambda body: client.rest.issues.update_comment(OWNER, REPO, comment.parsed_data.id,
                                                       body=body),
        lambda body: client.rest.issues.update(OWNER, REPO, issue.number, body=body),
        lambda body: client.rest.issues.create(OWNER, REPO, title="t", body=body),
    ]
    for call in calls:
        with pytest.raises(RequestFailed) as info:
            call(longest + "x")
        assert info.value.response.status_code == 422
        [error] = info.value.response.json()["errors"]
        assert error["code"] == "custom" and error["field"] == "body"
        assert error["message"] == "body is too long (maximum is 65536 characters)"
    gh.state.commit_files("acme/widgets", "long", {"l.txt": "l"}, "long")
    with pytest.raises(RequestFailed) as info:
        client.rest.pulls.create(OWNER, REPO, title="t", head="long", base="main",
                                 body=longest + "x")
    assert info.value.response.json()["errors"][0]["resource"] == "PullRequest"


def test_closing_pull_and_reopening(gh: Env, client: GitHub[Any]) -> None:
    gh.state.commit_files("acme/widgets", "feature", {"new.txt": "n"}, "new")
    pull = client.rest.pulls.create(
        OWNER, REPO, title="one", head="feature", base="main"
    ).parsed_data
    closed = client.rest.pulls.update(OWNER, REPO, pull.number, state="closed").parsed_data
    assert closed.state == "closed" and not closed.merged
    reopened = client.rest.pulls.update(OWNER, REPO, pull.number, state="open").parsed_data
    assert reopened.state == "open"
    issues = client.rest.issues.list_for_repo(OWNER, REPO).parsed_data
    assert issues[0].pull_request is not None


def test_pagination_link_headers(gh: Env, client: GitHub[Any]) -> None:
    for n in range(5):
        gh.state.open_issue(gh.state.principal_for_user("alice"), "acme/widgets", f"issue {n}")
    first = client.rest.issues.list_for_repo(OWNER, REPO, per_page=2)
    assert len(first.parsed_data) == 2
    link = first.headers["link"]
    assert 'rel="next"' in link and 'rel="last"' in link and "page=3" in link
    last = client.rest.issues.list_for_repo(OWNER, REPO, per_page=2, page=3)
    assert len(last.parsed_data) == 1
    assert 'rel="prev"' in last.headers["link"] and 'rel="next"' not in last.headers["link"]
    everything = list(
        client.rest.paginate(client.rest.issues.list_for_repo, owner=OWNER, repo=REPO, per_page=2)
    )
    assert len(everything) == 5


def test_rate_limit_headers_and_endpoint(gh: Env, client: GitHub[Any]) -> None:
    first = client.rest.repos.get(OWNER, REPO)
    second = client.rest.repos.get(OWNER, REPO)
    for header in (
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
        "x-ratelimit-resource",
    ):
        assert header in second.headers
    assert int(first.headers["x-ratelimit-remaining"]) - 1 == int(
        second.headers["x-ratelimit-remaining"]
    )
    limits = client.rest.rate_limit.get().parsed_data
    assert isinstance(limits, models.RateLimitOverview)
    assert limits.resources.core.limit == 5000
    assert limits.resources.core.used == int(second.headers["x-ratelimit-used"])


def test_primary_rate_limit_is_enforced(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as env:
        env.state.rate_limit = 3
        client = env.user_client("alice", auto_retry=False)
        for _ in range(3):
            client.rest.repos.get(OWNER, REPO)
        with pytest.raises(RequestFailed) as info:
            client.rest.repos.get(OWNER, REPO)
        assert info.value.response.status_code == 403
        assert info.value.response.headers["x-ratelimit-remaining"] == "0"


def test_requests_are_recorded(gh: Env, client: GitHub[Any]) -> None:
    client.rest.repos.get(OWNER, REPO)
    recorded = [(r.method, r.path, r.status) for r in gh.state.requests]
    assert ("POST", f"/app/installations/{gh.installation.id}/access_tokens", 201) in recorded
    assert ("GET", "/repos/acme/widgets", 200) in recorded
    assert gh.state.requests[-1].login == gh.state.app.bot_login


def test_unknown_route_is_github_404(gh: Env) -> None:
    response = httpx.get(gh.url + "/repos/acme/widgets/nothing-here")
    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"


async def test_async_githubkit_client(gh: Env) -> None:
    client = gh.installation_client()
    repo = (await client.rest.repos.async_get(OWNER, REPO)).parsed_data
    assert repo.full_name == "acme/widgets"
    issue = (await client.rest.issues.async_create(OWNER, REPO, title="async")).parsed_data
    comment = await client.rest.issues.async_create_comment(
        OWNER, REPO, issue.number, body="from asyncio"
    )
    assert comment.status_code == 201
