"""Repositories: creation from a directory, collaborators, ref updates and push announcements."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .access import Principal, authorize, has_permission
from .errors import ApiError, validation_failed
from .gitrepo import SHA_RE, ZERO_SHA, GitRepo
from .ids import iso, node_id
from .records import ROLES, BranchProtection, Label, Repo
from .shapes import repo_json
from .store import Store

log = logging.getLogger(__name__)

DEFAULT_LABELS = (
    ("bug", "d73a4a", "Something isn't working"),
    ("documentation", "0075ca", "Improvements or additions to documentation"),
    ("duplicate", "cfd3d7", "This issue or pull request already exists"),
    ("enhancement", "a2eeef", "New feature or request"),
    ("good first issue", "7057ff", "Good for newcomers"),
    ("help wanted", "008672", "Extra attention is needed"),
    ("invalid", "e4e669", "This doesn't seem right"),
    ("question", "d876e3", "Further information is requested"),
    ("wontfix", "ffffff", "This will not be worked on"),
)

WORKFLOWS_DIR = ".github/workflows/"


def workflow_refusal(path: str) -> str:
    return (
        f"refusing to allow a GitHub App to create or update workflow `{path}` "
        "without `workflows` permission"
    )


def touched_workflow(git: GitRepo, ref: str, before: str, after: str) -> str | None:
    """The first workflow file a ref update changes (the rule the pre-receive hook applies)."""
    if after == ZERO_SHA:
        return None
    if before == ZERO_SHA:
        commits = git.rev_list(after, "--not", f"--exclude={ref}", "--all")
        for commit in commits:
            names = git.out("diff-tree", "-r", "--no-commit-id", "--name-only", "--root", commit)
            for name in names.splitlines():
                if name.startswith(WORKFLOWS_DIR):
                    return name
        return None
    for name in git.out("diff", "--name-only", before, after).splitlines():
        if name.startswith(WORKFLOWS_DIR):
            return name
    return None


class ReposMixin(Store):
    """Repositories and everything that moves their refs."""

    # -- creation ----------------------------------------------------------------------------

    def create_repo(
        self,
        full_name: str,
        *,
        source_dir: str | Path | None = None,
        files: dict[str, str | bytes] | None = None,
        default_branch: str = "main",
        private: bool = True,
        description: str | None = None,
        owner_type: str = "Organization",
        message: str = "Initial commit",
        author: str | None = None,
    ) -> Repo:
        """A repository whose ``default_branch`` holds one commit with the files of
        ``source_dir`` (or ``files``: path -> content). ``full_name`` is ``"owner/name"``."""
        owner, _, name = full_name.partition("/")
        if not owner or not name:
            raise ValueError("full_name must be 'owner/name'")
        with self.transaction():
            if self.find_repo(owner, name) is not None:
                raise validation_failed(
                    {
                        "resource": "Repository",
                        "code": "custom",
                        "field": "name",
                        "message": "name already exists on this account",
                    }
                )
            account = self.ensure_account(owner, owner_type)
            now = self.now()
            repo_id = self.new_id()
            repo = Repo(
                id=repo_id,
                node_id=node_id("Repository", repo_id),
                owner=account.login,
                name=name,
                default_branch=default_branch,
                private=private,
                created_at=now,
                updated_at=now,
                pushed_at=now,
                description=description,
            )
            self.repos[repo.id] = repo
            git = GitRepo.init_bare(self.repo_path(repo), self.workdir / "tmp", default_branch)
            who = self._git_identity(author or account.login)
            if source_dir is not None:
                sha = git.commit_directory(Path(source_dir), message, who, now)
                git.update_ref(f"refs/heads/{default_branch}", sha)
            elif files:
                sha = git.commit_files(None, dict(files), message, who, now)
                git.update_ref(f"refs/heads/{default_branch}", sha)
            for label_name, color, text in DEFAULT_LABELS:
                label_id = self.new_id()
                self.labels[label_id] = Label(
                    id=label_id,
                    node_id=node_id("Label", label_id),
                    repo_id=repo.id,
                    name=label_name,
                    color=color,
                    description=text,
                    default=True,
                )
            return repo

    def rename_repo(self, repo: Repo | str, new_name: str, *, by: str | None = None) -> Repo:
        """Rename ``repo`` within its owner, as its settings page does: the id stays, the git
        repository moves, and the old name answers with redirects (301 for GET and HEAD, 307
        otherwise, to ``/repositories/{id}/...``; git to the new URL) until a repository takes
        it. Sends ``repository.renamed`` to Apps subscribed to ``repository``."""
        from .payloads import envelope

        if not new_name or "/" in new_name:
            raise ValueError("new_name is the repository's name without its owner")
        with self.transaction():
            repo = self.resolve_repo(repo)
            old_name = repo.name
            if self.find_repo(repo.owner, new_name) not in (None, repo):
                raise validation_failed(
                    {"resource": "Repository", "code": "custom", "field": "name",
                     "message": "name already exists on this account"}
                )
            old_path = self.repo_path(repo)
            old_full = repo.full_name
            repo.name = new_name
            repo.updated_at = self.now()
            if old_path != self.repo_path(repo):
                old_path.rename(self.repo_path(repo))
            self.moved[old_full.lower()] = repo.id
            self.moved.pop(repo.full_name.lower(), None)
            self.emit("repository", envelope(
                self, repo, by or repo.owner, "renamed",
                changes={"repository": {"name": {"from": old_name}}},
            ))
            return repo

    def set_collaborator(self, repo: Repo | str, login: str, role: str) -> None:
        """Give ``login`` a role on ``repo`` (``"none"`` removes it)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        with self.transaction():
            repo = self.resolve_repo(repo)
            account = self.ensure_account(login)
            repo.collaborators.pop(account.login, None)
            if role != "none":
                repo.collaborators[account.login] = role

    # -- branch protection -------------------------------------------------------------------

    def protect_branch(
        self,
        repo: Repo | str,
        branch: str,
        contexts: Iterable[str] = (),
        *,
        strict: bool = False,
    ) -> BranchProtection:
        """Protect ``branch`` (an existing branch, by exact name) with required status checks
        ``contexts``; ``strict`` requires it to be up to date before merging. Replaces any
        protection it had. Only reported by the REST API: merges and pushes are not refused."""
        if isinstance(contexts, str):
            raise TypeError("contexts must be a list of status check names, not a string")
        names = list(dict.fromkeys(str(c) for c in contexts))
        with self.transaction():
            repo = self.resolve_repo(repo)
            if self.git(repo).ref_sha(f"refs/heads/{branch}") is None:
                raise ApiError(404, "Branch not found")
            now = self.now()
            rule = self.find_branch_protection(repo, branch)
            if rule is None:
                rule = BranchProtection(
                    id=self.new_id(), repo_id=repo.id, branch=branch, created_at=now, updated_at=now
                )
                self.branch_protections[rule.id] = rule
            rule.contexts = names
            rule.strict = bool(strict)
            rule.updated_at = now
            return rule

    def unprotect_branch(self, repo: Repo | str, branch: str) -> bool:
        """Remove the protection of ``branch``; ``False`` if it had none."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            rule = self.find_branch_protection(repo, branch)
            if rule is None:
                return False
            del self.branch_protections[rule.id]
            return True

    def _git_identity(self, login: str) -> tuple[str, str]:
        account = self.find_account(login)
        if account is None:
            return login, f"{login}@users.noreply.github.com"
        email = account.email or f"{account.id}+{account.login}@users.noreply.github.com"
        return account.name or account.login, email

    def branch_sha(self, repo: Repo | str, branch: str) -> str | None:
        repo = self.resolve_repo(repo)
        return self.git(repo).ref_sha(f"refs/heads/{branch}")

    def commit_files(
        self,
        repo: Repo | str,
        branch: str,
        files: dict[str, str | bytes | None],
        message: str = "Update files",
        *,
        author: str | None = None,
        base: str | None = None,
    ) -> str:
        """Commit ``files`` (``None`` deletes) onto ``branch`` directly in the bare repository,
        as ``author``, and announce it like a push. The branch starts from ``base`` (a branch
        or sha; default branch by default) when it does not exist yet. No permission checks:
        use :meth:`UserActor.push` to push through smart HTTP as a user."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            git = self.git(repo)
            ref = f"refs/heads/{branch}"
            before = git.ref_sha(ref)
            parent = before or git.resolve_commit(base or repo.default_branch)
            who = author or repo.owner
            sha = git.commit_files(parent, files, message, self._git_identity(who), self.now())
            if not git.update_ref(ref, sha, before or ZERO_SHA):
                raise RuntimeError(f"{ref} moved while committing")
            self.record_push(repo, [(ref, before or ZERO_SHA, sha)], who)
            return sha

    # -- announcing ref updates --------------------------------------------------------------

    def record_push(self, repo: Repo, updates: list[tuple[str, str, str]], pusher: str) -> None:
        """Announce ref updates that already happened: ``push`` events, pull request
        ``synchronize``, and the :meth:`on_push` callbacks (after the transaction)."""
        with self.transaction():
            repo.pushed_at = self.now()
            repo.updated_at = self.now()
            for ref, before, after in updates:
                self.emit("push", self._push_payload(repo, ref, before, after, pusher))
                self._on_ref_updated(repo, ref, before, after, pusher)
                for callback in list(self.push_callbacks):
                    self.after_commit(
                        lambda cb=callback, r=ref, b=before, a=after: self._call_push(
                            cb, repo, r, b, a, pusher
                        )
                    )

    def _call_push(
        self, callback: Any, repo: Repo, ref: str, before: str, after: str, pusher: str
    ) -> None:
        try:
            callback(repo, ref, before, after, pusher)
        except Exception as exc:
            log.exception("push callback failed")
            self.subscriber_errors.append(exc)

    def _on_ref_updated(self, repo: Repo, ref: str, before: str, after: str, pusher: str) -> None:
        """Hook for other mixins (pull requests follow their branches)."""

    def _push_payload(
        self, repo: Repo, ref: str, before: str, after: str, pusher: str
    ) -> dict[str, Any]:
        from .payloads import envelope

        git = self.git(repo)
        commits: list[dict[str, Any]] = []
        if after != ZERO_SHA:
            if before == ZERO_SHA:
                shas = git.rev_list(
                    "--reverse", after, "--not", f"--exclude={ref}", "--all", limit=20
                )
            else:
                shas = git.rev_list("--reverse", f"{before}..{after}", limit=20)
            commits = [self._push_commit(repo, git, sha) for sha in shas]
        forced = before != ZERO_SHA and after != ZERO_SHA and not git.is_ancestor(before, after)
        account = self.find_account(pusher)
        repository = repo_json(self, repo)
        repository["created_at"] = int(repo.created_at)
        repository["pushed_at"] = int(repo.pushed_at)
        repository["stargazers"] = 0
        repository["master_branch"] = repo.default_branch
        owner_account = self.find_account(repo.owner)
        if owner_account is not None and owner_account.type == "Organization":
            repository["organization"] = repo.owner
        payload = envelope(
            self,
            repo,
            pusher,
            ref=ref,
            before=before,
            after=after,
            created=before == ZERO_SHA,
            deleted=after == ZERO_SHA,
            forced=forced,
            base_ref=None,
            compare=self.api(f"/{repo.full_name}/compare/{before[:12]}...{after[:12]}"),
            commits=commits,
            head_commit=commits[-1]
            if commits
            else (self._push_commit(repo, git, after) if after != ZERO_SHA else None),
            pusher={"name": pusher, "email": account.email if account else None},
        )
        payload["repository"] = repository
        return payload

    def _push_commit(self, repo: Repo, git: GitRepo, sha: str) -> dict[str, Any]:
        info = git.commit(sha)
        assert info is not None
        if info.parents:
            added, removed, modified = git.changed_paths(info.parents[0], sha)
        else:
            added = [e.path for e in git.tree(sha, recursive=True) or [] if e.type == "blob"]
            removed, modified = [], []

        def person(p: Any) -> dict[str, Any]:
            body = {"name": p.name, "email": p.email}
            user = None
            for account in self.accounts.values():
                if p.email in (
                    account.email,
                    f"{account.id}+{account.login}@users.noreply.github.com",
                ):
                    user = account.login
            if user:
                body["username"] = user
            return body

        return {
            "id": sha,
            "tree_id": info.tree,
            "distinct": True,
            "message": info.message.rstrip("\n"),
            "timestamp": iso(info.committer.date),
            "url": self.api(f"/{repo.full_name}/commit/{sha}"),
            "author": person(info.author),
            "committer": person(info.committer),
            "added": added,
            "removed": removed,
            "modified": modified,
        }

    # -- refs through REST -------------------------------------------------------------------

    def _check_workflows(
        self, principal: Principal, git: GitRepo, ref: str, before: str, after: str
    ) -> None:
        if principal.kind != "installation" or has_permission(principal, "workflows", "write"):
            return
        path = touched_workflow(git, ref, before, after)
        if path is not None:
            raise ApiError(403, workflow_refusal(path))

    def create_git_ref(self, principal: Principal, repo: Repo, ref: str, sha: str) -> str:
        with self.transaction():
            authorize(self, principal, repo, ("contents", "write"), "write")
            if not ref.startswith("refs/") or ref.count("/") < 2:
                raise validation_failed(message="Reference name is invalid")
            git = self.git(repo)
            if not SHA_RE.match(sha or "") or git.object_type(sha) is None:
                raise validation_failed(message="Object does not exist")
            if git.ref_sha(ref) is not None:
                raise validation_failed(message="Reference already exists")
            self._check_workflows(principal, git, ref, ZERO_SHA, sha)
            if not git.update_ref(ref, sha, ZERO_SHA):
                raise validation_failed(message="Reference already exists")
            self.record_push(repo, [(ref, ZERO_SHA, sha)], principal.login or repo.owner)
            return git.object_type(sha) or "commit"

    def update_git_ref(
        self, principal: Principal, repo: Repo, ref: str, sha: str, force: bool = False
    ) -> str:
        with self.transaction():
            authorize(self, principal, repo, ("contents", "write"), "write")
            git = self.git(repo)
            before = git.ref_sha(ref)
            if before is None:
                raise validation_failed(message="Reference does not exist")
            if not SHA_RE.match(sha or "") or git.object_type(sha) is None:
                raise validation_failed(message="Object does not exist")
            if not force and not git.is_ancestor(before, sha):
                raise validation_failed(message="Update is not a fast forward")
            self._check_workflows(principal, git, ref, before, sha)
            git.update_ref(ref, sha, before)
            self.record_push(repo, [(ref, before, sha)], principal.login or repo.owner)
            return git.object_type(sha) or "commit"

    def delete_git_ref(self, principal: Principal, repo: Repo, ref: str) -> None:
        with self.transaction():
            authorize(self, principal, repo, ("contents", "write"), "write")
            git = self.git(repo)
            before = git.ref_sha(ref)
            if before is None:
                raise validation_failed(message="Reference does not exist")
            git.delete_ref(ref)
            self.record_push(repo, [(ref, before, ZERO_SHA)], principal.login or repo.owner)
