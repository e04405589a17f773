"""Definitions extracted with tree-sitter, one source per supported language."""

from __future__ import annotations

import pytest

from app.symbols import MAX_PARSE_BYTES, Symbol, SymbolKind, extract_symbols, language_for

C, S, IF, E, T, Y = (SymbolKind.CLASS, SymbolKind.STRUCT, SymbolKind.INTERFACE,
                     SymbolKind.ENUM, SymbolKind.TRAIT, SymbolKind.TYPE)
F, M, K = SymbolKind.FUNCTION, SymbolKind.METHOD, SymbolKind.CONSTANT

PYTHON = '''\
import os

MAX_RETRIES = 3
lower_case = 1


class Client(Base):
    """Talks to the API."""

    TIMEOUT = 10

    @property
    def base_url(self) -> str:
        def helper():
            return 1
        return "x"

    async def fetch(self, path: str) -> bytes:
        return b""

    class Config:
        strict = True


async def parse_url(text: str) -> str:
    return text


if os.environ.get("X"):
    def fallback():
        pass

type Pair[T] = tuple[T, T]
'''

JAVASCRIPT = """\
export const API_VERSION = 2;
const handler = async (event) => event;
let counter = 0;

export default class Router extends Base {
  static routes = [];
  constructor() { super(); }
  get size() { return 1; }
  addRoute(path, fn) {
    const inner = () => 1;
  }
}

function* ids() {}
export function parseUrl(text) { return text; }
describe("router", () => { function notAtTopLevel() {} });
"""

TYPESCRIPT = """\
export interface Shape {
  area(): number;
  name: string;
}
export type Id = string | number;
export enum Color { Red, Green }

export abstract class Base<T> implements Shape {
  private readonly size: number = 1;
  abstract area(): number;
  public getName(): string { return ""; }
}

export const makeShape = (n: number): Shape => ({} as Shape);
export function isShape(x: unknown): x is Shape { return true; }
"""

TSX = """\
interface Props { title: string }
export function Header({ title }: Props) {
  return <h1 className="title">{title}</h1>;
}
export const Footer = () => <footer />;
"""

GO = """\
package server

const MaxConnections = 10

const (
\tModeA = iota
\tModeB
)

type Server struct {
\taddr string
}

type Handler interface {
\tServe(req Request) error
}

type ID string

func (s *Server) Start(port int) error {
\treturn nil
}

func NewServer(addr string) *Server {
\thandler := func() {}
\treturn &Server{addr: addr}
}
"""

JAVA = """\
package demo;

public class Account {
    public static final int LIMIT = 5;
    private int balance;

    public Account() {}

    @Override
    public String toString() {
        return "Account";
    }

    interface Listener {
        int PRIORITY = 1;
        void changed(int value);
    }

    enum State { OPEN, CLOSED; boolean isOpen() { return true; } }
}
"""

RUST = """\
pub const MAX: usize = 3;

pub struct Point<T> {
    x: T,
}

pub enum Shape {
    Circle,
}

pub trait Draw {
    fn draw(&self);
}

impl<T> Point<T> {
    pub fn new(x: T) -> Self {
        Point { x }
    }
}

impl Draw for Shape {
    fn draw(&self) {}
}

pub fn area(shape: &Shape) -> f64 {
    let square = |x: f64| x * x;
    square(1.0)
}
"""


def table(symbols: list[Symbol]) -> list[tuple[str, SymbolKind, int, str | None]]:
    return [(s.name, s.kind, s.line, s.parent) for s in symbols]


