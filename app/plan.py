"""The plan the orchestrator submits: schema, tool definition and validation.

Everything here is pure. `validate_plan` turns the model's tool input into a `Plan` or into
error messages that name the step and the rule, so that the model can fix its plan and a
human can read why it was refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.globs import is_glob, matches, matches_any, segments
from app.limits import Limits

STEP_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
TITLE_MAX = 72
CONFIG_HINT = "allow it in .github/conductor.yml under protected_paths.allow"


class Role(StrEnum):
    NAVIGATOR = "navigator"
    IMPLEMENTER = "implementer"
    TEST_ENGINEER = "test_engineer"
    REFACTORER = "refactorer"
    INFRA = "infra"
    REVIEWER = "reviewer"


# Roles that read and report; every other role edits files and must say which.
READ_ONLY_ROLES = frozenset({Role.NAVIGATOR, Role.REVIEWER})


def _as_list(value: Any) -> Any:
    # A lone string where a list belongs, or null for "none": harmless to repair.
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


def _clean_strings(value: Any, *, strip_dot: bool = False) -> Any:
    if not isinstance(value, list):
        return value
    cleaned: list[Any] = []
    for item in value:
        if isinstance(item, str):
            item = item.strip()
            while strip_dot and item.startswith("./"):
                item = item[2:]
        if item not in cleaned:
            cleaned.append(item)
    return cleaned


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(pattern=STEP_ID_PATTERN,
                    description="Short slug naming the step, unique in the plan, e.g. "
                                "`add-route`: lowercase letters, digits and hyphens, "
                                "at most 40 characters.")
    role: Role = Field(description="The worker role that carries out the step.")
    title: str = Field(min_length=1, max_length=TITLE_MAX,
                       description="One line, at most 72 characters, imperative mood; it "
                                   "becomes the commit subject.")
    description: str = Field(min_length=1,
                             description="What to do, specific enough for a worker who has "
                                         "not read the issue.")
    files: list[str] = Field(description="Repository-relative paths or globs (`src/**/*.py`) "
                                         "the step may create or change. Only navigator and "
                                         "reviewer steps may leave it empty.")
    depends_on: list[str] = Field(description="Ids of steps that must finish first; empty "
                                              "when the step can start at once.")
    acceptance: list[str] = Field(description="Criteria a reviewer can check from the diff.")
    rationale: str = Field(min_length=1,
                           description="Why this step exists; shown in the pull request.")

    @field_validator("role", mode="before")
    @classmethod
    def _role_spelling(cls, value: Any) -> Any:
        # "Test Engineer", "test-engineer" and "test_engineer" all name the same role.
        if isinstance(value, str):
            return re.sub(r"[\s-]+", "_", value.strip().lower())
        return value

    @field_validator("title")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("must be one line")
        return value

    @field_validator("files", mode="before")
    @classmethod
    def _files(cls, value: Any) -> Any:
        return _clean_strings(_as_list(value), strip_dot=True)

    @field_validator("depends_on", "acceptance", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _clean_strings(_as_list(value))


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    summary: str = Field(min_length=1, description="What the change does, in a few sentences.")
    rationale: str = Field(min_length=1,
                           description="Why this plan: the approach and what was ruled out.")
    steps: list[Step] = Field(min_length=1, description="The steps, in a sensible order.")

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


# --- the tool definition -------------------------------------------------------------------

# Keywords strict tool use does not accept; their meaning moves into the description and the
# code checks them after the call anyway.
_DROPPED = frozenset({"title", "default", "pattern", "minLength", "maxLength", "maxItems",
                      "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                      "multipleOf", "uniqueItems", "examples"})


def plan_tool() -> dict[str, Any]:
    schema = Plan.model_json_schema()
    return {
        "name": "submit_plan",
        "description": "Submit the plan for this issue. Every step lists the files it may "
                       "touch; steps with disjoint files run in parallel. The plan is checked "
                       "in code and refused with the exact problems if it breaks a rule.",
        "input_schema": strict_schema(schema),
        "strict": True,
    }


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `$ref`s inlined, objects closed and every property required."""
    definitions: dict[str, Any] = schema.get("$defs", {})
    return _strict_node(schema, definitions, ())


def _strict_node(node: dict[str, Any], definitions: dict[str, Any],
                 seen: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            raise ValueError(f"recursive schema through {name}; strict tools cannot express it")
        target = _strict_node(definitions[name], definitions, (*seen, name))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **_strict_node(siblings, definitions, seen)} if siblings else target
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _strict_node(sub, definitions, seen)
                        for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = _strict_node(value, definitions, seen)
        elif key in ("anyOf", "allOf"):
            out[key] = [_strict_node(sub, definitions, seen) for sub in value]
        elif key == "minItems":
            if value in (0, 1):  # the only values strict tool use accepts
                out[key] = value
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["additionalProperties"] = False
        out["required"] = list(out.get("properties", {}))
    return out


# --- validation ----------------------------------------------------------------------------

