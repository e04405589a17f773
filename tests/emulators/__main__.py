"""Serve the stand-ins by hand: ``uv run python -m tests.emulators --workdir DIR [--port N]``.

Starts the GitHub emulator (on ``--port`` or a free port) with webhook delivery and the CI
runner, and the Anthropic stand-in (on a free port), prints one JSON line with what Conductor
needs to reach them, and serves until SIGINT or SIGTERM. Drive them through their admin APIs
(``/_admin/...``); see ``tests/emulators/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .anthropic_api import AnthropicServer, AnthropicStandIn
from .github import GitHubServer, GitHubState
from .github.ci import CIRunner
from .github.delivery import WebhookDelivery
from .harness import manifest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=Path,
                        help="where the emulator keeps its state (reused if it exists)")
    parser.add_argument("--port", type=int, default=0,
                        help="port of the GitHub emulator (default: a free one)")
    parser.add_argument("--anthropic-port", type=int, default=0,
                        help="port of the Anthropic stand-in (default: a free one)")
    parser.add_argument("--hook-url", default=None,
                        help="where to deliver webhooks (or PUT /_admin/hooks later)")
    parser.add_argument("--app-slug", default="conductor", help="the emulated App's slug")
    parser.add_argument("--ci-workers", type=int, default=2, help="CI jobs run at once")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir: Path = args.workdir.resolve()
    spec = manifest()
    state = GitHubState(workdir / "github", app_slug=args.app_slug, app_name="Conductor",
                        app_permissions=dict(spec["default_permissions"]),
                        app_events=list(spec["default_events"]))
    # A signal handler must not take locks (a second signal can arrive while it holds one):
    # it only records the signal, and the main thread polls.
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: signals.append(number))

    github = GitHubServer(state, port=args.port)
    anthropic = AnthropicServer(AnthropicStandIn(), port=args.anthropic_port)
    hooks = WebhookDelivery(state, args.hook_url)
    ci = CIRunner(state, workers=args.ci_workers)
    started: list[GitHubServer | AnthropicServer | WebhookDelivery | CIRunner] = []
    try:
        for part in (github, anthropic, hooks, ci):
            part.start()
            started.append(part)
        info = {
            "github_url": github.url,
            "anthropic_url": anthropic.url,
            "app_id": state.app_id,
            "private_key_path": str(state.private_key_path()),
            "webhook_secret": state.webhook_secret,
            "app_slug": state.app.slug,
        }
        print(json.dumps(info), flush=True)
        while not signals:
            time.sleep(0.1)
    finally:
        for part in reversed(started):
            part.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
