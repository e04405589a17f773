import pytest

from app.limits import DEFAULT_PROTECTED, Limits
from app.plan import Role
from app.repoconfig import ConfigResult, RepoConfig, parse_repo_config


def test_missing_or_empty_file_means_defaults() -> None:
    for text in (None, "", "  \n", "# nothing configured yet\n"):
        result = parse_repo_config(text)
        assert (result.config, result.errors, result.fatal) == (RepoConfig(), [], False)
        assert result.limits() == Limits()


def test_full_config_is_read() -> None:
    result = parse_repo_config("""
models:
  orchestrator: claude-opus-4-1
  implementer: claude-sonnet-4-5
limits:
  max_files_per_step: 6
  approval_steps: 4
  max_cost_usd_per_run: 7.5
protected_paths:
  allow: [".github/workflows/**"]
  extra: ["migrations/**", "**/.env"]
instructions: |
  Use the fixtures in tests/conftest.py.
plan_templates: [bug-fix, rest-endpoint]
""")
    assert (result.errors, result.fatal) == ([], False)
    limits = result.limits()
    assert limits.max_files_per_step == 6
    assert limits.approval_steps == 4
    assert limits.max_cost_usd_per_run == 7.5
    assert limits.max_steps == Limits().max_steps
    # extra rules add to the defaults; one the defaults already have is not repeated
    assert limits.protected == (*DEFAULT_PROTECTED, "migrations/**")
    assert limits.allowed_protected == (".github/workflows/**",)
    assert result.config.instructions == "Use the fixtures in tests/conftest.py.\n"
    assert result.config.plan_templates == ["bug-fix", "rest-endpoint"]
    assert result.model_for("orchestrator") == "claude-opus-4-1"
    assert result.model_for(Role.IMPLEMENTER) == "claude-sonnet-4-5"
    assert result.model_for("reviewer") == "claude-sonnet-5-5"


def test_default_models() -> None:
    result = ConfigResult()
    assert result.model_for("orchestrator") == "claude-opus-5-5"
    assert result.model_for("navigator") == "claude-haiku-5-5"
    for role in ("implementer", "test_engineer", "refactorer", "infra", "reviewer"):
        assert result.model_for(role) == "claude-sonnet-5-5"
    with pytest.raises(KeyError, match="no model setting for role 'wizard'"):
        result.model_for("wizard")


def test_a_dated_snapshot_of_a_known_model_is_accepted() -> None:
    result = parse_repo_config("models:\n  reviewer: claude-sonnet-4-5-20250929\n")
    assert result.errors == []
    assert result.model_for("reviewer") == "claude-sonnet-4-5-20250929"


def test_limit_out_of_bounds_is_fatal_and_names_the_key() -> None:
    result = parse_repo_config("limits:\n  max_files_per_step: 60\n  max_ci_fix_attempts: -1\n")
    assert result.errors == ["limits.max_files_per_step: must be at most 50",
                             "limits.max_ci_fix_attempts: must be at least 0"]
    assert result.fatal
    assert result.limits() == Limits()


def test_limit_of_the_wrong_type_is_fatal() -> None:
    result = parse_repo_config('limits:\n  max_steps: "ten"\n  max_cost_usd_per_run: 0\n')
    assert result.errors == ["limits.max_steps: must be a whole number, not text",
                             "limits.max_cost_usd_per_run: must be more than 0"]
    assert result.fatal


def test_unknown_limit_is_fatal() -> None:
    result = parse_repo_config("limits:\n  max_file_per_step: 3\n")
    assert result.errors == [
        "limits.max_file_per_step: unknown key (the run stops rather than go without a "
        "guardrail the team meant to set)"]
    assert result.fatal


def test_limits_that_is_not_a_mapping_is_fatal() -> None:
    result = parse_repo_config("limits: 5\n")
    assert result.errors == ["limits: must be a mapping of settings, not a number"]
    assert result.fatal


def test_bad_protected_pattern_is_fatal() -> None:
    result = parse_repo_config('protected_paths:\n  allow: ["../secrets/**", "C:\\\\x"]\n')
    assert result.errors == [
        'protected_paths.allow[0]: pattern "../secrets/**" escapes the repository',
        'protected_paths.allow[1]: pattern "C:\\\\x" uses backslashes; use forward slashes',
    ]
    assert result.fatal


