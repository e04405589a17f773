"""Webhook ingress benchmark: `conductor web` against a bare Starlette endpoint.

Both targets run as separate processes on the same uvicorn settings (`app.processes`), the
conductor one on a throwaway Redis. A separate load-generator process (raw asyncio streams over
N keep-alive connections; see bench/README.md) sends signed `issue_comment.created` deliveries.

    uv run python bench/webhooks.py [--duration 5] [--connections 32] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
WEBHOOK_PATH = "/api/github/webhooks"
READER_PATH = "/reader" + WEBHOOK_PATH  # on the bare server: reads the body, then answers
VERIFIER_PATH = "/verifier" + WEBHOOK_PATH  # ... and checks the signature and parses the JSON
SECRET = "bench-webhook-secret"
THROUGHPUT_TARGET, P99_TARGET_MS = 0.7, 25.0


# --- the bare target: a Starlette app that only answers 202 (and the two references) -------

def bare_server(port: int) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from app import processes
    from app.logs import configure_logging
    from app.settings import Settings
    from app.webhooks import parse_json, signature_matches

    async def accept(request: Request) -> Response:
        return Response(status_code=202)

    async def read(request: Request) -> Response:
        # What any webhook receiver must do at the least: take in the body, answer in JSON.
        body = await request.body()
        return JSONResponse({"accepted": True, "bytes": len(body)}, status_code=202)

    async def verify(request: Request) -> Response:
        # ... and what no webhook receiver may skip: the signature and reading the JSON, done
        # by the functions `conductor web` uses. No routing, Redis or logging.
        body = await request.body()
        if not signature_matches(SECRET.encode(), body, request.headers.get("x-hub-signature-256")):
            return JSONResponse({"error": "signature"}, status_code=401)
        payload, _ = parse_json(body)
        return JSONResponse({"accepted": True, "action": payload.get("action")}, status_code=202)

    app = Starlette(routes=[Route(WEBHOOK_PATH, accept, methods=["POST"]),
                            Route(READER_PATH, read, methods=["POST"]),
                            Route(VERIFIER_PATH, verify, methods=["POST"])])
    settings = Settings.model_validate({"port": port, "log_level": "warning"})
    configure_logging(settings.log_level)
    processes.tune_gc()  # as `conductor web` does
    asyncio.run(processes.run(settings, app=app, redis_url=None, with_worker=False))


# --- the load generator (its own process; prints one JSON line) ------------------------------

def signed_bodies(secret: bytes) -> list[tuple[bytes, str]]:
    """The fixture payloads made into accepted `/agent` commands, signed once up front."""
    out = []
    for path in sorted(FIXTURES.glob("issue_comment.created.*.json")):
        payload = json.loads(path.read_text())
        payload["comment"]["body"] = "/agent help"
        payload["installation"] = {"id": 1}
        body = json.dumps(payload).encode()
        out.append((body, "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()))
    return out


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """One phase: closed loop (`rate` 0) or open loop at `rate` req/s, over N connections."""
    port, rate, duration = spec["port"], spec["rate"], spec["duration"]
    path = spec.get("path", WEBHOOK_PATH)
    # (head up to the delivery id, rest): only the id is added per request in the timed phase.
    requests = [((f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
                  "content-type: application/json\r\nx-github-event: issue_comment\r\n"
                  f"x-hub-signature-256: {sig}\r\ncontent-length: {len(body)}\r\n"
                  "x-github-delivery: ").encode(), b"\r\n\r\n" + body)
                for body, sig in signed_bodies(SECRET.encode())]
    accept_mark = b'"accepted":true' if spec["conductor"] else b""
    stats: dict[str, Any] = {"accepted": 0, "errors": {}}
    latencies: list[float] = []
    counter, slots = iter(range(10**9)), iter(range(10**9))

    def error(kind: str) -> None:
        stats["errors"][kind] = stats["errors"].get(kind, 0) + 1

    async def one(conn: list[Any]) -> float:
        """Send the next delivery (its own id) on a keep-alive connection; return when done."""
        i = next(counter)
        head, rest = requests[i % len(requests)]
        data = head + f"{spec['prefix']}-{i:08d}".encode() + rest
        try:
            async with asyncio.timeout(10):
                if not conn:
                    conn.extend(await asyncio.open_connection("127.0.0.1", port))
                conn[1].write(data)
                head = await conn[0].readuntil(b"\r\n\r\n")
                _, _, length = head.lower().partition(b"content-length:")
                body = await conn[0].readexactly(int(length.split(b"\r\n")[0] or 0))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            if conn:
                conn.pop().close()
                conn.clear()
            error(type(exc).__name__)
            return time.perf_counter()
        if head.startswith(b"HTTP/1.1 202 ") and accept_mark in body:
            stats["accepted"] += 1
        else:
            error(next((k for k in ("duplicate", "ignored") if k.encode() in body),
                       head[9:12].decode()))
        return time.perf_counter()

    async def closed_worker(conn: list[Any]) -> None:
        while (t := time.perf_counter()) < end:
            if start <= (done := await one(conn)) < end:
                latencies.append(done - t)

    async def open_worker(conn: list[Any]) -> None:
        # Request i is due at start + i/rate; latency counts from then (no coordinated omission).
        # One hopelessly late (the target cannot keep up) is not sent: an error, latency inf.
        while (scheduled := start + next(slots) / rate) < end:
            if (wait := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            elif -wait > max(2.0, duration):
                error("not sent: too far behind schedule")
                latencies.append(float("inf"))
                continue
            latencies.append(await one(conn) - scheduled)

    conns: list[list[Any]] = [[] for _ in range(spec["connections"])]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if rate:  # open the connections (one request each) before the schedule starts
        await asyncio.gather(*(one(c) for c in conns))
    start = time.perf_counter() + (spec["warmup"] if not rate else 0.05)
    end = start + duration
    await asyncio.gather(*((open_worker if rate else closed_worker)(c) for c in conns))
    wall = time.perf_counter() - start
    for conn in conns:
        if conn:
            conn[1].close()
    latencies.sort()
    n = len(latencies)
    stats.update(
        rps=sum(x < 1e9 for x in latencies) / (wall if rate else duration),
        p50_ms=latencies[n // 2] * 1000 if n else float("nan"),
        p99_ms=latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        client_cpu=(time.process_time() - cpu0) / (time.perf_counter() - wall0),
    )
    return stats


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(server: subprocess.Popen[bytes], port: int, **spec: Any) -> dict[str, Any]:
    """One phase in a fresh load-generator process; adds the server's CPU use meanwhile."""
    cpu, wall = cpu_seconds(server.pid), time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--load", json.dumps({"port": port, **spec})],
                          capture_output=True, text=True, check=True, start_new_session=True,
                          timeout=spec["duration"] * 4 + 60)
    result: dict[str, Any] = json.loads(done.stdout)
    result["server_cpu"] = (cpu_seconds(server.pid) - cpu) / (time.perf_counter() - wall)
    return result


