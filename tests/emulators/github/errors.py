"""GitHub's error bodies, raised as :class:`ApiError` anywhere and rendered by the routes."""

from __future__ import annotations

from typing import Any

DOCS = "https://docs.github.com/rest"


class ApiError(Exception):
    """An error answer: ``{"message": ..., "documentation_url": ...}`` with a status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        documentation_url: str = DOCS,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.errors = errors
        self.documentation_url = documentation_url
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        body["documentation_url"] = self.documentation_url
        body["status"] = str(self.status)
        return body


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def bad_credentials() -> ApiError:
    return ApiError(401, "Bad credentials")


def requires_authentication(documentation_url: str = DOCS) -> ApiError:
    return ApiError(401, "Requires authentication", documentation_url=documentation_url)


def not_accessible_by_integration(documentation_url: str = DOCS) -> ApiError:
    return ApiError(
        403, "Resource not accessible by integration", documentation_url=documentation_url
    )


def not_accessible_by_token() -> ApiError:
    return ApiError(403, "Resource not accessible by personal access token")


def validation_failed(*errors: dict[str, Any], message: str = "Validation Failed") -> ApiError:
    return ApiError(422, message, errors=list(errors))


def invalid_field(resource: str, field: str, code: str = "invalid") -> dict[str, Any]:
    return {"resource": resource, "field": field, "code": code}


def custom_error(resource: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"resource": resource, "code": "custom", "message": message}
    if field is not None:
        error["field"] = field
    return error
