import pytest

from app.globs import is_glob, matches, matches_any, patterns_overlap, segments
from app.limits import DEFAULT_PROTECTED


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("src/app.py", "src/app.py"),
        ("src/app.py", "src/*.py"),
        ("src/app.py", "src/**"),
        ("src/a/b/c.py", "src/**"),
        ("src/a/b/c.py", "src/**/*.py"),
        ("src/c.py", "src/**/*.py"),  # `**` matches zero directories
        (".env", "**/.env"),
        ("deploy/prod/.env", "**/.env"),
        (".github/workflows/ci.yml", ".github/workflows/**"),
        ("docs/guide/intro.md", "docs/"),  # a trailing slash means the whole directory
        ("src/app.py", "./src/app.py"),
        ("src/app1.py", "src/app?.py"),
        ("src/app1.py", "src/app[0-9].py"),
        ("src/appx.py", "src/app[!0-9].py"),
        ("config/secrets.yaml", "**/*secret*"),
        ("a/b/c/d/e.txt", "**/**/e.txt"),
    ],
)
def test_matches(path: str, pattern: str) -> None:
    assert matches(path, pattern)


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("src/a/app.py", "src/*.py"),  # `*` stays inside one directory
        ("src/app.py", "src"),  # a plain name is that path only
        ("tests/app.py", "src/**"),
        ("src/App.py", "src/app.py"),  # case-sensitive, like git
        ("src/app.pyc", "src/*.py"),
        ("src/app10.py", "src/app?.py"),
        ("src/app1.py", "src/app[!0-9].py"),
        ("my.env", "**/.env"),
        (".github/CODEOWNERS", ".github/workflows/**"),
    ],
)
def test_does_not_match(path: str, pattern: str) -> None:
    assert not matches(path, pattern)


def test_matches_any_checks_every_pattern() -> None:
    assert matches_any("yarn.lock", DEFAULT_PROTECTED)
    assert matches_any("web/package-lock.json", DEFAULT_PROTECTED)
    assert not matches_any("src/app.py", DEFAULT_PROTECTED)
    assert not matches_any("src/app.py", [])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/**", "src/app.py"),
        ("src/*.py", "src/app.py"),
        ("src/*.py", "src/*_test.py"),
        ("**/*.py", "tests/unit/test_x.py"),
        ("**", "anything/at/all"),
        ("src/**/models.py", "src/db/**"),
        ("a*", "*b"),  # "ab"
        ("src/[ab].py", "src/a.py"),
        ("src/[ab].py", "src/[bc].py"),  # two classes: assumed to overlap
        ("docs/", "docs/index.md"),
        ("src/app.py", "./src/app.py"),
        ("**/.env", ".env"),
    ],
)
def test_patterns_overlap(a: str, b: str) -> None:
    assert patterns_overlap(a, b)
    assert patterns_overlap(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("src/*.py", "tests/*.py"),
        ("src/app.py", "src/web.py"),
        ("src/*.py", "src/*.js"),
        ("src/*.py", "src/a/b.py"),  # different depth
        ("src/**", "tests/**"),
        ("src/[ab].py", "src/c.py"),
        ("docs/*.md", "docs/api/*.md"),
        ("a*", "b*"),
    ],
)
def test_patterns_do_not_overlap(a: str, b: str) -> None:
    assert not patterns_overlap(a, b)
    assert not patterns_overlap(b, a)


def test_segments_normalise_paths() -> None:
    assert segments("./src//app.py") == ("src", "app.py")
    assert segments("docs/") == ("docs", "**")
    assert segments("a/**/**/b") == ("a", "**", "b")


def test_is_glob() -> None:
    assert is_glob("src/*.py")
    assert is_glob("docs/")
    assert not is_glob("src/app.py")
