"""What the end-to-end tests share: reading the bot's state and scripting the model."""

from __future__ import annotations

import json
from typing import Any

from tests.emulators.anthropic_api import Match, Rule, use_tool
from tests.emulators.harness import REPO, Stack

ACCEPT = {"verdict": "accept", "comments": [], "risk_flags": [], "risk_notes": ""}


def step(step_id: str, role: str, title: str, files: list[str],
         depends_on: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": step_id, "role": role, "title": title,
        "description": f"{title}, in {', '.join(files)}.", "files": files,
        "depends_on": depends_on or [], "acceptance": [f"{title} is done."],
        "rationale": f"Rationale for {step_id}: the issue asks for it.",
    }


def plan(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"summary": "Add the requested operations with tests.",
            "rationale": "One step per module so that they run in parallel.",
            "steps": list(steps)}


def writes(step_id: str, path: str, content: str, *, delay: float = 0.0,
           attempts: int = 1) -> list[Rule]:
    """The worker of `step_id` creates `path`, then finishes (`attempts` times over, for a
    step that is run again after its worker died)."""
    match = Match(system=f"Step `{step_id}`", tool="create_file")
    return [
        use_tool("create_file", {"path": path, "content": content}, match=match, times=attempts,
                 delay=delay, rule_name=f"{step_id}-write"),
        use_tool("finish_step", {"summary": f"Created {path}.",
                                 "rationale": f"{step_id} needs {path}.", "uncertainties": ""},
                 match=match, rule_name=f"{step_id}-finish"),
    ]


def reviews_accept() -> Rule:
    return use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"),
                    rule_name="review")


def submits(the_plan: dict[str, Any], *, times: int | None = None) -> Rule:
    return use_tool("submit_plan", the_plan, match=Match(tool="submit_plan"), times=times,
                    rule_name="plan")


def runs(stack: Stack) -> list[dict[str, Any]]:
    client = stack.redis_client()
    ids = client.zrange("conductor:runs", 0, -1)
    return [json.loads(client.get(f"conductor:run:{i}") or "{}") for i in ids]


def only_run(stack: Stack) -> dict[str, Any]:
    found = runs(stack)
    assert len(found) == 1, found
    return found[0]


def run_in(stack: Stack, *statuses: str) -> dict[str, Any] | None:
    found = runs(stack)
    return found[-1] if found and found[-1].get("status") in statuses else None


def steps(stack: Stack, run_id: str) -> dict[str, dict[str, Any]]:
    raw = stack.redis_client().hgetall(f"conductor:run:{run_id}:steps")
    return {k: json.loads(v) for k, v in raw.items()}


def timeline(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    raw = stack.redis_client().lrange(f"conductor:run:{run_id}:timeline", 0, -1)
    return [json.loads(item) for item in raw]


def branch_commits(stack: Stack, branch: str) -> list[str]:
    """Full messages of the commits on `branch` that are not on main, oldest first."""
    git = stack.state.git(stack.state.resolve_repo(REPO) if hasattr(stack.state, "resolve_repo")
                          else stack.repo)
    out = git.out("log", "--reverse", "--format=%B%x1e", f"refs/heads/main..refs/heads/{branch}")
    return [m.strip() for m in out.split("\x1e") if m.strip()]


def pull_requests(stack: Stack) -> list[Any]:
    return [p for p in stack.state.pulls.values() if p.repo_id == stack.repo.id]


def issue_record(stack: Stack, number: int) -> Any:
    return next(i for i in stack.state.issues.values()
                if i.repo_id == stack.repo.id and i.number == number)
