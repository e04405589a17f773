"""Bare repositories on disk, read and written with git plumbing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ZERO_SHA = "0" * 40
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
SHA_RE = re.compile(r"^[0-9a-f]{40}$")

HOOKS_DIR = Path(__file__).with_name("hooks")


def git_env(home: Path | str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for git that ignores the machine's system and global configuration."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }
    if extra:
        env.update(extra)
    return env


class GitError(RuntimeError):
    pass


@dataclass
class Person:
    name: str
    email: str
    date: float

    @classmethod
    def parse(cls, line: str) -> Person:
        match = re.match(r"^(.*) <(.*)> (\d+) ([+-]\d{4})$", line)
        if not match:
            return cls(name=line, email="", date=0.0)
        return cls(name=match.group(1), email=match.group(2), date=float(match.group(3)))


@dataclass
class CommitInfo:
    sha: str
    tree: str
    parents: list[str]
    author: Person
    committer: Person
    message: str


@dataclass
class TreeEntry:
    mode: str
    type: str
    sha: str
    size: int | None
    path: str


class GitRepo:
    """One bare repository; every method runs ``git`` with ``--git-dir`` pointing at it."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.home = home

    # -- running git -------------------------------------------------------------------------

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            ["git", "--git-dir", str(self.path), *args],
            input=input,
            capture_output=True,
            env=git_env(self.home, env),
            check=False,
        )
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
        return proc

    def out(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
        return self.run(*args, input=input, env=env).stdout.decode().strip()

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def init_bare(cls, path: Path, home: Path, default_branch: str) -> GitRepo:
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)],
            check=True,
            capture_output=True,
            env=git_env(home),
        )
        repo = cls(path, home)
        repo.run("config", "http.receivepack", "true")
        repo.run("config", "receive.denyNonFastForwards", "false")
        repo.install_hooks()
        return repo

    def install_hooks(self) -> None:
        hooks = self.path / "hooks"
        hooks.mkdir(exist_ok=True)
        for name in ("pre-receive", "post-receive"):
            target = hooks / name
            shutil.copyfile(HOOKS_DIR / f"{name}.sh", target)
            target.chmod(0o755)

    def set_head(self, branch: str) -> None:
        self.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")

    # -- refs --------------------------------------------------------------------------------

    def rev_parse(self, rev: str) -> str | None:
        if rev.startswith("-"):
            return None
        proc = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{object}}", check=False)
        sha = proc.stdout.decode().strip()
        return sha if proc.returncode == 0 and SHA_RE.match(sha) else None

    def resolve_commit(self, ref: str) -> str | None:
        """A branch, tag, full ref or (abbreviated) sha, as the commit it names."""
        if not ref or ref.startswith("-"):
            return None
        candidates = (
            [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
        )
        for candidate in candidates:
            proc = self.run(
                "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", check=False
            )
            sha = proc.stdout.decode().strip()
            if proc.returncode == 0 and SHA_RE.match(sha):
                return sha
        return None

    def refs(self, prefix: str = "refs/") -> dict[str, str]:
        text = self.out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        result: dict[str, str] = {}
        for line in text.splitlines():
            name, _, sha = line.partition(" ")
            result[name] = sha
        return result

    def ref_sha(self, ref: str) -> str | None:
        return self.refs(ref).get(ref)

    def update_ref(self, ref: str, new: str, old: str | None = None) -> bool:
        args = ["update-ref", ref, new]
        if old is not None:
            args.append(old)
        return self.run(*args, check=False).returncode == 0

    def delete_ref(self, ref: str) -> bool:
        return self.run("update-ref", "-d", ref, check=False).returncode == 0

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        proc = self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        return proc.returncode == 0

    def merge_base(self, a: str, b: str) -> str | None:
        proc = self.run("merge-base", a, b, check=False)
        sha = proc.stdout.decode().strip()
        return sha if proc.returncode == 0 and sha else None

    def rev_list(self, *args: str, limit: int | None = None) -> list[str]:
        extra = [f"--max-count={limit}"] if limit else []
        return self.out("rev-list", *extra, *args).split()

    # -- objects -----------------------------------------------------------------------------

    def object_type(self, sha: str) -> str | None:
        if sha.startswith("-"):
            return None
        proc = self.run("cat-file", "-t", sha, check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def commit(self, sha: str) -> CommitInfo | None:
        if self.object_type(sha) != "commit":
            return None
        raw = self.run("cat-file", "commit", sha).stdout.decode(errors="replace")
        header, _, message = raw.partition("\n\n")
        tree = ""
        parents: list[str] = []
        author = committer = Person("", "", 0.0)
        for line in header.splitlines():
            key, _, value = line.partition(" ")
            if key == "tree":
                tree = value
            elif key == "parent":
                parents.append(value)
            elif key == "author":
                author = Person.parse(value)
            elif key == "committer":
                committer = Person.parse(value)
        full = self.rev_parse(sha) or sha
        return CommitInfo(full, tree, parents, author, committer, message)

    def tree(self, sha: str, recursive: bool = False) -> list[TreeEntry] | None:
        if self.object_type(sha) not in ("tree", "commit"):
            return None
        args = ["ls-tree", "-l", "-z"]
        if recursive:
            args += ["-r", "-t"]
        raw = self.run(*args, sha).stdout.decode(errors="replace")
        entries = []
        for item in raw.split("\0"):
            if not item:
                continue
            meta, _, path = item.partition("\t")
            mode, kind, obj, size = meta.split(maxsplit=3)
            entries.append(TreeEntry(mode, kind, obj, None if size == "-" else int(size), path))
        return entries

    def entry(self, rev: str, path: str) -> TreeEntry | None:
        """The tree entry at ``path`` in commit ``rev``; the root tree for an empty path."""
        path = path.strip("/")
        if not path:
            tree = self.rev_parse(f"{rev}^{{tree}}")
            return TreeEntry("040000", "tree", tree, None, "") if tree else None
        raw = self.run("ls-tree", "-l", "-z", rev, "--", path, check=False).stdout
        for item in raw.decode(errors="replace").split("\0"):
            meta, _, found = item.partition("\t")
            if found == path:
                mode, kind, obj, size = meta.split(maxsplit=3)
                return TreeEntry(mode, kind, obj, None if size == "-" else int(size), found)
        return None

    def blob(self, sha: str) -> bytes | None:
        if self.object_type(sha) != "blob":
            return None
        return self.run("cat-file", "blob", sha).stdout

    # -- diffs -------------------------------------------------------------------------------

    def diff_files(self, base: str, head: str) -> list[dict[str, Any]]:
        """Files changed between ``base`` and ``head`` as GitHub lists them for a PR or commit."""
        numstat = self.out("diff", "--numstat", "-z", "-M", base, head)
        counts: dict[str, tuple[int, int]] = {}
        parts = numstat.split("\0")
        i = 0
        while i < len(parts):
            part = parts[i]
            if not part:
                i += 1
                continue
            added, deleted, path = part.split("\t", 2)
            if not path:  # a rename: the old and new names follow
                path = parts[i + 2]
                i += 2
            counts[path] = (
                int(added) if added != "-" else 0,
                int(deleted) if deleted != "-" else 0,
            )
            i += 1
        status_text = self.out("diff", "--name-status", "-z", "-M", base, head)
        fields = [f for f in status_text.split("\0") if f]
        files: list[dict[str, Any]] = []
        i = 0
        while i < len(fields):
            code = fields[i]
            if code.startswith(("R", "C")):
                previous, filename = fields[i + 1], fields[i + 2]
                i += 3
            else:
                previous, filename = None, fields[i + 1]
                i += 2
            status = {
                "A": "added",
                "D": "removed",
                "M": "modified",
                "R": "renamed",
                "C": "copied",
                "T": "changed",
            }.get(code[0], "modified")
            additions, deletions = counts.get(filename, (0, 0))
            patch = self.run(
                "diff", "-M", base, head, "--", *([previous] if previous else []), filename
            ).stdout.decode(errors="replace")
            hunk_start = patch.find("\n@@")
            entry = self.entry(head, filename) if status != "removed" else None
            files.append(
                {
                    "filename": filename,
                    "previous_filename": previous,
                    "status": status,
                    "additions": additions,
                    "deletions": deletions,
                    "changes": additions + deletions,
                    "patch": patch[hunk_start + 1 :] if hunk_start >= 0 else None,
                    "sha": entry.sha if entry else None,
                }
            )
        return files

    def changed_paths(self, before: str, after: str) -> tuple[list[str], list[str], list[str]]:
        """(added, removed, modified) paths between two commits."""
        text = self.out("diff", "--name-status", "-z", "--no-renames", before, after)
        fields = [f for f in text.split("\0") if f]
        added, removed, modified = [], [], []
        for code, path in zip(fields[::2], fields[1::2], strict=False):
            {"A": added, "D": removed}.get(code[0], modified).append(path)
        return added, removed, modified

    # -- writing -----------------------------------------------------------------------------

    def merge_tree(self, ours: str, theirs: str) -> str | None:
        """The tree of merging ``theirs`` into ``ours``; ``None`` on conflicts."""
        proc = self.run("merge-tree", "--write-tree", "--no-messages", ours, theirs, check=False)
        if proc.returncode != 0:
            return None
        return proc.stdout.decode().split()[0]

    def commit_tree(
        self,
        tree: str,
        parents: list[str],
        message: str,
        author: tuple[str, str],
        when: float,
        committer: tuple[str, str] | None = None,
    ) -> str:
        committer = committer or author
        date = f"{int(when)} +0000"
        env = {
            "GIT_AUTHOR_NAME": author[0],
            "GIT_AUTHOR_EMAIL": author[1],
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": committer[0],
            "GIT_COMMITTER_EMAIL": committer[1],
            "GIT_COMMITTER_DATE": date,
        }
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        return self.out(*args, input=message.encode(), env=env)

    def commit_directory(
        self, directory: Path, message: str, author: tuple[str, str], when: float
    ) -> str:
        """A root commit holding every file under ``directory`` (``.git`` excluded)."""
        with tempfile.TemporaryDirectory(dir=self.home) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.run("--work-tree", str(directory), "add", "--all", "--force", ".", env=env)
            tree = self.out("write-tree", env=env)
        return self.commit_tree(tree, [], message, author, when)

    def commit_files(
        self,
        parent: str | None,
        files: dict[str, bytes | str | None],
        message: str,
        author: tuple[str, str],
        when: float,
    ) -> str:
        """A commit on top of ``parent`` writing (or, for ``None``, deleting) ``files``."""
        with tempfile.TemporaryDirectory(dir=self.home) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if parent:
                self.run("read-tree", parent, env=env)
            for path, content in files.items():
                if content is None:
                    self.run("update-index", "--force-remove", "--", path, env=env)
                    continue
                data = content.encode() if isinstance(content, str) else content
                blob = self.out("hash-object", "-w", "--stdin", input=data)
                self.run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self.out("write-tree", env=env)
        return self.commit_tree(tree, [parent] if parent else [], message, author, when)
