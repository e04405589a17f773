import json
from dataclasses import replace
from typing import Any

import pytest

from app.limits import Limits
from app.plan import (
    Plan,
    Role,
    needs_approval,
    plan_tool,
    protected_rule,
    strict_schema,
    topological_order,
    validate_plan,
)

LIMITS = Limits()


def step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "role": "implementer",
        "title": f"Do {step_id}",
        "description": f"Carry out {step_id}.",
        "files": [f"src/{step_id}.py"],
        "depends_on": [],
        "acceptance": [f"{step_id} works"],
        "rationale": f"{step_id} is needed.",
    } | fields


def plan(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"summary": "Add a thing.", "rationale": "Because.", "steps": list(steps)} | fields


def errors_of(data: Any, limits: Limits = LIMITS) -> list[str]:
    parsed, errors = validate_plan(data, limits)
    assert parsed is None, "the plan should have been refused"
    return errors


# --- accepted plans ------------------------------------------------------------------------

def test_valid_plan_is_returned_without_errors() -> None:
    data = plan(step("a"), step("b", role="test_engineer", files=["tests/test_a.py"],
                                depends_on=["a"]))
    parsed, errors = validate_plan(data, LIMITS)
    assert errors == []
    assert parsed is not None
    assert [s.id for s in parsed.steps] == ["a", "b"]
    assert parsed.steps[1].role is Role.TEST_ENGINEER


def test_harmless_shape_slips_are_repaired() -> None:
    data = {"plan": plan(step("a", role="Test Engineer", files="./tests/test_a.py",
                              depends_on=None, title="  Add the test  "))}
    parsed, errors = validate_plan(data, LIMITS)
    assert errors == []
    assert parsed is not None
    only = parsed.steps[0]
    assert (only.role, only.files, only.depends_on, only.title) == (
        Role.TEST_ENGINEER, ["tests/test_a.py"], [], "Add the test")


def test_steps_sent_as_a_json_string_are_decoded() -> None:
    parsed, errors = validate_plan(plan() | {"steps": json.dumps([step("a")])}, LIMITS)
    assert errors == []
    assert parsed is not None and parsed.steps[0].id == "a"


def test_read_only_roles_may_list_no_files() -> None:
    data = plan(step("look", role="navigator", files=[]),
                step("judge", role="reviewer", files=[], depends_on=["look"]))
    assert validate_plan(data, LIMITS)[1] == []


def test_a_plan_object_is_validated_too() -> None:
    good = Plan.model_validate(plan(step("a")))
    assert validate_plan(good, LIMITS) == (good, [])
    bad = Plan.model_validate(plan(step("a", depends_on=["z"])))
    assert errors_of(bad) == ['step "a": depends on unknown step "z"']


def test_allowed_protected_path_is_accepted() -> None:
    limits = replace(LIMITS, allowed_protected=(".github/workflows/**",))
    data = plan(step("ci", role="infra", files=[".github/workflows/ci.yml"]))
    assert validate_plan(data, limits)[1] == []


# --- refused plans: one rule each ----------------------------------------------------------

def test_unknown_dependency() -> None:
    assert errors_of(plan(step("a"), step("b", depends_on=["z"]))) == [
        'step "b": depends on unknown step "z"']


def test_self_dependency() -> None:
    assert errors_of(plan(step("a", depends_on=["a"]))) == ['step "a": depends on itself']


def test_cycle_is_named_with_its_path() -> None:
    data = plan(step("a", depends_on=["b"]), step("b", depends_on=["a"]))
    assert errors_of(data) == ["dependency cycle: a -> b -> a"]


def test_longer_cycle_starts_at_the_first_listed_step() -> None:
    data = plan(step("x"), step("a", depends_on=["c"]), step("b", depends_on=["a"]),
                step("c", depends_on=["b", "x"]))
    assert errors_of(data) == ["dependency cycle: a -> c -> b -> a"]


