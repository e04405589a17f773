"""Definitions in a source file, found with tree-sitter: classes and their kin, functions,
methods (with the class they belong to) and top-level constants.

The walk never enters a function body, so nested helpers and local classes stay out of the
map, and large files cost little more than their top-level declarations. Tree-sitter always
returns a tree; syntax errors become ERROR nodes, which the walk enters like any other, so a
broken file still yields the definitions it can.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import PurePosixPath

from tree_sitter import Node, Parser
from tree_sitter_language_pack import get_parser

from app.logs import get_logger

log = get_logger(__name__)

MAX_PARSE_BYTES = 512_000
SIGNATURE_CHARS = 120

EXTENSIONS = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".java": "java",
    ".rs": "rust",
}


class SymbolKind(StrEnum):
    CLASS = "class"
    STRUCT = "struct"
    INTERFACE = "interface"
    ENUM = "enum"
    TRAIT = "trait"
    TYPE = "type"
    FUNCTION = "function"
    METHOD = "method"
    CONSTANT = "constant"


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: SymbolKind
    line: int  # 1-based: the line that names the definition (after decorators, annotations)
    signature_line: str  # that line, stripped and trimmed to SIGNATURE_CHARS
    parent: str | None = None  # the enclosing class, interface, trait or impl'd type


def language_for(path: str) -> str | None:
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower())


@cache
def _parser(language: str) -> Parser:
    return get_parser(language)  # type: ignore[arg-type]  # one of EXTENSIONS' values


def extract_symbols(source: bytes, language: str) -> list[Symbol]:
    """Definitions in `source`, in order of their line. Empty for unknown languages and for
    sources over MAX_PARSE_BYTES."""
    if language not in _LANGUAGES or len(source) > MAX_PARSE_BYTES:
        return []
    walker = _Walker(source, _LANGUAGES[language])
    try:
        walker.walk(_parser(language).parse(source).root_node)
    except Exception as exc:  # a grammar surprise must not lose the rest of the map
        log.warning("symbol extraction stopped early", language=language, error=repr(exc))
    ordered = sorted(walker.found, key=lambda found: found[0])
    return list(dict.fromkeys(symbol for _, symbol in ordered))  # overloads appear once


_UPPER_CASE = re.compile(r"[A-Z][A-Z0-9_]*\Z")

_Frame = tuple[Node, str | None, bool]  # node, enclosing type name, at module level
_Stack = list[_Frame]


@dataclass(frozen=True)
class _Grammar:
    types: dict[str, SymbolKind]  # nodes that define a type and hold members
    functions: frozenset[str]  # named functions and methods; their bodies are not walked
    skip: frozenset[str]  # anonymous functions, strings, comments: nothing to find inside
    special: dict[str, Callable[[_Walker, _Frame, _Stack], None]]


class _Walker:
    def __init__(self, source: bytes, grammar: _Grammar) -> None:
        self.source = source
        self.lines = source.split(b"\n")
        self.grammar = grammar
        self.found: list[tuple[int, Symbol]] = []  # (byte offset, symbol)

    def walk(self, root: Node) -> None:
        # An explicit stack: deep trees would overflow Python's recursion limit.
        stack: _Stack = [(root, None, True)]
        grammar = self.grammar
        while stack:
            frame = stack.pop()
            node, parent, top = frame
            kind = node.type
            if kind in grammar.skip:
                continue
            if kind in grammar.special:
                grammar.special[kind](self, frame, stack)
            elif kind in grammar.types:
                name = self.add(node.child_by_field_name("name"), grammar.types[kind], parent)
                push(stack, node, name or parent, top=False)
            elif kind in grammar.functions:
                self.add_function(node, parent)
            else:
                push(stack, node, parent, top)

    def text(self, node: Node | None) -> str:
        if node is None:
            return ""
        return self.source[node.start_byte:node.end_byte].decode(errors="replace")

    def add(self, name_node: Node | None, kind: SymbolKind, parent: str | None) -> str | None:
        name = self.text(name_node).strip()
        if name_node is None or not name:
            return None
        row = name_node.start_point.row
        line = self.lines[row].decode(errors="replace").strip() if row < len(self.lines) else ""
        if len(line) > SIGNATURE_CHARS:
            line = line[:SIGNATURE_CHARS - 1] + "…"
        self.found.append((name_node.start_byte, Symbol(name, kind, row + 1, line, parent)))
        return name

    def add_function(self, node: Node, parent: str | None) -> None:
        kind = SymbolKind.METHOD if parent else SymbolKind.FUNCTION
        self.add(node.child_by_field_name("name"), kind, parent)


def push(stack: _Stack, node: Node, parent: str | None, top: bool) -> None:
    stack.extend((child, parent, top) for child in reversed(node.named_children))


def _grammar(types: dict[str, SymbolKind], functions: tuple[str, ...], skip: tuple[str, ...],
             special: dict[str, Callable[[_Walker, _Frame, _Stack], None]]) -> _Grammar:
    common_skip = ("comment", "line_comment", "block_comment", "string", "template_string",
                   "string_literal", "raw_string_literal", "interpreted_string_literal")
    return _Grammar(types, frozenset(functions), frozenset(skip + common_skip), special)


# --- Python -------------------------------------------------------------------------------

def _python_assignment(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    node, parent, top = frame
    target = node.child_by_field_name("left")
    if top and target is not None and target.type == "identifier" \
            and _UPPER_CASE.match(walker.text(target)):
        walker.add(target, SymbolKind.CONSTANT, parent)


def _python_type_alias(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    """`type Pair[T] = ...`: the name is the first identifier of the left-hand side."""
    node, parent, _top = frame
    name = node.child_by_field_name("left")
    while name is not None and name.type != "identifier" and name.named_children:
        name = name.named_children[0]
    walker.add(name, SymbolKind.TYPE, parent)


_PYTHON = _grammar(
    types={"class_definition": SymbolKind.CLASS},
    functions=("function_definition",),
    skip=("lambda", "call"),
    special={"assignment": _python_assignment, "type_alias_statement": _python_type_alias},
)


# --- JavaScript and TypeScript --------------------------------------------------------------

_JS_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function",
                                 "generator_function"})


def _js_declaration(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    """`const parse = (s) => …` is a function; `const MAX_SIZE = 3` at top level a constant."""
    node, parent, top = frame
    is_const = walker.source.startswith(b"const", node.start_byte)
    for declarator in node.named_children:
        if declarator.type != "variable_declarator":
            continue
        name = declarator.child_by_field_name("name")
        value = declarator.child_by_field_name("value")
        if name is None or name.type != "identifier":
            continue
        if value is not None and value.type in _JS_FUNCTION_VALUES:
            walker.add(name, SymbolKind.FUNCTION, parent)
        elif value is not None and value.type == "class":
            class_name = walker.add(name, SymbolKind.CLASS, parent)
            push(stack, value, class_name, top=False)
        elif top and is_const and _UPPER_CASE.match(walker.text(name)):
            walker.add(name, SymbolKind.CONSTANT, parent)


def _js_method(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    """Methods of classes and interfaces; in an object literal, functions by another name."""
    node, parent, _top = frame
    walker.add_function(node, parent)


_JS_TYPES = {"class_declaration": SymbolKind.CLASS}
_JS_FUNCTIONS = ("function_declaration", "generator_function_declaration")
_JS_SKIP = ("arrow_function", "function_expression", "function", "generator_function",
            "jsx_element", "jsx_self_closing_element", "regex")
_JS_SPECIAL: dict[str, Callable[[_Walker, _Frame, _Stack], None]] = {
    "lexical_declaration": _js_declaration,
    "variable_declaration": _js_declaration,
    "method_definition": _js_method,
}

_JAVASCRIPT = _grammar(types=_JS_TYPES, functions=_JS_FUNCTIONS, skip=_JS_SKIP,
                       special=_JS_SPECIAL)

_TYPESCRIPT = _grammar(
    types=_JS_TYPES | {
        "abstract_class_declaration": SymbolKind.CLASS,
        "interface_declaration": SymbolKind.INTERFACE,
        "enum_declaration": SymbolKind.ENUM,
        "type_alias_declaration": SymbolKind.TYPE,
    },
    functions=(*_JS_FUNCTIONS, "function_signature"),
    skip=_JS_SKIP,
    special=_JS_SPECIAL | {
        "method_signature": _js_method,
        "abstract_method_signature": _js_method,
    },
)


# --- Go -------------------------------------------------------------------------------------

def _go_type_spec(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    node, parent, _top = frame
    shape = node.child_by_field_name("type")
    kind = {"struct_type": SymbolKind.STRUCT, "interface_type": SymbolKind.INTERFACE}.get(
        shape.type if shape is not None else "", SymbolKind.TYPE)
    name = walker.add(node.child_by_field_name("name"), kind, parent)
    if shape is not None and shape.type == "interface_type":
        for element in shape.named_children:
            if element.type == "method_elem":
                walker.add(element.child_by_field_name("name"), SymbolKind.METHOD, name)


def _go_method(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    """`func (s *Server) Start()` is Server's method: the receiver's type names the parent."""
    node, _parent, _top = frame
    receiver = node.child_by_field_name("receiver")
    owner = None
    if receiver is not None:
        for parameter in receiver.named_children:
            type_node = parameter.child_by_field_name("type")
            owner = re.sub(r"\[.*\]", "", walker.text(type_node)).lstrip("*").strip() or None
            break
    walker.add(node.child_by_field_name("name"), SymbolKind.METHOD, owner)


def _go_const(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    node, parent, top = frame
    if not top:
        return
    for spec in node.named_children:
        if spec.type == "const_spec":
            for name in spec.children_by_field_name("name"):
                walker.add(name, SymbolKind.CONSTANT, parent)


_GO = _grammar(
    types={},
    functions=("function_declaration",),
    skip=("func_literal", "raw_string_literal", "var_declaration"),
    special={"type_spec": _go_type_spec, "type_alias": _go_type_spec,
             "method_declaration": _go_method, "const_declaration": _go_const},
)


# --- Java -----------------------------------------------------------------------------------

def _java_field(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    """`static final` fields are the constants of a Java class."""
    node, parent, _top = frame
    modifiers = next((c for c in node.named_children if c.type == "modifiers"), None)
    words = set(walker.text(modifiers).split())
    if {"static", "final"} <= words:
        for declarator in node.children_by_field_name("declarator"):
            walker.add(declarator.child_by_field_name("name"), SymbolKind.CONSTANT, parent)


def _java_interface_constant(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    """Fields of an interface are constants, with or without `static final`."""
    node, parent, _top = frame
    for declarator in node.children_by_field_name("declarator"):
        walker.add(declarator.child_by_field_name("name"), SymbolKind.CONSTANT, parent)


_JAVA = _grammar(
    types={
        "class_declaration": SymbolKind.CLASS,
        "record_declaration": SymbolKind.CLASS,
        "interface_declaration": SymbolKind.INTERFACE,
        "annotation_type_declaration": SymbolKind.INTERFACE,
        "enum_declaration": SymbolKind.ENUM,
    },
    functions=("method_declaration", "constructor_declaration", "compact_constructor_declaration"),
    skip=("lambda_expression", "object_creation_expression", "enum_constant",
          "formal_parameters"),
    special={"field_declaration": _java_field, "constant_declaration": _java_interface_constant},
)


# --- Rust -----------------------------------------------------------------------------------

def _rust_type_name(walker: _Walker, node: Node | None) -> str | None:
    """The bare name of an impl'd type: `Point<T>` → Point, `fmt::Display` → Display."""
    while node is not None and node.type in ("generic_type", "scoped_type_identifier",
                                             "reference_type", "pointer_type"):
        node = node.child_by_field_name("name" if node.type == "scoped_type_identifier"
                                        else "type")
    return walker.text(node).strip() or None


