"""Issues, comments, labels and reactions: the operations REST calls and scripted users share."""

from __future__ import annotations

from typing import Any

from .access import Principal, authorize, has_permission, may
from .errors import ApiError, invalid_field, not_found, validation_failed
from .ids import node_id
from .payloads import envelope
from .records import Comment, Issue, Label, Reaction, Repo
from .repos import ReposMixin
from .shapes_issues import (
    REACTION_CONTENTS,
    comment_json,
    issue_json,
    label_json,
    pull_json,
    reaction_json,
)


class IssuesMixin(ReposMixin):
    """Everything on the issue side of issues and pull requests."""

    # -- helpers -----------------------------------------------------------------------------

    def sender_of(self, principal: Principal, repo: Repo) -> str:
        return principal.login or repo.owner

    def _authorize_issue(
        self, principal: Principal, repo: Repo, issue: Issue | None, level: str, role: str | None
    ) -> None:
        """Issue endpoints on a pull request also accept the ``pull_requests`` permission."""
        if (
            principal.kind == "installation"
            and issue is not None
            and issue.is_pull
            and has_permission(principal, "pull_requests", level)
        ):
            authorize(self, principal, repo, ("pull_requests", level), role)
            return
        authorize(self, principal, repo, ("issues", level), role)

    def _may_issue(
        self, principal: Principal, repo: Repo, issue: Issue | None, level: str, role: str | None
    ) -> bool:
        try:
            self._authorize_issue(principal, repo, issue, level, role)
        except ApiError:
            return False
        return True

    def get_issue(self, repo: Repo, number: int) -> Issue:
        issue = self.find_issue(repo, number)
        if issue is None:
            raise not_found()
        return issue

    def _emit_issue(self, issue: Issue, action: str, sender: str, **extra: Any) -> None:
        repo = self.repos[issue.repo_id]
        if issue.is_pull:
            pull = self.find_pull(repo, issue.number)
            assert pull is not None
            self.emit(
                "pull_request",
                envelope(
                    self,
                    repo,
                    sender,
                    action,
                    number=issue.number,
                    pull_request=pull_json(self, pull),
                    **extra,
                ),
            )
        else:
            self.emit(
                "issues",
                envelope(self, repo, sender, action, issue=issue_json(self, issue), **extra),
            )

    def ensure_label(
        self, repo: Repo, name: str, color: str = "ededed", description: str | None = None
    ) -> Label:
        with self.transaction():
            label = self.find_label(repo, name)
            if label is None:
                label_id = self.new_id()
                label = Label(
                    id=label_id,
                    node_id=node_id("Label", label_id),
                    repo_id=repo.id,
                    name=name,
                    color=color,
                    description=description,
                )
                self.labels[label_id] = label
            return label

    def _touch(self, issue: Issue) -> None:
        issue.updated_at = self.now()

    # -- issues ------------------------------------------------------------------------------

    def open_issue(
        self,
        principal: Principal,
        repo: Repo | str,
        title: str,
        body: str | None = None,
        labels: list[str] | None = None,
        assignees: list[str] | None = None,
    ) -> Issue:
        with self.transaction():
            repo = self.resolve_repo(repo)
            authorize(self, principal, repo, ("issues", "write"), "read")
            if not title:
                raise validation_failed(invalid_field("Issue", "title", "missing_field"))
            # GitHub silently drops labels and assignees set by callers who can't triage.
            if not may(self, principal, repo, ("issues", "write"), "triage"):
                labels, assignees = [], []
            sender = self.sender_of(principal, repo)
            issue = self._new_issue(repo, title, body, sender, principal)
            issue.assignees = list(assignees or [])
            names = [self.ensure_label(repo, name).name for name in labels or []]
            issue.labels = list(dict.fromkeys(names))
            self._emit_issue(issue, "opened", sender)
            for name in issue.labels:
                label = self.find_label(repo, name)
                assert label is not None
                self._emit_issue(issue, "labeled", sender, label=label_json(self, label))
            return issue

    def _new_issue(
        self,
        repo: Repo,
        title: str,
        body: str | None,
        author: str,
        principal: Principal,
        is_pull: bool = False,
    ) -> Issue:
        number = repo.next_number
        repo.next_number += 1
        issue_id = self.new_id()
        issue = Issue(
            id=issue_id,
            node_id=node_id("Issue", issue_id),
            repo_id=repo.id,
            number=number,
            title=title,
            body=body,
            user=author,
            created_at=self.now(),
            updated_at=self.now(),
            app_id=principal.app_id if principal.kind == "installation" else None,
            is_pull=is_pull,
        )
        self.issues[issue_id] = issue
        return issue

    def update_issue(
        self,
        principal: Principal,
        repo: Repo | str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        state_reason: str | None = None,
        labels: list[str] | None = None,
        assignees: list[str] | None = None,
    ) -> Issue:
        with self.transaction():
            repo = self.resolve_repo(repo)
            issue = self.get_issue(repo, number)
            is_author = principal.kind == "user" and principal.login == issue.user
            self._authorize_issue(
                principal, repo, issue, "write", "read" if is_author else "triage"
            )
            if state is not None and state not in ("open", "closed"):
                raise validation_failed(invalid_field("Issue", "state"))
            sender = self.sender_of(principal, repo)
            changes: dict[str, Any] = {}
            if title is not None and title != issue.title:
                changes["title"] = {"from": issue.title}
                issue.title = title
            if body is not None and body != issue.body:
                changes["body"] = {"from": issue.body}
                issue.body = body
            if changes:
                self._touch(issue)
                self._emit_issue(issue, "edited", sender, changes=changes)
            if labels is not None:
                self._replace_labels(issue, labels, sender)
            if assignees is not None:
                issue.assignees = list(assignees)
                self._touch(issue)
            if state is not None and state != issue.state:
                self._set_state(issue, state, sender, state_reason)
            return issue

    def _set_state(
        self, issue: Issue, state: str, sender: str, state_reason: str | None = None
    ) -> None:
        issue.state = state
        self._touch(issue)
        if state == "closed":
            issue.closed_at = self.now()
            issue.closed_by = sender
            issue.state_reason = None if issue.is_pull else (state_reason or "completed")
            self._emit_issue(issue, "closed", sender)
        else:
            issue.closed_at = None
            issue.closed_by = None
            issue.state_reason = None if issue.is_pull else "reopened"
            self._emit_issue(issue, "reopened", sender)

    # -- labels ------------------------------------------------------------------------------

    def add_labels(
        self, principal: Principal, repo: Repo | str, number: int, labels: list[str]
    ) -> list[Label]:
        with self.transaction():
            repo = self.resolve_repo(repo)
            issue = self.get_issue(repo, number)
            self._authorize_issue(principal, repo, issue, "write", "triage")
            sender = self.sender_of(principal, repo)
            for name in labels:
                label = self.ensure_label(repo, name)
                if label.name not in issue.labels:
                    issue.labels.append(label.name)
                    self._touch(issue)
                    self._emit_issue(issue, "labeled", sender, label=label_json(self, label))
            return self.issue_label_records(issue)

    def remove_label(
        self, principal: Principal, repo: Repo | str, number: int, name: str
    ) -> list[Label]:
        with self.transaction():
            repo = self.resolve_repo(repo)
            issue = self.get_issue(repo, number)
            self._authorize_issue(principal, repo, issue, "write", "triage")
            label = self.find_label(repo, name)
            if label is None or label.name not in issue.labels:
                raise ApiError(404, "Label does not exist")
            issue.labels.remove(label.name)
            self._touch(issue)
            self._emit_issue(
                issue, "unlabeled", self.sender_of(principal, repo), label=label_json(self, label)
            )
            return self.issue_label_records(issue)

    def set_labels(
        self, principal: Principal, repo: Repo | str, number: int, labels: list[str]
    ) -> list[Label]:
        with self.transaction():
            repo = self.resolve_repo(repo)
            issue = self.get_issue(repo, number)
            self._authorize_issue(principal, repo, issue, "write", "triage")
            self._replace_labels(issue, labels, self.sender_of(principal, repo))
            return self.issue_label_records(issue)

    def _replace_labels(self, issue: Issue, labels: list[str], sender: str) -> None:
        repo = self.repos[issue.repo_id]
        wanted = [self.ensure_label(repo, name).name for name in labels]
        for name in [n for n in issue.labels if n not in wanted]:
            issue.labels.remove(name)
            label = self.find_label(repo, name)
            if label is not None:
                self._emit_issue(issue, "unlabeled", sender, label=label_json(self, label))
        for name in [n for n in wanted if n not in issue.labels]:
            issue.labels.append(name)
            label = self.find_label(repo, name)
            assert label is not None
            self._emit_issue(issue, "labeled", sender, label=label_json(self, label))
        self._touch(issue)

    def issue_label_records(self, issue: Issue) -> list[Label]:
        repo = self.repos[issue.repo_id]
        found = [self.find_label(repo, name) for name in issue.labels]
        return [label for label in found if label is not None]

    def create_label(
        self,
        principal: Principal,
        repo: Repo | str,
        name: str,
        color: str = "ededed",
        description: str | None = None,
    ) -> Label:
        with self.transaction():
            repo = self.resolve_repo(repo)
            authorize(self, principal, repo, ("issues", "write"), "write")
            if not name:
                raise validation_failed(invalid_field("Label", "name", "missing_field"))
            if self.find_label(repo, name) is not None:
                raise validation_failed(invalid_field("Label", "name", "already_exists"))
            return self.ensure_label(repo, name, color.lstrip("#") or "ededed", description)

    # -- comments ----------------------------------------------------------------------------

    def get_comment(self, repo: Repo, comment_id: int) -> Comment:
        comment = self.comments.get(comment_id)
        if comment is None or comment.repo_id != repo.id:
            raise not_found()
        return comment

    def add_comment(
        self, principal: Principal, repo: Repo | str, number: int, body: str
    ) -> Comment:
        with self.transaction():
            repo = self.resolve_repo(repo)
            issue = self.get_issue(repo, number)
            self._authorize_issue(principal, repo, issue, "write", "read")
            if issue.locked and not self._may_issue(principal, repo, issue, "write", "write"):
                raise ApiError(403, "Unable to create comment because issue is locked.")
            if not body:
                raise validation_failed(invalid_field("IssueComment", "body", "missing_field"))
            sender = self.sender_of(principal, repo)
            comment_id = self.new_id()
            comment = Comment(
                id=comment_id,
                node_id=node_id("IssueComment", comment_id),
                repo_id=repo.id,
                issue_number=number,
                body=body,
                user=sender,
                created_at=self.now(),
                updated_at=self.now(),
                app_id=principal.app_id if principal.kind == "installation" else None,
            )
            self.comments[comment_id] = comment
            self._touch(issue)
            self._emit_comment(comment, "created", sender)
            return comment

    def edit_comment(
        self, principal: Principal, repo: Repo | str, comment_id: int, body: str
    ) -> Comment:
        with self.transaction():
            repo = self.resolve_repo(repo)
            comment = self.get_comment(repo, comment_id)
            issue = self.get_issue(repo, comment.issue_number)
            is_author = principal.login == comment.user
            self._authorize_issue(principal, repo, issue, "write", "read" if is_author else "write")
            if not body:
                raise validation_failed(invalid_field("IssueComment", "body", "missing_field"))
            previous = comment.body
            comment.body = body
            comment.updated_at = self.now()
            if previous != body:
                self._emit_comment(
                    comment,
                    "edited",
                    self.sender_of(principal, repo),
                    changes={"body": {"from": previous}},
                )
            return comment

    def delete_comment(self, principal: Principal, repo: Repo | str, comment_id: int) -> None:
        with self.transaction():
            repo = self.resolve_repo(repo)
            comment = self.get_comment(repo, comment_id)
            issue = self.get_issue(repo, comment.issue_number)
            is_author = principal.login == comment.user
            self._authorize_issue(principal, repo, issue, "write", "read" if is_author else "write")
            self._emit_comment(comment, "deleted", self.sender_of(principal, repo))
            del self.comments[comment_id]

    def _emit_comment(self, comment: Comment, action: str, sender: str, **extra: Any) -> None:
        repo = self.repos[comment.repo_id]
        issue = self.get_issue(repo, comment.issue_number)
        self.emit(
            "issue_comment",
            envelope(
                self,
                repo,
                sender,
                action,
                **extra,
                issue=issue_json(self, issue),
                comment=comment_json(self, comment),
            ),
        )

    # -- reactions ---------------------------------------------------------------------------

    def add_reaction(
        self,
        principal: Principal,
        repo: Repo | str,
        subject: str,
        subject_id: int,
        content: str,
    ) -> tuple[Reaction, bool]:
        """React to an issue (``subject="issue"``, id = issue number) or an issue comment
        (``"comment"``, id = comment id). Returns the reaction and whether it is new."""
        with self.transaction():
            repo = self.resolve_repo(repo)
            if subject == "issue":
                issue = self.get_issue(repo, subject_id)
                target_id = issue.id
            else:
                comment = self.get_comment(repo, subject_id)
                issue = self.get_issue(repo, comment.issue_number)
                target_id = comment.id
            self._authorize_issue(principal, repo, issue, "write", "read")
            if content not in REACTION_CONTENTS:
                raise validation_failed(invalid_field("Reaction", "content"))
            sender = self.sender_of(principal, repo)
            for reaction in self.reactions.values():
                if (reaction.subject, reaction.subject_id, reaction.user, reaction.content) == (
                    subject,
                    target_id,
                    sender,
                    content,
                ):
                    return reaction, False
            reaction_id = self.new_id()
            reaction = Reaction(
                id=reaction_id,
                node_id=node_id("Reaction", reaction_id),
                repo_id=repo.id,
                subject=subject,
                subject_id=target_id,
                content=content,
                user=sender,
                created_at=self.now(),
            )
            self.reactions[reaction_id] = reaction
            # GitHub has no reaction webhook; this event is the emulator's own.
            self.emit(
                "reaction",
                envelope(
                    self,
                    repo,
                    sender,
                    "created",
                    reaction=reaction_json(self, reaction),
                    subject_type="issue" if subject == "issue" else "issue_comment",
                    issue=issue_json(self, issue),
                    **({"comment": comment_json(self, comment)} if subject != "issue" else {}),
                ),
            )
            return reaction, True

    def reactions_for(self, subject: str, target_id: int) -> list[Reaction]:
        return [
            r for r in self.reactions.values() if r.subject == subject and r.subject_id == target_id
        ]
