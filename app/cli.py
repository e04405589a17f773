"""`conductor`: serve (all in one), web, worker; trace (read a run's trace); replay (send a
run's model calls again)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from app.constants import DASHBOARD_PREFIX
from app.logs import configure_logging
from app.settings import Settings, SettingsError, load_settings


def _say(line: str) -> None:
    print(line, flush=True)


def _fail(message: str) -> int:
    print(f"conductor: {message}", file=sys.stderr, flush=True)
    return 2


def _run(main: Coroutine[Any, Any, list[str]]) -> int:
    """Run the process until it stops; 0 after a clean stop, non-zero (with one line saying
    why) when a component failed, so that a supervisor restarting on failure restarts it."""
    from app.processes import tune_gc

    tune_gc()  # every import is done and the app built: what the process starts with
    failures = asyncio.run(main)
    if failures:
        from app.logs import redactor

        return _fail(redactor.scrub("stopped: " + "; ".join(failures)))
    return 0


def _data_dir_problem(settings: Settings) -> str | None:
    """Why CONDUCTOR_DATA_DIR cannot hold Redis's data and the clones, in one line, or None."""
    data = settings.conductor_data_dir
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        return (f"CONDUCTOR_DATA_DIR: cannot use {data}: {exc.strerror or exc}; set it to a "
                "directory this user can write to")
    return None


def _serve(settings: Settings) -> int:
    from app import processes

    url = f"http://{settings.host}:{settings.port}"
    if not settings.has_app_credentials:
        from app.setup import create_setup_app

        _say(f"Conductor is in setup mode (no GitHub App credentials): open {url}/ to "
             "register or configure the App.")
        return _run(processes.run(settings, app=create_setup_app(settings), redis_url=None,
                                  with_worker=False))
    if (problem := _data_dir_problem(settings)) is not None:
        return _fail(problem)
    import workers.main  # noqa: F401  (the worker's imports take seconds: before "listening")
    from app.redis import RedisStartError
    from app.web import create_app

    try:
        with processes.redis_for(settings) as (redis_url, described):
            _say(f"Conductor listening on {url} (bot mode, App {settings.github_app_id}; "
                 f"web and worker in one process; {described})")
            _say("Webhook URL path: /api/github/webhooks")
            _say(_dashboard_line(settings, url))
            _say_missing_slug(settings)
            return _run(processes.run(settings, app=create_app(settings, redis_url=redis_url),
                                      redis_url=redis_url, with_worker=True))
    except RedisStartError as exc:
        return _fail(str(exc))


def _say_missing_slug(settings: Settings) -> None:
    if not settings.github_app_slug:
        _say("GITHUB_APP_SLUG is not set: Conductor cannot tell its own bot's events (its "
             "pushes, comments) from people's; set it to the name in the App's URL "
             "(github.com/apps/<slug>)")


def _dashboard_line(settings: Settings, url: str) -> str:
    base = str(settings.conductor_public_url).rstrip("/") if settings.conductor_public_url else url
    if settings.has_oauth_client:
        return f"Dashboard: {base}{DASHBOARD_PREFIX} (sign in with GitHub)"
    return ("Dashboard: off until GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET are set (the App's "
            "settings page on GitHub has both)")


def _web(settings: Settings) -> int:
    from app import processes
    from app.web import create_app

    if not settings.redis_url:
        return _fail("REDIS_URL: required by `conductor web` (shared with the workers); "
                     "set it to a URL such as redis://localhost:6379/0, or use `conductor serve`")
    if not settings.has_app_credentials:
        return _fail("GITHUB_APP_ID, GITHUB_PRIVATE_KEY and GITHUB_WEBHOOK_SECRET are required "
                     "by `conductor web`; run `conductor serve` once to register the App")
    _say(f"Conductor web listening on http://{settings.host}:{settings.port} (Redis at REDIS_URL)")
    _say(_dashboard_line(settings, f"http://{settings.host}:{settings.port}"))
    _say_missing_slug(settings)
    return _run(processes.run(settings, app=create_app(settings), redis_url=settings.redis_url,
                              with_worker=False))


