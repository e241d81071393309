"""What `sigen run` was asked to do (RunConfig), and the fields that decide whether a resume fits.

A RunConfig is frozen: the command line builds it once; `plan.resolve_plan` works out every
default from it into a Plan, whose own resolved RunConfig is what the manifest saves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import MANIFEST

DEFAULT_NUM_INSTRUCTIONS = 20

# Changing any of these mid-run would mix two different datasets in one directory.
RESUME_KEYS = ("model", "method", "lang", "seeds", "seeds_sha256", "corpus", "passage_chars",
               "chapters", "evolve_from", "turns", "system", "system_file", "embed_model")
# Settings whose default is worked out during a run (passage_chars from the model's tokenizer),
# or that a run keeps unless told otherwise (generations): a command that leaves them unset
# continues a run with the run's value.
DERIVED_KEYS = ("passage_chars", "generations", "turns")


@dataclass(frozen=True)
class RunConfig:
    model: str | None = None  # registry name or checkpoint path; None = the registry's default
    models_file: Path | None = None
    engine: str = "vllm"
    gpus: int | None = None  # None: 1 if a GPU is visible, else 0 (CPU)
    tensor_parallel: int | None = None  # GPUs per replica; None: the model's, else 1
    base_url: str | None = None  # the openai engine's server(s), comma-separated
    concurrency: int | None = None  # requests in flight per server; None: DEFAULT_CONCURRENCY
    server_timeout: float | None = None  # seconds; None: DEFAULT_SERVER_TIMEOUT
    method: str = "self-instruct"
    lang: str = "en"
    seeds: Path | None = None  # None: the built-in seed set for `lang`
    seeds_sha256: str = ""
    # None: DEFAULT_NUM_INSTRUCTIONS, or on resume the run's own target
    num_instructions: int | None = None
    output: Path | None = None
    seed: int = 42
    batch_size: int | None = None  # source requests per round; None: engines.setup's default
    max_rounds: int | None = None  # None: keep going until num_instructions (with a stall guard)
    temperature: float | None = None  # None: the model's default from models.yaml
    top_p: float | None = None
    max_new_tokens: int | None = None  # for the source request; None: the method's default
    max_answer_tokens: int | None = None  # for the answer steps; None: the method's default
    corpus: Path | None = None  # ground generation in these texts (a file or a folder)
    passage_chars: int | None = None  # passage length; None: from the model's context length
    chapters: str | None = None  # passages only from these chapters ("81-120"); None: all
    kinds: str | None = None  # grounded task kinds ("continuation,plot"); None: all of them
    max_repeats: int | None = None  # copies of one generic grounded instruction; None: 3
    judge: bool = False  # score every task as the run goes (scores.jsonl)
    # --method evol: the instructions to evolve (a run directory or a JSONL file; None: the
    # seeds), and how many times a line of them is evolved (None: 3, or the run's own)
    evolve_from: Path | None = None
    generations: int | None = None
    # --method magpie: user turns per conversation (None: 1, or the run's own), and the system
    # prompt that steers it (None: the language's default; "": none) or a file of them
    turns: int | None = None
    system: str | None = None
    system_file: Path | None = None
    # The semantic screen (off unless both are given): the model that embeds instructions (a
    # registry name or checkpoint; with embed_base_url, a server's model name) and the cosine
    # at or above which a candidate is a semantic_duplicate of a pool instruction
    embed_model: str | None = None
    semantic_threshold: float | None = None
    embed_base_url: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_json(cls, saved: dict, where: Path | str = "manifest.json") -> RunConfig:
        """A configuration saved by `to_json` (keys of other versions are left out); a value
        of the wrong JSON type is an error naming the file and the key."""
        known = {k: v for k, v in saved.items() if k in cls.field_names()}
        for key, value in known.items():
            allowed = _JSON_TYPES[key]
            if value is None and key not in _REQUIRED or (
                    value is not None and isinstance(value, allowed)
                    and not (isinstance(value, bool) and bool not in allowed)):
                continue
            raise SigenError(f"{where}: config.{key} is {json.dumps(value)[:60]}, which is "
                             f"not {' or '.join(_TYPE_WORDS[t] for t in allowed)}; the run "
                             "directory is damaged. Restore the file, or start a new run with "
                             "another --output.")
        for key in ("models_file", "seeds", "output", "corpus", "evolve_from", "system_file"):
            if known.get(key):
                known[key] = Path(known[key])
        return cls(**known)


# The JSON types a saved configuration may hold per field (None is allowed unless required).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    **{name: (str,) for name in ("model", "models_file", "engine", "base_url", "method", "lang",
                                 "seeds", "seeds_sha256", "output", "corpus", "chapters",
                                 "kinds", "evolve_from", "system", "system_file", "embed_model",
                                 "embed_base_url")},
    **{name: (int,) for name in ("gpus", "tensor_parallel", "concurrency", "num_instructions",
                                 "seed", "batch_size", "max_rounds", "max_new_tokens",
                                 "max_answer_tokens", "passage_chars", "max_repeats",
                                 "generations", "turns")},
    **{name: (int, float) for name in ("server_timeout", "temperature", "top_p",
                                       "semantic_threshold")},
    "judge": (bool,),
}
_TYPE_WORDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
_REQUIRED = ("engine", "method", "lang", "seed", "judge")

RUNS_DIR = Path("runs")


def default_output_dir() -> Path:
    return RUNS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")


def derived_from(config: RunConfig, previous: dict) -> dict:
    """The settings left unset that the run being continued worked out (see DERIVED_KEYS)."""
    old = previous.get("config") or {}
    return {key: old[key] for key in DERIVED_KEYS
            if getattr(config, key) is None and old.get(key) is not None}


def config_differences(old: dict, config: RunConfig, keys: tuple[str, ...] = RESUME_KEYS
                       ) -> list[str]:
    """The keys whose value in a run's saved configuration `old` differs from `config`'s.
    A key the run did not save is not compared, nor a derived key left unset (DERIVED_KEYS)."""
    new = config.to_json()
    return [key for key in keys
            if key in old and old[key] != new.get(key)
            and not (key in DERIVED_KEYS and new.get(key) is None)]


def latest_run_like(config: RunConfig, runs_dir: Path = RUNS_DIR) -> Path | None:
    """The newest run under `runs_dir` started with the same settings (RESUME_KEYS and the
    seed): where `sigen run` without --output continues. Running the same command again after a
    crash resumes instead of starting over, and after the run finished it says so: the same
    seed would only generate the same data again."""
    if not runs_dir.is_dir():
        return None
    for run in sorted((p for p in runs_dir.iterdir() if p.is_dir()), reverse=True):
        try:
            old = json.loads((run / MANIFEST).read_text(encoding="utf-8")).get("config") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(old, dict) and not config_differences(old, config, (*RESUME_KEYS, "seed")):
            return run
    return None
