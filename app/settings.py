"""The one place the environment is read.

`load_settings()` reads the process environment and `.env` once, at the edge; everything else
receives a `Settings` object. Tests build one from a dict with `Settings.model_validate`.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# What each variable is for, quoted in the one-line error a bad value produces.
_HINTS: dict[str, str] = {
    "GITHUB_APP_ID": "the numeric App ID from the App's settings page",
    "GITHUB_PRIVATE_KEY": "the App's private key as PEM text (newlines may be written as \\n)",
    "GITHUB_PRIVATE_KEY_PATH": "a path to the App's private key .pem file",
    "GITHUB_WEBHOOK_SECRET": "the webhook secret set on the App",
    "GITHUB_API_URL": "a URL such as https://api.github.com or https://ghe.example.com/api/v3",
    "GITHUB_URL": "a URL such as https://github.com",
    "CONDUCTOR_PUBLIC_URL": "the public https URL GitHub can reach this server on",
    "ANTHROPIC_BASE_URL": "a URL such as https://api.anthropic.com",
    "REDIS_URL": "a URL such as redis://localhost:6379/0 (unset it to use embedded Redis)",
    "PORT": "a TCP port number between 1 and 65535",
    "CONDUCTOR_TRIGGER_LABEL": "a non-empty label name such as agent:implement",
    "CONDUCTOR_WORKER_CONCURRENCY": "a positive whole number",
}


_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.+-----END [A-Z ]*PRIVATE KEY-----", re.S)


def pem_problem(pem: str) -> str | None:
    """What is wrong with `pem` as a GitHub App's private key, or None."""
    if not pem:
        return "paste the contents of the .pem file GitHub downloaded."
    if not _PEM.fullmatch(pem.strip()):
        return "this is not a PEM private key (it starts with -----BEGIN RSA PRIVATE KEY-----)."
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        # Whether it parses, not whether its primes are sound (that takes ~50 ms, and GitHub
        # refusing the App's signature says so anyway).
        key = load_pem_private_key(pem.encode(), password=None,
                                   unsafe_skip_rsa_key_validation=True)
    except TypeError:
        return "this key is encrypted; use the unencrypted key GitHub generated."
    except ValueError:
        return "this key could not be read; paste the whole .pem file, unchanged."
    if not isinstance(key, RSAPrivateKey):
        return "GitHub App keys are RSA keys; this is not one."
    return None


