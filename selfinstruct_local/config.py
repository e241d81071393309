"""One RunConfig for `sigen run`: its defaults, and the fields that decide whether a resume fits."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

from selfinstruct_local.runstore import MANIFEST

METHODS = ("self-instruct", "alpaca")

# Changing any of these mid-run would mix two different datasets in one directory.
RESUME_KEYS = ("model", "method", "lang", "seeds", "seeds_sha256", "corpus", "passage_chars",
               "chapters")
# Settings whose default is worked out during a run (passage_chars from the model's tokenizer):
# a command that leaves them unset continues a run with the value the run worked out.
DERIVED_KEYS = ("passage_chars",)


@dataclass
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
    num_instructions: int = 100
    output: Path | None = None
    seed: int = 42
    batch_size: int | None = None  # prompts per round; None: see run.default_batch_size
    max_rounds: int | None = None  # None: keep going until num_instructions (with a stall guard)
    temperature: float | None = None  # None: the model's default from models.yaml
    top_p: float | None = None
    max_new_tokens: int | None = None  # for bootstrapping; None: a stage default
    corpus: Path | None = None  # ground generation in these texts (a file or a folder)
    passage_chars: int | None = None  # passage length; None: from the model's context length
    chapters: str | None = None  # passages only from these chapters ("81-120"); None: all
    kinds: str | None = None  # grounded task kinds ("continuation,plot"); None: all of them
    max_repeats: int | None = None  # copies of one generic grounded instruction; None: 3
    judge: bool = False  # score every task as the run goes (scores.jsonl)

    def to_json(self) -> dict:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


RUNS_DIR = Path("runs")


def default_output_dir() -> Path:
    return RUNS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")


def inherit_derived(config: RunConfig, previous: dict) -> None:
    """Fill the settings left unset from the run being continued (see DERIVED_KEYS)."""
    old = previous.get("config", {})
    for key in DERIVED_KEYS:
        if getattr(config, key) is None and old.get(key) is not None:
            setattr(config, key, old[key])


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
        if not config_differences(old, config, (*RESUME_KEYS, "seed")):
            return run
    return None