def test_duplicate_ids() -> None:
    assert errors_of(plan(step("a"), step("b"), step("a", files=["src/other.py"]))) == [
        'duplicate step id "a" (steps 1 and 3)']


def test_too_many_files_in_a_step() -> None:
    files = [f"src/f{i}.py" for i in range(14)]
    assert errors_of(plan(step("c", files=files))) == [
        'step "c": 14 files exceeds the limit of 10 per step']


def test_too_many_steps() -> None:
    limits = replace(LIMITS, max_steps=2)
    assert errors_of(plan(step("a"), step("b"), step("c")), limits) == [
        "the plan has 3 steps, more than the limit of 2"]


def test_too_many_distinct_files_in_the_plan() -> None:
    limits = replace(LIMITS, max_files_per_run=3)
    data = plan(step("a", files=["a1", "a2"]), step("b", files=["b1", "b2"]))
    assert errors_of(data, limits) == [
        "the plan lists 4 distinct files, more than the limit of 3 per run"]


def test_unknown_role() -> None:
    assert errors_of(plan(step("a", role="tester"))) == [
        'step "a": unknown role "tester"; use one of navigator, implementer, test_engineer, '
        "refactorer, infra, reviewer"]


def test_editing_role_needs_files() -> None:
    assert errors_of(plan(step("a", role="refactorer", files=[]))) == [
        'step "a": role refactorer edits files, so files must list at least one path or glob']


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../x", 'step "c": path "../x" escapes the repository'),
        ("src/../../x", 'step "c": path "src/../../x" escapes the repository'),
        ("src/../x.py", 'step "c": path "src/../x.py" contains ".."; write it without ".." '
                        "segments"),
        ("/etc/passwd", 'step "c": path "/etc/passwd" is absolute; use a path relative to '
                        "the repository root"),
        ("C:/x.py", 'step "c": path "C:/x.py" is absolute; use a path relative to the '
                    "repository root"),
        ("src\\x.py", 'step "c": path "src\\\\x.py" uses backslashes; use forward slashes'),
        ("src/x\x00.py", 'step "c": path "src/x\\u0000.py" contains a NUL character'),
        ("", 'step "c": empty path in files'),
    ],
)
def test_bad_paths(path: str, message: str) -> None:
    assert errors_of(plan(step("c", files=[path]))) == [message]


def test_protected_path_names_the_rule_and_the_fix() -> None:
    data = plan(step("c", role="infra", files=[".github/workflows/ci.yml"]))
    assert errors_of(data) == [
        'step "c": ".github/workflows/ci.yml" is protected (rule ".github/workflows/**"); '
        "allow it in .github/conductor.yml under protected_paths.allow"]


def test_protected_glob_is_refused_but_a_broad_one_is_not() -> None:
    assert protected_rule(".github/workflows/*.yml", LIMITS) == ".github/workflows/**"
    assert protected_rule("**/.env", LIMITS) == "**/.env"
    assert protected_rule("src/**", LIMITS) is None
    assert protected_rule("web/yarn.lock", LIMITS) == "**/yarn.lock"
    allowed = replace(LIMITS, allowed_protected=("**/yarn.lock",))
    assert protected_rule("web/yarn.lock", allowed) is None


def test_bad_step_id() -> None:
    assert errors_of(plan(step("Add Route"))) == [
        'step "Add Route": id "Add Route" is not a short slug (lowercase letters, digits and '
        "hyphens, starting with a letter or digit, at most 40 characters)"]


def test_long_title() -> None:
    assert errors_of(plan(step("a", title="x" * 80))) == [
        'step "a": title is 80 characters, more than 72 (it becomes the commit subject)']


def test_multi_line_title() -> None:
    assert errors_of(plan(step("a", title="Add it\n\nand more"))) == [
        'step "a": title must be one line']


