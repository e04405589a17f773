"""The tools a worker agent edits its worktree with; there is no shell.

Every path a model passes goes through one gate (`Toolbox._path`): repository-relative POSIX
only, never into `.git/`, never resolving outside the worktree (symlinks followed, parents
included), and edits never write through a symbolic link or create one. Editing toolboxes are
also held to the step's file globs at once; the guardrails check the final diff again anyway.
Files that may hold keys or credentials (`app.limits.SECRET_PATHS`, by their own name or the
name a symbolic link reaches) are never read, unless the repository's config allows them
(`readable`): what a tool answers goes into a prompt.

`execute` never raises for bad model input: it answers with text the model can act on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.git import GitError, git
from app.globs import matches, matches_any
from app.guardrails import (
    outside_files_message,
    secret_message,
    secret_pattern,
    unsafe_path_reason,
)
from app.search import Chunk, SearchIndex, chunk_text, query_terms, tokenize

MAX_READ_BYTES = 512_000  # read_file refuses larger files
MAX_READ_LINES = 2_000  # lines per read_file answer
MAX_LINE_CHARS = 2_000
MAX_WRITE_BYTES = 200_000  # the largest file create_file or str_replace may leave behind
MAX_LIST_ENTRIES = 1_000
MAX_SEARCH_RESULTS = 20
MAX_SEARCH_FILE_BYTES = 1_000_000
MAX_SEARCH_TOTAL_BYTES = 50_000_000
SEARCH_CHUNK_LINES = 10
BINARY_PROBE_BYTES = 8_000  # git's own heuristic: a NUL in the first 8000 bytes

READ_ONLY_TOOLS = ("read_file", "list_files", "search_code", "finish_step")
EDIT_TOOLS = ("str_replace", "create_file", "delete_file")


class ToolError(Exception):
    """A refusal or failure; the message goes to the model as the tool result."""


@dataclass(frozen=True)
class StepFinished:
    summary: str
    rationale: str
    uncertainties: str


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False
    finished: StepFinished | None = None  # set by finish_step


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _integer(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "description": description}


_PATH = "Path relative to the repository root, with forward slashes, e.g. src/app/main.py."

SCHEMAS: dict[str, tuple[str, dict[str, dict[str, Any]], tuple[str, ...]]] = {
    "read_file": (
        "Read a text file. Lines come back numbered (number, tab, text); the numbers are not "
        f"part of the file. At most {MAX_READ_LINES} lines per call: use start_line and "
        "end_line to read a long file in parts.",
        {"path": _string(_PATH), "start_line": _integer("First line to show (from 1)."),
         "end_line": _integer("Last line to show (inclusive).")},
        ("path",),
    ),
    "list_files": (
        "List the repository's files (tracked, plus new files not ignored by .gitignore). "
        "Narrow with a directory path or a glob pattern.",
        {"path": _string("Directory (or file) to list, relative to the repository root; "
                         "default: the whole repository."),
         "pattern": _string("Glob such as src/**/*.py (`**` spans directories, `*` stays "
                            "within one); a pattern without `/` matches file names in any "
                            "directory, e.g. *.md.")},
        (),
    ),
    "search_code": (
        "Ranked keyword search over the repository's text files. Returns path:line matches "
        "with the matching lines; read_file the file to see more.",
        {"query": _string("Words to look for: identifiers, names, error messages."),
         "path_glob": _string("Only search files matching this glob, e.g. src/**/*.py or "
                              "*.ts.")},
        ("query",),
    ),
    "str_replace": (
        "Replace one exact piece of text in a file. `old` must occur exactly once in the file "
        "(copy it from read_file without the line numbers; whitespace matters); include "
        "surrounding lines to make it unique.",
        {"path": _string(_PATH), "old": _string("The exact text to replace."),
         "new": _string("The replacement text (may be empty to delete `old`).")},
        ("path", "old", "new"),
    ),
    "create_file": (
        "Create a new text file with the given content; parent directories are created. "
        "Refuses existing files: change those with str_replace.",
        {"path": _string(_PATH), "content": _string("The complete file content.")},
        ("path", "content"),
    ),
    "delete_file": (
        "Delete a file.",
        {"path": _string(_PATH)},
        ("path",),
    ),
    "finish_step": (
        "End the step. Call it once the step is complete (or, for a read-only role, once "
        "you have the answer).",
        {"summary": _string("What you did or found, briefly, for the pull request."),
         "rationale": _string("Why this way: the decisions you made and the alternatives "
                              "you rejected."),
         "uncertainties": _string("Anything a reviewer should check or you could not "
                                  "confirm; empty if none.")},
        ("summary", "rationale"),
    ),
}


class Toolbox:
    def __init__(self, root: Path, *, editable: bool, allowed: list[str] | None,
                 readable: Sequence[str] = ()) -> None:
        self._root = root
        self._real_root = root.resolve()
        self._editable = editable
        self._allowed = allowed
        self._readable = tuple(readable)  # secret-looking paths the repository's config allows
        self._names = (*READ_ONLY_TOOLS, *EDIT_TOOLS) if editable else READ_ONLY_TOOLS
        self._submodules: tuple[str, ...] | None = None  # gitlink paths, read on first edit

    def definitions(self) -> list[dict[str, Any]]:
        """The tools in the Messages API `tools` format."""
        return [
            {
                "name": name,
                "description": SCHEMAS[name][0],
                "input_schema": {
                    "type": "object",
                    "properties": SCHEMAS[name][1],
                    "required": list(SCHEMAS[name][2]),
                    "additionalProperties": False,
                },
            }
            for name in self._names
        ]

    async def execute(self, name: str, tool_input: dict[str, Any]) -> ToolResult:
        if name not in SCHEMAS:
            return ToolResult(f"There is no tool named {name!r}; the tools are "
                              f"{', '.join(self._names)}.", is_error=True)
        if name not in self._names:
            return ToolResult(f"{name} is not available: this role is read-only and cannot "
                              "change files.", is_error=True)
        problems = _validate(name, tool_input)
        if problems:
            return ToolResult(f"Invalid input for {name}: {'; '.join(problems)}.", is_error=True)
        args = dict(tool_input)
        try:
            if name in EDIT_TOOLS and self._submodules is None:
                self._submodules = await self._gitlinks()
            if name == "finish_step":
                finished = self.finish_step(**args)
                return ToolResult("Step finished.", finished=finished)
            handler: Callable[..., str | Awaitable[str]] = getattr(self, name)
            result = handler(**args)
            content = await result if not isinstance(result, str) else result
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        except OSError as exc:
            # strerror, not str(exc): the latter carries the absolute path on this host.
            return ToolResult(f"{name} failed: {exc.strerror or type(exc).__name__}.",
                              is_error=True)
        except GitError as exc:
            return ToolResult(f"{name} failed: {exc}", is_error=True)
        return ToolResult(content)

    # --- reading -------------------------------------------------------------------------

    def read_file(self, path: str, start_line: int | None = None,
                  end_line: int | None = None) -> str:
        rel, target = self._path(path)
        text = self._read_text(rel, target, MAX_READ_BYTES)
        lines = _lines(text)
        if not lines:
            return f"{rel} is empty."
        first = start_line or 1
        if first > len(lines):
            raise ToolError(f"{rel} has {len(lines)} lines; start_line {first} is past the end.")
        last = min(end_line or len(lines), len(lines))
        if last < first:
            raise ToolError(f"end_line {end_line} is before start_line {first}.")
        shown_last = min(last, first + MAX_READ_LINES - 1)
        body = "\n".join(f"{number}\t{_clip(lines[number - 1])}"
                         for number in range(first, shown_last + 1))
        if shown_last < last or first > 1 or last < len(lines):
            note = f"[{rel}: lines {first}-{shown_last} of {len(lines)}"
            if shown_last < len(lines):
                note += f"; continue with start_line={shown_last + 1}"
            return f"{body}\n{note}]"
        return body

    async def list_files(self, path: str | None = None, pattern: str | None = None) -> str:
        prefix = "" if path is None else self._existing(path)
        files = [f for f in await self._files()
                 if not prefix or f == prefix or f.startswith(prefix + "/")]
        if pattern is not None:
            files = [f for f in files if _glob(f, pattern)]
        if not files:
            return "No files match."
        shown = "\n".join(files[:MAX_LIST_ENTRIES])
        if len(files) > MAX_LIST_ENTRIES:
            shown += (f"\n[{len(files) - MAX_LIST_ENTRIES} more files not shown; narrow with "
                      "path or pattern]")
        return shown

    async def search_code(self, query: str, path_glob: str | None = None) -> str:
        terms = set(query_terms(query))
        if not terms:
            raise ToolError("The query has no searchable words; give identifiers or words "
                            "of at least two letters.")
        files = [f for f in await self._files() if path_glob is None or _glob(f, path_glob)]
        hits, searched, capped = await asyncio.to_thread(self._search, files, query, terms)
        if not hits:
            where = f" in files matching {path_glob}" if path_glob else ""
            return f"No matches for {query!r}{where} ({searched} files searched)."
        blocks = []
        for rel, best, lines in hits:
            shown = "\n".join(f"  {number}\t{_clip(text, 200)}" for number, text in lines)
            blocks.append(f"{rel}:{best}\n{shown}")
        note = (f"[{len(hits)} match{'es' if len(hits) != 1 else ''}, best first; "
                f"{searched} files searched")
        note += "; the repository is large, so not every file was searched]" if capped else "]"
        return "\n\n".join(blocks) + "\n" + note

    # --- editing -------------------------------------------------------------------------

    def str_replace(self, path: str, old: str, new: str) -> str:
        rel, target = self._writable(path)
        if not os.path.lexists(target):
            raise ToolError(f"{rel} does not exist; use create_file to make a new file.")
        text = self._read_text(rel, target, MAX_WRITE_BYTES)
        if not old:
            raise ToolError("old is empty; give the exact text to replace.")
        if old == new:
            raise ToolError("old and new are the same, so nothing would change.")
        if _uses_crlf(text):
            # read_file shows lines without their \r: match and write the file's own endings.
            old, new = _crlf(old), _crlf(new)
        count = text.count(old)
        if count == 0:
            raise ToolError(f"old was not found in {rel} (it occurs 0 times); read_file the "
                            "file and copy the text exactly, including whitespace, without "
                            "the line numbers.")
        if count > 1:
            raise ToolError(f"old occurs {count} times in {rel}; include more surrounding "
                            "lines so it occurs exactly once.")
        updated = text.replace(old, new, 1)
        self._write(rel, target, updated, create=False)
        start = text[: text.index(old)].count("\n") + 1
        lines = _lines(updated)
        last = min(start + new.count("\n"), start + 19, len(lines))
        if last < start:
            return f"Replaced 1 occurrence in {rel}; the file now has {len(lines)} lines."
        excerpt = "\n".join(f"{n}\t{_clip(lines[n - 1])}" for n in range(start, last + 1))
        return f"Replaced 1 occurrence in {rel}. Lines {start}-{last} now read:\n{excerpt}"

    def create_file(self, path: str, content: str) -> str:
        rel, target = self._writable(path)
        if os.path.lexists(target):
            raise ToolError(f"{rel} already exists; change it with str_replace, or "
                            "delete_file it first to replace it entirely.")
        self._write(rel, target, content, create=True)
        count = len(_lines(content))
        return f"Created {rel} ({count} line{'' if count == 1 else 's'})."

    def delete_file(self, path: str) -> str:
        rel, target = self._writable(path)
        if not os.path.lexists(target):
            raise ToolError(f"{rel} does not exist; list_files shows the files there are.")
        if target.is_dir():
            raise ToolError(f"{rel} is a directory; delete the files in it one by one.")
        target.unlink()
        return f"Deleted {rel}."

    def finish_step(self, summary: str, rationale: str, uncertainties: str = "") -> StepFinished:
        if not summary.strip():
            raise ToolError("summary is empty; say what you did or found.")
        return StepFinished(summary=summary, rationale=rationale, uncertainties=uncertainties)

    # --- the path gate -------------------------------------------------------------------

    def _path(self, path: str) -> tuple[str, Path]:
        """The normalised relative path and its location, or a refusal saying why."""
        if "\x00" in path:
            raise ToolError("The path contains a NUL byte; give a plain relative path.")
        if "\\" in path:
            raise ToolError(f"{path} contains a backslash; paths use forward slashes, "
                            "e.g. src/app.py.")
        if path.startswith("/"):
            raise ToolError(f"{path} is absolute; give a path relative to the repository "
                            "root, e.g. src/app.py.")
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ToolError(f"{path} contains '..'; paths must stay inside the repository.")
        if any(part.casefold() == ".git" for part in parts):
            raise ToolError(f"{path} is inside .git/; git's own files are not accessible.")
        rel = "/".join(parts)
        target = self._root.joinpath(*parts)
        try:
            real = target.resolve()
        except (OSError, RuntimeError) as exc:
            raise ToolError(f"{rel} cannot be resolved ({exc}); it may be a symbolic link "
                            "loop.") from None
        if real != self._real_root and self._real_root not in real.parents:
            raise ToolError(f"{rel} resolves outside the repository through a symbolic link; "
                            "it cannot be used.")
        if any(part.casefold() == ".git" for part in real.relative_to(self._real_root).parts):
            raise ToolError(f"{rel} resolves into .git/; git's own files are not accessible.")
        return rel, target

    def _writable(self, path: str) -> tuple[str, Path]:
        rel, target = self._path(path)
        if not rel:
            raise ToolError("Give a file path; the repository root cannot be changed.")
        reason = unsafe_path_reason(rel)
        if reason is not None:  # what the guardrails would refuse in the diff anyway
            raise ToolError(f"{rel!r} cannot be written because {reason}; use a plain path.")
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            if self._root.joinpath(*parts[:depth]).is_symlink():
                link = "/".join(parts[:depth])
                what = "is a symbolic link" if depth == len(parts) else \
                    f"goes through the symbolic link {link}"
                raise ToolError(f"{rel} {what}; files are never written through symbolic "
                                "links, so change the real path instead.")
        submodule = next((s for s in self._submodules or ()
                          if rel == s or rel.startswith(s + "/")), None)
        if submodule is not None:
            # git keeps only a commit id for a submodule: a file written there is not added.
            raise ToolError(f"{rel} is {'' if rel == submodule else 'inside '}the git "
                            f"submodule {submodule}, whose files belong to another repository; "
                            "change files of this repository instead.")
        if self._allowed is not None and not matches_any(rel, self._allowed):
            raise ToolError(f"Refused (outside-step-files): "
                            f"{outside_files_message(rel, self._allowed)}.")
        return rel, target

    # --- helpers -------------------------------------------------------------------------

    def _read_text(self, rel: str, target: Path, limit: int) -> str:
        if not os.path.lexists(target):
            raise ToolError(f"{rel or '.'} does not exist; list_files or search_code finds "
                            "the right path.")
        if target.is_dir():
            raise ToolError(f"{rel or '.'} is a directory; list_files shows what is in it.")
        if not target.is_file():
            raise ToolError(f"{rel} is not a regular file.")
        secret = self._secret(rel, target)
        if secret is not None:
            raise ToolError(f"Refused (secret-file): {secret_message(*secret)}.")
        size = target.stat().st_size
        if size > limit:
            raise ToolError(f"{rel} is {size} bytes, more than the {limit}-byte limit for "
                            "this tool; search_code finds the part you need.")
        data = target.read_bytes()
        text = _decode(data)
        if text is None:
            raise ToolError(f"{rel} is a binary file; only text files can be read or edited.")
        return text

    def _write(self, rel: str, target: Path, content: str, *, create: bool) -> None:
        data = content.encode("utf-8")
        if len(data) > MAX_WRITE_BYTES:
            raise ToolError(f"The new content of {rel} would be {len(data)} bytes, more than "
                            f"the {MAX_WRITE_BYTES}-byte limit; keep files smaller.")
        if "\x00" in content:
            raise ToolError(f"The content for {rel} contains NUL bytes; only text files can "
                            "be written.")
        if create:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise ToolError(f"A parent of {rel} is a file, not a directory.") from None
        # O_NOFOLLOW: even a symlink that appeared since the check is not written through.
        flags = os.O_WRONLY | os.O_NOFOLLOW | (os.O_CREAT | os.O_EXCL if create else os.O_TRUNC)
        descriptor = os.open(target, flags, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)

    def _secret(self, rel: str, target: Path) -> tuple[str, str] | None:
        """The path and pattern that make `rel` a secret file, by its own name or, through a
        symbolic link, by the name of the file it reaches."""
        real = target.resolve().relative_to(self._real_root).as_posix()
        for name in dict.fromkeys((rel, real)):
            pattern = secret_pattern(name, self._readable)
            if pattern is not None:
                return name, pattern
        return None

    async def _files(self) -> list[str]:
        """Tracked files still present, plus untracked files that are not ignored."""
        out = await git("ls-files", "-z", "--cached", "--others", "--exclude-standard",
                        "--deduplicate", cwd=self._root)
        return self._present(sorted({name for name in out.split("\x00") if name}))

    async def _gitlinks(self) -> tuple[str, ...]:
        out = await git("ls-files", "-z", "--stage", cwd=self._root)
        return tuple(record.partition("\t")[2] for record in out.split("\x00")
                     if record.startswith("160000 "))

    def _present(self, names: list[str]) -> list[str]:
        # The index still lists files deleted in the worktree but not yet staged.
        return [name for name in names if os.path.lexists(self._root / name)]

    def _existing(self, path: str) -> str:
        rel, target = self._path(path)
        if not os.path.lexists(target):
            raise ToolError(f"{rel} does not exist; call list_files without a path to see the "
                            "repository.")
        return rel

    def _search(self, files: list[str], query: str,
                terms: set[str]) -> tuple[list[tuple[str, int, list[tuple[int, str]]]], int, bool]:
        """Rank chunks of lines with the repository map's BM25 (`app.search`); no index is
        kept: the scan costs one pass over the files, like grep."""
        chunks: list[Chunk] = []
        texts: dict[str, list[str]] = {}
        total = searched = 0
        capped = False
        for rel in files:
            target = self._root / rel
            if target.is_symlink() or not target.is_file():
                continue  # a symlink could point anywhere; its target is listed if it is ours
            if secret_pattern(rel, self._readable) is not None:
                continue
            size = target.stat().st_size
            if size > MAX_SEARCH_FILE_BYTES:
                continue
            if total + size > MAX_SEARCH_TOTAL_BYTES:
                capped = True
                break
            total += size
            text = _decode(target.read_bytes())
            if text is None:
                continue
            searched += 1
            texts[rel] = _lines(text)
            chunks.extend(chunk_text(rel, text, lines=SEARCH_CHUNK_LINES, overlap=0))
        hits = []
        for chunk, _ in SearchIndex(chunks).rank(query, MAX_SEARCH_RESULTS):
            window = texts[chunk.path][chunk.start_line - 1:chunk.end_line]
            overlap = [(len(terms & set(tokenize(line))), chunk.start_line + offset, line)
                       for offset, line in enumerate(window)]
            ranked = sorted((item for item in overlap if item[0]), key=lambda item: -item[0])
            # a chunk can match on its path alone: then show its first line
            shown = ranked[:3] or overlap[:1]
            if shown:
                hits.append((chunk.path, shown[0][1], sorted((n, line) for _, n, line in shown)))
        return hits, searched, capped


def _validate(name: str, tool_input: Any) -> list[str]:
    if not isinstance(tool_input, dict):
        return ["the input must be a JSON object"]
    _, properties, required = SCHEMAS[name]
    problems = [f"missing required field {field!r}" for field in required
                if field not in tool_input]
    for field, value in tool_input.items():
        spec = properties.get(field)
        if spec is None:
            known = ", ".join(properties) or "none"
            problems.append(f"unknown field {field!r} (the fields are: {known})")
        elif spec["type"] == "string" and not isinstance(value, str):
            problems.append(f"field {field!r} must be a string, not {_json_type(value)}")
        elif spec["type"] == "string" and not _encodable(value):
            problems.append(f"field {field!r} is not valid Unicode text (lone surrogates)")
        elif spec["type"] == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"field {field!r} must be an integer, not {_json_type(value)}")
            elif value < spec["minimum"]:
                problems.append(f"field {field!r} must be at least {spec['minimum']}")
    return problems


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode(data: bytes) -> str | None:
    """The text of a file, or None for a binary one (a NUL early on, or not UTF-8)."""
    if b"\x00" in data[:BINARY_PROBE_BYTES]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _lines(text: str) -> list[str]:
    """A file's lines as git and editors number them: split on \\n only (str.splitlines also
    breaks at form feeds, U+2028 and more), each without the \\r of a CRLF ending."""
    lines = text.split("\n")
    if lines[-1] == "":  # the final newline ends the last line; no empty line follows it
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _uses_crlf(text: str) -> bool:
    return "\r\n" in text and text.count("\r\n") == text.count("\n")


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _glob(path: str, pattern: str) -> bool:
    if "/" not in pattern and matches(path.rsplit("/", 1)[-1], pattern):
        return True
    return matches(path, pattern)




def _clip(line: str, limit: int = MAX_LINE_CHARS) -> str:
    return line if len(line) <= limit else line[:limit] + " […]"
