"""Per-step overhead: a 6-step run with a model that answers at once, against plain git.

    uv run python bench/overhead.py

Starts the end-to-end stack (`tests.emulators.harness.Stack`, CI off), labels one issue
whose plan is a chain of 6 steps (each depends on the previous one, each creates its own
file), and times it from the label to the draft PR being open. Every step costs the bot 3
model calls (create_file, finish_step, the reviewer's submit_review), plus 1 planner call;
the stand-in answers them without delay. A chain runs one step at a time, so the model calls
never overlap and subtracting their summed latencies (as recorded by the bot in
`conductor:run:{id}:calls`, `latency_ms`) from the wall time leaves exactly the time the
run spent outside the model. Divided by 6, that is the time per step not spent in the model.

The baseline does the same git work with plain `git` in the same run, against the same
emulator over smart HTTP with a user token (sent as an `http.extraHeader`, as the bot sends
its installation token): clone `acme/widgets`, then 6 times write a file, commit and push
the branch (one `git push` each). Its per-step time is its total (clone included) / 6.

The ratio is the conductor's non-model time per step over the baseline's time per step.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stackrun import collect
from tests.e2e.support import plan, pull_requests, reviews_accept, step, submits, writes
from tests.emulators.harness import PROJECT_FILES, REPO, Stack

STEPS = 6
TARGET = 3.0
# A 6-step plan would otherwise wait for `/agent approve` (the default asks above 4 steps).
FILES = {**PROJECT_FILES, ".github/conductor.yml": "limits:\n  approval_steps: 10\n"}


def baseline(stack: Stack, workdir: Path) -> tuple[float, list[float]]:
    """Clone, then STEPS x (write, commit, push); total seconds and each push's seconds."""
    token = stack.state.user_token("alice")
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir),
        "LANG": "C.UTF-8", "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    clone = workdir / "clone"

    def git(*args: str, cwd: Path = clone) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    start = time.monotonic()
    git("clone", "--quiet", f"{stack.github.url}/{REPO}.git", str(clone), cwd=workdir)
    git("checkout", "-q", "-b", "bench/baseline")
    pushes = []
    for i in range(1, STEPS + 1):
        begin = time.monotonic()
        (clone / "widgets" / f"base{i}.py").write_text(f"def base{i}() -> int:\n    return {i}\n")
        git("add", "-A")
        git("commit", "-q", "-m", f"Add base{i}")
        git("push", "-q", "origin", "HEAD:refs/heads/bench/baseline")
        pushes.append(time.monotonic() - begin)
    return time.monotonic() - start, pushes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, help="copy the bot's logs to this directory")
    args = parser.parse_args()
    ids = [f"s{i}" for i in range(1, STEPS + 1)]
    the_plan = plan(*(step(sid, "implementer", f"Add {sid}", [f"widgets/{sid}.py"],
                           depends_on=[ids[n - 1]] if n else None)
                      for n, sid in enumerate(ids)))
    script = [submits(the_plan), reviews_accept()]
    for sid in ids:
        script += writes(sid, f"widgets/{sid}.py", f"def {sid}() -> str:\n    return {sid!r}\n")

    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        with Stack(workdir, files=FILES, script=script, ci_mode="none", workers=1,
                   worker_concurrency=8, run_concurrency=4, job_timeout=60) as stack:
            # Baseline first, while the bot is idle, then the run; both against one emulator.
            base_total, pushes = baseline(stack, workdir)
            labeled = time.time()
            stack.label_issue("Add six functions", "Please add s1 .. s6.")
            opened = stack.wait_for(lambda: pull_requests(stack) and time.time(), 80,
                                    "the draft pull request")
            found = collect(stack, args.logs, STEPS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    records, events, calls, error = found.records, found.events, found.calls, found.error
    wall = opened - labeled
    model = sum(c["latency_ms"] for c in calls) / 1000
    non_model = (wall - model) / STEPS
    base_step = base_total / STEPS
    ratio = non_model / base_step

    print("conductor run (label -> draft PR open):")
    first = min(r["started_at"] for r in records.values()) if records else labeled
    last = max((r["finished_at"] or first) for r in records.values()) if records else labeled
    print(f"  label -> first step start  {first - labeled:6.2f} s")
    for sid in ids:
        r = records.get(sid)
        if r:
            ms = sum(c["latency_ms"] for c in calls if (c.get("trace") or {}).get("step") == sid)
            print(f"  step {sid:3} {r['started_at'] - labeled:6.2f} -> "
                  f"{(r['finished_at'] or 0) - labeled:6.2f} s  "
                  f"({(r['finished_at'] or 0) - r['started_at']:.2f} s, model {ms / 1000:.2f} s)")
    print(f"  last step end -> PR open   {opened - last:6.2f} s")
    if events:
        kinds: dict[str, int] = {}
        for e in events:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        print(f"  timeline events: {kinds}")
    print(f"  total wall {wall:.2f} s; model calls {len(calls)}, {model:.2f} s in the model")
    print(f"  time per step not spent in the model: {non_model:.3f} s")
    print("plain git baseline (clone + 6 x write/commit/push):")
    print(f"  total {base_total:.2f} s, per step {base_step:.3f} s "
          f"(pushes {', '.join(f'{p:.2f}' for p in pushes)} s)")
    print(f"ratio (conductor non-model per step / baseline per step): {ratio:.2f}")
    if error:
        print(f"error: {error}")
    ok = ratio <= TARGET and not error
    print(f"bench overhead: ratio={ratio:.2f} (target <= {TARGET:g}) {'ok' if ok else 'short'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
