"""GitHub Actions bookkeeping: workflows, workflow runs, jobs and their logs.

A CI runner (code standing in for GitHub's runners) drives this through
:meth:`ActionsMixin.create_workflow_run`, :meth:`start_job`, :meth:`complete_job` and
:meth:`set_job_log`; each job owns a ``github-actions`` check run, and each workflow run a
``github-actions`` check suite, so the Checks API shows CI results as it does on GitHub.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import yaml

from .access import Principal, authorize
from .checks import ChecksMixin
from .errors import ApiError, not_found
from .ids import iso, node_id, random_hex
from .payloads import envelope
from .records import Job, Repo, Workflow, WorkflowRun
from .shapes_ci import job_json, workflow_run_json

log = logging.getLogger(__name__)

FAILED = ("failure", "cancelled", "timed_out", "startup_failure")


def run_conclusion(conclusions: list[str | None]) -> str:
    if any(c in ("failure", "timed_out", "startup_failure") for c in conclusions):
        return "failure"
    for conclusion in ("cancelled", "action_required"):
        if conclusion in conclusions:
            return conclusion
    if conclusions and all(c == "skipped" for c in conclusions):
        return "skipped"
    return "success"


def title_of(message: str, default: str) -> str:
    lines = message.strip().splitlines()
    return lines[0] if lines else default


class ActionsMixin(ChecksMixin):
    """Workflow runs and jobs, recorded by a CI runner and read through REST."""

    # -- workflows ---------------------------------------------------------------------------

    def _workflow(self, repo: Repo, path: str, head_sha: str, name: str | None) -> Workflow:
        for workflow in self.workflows.values():
            if workflow.repo_id == repo.id and workflow.path == path:
                return workflow
        if name is None:
            name = path
            git = self.git(repo)
            entry = git.entry(head_sha, path)
            data = git.blob(entry.sha) if entry else None
            if data:
                try:
                    parsed = yaml.safe_load(data)
                except yaml.YAMLError:
                    parsed = None
                if isinstance(parsed, dict) and isinstance(parsed.get("name"), str):
                    name = parsed["name"]
        workflow_id = self.new_id()
        workflow = Workflow(
            id=workflow_id,
            node_id=node_id("Workflow", workflow_id),
            repo_id=repo.id,
            name=name,
            path=path,
            created_at=self.now(),
        )
        self.workflows[workflow_id] = workflow
        return workflow

    def workflow_json(self, workflow: Workflow) -> dict[str, Any]:
        repo = self.repos[workflow.repo_id]
        return {
            "id": workflow.id,
            "node_id": workflow.node_id,
            "name": workflow.name,
            "path": workflow.path,
            "state": workflow.state,
            "created_at": iso(workflow.created_at),
            "updated_at": iso(workflow.created_at),
            "url": self.api(f"/repos/{repo.full_name}/actions/workflows/{workflow.id}"),
            "html_url": self.api(f"/{repo.full_name}/blob/{repo.default_branch}/{workflow.path}"),
            "badge_url": self.api(f"/{repo.full_name}/workflows/{workflow.name}/badge.svg"),
        }

    # -- runs --------------------------------------------------------------------------------

    def create_workflow_run(
        self,
        repo: Repo | str,
        *,
        head_sha: str,
        workflow_path: str = ".github/workflows/ci.yml",
        head_branch: str | None = None,
        event: str = "push",
        name: str | None = None,
        jobs: Iterable[str] = ("build",),
        actor: str | None = None,
        display_title: str | None = None,
    ) -> WorkflowRun:
        """A queued workflow run with one queued job (and check run) per name in ``jobs``.

        Emits ``workflow_run.requested``, ``workflow_job.queued`` and ``check_run.created``.
        """
        with self.transaction():
            repo = self.resolve_repo(repo)
            git = self.git(repo)
            info = git.commit(head_sha)
            if info is None:
                raise ValueError(f"no commit {head_sha} in {repo.full_name}")
            head_sha = info.sha
            if head_branch is None:
                head_branch = self._branch_at(repo, head_sha)
            workflow = self._workflow(repo, workflow_path, head_sha, name)
            suite = self.create_check_suite(repo, head_sha, head_branch, app="github-actions")
            now = self.now()
            number = 1 + sum(1 for r in self.workflow_runs.values() if r.workflow_id == workflow.id)
            run_id = self.new_id()
            run = WorkflowRun(
                id=run_id,
                node_id=node_id("WorkflowRun", run_id),
                repo_id=repo.id,
                workflow_id=workflow.id,
                name=workflow.name,
                head_sha=head_sha,
                head_branch=head_branch,
                event=event,
                run_number=number,
                check_suite_id=suite.id,
                actor=actor or repo.owner,
                created_at=now,
                updated_at=now,
                run_started_at=now,
                display_title=display_title or title_of(info.message, workflow.name),
            )
            self.workflow_runs[run_id] = run
            self._emit_workflow_run(run, "requested")
            for job_name in jobs:
                self._new_job(run, job_name)
            return run

    def _new_job(self, run: WorkflowRun, name: str) -> Job:
        repo = self.repos[run.repo_id]
        job_id = self.new_id()
        check = self.create_check_run(
            repo,
            run.head_sha,
            name,
            app="github-actions",
            check_suite_id=run.check_suite_id,
            details_url=self.api(f"/{repo.full_name}/actions/runs/{run.id}/job/{job_id}"),
        )
        job = Job(
            id=job_id,
            node_id=node_id("Job", job_id),
            repo_id=run.repo_id,
            run_id=run.id,
            run_attempt=run.run_attempt,
            name=name,
            created_at=self.now(),
            check_run_id=check.id,
            log_key=random_hex(32),
        )
        self.jobs[job_id] = job
        self._emit_job(job, "queued")
        return job

    def workflow_jobs(self, run_id: int, latest: bool = True) -> list[Job]:
        """A run's jobs; with ``latest``, the newest attempt of each job name."""
        jobs = sorted((j for j in self.jobs.values() if j.run_id == run_id), key=lambda j: j.id)
        if not latest:
            return jobs
        newest: dict[str, Job] = {}
        for job in jobs:
            newest[job.name] = job
        return sorted(newest.values(), key=lambda j: j.id)

    def start_workflow_run(self, run_id: int) -> WorkflowRun:
        with self.transaction():
            run = self.workflow_runs[run_id]
            if run.status != "in_progress":
                run.status = "in_progress"
                run.updated_at = self.now()
                self._emit_workflow_run(run, "in_progress")
            return run

    def start_job(self, job_id: int, runner_name: str = "emulated-runner") -> Job:
        """Mark a job (and its check run, and its run) in progress."""
        with self.transaction():
            job = self.jobs[job_id]
            self.start_workflow_run(job.run_id)
            job.status = "in_progress"
            job.started_at = self.now()
            job.runner_name = runner_name
            self.start_check_run(job.check_run_id)
            self._emit_job(job, "in_progress")
            return job

    def complete_job(
        self,
        job_id: int,
        conclusion: str,
        *,
        log: str | None = None,
        steps: list[dict[str, Any]] | None = None,
        output: dict[str, Any] | None = None,
    ) -> Job:
        """Finish a job: its check run completes with ``conclusion`` (and ``output``), its
        log is set when given, and the run completes once all its latest jobs have."""
        with self.transaction():
            job = self.jobs[job_id]
            if job.started_at is None:
                self.start_job(job_id)
            if log is not None:
                self.set_job_log(job_id, log)
            now = self.now()
            job.status = "completed"
            job.conclusion = conclusion
            job.completed_at = now
            if steps is not None:
                job.steps = [dict(s) for s in steps]
            elif not job.steps:
                job.steps = [{"name": "Run", "status": "completed", "conclusion": conclusion}]
            self.complete_check_run(
                job.check_run_id,
                conclusion,
                output or {"title": f"{job.name}: {conclusion}", "summary": f"Job {conclusion}."},
            )
            self._emit_job(job, "completed")
            self._refresh_run(self.workflow_runs[job.run_id])
            return job

    def complete_workflow_run(self, run_id: int, conclusion: str | None = None) -> WorkflowRun:
        """Finish every unfinished job (as ``conclusion``, default ``cancelled``) and the run."""
        with self.transaction():
            for job in self.workflow_jobs(run_id):
                if job.status != "completed":
                    self.complete_job(job.id, conclusion or "cancelled")
            run = self.workflow_runs[run_id]
            self._refresh_run(run)
            return run

    def _refresh_run(self, run: WorkflowRun) -> None:
        jobs = self.workflow_jobs(run.id)
        if not jobs or any(j.status != "completed" for j in jobs):
            return
        if run.status == "completed":
            return
        run.status = "completed"
        run.conclusion = run_conclusion([j.conclusion for j in jobs])
        run.updated_at = self.now()
        self._emit_workflow_run(run, "completed")

    # -- logs --------------------------------------------------------------------------------

    def log_path(self, job_id: int) -> Any:
        return self.workdir / "logs" / f"{job_id}.log"

    def set_job_log(self, job_id: int, text: str) -> None:
        if job_id not in self.jobs:
            raise KeyError(job_id)
        self.log_path(job_id).write_text(text)

    def append_job_log(self, job_id: int, text: str) -> None:
        if job_id not in self.jobs:
            raise KeyError(job_id)
        with self.log_path(job_id).open("a") as handle:
            handle.write(text)

    def job_log(self, job_id: int) -> str:
        path = self.log_path(job_id)
        return path.read_text() if path.exists() else ""

    def job_log_url(self, job: Job) -> str:
        return self.api(f"/_logs/jobs/{job.id}?key={job.log_key}")

    # -- re-runs -----------------------------------------------------------------------------

    def rerun_workflow(
        self, principal: Principal, repo: Repo | str, run_id: int, failed_only: bool = True
    ) -> list[Job]:
        """``POST .../rerun-failed-jobs`` (or ``.../rerun``): a new attempt with fresh jobs;
        emits ``workflow_run.requested`` and calls the :meth:`on_rerun` callbacks."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            run = self.workflow_runs.get(run_id)
            if run is None or run.repo_id != repo.id:
                raise not_found()
            authorize(self, principal, repo, ("actions", "write"), "write")
            if run.status != "completed":
                raise ApiError(403, "This workflow is already running")
            previous = self.workflow_jobs(run_id)
            names = [j.name for j in previous if not failed_only or j.conclusion in FAILED]
            if not names:
                raise ApiError(403, "This workflow run has no failed jobs to re-run.")
            run.run_attempt += 1
            run.status = "queued"
            run.conclusion = None
            run.run_started_at = self.now()
            run.updated_at = self.now()
            run.actor = principal.login or run.actor
            self._emit_workflow_run(run, "requested")
            new_jobs = [self._new_job(run, name) for name in names]
            for callback in list(self.rerun_callbacks):
                self.after_commit(lambda cb=callback: self._call_rerun(cb, run, new_jobs))
            return new_jobs

    def _call_rerun(self, callback: Any, run: WorkflowRun, jobs: list[Job]) -> None:
        try:
            callback(run, jobs)
        except Exception as exc:
            log.exception("rerun callback failed")
            self.subscriber_errors.append(exc)

    # -- events ------------------------------------------------------------------------------

    def _emit_workflow_run(self, run: WorkflowRun, action: str) -> None:
        repo = self.repos[run.repo_id]
        self.emit(
            "workflow_run",
            envelope(
                self,
                repo,
                run.actor,
                action,
                workflow_run=workflow_run_json(self, run),
                workflow=self.workflow_json(self.workflows[run.workflow_id]),
            ),
        )

    def _emit_job(self, job: Job, action: str) -> None:
        repo = self.repos[job.repo_id]
        run = self.workflow_runs[job.run_id]
        self.emit(
            "workflow_job",
            envelope(self, repo, run.actor, action, workflow_job=job_json(self, job)),
        )
