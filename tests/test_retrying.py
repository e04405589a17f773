"""Where `/agent retry` resumes, and the rules a CI-fix plan follows (pure parts)."""

from __future__ import annotations

from typing import Any

from app.fixing import fix_errors, renamed
from app.plan import Plan
from app.retrying import resume_point
from app.runs import Run, StepRecord


def _run(**fields: Any) -> Run:
    run = Run(id="w-1-a", repo="acme/widgets", installation_id=1, issue_number=1,
              issue_title="t", triggered_by="alice", trigger_delivery="d", attempt=1,
              branch="conductor/issue-1-t")
    for key, value in fields.items():
        setattr(run, key, value)
    return run


PLAN = {"summary": "s", "rationale": "r", "steps": [
    {"id": "a", "role": "implementer", "title": "A", "description": "d", "files": ["a.py"],
     "depends_on": [], "acceptance": [], "rationale": "r"},
    {"id": "b", "role": "test_engineer", "title": "B", "description": "d", "files": ["b.py"],
     "depends_on": ["a"], "acceptance": [], "rationale": "r"},
]}


def _steps(**states: str) -> dict[str, StepRecord]:
    return {sid: StepRecord(id=sid, state=state) for sid, state in states.items()}


def test_a_run_without_a_plan_plans_again() -> None:
    assert resume_point(_run(), {}) == "plan"


def test_failed_or_interrupted_steps_run_again() -> None:
    assert resume_point(_run(plan=PLAN), _steps(a="done", b="failed")) == "steps"
    assert resume_point(_run(plan=PLAN), _steps(a="running")) == "steps"  # cancelled mid-step


def test_finished_steps_without_a_pull_request_open_it() -> None:
    assert resume_point(_run(plan=PLAN), _steps(a="done", b="done")) == "finalize"


def test_a_red_head_gets_a_fix_and_a_moved_head_is_verified_first() -> None:
    red = [{"sha": "1" * 40, "started_at": 1.0, "verdict": "red"}]
    base = {"plan": PLAN, "pr_number": 2, "ci": red}
    done = _steps(a="done", b="done")
    assert resume_point(_run(**base, head_sha="1" * 40), done) == "ci-fix"
    # Someone pushed after the failure: CI on their commit decides first.
    assert resume_point(_run(**base, head_sha="2" * 40), done) == "verify"
    # CI never finished (required checks missing, or cancelled while waiting).
    unfinished = [{"sha": "1" * 40, "started_at": 1.0, "verdict": "missing"}]
    assert resume_point(_run(plan=PLAN, pr_number=2, ci=unfinished, head_sha="1" * 40),
                        done) == "verify"


def test_fix_plans_use_fixing_roles_and_stay_small() -> None:
    fix = Plan.model_validate({**PLAN, "steps": [
        {**PLAN["steps"][0], "role": "refactorer"}, PLAN["steps"][1],
        {**PLAN["steps"][0], "id": "c"}, {**PLAN["steps"][0], "id": "d"}]})
    errors = fix_errors(fix)
    assert "a fix has at most 3 steps, not 4" in errors
    assert any("step a" in e and "refactorer" in e for e in errors)
    assert fix_errors(Plan.model_validate(PLAN)) == []


def test_fix_steps_get_unique_ids_and_keep_their_own_dependencies() -> None:
    fix = Plan.model_validate(PLAN)
    steps = renamed(fix, 2, taken={"fix2-a"})
    assert [s.id for s in steps] == ["fix2-a-2", "fix2-b"]
    assert steps[1].depends_on == ["fix2-a-2"]
