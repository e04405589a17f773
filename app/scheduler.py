"""Which steps of a plan run next: a pure function of the plan and the steps' states.

A step is ready when it is pending and every step it depends on is done. Ready steps run
together only when their file patterns cannot touch a common path, so two workers never
edit the same file at once; a step that overlaps a running one waits for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Literal

from app.globs import patterns_overlap
from app.plan import Plan

Outcome = Literal["running", "done", "failed", "blocked"]


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


FINISHED = frozenset({StepState.DONE, StepState.SKIPPED})


def claims_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """Could two steps with these file patterns touch the same path?"""
    others = list(b)
    return any(patterns_overlap(x, y) for x in a for y in others)


def ready_steps(plan: Plan, states: Mapping[str, StepState],
                running_claims: Mapping[str, list[str]], slots: int) -> list[str]:
    """Up to `slots` steps to start now, in plan order.

    `running_claims` maps each running step to its file patterns. A step that `states` marks
    running holds its plan files as well, so a missing claim cannot let two writers collide.
    A step missing from `states` is pending.
    """
    if slots <= 0:
        return []
    claims: list[list[str]] = [list(files) for files in running_claims.values()]
    claims += [list(step.files) for step in plan.steps
               if states.get(step.id) == StepState.RUNNING and step.id not in running_claims]
    chosen: list[str] = []
    for step in plan.steps:
        if states.get(step.id, StepState.PENDING) != StepState.PENDING:
            continue
        if any(states.get(dep) != StepState.DONE for dep in step.depends_on):
            continue
        if any(claims_overlap(step.files, held) for held in claims):
            continue
        chosen.append(step.id)
        claims.append(list(step.files))
        if len(chosen) == slots:
            break
    return chosen


def blocked_steps(plan: Plan, states: Mapping[str, StepState]) -> list[str]:
    """Pending steps that can never become ready: a dependency failed, was skipped or is
    itself blocked (or is no step of the plan), in plan order."""
    can_finish = {step.id for step in plan.steps
                  if states.get(step.id) in (StepState.DONE, StepState.RUNNING)}
    changed = True
    while changed:  # grow the set of steps that may still finish until it stops growing
        changed = False
        for step in plan.steps:
            if (step.id not in can_finish
                    and states.get(step.id, StepState.PENDING) == StepState.PENDING
                    and all(dep in can_finish for dep in step.depends_on)):
                can_finish.add(step.id)
                changed = True
    return [step.id for step in plan.steps
            if states.get(step.id, StepState.PENDING) == StepState.PENDING
            and step.id not in can_finish]


def run_outcome(plan: Plan, states: Mapping[str, StepState]) -> Outcome:
    """`failed` once a step failed; `done` when every step is done or skipped; `blocked` when
    nothing runs and no pending step can ever start; otherwise `running`."""
    current = [states.get(step.id, StepState.PENDING) for step in plan.steps]
    if StepState.FAILED in current:
        return "failed"
    if all(state in FINISHED for state in current):
        return "done"
    if StepState.RUNNING not in current:
        pending = [s.id for s, state in zip(plan.steps, current, strict=True)
                   if state == StepState.PENDING]
        if pending and set(pending) <= set(blocked_steps(plan, states)):
            return "blocked"
    return "running"