@pytest.mark.parametrize(("language", "source", "expected"), [
    ("python", PYTHON, [
        ("MAX_RETRIES", K, 3, None),
        ("Client", C, 7, None),
        ("base_url", M, 13, "Client"),
        ("fetch", M, 18, "Client"),
        ("Config", C, 21, "Client"),
        ("parse_url", F, 25, None),
        ("fallback", F, 30, None),
        ("Pair", Y, 33, None),
    ]),
    ("javascript", JAVASCRIPT, [
        ("API_VERSION", K, 1, None),
        ("handler", F, 2, None),
        ("Router", C, 5, None),
        ("constructor", M, 7, "Router"),
        ("size", M, 8, "Router"),
        ("addRoute", M, 9, "Router"),
        ("ids", F, 14, None),
        ("parseUrl", F, 15, None),
    ]),
    ("typescript", TYPESCRIPT, [
        ("Shape", IF, 1, None),
        ("area", M, 2, "Shape"),
        ("Id", Y, 5, None),
        ("Color", E, 6, None),
        ("Base", C, 8, None),
        ("area", M, 10, "Base"),
        ("getName", M, 11, "Base"),
        ("makeShape", F, 14, None),
        ("isShape", F, 15, None),
    ]),
    ("tsx", TSX, [
        ("Props", IF, 1, None),
        ("Header", F, 2, None),
        ("Footer", F, 5, None),
    ]),
    ("go", GO, [
        ("MaxConnections", K, 3, None),
        ("ModeA", K, 6, None),
        ("ModeB", K, 7, None),
        ("Server", S, 10, None),
        ("Handler", IF, 14, None),
        ("Serve", M, 15, "Handler"),
        ("ID", Y, 18, None),
        ("Start", M, 20, "Server"),
        ("NewServer", F, 24, None),
    ]),
    ("java", JAVA, [
        ("Account", C, 3, None),
        ("LIMIT", K, 4, "Account"),
        ("Account", M, 7, "Account"),
        ("toString", M, 10, "Account"),
        ("Listener", IF, 14, "Account"),
        ("PRIORITY", K, 15, "Listener"),
        ("changed", M, 16, "Listener"),
        ("State", E, 19, "Account"),
        ("isOpen", M, 19, "State"),
    ]),
    ("rust", RUST, [
        ("MAX", K, 1, None),
        ("Point", S, 3, None),
        ("Shape", E, 7, None),
        ("Draw", T, 11, None),
        ("draw", M, 12, "Draw"),
        ("new", M, 16, "Point"),
        ("draw", M, 22, "Shape"),
        ("area", F, 25, None),
    ]),
])
def test_definitions_per_language(language: str, source: str,
                                  expected: list[tuple[str, SymbolKind, int, str | None]]) -> None:
    assert table(extract_symbols(source.encode(), language)) == expected


def test_signature_line_is_the_naming_line_trimmed() -> None:
    symbols = {s.name: s for s in extract_symbols(JAVA.encode(), "java")}
    assert symbols["toString"].signature_line == "public String toString() {"  # not @Override
    python = {s.name: s for s in extract_symbols(PYTHON.encode(), "python")}
    assert python["base_url"].signature_line == "def base_url(self) -> str:"
    long = "def f(" + ", ".join(f"argument_{i}" for i in range(40)) + "):\n    pass\n"
    (f,) = extract_symbols(long.encode(), "python")
    assert len(f.signature_line) == 120 and f.signature_line.endswith("…")


def test_syntax_errors_keep_what_parses() -> None:
    broken = (b"def good():\n    pass\n\nclass Broken(:\n    def\n\n"
              b"def also_good(x):\n    return x\n")
    names = [s.name for s in extract_symbols(broken, "python")]
    assert "good" in names and "also_good" in names


def test_unknown_language_and_oversized_sources_yield_nothing() -> None:
    assert extract_symbols(b"def f(): pass\n", "cobol") == []
    big = b"def f():\n    pass\n" + b"# padding\n" * (MAX_PARSE_BYTES // 10)
    assert extract_symbols(big, "python") == []


def test_language_by_extension() -> None:
    assert [language_for(p) for p in ("a.py", "b.MJS", "c.cjs", "d.jsx", "e.ts", "f.tsx",
                                      "g.go", "h.java", "i.rs", "j.rb", "Makefile")] == [
        "python", "javascript", "javascript", "javascript", "typescript", "tsx",
        "go", "java", "rust", None, None]
