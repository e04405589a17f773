"""Check suites, check runs and commit statuses.

The ``create_*``/``complete_*`` methods are for code standing in for GitHub itself (a CI
runner); the ``rest_*`` methods are the REST endpoints' checks and validation on top.
"""

from __future__ import annotations

from typing import Any

from .access import Principal, authorize
from .errors import ApiError, custom_error, invalid_field, not_found, validation_failed
from .gitrepo import SHA_RE
from .ids import iso, node_id
from .payloads import envelope
from .pulls import PullsMixin
from .records import CheckRun, CheckSuite, CommitStatus, Repo
from .shapes import commit_json
from .shapes_ci import check_run_json, check_suite_json, status_json

GITHUB_ACTIONS_APP_ID = 15368
GITHUB_ACTIONS_BOT_ID = 41898282

CHECK_STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
CHECK_CONCLUSIONS = (
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
)
STATUS_STATES = ("error", "failure", "pending", "success")
# A suite's conclusion is the first of these any of its runs has, else success/neutral/skipped.
SUITE_PRECEDENCE = ("action_required", "cancelled", "timed_out", "failure", "stale")


def rollup_conclusion(conclusions: list[str | None]) -> str:
    for conclusion in SUITE_PRECEDENCE:
        if conclusion in conclusions:
            return conclusion
    for conclusion in ("success", "neutral"):
        if conclusion in conclusions:
            return conclusion
    return "skipped"


