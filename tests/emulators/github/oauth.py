"""The OAuth web application flow of GitHub Apps: callback URLs, one-time authorization codes
and the user access tokens (``ghu_``) they are exchanged for.

The flow as GitHub runs it: the App sends the browser to ``/login/oauth/authorize``; GitHub,
with the user signed in, redirects to one of the App's callback URLs with ``code`` (and the
App's ``state``); the App's server POSTs the code with its client id and secret to
``/login/oauth/access_token`` and gets a token that acts as the user. The routes are in
``routes_oauth.py``; the rules are here, so Python tests can take the same steps.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from .ids import random_hex, random_token
from .records import AppRecord, OAuthCode, Token
from .store import Store

CODE_TTL = 600  # seconds; GitHub: "codes expire after 10 minutes"
USER_TOKEN_TTL = 8 * 3600  # a GitHub App's user access token expires after eight hours
REFRESH_TOKEN_TTL = 15_897_600  # and its refresh token after about six months
TOKEN_ERRORS_DOCS = (
    "https://docs.github.com/apps/managing-oauth-apps/"
    "troubleshooting-oauth-app-access-token-request-errors/"
)
AUTHORIZE_ERRORS_DOCS = (
    "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
)
REDIRECT_NOT_ASSOCIATED = "The redirect_uri is not associated with this application."


class OAuthError(Exception):
    """A refused token exchange. GitHub answers these with HTTP 200 and ``error``,
    ``error_description`` and ``error_uri`` (JSON or form-encoded, as the client asked)."""

    def __init__(self, error: str, description: str, uri: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.uri = uri

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description, "error_uri": self.uri}


def incorrect_client_credentials() -> OAuthError:
    return OAuthError(
        "incorrect_client_credentials",
        "The client_id and/or client_secret passed are incorrect.",
        TOKEN_ERRORS_DOCS + "#incorrect-client-credentials",
    )


def bad_verification_code() -> OAuthError:
    return OAuthError(
        "bad_verification_code",
        "The code passed is incorrect or expired.",
        TOKEN_ERRORS_DOCS + "#bad-verification-code",
    )


def redirect_uri_mismatch() -> OAuthError:
    return OAuthError(
        "redirect_uri_mismatch",
        "The redirect_uri MUST match the registered callback URL for this application.",
        AUTHORIZE_ERRORS_DOCS + "#redirect-uri-mismatch2",
    )


def unsupported_grant_type() -> OAuthError:
    """Refresh tokens are handed out but not redeemable here (nor is the device flow): say so
    rather than misreport the missing ``code`` as a bad one."""
    return OAuthError(
        "unsupported_grant_type",
        "The grant type is not supported by the emulator (only authorization_code).",
        TOKEN_ERRORS_DOCS,
    )


class AuthorizePageError(Exception):
    """The authorize page refuses to issue a code; GitHub shows an HTML page, no redirect."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


def _origin(url: str) -> tuple[str, str | None, int | None] | None:
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number
        return None
    return parts.scheme.lower(), parts.hostname, port


def redirect_allowed(registered: str, candidate: str) -> bool:
    """GitHub's rule for a ``redirect_uri``: the scheme, host and port of a callback URL, and
    its path or a subdirectory of it. Dot segments are refused, so ``/cb/../x`` cannot climb
    out of the registered path."""
    origin = _origin(candidate)
    if origin is None or origin != _origin(registered) or not origin[1]:
        return False
    path = urlsplit(candidate).path or "/"
    if any(segment in (".", "..") for segment in path.split("/")):
        return False
    base = urlsplit(registered).path.rstrip("/")
    return path.rstrip("/") == base or path.startswith(base + "/")


