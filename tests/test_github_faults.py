"""GitHub misbehaving or refusing, as the bot's jobs meet it: rate limits with and without
their headers, a dropped connection, a revoked token, a suspended installation and 422s. The
real client and jobs against the GitHub emulator and a real Redis."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import pytest
from arq import Retry
from githubkit.exception import RequestFailed

from app.events import Event
from app.git import REPOSITORY_GONE, RepositoryGone, push_refusal, transient_git_failure
from app.github import InstallationUnavailable, describe
from app.installations import handle_installation
from app.runs import RunStatus
from app.services import Services
from app.workspace import synced
from tests import test_triggers
from tests.emulators.github.testing import Env
from workers.main import _guarded, plan_run

env, svc = test_triggers.env, test_triggers.svc  # the same fixtures
started = test_triggers.started

REPO = "acme/widgets"
OWNER, NAME = REPO.split("/")


async def read_repo(env: Env, svc: Services) -> int:
    async with svc.github.installation(env.installation.id) as gh:
        return (await gh.rest.repos.async_get(OWNER, NAME)).status_code


def answers(env: Env, path: str) -> list[int]:
    return [r.status for r in env.state.requests if r.path == path]


def cloning_from(env: Env, svc: Services) -> Services:
    """`svc` with git pointed at the emulator too, for jobs that clone."""
    return dataclasses.replace(svc, settings=svc.settings.model_copy(
        update={"github_url": env.url}))


@pytest.mark.parametrize(("kind", "options", "seconds"), [
    # GitHub: no retry-after and no reset time means wait at least a minute.
    ("secondary_rate_limit", {"retry_after": None}, 60),
    ("secondary_rate_limit", {"retry_after": None, "status": 429}, 60),
    ("secondary_rate_limit", {"retry_after": 90}, 90),
    ("primary_rate_limit", {"retry_after": 2400}, 2400),
])
async def test_a_rate_limit_defers_the_job_without_waiting_in_it(
    env: Env, svc: Services, kind: str, options: dict[str, Any], seconds: int,
) -> None:
    await read_repo(env, svc)  # a token first: the fault is for the repository call
    env.state.add_fault(kind, path=f"/repos/{REPO}", **options)
    began = time.monotonic()
    with pytest.raises(Retry) as info:
        await _guarded({"job_try": 1}, read_repo(env, svc))
    assert time.monotonic() - began < 5  # asked once, not slept through in the job
    assert answers(env, f"/repos/{REPO}")[-1] == options.get("status", 403)
    assert answers(env, f"/repos/{REPO}").count(200) == 1
    assert info.value.defer_score is not None
    assert abs(info.value.defer_score / 1000 - seconds) <= 2
    assert await read_repo(env, svc) == 200


async def test_a_connection_dropped_mid_call_is_retried_later(env: Env,
                                                              svc: Services) -> None:
    await read_repo(env, svc)
    env.state.add_fault("drop", path=f"/repos/{REPO}")
    with pytest.raises(Retry):
        await _guarded({"job_try": 1}, read_repo(env, svc))
    assert await read_repo(env, svc) == 200


async def test_a_revoked_token_is_replaced_on_the_next_try(env: Env, svc: Services) -> None:
    await read_repo(env, svc)
    env.state.expire_tokens()  # revoked, or expired by GitHub's clock: 401 Bad credentials
    with pytest.raises(Retry):
        await _guarded({"job_try": 1}, read_repo(env, svc))
    assert answers(env, f"/repos/{REPO}")[-1] == 401
    assert await read_repo(env, svc) == 200
    tokens = f"/app/installations/{env.installation.id}/access_tokens"
    assert answers(env, tokens) == [201, 201]


async def test_a_run_whose_installation_was_suspended_stops_saying_so(
    env: Env, svc: Services
) -> None:
    run = await started(env, svc)
    svc = cloning_from(env, svc)
    with env.state.transaction():
        env.state.installations[env.installation.id].suspended_at = env.state.now()
    env.state.expire_tokens()
    with pytest.raises(InstallationUnavailable):
        await plan_run({"services": svc, "job_try": 1}, run.id)
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.status is RunStatus.NEEDS_HUMAN
    assert fresh.stop_reason is not None
    assert "403" in fresh.stop_reason and "This installation has been suspended" in \
        fresh.stop_reason
    assert "reinstall" in fresh.stop_reason and "/agent retry" in fresh.stop_reason
    notes = [e["message"] for e in await svc.store.timeline(run.id)]
    assert any(n.startswith("could not write the stop notice") for n in notes)
    assert await svc.store.active_run_id(run.repo_key, run.issue_number) is None


async def test_a_repository_git_cannot_find_stops_the_run_after_one_more_try(
    env: Env, svc: Services
) -> None:
    # Taken out of the installation, and the webhook saying so never arrived: the planning
    # job's clone is what finds out.
    run = await started(env, svc)
    svc = cloning_from(env, svc)
    env.state.remove_repositories(env.installation.id, [REPO])
    with pytest.raises(Retry):
        await plan_run({"services": svc, "job_try": 1}, run.id)
    assert (await svc.store.get(run.id)).status.active  # type: ignore[union-attr]
    with pytest.raises(RepositoryGone):
        await plan_run({"services": svc, "job_try": 2}, run.id)
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.status is RunStatus.NEEDS_HUMAN
    assert fresh.stop_reason == f"planning failed: {REPOSITORY_GONE}"
    assert "removed from the App's installation" in REPOSITORY_GONE
    assert "/agent retry" in REPOSITORY_GONE
    assert await svc.store.active_run_id(run.repo_key, run.issue_number) is None


@pytest.mark.parametrize(("action", "reason", "advice"), [
    ("deleted", "Conductor was uninstalled from acme by @maggie", "install the App"),
    ("suspend", "Conductor's installation on acme was suspended by @maggie",
     "unsuspend the installation"),
])
async def test_uninstalling_or_suspending_the_app_stops_its_runs_when_github_says_so(
    env: Env, svc: Services, action: str, reason: str, advice: str
) -> None:
    run = await started(env, svc)
    with env.state.transaction():
        if action == "deleted":
            del env.state.installations[env.installation.id]
        else:
            env.state.installations[env.installation.id].suspended_at = env.state.now()
    env.state.expire_tokens()
    payload = {"action": action, "sender": {"login": "maggie"},
               "installation": {"id": env.installation.id, "account": {"login": "acme"}}}
    said = await handle_installation({"services": svc, "redis": svc.redis},
                                     Event("d-1", "installation", "installation", payload))
    assert said.endswith(f"; stopped {run.id}")
    fresh = await svc.store.get(run.id)
    assert fresh is not None and fresh.status is RunStatus.NEEDS_HUMAN
    assert fresh.stop_reason == reason
    notes = [e["message"] for e in await svc.store.timeline(run.id)]
    assert any(n.startswith(advice) and "/agent retry" in n for n in notes), notes
    assert any(n.startswith("could not write the stop notice") for n in notes), notes
    assert await svc.store.active_run_id(run.repo_key, run.issue_number) is None


async def test_a_refused_pull_request_says_what_github_said(env: Env, svc: Services) -> None:
    async with svc.github.installation(env.installation.id) as gh:
        with pytest.raises(RequestFailed) as info:
            await gh.rest.pulls.async_create(OWNER, NAME, title="x", head="main", base="main")
    assert describe(info.value) == (
        f"GitHub answered 422 to POST /repos/{REPO}/pulls: Validation Failed "
        "(No commits between main and main)")
    async with svc.github.installation(env.installation.id) as gh:
        with pytest.raises(RequestFailed) as info:
            await gh.rest.pulls.async_create(OWNER, NAME, title="x", head="main", base="gone")
    assert describe(info.value) == (
        f"GitHub answered 422 to POST /repos/{REPO}/pulls: Validation Failed (base invalid)")


BRANCH = "conductor/issue-1-add-sub"
GH006 = f"""remote: error: GH006: Protected branch update failed for refs/heads/{BRANCH}.
remote: error: Cannot push to this branch
error: failed to push some refs to 'https://github.com/acme/widgets.git'
"""
GH013 = f"""remote: error: GH013: Repository rule violations found for refs/heads/{BRANCH}.
remote: Review all repository rules at https://github.com/acme/widgets/rules?ref=refs%2Fheads%2F
remote:
remote: - Cannot create ref due to creations being restricted.
remote:
error: failed to push some refs to 'https://github.com/acme/widgets.git'
"""


@pytest.mark.parametrize(("output", "fix", "said"), [
    (GH006, "exclude `conductor/*` from the protection rule", "Cannot push to this branch"),
    (GH013, "add the App to the ruleset's bypass list",
     "Cannot create ref due to creations being restricted."),
])
def test_a_push_declined_by_protection_or_a_ruleset_names_the_fix(output: str, fix: str,
                                                                 said: str) -> None:
    reason = push_refusal(output, BRANCH)
    assert reason is not None
    assert reason.startswith("GitHub refused the push: ") and fix in reason
    assert f"`{BRANCH}`" in reason and said in reason


def test_a_push_to_an_archived_repository_says_to_unarchive_it() -> None:
    output = ("remote: This repository was archived so it is read-only.\n"
              "fatal: unable to access 'https://github.com/acme/widgets.git/': The requested "
              "URL returned error: 403\n")
    reason = push_refusal(output, BRANCH)
    assert reason is not None and "unarchive it" in reason


def test_a_push_failure_github_did_not_explain_is_left_as_git_said() -> None:
    assert push_refusal("fatal: the remote end hung up unexpectedly\n", BRANCH) is None


@pytest.mark.parametrize(("output", "transient"), [
    ("error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502\n"
     "send-pack: unexpected disconnect while reading sideband packet\n"
     "fatal: the remote end hung up unexpectedly\n", True),
    ("fatal: unable to access 'https://github.com/acme/widgets.git/': Could not resolve host: "
     "github.com\n", True),
    ("error: RPC failed; HTTP 429 curl 22 The requested URL returned error: 429\n", True),
    (GH006, False),
    (GH013, False),
    ("remote: This repository was archived so it is read-only.\nfatal: unable to access "
     "'https://github.com/acme/widgets.git/': The requested URL returned error: 403\n", False),
    (f"To https://github.com/acme/widgets.git\n ! [rejected]        HEAD -> {BRANCH} "
     "(fetch first)\nerror: failed to push some refs\n", False),
])
def test_only_a_failure_on_githubs_side_counts_as_worth_pushing_again(output: str,
                                                                     transient: bool) -> None:
    assert transient_git_failure(output) is transient


async def test_git_is_given_a_token_for_the_runs_repository_only(
    env: Env, svc: Services
) -> None:
    # A token that leaked from a clone (a process listing, a crash dump) reaches nothing but
    # the repository the run works on, not everything the installation can see.
    env.state.create_repo("acme/payroll", files={"salaries.csv": "alice,1\n"})
    run = await started(env, svc)
    svc = cloning_from(env, svc)
    workspace, token = await synced(svc, run)
    assert (workspace.clone / ".git").is_dir()
    [issued] = [t for t in env.state.tokens.values() if t.token == token]
    assert issued.repository_ids == [env.repo.id]
    api = str(svc.settings.github_api_url).rstrip("/")
    async with httpx.AsyncClient(headers={"Authorization": f"token {token}"}) as client:
        assert (await client.get(f"{api}/repos/{REPO}")).status_code == 200
        assert (await client.get(f"{api}/repos/acme/payroll")).status_code == 404