# --- orchestration ----------------------------------------------------------------------------

def free_port() -> int:
    from app.redis import free_port as any_port

    return next(port for port in iter(any_port, None) if port != 6379)  # never the default


def private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    sys.exit(f"server did not start:\n{log.read_text()[-2000:]}")


def start(cmd: list[str], env: dict[str, str], tmp: Path, name: str) -> subprocess.Popen[bytes]:
    with open(tmp / f"{name}.log", "wb") as log:
        return subprocess.Popen(cmd, env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fmt(result: dict[str, Any]) -> str:
    return (f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:7.2f} ms  "
            f"p99 {result['p99_ms']:7.2f} ms  errors {sum(result['errors'].values())}  "
            f"cpu: server {result['server_cpu']:.0%} client {result['client_cpu']:.0%}")


def bench(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> bool:
    import redis as redis_client

    from app.constants import QUEUE_NAME
    from app.redis import start_redis_on_free_port

    redis = start_redis_on_free_port(tmp / "redis")
    procs.append(redis.process)
    ports = {"bare": free_port(), "conductor": free_port()}
    env = {**os.environ, "REDIS_URL": redis.url, "GITHUB_APP_ID": "1",
           "GITHUB_PRIVATE_KEY": private_key_pem(), "GITHUB_WEBHOOK_SECRET": SECRET,
           "GITHUB_APP_SLUG": "conductor-bench", "HOST": "127.0.0.1", "LOG_LEVEL": "warning"}
    servers = {
        "bare": start([sys.executable, __file__, "--bare-server", str(ports["bare"])],
                      env, tmp, "bare"),
        "conductor": start([sys.executable, "-m", "app.cli", "web"],
                           {**env, "PORT": str(ports["conductor"])}, tmp, "conductor"),
    }
    procs.extend(servers.values())
    for name, path in (("bare", "/"), ("conductor", "/healthz")):
        wait_ready(servers[name], ports[name], path, tmp / f"{name}.log")

    d, c = args.duration, args.connections
    rounds = 1 if args.quick else args.rounds
    print(f"closed loop: {c} connections, {d:g} s per target, {rounds} alternating round(s)")
    # Each row: the server it runs against and the path. "reader" and "verifier" are
    # references, not targets: the least any webhook receiver does, on the bare server.
    rows = {"bare": ("bare", WEBHOOK_PATH), "reader": ("bare", READER_PATH),
            "verifier": ("bare", VERIFIER_PATH), "conductor": ("conductor", WEBHOOK_PATH)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
    for r in range(rounds):
        for name, (server, path) in rows.items():
            res = run_load(servers[server], ports[server], conductor=server == "conductor",
                           path=path, prefix=f"max{r}", connections=c, duration=d, rate=0,
                           warmup=min(1.0, d / 4))
            results[name].append(res)
            print(f"  round {r + 1} {name:<9} {fmt(res)}")
    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50_ms", "p99_ms")}
           for name, rs in results.items()}
    ratio = med["conductor"]["rps"] / med["bare"]["rps"]
    rate = 0.5 * med["bare"]["rps"]
    print(f"open loop: {rate:.0f} req/s (half the bare maximum) for {d:g} s against conductor")
    half = run_load(servers["conductor"], ports["conductor"], conductor=True, prefix="half",
                    connections=c, duration=d, rate=rate, warmup=0)
    print(f"  conductor {fmt(half)}")

    errors: Counter[str] = Counter()
    for res in [*(res for rs in results.values() for res in rs), half]:
        errors.update(res["errors"])
    accepted = sum(res["accepted"] for res in [*results["conductor"], half])
    db = redis_client.Redis.from_url(redis.url)
    queued = db.zcard(QUEUE_NAME)
    stored = sum(1 for _ in db.scan_iter("arq:job:*", count=1000))
    db.close()
    print(f"redis: {accepted} accepted deliveries, {queued} in {QUEUE_NAME}, "
          f"{stored} job records")
    if queued != accepted or stored != accepted:
        errors["lost or extra jobs"] = abs(queued - accepted) + abs(stored - accepted)
    print(f"errors: {dict(errors) or 'none'}")

    print(f"\n{'target':<10} {'requests/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, m in [*med.items(), ("half rate", half)]:
        print(f"{name:<10} {m['rps']:>10.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}")
    print(f"throughput ratio conductor/bare: {ratio:.2f}")
    reader, verifier = (med[name]["rps"] / med["bare"]["rps"] for name in ("reader", "verifier"))
    print(f"(references: reading the body and answering JSON alone, reader/bare: {reader:.2f}; "
          f"checking the signature and parsing the JSON too, verifier/bare: {verifier:.2f})\n")
    p99_ok = half["p99_ms"] < P99_TARGET_MS
    ok = p99_ok and ratio >= THROUGHPUT_TARGET and not errors
    print(f"p99 at half the bare rate: {half['p99_ms']:.2f} ms (target < {P99_TARGET_MS:g}) "
          f"{'ok' if p99_ok else 'short'}")
    print(f"bench webhooks: throughput_ratio={ratio:.2f} (target >= {THROUGHPUT_TARGET}) "
          f"{'ok' if ok else 'short'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="alternating max-rate rounds")
    parser.add_argument("--quick", action="store_true", help="1 s phases, one round")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        return bare_server(args.bare_server) or 0
    if args.load:
        return print(json.dumps(asyncio.run(generate(json.loads(args.load))))) or 0
    if args.quick:
        args.duration = 1.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        return 0 if bench(args, tmp, procs) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
