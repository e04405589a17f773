"""Planning a run: read the repository, ask the orchestrator model for a plan, validate it.

An invalid plan goes back to the model with the exact errors (bounded by
`limits.max_plan_attempts`); then the run stops and asks a human. A plan above the approval
threshold waits for `/agent approve`.
"""

from __future__ import annotations

from typing import Any

from app import tracking
from app.agent import (
    Agent,
    AgentFailed,
    Finished,
    TurnLimitExceeded,
    maintainer_note,
    untrusted,
)
from app.budget import Budget, BudgetExceeded
from app.constants import Job
from app.git import Workspace, git, resolve_commit
from app.github import items
from app.guidance import read_guidance, render_guidance
from app.logs import get_logger
from app.models import SystemBlock
from app.plan import Plan, Role, needs_approval, plan_tool, validate_plan
from app.plan_templates import PlanTemplate, choose_template, render_for_prompt
from app.render import render
from app.repoconfig import ConfigResult, parse_repo_config
from app.repomap import RepoMap
from app.runs import Run, RunStatus
from app.services import Services
from app.stopping import stop_run
from app.terminal import TerminalTools
from app.tools import Toolbox
from app.trigger import branch_name
from app.workspace import file_at, remote_branch_head, synced

log = get_logger(__name__)

CONFIG_PATH = ".github/conductor.yml"
REPO_MAP_CHARS = 24_000
GUIDANCE_CHARS = 12_000
# What of the issue reaches the model: GitHub allows 65,536 characters per body, so fifty
# long comments alone would overflow the context window.
ISSUE_BODY_CHARS = 30_000
COMMENT_CHARS = 6_000
COMMENTS_CHARS = 30_000
COMMENT_PAGES = 10


_configs: dict[tuple[str, str], ConfigResult] = {}


async def load_config(svc: Services, run: Run, workspace: Any, commit: str, *,
                      record_errors: bool = True) -> ConfigResult:
    """The repository's config at `commit` (a commit's content never changes, so each is
    read once per process). Its errors go on the run's timeline when `record_errors`."""
    key = (str(workspace.root), commit)
    result = _configs.get(key)
    if result is None:
        result = parse_repo_config(await file_at(workspace, commit, CONFIG_PATH))
        if len(_configs) > 256:
            _configs.clear()
        _configs[key] = result
    if record_errors:
        for error in result.errors:
            await svc.store.log(run.id, "config", f"{CONFIG_PATH}: {error}")
    return result


async def issue_context(svc: Services, run: Run) -> tuple[str, str]:
    """The issue as untrusted text for the model, and its body."""
    owner, name = run.repo.split("/", 1)
    async with svc.github.installation(run.installation_id) as gh:
        issue = (await gh.rest.issues.async_get(owner, name, run.issue_number)).parsed_data
        comments: list[Any] = []
        for page in range(1, COMMENT_PAGES + 1):  # oldest first: read on to the latest
            batch = items(await gh.rest.issues.async_list_comments(
                owner, name, run.issue_number, per_page=100, page=page))
            comments += batch
            if len(batch) < 100:
                break
    parts = [untrusted("issue title", clipped(issue.title or "", 1_000)),
             untrusted("issue body", clipped(issue.body or "(empty)", ISSUE_BODY_CHARS))]
    shown: list[str] = []
    room = COMMENTS_CHARS
    people = [c for c in comments if not (c.body and "<!-- conductor:" in c.body)]
    for comment in reversed(people):  # the latest say most about what is wanted now
        text = clipped(comment.body or "", COMMENT_CHARS)
        if len(text) > room:
            break
        room -= len(text)
        author = comment.user.login if comment.user else "unknown"
        shown.insert(0, untrusted(f"comment by {author}", text))
    if len(shown) < len(people):
        parts.append(f"({len(people) - len(shown)} earlier comments are not shown.)")
    return "\n\n".join(parts + shown), issue.body or ""


