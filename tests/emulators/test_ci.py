"""The CI runner: pushes run the repository's command on the pushed commit, like Actions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from githubkit_schemas.latest import models

from tests.emulators.github import GITHUB_ACTIONS_APP_ID
from tests.emulators.github.ci import CIRunner
from tests.emulators.github.testing import Env, running_emulator

OWNER, REPO = "acme", "widgets"
PROJECT = {
    "README.md": "# Widgets\n",
    "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    "widgets/__init__.py": "",
    "widgets/core.py": "def add(a, b):\n    return a + b\n",
    "tests/test_core.py": (
        "from widgets.core import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    ),
    ".github/workflows/ci.yml": (
        "name: CI\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
    ),
}
FAILING_TEST = (
    "from widgets.core import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
    "def test_subtract_is_missing():\n    assert add(2, -3) == 1\n"
)
PYTEST = "python -m pytest -q -p no:cacheprovider"


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path, files=PROJECT) as env:
        yield env


@pytest.fixture
def ci(gh: Env) -> Iterator[CIRunner]:
    with CIRunner(gh.state) as runner:
        yield runner


def only_run(gh: Env, sha: str) -> Any:
    runs = [r for r in gh.state.workflow_runs.values() if r.head_sha == sha]
    assert len(runs) == 1, runs
    return runs[0]


def test_a_passing_push_succeeds_with_events_and_a_downloadable_log(
    gh: Env, ci: CIRunner
) -> None:
    ci.configure("acme/widgets", PYTEST, timeout=60)
    sha = gh.state.as_user("alice").push(
        "acme/widgets", "feature", {"widgets/extra.py": "X = 1\n"}, "Add extra"
    )
    ci.wait_idle(60)

    run = only_run(gh, sha)
    assert (run.status, run.conclusion, run.head_branch, run.event, run.actor) == (
        "completed", "success", "feature", "push", "alice",
    )
    client = gh.installation_client()
    (job,) = client.rest.actions.list_jobs_for_workflow_run(OWNER, REPO, run.id).parsed_data.jobs
    assert (job.name, job.conclusion) == ("test", "success")
    logs = client.rest.actions.download_job_logs_for_workflow_run(OWNER, REPO, job.id).text
    assert "1 passed" in logs and f"Run {PYTEST}" in logs
    first = logs.splitlines()[0]
    assert first[:4].isdigit() and first[10] == "T" and first.split(" ")[0].endswith("Z")

    (check,) = client.rest.checks.list_for_ref(OWNER, REPO, sha).parsed_data.check_runs
    assert check.app and check.app.id == GITHUB_ACTIONS_APP_ID
    assert (check.conclusion, check.output.title) == ("success", "test: success")

    suites = [p for p in gh.state.events_named("check_suite", "completed")
              if p["check_suite"]["head_sha"] == sha]
    assert [s["check_suite"]["conclusion"] for s in suites] == ["success"]
    runs = [p for p in gh.state.events_named("workflow_run") if p["workflow_run"]["id"] == run.id]
    assert [p["action"] for p in runs] == ["requested", "in_progress", "completed"]
    assert runs[-1]["workflow_run"]["conclusion"] == "success"
    checks = gh.state.events_named("check_run", "completed")
    assert [p["check_run"]["conclusion"] for p in checks] == ["success"]
    assert ci.results[0].exit_code == 0 and ci.results[0].head_sha == sha


def test_a_failing_push_fails_with_the_test_name_in_log_and_check_output(
    gh: Env, ci: CIRunner
) -> None:
    ci.configure("acme/widgets", PYTEST, timeout=60)
    sha = gh.state.as_user("alice").push(
        "acme/widgets", "broken", {"tests/test_core.py": FAILING_TEST}, "Break it"
    )
    ci.wait_idle(60)

    run = only_run(gh, sha)
    assert run.conclusion == "failure"
    client = gh.installation_client()
    (job,) = client.rest.actions.list_jobs_for_workflow_run(OWNER, REPO, run.id).parsed_data.jobs
    logs = client.rest.actions.download_job_logs_for_workflow_run(OWNER, REPO, job.id).text
    assert "test_subtract_is_missing" in logs
    assert "##[error]Process completed with exit code 1." in logs

    (check,) = client.rest.checks.list_for_ref(OWNER, REPO, sha).parsed_data.check_runs
    assert check.conclusion == "failure"
    assert check.output.title == "test: 1 failed"
    assert check.output.summary and "test_subtract_is_missing" in check.output.summary
    assert check.output.text and "def test_subtract_is_missing" in check.output.text
    annotations = client.rest.checks.list_annotations(OWNER, REPO, check.id).parsed_data
    assert any(a.path == "tests/test_core.py" and a.annotation_level == "failure"
               for a in annotations)

    suite = [p for p in gh.state.events_named("check_suite", "completed")
             if p["check_suite"]["head_sha"] == sha]
    assert suite[0]["check_suite"]["conclusion"] == "failure"
    completed = gh.state.events_named("workflow_run", "completed")
    assert completed[-1]["workflow_run"]["conclusion"] == "failure"


def test_flaky_mode_fails_the_first_run_and_passes_the_rerun(gh: Env, ci: CIRunner) -> None:
    ci.configure("acme/widgets", PYTEST, timeout=60, mode="flaky")
    sha = gh.state.commit_files("acme/widgets", "main", {"NOTES.md": "x\n"}, "Notes")
    ci.wait_idle(60)
    run = only_run(gh, sha)
    assert run.conclusion == "failure"
    assert "flaky" in gh.state.job_log(gh.state.workflow_jobs(run.id)[0].id)

    alice = gh.user_client("alice")
    assert alice.rest.actions.re_run_workflow_failed_jobs(OWNER, REPO, run.id).status_code == 201
    ci.wait_idle(60)

    again = alice.rest.actions.get_workflow_run(OWNER, REPO, run.id).parsed_data
    assert isinstance(again, models.WorkflowRun)
    assert (again.run_attempt, again.status, again.conclusion) == (2, "completed", "success")
    assert [r.conclusion for r in ci.results] == ["failure", "success"]
    suites = [p["check_suite"]["conclusion"] for p in gh.state.events_named("check_suite")]
    assert suites == ["failure", "success"]


def test_mode_none_and_unconfigured_repositories_run_nothing(gh: Env, ci: CIRunner) -> None:
    gh.state.commit_files("acme/widgets", "main", {"a.txt": "1\n"}, "Unconfigured")
    ci.configure("acme/widgets", mode="none")
    gh.state.commit_files("acme/widgets", "main", {"a.txt": "2\n"}, "No CI")
    ci.wait_idle(10)
    assert gh.state.workflow_runs == {} and gh.state.check_suites == {}
    assert gh.state.events_named("push") and not gh.state.events_named("workflow_run")


def test_a_command_over_its_time_limit_is_killed_with_its_children(gh: Env, ci: CIRunner) -> None:
    ci.configure("acme/widgets", "echo started; sleep 60 & sleep 60", timeout=1)
    sha = gh.state.commit_files("acme/widgets", "main", {"a.txt": "1\n"}, "Slow")
    ci.wait_idle(30)

    (result,) = ci.results
    assert result.conclusion == "timed_out" and result.exit_code is None
    assert result.duration < 15  # the reader did not wait for the background sleep
    run = only_run(gh, sha)
    assert run.conclusion == "failure"
    (check,) = [c for c in gh.state.check_runs.values() if c.head_sha == sha]
    assert check.conclusion == "timed_out"
    assert check.output["title"] == "test: timed out after 1s"
    log = gh.state.job_log(gh.state.workflow_jobs(run.id)[0].id)
    assert "started" in log and "maximum execution time" in log


def test_the_command_gets_a_minimal_environment(
    gh: Env, ci: CIRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_hostsecret")
    ci.configure("acme/widgets", "env | sort; pwd; ls", timeout=30)
    gh.state.commit_files("acme/widgets", "main", {"a.txt": "1\n"}, "Env")
    ci.wait_idle(30)

    (result,) = ci.results
    assert result.conclusion == "success"
    out = result.output
    assert "host-secret" not in out and "hostsecret" not in out and "GITHUB_TOKEN" not in out
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["CI"] == "true"
    assert env["GITHUB_SHA"] == result.head_sha
    assert env["GITHUB_WORKSPACE"].startswith(env["HOME"])
    assert "widgets" in out.splitlines() and "pyproject.toml" in out.splitlines()
    assert not list((gh.state.workdir / "ci").iterdir())  # the checkout is gone


def test_pushes_by_the_app_and_merges_run_ci_too(gh: Env, ci: CIRunner) -> None:
    ci.configure("acme/widgets", "true", timeout=30)
    bot = gh.installation_client()
    head = gh.state.branch_sha("acme/widgets", "main")
    bot.rest.git.create_ref(OWNER, REPO, ref="refs/heads/conductor/x", sha=head)
    alice = gh.state.as_user("alice")
    alice.push("acme/widgets", "topic", {"b.txt": "b\n"}, "Topic")
    pull = alice.open_pull("acme/widgets", title="Topic", head="topic")
    alice.merge_pull("acme/widgets", pull.number)
    ci.wait_idle(30)

    runs = sorted(gh.state.workflow_runs.values(), key=lambda r: r.id)
    assert [(r.head_branch, r.actor, r.conclusion) for r in runs] == [
        ("conductor/x", gh.state.app.bot_login, "success"),
        ("topic", "alice", "success"),
        ("main", "alice", "success"),
    ]


def test_admin_http_api(gh: Env, ci: CIRunner) -> None:
    with httpx.Client(base_url=f"{gh.url}/_admin", timeout=30) as admin:
        assert admin.get("/repos/acme/widgets/ci").json() == {"mode": "none"}
        assert admin.put("/repos/acme/widgets/ci", json={"mode": "sometimes"}).status_code == 422
        assert admin.put("/repos/acme/nope/ci", json={"command": "true"}).status_code == 404
        config = admin.put("/repos/acme/widgets/ci",
                           json={"command": "exit 3", "timeout": 30}).json()
        assert config["command"] == "exit 3" and config["mode"] == "normal"
        assert admin.get("/repos/acme/widgets/ci").json() == config
        commit = admin.post("/repos/acme/widgets/commits",
                            json={"branch": "main", "files": {"c.txt": "c\n"}})
        assert commit.status_code == 201
        assert admin.post("/ci/wait-idle", json={"timeout": 30}).json() == {"idle": True}
        (result,) = admin.get("/ci/results").json()
    assert (result["conclusion"], result["exit_code"]) == ("failure", 3)
    assert result["head_sha"] == commit.json()["sha"]
