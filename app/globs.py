"""One glob dialect for repository paths, shared by plan validation, scheduling and guardrails.

Paths are repository-relative and use `/`. A pattern is split into segments:

- `**` as a whole segment matches zero or more segments (`src/**` matches `src/a/b.py`,
  `**/.env` matches `.env` and `a/b/.env`);
- within a segment `*` matches any run of characters, `?` one character and `[...]` one
  character of a class (`[!...]` negates); none of them crosses a `/`; `**` inside a longer
  segment (`**.py`) is the same as `*`;
- a trailing `/` means the directory and everything under it (`docs/` is `docs/**`);
- `./` prefixes and empty segments are ignored. Matching is case-sensitive, like git.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import lru_cache

_WILDCARDS = frozenset("*?[")


@lru_cache(maxsize=4096)
def segments(pattern: str) -> tuple[str, ...]:
    """The normalised segments of a path or pattern."""
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if pattern.endswith("/") and parts and parts[-1] != "**":
        parts.append("**")
    # Consecutive `**` segments match the same paths as one.
    collapsed: list[str] = []
    for part in parts:
        if not (part == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(part)
    return tuple(collapsed)


def is_glob(pattern: str) -> bool:
    return any(char in _WILDCARDS for char in pattern) or pattern.endswith("/")


def matches(path: str, pattern: str) -> bool:
    """Does the repository path `path` match `pattern`?"""
    return _match(segments(path), segments(pattern))


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(matches(path, pattern) for pattern in patterns)


@lru_cache(maxsize=8192)
def _match(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(path[i:], rest) for i in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and _match(path[1:], rest)


def patterns_overlap(a: str, b: str) -> bool:
    """Could some path match both `a` and `b`?

    Exact for `*`, `?`, `**` and literal text; two character classes facing each other are
    assumed to share a character, so the answer errs towards True.
    """
    return _segments_overlap(segments(a), segments(b))


@lru_cache(maxsize=8192)
def _segments_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if a and a[0] == "**":
        # `**` matches nothing here, or swallows b's first segment (whatever that matches).
        return _segments_overlap(a[1:], b) or (bool(b) and _segments_overlap(a, b[1:]))
    if b and b[0] == "**":
        return _segments_overlap(a, b[1:]) or (bool(a) and _segments_overlap(a[1:], b))
    if not a or not b:
        return not a and not b
    return _segment_overlap(a[0], b[0]) and _segments_overlap(a[1:], b[1:])


# A segment pattern as tokens: ("*", ""), ("?", ""), ("[", class text) or ("c", a literal).
_Token = tuple[str, str]


@lru_cache(maxsize=4096)
def _tokens(segment: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            if not (tokens and tokens[-1][0] == "*"):
                tokens.append(("*", ""))
            i += 1
        elif char == "?":
            tokens.append(("?", ""))
            i += 1
        elif char == "[" and (end := _class_end(segment, i)) is not None:
            tokens.append(("[", segment[i:end + 1]))
            i = end + 1
        else:
            tokens.append(("c", char))
            i += 1
    return tuple(tokens)


def _class_end(segment: str, start: int) -> int | None:
    """Index of the `]` closing the class opened at `start`, as fnmatch reads it."""
    i = start + 1
    if i < len(segment) and segment[i] == "!":
        i += 1
    if i < len(segment) and segment[i] == "]":
        i += 1
    end = segment.find("]", i)
    return end if end != -1 else None


def _segment_overlap(a: str, b: str) -> bool:
    return _tokens_overlap(_tokens(a), _tokens(b))


@lru_cache(maxsize=8192)
def _tokens_overlap(a: tuple[_Token, ...], b: tuple[_Token, ...]) -> bool:
    if a and a[0][0] == "*":
        return _tokens_overlap(a[1:], b) or (bool(b) and _tokens_overlap(a, b[1:]))
    if b and b[0][0] == "*":
        return _tokens_overlap(a, b[1:]) or (bool(a) and _tokens_overlap(a[1:], b))
    if not a or not b:
        return not a and not b
    return _char_overlap(a[0], b[0]) and _tokens_overlap(a[1:], b[1:])


def _char_overlap(a: _Token, b: _Token) -> bool:
    (kind_a, text_a), (kind_b, text_b) = a, b
    if kind_a == "?" or kind_b == "?":
        return True
    if kind_a == "c" and kind_b == "c":
        return text_a == text_b
    if kind_a == "c":
        return fnmatchcase(text_a, text_b)
    if kind_b == "c":
        return fnmatchcase(text_b, text_a)
    return True  # two classes: assume they share a character
