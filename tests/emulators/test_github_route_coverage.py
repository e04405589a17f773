"""Route coverage: one tour through githubkit must reach every REST route the emulator serves.

The routes come from the ASGI app itself (``create_app``), so a route added later without a
tour step (or an ``EXCLUDED`` entry with its reason) makes this test fail. Each tour call parses
its answer with githubkit's typed model (generated from GitHub's OpenAPI description) and checks
a field; afterwards the requests the emulator recorded are mapped back to their route templates
the way Starlette dispatches (first route whose path and method match) and every route must
have answered 2xx/3xx at least once.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from githubkit import GitHub, OAuthWebAuthStrategy, TokenAuthStrategy
from githubkit.response import Response
from githubkit_schemas.latest import models
from starlette.routing import BaseRoute, Mount, Route, compile_path

from tests.emulators.github import DEFAULT_APP_PERMISSIONS, create_app
from tests.emulators.github.records import RecordedRequest
from tests.emulators.github.testing import Env, fast, running_emulator

OWNER, REPO = "acme", "widgets"

# Routes (``fnmatch`` patterns on "METHOD /template") the tour does not take, and why.
# Every pattern must match at least one route, so stale entries fail the test too.
EXCLUDED: dict[str, str] = {
    "* /_admin/*": "admin API (setup, faults, recorded requests, webhook delivery, CI runner "
    "control): the tests' control plane, not GitHub's API, and never recorded",
    "GET /_logs/jobs/{job_id}": "pre-signed plain-text log download the job-logs 302 points "
    "at, not a REST route and not recorded (the tour still follows the redirect)",
    "* /{owner}/{name}.git/{rest:path}": "git smart HTTP (git http-backend), spoken by git, "
    "not githubkit; covered by test_github_git.py",
    "HEAD *": "Starlette adds HEAD to every GET route implicitly; the GET is toured",
}

CoveredRoute = tuple[str, str, re.Pattern[str]]  # method, template, path regex


# -- the routes, from the app ----------------------------------------------------------------


def walk_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[CoveredRoute]:
    """Every (method, full path template, regex) in Starlette's dispatch order."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            template = prefix + route.path
            regex, _, _ = compile_path(template)
            for method in sorted(route.methods or ()):
                yield method, template, regex
        else:
            raise AssertionError(f"teach this test about {type(route).__name__}: {route!r}")


def exclusion_for(method: str, template: str) -> str | None:
    key = f"{method} {template}"
    return next((p for p in EXCLUDED if fnmatch.fnmatchcase(key, p)), None)


def template_for(routes: list[CoveredRoute], method: str, path: str) -> str | None:
    """The template Starlette dispatches ``method path`` to: the first full match."""
    for route_method, template, regex in routes:
        if route_method == method and regex.match(path):
            return template
    return None


def missing_routes(routes: list[CoveredRoute], recorded: list[RecordedRequest]) -> list[str]:
    hit = set()
    for request in recorded:
        if 200 <= request.status < 400:
            template = template_for(routes, request.method, request.path)
            if template is not None:
                hit.add((request.method, template))
    return [
        f"{method} {template}"
        for method, template, _ in routes
        if exclusion_for(method, template) is None and (method, template) not in hit
    ]


# -- the tour -------------------------------------------------------------------------------


def ok(response: Response[Any, Any], model: type[Any], status: int = 200) -> Any:
    """The parsed answer, after checking its status and that it is (a list of) ``model``."""
    assert response.status_code == status, (response.status_code, response.text)
    data = response.parsed_data
    items = data if isinstance(data, list) else [data]
    assert all(isinstance(item, model) for item in items), (model, data)
    return data


def no_content(response: Response[Any, Any]) -> None:
    """A 204. githubkit declares no model for these (``parsed_data`` would try to read JSON
    from the empty body), so check the answer is empty, as GitHub's is."""
    assert response.status_code == 204, (response.status_code, response.text)
    assert response.content == b""


