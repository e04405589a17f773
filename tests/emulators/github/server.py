"""Run the emulator with uvicorn on loopback, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from .app import create_app
from .state import GitHubState


class GitHubServer:
    """``with GitHubServer(state) as server: ... server.url ...``

    Binds ``127.0.0.1`` (port 0 picks a free one) before starting, so :attr:`url` is known
    at once; sets ``state.base_url`` so every URL the emulator renders points at it.
    """

    def __init__(
        self,
        state: GitHubState | str | Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        **state_options: Any,
    ) -> None:
        self.state = (
            state if isinstance(state, GitHubState) else GitHubState(state, **state_options)
        )
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.state.base_url = self.url
        self.state.save()
        config = uvicorn.Config(
            create_app(self.state),
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> GitHubServer:
        self._sock.listen(128)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="github-emulator",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the GitHub emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> GitHubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
