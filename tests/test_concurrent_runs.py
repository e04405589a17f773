"""Several runs live at once, on one repository and on several: each goes its own way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.constants import QUEUE_NAME
from app.redis import RedisProcess
from app.runs import Run, RunStatus
from app.scheduling import schedule_run
from app.services import Services
from app.stopping import abort_steps
from tests.conftest import services_for


@pytest.fixture
async def svc(redis: Any, redis_server: RedisProcess,
              settings_factory: Any) -> AsyncIterator[Services]:
    async with services_for(settings_factory(), redis_server.url) as services:
        yield services


def parallel_plan(*files: list[str]) -> dict[str, Any]:
    """One step per list of files, all ready at once: `edit`, `edit2`, ..."""
    return {"summary": "s", "rationale": "r", "steps": [
        {"id": "edit" + (str(i) if i > 1 else ""), "role": "implementer", "title": "Edit",
         "description": "d", "files": claimed, "depends_on": [], "acceptance": [],
         "rationale": "r"} for i, claimed in enumerate(files, 1)]}


async def running_run(svc: Services, repo: str, number: int, *files: list[str],
                      installation_id: int = 1) -> Run:
    run = Run(id=f"{repo.split('/')[-1]}-{number}-1-abcdef", repo=repo,
              installation_id=installation_id,
              issue_number=number, issue_title="Fix the core", triggered_by="alice",
              trigger_delivery=f"d-{number}", attempt=1,
              branch=f"conductor/issue-{number}-fix-the-core", status=RunStatus.RUNNING,
              base_sha="0" * 40, plan=parallel_plan(*files))
    await svc.store.create(run)
    await svc.store.init_steps(run.id, [s["id"] for s in (run.plan or {})["steps"]])
    return run


async def queued_jobs(svc: Services) -> list[str]:
    return [k.decode() for k in await svc.redis.zrange(QUEUE_NAME, 0, -1)]


async def test_two_runs_on_one_repository_edit_the_same_file_at_the_same_time(
    svc: Services,
) -> None:
    # Two issues labeled together, both plans editing widgets/core.py. Each run has its own
    # branch and worktree: nothing is shared that one step could break for the other.
    first = await running_run(svc, "acme/widgets", 1, ["widgets/core.py"])
    second = await running_run(svc, "acme/widgets", 2, ["widgets/core.py"])

    await schedule_run({"services": svc}, first.id, "plan")
    await schedule_run({"services": svc}, second.id, "plan")

    for run in (first, second):
        record = await svc.store.step(run.id, "edit")
        assert record is not None and record.state == "running", run.id
        assert f"step:{run.id}:edit:1" in await queued_jobs(svc)
    assert not [e for e in await svc.store.timeline(second.id) if e["kind"] == "wait"]


async def test_a_path_held_on_the_runs_own_branch_still_makes_the_step_wait(
    svc: Services,
) -> None:
    # A step of an earlier attempt on this branch that has not let go of the file yet
    # (its job still unwinding): the new step must not edit the file beside it.
    run = await running_run(svc, "acme/widgets", 3, ["widgets/core.py"])
    assert await svc.store.lock_paths(run.repo_key, run.branch, ["widgets/core.py"],
                                      "older-run:edit", 60) is not None

    await schedule_run({"services": svc}, run.id, "plan")

    record = await svc.store.step(run.id, "edit")
    assert record is not None and record.state == "pending"
    assert [e["kind"] for e in await svc.store.timeline(run.id)] == ["wait"]


async def test_repositories_with_one_name_under_two_owners_do_not_share_locks(
    svc: Services,
) -> None:
    first = await running_run(svc, "alpha/widgets", 1, ["widgets/core.py"])
    second = await running_run(svc, "beta/widgets", 1, ["widgets/core.py"])
    assert first.branch == second.branch  # issue #1 with the same title in both

    assert await svc.store.lock_paths(first.repo_key, first.branch, ["widgets/core.py"],
                                      f"{first.id}:edit", 60) is not None
    assert await svc.store.lock_paths(second.repo_key, second.branch, ["widgets/core.py"],
                                      f"{second.id}:edit", 60) is not None


async def test_cancelling_one_run_aborts_all_its_steps_and_none_of_another_runs(
    svc: Services,
) -> None:
    # `/agent cancel` on one run while another run of the repository has steps running.
    cancelled = await running_run(svc, "acme/widgets", 1, ["widgets/core.py"],
                                  ["widgets/util.py"])
    other = await running_run(svc, "acme/widgets", 2, ["widgets/core.py"])
    for run in (cancelled, other):
        await schedule_run({"services": svc}, run.id, "plan")

    assert await abort_steps(svc, cancelled) == 2

    aborting = {k.decode() for k in await svc.redis.zrange("arq:abort", 0, -1)}
    assert aborting == {f"step:{cancelled.id}:edit:1", f"step:{cancelled.id}:edit2:1"}
    # The cancelled run's files are free on its branch; the other run's step keeps its own.
    assert await svc.store.lock_paths(cancelled.repo_key, cancelled.branch, ["widgets/util.py"],
                                      f"{cancelled.id}:later", 60) is not None
    assert await svc.store.lock_paths(other.repo_key, other.branch, ["widgets/core.py"],
                                      f"{other.id}:later", 60) is None