def _worker(settings: Settings) -> int:
    from app import processes

    if not settings.redis_url:
        return _fail("REDIS_URL: required by `conductor worker`; set it to a URL such as "
                     "redis://localhost:6379/0, or use `conductor serve`")
    if (problem := _data_dir_problem(settings)) is not None:
        return _fail(problem)
    import workers.main  # noqa: F401  (imported before `_run` freezes what start-up made)

    _say(f"Conductor worker started (Redis at REDIS_URL, "
         f"{settings.conductor_worker_concurrency} job slots)")
    return _run(processes.run(settings, app=None, redis_url=settings.redis_url,
                              with_worker=True))


@contextlib.contextmanager
def _redis_to_read(settings: Settings) -> Iterator[str]:
    """REDIS_URL; or the embedded Redis of a `conductor serve` running on this data
    directory; or that embedded Redis started for the moment from its files."""
    from app.redis import RedisInUse, embedded_redis, running_embedded_url

    if settings.redis_url:
        yield settings.redis_url
        return
    data = settings.conductor_data_dir / "redis"
    if not data.is_dir():
        raise FileNotFoundError(
            f"no Redis data in {data.resolve()}: set REDIS_URL to the bot's Redis, or run "
            "this where `conductor serve` runs (or with its CONDUCTOR_DATA_DIR)")
    url = running_embedded_url(data)
    if url is None:
        try:
            with embedded_redis(data) as started:
                yield started
            return
        except RedisInUse:  # a `conductor serve` started meanwhile
            url = running_embedded_url(data)
            if url is None:
                raise
    yield url


async def _read_trace(url: str, ref: str | None, as_json: bool, count: int) -> str | None:
    """The text to print; None (after saying why) when there is no such run."""
    from redis.asyncio import Redis

    from app import trace
    from app.logs import redactor

    client = Redis.from_url(url)
    try:
        if ref is None:
            rows = await trace.recent(client, count)
            text = (json.dumps([{"id": run.id, "repo": run.repo, "issue": run.issue_number,
                                 "status": run.status.value, "cost_usd": total.cost_usd,
                                 "created_at": run.created_at} for run, total in rows],
                               indent=2, ensure_ascii=False)
                    if as_json else trace.render_recent(rows))
        else:
            run_id = await trace.find_run(client, ref)
            found = await trace.load(client, run_id) if run_id else None
            if found is None:
                _fail(f"no run {ref!r} in this Redis; `conductor trace` lists the latest runs")
                return None
            text = (json.dumps(found.to_dict(), indent=2, ensure_ascii=False, default=str)
                    if as_json else trace.render(found))
    finally:
        await client.aclose()
    return redactor.scrub(text)  # nothing secret is recorded; this makes sure


def _print_from_redis(settings: Settings,
                      read: Callable[[str], Coroutine[Any, Any, str | None]]) -> int:
    """Run `read` on the bot's Redis (see `_redis_to_read`) and print what it returns; None
    means it already said why there is nothing to print."""
    from redis.exceptions import RedisError

    from app.redis import RedisStartError

    try:
        with _redis_to_read(settings) as url:
            text = asyncio.run(read(url))
    except (FileNotFoundError, RedisStartError) as exc:
        return _fail(str(exc))
    except (OSError, RedisError) as exc:  # Redis refused the connection, or went away
        return _fail(f"could not read Redis: {exc}")
    if text is None:
        return 2
    try:
        _say(text)
    except BrokenPipeError:  # `conductor trace ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _trace(settings: Settings, args: argparse.Namespace) -> int:
    return _print_from_redis(settings,
                             lambda url: _read_trace(url, args.run, args.json, args.limit))


