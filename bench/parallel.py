"""Parallel steps: 8 independent steps, 4 at a time, every model call taking 1 s.

    uv run python bench/parallel.py
    uv run python bench/parallel.py --delay 0.5 --workers 2

Starts the end-to-end stack (`tests.emulators.harness.Stack`: GitHub emulator, Anthropic
stand-in, Redis, real `conductor web` and `conductor worker`, CI off), labels one issue whose
plan has 8 steps with disjoint files and no dependencies, and waits for the draft PR.

The model stand-in waits `--delay` seconds before every answer (planner, workers, reviewer).
A step costs 3 model calls (the worker's create_file, the worker's finish_step, the
reviewer's submit_review), so with 4 step slots the ideal step phase is 2 waves of 3 calls.

The ideal is measured, not assumed: the model time of each step is the sum of the latencies
the bot itself recorded for that step's calls (`conductor:run:{id}:calls`, `latency_ms`), i.e.
the delay plus HTTP and SDK time; one wave's ideal is the median of those sums and the ideal
step phase is 2 of them (about 2 x 3 x delay). The measured wall time is the step phase: from
the first step's `started_at` to the last step's `finished_at`. The bot's own per-step work
(git clone/fetch, commit, push, tracking comment, scheduling) is thus charged to the bot.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stackrun import collect
from tests.e2e.support import ACCEPT, plan, step
from tests.emulators.anthropic_api import Match, Rule, use_tool
from tests.emulators.harness import PROJECT_FILES, Stack

STEPS = 8
SLOTS = 4
TARGET = 1.25
# An 8-step plan would otherwise wait for `/agent approve` (the default asks above 4 steps).
FILES = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  approval_steps: 10\n"}


def script(the_plan: dict, delay: float) -> list[Rule]:
    rules = [
        use_tool("submit_plan", the_plan, match=Match(tool="submit_plan"), delay=delay,
                 rule_name="plan"),
        use_tool("submit_review", ACCEPT, match=Match(tool="submit_review"), delay=delay,
                 rule_name="review"),
    ]
    for spec in the_plan["steps"]:
        sid, path = spec["id"], spec["files"][0]
        match = Match(system=f"Step `{sid}`", tool="create_file")
        content = f"def {sid}() -> str:\n    return {sid!r}\n"
        rules += [
            use_tool("create_file", {"path": path, "content": content}, match=match, times=1,
                     delay=delay, rule_name=f"{sid}-write"),
            use_tool("finish_step", {"summary": f"Created {path}.", "rationale": "Planned.",
                                     "uncertainties": ""},
                     match=match, delay=delay, rule_name=f"{sid}-finish"),
        ]
    return rules


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per model call")
    parser.add_argument("--workers", type=int, default=1, help="conductor worker processes")
    parser.add_argument("--worker-concurrency", type=int, default=8,
                        help="arq job slots per worker process")
    parser.add_argument("--logs", type=Path, help="copy the bot's logs to this directory")
    args = parser.parse_args()

    the_plan = plan(*(step(f"op{i}", "implementer", f"Add op{i}", [f"widgets/op{i}.py"])
                      for i in range(1, STEPS + 1)))
    workdir = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    try:
        with Stack(workdir, files=FILES, script=script(the_plan, args.delay), ci_mode="none",
                   workers=args.workers, worker_concurrency=args.worker_concurrency,
                   run_concurrency=SLOTS, job_timeout=120, log_level="info") as stack:
            labeled = time.time()
            stack.label_issue("Add eight operations", "Please add op1 .. op8.")
            found = collect(stack, args.logs, STEPS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    records, events, calls, error = found.records, found.events, found.calls, found.error
    model_ms: dict[str, list[int]] = {}
    for call in calls:
        sid = (call.get("trace") or {}).get("step")
        model_ms.setdefault(sid or "-planner-", []).append(call["latency_ms"])

    if not records or any(r["started_at"] is None or r["finished_at"] is None
                          for r in records.values()):
        print(f"error: {error or 'not every step ran'}")
        print(f"bench parallel: wall_over_ideal=inf (target <= {TARGET}) short")
        return 1
    first = min(r["started_at"] for r in records.values())
    last = max(r["finished_at"] or first for r in records.values())
    wall = last - first
    print(f"delay {args.delay:g} s per model call; {args.workers} worker process(es) x "
          f"{args.worker_concurrency} job slots; {SLOTS} steps at once per run")
    print(f"label -> first step start: {first - labeled:.2f} s "
          f"(planner model time {sum(model_ms.get('-planner-', [0])) / 1000:.2f} s)")
    print(f"{'step':6} {'start':>7} {'end':>7} {'dur':>6} {'model':>6} {'calls':>5} "
          f"{'bot':>6}  window (0.25 s per char)")
    per_step_model = []
    for sid, r in sorted(records.items(), key=lambda kv: kv[1]["started_at"]):
        start, end = r["started_at"] - first, (r["finished_at"] or last) - first
        ms = model_ms.get(sid, [])
        model = sum(ms) / 1000
        per_step_model.append(model)
        bar = " " * int(start / 0.25) + "#" * max(1, int((end - start) / 0.25))
        print(f"{sid:6} {start:7.2f} {end:7.2f} {end - start:6.2f} {model:6.2f} {len(ms):5d} "
              f"{end - start - model:6.2f}  |{bar}")
    print("timeline events per step (s after the first start):")
    for sid in sorted(records):
        marks = [f"{e['kind']}:{e['message'][:24]}@{e['at'] - first:.2f}"
                 for e in events if e.get("step") == sid]
        print(f"  {sid}: " + "; ".join(marks))
    calls_per_step = statistics.median(len(model_ms.get(s, [])) for s in records)
    wave = statistics.median(per_step_model)
    waves = -(-STEPS // SLOTS)
    ideal = waves * wave
    ratio = wall / ideal if ideal else float("inf")
    print(f"ideal = {waves} waves x {wave:.2f} s (median model time of a step: "
          f"{calls_per_step:g} calls, nominal {calls_per_step * args.delay:g} s) = {ideal:.2f} s")
    print(f"step phase wall time {wall:.2f} s; nominal-ideal ratio "
          f"{wall / (waves * calls_per_step * args.delay):.3f}")
    if error:
        print(f"error: {error}")
    ok = ratio <= TARGET and not error
    print(f"bench parallel: wall_over_ideal={ratio:.3f} (target <= {TARGET}) "
          f"{'ok' if ok else 'short'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
