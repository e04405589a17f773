"""Run the stand-in on loopback: uvicorn on 127.0.0.1, a free port, a background thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from .app import create_app
from .stand_in import AnthropicStandIn

STARTUP_TIMEOUT_SECONDS = 10.0


class AnthropicServer:
    """`with AnthropicServer() as server:` serves `server.stand_in` at `server.url`.

    The listening socket is bound (port 0 = any free port) before the thread starts, so `url`
    is known immediately and early connections queue until uvicorn accepts them.
    """

    def __init__(
        self,
        stand_in: AnthropicStandIn | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.stand_in = stand_in if stand_in is not None else AnthropicStandIn()
        self.host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the server is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Base URL for `anthropic.Anthropic(base_url=...)`, e.g. `http://127.0.0.1:54321`."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> AnthropicServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, self._requested_port))
        sock.listen(128)
        self._socket = sock
        config = uvicorn.Config(
            create_app(self.stand_in),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="anthropic-stand-in", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError("the Anthropic stand-in server failed to start")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the Anthropic stand-in server did not start in time")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STARTUP_TIMEOUT_SECONDS)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._server = None
        self._thread = None

    def __enter__(self) -> AnthropicServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
