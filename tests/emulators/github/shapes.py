"""REST JSON for accounts, apps, installations, repositories and git objects, as GitHub
renders them (every URL field included, pointing at the emulator)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .access import user_role
from .gitrepo import CommitInfo, Person, TreeEntry
from .ids import iso, node_id
from .records import AppRecord, BranchProtection, Installation, Repo, role_rank

if TYPE_CHECKING:
    from .store import Store


def user_json(store: Store, login: str | None) -> dict[str, Any] | None:
    if login is None:
        return None
    account = store.find_account(login)
    if account is None:
        account = store.ensure_account(login)
    api = store.api(f"/users/{quote(account.login)}")
    html = (
        store.api(f"/apps/{account.login.removesuffix('[bot]')}")
        if account.type == "Bot"
        else store.api(f"/{account.login}")
    )
    return {
        "login": account.login,
        "id": account.id,
        "node_id": account.node_id,
        "avatar_url": f"{store.base_url}/avatars/u/{account.id}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": html,
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": account.type,
        "user_view_type": "public",
        "site_admin": False,
    }


def private_user_json(store: Store, login: str) -> dict[str, Any]:
    """``GET /user``: the user as GitHub shows them to themselves (``PrivateUser``): the
    public fields, the profile, and counts of their own repositories; nothing social."""
    base = user_json(store, login)
    account = store.find_account(login)
    assert base is not None and account is not None
    owned = [r for r in store.repos.values() if r.owner.lower() == account.login.lower()]
    private = sum(1 for r in owned if r.private)
    return {
        **base,
        "user_view_type": "private",
        "name": account.name,
        "company": None,
        "blog": "",
        "location": None,
        "email": account.email,
        "notification_email": account.email,
        "hireable": None,
        "bio": None,
        "twitter_username": None,
        "public_repos": len(owned) - private,
        "public_gists": 0,
        "followers": 0,
        "following": 0,
        "created_at": iso(account.created_at),
        "updated_at": iso(account.created_at),
        "private_gists": 0,
        "total_private_repos": private,
        "owned_private_repos": private,
        "disk_usage": 0,
        "collaborators": 0,
        "two_factor_authentication": False,
        "plan": {"name": "free", "space": 976562499, "collaborators": 0, "private_repos": 10000},
    }


def app_json(store: Store, app: AppRecord) -> dict[str, Any]:
    return {
        "id": app.id,
        "client_id": app.client_id,
        "slug": app.slug,
        "node_id": app.node_id,
        "owner": user_json(store, app.owner),
        "name": app.name,
        "description": app.description,
        "external_url": app.external_url,
        "html_url": store.api(f"/apps/{app.slug}"),
        "created_at": iso(app.created_at),
        "updated_at": iso(app.created_at),
        "permissions": dict(app.permissions),
        "events": list(app.events),
        "installations_count": sum(1 for i in store.installations.values() if i.app_id == app.id),
    }


def installation_json(store: Store, inst: Installation) -> dict[str, Any]:
    app = store.apps[inst.app_id]
    account = store.find_account(inst.account)
    return {
        "id": inst.id,
        "client_id": app.client_id,
        "account": user_json(store, inst.account),
        "repository_selection": inst.repository_selection,
        "access_tokens_url": store.api(f"/app/installations/{inst.id}/access_tokens"),
        "repositories_url": store.api("/installation/repositories"),
        "html_url": store.api(f"/settings/installations/{inst.id}"),
        "app_id": app.id,
        "app_slug": app.slug,
        "target_id": account.id if account else 0,
        "target_type": account.type if account else "User",
        "permissions": dict(inst.permissions),
        "events": list(inst.events),
        "created_at": iso(inst.created_at),
        "updated_at": iso(inst.updated_at),
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": iso(inst.suspended_at),
    }


def repo_json(store: Store, repo: Repo, login: str | None = None) -> dict[str, Any]:
    """A full repository; ``login`` adds the ``permissions`` block for that user."""
    api = store.api(f"/repos/{repo.full_name}")
    html = store.api(f"/{repo.full_name}")
    open_issues = sum(
        1 for i in store.issues.values() if i.repo_id == repo.id and i.state == "open"
    )
    body: dict[str, Any] = {
        "id": repo.id,
        "node_id": repo.node_id,
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": user_json(store, repo.owner),
        "html_url": html,
        "description": repo.description,
        "fork": False,
        "url": api,
        "forks_url": f"{api}/forks",
        "keys_url": f"{api}/keys{{/key_id}}",
        "collaborators_url": f"{api}/collaborators{{/collaborator}}",
        "teams_url": f"{api}/teams",
        "hooks_url": f"{api}/hooks",
        "issue_events_url": f"{api}/issues/events{{/number}}",
        "events_url": f"{api}/events",
        "assignees_url": f"{api}/assignees{{/user}}",
        "branches_url": f"{api}/branches{{/branch}}",
        "tags_url": f"{api}/tags",
        "blobs_url": f"{api}/git/blobs{{/sha}}",
        "git_tags_url": f"{api}/git/tags{{/sha}}",
        "git_refs_url": f"{api}/git/refs{{/sha}}",
        "trees_url": f"{api}/git/trees{{/sha}}",
        "statuses_url": f"{api}/statuses/{{sha}}",
        "languages_url": f"{api}/languages",
        "stargazers_url": f"{api}/stargazers",
        "contributors_url": f"{api}/contributors",
        "subscribers_url": f"{api}/subscribers",
        "subscription_url": f"{api}/subscription",
        "commits_url": f"{api}/commits{{/sha}}",
        "git_commits_url": f"{api}/git/commits{{/sha}}",
        "comments_url": f"{api}/comments{{/number}}",
        "issue_comment_url": f"{api}/issues/comments{{/number}}",
        "contents_url": f"{api}/contents/{{+path}}",
        "compare_url": f"{api}/compare/{{base}}...{{head}}",
        "merges_url": f"{api}/merges",
        "archive_url": f"{api}/{{archive_format}}{{/ref}}",
        "downloads_url": f"{api}/downloads",
        "issues_url": f"{api}/issues{{/number}}",
        "pulls_url": f"{api}/pulls{{/number}}",
        "milestones_url": f"{api}/milestones{{/number}}",
        "notifications_url": f"{api}/notifications{{?since,all,participating}}",
        "labels_url": f"{api}/labels{{/name}}",
        "releases_url": f"{api}/releases{{/id}}",
        "deployments_url": f"{api}/deployments",
        "created_at": iso(repo.created_at),
        "updated_at": iso(repo.updated_at),
        "pushed_at": iso(repo.pushed_at),
        "git_url": f"{store.base_url.replace('http', 'git', 1)}/{repo.full_name}.git",
        "ssh_url": f"git@{store.base_url.split('//', 1)[-1]}:{repo.full_name}.git",
        "clone_url": f"{html}.git",
        "svn_url": html,
        "homepage": None,
        "size": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": None,
        "has_issues": True,
        "has_projects": True,
        "has_downloads": True,
        "has_wiki": True,
        "has_pages": False,
        "has_discussions": False,
        "forks_count": 0,
        "mirror_url": None,
        "archived": False,
        "disabled": False,
        "open_issues_count": open_issues,
        "license": None,
        "allow_forking": True,
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": [],
        "visibility": "private" if repo.private else "public",
        "forks": 0,
        "open_issues": open_issues,
        "watchers": 0,
        "default_branch": repo.default_branch,
        "allow_squash_merge": True,
        "allow_merge_commit": True,
        "allow_rebase_merge": True,
        "allow_auto_merge": False,
        "delete_branch_on_merge": False,
        "allow_update_branch": False,
        "use_squash_pr_title_as_default": False,
        "squash_merge_commit_title": "COMMIT_OR_PR_TITLE",
        "squash_merge_commit_message": "COMMIT_MESSAGES",
        "merge_commit_title": "MERGE_MESSAGE",
        "merge_commit_message": "PR_TITLE",
        "network_count": 0,
        "subscribers_count": 0,
    }
    if login is not None:
        rank = role_rank(user_role(repo, login))
        body["permissions"] = {
            "admin": rank >= role_rank("admin"),
            "maintain": rank >= role_rank("maintain"),
            "push": rank >= role_rank("write"),
            "triage": rank >= role_rank("triage"),
            "pull": rank >= role_rank("read") or not repo.private,
        }
    return body


def webhook_repo_json(store: Store, repo: Repo) -> dict[str, Any]:
    return repo_json(store, repo)


def minimal_repo_ref(store: Store, repo: Repo) -> dict[str, Any]:
    return {"id": repo.id, "url": store.api(f"/repos/{repo.full_name}"), "name": repo.name}


# -- git objects ---------------------------------------------------------------------------


def git_person(person: Person) -> dict[str, Any]:
    return {"name": person.name, "email": person.email, "date": iso(person.date)}


def verification_json() -> dict[str, Any]:
    return {
        "verified": False,
        "reason": "unsigned",
        "signature": None,
        "payload": None,
        "verified_at": None,
    }


def git_commit_json(store: Store, repo: Repo, info: CommitInfo) -> dict[str, Any]:
    api = store.api(f"/repos/{repo.full_name}")
    return {
        "sha": info.sha,
        "node_id": node_id("Commit", info.sha),
        "url": f"{api}/git/commits/{info.sha}",
        "html_url": store.api(f"/{repo.full_name}/commit/{info.sha}"),
        "author": git_person(info.author),
        "committer": git_person(info.committer),
        "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
        "message": info.message.rstrip("\n"),
        "parents": [
            {
                "sha": p,
                "url": f"{api}/git/commits/{p}",
                "html_url": store.api(f"/{repo.full_name}/commit/{p}"),
            }
            for p in info.parents
        ],
        "verification": verification_json(),
    }


def person_account(store: Store, person: Person) -> dict[str, Any] | None:
    """The account a commit author maps to (matched by e-mail or login), if any."""
    for account in store.accounts.values():
        if person.email and person.email in (
            account.email,
            f"{account.login}@users.noreply.github.com",
            f"{account.id}+{account.login}@users.noreply.github.com",
        ):
            return user_json(store, account.login)
    return None


def commit_json(
    store: Store, repo: Repo, info: CommitInfo, files: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The REST ``commit`` object (``GET /repos/{o}/{r}/commits/{ref}``)."""
    api = store.api(f"/repos/{repo.full_name}")
    html = store.api(f"/{repo.full_name}/commit/{info.sha}")
    body: dict[str, Any] = {
        "sha": info.sha,
        "node_id": node_id("Commit", info.sha),
        "commit": {
            "author": git_person(info.author),
            "committer": git_person(info.committer),
            "message": info.message.rstrip("\n"),
            "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
            "url": f"{api}/git/commits/{info.sha}",
            "comment_count": 0,
            "verification": verification_json(),
        },
        "url": f"{api}/commits/{info.sha}",
        "html_url": html,
        "comments_url": f"{api}/commits/{info.sha}/comments",
        "author": person_account(store, info.author),
        "committer": person_account(store, info.committer),
        "parents": [
            {
                "sha": p,
                "url": f"{api}/commits/{p}",
                "html_url": store.api(f"/{repo.full_name}/commit/{p}"),
            }
            for p in info.parents
        ],
    }
    if files is not None:
        additions = sum(f["additions"] for f in files)
        deletions = sum(f["deletions"] for f in files)
        body["stats"] = {
            "total": additions + deletions,
            "additions": additions,
            "deletions": deletions,
        }
        body["files"] = [diff_entry_json(store, repo, info.sha, f) for f in files]
    return body