def _rust_impl(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    node, parent, _top = frame
    body = node.child_by_field_name("body")
    if body is not None:
        push(stack, body, _rust_type_name(walker, node.child_by_field_name("type")) or parent,
             top=False)


def _rust_constant(walker: _Walker, frame: _Frame, stack: _Stack) -> None:
    node, parent, _top = frame
    walker.add(node.child_by_field_name("name"), SymbolKind.CONSTANT, parent)


_RUST = _grammar(
    types={
        "struct_item": SymbolKind.STRUCT,
        "union_item": SymbolKind.STRUCT,
        "enum_item": SymbolKind.ENUM,
        "trait_item": SymbolKind.TRAIT,
        "type_item": SymbolKind.TYPE,
    },
    functions=("function_item", "function_signature_item"),
    skip=("closure_expression", "macro_invocation", "enum_variant_list",
          "field_declaration_list", "attribute_item"),
    special={"impl_item": _rust_impl, "const_item": _rust_constant,
             "static_item": _rust_constant},
)


_LANGUAGES: dict[str, _Grammar] = {
    "python": _PYTHON,
    "javascript": _JAVASCRIPT,
    "typescript": _TYPESCRIPT,
    "tsx": _TYPESCRIPT,
    "go": _GO,
    "java": _JAVA,
    "rust": _RUST,
}