def clipped(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a note saying so."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters not shown]"


def retry_notes(run: Run) -> str:
    """What people said with `/agent retry`, as marked notes (empty when nothing)."""
    notes = [maintainer_note(r.get("by", "someone"), r["instructions"])
             for r in run.retries if r.get("instructions")]
    return "".join(note + "\n\n" for note in notes)


async def planner_system(svc: Services, run: Run, workspace: Any, commit: str,
                         config: ConfigResult, template: PlanTemplate) -> list[SystemBlock]:
    """The orchestrator's system prompt: its rules, the repository map and guidance at
    `commit`. Built the same way for the first plan and for CI fixes, so that they share a
    cached prefix."""
    limits = config.limits()
    repo_map = await RepoMap.build(workspace.clone, commit,
                                   cache_dir=svc.data_dir / "repomap" / run.repo.replace("/", "__"))
    guidance = await read_guidance(workspace.clone, commit, GUIDANCE_CHARS)
    return [
        render("prompts/orchestrator.md.j2", roles=[r.value for r in Role],
               protected=[p for p in limits.protected if p not in limits.allowed_protected],
               limits=limits, template=render_for_prompt(template),
               instructions=config.config.instructions or ""),
        "## Repository map\n\n" + repo_map.render(REPO_MAP_CHARS, focus=run.issue_title),
        "## Repository guidance\n\n" + (render_guidance(guidance) or "(none)"),
    ]


async def plan_run(ctx: dict[str, Any], run_id: str) -> str:
    svc: Services = ctx["services"]
    run = await svc.store.get(run_id)
    if run is None:
        return f"unknown run {run_id}"
    if not run.status.active:
        return f"run {run_id} is {run.status}"
    if run.plan is not None:  # planned by an earlier execution of this job
        await _continue(svc, run)
        return f"run {run_id} already planned"

    workspace, _token = await synced(svc, run)
    base_sha = await resolve_commit(f"refs/remotes/origin/{run.default_branch}", workspace.clone)
    if base_sha is None:
        # Not transient: an empty repository (or a default branch that is gone) stays so
        # until someone pushes, so say what to do instead of retrying.
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, await _no_base_reason(workspace, run))
        return "stopped: no default branch"
    run.base_sha = base_sha
    if run.head_sha is None:  # nothing pushed yet: the branch must be the run's own
        await _claim_free_branch(svc, run, workspace)
    await svc.store.save(run)

    config = await load_config(svc, run, workspace, base_sha)
    if config.fatal:
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN,
                       f"{CONFIG_PATH} is invalid: " + "; ".join(config.errors))
        return "stopped: invalid config"
    limits = config.limits()

    goal, body = await issue_context(svc, run)
    template = choose_template(run.issue_title, body,
                               allowed=config.config.plan_templates or None)
    run.plan_template = template.name
    system = await planner_system(svc, run, workspace, base_sha, config, template)
    worktree = await workspace.add_worktree(f"{run.id}-plan", base_sha)
    try:
        agent = Agent(
            svc.models,
            model=config.model_for("orchestrator"),
            system_blocks=system,
            tools=TerminalTools(Toolbox(worktree, editable=False, allowed=None,
                                           readable=limits.allowed_protected), [plan_tool()]),
            terminal_tools={"submit_plan"},
            max_turns=40,
            max_tokens=8000,
            role="orchestrator",
            budget=Budget(svc.redis, run.id, limits),
            trace={"run": run.id, "step": None},
        )
        finished = await _ask(svc, run, agent, [{
            "role": "user",
            "content": f"Plan the change this issue asks for (#{run.issue_number} in "
                       f"{run.repo}).\n\n{goal}\n\n{retry_notes(run)}"
                       "Explore as needed, then call submit_plan.",
        }])
        if finished is None:
            return "stopped while planning"
        plan: Plan | None = None
        errors: list[str] = []
        for attempt in range(1, limits.max_plan_attempts + 1):
            plan, errors = validate_plan(finished.input, limits)
            if plan is not None:
                break
            await svc.store.log(run.id, "plan", f"plan attempt {attempt} refused: "
                                + "; ".join(errors), errors=errors)
            if attempt == limits.max_plan_attempts:
                break
            finished = await _ask(svc, run, agent, None, finished,
                                  "The plan was refused. Fix every problem and call submit_plan "
                                  "again:\n"
                                  + "\n".join(f"{i}. {e}" for i, e in enumerate(errors, 1)))
            if finished is None:
                return "stopped while planning"
    finally:
        await workspace.remove_worktree(worktree)

    if plan is None:
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN,
                       "the plan was still invalid after "
                       f"{limits.max_plan_attempts} attempts: " + "; ".join(errors))
        return "stopped: invalid plan"

    run.plan = plan.model_dump(mode="json")
    await svc.store.init_steps(run.id, [s.id for s in plan.steps])
    await svc.store.log(run.id, "plan", f"plan accepted: {len(plan.steps)} steps "
                        f"(template {template.name})")
    reason = needs_approval(plan, limits, await _tracked_files(workspace, base_sha))
    if reason:
        run.status = RunStatus.AWAITING_APPROVAL
        await svc.store.save(run)
        await svc.store.log(run.id, "approval", f"waiting for /agent approve: {reason}")
        await tracking.refresh(svc, run)
        return f"run {run_id} awaits approval: {reason}"
    await _continue(svc, run)
    return f"run {run_id} planned: {len(plan.steps)} steps"