def diff_entry_json(
    store: Store, repo: Repo, head_sha: str, entry: dict[str, Any]
) -> dict[str, Any]:
    path = quote(entry["filename"])
    body = {
        "sha": entry["sha"],
        "filename": entry["filename"],
        "status": entry["status"],
        "additions": entry["additions"],
        "deletions": entry["deletions"],
        "changes": entry["changes"],
        "blob_url": store.api(f"/{repo.full_name}/blob/{head_sha}/{path}"),
        "raw_url": store.api(f"/{repo.full_name}/raw/{head_sha}/{path}"),
        "contents_url": store.api(f"/repos/{repo.full_name}/contents/{path}?ref={head_sha}"),
    }
    if entry.get("patch") is not None:
        body["patch"] = entry["patch"]
    if entry.get("previous_filename"):
        body["previous_filename"] = entry["previous_filename"]
    return body


def simple_commit_json(info: CommitInfo) -> dict[str, Any]:
    """The ``head_commit`` of check suites and workflow runs."""
    return {
        "id": info.sha,
        "tree_id": info.tree,
        "message": info.message.rstrip("\n"),
        "timestamp": iso(info.committer.date),
        "author": {"name": info.author.name, "email": info.author.email},
        "committer": {"name": info.committer.name, "email": info.committer.email},
    }