class SettingsError(Exception):
    """A missing or malformed setting; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        # `NAME=` (an .env line left blank) means unset, as if the line were not there.
        env_ignore_empty=True,
    )

    github_app_id: int | None = Field(default=None, gt=0)
    github_app_slug: str | None = None
    github_private_key: SecretStr | None = None
    github_private_key_path: Path | None = None
    github_webhook_secret: SecretStr | None = None
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None
    github_api_url: AnyHttpUrl = AnyHttpUrl("https://api.github.com")
    github_url: AnyHttpUrl = AnyHttpUrl("https://github.com")
    github_org: str | None = None

    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: AnyHttpUrl | None = None

    redis_url: str | None = None
    conductor_data_dir: Path = Path(".conductor")
    conductor_public_url: AnyHttpUrl | None = None
    conductor_trigger_label: str = Field(default="agent:implement", min_length=1)
    conductor_worker_concurrency: int = Field(default=8, ge=1)
    conductor_run_concurrency: int = Field(default=4, ge=1)  # steps at once per run
    # Steps at once per installation, over all its runs and workers (app.slots).
    conductor_installation_concurrency: int = Field(default=8, ge=1)
    conductor_job_timeout: int = Field(default=900, ge=10)  # seconds; a killed job re-runs after
    conductor_env_file: Path = Path(".env")
    conductor_shutdown_grace: float = Field(default=10.0, ge=0)
    # How often an idle worker looks for jobs. arq's 0.5 s default costs a step about a
    # second (a step passes through the queue twice); 50 ms costs Redis ~20 cheap reads/s.
    conductor_poll_delay: float = Field(default=0.05, gt=0, le=5)
    # CI: a commit's CI is finished when nothing new arrived for `settle` seconds; nothing at
    # all within `no_ci_timeout` means the repository has no CI; CI still running after
    # `ci_timeout` stops the run. The reconcile job re-reads active runs' state every
    # `reconcile_seconds` (a divisor of 60), so a lost webhook only delays a run.
    conductor_ci_settle_seconds: float = Field(default=10.0, ge=0, le=600)
    conductor_no_ci_timeout: float = Field(default=300.0, ge=1)
    conductor_ci_timeout: float = Field(default=6 * 3600.0, ge=60)
    conductor_reconcile_seconds: int = Field(default=30, ge=1, le=60)
    # Per installation, shared by every worker (app.pacing): GitHub's secondary limits on
    # content creation. 0 lifts one (GitHub Enterprise Server has rate limits off by default).
    conductor_github_writes_per_minute: int = Field(default=80, ge=0)
    conductor_github_writes_per_hour: int = Field(default=500, ge=0)
    # GitHub's advice for many writes by one client: at least a second between them. Kept per
    # installation like the limits above; 0 turns it off.
    conductor_github_write_interval: float = Field(default=1.0, ge=0, le=10)
    # Days each model call's whole request is kept for `conductor replay` (app.request_parts);
    # 0 keeps none (the trace still has its sanitised summary).
    conductor_replay_days: int = Field(default=14, ge=0, le=90)
    # The least permission on a run's repository that shows the run on the dashboard. On a
    # public repository everyone has read; `write` limits it to those who may steer runs.
    conductor_dashboard_permission: Literal["read", "write", "admin"] = "read"

    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    log_level: str = "info"

    @field_validator("conductor_reconcile_seconds")
    @classmethod
    def _divides_minute(cls, value: int) -> int:
        if 60 % value:
            raise ValueError("must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("github_private_key", mode="before")
    @classmethod
    def _unescape_pem(cls, value: Any) -> Any:
        # A PEM pasted into a one-line environment variable usually arrives with literal \n.
        if isinstance(value, str) and "\\n" in value and "\n" not in value:
            return value.replace("\\n", "\n")
        return value

    @model_validator(mode="after")
    def _read_key_file(self) -> Settings:
        if self.github_private_key is None and self.github_private_key_path is not None:
            try:
                text = self.github_private_key_path.read_text()
            except OSError as exc:
                raise ValueError(
                    f"GITHUB_PRIVATE_KEY_PATH: cannot read {self.github_private_key_path}: "
                    f"{exc.strerror}"
                ) from None
            self.github_private_key = SecretStr(text)
            source = "GITHUB_PRIVATE_KEY_PATH"
        else:
            source = "GITHUB_PRIVATE_KEY"
        key = self.github_private_key
        if key is not None:
            problem = pem_problem(key.get_secret_value())
            if problem is not None:
                where = (f" ({self.github_private_key_path})"
                         if source == "GITHUB_PRIVATE_KEY_PATH" else "")
                raise ValueError(f"{source}: not a usable private key{where}: "
                                 f"{problem.rstrip('.')}")
        secret = self.github_webhook_secret
        if secret is not None and not secret.get_secret_value().strip():
            # An empty HMAC key is no secret: anyone could sign a delivery.
            raise ValueError("GITHUB_WEBHOOK_SECRET: is blank")
        return self

    @property
    def github_write_limits(self) -> list[tuple[int, timedelta]]:
        """Each installation's limits on GitHub writes: (at most so many, in any such window)."""
        limits = [(self.conductor_github_writes_per_minute, timedelta(minutes=1)),
                  (self.conductor_github_writes_per_hour, timedelta(hours=1))]
        if self.conductor_github_write_interval > 0:
            limits.append((1, timedelta(seconds=self.conductor_github_write_interval)))
        return limits

    @property
    def has_oauth_client(self) -> bool:
        """Whether people can sign in to the dashboard: the App's OAuth client id and secret."""
        return bool(self.github_client_id) and self.github_client_secret is not None

    @property
    def has_app_credentials(self) -> bool:
        """Whether the bot can act as a GitHub App; without this `serve` runs the setup page."""
        return (
            self.github_app_id is not None
            and self.github_private_key is not None
            and self.github_webhook_secret is not None
        )

    @property
    def bot_login(self) -> str | None:
        return f"{self.github_app_slug}[bot]" if self.github_app_slug else None

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        secrets = [
            self.github_private_key,
            self.github_webhook_secret,
            self.github_client_secret,
            self.anthropic_api_key,
        ]
        return [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and `.env`) once; a bad value raises a one-line `SettingsError`."""
    # The setup page writes credentials to CONDUCTOR_ENV_FILE; read the same file back.
    env_file = os.environ.get("CONDUCTOR_ENV_FILE", ".env")
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = error.get("loc") or ()
    message = str(error.get("msg", "invalid value"))
    if location:
        variable = str(location[0]).upper()
    elif ":" in message:
        # A model-level check names its variable in its message ("Value error, NAME: ...").
        variable, _, message = message.removeprefix("Value error, ").partition(": ")
    else:
        variable = "configuration"
    hint = _HINTS.get(variable)
    fix = f"; set it to {hint}" if hint else ""
    return f"{variable}: {message.removeprefix('Value error, ')}{fix}"