class ChecksMixin(PullsMixin):
    """Check suites and runs (owned by an App) and commit statuses."""

    def app_id_for(self, app: int | str | None) -> int:
        """An App given by id or slug; ``None`` is the emulated App."""
        if app is None:
            return self.app_id
        if isinstance(app, int):
            if app not in self.apps:
                raise KeyError(f"no app {app}")
            return app
        for record in self.apps.values():
            if record.slug == app:
                return record.id
        raise KeyError(f"no app {app!r}")

    # -- suites ------------------------------------------------------------------------------

    def create_check_suite(
        self,
        repo: Repo | str,
        head_sha: str,
        head_branch: str | None = None,
        app: int | str | None = "github-actions",
        *,
        before: str | None = None,
    ) -> CheckSuite:
        """A new check suite for ``head_sha`` owned by ``app`` (id or slug)."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            app_id = self.app_id_for(app)
            if head_branch is None:
                head_branch = self._branch_at(repo, head_sha)
            now = self.now()
            suite_id = self.new_id()
            suite = CheckSuite(
                id=suite_id,
                node_id=node_id("CheckSuite", suite_id),
                repo_id=repo.id,
                head_sha=head_sha,
                head_branch=head_branch,
                app_id=app_id,
                created_at=now,
                updated_at=now,
                before=before,
                after=head_sha,
            )
            self.check_suites[suite_id] = suite
            return suite

    def _branch_at(self, repo: Repo, sha: str) -> str | None:
        for ref, ref_sha in self.git(repo).refs("refs/heads/").items():
            if ref_sha == sha:
                return ref.removeprefix("refs/heads/")
        return None

    def find_check_suite(self, repo: Repo, head_sha: str, app_id: int) -> CheckSuite | None:
        found = [
            s
            for s in self.check_suites.values()
            if s.repo_id == repo.id and s.head_sha == head_sha and s.app_id == app_id
        ]
        return found[-1] if found else None

    def _refresh_suite(self, suite: CheckSuite) -> None:
        latest: dict[str, CheckRun] = {}
        for run in sorted(self.check_runs.values(), key=lambda r: r.id):
            if run.check_suite_id == suite.id:
                latest[run.name] = run  # a re-run replaces the run of the same name
        runs = list(latest.values())
        if not runs:
            return
        previous = suite.status
        if all(r.status == "completed" for r in runs):
            suite.status = "completed"
            suite.conclusion = rollup_conclusion([r.conclusion for r in runs])
        elif any(r.status == "in_progress" or r.status == "completed" for r in runs):
            suite.status, suite.conclusion = "in_progress", None
        else:
            suite.status, suite.conclusion = "queued", None
        suite.updated_at = self.now()
        if suite.status == "completed" and previous != "completed":
            self._emit_suite(suite, "completed")

    def _emit_suite(self, suite: CheckSuite, action: str, sender: str | None = None) -> None:
        repo = self.repos[suite.repo_id]
        body = check_suite_json(self, suite)
        body.pop("repository", None)
        self.emit(
            "check_suite",
            envelope(
                self, repo, sender or self.apps[suite.app_id].bot_login, action, check_suite=body
            ),
        )

    # -- runs --------------------------------------------------------------------------------

    def create_check_run(
        self,
        repo: Repo | str,
        head_sha: str,
        name: str,
        *,
        app: int | str | None = "github-actions",
        status: str = "queued",
        conclusion: str | None = None,
        check_suite_id: int | None = None,
        external_id: str | None = None,
        details_url: str | None = None,
        output: dict[str, Any] | None = None,
        actions: list[dict[str, Any]] | None = None,
        started_at: float | None = None,
        completed_at: float | None = None,
    ) -> CheckRun:
        """A check run owned by ``app``, in ``check_suite_id`` or the App's latest suite for
        ``head_sha`` (created when missing). Emits ``check_run.created`` (and ``completed``)."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            app_id = self.app_id_for(app)
            if check_suite_id is not None:
                suite = self.check_suites[check_suite_id]
            else:
                suite = self.find_check_suite(repo, head_sha, app_id) or self.create_check_suite(
                    repo, head_sha, app=app_id
                )
            if conclusion is not None:
                status = "completed"
            now = self.now()
            run_id = self.new_id()
            run = CheckRun(
                id=run_id,
                node_id=node_id("CheckRun", run_id),
                repo_id=repo.id,
                check_suite_id=suite.id,
                app_id=app_id,
                name=name,
                head_sha=head_sha,
                status=status,
                conclusion=conclusion,
                started_at=started_at or now,
                completed_at=(completed_at or now) if status == "completed" else None,
                external_id=external_id,
                details_url=details_url,
                output={},
                actions=list(actions or []),
            )
            self._apply_output(run, output)
            self.check_runs[run_id] = run
            self._emit_run(run, "created")
            if status == "completed":
                self._emit_run(run, "completed")
            self._refresh_suite(suite)
            return run

    def _apply_output(self, run: CheckRun, output: dict[str, Any] | None) -> None:
        if not output:
            return
        for key in ("title", "summary", "text"):
            if key in output:
                run.output[key] = output[key]
        run.annotations.extend(dict(a) for a in output.get("annotations") or [])

    def update_check_run(self, run_id: int, **fields: Any) -> CheckRun:
        """Change a check run: ``status``, ``conclusion``, ``output``, ``name``,
        ``details_url``, ``external_id``, ``actions``, ``started_at``, ``completed_at``."""
        with self.transaction():
            run = self.check_runs[run_id]
            was_completed = run.status == "completed"
            if "output" in fields:
                self._apply_output(run, fields.pop("output"))
            for key in ("name", "details_url", "external_id", "started_at"):
                if fields.get(key) is not None:
                    setattr(run, key, fields[key])
            if fields.get("actions") is not None:
                run.actions = list(fields["actions"])
            if fields.get("status") is not None:
                run.status = fields["status"]
            if fields.get("conclusion") is not None:
                run.conclusion = fields["conclusion"]
                run.status = "completed"
            if run.status == "completed":
                run.completed_at = fields.get("completed_at") or run.completed_at or self.now()
                if run.conclusion is None:
                    run.conclusion = "success"
            if run.status == "completed" and not was_completed:
                self._emit_run(run, "completed")
            self._refresh_suite(self.check_suites[run.check_suite_id])
            return run

    def start_check_run(self, run_id: int) -> CheckRun:
        return self.update_check_run(run_id, status="in_progress", started_at=self.now())

    def complete_check_run(
        self, run_id: int, conclusion: str, output: dict[str, Any] | None = None
    ) -> CheckRun:
        return self.update_check_run(run_id, conclusion=conclusion, output=output)

    def _emit_run(
        self, run: CheckRun, action: str, sender: str | None = None, **extra: Any
    ) -> None:
        repo = self.repos[run.repo_id]
        suite = self.check_suites[run.check_suite_id]
        body = check_run_json(self, run)
        suite_body = check_suite_json(self, suite)
        for key in (
            "repository",
            "latest_check_runs_count",
            "check_runs_url",
            "head_commit",
            "rerequestable",
            "runs_rerequestable",
        ):
            suite_body.pop(key, None)
        body["check_suite"] = suite_body
        self.emit(
            "check_run",
            envelope(
                self,
                repo,
                sender or self.apps[run.app_id].bot_login,
                action,
                check_run=body,
                **extra,
            ),
        )

    def request_check_run_action(self, run_id: int, identifier: str, user: str) -> None:
        """A user pressed one of the check run's ``actions`` buttons."""
        with self.transaction():
            run = self.check_runs[run_id]
            if run.app_id == self.app_id:
                self._emit_run(
                    run, "requested_action", user, requested_action={"identifier": identifier}
                )

    # -- REST --------------------------------------------------------------------------------

    def _require_app(self, principal: Principal, repo: Repo) -> int:
        authorize(self, principal, repo, ("checks", "write"), None)
        if principal.kind != "installation" or principal.app_id is None:
            raise ApiError(403, "You must authenticate via a GitHub App.")
        return principal.app_id

    def _validate_run_body(self, body: dict[str, Any]) -> None:
        if body.get("status") is not None and body["status"] not in CHECK_STATUSES:
            raise validation_failed(invalid_field("CheckRun", "status"))
        if body.get("conclusion") is not None and body["conclusion"] not in CHECK_CONCLUSIONS:
            raise validation_failed(invalid_field("CheckRun", "conclusion"))
        if body.get("status") == "completed" and not body.get("conclusion"):
            raise validation_failed(
                custom_error("CheckRun", "conclusion is required when status is completed")
            )
        output = body.get("output")
        if output is not None:
            if (
                not isinstance(output, dict)
                or not output.get("summary")
                or not (output.get("title"))
            ):
                raise validation_failed(invalid_field("CheckRun", "output", "missing_field"))
            if len(output.get("annotations") or []) > 50:
                raise validation_failed(
                    custom_error("CheckRun", "Only 50 annotations may be sent per request")
                )
            for annotation in output.get("annotations") or []:
                for key in ("path", "start_line", "end_line", "annotation_level", "message"):
                    if key not in annotation:
                        raise validation_failed(invalid_field("CheckRun", key, "missing_field"))
        actions = body.get("actions") or []
        if len(actions) > 3:
            raise validation_failed(custom_error("CheckRun", "Only 3 actions are allowed"))
        for action in actions:
            for key, limit in (("label", 20), ("description", 40), ("identifier", 20)):
                value = action.get(key)
                if not value or len(value) > limit:
                    raise validation_failed(invalid_field("CheckRun", f"actions.{key}"))

    def rest_create_check_run(
        self, principal: Principal, repo: Repo, body: dict[str, Any]
    ) -> CheckRun:
        with self.transaction():
            app_id = self._require_app(principal, repo)
            if not body.get("name"):
                raise validation_failed(invalid_field("CheckRun", "name", "missing_field"))
            head_sha = body.get("head_sha") or ""
            if not SHA_RE.match(head_sha) or self.git(repo).commit(head_sha) is None:
                raise validation_failed(message=f"No commit found for SHA: {head_sha}")
            self._validate_run_body(body)
            return self.create_check_run(
                repo,
                head_sha,
                body["name"],
                app=app_id,
                status=body.get("status") or "queued",
                conclusion=body.get("conclusion"),
                external_id=body.get("external_id"),
                details_url=body.get("details_url"),
                output=body.get("output"),
                actions=body.get("actions"),
            )

    def rest_update_check_run(
        self, principal: Principal, repo: Repo, run_id: int, body: dict[str, Any]
    ) -> CheckRun:
        with self.transaction():
            app_id = self._require_app(principal, repo)
            run = self.check_runs.get(run_id)
            if run is None or run.repo_id != repo.id:
                raise not_found()
            if run.app_id != app_id:
                raise ApiError(
                    403,
                    f"Invalid app_id `{app_id}` - check run can only be "
                    "modified by the GitHub App that created it.",
                )
            self._validate_run_body(body)
            return self.update_check_run(
                run_id,
                name=body.get("name"),
                status=body.get("status"),
                conclusion=body.get("conclusion"),
                details_url=body.get("details_url"),
                external_id=body.get("external_id"),
                output=body.get("output"),
                actions=body.get("actions"),
            )

    def rest_create_check_suite(
        self, principal: Principal, repo: Repo, head_sha: str
    ) -> tuple[CheckSuite, bool]:
        with self.transaction():
            app_id = self._require_app(principal, repo)
            if not SHA_RE.match(head_sha or "") or self.git(repo).commit(head_sha) is None:
                raise validation_failed(message=f"No commit found for SHA: {head_sha}")
            existing = self.find_check_suite(repo, head_sha, app_id)
            if existing is not None:
                return existing, False
            return self.create_check_suite(repo, head_sha, app=app_id), True

    def rerequest_check_run(self, principal: Principal, repo: Repo, run_id: int) -> None:
        with self.transaction():
            app_id = self._require_app(principal, repo)
            run = self.check_runs.get(run_id)
            if run is None or run.repo_id != repo.id:
                raise not_found()
            if run.app_id != app_id:
                raise not_found()
            if run.status != "completed":
                raise ApiError(422, "This check run is not rerequestable")
            self._emit_run(run, "rerequested", principal.login)

    def rerequest_check_suite(self, principal: Principal, repo: Repo, suite_id: int) -> None:
        with self.transaction():
            app_id = self._require_app(principal, repo)
            suite = self.check_suites.get(suite_id)
            if suite is None or suite.repo_id != repo.id or suite.app_id != app_id:
                raise not_found()
            self._emit_suite(suite, "rerequested", principal.login)

    # -- statuses ----------------------------------------------------------------------------

    def create_status(
        self,
        repo: Repo | str,
        sha: str,
        state: str,
        context: str = "default",
        *,
        description: str | None = None,
        target_url: str | None = None,
        creator: str | None = None,
    ) -> CommitStatus:
        """A commit status; emits ``status``."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            if state not in STATUS_STATES:
                raise validation_failed(invalid_field("Status", "state"))
            now = self.now()
            status_id = self.new_id()
            status = CommitStatus(
                id=status_id,
                node_id=node_id("StatusContext", status_id),
                repo_id=repo.id,
                sha=sha,
                state=state,
                context=context or "default",
                creator=creator or repo.owner,
                created_at=now,
                updated_at=now,
                description=description,
                target_url=target_url,
            )
            self.statuses[status_id] = status
            self._emit_status(status)
            return status

    def _emit_status(self, status: CommitStatus) -> None:
        repo = self.repos[status.repo_id]
        git = self.git(repo)
        info = git.commit(status.sha)
        branches = [
            {
                "name": ref.removeprefix("refs/heads/"),
                "commit": {"sha": sha, "url": self.api(f"/repos/{repo.full_name}/commits/{sha}")},
                "protected": self.find_branch_protection(repo, ref.removeprefix("refs/heads/"))
                is not None,
            }
            for ref, sha in git.refs("refs/heads/").items()
            if sha == status.sha
        ]
        body = status_json(self, status)
        self.emit(
            "status",
            envelope(
                self,
                repo,
                status.creator,
                None,
                id=status.id,
                sha=status.sha,
                name=repo.full_name,
                target_url=status.target_url,
                avatar_url=body["avatar_url"],
                context=status.context,
                description=status.description,
                state=status.state,
                commit=commit_json(self, repo, info) if info else None,
                branches=branches,
                created_at=iso(status.created_at),
                updated_at=iso(status.updated_at),
            ),
        )

    def rest_create_status(
        self, principal: Principal, repo: Repo, sha: str, body: dict[str, Any]
    ) -> CommitStatus:
        with self.transaction():
            authorize(self, principal, repo, ("statuses", "write"), "write")
            full_sha = self.git(repo).resolve_commit(sha) if SHA_RE.match(sha) else None
            if full_sha is None:
                raise validation_failed(message=f"No commit found for SHA: {sha}")
            if body.get("state") not in STATUS_STATES:
                raise validation_failed(invalid_field("Status", "state"))
            return self.create_status(
                repo,
                full_sha,
                body["state"],
                body.get("context") or "default",
                description=body.get("description"),
                target_url=body.get("target_url"),
                creator=principal.login,
            )
