"""One RunConfig for `sigen run`: its defaults, and the fields that decide whether a resume fits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

METHODS = ("self-instruct", "alpaca")

# Changing any of these mid-run would mix two different datasets in one directory.
RESUME_KEYS = ("model", "method", "lang", "seeds", "seeds_sha256", "corpus", "passage_chars")


@dataclass
class RunConfig:
    model: str | None = None  # registry name or checkpoint path; None = the registry's default
    models_file: Path | None = None
    engine: str = "vllm"
    gpus: int | None = None  # None: 1 if a GPU is visible, else 0 (CPU)
    method: str = "self-instruct"
    lang: str = "en"
    seeds: Path | None = None  # None: the built-in seed set for `lang`
    seeds_sha256: str = ""
    num_instructions: int = 100
    output: Path | None = None
    seed: int = 42
    batch_size: int | None = None  # prompts per round; None: 16 on CPU, 256 on GPUs
    max_rounds: int | None = None  # None: keep going until num_instructions (with a stall guard)
    temperature: float | None = None  # None: the model's default from models.yaml
    top_p: float | None = None
    max_new_tokens: int | None = None  # for bootstrapping; None: a stage default
    corpus: Path | None = None  # ground generation in these texts (a file or a folder)
    passage_chars: int | None = None  # passage length; None: from the model's context length

    def to_json(self) -> dict:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def default_output_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
