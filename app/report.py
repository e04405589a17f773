"""Turning run state into what people read: the tracking comment and the PR body.

Pure: takes the run, its steps, timeline and usage, returns Markdown. Text that came from a
model or from the issue is neutralised first: no @-mentions that would ping people, no
closing keywords that would close other issues on merge, no HTML (a comment or `<details>`
would hide what follows, an `<img>` would be fetched by every reader), no Markdown images,
no code fences that would swallow the rest of the page, no table-breaking pipes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.render import render
from app.runs import Run, RunStatus, StepRecord

TRACKING_MARKER = "<!-- conductor:tracking run={run_id} -->"
PR_MARKER = "<!-- conductor:pr run={run_id} -->"

_MENTION = re.compile(r"(?<![\w`])@(?=[A-Za-z0-9])")
# GitHub closes an issue named as `#12`, `owner/repo#12` or by its URL.
_CLOSING = re.compile(
    r"\b(close[sd]?|fix(e[sd])?|resolve[sd]?)(\s*:?\s+)"
    r"(?=[\w./-]*#\d|<?https?://[^\s/]+/[^\s/]+/[^\s/]+/issues/\d)", re.IGNORECASE
)
_STATE_ICON = {"pending": "⬜", "running": "🔄", "done": "✅", "failed": "❌",
               "skipped": "⏭️"}
_STATUS_LINE = {
    RunStatus.STARTING: "Starting",
    RunStatus.PLANNING: "Planning the change",
    RunStatus.AWAITING_APPROVAL: "Waiting for `/agent approve` from someone with write access",
    RunStatus.RUNNING: "Working on the steps",
    RunStatus.FINALIZING: "Opening the pull request",
    RunStatus.VERIFYING: "Pull request open; waiting for CI",
    RunStatus.FIXING: "CI failed; working on it",
    RunStatus.DONE: "Done",
    RunStatus.FAILED: "Stopped",
    RunStatus.NEEDS_HUMAN: "Stopped: needs a human",
    RunStatus.CANCELLED: "Cancelled",
}


# A code span on one line: its text is shown as it is, so it is left as it is.
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
# `<` that does not open an autolink (`<https://…>`, shown as a link and nothing else).
_HTML_OPEN = re.compile(r"<(?!https?://[^\s<>]*>)")
# A line that would open (or close) a fenced code block.
_FENCE = re.compile(r"^( {0,3})(?=`{3}|~{3})", re.MULTILINE)


def _inert(text: str) -> str:
    """`text` (outside code spans) with no HTML and no image: `<` shows as itself."""
    return _HTML_OPEN.sub("&lt;", text).replace("![", "!\\[")


def neutralise(text: str | None) -> str:
    """Untrusted or generated text made safe to post: no pings, no closing keywords, and
    nothing that would hide the rest of the page (the steps, the risk flags) from the
    reviewer or tell a third party who reads it: no HTML (comments, `<details>`, `<img>`),
    no Markdown images, no code fence."""
    if not text:
        return ""
    text = _FENCE.sub(lambda m: m.group(1) + "\\", text)
    parts, at = [], 0
    for span in _CODE_SPAN.finditer(text):
        parts += [_inert(text[at:span.start()]), span.group()]
        at = span.end()
    parts.append(_inert(text[at:]))
    return unlinked(_MENTION.sub("@\u200b", "".join(parts)))


def code(text: str | None, limit: int = 80) -> str:
    """`text` as a code span in a table cell, whatever backticks it holds."""
    flat = " ".join(str(text or "").split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    ticks = "`" * (max((len(run) for run in re.findall("`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{ticks}{pad}{flat}{pad}{ticks}".replace("|", "\\|")


def unlinked(text: str) -> str:
    """`text` with its closing keywords defused, so that merging it closes no issue."""
    return _CLOSING.sub(lambda m: f"{m.group(1)}\u200b{m.group(3)}", text)


def cell(text: str | None, limit: int = 300) -> str:
    """Text for one Markdown table cell."""
    flat = " ".join(neutralise(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("|", "\\|")


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def stamps(times: list[float]) -> list[str]:
    """Times for a list a reviewer reads top to bottom, in UTC, said so: with the date on the
    first and wherever the day changes (a run retried the next day), the time of day else."""
    out, day = [], None
    for ts in times:
        when = datetime.fromtimestamp(ts, UTC)
        out.append(when.strftime("%H:%M:%S UTC" if when.date() == day
                                 else "%Y-%m-%d %H:%M:%S UTC"))
        day = when.date()
    return out


@dataclass(frozen=True)
class UsageRow:
    role: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    errors: int = 0  # calls that got no answer (not in `calls`), as the trace counts them

    @property
    def calls_shown(self) -> str:
        return f"{self.calls} ({self.errors} failed)" if self.errors else str(self.calls)


def _total(rows: list[UsageRow]) -> UsageRow:
    return UsageRow(
        role="total", model="", calls=sum(r.calls for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cache_read_tokens=sum(r.cache_read_tokens for r in rows),
        cache_write_tokens=sum(r.cache_write_tokens for r in rows),
        cost_usd=sum(r.cost_usd for r in rows), errors=sum(r.errors for r in rows),
    )


def _gantt_label(text: str) -> str:
    # Mermaid task names may not contain ':' or '#' or ';'; no markup either.
    return re.sub(r"[:#;`<>\n]", " ", text).strip()[:60] or "step"


def gantt(run: Run, plan_steps: list[dict[str, Any]], steps: dict[str, StepRecord],
          timeline: list[dict[str, Any]]) -> str:
    lines = ["gantt", "    dateFormat x", "    axisFormat %H:%M:%S",
             f"    title Run {_gantt_label(run.id)}"]
    planned = [e for e in timeline if e["kind"] == "plan"]
    if planned:
        lines += ["    section Plan",
                  f"    Plan :done, plan, {int(run.created_at * 1000)}, "
                  f"{int(planned[-1]['at'] * 1000)}"]
    lines.append("    section Steps")
    for spec in plan_steps:
        record = steps.get(spec["id"])
        if record is None or record.started_at is None:
            continue
        end = record.finished_at or time.time()
        tag = {"done": "done", "failed": "crit", "running": "active"}.get(record.state, "")
        prefix = f"{tag}, " if tag else ""
        lines.append(
            f"    {_gantt_label(spec['id'] + ' ' + spec.get('title', ''))} :{prefix}"
            f"s_{re.sub(r'[^A-Za-z0-9_]', '_', spec['id'])}, "
            f"{int(record.started_at * 1000)}, {int(max(end, record.started_at + 1) * 1000)}"
        )
    attempts = [a for a in run.ci if a.get("finished_at")]
    if attempts:
        lines.append("    section CI")
        for number, attempt in enumerate(attempts, 1):
            verdict = str(attempt.get("verdict") or "")
            tag = {"green": "done", "no_ci": "done", "red": "crit"}.get(verdict, "")
            prefix = f"{tag}, " if tag else ""
            start = int(attempt["started_at"] * 1000)
            end = int(max(attempt["finished_at"], attempt["started_at"] + 1) * 1000)
            lines.append(f"    CI {number} {_gantt_label(attempt['sha'][:7])} :{prefix}"
                         f"ci_{number}, {start}, {end}")
    return "\n".join(lines)


_VERDICT = {"green": "✅ passed", "red": "❌ failed", "no_ci": "⚪ no CI reported",
            "missing": "⚠️ required checks missing", "pending": "⏳ running"}


def _ci_rows(run: Run) -> list[dict[str, Any]]:
    rows = []
    started = stamps([attempt["started_at"] for attempt in run.ci])
    for number, attempt in enumerate(run.ci, 1):
        rows.append({
            "number": number, "sha": attempt["sha"][:7],
            "verdict": _VERDICT.get(attempt.get("verdict") or "pending", "⏳ running"),
            "detail": cell(attempt.get("detail"), 300),
            "action": cell(attempt.get("action"), 200),
            "started": started[number - 1],
            "duration": duration((attempt.get("finished_at") or time.time())
                                 - attempt["started_at"]),
        })
    return rows


def _context(run: Run, steps: dict[str, StepRecord], timeline: list[dict[str, Any]],
             usage: list[UsageRow], now: float | None) -> dict[str, Any]:
    plan = run.plan or {}
    plan_steps: list[dict[str, Any]] = list(plan.get("steps", []))
    rows = []
    for spec in plan_steps:
        record = steps.get(spec["id"]) or StepRecord(id=spec["id"])
        rows.append({
            "id": spec["id"], "title": cell(spec.get("title"), 80), "role": spec.get("role", ""),
            "files": ", ".join(code(f) for f in spec.get("files", [])[:6])
            + (" …" if len(spec.get("files", [])) > 6 else ""),
            "state": record.state, "icon": _STATE_ICON.get(record.state, "⬜"),
            "commit": (record.commit or "")[:7],
            "rationale": cell(record.rationale or spec.get("rationale"), 400),
            "summary": cell(record.summary, 400),
            "error": cell(record.error, 300),
            "review": record.review,
        })
    now = now or time.time()
    end = run.updated_at if not run.status.active else now
    return {
        "run": run,
        "status_line": _STATUS_LINE[run.status],
        "stop_reason": neutralise(run.stop_reason),
        "summary": neutralise(plan.get("summary")),
        "rationale": neutralise(plan.get("rationale")),
        "steps": rows,
        "elapsed": duration(end - run.created_at),
        "usage": usage,
        "total": _total(usage),
        "timeline": [
            {"at": e["at"], "clock": at, "message": cell(e["message"], 300),
             "step": e.get("step")}
            for e, at in zip(timeline, stamps([e["at"] for e in timeline]), strict=True)
        ],
        "timeline_omitted": 0,
        "gantt": gantt(run, plan_steps, steps, timeline) if plan_steps else "",
        "risk_flags": [cell(f, 200) for f in run.risk_flags],
        "ci": _ci_rows(run),
        "no_ci": bool(run.ci) and run.ci[-1].get("verdict") == "no_ci",
        "diagnosis": neutralise(run.diagnosis),
        "instructions": [{"by": cell(r.get("by"), 40), "text": cell(r["instructions"], 500)}
                         for r in run.retries if r.get("instructions")],
        "current": next((r for r in rows if r["state"] == "running"), None),
        "tracking_marker": TRACKING_MARKER.format(run_id=run.id),
        "pr_marker": PR_MARKER.format(run_id=run.id),
    }


# GitHub's limit is 65,536 characters; a margin for how it may count some of them.
MAX_BODY_CHARS = 65_000


def tracking_comment(run: Run, steps: dict[str, StepRecord], timeline: list[dict[str, Any]],
                     usage: list[UsageRow], now: float | None = None) -> str:
    return render("comments/tracking.md.j2", **_context(run, steps, timeline, usage, now))


def pr_body(run: Run, steps: dict[str, StepRecord], timeline: list[dict[str, Any]],
            usage: list[UsageRow], now: float | None = None,
            dashboard_url: str | None = None) -> str:
    """The pull request's description. GitHub refuses a body over 65,536 characters, and a
    long run's timeline (retries, CI-fix rounds) can pass that: the oldest events are then
    left out, with a note, so that the body still fits. `dashboard_url`: the run's page on the
    dashboard, linked from the footer when the dashboard is reachable."""
    context = {**_context(run, steps, timeline, usage, now), "dashboard_url": dashboard_url}
    events = context["timeline"]

    def keeping(count: int) -> str:
        """The body with only the newest `count` events (the first of them with its date)."""
        kept = events[len(events) - count:]
        kept = [{**e, "clock": at} for e, at in zip(kept, stamps([e["at"] for e in kept]),
                                                     strict=True)]
        return render("pr/body.md.j2", **{**context, "timeline": kept,
                                          "timeline_omitted": len(events) - count})

    body = render("pr/body.md.j2", **context)
    if len(body) <= MAX_BODY_CHARS:
        return body
    fitting, low, high = None, 0, len(events) - 1  # the most events that still fit
    while low <= high:
        middle = (low + high) // 2
        candidate = keeping(middle)
        if len(candidate) <= MAX_BODY_CHARS:
            fitting, low = candidate, middle + 1
        else:
            high = middle - 1
    return fitting if fitting is not None else keeping(0)[:MAX_BODY_CHARS]


def check_summary(run: Run, steps: dict[str, StepRecord], timeline: list[dict[str, Any]],
                  usage: list[UsageRow], now: float | None = None) -> str:
    """The summary of Conductor's own check run (Markdown; GitHub caps it at 65,535)."""
    return render("checks/summary.md.j2", **_context(run, steps, timeline, usage, now))[:65_000]


def pr_title(run: Run) -> str:
    plan = run.plan or {}
    title = " ".join(str(plan.get("title") or run.issue_title).split())
    return (title[:120] or f"Conductor: issue #{run.issue_number}")
