"""Structured JSON logs with secrets removed from every line.

Both structlog loggers and the standard library's (uvicorn, arq) go through the same chain, so
a token that slips into an exception message or a job's arguments is redacted too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Token shapes worth removing wherever they appear, configured or not.
_TOKEN_PATTERNS = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)"
    r"|\bgh[pousr]_[A-Za-z0-9]{16,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bsk-ant-[A-Za-z0-9_\-]{8,}"
    # A JWT (the App's own, or any bearer JWT): three base64url parts, two of them JSON.
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,}"
    # Other services' tokens that a repository's files or a CI log may carry: npm, AWS access
    # key ids, GitLab, Slack, OpenAI project keys.
    r"|\bnpm_[A-Za-z0-9]{36}\b"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bglpat-[A-Za-z0-9_\-]{20,}"
    r"|\bxox[abeoprs]-[A-Za-z0-9\-]{10,}"
    r"|\bsk-proj-[A-Za-z0-9_\-]{20,}"
    r"|(?<=x-access-token:)[^@\s]+"
    r"|(?i:(?<=authorization:)[ \t]*(?:bearer|token|basic)[ \t]+[A-Za-z0-9._~+/=\-]+)",
    re.DOTALL,
)
# Each shape above contains one of these (compared case-folded). Text with none of them is
# not searched: the search costs microseconds per value, and most values hold no token.
_TOKEN_MARKERS = ("-----begin ", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                  "sk-ant-", "eyj", "npm_", "akia", "asia", "glpat-", "xox", "sk-proj-",
                  "x-access-token:", "authorization:")


class Redactor:
    """A structlog processor that scrubs configured secrets and token-shaped strings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Short values would redact ordinary words; no real secret is that short. A secret
        # with a quote, backslash or newline in it also appears escaped, as a JSON string or
        # a repr() shows it.
        new = {form for s in secrets if len(s) >= 6
               for form in (s, json.dumps(s)[1:-1], repr(s)[1:-1])}
        self._secrets = sorted(set(self._secrets) | new, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        folded = text.lower()
        for marker in _TOKEN_MARKERS:
            if marker in folded:
                return _TOKEN_PATTERNS.sub(REDACTED, text)
        return text

    def scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub_value(v) for v in value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.scrub(repr(value))

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self.scrub_value(value)
        return event_dict


def _drop_console_only_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate of the message
    return event_dict


# The process-wide redactor; `configure_logging` adds the settings' secrets to it.
redactor = Redactor()


def configure_logging(level: str = "info", secrets: Iterable[str] = (), stream: Any = None) -> None:
    redactor.add(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[
            # First, so that a call below the level costs a level check and nothing more.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_console_only_fields,
            redactor,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # uvicorn's own handlers would print a second, unredacted copy.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker", "arq.jobs"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("arq.worker").addFilter(_QUIET_RECONCILE)  # a set: added once


class _QuietReconcile(logging.Filter):
    """arq logs the start and end of every job at info. The reconcile cron and the jobs it
    queues for each active run (ids naming `reconcile`) come every CONDUCTOR_RECONCILE_SECONDS
    for as long as the bot runs: thousands of lines a day saying nothing happened. They show
    at debug; their warnings and failures show as any other job's."""

    def filter(self, record: logging.LogRecord) -> bool:
        # arq's per-job lines start with the job's timing: "%6.2fs → %s(%s)%s" and the like.
        if (record.levelno > logging.INFO or not isinstance(record.args, tuple)
                or not str(record.msg).startswith("%6.2fs")):
            return True
        if any(isinstance(arg, str) and "reconcile" in arg for arg in record.args):
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


_QUIET_RECONCILE = _QuietReconcile()


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)
