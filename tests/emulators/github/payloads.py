"""The common envelope of webhook payloads: action, repository, sender, installation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .access import installation_repo_ids
from .ids import node_id
from .records import Repo
from .shapes import repo_json, user_json

if TYPE_CHECKING:
    from .store import Store


def installation_ref(store: Store, repo: Repo | None) -> dict[str, Any] | None:
    """``{"id", "node_id"}`` of the emulated App's installation that covers ``repo``."""
    for inst in store.installations.values():
        if inst.app_id != store.app_id:
            continue
        if repo is None or repo.id in installation_repo_ids(store, inst.id):
            return {"id": inst.id, "node_id": node_id("Installation", inst.id)}
    return None


def organization_json(store: Store, login: str) -> dict[str, Any] | None:
    account = store.find_account(login)
    if account is None or account.type != "Organization":
        return None
    api = store.api(f"/orgs/{account.login}")
    return {
        "login": account.login,
        "id": account.id,
        "node_id": account.node_id,
        "url": api,
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events",
        "hooks_url": f"{api}/hooks",
        "issues_url": f"{api}/issues",
        "members_url": f"{api}/members{{/member}}",
        "public_members_url": f"{api}/public_members{{/member}}",
        "avatar_url": f"{store.base_url}/avatars/u/{account.id}?v=4",
        "description": None,
    }


def envelope(
    store: Store,
    repo: Repo | None,
    sender: str | None,
    action: str | None = None,
    **objects: Any,
) -> dict[str, Any]:
    """A webhook payload: ``action`` first, then ``objects``, then the common keys."""
    payload: dict[str, Any] = {}
    if action is not None:
        payload["action"] = action
    payload.update(objects)
    if repo is not None:
        payload["repository"] = repo_json(store, repo)
        org = organization_json(store, repo.owner)
        if org is not None:
            payload["organization"] = org
    payload["sender"] = user_json(store, sender or (repo.owner if repo else "ghost"))
    installation = installation_ref(store, repo)
    if installation is not None:
        payload["installation"] = installation
    return payload
