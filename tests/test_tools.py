"""The worker tools on a real git worktree: reading, listing, searching, editing, and the
path gate that keeps every tool inside the worktree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.git import Workspace, git
from app.tools import EDIT_TOOLS, MAX_WRITE_BYTES, StepFinished, Toolbox

FILES = {
    "README.md": "# Demo\n\nA small service.\n",
    "src/api/users.py": (
        "from src.db import fetch_user\n"
        "\n"
        "\n"
        "def get_user(user_id):\n"
        "    return fetch_user(user_id)\n"
    ),
    "src/db.py": (
        "def fetch_user(user_id):\n"
        "    return {'id': user_id}\n"
        "\n"
        "\n"
        "def connect():\n"
        "    return None\n"
    ),
    "tests/test_api.py": "def test_get_user():\n    assert True\n",
    "twice.txt": "same\nother\nsame\n",
    ".gitignore": "build/\n",
}


async def repo_worktree(tmp_path: Path, files: dict[str, str] | None = None,
                        symlinks: dict[str, str] | None = None) -> Path:
    """A repository with one commit of `files` (and `symlinks`), and a step worktree of it."""
    workspace = Workspace(root=tmp_path / "workspace", clone_url="https://example.invalid/r.git")
    workspace.clone.mkdir(parents=True)
    await git("init", "--quiet", cwd=workspace.clone)
    for name, text in (FILES if files is None else files).items():
        target = workspace.clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for name, points_to in (symlinks or {}).items():
        (workspace.clone / name).symlink_to(points_to)
    await git("add", "--all", cwd=workspace.clone)
    await git("commit", "--quiet", "-m", "initial", cwd=workspace.clone)
    return await workspace.add_worktree("run-1-step-1", "HEAD")


@pytest.fixture
async def worktree(tmp_path: Path) -> Path:
    return await repo_worktree(tmp_path, symlinks={
        "etc_link": "/etc",  # a symlinked directory outside the repository
        "up": "..",  # the worktree's parent
        "alias": "src",  # a symlinked directory inside the repository
        "readme_link": "README.md",  # a symlinked file inside the repository
        "git_link": ".git",  # the worktree's .git file
    })


def editor(root: Path, allowed: list[str] | None = None) -> Toolbox:
    return Toolbox(root, editable=True, allowed=allowed)


def reader(root: Path) -> Toolbox:
    return Toolbox(root, editable=False, allowed=None)


# --- definitions and dispatch ------------------------------------------------------------


def test_definitions_are_messages_api_tools(worktree: Path) -> None:
    definitions = editor(worktree).definitions()
    assert [d["name"] for d in definitions] == [
        "read_file", "list_files", "search_code", "finish_step",
        "str_replace", "create_file", "delete_file",
    ]
    for definition in definitions:
        assert set(definition) == {"name", "description", "input_schema"}
        schema = definition["input_schema"]
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) <= set(schema["properties"])
    read_file = next(d for d in definitions if d["name"] == "read_file")
    assert read_file["input_schema"]["required"] == ["path"]


async def test_read_only_toolbox_has_no_edit_tools(worktree: Path) -> None:
    tools = reader(worktree)
    names = {d["name"] for d in tools.definitions()}
    assert names == {"read_file", "list_files", "search_code", "finish_step"}
    for name in EDIT_TOOLS:
        result = await tools.execute(name, {"path": "README.md", "content": "x"})
        assert result.is_error
        assert result.content == (f"{name} is not available: this role is read-only and "
                                  "cannot change files.")
    result = await tools.execute("create_file", {"path": "new.txt", "content": "x"})
    assert result.is_error
    assert not (worktree / "new.txt").exists()


async def test_bad_model_input_gets_a_clear_answer(worktree: Path) -> None:
    tools = editor(worktree)
    unknown = await tools.execute("run_shell", {"command": "ls"})
    assert unknown.is_error
    assert unknown.content.startswith("There is no tool named 'run_shell'; the tools are "
                                      "read_file, list_files")
    missing = await tools.execute("str_replace", {"path": "README.md", "old": "Demo"})
    assert missing.is_error
    assert missing.content == "Invalid input for str_replace: missing required field 'new'."
    wrong = await tools.execute("read_file", {"path": 7, "start_line": "1"})
    assert wrong.content == ("Invalid input for read_file: field 'path' must be a string, not "
                             "an integer; field 'start_line' must be an integer, not a string.")
    boolean = await tools.execute("read_file", {"path": "README.md", "end_line": True})
    assert boolean.content == ("Invalid input for read_file: field 'end_line' must be an "
                               "integer, not a boolean.")
    extra = await tools.execute("delete_file", {"path": "README.md", "force": True})
    assert extra.content == ("Invalid input for delete_file: unknown field 'force' (the fields "
                             "are: path).")
    zero = await tools.execute("read_file", {"path": "README.md", "start_line": 0})
    assert zero.content == "Invalid input for read_file: field 'start_line' must be at least 1."
    surrogate = await tools.execute("create_file", {"path": "x\ud800.py", "content": "\udcff"})
    assert surrogate.content == (
        "Invalid input for create_file: field 'path' is not valid Unicode text (lone "
        "surrogates); field 'content' is not valid Unicode text (lone surrogates).")
    assert (worktree / "README.md").exists()


# --- read_file ---------------------------------------------------------------------------


async def test_read_file_numbers_lines(worktree: Path) -> None:
    result = await reader(worktree).execute("read_file", {"path": "src/db.py"})
    assert not result.is_error
    assert result.content.splitlines()[:2] == [
        "1\tdef fetch_user(user_id):", "2\t    return {'id': user_id}",
    ]
    part = await reader(worktree).execute("read_file",
                                          {"path": "src/db.py", "start_line": 5, "end_line": 6})
    assert part.content == ("5\tdef connect():\n6\t    return None\n"
                            "[src/db.py: lines 5-6 of 6]")


async def test_read_file_pages_long_files(worktree: Path) -> None:
    (worktree / "long.txt").write_text("".join(f"line {n}\n" for n in range(1, 2501)))
    result = await reader(worktree).execute("read_file", {"path": "long.txt"})
    lines = result.content.splitlines()
    assert lines[-2] == "2000\tline 2000"
    assert lines[-1] == "[long.txt: lines 1-2000 of 2500; continue with start_line=2001]"


async def test_read_file_refusals(worktree: Path) -> None:
    tools = reader(worktree)
    (worktree / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (worktree / "big.txt").write_text("x" * 600_000)
    cases = {
        "logo.png": "logo.png is a binary file; only text files can be read or edited.",
        "missing.py": "missing.py does not exist; list_files or search_code finds the right "
                      "path.",
        "src": "src is a directory; list_files shows what is in it.",
        "big.txt": "big.txt is 600000 bytes, more than the 512000-byte limit for this tool; "
                   "search_code finds the part you need.",
    }
    for path, message in cases.items():
        result = await tools.execute("read_file", {"path": path})
        assert (result.is_error, result.content) == (True, message)
    past = await tools.execute("read_file", {"path": "README.md", "start_line": 9})
    assert past.content == "README.md has 3 lines; start_line 9 is past the end."


async def test_read_file_follows_a_symlink_that_stays_inside(worktree: Path) -> None:
    tools = reader(worktree)
    assert (await tools.execute("read_file", {"path": "readme_link"})).content.startswith(
        "1\t# Demo")
    through_dir = await tools.execute("read_file", {"path": "alias/db.py"})
    assert through_dir.content.startswith("1\tdef fetch_user")


SECRETS = {
    ".env": "API_TOKEN=hunter2-from-dotenv\n",
    "deploy/Server.PEM": "-----BEGIN RSA PRIVATE KEY-----\nhunter2-from-pem\n",
    "keys/ID_RSA": "hunter2-from-ssh-key\n",
    "config/credentials.json": '{"token": "hunter2-from-json"}\n',
    "settings/secrets.py": "TOKEN = 'hunter2-from-python'\n",
    # package registries' and clouds' credential files
    ".npmrc": "//registry.npmjs.org/:_authToken=hunter2-from-npmrc\n",
    ".pypirc": "[pypi]\npassword = hunter2-from-pypirc\n",
    ".git-credentials": "https://bot:hunter2-from-git-credentials@github.com\n",
    "ops/.aws/credentials": "[default]\naws_secret_access_key = hunter2-from-aws\n",
    "infra/prod.tfvars": "db_password = \"hunter2-from-tfvars\"\n",
}


async def test_files_that_may_hold_secrets_never_reach_the_model(tmp_path: Path) -> None:
    # Whatever a tool answers goes into a prompt, and so to the model's API.
    worktree = await repo_worktree(tmp_path, {**FILES, **SECRETS},
                                   symlinks={"notes.txt": ".env"})
    tools = editor(worktree)
    calls = [(name, path, args) for path in SECRETS
             for name, args in (("read_file", {}), ("str_replace", {"old": "x", "new": "y"}))]
    for name, path, args in [*calls, ("read_file", "notes.txt", {})]:
        result = await tools.execute(name, {"path": path, **args})
        assert result.is_error, (name, path)
        assert result.content.startswith("Refused (secret-file): ")
        assert "hunter2" not in result.content
    refused = await tools.execute("read_file", {"path": "notes.txt"})
    assert refused.content == (
        "Refused (secret-file): .env may hold keys or credentials (it matches **/.env), so "
        "Conductor does not read it; work from the code that uses it, or ask for its shape "
        "in the issue (a maintainer can allow it under protected_paths.allow in "
        ".github/conductor.yml).")
    found = await tools.execute("search_code", {"query": "hunter2 token"})
    assert found.content.startswith("No matches") and "hunter2-from" not in found.content
    listed = await tools.execute("list_files", {})
    assert ".env" in listed.content.splitlines()  # a name is no secret; its content is


async def test_a_secret_looking_path_the_repository_allows_can_be_read(tmp_path: Path) -> None:
    # `settings/secrets.py` is ordinary code in this repository; its maintainers said so.
    worktree = await repo_worktree(tmp_path, {**FILES, **SECRETS})
    tools = Toolbox(worktree, editable=False, allowed=None, readable=("settings/secrets.py",))
    read = await tools.execute("read_file", {"path": "settings/secrets.py"})
    assert not read.is_error and "hunter2-from-python" in read.content
    found = await tools.execute("search_code", {"query": "hunter2 TOKEN"})
    assert "settings/secrets.py" in found.content
    assert "hunter2-from-dotenv" not in found.content  # what is not allowed stays refused
    assert (await tools.execute("read_file", {"path": ".env"})).is_error


# --- the path gate -----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "message"), [
    ("/etc/passwd", "/etc/passwd is absolute; give a path relative to the repository root, "
                    "e.g. src/app.py."),
    ("../outside.txt", "../outside.txt contains '..'; paths must stay inside the repository."),
    ("src/../../x", "src/../../x contains '..'; paths must stay inside the repository."),
    (".git/config", ".git/config is inside .git/; git's own files are not accessible."),
    ("src/.GIT/HEAD", "src/.GIT/HEAD is inside .git/; git's own files are not accessible."),
    ("src\\db.py", "src\\db.py contains a backslash; paths use forward slashes, e.g. "
                   "src/app.py."),
    ("src/db.py\x00.txt", "The path contains a NUL byte; give a plain relative path."),
    ("etc_link/passwd", "etc_link/passwd resolves outside the repository through a symbolic "
                        "link; it cannot be used."),
    ("etc_link", "etc_link resolves outside the repository through a symbolic link; it "
                 "cannot be used."),
    ("up/outside.txt", "up/outside.txt resolves outside the repository through a symbolic "
                       "link; it cannot be used."),
    ("git_link", "git_link resolves into .git/; git's own files are not accessible."),
])
async def test_unsafe_paths_are_refused_by_every_tool(worktree: Path, path: str,
                                                      message: str) -> None:
    (worktree.parent / "outside.txt").write_text("secret\n")
    tools = editor(worktree)
    calls = {
        "read_file": {"path": path},
        "list_files": {"path": path},
        "str_replace": {"path": path, "old": "secret", "new": "changed"},
        "create_file": {"path": path, "content": "x\n"},
        "delete_file": {"path": path},
    }
    for name, tool_input in calls.items():
        result = await tools.execute(name, tool_input)
        assert (name, result.is_error, result.content) == (name, True, message)
    assert (worktree.parent / "outside.txt").read_text() == "secret\n"


async def test_symlink_loop_is_refused(worktree: Path) -> None:
    (worktree / "loop").symlink_to("loop")
    result = await reader(worktree).execute("read_file", {"path": "loop"})
    assert result.is_error
    assert result.content.startswith("loop cannot be resolved (")
    assert result.content.endswith("it may be a symbolic link loop.")


async def test_edits_never_write_through_symlinks(worktree: Path) -> None:
    tools = editor(worktree)
    through_file = await tools.execute("str_replace",
                                       {"path": "readme_link", "old": "Demo", "new": "Oops"})
    assert through_file.content == ("readme_link is a symbolic link; files are never written "
                                    "through symbolic links, so change the real path instead.")
    through_dir = await tools.execute("create_file", {"path": "alias/new.py", "content": "x\n"})
    assert through_dir.content == ("alias/new.py goes through the symbolic link alias; files "
                                   "are never written through symbolic links, so change the "
                                   "real path instead.")
    deleting = await tools.execute("delete_file", {"path": "readme_link"})
    assert deleting.is_error
    assert (worktree / "README.md").read_text() == FILES["README.md"]
    assert not (worktree / "src" / "new.py").exists()
    assert (worktree / "readme_link").is_symlink()



async def test_new_paths_with_control_characters_are_refused(worktree: Path) -> None:
    tools = editor(worktree)
    result = await tools.execute("create_file", {"path": "docs/a\nb.md", "content": "x\n"})
    assert (result.is_error, result.content) == (
        True, "'docs/a\\nb.md' cannot be written because it contains a control character "
              "such as a newline or tab; use a plain path.")
    assert not (worktree / "docs").exists()

async def test_paths_are_normalised(worktree: Path) -> None:
    result = await editor(worktree).execute("create_file",
                                            {"path": "./src//api/./new.py", "content": "x = 1\n"})
    assert result.content == "Created src/api/new.py (1 line)."
    assert (worktree / "src/api/new.py").read_text() == "x = 1\n"


# --- list_files --------------------------------------------------------------------------


async def test_list_files_tracked_and_untracked_not_ignored(worktree: Path) -> None:
    (worktree / "notes.md").write_text("new\n")
    (worktree / "build").mkdir()
    (worktree / "build" / "out.txt").write_text("ignored\n")
    (worktree / "twice.txt").unlink()
    result = await reader(worktree).execute("list_files", {})
    listed = result.content.splitlines()
    assert "notes.md" in listed
    assert "src/api/users.py" in listed
    assert "build/out.txt" not in listed
    assert "twice.txt" not in listed
    assert not any(name.startswith(".git/") for name in listed)


async def test_list_files_by_path_and_pattern(worktree: Path) -> None:
    tools = reader(worktree)
    by_path = await tools.execute("list_files", {"path": "src"})
    assert by_path.content == "src/api/users.py\nsrc/db.py"
    by_glob = await tools.execute("list_files", {"pattern": "src/**/*.py"})
    assert by_glob.content == "src/api/users.py\nsrc/db.py"
    by_name = await tools.execute("list_files", {"pattern": "*.md"})
    assert by_name.content == "README.md"
    none = await tools.execute("list_files", {"pattern": "*.rs"})
    assert none.content == "No files match."
    missing = await tools.execute("list_files", {"path": "lib"})
    assert (missing.is_error, missing.content) == (
        True, "lib does not exist; call list_files without a path to see the repository.")


async def test_list_files_is_capped(tmp_path: Path) -> None:
    root = await repo_worktree(tmp_path, {f"f/{n:04}.txt": "x\n" for n in range(1005)})
    result = await reader(root).execute("list_files", {})
    lines = result.content.splitlines()
    assert len(lines) == 1001
    assert lines[-1] == "[5 more files not shown; narrow with path or pattern]"


# --- search_code -------------------------------------------------------------------------


async def test_search_code_ranks_and_points_at_lines(worktree: Path) -> None:
    result = await reader(worktree).execute("search_code", {"query": "fetch_user"})
    assert not result.is_error
    blocks = result.content.split("\n\n")
    assert blocks[:2] == [
        "src/api/users.py:1\n"
        "  1\tfrom src.db import fetch_user\n"
        "  4\tdef get_user(user_id):\n"
        "  5\t    return fetch_user(user_id)",
        "src/db.py:1\n"
        "  1\tdef fetch_user(user_id):\n"
        "  2\t    return {'id': user_id}",
    ]
    assert result.content.splitlines()[-1] == "[3 matches, best first; 6 files searched]"


async def test_search_code_splits_identifiers_and_filters(worktree: Path) -> None:
    tools = reader(worktree)
    words = await tools.execute("search_code", {"query": "connect"})
    assert words.content.startswith("src/db.py:5\n  5\tdef connect():")
    only_tests = await tools.execute("search_code", {"query": "get user",
                                                     "path_glob": "tests/**"})
    assert only_tests.content.startswith("tests/test_api.py:1\n  1\tdef test_get_user():")
    assert "src/" not in only_tests.content
    nothing = await tools.execute("search_code", {"query": "kubernetes"})
    assert nothing.content.startswith("No matches for 'kubernetes' (")
    empty = await tools.execute("search_code", {"query": "* ?"})
    assert (empty.is_error, empty.content) == (
        True, "The query has no searchable words; give identifiers or words of at least two "
              "letters.")


async def test_search_code_skips_symlinks_and_binaries(worktree: Path) -> None:
    (worktree / "blob.bin").write_bytes(b"fetch_user\x00\x01\x02")
    result = await reader(worktree).execute("search_code", {"query": "Demo service"})
    assert result.content.startswith("README.md:1")
    assert "readme_link" not in result.content
    assert "etc_link" not in result.content
    binary = await reader(worktree).execute("search_code", {"query": "fetch_user"})
    assert "blob.bin" not in binary.content


# --- str_replace -------------------------------------------------------------------------


async def test_str_replace_edits_exactly_one_occurrence(worktree: Path) -> None:
    result = await editor(worktree).execute("str_replace", {
        "path": "src/db.py", "old": "def connect():\n    return None",
        "new": "def connect():\n    return open_pool()",
    })
    assert not result.is_error
    assert result.content == ("Replaced 1 occurrence in src/db.py. Lines 5-6 now read:\n"
                              "5\tdef connect():\n6\t    return open_pool()")
    assert (worktree / "src/db.py").read_text().endswith("    return open_pool()\n")


async def test_str_replace_says_how_often_old_occurs(worktree: Path) -> None:
    tools = editor(worktree)
    twice = await tools.execute("str_replace", {"path": "twice.txt", "old": "same", "new": "x"})
    assert (twice.is_error, twice.content) == (
        True, "old occurs 2 times in twice.txt; include more surrounding lines so it occurs "
              "exactly once.")
    never = await tools.execute("str_replace", {"path": "twice.txt", "old": "absent",
                                                "new": "x"})
    assert never.content == ("old was not found in twice.txt (it occurs 0 times); read_file "
                             "the file and copy the text exactly, including whitespace, without "
                             "the line numbers.")
    missing = await tools.execute("str_replace", {"path": "nope.py", "old": "a", "new": "b"})
    assert missing.content == "nope.py does not exist; use create_file to make a new file."
    same = await tools.execute("str_replace", {"path": "twice.txt", "old": "other",
                                               "new": "other"})
    assert same.content == "old and new are the same, so nothing would change."
    assert (worktree / "twice.txt").read_text() == FILES["twice.txt"]


async def test_str_replace_keeps_line_endings_and_mode(worktree: Path) -> None:
    script = worktree / "run.sh"
    script.write_bytes(b"echo one\r\necho two\r\n")
    script.chmod(0o755)
    result = await editor(worktree).execute("str_replace",
                                            {"path": "run.sh", "old": "two", "new": "three"})
    assert not result.is_error
    assert script.read_bytes() == b"echo one\r\necho three\r\n"
    assert script.stat().st_mode & 0o111



async def test_str_replace_matches_lines_read_from_a_crlf_file(worktree: Path) -> None:
    # read_file shows lines without their \r, so the model's multi-line `old` has bare \n.
    (worktree / "win.bat").write_bytes(b"@echo off\r\necho one\r\necho two\r\n")
    tools = editor(worktree)
    shown = await tools.execute("read_file", {"path": "win.bat"})
    assert shown.content == "1\t@echo off\n2\techo one\n3\techo two"
    result = await tools.execute("str_replace", {
        "path": "win.bat", "old": "echo one\necho two", "new": "echo one\necho 2\necho 3"})
    assert (result.is_error, result.content) == (
        False, "Replaced 1 occurrence in win.bat. Lines 2-4 now read:\n"
               "2\techo one\n3\techo 2\n4\techo 3")
    assert (worktree / "win.bat").read_bytes() == (
        b"@echo off\r\necho one\r\necho 2\r\necho 3\r\n")
    # A one-line edit that adds lines to a CRLF file adds CRLF lines.
    await tools.execute("str_replace", {"path": "win.bat", "old": "@echo off",
                                        "new": "@echo off\nrem added"})
    assert (worktree / "win.bat").read_bytes().startswith(b"@echo off\r\nrem added\r\n")


async def test_line_numbers_count_newlines_only(worktree: Path) -> None:
    # Form feeds (page breaks in old sources) and U+2028 are not line breaks to git or editors.
    (worktree / "paged.py").write_text("a = 1\n\x0c\nb = '\u2028'\ncount = 3\n")
    tools = editor(worktree)
    shown = await tools.execute("read_file", {"path": "paged.py"})
    assert shown.content == "1\ta = 1\n2\t\x0c\n3\tb = '\u2028'\n4\tcount = 3"
    result = await tools.execute("str_replace", {"path": "paged.py", "old": "count = 3",
                                                 "new": "count = 4"})
    assert result.content == ("Replaced 1 occurrence in paged.py. Lines 4-4 now read:\n"
                              "4\tcount = 4")
    found = await tools.execute("search_code", {"query": "count", "path_glob": "paged.py"})
    assert found.content.startswith("paged.py:4\n  4\tcount = 4\n")

async def test_edit_tools_hold_to_the_step_files(worktree: Path) -> None:
    tools = editor(worktree, allowed=["src/api/**", "tests/test_api.py"])
    refused = await tools.execute("str_replace", {"path": "src/db.py", "old": "connect",
                                                  "new": "open"})
    assert (refused.is_error, refused.content) == (
        True, "Refused (outside-step-files): src/db.py is outside this step's files "
              "(src/api/**, tests/test_api.py); change only those paths.")
    created = await tools.execute("create_file", {"path": "lib/new.py", "content": "x\n"})
    assert created.content.startswith("Refused (outside-step-files): lib/new.py is outside")
    deleted = await tools.execute("delete_file", {"path": "README.md"})
    assert deleted.content.startswith("Refused (outside-step-files): README.md is outside")
    allowed = await tools.execute("create_file", {"path": "src/api/items.py", "content": "x\n"})
    assert allowed.content == "Created src/api/items.py (1 line)."
    read = await tools.execute("read_file", {"path": "src/db.py"})
    assert not read.is_error
    assert (worktree / "README.md").exists()


# --- create_file and delete_file ---------------------------------------------------------


async def test_create_file(worktree: Path) -> None:
    tools = editor(worktree)
    result = await tools.execute("create_file", {"path": "src/new/mod.py",
                                                 "content": "A = 1\nB = 2\n"})
    assert result.content == "Created src/new/mod.py (2 lines)."
    assert (worktree / "src/new/mod.py").read_text() == "A = 1\nB = 2\n"
    existing = await tools.execute("create_file", {"path": "README.md", "content": "x"})
    assert (existing.is_error, existing.content) == (
        True, "README.md already exists; change it with str_replace, or delete_file it first "
              "to replace it entirely.")
    under_file = await tools.execute("create_file", {"path": "README.md/x.py", "content": "x"})
    assert under_file.content == "A parent of README.md/x.py is a file, not a directory."
    assert (worktree / "README.md").read_text() == FILES["README.md"]


async def test_create_file_caps_content(worktree: Path) -> None:
    tools = editor(worktree)
    huge = await tools.execute("create_file", {"path": "huge.txt",
                                               "content": "x" * (MAX_WRITE_BYTES + 1)})
    assert huge.content == ("The new content of huge.txt would be 200001 bytes, more than the "
                            "200000-byte limit; keep files smaller.")
    binary = await tools.execute("create_file", {"path": "b.bin", "content": "a\x00b"})
    assert binary.content == ("The content for b.bin contains NUL bytes; only text files can be "
                              "written.")
    assert not (worktree / "huge.txt").exists()
    assert not (worktree / "b.bin").exists()


async def test_delete_file(worktree: Path) -> None:
    tools = editor(worktree)
    result = await tools.execute("delete_file", {"path": "twice.txt"})
    assert result.content == "Deleted twice.txt."
    assert not (worktree / "twice.txt").exists()
    again = await tools.execute("delete_file", {"path": "twice.txt"})
    assert again.content == "twice.txt does not exist; list_files shows the files there are."
    directory = await tools.execute("delete_file", {"path": "src"})
    assert directory.content == "src is a directory; delete the files in it one by one."
    root = await tools.execute("delete_file", {"path": "."})
    assert root.content == "Give a file path; the repository root cannot be changed."
    assert (worktree / "src/db.py").exists()



async def test_edits_inside_a_submodule_are_refused(tmp_path: Path) -> None:
    # A worktree holds a submodule as an empty directory; git would not add a file written
    # there, so the change would vanish from the step's diff without a word.
    workspace = Workspace(root=tmp_path / "workspace", clone_url="https://example.invalid/r.git")
    workspace.clone.mkdir(parents=True)
    await git("init", "--quiet", cwd=workspace.clone)
    (workspace.clone / "app.py").write_text("A = 1\n")
    await git("add", "app.py", cwd=workspace.clone)
    await git("update-index", "--add", "--cacheinfo",
              f"160000,{'1' * 40},vendor/lib", cwd=workspace.clone)
    await git("commit", "--quiet", "-m", "initial", cwd=workspace.clone)
    worktree = await workspace.add_worktree("run-1-step-1", "HEAD")
    tools = editor(worktree)
    created = await tools.execute("create_file", {"path": "vendor/lib/x.py", "content": "x\n"})
    assert (created.is_error, created.content) == (
        True, "vendor/lib/x.py is inside the git submodule vendor/lib, whose files belong to "
              "another repository; change files of this repository instead.")
    deleted = await tools.execute("delete_file", {"path": "vendor/lib"})
    assert deleted.content.startswith("vendor/lib is the git submodule vendor/lib,")
    assert not (worktree / "vendor/lib/x.py").exists()
    elsewhere = await tools.execute("create_file", {"path": "vendor/readme.md", "content": "x"})
    assert not elsewhere.is_error

# --- finish_step -------------------------------------------------------------------------


async def test_finish_step_returns_the_result(worktree: Path) -> None:
    tools = reader(worktree)
    result = await tools.execute("finish_step", {"summary": "Found it", "rationale": "because"})
    assert (result.is_error, result.content) == (False, "Step finished.")
    assert result.finished == StepFinished(summary="Found it", rationale="because",
                                           uncertainties="")
    empty = await tools.execute("finish_step", {"summary": "  ", "rationale": "r",
                                                "uncertainties": "none"})
    assert (empty.is_error, empty.content, empty.finished) == (
        True, "summary is empty; say what you did or found.", None)


def test_a_root_reached_through_a_symlink_works(tmp_path: Path) -> None:
    # The gate compares resolved paths with the resolved root.
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.txt").write_text("hello\n")
    os.symlink(real, tmp_path / "via")
    tools = reader(tmp_path / "via")
    assert tools.read_file("a.txt") == "1\thello"
