"""Prompt templates as package data, one folder per language (en/, zh/).

Templates are plain text with `{{name}}` slots (not str.format, so code and JSON inside few-shot
examples need no escaping). `labels.yaml` holds the field words that prompts and parsers share;
`grounded_kinds.yaml` the kinds of reading task asked for about a corpus passage.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from selfinstruct_local.errors import SigenError

PROMPT_DIR = Path(__file__).parent
TEMPLATE_NAMES = (
    "bootstrap",
    "classify",
    "instances_input_first",
    "instances_output_first",
    "alpaca",
    "alpaca_grounded",
    "grounded",
    "grounded_answer",
    "evol_depth",
    "evol_breadth",
    "evol_compare",
    "evol_answer",
)
# Templates that review finished data rather than generate it (`sigen judge`).
REVIEW_TEMPLATE_NAMES = ("judge",)


@dataclass(frozen=True)
class Labels:
    task: str
    instruction: str
    input: str
    output: str
    example: str
    class_label: str
    classification: str
    yes: str
    no: str
    no_input: str
    passage: str
    question: str  # starts the one task written about a passage
    score: str  # the judge's rating line
    reason: str  # the judge's one-sentence reason
    colon: str = ": "  # what follows a field name in prompts (zh uses the full-width colon)


@dataclass(frozen=True, eq=False)  # hashed by identity: one cached instance per language
class PromptSet:
    lang: str
    labels: Labels
    templates: dict[str, str]
    grounded_kinds: dict[str, str]  # kind of reading task -> its description in the prompt
    generic_ok: frozenset[str]  # kinds whose description is itself a usable task

    def fill(self, name: str, **slots: object) -> str:
        text = self.templates[name]
        for key, value in slots.items():
            text = text.replace("{{" + key + "}}", str(value))
        return text


def available_languages() -> list[str]:
    return sorted(p.name for p in PROMPT_DIR.iterdir() if (p / "labels.yaml").is_file())


@cache
def load_prompts(lang: str) -> PromptSet:
    folder = PROMPT_DIR / lang
    if not (folder / "labels.yaml").is_file():
        raise SigenError(
            f"no prompts for language {lang!r}; available: {', '.join(available_languages())}"
        )
    labels = Labels(**yaml.safe_load((folder / "labels.yaml").read_text(encoding="utf-8")))
    templates = {
        name: (folder / f"{name}.txt").read_text(encoding="utf-8").strip()
        for name in TEMPLATE_NAMES + REVIEW_TEMPLATE_NAMES
    }
    kinds = yaml.safe_load((folder / "grounded_kinds.yaml").read_text(encoding="utf-8"))
    return PromptSet(lang=lang, labels=labels, templates=templates,
                     grounded_kinds=kinds["kinds"], generic_ok=frozenset(kinds["generic_ok"]))


def parse_kinds(prompts: PromptSet, spec: str) -> tuple[str, ...]:
    """A `--kinds` value ("continuation,plot") as kind names of `grounded_kinds.yaml`, in the
    file's order whatever the order asked. Spaces and full-width commas (，、) are forgiven; an
    empty value or name, a name given twice, or one that is not a kind (a wrong case or "-" for
    "_" included, with the name meant) is an error that lists the known ones."""
    known = list(prompts.grounded_kinds)
    text = unicodedata.normalize("NFKC", spec).replace("、", ",")
    asked = [name.strip() for name in text.split(",")]
    problem = None
    if not any(asked):
        problem = "no kind given (leave --kinds out to ask for every kind)"
    elif "" in asked:
        problem = "an empty name between commas"
    elif repeated := sorted({name for name in asked if asked.count(name) > 1}):
        problem = f"{', '.join(map(repr, repeated))} given twice"
    elif unknown := [name for name in asked if name not in known]:
        meant = {name: name.lower().replace("-", "_") for name in unknown}
        hints = [f"{name!r} (did you mean {meant[name]!r}?)" if meant[name] in known
                 else repr(name) for name in unknown]
        problem = f"unknown kind{'s' * (len(unknown) > 1)} {', '.join(hints)}"
    if problem:
        raise SigenError(f"--kinds {spec!r}: {problem}; the kinds for --lang {prompts.lang} "
                         f"are {', '.join(known)} (see prompts/{prompts.lang}/"
                         "grounded_kinds.yaml)")
    return tuple(name for name in known if name in asked)