def test_missing_and_unknown_fields() -> None:
    raw = step("a")
    del raw["files"]
    raw["depends"] = ["b"]
    assert errors_of(plan(raw)) == ['step "a": missing field "files"',
                                    'step "a": unknown field "depends"']


def test_step_without_an_id_is_named_by_position() -> None:
    raw = step("a")
    del raw["id"]
    assert errors_of(plan(step("b"), raw)) == ['step #2: missing field "id"']


def test_plan_level_problems() -> None:
    assert errors_of({"summary": "s", "rationale": "r", "steps": []}) == [
        "plan: there are no steps; a plan needs at least one"]
    assert errors_of({"rationale": "r", "steps": [step("a")]}) == [
        'plan: missing field "summary"']
    assert errors_of(plan(step("a"), summary="  ")) == ["plan: summary must not be empty"]
    assert errors_of(["not", "a", "plan"]) == ["the plan must be an object, not list"]


def test_every_problem_is_reported_at_once() -> None:
    data = plan(step("a", role="tester"), step("b", depends_on=["z"]),
                step("c", files=["../x"]))
    assert errors_of(data) == [
        'step "a": unknown role "tester"; use one of navigator, implementer, test_engineer, '
        "refactorer, infra, reviewer",
        'step "b": depends on unknown step "z"',
        'step "c": path "../x" escapes the repository',
    ]


def test_dependency_on_a_step_that_failed_to_parse_is_not_unknown() -> None:
    data = plan(step("a", role="tester"), step("b", depends_on=["a"]))
    assert errors_of(data) == [
        'step "a": unknown role "tester"; use one of navigator, implementer, test_engineer, '
        "refactorer, infra, reviewer"]


# --- approval and order --------------------------------------------------------------------

def parsed(data: dict[str, Any]) -> Plan:
    result, errors = validate_plan(data, LIMITS)
    assert errors == []
    assert result is not None
    return result


def test_small_plan_needs_no_approval() -> None:
    assert needs_approval(parsed(plan(step("a"), step("b"))), LIMITS) is None


def test_many_steps_need_approval() -> None:
    big = parsed(plan(*(step(f"s{i}") for i in range(7))))
    assert needs_approval(big, LIMITS) == (
        "the plan has 7 steps (approval is needed above 6)")


def test_many_files_need_approval() -> None:
    limits = replace(LIMITS, approval_files=3)
    wide = parsed(plan(step("a", files=["a", "b"]), step("b", files=["b", "c", "d"])))
    assert needs_approval(wide, limits) == (
        "the plan touches 4 distinct files (approval is needed above 3)")


def test_a_glob_counts_as_the_files_it_matches_for_approval() -> None:
    # `**` is one entry in the plan but the whole repository to the steps it lets loose.
    tracked = [f"src/m{i}.py" for i in range(30)] + ["README.md"]
    everything = parsed(plan(step("a", files=["**"])))
    assert needs_approval(everything, LIMITS, tracked) == (
        "the plan touches 31 distinct files (counting the files its globs match) "
        "(approval is needed above 20)")
    # A narrow glob, and one for files that do not exist yet, count as what they reach.
    narrow = parsed(plan(step("a", files=["src/m1*.py", "docs/new/**"])))
    assert needs_approval(narrow, LIMITS, tracked) is None
    assert needs_approval(narrow, replace(LIMITS, approval_files=10), tracked) == (
        "the plan touches 12 distinct files (counting the files its globs match) "
        "(approval is needed above 10)")


def test_topological_order_keeps_plan_order_where_free() -> None:
    data = plan(step("test", depends_on=["impl"]), step("docs"), step("impl"),
                step("review", role="reviewer", files=[], depends_on=["test", "docs"]))
    assert topological_order(parsed(data)) == ["docs", "impl", "test", "review"]


def test_topological_order_refuses_a_cycle() -> None:
    cyclic = Plan.model_validate(plan(step("a", depends_on=["b"]), step("b", depends_on=["a"])))
    with pytest.raises(ValueError, match="a, b"):
        topological_order(cyclic)


