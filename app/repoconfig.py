"""The repository's own configuration for Conductor: `.github/conductor.yml`.

Every problem is reported with the key it concerns. What happens next depends on what is
at stake: a broken guardrail (`limits`, `protected_paths`, `instructions`) stops the run,
since running with guardrails the team did not intend is worse than not running; anything
else falls back to the default for that key and is reported as a warning. A file that is
not YAML, or not a mapping, is ignored as a whole and reported.

```yaml
models:
  orchestrator: claude-opus-5-5
  implementer: claude-sonnet-5-5
limits:
  max_files_per_step: 6
  approval_steps: 4
protected_paths:
  allow: [".github/workflows/**"]
  extra: ["migrations/**"]
instructions: |
  Use pytest fixtures from tests/conftest.py; never add a new dependency.
plan_templates: [bug-fix, rest-endpoint]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from app.globs import segments
from app.limits import DEFAULT_PROTECTED, Limits
from app.plan import Role, path_problem
from app.plan_templates import template_names
from app.pricing import UnknownModelPrice, price_for

CONFIG_PATH = ".github/conductor.yml"
MAX_CONFIG_CHARS = 64_000
INSTRUCTIONS_MAX = 4000
KNOWN_MODELS = (
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-opus-4-1",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
)
DEFAULT_MODELS = {
    "orchestrator": "claude-opus-5-5",
    Role.NAVIGATOR.value: "claude-haiku-5-5",
    **{role.value: "claude-sonnet-5-5" for role in Role if role is not Role.NAVIGATOR},
}
# Sections whose every problem stops the run; elsewhere the default stands in.
FATAL_SECTIONS = frozenset({"limits", "protected_paths", "instructions"})
# Keys people put here that belong somewhere else.
_MISPLACED = {
    "trigger_label": "the trigger label is a server setting, not a per-repository one",
}


def _model_id(value: str) -> str:
    # A model without a price cannot be budgeted, so no call to it is ever made: say so here,
    # naming the key, rather than when the run first calls it.
    try:
        price_for(value)
    except UnknownModelPrice:
        raise ValueError(f"{value!r} is not a known model id; use one such as "
                         f"{', '.join(KNOWN_MODELS[:3])}") from None
    return value


def _glob(value: str) -> str:
    problem = path_problem(value.strip())
    if problem is not None:
        raise ValueError(problem.replace("path ", "pattern ", 1))
    if not segments(value):
        raise ValueError(f"pattern {value!r} names no path")
    return value.strip()


def _template_names(value: list[str]) -> list[str]:
    known = template_names()
    unknown = [name for name in value if name not in known]
    if unknown:
        raise ValueError(f"unknown template {', '.join(map(repr, unknown))}; known: "
                         + ", ".join(known))
    return value


ModelId = Annotated[str, AfterValidator(_model_id)]
Glob = Annotated[str, AfterValidator(_glob)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _blank_means_default(cls, data: Any) -> Any:
        # `limits:` with every line commented out reads as null: the same as leaving it out.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class ModelsConfig(_Section):

    orchestrator: ModelId | None = None
    navigator: ModelId | None = None
    implementer: ModelId | None = None
    test_engineer: ModelId | None = None
    refactorer: ModelId | None = None
    infra: ModelId | None = None
    reviewer: ModelId | None = None


class LimitsConfig(_Section):
    """The limits a repository may tighten or loosen, each within a safe range."""

    max_steps: StrictInt | None = Field(None, ge=1, le=30)
    max_files_per_step: StrictInt | None = Field(None, ge=1, le=50)
    max_lines_per_step: StrictInt | None = Field(None, ge=1, le=5000)
    max_files_per_run: StrictInt | None = Field(None, ge=1, le=200)
    max_lines_per_run: StrictInt | None = Field(None, ge=1, le=20_000)
    approval_steps: StrictInt | None = Field(None, ge=1, le=30)
    approval_files: StrictInt | None = Field(None, ge=1, le=200)
    max_plan_attempts: StrictInt | None = Field(None, ge=1, le=5)
    max_guardrail_retries: StrictInt | None = Field(None, ge=0, le=5)
    max_review_rounds: StrictInt | None = Field(None, ge=0, le=3)
    max_ci_fix_attempts: StrictInt | None = Field(None, ge=0, le=5)
    max_tokens_per_run: StrictInt | None = Field(None, ge=10_000, le=20_000_000)
    max_cost_usd_per_run: StrictFloat | StrictInt | None = Field(None, gt=0, le=500)


class ProtectedPaths(_Section):
    allow: list[Glob] = Field(default_factory=list)
    extra: list[Glob] = Field(default_factory=list)


class RepoConfig(_Section):
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    protected_paths: ProtectedPaths = Field(default_factory=ProtectedPaths)
    instructions: str = Field("", max_length=INSTRUCTIONS_MAX)
    plan_templates: Annotated[list[str], AfterValidator(_template_names)] = Field(
        default_factory=list)


@dataclass
class ConfigResult:
    config: RepoConfig = field(default_factory=RepoConfig)
    errors: list[str] = field(default_factory=list)
    fatal: bool = False

    def limits(self) -> Limits:
        base = Limits()
        chosen = self.config.limits.model_dump(exclude_none=True)
        extra = tuple(p for p in self.config.protected_paths.extra if p not in DEFAULT_PROTECTED)
        return replace(base, **chosen, protected=DEFAULT_PROTECTED + extra,
                       allowed_protected=tuple(self.config.protected_paths.allow))

    def model_for(self, role: str) -> str:
        key = str(role)
        if key not in DEFAULT_MODELS:
            raise KeyError(f"no model setting for role {key!r}")
        chosen: str | None = getattr(self.config.models, key)
        return chosen or DEFAULT_MODELS[key]


def parse_repo_config(text: str | None) -> ConfigResult:
    """Read `.github/conductor.yml` (None when the repository has none)."""
    if text is None or not text.strip():
        return ConfigResult()
    if len(text) > MAX_CONFIG_CHARS:
        return ConfigResult(errors=[f"the file is {len(text)} characters, more than "
                                    f"{MAX_CONFIG_CHARS}; using the defaults"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return ConfigResult(errors=[_yaml_error(exc)])
    if data is None:
        return ConfigResult()
    if not isinstance(data, dict):
        return ConfigResult(errors=[f"the file must be a mapping of settings, not "
                                    f"{_kind(data)}; using the defaults"])
    return _validate(data)


def _validate(data: dict[Any, Any]) -> ConfigResult:
    errors: list[str] = []
    fatal = False
    data = dict(data)
    # Validate, drop every non-fatal offender and validate again; each round removes keys,
    # so this ends.
    while True:
        try:
            config = RepoConfig.model_validate(data)
        except ValidationError as exc:
            removed = False
            for problem in exc.errors():
                loc = tuple(problem["loc"])
                message = _message(loc, problem)
                if message not in errors:
                    errors.append(message)
                section = str(loc[0]) if loc else ""
                if section in FATAL_SECTIONS or not loc:
                    fatal = True
                    continue
                removed |= _drop(data, loc)
            if fatal or not removed:
                return ConfigResult(errors=errors, fatal=True)
            continue
        return ConfigResult(config=config, errors=errors, fatal=False)


def _drop(data: dict[Any, Any], loc: tuple[Any, ...]) -> bool:
    """Remove the value at `loc` (or its nearest droppable parent) so the default applies."""
    if loc[0] == "models" and len(loc) >= 2 and isinstance(data.get("models"), dict):
        models = dict(data["models"])
        models.pop(loc[1], None)
        data["models"] = models
        return True
    if loc[0] == "plan_templates" and isinstance(data.get("plan_templates"), list):
        known = template_names()
        kept = [name for name in data["plan_templates"] if name in known]
        if kept != data["plan_templates"] and kept:
            data["plan_templates"] = kept
            return True
    if loc[0] in data:
        del data[loc[0]]
        return True
    return False


def _message(loc: tuple[Any, ...], problem: Any) -> str:
    path = ".".join(str(p) for p in loc if not isinstance(p, int))
    index = next((p for p in loc if isinstance(p, int)), None)
    if index is not None:
        path += f"[{index}]"
    kind: str = problem["type"]
    ctx: dict[str, Any] = problem.get("ctx") or {}
    value = problem.get("input")
    if kind == "extra_forbidden":
        hint = _MISPLACED.get(str(loc[-1]))
        section = str(loc[0]) if len(loc) > 1 else ""
        if hint:
            why = hint
        elif section in FATAL_SECTIONS:
            why = "the run stops rather than go without a guardrail the team meant to set"
        else:
            why = "ignored"
        return f"{path}: unknown key ({why})"
    if kind in ("less_than_equal", "less_than"):
        return f"{path}: must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"{path}: must be at least {bound}" if "ge" in ctx else \
            f"{path}: must be more than {bound}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{path}: must be a whole number, not {_kind(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"{path}: must be a number, not {_kind(value)}"
    if kind == "string_too_long":
        return (f"{path}: must be at most {ctx.get('max_length')} characters "
                f"(it has {len(value)})")
    if kind == "string_type":
        return f"{path}: must be a string, not {_kind(value)}"
    if kind == "list_type":
        return f"{path}: must be a list, not {_kind(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{path}: must be a mapping of settings, not {_kind(value)}"
    if kind == "value_error":
        return f"{path}: {ctx.get('error', problem['msg'])}"
    return f"{path}: {problem['msg']}"


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    names = {bool: "true/false", int: "a number", float: "a number", str: "text",
             list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{where}YAML syntax error: {problem}; using the defaults"
