"""Identifiers shaped like the real API's (`msg_01...`, `toolu_01...`, `req_01...`)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """`prefix` + `_01` + 22 base62 characters, e.g. `msg_01XFDUDYJgAACzvnptvVoYEL`."""
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(22))
    return f"{prefix}_01{tail}"
