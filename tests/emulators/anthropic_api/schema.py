"""Is a tool's `input_schema` a valid JSON Schema (draft 2020-12) object schema?

`jsonschema` is used for the metaschema check when it is importable; otherwise a structural
check covers the keywords of the draft 2020-12 metaschema that constrain their values.
Either way the top level must be an object with `"type": "object"`, as the API requires.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from .errors import ApiError, invalid

_TYPE_NAMES = frozenset({"null", "boolean", "object", "array", "number", "string", "integer"})
_SCHEMA_KEYWORDS = frozenset(
    {
        "items",
        "additionalProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "contains",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "contentSchema",
    }
)
_SCHEMA_MAP_KEYWORDS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_SCHEMA_LIST_KEYWORDS = frozenset({"prefixItems", "allOf", "anyOf", "oneOf"})
_COUNT_KEYWORDS = frozenset(
    {
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minContains",
        "maxContains",
    }
)
_NUMBER_KEYWORDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_STRING_KEYWORDS = frozenset(
    {"title", "description", "$id", "$schema", "$ref", "$anchor", "$comment", "format"}
)
_BOOL_KEYWORDS = frozenset({"uniqueItems", "readOnly", "writeOnly", "deprecated"})

_HELP = (
    "JSON schema is invalid - please consult https://json-schema.org or our documentation "
    "at https://docs.anthropic.com/en/docs/tool-use"
)


class _SchemaProblem(Exception):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unique_strings(value: Any) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(item, str) for item in value)
        and len(set(value)) == len(value)
    )


def _check_type(where: str, value: Any) -> None:
    if isinstance(value, str):
        if value not in _TYPE_NAMES:
            raise _SchemaProblem(where, f"unknown type {value!r}")
        return
    if (
        isinstance(value, list)
        and value
        and all(isinstance(item, str) and item in _TYPE_NAMES for item in value)
        and len(set(value)) == len(value)
    ):
        return
    raise _SchemaProblem(where, "must be a type name or a non-empty list of unique type names")


def _check_node(where: str, node: Any) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise _SchemaProblem(where, "a schema must be an object or a boolean")
    for key, value in node.items():
        at = f"{where}.{key}"
        if key == "type":
            _check_type(at, value)
        elif key in _SCHEMA_KEYWORDS:
            _check_node(at, value)
        elif key in _SCHEMA_MAP_KEYWORDS:
            if not isinstance(value, dict):
                raise _SchemaProblem(at, "must be an object of schemas")
            for name, sub in value.items():
                if key == "patternProperties":
                    _check_pattern(f"{at}.{name}", name)
                _check_node(f"{at}.{name}", sub)
        elif key in _SCHEMA_LIST_KEYWORDS:
            if not isinstance(value, list) or not value:
                raise _SchemaProblem(at, "must be a non-empty array of schemas")
            for index, sub in enumerate(value):
                _check_node(f"{at}.{index}", sub)
        elif key == "required":
            if not _unique_strings(value):
                raise _SchemaProblem(at, "must be an array of unique strings")
        elif key == "dependentRequired":
            if not isinstance(value, dict) or not all(_unique_strings(v) for v in value.values()):
                raise _SchemaProblem(at, "must map names to arrays of unique strings")
        elif key == "enum":
            if not isinstance(value, list):
                raise _SchemaProblem(at, "must be an array")
        elif key in _COUNT_KEYWORDS:
            if not _is_count(value):
                raise _SchemaProblem(at, "must be a non-negative integer")
        elif key in _NUMBER_KEYWORDS:
            if not _is_number(value):
                raise _SchemaProblem(at, "must be a number")
        elif key == "multipleOf":
            if not _is_number(value) or value <= 0:
                raise _SchemaProblem(at, "must be a number greater than 0")
        elif key == "pattern":
            _check_pattern(at, value)
        elif key in _STRING_KEYWORDS:
            if not isinstance(value, str):
                raise _SchemaProblem(at, "must be a string")
        elif key in _BOOL_KEYWORDS and not isinstance(value, bool):
            raise _SchemaProblem(at, "must be a boolean")


def _check_pattern(where: str, value: Any) -> None:
    if not isinstance(value, str):
        raise _SchemaProblem(where, "must be a string")
    try:
        re.compile(value)
    except re.error as exc:
        raise _SchemaProblem(where, f"is not a valid regular expression ({exc})") from exc


def _metaschema_checker() -> Callable[[Any], None] | None:
    """`jsonschema`'s draft 2020-12 metaschema check, when the package is installed."""
    try:
        module = importlib.import_module("jsonschema")
    except ImportError:
        return None
    validator: Any = module.Draft202012Validator
    check: Callable[[Any], None] = validator.check_schema
    return check


def check_input_schema(path: str, schema: Any) -> None:
    """Raise a 400 `ApiError` unless `schema` is a valid object schema; `path` names it."""
    if not isinstance(schema, dict):
        raise invalid(f"{path}: Input should be a valid dictionary")
    if "type" not in schema:
        raise invalid(f"{path}.type: Field required")
    if schema["type"] != "object":
        raise invalid(f"{path}.type: Input should be 'object'")
    metaschema_check = _metaschema_checker()
    try:
        if metaschema_check is not None:
            metaschema_check(schema)
        else:
            _check_node("input_schema", schema)
    except ApiError:
        raise
    except Exception as exc:  # a SchemaError from jsonschema or our own problem report
        raise invalid(f"{path}: {_HELP} ({exc})") from exc
