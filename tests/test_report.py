"""The tracking comment and PR body, rendered from fixed state and compared to snapshots.

Set UPDATE_SNAPSHOTS=1 to rewrite the snapshot files after an intended change; review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.report import UsageRow, check_summary, gantt, neutralise, pr_body, tracking_comment
from app.runs import Run, RunStatus, StepRecord

SNAPSHOTS = Path(__file__).parent / "snapshots"
T0 = 1_800_000_000.0


def sample() -> tuple[Run, dict[str, StepRecord], list[dict[str, object]], list[UsageRow]]:
    run = Run(
        id="shop-7-1-abc123", repo="acme/shop", installation_id=1, issue_number=7,
        issue_title="Add a health endpoint", triggered_by="alice", trigger_delivery="d",
        attempt=1, branch="conductor/issue-7-add-a-health-endpoint",
        status=RunStatus.VERIFYING, created_at=T0, updated_at=T0 + 95,
        pr_number=12, pr_url="https://github.com/acme/shop/pull/12",
        risk_flags=["public API: adds GET /health"],
        plan={
            "summary": "Add GET /health returning the build version; @bob asked for it.",
            "rationale": "Route, handler and a test; fixes #99 is out of scope.",
            "steps": [
                {"id": "route", "role": "implementer", "title": "Add the /health route",
                 "files": ["src/app.py"], "rationale": "The endpoint itself | one handler."},
                {"id": "tests", "role": "test_engineer", "title": "Test /health",
                 "files": ["tests/test_health.py"], "rationale": "Proves 200 and the body."},
                {"id": "docs", "role": "implementer", "title": "Document /health",
                 "files": ["README.md"], "rationale": "Users find it."},
            ],
        },
    )
    steps = {
        "route": StepRecord(id="route", state="done", started_at=T0 + 10, finished_at=T0 + 40,
                            commit="a1b2c3d4e5", rationale="Adds the route next to /version."),
        "tests": StepRecord(id="tests", state="done", started_at=T0 + 12, finished_at=T0 + 38,
                            commit="f6e5d4c3b2"),
        "docs": StepRecord(id="docs", state="failed", started_at=T0 + 41, finished_at=T0 + 60,
                           error="README.md is protected"),
    }
    timeline: list[dict[str, object]] = [
        {"at": T0, "kind": "trigger", "message": "labeled by @alice", "step": None},
        {"at": T0 + 9, "kind": "plan", "message": "plan accepted: 3 steps", "step": None},
        {"at": T0 + 10, "kind": "step", "message": "started", "step": "route"},
    ]
    usage = [
        UsageRow("orchestrator", "claude-opus-5-5", 1, 12000, 800, 0, 9000, 0.1234),
        UsageRow("implementer", "claude-sonnet-5-5", 6, 30000, 4000, 25000, 0, 0.2),
    ]
    return run, steps, timeline, usage


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(text)
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"snapshot {name} was missing and has been written; review it")
    assert text == path.read_text()


def test_pr_body_snapshot() -> None:
    run, steps, timeline, usage = sample()
    body = pr_body(run, steps, timeline, usage, now=T0 + 100)  # type: ignore[arg-type]
    assert "Closes #7" in body
    assert "@\u200bbob" in body and "fixes\u200b #99" in body
    assert "```mermaid\ngantt" in body
    check_snapshot("pr_body.md", body)


def test_tracking_comment_snapshot() -> None:
    run, steps, timeline, usage = sample()
    comment = tracking_comment(run, steps, timeline, usage, now=T0 + 100)  # type: ignore[arg-type]
    assert "- [x] ✅ **route**" in comment and "- [ ] ❌ **docs**" in comment
    assert run.pr_url is not None and run.pr_url in comment
    check_snapshot("tracking_comment.md", comment)


def test_gantt_windows_follow_the_steps() -> None:
    run, steps, timeline, _ = sample()
    chart = gantt(run, run.plan["steps"], steps, timeline)  # type: ignore[index]
    assert ":done, s_route, 1800000010000, 1800000040000" in chart
    assert ":crit, s_docs, 1800000041000, 1800000060000" in chart


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("thanks @octocat", "thanks @\u200boctocat"),
        ("mail a@b.com", "mail a@b.com"),
        ("`@decorator`", "`@decorator`"),
        ("Fixes #12", "Fixes\u200b #12"),
        ("closes other/repo#3", "closes\u200b other/repo#3"),
        ("the fix is #12-safe", "the fix is #12-safe"),
        ("Fixes https://github.com/acme/widgets/issues/7",
         "Fixes\u200b https://github.com/acme/widgets/issues/7"),
        ("resolves <https://ghe.example/a/b/issues/7>",
         "resolves\u200b <https://ghe.example/a/b/issues/7>"),
        ("fix https://github.com/acme/widgets/pull/7", "fix https://github.com/acme/widgets/pull/7"),
        ("Done. <!-- the rest is hidden", "Done. &lt;!-- the rest is hidden"),
    ],
)
def test_neutralise(text: str, expected: str) -> None:
    assert neutralise(text) == expected


def with_ci(run: Run) -> Run:
    run.ci = [
        {"sha": "1" * 40, "started_at": T0 + 61, "finished_at": T0 + 90, "verdict": "red",
         "detail": "failed: test", "action": "fix 1: make /health return the version"},
        {"sha": "2" * 40, "started_at": T0 + 120, "finished_at": T0 + 150, "verdict": "green",
         "detail": "passed: test, lint"},
    ]
    run.retries = [{"by": "alice", "at": T0 + 100, "instructions": "use @carol's helper"}]
    run.head_sha = "2" * 40
    return run


def test_pr_body_shows_each_ci_attempt_and_retry_instructions() -> None:
    run, steps, timeline, usage = sample()
    body = pr_body(with_ci(run), steps, timeline, usage, now=T0 + 200)  # type: ignore[arg-type]
    assert "| 1 | `1111111` | ❌ failed |" in body and "| 2 | `2222222` | ✅ passed |" in body
    assert "section CI" in body and ":crit, ci_1," in body and ":done, ci_2," in body
    assert "use @\u200bcarol's helper" in body  # people's text never pings anyone
    check_snapshot("pr_body_ci.md", body)


def test_the_check_run_summary_says_what_the_run_is_doing() -> None:
    run, steps, timeline, usage = sample()
    run = with_ci(run)
    steps["docs"].state = "running"
    summary = check_summary(run, steps, timeline, usage, now=T0 + 200)  # type: ignore[arg-type]
    assert "Working on **docs** Document /health" in summary
    assert "| 2 | `2222222` | ✅ passed |" in summary
    assert "Cost so far $0.32" in summary


def test_a_long_runs_pr_body_fits_github_with_the_latest_events() -> None:
    # Retries and CI-fix rounds make long timelines; GitHub refuses a body over 65,536
    # characters, which would leave the run unable to open or update its pull request.
    run, steps, _, usage = sample()
    timeline: list[dict[str, object]] = [
        {"at": T0 + i, "kind": "step", "message": f"event {i:04d} " + "x" * 280, "step": "route"}
        for i in range(600)
    ]
    body = pr_body(run, steps, timeline, usage, now=T0 + 700)  # type: ignore[arg-type]
    assert len(body) <= 65_536
    assert "event 0599" in body and "event 0000" not in body
    kept = body.count("event 0")
    assert f"The latest {kept} of 600 events" in body
    assert f"… {600 - kept} earlier events are left out" in body
    assert kept > 150  # as many as fit, not a token few
    first = 600 - kept  # the first event kept says its day
    assert f"- `2027-01-15 {8 + first // 3600:02d}:{first // 60 % 60:02d}:{first % 60:02d} UTC` " \
        f"**route** event {first:04d}" in body
    # The end is still there.
    assert body.rstrip().endswith(f"Its trace: `conductor trace {run.id}`.</sub>")


def test_the_footer_links_the_runs_dashboard_page_when_people_can_reach_it() -> None:
    from app.pulls import dashboard_url
    from app.settings import Settings

    run, steps, timeline, usage = sample()
    reachable = Settings(_env_file=None, conductor_public_url="https://conductor.example.test",
                         github_client_id="Iv1.abc", github_client_secret="s" * 40)
    url = dashboard_url(reachable, run)
    assert url == f"https://conductor.example.test/dashboard/runs/{run.id}"
    body = pr_body(run, steps, timeline, usage, now=T0 + 100,  # type: ignore[arg-type]
                   dashboard_url=url)
    assert f"Its trace: [on the dashboard]({url}), or `conductor trace {run.id}`." in body
    # No public URL, or no way to sign in: no link that would lead nowhere.
    assert dashboard_url(reachable.model_copy(update={"conductor_public_url": None}), run) is None
    assert dashboard_url(reachable.model_copy(update={"github_client_id": None}), run) is None


def test_model_text_cannot_hide_the_steps_or_load_images_in_the_pr_body() -> None:
    # The plan and the steps are a model's words: a line of ``` in them would open a code
    # block that swallows the steps table and the risk flags; <details> would fold them away;
    # an image (HTML or Markdown) would be fetched each time someone reads the pull request.
    run, steps, timeline, usage = sample()
    assert run.plan is not None
    run.plan["summary"] = ("Adds the route.\n\n```\nsee below\n~~~\n"
                           "<img src=https://t.example/a.gif> ![x](https://t.example/b.png)")
    run.plan["rationale"] = "Short. <details><summary>more</summary>"
    run.plan["steps"][0]["title"] = "Add `List<int>` route </details>"
    run.plan["steps"][0]["files"] = ["src/a`b.py"]
    steps["route"].rationale = "![t](https://t.example/c.png) <picture>"
    timeline.append({"at": T0 + 20, "kind": "step", "message": "said </details> done",
                     "step": "route"})
    body = pr_body(run, steps, timeline, usage, now=T0 + 100)  # type: ignore[arg-type]
    fences = [line for line in body.splitlines() if re.match(r" {0,3}(`{3,}|~{3,})", line)]
    assert fences == ["```mermaid", "```"]  # only the template's own
    assert body.count("<details>") == 1 and body.count("</details>") == 1
    assert "<img" not in body and "<picture" not in body and "![" not in body
    # What the model wrote is still shown, as text.
    assert "&lt;img src=https://t.example/a.gif>" in body
    assert "Add `List<int>` route &lt;/details>" in body
    assert "| ``src/a`b.py`` |" in body
    comment = tracking_comment(run, steps, timeline, usage, now=T0 + 100)  # type: ignore[arg-type]
    assert "</details>" not in comment and "&lt;/details>" in comment


def test_pr_body_times_say_their_timezone_and_their_day() -> None:
    # A reviewer anywhere reads these; a run retried the next day has two 08:00:00s.
    run, steps, timeline, usage = sample()
    run = with_ci(run)
    timeline.append({"at": T0 + 86_400 + 5, "kind": "retry", "message": "retried by @alice",
                     "step": None})
    timeline.append({"at": T0 + 86_400 + 6, "kind": "step", "message": "started",
                     "step": "docs"})
    body = pr_body(run, steps, timeline, usage, now=T0 + 86_500)  # type: ignore[arg-type]
    assert "- `2027-01-15 08:00:00 UTC` labeled by @\u200balice" in body
    assert "- `08:00:09 UTC` plan accepted: 3 steps" in body
    assert "- `2027-01-16 08:00:05 UTC` retried by @\u200balice" in body
    assert "- `08:00:06 UTC` **docs** started" in body
    assert "| 1 | `1111111` | ❌ failed | `2027-01-15 08:01:01 UTC` |" in body


async def test_pr_body_counts_calls_as_the_trace_does(redis: aioredis.Redis) -> None:
    # A call that failed (the model API answered 529 after its retries) used nothing: the
    # trace says "3 calls, 1 failed", and the PR body must not say 4 calls.
    from app.budget import Budget, usage_totals
    from app.budget_view import usage_rows
    from app.limits import Limits
    from app.models import ModelCall

    run, steps, timeline, _ = sample()
    budget = Budget(redis, run.id, Limits())
    for role, error in (("orchestrator", None), ("implementer", "overloaded (529)"),
                        ("implementer", None), ("reviewer", None)):
        await budget.record(ModelCall(
            run_id=run.id, role=role, model="claude-sonnet-5-5", started_at=T0, latency_ms=10,
            input_tokens=0 if error else 100, output_tokens=0 if error else 10,
            cost_usd=0.0 if error else 0.001, error=error))
    totals = (await usage_totals(redis, run.id)).overall
    assert (totals.calls, totals.errors) == (3, 1)
    body = pr_body(run, steps, timeline, await usage_rows(redis, run.id),  # type: ignore[arg-type]
                   now=T0 + 100)
    assert "| implementer | `claude-sonnet-5-5` | 1 (1 failed) | 100 | 10 |" in body
    assert "| **total** | | 3 (1 failed) | 300 | 30 |" in body