def tour_apps(env: Env, client: GitHub[Any]) -> None:
    state, inst_id = env.state, env.installation.id
    app = env.app_client()
    assert ok(app.rest.apps.get_authenticated(), models.Integration).id == state.app_id
    installations = ok(app.rest.apps.list_installations(), models.Installation)
    assert [i.id for i in installations] == [inst_id]
    assert ok(app.rest.apps.get_installation(inst_id), models.Installation).id == inst_id
    found = ok(app.rest.apps.get_repo_installation(OWNER, REPO), models.Installation)
    assert found.id == inst_id
    token = ok(
        app.rest.apps.create_installation_access_token(inst_id), models.InstallationToken, 201
    )
    assert token.token.startswith("ghs_")

    spare = GitHub(TokenAuthStrategy(token.token), base_url=env.url, **fast({}))
    listing = ok(
        spare.rest.apps.list_repos_accessible_to_installation(),
        models.InstallationRepositoriesGetResponse200,
    )
    assert [r.full_name for r in listing.repositories] == ["acme/widgets"]
    no_content(spare.rest.apps.revoke_installation_access_token())
    assert token.token not in state.tokens

    code = state.register_manifest_code(manifest={"name": "Tour App"}, owner="acme")
    anonymous = GitHub(base_url=env.url, **fast({}))
    converted = ok(
        anonymous.rest.apps.create_from_manifest(code),
        models.AppManifestsCodeConversionsPostResponse201,
        201,
    )
    assert converted.slug == "tour-app"

    limits = ok(client.rest.rate_limit.get(), models.RateLimitOverview)
    assert limits.resources.core.limit == state.rate_limit


def tour_oauth(env: Env) -> None:
    """The OAuth web flow, then ``GET /user`` as the signed-in user. The authorize page is a
    browser's visit (githubkit has no method for it), sent by plain HTTP; githubkit exchanges
    the code it redirected with."""
    state = env.state
    app = state.set_callback_urls(["http://127.0.0.1:9/auth/callback"])
    redirect = httpx.get(
        env.url + "/login/oauth/authorize",
        params={"client_id": app.client_id, "state": "tour"},
        headers={"Authorization": f"token {state.user_token('alice')}"},
        timeout=10,
    )
    assert redirect.status_code == 302, (redirect.status_code, redirect.text)
    [code] = parse_qs(urlsplit(redirect.headers["location"]).query)["code"]
    user = GitHub(
        OAuthWebAuthStrategy(app.client_id, app.client_secret, code), base_url=env.url, **fast({})
    )
    assert ok(user.rest.users.get_authenticated(), models.PrivateUser).login == "alice"


def tour_repos_and_git(env: Env, client: GitHub[Any], head: str) -> None:
    rest = client.rest
    assert ok(rest.repos.get(OWNER, REPO), models.FullRepository).full_name == "acme/widgets"
    branch = ok(rest.repos.get_branch(OWNER, REPO, "main"), models.BranchWithProtection)
    assert branch.commit.sha == head
    env.state.protect_branch("acme/widgets", "main", contexts=["ci/test"])
    policy = ok(
        rest.repos.get_status_checks_protection(OWNER, REPO, "main"), models.StatusCheckPolicy
    )
    assert policy.contexts == ["ci/test"]
    readme = ok(rest.repos.get_content(OWNER, REPO, "README.md"), models.ContentFile)
    assert base64.b64decode(readme.content) == b"# Widgets\n"
    # githubkit's get_content always renders ".../contents/{path}"; the root listing without
    # a trailing slash (its own route here, as on GitHub) needs a plain request.
    root = ok(
        client.request(
            "GET",
            f"/repos/{OWNER}/{REPO}/contents",
            response_model=list[models.ContentDirectoryItems],
        ),
        models.ContentDirectoryItems,
    )
    assert "README.md" in {item.name for item in root}
    permission = ok(
        rest.repos.get_collaborator_permission_level(OWNER, REPO, "alice"),
        models.RepositoryCollaboratorPermission,
    )
    assert permission.permission == "write"
    assert ok(rest.repos.get_commit(OWNER, REPO, "main"), models.Commit).sha == head

    ref = ok(rest.git.get_ref(OWNER, REPO, "heads/main"), models.GitRef)
    assert ref.object_.sha == head
    matching = ok(rest.git.list_matching_refs(OWNER, REPO, "heads/"), models.GitRef)
    assert "refs/heads/main" in {r.ref for r in matching}
    created = ok(
        rest.git.create_ref(OWNER, REPO, ref="refs/heads/tour", sha=head), models.GitRef, 201
    )
    assert created.ref == "refs/heads/tour"
    newer = env.state.commit_files("acme/widgets", "tour-next", {"t.txt": "t"}, "t")
    moved = ok(rest.git.update_ref(OWNER, REPO, "heads/tour", sha=newer), models.GitRef)
    assert moved.object_.sha == newer
    no_content(rest.git.delete_ref(OWNER, REPO, "heads/tour"))

    commit = ok(rest.git.get_commit(OWNER, REPO, head), models.GitCommit)
    assert commit.sha == head
    tree = ok(rest.git.get_tree(OWNER, REPO, commit.tree.sha, recursive="1"), models.GitTree)
    assert "src/widgets/core.py" in {item.path for item in tree.tree}
    blob = ok(
        rest.git.create_blob(OWNER, REPO, content="tour", encoding="utf-8"), models.ShortBlob, 201
    )
    assert blob.sha
    read = ok(rest.git.get_blob(OWNER, REPO, blob.sha), models.Blob)
    assert base64.b64decode(read.content) == b"tour"


