"""Checks, statuses and Actions: REST fidelity and the CI-runner side of the state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from githubkit import GitHub
from githubkit.exception import RequestFailed
from githubkit_schemas.latest import models

from tests.emulators.github import GITHUB_ACTIONS_APP_ID
from tests.emulators.github.testing import Env, running_emulator

OWNER, REPO = "acme", "widgets"


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as env:
        yield env


@pytest.fixture
def client(gh: Env) -> GitHub[Any]:
    return gh.installation_client()


@pytest.fixture
def head(gh: Env) -> str:
    sha = gh.state.branch_sha("acme/widgets", "main")
    assert sha is not None
    return sha


def test_check_runs_through_rest(gh: Env, client: GitHub[Any], head: str) -> None:
    created = client.rest.checks.create(
        OWNER,
        REPO,
        name="conductor/plan",
        head_sha=head,
        status="in_progress",
        external_id="job-1",
        details_url="https://example.invalid/run/1",
        actions=[{"label": "Retry", "description": "Run the plan again", "identifier": "retry"}],
    )
    assert created.status_code == 201
    run = created.parsed_data
    assert isinstance(run, models.CheckRun)
    assert run.app is not None and run.app.id == gh.state.app_id
    assert run.status == "in_progress" and run.conclusion is None
    assert created.json()["actions"][0]["identifier"] == "retry"

    updated = client.rest.checks.update(
        OWNER,
        REPO,
        run.id,
        conclusion="failure",
        output={
            "title": "Plan failed",
            "summary": "2 problems",
            "annotations": [
                {
                    "path": "src/widgets/core.py",
                    "start_line": 1,
                    "end_line": 2,
                    "annotation_level": "failure",
                    "message": "bad",
                }
            ],
        },
    ).parsed_data
    assert updated.status == "completed" and updated.conclusion == "failure"
    assert updated.output.annotations_count == 1
    annotations = client.rest.checks.list_annotations(OWNER, REPO, run.id).parsed_data
    assert isinstance(annotations[0], models.CheckAnnotation)
    assert annotations[0].message == "bad"

    got = client.rest.checks.get(OWNER, REPO, run.id).parsed_data
    assert got.output.title == "Plan failed"
    for_ref = client.rest.checks.list_for_ref(OWNER, REPO, "main").parsed_data
    assert isinstance(for_ref, models.ReposOwnerRepoCommitsRefCheckRunsGetResponse200)
    assert [r.id for r in for_ref.check_runs] == [run.id]
    assert (
        client.rest.checks.list_for_ref(
            OWNER, REPO, head, check_name="other"
        ).parsed_data.total_count
        == 0
    )

    suites = client.rest.checks.list_suites_for_ref(OWNER, REPO, head).parsed_data
    assert suites.total_count == 1
    suite = suites.check_suites[0]
    assert isinstance(suite, models.CheckSuite)
    assert suite.status == "completed" and suite.conclusion == "failure"
    assert client.rest.checks.get_suite(OWNER, REPO, suite.id).parsed_data.id == suite.id
    in_suite = client.rest.checks.list_for_suite(OWNER, REPO, suite.id).parsed_data
    assert [r.id for r in in_suite.check_runs] == [run.id]

    events = [(p["action"], p["check_run"]["id"]) for p in gh.state.events_named("check_run")]
    assert events == [("created", run.id), ("completed", run.id)]
    assert gh.state.events_named("check_suite", "completed")


def test_check_run_validation(gh: Env, client: GitHub[Any], head: str) -> None:
    with pytest.raises(RequestFailed) as info:
        client.rest.checks.create(OWNER, REPO, name="x", head_sha="a" * 40)
    assert info.value.response.status_code == 422
    token = gh.state.create_installation_token(gh.installation.id).token
    response = httpx.post(
        f"{gh.url}/repos/acme/widgets/check-runs",
        headers={"Authorization": f"token {token}"},
        json={"name": "x", "head_sha": head, "status": "completed"},
    )
    assert response.status_code == 422
    assert response.json()["message"] == "Validation Failed"
    alice = gh.user_client("alice")
    with pytest.raises(RequestFailed) as info:
        alice.rest.checks.create(OWNER, REPO, name="x", head_sha=head)
    assert info.value.response.status_code == 403


def test_check_suite_create(client: GitHub[Any], head: str) -> None:
    created = client.rest.checks.create_suite(OWNER, REPO, head_sha=head)
    assert created.status_code == 201
    assert isinstance(created.parsed_data, models.CheckSuite)
    again = client.rest.checks.create_suite(OWNER, REPO, head_sha=head)
    assert again.status_code == 200 and again.parsed_data.id == created.parsed_data.id


def test_commit_statuses(gh: Env, client: GitHub[Any], head: str) -> None:
    pending = client.rest.repos.create_commit_status(
        OWNER, REPO, head, state="pending", context="ci/lint"
    )
    assert pending.status_code == 201
    assert isinstance(pending.parsed_data, models.Status)
    client.rest.repos.create_commit_status(
        OWNER, REPO, head, state="success", context="ci/lint", description="clean"
    )
    client.rest.repos.create_commit_status(OWNER, REPO, head, state="success", context="ci/test")
    listed = client.rest.repos.list_commit_statuses_for_ref(OWNER, REPO, "main").parsed_data
    assert [s.state for s in listed] == ["success", "success", "pending"]
    combined = client.rest.repos.get_combined_status_for_ref(OWNER, REPO, "main").parsed_data
    assert isinstance(combined, models.CombinedCommitStatus)
    assert combined.state == "success" and combined.total_count == 2
    client.rest.repos.create_commit_status(OWNER, REPO, head, state="failure", context="ci/test")
    assert (
        client.rest.repos.get_combined_status_for_ref(OWNER, REPO, head).parsed_data.state
        == "failure"
    )
    payloads = gh.state.events_named("status")
    assert len(payloads) == 4 and payloads[0]["sha"] == head
    assert payloads[0]["branches"][0]["name"] == "main"


def test_ci_runner_workflow_run_and_logs(gh: Env, client: GitHub[Any], head: str) -> None:
    state = gh.state
    run = state.create_workflow_run("acme/widgets", head_sha=head, jobs=["lint", "test"])
    lint, test = state.workflow_jobs(run.id)
    state.start_job(lint.id)
    state.complete_job(lint.id, "success", log="lint ok\n")
    state.start_job(test.id)
    state.append_job_log(test.id, "collected 3 items\n")
    state.complete_job(test.id, "failure")
    state.append_job_log(test.id, "FAILED test_add\n")

    runs = client.rest.actions.list_workflow_runs_for_repo(OWNER, REPO, head_sha=head).parsed_data
    assert isinstance(runs, models.ReposOwnerRepoActionsRunsGetResponse200)
    assert [r.id for r in runs.workflow_runs] == [run.id]
    got = runs.workflow_runs[0]
    assert (got.status, got.conclusion, got.name) == ("completed", "failure", "CI")
    assert got.path == ".github/workflows/ci.yml"
    other = client.rest.actions.list_workflow_runs_for_repo(OWNER, REPO, branch="other")
    assert other.parsed_data.total_count == 0
    assert client.rest.actions.get_workflow_run(OWNER, REPO, run.id).parsed_data.run_attempt == 1

    jobs = client.rest.actions.list_jobs_for_workflow_run(OWNER, REPO, run.id).parsed_data
    assert isinstance(jobs, models.ReposOwnerRepoActionsRunsRunIdJobsGetResponse200)
    assert [(j.name, j.conclusion) for j in jobs.jobs] == [("lint", "success"), ("test", "failure")]
    job = client.rest.actions.get_job_for_workflow_run(OWNER, REPO, test.id).parsed_data
    assert isinstance(job, models.Job)

    token = state.create_installation_token(gh.installation.id).token
    redirect = httpx.get(
        f"{gh.url}/repos/acme/widgets/actions/jobs/{test.id}/logs",
        headers={"Authorization": f"token {token}"},
    )
    assert redirect.status_code == 302
    assert redirect.headers["location"].startswith(gh.url)
    logs = client.rest.actions.download_job_logs_for_workflow_run(OWNER, REPO, test.id)
    assert logs.text == "collected 3 items\nFAILED test_add\n"

    # The jobs are github-actions check runs in the run's check suite.
    check_runs = client.rest.checks.list_for_ref(OWNER, REPO, head).parsed_data.check_runs
    assert {(r.name, r.conclusion) for r in check_runs} == {
        ("lint", "success"),
        ("test", "failure"),
    }
    assert {r.app.id for r in check_runs if r.app} == {GITHUB_ACTIONS_APP_ID}
    suite = client.rest.checks.get_suite(OWNER, REPO, run.check_suite_id).parsed_data
    assert suite.conclusion == "failure" and suite.app and suite.app.slug == "github-actions"

    actions = [p["action"] for p in state.events_named("workflow_run")]
    assert actions == ["requested", "in_progress", "completed"]


def test_rerun_failed_jobs(gh: Env, client: GitHub[Any], head: str) -> None:
    state = gh.state
    reruns: list[tuple[int, list[str]]] = []
    state.on_rerun(lambda run, jobs: reruns.append((run.id, [j.name for j in jobs])))
    run = state.create_workflow_run("acme/widgets", head_sha=head, jobs=["lint", "test"])
    lint, test = state.workflow_jobs(run.id)
    state.complete_job(lint.id, "success")
    with pytest.raises(RequestFailed) as info:
        client.rest.actions.re_run_workflow_failed_jobs(OWNER, REPO, run.id)
    assert info.value.response.status_code == 403  # still running
    state.complete_job(test.id, "failure")

    response = client.rest.actions.re_run_workflow_failed_jobs(OWNER, REPO, run.id)
    assert response.status_code == 201
    assert reruns == [(run.id, ["test"])]
    again = client.rest.actions.get_workflow_run(OWNER, REPO, run.id).parsed_data
    assert (again.run_attempt, again.status, again.conclusion) == (2, "queued", None)
    latest = state.workflow_jobs(run.id)
    assert [(j.name, j.run_attempt) for j in latest] == [("lint", 1), ("test", 2)]
    all_jobs = client.rest.actions.list_jobs_for_workflow_run(OWNER, REPO, run.id, filter_="all")
    assert all_jobs.parsed_data.total_count == 3

    state.complete_job(latest[1].id, "success")
    final = client.rest.actions.get_workflow_run(OWNER, REPO, run.id).parsed_data
    assert (final.status, final.conclusion) == ("completed", "success")
    suite = client.rest.checks.get_suite(OWNER, REPO, run.check_suite_id).parsed_data
    assert suite.conclusion == "success"


def test_requested_action_reaches_owning_app_only(gh: Env, client: GitHub[Any], head: str) -> None:
    run = client.rest.checks.create(
        OWNER,
        REPO,
        name="plan",
        head_sha=head,
        actions=[{"label": "Approve", "description": "Approve", "identifier": "approve"}],
    ).parsed_data
    gh.state.as_user("alice").press_check_run_action(run.id, "approve")
    [payload] = gh.state.events_named("check_run", "requested_action")
    assert payload["requested_action"] == {"identifier": "approve"}
    assert payload["sender"]["login"] == "alice"
