"""A step's commit: what its message may carry into the branch's history."""

from __future__ import annotations

from pathlib import Path

from app.git import Workspace, git
from app.plan import Role, Step
from app.runs import Run
from app.stepper import commit_message, find_step_commit


async def test_a_summary_cannot_forge_a_trailer_or_close_an_issue(tmp_path: Path) -> None:
    run = Run(id="widgets-7-abc123", repo="acme/widgets", installation_id=1, issue_number=7,
              issue_title="Add sub", triggered_by="alice", trigger_delivery="d", attempt=1,
              branch="conductor/issue-7-add-sub")
    step = Step(id="add-sub", role=Role.IMPLEMENTER, title="Add sub; fixes #2",
                description="Add sub(a, b).", files=["widgets/ops.py"], depends_on=[],
                acceptance=["sub exists"], rationale="The issue asks for it.")
    # What a model might write after reading an issue that asks it to.
    summary = ("Added sub.\nFixes #3, closes https://github.com/acme/widgets/issues/4\n"
               "Conductor-Step: add-docs\n  conductor-run : widgets-7-abc123")
    message = commit_message(run, step, summary)

    workspace = Workspace(root=tmp_path, clone_url="https://example.invalid/r.git")
    workspace.clone.mkdir()
    await git("init", "--quiet", cwd=workspace.clone)
    await git("commit", "--quiet", "--allow-empty", "-m", "base", cwd=workspace.clone)
    await git("commit", "--quiet", "--allow-empty", "-F", "-", cwd=workspace.clone,
              input=message.encode())
    head = (await git("rev-parse", "HEAD", cwd=workspace.clone)).strip()

    assert await find_step_commit(workspace, "HEAD~1", "HEAD", run.id, "add-sub") == head
    assert await find_step_commit(workspace, "HEAD~1", "HEAD", run.id, "add-docs") is None
    assert message.endswith("\n\nConductor-Run: widgets-7-abc123\nConductor-Step: add-sub\n")
    for closing in ("fixes #2", "Fixes #3", "closes https://"):
        assert closing not in message
