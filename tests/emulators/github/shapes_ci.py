"""REST JSON for check suites and runs, commit statuses, workflow runs and jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .ids import iso
from .records import CheckRun, CheckSuite, CommitStatus, Job, WorkflowRun
from .shapes import app_json, repo_json, simple_commit_json, user_json
from .shapes_issues import open_pulls_for_sha

if TYPE_CHECKING:
    from .store import Store


def _head_commit(store: Store, repo_id: int, sha: str) -> dict[str, Any] | None:
    repo = store.repos[repo_id]
    info = store.git(repo).commit(sha)
    return simple_commit_json(info) if info else None


def check_suite_json(store: Store, suite: CheckSuite) -> dict[str, Any]:
    repo = store.repos[suite.repo_id]
    api = store.api(f"/repos/{repo.full_name}/check-suites/{suite.id}")
    runs = [r for r in store.check_runs.values() if r.check_suite_id == suite.id]
    return {
        "id": suite.id,
        "node_id": suite.node_id,
        "head_branch": suite.head_branch,
        "head_sha": suite.head_sha,
        "status": suite.status,
        "conclusion": suite.conclusion,
        "url": api,
        "before": suite.before,
        "after": suite.after,
        "pull_requests": open_pulls_for_sha(store, repo, suite.head_sha),
        "app": app_json(store, store.apps[suite.app_id]),
        "repository": repo_json(store, repo),
        "created_at": iso(suite.created_at),
        "updated_at": iso(suite.updated_at),
        "rerequestable": True,
        "runs_rerequestable": True,
        "latest_check_runs_count": len(runs),
        "check_runs_url": f"{api}/check-runs",
        "head_commit": _head_commit(store, suite.repo_id, suite.head_sha),
    }


def check_run_json(store: Store, run: CheckRun) -> dict[str, Any]:
    repo = store.repos[run.repo_id]
    api = store.api(f"/repos/{repo.full_name}/check-runs/{run.id}")
    html = store.api(f"/{repo.full_name}/runs/{run.id}")
    output = run.output or {}
    return {
        "id": run.id,
        "name": run.name,
        "node_id": run.node_id,
        "head_sha": run.head_sha,
        "external_id": run.external_id or "",
        "url": api,
        "html_url": html,
        "details_url": run.details_url or html,
        "status": run.status,
        "conclusion": run.conclusion,
        "started_at": iso(run.started_at),
        "completed_at": iso(run.completed_at),
        "output": {
            "title": output.get("title"),
            "summary": output.get("summary"),
            "text": output.get("text"),
            "annotations_count": len(run.annotations),
            "annotations_url": f"{api}/annotations",
        },
        "check_suite": {"id": run.check_suite_id},
        "app": app_json(store, store.apps[run.app_id]),
        "pull_requests": open_pulls_for_sha(store, repo, run.head_sha),
        "actions": list(run.actions),
    }


def annotation_json(store: Store, run: CheckRun, annotation: dict[str, Any]) -> dict[str, Any]:
    repo = store.repos[run.repo_id]
    return {
        "path": annotation["path"],
        "start_line": annotation["start_line"],
        "end_line": annotation["end_line"],
        "start_column": annotation.get("start_column"),
        "end_column": annotation.get("end_column"),
        "annotation_level": annotation.get("annotation_level"),
        "title": annotation.get("title"),
        "message": annotation.get("message"),
        "raw_details": annotation.get("raw_details"),
        "blob_href": store.api(f"/{repo.full_name}/blob/{run.head_sha}/{annotation['path']}"),
    }


def status_json(store: Store, status: CommitStatus) -> dict[str, Any]:
    repo = store.repos[status.repo_id]
    creator = user_json(store, status.creator)
    return {
        "url": store.api(f"/repos/{repo.full_name}/statuses/{status.sha}"),
        "avatar_url": creator["avatar_url"] if creator else None,
        "id": status.id,
        "node_id": status.node_id,
        "state": status.state,
        "description": status.description,
        "target_url": status.target_url,
        "context": status.context,
        "created_at": iso(status.created_at),
        "updated_at": iso(status.updated_at),
        "creator": creator,
    }


def combined_state(statuses: list[CommitStatus]) -> str:
    states = {s.state for s in statuses}
    if states & {"error", "failure"}:
        return "failure"
    if not statuses or "pending" in states:
        return "pending"
    return "success"


def combined_status_json(
    store: Store, repo_id: int, sha: str, statuses: list[CommitStatus]
) -> dict[str, Any]:
    repo = store.repos[repo_id]
    simple = []
    for status in statuses:
        body = status_json(store, status)
        body.pop("creator")
        body["required"] = False
        simple.append(body)
    return {
        "state": combined_state(statuses),
        "statuses": simple,
        "sha": sha,
        "total_count": len(statuses),
        "repository": repo_json(store, repo),
        "commit_url": store.api(f"/repos/{repo.full_name}/commits/{sha}"),
        "url": store.api(f"/repos/{repo.full_name}/commits/{sha}/status"),
    }


def workflow_run_json(store: Store, run: WorkflowRun) -> dict[str, Any]:
    repo = store.repos[run.repo_id]
    workflow = store.workflows[run.workflow_id]
    api = store.api(f"/repos/{repo.full_name}/actions/runs/{run.id}")
    suite = store.check_suites.get(run.check_suite_id)
    return {
        "id": run.id,
        "name": run.name,
        "node_id": run.node_id,
        "head_branch": run.head_branch,
        "head_sha": run.head_sha,
        "path": workflow.path,
        "display_title": run.display_title,
        "run_number": run.run_number,
        "event": run.event,
        "status": run.status,
        "conclusion": run.conclusion,
        "workflow_id": run.workflow_id,
        "check_suite_id": run.check_suite_id,
        "check_suite_node_id": suite.node_id if suite else None,
        "url": api,
        "html_url": store.api(f"/{repo.full_name}/actions/runs/{run.id}"),
        "pull_requests": open_pulls_for_sha(store, repo, run.head_sha),
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "actor": user_json(store, run.actor),
        "triggering_actor": user_json(store, run.actor),
        "run_attempt": run.run_attempt,
        "referenced_workflows": [],
        "run_started_at": iso(run.run_started_at),
        "jobs_url": f"{api}/jobs",
        "logs_url": f"{api}/logs",
        "check_suite_url": store.api(f"/repos/{repo.full_name}/check-suites/{run.check_suite_id}"),
        "artifacts_url": f"{api}/artifacts",
        "cancel_url": f"{api}/cancel",
        "rerun_url": f"{api}/rerun",
        "previous_attempt_url": (
            f"{api}/attempts/{run.run_attempt - 1}" if run.run_attempt > 1 else None
        ),
        "workflow_url": store.api(f"/repos/{repo.full_name}/actions/workflows/{workflow.id}"),
        "head_commit": _head_commit(store, run.repo_id, run.head_sha),
        "repository": repo_json(store, repo),
        "head_repository": repo_json(store, repo),
    }


def job_json(store: Store, job: Job) -> dict[str, Any]:
    repo = store.repos[job.repo_id]
    run = store.workflow_runs[job.run_id]
    api = store.api(f"/repos/{repo.full_name}/actions/jobs/{job.id}")
    return {
        "id": job.id,
        "run_id": job.run_id,
        "workflow_name": run.name,
        "head_branch": run.head_branch,
        "run_url": store.api(f"/repos/{repo.full_name}/actions/runs/{run.id}"),
        "run_attempt": job.run_attempt,
        "node_id": job.node_id,
        "head_sha": run.head_sha,
        "url": api,
        "html_url": store.api(f"/{repo.full_name}/actions/runs/{run.id}/job/{job.id}"),
        "status": job.status,
        "conclusion": job.conclusion,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at or job.created_at),
        "completed_at": iso(job.completed_at),
        "name": job.name,
        "steps": [
            {
                "name": step.get("name", f"step {number}"),
                "status": step.get("status", job.status),
                "conclusion": step.get("conclusion", job.conclusion),
                "number": step.get("number", number),
                "started_at": iso(step.get("started_at", job.started_at)),
                "completed_at": iso(step.get("completed_at", job.completed_at)),
            }
            for number, step in enumerate(job.steps, start=1)
        ],
        "check_run_url": store.api(f"/repos/{repo.full_name}/check-runs/{job.check_run_id}"),
        "labels": list(job.labels),
        "runner_id": 1 if job.runner_name else None,
        "runner_name": job.runner_name,
        "runner_group_id": 1 if job.runner_name else None,
        "runner_group_name": "GitHub Actions" if job.runner_name else None,
    }
