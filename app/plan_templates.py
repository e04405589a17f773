"""Plan templates: workflow checklists for common kinds of change, and choosing one.

Templates are YAML files in `templates/plans/`, one per kind of change. They are read on
first use and checked against `PlanTemplate`; a broken file is an error that names it.
The issue's title and body pick a template by a BM25-style lexical score over each
template's keywords; when nothing scores well enough the generic template is used.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.paths import TEMPLATES_DIR
from app.plan import Role

PLANS_DIR = TEMPLATES_DIR / "plans"
FALLBACK = "generic"
TITLE_WEIGHT = 3  # a word in the issue title counts as much as three in the body
# Scores are scaled so that 1.0 is one title word that only one template lists. One such
# word in the body scores about 0.64: a passing mention, too weak to choose on; two score
# about 0.88.
MIN_SCORE = 0.75
BODY_CHARS = 20_000
K1 = 1.2
_NAME = r"^[a-z0-9][a-z0-9-]*$"


class TemplateError(Exception):
    """A plan template file is missing, unreadable or does not fit the schema."""


class ChecklistItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: str = Field(min_length=1, max_length=80)
    role: Role
    guidance: str = Field(min_length=1)


class PlanTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    keywords: list[str]
    checklist: list[ChecklistItem] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _keywords_unless_fallback(self) -> PlanTemplate:
        if not self.keywords and self.name != FALLBACK:
            raise ValueError("keywords must not be empty (only the fallback template has none)")
        return self


def template_names(directory: Path = PLANS_DIR) -> list[str]:
    """Names of the shipped templates, from the file names alone (nothing is parsed)."""
    return sorted(path.stem for path in directory.glob("*.yaml"))


@lru_cache(maxsize=4)
def load_templates(directory: Path = PLANS_DIR) -> dict[str, PlanTemplate]:
    templates: dict[str, PlanTemplate] = {}
    for path in sorted(directory.glob("*.yaml")):
        template = _load(path)
        templates[template.name] = template
    if FALLBACK not in templates:
        raise TemplateError(f"{directory}: the fallback template {FALLBACK}.yaml is missing")
    return templates


def _load(path: Path) -> PlanTemplate:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path}: cannot read the template: {exc}") from exc
    try:
        template = PlanTemplate.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors())
        raise TemplateError(f"{path}: invalid plan template: {problems}") from exc
    if template.name != path.stem:
        raise TemplateError(f"{path}: name {template.name!r} must match the file name "
                            f"{path.stem!r}")
    return template


def get_template(name: str, directory: Path = PLANS_DIR) -> PlanTemplate:
    templates = load_templates(directory)
    if name not in templates:
        raise KeyError(f"no plan template named {name!r}; known: {', '.join(templates)}")
    return templates[name]


# --- choosing ------------------------------------------------------------------------------

def choose_template(title: str, body: str, allowed: list[str] | None = None,
                    directory: Path = PLANS_DIR) -> PlanTemplate:
    """The template that fits the issue best; the generic one when none fits.

    `allowed` (the repository's `plan_templates`) limits the candidates; the generic
    template stays the fallback either way.
    """
    templates = load_templates(directory)
    ranked = rank_templates(title, body, allowed, directory)
    if ranked and ranked[0][1] >= MIN_SCORE:
        return templates[ranked[0][0]]
    return templates[FALLBACK]


def rank_templates(title: str, body: str, allowed: list[str] | None = None,
                   directory: Path = PLANS_DIR) -> list[tuple[str, float]]:
    """(name, score) for every candidate that scores above zero, best first."""
    templates = load_templates(directory)
    vocabulary = {name: {_term(k) for k in t.keywords if _term(k)}
                  for name, t in templates.items()}
    query: Counter[str] = Counter()
    for term in _terms(title):
        query[term] += TITLE_WEIGHT
    query.update(_terms(body[:BODY_CHARS]))
    # IDF over all templates, so that `allowed` narrows the choice without changing scores:
    # a keyword many templates share says little about which one fits.
    total = len(templates)
    frequency = Counter(term for terms in vocabulary.values() for term in terms)
    scale = _idf(total, 1) * _saturate(TITLE_WEIGHT)
    scores: list[tuple[str, float]] = []
    for name, terms in vocabulary.items():
        if allowed is not None and name not in allowed:
            continue
        score = sum(_idf(total, frequency[t]) * _saturate(query[t]) for t in terms & query.keys())
        if score > 0:
            scores.append((name, round(score / scale, 4)))
    return sorted(scores, key=lambda item: (-item[1], item[0]))


def _idf(total: int, containing: int) -> float:
    return math.log(1 + (total - containing + 0.5) / (containing + 0.5))


def _saturate(hits: int) -> float:
    # BM25's term-frequency saturation: the tenth mention adds little over the third.
    return hits * (K1 + 1) / (hits + K1)


def _words(text: str) -> list[str]:
    return [_stem(word) for word in re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))]


def _terms(text: str) -> list[str]:
    """Words and the two- and three-word phrases they form, so `feature flag` can match."""
    words = _words(text)
    terms = list(words)
    for size in (2, 3):
        terms += ["_".join(words[i:i + size]) for i in range(len(words) - size + 1)]
    return terms


def _term(keyword: str) -> str:
    return "_".join(_words(keyword))


def _stem(word: str) -> str:
    # Just enough to let "crashes", "crashing" and "crashed" meet "crash".
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 4 and word.endswith("es") and word[-3] in "hxsz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


# --- the prompt ----------------------------------------------------------------------------

def render_for_prompt(template: PlanTemplate) -> str:
    """The template as markdown for the orchestrator's system prompt."""
    lines = [f"### {template.title} (`{template.name}`)", "", template.description.strip(), "",
             "Usual steps, in order (adapt them: drop what the issue does not need, merge what "
             "touches the same files):", ""]
    for number, item in enumerate(template.checklist, 1):
        lines.append(f"{number}. **{item.step}** ({item.role.value}): {item.guidance.strip()}")
    if template.notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {note.strip()}" for note in template.notes]
    return "\n".join(lines) + "\n"