async def _replay_run(settings: Settings, url: str, args: argparse.Namespace) -> str | None:
    """The replay's report; None (after saying why) when there is nothing to send."""
    from redis.asyncio import Redis

    from app import replay, trace
    from app.budget import model_calls
    from app.logs import redactor
    from app.models import ModelClient
    from app.pricing import UnknownModelPrice

    client = Redis.from_url(url)
    try:
        run_id = await trace.find_run(client, args.run)
        if run_id is None:
            _fail(f"no run {args.run!r} in this Redis; `conductor trace` lists the latest runs")
            return None
        chosen = replay.select(await model_calls(client, run_id), args.role or (),
                               args.call or ())
        if not chosen:
            _fail(f"run {run_id} has no answered model calls"
                  + (" of that role or number" if args.role or args.call else ""))
            return None
        try:
            estimate = replay.estimate(chosen, args.model)
        except UnknownModelPrice as exc:
            _fail(str(exc))
            return None
        if estimate > args.max_cost:
            _fail(f"replaying {len(chosen)} calls would cost about ${estimate:.2f} (the recorded "
                  f"usage at {args.model or 'the recorded models'}' prices), more than "
                  f"--max-cost ${args.max_cost:.2f}; raise --max-cost, or pick calls with "
                  "--role or --call")
            return None
        key = settings.anthropic_api_key
        if key is None or not key.get_secret_value().strip():
            _fail("ANTHROPIC_API_KEY is not set; a replay sends the calls to the model API")
            return None
        models = ModelClient(settings)
        try:
            result = await replay.replay(client, models, run_id, chosen, args.model)
        finally:
            await models.aclose()
    finally:
        await client.aclose()
    text = (json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json
            else replay.render(result))
    return redactor.scrub(trace.visible(text) if not args.json else text)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    if args.max_cost < 0:
        return _fail("--max-cost must be 0 or more")
    return _print_from_redis(settings, lambda url: _replay_run(settings, url, args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conductor", description=__doc__)
    parser.add_argument("--host", help="address to listen on (default: HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: PORT or 3000)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="web server, worker and (without REDIS_URL) embedded Redis")
    sub.add_parser("web", help="the web server only (needs REDIS_URL)")
    sub.add_parser("worker", help="an arq worker only (needs REDIS_URL)")
    tracing = sub.add_parser(
        "trace", help="a run's trace: steps, rationale, timeline, model calls and cost",
        description="Print a run's trace from Redis (REDIS_URL, or the embedded one under "
                    "CONDUCTOR_DATA_DIR). Without RUN: the latest runs.")
    tracing.add_argument("run", nargs="?", help="a run id, or OWNER/REPO#ISSUE for the "
                                                "issue's latest run")
    tracing.add_argument("--json", action="store_true",
                         help="everything, model requests and answers too, as JSON")
    tracing.add_argument("--limit", type=int, default=20, help="runs to list (default 20)")
    replaying = sub.add_parser(
        "replay", help="send a run's model calls again and compare the answers",
        description="Send the recorded model calls of a run again (their whole requests are "
                    "kept for CONDUCTOR_REPLAY_DAYS), to the same models or to --model, and "
                    "show where the answers differ: tool calls, text, stop reason, tokens and "
                    "cost. Tools are not run again; nothing is written to the run.")
    replaying.add_argument("run", help="a run id, or OWNER/REPO#ISSUE for the issue's latest run")
    replaying.add_argument("--model", help="send every call to this model instead")
    replaying.add_argument("--role", action="append",
                           help="only the calls of this role (orchestrator, implementer, ...); "
                                "repeatable")
    replaying.add_argument("--call", action="append", type=int,
                           help="only this call, numbered as `conductor trace` numbers them; "
                                "repeatable")
    replaying.add_argument("--max-cost", type=float, default=1.0,
                           help="refuse a replay estimated to cost more USD (default 1.00)")
    replaying.add_argument("--json", action="store_true", help="the comparison as JSON")
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        return _fail(str(exc))
    configure_logging(settings.log_level, settings.secret_values())
    if args.command == "trace":
        return _trace(settings, args)
    if args.command == "replay":
        return _replay(settings, args)
    commands = {"serve": _serve, "web": _web, "worker": _worker}
    return commands[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
