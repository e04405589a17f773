"""Pull requests: open, edit, review requests, ready-for-review, merge; following pushes."""

from __future__ import annotations

import re
from typing import Any

from .access import Principal, authorize, can_see, user_role
from .errors import ApiError, custom_error, invalid_field, not_found, validation_failed
from .gitrepo import ZERO_SHA
from .ids import node_id
from .issues import IssuesMixin
from .payloads import envelope
from .records import PullRequest, Repo, role_rank
from .shapes import user_json
from .shapes_issues import pull_json

CLOSING_KEYWORDS = re.compile(
    r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.IGNORECASE
)


class PullsMixin(IssuesMixin):
    """Pull requests; the issue half (title, body, labels, comments) lives in IssuesMixin."""

    def get_pull(self, repo: Repo, number: int) -> PullRequest:
        pull = self.find_pull(repo, number)
        if pull is None:
            raise not_found()
        return pull

    def _emit_pull(self, pull: PullRequest, action: str, sender: str, **extra: Any) -> None:
        repo = self.repos[pull.repo_id]
        self.emit(
            "pull_request",
            envelope(
                self,
                repo,
                sender,
                action,
                number=pull.number,
                pull_request=pull_json(self, pull),
                **extra,
            ),
        )

    # -- opening and editing -----------------------------------------------------------------

    def open_pull(
        self,
        principal: Principal,
        repo: Repo | str,
        *,
        title: str,
        head: str,
        base: str,
        body: str | None = None,
        draft: bool = False,
        maintainer_can_modify: bool = False,
    ) -> PullRequest:
        with self.transaction():
            repo = self.resolve_repo(repo)
            authorize(self, principal, repo, ("pull_requests", "write"), "read")
            head_owner, _, head_ref = head.rpartition(":")
            if not title:
                raise validation_failed(invalid_field("PullRequest", "title", "missing_field"))
            git = self.git(repo)
            base_sha = git.ref_sha(f"refs/heads/{base}")
            head_sha = git.ref_sha(f"refs/heads/{head_ref}")
            if head_owner and head_owner.lower() != repo.owner.lower():
                head_sha = None  # forks are not emulated
            errors = []
            if base_sha is None:
                errors.append(invalid_field("PullRequest", "base"))
            if head_sha is None:
                errors.append(invalid_field("PullRequest", "head"))
            if errors:
                raise validation_failed(*errors)
            assert base_sha is not None and head_sha is not None
            for other in self.pulls.values():
                issue = self.find_issue(repo, other.number)
                if (
                    other.repo_id == repo.id
                    and other.head_ref == head_ref
                    and other.base_ref == base
                    and issue is not None
                    and issue.state == "open"
                ):
                    raise validation_failed(
                        custom_error(
                            "PullRequest",
                            f"A pull request already exists for {repo.owner}:{head_ref}.",
                        )
                    )
            if git.is_ancestor(head_sha, base_sha):
                raise validation_failed(
                    custom_error("PullRequest", f"No commits between {base} and {head_ref}")
                )
            sender = self.sender_of(principal, repo)
            issue = self._new_issue(repo, title, body, sender, principal, is_pull=True)
            pull_id = self.new_id()
            pull = PullRequest(
                id=pull_id,
                node_id=node_id("PullRequest", pull_id),
                repo_id=repo.id,
                number=issue.number,
                head_ref=head_ref,
                head_sha=head_sha,
                base_ref=base,
                base_sha=base_sha,
                draft=draft,
                maintainer_can_modify=maintainer_can_modify,
            )
            self.pulls[pull_id] = pull
            self._emit_pull(pull, "opened", sender)
            return pull

    def update_pull(
        self,
        principal: Principal,
        repo: Repo | str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        base: str | None = None,
    ) -> PullRequest:
        with self.transaction():
            repo = self.resolve_repo(repo)
            pull = self.get_pull(repo, number)
            issue = self.get_issue(repo, number)
            is_author = principal.kind == "user" and principal.login == issue.user
            role = "write" if base is not None else ("read" if is_author else "triage")
            authorize(self, principal, repo, ("pull_requests", "write"), role)
            if state is not None and state not in ("open", "closed"):
                raise validation_failed(invalid_field("PullRequest", "state"))
            sender = self.sender_of(principal, repo)
            changes: dict[str, Any] = {}
            if title is not None and title != issue.title:
                changes["title"] = {"from": issue.title}
                issue.title = title
            if body is not None and body != issue.body:
                changes["body"] = {"from": issue.body}
                issue.body = body
            if base is not None and base != pull.base_ref:
                base_sha = self.git(repo).ref_sha(f"refs/heads/{base}")
                if base_sha is None:
                    raise validation_failed(invalid_field("PullRequest", "base"))
                changes["base"] = {"ref": {"from": pull.base_ref}, "sha": {"from": pull.base_sha}}
                pull.base_ref, pull.base_sha = base, base_sha
            if changes:
                self._touch(issue)
                self._emit_pull(pull, "edited", sender, changes=changes)
            if state is not None and state != issue.state:
                if state == "open" and pull.merged:
                    raise validation_failed(
                        custom_error("PullRequest", "Cannot reopen a merged pull request")
                    )
                if state == "open" and self.git(repo).ref_sha(
                        f"refs/heads/{pull.head_ref}") is None:
                    # GitHub offers "Restore branch" first; the API refuses the same way.
                    raise validation_failed(custom_error(
                        "PullRequest",
                        f"state cannot be changed. The {pull.head_ref} branch has been deleted.",
                    ))
                self._set_state(issue, state, sender)
            return pull

    def request_reviewers(
        self, principal: Principal, repo: Repo | str, number: int, reviewers: list[str]
    ) -> PullRequest:
        with self.transaction():
            repo = self.resolve_repo(repo)
            pull = self.get_pull(repo, number)
            issue = self.get_issue(repo, number)
            authorize(self, principal, repo, ("pull_requests", "write"), "triage")
            for login in reviewers:
                if login.lower() == issue.user.lower():
                    raise validation_failed(
                        message="Review cannot be requested from pull request author."
                    )
                account = self.find_account(login)
                if account is None or role_rank(user_role(repo, account.login)) < role_rank("read"):
                    raise validation_failed(
                        message="Reviews may only be requested from collaborators. One or more "
                        "of the users or teams you specified is not a collaborator of the "
                        f"{repo.full_name} repository."
                    )
            sender = self.sender_of(principal, repo)
            for login in reviewers:
                account = self.find_account(login)
                assert account is not None
                if account.login not in pull.requested_reviewers:
                    pull.requested_reviewers.append(account.login)
                    self._touch(issue)
                    self._emit_pull(
                        pull,
                        "review_requested",
                        sender,
                        requested_reviewer=user_json(self, account.login),
                    )
            return pull

    def mark_ready_for_review(
        self, principal: Principal, repo: Repo | str, number: int
    ) -> PullRequest:
        with self.transaction():
            repo = self.resolve_repo(repo)
            pull = self.get_pull(repo, number)
            issue = self.get_issue(repo, number)
            is_author = principal.kind == "user" and principal.login == issue.user
            authorize(
                self, principal, repo, ("pull_requests", "write"), "read" if is_author else "write"
            )
            if pull.draft:
                pull.draft = False
                self._touch(issue)
                self._emit_pull(pull, "ready_for_review", self.sender_of(principal, repo))
            return pull

    def pull_by_node_id(self, principal: Principal, value: str) -> PullRequest | None:
        for pull in self.pulls.values():
            if pull.node_id == value and can_see(self, principal, self.repos[pull.repo_id]):
                return pull
        return None

    # -- merging -----------------------------------------------------------------------------

    def merge_pull(
        self,
        principal: Principal,
        repo: Repo | str,
        number: int,
        *,
        merge_method: str = "merge",
        commit_title: str | None = None,
        commit_message: str | None = None,
        sha: str | None = None,
    ) -> str:
        """Merge like ``PUT /pulls/{n}/merge``; returns the new commit on the base branch."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            pull = self.get_pull(repo, number)
            issue = self.get_issue(repo, number)
            authorize(self, principal, repo, ("contents", "write"), "write")
            if merge_method not in ("merge", "squash", "rebase"):
                raise validation_failed(invalid_field("PullRequest", "merge_method"))
            if pull.merged or issue.state != "open" or pull.draft:
                raise ApiError(405, "Pull Request is not mergeable")
            if sha is not None and sha != pull.head_sha:
                raise ApiError(409, "Head branch was modified. Review and try the merge again.")
            git = self.git(repo)
            base_ref = f"refs/heads/{pull.base_ref}"
            base_sha = git.ref_sha(base_ref)
            if base_sha is None:
                raise ApiError(405, "Pull Request is not mergeable")
            tree = git.merge_tree(base_sha, pull.head_sha)
            if tree is None:
                raise ApiError(405, "Pull Request is not mergeable")
            sender = self.sender_of(principal, repo)
            who = self._git_identity(sender)
            now = self.now()
            if merge_method == "rebase" and git.is_ancestor(base_sha, pull.head_sha):
                new_sha = pull.head_sha
            elif merge_method == "merge":
                title = commit_title or (
                    f"Merge pull request #{number} from {repo.owner}/{pull.head_ref}"
                )
                body = issue.title if commit_message is None else commit_message
                message = f"{title}\n\n{body}"
                new_sha = git.commit_tree(
                    tree, [base_sha, pull.head_sha], message.rstrip() + "\n", who, now
                )
            else:
                title = commit_title or f"{issue.title} (#{number})"
                if commit_message is None:
                    merge_base = git.merge_base(base_sha, pull.head_sha) or base_sha
                    shas = git.rev_list("--reverse", f"{merge_base}..{pull.head_sha}")
                    infos = [git.commit(s) for s in shas]
                    commit_message = "\n".join(
                        f"* {i.message.strip()}" for i in infos if i is not None
                    )
                message = f"{title}\n\n{commit_message}".rstrip() + "\n"
                new_sha = git.commit_tree(tree, [base_sha], message, who, now)
            self._check_workflows(principal, git, base_ref, base_sha, new_sha)
            if not git.update_ref(base_ref, new_sha, base_sha):
                raise ApiError(409, "Base branch was modified. Review and try the merge again.")
            pull.base_sha = base_sha
            self._close_merged(pull, sender, new_sha)
            self.record_push(repo, [(base_ref, base_sha, new_sha)], sender)
            return new_sha

    def _close_merged(self, pull: PullRequest, sender: str, merge_sha: str) -> None:
        repo = self.repos[pull.repo_id]
        issue = self.get_issue(repo, pull.number)
        now = self.now()
        pull.merged = True
        pull.merged_at = now
        pull.merged_by = sender
        pull.merge_commit_sha = merge_sha
        issue.state = "closed"
        issue.closed_at = now
        issue.closed_by = sender
        self._touch(issue)
        self._emit_pull(pull, "closed", sender)
        if pull.base_ref == repo.default_branch:
            text = f"{issue.title}\n{issue.body or ''}"
            for match in CLOSING_KEYWORDS.finditer(text):
                target = self.find_issue(repo, int(match.group(1)))
                if target is not None and not target.is_pull and target.state == "open":
                    self._set_state(target, "closed", sender, "completed")

    # -- following pushes --------------------------------------------------------------------

    def _on_ref_updated(self, repo: Repo, ref: str, before: str, after: str, pusher: str) -> None:
        super()._on_ref_updated(repo, ref, before, after, pusher)
        if not ref.startswith("refs/heads/"):
            return
        branch = ref.removeprefix("refs/heads/")
        git = self.git(repo)
        for pull in list(self.pulls.values()):
            issue = self.find_issue(repo, pull.number)
            if pull.repo_id != repo.id or issue is None or issue.state != "open":
                continue
            if after == ZERO_SHA:
                if pull.head_ref == branch:
                    # Deleting a pull request's head branch closes it, unmerged.
                    self._set_state(issue, "closed", pusher)
            elif pull.head_ref == branch and pull.head_sha != after:
                previous = pull.head_sha
                pull.head_sha = after
                self._touch(issue)
                self._emit_pull(pull, "synchronize", pusher, before=previous, after=after)
            elif pull.base_ref == branch:
                pull.base_sha = after
                if git.is_ancestor(pull.head_sha, after):
                    # The head was merged by a push to the base: GitHub marks it merged.
                    self._close_merged(pull, pusher, after)
