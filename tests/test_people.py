"""People acting on the bot's pull request or branch while its run is live: pushing, force-
pushing, resetting, closing, merging. The real handlers and CI jobs against the GitHub
emulator and a real Redis, fed the payloads the emulator's own webhooks carry."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app import verify
from app.commands import PR_KEY
from app.events import Event
from app.pr_events import handle_pull_request
from app.routing import route
from app.runs import Run, RunStatus
from app.services import Services
from app.stopping import stop_run
from app.verify import DONE_LABEL
from tests import test_triggers
from tests.emulators.github.testing import Env

env, svc = test_triggers.env, test_triggers.svc  # the same fixtures
started, identity, last_event = test_triggers.started, test_triggers.identity, \
    test_triggers.last_event

REPO = "acme/widgets"
PLAN_A = {"summary": "s", "rationale": "r", "steps": [
    {"id": "a", "role": "implementer", "title": "Add a", "description": "d",
     "files": ["widgets/a.py"], "depends_on": [], "acceptance": [], "rationale": "r"}]}


def bot_commit(env: Env, run: Run, step: str, files: dict[str, str | None]) -> str:
    """A commit of step `step` on the run's branch, as the bot's push would leave it."""
    message = f"Step {step}\n\nConductor-Run: {run.id}\nConductor-Step: {step}\n"
    return env.state.commit_files(REPO, run.branch, files, message,
                                  author=env.state.app.bot_login)


@pytest.fixture
async def verifying(env: Env, svc: Services) -> Run:
    """A run whose two steps pushed, whose draft PR is open and which waits on CI."""
    from app.pulls import upsert_pull_request

    run = await started(env, svc)
    base = env.state.git(env.repo).ref_sha("refs/heads/main")
    first = bot_commit(env, run, "a", {"widgets/a.py": "A = 1\n"})
    second = bot_commit(env, run, "b", {"widgets/b.py": "B = 2\n"})
    for sha in (first, second):
        await svc.store.map_commit(run.repo_key, sha, run.id)
    run = await svc.store.set_fields(run.id, base_sha=base, head_sha=second,
                                     status=RunStatus.VERIFYING) or run
    number, url = await upsert_pull_request(svc, run)
    await svc.redis.set(PR_KEY.format(repo=run.repo_key, number=number), run.id)
    run = await svc.store.set_fields(run.id, pr_number=number, pr_url=url) or run
    await verify.begin(svc, run.id)
    return await svc.store.get(run.id) or run


class Answers:
    """Stands in for a command's `answer`: what the bot reacted and replied."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str | None]] = []

    @property
    def emojis(self) -> list[str]:
        return [emoji for emoji, _ in self.said]

    async def __call__(self, emoji: str, reply: str | None = None) -> None:
        self.said.append((emoji, reply))


async def deliver(env: Env, svc: Services, name: str, payload: dict[str, Any]) -> str:
    decision = route(name, payload, identity(env))
    if decision.kind is None:
        return f"routed away: {decision.ignored}"
    event = Event(delivery_id=f"p-{len(env.state.events)}", name=name, kind=decision.kind,
                  payload=payload)
    handler = handle_pull_request if decision.kind == "pull_request" else verify.ci_event
    return await handler({"services": svc}, event)


async def fresh(svc: Services, run: Run) -> Run:
    found = await svc.store.get(run.id)
    assert found is not None
    return found


def pull(env: Env, number: int) -> Any:
    return next(p for p in env.state.pulls.values()
                if p.repo_id == env.repo.id and p.number == number)


def labels(env: Env, number: int) -> set[str]:
    issue = next(i for i in env.state.issues.values()
                 if i.repo_id == env.repo.id and i.number == number)
    return set(issue.labels)


async def evaluate(svc: Services, run: Run, sha: str) -> str:
    settle = svc.settings.model_copy(update={"conductor_ci_settle_seconds": 0.0})
    return await verify.evaluate_ci({"services": dataclasses.replace(svc, settings=settle)},
                                    run.id, sha)


async def test_a_push_while_the_fix_is_queued_is_waited_on_not_left_hanging(
    env: Env, svc: Services, verifying: Run
) -> None:
    run = verifying
    red = run.head_sha
    assert red is not None
    env.state.create_status(REPO, red, "failure", "test", description="1 failed")
    assert (await evaluate(svc, run, red)).startswith("CI red")
    assert (await fresh(svc, run)).status is RunStatus.FIXING
    # Before the fix job runs, alice pushes her own fix.
    mine = env.state.as_user("alice").push(REPO, run.branch, {"widgets/b.py": "B = 3\n"},
                                           "Fix b by hand")
    await deliver(env, svc, "pull_request", last_event(env, "pull_request", "synchronize"))
    await verify.fix_ci({"services": svc}, run.id, red)  # the queued job, now stale
    waiting = await fresh(svc, run)
    assert waiting.status is RunStatus.VERIFYING and waiting.ci[-1]["sha"] == mine
    env.state.create_status(REPO, mine, "success", "test")
    await evaluate(svc, run, mine)
    done = await fresh(svc, run)
    assert done.status is RunStatus.DONE
    assert not pull(env, run.pr_number or 0).draft
    assert DONE_LABEL in labels(env, run.issue_number)