def test_protected_paths_must_be_lists() -> None:
    result = parse_repo_config("protected_paths:\n  extra: migrations/**\n")
    assert result.errors == ["protected_paths.extra: must be a list, not text"]
    assert result.fatal


def test_instructions_too_long_is_fatal() -> None:
    result = parse_repo_config("instructions: " + "x" * 4001 + "\n")
    assert result.errors == ["instructions: must be at most 4000 characters (it has 4001)"]
    assert result.fatal


def test_unknown_top_level_keys_are_warnings() -> None:
    result = parse_repo_config("trigger_label: go\ncolour: blue\nlimits:\n  max_steps: 5\n")
    assert result.errors == [
        "trigger_label: unknown key (the trigger label is a server setting, not a "
        "per-repository one)",
        "colour: unknown key (ignored)",
    ]
    assert not result.fatal
    assert result.limits().max_steps == 5


def test_a_misspelt_claude_model_is_named_with_its_key_not_at_the_first_call() -> None:
    # Shaped like a model id, but no model has that name: no call could be priced or made.
    result = parse_repo_config("models:\n  orchestrator: claude-sonet-5-5\n")
    assert result.errors == [
        "models.orchestrator: 'claude-sonet-5-5' is not a known model id; use one such as "
        "claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5",
    ]
    assert not result.fatal
    assert result.model_for("orchestrator") == "claude-opus-5-5"


def test_bad_model_falls_back_to_the_default() -> None:
    result = parse_repo_config("models:\n  implementer: gpt-4o\n  reviewer: claude-haiku-5-5\n"
                               "  tester: claude-haiku-5-5\n")
    assert result.errors == [
        "models.implementer: 'gpt-4o' is not a known model id; use one such as "
        "claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5",
        "models.tester: unknown key (ignored)",
    ]
    assert not result.fatal
    assert result.model_for("implementer") == "claude-sonnet-5-5"
    assert result.model_for("reviewer") == "claude-haiku-5-5"


def test_unknown_template_is_dropped_and_reported() -> None:
    result = parse_repo_config("plan_templates: [bug-fix, migrations]\n")
    assert result.errors == [
        "plan_templates: unknown template 'migrations'; known: analytics-event, bug-fix, "
        "feature-flag, generic, refactor, rest-endpoint"]
    assert not result.fatal
    assert result.config.plan_templates == ["bug-fix"]


def test_only_unknown_templates_means_all_templates() -> None:
    result = parse_repo_config("plan_templates: [migrations]\n")
    assert not result.fatal
    assert len(result.errors) == 1
    assert result.config.plan_templates == []


def test_yaml_syntax_error_uses_defaults_and_names_the_line() -> None:
    result = parse_repo_config("limits:\n  max_steps: 4\nmodels: [a\nother: 1\n")
    assert result.errors == [
        "line 4: YAML syntax error: expected ',' or ']', but got ':'; using the defaults"]
    assert not result.fatal
    assert result.config == RepoConfig()


def test_wrong_top_level_type_uses_defaults() -> None:
    result = parse_repo_config("- limits\n- models\n")
    assert result.errors == [
        "the file must be a mapping of settings, not a list; using the defaults"]
    assert not result.fatal


def test_blank_sections_mean_defaults() -> None:
    result = parse_repo_config("models:\nlimits:\n  max_steps:\nprotected_paths:\n"
                               "  allow:\ninstructions:\n")
    assert (result.errors, result.fatal) == ([], False)
    assert result.limits() == Limits()


def test_fatal_and_non_fatal_problems_are_all_reported() -> None:
    result = parse_repo_config("colour: blue\nlimits:\n  approval_files: 0\n")
    assert result.errors == ["limits.approval_files: must be at least 1",
                             "colour: unknown key (ignored)"]
    assert result.fatal


def test_huge_file_is_refused() -> None:
    result = parse_repo_config("instructions: x\n" + "#" * 70_000)
    assert result.errors == ["the file is 70016 characters, more than 64000; using the "
                             "defaults"]
    assert not result.fatal