def tree_json(store: Store, repo: Repo, sha: str, entries: list[TreeEntry]) -> dict[str, Any]:
    api = store.api(f"/repos/{repo.full_name}")
    items = []
    for entry in entries:
        item: dict[str, Any] = {
            "path": entry.path,
            "mode": entry.mode,
            "type": entry.type,
            "sha": entry.sha,
        }
        if entry.type == "blob":
            item["size"] = entry.size
            item["url"] = f"{api}/git/blobs/{entry.sha}"
        elif entry.type == "tree":
            item["url"] = f"{api}/git/trees/{entry.sha}"
        items.append(item)
    return {"sha": sha, "url": f"{api}/git/trees/{sha}", "tree": items, "truncated": False}


def b64_lines(data: bytes) -> str:
    """Base64 wrapped at 60 characters per line, as GitHub sends file contents."""
    encoded = base64.b64encode(data).decode()
    return "".join(encoded[i : i + 60] + "\n" for i in range(0, len(encoded), 60))


def blob_json(store: Store, repo: Repo, sha: str, data: bytes) -> dict[str, Any]:
    return {
        "sha": sha,
        "node_id": node_id("Blob", sha),
        "size": len(data),
        "url": store.api(f"/repos/{repo.full_name}/git/blobs/{sha}"),
        "content": b64_lines(data),
        "encoding": "base64",
    }


