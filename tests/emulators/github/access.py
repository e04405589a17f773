"""Who is calling (a :class:`Principal`) and what they may do to a repository."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import (
    ApiError,
    not_accessible_by_integration,
    not_accessible_by_token,
    not_found,
    requires_authentication,
)
from .records import Repo, role_rank

if TYPE_CHECKING:
    from .store import Store

LEVELS = {"read": 1, "write": 2, "admin": 3}


@dataclass(frozen=True)
class Principal:
    """The caller of a request or a scripted action.

    ``kind`` is ``"installation"`` (an installation token), ``"user"`` (a user token or a
    scripted user), ``"app"`` (an App JWT), ``"system"`` (the emulator itself, e.g. a CI
    runner recording results) or ``"anonymous"``. ``login`` is who appears as ``sender``.
    """

    kind: str
    login: str | None = None
    token: str | None = None
    app_id: int | None = None
    installation_id: int | None = None
    permissions: dict[str, str] = field(default_factory=dict)
    repository_ids: frozenset[int] | None = None  # None: everything the installation sees

    @property
    def is_app_actor(self) -> bool:
        return self.kind == "installation"


SYSTEM = Principal(kind="system")
ANONYMOUS = Principal(kind="anonymous")


def user_principal(store: Store, login: str) -> Principal:
    account = store.find_account(login)
    if account is None:
        raise ApiError(404, f"No user named {login}")
    return Principal(kind="user", login=account.login, token=account.token)


def installation_repo_ids(store: Store, installation_id: int) -> set[int]:
    inst = store.installations.get(installation_id)
    if inst is None or inst.suspended_at is not None:
        return set()
    if inst.repository_selection == "all":
        lowered = inst.account.lower()
        return {r.id for r in store.repos.values() if r.owner.lower() == lowered}
    return set(inst.repository_ids)


def can_see(store: Store, principal: Principal, repo: Repo) -> bool:
    if principal.kind == "system":
        return True
    if principal.kind == "installation":
        assert principal.installation_id is not None
        if repo.id not in installation_repo_ids(store, principal.installation_id):
            return False
        return principal.repository_ids is None or repo.id in principal.repository_ids
    if principal.kind == "user":
        return not repo.private or role_rank(user_role(repo, principal.login)) >= role_rank("read")
    if principal.kind == "anonymous":
        return not repo.private
    return False


def user_role(repo: Repo, login: str | None) -> str:
    if login is None:
        return "none"
    if login.lower() == repo.owner.lower():
        return "admin"
    for collaborator, role in repo.collaborators.items():
        if collaborator.lower() == login.lower():
            return role
    return "none"


def effective_role(repo: Repo, principal: Principal) -> str:
    """A user's role, counting the implicit read access everybody has to public repos."""
    role = user_role(repo, principal.login)
    if role_rank(role) < role_rank("read") and not repo.private:
        return "read"
    return role


def has_permission(principal: Principal, resource: str, level: str) -> bool:
    granted = principal.permissions.get(resource)
    if resource == "metadata" and granted is None and principal.permissions:
        granted = "read"  # every installation can read metadata
    return LEVELS.get(granted or "", 0) >= LEVELS[level]


def authorize(
    store: Store,
    principal: Principal,
    repo: Repo,
    permission: tuple[str, str] | None,
    role: str | None,
) -> None:
    """Raise GitHub's error unless ``principal`` may do something to ``repo``.

    ``permission`` is what an App installation token needs, e.g. ``("issues", "write")``;
    ``role`` is the repository role a user needs (``"read"``, ``"triage"``, ``"write"``...).
    ``None`` for either means that kind of caller may not do it at all.
    """
    if principal.kind == "system":
        return
    if principal.kind == "anonymous":
        if repo.private:
            raise not_found()
        if (
            role is None
            or role_rank(role) > role_rank("read")
            or (permission is not None and permission[1] != "read")
        ):
            raise requires_authentication()
        return
    if not can_see(store, principal, repo):
        raise not_found()
    if principal.kind == "installation":
        if permission is None or not has_permission(principal, *permission):
            raise not_accessible_by_integration()
        return
    if principal.kind == "user":
        if role is None or role_rank(effective_role(repo, principal)) < role_rank(role):
            raise not_accessible_by_token()
        return
    raise not_accessible_by_integration()


def may(
    store: Store,
    principal: Principal,
    repo: Repo,
    permission: tuple[str, str] | None,
    role: str | None,
) -> bool:
    try:
        authorize(store, principal, repo, permission, role)
    except ApiError:
        return False
    return True