async def _tracked_files(workspace: Workspace, commit: str) -> list[str]:
    out = await git("ls-tree", "-r", "--name-only", "-z", "--full-tree", commit,
                    cwd=workspace.clone)
    return [path for path in out.split("\0") if path]


async def _claim_free_branch(svc: Services, run: Run, workspace: Workspace) -> None:
    """Move the run to a branch name nobody has pushed yet.

    A branch that exists before the run's first push is someone else's (a person's, or a run
    whose records are gone): building on it would put commits no guardrail checked into the
    pull request, so the run takes the next free name and says so."""
    taken = run.branch
    number = run.attempt
    while await remote_branch_head(workspace, run.branch) is not None:
        number += 1
        run.branch = branch_name(run.issue_number, run.issue_title, number)
    if run.branch != taken:
        await svc.store.log(run.id, "trigger", f"branch {taken} already exists and is not this "
                            f"run's, so the run works on {run.branch} instead")


async def _no_base_reason(workspace: Workspace, run: Run) -> str:
    branches = await git("for-each-ref", "--count=1", "--format=%(refname)",
                         "refs/remotes/origin/", cwd=workspace.clone)
    if not branches.strip():
        return (f"{run.repo} has no commits yet, so there is nothing to plan on; push a first "
                f"commit to `{run.default_branch}`, then label the issue again")
    return (f"the default branch `{run.default_branch}` has no commits on GitHub; check the "
            "repository's default branch, then label the issue again")


async def _ask(svc: Services, run: Run, agent: Agent, messages: list[dict[str, Any]] | None,
               finished: Finished | None = None, feedback: str = "") -> Finished | None:
    """Run or resume the planner; a budget or agent failure stops the run (returns None)."""
    try:
        if finished is None:
            assert messages is not None
            return await agent.run(messages)
        return await agent.resume(finished, feedback)
    except BudgetExceeded as exc:
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, f"budget exhausted while planning: {exc}")
    except (AgentFailed, TurnLimitExceeded) as exc:
        await stop_run(svc, run, RunStatus.NEEDS_HUMAN, f"the planner did not finish: {exc}")
    return None


async def _continue(svc: Services, run: Run) -> None:
    if run.status in (RunStatus.PLANNING, RunStatus.STARTING):
        run.status = RunStatus.RUNNING
        await svc.store.save(run)
    await tracking.refresh(svc, run)
    await svc.redis.enqueue_job(Job.SCHEDULE_RUN, run.id, "planned",
                                _job_id=f"schedule:{run.id}:planned")
