"""Scripted users: act as a user, with that user's real permissions.

Issue, label, comment, review and merge actions go through the same operations (and the same
permission checks) as the REST endpoints; :meth:`UserActor.push` runs the ordinary ``git``
client against the emulator's smart HTTP endpoint with the user's token, so the server must
be running (its URL is the state's ``base_url``).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .access import user_principal
from .gitrepo import git_env
from .records import Comment, Issue, Label, PullRequest, Reaction, Repo

if TYPE_CHECKING:
    from .state import GitHubState


class PushRejected(RuntimeError):
    """``git push`` (or the clone before it) failed; ``stderr`` holds git's explanation."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(f"{message}\n{stderr}")
        self.stderr = stderr


class UserActor:
    def __init__(self, state: GitHubState, login: str) -> None:
        self.state = state
        self.principal = user_principal(state, login)
        self.login = self.principal.login or login

    @property
    def token(self) -> str:
        return self.state.user_token(self.login)

    # -- issues ------------------------------------------------------------------------------

    def open_issue(
        self,
        repo: Repo | str,
        title: str,
        body: str | None = None,
        labels: list[str] | None = None,
    ) -> Issue:
        return self.state.open_issue(self.principal, repo, title, body, labels)

    def edit_issue(
        self, repo: Repo | str, number: int, *, title: str | None = None, body: str | None = None
    ) -> Issue:
        return self.state.update_issue(self.principal, repo, number, title=title, body=body)

    def close_issue(self, repo: Repo | str, number: int, reason: str = "completed") -> Issue:
        return self.state.update_issue(
            self.principal, repo, number, state="closed", state_reason=reason
        )

    def reopen_issue(self, repo: Repo | str, number: int) -> Issue:
        return self.state.update_issue(self.principal, repo, number, state="open")

    def add_labels(self, repo: Repo | str, number: int, *labels: str) -> list[Label]:
        return self.state.add_labels(self.principal, repo, number, list(labels))

    def remove_label(self, repo: Repo | str, number: int, label: str) -> list[Label]:
        return self.state.remove_label(self.principal, repo, number, label)

    def comment(self, repo: Repo | str, number: int, body: str) -> Comment:
        return self.state.add_comment(self.principal, repo, number, body)

    def edit_comment(self, repo: Repo | str, comment_id: int, body: str) -> Comment:
        return self.state.edit_comment(self.principal, repo, comment_id, body)

    def delete_comment(self, repo: Repo | str, comment_id: int) -> None:
        self.state.delete_comment(self.principal, repo, comment_id)

    def react(
        self,
        repo: Repo | str,
        *,
        issue: int | None = None,
        comment_id: int | None = None,
        content: str = "+1",
    ) -> Reaction:
        if comment_id is not None:
            return self.state.add_reaction(self.principal, repo, "comment", comment_id, content)[0]
        assert issue is not None, "give issue= or comment_id="
        return self.state.add_reaction(self.principal, repo, "issue", issue, content)[0]

    # -- pull requests -----------------------------------------------------------------------

    def open_pull(
        self,
        repo: Repo | str,
        *,
        title: str,
        head: str,
        base: str | None = None,
        body: str | None = None,
        draft: bool = False,
    ) -> PullRequest:
        repo = self.state.resolve_repo(repo)
        return self.state.open_pull(
            self.principal,
            repo,
            title=title,
            head=head,
            base=base or repo.default_branch,
            body=body,
            draft=draft,
        )

    def close_pull(self, repo: Repo | str, number: int) -> PullRequest:
        return self.state.update_pull(self.principal, repo, number, state="closed")

    def reopen_pull(self, repo: Repo | str, number: int) -> PullRequest:
        return self.state.update_pull(self.principal, repo, number, state="open")

    def delete_branch(self, repo: Repo | str, branch: str) -> None:
        """Delete a branch, as the web UI's trash icon does (a pull request on it closes)."""
        self.state.delete_git_ref(self.principal, self.state.resolve_repo(repo),
                                  f"refs/heads/{branch}")

    def merge_pull(self, repo: Repo | str, number: int, method: str = "merge") -> str:
        return self.state.merge_pull(self.principal, repo, number, merge_method=method)

    def mark_ready(self, repo: Repo | str, number: int) -> PullRequest:
        return self.state.mark_ready_for_review(self.principal, repo, number)

    def request_reviewers(self, repo: Repo | str, number: int, *logins: str) -> PullRequest:
        return self.state.request_reviewers(self.principal, repo, number, list(logins))

    def press_check_run_action(self, check_run_id: int, identifier: str) -> None:
        self.state.request_check_run_action(check_run_id, identifier, self.login)

    # -- git ---------------------------------------------------------------------------------

    def auth_header(self) -> str:
        raw = f"{self.login}:{self.token}".encode()
        return "Authorization: Basic " + base64.b64encode(raw).decode()

    def git(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run the ordinary git client as this user (token sent as an extra HTTP header)."""
        account = self.state.find_account(self.login)
        email = account.email if account and account.email else f"{self.login}@example.com"
        return subprocess.run(
            [
                "git",
                "-c",
                f"http.extraHeader={self.auth_header()}",
                "-c",
                f"user.name={self.login}",
                "-c",
                f"user.email={email}",
                *args,
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=git_env(self.state.workdir / "tmp"),
            check=False,
        )

    def push(
        self,
        repo: Repo | str,
        branch: str,
        files: dict[str, str | bytes | None],
        message: str = "Update files",
        *,
        base: str | None = None,
        force: bool = False,
    ) -> str:
        """Clone over smart HTTP, commit ``files`` (``None`` deletes) on ``branch`` (started
        from ``base`` or the default branch when new) and push it; returns the new sha."""
        repo = self.state.resolve_repo(repo)
        url = f"{self.state.base_url}/{repo.full_name}.git"
        work = Path(tempfile.mkdtemp(dir=self.state.workdir / "tmp"))
        try:
            self._check(self.git("clone", "--quiet", "--no-tags", url, str(work)), "clone")
            remote_branches = self.git("branch", "-r", cwd=work).stdout.split()
            start = (
                f"origin/{branch}"
                if f"origin/{branch}" in remote_branches
                else (f"origin/{base or repo.default_branch}")
            )
            self._check(self.git("checkout", "--quiet", "-B", branch, start, cwd=work), "checkout")
            for path, content in files.items():
                target = work / path
                if content is None:
                    target.unlink(missing_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, str):
                    target.write_text(content)
                else:
                    target.write_bytes(content)
            self._check(self.git("add", "--all", cwd=work), "add")
            self._check(
                self.git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work), "commit"
            )
            refspec = f"{'+' if force else ''}HEAD:refs/heads/{branch}"
            self._check(self.git("push", "--quiet", "origin", refspec, cwd=work), "push")
            return self.git("rev-parse", "HEAD", cwd=work).stdout.strip()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
        if proc.returncode != 0:
            raise PushRejected(f"git {what} failed ({proc.returncode})", proc.stderr)
