"""`conductor trace`: a run's trace as Redis keeps it, for reading on a terminal or as JSON.

One document per run: the run record, each step (state, commit, files, summary, rationale,
review, error), each CI attempt, the timeline, the usage totals and the ledger of model calls
(model, latency, tokens, cost, retries, and the sanitised request and answer). The text form
shows all but the requests and answers; `--json` has everything, for tools and diffing.

What the text shows came in part from models, issues and CI logs: control characters are
shown escaped, so that no text in a trace can move the cursor or retitle the terminal.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from app.budget import UsageTotal, UsageTotals, model_calls, usage_totals
from app.models import ModelCall
from app.report import duration
from app.runs import Run, RunStore, StepRecord

# C0 and C1 controls, DEL, and the bidirectional overrides; newline and tab are kept.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_ISSUE_REF = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)#(?P<number>\d+)$")


@dataclass
class Trace:
    run: Run
    steps: dict[str, StepRecord]
    timeline: list[dict[str, Any]]
    usage: UsageTotals
    calls: list[ModelCall]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": asdict(self.run),
            "steps": [asdict(self.steps[i]) for i in step_order(self.run, self.steps)],
            "timeline": self.timeline,
            "usage": asdict(self.usage),
            "model_calls": [asdict(c) for c in self.calls],
        }


async def find_run(redis: Any, ref: str) -> str | None:
    """The run `ref` names: a run id, or `owner/repo#N` for that issue's latest run."""
    store = RunStore(redis)
    match = _ISSUE_REF.match(ref.strip())
    if match:
        key = await store.key_for(match["repo"])
        return await store.latest_run_id(key, int(match["number"]))
    return ref.strip() if await store.get(ref.strip()) is not None else None


async def load(redis: Any, run_id: str) -> Trace | None:
    store = RunStore(redis)
    run = await store.get(run_id)
    return None if run is None else await assemble(redis, run)


async def assemble(redis: Any, run: Run) -> Trace:
    """The rest of `run`'s trace: its steps, timeline, usage and model calls."""
    store = RunStore(redis)
    return Trace(run=run, steps=await store.steps(run.id), timeline=await store.timeline(run.id),
                 usage=await usage_totals(redis, run.id), calls=await model_calls(redis, run.id))


async def recent(redis: Any, count: int) -> list[tuple[Run, UsageTotal]]:
    return [(run, (await usage_totals(redis, run.id)).overall)
            for run in await RunStore(redis).recent(count)]


