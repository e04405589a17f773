"""BM25 over chunks of lines: identifier splitting, chunking, ranking, path boost, snippets."""

from __future__ import annotations

from app.search import SearchIndex, chunk_text, query_terms, snippet, tokenize


def test_identifiers_are_split_on_case_and_underscores() -> None:
    assert tokenize("parseUrl HTTPServer parse_url x = 42") == [
        "parseurl", "parse", "url",
        "httpserver", "http", "server",
        "parse_url", "parse", "url",
        "42",
    ]


def test_adjacent_query_words_also_match_as_one_identifier() -> None:
    assert query_terms("fetch page") == ["fetch", "page", "fetchpage", "fetch_page"]
    files = {"notes.txt": "Fetch the page first.\n",
             "client.py": "def fetch_page(path):\n    return download(path)\n"}
    assert build(files).search("fetch page", files)[0].path == "client.py"


def test_chunks_overlap_and_cover_every_line() -> None:
    text = "".join(f"line{i}\n" for i in range(1, 101))
    chunks = chunk_text("a.txt", text, lines=40, overlap=10)
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 40), (31, 70), (61, 100)]
    assert chunks[0].terms["line1"] == 1 and "line41" not in chunks[0].terms
    assert chunk_text("empty.txt", "") == []


def test_definitions_weigh_their_names_in_their_chunk() -> None:
    text = "filler\n" * 50 + "def fetch_user(): pass\n"
    plain = chunk_text("a.py", text)
    weighted = chunk_text("a.py", text, definitions=[(51, "fetch_user")])
    assert weighted[-1].terms["fetch"] > plain[-1].terms["fetch"]
    assert weighted[0].terms == plain[0].terms  # line 51 is outside the first chunk


def corpus() -> dict[str, str]:
    return {
        "src/net/http.js": (
            "import { get } from './transport';\n\n"
            "export function parseUrl(text) {\n  return new URL(text);\n}\n"
        ),
        "docs/guide.md": "Call the parser with a url. The url must be absolute. url url.\n",
        "src/app.js": "import { parseUrl } from './net/http';\nconst u = parseUrl(location);\n",
        "src/math.js": "export function add(a, b) { return a + b; }\n",
    }


def build(files: dict[str, str], definitions: dict[str, list[tuple[int, str]]] | None = None,
          ) -> SearchIndex:
    return SearchIndex([chunk for path, text in files.items()
                        for chunk in chunk_text(path, text, (definitions or {}).get(path, ()))])


def test_camel_case_word_finds_the_definition_first() -> None:
    files = corpus()
    index = build(files, {"src/net/http.js": [(3, "parseUrl")]})
    hits = index.search("parse url", files, k=3)
    assert hits[0].path == "src/net/http.js"
    assert "export function parseUrl(text) {" in hits[0].snippet
    assert [h.path for h in hits] == ["src/net/http.js", "src/app.js", "docs/guide.md"]
    assert hits[0].score > hits[1].score > hits[2].score > 0
    assert "src/math.js" not in {h.path for h in index.search("parse url", files)}


def test_a_query_word_in_the_path_scores() -> None:
    files = {"billing/invoice.py": "def total(items):\n    return sum(items)\n",
             "reports/summary.py": "def total(rows):\n    return len(rows)\n"}
    index = build(files)
    assert [h.path for h in index.search("invoice total", files)] == [
        "billing/invoice.py", "reports/summary.py"]


def test_no_terms_no_hits() -> None:
    files = corpus()
    index = build(files)
    assert index.search("?!", files) == []
    assert index.search("nowhere", files) == []
    assert SearchIndex([]).search("url", {}) == []


def test_file_scores_are_each_files_best_chunk() -> None:
    files = {"a.py": "alpha\n" * 100, "b.py": "beta\n"}
    scores = build(files).file_scores("alpha")
    assert set(scores) == {"a.py"} and scores["a.py"] > 0


def test_snippet_centres_on_the_query_words() -> None:
    text = "".join(f"filler {i}\n" for i in range(1, 30)) + "def needle():\n" + "tail\n" * 10
    cut = snippet(text, 1, 40, "needle", max_lines=4)
    assert "def needle():" in cut and len(cut.splitlines()) == 4
