"""Update a `.env` file in place without losing what is already there.

The file is parsed with python-dotenv's own parser, the one pydantic-settings reads it back
with, so a multi-line quoted value is replaced as a whole and comments, blank lines, unrelated
variables and lines it cannot parse are kept byte for byte. Values are written double-quoted
with `\\`, `"`, newline and carriage return escaped: python-dotenv decodes exactly those, so
every value reads back unchanged. The new file replaces the old one atomically and is readable
by its owner only (0600), since it holds the App's private key.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dotenv.parser import parse_stream

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# python-dotenv expands `${NAME}` and `${NAME:-default}` in every value, quoted or not, and
# offers no escape for it; such a value could not be read back as written.
_INTERPOLATION = re.compile(r"\$\{[^}:]*(?::-[^}]*)?\}")
_LEADING_SPACE = re.compile(r"\s*")
_EXPORT = re.compile(r"export[^\S\r\n]+")
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


class EnvFileError(ValueError):
    """A key or value that cannot be stored in a `.env` file; the message names the key."""


def quote(value: str) -> str:
    """`value` as a double-quoted `.env` value that python-dotenv decodes back to `value`."""
    return '"' + value.translate(_ESCAPES) + '"'


def check_entry(key: str, value: str) -> None:
    """Raise `EnvFileError` if `key=value` cannot be written so that it reads back unchanged."""
    if not _KEY.fullmatch(key):
        raise EnvFileError(f"{key!r} is not a valid variable name")
    if "\0" in value:
        raise EnvFileError(f"{key}: a value cannot contain a NUL character")
    if _INTERPOLATION.search(value):
        raise EnvFileError(
            f"{key}: a value containing ${{...}} would be expanded when the file is read"
        )


def update_env_file(path: Path | str, values: Mapping[str, str]) -> None:
    """Set `values` in the env file at `path`, creating it if needed.

    The first assignment of each key (matched case-insensitively, as `Settings` reads them) is
    replaced where it stands, keeping an `export ` prefix; later duplicates are dropped so that
    they cannot override the new value; keys not yet present are appended. Everything else is
    kept. Raises `EnvFileError` before touching the file if a key or value cannot be stored.
    """
    for key, value in values.items():
        check_entry(key, value)
    wanted = {key.lower(): key for key in values}
    if len(wanted) != len(values):
        raise EnvFileError("the same variable is given twice with different case")

    # Write through a symlink to its target rather than replacing the link with a file.
    target = Path(os.path.realpath(path))
    try:
        # newline="" keeps CRLF line ends as they are in the lines we do not touch.
        with open(target, encoding="utf-8", newline="") as handle:
            current = handle.read()
    except FileNotFoundError:
        current = ""

    out: list[str] = []
    written: set[str] = set()
    for binding in parse_stream(io.StringIO(current)):
        raw = binding.original.string
        name = binding.key.lower() if binding.key is not None else None
        if name is None or name not in wanted:
            out.append(raw)
            continue
        lead = _LEADING_SPACE.match(raw)
        indent = lead.group(0) if lead else ""
        if name in written:
            # A duplicate: keep the blank lines before it, drop the assignment.
            out.append(indent)
            continue
        export = "export " if _EXPORT.match(raw, len(indent)) else ""
        key = wanted[name]
        out.append(f"{indent}{export}{key}={quote(values[key])}\n")
        written.add(name)

    text = "".join(out)
    missing = [key for name, key in wanted.items() if name not in written]
    if missing:
        if text and not text.endswith(("\n", "\r")):
            text += "\n"
        text += "".join(f"{key}={quote(values[key])}\n" for key in missing)
    _write_atomically(target, text)


def _write_atomically(target: Path, text: str) -> None:
    # mkstemp creates the file with mode 0600, so the secret is never readable by others,
    # not even for the moment between writing and renaming.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
