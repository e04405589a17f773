"""Users, App installations and app-manifest codes: the setup side of the emulator."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .access import installation_repo_ids, user_principal
from .errors import not_found
from .ids import random_hex, random_token
from .records import Account, Installation, ManifestCode, Token
from .shapes import app_json, installation_json, user_json
from .store import Store

if TYPE_CHECKING:
    from .actor import UserActor

DEFAULT_EVENTS = [
    "check_run",
    "check_suite",
    "issue_comment",
    "issues",
    "pull_request",
    "push",
    "status",
    "workflow_run",
]


class AccountsMixin(Store):
    """Users with tokens and roles, installations of the App, manifest-conversion codes."""

    # -- users -------------------------------------------------------------------------------

    def create_user(
        self,
        login: str,
        *,
        repos: dict[str, str] | None = None,
        name: str | None = None,
        email: str | None = None,
    ) -> Account:
        """A user with a ``ghp_`` token and, per ``"owner/name"`` in ``repos``, a role
        (``admin``, ``maintain``, ``write``, ``triage``, ``read`` or ``none``)."""
        with self.transaction():
            account = self.ensure_account(login, "User")
            account.name = name or account.name
            account.email = email or account.email or f"{login}@example.com"
            if account.token is None:
                account.token = random_token("ghp_")
                self.tokens[account.token] = Token(
                    token=account.token,
                    kind="user",
                    expires_at=None,
                    permissions={},
                    user=account.login,
                )
            for full_name, role in (repos or {}).items():
                self.set_collaborator(full_name, account.login, role)  # type: ignore[attr-defined]
            return account

    def user_token(self, login: str) -> str:
        account = self.find_account(login)
        if account is None or account.token is None:
            raise KeyError(f"no user {login}")
        return account.token

    def as_user(self, login: str) -> UserActor:
        """Act as ``login``: scripted issue, comment, label, push and merge actions with the
        user's real permissions."""
        from .actor import UserActor

        return UserActor(self, login)  # type: ignore[arg-type]

    def principal_for_user(self, login: str) -> Any:
        return user_principal(self, login)

    # -- installations -----------------------------------------------------------------------

    def install_app(
        self,
        account: str,
        *,
        permissions: dict[str, str] | None = None,
        repositories: list[str] | None = None,
        events: list[str] | None = None,
        app: int | None = None,
        sender: str | None = None,
    ) -> Installation:
        """Install the App (or ``app``) on ``account``: on all its repositories, or only on
        ``repositories`` (names, with or without the owner). Emits ``installation.created``."""
        with self.transaction():
            app_record = self.apps[app or self.app_id]
            owner = self.ensure_account(account, "Organization")
            perms = dict(app_record.permissions if permissions is None else permissions)
            perms.setdefault("metadata", "read")
            selected: list[int] = []
            for name in repositories or []:
                repo_name = name.split("/", 1)[-1]
                repo = self.get_repo(owner.login, repo_name)
                selected.append(repo.id)
            now = self.now()
            inst_id = self.new_id()
            inst = Installation(
                id=inst_id,
                app_id=app_record.id,
                account=owner.login,
                permissions=perms,
                repository_selection="all" if repositories is None else "selected",
                repository_ids=selected,
                events=list(app_record.events if events is None else events),
                created_at=now,
                updated_at=now,
            )
            self.installations[inst_id] = inst
            if app_record.id == self.app_id:
                repos = [self.repos[rid] for rid in sorted(installation_repo_ids(self, inst_id))]
                self.emit(
                    "installation",
                    {
                        "action": "created",
                        "installation": installation_json(self, inst),
                        "repositories": [
                            {
                                "id": r.id,
                                "node_id": r.node_id,
                                "name": r.name,
                                "full_name": r.full_name,
                                "private": r.private,
                            }
                            for r in repos
                        ],
                        "requester": None,
                        "sender": user_json(self, sender or owner.login),
                    },
                )
            return inst

    def remove_repositories(self, installation_id: int, names: list[str], *,
                            sender: str | None = None) -> None:
        """Take ``names`` out of the installation, as its owner does under "Repository access"
        in the installation's settings: an "all repositories" installation becomes "selected"
        with every other one. Emits ``installation_repositories.removed``; tokens already
        issued lose access at once."""
        with self.transaction():
            inst = self.installations[installation_id]
            before = installation_repo_ids(self, installation_id)
            removed = []
            for name in names:
                repo = self.get_repo(inst.account, name.split("/", 1)[-1])
                if repo.id not in before:
                    raise ValueError(f"{repo.full_name} is not in installation {inst.id}")
                removed.append(repo)
            inst.repository_selection = "selected"
            inst.repository_ids = sorted(before - {r.id for r in removed})
            inst.updated_at = self.now()
            if inst.app_id != self.app_id:
                return
            self.emit("installation_repositories", {
                "action": "removed",
                "installation": installation_json(self, inst),
                "repository_selection": "selected",
                "repositories_added": [],
                "repositories_removed": [
                    {"id": r.id, "node_id": r.node_id, "name": r.name,
                     "full_name": r.full_name, "private": r.private}
                    for r in removed
                ],
                "requester": None,
                "sender": user_json(self, sender or inst.account),
            })

    def installation_for(self, full_name: str, app: int | None = None) -> Installation | None:
        """The installation of the App (or ``app``) that covers repository ``full_name``."""
        repo = self.resolve_repo(full_name)
        for inst in self.installations.values():
            if inst.app_id == (app or self.app_id) and repo.id in installation_repo_ids(
                self, inst.id
            ):
                return inst
        return None

    # -- app manifests -----------------------------------------------------------------------

    def register_manifest_code(
        self,
        code: str | None = None,
        manifest: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> str:
        """A one-time code for ``POST /app-manifests/{code}/conversions`` (what GitHub
        appends to the manifest flow's redirect URL)."""
        with self.transaction():
            code = code or random_hex(20)
            self.manifest_codes[code] = ManifestCode(
                code=code,
                manifest=dict(manifest or {}),
                owner=owner or self.apps[self.app_id].owner,
            )
            return code

    def convert_manifest(self, code: str) -> dict[str, Any]:
        """Create the App a manifest describes; the body of a 201 conversion response."""
        with self.transaction():
            record = self.manifest_codes.get(code)
            if record is None or record.used:
                raise not_found()
            manifest = record.manifest
            name = str(manifest.get("name") or "conductor")
            slug = self._free_slug(name)
            hook = manifest.get("hook_attributes") or {}
            app = self._new_app(  # type: ignore[attr-defined]
                slug=slug,
                name=name,
                owner=record.owner,
                permissions=dict(manifest.get("default_permissions") or {"metadata": "read"}),
                events=list(manifest.get("default_events") or []),
                webhook_secret=random_hex(40),
                description=manifest.get("description"),
                external_url=str(manifest.get("url") or ""),
                callback_urls=[str(u) for u in manifest.get("callback_urls") or []],
            )
            record.used = True
            body = app_json(self, app)
            body.update(
                {
                    "client_id": app.client_id,
                    "client_secret": app.client_secret,
                    "webhook_secret": app.webhook_secret,
                    "pem": self.private_key(app.id),  # type: ignore[attr-defined]
                }
            )
            if hook.get("url"):
                body["hook_attributes"] = {"url": hook["url"], "active": hook.get("active", True)}
            return body

    def _free_slug(self, name: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "app"
        taken = {a.slug for a in self.apps.values()}
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        return slug

    def bot_account(self, app: int | None = None) -> Account:
        record = self.apps[app or self.app_id]
        account = self.find_account(record.bot_login)
        assert account is not None
        return account