async def test_resetting_the_branch_to_an_earlier_commit_makes_ci_wait_on_that_commit(
    env: Env, svc: Services, verifying: Run
) -> None:
    run = verifying
    dropped = run.head_sha
    first = env.state.git(env.repo).rev_parse(f"{dropped}~1")
    alice = env.state.as_user("alice")
    env.state.update_git_ref(alice.principal, env.repo, f"refs/heads/{run.branch}", first,
                             force=True)  # `git reset --hard HEAD~1 && git push -f`
    await deliver(env, svc, "pull_request", last_event(env, "pull_request", "synchronize"))
    assert (await fresh(svc, run)).head_sha == first
    # CI on the commit she dropped reports green; the PR's commit is red.
    assert dropped is not None
    env.state.create_status(REPO, dropped, "success", "test")
    assert (await evaluate(svc, run, dropped)).startswith("stale")
    env.state.create_status(REPO, first, "failure", "test")
    assert (await evaluate(svc, run, first)).startswith("CI red")
    assert pull(env, run.pr_number or 0).draft
    assert DONE_LABEL not in labels(env, run.issue_number)


@pytest.mark.parametrize("merged", [False, True])
async def test_closing_or_merging_the_pr_before_ci_finishes_ends_the_run(
    env: Env, svc: Services, verifying: Run, merged: bool
) -> None:
    run = verifying
    alice = env.state.as_user("alice")
    if merged:
        alice.mark_ready(REPO, run.pr_number or 0)  # GitHub merges no draft
        alice.merge_pull(REPO, run.pr_number or 0)
    else:
        alice.close_pull(REPO, run.pr_number or 0)
    await deliver(env, svc, "pull_request", last_event(env, "pull_request", "closed"))
    ended = await fresh(svc, run)
    assert ended.status is RunStatus.CANCELLED and ended.outcome is not None
    assert ended.outcome["merged"] is merged
    assert run.head_sha is not None
    env.state.create_status(REPO, run.head_sha, "success", "test")
    assert (await evaluate(svc, run, run.head_sha)).startswith("stale")
    assert DONE_LABEL not in labels(env, run.issue_number)
    assert await svc.store.active_run_id(run.repo_key, run.issue_number) is None


async def test_deleting_the_branch_ends_the_run_and_retry_restores_it_and_reopens_the_pr(
    env: Env, svc: Services, verifying: Run
) -> None:
    from app.retrying import retry

    run = verifying
    env.state.as_user("alice").delete_branch(REPO, run.branch)
    await deliver(env, svc, "pull_request", last_event(env, "pull_request", "closed"))
    ended = await fresh(svc, run)
    assert ended.status is RunStatus.CANCELLED
    assert ended.stop_reason == "the pull request was closed by @alice"
    assert ended.outcome is not None and ended.outcome["merged"] is False
    assert await svc.store.active_run_id(run.repo_key, run.issue_number) is None

    answer = Answers()
    outcome = await retry(svc, ended, "alice", "", answer)

    assert outcome.startswith("retry 1 by alice: ") and answer.emojis == ["rocket"]
    assert env.state.git(env.repo).ref_sha(f"refs/heads/{run.branch}") == run.head_sha
    assert not pull(env, run.pr_number or 0).merged
    issue = next(i for i in env.state.issues.values()
                 if i.repo_id == env.repo.id and i.number == run.pr_number)
    assert issue.state == "open"
    again = await fresh(svc, run)
    assert again.status.active and again.outcome is None
    notes = [e["message"] for e in await svc.store.timeline(run.id)]
    assert f"pull request #{run.pr_number} reopened for the retry by @alice" in notes


async def test_retry_after_the_pr_was_merged_is_refused_and_restores_nothing(
    env: Env, svc: Services, verifying: Run
) -> None:
    from app.retrying import retry

    run = verifying
    alice = env.state.as_user("alice")
    alice.mark_ready(REPO, run.pr_number or 0)
    alice.merge_pull(REPO, run.pr_number or 0)
    await deliver(env, svc, "pull_request", last_event(env, "pull_request", "closed"))
    alice.delete_branch(REPO, run.branch)  # "automatically delete head branches"
    answer = Answers()
    outcome = await retry(svc, await fresh(svc, run), "alice", "", answer)

    assert outcome == "retry refused: the pull request is merged"
    [(emoji, reply)] = answer.said
    assert emoji == "confused" and "is merged" in (reply or "")
    assert env.state.git(env.repo).ref_sha(f"refs/heads/{run.branch}") is None
    assert (await fresh(svc, run)).status is RunStatus.CANCELLED


