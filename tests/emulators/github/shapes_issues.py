"""REST JSON for labels, issues, comments, reactions and pull requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .access import user_role
from .ids import iso
from .records import Comment, Issue, Label, PullRequest, Reaction, Repo
from .shapes import app_json, repo_json, user_json

if TYPE_CHECKING:
    from .store import Store

REACTION_CONTENTS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")


def author_association(store: Store, repo: Repo, login: str | None) -> str:
    if login is None:
        return "NONE"
    role = user_role(repo, login)
    if role == "admin" and login.lower() == repo.owner.lower():
        return "OWNER"
    owner = store.find_account(repo.owner)
    if owner is not None and owner.type == "Organization" and role != "none":
        return "MEMBER"
    if role != "none":
        return "COLLABORATOR"
    return "NONE"


def label_json(store: Store, label: Label) -> dict[str, Any]:
    repo = store.repos[label.repo_id]
    return {
        "id": label.id,
        "node_id": label.node_id,
        "url": store.api(f"/repos/{repo.full_name}/labels/{label.name}"),
        "name": label.name,
        "color": label.color,
        "default": label.default,
        "description": label.description,
        "archived_at": None,
        "archived_by": None,
    }


def issue_labels(store: Store, repo: Repo, names: list[str]) -> list[dict[str, Any]]:
    labels = []
    for name in names:
        label = store.find_label(repo, name)
        if label is not None:
            labels.append(label_json(store, label))
    return labels


def reactions_summary(store: Store, subject: str, subject_id: int, url: str) -> dict[str, Any]:
    found = [
        r for r in store.reactions.values() if r.subject == subject and r.subject_id == subject_id
    ]
    summary: dict[str, Any] = {"url": url, "total_count": len(found)}
    for content in REACTION_CONTENTS:
        summary[content] = sum(1 for r in found if r.content == content)
    return summary


def performed_via(store: Store, app_id: int | None) -> dict[str, Any] | None:
    return app_json(store, store.apps[app_id]) if app_id in store.apps else None


def issue_json(store: Store, issue: Issue) -> dict[str, Any]:
    repo = store.repos[issue.repo_id]
    api = store.api(f"/repos/{repo.full_name}/issues/{issue.number}")
    kind = "pull" if issue.is_pull else "issues"
    comments = sum(
        1
        for c in store.comments.values()
        if c.repo_id == repo.id and c.issue_number == issue.number
    )
    assignees = [user_json(store, login) for login in issue.assignees]
    body: dict[str, Any] = {
        "url": api,
        "repository_url": store.api(f"/repos/{repo.full_name}"),
        "labels_url": f"{api}/labels{{/name}}",
        "comments_url": f"{api}/comments",
        "events_url": f"{api}/events",
        "html_url": store.api(f"/{repo.full_name}/{kind}/{issue.number}"),
        "id": issue.id,
        "node_id": issue.node_id,
        "number": issue.number,
        "title": issue.title,
        "user": user_json(store, issue.user),
        "labels": issue_labels(store, repo, issue.labels),
        "state": issue.state,
        "locked": issue.locked,
        "assignee": assignees[0] if assignees else None,
        "assignees": assignees,
        "milestone": None,
        "comments": comments,
        "created_at": iso(issue.created_at),
        "updated_at": iso(issue.updated_at),
        "closed_at": iso(issue.closed_at),
        "author_association": author_association(store, repo, issue.user),
        "type": None,
        "active_lock_reason": None,
        "sub_issues_summary": {"total": 0, "completed": 0, "percent_completed": 0},
        "body": issue.body,
        "closed_by": user_json(store, issue.closed_by),
        "reactions": reactions_summary(store, "issue", issue.id, f"{api}/reactions"),
        "timeline_url": f"{api}/timeline",
        "performed_via_github_app": performed_via(store, issue.app_id),
        "state_reason": issue.state_reason,
    }
    if issue.is_pull:
        pull = store.find_pull(repo, issue.number)
        body["draft"] = bool(pull and pull.draft)
        body["pull_request"] = {
            "url": store.api(f"/repos/{repo.full_name}/pulls/{issue.number}"),
            "html_url": store.api(f"/{repo.full_name}/pull/{issue.number}"),
            "diff_url": store.api(f"/{repo.full_name}/pull/{issue.number}.diff"),
            "patch_url": store.api(f"/{repo.full_name}/pull/{issue.number}.patch"),
            "merged_at": iso(pull.merged_at) if pull else None,
        }
    return body


def comment_json(store: Store, comment: Comment) -> dict[str, Any]:
    repo = store.repos[comment.repo_id]
    api = store.api(f"/repos/{repo.full_name}/issues/comments/{comment.id}")
    issue = store.find_issue(repo, comment.issue_number)
    kind = "pull" if issue is not None and issue.is_pull else "issues"
    return {
        "url": api,
        "html_url": store.api(
            f"/{repo.full_name}/{kind}/{comment.issue_number}#issuecomment-{comment.id}"
        ),
        "issue_url": store.api(f"/repos/{repo.full_name}/issues/{comment.issue_number}"),
        "id": comment.id,
        "node_id": comment.node_id,
        "user": user_json(store, comment.user),
        "created_at": iso(comment.created_at),
        "updated_at": iso(comment.updated_at),
        "author_association": author_association(store, repo, comment.user),
        "body": comment.body,
        "reactions": reactions_summary(store, "comment", comment.id, f"{api}/reactions"),
        "performed_via_github_app": performed_via(store, comment.app_id),
    }


def reaction_json(store: Store, reaction: Reaction) -> dict[str, Any]:
    return {
        "id": reaction.id,
        "node_id": reaction.node_id,
        "user": user_json(store, reaction.user),
        "content": reaction.content,
        "created_at": iso(reaction.created_at),
    }


def _branch_json(store: Store, repo: Repo, ref: str, sha: str) -> dict[str, Any]:
    return {
        "label": f"{repo.owner}:{ref}",
        "ref": ref,
        "sha": sha,
        "user": user_json(store, repo.owner),
        "repo": repo_json(store, repo),
    }


def pull_stats(store: Store, repo: Repo, pull: PullRequest) -> dict[str, Any]:
    git = store.git(repo)
    base = git.merge_base(pull.base_sha, pull.head_sha) or pull.base_sha
    commits = len(git.rev_list(f"{base}..{pull.head_sha}")) if base else 0
    files = git.diff_files(base, pull.head_sha) if base else []
    return {
        "commits": commits,
        "additions": sum(f["additions"] for f in files),
        "deletions": sum(f["deletions"] for f in files),
        "changed_files": len(files),
    }


def pull_json(store: Store, pull: PullRequest, simple: bool = False) -> dict[str, Any]:
    repo = store.repos[pull.repo_id]
    issue = store.find_issue(repo, pull.number)
    assert issue is not None
    api = store.api(f"/repos/{repo.full_name}/pulls/{pull.number}")
    issue_api = store.api(f"/repos/{repo.full_name}/issues/{pull.number}")
    html = store.api(f"/{repo.full_name}/pull/{pull.number}")
    statuses = store.api(f"/repos/{repo.full_name}/statuses/{pull.head_sha}")
    assignees = [user_json(store, login) for login in issue.assignees]
    body: dict[str, Any] = {
        "url": api,
        "id": pull.id,
        "node_id": pull.node_id,
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue_api,
        "commits_url": f"{api}/commits",
        "review_comments_url": f"{api}/comments",
        "review_comment_url": store.api(f"/repos/{repo.full_name}/pulls/comments{{/number}}"),
        "comments_url": f"{issue_api}/comments",
        "statuses_url": statuses,
        "number": pull.number,
        "state": issue.state,
        "locked": issue.locked,
        "title": issue.title,
        "user": user_json(store, issue.user),
        "body": issue.body,
        "labels": issue_labels(store, repo, issue.labels),
        "milestone": None,
        "active_lock_reason": None,
        "created_at": iso(issue.created_at),
        "updated_at": iso(issue.updated_at),
        "closed_at": iso(issue.closed_at),
        "merged_at": iso(pull.merged_at),
        "merge_commit_sha": pull.merge_commit_sha,
        "assignee": assignees[0] if assignees else None,
        "assignees": assignees,
        "requested_reviewers": [user_json(store, login) for login in pull.requested_reviewers],
        "requested_teams": [],
        "head": _branch_json(store, repo, pull.head_ref, pull.head_sha),
        "base": _branch_json(store, repo, pull.base_ref, pull.base_sha),
        "_links": {
            "self": {"href": api},
            "html": {"href": html},
            "issue": {"href": issue_api},
            "comments": {"href": f"{issue_api}/comments"},
            "review_comments": {"href": f"{api}/comments"},
            "review_comment": {
                "href": store.api(f"/repos/{repo.full_name}/pulls/comments{{/number}}")
            },
            "commits": {"href": f"{api}/commits"},
            "statuses": {"href": statuses},
        },
        "author_association": author_association(store, repo, issue.user),
        "auto_merge": None,
        "draft": pull.draft,
    }
    if simple:
        return body
    mergeable: bool | None = None
    state = "unknown"
    if issue.state == "open":
        git = store.git(repo)
        mergeable = git.merge_tree(pull.base_sha, pull.head_sha) is not None
        state = "draft" if pull.draft else ("clean" if mergeable else "dirty")
    comments = sum(
        1 for c in store.comments.values() if c.repo_id == repo.id and c.issue_number == pull.number
    )
    body.update(
        {
            "merged": pull.merged,
            "mergeable": mergeable,
            "rebaseable": mergeable,
            "mergeable_state": state,
            "merged_by": user_json(store, pull.merged_by),
            "comments": comments,
            "review_comments": 0,
            "maintainer_can_modify": pull.maintainer_can_modify,
            **pull_stats(store, repo, pull),
        }
    )
    return body


def pull_minimal_json(store: Store, pull: PullRequest) -> dict[str, Any]:
    """The short PR form inside check runs, check suites and workflow runs."""
    repo = store.repos[pull.repo_id]
    ref = {"id": repo.id, "url": store.api(f"/repos/{repo.full_name}"), "name": repo.name}
    return {
        "id": pull.id,
        "number": pull.number,
        "url": store.api(f"/repos/{repo.full_name}/pulls/{pull.number}"),
        "head": {"ref": pull.head_ref, "sha": pull.head_sha, "repo": ref},
        "base": {"ref": pull.base_ref, "sha": pull.base_sha, "repo": ref},
    }


def open_pulls_for_sha(store: Store, repo: Repo, sha: str) -> list[dict[str, Any]]:
    found = []
    for pull in store.pulls.values():
        if pull.repo_id != repo.id or pull.head_sha != sha:
            continue
        issue = store.find_issue(repo, pull.number)
        if issue is not None and issue.state == "open":
            found.append(pull_minimal_json(store, pull))
    return found
