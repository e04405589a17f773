"""`app.yml`: the GitHub App manifest asks for exactly what Conductor needs, and says why."""

from __future__ import annotations

import json
import re

from app.constants import WEBHOOK_PATH
from app.paths import MANIFEST_PATH
from app.setup import build_manifest, load_manifest

PERMISSIONS = {
    "contents": "write",
    "issues": "write",
    "pull_requests": "write",
    "checks": "write",
    "actions": "write",  # re-running failed jobs needs write
    "statuses": "read",
    "metadata": "read",
}
EVENTS = {
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "check_run",
    "check_suite",
    "workflow_run",
    "status",
}
# GitHub delivers an event only to an App holding the permission it belongs to.
EVENT_PERMISSION = {
    "issues": "issues",
    "issue_comment": "issues",
    "pull_request": "pull_requests",
    "pull_request_review": "pull_requests",
    "check_run": "checks",
    "check_suite": "checks",
    "workflow_run": "actions",
    "status": "statuses",
}
MANIFEST_KEYS = {
    "name", "url", "hook_attributes", "redirect_url", "callback_urls", "setup_url",
    "description", "public", "default_events", "default_permissions",
    "request_oauth_on_install", "setup_on_update",
}


def test_manifest_asks_for_exactly_the_permissions_and_events() -> None:
    manifest = load_manifest()
    assert manifest["default_permissions"] == PERMISSIONS
    assert len(manifest["default_events"]) == len(EVENTS)
    assert set(manifest["default_events"]) == EVENTS
    assert "workflows" not in manifest["default_permissions"]
    # GitHub sends installation events to every App; they are not selectable.
    assert "installation" not in manifest["default_events"]
    for event in manifest["default_events"]:
        assert EVENT_PERMISSION[event] in manifest["default_permissions"], event


def test_manifest_has_the_shape_github_documents() -> None:
    manifest = load_manifest()
    assert set(manifest) <= MANIFEST_KEYS
    assert manifest["public"] is False
    assert manifest["name"] and manifest["description"] and manifest["url"]
    assert manifest["hook_attributes"]["active"] is True
    assert manifest["hook_attributes"]["url"].endswith(WEBHOOK_PATH)
    assert manifest["redirect_url"].endswith("/setup/callback")
    assert isinstance(manifest["callback_urls"], list) and len(manifest["callback_urls"]) <= 10
    json.dumps(manifest)  # it is POSTed to GitHub as JSON


def test_every_permission_is_explained_in_a_comment() -> None:
    lines = MANIFEST_PATH.read_text().splitlines()
    start = lines.index("default_permissions:")
    for name in PERMISSIONS:
        (index,) = [i for i in range(start, len(lines)) if lines[i].startswith(f"  {name}:")]
        assert lines[index - 1].strip().startswith("#"), f"{name} has no comment above it"
    text = MANIFEST_PATH.read_text()
    assert re.search(r"#.*`workflows`.*not requested", text)
    assert re.search(r"#.*re-run the failed jobs.*\n.*\n.*re-run endpoint needs `write`", text)
    assert re.search(r"#.*`installation`", text)


def test_build_manifest_points_every_url_at_this_server() -> None:
    template = load_manifest()
    manifest = build_manifest(template, "https://conductor.test")
    assert manifest["url"] == "https://conductor.test"
    assert manifest["hook_attributes"] == {
        "url": "https://conductor.test/api/github/webhooks",
        "active": True,
    }
    assert manifest["redirect_url"] == "https://conductor.test/setup/callback"
    assert manifest["callback_urls"] == ["https://conductor.test/dashboard/callback"]
    assert "example.com" not in json.dumps(manifest)
    assert manifest["default_permissions"] == PERMISSIONS
    assert template["url"] != manifest["url"]  # the template itself is left alone


def test_a_setup_url_keeps_its_path_on_this_server() -> None:
    template = {**load_manifest(), "setup_url": "https://conductor.example.com/setup/installed"}
    manifest = build_manifest(template, "https://conductor.test")
    assert manifest["setup_url"] == "https://conductor.test/setup/installed"