def validate_plan(plan_input: dict[str, Any] | Plan,
                  limits: Limits) -> tuple[Plan | None, list[str]]:
    """The plan and no errors, or None and every problem found, each naming step and rule."""
    if isinstance(plan_input, Plan):
        errors = _check(plan_input.steps, {s.id for s in plan_input.steps}, limits)
        return (None, errors) if errors else (plan_input, [])
    if not isinstance(plan_input, dict):
        return None, [f"the plan must be an object, not {type(plan_input).__name__}"]
    data = _unwrap(plan_input)
    raw_steps = data.get("steps")
    labels = _labels(raw_steps)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        errors = [_describe(error, labels) for error in exc.errors()]
        # Check the steps that did parse too, so the model can fix everything in one go.
        raw_list = raw_steps if isinstance(raw_steps, list) else []
        known = {raw["id"].strip() for raw in raw_list
                 if isinstance(raw, dict) and isinstance(raw.get("id"), str)}
        checks = _check(_parseable_steps(raw_list), known, limits, count=len(raw_list))
        return None, errors + [e for e in checks if e not in errors]
    errors = _check(plan.steps, {s.id for s in plan.steps}, limits)
    return (None, errors) if errors else (plan, [])


def _unwrap(data: dict[str, Any]) -> dict[str, Any]:
    # {"plan": {...}} instead of {...}, and a steps array sent as a JSON string.
    if set(data) == {"plan"} and isinstance(data["plan"], dict):
        data = data["plan"]
    steps = data.get("steps")
    if isinstance(steps, str):
        try:
            decoded = json.loads(steps)
        except ValueError:
            return data
        if isinstance(decoded, list):
            data = {**data, "steps": decoded}
    return data


def _labels(raw_steps: Any) -> dict[int, str]:
    labels: dict[int, str] = {}
    if isinstance(raw_steps, list):
        for index, raw in enumerate(raw_steps):
            step_id = raw.get("id") if isinstance(raw, dict) else None
            labels[index] = (f'step "{step_id.strip()}"'
                             if isinstance(step_id, str) and step_id.strip()
                             else f"step #{index + 1}")
    return labels


def _parseable_steps(raw_steps: list[Any]) -> list[Step]:
    steps: list[Step] = []
    for raw in raw_steps:
        try:
            steps.append(Step.model_validate(raw))
        except ValidationError:
            continue
    return steps


def _describe(error: Any, labels: dict[int, str]) -> str:
    loc: tuple[Any, ...] = tuple(error["loc"])
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        where, field_loc = labels.get(loc[1], f"step #{loc[1] + 1}"), loc[2:]
    else:
        where, field_loc = "plan", loc
    field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in field_loc)
    field = field.replace(".[", "[")
    name = str(field_loc[-1]) if field_loc else ""
    if kind == "missing":
        return f'{where}: missing field "{name}"'
    if kind == "extra_forbidden":
        return f'{where}: unknown field "{name}"'
    if name == "steps" and kind == "too_short":
        return "plan: there are no steps; a plan needs at least one"
    if name == "role" and kind == "enum":
        return (f'{where}: unknown role "{value}"; use one of '
                + ", ".join(role.value for role in Role))
    if name == "id" and kind == "string_pattern_mismatch":
        return (f'{where}: id "{value}" is not a short slug (lowercase letters, digits and '
                'hyphens, starting with a letter or digit, at most 40 characters)')
    if name == "title" and kind == "string_too_long":
        return (f"{where}: title is {len(value)} characters, more than {TITLE_MAX} "
                "(it becomes the commit subject)")
    if kind == "string_too_short":
        return f"{where}: {field} must not be empty"
    if kind == "value_error":
        return f"{where}: {field} {ctx.get('error', error['msg'])}"
    return f"{where}: {field}: {error['msg']}"


def _check(steps: list[Step], known_ids: set[str], limits: Limits,
           count: int | None = None) -> list[str]:
    errors: list[str] = []
    count = len(steps) if count is None else count
    if count > limits.max_steps:
        errors.append(f"the plan has {count} steps, more than the limit of {limits.max_steps}")
    first_seen: dict[str, int] = {}
    for number, step in enumerate(steps, 1):
        if step.id in first_seen:
            errors.append(f'duplicate step id "{step.id}" (steps {first_seen[step.id]} '
                          f"and {number})")
        else:
            first_seen[step.id] = number
    for step in steps:
        errors += _check_step(step, known_ids, limits)
    errors += [f"dependency cycle: {' -> '.join(cycle)}" for cycle in _cycles(steps)]
    distinct = {path for step in steps for path in step.files}
    if len(distinct) > limits.max_files_per_run:
        errors.append(f"the plan lists {len(distinct)} distinct files, more than the limit "
                      f"of {limits.max_files_per_run} per run")
    return errors