def visible(text: Any) -> str:
    """`text` with control characters shown as escapes (`\\x1b`), safe to print."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(ts: float | None) -> str:
    return "--:--:--" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _usd(value: float) -> str:
    return f"${value:.4f}"


def _tokens(total: UsageTotal) -> str:
    return (f"{total.tokens:,} tokens (input {total.input_tokens:,}, output "
            f"{total.output_tokens:,}, cache write {total.cache_creation_input_tokens:,}, "
            f"cache read {total.cache_read_input_tokens:,})")


def step_order(run: Run, steps: dict[str, StepRecord]) -> list[str]:
    planned = [s["id"] for s in (run.plan or {}).get("steps", []) if s.get("id") in steps]
    return planned + sorted(set(steps) - set(planned))


def _indent(label: str, text: Any, width: int = 6) -> list[str]:
    lines = visible(text).strip().splitlines() or [""]
    pad = " " * width
    return [f"{pad}{label}: {lines[0]}", *(f"{pad}  {line}" for line in lines[1:])]


def render_recent(rows: list[tuple[Run, UsageTotal]]) -> str:
    if not rows:
        return "No runs recorded in this Redis yet."
    out = [f"{'run':<34} {'issue':<28} {'status':<18} {'cost':>9}  created"]
    for run, total in rows:
        issue = f"{run.repo}#{run.issue_number}"
        out.append(f"{run.id:<34} {issue:<28} {run.status.value:<18} "
                   f"{_usd(total.cost_usd):>9}  {_when(run.created_at)}")
    out.append("")
    out.append("`conductor trace RUN` (or OWNER/REPO#ISSUE) shows one run; `--json` prints "
               "all of it.")
    return visible("\n".join(out))


def render(trace: Trace) -> str:
    run, usage = trace.run, trace.usage
    out = [f"run {run.id}: {run.repo}#{run.issue_number} “{run.issue_title}”, "
           f"{run.status.value.replace('_', ' ')}",
           f"  attempt {run.attempt}, labeled by @{run.triggered_by} at {_when(run.created_at)}"
           f"; last change {_when(run.updated_at)}",
           f"  branch {run.branch} from {run.default_branch}"
           + (f" at {run.base_sha[:7]}" if run.base_sha else "")
           + (f"; head {run.head_sha[:7]}" if run.head_sha else "")]
    if run.pr_number is not None:
        out.append(f"  pull request #{run.pr_number} {run.pr_url or ''}".rstrip())
    if run.stop_reason:
        out += _indent("stopped", run.stop_reason, 2)
    if run.risk_flags:
        out += _indent("risks", "; ".join(run.risk_flags), 2)
    if run.outcome:
        verb = "merged" if run.outcome.get("merged") else "closed"
        out.append(f"  outcome: {verb} by @{run.outcome.get('by')}, "
                   f"{duration(float(run.outcome.get('lead_time_s') or 0))} after the label")
    for retry in run.retries:
        said = f": {retry['instructions']}" if retry.get("instructions") else ""
        out += _indent("retried", f"by @{retry.get('by')} at {_when(retry.get('at'))}{said}", 2)

    out += ["", f"cost {_usd(usage.overall.cost_usd)}, {_tokens(usage.overall)}, "
                f"{usage.overall.calls} calls, {usage.overall.errors} failed"]
    for role, total in sorted(usage.by_role.items()):
        out.append(f"  {role:<14} {_usd(total.cost_usd):>9}  {total.calls:>3} calls  "
                   f"{total.tokens:>10,} tokens")

    plan = run.plan or {}
    out += ["", f"plan ({run.plan_template or 'no template'})" if run.plan else "no plan yet"]
    if plan.get("summary"):
        out += _indent("summary", plan["summary"], 2)
    specs = {s.get("id"): s for s in plan.get("steps", [])}
    for step_id in step_order(run, trace.steps):
        record, spec = trace.steps[step_id], specs.get(step_id, {})
        took = (duration(record.finished_at - record.started_at)
                if record.started_at and record.finished_at else "")
        commit = record.commit[:7] if record.commit else ""
        out.append(f"  {step_id:<12} {spec.get('role', '?'):<14} {record.state:<9} "
                   f"{commit:<8} {took}".rstrip())
        if spec.get("title"):
            out += _indent("title", spec["title"])
        if record.files_changed:
            out += _indent("files", f"{', '.join(record.files_changed)} "
                                    f"({record.lines_changed} lines changed)")
        for label in ("summary", "rationale", "uncertainties", "error"):
            value = getattr(record, label)
            if value:
                out += _indent(label, value)
        if record.review:
            review = record.review
            out += _indent("review", review.get("verdict", "?"))
            for comment in review.get("comments") or []:
                out += _indent("  comment", comment)
            if review.get("risk_flags"):
                out += _indent("  risks", ", ".join(map(str, review["risk_flags"])))
            if review.get("risk_notes"):
                out += _indent("  risk notes", review["risk_notes"])

    if run.ci:
        out += ["", "CI"]
        for attempt in run.ci:
            line = (f"  {str(attempt.get('sha', ''))[:7]} {attempt.get('verdict', 'waiting'):<8} "
                    f"from {clock(attempt.get('started_at'))}")
            if attempt.get("fix"):
                line += f" (fix {attempt['fix']})"
            out.append(line)
            if attempt.get("detail"):
                out += _indent("detail", attempt["detail"], 4)

    out += ["", f"timeline ({len(trace.timeline)} events)"]
    for event in trace.timeline:
        step = f" [{event['step']}]" if event.get("step") else ""
        out.append(f"  {clock(event.get('at'))} {event.get('kind', ''):<9}{step} "
                   f"{event.get('message', '')}")

    out += ["", f"model calls ({len(trace.calls)})"]
    for number, call in enumerate(trace.calls, 1):
        call_step = (call.trace or {}).get("step")
        line = (f"  {number:>3} {clock(call.started_at)} {call.role:<13} {call.model:<18} "
                f"{call.latency_ms / 1000:>6.1f} s  in {call.input_tokens:,} out "
                f"{call.output_tokens:,} cache w {call.cache_creation_input_tokens:,} r "
                f"{call.cache_read_input_tokens:,}  {_usd(call.cost_usd)}  "
                f"{call.stop_reason or '-'}")
        if call_step:
            line += f"  [{call_step}]"
        if call.retries:
            line += f"  {call.retries} retries"
        if call.request_id:
            line += f"  {call.request_id}"
        out.append(line)
        if call.error:
            out += _indent("error", call.error)
    # Every line escaped, the run's own fields too (an issue title is anyone's text).
    return visible("\n".join(out))
