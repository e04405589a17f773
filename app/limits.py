"""Guardrail limits and protected paths: defaults here, overridden by `.github/conductor.yml`.

Guardrails are code, not prompts: every limit below is enforced by a check that records the
rule it applied when it refuses something.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Files that hold keys and credentials. Besides being protected, they are never read into a
# prompt (a prompt leaves this host for the model's API) unless the repository's config allows
# the path. Matched case-insensitively, as a checkout on macOS or Windows would name them.
SECRET_PATHS = (
    "**/.env",
    "**/.env.*",
    "**/*.pem",
    "**/*.key",
    "**/*.p12",
    "**/*.pfx",
    "**/id_rsa*",
    "**/id_dsa*",
    "**/id_ecdsa*",
    "**/id_ed25519*",
    "**/credentials.json",
    "**/.netrc",
    # package registries', clouds' and tools' credential files
    "**/.npmrc",
    "**/.pypirc",
    "**/.git-credentials",
    "**/.aws/credentials",
    "**/.docker/config.json",
    "**/.kube/config",
    "**/kubeconfig",
    "**/*.tfvars",
    "**/*.tfstate",
    "**/*.tfstate.*",
    "**/*.jks",
    "**/*.keystore",
    "**/secrets/**",
    "**/*secret*",
)

# Paths no step may touch unless the repository's config allows them explicitly.
DEFAULT_PROTECTED = (
    ".github/workflows/**",
    ".github/conductor.yml",  # the guardrails themselves
    ".git/**",
    # where submodules come from, and how git and GitHub show files: `-diff` or
    # `linguist-generated` folds a file's changes away in the pull request's review
    ".gitmodules",
    "**/.gitattributes",
    *SECRET_PATHS,
    # lockfiles: changed by package managers, not by hand
    "**/uv.lock",
    "**/poetry.lock",
    "**/Pipfile.lock",
    "**/package-lock.json",
    "**/yarn.lock",
    "**/pnpm-lock.yaml",
    "**/Cargo.lock",
    "**/go.sum",
    "**/Gemfile.lock",
    "**/composer.lock",
)


@dataclass(frozen=True)
class Limits:
    max_steps: int = 12
    max_files_per_step: int = 10
    max_lines_per_step: int = 400
    max_files_per_run: int = 40
    max_lines_per_run: int = 1500
    # Plans larger than this wait for `/agent approve`.
    approval_steps: int = 6
    approval_files: int = 20
    max_plan_attempts: int = 3  # the first answer plus two re-asks
    max_guardrail_retries: int = 2
    max_review_rounds: int = 1
    max_ci_fix_attempts: int = 2
    max_tokens_per_run: int = 2_000_000
    max_cost_usd_per_run: float = 20.0
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    allowed_protected: tuple[str, ...] = field(default_factory=tuple)