def _check_step(step: Step, known_ids: set[str], limits: Limits) -> list[str]:
    where = f'step "{step.id}"'
    errors: list[str] = []
    for dep in step.depends_on:
        if dep == step.id:
            errors.append(f"{where}: depends on itself")
        elif dep not in known_ids:
            errors.append(f'{where}: depends on unknown step "{dep}"')
    if not step.files and step.role not in READ_ONLY_ROLES:
        errors.append(f"{where}: role {step.role.value} edits files, so files must list at "
                      "least one path or glob")
    if len(step.files) > limits.max_files_per_step:
        errors.append(f"{where}: {len(step.files)} files exceeds the limit of "
                      f"{limits.max_files_per_step} per step")
    for path in step.files:
        problem = path_problem(path)
        if problem is None and (rule := protected_rule(path, limits)) is not None:
            problem = f'"{path}" is protected (rule "{rule}"); {CONFIG_HINT}'
        if problem is not None:
            errors.append(f"{where}: {problem}")
    return errors


def path_problem(path: str) -> str | None:
    """Why `path` cannot name a file in the repository, or None when it can."""
    shown = json.dumps(path)
    if not path:
        return "empty path in files"
    if "\x00" in path:
        return f"path {shown} contains a NUL character"
    if "\\" in path:
        return f"path {shown} uses backslashes; use forward slashes"
    if path.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", path):
        return f"path {shown} is absolute; use a path relative to the repository root"
    parts = path.split("/")
    if ".." in parts:
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
            if depth < 0:
                return f"path {shown} escapes the repository"
        return f'path {shown} contains ".."; write it without ".." segments'
    return None


def protected_rule(path: str, limits: Limits) -> str | None:
    """The protected-path rule `path` falls under and the config does not allow, if any.

    A glob is judged by the shortest path it names (`**` as nothing, `*` as one letter):
    `.github/workflows/*.yml` is refused here, while `src/**` is not, even though a file
    under it might be protected; the diff guardrails check every real path again.
    """
    probe = _representative(path) if is_glob(path) else path
    for rule in limits.protected:
        if matches(probe, rule) and not (rule in limits.allowed_protected
                                         or matches_any(probe, limits.allowed_protected)):
            return rule
    return None


def _representative(pattern: str) -> str:
    parts = [re.sub(r"\[[^\]]*\]", "x", part).replace("*", "x").replace("?", "x")
             for part in segments(pattern) if part != "**"]
    return "/".join(parts)


def _cycles(steps: list[Step]) -> list[list[str]]:
    """One cycle per group of mutually dependent steps, as a path that returns to its start."""
    graph = {step.id: [d for d in step.depends_on if d != step.id] for step in steps}
    order = {step_id: index for index, step_id in enumerate(graph)}
    cycles: list[list[str]] = []
    covered: set[str] = set()
    for start in graph:
        if start in covered:
            continue
        path = _path_back(graph, start)
        if path is not None:
            covered.update(path)
            # Start the cycle at the step the plan lists first: stable and easy to find.
            pivot = min(range(len(path)), key=lambda i: order[path[i]])
            rotated = path[pivot:] + path[:pivot]
            cycles.append([*rotated, rotated[0]])
    return cycles


def _path_back(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """The shortest dependency path from `start` back to itself, without the repeat."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for dep in graph.get(node, []):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                if dep in graph and dep not in previous:
                    previous[dep] = node
                    following.append(dep)
        frontier = following
    return None


# --- questions about a valid plan ----------------------------------------------------------

def needs_approval(plan: Plan, limits: Limits, tracked: Iterable[str] = ()) -> str | None:
    """Why the plan must wait for `/agent approve`, or None when it may start at once.

    `tracked` is the repository's files at the base commit: a glob counts as the files it
    matches there (at least one), so `**` cannot stand for the whole repository as one file.
    """
    reasons: list[str] = []
    if len(plan.steps) > limits.approval_steps:
        reasons.append(f"the plan has {len(plan.steps)} steps (approval is needed above "
                       f"{limits.approval_steps})")
    files = reachable_files(plan.steps, tracked)
    if len(files) > limits.approval_files:
        globbed = " (counting the files its globs match)" if any(
            is_glob(p) for s in plan.steps for p in s.files) else ""
        reasons.append(f"the plan touches {len(files)} distinct files{globbed} (approval is "
                       f"needed above {limits.approval_files})")
    return "; ".join(reasons) or None


def reachable_files(steps: Iterable[Step], tracked: Iterable[str]) -> set[str]:
    """The files the steps may touch: literal paths as they are, each glob as the tracked
    files it matches, or the glob itself when it matches none yet (new files)."""
    paths = list(tracked)
    out: set[str] = set()
    for pattern in distinct_files(steps):
        if not is_glob(pattern):
            out.add(pattern)
            continue
        matched = [path for path in paths if matches(path, pattern)]
        out.update(matched or [pattern])
    return out


def distinct_files(steps: Iterable[Step]) -> set[str]:
    return {path for step in steps for path in step.files}


def topological_order(plan: Plan) -> list[str]:
    """Step ids with every step after its dependencies; ties keep plan order."""
    pending = {step.id: set(step.depends_on) for step in plan.steps}
    order: list[str] = []
    done: set[str] = set()
    while pending:
        step_id = next((s for s, deps in pending.items() if deps <= done), None)
        if step_id is None:
            raise ValueError("no order satisfies the dependencies of steps "
                             + ", ".join(pending))
        order.append(step_id)
        done.add(step_id)
        del pending[step_id]
    return order
