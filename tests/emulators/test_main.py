"""``python -m tests.emulators``: one JSON line, real clients against the URLs, clean exit."""

from __future__ import annotations

import http.server
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from githubkit import AppAuthStrategy, GitHub

ROOT = Path(__file__).resolve().parents[2]


class Hooks(http.server.BaseHTTPRequestHandler):
    received: queue.Queue[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.put((self.headers["x-github-event"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_receiver() -> Iterator[tuple[str, queue.Queue[tuple[str, dict[str, Any]]]]]:
    received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    handler = type("Handler", (Hooks,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks", received
    server.shutdown()
    server.server_close()


def first_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("no JSON line from python -m tests.emulators") from None


def next_event(received: queue.Queue[tuple[str, dict[str, Any]]], name: str,
               action: str) -> dict[str, Any]:
    while True:
        event, payload = received.get(timeout=30)
        if event == name and payload.get("action") == action:
            return payload


def test_the_cli_serves_both_stand_ins_until_sigterm(
    tmp_path: Path, hook_receiver: tuple[str, queue.Queue[tuple[str, dict[str, Any]]]]
) -> None:
    hook_url, received = hook_receiver
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators", "--workdir", str(tmp_path / "emu"),
         "--hook-url", hook_url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        info = json.loads(first_line(process, 30))
        assert set(info) == {"github_url", "anthropic_url", "app_id", "private_key_path",
                             "webhook_secret", "app_slug"}

        pem = Path(info["private_key_path"]).read_text()
        app = GitHub(AppAuthStrategy(info["app_id"], pem), base_url=info["github_url"],
                     ssl_verify=False, http_cache=False)
        me = app.rest.apps.get_authenticated().parsed_data
        assert me and (me.id, me.slug) == (info["app_id"], info["app_slug"])
        assert "workflows" not in me.permissions.model_dump(exclude_none=True)

        with httpx.Client(base_url=info["github_url"] + "/_admin", timeout=60) as admin:
            assert admin.get("/hooks").json()["url"] == hook_url
            admin.post("/repos", json={"full_name": "acme/widgets",
                                       "files": {"README.md": "hi\n"}}).raise_for_status()
            admin.post("/installations", json={"account": "acme"}).raise_for_status()
            assert next_event(received, "installation", "created")["installation"]
            admin.put("/repos/acme/widgets/ci", json={"command": "true"}).raise_for_status()
            admin.post("/repos/acme/widgets/commits",
                       json={"branch": "main", "files": {"a.txt": "a\n"}}).raise_for_status()
            suite = next_event(received, "check_suite", "completed")
            assert suite["check_suite"]["conclusion"] == "success"

            scripted = httpx.post(info["anthropic_url"] + "/_admin/script",
                                  json=[{"answer": {"text": "Hello from the stand-in."}}])
            assert scripted.json() == {"rules": 1}
        with anthropic.Anthropic(base_url=info["anthropic_url"], api_key="any-key") as model:
            message = model.messages.create(
                model="claude-haiku-4-5", max_tokens=50,
                messages=[{"role": "user", "content": "Hi"}],
            )
        assert message.content[0].type == "text"
        assert message.content[0].text == "Hello from the stand-in."

        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout and process.stderr
        process.stdout.close()
        process.stderr.close()
