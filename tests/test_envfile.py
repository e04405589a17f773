"""`update_env_file`: values read back exactly, everything else kept, atomic, owner-only."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from app.envfile import EnvFileError, update_env_file
from app.settings import Settings


def clear_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Settings` also reads the process environment; keep this machine's out of the test."""
    fields = {name.lower() for name in Settings.model_fields}
    for name in list(os.environ):
        if name.lower() in fields:
            monkeypatch.delenv(name)


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_env(monkeypatch)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


TRICKY = [
    "plain",
    "",
    "with spaces  ",
    "  leading space",
    'double " quote',
    "single ' quote",
    "back\\slash and \\n literal",
    "trailing backslash \\",
    "hash # not a comment",
    "#starts-with-hash",
    "line one\nline two\n",
    "carriage\r\nreturn",
    "dollar $HOME and $ {not} and ${unclosed",
    "tab\there",
    "unicode: ünïcødé ✓",
    "=equals=",
]


@pytest.mark.parametrize("value", TRICKY)
def test_values_read_back_exactly(tmp_path: Path, value: str) -> None:
    env = tmp_path / ".env"
    update_env_file(env, {"VALUE": value, "AFTER": "still parsed"})
    assert dotenv_values(env) == {"VALUE": value, "AFTER": "still parsed"}


def test_private_key_reads_back_identical_through_settings(
    tmp_path: Path, private_key_pem: str, no_settings_env: None
) -> None:
    env = tmp_path / ".env"
    update_env_file(env, {
        "GITHUB_APP_ID": "4242",
        "GITHUB_PRIVATE_KEY": private_key_pem,
        "GITHUB_WEBHOOK_SECRET": "s3cret with \"quotes\" and \\",
    })
    settings = Settings(_env_file=env)
    assert settings.github_app_id == 4242
    assert settings.github_private_key is not None
    assert settings.github_private_key.get_secret_value() == private_key_pem
    assert settings.github_webhook_secret is not None
    assert settings.github_webhook_secret.get_secret_value() == 's3cret with "quotes" and \\'
    # One line per variable: the key's newlines are escaped, not written out.
    assert len(env.read_text().splitlines()) == 3


def test_new_file_is_owner_only_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    update_env_file(env, {"A": "1"})
    assert mode(env) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]


def test_existing_file_keeps_other_lines_and_becomes_owner_only(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    original = (
        "# Conductor settings\r\n"
        "REDIS_URL=redis://localhost:6379/0  # shared with the workers\r\n"
        "\n"
        "export GITHUB_APP_ID=1\n"
        "GITHUB_PRIVATE_KEY='-----BEGIN RSA PRIVATE KEY-----\n"
        "old\n"
        "-----END RSA PRIVATE KEY-----'\n"
        "this line is not an assignment = at all\n"
        "  # an indented comment\n"
        "github_webhook_secret=lower-case duplicate\n"
        "GITHUB_WEBHOOK_SECRET=later duplicate\n"
        "LAST=kept"
    )
    env.write_bytes(original.encode())
    env.chmod(0o644)

    update_env_file(env, {
        "GITHUB_APP_ID": "77",
        "GITHUB_PRIVATE_KEY": "-----BEGIN-----\nnew\n-----END-----",
        "GITHUB_WEBHOOK_SECRET": "fresh",
        "GITHUB_APP_SLUG": "conductor-test",
    })

    assert mode(env) == 0o600
    assert env.read_bytes().decode() == (
        "# Conductor settings\r\n"
        "REDIS_URL=redis://localhost:6379/0  # shared with the workers\r\n"
        "\n"
        'export GITHUB_APP_ID="77"\n'
        'GITHUB_PRIVATE_KEY="-----BEGIN-----\\nnew\\n-----END-----"\n'
        "this line is not an assignment = at all\n"
        "  # an indented comment\n"
        'GITHUB_WEBHOOK_SECRET="fresh"\n'
        "LAST=kept\n"
        'GITHUB_APP_SLUG="conductor-test"\n'
    )
    values = dotenv_values(env)
    assert values["REDIS_URL"] == "redis://localhost:6379/0"
    assert values["GITHUB_WEBHOOK_SECRET"] == "fresh"
    assert values["LAST"] == "kept"


def test_writes_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "config" / "conductor.env"
    real.parent.mkdir()
    real.write_text("KEEP=1\n")
    link = tmp_path / ".env"
    link.symlink_to(real)
    update_env_file(link, {"NEW": "2"})
    assert link.is_symlink()
    assert dotenv_values(real) == {"KEEP": "1", "NEW": "2"}
    assert mode(real) == 0o600


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"NOT VALID": "x"}, "not a valid variable name"),
        ({"1ST": "x"}, "not a valid variable name"),
        ({"SECRET": "a${HOME}b"}, "SECRET: a value containing ${...}"),
        ({"SECRET": "${X:-default}"}, "SECRET: a value containing ${...}"),
        ({"SECRET": "nul\0byte"}, "SECRET: a value cannot contain a NUL"),
        ({"Key": "1", "KEY": "2"}, "given twice"),
    ],
)
def test_refuses_what_cannot_be_read_back_and_leaves_the_file_alone(
    tmp_path: Path, values: dict[str, str], message: str
) -> None:
    env = tmp_path / ".env"
    env.write_text("KEEP=1\n")
    with pytest.raises(EnvFileError, match=re.escape(message)):
        update_env_file(env, values)
    assert env.read_text() == "KEEP=1\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("KEEP=1\n")

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        update_env_file(env, {"NEW": "2"})
    assert env.read_text() == "KEEP=1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        update_env_file(tmp_path / "missing" / ".env", {"A": "1"})
