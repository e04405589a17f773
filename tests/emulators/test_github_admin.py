"""The admin API over HTTP, for tools that drive the emulator from another process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from githubkit import GitHub, TokenAuthStrategy

from tests.emulators.github import GitHubServer, GitHubState


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHubServer]:
    with GitHubServer(GitHubState(tmp_path / "github")) as running:
        yield running


def test_setup_and_scripted_users_over_http(server: GitHubServer, tmp_path: Path) -> None:
    source = tmp_path / "project"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("X = 1\n")
    (source / "README.md").write_text("hello\n")
    with httpx.Client(base_url=server.url + "/_admin", timeout=30) as admin:
        run_admin_flow(server, admin, source)


def run_admin_flow(server: GitHubServer, admin: httpx.Client, source: Path) -> None:

    repo = admin.post("/repos", json={"full_name": "octo/demo", "source_dir": str(source)})
    assert repo.status_code == 201 and repo.json()["default_branch"] == "main"

    app = admin.get("/app").json()
    assert app["pem"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert app["bot_login"] == f"{app['slug']}[bot]"

    inst = admin.post(
        "/installations",
        json={"account": "octo", "permissions": {"issues": "write", "contents": "read"}},
    )
    assert inst.status_code == 201
    token = admin.post(f"/installations/{inst.json()['id']}/tokens").json()
    assert token["token"].startswith("ghs_")
    assert token["permissions"]["metadata"] == "read"

    user = admin.post("/users", json={"login": "sam", "repos": {"octo/demo": "write"}})
    assert user.json()["token"].startswith("ghp_")

    issue = admin.post(
        "/users/sam/actions",
        json={"action": "open_issue", "args": ["octo/demo", "Hi"], "kwargs": {"labels": ["bug"]}},
    )
    assert issue.status_code == 200 and issue.json()["labels"][0]["name"] == "bug"
    pushed = admin.post(
        "/users/sam/actions",
        json={"action": "push", "args": ["octo/demo", "topic", {"pkg/mod.py": "X = 2\n"}]},
    )
    assert pushed.status_code == 200 and len(pushed.json()["sha"]) == 40
    refused = admin.post(
        "/users/nobody-here/actions", json={"action": "open_issue", "args": ["octo/demo", "x"]}
    )
    assert refused.status_code == 404

    client = GitHub(TokenAuthStrategy(token["token"]), base_url=server.url)
    content = client.rest.repos.get_content("octo", "demo", "pkg/mod.py", ref="topic")
    assert content.parsed_data.size == 6

    events = admin.get("/events").json()
    assert [e["event"] for e in events][-3:] == ["issues", "issues", "push"]
    requests = admin.get("/requests").json()
    assert any(r["path"] == "/repos/octo/demo/contents/pkg/mod.py" for r in requests)
    assert admin.delete("/requests").status_code == 204

    run = admin.post(
        "/repos/octo/demo/workflow-runs", json={"head_sha": pushed.json()["sha"], "jobs": ["build"]}
    ).json()
    job_id = run["jobs"][0]["id"]
    assert admin.put(f"/jobs/{job_id}/log", content="building\n").status_code == 204
    done = admin.post(f"/jobs/{job_id}/complete", json={"conclusion": "success"}).json()
    assert done["conclusion"] == "success"

    before = admin.post("/clock", json={"advance": 0}).json()["now"]
    after = admin.post("/clock", json={"advance": 7200}).json()["now"]
    assert after - before >= 7200
    assert (
        httpx.get(
            server.url + "/repos/octo/demo", headers={"Authorization": f"token {token['token']}"}
        ).status_code
        == 401
    )
