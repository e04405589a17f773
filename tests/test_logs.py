"""Every log line is JSON, carries the delivery's context, and never carries a secret."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from typing import Any

import pytest
from arq import cron
from arq.connections import create_pool

from app.constants import QUEUE_NAME
from app.logs import _TOKEN_PATTERNS, REDACTED, Redactor, configure_logging, get_logger
from app.processes import build_worker
from app.redis import RedisProcess, arq_settings
from workers.main import reconcile

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAxyz\nabc+/=\n-----END RSA PRIVATE KEY-----"
TOKENS = [
    "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "sk-ant-api03-abcdefghijklmnop_QRSTUV-wxyz",
    PEM,
    # An App JWT: it authenticates as the App itself for up to ten minutes.
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsImlzcyI6IjEyMyJ9"
    ".TJVA95OrM7E2cBab30RMHrHDcEfxjoYZgeFONFh7HgQzVm4ZgpH8nX0b_LOb-OkM9q7Zc",
    # Other services' tokens, as a repository's .npmrc or a CI log could show them.
    "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "glpat-aBcDeFgHiJkLmNoPqRsT",
    "xoxb-1234567890-abcdefghijkl",
    "sk-proj-aBcDeFgHiJkLmNoPqRsTuVwX",
    "Authorization:Basic eC1hY2Nlc3MtdG9rZW46Z2hzXzE=",
]


@pytest.mark.parametrize("secret", TOKENS)
def test_token_shapes_are_redacted_wherever_they_appear(secret: str) -> None:
    redactor = Redactor()
    text = f"cloning with {secret} now"
    assert secret not in redactor.scrub(text)
    assert REDACTED in redactor.scrub(text)


def test_text_is_searched_for_token_shapes_whenever_one_could_be_there() -> None:
    # Text without any shape's marker skips the search; it must never skip a real match.
    samples = [
        *TOKENS,
        *(f"{secret.upper()} and {secret.lower()}" for secret in TOKENS),
        "AUTHORIZATION: Basic eC1hY2Nlc3MtdG9rZW46Z2hzXzE=",
        "https://x-access-token:abc123def456@github.com/o/r.git",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "ghs_short ghp_ sk-ant- eyJ.eyJ. github_pat_",
        "issue_comment created for acme/widgets", "",
    ]
    redactor = Redactor()
    for text in samples:
        assert redactor.scrub(text) == _TOKEN_PATTERNS.sub(REDACTED, text), text


def test_configured_secrets_are_redacted_even_without_a_known_shape() -> None:
    redactor = Redactor(["my-webhook-secret-value"])
    assert redactor.scrub("secret=my-webhook-secret-value;") == f"secret={REDACTED};"


def test_a_configured_secret_is_redacted_in_its_escaped_forms_too() -> None:
    secret = 'we"bhook\\sec\'ret'
    redactor = Redactor([secret])
    for shown in (secret, json.dumps({"s": secret}), repr({"s": secret}), str([secret])):
        assert "bhook" not in redactor.scrub(shown), shown


def test_redaction_reaches_nested_values_and_credentials_in_urls() -> None:
    redactor = Redactor()
    event = redactor.scrub_value(
        {"url": "https://x-access-token:abc123def456@github.com/o/r.git",
         "headers": [("Authorization: Bearer abcdefghijkl", 1)]}
    )
    assert event["url"] == f"https://x-access-token:{REDACTED}@github.com/o/r.git"
    assert "abcdefghijkl" not in json.dumps(event)


def test_log_lines_are_json_and_redacted_including_stdlib_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("info", ["configured-secret-123"], stream=stream)
    log = get_logger("test").bind(delivery="d-1", event="issues", repo="o/r")
    log.info("pushing", token=TOKENS[0], note="configured-secret-123")
    logging.getLogger("arq.worker").info("job args %s", TOKENS[1])
    try:
        raise RuntimeError(f"git failed for {TOKENS[3]}")
    except RuntimeError:
        log.exception("step failed")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines][:1] == ["pushing"]
    assert lines[0]["delivery"] == "d-1" and lines[0]["repo"] == "o/r"
    assert lines[0]["level"] == "info" and "timestamp" in lines[0]
    text = stream.getvalue()
    for secret in [*TOKENS[:4], "configured-secret-123"]:
        assert secret not in text
    assert "RuntimeError" in lines[-1]["exception"]


async def test_the_periodic_reconcile_does_not_log_a_line_per_tick_at_info(
    redis_server: RedisProcess, redis: Any, settings_factory: Any,
) -> None:
    # Every CONDUCTOR_RECONCILE_SECONDS, for weeks: arq's start and end line for the cron and
    # for each run it nudges would be most of the log. A job of the same kind that a run's
    # own progress queued still shows.
    pool = await create_pool(arq_settings(redis_server.url), default_queue_name=QUEUE_NAME)
    await pool.enqueue_job("schedule_run", "gone-1", "reconcile",
                           _job_id="schedule:gone-1:reconcile:1700000000")
    await pool.enqueue_job("schedule_run", "gone-2", "plan", _job_id="schedule:gone-2:plan")
    await pool.aclose()
    out = io.StringIO()
    configure_logging("info", stream=out)
    # The cron is there (its name is in the start-up line) but due twenty minutes on: a
    # tick during this burst would be a third job.
    later = (datetime.now().minute + 20) % 60
    cron_jobs = [cron(reconcile, minute={later}, second={0}, run_at_startup=False)]
    worker = build_worker(settings_factory(), redis_server.url, burst=True, poll_delay=0.01,
                          cron_jobs=cron_jobs)
    await worker.main()
    await worker.close()

    assert worker.jobs_complete == 2
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert [e for e in events if "gone-2" in e]  # → and ← of the plan's job
    assert [e for e in events if "gone-1" in e] == []
    assert [e for e in events if e.startswith("Starting worker")]  # names cron:reconcile

    out.truncate(0)
    out.seek(0)
    configure_logging("debug", stream=out)
    logging.getLogger("arq.worker").info("%6.2fs → %s(%s)%s", 0.0,
                                         "schedule:gone-1:reconcile:1:schedule_run", "", "")
    assert "reconcile" in out.getvalue()
    configure_logging("info")