def tour_issues(client: GitHub[Any]) -> None:
    issues, reactions = client.rest.issues, client.rest.reactions
    issue = ok(issues.create(OWNER, REPO, title="Tour", labels=["bug"]), models.Issue, 201)
    number = issue.number
    listed = ok(issues.list_for_repo(OWNER, REPO), models.Issue)
    assert number in {i.number for i in listed}
    assert ok(issues.get(OWNER, REPO, number), models.Issue).title == "Tour"
    edited = ok(
        issues.update(OWNER, REPO, number, title="Tour, edited"),
        models.ReposOwnerRepoIssuesIssueNumberPatchResponse200,
    )
    assert edited.title == "Tour, edited"

    comment = ok(issues.create_comment(OWNER, REPO, number, body="hi"), models.IssueComment, 201)
    in_repo = ok(issues.list_comments_for_repo(OWNER, REPO), models.IssueComment)
    assert comment.id in {c.id for c in in_repo}
    assert ok(issues.get_comment(OWNER, REPO, comment.id), models.IssueComment).body == "hi"
    changed = ok(issues.update_comment(OWNER, REPO, comment.id, body="hi!"), models.IssueComment)
    assert changed.body == "hi!"
    on_issue = ok(issues.list_comments(OWNER, REPO, number), models.IssueComment)
    assert [c.body for c in on_issue] == ["hi!"]

    rocket = ok(
        reactions.create_for_issue_comment(OWNER, REPO, comment.id, content="rocket"),
        models.Reaction,
        201,
    )
    assert rocket.content == "rocket"
    on_comment = ok(reactions.list_for_issue_comment(OWNER, REPO, comment.id), models.Reaction)
    assert [r.id for r in on_comment] == [rocket.id]
    eyes = ok(reactions.create_for_issue(OWNER, REPO, number, content="eyes"), models.Reaction, 201)
    assert [r.id for r in ok(reactions.list_for_issue(OWNER, REPO, number), models.Reaction)] == [
        eyes.id
    ]

    added = ok(issues.add_labels(OWNER, REPO, number, labels=["ready"]), models.Label)
    assert {label.name for label in added} == {"bug", "ready"}
    replaced = ok(issues.set_labels(OWNER, REPO, number, labels=["bug", "tour"]), models.Label)
    assert {label.name for label in replaced} == {"bug", "tour"}
    left = ok(issues.remove_label(OWNER, REPO, number, "bug"), models.Label)
    assert [label.name for label in left] == ["tour"]
    current = ok(issues.list_labels_on_issue(OWNER, REPO, number), models.Label)
    assert [label.name for label in current] == ["tour"]
    new = ok(issues.create_label(OWNER, REPO, name="needs plan", color="00ff00"), models.Label, 201)
    assert new.color == "00ff00"
    in_repo_labels = ok(issues.list_labels_for_repo(OWNER, REPO, per_page=100), models.Label)
    assert "needs plan" in {label.name for label in in_repo_labels}
    assert ok(issues.get_label(OWNER, REPO, "needs plan"), models.Label).id == new.id

    no_content(issues.delete_comment(OWNER, REPO, comment.id))


READY = """
mutation Ready($id: ID!) {
  markPullRequestReadyForReview(input: {pullRequestId: $id}) {
    pullRequest { id number isDraft }
  }
}
"""


