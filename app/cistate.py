"""Reading a commit's CI from GitHub: its check suites, check runs and statuses, the branch's
required checks, and the evidence of a failure (check run output and annotations, the failed
Actions jobs' logs).

Everything read from CI is untrusted text: it is trimmed here, secrets and token-shaped
strings are removed, and it reaches the model only inside `untrusted()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from githubkit.exception import RequestFailed

from app.ci import CheckRun, Snapshot, excerpt, snapshot_from_api
from app.github import items
from app.logs import redactor

MAX_LOG_BYTES = 2_000_000  # read at most the end of this much of one job's log
MAX_JOB_LOGS = 3
MAX_ANNOTATIONS = 20
MAX_EVIDENCE_CHARS = 24_000


async def snapshot(gh: Any, owner: str, name: str, sha: str) -> Snapshot:
    suites = await _pages(lambda page: gh.rest.checks.async_list_suites_for_ref(
        owner, name, sha, per_page=100, page=page), "check_suites")
    runs = await _pages(lambda page: gh.rest.checks.async_list_for_ref(
        owner, name, sha, filter_="latest", per_page=100, page=page), "check_runs")
    statuses = await _pages(lambda page: gh.rest.repos.async_list_commit_statuses_for_ref(
        owner, name, sha, per_page=100, page=page), None)
    return snapshot_from_api(suites, runs, statuses)


async def _pages(fetch: Any, key: str | None, limit: int = 10) -> list[Any]:
    """Up to `limit` pages of 100: of a list answer (`key` None), or of the list under `key`
    in an answer that has a `total_count`."""
    found: list[Any] = []
    for page in range(1, limit + 1):
        response = await fetch(page)
        batch = items(response) if key is None else list(getattr(response.parsed_data, key))
        found += batch
        if len(batch) < 100 or (key is not None
                                and len(found) >= int(response.parsed_data.total_count)):
            break
    return found


async def required_checks(gh: Any, owner: str, name: str, branch: str) -> list[str]:
    """The branch's required status checks, as far as a caller with read access can see
    them (the `protection` summary in the branch); none when the branch is unprotected."""
    try:
        data = (await gh.rest.repos.async_get_branch(owner, name, branch)).parsed_data
    except RequestFailed as exc:
        if exc.response.status_code == 404:
            return []
        raise
    protection = getattr(data, "protection", None)
    checks = getattr(protection, "required_status_checks", None) if protection else None
    if not data.protected or checks is None:
        return []
    names = list(getattr(checks, "contexts", None) or [])
    for check in getattr(checks, "checks", None) or []:
        if check.context not in names:
            names.append(check.context)
    return names


@dataclass
class Evidence:
    """What the failing checks said, trimmed and redacted."""

    parts: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    conclusions: list[str] = field(default_factory=list)
    rerunnable: list[int] = field(default_factory=list)  # failed Actions workflow run ids

    @property
    def text(self) -> str:
        return "\n\n".join(f"### {label}\n{text}" for label, text in self.parts)

    def add(self, label: str, text: str) -> None:
        used = sum(len(t) for _, t in self.parts)
        room = MAX_EVIDENCE_CHARS - used
        if room > 200 and text.strip():
            self.parts.append((label, redactor.scrub(text)[:room]))


async def evidence(gh: Any, owner: str, name: str, sha: str,
                   failing: list[CheckRun]) -> Evidence:
    found = Evidence(conclusions=[r.conclusion or "" for r in failing])
    # Actions first: their job logs are the fullest account of what went wrong.
    runs = (await gh.rest.actions.async_list_workflow_runs_for_repo(
        owner, name, head_sha=sha, per_page=50)).parsed_data.workflow_runs
    logs = 0
    for workflow in runs:
        if workflow.conclusion not in ("failure", "timed_out", "cancelled", "startup_failure"):
            continue
        if workflow.conclusion != "startup_failure":  # re-running it cannot help
            found.rerunnable.append(int(workflow.id))
        jobs = (await gh.rest.actions.async_list_jobs_for_workflow_run(
            owner, name, workflow.id, filter_="latest", per_page=100)).parsed_data.jobs
        for job in jobs:
            if job.conclusion in (None, "success", "skipped", "neutral") or logs >= MAX_JOB_LOGS:
                continue
            logs += 1
            log = await _job_log(gh, owner, name, int(job.id))
            # Redacted whole, then trimmed: a cut can split a token or drop the first line
            # of a key block, and what is left of it no longer looks like a secret.
            found.add(f"log of job `{job.name}` ({job.conclusion}) in workflow "
                      f"`{workflow.name}`", excerpt(redactor.scrub(log)))
    for run in failing:
        output = "\n".join(t for t in (run.title, run.summary, run.text) if t)
        notes = await _annotations(gh, owner, name, run.id)
        if output or notes:
            found.add(f"check `{run.name}` ({run.conclusion}) from {run.app}",
                      excerpt(redactor.scrub(output + ("\n" + "\n".join(notes)
                                                       if notes else ""))))
    return found


async def _job_log(gh: Any, owner: str, name: str, job_id: int) -> str:
    try:
        response = await gh.rest.actions.async_download_job_logs_for_workflow_run(
            owner, name, job_id)
    except RequestFailed as exc:
        if exc.response.status_code in (404, 410):  # expired or not yet available
            return ""
        raise
    content: bytes = response.content
    return content[-MAX_LOG_BYTES:].decode(errors="replace")


async def _annotations(gh: Any, owner: str, name: str, check_run_id: int) -> list[str]:
    found = items(await gh.rest.checks.async_list_annotations(
        owner, name, check_run_id, per_page=MAX_ANNOTATIONS))
    return [f"{a.path}:{a.start_line}: {a.annotation_level}: {a.message}"
            for a in found[:MAX_ANNOTATIONS]]


async def rerun_failed_jobs(gh: Any, owner: str, name: str, run_ids: list[int]) -> bool:
    """Re-run the failed jobs of these workflow runs; False when the installation may not
    (GitHub wants `actions: write`)."""
    for run_id in run_ids:
        try:
            await gh.rest.actions.async_re_run_workflow_failed_jobs(owner, name, run_id)
        except RequestFailed as exc:
            if exc.response.status_code == 403:
                return False
            raise
    return True


async def failing_on(gh: Any, owner: str, name: str, sha: str, names: list[str],
                     own_app_id: int | None) -> list[str]:
    """Which of the check or status `names` also failed on commit `sha` (the base)."""
    base = await snapshot(gh, owner, name, sha)
    failed = {r.name for r in base.runs
              if r.app_id != own_app_id and r.conclusion in ("failure", "timed_out")}
    failed |= {s.context for s in base.statuses if s.state in ("failure", "error")}
    return [n for n in names if n in failed]
