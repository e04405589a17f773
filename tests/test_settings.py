"""Settings: read once, typed, secrets hidden, one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.settings import SettingsError, load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    import os

    for name in list(os.environ):
        if name.startswith(("GITHUB_", "ANTHROPIC_", "CONDUCTOR_", "REDIS_")) or name == "PORT":
            monkeypatch.delenv(name)
    return tmp_path


def test_defaults_without_configuration(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.has_app_credentials is False
    assert str(settings.github_api_url) == "https://api.github.com/"
    assert settings.port == 3000
    assert settings.redis_url is None
    assert settings.conductor_trigger_label == "agent:implement"
    assert settings.conductor_data_dir == Path(".conductor")


def test_reads_environment_and_dotenv(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, private_key_pem: str
) -> None:
    escaped = private_key_pem.replace("\n", "\\n")
    (clean_env / ".env").write_text(f'GITHUB_PRIVATE_KEY="{escaped}"\nGITHUB_APP_ID=12\n')
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "hush-hush-1")
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9000/api/v3")
    settings = load_settings()
    assert settings.has_app_credentials
    assert settings.github_app_id == 12
    assert settings.github_private_key is not None
    assert settings.github_private_key.get_secret_value() == private_key_pem
    assert "hush-hush-1" not in repr(settings) and private_key_pem not in repr(settings)
    assert "hush-hush-1" in settings.secret_values()


def test_key_file_is_read(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                          private_key_pem: str) -> None:
    (clean_env / "app.pem").write_text(private_key_pem)
    monkeypatch.setenv("GITHUB_PRIVATE_KEY_PATH", "app.pem")
    key = load_settings().github_private_key
    assert key is not None and key.get_secret_value() == private_key_pem


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT: Input should be a valid integer"),
        ({"PORT": "70000"}, "PORT: Input should be less than or equal to 65535"),
        ({"GITHUB_APP_ID": "abc"}, "GITHUB_APP_ID: Input should be a valid integer"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL: must start with redis://"),
        ({"GITHUB_API_URL": "not a url"}, "GITHUB_API_URL: Input should be a valid URL"),
        ({"GITHUB_PRIVATE_KEY": "not-a-key"},
         "GITHUB_PRIVATE_KEY: not a usable private key: this is not a PEM private key"),
        # Shaped like a key, but not one: found at start, not when the first job signs.
        ({"GITHUB_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\\ngarbage\\n"
                                "-----END RSA PRIVATE KEY-----"},
         "GITHUB_PRIVATE_KEY: not a usable private key: this key could not be read"),
        # An empty HMAC key would let anyone sign a delivery.
        ({"GITHUB_WEBHOOK_SECRET": "   "}, "GITHUB_WEBHOOK_SECRET: is blank"),
        ({"GITHUB_PRIVATE_KEY_PATH": "missing.pem"},
         "GITHUB_PRIVATE_KEY_PATH: cannot read missing.pem"),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, Any], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    text = str(raised.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert "; set it to " in text


def test_a_blank_line_in_the_env_file_means_unset(
    clean_env: Path, private_key_pem: str
) -> None:
    key_file = clean_env / "app.pem"
    key_file.write_text(private_key_pem)
    (clean_env / ".env").write_text(
        f"GITHUB_APP_ID=\nGITHUB_PRIVATE_KEY=\nGITHUB_PRIVATE_KEY_PATH={key_file}\n"
        "GITHUB_WEBHOOK_SECRET=\n")
    settings = load_settings()
    assert settings.github_app_id is None and settings.github_webhook_secret is None
    key = settings.github_private_key
    assert key is not None and key.get_secret_value() == private_key_pem
    assert not settings.has_app_credentials  # so `conductor serve` offers the setup page
