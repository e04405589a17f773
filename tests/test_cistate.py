"""The evidence of a CI failure, read from the GitHub emulator as from GitHub: what of a
failed job's log and a check's output reaches the fixer's prompt and the diagnosis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app import cistate
from app.logs import REDACTED
from tests.emulators.github.testing import Env, running_emulator

REPO = "acme/widgets"
KEY_BODY = [f"MIIEowIBAAKCAQEA{i:02d}s3cr3tk3ym4t3r14l{i:02d}xq" for i in range(30)]
KEY = ["-----BEGIN RSA PRIVATE KEY-----", *KEY_BODY, "-----END RSA PRIVATE KEY-----"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with running_emulator(tmp_path) as running:
        yield running


async def test_a_secret_in_a_failed_jobs_log_is_redacted_before_the_log_is_trimmed(
        env: Env) -> None:
    # A test prints a private key fixture shortly before failing, and a long line holds a
    # token just where the excerpt is cut: neither may reach the prompt, not even in part.
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
    lines = ["collecting ..."] * 50 + KEY + [
        "FAILED tests/test_keys.py::test_load - assert False",
        "x" * 3_990 + " token=" + token + " " + "y" * 9_000,
        "1 failed, 3 passed in 0.40s"]
    sha = env.state.branch_sha(REPO, "main")
    assert sha is not None
    run = env.state.create_workflow_run(REPO, head_sha=sha, jobs=["test"])
    [job] = env.state.workflow_jobs(run.id)
    env.state.complete_job(job.id, "failure", log="\n".join(lines))
    gh = env.installation_client()
    snapshot = await cistate.snapshot(gh, "acme", "widgets", sha)
    failing, _statuses = snapshot.failed(env.state.app_id)
    found = await cistate.evidence(gh, "acme", "widgets", sha, failing)
    assert "FAILED tests/test_keys.py::test_load" in found.text  # the evidence is there
    assert REDACTED in found.text
    for secret in (*KEY_BODY, token[:12], token[-12:]):
        assert secret not in found.text
