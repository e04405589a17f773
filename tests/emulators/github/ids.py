"""Identifiers and timestamps in GitHub's formats."""

from __future__ import annotations

import base64
import secrets
import string
import time
from datetime import UTC, datetime

# GraphQL global-id prefixes GitHub uses for each kind of object.
NODE_PREFIXES = {
    "Repository": "R_kgDO",
    "User": "U_kgDO",
    "Organization": "O_kgDO",
    "Bot": "BOT_kgDO",
    "App": "A_kwHO",
    "Installation": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u",
    "Issue": "I_kwDO",
    "PullRequest": "PR_kwDO",
    "IssueComment": "IC_kwDO",
    "Label": "LA_kwDO",
    "Reaction": "REA_lADO",
    "CheckSuite": "CS_kwDO",
    "CheckRun": "CR_kwDO",
    "StatusContext": "SC_kwDO",
    "Workflow": "W_kwDO",
    "WorkflowRun": "WFR_kwLO",
    "Job": "CR_kwDO",
    "Ref": "REF_kwDO",
    "Commit": "C_kwDO",
    "Tree": "T_kwDO",
    "Blob": "B_kwDO",
}


def node_id(kind: str, number: int | str) -> str:
    """A stable, opaque global node id for an object of ``kind`` with id ``number``."""
    raw = f"{kind}:{number}".encode()
    suffix = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return NODE_PREFIXES.get(kind, "N_kwDO") + suffix


def parse_node_id(value: str) -> tuple[str, str] | None:
    """Reverse :func:`node_id`; ``None`` when ``value`` is not one of ours."""
    for kind, prefix in NODE_PREFIXES.items():
        if not value.startswith(prefix):
            continue
        body = value[len(prefix) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        found_kind, _, number = raw.partition(":")
        if found_kind == kind and number:
            return kind, number
    return None


def random_token(prefix: str, length: int = 36) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def random_hex(length: int = 40) -> str:
    return secrets.token_hex(length // 2)


def iso(ts: float | None) -> str | None:
    """GitHub's timestamp format: ``2024-01-02T03:04:05Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_clock() -> float:
    return time.time()
