from typing import Any

from app.plan import Plan
from app.scheduler import StepState, blocked_steps, ready_steps, run_outcome

P, R, D, F, S = (StepState.PENDING, StepState.RUNNING, StepState.DONE, StepState.FAILED,
                 StepState.SKIPPED)


def make_plan(*steps: tuple[str, list[str], list[str]] | tuple[str, list[str], list[str], str],
              ) -> Plan:
    """Steps as (id, files, depends_on[, role])."""
    data: list[dict[str, Any]] = []
    for spec in steps:
        step_id, files, deps = spec[0], spec[1], spec[2]
        role = spec[3] if len(spec) == 4 else "implementer"
        data.append({"id": step_id, "role": role, "title": step_id, "description": "d",
                     "files": files, "depends_on": deps, "acceptance": [], "rationale": "r"})
    return Plan.model_validate({"summary": "s", "rationale": "r", "steps": data})


def states(plan: Plan, **given: StepState) -> dict[str, StepState]:
    return {s.id: given.get(s.id, P) for s in plan.steps}


def test_disjoint_steps_are_ready_together() -> None:
    plan = make_plan(("api", ["src/api.py"], []), ("tests", ["tests/test_api.py"], []))
    assert ready_steps(plan, states(plan), {}, slots=4) == ["api", "tests"]


def test_overlapping_steps_are_not_ready_together() -> None:
    plan = make_plan(("a", ["src/**"], []), ("b", ["src/app.py"], []),
                     ("c", ["docs/*.md"], []))
    assert ready_steps(plan, states(plan), {}, slots=4) == ["a", "c"]


def test_step_overlapping_a_running_step_waits() -> None:
    plan = make_plan(("a", ["src/*.py"], []), ("b", ["src/app.py"], []),
                     ("c", ["tests/*.py"], []))
    current = states(plan, a=R)
    assert ready_steps(plan, current, {"a": ["src/*.py"]}, slots=4) == ["c"]


def test_a_running_step_holds_its_files_even_without_a_claim() -> None:
    plan = make_plan(("a", ["src/app.py"], []), ("b", ["src/app.py"], []))
    assert ready_steps(plan, states(plan, a=R), {}, slots=4) == []


def test_claims_of_other_work_are_respected() -> None:
    plan = make_plan(("a", ["src/app.py"], []))
    assert ready_steps(plan, states(plan), {"elsewhere": ["src/**"]}, slots=1) == []


def test_dependencies_must_be_done() -> None:
    plan = make_plan(("impl", ["src/a.py"], []), ("test", ["tests/test_a.py"], ["impl"]))
    assert ready_steps(plan, states(plan), {}, slots=4) == ["impl"]
    assert ready_steps(plan, states(plan, impl=R), {"impl": ["src/a.py"]}, slots=4) == []
    assert ready_steps(plan, states(plan, impl=D), {}, slots=4) == ["test"]
    # a skipped dependency is not a done one
    assert ready_steps(plan, states(plan, impl=S), {}, slots=4) == []


def test_slots_cap_the_batch_in_plan_order() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], []), ("c", ["c.py"], []))
    assert ready_steps(plan, states(plan), {}, slots=2) == ["a", "b"]
    assert ready_steps(plan, states(plan), {}, slots=0) == []


def test_only_pending_steps_are_started() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], []), ("c", ["c.py"], []),
                     ("d", ["d.py"], []))
    current = states(plan, a=D, b=F, c=S)
    assert ready_steps(plan, current, {}, slots=4) == ["d"]


def test_steps_missing_from_states_count_as_pending() -> None:
    plan = make_plan(("a", ["a.py"], []))
    assert ready_steps(plan, {}, {}, slots=1) == ["a"]


def test_read_only_steps_never_conflict() -> None:
    plan = make_plan(("map", [], [], "navigator"), ("edit", ["src/**"], []),
                     ("judge", [], [], "reviewer"))
    assert ready_steps(plan, states(plan), {}, slots=4) == ["map", "edit", "judge"]


def test_outcome_running_while_work_remains() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], ["a"]))
    assert run_outcome(plan, states(plan)) == "running"
    assert run_outcome(plan, states(plan, a=R)) == "running"
    assert run_outcome(plan, states(plan, a=D)) == "running"


def test_outcome_done_when_every_step_is_done_or_skipped() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], []))
    assert run_outcome(plan, states(plan, a=D, b=S)) == "done"


def test_outcome_failed_as_soon_as_a_step_fails() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], []))
    assert run_outcome(plan, states(plan, a=F, b=R)) == "failed"


def test_outcome_blocked_when_a_dependency_was_skipped() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], ["a"]), ("c", ["c.py"], ["b"]),
                     ("d", ["d.py"], []))
    current = states(plan, a=S, d=D)
    assert blocked_steps(plan, current) == ["b", "c"]
    assert run_outcome(plan, current) == "blocked"


def test_not_blocked_while_another_step_still_runs() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], ["a"]), ("d", ["d.py"], []))
    current = states(plan, a=S, d=R)
    assert blocked_steps(plan, current) == ["b"]
    assert run_outcome(plan, current) == "running"


def test_blocked_steps_after_a_failure() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], ["a"]), ("c", ["c.py"], []))
    assert blocked_steps(plan, states(plan, a=F)) == ["b"]


def test_steps_behind_a_running_step_are_not_blocked() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], ["a"]))
    assert blocked_steps(plan, states(plan, a=R)) == []


def test_a_dependency_cycle_blocks() -> None:
    # validate_plan refuses cycles; the scheduler still must not spin on one.
    plan = make_plan(("a", ["a.py"], ["b"]), ("b", ["b.py"], ["a"]))
    assert ready_steps(plan, states(plan), {}, slots=2) == []
    assert blocked_steps(plan, states(plan)) == ["a", "b"]
    assert run_outcome(plan, states(plan)) == "blocked"


def test_plain_strings_work_as_states() -> None:
    plan = make_plan(("a", ["a.py"], []), ("b", ["b.py"], ["a"]))
    current: dict[str, Any] = {"a": "done", "b": "pending"}
    assert ready_steps(plan, current, {}, slots=1) == ["b"]
