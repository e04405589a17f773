"""App authentication as GitHub does it: RS256 JWTs, installation tokens and user tokens."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .access import ANONYMOUS, Principal, installation_repo_ids
from .errors import ApiError, bad_credentials, not_found, validation_failed
from .ids import iso, node_id, random_hex, random_token
from .records import AppRecord, Token
from .store import Store

JWT_DRIFT = 60  # seconds of clock drift GitHub tolerates
JWT_MAX_LIFETIME = 600
APP_DOCS = "https://docs.github.com/rest"


def generate_private_key() -> str:
    """A fresh 2048-bit RSA key as PKCS#1 PEM, the format GitHub hands out."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def jwt_error(message: str) -> ApiError:
    return ApiError(401, message, documentation_url=APP_DOCS)


class AuthMixin(Store):
    """Apps, their keys, JWT checks and the tokens the emulator hands out."""

    _key_cache: dict[int, tuple[str, Any]]

    # -- apps --------------------------------------------------------------------------------

    def _new_app(
        self,
        *,
        slug: str,
        name: str,
        owner: str,
        permissions: dict[str, str],
        events: list[str],
        webhook_secret: str | None,
        app_id: int | None = None,
        bot_id: int | None = None,
        with_key: bool = True,
        description: str | None = None,
        external_url: str = "",
        callback_urls: list[str] | None = None,
    ) -> AppRecord:
        app_id = app_id or self.new_id()
        pem_path = None
        if with_key:
            pem_path = f"apps/{slug}-{app_id}.pem"
            (self.workdir / pem_path).write_text(generate_private_key())
        record = AppRecord(
            id=app_id,
            slug=slug,
            name=name,
            node_id=node_id("App", app_id),
            owner=owner,
            client_id="Iv1." + random_hex(16),
            client_secret=random_hex(40),
            webhook_secret=webhook_secret,
            permissions=dict(permissions),
            events=list(events),
            created_at=self.now(),
            bot_id=bot_id or self.new_id(),
            pem_path=pem_path,
            description=description,
            external_url=external_url or self.api(f"/{owner}"),
            callback_urls=list(callback_urls or []),
        )
        self.apps[app_id] = record
        self.ensure_account(record.bot_login, "Bot", account_id=record.bot_id)
        return record

    def private_key(self, app_id: int | None = None) -> str:
        """The App's private key as PEM (what a real App downloads from its settings)."""
        app = self.apps[app_id or self.app_id]
        if app.pem_path is None:
            raise ValueError(f"app {app.slug} has no private key")
        return (self.workdir / app.pem_path).read_text()

    def private_key_path(self, app_id: int | None = None) -> str:
        app = self.apps[app_id or self.app_id]
        assert app.pem_path is not None
        return str(self.workdir / app.pem_path)

    def _public_key(self, app: AppRecord) -> Any:
        cache = self.__dict__.setdefault("_key_cache", {})
        if app.id not in cache:
            pem = self.private_key(app.id).encode()
            private = serialization.load_pem_private_key(pem, password=None)
            cache[app.id] = (pem, private.public_key())
        return cache[app.id][1]

    def _find_app(self, issuer: Any) -> AppRecord | None:
        for app in self.apps.values():
            if str(issuer) in (str(app.id), app.client_id):
                return app
        return None

    # -- JWTs --------------------------------------------------------------------------------

    def verify_jwt(self, token: str) -> AppRecord:
        """The App a JWT authenticates, or GitHub's 401 for a bad one."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise jwt_error("A JSON web token could not be decoded") from exc
        app = self._find_app(claims.get("iss"))
        if app is None or app.pem_path is None:
            raise jwt_error("Integration not found")
        try:
            jwt.decode(
                token,
                self._public_key(app),
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_iss": False,
                    "verify_aud": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise jwt_error("A JSON web token could not be decoded") from exc
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int):
            raise jwt_error(
                "'Issued at' claim ('iat') must be an Integer representing the time that the "
                "assertion was issued."
            )
        if not isinstance(exp, int):
            raise jwt_error(
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires."
            )
        now = self.now()
        if iat > now + JWT_DRIFT:
            raise jwt_error(
                "'Issued at' claim ('iat') must be an Integer representing the time that the "
                "assertion was issued."
            )
        if exp - iat > JWT_MAX_LIFETIME or exp > now + JWT_MAX_LIFETIME + JWT_DRIFT:
            raise jwt_error("'Expiration time' claim ('exp') is too far in the future.")
        if exp <= now - JWT_DRIFT:
            raise jwt_error(
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires."
            )
        return app

    def make_jwt(self, app_id: int | None = None, *, iat: int | None = None, ttl: int = 540) -> str:
        """A JWT for the App, as a client library would build it (for tests)."""
        now = int(self.now())
        issued = now - 60 if iat is None else iat
        app = self.apps[app_id or self.app_id]
        return jwt.encode(
            {"iss": str(app.id), "iat": issued, "exp": issued + ttl},
            self.private_key(app.id),
            algorithm="RS256",
        )

    # -- installation tokens -----------------------------------------------------------------

    def create_installation_token(
        self,
        installation_id: int,
        *,
        permissions: dict[str, str] | None = None,
        repositories: list[str] | None = None,
        repository_ids: list[int] | None = None,
        ttl: float | None = None,
    ) -> Token:
        """A ``ghs_`` token for an installation, optionally narrowed like the REST call."""
        with self.transaction():
            inst = self.installations.get(installation_id)
            if inst is None:
                raise not_found()
            if inst.suspended_at is not None:
                raise ApiError(403, "This installation has been suspended")
            granted = dict(inst.permissions)
            if permissions:
                for resource, level in permissions.items():
                    have = granted.get(resource)
                    if (
                        have is None
                        or (level == "write" and have == "read")
                        or (level == "admin" and have != "admin")
                    ):
                        raise validation_failed(
                            message="The permissions requested are not granted to this "
                            "installation."
                        )
                granted = dict(permissions)
                granted.setdefault("metadata", "read")
            visible = installation_repo_ids(self, installation_id)
            narrowed: list[int] | None = None
            if repositories or repository_ids:
                narrowed = list(repository_ids or [])
                for name in repositories or []:
                    found = next(
                        (
                            r
                            for r in self.repos.values()
                            if r.name.lower() == name.lower() and r.id in visible
                        ),
                        None,
                    )
                    if found is None:
                        raise validation_failed(
                            message="There is at least one repository that does not exist or "
                            "is not accessible to the parent installation."
                        )
                    narrowed.append(found.id)
                if any(rid not in visible for rid in narrowed):
                    raise validation_failed(
                        message="There is at least one repository that does not exist or is "
                        "not accessible to the parent installation."
                    )
            token = Token(
                token=random_token("ghs_"),
                kind="installation",
                expires_at=self.now() + (self.token_ttl if ttl is None else ttl),
                permissions=granted,
                installation_id=installation_id,
                repository_ids=narrowed,
            )
            self.tokens[token.token] = token
            return token

    def token_response(self, token: Token) -> dict[str, Any]:
        from .shapes import repo_json  # local import: shapes imports records only

        assert token.installation_id is not None
        inst = self.installations[token.installation_id]
        body: dict[str, Any] = {
            "token": token.token,
            "expires_at": iso(token.expires_at),
            "permissions": token.permissions,
            "repository_selection": "selected"
            if token.repository_ids
            else (inst.repository_selection),
        }
        if token.repository_ids:
            body["repositories"] = [
                repo_json(self, self.repos[rid]) for rid in token.repository_ids
            ]
        return body

    def expire_tokens(self) -> None:
        """Make every installation token issued so far expire now."""
        with self.transaction():
            for token in self.tokens.values():
                if token.kind == "installation":
                    token.expires_at = self.now() - 1

    # -- resolving callers -------------------------------------------------------------------

    def principal_for_token(self, value: str) -> Principal:
        token = self.tokens.get(value)
        if token is None:
            raise bad_credentials()
        if token.expires_at is not None and token.expires_at <= self.now():
            raise bad_credentials()
        if token.kind == "installation":
            assert token.installation_id is not None
            inst = self.installations.get(token.installation_id)
            if inst is None:
                raise bad_credentials()
            app = self.apps[inst.app_id]
            return Principal(
                kind="installation",
                login=app.bot_login,
                token=value,
                app_id=app.id,
                installation_id=inst.id,
                permissions=dict(token.permissions),
                repository_ids=(frozenset(token.repository_ids) if token.repository_ids else None),
            )
        assert token.user is not None
        return Principal(kind="user", login=token.user, token=value)

    def principal_from_header(self, header: str | None) -> Principal:
        """The caller named by an ``Authorization`` header (token, Bearer, or Basic)."""
        if not header:
            return ANONYMOUS
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise bad_credentials() from exc
            user, _, password = decoded.partition(":")
            value = password or user
        elif scheme not in ("token", "bearer"):
            raise bad_credentials()
        if value.count(".") == 2:
            app = self.verify_jwt(value)
            return Principal(kind="app", login=app.slug, token=value, app_id=app.id)
        return self.principal_for_token(value)