def with_params(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query (after ``&`` when it already has one)."""
    parts = urlsplit(url)
    extra = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


class OAuthMixin(Store):
    """Callback URLs of the Apps, the authorize step and the code-for-token exchange."""

    def set_callback_urls(self, urls: list[str], app: int | None = None) -> AppRecord:
        """Register the App's (or ``app``'s) callback URLs, replacing what it had, as editing
        "Callback URL" in the App's settings does; the first is the default redirect."""
        with self.transaction():
            record = self.apps[app or self.app_id]
            record.callback_urls = list(urls)
            return record

    def find_app_by_client_id(self, client_id: str | None) -> AppRecord | None:
        if not client_id:
            return None
        return next((a for a in self.apps.values() if a.client_id == client_id), None)

    def authorize_oauth(
        self, client_id: str, login: str, redirect_uri: str | None = None
    ) -> OAuthCode:
        """What the authorize page does once ``login`` is signed in and approves: a code for
        ``redirect_uri`` (default: the first callback URL). :class:`AuthorizePageError` for an
        unknown App (404) or a redirect URI the App did not register (400)."""
        with self.transaction():
            app = self.find_app_by_client_id(client_id)
            if app is None:
                raise AuthorizePageError(404, "Not Found")
            if not app.callback_urls:
                raise AuthorizePageError(400, REDIRECT_NOT_ASSOCIATED)
            target = redirect_uri or app.callback_urls[0]
            if not any(redirect_allowed(url, target) for url in app.callback_urls):
                raise AuthorizePageError(400, REDIRECT_NOT_ASSOCIATED)
            record = OAuthCode(
                code=random_hex(20),
                client_id=app.client_id,
                user=login,
                redirect_uri=target,
                expires_at=self.now() + CODE_TTL,
            )
            self.oauth_codes[record.code] = record
            return record

    def oauth_code(
        self, login: str, *, redirect_uri: str | None = None, app: int | None = None
    ) -> str:
        """A code for ``login`` and the App (or ``app``), as if the browser went through the
        authorize page: for tests that only exercise the exchange."""
        client_id = self.apps[app or self.app_id].client_id
        return self.authorize_oauth(client_id, login, redirect_uri).code

    def exchange_oauth_code(
        self,
        client_id: str | None,
        client_secret: str | None,
        code: str | None,
        redirect_uri: str | None = None,
        grant_type: str | None = None,
    ) -> dict[str, Any]:
        """``POST /login/oauth/access_token``: the token body, or :class:`OAuthError`.

        Checked in GitHub's order: the client credentials, then the code (unknown, used,
        expired, or another App's: all the same error), then ``redirect_uri`` against the one
        the code was issued for. Only a successful exchange uses the code up."""
        with self.transaction():
            if grant_type not in (None, "", "authorization_code"):
                raise unsupported_grant_type()
            app = self.find_app_by_client_id(client_id)
            if app is None or not hmac.compare_digest(
                (client_secret or "").encode(), app.client_secret.encode()
            ):
                raise incorrect_client_credentials()
            record = self.oauth_codes.get(code or "")
            if (
                record is None
                or record.used
                or record.expires_at <= self.now()
                or record.client_id != app.client_id
            ):
                raise bad_verification_code()
            if redirect_uri and redirect_uri != record.redirect_uri:
                raise redirect_uri_mismatch()
            record.used = True
            token = self.create_user_access_token(record.user, app=app.id)
            return {
                "access_token": token.token,
                "expires_in": USER_TOKEN_TTL,
                "refresh_token": random_token("ghr_", 76),
                "refresh_token_expires_in": REFRESH_TOKEN_TTL,
                "token_type": "bearer",
                "scope": "",
            }

    def create_user_access_token(self, login: str, *, app: int | None = None) -> Token:
        """A ``ghu_`` token acting as ``login`` (as the user's own token does), expiring
        after eight hours on the emulator clock."""
        with self.transaction():
            account = self.find_account(login)
            if account is None:
                raise KeyError(f"no user {login}")
            token = Token(
                token=random_token("ghu_"),
                kind="user",
                expires_at=self.now() + USER_TOKEN_TTL,
                permissions={},
                user=account.login,
                app_id=app or self.app_id,
            )
            self.tokens[token.token] = token
            return token
