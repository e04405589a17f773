"""API errors in the real wire shape.

`{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}`
"""

from __future__ import annotations

from typing import Any

# HTTP status the real API uses for each error type.
STATUS_BY_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class ApiError(Exception):
    """A request the stand-in answers with an error body instead of a message."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status if status is not None else STATUS_BY_TYPE.get(error_type, 500)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.error_type, self.message)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def invalid(message: str) -> ApiError:
    """A 400 `invalid_request_error`."""
    return ApiError("invalid_request_error", message)