def ref_json(store: Store, repo: Repo, ref: str, sha: str, kind: str) -> dict[str, Any]:
    api = store.api(f"/repos/{repo.full_name}")
    return {
        "ref": ref,
        "node_id": node_id("Ref", f"{repo.id}:{ref}"),
        "url": f"{api}/git/{ref}",
        "object": {
            "sha": sha,
            "type": kind,
            "url": f"{api}/git/{kind}s/{sha}",
        },
    }


def content_item_json(
    store: Store, repo: Repo, entry: TreeEntry, ref: str, data: bytes | None = None
) -> dict[str, Any]:
    api = store.api(f"/repos/{repo.full_name}")
    path = quote(entry.path)
    kind = {"blob": "file", "tree": "dir", "commit": "submodule"}.get(entry.type, "file")
    if entry.mode == "120000":
        kind = "symlink"
    git_url = f"{api}/git/{'trees' if entry.type == 'tree' else 'blobs'}/{entry.sha}"
    html_url = store.api(
        f"/{repo.full_name}/{'tree' if entry.type == 'tree' else 'blob'}/{ref}/{path}"
    )
    body: dict[str, Any] = {
        "type": kind,
        "size": entry.size or 0,
        "name": entry.path.rsplit("/", 1)[-1],
        "path": entry.path,
        "sha": entry.sha,
        "url": f"{api}/contents/{path}?ref={quote(ref)}",
        "git_url": git_url,
        "html_url": html_url,
        "download_url": (
            store.api(f"/{repo.full_name}/raw/{ref}/{path}") if kind == "file" else None
        ),
        "_links": {
            "self": f"{api}/contents/{path}?ref={quote(ref)}",
            "git": git_url,
            "html": html_url,
        },
    }
    if data is not None:
        body["content"] = b64_lines(data)
        body["encoding"] = "base64"
    return body


def branch_json(
    store: Store,
    repo: Repo,
    name: str,
    info: CommitInfo,
    protection: BranchProtection | None = None,
) -> dict[str, Any]:
    """``GET /repos/{o}/{r}/branches/{branch}`` as a caller with read access sees it: a
    protected branch shows only whether it is protected and its required status checks."""
    api = store.api(f"/repos/{repo.full_name}")
    contexts = list(protection.contexts) if protection is not None else []
    return {
        "name": name,
        "commit": commit_json(store, repo, info),
        "_links": {
            "self": f"{api}/branches/{quote(name)}",
            "html": store.api(f"/{repo.full_name}/tree/{name}"),
        },
        "protected": protection is not None,
        "protection": {
            "enabled": protection is not None,
            "required_status_checks": {
                # "everyone" only with enforce_admins, which is not emulated
                "enforcement_level": "non_admins" if protection is not None else "off",
                "contexts": contexts,
                "checks": [{"context": c, "app_id": None} for c in contexts],
            },
        },
        "protection_url": f"{api}/branches/{quote(name)}/protection",
    }


def status_check_policy_json(store: Store, repo: Repo, rule: BranchProtection) -> dict[str, Any]:
    """``GET .../branches/{branch}/protection/required_status_checks`` (``StatusCheckPolicy``)."""
    url = store.api(
        f"/repos/{repo.full_name}/branches/{quote(rule.branch)}/protection/required_status_checks"
    )
    return {
        "url": url,
        "strict": rule.strict,
        "contexts": list(rule.contexts),
        "checks": [{"context": c, "app_id": None} for c in rule.contexts],
        "contexts_url": f"{url}/contexts",
    }
