"""The repository map built from a real git repository: files and definitions at a commit,
search, the rendered map within its budget, the per-commit cache and incremental rebuilds."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.git import git
from app.repomap import MAX_FILE_BYTES, FileStatus, RepoMap
from app.symbols import SymbolKind


async def commit_files(repo: Path, files: dict[str, str | bytes | None],
                       message: str = "change") -> str:
    """Write `files` into `repo` (None deletes one), commit them, return the commit id.
    The repository is created on first use."""
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        await git("init", "-q", cwd=repo)
    for path, content in files.items():
        target = repo / path
        if content is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    await git("add", "-A", cwd=repo)
    await git("commit", "-q", "-m", message, cwd=repo)
    return (await git("rev-parse", "HEAD", cwd=repo)).strip()


CLIENT_PY = '''\
"""HTTP client."""

DEFAULT_TIMEOUT = 30


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def fetch_page(self, path: str) -> str:
        return self.base + path


def make_client() -> Client:
    return Client("https://example.org")
'''

FILES: dict[str, str | bytes | None] = {
    "README.md": "# Demo\n\nA demo project that fetches pages.\n",
    "src/client.py": CLIENT_PY,
    "src/net/url.js": "export function parseUrl(text) {\n  return new URL(text);\n}\n",
    "src/app.js": "import { parseUrl } from './net/url.js';\nconst home = parseUrl('/');\n",
    "web/shapes.ts": "export interface Shape { area(): number }\nexport type Id = string;\n",
    "server/main.go": "package main\n\ntype Server struct{}\n\nfunc (s *Server) Run() {}\n",
    "java/Account.java": (
        "class Account {\n  int balance;\n  void deposit(int amount) { balance += amount; }\n}\n"
    ),
    "core/lib.rs": "pub struct Ledger;\nimpl Ledger {\n    pub fn balance(&self) -> i64 { 0 }\n}\n",
    "docs/notes.txt": "Remember to fetch the page before parsing the URL.\n",
    "assets/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
    "data/huge.py": "X = 1\n" * (MAX_FILE_BYTES // 6 + 10),
    "package-lock.json": '{"lockfileVersion": 3}\n',
}


async def built(tmp_path: Path, files: dict[str, str | bytes | None] | None = None,
                ) -> tuple[Path, str, RepoMap]:
    repo = tmp_path / "repo"
    commit = await commit_files(repo, files or FILES, "initial")
    return repo, commit, await RepoMap.build(repo, commit, tmp_path / "cache")


async def test_files_and_definitions_come_from_the_commit_not_the_working_tree(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    commit = await commit_files(repo, FILES, "initial")
    for child in repo.iterdir():  # nothing checked out: the map reads git objects only
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    repo_map = await RepoMap.build(repo, "HEAD", tmp_path / "cache")

    assert repo_map.commit == commit
    assert sorted(repo_map.files) == sorted(FILES)
    client = repo_map.files["src/client.py"]
    assert client.status is FileStatus.TEXT and client.language == "python"
    assert client.lines == 15
    assert [(s.name, s.kind, s.line, s.parent) for s in client.symbols] == [
        ("DEFAULT_TIMEOUT", SymbolKind.CONSTANT, 3, None),
        ("Client", SymbolKind.CLASS, 6, None),
        ("__init__", SymbolKind.METHOD, 7, "Client"),
        ("fetch_page", SymbolKind.METHOD, 10, "Client"),
        ("make_client", SymbolKind.FUNCTION, 14, None),
    ]
    assert client.symbols[3].signature_line == "def fetch_page(self, path: str) -> str:"
    names = {path: [(s.name, s.parent) for s in entry.symbols]
             for path, entry in repo_map.files.items()}
    assert names["src/net/url.js"] == [("parseUrl", None)]
    assert names["web/shapes.ts"] == [("Shape", None), ("area", "Shape"), ("Id", None)]
    assert names["server/main.go"] == [("Server", None), ("Run", "Server")]
    assert names["java/Account.java"] == [("Account", None), ("deposit", "Account")]
    assert names["core/lib.rs"] == [("Ledger", None), ("balance", "Ledger")]
    assert repo_map.files["assets/logo.png"].status is FileStatus.BINARY
    assert repo_map.files["data/huge.py"].status is FileStatus.LARGE
    assert repo_map.files["data/huge.py"].symbols == ()
    assert repo_map.files["package-lock.json"].status is FileStatus.SKIPPED
    assert repo_map.stats.parsed_files == len(FILES) - 2  # neither the large nor the lockfile
    assert (tmp_path / "cache" / f"{commit}.json").is_file()


async def test_search_finds_a_function_by_a_camel_case_word(tmp_path: Path) -> None:
    _, _, repo_map = await built(tmp_path)
    hits = await repo_map.search("parse the url", k=5)
    assert hits[0].path == "src/net/url.js"
    assert hits[0].start_line == 1 and "export function parseUrl(text) {" in hits[0].snippet
    assert {h.path for h in hits} >= {"src/app.js", "docs/notes.txt"}
    assert "assets/logo.png" not in {h.path for h in hits}


async def test_render_fits_the_budget_and_names_the_key_definitions(tmp_path: Path) -> None:
    _, commit, repo_map = await built(tmp_path)

    full = repo_map.render(20_000)
    assert full.startswith(f"Repository map at {commit[:12]}: {len(FILES)} files")
    assert "src/ 3 files (.js 2, .py 1)\n  net/ 1 file (.js 1)\n" in full
    assert "src/client.py (15 lines)\n  3: DEFAULT_TIMEOUT = 30\n  6: class Client:\n" in full
    assert "    10: def fetch_page(self, path: str) -> str:\n" in full
    assert "3: void deposit(int amount) { balance += amount; }" in full
    assert "not shown" not in full

    for budget in (900, 400, 120):
        text = repo_map.render(budget)
        assert len(text) <= budget
    small = repo_map.render(900)
    assert "more files with" in small and "not shown to fit 900 characters" in small


async def test_files_that_may_hold_secrets_are_listed_but_never_read(tmp_path: Path) -> None:
    secrets = {"config/secrets.py": "API_TOKEN = 'hunter2-python'\n",
               "deploy/Settings.Secret.ts": "export const KEY = 'hunter2-ts';\n"}
    _, _, repo_map = await built(tmp_path, {**FILES, **secrets})
    text = repo_map.render(50_000)
    for path in secrets:
        assert repo_map.files[path].status is FileStatus.SKIPPED
        assert repo_map.files[path].symbols == ()
    assert "hunter2" not in text and "API_TOKEN" not in text
    assert await repo_map.search("hunter2 API_TOKEN KEY") == []


async def test_control_characters_in_paths_cannot_forge_lines(tmp_path: Path) -> None:
    _, _, repo_map = await built(tmp_path, {"x\nFiles and their definitions.py": "def f(): pass\n"})
    text = repo_map.render(5_000)
    forged = "x\N{REPLACEMENT CHARACTER}Files and their definitions.py (1 line)\n  1: def f()"
    assert forged in text
    assert "\nFiles and their definitions.py" not in text


async def test_focus_decides_what_a_tight_budget_keeps(tmp_path: Path) -> None:
    _, _, repo_map = await built(tmp_path)
    unfocused = repo_map.render(800)
    focused = repo_map.render(800, focus="deposit into the account balance")
    assert "java/Account.java" in focused
    assert "java/Account.java" not in unfocused
    assert len(focused) <= 800


async def test_a_new_commit_reparses_only_the_changed_file(tmp_path: Path) -> None:
    repo, first, first_map = await built(tmp_path)
    cache = tmp_path / "cache"
    changed = CLIENT_PY.replace("def make_client", "def make_async_client")
    second = await commit_files(repo, {"src/client.py": changed})

    second_map = await RepoMap.build(repo, second, cache)

    readable = first_map.stats.parsed_files
    assert (second_map.stats.parsed_files, second_map.stats.reused_files) == (1, readable - 1)
    names = [s.name for s in second_map.files["src/client.py"].symbols]
    assert "make_async_client" in names and "make_client" not in names
    assert (await second_map.search("async client"))[0].path == "src/client.py"
    assert "def make_async_client() -> Client:" in second_map.render(20_000)

    again = await RepoMap.build(repo, second, cache)  # now straight from its own cache
    assert again.stats.from_cache and again.stats.parsed_files == 0
    assert again.files == second_map.files
    older = await RepoMap.build(repo, first, cache)
    assert older.stats.from_cache
    assert "make_client" in [s.name for s in older.files["src/client.py"].symbols]


async def test_a_renamed_file_is_reused_under_its_new_path(tmp_path: Path) -> None:
    repo, _, _ = await built(tmp_path)
    second = await commit_files(repo, {"src/client.py": None, "src/http_client.py": CLIENT_PY})
    repo_map = await RepoMap.build(repo, second, tmp_path / "cache")
    assert repo_map.stats.parsed_files == 0
    assert "src/client.py" not in repo_map.files
    assert [c.path for c in repo_map.files["src/http_client.py"].chunks] == [
        "src/http_client.py"]
    assert (await repo_map.search("fetch page"))[0].path == "src/http_client.py"


async def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path: Path) -> None:
    repo, commit, first = await built(tmp_path)
    cache_file = tmp_path / "cache" / f"{commit}.json"
    cache_file.write_text('{"version": 1, "commit": "' + commit + '", "files": [{"pa')

    rebuilt = await RepoMap.build(repo, commit, tmp_path / "cache")

    assert not rebuilt.stats.from_cache
    assert rebuilt.stats.parsed_files == first.stats.parsed_files
    assert rebuilt.files == first.files
    reloaded = await RepoMap.build(repo, commit, tmp_path / "cache")
    assert reloaded.stats.from_cache and reloaded.files == first.files
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{commit}.json"]  # no temps
