"""Planning a fix for a CI failure: the orchestrator reads the evidence and plans one to a few
steps (implementer or test engineer), which join the run's plan under `fix<N>-` ids and run
like any other step, on top of the branch as it is (people's commits included).

The fix plan is validated like the first plan, plus its own rules (roles, size). The model
sees the CI output, the issue and people's commit subjects as untrusted data, and the
instructions of `/agent retry` as marked notes from someone with write access.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.agent import Agent, AgentFailed, Finished, TurnLimitExceeded, untrusted
from app.budget import Budget
from app.limits import Limits
from app.plan import Plan, Role, Step, plan_tool, validate_plan
from app.plan_templates import get_template
from app.planning import issue_context, load_config, planner_system, retry_notes
from app.render import render
from app.runs import Run
from app.services import Services
from app.terminal import TerminalTools
from app.tools import Toolbox
from app.workspace import human_commits, synced

FIX_ROLES = frozenset({Role.IMPLEMENTER, Role.TEST_ENGINEER})
MAX_FIX_STEPS = 3


class FixNotPlanned(Exception):
    """The planner gave no valid fix; the message says why."""


@dataclass(frozen=True)
class Failure:
    """A CI failure as the fixer sees it."""

    sha: str
    kind: str
    tests: list[str]
    evidence: str  # trimmed, redacted CI output
    previous: list[str]  # one line per earlier attempt on this PR


def fix_errors(plan: Plan) -> list[str]:
    """The rules a fix plan follows beyond the first plan's."""
    errors = []
    if len(plan.steps) > MAX_FIX_STEPS:
        errors.append(f"a fix has at most {MAX_FIX_STEPS} steps, not {len(plan.steps)}")
    for step in plan.steps:
        if step.role not in FIX_ROLES:
            errors.append(f"step {step.id}: a fix step's role is implementer or test_engineer, "
                          f"not {step.role.value}")
    return errors


def renamed(plan: Plan, number: int, taken: set[str]) -> list[Step]:
    """The fix plan's steps with ids `fix<number>-<id>` (unique in the run); dependencies
    outside the fix plan are dropped: every earlier step is done."""
    names: dict[str, str] = {}
    for step in plan.steps:
        base = f"fix{number}-{step.id}"[:40].rstrip("-")
        name, n = base, 2
        while name in taken or name in names.values():
            name = f"{base[:36]}-{n}"
            n += 1
        names[step.id] = name
    return [step.model_copy(update={"id": names[step.id],
                                    "depends_on": [names[d] for d in step.depends_on
                                                   if d in names]})
            for step in plan.steps]


async def plan_fix(svc: Services, run: Run, failure: Failure, limits: Limits,
                   budget: Budget) -> Plan:
    """Ask the orchestrator for a fix; raises `FixNotPlanned` (or `BudgetExceeded`)."""
    assert run.base_sha is not None and run.head_sha is not None
    workspace, _token = await synced(svc, run)
    config = await load_config(svc, run, workspace, run.base_sha, record_errors=False)
    template = get_template(run.plan_template or "generic")
    system = await planner_system(svc, run, workspace, run.base_sha, config, template)
    goal, _body = await issue_context(svc, run)
    people = await human_commits(workspace, run.base_sha, run.head_sha)
    plan = run.plan or {}
    task = render(
        "prompts/fix.md.j2", run=run, goal=goal, sha=failure.sha[:7], kind=failure.kind,
        plan_summary=untrusted("plan summary", str(plan.get("summary", ""))),
        done_steps=plan.get("steps", []),
        evidence=untrusted("CI output", (f"Failing tests: {', '.join(failure.tests[:10])}\n\n"
                                         if failure.tests else "") + failure.evidence),
        previous=failure.previous,
        last_diagnosis=untrusted("last diagnosis", run.diagnosis) if run.diagnosis else "",
        max_steps=MAX_FIX_STEPS,
    )
    if people:
        listing = "\n".join(f"- {c.sha[:7]} by {c.author}: {c.subject} "
                            f"({', '.join(c.files[:8])})" for c in people)
        task += "\n\n## Commits people pushed to the branch (keep them; build on them)\n\n"
        task += untrusted("commits by people", listing)
    notes = retry_notes(run)
    if notes:
        task += "\n\n" + notes
    worktree = await workspace.add_worktree(f"{run.id}-fix{run.fix_round + 1}", run.head_sha)
    try:
        agent = Agent(
            svc.models, model=config.model_for("orchestrator"), system_blocks=system,
            tools=TerminalTools(Toolbox(worktree, editable=False, allowed=None,
                                           readable=limits.allowed_protected), [plan_tool()]),
            terminal_tools={"submit_plan"}, max_turns=30, max_tokens=8000, role="orchestrator",
            budget=budget, trace={"run": run.id, "step": None, "fix": run.fix_round + 1},
        )
        try:
            finished: Finished = await agent.run([{"role": "user", "content": task}])
            errors: list[str] = []
            for attempt in range(1, limits.max_plan_attempts + 1):
                fix, errors = validate_plan(finished.input, limits)
                if fix is not None:
                    errors = fix_errors(fix)
                    if not errors:
                        return fix
                if attempt == limits.max_plan_attempts:
                    break
                finished = await agent.resume(
                    finished, "The fix plan was refused. Fix every problem and call "
                    "submit_plan again:\n" + "\n".join(f"{i}. {e}"
                                                       for i, e in enumerate(errors, 1)))
        except (AgentFailed, TurnLimitExceeded) as exc:
            raise FixNotPlanned(f"the planner did not finish: {exc}") from exc
        raise FixNotPlanned("the fix plan was still invalid: " + "; ".join(errors))
    finally:
        await workspace.remove_worktree(worktree)


def as_plan_steps(steps: list[Step]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in steps]