# --- the tool schema -----------------------------------------------------------------------

# What strict tool use rejects or cannot express.
UNSUPPORTED = {"$ref", "$defs", "definitions", "pattern", "minLength", "maxLength", "maxItems",
               "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
               "oneOf", "not", "if", "then", "else", "patternProperties", "default"}


def strictness_problems(node: Any, where: str = "input_schema") -> list[str]:
    """Every way `node` falls short of a strict tool schema."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return [f"{where}: not a schema object"]
    problems += [f"{where}: unsupported keyword {k}" for k in node if k in UNSUPPORTED]
    if node.get("minItems", 0) not in (0, 1):
        problems.append(f"{where}: minItems must be 0 or 1")
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties") is not False:
            problems.append(f"{where}: additionalProperties is not false")
        if sorted(node.get("required", [])) != sorted(node.get("properties", {})):
            problems.append(f"{where}: not every property is required")
        for name, sub in node.get("properties", {}).items():
            problems += strictness_problems(sub, f"{where}.{name}")
    if "items" in node:
        problems += strictness_problems(node["items"], f"{where}[]")
    for key in ("anyOf", "allOf"):
        for i, sub in enumerate(node.get(key, [])):
            problems += strictness_problems(sub, f"{where}.{key}[{i}]")
    return problems


def test_the_checker_catches_loose_schemas() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3},
                                              "b": {"$ref": "#/$defs/B"}},
             "required": ["a"], "$defs": {"B": {"type": "object"}}}
    assert strictness_problems(loose) == [
        "input_schema: unsupported keyword $defs",
        "input_schema: additionalProperties is not false",
        "input_schema: not every property is required",
        "input_schema.a: unsupported keyword maxLength",
        "input_schema.b: unsupported keyword $ref",
    ]


def test_plan_tool_is_strict() -> None:
    tool = plan_tool()
    assert tool["name"] == "submit_plan"
    assert tool["strict"] is True
    assert tool["description"]
    assert strictness_problems(tool["input_schema"]) == []


def test_plan_tool_schema_keeps_every_field_and_the_roles() -> None:
    schema = plan_tool()["input_schema"]
    assert schema["required"] == ["summary", "rationale", "steps"]
    step_schema = schema["properties"]["steps"]["items"]
    # `title` is a property here, not the schema keyword that gets dropped.
    assert step_schema["required"] == ["id", "role", "title", "description", "files",
                                       "depends_on", "acceptance", "rationale"]
    assert step_schema["properties"]["role"]["enum"] == [r.value for r in Role]
    assert "72" in step_schema["properties"]["title"]["description"]
    assert schema["properties"]["steps"]["minItems"] == 1


def test_strict_schema_inlines_nested_references() -> None:
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/X", "description": "d"}},
              "$defs": {"X": {"type": "object", "title": "X",
                              "properties": {"y": {"$ref": "#/$defs/Y"}}},
                        "Y": {"type": "string", "enum": ["a"]}}}
    assert strict_schema(schema) == {
        "type": "object", "additionalProperties": False, "required": ["x"],
        "properties": {"x": {"type": "object", "description": "d",
                             "additionalProperties": False, "required": ["y"],
                             "properties": {"y": {"type": "string", "enum": ["a"]}}}},
    }


def test_strict_schema_refuses_recursion() -> None:
    schema = {"$ref": "#/$defs/N",
              "$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}}}
    with pytest.raises(ValueError, match="recursive schema through N"):
        strict_schema(schema)


def test_a_plan_round_trips_through_json() -> None:
    original = parsed(plan(step("a"), step("b", depends_on=["a"])))
    assert Plan.model_validate(original.model_dump(mode="json")) == original
    assert original.step("b").depends_on == ["a"]
    with pytest.raises(KeyError):
        original.step("z")