def tour_pulls_and_graphql(env: Env, client: GitHub[Any]) -> None:
    pulls = client.rest.pulls
    env.state.commit_files("acme/widgets", "feature", {"f.txt": "f\n"}, "Add f", author="alice")
    pull = ok(
        pulls.create(OWNER, REPO, title="Tour", head="feature", base="main", draft=True),
        models.PullRequest,
        201,
    )
    number = pull.number
    listed = ok(pulls.list(OWNER, REPO, head="acme:feature"), models.PullRequestSimple)
    assert [p.number for p in listed] == [number]
    assert ok(pulls.get(OWNER, REPO, number), models.PullRequest).draft is True
    edited = ok(pulls.update(OWNER, REPO, number, title="Tour, edited"), models.PullRequest)
    assert edited.title == "Tour, edited"
    files = ok(pulls.list_files(OWNER, REPO, number), models.DiffEntry)
    assert [f.filename for f in files] == ["f.txt"]
    commits = ok(pulls.list_commits(OWNER, REPO, number), models.Commit)
    assert [c.commit.message for c in commits] == ["Add f"]
    requested = ok(
        pulls.request_reviewers(OWNER, REPO, number, reviewers=["alice"]),
        models.PullRequestSimple,
        201,
    )
    assert [u.login for u in requested.requested_reviewers or []] == ["alice"]
    reviewers = ok(
        pulls.list_requested_reviewers(OWNER, REPO, number), models.PullRequestReviewRequest
    )
    assert [u.login for u in reviewers.users] == ["alice"]

    data = client.graphql(READY, {"id": pull.node_id})
    ready = data["markPullRequestReadyForReview"]["pullRequest"]
    assert ready == {"id": pull.node_id, "number": number, "isDraft": False}

    merged = ok(pulls.merge(OWNER, REPO, number), models.PullRequestMergeResult)
    assert merged.merged and env.state.branch_sha("acme/widgets", "main") == merged.sha
    no_content(pulls.check_if_merged(OWNER, REPO, number))


def tour_checks_and_statuses(client: GitHub[Any], head: str) -> None:
    checks, repos = client.rest.checks, client.rest.repos
    run = ok(
        checks.create(OWNER, REPO, name="tour", head_sha=head, status="in_progress"),
        models.CheckRun,
        201,
    )
    done = ok(
        checks.update(
            OWNER,
            REPO,
            run.id,
            conclusion="failure",
            output={
                "title": "Tour",
                "summary": "one problem",
                "annotations": [
                    {
                        "path": "README.md",
                        "start_line": 1,
                        "end_line": 1,
                        "annotation_level": "failure",
                        "message": "bad",
                    }
                ],
            },
        ),
        models.CheckRun,
    )
    assert done.conclusion == "failure"
    assert ok(checks.get(OWNER, REPO, run.id), models.CheckRun).output.title == "Tour"
    annotations = ok(checks.list_annotations(OWNER, REPO, run.id), models.CheckAnnotation)
    assert [a.message for a in annotations] == ["bad"]
    ok(checks.rerequest_run(OWNER, REPO, run.id), models.EmptyObject, 201)

    # The check run made the App's suite for ``head``: creating it again answers 200.
    suite = ok(checks.create_suite(OWNER, REPO, head_sha=head), models.CheckSuite)
    assert suite.id == run.check_suite.id
    assert ok(checks.get_suite(OWNER, REPO, suite.id), models.CheckSuite).head_sha == head
    in_suite = ok(
        checks.list_for_suite(OWNER, REPO, suite.id),
        models.ReposOwnerRepoCheckSuitesCheckSuiteIdCheckRunsGetResponse200,
    )
    assert [r.id for r in in_suite.check_runs] == [run.id]
    ok(checks.rerequest_suite(OWNER, REPO, suite.id), models.EmptyObject, 201)
    for_ref = ok(
        checks.list_for_ref(OWNER, REPO, "main"),
        models.ReposOwnerRepoCommitsRefCheckRunsGetResponse200,
    )
    assert run.id in {r.id for r in for_ref.check_runs}
    suites = ok(
        checks.list_suites_for_ref(OWNER, REPO, head),
        models.ReposOwnerRepoCommitsRefCheckSuitesGetResponse200,
    )
    assert suite.id in {s.id for s in suites.check_suites}

    status = ok(
        repos.create_commit_status(OWNER, REPO, head, state="success", context="ci/test"),
        models.Status,
        201,
    )
    statuses = ok(repos.list_commit_statuses_for_ref(OWNER, REPO, "main"), models.Status)
    assert [s.id for s in statuses] == [status.id]
    combined = ok(
        repos.get_combined_status_for_ref(OWNER, REPO, "main"), models.CombinedCommitStatus
    )
    assert combined.state == "success"
    # The legacy alias GET /repos/{o}/{r}/statuses/{ref} is not in GitHub's OpenAPI
    # description, so githubkit has no method for it.
    legacy = ok(
        client.request(
            "GET", f"/repos/{OWNER}/{REPO}/statuses/{head}", response_model=list[models.Status]
        ),
        models.Status,
    )
    assert [s.context for s in legacy] == ["ci/test"]


