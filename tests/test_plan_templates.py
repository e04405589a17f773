from pathlib import Path

import pytest

from app.plan import Role
from app.plan_templates import (
    PLANS_DIR,
    TemplateError,
    choose_template,
    get_template,
    load_templates,
    rank_templates,
    render_for_prompt,
    template_names,
)

SHIPPED = ["analytics-event", "bug-fix", "feature-flag", "generic", "refactor", "rest-endpoint"]


def test_every_shipped_template_loads() -> None:
    templates = load_templates()
    assert sorted(templates) == SHIPPED
    assert template_names() == SHIPPED
    for template in templates.values():
        assert template.checklist
        assert template.description


@pytest.mark.parametrize(
    ("title", "body", "expected"),
    [
        ("Fix crash when saving an empty profile",
         "Traceback (most recent call last):\n  KeyError: 'name'", "bug-fix"),
        ("Fix crash when the config file is missing", "", "bug-fix"),
        ("Deleting a user returns 500", "The API fails with an Internal Server Error.",
         "bug-fix"),
        ("Add GET /users/{id} endpoint", "Return one user from the REST API.", "rest-endpoint"),
        ("Put the new checkout behind a feature flag", "", "feature-flag"),
        ("Track signup_completed in Mixpanel", "Product wants analytics on signups.",
         "analytics-event"),
        ("Refactor the billing module", "It has grown to 2000 lines.", "refactor"),
        ("Update the README wording", "The install section is out of date.", "generic"),
    ],
)
def test_choose_template(title: str, body: str, expected: str) -> None:
    assert choose_template(title, body).name == expected


def test_title_outweighs_body() -> None:
    body = "The analytics dashboard shows this too."
    assert choose_template("Refactor the export module", body).name == "refactor"


def test_one_passing_mention_is_not_enough() -> None:
    assert rank_templates("Add dark mode", "error colours need a tweak too") != []
    assert choose_template("Add dark mode", "error colours need a tweak too").name == "generic"


def test_allowed_restricts_the_choice() -> None:
    title = "Fix crash in the orders endpoint"
    assert choose_template(title, "").name == "bug-fix"
    assert choose_template(title, "", allowed=["rest-endpoint"]).name == "rest-endpoint"
    assert choose_template(title, "", allowed=["refactor"]).name == "generic"


def test_rank_lists_only_matching_templates_best_first() -> None:
    ranked = rank_templates("Add POST /orders endpoint and fix the crash", "")
    names = [name for name, _ in ranked]
    assert set(names) == {"rest-endpoint", "bug-fix"}
    assert ranked[0][1] >= ranked[1][1]


def test_render_for_prompt_lists_the_checklist_in_order() -> None:
    template = get_template("rest-endpoint")
    text = render_for_prompt(template)
    assert text.startswith("### Add a REST endpoint (`rest-endpoint`)\n")
    first = template.checklist[0]
    assert f"1. **{first.step}** ({first.role.value}): " in text
    assert text.index("Declare the route") < text.index("Tests for success and failure")
    assert "OpenAPI" in text
    assert "Notes:" in text


def test_bug_fix_has_a_regression_test_before_the_fix() -> None:
    steps = [(item.step, item.role) for item in get_template("bug-fix").checklist]
    assert ("Regression test", Role.TEST_ENGINEER) in steps
    assert steps.index(("Regression test", Role.TEST_ENGINEER)) < steps.index(
        ("Fix at the cause", Role.IMPLEMENTER))


def test_unknown_template_name() -> None:
    with pytest.raises(KeyError, match="no plan template named 'nope'"):
        get_template("nope")


def write(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.yaml").write_text(text, encoding="utf-8")


GENERIC = (PLANS_DIR / "generic.yaml").read_text(encoding="utf-8")


def test_broken_template_names_the_file(tmp_path: Path) -> None:
    write(tmp_path, "generic", GENERIC)
    write(tmp_path, "broken", "name: broken\ntitle: Broken\ndescription: d\nkeywords: [x]\n"
                              "checklist:\n  - step: s\n    role: wizard\n    guidance: g\n")
    with pytest.raises(TemplateError, match=r"broken\.yaml: invalid plan template: "
                                            r"checklist\.0\.role: Input should be"):
        load_templates(tmp_path)


def test_yaml_error_names_the_file(tmp_path: Path) -> None:
    write(tmp_path, "generic", GENERIC)
    write(tmp_path, "bad", "name: [unclosed\n")
    with pytest.raises(TemplateError, match=r"bad\.yaml: cannot read the template"):
        load_templates(tmp_path)


def test_name_must_match_the_file(tmp_path: Path) -> None:
    write(tmp_path, "generic", GENERIC)
    write(tmp_path, "bugs", (PLANS_DIR / "bug-fix.yaml").read_text(encoding="utf-8"))
    with pytest.raises(TemplateError, match="name 'bug-fix' must match the file name 'bugs'"):
        load_templates(tmp_path)


def test_fallback_template_is_required(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"the fallback template generic\.yaml is missing"):
        load_templates(tmp_path)


def test_templates_other_than_the_fallback_need_keywords(tmp_path: Path) -> None:
    write(tmp_path, "generic", GENERIC)
    write(tmp_path, "empty", "name: empty\ntitle: E\ndescription: d\nkeywords: []\n"
                             "checklist:\n  - step: s\n    role: implementer\n    guidance: g\n")
    with pytest.raises(TemplateError, match="keywords must not be empty"):
        load_templates(tmp_path)


def test_a_template_directory_can_be_chosen_from(tmp_path: Path) -> None:
    write(tmp_path, "generic", GENERIC)
    write(tmp_path, "docs", "name: docs\ntitle: Docs\ndescription: d\nkeywords: [readme, docs]\n"
                            "checklist:\n  - step: s\n    role: implementer\n    guidance: g\n")
    assert choose_template("Update the README", "", directory=tmp_path).name == "docs"
    assert choose_template("Speed up the parser", "", directory=tmp_path).name == "generic"