async def test_a_branch_deleted_before_the_pr_opens_stops_the_run_without_a_pr(
    env: Env, svc: Services
) -> None:
    from app.finalize import finalize_run

    run = await started(env, svc)
    base = env.state.git(env.repo).ref_sha("refs/heads/main")
    sha = bot_commit(env, run, "a", {"widgets/a.py": "A = 1\n"})
    run = await svc.store.set_fields(run.id, base_sha=base, head_sha=sha,
                                     plan=PLAN_A, status=RunStatus.FINALIZING) or run
    await svc.store.init_steps(run.id, ["a"])
    record = await svc.store.step(run.id, "a")
    assert record is not None
    record.state, record.commit = "done", sha
    await svc.store.save_step(run.id, record)
    env.state.as_user("alice").delete_branch(REPO, run.branch)

    assert await finalize_run({"services": svc}, run.id) == "stopped: branch deleted"

    ended = await fresh(svc, run)
    assert ended.status is RunStatus.CANCELLED and ended.pr_number is None
    assert f"`{run.branch}` was deleted on GitHub" in (ended.stop_reason or "")
    assert not [p for p in env.state.pulls.values() if p.repo_id == env.repo.id]
    notice = [c.body for c in sorted(env.state.comments.values(), key=lambda c: c.id)
              if c.repo_id == env.repo.id and c.issue_number == run.issue_number
              and "stopped run" in c.body]
    assert notice and f"put the branch back at `{sha[:7]}`" in notice[-1]


async def test_a_retry_whose_deleted_branch_github_cannot_restore_says_so(
    env: Env, svc: Services
) -> None:
    from app.retrying import retry

    run = await started(env, svc)
    await stop_run(svc, run, RunStatus.CANCELLED, "the branch was deleted")
    # The run pushed a commit that GitHub has since lost along with the branch.
    await svc.store.set_fields(run.id, head_sha="f" * 40, plan=PLAN_A)
    answer = Answers()
    stopped_run = await fresh(svc, run)
    outcome = await retry(svc, stopped_run, "alice", "", answer)

    assert outcome == "retry refused: the branch and its commits are gone"
    [(emoji, reply)] = answer.said
    assert emoji == "confused" and reply is not None
    assert "GitHub no longer has its commit `fffffff`" in reply
    assert "Label the issue again" in reply
    assert (await fresh(svc, run)).status is RunStatus.CANCELLED
    assert env.state.git(env.repo).ref_sha(f"refs/heads/{run.branch}") is None


async def test_green_ci_on_a_commit_pushed_over_does_not_mark_the_pr_ready(
    env: Env, svc: Services, verifying: Run
) -> None:
    run = verifying
    old = run.head_sha
    assert old is not None
    # alice pushes; GitHub's synchronize webhook is late (or lost), CI on the old commit is not.
    mine = env.state.as_user("alice").push(REPO, run.branch, {"widgets/b.py": "B = 3\n"},
                                           "Tweak b")
    env.state.create_status(REPO, old, "success", "test")
    await evaluate(svc, run, old)
    waiting = await fresh(svc, run)
    assert waiting.status is RunStatus.VERIFYING and waiting.head_sha == mine
    assert waiting.ci[-1]["sha"] == mine and not waiting.ci[-1].get("finished_at")
    assert pull(env, run.pr_number or 0).draft
    assert DONE_LABEL not in labels(env, run.issue_number)
    # The late webhook changes nothing more; CI on her commit decides.
    await deliver(env, svc, "pull_request", last_event(env, "pull_request", "synchronize"))
    assert len((await fresh(svc, run)).ci) == len(waiting.ci)
    env.state.create_status(REPO, mine, "success", "test")
    await evaluate(svc, run, mine)
    assert (await fresh(svc, run)).status is RunStatus.DONE
    assert not pull(env, run.pr_number or 0).draft


async def test_a_pr_marked_ready_and_edited_by_hand_while_main_moves_on_still_finishes(
    env: Env, svc: Services, verifying: Run
) -> None:
    run = verifying
    number = run.pr_number or 0
    alice = env.state.as_user("alice")
    alice.mark_ready(REPO, number)
    env.state.update_pull(alice.principal, REPO, number, body="My own notes.")
    env.state.commit_files(REPO, "main", {"NEWS.md": "Unrelated.\n"}, "Meanwhile on main")
    for action in ("ready_for_review", "edited"):
        await deliver(env, svc, "pull_request", last_event(env, "pull_request", action))
    assert run.head_sha is not None
    env.state.create_status(REPO, run.head_sha, "success", "test")
    assert (await evaluate(svc, run, run.head_sha)).startswith("CI green")
    assert (await fresh(svc, run)).status is RunStatus.DONE
    assert DONE_LABEL in labels(env, run.issue_number)
    issue = next(i for i in env.state.issues.values()
                 if i.repo_id == env.repo.id and i.number == number)
    assert "My own notes." not in (issue.body or "")  # the bot's report again