def tour_actions(env: Env, client: GitHub[Any], head: str) -> None:
    state, actions = env.state, client.rest.actions
    run = state.create_workflow_run("acme/widgets", head_sha=head, jobs=["lint", "test"])
    lint, test = state.workflow_jobs(run.id)
    state.complete_job(lint.id, "success", log="lint ok\n")
    state.complete_job(test.id, "failure", log="FAILED test_add\n")

    workflows = ok(
        actions.list_repo_workflows(OWNER, REPO),
        models.ReposOwnerRepoActionsWorkflowsGetResponse200,
    )
    assert [w.path for w in workflows.workflows] == [".github/workflows/ci.yml"]
    runs = ok(
        actions.list_workflow_runs_for_repo(OWNER, REPO, head_sha=head),
        models.ReposOwnerRepoActionsRunsGetResponse200,
    )
    assert [r.id for r in runs.workflow_runs] == [run.id]
    got = ok(actions.get_workflow_run(OWNER, REPO, run.id), models.WorkflowRun)
    assert got.conclusion == "failure"
    jobs = ok(
        actions.list_jobs_for_workflow_run(OWNER, REPO, run.id),
        models.ReposOwnerRepoActionsRunsRunIdJobsGetResponse200,
    )
    assert [j.name for j in jobs.jobs] == ["lint", "test"]
    attempt = ok(
        actions.list_jobs_for_workflow_run_attempt(OWNER, REPO, run.id, 1),
        models.ReposOwnerRepoActionsRunsRunIdAttemptsAttemptNumberJobsGetResponse200,
    )
    assert attempt.total_count == 2
    job = ok(actions.get_job_for_workflow_run(OWNER, REPO, test.id), models.Job)
    assert job.conclusion == "failure"
    # A 302 to the plain-text /_logs URL, which githubkit follows.
    logs = actions.download_job_logs_for_workflow_run(OWNER, REPO, test.id)
    assert logs.status_code == 200 and logs.text == "FAILED test_add\n"

    ok(actions.re_run_workflow_failed_jobs(OWNER, REPO, run.id), models.EmptyObject, 201)
    [again] = [j for j in state.workflow_jobs(run.id) if j.run_attempt == 2]
    state.complete_job(again.id, "success")
    ok(actions.re_run_workflow(OWNER, REPO, run.id), models.EmptyObject, 201)
    assert ok(actions.get_workflow_run(OWNER, REPO, run.id), models.WorkflowRun).run_attempt == 3


def tour(env: Env) -> None:
    client = env.installation_client()
    head = env.state.branch_sha("acme/widgets", "main")
    assert head is not None
    tour_apps(env, client)
    tour_oauth(env)
    tour_repos_and_git(env, client, head)
    tour_issues(client)
    tour_checks_and_statuses(client, head)
    tour_actions(env, client, head)
    tour_pulls_and_graphql(env, client)  # last: the merge moves main


# -- the test --------------------------------------------------------------------------------


def test_tour_reaches_every_rest_route(tmp_path: Path) -> None:
    # administration: read for GET .../branches/{branch}/protection/required_status_checks.
    permissions = {**DEFAULT_APP_PERMISSIONS, "administration": "read"}
    with running_emulator(tmp_path, permissions=permissions) as env:
        routes = list(walk_routes(create_app(env.state).routes))
        keys = [f"{method} {template}" for method, template, _ in routes]
        stale = [p for p in EXCLUDED if not fnmatch.filter(keys, p)]
        assert not stale, f"EXCLUDED patterns that match no route: {stale}"
        covered = [r for r in routes if exclusion_for(r[0], r[1]) is None]
        assert len(covered) > 50, "the route walk found suspiciously few routes"

        env.state.requests.clear()
        tour(env)

        # The server records a request just after answering it: wait for the last one.
        env.state.wait_for_requests(lambda seen: not missing_routes(routes, seen), timeout=5)
        missing = missing_routes(routes, list(env.state.requests))
        assert not missing, (
            f"{len(missing)} of {len(covered)} REST routes were not reached with a 2xx/3xx "
            "answer by the tour; add a tour step (or an EXCLUDED entry with its reason):\n"
            + "\n".join(missing)
        )
