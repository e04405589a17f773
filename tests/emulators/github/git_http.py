"""Smart HTTP for ``git clone``/``fetch``/``push``: ``git http-backend`` run as a CGI.

Authentication is HTTP Basic with a token as the password (``x-access-token:<ghs_...>`` for
installations, ``<login>:<ghp_...>`` for users), as on github.com. The token's permissions
reach the repository's pre-receive hook through the CGI environment (workflow files need the
``workflows`` permission); the post-receive hook writes the ref updates to a file the
emulator reads once git is done, to announce the push.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .access import Principal, can_see, has_permission, may
from .errors import ApiError
from .gitrepo import git_env
from .httputil import state_of
from .records import Repo

SERVICES = ("git-upload-pack", "git-receive-pack")


@functools.cache
def backend_path() -> str:
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return str(Path(exec_path) / "git-http-backend")


def challenge(message: str = "Authentication required") -> Response:
    return PlainTextResponse(
        message + "\n", status_code=401, headers={"WWW-Authenticate": 'Basic realm="GitHub"'}
    )


def refuse(
    request: Request, principal: Principal, repo: Repo | None, push: bool
) -> Response | None:
    """The answer GitHub gives a caller who may not do this, or ``None`` if they may."""
    state = state_of(request)
    if principal.kind == "app":
        return challenge("Invalid username or token.")
    if repo is None or not can_see(state, principal, repo):
        if principal.kind == "anonymous":
            return challenge()
        return PlainTextResponse("Repository not found.\n", status_code=404)
    if push and principal.kind == "anonymous":
        return challenge()
    permission = ("contents", "write" if push else "read")
    if not may(state, principal, repo, permission, "write" if push else "read"):
        who = principal.login or "anonymous"
        return PlainTextResponse(
            f"Permission to {repo.full_name}.git denied to {who}.\n", status_code=403
        )
    return None


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body, gunzipped when the git client compressed it."""
    if request.headers.get("content-encoding", "").lower() in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        async for chunk in request.stream():
            if chunk:
                yield inflater.decompress(chunk)
        yield inflater.flush()
        return
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def git_http(request: Request) -> Response:
    state = state_of(request)
    owner = request.path_params["owner"]
    name = request.path_params["name"]
    rest = request.path_params["rest"]
    service = request.query_params.get("service") or rest.rsplit("/", 1)[-1]
    push = service == "git-receive-pack"
    try:
        principal = state.principal_from_header(request.headers.get("authorization"))
    except ApiError:
        return challenge(
            "Invalid username or token. Password authentication is not supported "
            "for Git operations."
        )
    request.scope.setdefault("state", {}).update(login=principal.login, auth=principal.kind)
    repo = state.find_repo(owner, name)
    refused = refuse(request, principal, repo, push)
    if refused is not None:
        return refused
    assert repo is not None
    if rest not in ("info/refs", *SERVICES):
        return PlainTextResponse("Not Found\n", status_code=404)

    fd, push_log = tempfile.mkstemp(prefix="push-", dir=state.workdir / "tmp")
    os.close(fd)
    gzipped = request.headers.get("content-encoding", "").lower() in ("gzip", "x-gzip")
    workflows_ok = principal.kind != "installation" or has_permission(
        principal, "workflows", "write"
    )
    env = git_env(
        state.workdir / "tmp",
        {
            "GIT_PROJECT_ROOT": str(state.workdir / "git"),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{repo.owner}/{repo.name}.git/{rest}",
            "QUERY_STRING": request.url.query,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "REMOTE_USER": principal.login or "anonymous",
            "REMOTE_ADDR": request.client.host if request.client else "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "EMULATOR_WORKFLOWS_ALLOWED": "1" if workflows_ok else "0",
            "EMULATOR_PUSH_LOG": push_log,
        },
    )
    if request.headers.get("content-length") and not gzipped:
        env["CONTENT_LENGTH"] = request.headers["content-length"]
    if request.headers.get("git-protocol"):
        env["HTTP_GIT_PROTOCOL"] = env["GIT_PROTOCOL"] = request.headers["git-protocol"]

    proc = await asyncio.create_subprocess_exec(
        backend_path(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin and proc.stdout and proc.stderr

    async def feed() -> None:
        assert proc.stdin
        try:
            async for chunk in _body(request):
                proc.stdin.write(chunk)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()

    feeder = asyncio.create_task(feed())
    errors = asyncio.create_task(proc.stderr.read())

    status = 200
    headers: dict[str, str] = {}
    while True:
        line = await proc.stdout.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").strip().partition(":")
        if key.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[key.strip()] = value.strip()

    async def finish() -> None:
        await feeder
        await proc.wait()
        await errors
        updates = []
        with contextlib.suppress(FileNotFoundError):
            for row in Path(push_log).read_text().splitlines():
                parts = row.split()
                if len(parts) == 3:
                    updates.append((parts[2], parts[0], parts[1]))
            os.unlink(push_log)
        if updates:
            state.record_push(repo, updates, principal.login or repo.owner)

    if push and request.method == "POST":
        # Read everything first so the push is announced before the client sees the answer.
        body = await proc.stdout.read()
        await finish()
        return Response(body, status_code=status, headers=headers)

    async def stream() -> AsyncIterator[bytes]:
        try:
            assert proc.stdout
            while chunk := await proc.stdout.read(65536):
                yield chunk
            await finish()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(push_log)

    return StreamingResponse(stream(), status_code=status, headers=headers)


ROUTES = [
    Route("/{owner}/{name}.git/{rest:path}", git_http, methods=["GET", "POST"]),
]
